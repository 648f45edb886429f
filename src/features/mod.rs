//! Features the server answers itself, one module per XEP or RFC area, and the registry that
//! dispatches to them.
//!
//! Owns: the registry (which handler answers which IQ namespace, which hooks see stanzas on
//! their way, what disco advertises) and the context features act through. A feature module
//! exposes `register(&mut Registry)`; adding one means one line in
//! `Registry::with_all_features`, nothing else. The router decides *where* a stanza goes; the
//! hooks may act on it on the way (Prosody's events, in a fixed order). Unhandled get/set IQs
//! get `service-unavailable` from the server (RFC 6120 §8.4), never from a feature.

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod contact;
pub mod datetime;
pub mod disco;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod time;
pub mod vcard;
pub mod version;

use std::time::Instant;

use crate::config::Config;
use crate::jid::Jid;
use crate::router::{Router, SessionId};
use crate::server::ConnId;
use crate::stanza::{StanzaError, StanzaKind};
use crate::store::Store;
use crate::xml::{Element, ns};

/// What a feature can touch while it handles something.
pub struct Ctx<'a> {
    pub now: Instant,
    /// When the server started (uptime for XEP-0012).
    pub started: Instant,
    pub config: &'a Config,
    pub store: &'a mut dyn Store,
    pub router: &'a mut Router,
    pub out: &'a mut Outbox,
}

/// What features ask the server to send. Processed in order after the feature returns.
#[derive(Default)]
pub struct Outbox {
    pub(crate) items: Vec<OutItem>,
    /// The IQ handler running now wants its answer sent after what it queued (MAM results
    /// precede their `<fin/>`); see `reply_after_sends`.
    pub(crate) reply_last: bool,
}

pub(crate) enum OutItem {
    /// Bytes for one connection, serialized already.
    Send(ConnId, Vec<u8>),
    /// A stanza to route by its `to`, as coming from the server (not from a session): it
    /// passes the inbound hooks of its recipient and is delivered or dropped, never bounced.
    Route(Element),
    /// Ends every stream of an account with `<not-authorized/>` and this text.
    CloseAccount(Jid, &'static str),
}

impl Outbox {
    /// Sends a stanza to one connection.
    pub fn send(&mut self, conn: ConnId, e: &Element) {
        self.items.push(OutItem::Send(conn, e.to_bytes(ns::CLIENT)));
    }

    /// Sends the same stanza to several connections (serialized once).
    pub fn send_all(&mut self, conns: &[ConnId], e: &Element) {
        if conns.is_empty() {
            return;
        }
        let bytes = e.to_bytes(ns::CLIENT);
        for c in conns {
            self.items.push(OutItem::Send(*c, bytes.clone()));
        }
    }

    /// Sends already-serialized bytes (e.g. an offline message from the store).
    pub fn send_bytes(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.items.push(OutItem::Send(conn, bytes));
    }

    /// From an IQ handler: its result or error goes out after what it queued so far (by
    /// default it goes first).
    pub fn reply_after_sends(&mut self) {
        self.reply_last = true;
    }

    /// Routes a stanza as from the server (its `from` is kept as set).
    pub fn route(&mut self, e: Element) {
        self.items.push(OutItem::Route(e));
    }

    /// Closes every session of `account` with a `<not-authorized/>` stream error saying
    /// `why` (e.g. the account was removed), after what was queued before.
    pub fn close_account(&mut self, account: &Jid, why: &'static str) {
        self.items
            .push(OutItem::CloseAccount(account.to_bare(), why));
    }
}

/// Whether later hooks and the default handling still run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The hook dealt with the stanza; nothing else happens to it.
    Stop,
}

/// A stanza a bound session sent, before routing. `from` is already stamped.
pub struct Outbound<'a> {
    pub session: SessionId,
    pub conn: ConnId,
    pub from: &'a Jid,
    /// `None` when the stanza has no `to` (for presence: a broadcast).
    pub to: Option<&'a Jid>,
    pub kind: StanzaKind,
}

/// A stanza about to reach a local account (from a local session, the server or later a
/// remote server), before delivery.
pub struct Inbound<'a> {
    pub from: &'a Jid,
    pub to: &'a Jid,
    pub kind: StanzaKind,
    pub stanza: &'a Element,
    /// The session it came from, if a local one.
    pub from_session: Option<SessionId>,
}

