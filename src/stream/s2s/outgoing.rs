//! One outgoing server-to-server stream from a local domain to a remote domain (RFC 6120
//! §4-§6 as the initiating entity): stream header, STARTTLS, SASL EXTERNAL (XEP-0178) or
//! dialback as Initiating Server (XEP-0220 §2.1.1), the queue of stanzas waiting for the
//! stream to be ready, and dialback verification requests as Receiving Server (§2.1.2).
//!
//! Owns: the parser of one connection, the remote's stream id, the queue (bounded by
//! `S2sConfig::max_queued_stanzas`), pending `<db:verify/>` requests (bounded by
//! `max_pending_verifies`), and the connect, handshake and idle deadlines. Leaves to the
//! server: DNS and candidate retries (`take_queue` moves the queue to a fresh machine), and
//! delivering `Bounce` errors and `VerifyResult`s.
//!
//! Bounce conditions: queue full → `resource-constraint`; connection or negotiation failure →
//! `remote-server-not-found`, timeouts → `remote-server-timeout`; dialback `invalid` →
//! `internal-server-error` and dialback `error` → `remote-server-timeout` (XEP-0220 §2.1.1).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::stanza::StanzaCondition;
use crate::stream::error::StreamCondition;
use crate::xml::{Element, StreamEvent, StreamHeader, StreamParser, ns};

use super::dialback::{self, DbElement, DbKind, DbType};
use super::{AuthMethod, DialbackVerdict, S2sConfig, S2sTlsInfo, renamespace, write_header};

/// What an outgoing stream asks of the server, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Upcall {
    Send(Vec<u8>),
    /// `<starttls/>` was answered with `<proceed/>`: start a TLS client handshake (SNI = the
    /// remote domain) with these already-received bytes, then call `handle_tls_ready`.
    StartTls(Vec<u8>),
    /// Close the connection after flushing; the machine is finished.
    Close,
    /// Authenticated; the queue has been written. Stanzas now go straight out.
    Ready {
        method: AuthMethod,
    },
    /// Return an error for this stanza to its local sender.
    Bounce {
        stanza: Element,
        condition: StanzaCondition,
    },
    /// The Authoritative Server's answer to `request_verify`.
    VerifyResult {
        /// Our domain, which received the `<db:result/>` (the Target Domain).
        receiving: String,
        /// The remote domain the key claimed to come from (the Sender Domain).
        originating: String,
        stream_id: String,
        verdict: DialbackVerdict,
    },
}

/// What the stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutMode {
    /// Authenticate `local → remote` and carry stanzas.
    Normal,
    /// Only carry `<db:verify/>` requests; closes when none is left (XEP-0220 §2.1.2 note).
    VerifyOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for TCP (and, for direct TLS, the handshake).
    Connecting,
    ExpectHeader,
    ExpectFeatures,
    ExpectProceed,
    ExpectTls,
    ExpectSaslResult,
    ExpectDialbackResult,
    /// Authenticated (Normal) or negotiated (VerifyOnly).
    Ready,
    Closed,
}

struct PendingVerify {
    receiving: String,
    stream_id: String,
    key: String,
    sent: bool,
}

/// One outgoing s2s connection.
pub struct S2sOut {
    config: Arc<S2sConfig>,
    local: String,
    remote: String,
    mode: OutMode,
    parser: StreamParser,
    phase: Phase,
    /// The remote's id for the current stream; dialback keys are bound to it.
    stream_id: Option<String>,
    /// The remote's header declared the dialback namespace (XEP-0220 §2.5.1).
    dialback_declared: bool,
    tls: Option<S2sTlsInfo>,
    connected: bool,
    sasl_tried: bool,
    sasl_done: bool,
    /// Dialback elements may be sent (the negotiation reached the authentication step).
    negotiated: bool,
    queue: VecDeque<Element>,
    verifies: Vec<PendingVerify>,
    deadline: Option<Instant>,
    out: VecDeque<Upcall>,
}

impl S2sOut {
    /// A stream `local → remote` (both normalised domains; `local` hosted by us).
    pub fn new(
        now: Instant,
        config: Arc<S2sConfig>,
        local: &str,
        remote: &str,
        mode: OutMode,
    ) -> S2sOut {
        S2sOut {
            parser: StreamParser::new(config.limits),
            local: local.to_owned(),
            remote: remote.to_owned(),
            mode,
            phase: Phase::Connecting,
            stream_id: None,
            dialback_declared: false,
            tls: None,
            connected: false,
            sasl_tried: false,
            sasl_done: false,
            negotiated: false,
            queue: VecDeque::new(),
            verifies: Vec::new(),
            deadline: Some(now + config.connect_timeout),
            out: VecDeque::new(),
            config,
        }
    }

