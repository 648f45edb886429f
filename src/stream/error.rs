//! Stream errors (RFC 6120 §4.9): the conditions, their rendering, and the one mapping from
//! parser errors to conditions.
//!
//! A stream error is fatal: the server sends `<stream:error>` and `</stream:stream>`, then
//! closes. Stanza errors, which leave the session alive, live in `stanza`.

use crate::xml::{Element, XmlError, ns};

/// RFC 6120 §4.9.3 conditions that Hearth sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCondition {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamCondition {
    pub fn name(self) -> &'static str {
        use StreamCondition::*;
        match self {
            BadFormat => "bad-format",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SystemShutdown => "system-shutdown",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A fatal stream error with an optional human-readable text (for the peer's logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: StreamCondition,
    pub text: Option<String>,
}

impl StreamError {
    pub fn new(condition: StreamCondition) -> StreamError {
        StreamError {
            condition,
            text: None,
        }
    }

    pub fn with_text(condition: StreamCondition, text: &str) -> StreamError {
        StreamError {
            condition,
            text: Some(text.to_owned()),
        }
    }

    /// `<stream:error>…</stream:error></stream:stream>` as bytes (the stream prefix is the one
    /// Hearth declares in its own headers).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::from("<stream:error>");
        Element::new(self.condition.name(), ns::STREAM_ERRORS).write_str(&mut s, ns::STREAM);
        if let Some(t) = &self.text {
            Element::new("text", ns::STREAM_ERRORS)
                .with_text(t)
                .write_str(&mut s, ns::STREAM);
        }
        s.push_str("</stream:error></stream:stream>");
        s.into_bytes()
    }
}

impl From<XmlError> for StreamError {
    fn from(e: XmlError) -> StreamError {
        match e {
            XmlError::NotWellFormed(why) => {
                StreamError::with_text(StreamCondition::NotWellFormed, why)
            }
            XmlError::Restricted(why) => {
                StreamError::with_text(StreamCondition::RestrictedXml, why)
            }
            // RFC 6120 §4.9.3.22: also for input that violates the rules of UTF-8.
            XmlError::BadEncoding => StreamError::new(StreamCondition::UnsupportedEncoding),
            // RFC 6120 §13.12: exceeding a size limit is a policy violation.
            XmlError::LimitExceeded(why) => {
                StreamError::with_text(StreamCondition::PolicyViolation, why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_condition_and_text() {
        let e = StreamError::with_text(StreamCondition::HostUnknown, "no such host");
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such host</text>\
             </stream:error></stream:stream>"
        );
    }
}
