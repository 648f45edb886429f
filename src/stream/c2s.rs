//! Client-to-server stream negotiation (RFC 6120 §4-§7): stream headers, STARTTLS, SASL and
//! resource binding, for one connection.
//!
//! Owns: the parser of one connection, what has been negotiated on it (TLS, the authenticated
//! account, the bound JID), the authentication deadline and failure delays, in-band
//! registration before authentication (XEP-0077 §3.1, wire rules in `features::register`),
//! keeping a bound client alive with server pings (XEP-0199 §4.3) and turning parser errors
//! into stream errors, and the stream-level side of stream management (XEP-0198: the
//! `<sm/>` feature, counting the client's stanzas and answering `<r/>`, passing `<enable/>`,
//! `<a/>` and `<resume/>` up) and of CSI (XEP-0352: the feature, `<active/>`/`<inactive/>`
//! passed up). Leaves to `server`: binding a resource in the router (this module asks
//! with `Upcall::Bind` and pauses until `bind_done`), creating a registered account
//! (`Upcall::Register`, paused until `register_done`) and routing stanzas once bound
//! (`Upcall::Stanza`).
//!
//! The negotiation is kept as facts (`tls`, `account`, `bound`) rather than one state per step,
//! because what a stream accepts depends on exactly those facts; SASL2/Bind2 (XEP-0388/0386)
//! will add paths that set the same facts in one round trip.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::features::register::{self as registration, Request as RegisterRequest};
use crate::jid::Jid;
use crate::sasl::{
    self, ChannelBinding, CredentialLookup, Credentials, SaslFailure, SaslSession, SaslStep,
};
use crate::server::{ListenerKind, RandomSource, TlsInfo};
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply};
use crate::store::Store;
use crate::stream::csi;
use crate::stream::error::{StreamCondition, StreamError};
use crate::stream::sm::{self, ClientSm};
use crate::xml::{Element, StreamEvent, StreamHeader, StreamParser, XmlLimits, ns};

/// What the connection asks of the server, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Upcall {
    Send(Vec<u8>),
    /// `<proceed/>` has been queued; start TLS with these already-received bytes.
    StartTls(Vec<u8>),
    /// Close the connection after flushing (a stream error or `</stream:stream>` was queued).
    Close,
    /// Bind a resource for the authenticated account (`None`: the server makes one up).
    /// The connection pauses until `C2sConn::bind_done`.
    Bind {
        iq_id: String,
        resource: Option<String>,
    },
    /// A stanza from the bound session, `from` already stamped.
    Stanza(Element),
    /// In-band registration (XEP-0077) before authentication: create `account` (normalised,
    /// bare, on this stream's domain) with `credentials`, through
    /// `features::register::create_account_limited`. The connection pauses until
    /// `C2sConn::register_done`.
    Register {
        iq_id: String,
        account: Jid,
        credentials: Credentials,
    },
    /// A stanza for the bound client that c2s made itself (a ping, a reply it gives without
    /// the server): it counts for stream management like any other (`server::session_mgmt`).
    SendStanza(Vec<u8>),
    /// XEP-0198 `<enable/>` on a bound stream (c2s now counts the client's stanzas).
    SmEnable {
        resume: bool,
    },
    /// XEP-0198 `<a h/>` from the client.
    SmAck(u32),
    /// XEP-0198 `<resume/>` after authentication, before bind. The connection pauses until
    /// `C2sConn::resume_done`.
    SmResume {
        previd: String,
        h: u32,
    },
    /// XEP-0352 `<active/>` (true) or `<inactive/>` (false).
    Csi {
        active: bool,
    },
}

/// A successful resumption (XEP-0198 §5), as the server gives it to the new connection.
pub struct Resumed {
    pub jid: Jid,
    pub previd: String,
    /// Stanzas the old connection had counted from the client: the `h` of `<resumed/>`.
    pub handled: u32,
}

/// What a connection may use while handling input.
pub struct Env<'a> {
    pub config: &'a Config,
    /// For the stream features that features add (`Registry::stream_features`).
    pub registry: &'a crate::features::Registry,
    pub store: &'a dyn Store,
    pub random: &'a mut dyn RandomSource,
    /// Per-process key for the fake salts that hide whether an account exists.
    pub fake_salt_key: [u8; 32],
    pub out: &'a mut Vec<Upcall>,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a TLS handshake (direct TLS, or after `<proceed/>`).
    ExpectTls,
    /// Waiting for the initiating stream header (first, or after a restart).
    ExpectHeader,
    /// Stream open; what is accepted depends on the negotiated facts.
    Open,
    /// A failure answer is held back until the delay passes (slows password guessing).
    AuthDelay,
    /// Waiting for the server to bind a resource.
    BindPending,
    /// Waiting for the server to create a registered account.
    RegisterPending,
    /// Closed; nothing more is read or sent.
    Closed,
}

