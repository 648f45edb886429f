//! One incoming server-to-server stream (RFC 6120 §4-§6 as the receiving entity): the stream
//! header checks, STARTTLS, SASL EXTERNAL (XEP-0178), dialback as Receiving Server and as
//! Authoritative Server (XEP-0220 §2.2), and the check of every stanza's addresses against the
//! domain pairs authenticated on this stream.
//!
//! Owns: the parser of one connection, its stream id, the authenticated and pending domain
//! pairs (several per stream: XEP-0220 §3 multiplexing), and the handshake and idle deadlines.
//! Leaves to the server: asking the Authoritative Server (`Upcall::VerifyDialback`, answered
//! with `dialback_verified`), routing accepted stanzas and sending stanza errors back (an s2s
//! stream carries stanzas one way only).
//!
//! Stanza addressing (RFC 6120 §4.9.3.10, §4.9.3.12, §8.1.1.1, §8.1.2.1; XEP-0220 §2.2.1):
//! - no domain pair authenticated yet: stream error `not-authorized`;
//! - `from` or `to` missing or not a JID: stream error `improper-addressing` (§4.9.3.12);
//! - `from`'s domain not authenticated on this stream (spoofing): stream error `invalid-from`;
//! - `from` authenticated, but not for this `to` domain: the stanza is refused
//!   (`Upcall::Reject`), `item-not-found` if we do not host `to`, else `not-authorized`; the
//!   stream lives on, since other pairs on it are fine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::server::RandomSource;
use crate::stanza::{StanzaCondition, StanzaKind};
use crate::stream::error::{StreamCondition, StreamError};
use crate::xml::{Element, StreamEvent, StreamHeader, StreamParser, ns};

use super::dialback::{self, DbElement, DbKind, DbType};
use super::{
    AuthMethod, DialbackVerdict, S2sConfig, S2sTlsInfo, address_domain, dialback_feature,
    new_stream_id, normalize_domain, renamespace, write_features, write_header,
};

/// What an incoming stream asks of the server, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Upcall {
    Send(Vec<u8>),
    /// `<proceed/>` is queued; start a TLS server handshake with these already-received bytes.
    StartTls(Vec<u8>),
    /// Close the connection after flushing.
    Close,
    /// Ask the Authoritative Server for `from` whether `key` is valid for this stream, then
    /// call `dialback_verified(now, from, to, verdict)`.
    VerifyDialback {
        from: String,
        to: String,
        stream_id: String,
        key: String,
    },
    /// Stanzas from `from` to `to` are now accepted on this stream.
    Authenticated {
        from: String,
        to: String,
        method: AuthMethod,
    },
    /// An authenticated stanza, in `jabber:client` like c2s stanzas.
    Stanza {
        element: Element,
    },
    /// Answer `stanza` with this error over an outgoing stream (or drop it if unanswerable).
    Reject {
        stanza: Element,
        condition: StanzaCondition,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Direct TLS, or after `<proceed/>`: waiting for the handshake.
    ExpectTls,
    ExpectHeader,
    Open,
    Closed,
}

/// A domain pair asked for on this stream.
#[derive(Debug)]
struct Pair {
    /// The Sender Domain (the peer's).
    from: String,
    /// The Target Domain (ours).
    to: String,
    valid: bool,
}

/// One incoming s2s connection.
pub struct S2sIn {
    config: Arc<S2sConfig>,
    parser: StreamParser,
    phase: Phase,
    header_sent: bool,
    stream_id: Option<String>,
    /// Our domain, from the first header's `to`.
    local: Option<String>,
    /// The peer's domain, from the header's `from` (optional in RFC 6120 for s2s).
    peer: Option<String>,
    tls: Option<S2sTlsInfo>,
    /// SASL EXTERNAL succeeded (for `peer` to `local`).
    sasl_done: bool,
    pairs: Vec<Pair>,
    deadline: Option<Instant>,
    out: VecDeque<Upcall>,
}

impl S2sIn {
    /// A connection accepted on an s2s listener; `direct_tls` for XEP-0368 listeners, where
    /// the driver calls `handle_tls_ready` before any bytes.
    pub fn new(now: Instant, config: Arc<S2sConfig>, direct_tls: bool) -> S2sIn {
        S2sIn {
            parser: StreamParser::new(config.limits),
            phase: if direct_tls {
                Phase::ExpectTls
            } else {
                Phase::ExpectHeader
            },
            header_sent: false,
            stream_id: None,
            local: None,
            peer: None,
            tls: None,
            sasl_done: false,
            pairs: Vec::new(),
            deadline: Some(now + config.handshake_timeout),
            out: VecDeque::new(),
            config,
        }
    }

