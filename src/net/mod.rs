//! The mio driver: the only code that touches sockets, signals or the clock.
//!
//! Owns the event loop: c2s and s2s listeners (STARTTLS and direct TLS), outgoing s2s
//! connections (`outgoing`), the resolver's sockets (`dns`), the connection table, TLS
//! sessions and their buffers, the control socket, SIGTERM/SIGINT/SIGHUP and the driver's own
//! deadlines. Everything protocol-shaped is the core's (`server::Server`): the driver hands it
//! bytes, events and the time, then carries out its `Action`s in order.
//!
//! Memory: one shared 16 KiB read buffer for all sockets (decrypted bytes go to the core
//! straight from rustls's record buffers); an idle connection holds no buffer of its own (its
//! output queue is freed when it drains). rustls itself keeps about 7.5 KB per established
//! session (see `conn`). Federation adds nothing while idle: the resolver's UDP sockets are
//! bound at the first query, the s2s trust roots (~150 certificates) are read at the first
//! s2s TLS handshake, client configurations at the first outgoing stream per local domain
//! (`tls::client`); outgoing connections are bounded by `s2s.max_connections` together with
//! incoming ones, DNS-over-TCP exchanges by `dns::MAX_DNS_TCP`.
//!
//! Ordering: after every core call that may produce actions, the driver applies them all
//! before reading more from any socket, so an `Action::StartTls` takes effect before the next
//! byte read on that connection and a `Close` stops input to the core at once.

mod conn;
mod control_socket;
mod dns;
mod input;
mod outgoing;
mod outq;
mod slots;
mod timers;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixListener};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::server::{Action, ConnId, ListenerKind, OUTGOING_CONN_BIT, Server};
use crate::tls::TlsConfigs;
use crate::tls::client::S2sTls;

use conn::{Conn, Role, SendError, Sock, State};
use slots::Slots;
use timers::{DeadlineHeap, earliest};

const SIGNAL_TOKEN: Token = Token(0);
const CONTROL_TOKEN: Token = Token(1);
/// The resolver's UDP sockets, IPv4 and IPv6.
const DNS_UDP4_TOKEN: Token = Token(2);
const DNS_UDP6_TOKEN: Token = Token(3);
/// Listener `i` has token `LISTENER_BASE + i`; connections come after the listeners.
const LISTENER_BASE: usize = 4;

/// The shared read buffer: one TLS record's worth.
const READ_BUF_BYTES: usize = 16 * 1024;
/// A connection's output written at once rather than at the end of the turn: enough to
/// coalesce a burst of stanzas into a few writes, small next to `max_outgoing_bytes`.
const EARLY_FLUSH_BYTES: usize = 32 * 1024;
/// Reads per readiness event before other sockets get a turn (the rest waits for the next
/// loop round, which then polls without sleeping).
const READ_BUDGET: usize = 32;
/// Accepts per readiness event, for the same reason.
const ACCEPT_BUDGET: usize = 128;
/// A TLS handshake (direct, or after STARTTLS) must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection may take to flush and see the peer's FIN.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// A control client must send its request line within this.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Control connections open at once (the CLI opens one at a time).
const MAX_CONTROL_CONNS: usize = 8;
/// On SIGTERM, time given to flush `system-shutdown` to clients.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// After running out of file descriptors, accepting pauses this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Repeated warnings (connection limit, file descriptors) at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// `errno` values for "too many open files" (process, system); the same on Linux and BSDs.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// The driver's own deadlines. Popped entries are checked against the current state, so
/// stale ones are ignored (see `timers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The TLS handshake must be done by now.
    Handshake(ConnId),
    /// A closing connection is dropped by now, flushed or not.
    Linger(ConnId),
    /// A control client must have sent its request by now.
    ControlRequest(ConnId),
    /// Listener `i` may accept again after a file-descriptor shortage.
    ResumeAccept(usize),
}

/// Lets a warning through at most once per `WARN_INTERVAL`.
#[derive(Default)]
struct WarnLimiter {
    last: Option<Instant>,
}

impl WarnLimiter {
    fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

struct Listener {
    sock: TcpListener,
    kind: ListenerKind,
    addr: SocketAddr,
}

/// Removes the control socket file when the driver stops (only created after our own bind
/// succeeded, so another server's socket is never removed).
struct ControlFile(PathBuf);

impl Drop for ControlFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            debug!("removing {}: {e}", self.0.display());
        }
    }
}