/// One client connection's stream state.
pub struct C2sConn {
    parser: StreamParser,
    phase: Phase,
    /// Our response header was sent for the current stream.
    header_sent: bool,
    /// TLS is established. Of `TlsInfo` only the channel binding matters here, and only
    /// until authentication: an idle session keeps neither the SNI nor the 32 bytes.
    tls: bool,
    /// RFC 9266 `tls-exporter` data (TLS 1.3), for SCRAM-*-PLUS.
    channel_binding: Option<Box<[u8]>>,
    /// The hosted domain this stream is for (from the first header's `to`).
    domain: Option<String>,
    /// The authenticated account (bare JID).
    account: Option<Jid>,
    /// The bound full JID.
    bound: Option<Jid>,
    /// Boxed: only alive during authentication; inline it would cost every idle session.
    sasl: Option<Box<SaslExchange>>,
    auth_failures: u32,
    /// Held `<failure/>` bytes and whether the stream closes after them.
    /// Boxed: rare, and inline it would cost every idle session.
    delayed_failure: Option<Box<(Vec<u8>, bool)>>,
    /// Until bound: when the connection is dropped; during AuthDelay: when to answer.
    deadline: Option<Instant>,
    /// The authentication deadline, kept aside while `deadline` times a failure delay.
    auth_deadline: Option<Instant>,
    /// Registration sets this connection made, and whether one created an account.
    registration_attempts: u32,
    registered: bool,
    /// When bytes last arrived. Once bound, `deadline` is not moved on each input (that
    /// would re-file the server's timer on every stanza): the timer fires at the old
    /// deadline and `handle_timeout` re-arms it from here.
    last_input: Instant,
    /// The server ping waiting for any input, once the client fell quiet.
    ping: Option<Ping>,
    /// Pings sent, for their ids.
    pings_sent: u64,
    /// XEP-0198: stanzas received from the client since `<enable/>` (mod 2^32); `None` until
    /// stream management is enabled.
    sm_in: Option<u32>,
    /// The stream ended in a way that leaves a resumable session for resumption (a ping
    /// timeout, an unacknowledged queue past its bound), not by the client's choice.
    keep_session: bool,
}

/// An unanswered server ping.
struct Ping {
    /// No input by then: the connection is dead.
    deadline: Instant,
}

/// Prefix of the ids of server pings; their answers are taken here, not routed.
const PING_ID_PREFIX: &str = "ping-";

