//! Server-to-server streams (RFC 6120 §4-§6, XEP-0220 Server Dialback, XEP-0185 keys,
//! XEP-0178 SASL EXTERNAL), sans-IO: bytes and time in, `Upcall`s and a deadline out.
//!
//! Owns: the negotiation of one incoming stream ([`S2sIn`]) and one outgoing stream
//! ([`S2sOut`]), dialback keys ([`DialbackSecret`]), which domain pairs a stream has
//! authenticated, the outgoing queue and its bound, and the timeouts. Leaves to others: sockets,
//! TLS and the X.509 / RFC 6125 checks (`net`, which reports them in [`S2sTlsInfo`]), DNS
//! (`dns::srv`), choosing or reusing connections and routing (`server`, `router`).
//!
//! # Wiring (what the server and the driver are expected to do)
//!
//! `server::federation` does this; the notes stay as the machines' contract.
//!
//! One [`S2sConfig`] is built at startup and shared (`Arc`) by every s2s machine. Its secret
//! comes from 32 random bytes; keys need only verify within this process's life.
//!
//! Incoming (a connection accepted on the s2s listener):
//! - `S2sIn::new(now, config, direct_tls)`; feed `handle_bytes`, `handle_tls_ready`,
//!   `handle_timeout` (at `deadline()`), and take upcalls with `poll_upcall()` after each call.
//! - [`incoming::Upcall::Send`] / `Close`: as for c2s. `StartTls(buffered)`: start a TLS
//!   *server* handshake (ask for, but do not require, a client certificate), then call
//!   `handle_tls_ready` with the names the peer's certificate is valid for.
//! - `VerifyDialback { from, to, stream_id, key }`: we are the Receiving Server. Send
//!   `<db:verify from=to to=from id=stream_id>key</db:verify>` to the Authoritative Server for
//!   `from` — through [`S2sOut::request_verify`] on an outgoing stream `to → from` (existing or
//!   new, possibly `OutMode::VerifyOnly`) — and report the answer with
//!   `S2sIn::dialback_verified(now, from, to, verdict)` on *this* connection. If the connection
//!   is gone by then, drop the answer (XEP-0220 §2.1.2).
//! - `Authenticated { from, to, method }`: the pair is now usable; for logs and metrics.
//! - `Stanza { element }`: an authenticated stanza, namespace already rewritten to
//!   `jabber:client` like c2s stanzas, `from`/`to` checked. Route it.
//! - `Reject { stanza, condition }`: answer `stanza` with this stanza error, sent back over an
//!   outgoing stream (s2s streams are one-way), or drop it if it cannot be answered.
//!
//! Outgoing (the router has a stanza for a remote domain with no ready stream):
//! - `S2sOut::new(now, config, local, remote, mode)`; resolve with `dns::srv`; after TCP
//!   connects call `handle_connected` (STARTTLS on 5269) or, for XEP-0368 direct TLS, do the
//!   TLS client handshake first and call `handle_tls_ready`. If a candidate fails before the
//!   stream is ready, the server may create a new machine and move the queue over with
//!   `take_queue`; when it gives up, `fail(now, condition)` bounces everything queued.
//! - `send_stanza(element)` queues (bounded, [`S2sConfig::max_queued_stanzas`]) until ready,
//!   then writes directly.
//! - [`outgoing::Upcall::StartTls`]: start a TLS *client* handshake with SNI = the remote
//!   domain and our certificate for the local domain; then `handle_tls_ready` with what the
//!   remote's certificate is valid for and whether we presented a certificate valid for
//!   `local` (`local_cert_valid`, which enables SASL EXTERNAL).
//! - `Ready { method }`: queued stanzas have been written; further ones go straight out.
//! - `Bounce { stanza, condition }`: return an error to the local sender.
//! - `VerifyResult { from, to, stream_id, verdict }`: the answer to `request_verify`; hand it to
//!   the incoming connection that asked (see above).
//! - `Closed`: the stream is over; forget the machine after sending what is queued.
//!
//! Stanzas: the router speaks `jabber:client`; these machines rewrite the stanza namespace at
//! the boundary (incoming `jabber:server` → `jabber:client`, outgoing the reverse).

pub mod dialback;
pub mod incoming;
pub mod outgoing;
#[cfg(test)]
mod pair_tests;

use std::time::Duration;

pub use dialback::DialbackSecret;
pub use incoming::S2sIn;
pub use outgoing::{OutMode, S2sOut};

use crate::jid::Jid;
use crate::xml::element::escape_attr;
use crate::xml::{Element, Node, XmlLimits, ns};

/// XEP-0220: the dialback namespace (elements `<db:result/>`, `<db:verify/>`).
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.5.2: the stream feature announcing dialback with error handling.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// What this server demands of peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2sPolicy {
    /// TLS before authentication: incoming streams get `<required/>` on STARTTLS and refuse
    /// dialback before TLS; outgoing streams give up on peers that do not offer STARTTLS.
    pub require_encryption: bool,
    /// Peers must present a certificate valid for their domain: incoming dialback is accepted
    /// only for domains the certificate covers; outgoing streams give up on remotes whose
    /// certificate is not valid for the remote domain.
    pub require_valid_certificates: bool,
}

impl Default for S2sPolicy {
    fn default() -> Self {
        S2sPolicy {
            require_encryption: true,
            require_valid_certificates: false,
        }
    }
}

/// What the driver learnt from a TLS handshake on an s2s connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S2sTlsInfo {
    /// The DNS names of the peer's certificate when its chain validated (lowercase, wildcards
    /// kept as `*.example.org` and matched per RFC 6125 here; empty when no certificate or an
    /// invalid one).
    pub peer_cert_valid_for: Vec<String>,
    /// Outgoing only: we presented a certificate the remote should accept for our local
    /// domain, so SASL EXTERNAL is worth trying (XEP-0178).
    pub local_cert_valid: bool,
}

