//! hearth-loadgen: a loopback XMPP load generator for comparing servers the same way.
//!
//! Scenarios: `logins` (N sessions, held open), `messages` (K sender->receiver pairs, as fast
//! as a bounded window allows or at a fixed rate), `pingpong` (window 1 round trips).
//! Every session does the full path a client does: TCP, STARTTLS (or direct TLS), SCRAM-SHA-1,
//! bind, initial presence, and a ping whose answer says the server is done with it.
//! One JSON object per result on stdout; a human summary on stderr.
//!
//! Worker threads each own a mio Poll and a share of the connections; the main thread sends
//! them commands and gathers their reports. Certificates are not verified (loopback only).

mod conn;
mod scram;
mod split;

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use conn::{Conn, Ctx, St};

const USAGE: &str = "usage:
  hearth-loadgen register --host H --port P --domain D [--users u%d] [--password pw] --count N
                          (in-band registration, XEP-0077, for servers that allow it on loopback)
  hearth-loadgen logins   --host H --port P --domain D [--users u%d] [--password pw] --count N[,N2...]
                          [--concurrency C] [--direct-tls] [--scram-cache FILE] [--hold SECS|-1]
  hearth-loadgen messages --host H --port P --domain D --pairs K --count M [--rate R] [--window W]
                          [--tick-us 100] (pacing tick at a fixed rate; 0 = 1 ms bursts)
  hearth-loadgen pingpong --host H --port P --domain D --count M
common: [--threads T] [--user-offset O] [--server-pid PID] [--settle SECS] [--timeout SECS] [--label L]
  --count for logins takes stages: sessions are opened up to each total in turn and a result
  is printed per stage (with the server's RSS when --server-pid is given).
  --hold -1 keeps the sessions until standard input closes.";

struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(v: &[String]) -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {}", v[i]))?;
            if k == "direct-tls" || k == "help" {
                map.insert(k.to_string(), "1".into());
                i += 1;
            } else {
                let val = v.get(i + 1).ok_or_else(|| format!("--{k} needs a value"))?;
                map.insert(k.to_string(), val.clone());
                i += 2;
            }
        }
        Ok(Args { map })
    }
    fn s(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn n<T: std::str::FromStr>(&self, k: &str, d: T) -> Result<T, String> {
        match self.map.get(k) {
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v}")),
            None => Ok(d),
        }
    }
    fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }
}

/// CPU seconds (user+system) of a process from /proc/PID/stat.
fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / 100.0) // USER_HZ is 100 on Linux
}

/// (time spent running, time spent runnable but waiting for a CPU) in seconds, summed over a
/// process's threads, from /proc/PID/task/*/schedstat. The wait says how much the machine,
/// not the server, added to latency.
fn sched_secs(pid: &str) -> Option<(f64, f64)> {
    let (mut run, mut wait) = (0.0, 0.0);
    // Bounded by the process's thread count.
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        let mut f = s
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0));
        run += f.next().unwrap_or(0.0) / 1e9;
        wait += f.next().unwrap_or(0.0) / 1e9;
    }
    Some((run, wait))
}

/// The one-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Default pacing tick of the fixed-rate mode (`--tick-us`). `epoll_wait` sleeps in whole
/// milliseconds (mio rounds a 500 us timeout up to 1 ms), which sent a fixed rate as 1 ms
/// bursts; a pacer thread wakes the worker this often instead, so messages leave close to
/// their due times. `--tick-us 0` restores the old 1 ms bursts for comparison.
const PACE_TICK_US: u64 = 100;
const WAKE_TOKEN: Token = Token(usize::MAX);

/// (VmRSS, VmHWM) in KiB.
fn mem_kib(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((get("VmRSS:")?, get("VmHWM:")?))
}

/// Accepts any certificate: this tool talks to servers on loopback with throw-away certs.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(direct: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    // Every login pays a full handshake, as a client's first connection does.
    cfg.resumption = rustls::client::Resumption::disabled();
    if direct {
        cfg.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    Ok(Arc::new(cfg))
}