/// A stanza delivered to these connections of `to`'s account.
pub struct Delivered<'a> {
    pub from: &'a Jid,
    pub to: &'a Jid,
    pub kind: StanzaKind,
    pub stanza: &'a Element,
    pub conns: &'a [ConnId],
    /// For a message: those of `conns` whose session is detached (waiting for resumption,
    /// XEP-0198) or whose client said it is inactive (XEP-0352); empty for other stanzas.
    pub idle: &'a [ConnId],
}

pub type OutboundHook = fn(&mut Ctx, &Outbound, &mut Element) -> Flow;
pub type InboundHook = fn(&mut Ctx, &Inbound) -> Flow;
pub type DeliveredHook = fn(&mut Ctx, &Delivered);
pub type SessionHook = fn(&mut Ctx, SessionId);
/// May change a message (`from`, `to`, the stanza) on its way to a local account once the
/// inbound hooks let it through, before delivery or offline storage (MAM adds its stanza-id).
pub type StampHook = fn(&mut Ctx, &Jid, &Jid, &mut Element);

/// Whom an IQ is addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqTo {
    /// A hosted domain (the server itself).
    Host,
    /// An account's bare JID, answered by the server on the account's behalf.
    Account,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
}

/// One IQ request as a handler sees it.
pub struct IqRequest<'a> {
    /// The sender's full JID (stamped by the server).
    pub from: &'a Jid,
    /// The sender's session when it is local.
    pub session: Option<SessionId>,
    /// The addressee: a domain JID (`IqTo::Host`) or a bare account JID (`IqTo::Account`).
    pub to: &'a Jid,
    pub iq_type: IqType,
    /// The IQ's one child element.
    pub payload: &'a Element,
    /// The whole IQ (for its id, when a handler answers later or pushes).
    pub iq: &'a Element,
    /// What disco#info lists for this addressee.
    pub disco: &'a DiscoInfo,
}

impl IqRequest<'_> {
    /// The request comes from the account it is addressed to (its own roster, vCard, ...).
    pub fn from_owner(&self) -> bool {
        self.from.bare_str() == self.to.as_str()
    }
}

/// The answer: the result's payload (`None` for an empty result), or an error.
pub type IqResult = Result<Option<Element>, StanzaError>;

pub type IqHandler = fn(&mut Ctx, &IqRequest) -> IqResult;

/// Identities and features advertised by disco#info (XEP-0030) for one kind of addressee.
#[derive(Default, Debug)]
pub struct DiscoInfo {
    /// (category, type, name)
    pub identities: Vec<(&'static str, &'static str, &'static str)>,
    pub features: Vec<&'static str>,
    /// XEP-0128 extensions (e.g. XEP-0157 contact addresses), built from the config.
    pub extensions: Vec<fn(&Config) -> Option<Element>>,
}

struct Route {
    to: IqTo,
    iq_type: IqType,
    ns: &'static str,
    handler: IqHandler,
}

/// Built once at start-up; owned by the server.
pub struct Registry {
    routes: Vec<Route>,
    host_disco: DiscoInfo,
    account_disco: DiscoInfo,
    /// Run in registration order on every stanza a bound session sends.
    pub outbound: Vec<OutboundHook>,
    /// Run in order before a stanza reaches a local account.
    pub inbound: Vec<InboundHook>,
    /// Run after a stanza was delivered to local sessions.
    pub delivered: Vec<DeliveredHook>,
    /// Run in order on a message for an existing local account after the inbound hooks.
    pub stamp: Vec<StampHook>,
    /// Run when a stanza for an existing local account reaches no session.
    pub undeliverable: Vec<InboundHook>,
    /// Run when a session sends its initial presence (becomes available).
    pub available: Vec<SessionHook>,
    /// Run when a session ends, before it leaves the router.
    pub session_end: Vec<SessionHook>,
    /// Run when a session's client comes back: resumed (XEP-0198) or active (XEP-0352).
    pub awake: Vec<SessionHook>,
    /// Extra stream features offered once a client is authenticated (XEP-0115 caps, ...).
    pub stream_features: Vec<fn(&Registry, &Config) -> Option<Element>>,
}

impl Registry {
    /// An empty registry (tests); the server uses `with_all_features`.
    pub fn new() -> Registry {
        Registry {
            routes: Vec::new(),
            host_disco: DiscoInfo::default(),
            account_disco: DiscoInfo::default(),
            outbound: Vec::new(),
            inbound: Vec::new(),
            delivered: Vec::new(),
            stamp: Vec::new(),
            undeliverable: Vec::new(),
            available: Vec::new(),
            session_end: Vec::new(),
            awake: Vec::new(),
            stream_features: Vec::new(),
        }
    }

