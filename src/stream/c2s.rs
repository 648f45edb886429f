//! Client-to-server stream negotiation (RFC 6120 §4-§7): stream headers, STARTTLS, SASL and
//! resource binding, for one connection.
//!
//! Owns: the parser of one connection, what has been negotiated on it (TLS, the authenticated
//! account, the bound JID), the authentication deadline and failure delays, and turning parser
//! errors into stream errors. Leaves to `server`: binding a resource in the router (this module
//! asks with `Upcall::Bind` and pauses until `bind_done`) and routing stanzas once bound
//! (`Upcall::Stanza`).
//!
//! The negotiation is kept as facts (`tls`, `account`, `bound`) rather than one state per step,
//! because what a stream accepts depends on exactly those facts; SASL2/Bind2 (XEP-0388/0386)
//! will add paths that set the same facts in one round trip.

use std::time::Instant;

use crate::config::Config;
use crate::jid::Jid;
use crate::sasl::{
    self, ChannelBinding, CredentialLookup, Credentials, SaslFailure, SaslSession, SaslStep,
};
use crate::server::{ListenerKind, RandomSource, TlsInfo};
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply};
use crate::store::Store;
use crate::stream::error::{StreamCondition, StreamError};
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
    /// Closed; nothing more is read or sent.
    Closed,
}

/// One client connection's stream state.
pub struct C2sConn {
    parser: StreamParser,
    phase: Phase,
    /// Our response header was sent for the current stream.
    header_sent: bool,
    tls: Option<TlsInfo>,
    /// The hosted domain this stream is for (from the first header's `to`).
    domain: Option<String>,
    /// The authenticated account (bare JID).
    account: Option<Jid>,
    /// The bound full JID.
    bound: Option<Jid>,
    sasl: Option<SaslExchange>,
    auth_failures: u32,
    /// Held `<failure/>` bytes and whether the stream closes after them.
    delayed_failure: Option<(Vec<u8>, bool)>,
    /// Until bound: when the connection is dropped; during AuthDelay: when to answer.
    deadline: Option<Instant>,
    /// The authentication deadline, kept aside while `deadline` times a failure delay.
    auth_deadline: Option<Instant>,
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
                ListenerKind::C2sDirectTls => Phase::ExpectTls,
                ListenerKind::C2sStartTls => Phase::ExpectHeader,
            },
            header_sent: false,
            tls: None,
            domain: None,
            account: None,
            bound: None,
            sasl: None,
            auth_failures: 0,
            delayed_failure: None,
            deadline: Some(now + config.c2s.auth_timeout),
            auth_deadline: None,
        }
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
        self.tls = Some(info);
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
                .unwrap_or_else(|| (Vec::new(), false));
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
        }
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
                self.deadline = None;
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
        if self.tls.is_none() {
            f.push(Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)));
        } else if self.account.is_none() {
            let cb = self.channel_binding();
            let mut mechs = Element::new("mechanisms", ns::SASL);
            for m in sasl::offered(cb.tls, cb.tls_exporter.is_some()) {
                mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
            }
            f.push(mechs);
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
            tls: self.tls.is_some(),
            tls_exporter: self.tls.as_ref().and_then(|t| t.channel_binding.clone()),
        }
    }

    fn handle_element(&mut self, now: Instant, e: Element, env: &mut Env) {
        if self.tls.is_none() {
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
                    self.sasl = Some(SaslExchange {
                        mechanism: mech,
                        session: None,
                    });
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
                self.sasl = Some(SaslExchange {
                    mechanism: mech,
                    session: Some(session),
                });
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
        self.delayed_failure = Some((bytes, close));
        self.auth_deadline = self.deadline;
        self.phase = Phase::AuthDelay;
        self.deadline = Some(now + env.config.c2s.auth_failure_delay);
    }

    fn handle_pre_bind(&mut self, e: Element, env: &mut Env) {
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
        if StanzaKind::of(&e).is_none() {
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                env,
            );
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
                send_element(env, &crate::stanza::iq_result(&e, &domain));
                return;
            }
        }
        if e.name == "iq" && e.attr("id").is_none() {
            let domain = self.domain.clone().unwrap_or_default();
            if let Some(r) =
                error_reply(&e, &StanzaError::new(StanzaCondition::BadRequest), &domain)
            {
                send_element(env, &r);
            }
            return;
        }
        env.out.push(Upcall::Stanza(e));
    }
}

fn send_element(env: &mut Env, e: &Element) {
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
