//! One client connection: TCP connect, STARTTLS or direct TLS, SASL SCRAM-SHA-1, resource
//! bind, (session if required), initial presence, and a ping whose answer marks the session
//! ready. After that it only sends what the scenario asks and reports `<message>` bodies.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use crate::scram::{self, Cache, Scram};
use crate::split::{self, Event, Splitter};

/// Shared by all connections of a run.
pub struct Ctx {
    pub addr: SocketAddr,
    pub domain: String,
    pub password: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub direct_tls: bool,
    /// Create the accounts by in-band registration (XEP-0077) instead of logging in.
    pub register: bool,
    pub cache: Cache,
    pub rng: ring::rand::SystemRandom,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum St {
    Connecting,
    Negotiating,
    Ready,
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    PreTls,
    PostTls,
    PostAuth,
}

pub struct Conn {
    pub sock: TcpStream,
    tls: Option<ClientConnection>,
    plain_out: Vec<u8>,
    inbuf: Vec<u8>,
    sp: Splitter,
    pub state: St,
    stage: Stage,
    scram: Option<Scram>,
    pub user: String,
    pub jid: String,
    pub started: Instant,
    need_session: bool,
    pub cache_hit: bool,
    pub err: Option<String>,
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

/// Parses a body of the form "SEQ NANOS".
fn parse_body(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Conn {
    pub fn connect(ctx: &Ctx, user: String) -> io::Result<Conn> {
        let sock = TcpStream::connect(ctx.addr)?;
        // Small stanzas must not wait for the peer's ACK (Nagle): latency is measured.
        sock.set_nodelay(true)?;
        Ok(Conn {
            sock,
            tls: None,
            plain_out: Vec::new(),
            inbuf: Vec::new(),
            sp: Splitter::default(),
            state: St::Connecting,
            stage: Stage::PreTls,
            scram: None,
            user,
            jid: String::new(),
            started: Instant::now(),
            need_session: false,
            cache_hit: false,
            err: None,
        })
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.state != St::Failed {
            self.err = Some(why.into());
            self.state = St::Failed;
        }
    }

    fn start_tls(&mut self, ctx: &Ctx) -> Result<(), String> {
        let name = ServerName::try_from(ctx.domain.clone()).map_err(|e| e.to_string())?;
        let mut c = ClientConnection::new(ctx.tls.clone(), name).map_err(|e| e.to_string())?;
        c.set_buffer_limit(None);
        self.tls = Some(c);
        Ok(())
    }

    /// Queues bytes for the server (encrypted when TLS is up).
    pub fn send(&mut self, data: &[u8]) {
        match &mut self.tls {
            Some(t) => {
                let _ = t.writer().write_all(data);
            }
            None => self.plain_out.extend_from_slice(data),
        }
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) {
        if self.state == St::Connecting || self.state == St::Failed {
            return;
        }
        let r = match &mut self.tls {
            Some(t) => {
                let mut r = Ok(());
                while t.wants_write() {
                    match t.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            None => {
                let mut r = Ok(());
                while !self.plain_out.is_empty() {
                    match self.sock.write(&self.plain_out) {
                        Ok(n) => {
                            self.plain_out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
        };
        if let Err(e) = r {
            self.fail(format!("write: {e}"));
        }
    }

    /// Handles a readiness event. Message bodies ("SEQ NANOS") received when ready are
    /// appended to `got`.
    pub fn on_event(&mut self, ctx: &Ctx, writable: bool, got: &mut Vec<(u64, u64)>) {
        if self.state == St::Connecting {
            if !writable {
                return;
            }
            if let Ok(Some(e)) | Err(e) = self.sock.take_error() {
                self.fail(format!("connect: {e}"));
                return;
            }
            match self.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.fail(format!("connect: {e}"));
                    return;
                }
            }
            self.state = St::Negotiating;
            if ctx.direct_tls {
                if let Err(e) = self.start_tls(ctx) {
                    self.fail(e);
                    return;
                }
                self.stage = Stage::PostTls;
            }
            self.send(header(&ctx.domain).as_bytes());
        }
        self.read(ctx, got);
        self.flush();
    }

    fn read(&mut self, ctx: &Ctx, got: &mut Vec<(u64, u64)>) {
        let mut tmp = [0u8; 65536];
        loop {
            if self.state == St::Failed {
                return;
            }
            let n = match &mut self.tls {
                Some(t) => match t.read_tls(&mut self.sock) {
                    Ok(0) => {
                        self.fail("server closed the connection");
                        return;
                    }
                    Ok(n) => {
                        if let Err(e) = t.process_new_packets() {
                            self.fail(format!("tls: {e}"));
                            return;
                        }
                        loop {
                            match t.reader().read(&mut tmp) {
                                Ok(0) => break,
                                Ok(k) => self.inbuf.extend_from_slice(&tmp[..k]),
                                Err(_) => break,
                            }
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        self.fail(format!("read: {e}"));
                        return;
                    }
                },
                None => match self.sock.read(&mut tmp) {
                    Ok(0) => {
                        self.fail("server closed the connection");
                        return;
                    }
                    Ok(n) => {
                        self.inbuf.extend_from_slice(&tmp[..n]);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        self.fail(format!("read: {e}"));
                        return;
                    }
                },
            };
            let _ = n;
            self.process(ctx, got);
        }
    }

    fn process(&mut self, ctx: &Ctx, got: &mut Vec<(u64, u64)>) {
        while let Some(ev) = self.sp.next(&self.inbuf) {
            match ev {
                Event::Open => {}
                Event::Close => {
                    self.fail("server closed the stream");
                    return;
                }
                Event::Elem(a, b) => {
                    if self.state == St::Ready {
                        let el = &self.inbuf[a..b];
                        if split::name(el) == b"message" {
                            if let Some(v) = split::text_of(el, "body").and_then(parse_body) {
                                got.push(v);
                            }
                        } else if split::name(el) == b"error" {
                            let e = String::from_utf8_lossy(el).into_owned();
                            self.fail(format!("stream error: {e}"));
                            return;
                        }
                        continue;
                    }
                    let el = self.inbuf[a..b].to_vec();
                    match self.negotiate(ctx, &el) {
                        Ok(false) => {}
                        Ok(true) => {
                            // New stream: what followed belongs to the old one (nothing).
                            self.inbuf.clear();
                            self.sp.reset();
                            return;
                        }
                        Err(e) => {
                            self.fail(e);
                            return;
                        }
                    }
                }
            }
        }
        let n = self.sp.consumed();
        if n > 0 {
            self.inbuf.drain(..n);
            self.sp.shift(n);
        }
    }

    /// One negotiation step; Ok(true) when a new stream starts.
    fn negotiate(&mut self, ctx: &Ctx, el: &[u8]) -> Result<bool, String> {
        let name = split::name(el);
        match (name, self.stage) {
            (b"features", Stage::PreTls) => {
                if !split::contains(el, "starttls") {
                    return Err("no STARTTLS offered".into());
                }
                self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            }
            (b"proceed", Stage::PreTls) => {
                self.flush();
                self.start_tls(ctx)?;
                self.stage = Stage::PostTls;
                self.send(header(&ctx.domain).as_bytes());
                return Ok(true);
            }
            (b"features", Stage::PostTls) if ctx.register => {
                let msg = format!(
                    "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{}</username>\
                     <password>{}</password></query></iq>",
                    self.user, ctx.password
                );
                self.send(msg.as_bytes());
            }
            (b"iq", Stage::PostTls) if ctx.register => {
                if split::contains(el, "type='result'") || split::contains(el, "type=\"result\"") {
                    self.state = St::Ready;
                } else if split::contains(el, "<conflict") {
                    self.state = St::Ready; // already registered: fine for a benchmark set-up
                } else {
                    return Err(format!(
                        "registration failed: {}",
                        String::from_utf8_lossy(el)
                    ));
                }
            }
            (b"features", Stage::PostTls) => {
                if !split::contains(el, ">SCRAM-SHA-1<") {
                    return Err(format!("no SCRAM-SHA-1: {}", String::from_utf8_lossy(el)));
                }
                let s = Scram::new(&self.user, &ctx.password, &ctx.rng);
                let msg = format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
                    scram::b64_encode(s.first().as_bytes())
                );
                self.scram = Some(s);
                self.send(msg.as_bytes());
            }
            (b"challenge", _) => {
                let t = split::text_of(el, split_tag(el)).unwrap_or(&[]);
                let sf = scram::b64_decode(t).ok_or("challenge not base64")?;
                let s = self.scram.as_mut().ok_or("challenge without auth")?;
                let (fin, hit) = s.respond(&sf, &ctx.cache)?;
                self.cache_hit = hit;
                let msg = format!(
                    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                    scram::b64_encode(fin.as_bytes())
                );
                self.send(msg.as_bytes());
            }
            (b"success", _) => {
                let t = split::text_of(el, split_tag(el)).unwrap_or(&[]);
                let sf = scram::b64_decode(t).ok_or("success not base64")?;
                let s = self.scram.as_ref().ok_or("success without auth")?;
                if !s.verify(&sf) {
                    return Err("server signature mismatch".into());
                }
                self.scram = None;
                self.stage = Stage::PostAuth;
                self.send(header(&ctx.domain).as_bytes());
                return Ok(true);
            }
            (b"failure", _) => {
                return Err(format!("SASL failure: {}", String::from_utf8_lossy(el)));
            }
            (b"features", Stage::PostAuth) => {
                self.need_session =
                    split::contains(el, "xmpp-session") && !split::contains(el, "optional");
                self.send(
                    b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                      <resource>lg</resource></bind></iq>",
                );
            }
            (b"iq", Stage::PostAuth) => {
                let id = if split::contains(el, "id='bind'") || split::contains(el, "id=\"bind\"") {
                    "bind"
                } else if split::contains(el, "id='sess'") || split::contains(el, "id=\"sess\"") {
                    "sess"
                } else if split::contains(el, "id='ping'") || split::contains(el, "id=\"ping\"") {
                    "ping"
                } else {
                    return Ok(false);
                };
                let is_err =
                    split::contains(el, "type='error'") || split::contains(el, "type=\"error\"");
                if id != "ping" && is_err {
                    return Err(format!("{id} failed: {}", String::from_utf8_lossy(el)));
                }
                match id {
                    "bind" => {
                        let j = split::text_of(el, "jid").ok_or("bind result without jid")?;
                        self.jid = String::from_utf8_lossy(j).into_owned();
                        if self.need_session {
                            self.send(b"<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
                        } else {
                            self.send_presence_ping(ctx);
                        }
                    }
                    "sess" => self.send_presence_ping(ctx),
                    _ => self.state = St::Ready,
                }
            }
            (b"error", _) => return Err(format!("stream error: {}", String::from_utf8_lossy(el))),
            _ => {}
        }
        Ok(false)
    }

    fn send_presence_ping(&mut self, ctx: &Ctx) {
        let m = format!(
            "<presence/><iq type='get' id='ping' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            ctx.domain
        );
        self.send(m.as_bytes());
    }

    /// Sends the stream close (best effort) before the socket is dropped.
    pub fn close(&mut self) {
        if self.state == St::Ready || self.state == St::Negotiating {
            self.send(b"</stream:stream>");
            if let Some(t) = &mut self.tls {
                t.send_close_notify();
            }
            self.flush();
        }
    }
}

/// The element's own tag as written (e.g. "challenge" or "sasl:challenge").
fn split_tag(el: &[u8]) -> &str {
    let end = el
        .iter()
        .skip(1)
        .position(|&b| b == b' ' || b == b'>' || b == b'/')
        .map_or(el.len(), |p| p + 1);
    std::str::from_utf8(&el[1..end]).unwrap_or("")
}
