//! The sans-IO server core: every connection's protocol state, the sessions and the router.
//!
//! Inputs are `handle_*` calls carrying bytes, events and the current time; outputs are
//! `Action`s taken with `poll_action` and the next deadline from `poll_timeout`. Nothing here
//! touches a socket or reads a clock, so every behaviour is testable by feeding bytes.
//!
//! Owns: the connection table of the core, timers, presence broadcast and the dispatch of
//! stanzas to sessions or to features. Leaves negotiation to `stream::c2s`, delivery rules to
//! `router`, answers to `features`, persistence to `store`, and everything server-to-server
//! (s2s connections, their ids, DNS) to `federation`, which exists when `[s2s] enabled`.
//!
//! Driver contract for federation, beyond what each `Action` says:
//! - connections the core opens carry ids with `OUTGOING_CONN_BIT`; for them `Close` may come
//!   while TCP (or direct TLS) is still connecting (the connect timeout passed): abandon the
//!   attempt and report nothing more for that id;
//! - a refused or failed connect is `handle_disconnect`, like a later failure;
//! - after `StartTls` on an s2s connection, `handle_tls_ready` must come before any further
//!   `handle_bytes` of it (bytes before are ignored, not parsed);
//! - `TlsInfo::peer_cert_names` only for a chain that validated; the core matches names.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::features::register::{self, RegistrationLimiter};
use crate::features::{Ctx, Outbox, Registry};
use crate::jid::Jid;
use crate::router::{Router, SessionId};
use crate::store::Store;
use crate::stream::c2s::{C2sConn, Env, Upcall};
use crate::stream::error::{StreamCondition, StreamError};

/// Builds a `Ctx` from the server's fields. A macro rather than a method so that the borrow
/// checker sees disjoint fields (`registry` stays readable while the context is alive). Defined before the
/// submodules so that they use it too.
macro_rules! ctx {
    ($s:ident, $now:expr) => {
        Ctx {
            now: $now,
            started: $s.started,
            config: &$s.config,
            store: &mut *$s.store,
            router: &mut $s.router,
            out: &mut $s.outbox,
        }
    };
}

mod federation;
mod routing;
mod session_mgmt;

use federation::{FedOut, Federation};

/// The driver's handle for a connection. Opaque to the core; the driver makes it unique over
/// the process lifetime (slot index plus generation), so a stale id never aliases a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which listener accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP; TLS starts with STARTTLS (RFC 6120 §5).
    C2sStartTls,
    /// TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    C2sDirectTls,
    /// Server-to-server, plain TCP; TLS starts with STARTTLS.
    S2sStartTls,
    /// Server-to-server, TLS from the first byte (XEP-0368), ALPN `xmpp-server`.
    S2sDirectTls,
}

/// Ids the core makes for outgoing connections (`Action::Connect`) have this bit set; the
/// driver's own ids (accepted connections) never do.
pub const OUTGOING_CONN_BIT: u64 = 1 << 63;

/// How the driver sets up TLS as the *client* of an outgoing s2s connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// SNI and the name the remote certificate is checked against (RFC 6125): the remote
    /// domain, never the SRV target.
    pub server_name: String,
    /// Our domain on this stream: the driver presents its certificate (for SASL EXTERNAL).
    pub local_domain: String,
}

/// What the driver learnt from a completed TLS handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Server name the client asked for (SNI), lowercase.
    pub sni: Option<String>,
    /// RFC 9266 `tls-exporter` channel-binding data: 32 bytes from the exporter with label
    /// "EXPORTER-Channel-Binding" and no context. Only for TLS 1.3 (None otherwise).
    pub channel_binding: Option<Vec<u8>>,
    /// s2s only: the DNS names (lowercase; wildcards kept as `*.example.org`) of the peer's
    /// certificate when its chain validates against the trust roots (system roots or
    /// `[s2s] ca_file`) for server or client authentication; empty when the peer presented no
    /// certificate or an invalid one. Matching a domain against them is the core's job.
    pub peer_cert_names: Vec<String>,
    /// Outgoing s2s only: we presented a certificate for the local domain.
    pub presented_cert: bool,
}

