//! Incremental XMPP stream parser. (SKELETON: the xml helper replaces the bodies.)
//!
//! Bytes arrive in arbitrary chunks. A framer first cuts complete frames (the stream header,
//! each top-level element, the stream close) so that xmlparser only ever sees whole input:
//! xmlparser cannot tell `<mess` (truncated) from an element named `mess`.

use super::element::{Attr, Element};

/// Limits applied to untrusted input.
#[derive(Clone, Copy, Debug)]
pub struct XmlLimits {
    /// Largest top-level element (stanza) in bytes, and the most bytes buffered for one frame.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Most attributes (including namespace declarations) on one element.
    pub max_attrs: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attrs: 64,
        }
    }
}

/// The opening `<stream:stream ...>` tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Local name of the root element (must be `stream`).
    pub name: String,
    /// Namespace of the root element (must be `http://etherx.jabber.org/streams`).
    pub ns: String,
    /// The default namespace declared on the header (`jabber:client` / `jabber:server`),
    /// empty if none was declared. Top-level elements without a prefix inherit it.
    pub default_ns: String,
    /// All non-namespace-declaration attributes (`to`, `from`, `version`, `id`, `xml:lang`).
    pub attrs: Vec<Attr>,
}

impl StreamHeader {
    /// The value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.name == name)
            .map(|a| a.value.as_str())
    }
}

/// What the parser found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Open(StreamHeader),
    /// A complete top-level element (a stanza, or a negotiation element like `<auth/>`).
    Element(Element),
    /// `</stream:stream>`.
    Close,
}

/// Why input was refused. `stream::error` maps each to an RFC 6120 stream condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlError {
    /// Syntax error, mismatched tags, duplicate attributes, undefined entity, unbound prefix.
    NotWellFormed(&'static str),
    /// Comment, processing instruction (other than the XML declaration), DTD or entity
    /// declaration: RFC 6120 §11.1.
    Restricted(&'static str),
    /// Bytes that are not UTF-8, or an XML declaration naming another encoding.
    BadEncoding,
    /// A limit from `XmlLimits` was exceeded.
    LimitExceeded(&'static str),
}

/// The incremental parser for one stream direction.
pub struct StreamParser {
    _limits: XmlLimits,
}

impl StreamParser {
    pub fn new(limits: XmlLimits) -> StreamParser {
        StreamParser { _limits: limits }
    }

    /// Appends received bytes. Fails if the buffered unfinished frame would exceed the limit.
    pub fn feed(&mut self, _bytes: &[u8]) -> Result<(), XmlError> {
        todo!("xml helper")
    }

    /// The next complete event, `Ok(None)` if more bytes are needed. After an error the parser
    /// is poisoned: the stream must be closed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        todo!("xml helper")
    }

    /// Stream restart (after SASL success): forget the header and namespace scope, keep any
    /// bytes already buffered (they belong to the new stream).
    pub fn restart(&mut self) {
        todo!("xml helper")
    }

    /// Takes the bytes buffered but not yet consumed (after `<starttls/>` they are TLS), and
    /// restarts as `restart` does.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        todo!("xml helper")
    }

    /// Bytes currently held for an unfinished frame (0 when idle).
    pub fn buffered_len(&self) -> usize {
        0
    }
}