    /// The next upcall, in order.
    pub fn poll_upcall(&mut self) -> Option<Upcall> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The id of the current stream (the one dialback keys on it are bound to).
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Whether stanzas from `from` to `to` are accepted on this stream.
    pub fn is_authenticated(&self, from: &str, to: &str) -> bool {
        self.pairs
            .iter()
            .any(|p| p.valid && p.from == from && p.to == to)
    }

    pub fn buffered_len(&self) -> usize {
        self.parser.buffered_len()
    }

    pub fn handle_tls_ready(
        &mut self,
        now: Instant,
        info: S2sTlsInfo,
        random: &mut dyn RandomSource,
    ) {
        if self.phase != Phase::ExpectTls {
            return;
        }
        self.tls = Some(info);
        self.phase = Phase::ExpectHeader;
        self.pump(now, random);
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8], random: &mut dyn RandomSource) {
        // Before the TLS handshake completes, bytes cannot be ours (the driver hands over only
        // decrypted data): ignore rather than misparse.
        if matches!(self.phase, Phase::Closed | Phase::ExpectTls) {
            return;
        }
        if let Err(e) = self.parser.feed(bytes) {
            return self.fail(StreamError::from(e));
        }
        if self.has_valid_pair() {
            self.deadline = Some(now + self.config.idle_timeout);
        }
        self.pump(now, random);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if now >= d && self.phase != Phase::Closed => {}
            _ => return,
        }
        if self.has_valid_pair() {
            log::debug!("s2s in: idle, closing");
            self.out
                .push_back(Upcall::Send(b"</stream:stream>".to_vec()));
            self.close();
        } else {
            self.fail(StreamError::with_text(
                StreamCondition::ConnectionTimeout,
                "authentication took too long",
            ));
        }
    }

    /// The Authoritative Server's answer to `Upcall::VerifyDialback` (XEP-0220 §2.2.1 step 4).
    /// Returns false if no request for this pair is pending here (the answer is then dropped).
    pub fn dialback_verified(
        &mut self,
        now: Instant,
        from: &str,
        to: &str,
        verdict: DialbackVerdict,
    ) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        let Some(i) = self
            .pairs
            .iter()
            .position(|p| !p.valid && p.from == from && p.to == to)
        else {
            log::debug!("s2s in: unsolicited dialback verdict for {from} -> {to}");
            return false;
        };
        match verdict {
            DialbackVerdict::Valid => {
                if let Some(p) = self.pairs.get_mut(i) {
                    p.valid = true;
                }
                self.send_result(to, from, DbType::Valid);
                self.authenticated(now, from, to, AuthMethod::Dialback);
            }
            DialbackVerdict::Invalid => {
                self.pairs.remove(i);
                log::info!("s2s in: dialback key for {from} -> {to} is invalid");
                if self.has_valid_pair() {
                    // XEP-0220 §2.2.1: keep the other pairs; refuse this one only.
                    self.send_result(to, from, DbType::Error(StanzaCondition::Forbidden));
                } else {
                    // XEP-0220 §2.2.1: first attempt: say invalid and close the stream.
                    self.send_result(to, from, DbType::Invalid);
                    self.out
                        .push_back(Upcall::Send(b"</stream:stream>".to_vec()));
                    self.close();
                }
            }
            DialbackVerdict::Error(c) => {
                self.pairs.remove(i);
                self.send_result(to, from, DbType::Error(c));
            }
        }
        true
    }

    /// Ends the stream with `err` (our header first if not yet sent, RFC 6120 §4.9.1.2).
    pub fn fail(&mut self, err: StreamError) {
        if self.phase == Phase::Closed {
            return;
        }
        log::debug!("s2s in: stream error {err:?}");
        let mut bytes = Vec::new();
        if !self.header_sent && self.phase != Phase::ExpectTls {
            write_header(&mut bytes, self.local.as_deref(), None, None);
        }
        bytes.extend_from_slice(&err.to_bytes());
        self.out.push_back(Upcall::Send(bytes));
        self.close();
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.deadline = None;
        self.out.push_back(Upcall::Close);
    }

    fn has_valid_pair(&self) -> bool {
        self.pairs.iter().any(|p| p.valid)
    }

    fn authenticated(&mut self, now: Instant, from: &str, to: &str, method: AuthMethod) {
        log::info!("s2s in: {from} -> {to} authenticated ({method:?})");
        self.deadline = Some(now + self.config.idle_timeout);
        self.out.push_back(Upcall::Authenticated {
            from: from.to_owned(),
            to: to.to_owned(),
            method,
        });
    }

    fn send_result(&mut self, from: &str, to: &str, answer: DbType) {
        self.out.push_back(Upcall::Send(dialback::write(
            DbKind::Result,
            from,
            to,
            None,
            Some(answer),
            None,
        )));
    }

    fn pump(&mut self, now: Instant, random: &mut dyn RandomSource) {
        // Bounded: each turn consumes a frame from a finite buffer or stops.
        loop {
            if !matches!(self.phase, Phase::ExpectHeader | Phase::Open) {
                return;
            }
            let event = match self.parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => return self.fail(StreamError::from(e)),
            };
            match (self.phase, event) {
                (Phase::ExpectHeader, StreamEvent::Open(h)) => self.handle_header(&h, random),
                (_, StreamEvent::Close) => {
                    let mut bytes = Vec::new();
                    if !self.header_sent {
                        write_header(&mut bytes, self.local.as_deref(), None, None);
                    }
                    bytes.extend_from_slice(b"</stream:stream>");
                    self.out.push_back(Upcall::Send(bytes));
                    self.close();
                }
                (Phase::Open, StreamEvent::Element(e)) => self.handle_element(now, e),
                (_, StreamEvent::Open(_)) => self.fail(StreamError::with_text(
                    StreamCondition::NotWellFormed,
                    "nested stream header",
                )),
                (_, StreamEvent::Element(_)) => self.fail(StreamError::with_text(
                    StreamCondition::NotWellFormed,
                    "no stream header",
                )),
            }
        }
    }

    fn handle_header(&mut self, h: &StreamHeader, random: &mut dyn RandomSource) {
        if h.name != "stream" || h.ns != ns::STREAM || h.default_ns != ns::SERVER {
            return self.fail(StreamError::new(StreamCondition::InvalidNamespace));
        }
        // RFC 6120 §4.7.2: an initiating server MUST say which domain it wants.
        let to = h.attr("to").and_then(normalize_domain);
        let Some(to) = to.filter(|d| self.config.hosts(d)) else {
            return self.fail(StreamError::new(StreamCondition::HostUnknown));
        };
        if self.local.as_ref().is_some_and(|l| *l != to) {
            return self.fail(StreamError::with_text(
                StreamCondition::HostUnknown,
                "'to' changed on a stream restart",
            ));
        }
        self.local = Some(to.clone());
        let from = match h.attr("from") {
            None => None,
            Some(f) => match normalize_domain(f) {
                Some(d) => Some(d),
                None => return self.fail(StreamError::new(StreamCondition::InvalidFrom)),
            },
        };
        if self.sasl_done && from != self.peer {
            return self.fail(StreamError::with_text(
                StreamCondition::InvalidFrom,
                "'from' changed after authentication",
            ));
        }
        self.peer = from;
        let id = new_stream_id(random);
        let mut bytes = Vec::new();
        write_header(&mut bytes, Some(&to), self.peer.as_deref(), Some(&id));
        self.header_sent = true;
        self.stream_id = Some(id);
        let major = h
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(1) => {
                let features = self.features();
                write_features(&mut bytes, &features);
            }
            // RFC 6120 §4.7.5: no version means a pre-1.0 peer: no features, hence no TLS;
            // traditional dialback only, which is acceptable only without required TLS.
            None if !self.config.policy.require_encryption => {}
            _ => {
                self.out.push_back(Upcall::Send(bytes));
                return self.fail(StreamError::new(StreamCondition::UnsupportedVersion));
            }
        }
        self.out.push_back(Upcall::Send(bytes));
        self.phase = Phase::Open;
    }

    /// SASL EXTERNAL is offered only after TLS, before SASL, and only when the certificate
    /// proves the domain the header claims (XEP-0178 §2).
    fn external_offered(&self) -> bool {
        match (&self.tls, &self.peer) {
            (Some(tls), Some(peer)) => !self.sasl_done && tls.covers(peer),
            _ => false,
        }
    }

    fn features(&self) -> Vec<Element> {
        let mut f = Vec::new();
        if self.tls.is_none() {
            let mut tls = Element::new("starttls", ns::TLS);
            if self.config.policy.require_encryption {
                tls.push_child(Element::new("required", ns::TLS));
            }
            f.push(tls);
        }
        if self.external_offered() {
            f.push(
                Element::new("mechanisms", ns::SASL)
                    .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        // Dialback stays available (also after SASL, for more domain pairs), except where the
        // policy would refuse it anyway: before TLS when TLS is required.
        if self.tls.is_some() || !self.config.policy.require_encryption {
            f.push(dialback_feature());
        }
        f
    }

    fn handle_element(&mut self, now: Instant, e: Element) {
        if let Some(db) = DbElement::parse(&e) {
            return match db {
                Ok(db) => self.handle_dialback(now, db),
                Err(why) => self.fail(StreamError::with_text(
                    StreamCondition::BadFormat,
                    &format!("bad dialback element: {why:?}"),
                )),
            };
        }
        if e.is("starttls", ns::TLS) {
            if self.tls.is_some() {
                // RFC 6120 §5.4.2.2: refuse with <failure/> and close.
                let mut bytes = Element::new("failure", ns::TLS).to_bytes(ns::SERVER);
                bytes.extend_from_slice(b"</stream:stream>");
                self.out.push_back(Upcall::Send(bytes));
                return self.close();
            }
            self.out.push_back(Upcall::Send(
                Element::new("proceed", ns::TLS).to_bytes(ns::SERVER),
            ));
            self.phase = Phase::ExpectTls;
            self.header_sent = false;
            self.out
                .push_back(Upcall::StartTls(self.parser.take_unparsed()));
            return;
        }
        if e.ns == ns::SASL {
            return self.handle_sasl(now, &e);
        }
        if StanzaKind::of(&e).is_some() {
            return self.handle_stanza(e);
        }
        self.fail(StreamError::new(StreamCondition::UnsupportedStanzaType))
    }

    fn handle_dialback(&mut self, now: Instant, db: DbElement) {
        if db.answer.is_some() {
            // XEP-0220 §2.2: answers do not come in on an incoming stream (without XEP-0288);
            // one here is unsolicited (§4.1) and must not change anything.
            log::info!("s2s in: ignoring unsolicited dialback answer {db:?}");
            return;
        }
        match db.kind {
            DbKind::Result => self.handle_db_result(now, db),
            DbKind::Verify => self.handle_db_verify(db),
        }
    }

    /// XEP-0220 §2.2.1: we are the Receiving Server.
    fn handle_db_result(&mut self, now: Instant, db: DbElement) {
        let (from, to) = (db.from, db.to);
        let refuse = |s: &mut S2sIn, c| s.send_result(&to, &from, DbType::Error(c));
        if self.tls.is_none() && self.config.policy.require_encryption {
            return refuse(self, StanzaCondition::PolicyViolation);
        }
        if !self.config.hosts(&to) {
            return refuse(self, StanzaCondition::ItemNotFound);
        }
        if let Some(p) = self.pairs.iter().find(|p| p.from == from && p.to == to) {
            if p.valid {
                return self.send_result(&to, &from, DbType::Valid);
            }
            log::debug!("s2s in: dialback for {from} -> {to} already pending");
            return;
        }
        if self.pairs.len() >= self.config.max_domain_pairs {
            return refuse(self, StanzaCondition::ResourceConstraint);
        }
        if self.tls.as_ref().is_some_and(|t| t.covers(&from)) {
            // The certificate already proves the Sender Domain: no need to ask.
            self.pairs.push(Pair {
                from: from.clone(),
                to: to.clone(),
                valid: true,
            });
            self.send_result(&to, &from, DbType::Valid);
            return self.authenticated(now, &from, &to, AuthMethod::DialbackWithCertificate);
        }
        if self.config.policy.require_valid_certificates {
            return refuse(self, StanzaCondition::NotAuthorized);
        }
        let Some(stream_id) = self.stream_id.clone() else {
            // Elements only arrive after our header, which set the id.
            return;
        };
        self.pairs.push(Pair {
            from: from.clone(),
            to: to.clone(),
            valid: false,
        });
        self.out.push_back(Upcall::VerifyDialback {
            from,
            to,
            stream_id,
            key: db.key,
        });
    }

    /// XEP-0220 §2.2.2: we are the Authoritative Server. Allowed on any stream, even before
    /// TLS (XEP-0220 §2.1.2 lets verify-only connections skip TLS); the answer reveals only
    /// whether the key is right.
    fn handle_db_verify(&mut self, db: DbElement) {
        let answer = match &db.id {
            None => DbType::Error(StanzaCondition::BadRequest),
            Some(_) if !self.config.hosts(&db.to) => DbType::Error(StanzaCondition::ItemNotFound),
            Some(id) => {
                // Receiving Server = the asker (`from`), Originating Server = us (`to`).
                if self.config.secret.verify(&db.from, &db.to, id, &db.key) {
                    DbType::Valid
                } else {
                    log::info!(
                        "s2s in: invalid dialback key from {} for {}",
                        db.from,
                        db.to
                    );
                    DbType::Invalid
                }
            }
        };
        self.out.push_back(Upcall::Send(dialback::write(
            DbKind::Verify,
            &db.to,
            &db.from,
            db.id.as_deref(),
            Some(answer),
            None,
        )));
    }

    /// XEP-0178 §2 / RFC 6120 §6.4: SASL EXTERNAL, the only mechanism offered.
    fn handle_sasl(&mut self, now: Instant, e: &Element) {
        let failure = |s: &mut S2sIn, cond: &str| {
            s.out.push_back(Upcall::Send(
                Element::new("failure", ns::SASL)
                    .with_child(Element::new(cond, ns::SASL))
                    .to_bytes(ns::SERVER),
            ));
        };
        match e.name.as_str() {
            "auth" => {}
            "abort" => return failure(self, "aborted"),
            _ => return failure(self, "malformed-request"),
        }
        if e.attr("mechanism") != Some("EXTERNAL") || !self.external_offered() {
            return failure(self, "invalid-mechanism");
        }
        let (Some(peer), Some(local)) = (self.peer.clone(), self.local.clone()) else {
            return failure(self, "invalid-mechanism");
        };
        // XEP-0178 §2: an empty response ("=") means "the identity in my certificate"; an
        // authzid, if given, must be the domain the header claims.
        let text = e.text();
        let text = text.trim();
        if !(text.is_empty() || text == "=") {
            let authzid = crate::base64::decode(text)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| normalize_domain(&s));
            let Some(authzid) = authzid else {
                return failure(self, "incorrect-encoding");
            };
            if authzid != peer {
                return failure(self, "invalid-authzid");
            }
        }
        self.out.push_back(Upcall::Send(
            Element::new("success", ns::SASL).to_bytes(ns::SERVER),
        ));
        self.sasl_done = true;
        if !self.pairs.iter().any(|p| p.from == peer && p.to == local) {
            self.pairs.push(Pair {
                from: peer.clone(),
                to: local.clone(),
                valid: true,
            });
        } else if let Some(p) = self
            .pairs
            .iter_mut()
            .find(|p| p.from == peer && p.to == local)
        {
            p.valid = true;
        }
        self.authenticated(now, &peer, &local, AuthMethod::SaslExternal);
        // RFC 6120 §6.4.6: the stream restarts after success.
        self.parser.restart();
        self.phase = Phase::ExpectHeader;
        self.header_sent = false;
    }

    fn handle_stanza(&mut self, mut e: Element) {
        if !self.has_valid_pair() {
            return self.fail(StreamError::new(StreamCondition::NotAuthorized));
        }
        // RFC 6120 §4.9.3.12: a missing, empty or malformed address is improper addressing.
        let Some(from) = address_domain(&e, "from") else {
            return self.fail(StreamError::with_text(
                StreamCondition::ImproperAddressing,
                "missing or malformed 'from'",
            ));
        };
        if !self.pairs.iter().any(|p| p.valid && p.from == from) {
            log::info!("s2s in: stanza from unauthenticated domain {from}");
            return self.fail(StreamError::new(StreamCondition::InvalidFrom));
        }
        let Some(to) = address_domain(&e, "to") else {
            return self.fail(StreamError::with_text(
                StreamCondition::ImproperAddressing,
                "missing or malformed 'to'",
            ));
        };
        renamespace(&mut e, ns::SERVER, ns::CLIENT);
        if !self.is_authenticated(&from, &to) {
            let condition = if self.config.hosts(&to) {
                StanzaCondition::NotAuthorized
            } else {
                StanzaCondition::ItemNotFound
            };
            self.out.push_back(Upcall::Reject {
                stanza: e,
                condition,
            });
            return;
        }
        self.out.push_back(Upcall::Stanza { element: e });
    }
}

#[cfg(test)]
pub(crate) mod tests;
