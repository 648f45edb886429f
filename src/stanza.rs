//! Stanza-level view of elements: the kind and addressing of a stanza, and stanza errors
//! (RFC 6120 §8.3), which answer one stanza and leave the session alive.
//!
//! Owns: `StanzaKind`, `StanzaError`, and `error_reply`, the one way any module builds an
//! error answer. Leaves routing to `router` and payload meaning to `features`.

use crate::jid::Jid;
use crate::xml::{Element, ns};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    /// The kind of a top-level element in a client or server stream, if it is a stanza.
    pub fn of(e: &Element) -> Option<StanzaKind> {
        if e.ns != ns::CLIENT && e.ns != ns::SERVER {
            return None;
        }
        match e.name.as_str() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }
}

/// Error types of RFC 6120 §8.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// Defined conditions of RFC 6120 §8.3.3 that Hearth sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaCondition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl StanzaCondition {
    pub fn name(self) -> &'static str {
        use StanzaCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// Every condition, for reading a peer's errors.
    pub const ALL: [StanzaCondition; 19] = {
        use StanzaCondition::*;
        [
            BadRequest,
            Conflict,
            FeatureNotImplemented,
            Forbidden,
            InternalServerError,
            ItemNotFound,
            JidMalformed,
            NotAcceptable,
            NotAllowed,
            NotAuthorized,
            PolicyViolation,
            RecipientUnavailable,
            RemoteServerNotFound,
            RemoteServerTimeout,
            ResourceConstraint,
            ServiceUnavailable,
            SubscriptionRequired,
            UndefinedCondition,
            UnexpectedRequest,
        ]
    };

    /// The condition with this element name, if it is one Hearth knows.
    pub fn from_name(name: &str) -> Option<StanzaCondition> {
        StanzaCondition::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for each condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation => ErrorType::Modify,
            Forbidden | NotAuthorized | SubscriptionRequired => ErrorType::Auth,
            InternalServerError | ResourceConstraint | RecipientUnavailable
            | RemoteServerTimeout => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error to send back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub condition: StanzaCondition,
    pub error_type: ErrorType,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.2), e.g. XEP-0060's
    /// `<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(condition: StanzaCondition) -> StanzaError {
        StanzaError {
            condition,
            error_type: condition.default_type(),
            text: None,
            app: None,
        }
    }

    pub fn with_text(condition: StanzaCondition, text: &str) -> StanzaError {
        StanzaError {
            text: Some(text.to_owned()),
            ..StanzaError::new(condition)
        }
    }

    /// Adds an application-specific condition element.
    pub fn with_app(mut self, app: Element) -> StanzaError {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error/>` child element.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::CLIENT)
            .with_attr("type", self.error_type.name())
            .with_child(Element::new(self.condition.name(), ns::STANZA_ERRORS));
        if let Some(t) = &self.text {
            e.push_child(Element::new("text", ns::STANZA_ERRORS).with_text(t));
        }
        if let Some(app) = &self.app {
            e.push_child((**app).clone());
        }
        e
    }
}

/// True if this stanza must never be answered with an error (RFC 6120 §8.3.1: an error is
/// never answered with an error; IQ results are not answered either).
pub fn is_unanswerable(e: &Element) -> bool {
    matches!(e.attr("type"), Some("error") | Some("result")) && e.name == "iq"
        || e.attr("type") == Some("error")
}

/// Builds the error reply to `stanza`: same name and id, `to`/`from` swapped, `type='error'`.
/// `from_default` is used when the original had no `to` (it was addressed to the server or to
/// the sender's own account). Returns `None` for stanzas that must not be answered.
pub fn error_reply(stanza: &Element, err: &StanzaError, from_default: &str) -> Option<Element> {
    if is_unanswerable(stanza) {
        return None;
    }
    let mut reply = Element::new(&stanza.name, ns::CLIENT).with_attr("type", "error");
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    reply.set_attr("from", stanza.attr("to").unwrap_or(from_default));
    reply.push_child(err.to_element());
    Some(reply)
}

/// Builds an empty IQ result to `iq` (same id, `to`/`from` swapped).
pub fn iq_result(iq: &Element, from_default: &str) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    reply.set_attr("from", iq.attr("to").unwrap_or(from_default));
    reply
}

/// Parses the `to` attribute; `Ok(None)` when absent, `Err` when present but malformed.
pub fn parse_to(e: &Element) -> Result<Option<Jid>, StanzaError> {
    match e.attr("to") {
        None => Ok(None),
        Some(s) => Jid::parse(s)
            .map(Some)
            .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "1")
            .with_attr("from", "a@b/c")
            .with_attr("to", "b");
        let r = error_reply(
            &iq,
            &StanzaError::new(StanzaCondition::ServiceUnavailable),
            "b",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(r.to_bytes(ns::CLIENT)).unwrap(),
            "<iq type='error' id='1' to='a@b/c' from='b'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
    }

    #[test]
    fn condition_names_round_trip() {
        for c in StanzaCondition::ALL {
            assert_eq!(StanzaCondition::from_name(c.name()), Some(c));
        }
        assert_eq!(StanzaCondition::from_name("no-such-condition"), None);
    }

    #[test]
    fn error_is_never_answered() {
        let m = Element::new("message", ns::CLIENT).with_attr("type", "error");
        assert!(error_reply(&m, &StanzaError::new(StanzaCondition::BadRequest), "x").is_none());
        let r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert!(error_reply(&r, &StanzaError::new(StanzaCondition::BadRequest), "x").is_none());
    }
}