/// What the core asks the driver to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes (through TLS if the connection has it).
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Everything queued before this was sent in plaintext; now start a TLS server handshake
    /// on this connection. `buffered` are bytes the client already sent after `<starttls/>`:
    /// they are the first TLS records.
    StartTls { conn: ConnId, buffered: Vec<u8> },
    /// Flush what is queued, then close the connection. The core has forgotten it.
    Close { conn: ConnId },
    /// Open a TCP connection to `addr` under the core-made id `conn` (`OUTGOING_CONN_BIT`).
    /// Without `tls`: call `handle_connected` once TCP is up. With `tls` (XEP-0368 direct
    /// TLS): do the TLS client handshake first (ALPN `xmpp-server`), then `handle_tls_ready`.
    /// If it fails or the core's connect timeout passes first: `handle_disconnect`.
    Connect {
        conn: ConnId,
        addr: SocketAddr,
        tls: Option<ClientTls>,
    },
    /// Like `StartTls`, on an outgoing connection: start a TLS *client* handshake after what is
    /// queued was sent; `buffered` are bytes already received after `<proceed/>`.
    StartTlsClient {
        conn: ConnId,
        buffered: Vec<u8>,
        tls: ClientTls,
    },
    /// A DNS datagram or TCP exchange for the resolver; answers come back through
    /// `handle_dns_udp` / `handle_dns_tcp`.
    Dns(crate::dns::Transmit),
}

/// A source of random bytes (the driver gives the system's; tests a seeded one).
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]);
}

struct Conn {
    c2s: C2sConn,
    session: Option<SessionId>,
    peer: SocketAddr,
    /// The deadline under which this connection sits in `Server::timers`.
    timer: Option<Instant>,
}