/// How long a pinged client has to answer: a fifth of the idle time, between 1 s and 60 s
/// (a phone on a slow network needs seconds; a dead peer should not hold memory long).
fn ping_timeout(idle: Duration) -> Duration {
    (idle / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

struct SaslExchange {
    mechanism: sasl::Mechanism,
    /// `None` until the client's first message arrives (an `<auth/>` without initial response).
    session: Option<SaslSession>,
}

impl C2sConn {
    pub fn new(now: Instant, kind: ListenerKind, config: &Config) -> C2sConn {
        let limits = XmlLimits {
            max_stanza_bytes: config.limits.max_stanza_bytes,
            max_depth: config.limits.max_depth,
            max_attrs: config.limits.max_attrs,
        };
        C2sConn {
            parser: StreamParser::new(limits),
            phase: match kind {
                ListenerKind::C2sDirectTls | ListenerKind::S2sDirectTls => Phase::ExpectTls,
                ListenerKind::C2sStartTls | ListenerKind::S2sStartTls => Phase::ExpectHeader,
            },
            header_sent: false,
            tls: false,
            channel_binding: None,
            domain: None,
            account: None,
            bound: None,
            sasl: None,
            auth_failures: 0,
            delayed_failure: None,
            deadline: Some(now + config.c2s.auth_timeout),
            auth_deadline: None,
            registration_attempts: 0,
            registered: false,
            last_input: now,
            ping: None,
            pings_sent: 0,
            sm_in: None,
            keep_session: false,
        }
    }

    /// XEP-0198: stanzas handled from the client, once stream management is enabled.
    pub fn sm_handled(&self) -> Option<u32> {
        self.sm_in
    }

    /// Whether a session with resumption enabled outlives this connection: the connection
    /// dropped (the client never closed it and we did not end the stream) or it ended with
    /// `fail_keep_session` or a ping timeout. A client's `</stream:stream>`, a conflict or a
    /// shutdown end the session.
    pub fn session_survives(&self) -> bool {
        self.phase != Phase::Closed || self.keep_session
    }

    /// Like `fail`, but the session stays for resumption as if the connection had dropped.
    pub fn fail_keep_session(&mut self, err: StreamError, env: &mut Env) {
        if self.phase != Phase::Closed {
            self.keep_session = true;
        }
        self.fail(err, env);
    }

    /// The server's answer to `Upcall::SmResume`: on success the stream is bound to the old
    /// session and `<resumed/>` is queued (the server resends the unacknowledged stanzas after
    /// it); otherwise `<failed/>` with this stanza error condition, and the client may bind.
    pub fn resume_done(&mut self, now: Instant, result: Result<Resumed, &str>, env: &mut Env) {
        if self.phase != Phase::BindPending {
            return;
        }
        self.phase = Phase::Open;
        match result {
            Ok(r) => {
                let e = sm::resumed(&r.previd, r.handled);
                env.out.push(Upcall::Send(e.to_bytes(ns::CLIENT)));
                self.bound = Some(r.jid);
                self.sm_in = Some(r.handled);
                self.last_input = now;
                let idle = env.config.c2s.idle_timeout;
                self.deadline = (!idle.is_zero()).then(|| now + idle);
            }
            Err(cond) => send_nonza(env, &sm::failed(cond)),
        }
        self.pump(now, env);
    }

    /// The bound full JID, once bound.
    pub fn bound_jid(&self) -> Option<&Jid> {
        self.bound.as_ref()
    }

    /// The authenticated account (bare JID), once SASL succeeded.
    pub fn authenticated_account(&self) -> Option<&Jid> {
        self.account.as_ref()
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// When `handle_timeout` must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Bytes this connection holds for unfinished input.
    pub fn buffered_len(&self) -> usize {
        self.parser.buffered_len()
    }

    pub fn handle_tls_ready(&mut self, now: Instant, info: TlsInfo, env: &mut Env) {
        if self.phase != Phase::ExpectTls {
            return;
        }
        self.tls = true;
        self.channel_binding = info.channel_binding.map(Vec::into_boxed_slice);
        self.phase = Phase::ExpectHeader;
        self.pump(now, env);
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8], env: &mut Env) {
        match self.phase {
            Phase::Closed => return,
            // Bytes before the handshake completes cannot be ours: the driver only hands over
            // decrypted data, so this is a driver bug rather than a client's.
            Phase::ExpectTls => return,
            _ => {}
        }
        // Any input shows the peer is alive, whatever it is (XEP-0199 §4.3 needs no match).
        self.last_input = now;
        self.ping = None;
        if let Err(e) = self.parser.feed(bytes) {
            self.fail(StreamError::from(e), env);
            return;
        }
        self.pump(now, env);
    }

    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline || self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::AuthDelay {
            let (bytes, close) = self
                .delayed_failure
                .take()
                .map_or_else(|| (Vec::new(), false), |b| *b);
            env.out.push(Upcall::Send(bytes));
            if close {
                self.fail(
                    StreamError::with_text(
                        StreamCondition::PolicyViolation,
                        "too many failed authentication attempts",
                    ),
                    env,
                );
                return;
            }
            self.phase = Phase::Open;
            self.deadline = self.auth_deadline;
            self.pump(now, env);
            return;
        }
        if self.bound.is_none() {
            self.fail(
                StreamError::with_text(
                    StreamCondition::ConnectionTimeout,
                    "authentication took too long",
                ),
                env,
            );
            return;
        }
        self.idle_timeout(now, env);
    }

    /// A bound stream's timer fired: ping a quiet client, close one that stayed silent after
    /// the ping, or re-arm for the input that came since.
    fn idle_timeout(&mut self, now: Instant, env: &mut Env) {
        let idle = env.config.c2s.idle_timeout;
        if idle.is_zero() {
            self.deadline = None;
            return;
        }
        if let Some(p) = &self.ping {
            if now >= p.deadline {
                // A dead link, not a client's decision: a resumable session waits for it.
                return self.fail_keep_session(
                    StreamError::with_text(
                        StreamCondition::ConnectionTimeout,
                        "no answer to a ping",
                    ),
                    env,
                );
            }
            self.deadline = Some(p.deadline);
            return;
        }
        let due = self.last_input + idle;
        if now < due {
            self.deadline = Some(due);
            return;
        }
        let (Some(jid), Some(domain)) = (&self.bound, &self.domain) else {
            return;
        };
        self.pings_sent += 1;
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", &format!("{PING_ID_PREFIX}{}", self.pings_sent))
            .with_attr("to", &jid.to_string())
            .with_attr("from", domain)
            .with_child(Element::new("ping", ns::PING));
        env.out.push(Upcall::SendStanza(iq.to_bytes(ns::CLIENT)));
        let deadline = now + ping_timeout(idle);
        self.ping = Some(Ping { deadline });
        self.deadline = Some(deadline);
    }

    /// The server's answer to `Upcall::Bind`.
    pub fn bind_done(
        &mut self,
        now: Instant,
        iq_id: &str,
        result: Result<Jid, StanzaError>,
        env: &mut Env,
    ) {
        if self.phase != Phase::BindPending {
            return;
        }
        self.phase = Phase::Open;
        let reply = match result {
            Ok(jid) => {
                let r = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", iq_id)
                    .with_child(
                        Element::new("bind", ns::BIND)
                            .with_child(Element::new("jid", ns::BIND).with_text(&jid.to_string())),
                    );
                self.bound = Some(jid);
                // From here the timer is the idle check (server pings), if enabled.
                self.last_input = now;
                let idle = env.config.c2s.idle_timeout;
                self.deadline = (!idle.is_zero()).then(|| now + idle);
                r
            }
            Err(err) => Element::new("iq", ns::CLIENT)
                .with_attr("type", "error")
                .with_attr("id", iq_id)
                .with_child(err.to_element()),
        };
        send_element(env, &reply);
        self.pump(now, env);
    }

    /// The server's answer to `Upcall::Register`.
    pub fn register_done(
        &mut self,
        now: Instant,
        iq_id: &str,
        result: Result<(), StanzaError>,
        env: &mut Env,
    ) {
        if self.phase != Phase::RegisterPending {
            return;
        }
        self.phase = Phase::Open;
        let reply = match result {
            Ok(()) => {
                self.registered = true;
                Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", iq_id)
            }
            Err(err) => Element::new("iq", ns::CLIENT)
                .with_attr("type", "error")
                .with_attr("id", iq_id)
                .with_child(err.to_element()),
        };
        send_element(env, &reply);
        self.pump(now, env);
    }

    /// Ends the stream with `err` (sending our header first if we had not yet, RFC 6120
    /// §4.9.1.2) and asks for the connection to be closed.
    pub fn fail(&mut self, err: StreamError, env: &mut Env) {
        if self.phase == Phase::Closed {
            return;
        }
        log::debug!("c2s stream error: {:?}", err);
        let mut bytes = Vec::new();
        if !self.header_sent && self.phase != Phase::ExpectTls {
            self.write_header(&mut bytes, None, env);
        }
        bytes.extend_from_slice(&err.to_bytes());
        env.out.push(Upcall::Send(bytes));
        self.close(env);
    }

    /// Ends the stream politely (`</stream:stream>`), e.g. at shutdown without an error.
    pub fn close(&mut self, env: &mut Env) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.deadline = None;
        env.out.push(Upcall::Close);
    }

    /// Processes complete input until more bytes are needed or the connection pauses.
    fn pump(&mut self, now: Instant, env: &mut Env) {
        // Bounded: each turn consumes a frame from a finite buffer or stops.
        loop {
            if !matches!(self.phase, Phase::ExpectHeader | Phase::Open) {
                return;
            }
            let event = match self.parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => {
                    self.fail(StreamError::from(e), env);
                    return;
                }
            };
            match (self.phase, event) {
                (Phase::ExpectHeader, StreamEvent::Open(h)) => self.handle_header(&h, env),
                (_, StreamEvent::Close) => {
                    if !self.header_sent {
                        let mut bytes = Vec::new();
                        self.write_header(&mut bytes, None, env);
                        env.out.push(Upcall::Send(bytes));
                    }
                    env.out.push(Upcall::Send(b"</stream:stream>".to_vec()));
                    self.close(env);
                }
                (Phase::Open, StreamEvent::Element(e)) => self.handle_element(now, e, env),
                (_, StreamEvent::Open(_)) => self.fail(
                    StreamError::with_text(StreamCondition::NotWellFormed, "nested stream header"),
                    env,
                ),
                (_, StreamEvent::Element(_)) => self.fail(
                    StreamError::with_text(StreamCondition::NotWellFormed, "no stream header"),
                    env,
                ),
            }
        }
    }

    fn handle_header(&mut self, h: &StreamHeader, env: &mut Env) {
        if h.name != "stream" || h.ns != ns::STREAM {
            return self.fail(StreamError::new(StreamCondition::InvalidNamespace), env);
        }
        if h.default_ns != ns::CLIENT {
            return self.fail(StreamError::new(StreamCondition::InvalidNamespace), env);
        }
        let to = h.attr("to").and_then(|t| Jid::domain_jid(t).ok());
        let Some(to) = to.filter(|d| env.config.hosts(d.domain())) else {
            return self.fail(StreamError::new(StreamCondition::HostUnknown), env);
        };
        match &self.domain {
            Some(d) if d != to.domain() => {
                return self.fail(StreamError::new(StreamCondition::HostUnknown), env);
            }
            _ => self.domain = Some(to.domain().to_owned()),
        }
        // RFC 6120 §4.7.5: a missing version means 0.9, which has no stream features.
        let major = h
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        let from = h.attr("from").map(str::to_owned);
        let mut bytes = Vec::new();
        self.write_header(&mut bytes, from.as_deref(), env);
        if major != Some(1) {
            env.out.push(Upcall::Send(bytes));
            return self.fail(StreamError::new(StreamCondition::UnsupportedVersion), env);
        }
        // The features element is in the stream namespace, under the prefix our header
        // declared; its children carry their own namespaces.
        bytes.extend_from_slice(b"<stream:features>");
        for f in self.features(env) {
            f.write_to(&mut bytes, ns::STREAM);
        }
        bytes.extend_from_slice(b"</stream:features>");
        env.out.push(Upcall::Send(bytes));
        self.phase = Phase::Open;
    }

    fn write_header(&mut self, out: &mut Vec<u8>, to: Option<&str>, env: &mut Env) {
        let mut id = [0u8; 12];
        env.random.fill(&mut id);
        let mut s = String::from(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='",
        );
        for b in id {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str("' from='");
        let domain = self
            .domain
            .clone()
            .unwrap_or_else(|| env.config.domains[0].clone());
        crate::xml::element::escape_attr(&domain, &mut s);
        if let Some(to) = to {
            s.push_str("' to='");
            crate::xml::element::escape_attr(to, &mut s);
        }
        s.push_str("' version='1.0' xml:lang='en'>");
        out.extend_from_slice(s.as_bytes());
        self.header_sent = true;
    }

    /// RFC 6120 §4.3.2: the features for the negotiation step the stream is at.
    fn features(&self, env: &Env) -> Vec<Element> {
        let mut f = Vec::new();
        if !self.tls {
            f.push(Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)));
        } else if self.account.is_none() {
            let cb = self.channel_binding();
            let mut mechs = Element::new("mechanisms", ns::SASL);
            for m in sasl::offered(cb.tls, cb.tls_exporter.is_some()) {
                mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
            }
            f.push(mechs);
            if let Some(r) = registration::stream_feature(env.config) {
                f.push(r);
            }
            if cb.tls_exporter.is_some() {
                // XEP-0440: say which channel-binding types the -PLUS mechanisms accept.
                f.push(
                    Element::new("sasl-channel-binding", ns::SASL_CB).with_child(
                        Element::new("channel-binding", ns::SASL_CB)
                            .with_attr("type", "tls-exporter"),
                    ),
                );
            }
        } else {
            f.push(Element::new("bind", ns::BIND));
            f.push(
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            );
            // XEP-0198 (resumption is asked for here, before bind) and XEP-0352.
            f.push(sm::feature());
            f.push(Element::new("csi", csi::NS_CSI));
            for make in &env.registry.stream_features {
                if let Some(e) = make(env.registry, env.config) {
                    f.push(e);
                }
            }
        }
        f
    }

    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding {
            tls: self.tls,
            tls_exporter: self.channel_binding.as_deref().map(<[u8]>::to_vec),
        }
    }

    fn handle_element(&mut self, now: Instant, e: Element, env: &mut Env) {
        if !self.tls {
            return self.handle_pre_tls(e, env);
        }
        if self.account.is_none() {
            return self.handle_sasl(now, e, env);
        }
        if self.bound.is_none() {
            return self.handle_pre_bind(e, env);
        }
        self.handle_bound(e, env);
    }

    fn handle_pre_tls(&mut self, e: Element, env: &mut Env) {
        if e.is("starttls", ns::TLS) {
            env.out.push(Upcall::Send(
                Element::new("proceed", ns::TLS).to_bytes(ns::STREAM),
            ));
            self.phase = Phase::ExpectTls;
            self.header_sent = false;
            env.out.push(Upcall::StartTls(self.parser.take_unparsed()));
            return;
        }
        if e.ns == ns::SASL {
            // RFC 6120 §5.3.1: TLS is mandatory here, so SASL is not yet offered.
            return self.fail(
                StreamError::with_text(StreamCondition::PolicyViolation, "STARTTLS is required"),
                env,
            );
        }
        self.refuse_unauthenticated(e, env);
    }

    /// A stanza or unknown element before authentication ends the stream (RFC 6120 §4.9.3.12).
    fn refuse_unauthenticated(&mut self, e: Element, env: &mut Env) {
        let cond = if StanzaKind::of(&e).is_some() {
            StreamCondition::NotAuthorized
        } else {
            StreamCondition::UnsupportedStanzaType
        };
        self.fail(StreamError::new(cond), env);
    }

    fn handle_sasl(&mut self, now: Instant, e: Element, env: &mut Env) {
        if e.is("iq", ns::CLIENT) && e.child("query", registration::NS_REGISTER).is_some() {
            return self.handle_register(e, env);
        }
        if e.ns != ns::SASL {
            return self.refuse_unauthenticated(e, env);
        }
        let cb = self.channel_binding();
        let domain = self.domain.clone().unwrap_or_default();
        let mut lookup = StoreLookup {
            store: env.store,
            domain: &domain,
            fake_salt_key: env.fake_salt_key,
        };
        let step = match e.name.as_str() {
            "auth" => {
                let offered = sasl::offered(cb.tls, cb.tls_exporter.is_some());
                let mech = e
                    .attr("mechanism")
                    .and_then(sasl::Mechanism::from_name)
                    .filter(|m| offered.contains(m));
                let Some(mech) = mech else {
                    return self.sasl_failure(now, SaslFailure::InvalidMechanism, env);
                };
                let text = e.text();
                if text.is_empty() {
                    // No initial response: ask for it with an empty challenge (RFC 6120 §6.4.2).
                    self.sasl = Some(Box::new(SaslExchange {
                        mechanism: mech,
                        session: None,
                    }));
                    env.out.push(Upcall::Send(
                        Element::new("challenge", ns::SASL).to_bytes(ns::STREAM),
                    ));
                    return;
                }
                let Some(initial) = decode_sasl_text(&text) else {
                    return self.sasl_failure(now, SaslFailure::IncorrectEncoding, env);
                };
                let random = &mut *env.random;
                let (session, step) =
                    SaslSession::start(mech, &initial, &cb, &mut lookup, &mut |b| random.fill(b));
                self.sasl = Some(Box::new(SaslExchange {
                    mechanism: mech,
                    session: Some(session),
                }));
                step
            }
            "response" => {
                let Some(data) = decode_sasl_text(&e.text()) else {
                    return self.sasl_failure(now, SaslFailure::IncorrectEncoding, env);
                };
                match self.sasl.as_mut() {
                    None => return self.sasl_failure(now, SaslFailure::MalformedRequest, env),
                    Some(ex) => match ex.session.as_mut() {
                        Some(s) => s.step(&data, &cb, &mut lookup),
                        None => {
                            let random = &mut *env.random;
                            let (session, step) = SaslSession::start(
                                ex.mechanism,
                                &data,
                                &cb,
                                &mut lookup,
                                &mut |b| random.fill(b),
                            );
                            ex.session = Some(session);
                            step
                        }
                    },
                }
            }
            "abort" => SaslStep::Failure(SaslFailure::Aborted),
            _ => SaslStep::Failure(SaslFailure::MalformedRequest),
        };
        match step {
            SaslStep::Challenge(data) => {
                let c =
                    Element::new("challenge", ns::SASL).with_text(&crate::base64::encode(&data));
                env.out.push(Upcall::Send(c.to_bytes(ns::STREAM)));
            }
            SaslStep::Success {
                username,
                additional,
            } => {
                self.sasl = None;
                let account = Jid::parse(&format!("{username}@{domain}"));
                let Ok(account) = account else {
                    return self.sasl_failure(now, SaslFailure::NotAuthorized, env);
                };
                log::info!("authenticated {account}");
                let mut s = Element::new("success", ns::SASL);
                if !additional.is_empty() {
                    s = s.with_text(&crate::base64::encode(&additional));
                }
                env.out.push(Upcall::Send(s.to_bytes(ns::STREAM)));
                // SASL happens once per stream (RFC 6120 §6.4.1): the channel binding data
                // has served its purpose, and an idle session need not keep it.
                self.channel_binding = None;
                self.account = Some(account);
                self.parser.restart();
                self.phase = Phase::ExpectHeader;
                self.header_sent = false;
            }
            SaslStep::Failure(f) => self.sasl_failure(now, f, env),
        }
    }

    /// Answers a failed attempt after the configured delay; closes after too many.
    fn sasl_failure(&mut self, now: Instant, f: SaslFailure, env: &mut Env) {
        self.sasl = None;
        let bytes = Element::new("failure", ns::SASL)
            .with_child(Element::new(f.name(), ns::SASL))
            .to_bytes(ns::STREAM);
        if f == SaslFailure::Aborted {
            env.out.push(Upcall::Send(bytes));
            return;
        }
        self.auth_failures += 1;
        let close = self.auth_failures >= env.config.c2s.max_auth_failures;
        log::info!(
            "authentication failure ({}) {} of {} on {:?}",
            f.name(),
            self.auth_failures,
            env.config.c2s.max_auth_failures,
            self.domain
        );
        self.delayed_failure = Some(Box::new((bytes, close)));
        self.auth_deadline = self.deadline;
        self.phase = Phase::AuthDelay;
        self.deadline = Some(now + env.config.c2s.auth_failure_delay);
    }

    /// XEP-0077 §3.1 before authentication: the form, or a new account. What can be refused
    /// without the store's write (bad fields, a taken name) is refused here, before the
    /// costly credential derivation; the server only creates.
    fn handle_register(&mut self, e: Element, env: &mut Env) {
        let domain = self.domain.clone().unwrap_or_default();
        let refuse = |env: &mut Env, err: StanzaError| {
            if let Some(r) = error_reply(&e, &err, &domain) {
                send_element(env, &r);
            }
        };
        let (Some(iq_id), Some(query)) = (
            e.attr("id").map(str::to_owned),
            e.child("query", registration::NS_REGISTER),
        ) else {
            return refuse(env, StanzaError::new(StanzaCondition::BadRequest));
        };
        if e.child_elements().count() != 1 {
            return refuse(env, StanzaError::new(StanzaCondition::BadRequest));
        }
        let get = match e.attr("type") {
            Some("get") => true,
            Some("set") => false,
            // A result or error answers nothing we asked.
            _ => return,
        };
        if !env.config.registration.enabled {
            return refuse(env, StanzaError::new(StanzaCondition::ServiceUnavailable));
        }
        if get {
            let r = crate::stanza::iq_result(&e, &domain).with_child(registration::form());
            return send_element(env, &r);
        }
        if self.registered
            || self.registration_attempts >= registration::MAX_ATTEMPTS_PER_CONNECTION
        {
            return refuse(
                env,
                StanzaError::with_text(
                    StanzaCondition::NotAcceptable,
                    "no more registrations on this connection",
                ),
            );
        }
        self.registration_attempts += 1;
        let (username, password) = match registration::parse_set(query) {
            Ok(RegisterRequest::Fields { username, password }) => (username, password),
            // §3.2: an entity that is not registered has nothing to cancel.
            Ok(RegisterRequest::Remove) => {
                return refuse(env, StanzaError::new(StanzaCondition::UnexpectedRequest));
            }
            Err(err) => return refuse(env, err),
        };
        let account = match registration::account_jid(username.as_deref().unwrap_or(""), &domain) {
            Ok(a) => a,
            Err(err) => return refuse(env, err),
        };
        match env.store.account_credentials(&account.to_string()) {
            Ok(None) => {}
            Ok(Some(_)) => return refuse(env, StanzaError::new(StanzaCondition::Conflict)),
            Err(err) => {
                log::error!("store: {err}");
                return refuse(env, StanzaError::new(StanzaCondition::InternalServerError));
            }
        }
        let random = &mut *env.random;
        let credentials =
            match registration::derive_credentials(password.as_deref().unwrap_or(""), &mut |b| {
                random.fill(b)
            }) {
                Ok(c) => c,
                Err(err) => return refuse(env, err),
            };
        self.phase = Phase::RegisterPending;
        env.out.push(Upcall::Register {
            iq_id,
            account,
            credentials,
        });
    }

    fn handle_pre_bind(&mut self, e: Element, env: &mut Env) {
        match ClientSm::parse(&e) {
            None => {}
            Some(ClientSm::Resume { previd, h }) => {
                self.phase = Phase::BindPending;
                env.out.push(Upcall::SmResume { previd, h });
                return;
            }
            // XEP-0198 §3: enabling needs a bound resource.
            Some(_) => return send_nonza(env, &sm::failed("unexpected-request")),
        }
        if e.is("iq", ns::CLIENT) && e.attr("type") == Some("set") {
            if let Some(bind) = e.child("bind", ns::BIND) {
                let iq_id = e.attr("id").unwrap_or_default().to_owned();
                let resource = bind
                    .child("resource", ns::BIND)
                    .map(|r| r.text())
                    .filter(|r| !r.is_empty());
                self.phase = Phase::BindPending;
                env.out.push(Upcall::Bind { iq_id, resource });
                return;
            }
        }
        self.refuse_unauthenticated(e, env);
    }

    fn handle_bound(&mut self, mut e: Element, env: &mut Env) {
        let Some(jid) = &self.bound else {
            return;
        };
        if let Some(m) = ClientSm::parse(&e) {
            return self.handle_sm(m, env);
        }
        if e.ns == csi::NS_CSI && matches!(e.name.as_str(), "active" | "inactive") {
            env.out.push(Upcall::Csi {
                active: e.name == "active",
            });
            return;
        }
        if StanzaKind::of(&e).is_none() {
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                env,
            );
        }
        if let Some(h) = &mut self.sm_in {
            // XEP-0198 §4: every stanza counts, whatever becomes of it; h wraps at 2^32.
            *h = h.wrapping_add(1);
        }
        if self.is_ping_answer(&e) {
            return;
        }
        // RFC 6120 §8.1.2.1: the server stamps `from` with the session's full JID.
        e.set_attr("from", &jid.to_string());
        // The legacy session IQ (RFC 3921 §3) is a no-op kept for old clients.
        if e.name == "iq"
            && e.attr("type") == Some("set")
            && e.child("session", ns::SESSION).is_some()
        {
            let domain = self.domain.clone().unwrap_or_default();
            let to_server = e.attr("to").is_none_or(|t| t == domain);
            if to_server {
                send_stanza(env, &crate::stanza::iq_result(&e, &domain));
                return;
            }
        }
        if e.name == "iq" && e.attr("id").is_none() {
            let domain = self.domain.clone().unwrap_or_default();
            if let Some(r) =
                error_reply(&e, &StanzaError::new(StanzaCondition::BadRequest), &domain)
            {
                send_stanza(env, &r);
            }
            return;
        }
        env.out.push(Upcall::Stanza(e));
    }

    /// XEP-0198 elements on a bound stream.
    fn handle_sm(&mut self, m: ClientSm, env: &mut Env) {
        match (m, self.sm_in) {
            (ClientSm::Enable { resume }, None) => {
                self.sm_in = Some(0);
                env.out.push(Upcall::SmEnable { resume });
            }
            (ClientSm::Request, Some(h)) => send_nonza(env, &sm::answer(h)),
            (ClientSm::Ack(h), Some(_)) => env.out.push(Upcall::SmAck(h)),
            (ClientSm::Malformed, _) => self.fail(
                StreamError::with_text(
                    StreamCondition::BadFormat,
                    "malformed stream management element",
                ),
                env,
            ),
            // Enabling twice, resuming once bound, acks or requests before enabling.
            _ => send_nonza(env, &sm::failed("unexpected-request")),
        }
    }
}