// ---------------------------------------------------------------- workers

enum Cmd {
    /// Open sessions for these user names, at most `conc` negotiating at once.
    Login {
        users: Vec<String>,
        conc: usize,
    },
    /// Pairs (sender, receiver) are the conns opened by the last Login, in order.
    Messages {
        count: u64,
        window: u64,
        rate_pp: f64,
        echo: bool,
        epoch: Instant,
        tick: Duration,
    },
    Stop,
}

#[derive(Default)]
struct LoginRep {
    start: Option<Instant>,
    end: Option<Instant>,
    ok: usize,
    failed: usize,
    times_us: Vec<u32>,
    cache_hits: usize,
    first_err: Option<String>,
}

#[derive(Default)]
struct MsgRep {
    start: Option<Instant>,
    end: Option<Instant>,
    sent: u64,
    recv: u64,
    /// Receipt minus the time the message was actually written (service latency).
    lat_us: Vec<u32>,
    /// Fixed rate only: receipt minus the time the message was due by the schedule. This
    /// counts a late generator against the result instead of hiding it (coordinated omission).
    lat_due_us: Vec<u32>,
    /// Fixed rate only: how late after its due time each message was written.
    lag_us: Vec<u32>,
    complete: bool,
    first_err: Option<String>,
}

enum Rep {
    Login(LoginRep),
    Msg(MsgRep),
}

struct Pair {
    s: usize,
    r: usize,
    sent: u64,
    recv: u64,
}

enum Phase {
    Idle,
    Login {
        pending: VecDeque<String>,
        active: usize,
        conc: usize,
        rep: LoginRep,
        base: usize,
    },
    Msg {
        pairs: Vec<Pair>,
        count: u64,
        window: u64,
        rate_pp: f64,
        echo: bool,
        epoch: Instant,
        /// When the schedule started, in ns since `epoch`: message k of a pair is due
        /// k / rate_pp seconds after it.
        start_ns: u64,
        /// Stops the pacer thread (fixed rate only).
        pacer: Option<Arc<AtomicBool>>,
        rep: MsgRep,
    },
}

struct Worker {
    ctx: Arc<Ctx>,
    poll: Poll,
    waker: Arc<Waker>,
    conns: Vec<Conn>,
    /// First conn of the last Login batch.
    batch: usize,
    timeout: Duration,
}