impl S2sTlsInfo {
    fn covers(&self, domain: &str) -> bool {
        self.peer_cert_valid_for
            .iter()
            .any(|d| cert_name_matches(d, domain))
    }
}

/// RFC 6125 §6.4: does a certificate's DNS name (lowercase, maybe `*.example.org`) cover
/// `domain`? A wildcard stands for exactly one whole left-most label.
pub fn cert_name_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => {
            if rest.contains('*') || !rest.contains('.') {
                // `*.org`-like patterns are too wide to honour.
                return false;
            }
            domain
                .split_once('.')
                .is_some_and(|(label, tail)| !label.is_empty() && tail == rest)
        }
        None => !pattern.contains('*') && pattern == domain,
    }
}

/// How a domain pair was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// XEP-0178 SASL EXTERNAL with the peer's certificate.
    SaslExternal,
    /// XEP-0220 dialback, verified with the Authoritative Server.
    Dialback,
    /// A dialback request for a domain the peer's certificate already proves (the key is not
    /// checked: the certificate is the stronger proof).
    DialbackWithCertificate,
}

/// The answer to a dialback verification (XEP-0220 §2.1.2, §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialbackVerdict {
    Valid,
    Invalid,
    /// Verification could not be done; the condition goes to the Initiating Server (e.g.
    /// `remote-server-not-found` when the Authoritative Server cannot be reached).
    Error(crate::stanza::StanzaCondition),
}

/// Settings shared by every s2s machine.
#[derive(Clone, Debug)]
pub struct S2sConfig {
    /// Domains we host (normalised), as in `Config::domains`.
    pub hosts: Vec<String>,
    pub policy: S2sPolicy,
    pub secret: DialbackSecret,
    pub limits: XmlLimits,
    /// From `S2sOut::new` until TCP (and direct TLS) is up.
    pub connect_timeout: Duration,
    /// From the connection until the first domain pair is authenticated (both directions).
    pub handshake_timeout: Duration,
    /// A ready stream with no traffic in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Stanzas an outgoing stream holds before it is ready; more are bounced with
    /// `resource-constraint`.
    pub max_queued_stanzas: usize,
    /// Domain pairs one incoming stream may authenticate or have pending (XEP-0220 §3
    /// multiplexing); more get the dialback error `resource-constraint`.
    pub max_domain_pairs: usize,
    /// Outstanding `<db:verify/>` requests on one outgoing stream; more are answered at once
    /// with `resource-constraint`.
    pub max_pending_verifies: usize,
}

impl S2sConfig {
    /// Defaults sized for a small server.
    pub fn new(hosts: Vec<String>, secret: DialbackSecret) -> S2sConfig {
        S2sConfig {
            hosts,
            policy: S2sPolicy::default(),
            secret,
            limits: XmlLimits::default(),
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            max_queued_stanzas: 128,
            max_domain_pairs: 32,
            max_pending_verifies: 32,
        }
    }

    pub fn hosts(&self, domain: &str) -> bool {
        self.hosts.iter().any(|h| h == domain)
    }
}

/// A domain as a JID domainpart, normalised; `None` if it is not one (or carries a local part
/// or resource, which a server address never does).
fn normalize_domain(s: &str) -> Option<String> {
    let j = Jid::parse(s).ok()?;
    (j.local().is_none() && j.resource().is_none()).then(|| j.domain().to_owned())
}

/// The domain of a stanza address, `None` if absent or malformed.
fn address_domain(e: &Element, attr: &str) -> Option<String> {
    Jid::parse(e.attr(attr)?)
        .ok()
        .map(|j| j.domain().to_owned())
}

/// Our stream header for a `jabber:server` stream, declaring `db` (XEP-0220 §2.5.1: the
/// declaration itself advertises traditional dialback).
fn write_header(out: &mut Vec<u8>, from: Option<&str>, to: Option<&str>, id: Option<&str>) {
    let mut s = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'",
    );
    for (name, value) in [("from", from), ("to", to), ("id", id)] {
        if let Some(v) = value {
            s.push(' ');
            s.push_str(name);
            s.push_str("='");
            escape_attr(v, &mut s);
            s.push('\'');
        }
    }
    s.push_str(" version='1.0'>");
    out.extend_from_slice(s.as_bytes());
}

/// A fresh stream id: 12 random bytes in hex (RFC 6120 §4.7.3 wants it unpredictable; dialback
/// keys are bound to it).
fn new_stream_id(random: &mut dyn crate::server::RandomSource) -> String {
    let mut id = [0u8; 12];
    random.fill(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves `e` and its descendants from namespace `from` to `to` (the stanza namespaces differ
/// between c2s and s2s; payload namespaces are untouched). Iterative so that depth costs no
/// stack; the parser already bounds depth.
fn renamespace(e: &mut Element, from: &str, to: &'static str) {
    let mut stack: Vec<&mut Element> = vec![e];
    while let Some(el) = stack.pop() {
        if el.ns == from {
            el.ns = std::borrow::Cow::Borrowed(to);
        }
        for n in el.children.iter_mut() {
            if let Node::Element(c) = n {
                stack.push(c);
            }
        }
    }
}

/// `<stream:features>` with `children`, as bytes.
fn write_features(out: &mut Vec<u8>, children: &[Element]) {
    out.extend_from_slice(b"<stream:features>");
    for c in children {
        c.write_to(out, ns::STREAM);
    }
    out.extend_from_slice(b"</stream:features>");
}

fn dialback_feature() -> Element {
    Element::new("dialback", DIALBACK_FEATURE).with_child(Element::new("errors", DIALBACK_FEATURE))
}