pub struct Server {
    config: Arc<Config>,
    store: Box<dyn Store>,
    random: Box<dyn RandomSource>,
    registry: Registry,
    router: Router,
    // Boxed: a bucket then holds a pointer, not the 700-byte state (measured -0.9 KiB/session
    // together with the router's boxed sessions).
    conns: HashMap<ConnId, Box<Conn>>,
    /// Connection deadlines, earliest first.
    timers: BTreeSet<(Instant, ConnId)>,
    actions: VecDeque<Action>,
    /// Upcalls waiting to be processed, tagged with their connection.
    pending: VecDeque<(ConnId, Upcall)>,
    /// Actions waiting for the store's commit (see `push_action`).
    held: VecDeque<Action>,
    /// What features asked to send or route, processed after each feature call.
    outbox: Outbox,
    /// Made once so an unknown account's SCRAM salt is the same on every attempt.
    fake_salt_key: [u8; 32],
    started: Instant,
    /// Accounts created in-band per address (XEP-0077), bounded.
    registration_limiter: RegistrationLimiter,
    /// s2s streams and DNS; `None` when `[s2s] enabled = false`.
    federation: Option<Box<Federation>>,
    /// Stream management and CSI state of sessions (see `session_mgmt`).
    sm: session_mgmt::SessionMgmt,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Box<dyn Store>,
        mut random: Box<dyn RandomSource>,
        now: Instant,
    ) -> Server {
        let mut fake_salt_key = [0u8; 32];
        random.fill(&mut fake_salt_key);
        let federation = config
            .s2s
            .enabled
            .then(|| Box::new(Federation::new(&config, &mut *random)));
        Server {
            federation,
            fake_salt_key,
            started: now,
            config,
            store,
            random,
            registry: Registry::with_all_features(),
            router: Router::new(),
            conns: HashMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            pending: VecDeque::new(),
            held: VecDeque::new(),
            outbox: Outbox::default(),
            registration_limiter: RegistrationLimiter::new(),
            sm: Default::default(),
        }
    }

    /// A connection was accepted.
    pub fn handle_accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        kind: ListenerKind,
        peer: SocketAddr,
    ) {
        log::debug!("{conn:?}: accepted from {peer} ({kind:?})");
        if matches!(kind, ListenerKind::S2sStartTls | ListenerKind::S2sDirectTls) {
            match self.federation.as_mut() {
                Some(f) => f.accept(now, conn, kind == ListenerKind::S2sDirectTls),
                None => self.push_action(Action::Close { conn }),
            }
            return self.process(now);
        }
        let c2s = C2sConn::new(now, kind, &self.config);
        self.conns.insert(
            conn,
            Box::new(Conn {
                c2s,
                session: None,
                peer,
                timer: None,
            }),
        );
        self.refresh_timer(conn);
    }

    /// A TLS handshake finished (direct TLS, or after `Action::StartTls`).
    pub fn handle_tls_ready(&mut self, now: Instant, conn: ConnId, info: TlsInfo) {
        if let Some(f) = self.federation.as_mut().filter(|f| f.owns(conn)) {
            f.tls_ready(now, conn, info, &mut *self.random);
            return self.process(now);
        }
        self.with_conn(conn, |c, env| c.handle_tls_ready(now, info, env));
        self.process(now);
    }

    /// An outgoing connection (`Action::Connect` without TLS) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        if let Some(f) = self.federation.as_mut() {
            f.connected(now, conn);
        }
        self.process(now);
    }

    /// A DNS datagram arrived from `from` on the resolver's UDP socket.
    pub fn handle_dns_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some(f) = self.federation.as_mut() {
            f.dns_udp(now, from, bytes);
        }
        self.process(now);
    }

    /// A DNS-over-TCP exchange ended: the reply message (length prefix removed), or `None` if
    /// the connection failed or closed before a whole reply.
    pub fn handle_dns_tcp(&mut self, now: Instant, id: crate::dns::TcpId, reply: Option<&[u8]>) {
        if let Some(f) = self.federation.as_mut() {
            f.dns_tcp(now, id, reply);
        }
        self.process(now);
    }

    /// Application bytes arrived (already decrypted when TLS is on).
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if let Some(f) = self.federation.as_mut().filter(|f| f.owns(conn)) {
            f.bytes(now, conn, bytes, &mut *self.random);
            return self.process(now);
        }
        self.with_conn(conn, |c, env| c.handle_bytes(now, bytes, env));
        self.process(now);
    }

    /// The connection is gone (peer closed, I/O or TLS error, or the driver closed it because
    /// its output queue passed `limits.max_outgoing_bytes`). The core emits no `Close` for it.
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        if let Some(f) = self.federation.as_mut().filter(|f| f.owns(conn)) {
            f.disconnect(now, conn);
            return self.process(now);
        }
        if let Some(c) = self.conns.get(&conn) {
            log::debug!("{conn:?}: disconnected ({})", c.peer);
        }
        self.forget_conn(now, conn);
        self.process(now);
    }

    /// Time passed; run what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each due entry is removed before its connection is handled.
        while let Some(&(when, conn)) = self.timers.first() {
            if when > now {
                break;
            }
            self.timers.remove(&(when, conn));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.timer = None;
            }
            self.with_conn(conn, |c, env| c.handle_timeout(now, env));
            self.process(now);
        }
        if let Some(f) = self.federation.as_mut() {
            if f.poll_timeout().is_some_and(|t| t <= now) {
                f.timeout(now);
                self.process(now);
            }
        }
        self.sm_timeout(now);
    }

    /// Graceful shutdown: every stream gets `system-shutdown` and a `Close`.
    pub fn handle_shutdown(&mut self, now: Instant) {
        // Federation first: what it bounces still reaches the local senders.
        if let Some(f) = self.federation.as_mut() {
            f.shutdown(now);
            self.process(now);
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.with_conn(id, |c, env| {
                c.fail(StreamError::new(StreamCondition::SystemShutdown), env)
            });
        }
        self.process(now);
        self.sm_shutdown(now);
    }

    /// A command line from the control socket (see `control`); returns the full reply text.
    pub fn handle_control(&mut self, now: Instant, request: &str) -> String {
        use crate::control::{ControlRequest, execute, format_reply};
        let result = match ControlRequest::parse(request) {
            Ok(req) => {
                let r = execute(&req, &self.config, &mut *self.store);
                // The CLI is told only what is durable.
                self.commit();
                if r.is_ok() {
                    match &req {
                        ControlRequest::UserDel { jid } => {
                            if let Ok(j) = Jid::parse(jid) {
                                self.router.blocking.forget(&j.to_bare().to_string());
                            }
                            self.kick_account(now, jid, "account deleted")
                        }
                        ControlRequest::UserPasswd { jid, .. } => {
                            self.kick_account(now, jid, "password changed")
                        }
                        _ => {}
                    }
                }
                r
            }
            Err(e) => Err(e),
        };
        format_reply(&result)
    }

    /// The next action for the driver, in the order produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c2s = self.timers.first().map(|(t, _)| *t);
        let s2s = self.federation.as_ref().and_then(|f| f.poll_timeout());
        c2s.into_iter()
            .chain(s2s)
            .chain(self.sm.next_deadline())
            .min()
    }

    /// Connections the core knows (c2s only; s2s ones are the federation's).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Runs `f` on a connection's state machine with its environment, then queues what it
    /// asked for.
    fn with_conn(&mut self, id: ConnId, f: impl FnOnce(&mut C2sConn, &mut Env)) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut out = Vec::new();
        let mut env = Env {
            config: &self.config,
            registry: &self.registry,
            store: &*self.store,
            random: &mut *self.random,
            fake_salt_key: self.fake_salt_key,
            out: &mut out,
        };
        f(&mut conn.c2s, &mut env);
        self.pending.extend(out.into_iter().map(|u| (id, u)));
        self.refresh_timer(id);
    }

    fn refresh_timer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let want = conn.c2s.deadline();
        if conn.timer != want {
            if let Some(old) = conn.timer {
                self.timers.remove(&(old, id));
            }
            if let Some(new) = want {
                self.timers.insert((new, id));
            }
            conn.timer = want;
        }
    }

    /// Processes upcalls until none are left (handling one may produce more).
    fn process(&mut self, now: Instant) {
        // Bounded: each round consumes what is queued; new items come only from finite
        // buffered input, and federation output is bounded per round (see `process_federation`).
        loop {
            self.process_c2s(now);
            if !self.process_federation(now) {
                return;
            }
        }
    }

    /// Carries out what the federation manager asked for; false if it asked nothing.
    fn process_federation(&mut self, now: Instant) -> bool {
        let mut any = false;
        // Bounded: at most this many items per round, so that two features bouncing stanzas
        // at each other across the federation cannot keep one turn going forever.
        for _ in 0..routing::MAX_ROUTES_PER_FLUSH {
            let Some(item) = self.federation.as_mut().and_then(|f| f.poll()) else {
                return any;
            };
            any = true;
            match item {
                FedOut::Action(a) => self.push_action(a),
                FedOut::Inbound(e) => self.route_from_remote(now, e),
                FedOut::Bounce(e) => self.route_bounce(now, e),
            }
        }
        log::error!("federation produced too much in one turn; the rest waits");
        false
    }

    fn process_c2s(&mut self, now: Instant) {
        // Bounded: every upcall is consumed; new ones come only from finite buffered input.
        while let Some((id, up)) = self.pending.pop_front() {
            match up {
                Upcall::Send(bytes) => self.push_action(Action::Send { conn: id, bytes }),
                Upcall::StartTls(buffered) => {
                    self.push_action(Action::StartTls { conn: id, buffered })
                }
                Upcall::Close => {
                    self.push_action(Action::Close { conn: id });
                    self.forget_conn(now, id);
                }
                Upcall::Bind { iq_id, resource } => self.bind(now, id, &iq_id, resource),
                Upcall::Stanza(e) => self.route_from_session(now, id, e),
                Upcall::Register {
                    iq_id,
                    account,
                    credentials,
                } => {
                    let Some(ip) = self.conns.get(&id).map(|c| c.peer.ip()) else {
                        continue;
                    };
                    let result = register::create_account_limited(
                        &mut self.registration_limiter,
                        ip,
                        now,
                        &mut *self.store,
                        &self.config,
                        &account,
                        &credentials,
                    );
                    self.with_conn(id, |c, env| c.register_done(now, &iq_id, result, env));
                }
                Upcall::SendStanza(bytes) => {
                    if !self.sm_take(id, &bytes, None) {
                        self.push_action(Action::Send { conn: id, bytes });
                    }
                }
                Upcall::SmEnable { resume } => self.sm_enable(id, resume),
                Upcall::SmAck(h) => self.sm_ack(id, h),
                Upcall::SmResume { previd, h } => self.sm_resume(now, id, &previd, h),
                Upcall::Csi { active } => {
                    self.sm_csi(id, active);
                    if active {
                        self.sm_awake(now, id);
                    }
                }
            }
        }
    }

    fn forget_conn(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(t) = conn.timer {
            self.timers.remove(&(t, id));
        }
        if let Some(sid) = conn.session {
            let (survives, handled) = (conn.c2s.session_survives(), conn.c2s.sm_handled());
            if self.sm_detach(now, id, sid, survives, handled) {
                return;
            }
            self.end_session(now, sid);
        }
    }

    /// Ends a session: the session-end hooks run while it is still in the router (presence
    /// goes out to whoever saw it), then it leaves.
    fn end_session(&mut self, now: Instant, sid: SessionId) {
        let owed = self.sm_forget(sid);
        if self.router.session(sid).is_none() {
            return;
        }
        for hook in &self.registry.session_end {
            let mut ctx = ctx!(self, now);
            hook(&mut ctx, sid);
        }
        if let Some(s) = self.router.unbind(sid) {
            log::info!("session ended: {}", s.jid);
        }
        self.flush_outbox(now);
        self.sm_dispose(now, owed);
    }

    fn bind(&mut self, now: Instant, id: ConnId, iq_id: &str, resource: Option<String>) {
        let Some(account) = self
            .conns
            .get(&id)
            .and_then(|c| c.c2s.authenticated_account().cloned())
        else {
            return;
        };
        let mut rnd = [0u8; 6];
        self.random.fill(&mut rnd);
        let generated: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let generated = format!("hearth-{generated}");
        // RFC 6120 §7.7.2.2: a new login with the same full JID replaces the older session.
        let wanted = account.with_resource(resource.as_deref().unwrap_or(&generated));
        if let Some(old) = wanted
            .ok()
            .and_then(|j| self.router.find_full(&j).map(|s| (s.id, s.conn)))
        {
            let (old_sid, old_conn) = old;
            log::info!("{account}: session replaced by a new login with the same resource");
            if let Some(c) = self.conns.get_mut(&old_conn) {
                c.session = None;
            }
            self.end_session(now, old_sid);
            self.with_conn(old_conn, |c, env| {
                c.fail(
                    StreamError::with_text(
                        StreamCondition::Conflict,
                        "replaced by a new login with the same resource",
                    ),
                    env,
                )
            });
        }
        let result = self.router.bind(
            &account,
            resource.as_deref(),
            &generated,
            id,
            self.config.limits.max_sessions_per_account,
        );
        let result = match result {
            Ok(bound) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.session = Some(bound.id);
                }
                log::info!("bound {}", bound.jid);
                Ok(bound.jid)
            }
            Err(e) => Err(e),
        };
        self.with_conn(id, |c, env| c.bind_done(now, iq_id, result, env));
    }

    fn kick_account(&mut self, now: Instant, bare: &str, why: &str) {
        let Ok(account) = Jid::parse(bare) else {
            return;
        };
        self.sm_end_detached(now, &account);
        let conns: Vec<ConnId> = self.router.sessions_of(&account).map(|s| s.conn).collect();
        for c in conns {
            self.with_conn(c, |c, env| {
                c.fail(
                    StreamError::with_text(StreamCondition::NotAuthorized, why),
                    env,
                )
            });
        }
        self.process(now);
    }

    /// Queues an action, holding it back while the store has uncommitted writes: whatever is
    /// sent after a write may acknowledge it, and nothing is acknowledged before it is durable.
    fn push_action(&mut self, action: Action) {
        if self.store.has_uncommitted() || !self.held.is_empty() {
            if matches!(
                action,
                Action::StartTls { .. } | Action::StartTlsClient { .. }
            ) {
                // The driver must switch to TLS before it reads this connection again, so
                // this cannot wait for the end of the turn: commit now.
                self.held.push_back(action);
                self.commit();
                return;
            }
            self.held.push_back(action);
        } else {
            self.actions.push_back(action);
        }
    }

    /// End of an event-loop turn: one durable commit for all the turn's writes (group commit),
    /// then what was held back is released.
    pub fn end_turn(&mut self, now: Instant) {
        self.sm_end_turn(now);
        self.commit();
    }

    fn commit(&mut self) {
        if self.store.has_uncommitted() {
            if let Err(e) = self.store.commit() {
                // The writes are lost; what was held still goes out, since withholding it
                // would stall the sessions without bringing the data back.
                log::error!("store commit failed: {e}");
            }
        }
        self.actions.extend(self.held.drain(..));
    }
}

#[cfg(test)]
mod fed_tests;
#[cfg(test)]
mod tests;