impl C2sConn {
    /// A client's answer (result, or an error from one without XEP-0199) to a server ping:
    /// its arrival already counted as input; it goes no further.
    fn is_ping_answer(&self, e: &Element) -> bool {
        e.name == "iq"
            && matches!(e.attr("type"), Some("result" | "error"))
            && e.attr("id")
                .is_some_and(|id| id.starts_with(PING_ID_PREFIX))
            && e.attr("to")
                .is_none_or(|t| Some(t) == self.domain.as_deref())
    }
}

fn send_element(env: &mut Env, e: &Element) {
    env.out.push(Upcall::Send(e.to_bytes(ns::CLIENT)));
}

/// A stanza to the bound client (counted by stream management).
fn send_stanza(env: &mut Env, e: &Element) {
    env.out.push(Upcall::SendStanza(e.to_bytes(ns::CLIENT)));
}

/// A stream-level element that is not a stanza (XEP-0198's "nonza"): never counted.
fn send_nonza(env: &mut Env, e: &Element) {
    env.out.push(Upcall::Send(e.to_bytes(ns::CLIENT)));
}

/// SASL payloads are base64; `=` alone means an empty response (RFC 6120 §6.4.2).
fn decode_sasl_text(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if t == "=" || t.is_empty() {
        return Some(Vec::new());
    }
    crate::base64::decode(t)
}