impl Worker {
    fn run(mut self, rx: Receiver<Cmd>, tx: Sender<Rep>) {
        let mut events = Events::with_capacity(1024);
        let mut phase = Phase::Idle;
        let mut got = Vec::new();
        let mut deadline = Instant::now();
        loop {
            if matches!(phase, Phase::Idle) {
                match rx.try_recv() {
                    Ok(Cmd::Login { users, conc }) => {
                        let base = self.conns.len();
                        self.batch = base;
                        deadline = Instant::now() + self.timeout;
                        let rep = LoginRep {
                            start: Some(Instant::now()),
                            ..Default::default()
                        };
                        phase = Phase::Login {
                            pending: users.into(),
                            active: 0,
                            conc,
                            rep,
                            base,
                        };
                    }
                    Ok(Cmd::Messages {
                        count,
                        window,
                        rate_pp,
                        echo,
                        epoch,
                        tick,
                    }) => {
                        let b = self.batch;
                        let n = (self.conns.len() - b) / 2;
                        let pairs = (0..n)
                            .map(|p| Pair {
                                s: b + 2 * p,
                                r: b + 2 * p + 1,
                                sent: 0,
                                recv: 0,
                            })
                            .collect();
                        deadline = Instant::now() + self.timeout;
                        let t0 = Instant::now();
                        let rep = MsgRep {
                            start: Some(t0),
                            ..Default::default()
                        };
                        let pacer = (rate_pp > 0.0 && !tick.is_zero()).then(|| {
                            let stop = Arc::new(AtomicBool::new(false));
                            let (stop2, waker) = (stop.clone(), self.waker.clone());
                            std::thread::spawn(move || {
                                while !stop2.load(Ordering::Relaxed) {
                                    std::thread::sleep(tick);
                                    let _ = waker.wake();
                                }
                            });
                            stop
                        });
                        phase = Phase::Msg {
                            start_ns: (t0 - epoch).as_nanos() as u64,
                            pacer,
                            pairs,
                            count,
                            window,
                            rate_pp,
                            echo,
                            epoch,
                            rep,
                        };
                    }
                    Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            let wait = match &phase {
                Phase::Idle => Duration::from_millis(20),
                // The pacer wakes the loop; this is only a fallback.
                Phase::Msg { rate_pp, .. } if *rate_pp > 0.0 => Duration::from_millis(1),
                _ => Duration::from_millis(10),
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                    eprintln!("poll: {e}");
                    break;
                }
                _ => {}
            }
            let now_epoch = match &phase {
                Phase::Msg {
                    epoch,
                    start_ns,
                    rate_pp,
                    ..
                } => Some((*epoch, *start_ns, *rate_pp)),
                _ => None,
            };
            for ev in events.iter() {
                let i = ev.token().0;
                let Some(c) = self.conns.get_mut(i) else {
                    continue;
                };
                let before = c.state;
                got.clear();
                c.on_event(&self.ctx, ev.is_writable(), &mut got);
                if c.state != before {
                    self.changed(i, &mut phase);
                }
                if let (
                    false,
                    Phase::Msg {
                        pairs, echo, rep, ..
                    },
                    Some(ep),
                ) = (got.is_empty(), &mut phase, now_epoch)
                {
                    Self::received(&mut self.conns, i, &got, pairs, *echo, ep, rep);
                }
            }
            // Drive the phase.
            let done = match &mut phase {
                Phase::Idle => false,
                Phase::Login {
                    pending,
                    active,
                    conc,
                    rep,
                    ..
                } => {
                    while *active < *conc {
                        let Some(u) = pending.pop_front() else { break };
                        match Conn::connect(&self.ctx, u) {
                            Ok(mut c) => {
                                let tok = Token(self.conns.len());
                                if let Err(e) = self.poll.registry().register(
                                    &mut c.sock,
                                    tok,
                                    Interest::READABLE | Interest::WRITABLE,
                                ) {
                                    rep.failed += 1;
                                    rep.first_err.get_or_insert(format!("register: {e}"));
                                    continue;
                                }
                                self.conns.push(c);
                                *active += 1;
                            }
                            Err(e) => {
                                rep.failed += 1;
                                rep.first_err.get_or_insert(format!("connect: {e}"));
                            }
                        }
                    }
                    if Instant::now() > deadline {
                        rep.failed += *active + pending.len();
                        rep.first_err.get_or_insert("timeout".into());
                        pending.clear();
                        *active = 0;
                    }
                    *active == 0 && pending.is_empty()
                }
                Phase::Msg {
                    pairs,
                    count,
                    window,
                    rate_pp,
                    epoch,
                    start_ns,
                    rep,
                    ..
                } => {
                    let el = rep.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    let mut all = true;
                    for p in pairs.iter_mut() {
                        let mut limit = (*count).min(p.recv + *window);
                        if *rate_pp > 0.0 {
                            limit = limit.min((el * *rate_pp) as u64 + 1);
                        }
                        if p.sent < limit {
                            let to = self.conns[p.r].jid.clone();
                            let c = &mut self.conns[p.s];
                            let mut buf =
                                Vec::with_capacity(((limit - p.sent) as usize).min(4096) * 120);
                            while p.sent < limit {
                                let ts = epoch.elapsed().as_nanos() as u64;
                                if *rate_pp > 0.0 {
                                    let due = due_ns(*start_ns, p.sent, *rate_pp);
                                    rep.lag_us.push((ts.saturating_sub(due) / 1000) as u32);
                                }
                                buf.extend_from_slice(b"<message type='chat' to='");
                                buf.extend_from_slice(to.as_bytes());
                                buf.extend_from_slice(
                                    format!("'><body>{} {ts}</body></message>", p.sent).as_bytes(),
                                );
                                p.sent += 1;
                                rep.sent += 1;
                            }
                            c.send(&buf);
                            c.flush();
                        }
                        if p.recv < *count {
                            all = false;
                        }
                        for i in [p.s, p.r] {
                            if self.conns[i].state == St::Failed {
                                rep.first_err
                                    .get_or_insert(self.conns[i].err.clone().unwrap_or_default());
                            }
                        }
                    }
                    rep.complete = all;
                    all || Instant::now() > deadline || rep.first_err.is_some()
                }
            };
            if done {
                match std::mem::replace(&mut phase, Phase::Idle) {
                    Phase::Login { mut rep, .. } => {
                        rep.end = Some(Instant::now());
                        let _ = tx.send(Rep::Login(rep));
                    }
                    Phase::Msg { mut rep, pacer, .. } => {
                        if let Some(stop) = pacer {
                            stop.store(true, Ordering::Relaxed);
                        }
                        rep.end = Some(Instant::now());
                        let _ = tx.send(Rep::Msg(rep));
                    }
                    Phase::Idle => {}
                }
            }
        }
        for c in &mut self.conns {
            c.close();
        }
    }

    fn changed(&mut self, i: usize, phase: &mut Phase) {
        let c = &mut self.conns[i];
        if let Phase::Login {
            active, rep, base, ..
        } = phase
        {
            if i < *base {
                return;
            }
            match c.state {
                St::Ready => {
                    if self.ctx.register {
                        c.close();
                        let _ = self.poll.registry().deregister(&mut c.sock);
                        let _ = c.sock.shutdown(std::net::Shutdown::Both);
                    }
                    *active -= 1;
                    rep.ok += 1;
                    rep.times_us.push(c.started.elapsed().as_micros() as u32);
                    if c.cache_hit {
                        rep.cache_hits += 1;
                    }
                }
                St::Failed => {
                    *active -= 1;
                    rep.failed += 1;
                    rep.first_err.get_or_insert(format!(
                        "{}: {}",
                        c.user,
                        c.err.clone().unwrap_or_default()
                    ));
                    let _ = self.poll.registry().deregister(&mut c.sock);
                }
                _ => {}
            }
        } else if c.state == St::Failed {
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }

    fn received(
        conns: &mut [Conn],
        i: usize,
        got: &[(u64, u64)],
        pairs: &mut [Pair],
        echo: bool,
        (epoch, start_ns, rate_pp): (Instant, u64, f64),
        rep: &mut MsgRep,
    ) {
        let now = epoch.elapsed().as_nanos() as u64;
        for p in pairs.iter_mut() {
            if i == p.r {
                if echo {
                    let to = conns[p.s].jid.clone();
                    let mut buf = Vec::new();
                    for (seq, ts) in got {
                        buf.extend_from_slice(
                            format!(
                                "<message type='chat' to='{to}'><body>{seq} {ts}</body></message>"
                            )
                            .as_bytes(),
                        );
                    }
                    conns[p.r].send(&buf);
                    conns[p.r].flush();
                    return;
                }
            } else if !(echo && i == p.s) {
                continue;
            }
            for (seq, ts) in got {
                p.recv += 1;
                rep.recv += 1;
                rep.lat_us.push((now.saturating_sub(*ts) / 1000) as u32);
                if rate_pp > 0.0 {
                    let due = due_ns(start_ns, *seq, rate_pp);
                    rep.lat_due_us.push((now.saturating_sub(due) / 1000) as u32);
                }
            }
            return;
        }
    }
}

/// When message `seq` of a pair is due, in ns since the epoch.
fn due_ns(start_ns: u64, seq: u64, rate_pp: f64) -> u64 {
    start_ns + (seq as f64 * 1e9 / rate_pp) as u64
}

// ---------------------------------------------------------------- orchestration

struct Run {
    txs: Vec<Sender<Cmd>>,
    rx: Receiver<Rep>,
    handles: Vec<std::thread::JoinHandle<()>>,
    timeout: Duration,
}

impl Run {
    fn start(ctx: Arc<Ctx>, threads: usize, timeout: Duration) -> Result<Run, String> {
        let (rtx, rx) = mpsc::channel();
        let mut txs = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (tx, crx) = mpsc::channel();
            let poll = Poll::new().map_err(|e| e.to_string())?;
            let waker =
                Arc::new(Waker::new(poll.registry(), WAKE_TOKEN).map_err(|e| e.to_string())?);
            let w = Worker {
                ctx: ctx.clone(),
                poll,
                waker,
                conns: Vec::new(),
                batch: 0,
                timeout,
            };
            let rtx = rtx.clone();
            handles.push(std::thread::spawn(move || w.run(crx, rtx)));
            txs.push(tx);
        }
        Ok(Run {
            txs,
            rx,
            handles,
            timeout,
        })
    }

    fn gather(&self) -> Result<Vec<Rep>, String> {
        let mut out = Vec::new();
        for _ in 0..self.txs.len() {
            out.push(
                self.rx
                    .recv_timeout(self.timeout + Duration::from_secs(10))
                    .map_err(|_| "a worker did not report in time")?,
            );
        }
        Ok(out)
    }

    fn stop(self) {
        for t in &self.txs {
            let _ = t.send(Cmd::Stop);
        }
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)] as f64
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

struct Meter {
    t: Instant,
    cpu: f64,
    scpu: Option<f64>,
    sched: Option<(f64, f64)>,
    load: f64,
}

impl Meter {
    fn new(spid: &Option<String>) -> Meter {
        Meter {
            t: Instant::now(),
            cpu: cpu_secs("self").unwrap_or(0.0),
            scpu: spid.as_deref().and_then(cpu_secs),
            sched: spid.as_deref().and_then(sched_secs),
            load: loadavg(),
        }
    }
    /// JSON fields for the loadgen's and the server's CPU and the server's memory since `self`.
    fn fields(&self, spid: &Option<String>) -> String {
        let wall = self.t.elapsed().as_secs_f64();
        let cpu = cpu_secs("self").unwrap_or(0.0) - self.cpu;
        let mut s = format!(
            ",\"wall_s\":{wall:.3},\"loadgen_cpu_s\":{cpu:.2},\"loadgen_cpu_pct\":{:.0},\"loadavg_start\":{:.2},\"loadavg_end\":{:.2}",
            100.0 * cpu / wall.max(1e-9),
            self.load,
            loadavg()
        );
        if let Some(pid) = spid {
            if let (Some(a), Some(b)) = (self.scpu, cpu_secs(pid)) {
                s.push_str(&format!(
                    ",\"server_cpu_s\":{:.2},\"server_cpu_pct\":{:.0}",
                    b - a,
                    100.0 * (b - a) / wall.max(1e-9)
                ));
            }
            if let (Some(a), Some(b)) = (self.sched, sched_secs(pid)) {
                s.push_str(&format!(",\"server_runq_wait_s\":{:.3}", b.1 - a.1));
            }
            if let Some((rss, hwm)) = mem_kib(pid) {
                s.push_str(&format!(
                    ",\"server_rss_kib\":{rss},\"server_hwm_kib\":{hwm}"
                ));
            }
        }
        s
    }
}

fn user_names(tmpl: &str, from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| tmpl.replace("%d", &i.to_string()))
        .collect()
}

