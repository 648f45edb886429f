//! Test harness for the black-box tests in `tests/`: starts the real `hearth` binary on loopback
//! with a temp config, drives its CLI, and speaks raw XMPP to it over TCP and rustls.
//!
//! It owns process lifetime (SIGTERM, then kill after a bounded wait, on `Drop`), free-port
//! picking, and a deliberately small XMPP client: a top-level tokenizer over the server's output
//! (stream header, complete elements, stream close, EOF), STARTTLS and direct TLS with a verifier
//! that accepts any certificate (the server's is self-signed), SASL PLAIN, and resource binding.
//! It does not validate XML: the assertions in the tests do that, on the exact bytes. Every wait
//! is bounded; a timeout panics with what was received so far.
#![allow(dead_code)]

pub mod scram;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Default bound for one expected answer.
pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// Knobs for the generated config.
#[derive(Clone, Debug)]
pub struct Opts {
    pub domains: Vec<String>,
    pub auth_timeout_secs: u64,
    pub auth_failure_delay_ms: u64,
    pub max_auth_failures: u32,
    /// Users created with the server stopped, before the first start: (jid, password).
    pub users: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            domains: vec!["localhost".to_owned()],
            auth_timeout_secs: 60,
            // Short, so failure tests stay quick; the delay itself is checked with its own value.
            auth_failure_delay_ms: 200,
            max_auth_failures: 3,
            users: Vec::new(),
        }
    }
}

impl Opts {
    pub fn with_users(mut self, users: &[(&str, &str)]) -> Self {
        self.users = users
            .iter()
            .map(|(j, p)| ((*j).to_owned(), (*p).to_owned()))
            .collect();
        self
    }
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running (or stopped) `hearth` with its own temp folder, config and ports.
pub struct Server {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub c2s_port: u16,
    pub tls_port: u16,
    pub opts: Opts,
    child: Option<Child>,
}

pub fn hearth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hearth")
}

/// Picks `n` distinct free loopback ports: all listeners stay bound until every port is known,
/// then they are released for the server to take.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

impl Server {
    /// Creates the folder and config, adds `opts.users` with the server stopped, starts it and
    /// waits until both ports accept connections.
    pub fn start(opts: Opts) -> Server {
        let mut s = Server::prepare(opts);
        let users = s.opts.users.clone();
        for (jid, pw) in &users {
            s.add_user(jid, pw);
        }
        s.launch();
        s
    }

