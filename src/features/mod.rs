//! Features the server answers itself, one module per XEP or RFC area, and the registry that
//! dispatches IQs to them.
//!
//! Owns: the registry (which handler answers which IQ namespace, and what disco advertises).
//! A feature module exposes `register(&mut Registry)`; adding one means adding a line to
//! `Registry::with_all_features`, nothing else. The router decides *whether* the server
//! answers; the registry decides *who*. Unhandled get/set IQs get `service-unavailable` from
//! the server (RFC 6120 §8.4), never from a feature.

pub mod disco;
pub mod ping;
pub mod version;

use std::time::Instant;

use crate::config::Config;
use crate::jid::Jid;
use crate::stanza::StanzaError;
use crate::xml::Element;

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
    pub now: Instant,
    pub config: &'a Config,
    /// The sender's full JID (stamped by the server).
    pub from: &'a Jid,
    /// The addressee: a domain JID (`IqTo::Host`) or a bare account JID (`IqTo::Account`).
    pub to: &'a Jid,
    pub iq_type: IqType,
    /// The IQ's one child element.
    pub payload: &'a Element,
    /// What disco#info lists for this addressee.
    pub disco: &'a DiscoInfo,
}

/// The answer: the result's payload (`None` for an empty result), or an error.
pub type IqResult = Result<Option<Element>, StanzaError>;

pub type IqHandler = fn(&IqRequest) -> IqResult;

/// Identities and features advertised by disco#info (XEP-0030) for one kind of addressee.
#[derive(Default, Debug)]
pub struct DiscoInfo {
    /// (category, type, name)
    pub identities: Vec<(&'static str, &'static str, &'static str)>,
    pub features: Vec<&'static str>,
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
}

impl Registry {
    /// An empty registry (tests); the server uses `with_all_features`.
    pub fn new() -> Registry {
        Registry {
            routes: Vec::new(),
            host_disco: DiscoInfo::default(),
            account_disco: DiscoInfo::default(),
        }
    }

    /// Every feature Hearth has.
    pub fn with_all_features() -> Registry {
        let mut r = Registry::new();
        disco::register(&mut r);
        ping::register(&mut r);
        version::register(&mut r);
        r
    }

    /// Registers `handler` for IQs of `iq_type` to `to` whose payload is in `ns`.
    ///
    /// Panics if the same route is registered twice: that is a programming error found at
    /// start-up, never caused by input.
    pub fn iq(&mut self, to: IqTo, iq_type: IqType, ns: &'static str, handler: IqHandler) {
        assert!(
            self.find(to, iq_type, ns).is_none(),
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

    fn find(&self, to: IqTo, iq_type: IqType, ns: &str) -> Option<IqHandler> {
        self.routes
            .iter()
            .find(|r| r.to == to && r.iq_type == iq_type && r.ns == ns)
            .map(|r| r.handler)
    }

    /// The handler for an IQ, if any feature answers it.
    pub fn handler(&self, to: IqTo, iq_type: IqType, payload_ns: &str) -> Option<IqHandler> {
        self.find(to, iq_type, payload_ns)
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
        assert!(
            r.handler(IqTo::Host, IqType::Get, crate::xml::ns::PING)
                .is_some()
        );
        assert!(
            r.handler(IqTo::Host, IqType::Set, crate::xml::ns::PING)
                .is_none()
        );
        assert!(r.disco(IqTo::Host).features.contains(&crate::xml::ns::PING));
    }

    #[test]
    #[should_panic(expected = "two handlers")]
    fn duplicate_route_panics_at_startup() {
        let mut r = Registry::new();
        ping::register(&mut r);
        ping::register(&mut r);
    }
}