/// Logs in `users` split round-robin (or in consecutive pairs when `paired`) over the workers.
fn login(run: &Run, users: Vec<String>, conc: usize, paired: bool) -> Result<LoginRep, String> {
    let t = run.txs.len();
    let mut per: Vec<Vec<String>> = vec![Vec::new(); t];
    if paired {
        for (k, pair) in users.chunks(2).enumerate() {
            per[k % t].extend_from_slice(pair);
        }
    } else {
        for (k, u) in users.into_iter().enumerate() {
            per[k % t].push(u);
        }
    }
    for (tx, us) in run.txs.iter().zip(per) {
        tx.send(Cmd::Login {
            users: us,
            conc: conc.div_ceil(t).max(1),
        })
        .map_err(|_| "worker gone")?;
    }
    let mut all = LoginRep::default();
    for r in run.gather()? {
        if let Rep::Login(r) = r {
            all.start = match (all.start, r.start) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            all.end = match (all.end, r.end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            all.ok += r.ok;
            all.failed += r.failed;
            all.cache_hits += r.cache_hits;
            all.times_us.extend(r.times_us);
            if all.first_err.is_none() {
                all.first_err = r.first_err;
            }
        }
    }
    Ok(all)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = argv.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    match Args::parse(&argv[1..]).and_then(|a| real_main(&scenario, &a)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("hearth-loadgen: {e}\n{USAGE}");
            std::process::exit(1);
        }
    }
}