    /// Folder, ports and config only; nothing runs yet.
    pub fn prepare(opts: Opts) -> Server {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-test-{}-{}-{}",
            std::process::id(),
            n,
            nanos
        ));
        fs::create_dir_all(dir.join("cwd")).expect("create temp dir");
        let mut s = Server {
            config: dir.join("hearth.toml"),
            log: dir.join("server.log"),
            dir,
            c2s_port: 0,
            tls_port: 0,
            opts,
            child: None,
        };
        s.pick_ports_and_write_config();
        s
    }

    fn pick_ports_and_write_config(&mut self) {
        let ports = free_ports(2);
        self.c2s_port = ports[0];
        self.tls_port = ports[1];
        let domains: Vec<String> = self
            .opts
            .domains
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect();
        // data_dir is relative on purpose: it must resolve against the config's folder, not the
        // server's working directory (which is `cwd/`, see `launch`).
        let toml = format!(
            "domains = [{domains}]\n\
             data_dir = \"data\"\n\
             log_level = \"debug\"\n\
             \n\
             [c2s]\n\
             listen = [\"127.0.0.1:{c2s}\"]\n\
             listen_tls = [\"127.0.0.1:{tls}\"]\n\
             auth_timeout_secs = {auth_timeout}\n\
             auth_failure_delay_ms = {delay}\n\
             max_auth_failures = {maxfail}\n\
             \n\
             [limits]\n\
             max_connections = 1024\n\
             max_stanza_bytes = 262144\n\
             max_depth = 64\n\
             \n\
             [s2s]\n\
             enabled = false\n",
            domains = domains.join(", "),
            c2s = self.c2s_port,
            tls = self.tls_port,
            auth_timeout = self.opts.auth_timeout_secs,
            delay = self.opts.auth_failure_delay_ms,
            maxfail = self.opts.max_auth_failures,
        );
        fs::write(&self.config, toml).expect("write config");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the binary and waits (bounded) for both ports. A start that fails because a
    /// picked port was taken meanwhile is retried on new ports, at most 3 times.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "server already running");
        for attempt in 0..3 {
            let log = File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("open log");
            let log2 = log.try_clone().expect("clone log");
            let child = Command::new(hearth_bin())
                .arg("--config")
                .arg(&self.config)
                .arg("serve")
                .current_dir(self.dir.join("cwd"))
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .expect("spawn hearth");
            self.child = Some(child);
            match self.wait_listening() {
                Ok(()) => return,
                Err(exited) => {
                    self.child = None;
                    let log = self.log_text();
                    if attempt < 2 && log.to_lowercase().contains("in use") {
                        self.pick_ports_and_write_config();
                        continue;
                    }
                    panic!("hearth did not start ({exited}); log:\n{log}");
                }
            }
        }
    }

    /// Poll-connects both ports, 100 × 50 ms at most; fails early if the process exits.
    fn wait_listening(&mut self) -> Result<(), String> {
        for port in [self.c2s_port, self.tls_port] {
            let mut up = false;
            for _ in 0..100 {
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("exited early with {status}"));
                    }
                }
                if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !up {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!("port {port} not listening after 5 s"));
            }
        }
        Ok(())
    }

    /// SIGTERM, then up to 5 s for a clean exit, then SIGKILL. Returns the exit status and
    /// whether it exited on its own (before the kill).
    pub fn stop(&mut self) -> Option<(ExitStatus, bool)> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, true));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().map(|s| (s, false))
    }

    /// SIGKILL at once, no clean shutdown: what survives is only what was already durable.
    /// Returns the exit status (None if the server was not running).
    pub fn kill_hard(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // `Child::kill` is SIGKILL on Unix.
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs `hearth --config CONFIG <args>` with `stdin` piped (or null), bounded to 30 s.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_bounded(
            Command::new(hearth_bin())
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .current_dir(self.dir.join("cwd"))
                .env_remove("RUST_LOG"),
            stdin,
            Duration::from_secs(30),
        )
    }

    /// `user add JID` with the password on stdin; panics unless it exits 0.
    pub fn add_user(&self, jid: &str, password: &str) {
        let out = self.cli(&["user", "add", jid], Some(&format!("{password}\n")));
        assert_ok(&out, &format!("user add {jid}"));
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.c2s_port, &self.opts.domains[0])
    }

    /// Logs `user@domain` in over STARTTLS with PLAIN, binds `resource`, sends initial
    /// presence; panics on any failure.
    pub fn login(&self, jid: &str, password: &str, resource: &str) -> Client {
        let (local, domain) = split_jid(jid);
        let mut c = Client::connect(self.c2s_port, domain);
        c.open_stream();
        c.starttls();
        c.open_stream();
        c.auth_plain(local, password)
            .unwrap_or_else(|f| panic!("login {jid}: auth failed: {f}"));
        c.open_stream();
        c.bind(resource);
        c.send("<presence/>");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- hearth log tail ({}; folder kept: {}) ----",
                self.log.display(),
                self.dir.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn split_jid(jid: &str) -> (&str, &str) {
    let bare = jid.split('/').next().unwrap_or(jid);
    bare.split_once('@').unwrap_or(("", bare))
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command with piped output, feeding `stdin`, killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn command");
    let pid = child.id();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // The child may exit without reading (an error path); a broken pipe is then fine.
        let _ = pipe.write_all(input.as_bytes());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("command did not finish within {timeout:?}: {cmd:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw XMPP client
// ---------------------------------------------------------------------------------------------

/// Accepts any server certificate: the test server's is self-signed for its domain.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn tls_client_config(alpn: Option<&[u8]>) -> Arc<ClientConfig> {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
    if let Some(p) = alpn {
        cfg.alpn_protocols = vec![p.to_vec()];
    }
    Arc::new(cfg)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only during the STARTTLS swap.
    Gone,
}

/// One unit of the server's output at stream level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// `<stream:stream ...>` (the start tag only).
    StreamOpen(String),
    /// A complete top-level element, verbatim.
    Element(String),
    /// `</stream:stream>`.
    StreamClose,
    /// Non-whitespace text at stream level.
    Text(String),
    /// The server closed the connection (TCP EOF, TLS close, or reset).
    Eof,
}

pub struct Client {
    conn: Conn,
    buf: Vec<u8>,
    pub domain: String,
    /// Set by `bind`.
    pub jid: String,
    pub eof: bool,
    /// Everything received, for failure messages.
    pub transcript: String,
    next_id: u32,
}

impl Client {
    pub fn connect(port: u16, domain: &str) -> Client {
        let sock = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT)
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        sock.set_nodelay(true).ok();
        sock.set_write_timeout(Some(WAIT)).ok();
        Client {
            conn: Conn::Plain(sock),
            buf: Vec::new(),
            domain: domain.to_owned(),
            jid: String::new(),
            eof: false,
            transcript: String::new(),
            next_id: 0,
        }
    }

    /// Direct TLS (XEP-0368) with ALPN `xmpp-client`; returns the client and the ALPN the
    /// server chose.
    pub fn connect_direct_tls(port: u16, domain: &str) -> (Client, Option<Vec<u8>>) {
        let mut c = Client::connect(port, domain);
        c.wrap_tls(Some(b"xmpp-client"));
        let alpn = match &c.conn {
            Conn::Tls(t) => t.conn.alpn_protocol().map(|p| p.to_vec()),
            _ => None,
        };
        (c, alpn)
    }

    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    pub fn tls_connection(&self) -> Option<&ClientConnection> {
        match &self.conn {
            Conn::Tls(t) => Some(&t.conn),
            _ => None,
        }
    }

    fn sock(&self) -> &TcpStream {
        match &self.conn {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
            Conn::Gone => unreachable!("connection used during the TLS swap"),
        }
    }

    pub fn try_send_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.conn {
            Conn::Plain(s) => s.write_all(data).and_then(|_| s.flush()),
            Conn::Tls(t) => t.write_all(data).and_then(|_| t.flush()),
            Conn::Gone => unreachable!("connection used during the TLS swap"),
        }
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        self.try_send_bytes(data)
            .unwrap_or_else(|e| panic!("send failed: {e}; received so far:\n{}", self.transcript));
    }

    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    /// Sends `data` in `chunk`-sized pieces and stops early, without error, once the server
    /// has answered something or the write fails (it closed on us). Used for oversized input,
    /// so that the stream error is read before a reset can destroy it. Returns bytes sent.
    pub fn send_until_answered(&mut self, data: &[u8], chunk: usize) -> usize {
        let mut sent = 0;
        for piece in data.chunks(chunk) {
            if self.try_send_bytes(piece).is_err() {
                break;
            }
            sent += piece.len();
            // Stop at the end of the stream, not at any input: a presence echo from the
            // login may still be arriving.
            if self.fill(Duration::from_millis(2)) == Fill::Eof
                || self.transcript.contains("</stream:error>")
            {
                break;
            }
        }
        sent
    }

    /// Closes our sending side (TCP FIN) without reading.
    pub fn shutdown_write(&mut self) {
        let _ = self.sock().shutdown(Shutdown::Write);
    }

    /// One read attempt into `buf`, bounded by `timeout`.
    fn fill(&mut self, timeout: Duration) -> Fill {
        if self.eof {
            return Fill::Eof;
        }
        let timeout = timeout.max(Duration::from_millis(1));
        self.sock().set_read_timeout(Some(timeout)).ok();
        let mut tmp = [0u8; 16384];
        let r = match &mut self.conn {
            Conn::Plain(s) => s.read(&mut tmp),
            Conn::Tls(t) => t.read(&mut tmp),
            Conn::Gone => unreachable!("connection used during the TLS swap"),
        };
        match r {
            Ok(0) => {
                self.eof = true;
                Fill::Eof
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                self.transcript
                    .push_str(&String::from_utf8_lossy(&tmp[..n]));
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Data,
            // A TLS peer that closes without close_notify, or a reset: both mean closed.
            Err(_) => {
                self.eof = true;
                Fill::Eof
            }
        }
    }

    /// The next stream-level token, waiting at most `timeout`; `None` on timeout.
    pub fn try_next(&mut self, timeout: Duration) -> Option<Token> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((tok, used)) = scan(&self.buf) {
                self.buf.drain(..used);
                match tok {
                    Some(t) => return Some(t),
                    None => continue, // skipped whitespace or an XML declaration
                }
            }
            if self.eof {
                if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    self.buf.clear();
                    return Some(Token::Eof);
                }
                // Closed inside an element: hand back the fragment as text.
                let rest = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                return Some(Token::Text(rest));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.fill(deadline - now);
        }
    }

    pub fn next(&mut self, timeout: Duration) -> Token {
        match self.try_next(timeout) {
            Some(t) => t,
            None => panic!(
                "no complete answer within {timeout:?}; received so far:\n{}",
                self.transcript
            ),
        }
    }

    /// Reads tokens until one satisfies `pred` (skipping others), at most `timeout` in all.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Token) -> bool,
    ) -> Token {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next(left) {
                Some(t) if pred(&t) => return t,
                Some(Token::Eof) => panic!(
                    "connection closed while waiting for {what}; received:\n{}",
                    self.transcript
                ),
                Some(_) => {}
                None => panic!(
                    "timed out ({timeout:?}) waiting for {what}; received:\n{}",
                    self.transcript
                ),
            }
        }
    }

    /// The next top-level element named `name`, skipping others (e.g. presence).
    pub fn wait_element(&mut self, name: &str, timeout: Duration) -> String {
        match self.wait_for(
            &format!("<{name}>"),
            timeout,
            |t| matches!(t, Token::Element(e) if elem_name(e) == name),
        ) {
            Token::Element(e) => e,
            _ => unreachable!("predicate matched only elements"),
        }
    }

    /// Reads every token until the server closes, at most `timeout`; panics if still open.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<Token> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next(left) {
                Some(Token::Eof) => {
                    out.push(Token::Eof);
                    return out;
                }
                Some(t) => out.push(t),
                None => panic!(
                    "server did not close the connection within {timeout:?}; received:\n{}",
                    self.transcript
                ),
            }
        }
    }

    /// Asserts that the server sends exactly one stream error with `condition` (in the streams
    /// namespace), then `</stream:stream>`, then closes; anything before the error (its stream
    /// header, features) is allowed, nothing after it is.
    pub fn expect_stream_error(&mut self, condition: &str, timeout: Duration) {
        let toks = self.read_until_closed(timeout);
        let pos = toks
            .iter()
            .position(|t| matches!(t, Token::Element(e) if elem_name(e) == "stream:error"))
            .unwrap_or_else(|| {
                panic!(
                    "no <stream:error> before close (expected {condition}); received:\n{}",
                    self.transcript
                )
            });
        let Token::Element(err) = &toks[pos] else {
            unreachable!("position matched an element")
        };
        assert_eq!(
            stream_error_condition(err).as_deref(),
            Some(condition),
            "wrong stream error condition in {err}"
        );
        assert_eq!(
            &toks[pos + 1..],
            &[Token::StreamClose, Token::Eof],
            "after the stream error the server must send </stream:stream> and close; received:\n{}",
            self.transcript
        );
    }

    /// Sends an initial stream header to `self.domain`, returns the features element.
    pub fn open_stream(&mut self) -> String {
        let domain = self.domain.clone();
        self.send(&stream_header(&domain));
        match self.next(WAIT) {
            Token::StreamOpen(h) => {
                assert_eq!(
                    attr(&h, "from").as_deref(),
                    Some(domain.as_str()),
                    "stream header from"
                );
            }
            other => panic!(
                "expected a stream header, got {other:?}\n{}",
                self.transcript
            ),
        }
        match self.next(WAIT) {
            Token::Element(f) if elem_name(&f) == "stream:features" => f,
            other => panic!(
                "expected <stream:features>, got {other:?}\n{}",
                self.transcript
            ),
        }
    }

    fn wrap_tls(&mut self, alpn: Option<&[u8]>) {
        assert!(self.buf.is_empty(), "plaintext left over before TLS");
        let name = ServerName::try_from(self.domain.clone()).expect("domain as server name");
        let conn = ClientConnection::new(tls_client_config(alpn), name).expect("TLS client");
        let sock = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Plain(s) => s,
            _ => panic!("TLS already on"),
        };
        sock.set_read_timeout(Some(WAIT)).ok();
        let mut tls = StreamOwned::new(conn, sock);
        // Drive the handshake to the end so that failures show here.
        let deadline = Instant::now() + WAIT;
        while tls.conn.is_handshaking() {
            assert!(Instant::now() < deadline, "TLS handshake timed out");
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                panic!("TLS handshake failed: {e}; log in the server folder");
            }
        }
        self.conn = Conn::Tls(Box::new(tls));
    }

    /// `<starttls/>`, `<proceed/>`, TLS handshake (no ALPN, as XMPP clients do).
    pub fn starttls(&mut self) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        match self.next(WAIT) {
            Token::Element(p) if elem_name(&p) == "proceed" => {}
            other => panic!("expected <proceed/>, got {other:?}\n{}", self.transcript),
        }
        self.wrap_tls(None);
    }

    /// SASL PLAIN. `Ok` on `<success/>`, `Err(failure element)` on `<failure/>`.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let payload = base64_encode(format!("\0{user}\0{password}").as_bytes());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ));
        self.sasl_outcome()
    }

    /// Waits for `<success/>` or `<failure/>` (bounded by the auth failure delay + margin).
    pub fn sasl_outcome(&mut self) -> Result<(), String> {
        match self.next(WAIT) {
            Token::Element(e) if elem_name(&e) == "success" => Ok(()),
            Token::Element(e) if elem_name(&e) == "failure" => Err(e),
            other => panic!(
                "expected SASL success/failure, got {other:?}\n{}",
                self.transcript
            ),
        }
    }

    /// Binds `resource` (RFC 6120 §7), then does the legacy session IQ if offered
    /// (RFC 3921 §3, answered for old clients). Returns the bound full JID.
    pub fn bind(&mut self, resource: &str) -> String {
        let id = self.id();
        self.send(&format!(
            "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ));
        let iq = self.wait_element("iq", WAIT);
        assert_eq!(
            attr(&iq, "id").as_deref(),
            Some(id.as_str()),
            "bind reply id: {iq}"
        );
        assert_eq!(
            attr(&iq, "type").as_deref(),
            Some("result"),
            "bind reply: {iq}"
        );
        let jid = child_text(&iq, "jid").unwrap_or_else(|| panic!("no <jid> in bind result: {iq}"));
        self.jid = jid.clone();
        jid
    }

    /// Legacy session establishment; expects an empty result.
    pub fn session(&mut self) {
        let id = self.id();
        self.send(&format!(
            "<iq type='set' id='{id}'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        ));
        let iq = self.wait_element("iq", WAIT);
        assert_eq!(attr(&iq, "id").as_deref(), Some(id.as_str()), "{iq}");
        assert_eq!(attr(&iq, "type").as_deref(), Some("result"), "{iq}");
    }

    /// XEP-0199 ping to the server; asserts a result with the same id.
    pub fn ping_server(&mut self) {
        let id = self.id();
        let domain = self.domain.clone();
        self.send(&format!(
            "<iq type='get' id='{id}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let iq = self.wait_for("ping result", WAIT, |t| {
            matches!(t, Token::Element(e) if elem_name(e) == "iq" && attr(e, "id").as_deref() == Some(id.as_str()))
        });
        let Token::Element(iq) = iq else {
            unreachable!()
        };
        assert_eq!(
            attr(&iq, "type").as_deref(),
            Some("result"),
            "ping answer: {iq}"
        );
    }

    pub fn send_message(&mut self, to: &str, body: &str) -> String {
        let id = self.id();
        self.send(&format!(
            "<message to='{to}' type='chat' id='{id}'><body>{body}</body></message>"
        ));
        id
    }

    /// Waits for a message with exactly `body`, skipping other stanzas; returns it.
    pub fn expect_message(&mut self, body: &str) -> String {
        let want = body.to_owned();
        match self.wait_for(&format!("message '{body}'"), WAIT, move |t| {
            matches!(t, Token::Element(e) if elem_name(e) == "message"
                && child_text(e, "body").as_deref() == Some(want.as_str()))
        }) {
            Token::Element(e) => e,
            _ => unreachable!(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Fill {
    Data,
    Timeout,
    Eof,
}

pub fn stream_header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// Logs `alice` in and checks a message to `bob` arrives from her full JID, and a ping to
/// the server is answered: the server is still serving its good clients.
pub fn assert_still_serving(alice: &mut Client, bob: &mut Client, tag: &str) {
    let body = format!("still alive after {tag}");
    let bob_jid = bob.jid.clone();
    alice.send_message(&bob_jid, &body);
    let m = bob.expect_message(&body);
    assert_eq!(
        attr(&m, "from").as_deref(),
        Some(alice.jid.as_str()),
        "from of {m}"
    );
    alice.ping_server();
}

// ---------------------------------------------------------------------------------------------
// Tokenizing and inspecting the server's output
// ---------------------------------------------------------------------------------------------

/// Scans one token off the front of `buf`. `None`: incomplete, read more. `Some((None, n))`:
/// skip `n` bytes (whitespace, XML declaration). Quote-aware inside tags; comments and CDATA
/// are not expected from the server and not handled.
pub fn scan(buf: &[u8]) -> Option<(Option<Token>, usize)> {
    let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    if ws > 0 {
        return Some((None, ws));
    }
    if buf.is_empty() {
        return None;
    }
    if buf[0] != b'<' {
        let end = buf.iter().position(|&b| b == b'<')?;
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        return Some((Some(Token::Text(text)), end));
    }
    let mut depth = 0usize;
    let mut i = 0;
    loop {
        // buf[i] == '<' here.
        let end = tag_end(buf, i)?;
        let tag = &buf[i..=end];
        let first = if tag.len() > 1 { tag[1] } else { b'>' };
        if first == b'?' {
            if depth == 0 {
                return Some((None, end + 1));
            }
        } else if first == b'/' {
            if depth == 0 {
                let t = String::from_utf8_lossy(tag).into_owned();
                let tok = if t.starts_with("</stream:stream") {
                    Token::StreamClose
                } else {
                    Token::Text(t)
                };
                return Some((Some(tok), end + 1));
            }
            depth -= 1;
            if depth == 0 {
                let e = String::from_utf8_lossy(&buf[..=end]).into_owned();
                return Some((Some(Token::Element(e)), end + 1));
            }
        } else if tag.ends_with(b"/>") {
            if depth == 0 {
                let e = String::from_utf8_lossy(tag).into_owned();
                return Some((Some(Token::Element(e)), end + 1));
            }
        } else {
            if depth == 0 && tag.starts_with(b"<stream:stream") {
                let h = String::from_utf8_lossy(tag).into_owned();
                return Some((Some(Token::StreamOpen(h)), end + 1));
            }
            depth += 1;
        }
        // Move to the next tag.
        let next = buf[end + 1..].iter().position(|&b| b == b'<')?;
        i = end + 1 + next;
    }
}

/// Index of the `>` closing the tag that starts at `start`, skipping quoted attribute values.
fn tag_end(buf: &[u8], start: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (k, &b) in buf.iter().enumerate().skip(start + 1) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'>' => return Some(k),
            None => {}
        }
    }
    None
}

/// The qualified name of the element whose start tag begins `e`.
pub fn elem_name(e: &str) -> &str {
    let s = e.trim_start().trim_start_matches('<');
    let end = s
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(s.len());
    &s[..end]
}

/// The first start tag of `e` (up to and including its `>`).
pub fn start_tag(e: &str) -> &str {
    match tag_end(e.as_bytes(), 0) {
        Some(end) => &e[..=end],
        None => e,
    }
}

/// Value of attribute `name` on the first start tag of `e`, unescaped for the basic entities.
pub fn attr(e: &str, name: &str) -> Option<String> {
    let tag = start_tag(e);
    let bytes = tag.as_bytes();
    let mut search = 0;
    while let Some(pos) = tag[search..].find(name) {
        let at = search + pos;
        search = at + name.len();
        let before_ok = at > 0 && bytes[at - 1].is_ascii_whitespace();
        let rest = tag[at + name.len()..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let q = rest.chars().next()?;
        if q != '\'' && q != '"' {
            return None;
        }
        let val = &rest[1..];
        let end = val.find(q)?;
        return Some(unescape(&val[..end]));
    }
    None
}

/// Text of the first child element named `name` (searched anywhere inside `e`).
pub fn child_text(e: &str, name: &str) -> Option<String> {
    let open = find_start_tag(e, name)?;
    let tag_end_idx = open + tag_end(&e.as_bytes()[open..], 0)?;
    if e[..=tag_end_idx].ends_with("/>") {
        return Some(String::new());
    }
    let body = &e[tag_end_idx + 1..];
    let close = body.find(&format!("</{name}>"))?;
    Some(unescape(&body[..close]))
}

/// Byte offset of the first `<name` start tag in `e` (name followed by space, `/` or `>`).
pub fn find_start_tag(e: &str, name: &str) -> Option<usize> {
    let pat = format!("<{name}");
    let mut from = 0;
    while let Some(p) = e[from..].find(&pat) {
        let at = from + p;
        let after = e[at + pat.len()..].chars().next();
        if matches!(after, Some(c) if c.is_whitespace() || c == '/' || c == '>') {
            return Some(at);
        }
        from = at + pat.len();
    }
    None
}

pub fn has_child(e: &str, name: &str) -> bool {
    find_start_tag(e, name).is_some()
}

/// The condition of a `<stream:error>` element: its first child in the streams namespace.
pub fn stream_error_condition(err: &str) -> Option<String> {
    let inner_start = tag_end(err.as_bytes(), 0)? + 1;
    let inner = &err[inner_start..];
    let lt = inner.find('<')?;
    let child = &inner[lt..];
    let name = elem_name(child).to_owned();
    (attr(child, "xmlns").as_deref() == Some(NS_STREAMS)).then_some(name)
}

/// The defined condition of a stanza `<error>` child (RFC 6120 §8.3), with its `type`.
pub fn stanza_error(stanza: &str) -> Option<(String, String)> {
    let at = find_start_tag(stanza, "error")?;
    let err = &stanza[at..];
    let etype = attr(err, "type").unwrap_or_default();
    let inner_start = tag_end(err.as_bytes(), 0)? + 1;
    let mut rest = &err[inner_start..];
    while let Some(lt) = rest.find('<') {
        let child = &rest[lt..];
        if child.starts_with("</") {
            return None;
        }
        if attr(child, "xmlns").as_deref() == Some(NS_STANZAS) && elem_name(child) != "text" {
            return Some((elem_name(child).to_owned(), etype));
        }
        rest = &child[1..];
    }
    None
}

/// Mechanism names listed in a features element.
pub fn mechanisms(features: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = features;
    while let Some(at) = find_start_tag(rest, "mechanism") {
        let s = &rest[at..];
        let Some(gt) = s.find('>') else { break };
        let Some(end) = s.find("</mechanism>") else {
            break;
        };
        out.push(s[gt + 1..end].trim().to_owned());
        rest = &s[end..];
    }
    out
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------------
// base64 (RFC 4648, standard alphabet, padded): local so the tests do not trust crate code
// ---------------------------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in chunk {
            let v = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => B64.iter().position(|&x| x == c)? as u32,
            };
            n = (n << 6) | v;
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}