    pub fn poll_upcall(&mut self) -> Option<Upcall> {
        self.out.pop_front()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready && self.mode == OutMode::Normal
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Takes the queued stanzas (to retry on another candidate with a fresh machine).
    pub fn take_queue(&mut self) -> VecDeque<Element> {
        std::mem::take(&mut self.queue)
    }

    /// TCP is up (STARTTLS port): send our header.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.connected = true;
        self.open_stream(now);
    }

    /// TLS is up: after `Upcall::StartTls`, or for direct TLS (XEP-0368) straight after TCP.
    pub fn handle_tls_ready(&mut self, now: Instant, info: S2sTlsInfo) {
        if !matches!(self.phase, Phase::Connecting | Phase::ExpectTls) {
            return;
        }
        self.connected = true;
        let proves_remote = info.covers(&self.remote);
        self.tls = Some(info);
        if self.config.policy.require_valid_certificates && !proves_remote {
            log::info!(
                "s2s out {}: certificate not valid for the domain",
                self.remote
            );
            return self.abort(now, StanzaCondition::RemoteServerNotFound);
        }
        self.parser.restart();
        self.open_stream(now);
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if matches!(
            self.phase,
            Phase::Closed | Phase::Connecting | Phase::ExpectTls
        ) {
            return;
        }
        if let Err(e) = self.parser.feed(bytes) {
            log::info!("s2s out {}: bad XML: {e:?}", self.remote);
            return self.stream_error(now, crate::stream::error::StreamError::from(e).condition);
        }
        if self.phase == Phase::Ready {
            self.deadline = Some(now + self.config.idle_timeout);
        }
        self.pump(now);
    }