struct Driver {
    config: Arc<Config>,
    server: Server,
    tls: TlsConfigs,
    poll: Poll,
    listeners: Vec<Listener>,
    control: Option<UnixListener>,
    conns: Slots<Conn>,
    /// Token of the connection in slot 0.
    conn_token_base: usize,
    c2s_count: usize,
    /// s2s connections, both directions (bounded by `s2s.max_connections`).
    s2s_count: usize,
    control_count: usize,
    /// The core's ids of outgoing connections to their slot ids; one entry per `S2sOut`.
    outgoing: std::collections::HashMap<ConnId, ConnId>,
    /// Trust roots and client configurations for s2s TLS, made on first use.
    s2s_tls: S2sTls,
    /// The resolver's sockets and DNS-over-TCP exchanges.
    dns: dns::DnsSockets,
    timers: DeadlineHeap<Timer>,
    /// Shared by all sockets; taken out while in use so `self` stays borrowable.
    read_buf: Box<[u8]>,
    /// Readiness left unfinished because of a budget; handled next round without sleeping.
    again: Vec<Token>,
    /// Connections with `tls_stash` bytes to feed (from `Action::StartTls`).
    tls_feed: Vec<ConnId>,
    /// Connections with `flush_pending` output, each once: at most one per connection.
    to_flush: Vec<ConnId>,
    full_warn: WarnLimiter,
    fd_warn: WarnLimiter,
}

/// What a readiness event asks of a connection.
#[derive(Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// Read until `WouldBlock`. Otherwise a read that returns less than the buffer ends the
    /// round: the socket was empty then, and epoll (edge-triggered) reports any later data as
    /// a new event. That saves an `EAGAIN` read per event. A FIN or error, though, is
    /// reported once with the data before it, so then reading goes on until it is seen.
    until_would_block: bool,
}

impl Ready {
    /// A connection whose read budget ran out: it may hold anything, a FIN included.
    const AGAIN: Ready = Ready {
        readable: true,
        writable: false,
        until_would_block: true,
    };

    fn of(event: &mio::event::Event) -> Ready {
        let closed = event.is_read_closed() || event.is_error();
        Ready {
            readable: event.is_readable() || closed,
            writable: event.is_writable(),
            until_would_block: closed,
        }
    }
}

/// Runs the event loop until SIGTERM/SIGINT, then shuts down gracefully.
pub fn run(config: Arc<Config>, server: Server, tls: TlsConfigs) -> std::io::Result<()> {
    let poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;

    // The control socket first: if another server runs on this data_dir, say so rather than
    // failing on its ports.
    let control_path = config.control_socket_path();
    let mut control = control_socket::bind(&control_path, &config.data_dir)?;
    let _control_file = ControlFile(control_path);
    poll.registry()
        .register(&mut control, CONTROL_TOKEN, Interest::READABLE)?;

    let mut listeners = Vec::new();
    let plain = config
        .c2s
        .listen
        .iter()
        .map(|a| (*a, ListenerKind::C2sStartTls));
    let direct = config
        .c2s
        .listen_tls
        .iter()
        .map(|a| (*a, ListenerKind::C2sDirectTls));
    let s2s: &[SocketAddr] = if config.s2s.enabled {
        &config.s2s.listen
    } else {
        &[]
    };
    let s2s_direct: &[SocketAddr] = if config.s2s.enabled {
        &config.s2s.listen_tls
    } else {
        &[]
    };
    let s2s = s2s.iter().map(|a| (*a, ListenerKind::S2sStartTls));
    let s2s_direct = s2s_direct.iter().map(|a| (*a, ListenerKind::S2sDirectTls));
    for (addr, kind) in plain.chain(direct).chain(s2s).chain(s2s_direct) {
        let mut sock = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let token = Token(LISTENER_BASE + listeners.len());
        poll.registry()
            .register(&mut sock, token, Interest::READABLE)?;
        // Port 0 in the configuration (tests) shows the real port here.
        let shown = sock.local_addr().unwrap_or(addr);
        match kind {
            ListenerKind::C2sStartTls => info!("listening on {shown} (STARTTLS)"),
            ListenerKind::C2sDirectTls => info!("listening on {shown} (direct TLS)"),
            ListenerKind::S2sStartTls => info!("listening on {shown} (s2s, STARTTLS)"),
            ListenerKind::S2sDirectTls => info!("listening on {shown} (s2s, direct TLS)"),
        }
        listeners.push(Listener {
            sock,
            kind,
            addr: shown,
        });
    }

    let mut driver = Driver {
        conn_token_base: LISTENER_BASE + listeners.len(),
        s2s_tls: S2sTls::new(config.s2s.ca_file.as_deref()),
        config,
        server,
        tls,
        poll,
        listeners,
        control: Some(control),
        conns: Slots::new(),
        c2s_count: 0,
        s2s_count: 0,
        control_count: 0,
        outgoing: std::collections::HashMap::new(),
        dns: dns::DnsSockets::default(),
        timers: DeadlineHeap::new(),
        read_buf: vec![0u8; READ_BUF_BYTES].into_boxed_slice(),
        again: Vec::new(),
        tls_feed: Vec::new(),
        to_flush: Vec::new(),
        full_warn: WarnLimiter::default(),
        fd_warn: WarnLimiter::default(),
    };
    driver.run_loop(&mut signals)
}