/// Credentials of `user@domain` from the store.
struct StoreLookup<'a> {
    store: &'a dyn Store,
    domain: &'a str,
    fake_salt_key: [u8; 32],
}

impl CredentialLookup for StoreLookup<'_> {
    fn credentials(&mut self, username: &str) -> Result<Option<Credentials>, SaslFailure> {
        self.store
            .account_credentials(&format!("{username}@{}", self.domain))
            .map_err(|e| {
                log::error!("store: {e}");
                SaslFailure::TemporaryAuthFailure
            })
    }

    fn fake_salt_key(&self) -> Option<[u8; 32]> {
        Some(self.fake_salt_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Harness;

    const IDLE: Duration = Duration::from_secs(300);
    const PING_1: &str = "<iq type='get' id='ping-1' to='alice@localhost/a' from='localhost'>\
                          <ping xmlns='urn:xmpp:ping'/></iq>";

    #[test]
    fn ping_timeout_is_a_fifth_of_idle_within_bounds() {
        assert_eq!(ping_timeout(IDLE), Duration::from_secs(60));
        assert_eq!(
            ping_timeout(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            ping_timeout(Duration::from_secs(50)),
            Duration::from_secs(10)
        );
        assert_eq!(ping_timeout(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn bound_quiet_for_idle_timeout_gets_ping() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        assert_eq!(h.server.poll_timeout(), Some(h.now + IDLE));
        h.advance(IDLE - Duration::from_secs(1));
        assert_eq!(h.take(a), "");
        h.advance(Duration::from_secs(1));
        assert_eq!(h.take(a), PING_1);
        assert_eq!(
            h.server.poll_timeout(),
            Some(h.now + Duration::from_secs(60))
        );
        assert!(h.closed.is_empty());
    }

    #[test]
    fn bound_ping_unanswered_closes_with_connection_timeout() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.advance(IDLE);
        assert_eq!(h.take(a), PING_1);
        h.advance(Duration::from_secs(59));
        assert!(h.closed.is_empty());
        h.advance(Duration::from_secs(1));
        let out = h.take(a);
        assert!(out.contains("<connection-timeout"), "{out}");
        assert_eq!(h.closed, vec![a]);
        assert_eq!(h.server.connection_count(), 0);
        assert_eq!(h.server.poll_timeout(), None);
    }

    #[test]
    fn bound_ping_answered_keeps_stream_and_rearms_idle_check() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.advance(IDLE);
        assert_eq!(h.take(a), PING_1);
        h.advance(Duration::from_secs(5));
        let answered = h.now;
        h.send(a, "<iq type='result' id='ping-1' to='localhost'/>");
        // Taken by c2s: not routed, so no error comes back.
        assert_eq!(h.take(a), "");
        // The timer is not moved by input; when it fires it re-arms from the last input.
        h.advance(Duration::from_secs(55));
        assert!(h.closed.is_empty());
        assert_eq!(h.take(a), "");
        assert_eq!(h.server.poll_timeout(), Some(answered + IDLE));
        h.advance(IDLE - Duration::from_secs(55));
        assert!(h.take(a).contains("id='ping-2'"));
    }

    #[test]
    fn bound_ping_error_reply_counts_as_alive() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.advance(IDLE);
        h.take(a);
        h.send(
            a,
            "<iq type='error' id='ping-1'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        h.advance(Duration::from_secs(60));
        assert_eq!(h.take(a), "");
        assert!(h.closed.is_empty());
    }

    #[test]
    fn bound_input_defers_ping_without_moving_timer() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let first = h.server.poll_timeout();
        h.advance(Duration::from_secs(200));
        h.send(
            a,
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        assert!(h.take(a).contains("type='result' id='p'"));
        assert_eq!(
            h.server.poll_timeout(),
            first,
            "input must not re-file the timer"
        );
        let input = h.now;
        h.advance(Duration::from_secs(100));
        assert_eq!(h.take(a), "", "quiet for 100 s only: no ping");
        assert_eq!(h.server.poll_timeout(), Some(input + IDLE));
        h.advance(Duration::from_secs(200));
        assert!(h.take(a).contains("id='ping-1'"));
    }

    #[test]
    fn bound_any_bytes_clear_outstanding_ping() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.advance(IDLE);
        h.take(a);
        // Whitespace keepalive (RFC 6120 §4.6.1) is input too.
        h.send(a, " ");
        h.advance(Duration::from_secs(60));
        assert!(h.closed.is_empty());
    }

    #[test]
    fn bound_idle_timeout_zero_never_pings() {
        let mut config = Config::default();
        config.c2s.idle_timeout = Duration::ZERO;
        let mut h = Harness::with_config(config);
        let a = h.login("alice", "a");
        assert_eq!(h.server.poll_timeout(), None);
        h.advance(Duration::from_secs(10 * 3600));
        assert_eq!(h.take(a), "");
        assert!(h.closed.is_empty());
    }

    #[test]
    fn bound_ping_id_result_to_someone_else_is_routed() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<iq type='result' id='ping-7' to='bob@localhost/b'/>");
        assert!(h.take(b).contains("id='ping-7'"));
    }

    #[test]
    fn idle_conn_struct_small() {
        // Memory budget: every connection holds one of these (boxed in the server) for its
        // whole life; what only authentication needs lives behind a pointer.
        let size = std::mem::size_of::<C2sConn>();
        assert!(size <= 560, "C2sConn grew to {size} bytes");
    }
}