    /// Every feature Hearth has. The order is the order hooks run in.
    pub fn with_all_features() -> Registry {
        let mut r = Registry::new();
        disco::register(&mut r);
        ping::register(&mut r);
        version::register(&mut r);
        time::register(&mut r);
        contact::register(&mut r);
        private::register(&mut r);
        // Before presence: their outbound hooks must see presence broadcasts, which
        // presence's hook stops (vcard adds the photo hash, last keeps the status).
        vcard::register(&mut r);
        last::register(&mut r);
        roster::register(&mut r);
        // Before presence: blocking refuses and drops presence that presence would consume,
        // and offline sees a raised priority before presence stores it.
        blocking::register(&mut r);
        // Before offline: its undeliverable hook sees the messages offline storage keeps
        // (and stops); after blocking, so a refused message rings nothing.
        push::register(&mut r);
        offline::register(&mut r);
        carbons::register(&mut r);
        // After blocking (a refused message is not archived) and carbons.
        mam::register(&mut r);
        presence::register(&mut r);
        register::register(&mut r);
        caps::register(&mut r);
        // Last: its inbound hook only watches presence the others let through.
        pep::register(&mut r);
        r
    }

    /// Registers `handler` for IQs of `iq_type` to `to` whose payload is in `ns`.
    ///
    /// Panics if the same route is registered twice: that is a programming error found at
    /// start-up, never caused by input.
    pub fn iq(&mut self, to: IqTo, iq_type: IqType, ns: &'static str, handler: IqHandler) {
        assert!(
            self.handler(to, iq_type, ns).is_none(),
            "two handlers for {to:?} {iq_type:?} {ns}"
        );
        self.routes.push(Route {
            to,
            iq_type,
            ns,
            handler,
        });
    }

    /// Advertises a disco#info feature for the server and/or accounts.
    pub fn feature(&mut self, to: &[IqTo], var: &'static str) {
        for t in to {
            let d = self.disco_mut(*t);
            if !d.features.contains(&var) {
                d.features.push(var);
            }
        }
    }

    /// Advertises a disco#info identity.
    pub fn identity(
        &mut self,
        to: IqTo,
        category: &'static str,
        kind: &'static str,
        name: &'static str,
    ) {
        self.disco_mut(to).identities.push((category, kind, name));
    }

    /// Adds a XEP-0128 extension form to the server's disco#info.
    pub fn disco_extension(&mut self, make: fn(&Config) -> Option<Element>) {
        self.host_disco.extensions.push(make);
    }

    pub fn disco(&self, to: IqTo) -> &DiscoInfo {
        match to {
            IqTo::Host => &self.host_disco,
            IqTo::Account => &self.account_disco,
        }
    }

    fn disco_mut(&mut self, to: IqTo) -> &mut DiscoInfo {
        match to {
            IqTo::Host => &mut self.host_disco,
            IqTo::Account => &mut self.account_disco,
        }
    }

    /// The handler for an IQ, if any feature answers it.
    pub fn handler(&self, to: IqTo, iq_type: IqType, payload_ns: &str) -> Option<IqHandler> {
        self.routes
            .iter()
            .find(|r| r.to == to && r.iq_type == iq_type && r.ns == payload_ns)
            .map(|r| r.handler)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::with_all_features()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_features_register_without_duplicates() {
        let r = Registry::with_all_features();
        assert!(r.handler(IqTo::Host, IqType::Get, ns::PING).is_some());
        assert!(r.handler(IqTo::Host, IqType::Set, ns::PING).is_none());
        assert!(r.disco(IqTo::Host).features.contains(&ns::PING));
    }

    #[test]
    #[should_panic(expected = "two handlers")]
    fn duplicate_route_panics_at_startup() {
        let mut r = Registry::new();
        ping::register(&mut r);
        ping::register(&mut r);
    }
}