fn real_main(scenario: &str, a: &Args) -> Result<(), String> {
    if a.has("help") || scenario == "--help" || scenario == "-h" {
        println!("{USAGE}");
        return Ok(());
    }
    let host = a.s("host", "127.0.0.1");
    let port: u16 = a.n("port", 5222)?;
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; this tool only targets loopback"
        ));
    }
    let domain = a.s("domain", "localhost");
    let direct = a.has("direct-tls");
    let cache_path = a.map.get("scram-cache").cloned();
    let ctx = Arc::new(Ctx {
        addr,
        domain,
        password: a.s("password", "pw"),
        tls: tls_config(direct)?,
        direct_tls: direct,
        register: scenario == "register",
        cache: scram::Cache::load(cache_path.as_deref()),
        rng: ring::rand::SystemRandom::new(),
    });
    let tmpl = a.s("users", "u%d");
    let off: usize = a.n("user-offset", 0)?;
    let spid = a.map.get("server-pid").cloned();
    let settle: f64 = a.n("settle", 1.0)?;
    let timeout = Duration::from_secs(a.n("timeout", 300)?);
    let label = a.s("label", "");
    let conc: usize = a.n("concurrency", 100)?;
    let threads: usize = a.n("threads", 2)?;
    let head = |sc: &str| {
        format!(
            "{{\"scenario\":\"{sc}\",\"label\":{},\"tls\":\"{}\"",
            json_str(&label),
            if direct { "direct" } else { "starttls" }
        )
    };

    match scenario {
        "register" => {
            let n: usize = a.n("count", 100)?;
            let run = Run::start(ctx.clone(), threads.max(1), timeout)?;
            let r = login(&run, user_names(&tmpl, off, off + n), conc, false)?;
            let secs = match (r.start, r.end) {
                (Some(s), Some(e)) => (e - s).as_secs_f64(),
                _ => 0.0,
            };
            println!(
                "{},\"accounts\":{n},\"ok\":{},\"failed\":{},\"secs\":{secs:.3}{}}}",
                head("register"),
                r.ok,
                r.failed,
                r.first_err
                    .as_ref()
                    .map(|e| format!(",\"first_error\":{}", json_str(e)))
                    .unwrap_or_default()
            );
            eprintln!(
                "register: {} of {n} accounts in {secs:.1}s ({} failed){}",
                r.ok,
                r.failed,
                r.first_err
                    .as_ref()
                    .map(|e| format!(" [first error: {e}]"))
                    .unwrap_or_default()
            );
            run.stop();
            if r.failed > 0 {
                return Err("some registrations failed".into());
            }
        }
        "logins" => {
            let stages: Vec<usize> = a
                .s("count", "100")
                .split(',')
                .map(|s| s.trim().parse().map_err(|_| format!("bad --count {s}")))
                .collect::<Result<_, _>>()?;
            let run = Run::start(ctx.clone(), threads.max(1), timeout)?;
            let m0 = Meter::new(&spid);
            let idle = spid.as_deref().and_then(mem_kib);
            let mut have = 0;
            for &n in &stages {
                if n <= have {
                    continue;
                }
                let m = Meter::new(&spid);
                let mut r = login(&run, user_names(&tmpl, off + have, off + n), conc, false)?;
                let secs = match (r.start, r.end) {
                    (Some(s), Some(e)) => (e - s).as_secs_f64(),
                    _ => 0.0,
                };
                let fields_work = m.fields(&spid);
                std::thread::sleep(Duration::from_secs_f64(settle));
                let mem = spid.as_deref().and_then(mem_kib);
                // Sessions that became ready, not attempts: refused connections fail fast.
                let rate = r.ok as f64 / secs.max(1e-9);
                let p50 = pct(&mut r.times_us, 0.5) / 1000.0;
                let p99 = pct(&mut r.times_us, 0.99) / 1000.0;
                let mut line = format!(
                    "{},\"sessions\":{n},\"new\":{},\"ok\":{},\"failed\":{},\"secs\":{secs:.3},\"logins_per_s\":{rate:.1},\"login_ms_p50\":{p50:.2},\"login_ms_p99\":{p99:.2},\"scram_cache_hits\":{}{fields_work}",
                    head("logins"),
                    n - have,
                    r.ok,
                    r.failed,
                    r.cache_hits
                );
                if let (Some(i), Some(mm)) = (idle, mem) {
                    let per = (mm.0 as f64 - i.0 as f64) / (n as f64);
                    line.push_str(&format!(
                        ",\"idle_rss_kib\":{},\"settled_rss_kib\":{},\"settled_hwm_kib\":{},\"kib_per_session\":{per:.1}",
                        i.0, mm.0, mm.1
                    ));
                }
                if let Some(e) = &r.first_err {
                    line.push_str(&format!(",\"first_error\":{}", json_str(e)));
                }
                line.push('}');
                println!("{line}");
                eprintln!(
                    "logins: {n} sessions ({} new, {} failed) in {secs:.2}s = {rate:.0}/s, login p50 {p50:.1} ms p99 {p99:.1} ms{}{}",
                    r.ok,
                    r.failed,
                    mem.map(|m| format!(", server RSS {} KiB", m.0))
                        .unwrap_or_default(),
                    r.first_err
                        .as_ref()
                        .map(|e| format!(" [first error: {e}]"))
                        .unwrap_or_default()
                );
                have = n;
            }
            if let Some(Err(e)) = cache_path.as_ref().map(|p| ctx.cache.save(p)) {
                eprintln!("scram cache: {e}");
            }
            let hold: f64 = a.n("hold", 0.0)?;
            if hold < 0.0 {
                eprintln!("holding {have} sessions until standard input closes");
                let stdin = io::stdin();
                for _ in stdin.lock().lines().take(1_000_000) {}
            } else if hold > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(hold));
            }
            let _ = m0;
            run.stop();
        }
        "messages" | "pingpong" => {
            let ping = scenario == "pingpong";
            let pairs: usize = if ping { 1 } else { a.n("pairs", 1)? };
            let count: u64 = a.n("count", 10000)?;
            let rate: f64 = if ping { 0.0 } else { a.n("rate", 0.0)? };
            let window_total: u64 = if ping { 1 } else { a.n("window", 1000)? };
            let window = (window_total / pairs as u64).max(1);
            let threads = threads.clamp(1, pairs);
            let run = Run::start(ctx.clone(), threads, timeout)?;
            let lr = login(&run, user_names(&tmpl, off, off + 2 * pairs), conc, true)?;
            if lr.failed > 0 {
                run.stop();
                return Err(format!(
                    "{} of {} logins failed: {}",
                    lr.failed,
                    2 * pairs,
                    lr.first_err.unwrap_or_default()
                ));
            }
            if let Some(p) = &cache_path {
                let _ = ctx.cache.save(p);
            }
            let m = Meter::new(&spid);
            let epoch = Instant::now();
            // Pairs are spread over the threads like the logins were: pair k on thread k % t.
            let rate_pp = if rate > 0.0 { rate / pairs as f64 } else { 0.0 };
            for tx in &run.txs {
                tx.send(Cmd::Messages {
                    count,
                    window,
                    rate_pp,
                    echo: ping,
                    epoch,
                    tick: Duration::from_micros(a.n("tick-us", PACE_TICK_US)?),
                })
                .map_err(|_| "worker gone")?;
            }
            let mut tot = MsgRep {
                complete: true,
                ..Default::default()
            };
            for r in run.gather()? {
                if let Rep::Msg(r) = r {
                    tot.start = match (tot.start, r.start) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    };
                    tot.end = match (tot.end, r.end) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        (x, y) => x.or(y),
                    };
                    tot.sent += r.sent;
                    tot.recv += r.recv;
                    tot.complete &= r.complete;
                    tot.lat_us.extend(r.lat_us);
                    tot.lat_due_us.extend(r.lat_due_us);
                    tot.lag_us.extend(r.lag_us);
                    if tot.first_err.is_none() {
                        tot.first_err = r.first_err;
                    }
                }
            }
            let fields = m.fields(&spid);
            let secs = match (tot.start, tot.end) {
                (Some(s), Some(e)) => (e - s).as_secs_f64(),
                _ => 0.0,
            };
            let per_s = tot.recv as f64 / secs.max(1e-9);
            let (p50, p90, p99, max) = (
                pct(&mut tot.lat_us, 0.5),
                pct(&mut tot.lat_us, 0.9),
                pct(&mut tot.lat_us, 0.99),
                pct(&mut tot.lat_us, 1.0),
            );
            let expected = count * pairs as u64;
            let mut line = format!(
                "{},\"pairs\":{pairs},\"count\":{count},\"rate\":{rate},\"window\":{window_total},\"sent\":{},\"received\":{},\"delivered_all\":{},\"secs\":{secs:.3},\"{}\":{per_s:.1},\"lat_us_p50\":{p50},\"lat_us_p90\":{p90},\"lat_us_p99\":{p99},\"lat_us_max\":{max}{fields}",
                head(scenario),
                tot.sent,
                tot.recv,
                tot.complete && tot.recv == expected,
                if ping {
                    "roundtrips_per_s"
                } else {
                    "msgs_per_s"
                }
            );
            let mut sched = String::new();
            if rate > 0.0 {
                let (d50, d99, dmax) = (
                    pct(&mut tot.lat_due_us, 0.5),
                    pct(&mut tot.lat_due_us, 0.99),
                    pct(&mut tot.lat_due_us, 1.0),
                );
                let (g50, g99, gmax) = (
                    pct(&mut tot.lag_us, 0.5),
                    pct(&mut tot.lag_us, 0.99),
                    pct(&mut tot.lag_us, 1.0),
                );
                line.push_str(&format!(
                    ",\"lat_due_us_p50\":{d50},\"lat_due_us_p99\":{d99},\"lat_due_us_max\":{dmax},\"lag_us_p50\":{g50},\"lag_us_p99\":{g99},\"lag_us_max\":{gmax}"
                ));
                sched = format!(
                    "; from due time p50 {d50:.0} us p99 {d99:.0} us; generator lag p99 {g99:.0} us max {gmax:.0} us"
                );
            }
            if let Some(e) = &tot.first_err {
                line.push_str(&format!(",\"first_error\":{}", json_str(e)));
            }
            line.push('}');
            println!("{line}");
            eprintln!(
                "{scenario}: {}/{expected} {} in {secs:.2}s = {per_s:.0}/s, {} p50 {:.0} us p99 {:.0} us max {:.0} us{sched}{}",
                tot.recv,
                if ping {
                    "round trips"
                } else {
                    "messages received"
                },
                if ping { "round trip" } else { "latency" },
                p50,
                p99,
                max,
                tot.first_err
                    .as_ref()
                    .map(|e| format!(" [first error: {e}]"))
                    .unwrap_or_default()
            );
            run.stop();
        }
        _ => return Err(format!("unknown scenario {scenario}")),
    }
    Ok(())
}