    /// The connection is gone (refused, reset, or closed by the peer).
    pub fn handle_disconnect(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        let c = if self.connected {
            StanzaCondition::RemoteServerTimeout
        } else {
            StanzaCondition::RemoteServerNotFound
        };
        self.finish(now, c);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if now >= d && self.phase != Phase::Closed => {}
            _ => return,
        }
        if self.phase == Phase::Ready && self.verifies.is_empty() {
            log::debug!("s2s out {}: idle, closing", self.remote);
        } else {
            log::info!("s2s out {}: timed out in {:?}", self.remote, self.phase);
        }
        self.abort(now, StanzaCondition::RemoteServerTimeout);
    }

    /// Gives up (e.g. no DNS candidate left): bounces the queue and fails pending verifies.
    pub fn fail(&mut self, now: Instant, condition: StanzaCondition) {
        self.abort(now, condition);
    }

    /// Sends `stanza` (in `jabber:client`, as the router has it) once the stream is ready.
    pub fn send_stanza(&mut self, now: Instant, stanza: Element) {
        if self.phase == Phase::Closed || self.mode == OutMode::VerifyOnly {
            return self.bounce(stanza, StanzaCondition::RemoteServerTimeout);
        }
        if self.phase == Phase::Ready {
            self.deadline = Some(now + self.config.idle_timeout);
            return self.write_stanza(stanza);
        }
        if self.queue.len() >= self.config.max_queued_stanzas {
            return self.bounce(stanza, StanzaCondition::ResourceConstraint);
        }
        self.queue.push_back(stanza);
    }

    /// Asks the remote (the Authoritative Server) whether `key`, received by our domain
    /// `receiving` on the incoming stream `stream_id`, is valid. The answer comes as
    /// `Upcall::VerifyResult`.
    pub fn request_verify(&mut self, now: Instant, receiving: &str, stream_id: &str, key: &str) {
        let refuse = |s: &mut S2sOut, c| {
            s.out.push_back(Upcall::VerifyResult {
                receiving: receiving.to_owned(),
                originating: s.remote.clone(),
                stream_id: stream_id.to_owned(),
                verdict: DialbackVerdict::Error(c),
            })
        };
        if self.phase == Phase::Closed {
            return refuse(self, StanzaCondition::RemoteServerTimeout);
        }
        if self.verifies.len() >= self.config.max_pending_verifies {
            return refuse(self, StanzaCondition::ResourceConstraint);
        }
        self.verifies.push(PendingVerify {
            receiving: receiving.to_owned(),
            stream_id: stream_id.to_owned(),
            key: key.to_owned(),
            sent: false,
        });
        if self.negotiated {
            self.flush_verifies();
        }
        if self.phase == Phase::Ready && self.mode == OutMode::Normal {
            self.deadline = Some(now + self.config.idle_timeout);
        }
    }

    fn open_stream(&mut self, now: Instant) {
        let mut bytes = Vec::new();
        write_header(&mut bytes, Some(&self.local), Some(&self.remote), None);
        self.out.push_back(Upcall::Send(bytes));
        self.phase = Phase::ExpectHeader;
        if !self.negotiated {
            self.deadline = Some(now + self.config.handshake_timeout);
        }
    }

    fn pump(&mut self, now: Instant) {
        // Bounded: each turn consumes a frame from a finite buffer or stops.
        loop {
            if matches!(
                self.phase,
                Phase::Closed | Phase::Connecting | Phase::ExpectTls
            ) {
                return;
            }
            let event = match self.parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => {
                    return self
                        .stream_error(now, crate::stream::error::StreamError::from(e).condition);
                }
            };
            match (self.phase, event) {
                (Phase::ExpectHeader, StreamEvent::Open(h)) => self.handle_header(now, &h),
                (_, StreamEvent::Close) => {
                    log::info!("s2s out {}: closed by the remote", self.remote);
                    self.finish(now, StanzaCondition::RemoteServerTimeout);
                }
                (Phase::ExpectHeader, StreamEvent::Element(_)) | (_, StreamEvent::Open(_)) => {
                    return self.stream_error(now, StreamCondition::NotWellFormed);
                }
                (_, StreamEvent::Element(e)) => self.handle_element(now, e),
            }
        }
    }

    fn handle_header(&mut self, now: Instant, h: &StreamHeader) {
        if h.name != "stream" || h.ns != ns::STREAM || h.default_ns != ns::SERVER {
            return self.stream_error(now, StreamCondition::InvalidNamespace);
        }
        // The id is what dialback keys are bound to; a header that comes before a stream
        // error may lack it, so its absence matters only when dialback needs it.
        self.stream_id = h.attr("id").filter(|i| !i.is_empty()).map(str::to_owned);
        self.dialback_declared = h.declares(super::DIALBACK);
        if h.attr("version").is_some_and(|v| v.starts_with("1.")) {
            self.phase = Phase::ExpectFeatures;
            return;
        }
        // RFC 6120 §4.7.5: a pre-1.0 server sends no features; dialback is all there is.
        if self.config.policy.require_encryption {
            log::info!("s2s out {}: pre-1.0 server cannot do TLS", self.remote);
            return self.abort(now, StanzaCondition::RemoteServerNotFound);
        }
        self.authenticate(now);
    }

    fn handle_element(&mut self, now: Instant, e: Element) {
        if e.is("error", ns::STREAM) {
            let cond = e
                .child_elements()
                .find(|c| c.ns == ns::STREAM_ERRORS)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            log::info!("s2s out {}: stream error <{cond}/>", self.remote);
            // RFC 6120 §4.9.1.1: a stream error ends the stream; host-unknown means there is
            // nobody for the domain there.
            let c = if cond == "host-unknown" {
                StanzaCondition::RemoteServerNotFound
            } else {
                StanzaCondition::RemoteServerTimeout
            };
            self.out
                .push_back(Upcall::Send(b"</stream:stream>".to_vec()));
            return self.finish(now, c);
        }
        if let Some(db) = DbElement::parse(&e) {
            return match db {
                Ok(db) => self.handle_dialback(now, db),
                Err(_) => self.stream_error(now, StreamCondition::BadFormat),
            };
        }
        match (self.phase, e.name.as_str(), e.ns.as_ref()) {
            (Phase::ExpectFeatures, "features", ns::STREAM) => self.handle_features(now, &e),
            (Phase::ExpectProceed, "proceed", ns::TLS) => {
                self.phase = Phase::ExpectTls;
                self.out
                    .push_back(Upcall::StartTls(self.parser.take_unparsed()));
            }
            (Phase::ExpectProceed, "failure", ns::TLS) => {
                self.abort(now, StanzaCondition::RemoteServerNotFound)
            }
            (Phase::ExpectSaslResult, "success", ns::SASL) => {
                self.sasl_done = true;
                // RFC 6120 §6.4.6: restart with a fresh header; the features that follow say
                // what else is on offer, then the stream is ready.
                self.parser.restart();
                self.open_stream(now);
            }
            (Phase::ExpectSaslResult, "failure", ns::SASL) => {
                log::info!(
                    "s2s out {}: SASL EXTERNAL refused, trying dialback",
                    self.remote
                );
                self.sasl_tried = true;
                self.authenticate(now);
            }
            _ => {
                log::info!(
                    "s2s out {}: unexpected <{}/> in {:?}",
                    self.remote,
                    e.name,
                    self.phase
                );
                self.stream_error(now, StreamCondition::UnsupportedStanzaType)
            }
        }
    }

    /// RFC 6120 §4.3: one step per features element: TLS first, then authentication.
    fn handle_features(&mut self, now: Instant, f: &Element) {
        if self.tls.is_none() {
            if f.child("starttls", ns::TLS).is_some() {
                self.out.push_back(Upcall::Send(
                    Element::new("starttls", ns::TLS).to_bytes(ns::SERVER),
                ));
                self.phase = Phase::ExpectProceed;
                return;
            }
            if self.config.policy.require_encryption {
                log::info!("s2s out {}: no STARTTLS offered", self.remote);
                return self.abort(now, StanzaCondition::RemoteServerNotFound);
            }
        }
        if self.sasl_done {
            self.negotiated = true;
            self.flush_verifies();
            return self.ready(now, AuthMethod::SaslExternal);
        }
        let external = f.child("mechanisms", ns::SASL).is_some_and(|m| {
            m.child_elements()
                .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL")
        });
        let can_external = external
            && self.mode == OutMode::Normal
            && !self.sasl_tried
            && self.tls.as_ref().is_some_and(|t| t.local_cert_valid);
        if can_external {
            // XEP-0178 §2: the authzid is our domain, base64.
            self.sasl_tried = true;
            self.out.push_back(Upcall::Send(
                Element::new("auth", ns::SASL)
                    .with_attr("mechanism", "EXTERNAL")
                    .with_text(&crate::base64::encode(self.local.as_bytes()))
                    .to_bytes(ns::SERVER),
            ));
            self.phase = Phase::ExpectSaslResult;
            return;
        }
        // Dialback, announced by the XEP-0220 §2.5.2 feature or, traditionally, by the header's
        // xmlns:db (§2.5.1). Tried either way (nothing else is left), but an operator reading
        // the log should know why it is likely to fail.
        if !self.dialback_declared && f.child("dialback", super::DIALBACK_FEATURE).is_none() {
            log::info!(
                "s2s out {}: the remote announces no dialback (no feature, no xmlns:db); \
                 trying it anyway",
                self.remote
            );
        }
        self.authenticate(now);
    }

    /// Reached the authentication step: send pending verifies, then (Normal) our key.
    fn authenticate(&mut self, now: Instant) {
        self.negotiated = true;
        self.flush_verifies();
        if self.mode == OutMode::VerifyOnly {
            self.phase = Phase::Ready;
            self.deadline = Some(now + self.config.handshake_timeout);
            return self.close_if_verify_done(now);
        }
        let Some(id) = self.stream_id.clone() else {
            log::info!(
                "s2s out {}: no stream id to bind a dialback key to",
                self.remote
            );
            return self.stream_error(now, StreamCondition::InvalidXml);
        };
        // XEP-0185: receiving = the remote, originating = us.
        let key = self.config.secret.generate(&self.remote, &self.local, &id);
        self.out.push_back(Upcall::Send(dialback::write(
            DbKind::Result,
            &self.local,
            &self.remote,
            None,
            None,
            Some(&key),
        )));
        self.phase = Phase::ExpectDialbackResult;
    }

    fn handle_dialback(&mut self, now: Instant, db: DbElement) {
        let Some(answer) = db.answer else {
            // A request on our outgoing stream needs XEP-0288; not supported.
            log::info!("s2s out {}: ignoring dialback request", self.remote);
            return;
        };
        match db.kind {
            DbKind::Result => {
                // XEP-0220 §3.1: only an answer to our own request on this stream counts.
                if self.phase != Phase::ExpectDialbackResult
                    || db.from != self.remote
                    || db.to != self.local
                {
                    log::info!("s2s out {}: unsolicited db:result {db:?}", self.remote);
                    return;
                }
                match answer {
                    DbType::Valid => self.ready(now, AuthMethod::Dialback),
                    DbType::Invalid => {
                        log::info!("s2s out {}: our dialback key was refused", self.remote);
                        self.abort(now, StanzaCondition::InternalServerError)
                    }
                    DbType::Error(c) => {
                        log::info!("s2s out {}: dialback error {}", self.remote, c.name());
                        self.abort(now, StanzaCondition::RemoteServerTimeout)
                    }
                }
            }
            DbKind::Verify => {
                let pos = self.verifies.iter().position(|v| {
                    v.sent
                        && db.from == self.remote
                        && db.to == v.receiving
                        && db.id.as_deref() == Some(v.stream_id.as_str())
                });
                let Some(pos) = pos else {
                    log::info!("s2s out {}: unsolicited db:verify {db:?}", self.remote);
                    return;
                };
                let v = self.verifies.remove(pos);
                let verdict = match answer {
                    DbType::Valid => DialbackVerdict::Valid,
                    DbType::Invalid => DialbackVerdict::Invalid,
                    DbType::Error(c) => DialbackVerdict::Error(c),
                };
                self.out.push_back(Upcall::VerifyResult {
                    receiving: v.receiving,
                    originating: self.remote.clone(),
                    stream_id: v.stream_id,
                    verdict,
                });
                self.close_if_verify_done(now);
            }
        }
    }

    fn close_if_verify_done(&mut self, now: Instant) {
        if self.mode == OutMode::VerifyOnly
            && self.phase == Phase::Ready
            && self.verifies.is_empty()
        {
            self.out
                .push_back(Upcall::Send(b"</stream:stream>".to_vec()));
            self.finish(now, StanzaCondition::RemoteServerTimeout);
        }
    }

    fn flush_verifies(&mut self) {
        for v in self.verifies.iter_mut().filter(|v| !v.sent) {
            v.sent = true;
            self.out.push_back(Upcall::Send(dialback::write(
                DbKind::Verify,
                &v.receiving,
                &self.remote,
                Some(&v.stream_id),
                None,
                Some(&v.key),
            )));
        }
    }

    fn ready(&mut self, now: Instant, method: AuthMethod) {
        log::info!(
            "s2s out {} -> {}: ready ({method:?})",
            self.local,
            self.remote
        );
        self.phase = Phase::Ready;
        self.deadline = Some(now + self.config.idle_timeout);
        // Bounded by max_queued_stanzas.
        while let Some(s) = self.queue.pop_front() {
            self.write_stanza(s);
        }
        self.out.push_back(Upcall::Ready { method });
    }

    fn write_stanza(&mut self, mut stanza: Element) {
        renamespace(&mut stanza, ns::CLIENT, ns::SERVER);
        self.out
            .push_back(Upcall::Send(stanza.to_bytes(ns::SERVER)));
    }

    fn bounce(&mut self, stanza: Element, condition: StanzaCondition) {
        self.out.push_back(Upcall::Bounce { stanza, condition });
    }

    /// We end the stream with a stream error (the peer misbehaved).
    fn stream_error(&mut self, now: Instant, condition: StreamCondition) {
        if self.phase == Phase::Closed {
            return;
        }
        let err = crate::stream::error::StreamError::new(condition);
        self.out.push_back(Upcall::Send(err.to_bytes()));
        self.finish(now, StanzaCondition::RemoteServerTimeout);
    }

    /// We give up politely: `</stream:stream>` if the stream is open, then finish.
    fn abort(&mut self, now: Instant, condition: StanzaCondition) {
        if self.phase == Phase::Closed {
            return;
        }
        if !matches!(self.phase, Phase::Connecting | Phase::ExpectTls) {
            self.out
                .push_back(Upcall::Send(b"</stream:stream>".to_vec()));
        }
        self.finish(now, condition);
    }

    /// Bounces what is queued, fails pending verifies, asks for the close.
    fn finish(&mut self, _now: Instant, condition: StanzaCondition) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.deadline = None;
        while let Some(s) = self.queue.pop_front() {
            self.bounce(s, condition);
        }
        for v in std::mem::take(&mut self.verifies) {
            self.out.push_back(Upcall::VerifyResult {
                receiving: v.receiving,
                originating: self.remote.clone(),
                stream_id: v.stream_id,
                verdict: DialbackVerdict::Error(condition),
            });
        }
        self.out.push_back(Upcall::Close);
    }
}

#[cfg(test)]
mod tests;