impl Driver {
    fn run_loop(&mut self, signals: &mut Signals) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let mut stop = false;
            for event in events.iter() {
                if event.token() == SIGNAL_TOKEN {
                    for signal in signals.pending() {
                        match signal {
                            SIGHUP => self.reload(),
                            _ => stop = true,
                        }
                    }
                    continue;
                }
                self.dispatch(event.token(), Ready::of(event), now);
                self.settle(now);
            }
            for token in std::mem::take(&mut self.again) {
                self.dispatch(token, Ready::AGAIN, now);
                self.settle(now);
            }
            self.run_timers(Instant::now());
            // Group commit: one durable store commit for the whole turn, then the replies
            // that waited for it.
            let now = Instant::now();
            self.server.end_turn(now);
            self.apply_actions(now);
            self.settle(now);
            self.flush_pending(now);
            if stop {
                self.shutdown(signals);
                return Ok(());
            }
        }
    }

    /// How long `poll` may sleep: until the core's or the driver's next deadline.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || !self.tls_feed.is_empty() {
            return Some(Duration::ZERO);
        }
        earliest(self.server.poll_timeout(), self.timers.next_deadline())
            .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, token: Token, ready: Ready, now: Instant) {
        if token == CONTROL_TOKEN {
            self.accept_control(now);
        } else if token == DNS_UDP4_TOKEN || token == DNS_UDP6_TOKEN {
            self.dns_udp_readable(token, now);
        } else if token.0 >= LISTENER_BASE && token.0 < self.conn_token_base {
            self.accept(token.0 - LISTENER_BASE, now);
        } else if let Some(id) = token
            .0
            .checked_sub(self.conn_token_base)
            .and_then(|index| self.conns.id_at(index))
        {
            if ready.writable {
                self.on_writable(id, now);
            }
            if ready.readable {
                self.on_readable(id, ready.until_would_block, now);
            }
        }
        // Anything else is a token of a connection already gone: ignored.
    }

    fn token_of(&self, id: ConnId) -> Token {
        Token(self.conn_token_base + Slots::<Conn>::index_of(id))
    }

    /// The slot id of a connection the core names: outgoing ids are the core's own and are
    /// looked up, the others are the driver's.
    fn slot_of(&self, core: ConnId) -> Option<ConnId> {
        if core.0 & OUTGOING_CONN_BIT != 0 {
            self.outgoing.get(&core).copied()
        } else {
            Some(core)
        }
    }

    /// Applies every pending action and feeds STARTTLS leftovers, until neither produces more.
    /// Only called between socket events (never from inside `tls_input`), so the shared
    /// buffers are free.
    fn settle(&mut self, now: Instant) {
        // Ends because each round consumes a queued action batch or a stashed input, and
        // new ones only come from the core's finite response to them.
        loop {
            self.apply_actions(now);
            let Some(id) = self.tls_feed.pop() else { break };
            let stash = match self.conns.get_mut(id) {
                Some(conn) => std::mem::take(&mut conn.tls_stash),
                None => continue,
            };
            if !stash.is_empty() {
                self.tls_input(id, &stash, now);
            }
        }
    }

    /// Carries out the core's actions in order. Never reads, so it may run in the middle of
    /// input processing.
    fn apply_actions(&mut self, now: Instant) {
        while let Some(action) = self.server.poll_action() {
            match action {
                Action::Connect { conn, addr, tls } => self.connect(conn, addr, tls, now),
                Action::Dns(t) => self.dns_transmit(t, now),
                Action::Send { conn, bytes } => {
                    if let Some(id) = self.slot_of(conn) {
                        self.send(id, &bytes, now)
                    }
                }
                Action::StartTls { conn, buffered } => {
                    if let Some(id) = self.slot_of(conn) {
                        self.start_tls(id, buffered, now)
                    }
                }
                Action::StartTlsClient {
                    conn,
                    buffered,
                    tls,
                } => {
                    if let Some(id) = self.slot_of(conn) {
                        self.start_tls_client(id, buffered, &tls, now)
                    }
                }
                Action::Close { conn } => {
                    if let Some(id) = self.slot_of(conn) {
                        self.begin_close(id, now)
                    }
                }
            }
        }
    }

    /// Queues `bytes` for the end-of-turn flush (`flush_pending`), or writes at once when a
    /// turn has queued `EARLY_FLUSH_BYTES` for the connection; then checks the slow-reader
    /// bound.
    fn send(&mut self, id: ConnId, bytes: &[u8], now: Instant) {
        let max = self.config.limits.max_outgoing_bytes;
        let Some(conn) = self.conns.get_mut(id).filter(|c| c.state == State::Open) else {
            debug!("{id:?}: send to a closed connection dropped");
            return;
        };
        let mut sent = conn.send(bytes);
        if sent.is_ok() && conn.out.len() >= EARLY_FLUSH_BYTES && !conn.connecting {
            // A large burst (a MAM page, a backlog) goes out now rather than growing the
            // queue towards the slow-reader bound for a reader that is keeping up.
            sent = conn.flush().map(|_| ()).map_err(SendError::Io);
        }
        match sent {
            Ok(()) if conn.out.len() <= max => {
                if !conn.flush_pending && !conn.out.is_empty() {
                    conn.flush_pending = true;
                    self.to_flush.push(id);
                }
            }
            Ok(()) | Err(SendError::TlsBufferFull) => {
                info!("closing slow reader {}", conn.peer_text());
                self.lost(id, now);
            }
            Err(SendError::Io(e)) => {
                debug!("{}: write failed: {e}", conn.peer_text());
                self.lost(id, now);
            }
        }
    }

    fn start_tls(&mut self, id: ConnId, buffered: Vec<u8>, now: Instant) {
        let Some(conn) = self.conns.get_mut(id).filter(|c| c.state == State::Open) else {
            return;
        };
        let config = match conn.role {
            Role::C2s => self.tls.starttls.clone(),
            Role::S2sIn => self.tls.s2s_starttls.clone(),
            _ => {
                warn!(
                    "{}: STARTTLS on a connection that cannot have it",
                    conn.peer_text()
                );
                self.lost(id, now);
                return;
            }
        };
        if conn.tls.is_some() {
            warn!("{}: STARTTLS on a TLS connection", conn.peer_text());
            self.lost(id, now);
            return;
        }
        match conn::new_tls(config) {
            Ok(tls) => {
                // Whatever is queued (`<proceed/>`) goes out before the first TLS record:
                // `drain_tls` appends records behind the queue.
                conn.tls = Some(tls);
                conn.tls_ready = false;
                conn.tls_stash = buffered;
                if !conn.tls_stash.is_empty() {
                    self.tls_feed.push(id);
                }
                self.timers
                    .push(now + HANDSHAKE_TIMEOUT, Timer::Handshake(id));
            }
            Err(e) => {
                warn!("{}: cannot start TLS: {e}", conn.peer_text());
                self.lost(id, now);
            }
        }
    }

    /// The core is done with the connection: flush, close_notify, FIN, then wait briefly for
    /// the peer's FIN (closing with unread input would reset the connection and could lose
    /// the last bytes we sent).
    fn begin_close(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id).filter(|c| c.state == State::Open) else {
            return;
        };
        if conn.connecting {
            // Nothing was exchanged yet: there is nothing to flush or say goodbye to.
            self.free(id);
            return;
        }
        conn.state = State::Closing;
        if let Some(tls) = conn.tls.as_deref_mut() {
            tls.send_close_notify();
        }
        self.timers.push(now + CLOSE_LINGER, Timer::Linger(id));
        self.progress_close(id);
    }

    /// Writes what a closing connection still has and sends FIN once it is all out.
    fn progress_close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match conn.flush() {
            Ok(true) if !conn.write_shut => {
                conn.write_shut = true;
                if conn.sock.shutdown(Shutdown::Write).is_err() {
                    // Already reset by the peer: nothing more to wait for.
                    self.free(id);
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                debug!("{}: flush while closing failed: {e}", conn.peer_text());
                self.free(id);
                return;
            }
        }
        self.update_interest(id);
    }

    /// Writes every connection that was sent to this turn, once each; a failed write loses
    /// the connection (which may queue more output for others: those are written too).
    fn flush_pending(&mut self, now: Instant) {
        // Ends: a round that loses no connection leaves the list empty, and a connection is
        // lost at most once.
        while !self.to_flush.is_empty() {
            for id in std::mem::take(&mut self.to_flush) {
                let Some(conn) = self.conns.get_mut(id) else {
                    continue;
                };
                conn.flush_pending = false;
                if conn.state != State::Open || conn.connecting {
                    // Closing connections flush themselves; connecting ones on connect.
                    continue;
                }
                match conn.flush() {
                    Ok(_) => self.update_interest(id),
                    Err(e) => {
                        debug!("{}: write failed: {e}", conn.peer_text());
                        self.lost(id, now);
                    }
                }
            }
            self.settle(now);
        }
    }

    /// Registers WRITABLE interest exactly while output is queued (and not waiting for the
    /// end-of-turn flush, which registers it if the socket does not take everything).
    fn update_interest(&mut self, id: ConnId) {
        let token = self.token_of(id);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        // While connecting, writability is how the connect's completion is announced.
        let want = (!conn.out.is_empty() && !conn.flush_pending) || conn.connecting;
        if want == conn.writable {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .poll
            .registry()
            .reregister(&mut conn.sock, token, interest)
        {
            Ok(()) => conn.writable = want,
            Err(e) => warn!("{}: reregister failed: {e}", conn.peer_text()),
        }
    }

    /// Removes the connection and closes its socket. The core is not told.
    fn free(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(id) else {
            return;
        };
        if let Err(e) = self.poll.registry().deregister(&mut conn.sock) {
            debug!("{}: deregister failed: {e}", conn.peer_text());
        }
        match conn.role {
            Role::C2s => self.c2s_count = self.c2s_count.saturating_sub(1),
            Role::S2sIn => self.s2s_count = self.s2s_count.saturating_sub(1),
            Role::S2sOut(o) => {
                self.s2s_count = self.s2s_count.saturating_sub(1);
                self.outgoing.remove(&o.core);
            }
            Role::Control(_) => self.control_count = self.control_count.saturating_sub(1),
            Role::DnsTcp(d) => self.dns.forget_tcp(d.id),
        }
    }

    /// The connection is gone without the core asking (peer closed, I/O or TLS error, slow
    /// reader, timeout): free it and, if the core still knows it, tell the core.
    ///
    /// The actions this produces are left to the caller's loop (`apply_actions` or `settle`),
    /// so a chain of slow readers being dropped never nests `apply_actions` calls.
    fn lost(&mut self, id: ConnId, now: Instant) {
        enum Tell {
            Nobody,
            Core(ConnId),
            Resolver(crate::dns::TcpId),
        }
        if let Some(c) = self
            .conns
            .get_mut(id)
            .filter(|c| c.flush_pending && !c.connecting)
        {
            // Best effort, as when every stanza was written at once: a peer that half-closed
            // after its request still gets what this turn answered.
            let _ = c.flush();
        }
        let tell = match self.conns.get(id) {
            Some(c) if c.state == State::Open && c.is_core() => Tell::Core(c.core_id(id)),
            Some(c) if c.state == State::Open => match &c.role {
                Role::DnsTcp(d) => Tell::Resolver(d.id),
                _ => Tell::Nobody,
            },
            _ => Tell::Nobody,
        };
        self.free(id);
        match tell {
            Tell::Core(core) => self.server.handle_disconnect(now, core),
            Tell::Resolver(tcp) => self.server.handle_dns_tcp(now, tcp, None),
            Tell::Nobody => {}
        }
    }

    fn on_writable(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.connecting {
            self.finish_connect(id, now);
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.connecting {
            return;
        }
        if conn.state == State::Closing {
            self.progress_close(id);
            return;
        }
        match conn.flush() {
            Ok(_) => self.update_interest(id),
            Err(e) => {
                debug!("{}: write failed: {e}", conn.peer_text());
                self.lost(id, now);
            }
        }
    }

    fn accept(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.sock.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, listener.kind, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                    if self.fd_warn.allow(now) {
                        warn!(
                            "out of file descriptors accepting on {}: {e}",
                            listener.addr
                        );
                    }
                    // Edge-triggered: the pending connections will not be announced again,
                    // so come back after a pause instead of spinning.
                    self.timers
                        .push(now + ACCEPT_BACKOFF, Timer::ResumeAccept(index));
                    return;
                }
                // Per-connection failures (e.g. reset before accept): keep going.
                Err(e) => debug!("accept on {} failed: {e}", listener.addr),
            }
        }
        self.again.push(Token(LISTENER_BASE + index));
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, kind: ListenerKind, now: Instant) {
        let s2s = matches!(kind, ListenerKind::S2sStartTls | ListenerKind::S2sDirectTls);
        if s2s && self.s2s_count >= self.config.s2s.max_connections {
            debug!("refusing {peer}: s2s max_connections reached");
            if self.full_warn.allow(now) {
                warn!(
                    "s2s max_connections ({}) reached; refusing new s2s connections",
                    self.config.s2s.max_connections
                );
            }
            return;
        }
        if !s2s && self.c2s_count >= self.config.limits.max_connections {
            debug!("refusing {peer}: max_connections reached");
            if self.full_warn.allow(now) {
                warn!(
                    "max_connections ({}) reached; refusing new connections",
                    self.config.limits.max_connections
                );
            }
            return;
        }
        // XMPP is chatty in small writes; Nagle would only add latency.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: set_nodelay: {e}");
        }
        let role = if s2s { Role::S2sIn } else { Role::C2s };
        let mut conn = Conn::new(Sock::Tcp(stream), role, Some(peer));
        let direct = match kind {
            ListenerKind::C2sDirectTls => Some(self.tls.direct.clone()),
            ListenerKind::S2sDirectTls => Some(self.tls.s2s_direct.clone()),
            ListenerKind::C2sStartTls | ListenerKind::S2sStartTls => None,
        };
        if let Some(config) = direct.clone() {
            match conn::new_tls(config) {
                Ok(tls) => conn.tls = Some(tls),
                Err(e) => {
                    warn!("{peer}: cannot start TLS: {e}");
                    return;
                }
            }
        }
        let Some(id) = self.insert(conn) else { return };
        if s2s {
            self.s2s_count += 1;
        } else {
            self.c2s_count += 1;
        }
        debug!("accepted {peer} as {id:?} ({kind:?})");
        self.server.handle_accept(now, id, kind, peer);
        if direct.is_some() {
            self.timers
                .push(now + HANDSHAKE_TIMEOUT, Timer::Handshake(id));
        }
    }

    /// Puts a connection in the table and registers it for reading.
    fn insert(&mut self, conn: Conn) -> Option<ConnId> {
        let id = self.conns.insert(conn).ok()?;
        let token = self.token_of(id);
        let conn = self.conns.get_mut(id)?;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut conn.sock, token, Interest::READABLE)
        {
            warn!("{}: register failed: {e}", conn.peer_text());
            self.conns.remove(id);
            return None;
        }
        Some(id)
    }

    fn accept_control(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.control.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.control_count >= MAX_CONTROL_CONNS {
                        debug!("refusing control client: too many at once");
                        continue;
                    }
                    let role = Role::Control(control_socket::LineReader::new());
                    let Some(id) = self.insert(Conn::new(Sock::Unix(stream), role, None)) else {
                        continue;
                    };
                    self.control_count += 1;
                    self.timers
                        .push(now + CONTROL_TIMEOUT, Timer::ControlRequest(id));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("control accept failed: {e}");
                    return;
                }
            }
        }
        self.again.push(CONTROL_TOKEN);
    }

    fn run_timers(&mut self, now: Instant) {
        // Ends: each round pops one entry and handling one pushes none that is already due.
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Handshake(id) => {
                    let pending = self
                        .conns
                        .get(id)
                        .is_some_and(|c| c.state == State::Open && c.tls.is_some() && !c.tls_ready);
                    if pending {
                        if let Some(c) = self.conns.get(id) {
                            debug!("{}: TLS handshake timed out", c.peer_text());
                        }
                        self.lost(id, now);
                    }
                }
                Timer::Linger(id) => {
                    if self
                        .conns
                        .get(id)
                        .is_some_and(|c| c.state == State::Closing)
                    {
                        self.free(id);
                    }
                }
                Timer::ControlRequest(id) => {
                    let waiting = self.conns.get(id).is_some_and(|c| {
                        c.state == State::Open && matches!(c.role, Role::Control(_))
                    });
                    if waiting {
                        debug!("control client sent no request in time");
                        self.free(id);
                    }
                }
                Timer::ResumeAccept(index) => self.again.push(Token(LISTENER_BASE + index)),
            }
        }
        if self.server.poll_timeout().is_some_and(|at| at <= now) {
            self.server.handle_timeout(now);
        }
        self.settle(now);
    }

    fn reload(&mut self) {
        match crate::tls::load(&self.config) {
            Ok(tls) => {
                self.tls = tls;
                // Client configurations hold the old certificates; the roots may have changed
                // too. Both are made again at the next use.
                self.s2s_tls.reset(self.config.s2s.ca_file.as_deref());
                info!("reloaded certificates");
            }
            Err(e) => error!("reloading certificates failed, keeping the old ones: {e}"),
        }
    }

    /// Graceful stop: the core says goodbye on every stream, the driver flushes for up to
    /// `SHUTDOWN_FLUSH`, then drops whatever is left.
    fn shutdown(&mut self, signals: &mut Signals) {
        info!("shutting down");
        let start = Instant::now();
        self.server.handle_shutdown(start);
        self.settle(start);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.sock);
        }
        if let Some(mut control) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut control);
        }
        // Listener tokens are now unused; make sure none is dispatched as a connection.
        self.again.clear();
        let deadline = start + SHUTDOWN_FLUSH;
        let mut events = Events::with_capacity(256);
        // Ends at the deadline at the latest (each round sleeps until it or an event).
        loop {
            let now = Instant::now();
            if self.conns.is_empty() || now >= deadline {
                break;
            }
            let wake = earliest(Some(deadline), self.timers.next_deadline()).unwrap_or(deadline);
            let timeout = if self.again.is_empty() {
                wake.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed during shutdown: {e}");
                    break;
                }
            }
            let now = Instant::now();
            let mut again_signal = false;
            for event in events.iter() {
                if event.token() == SIGNAL_TOKEN {
                    // A second SIGTERM/SIGINT means "now".
                    again_signal |= signals.pending().any(|s| s != SIGHUP);
                    continue;
                }
                self.dispatch(event.token(), Ready::of(event), now);
                self.settle(now);
            }
            for token in std::mem::take(&mut self.again) {
                self.dispatch(token, Ready::AGAIN, now);
                self.settle(now);
            }
            self.run_timers(now);
            self.flush_pending(now);
            if again_signal {
                break;
            }
        }
        let left = self.conns.len();
        for id in self.conns.ids() {
            self.free(id);
        }
        if left > 0 {
            debug!("{left} connections dropped unflushed at shutdown");
        }
        info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_limiter_warning_allowed_then_limited() {
        let t0 = Instant::now();
        let mut w = WarnLimiter::default();
        assert!(w.allow(t0));
        assert!(!w.allow(t0 + Duration::from_secs(1)));
        assert!(w.allow(t0 + WARN_INTERVAL));
    }

    #[test]
    fn timers_same_instant_ordered_without_panic() {
        // Timer must be totally ordered for the heap; equal instants fall back to the key.
        let t0 = Instant::now();
        let mut h = DeadlineHeap::new();
        h.push(t0, Timer::ResumeAccept(1));
        h.push(t0, Timer::Handshake(ConnId(3)));
        assert_eq!(h.pop_due(t0), Some(Timer::Handshake(ConnId(3))));
        assert_eq!(h.pop_due(t0), Some(Timer::ResumeAccept(1)));
    }
}
