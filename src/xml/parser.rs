//! Incremental XMPP stream parser: bytes in, stream events out.
//!
//! Bytes arrive in arbitrary chunks. A framer (`xml::framer`) first cuts complete frames (the
//! stream header, each top-level element, the stream close) so that xmlparser only ever sees
//! whole input: xmlparser cannot tell `<mess` (truncated) from an element named `mess`. Each
//! frame is then tokenized and namespace-resolved (`xml::tree`).
//!
//! Owns: the event sequence of one stream direction (declaration, header, elements, close),
//! poisoning after an error, stream restarts and handing over the bytes after `<starttls/>`.
//! Leaves to others: what the header and elements mean (`stream`, `stanza`) and which stream
//! error an `XmlError` becomes (`stream::error`).

use std::borrow::Cow;

use super::element::{Attr, Element};
use super::framer::{FrameKind, Framer};
use super::tree::{self, Scope};

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
    /// The header's prefixed namespace declarations, (prefix, namespace) in document order
    /// (e.g. `("db", "jabber:server:dialback")`, which advertises traditional dialback,
    /// XEP-0220 §2.5.1).
    pub declared: Vec<(String, String)>,
}

impl StreamHeader {
    /// Whether the header binds some prefix to `uri`.
    pub fn declares(&self, uri: &str) -> bool {
        self.declared.iter().any(|(_, u)| u == uri)
    }

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
///
/// Use: `feed` each chunk read from the socket, then call `next_event` until it returns
/// `Ok(None)`. After an event that changes what the following bytes are (`<starttls/>`, SASL
/// success) stop calling `next_event` and call `take_unparsed` or `restart`: bytes already
/// buffered are not scanned until then. Bytes beyond a complete, untaken frame are bounded by
/// twice `max_stanza_bytes`.
pub struct StreamParser {
    limits: XmlLimits,
    framer: Framer,
    /// Namespace bindings of the stream header.
    scope: Scope,
    /// The header's raw qualified name (prefix, local), once seen; its end tag closes.
    /// Shared constants for the usual `stream:stream`, so an idle stream holds no copy.
    root: Option<(Cow<'static, str>, Cow<'static, str>)>,
    /// A self-closed header was returned; `Close` comes next.
    close_next: bool,
    closed: bool,
    error: Option<XmlError>,
}

impl StreamParser {
    pub fn new(limits: XmlLimits) -> StreamParser {
        StreamParser {
            limits,
            framer: Framer::new(limits.max_stanza_bytes, limits.max_depth),
            scope: Scope::default(),
            root: None,
            close_next: false,
            closed: false,
            error: None,
        }
    }

    /// Appends received bytes. Fails if the buffered unfinished frame would exceed the limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.closed {
            return Ok(());
        }
        let result = self.framer.push(bytes);
        if let Err(e) = &result {
            self.poison(e.clone());
        }
        result
    }

    /// The next complete event, `Ok(None)` if more bytes are needed. After an error the parser
    /// is poisoned: the stream must be closed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.closed {
            return Ok(None);
        }
        if self.close_next {
            self.close_next = false;
            self.finish();
            return Ok(Some(StreamEvent::Close));
        }
        let result = self.next_frame_event();
        match &result {
            Err(e) => self.poison(e.clone()),
            Ok(Some(StreamEvent::Close)) => self.finish(),
            Ok(_) => self.framer.release_if_idle(),
        }
        result
    }

    /// Stream restart (after SASL success): forget the header and namespace scope, keep any
    /// bytes already buffered (they belong to the new stream).
    pub fn restart(&mut self) {
        self.scope.clear();
        self.root = None;
        self.close_next = false;
        self.closed = false;
        self.framer.restart();
    }

    /// Takes the bytes buffered but not yet consumed (after `<starttls/>` they are TLS), and
    /// restarts as `restart` does.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        let rest = self.framer.take_unparsed();
        self.restart();
        rest
    }

    /// Bytes currently held for an unfinished frame (0 when idle).
    pub fn buffered_len(&self) -> usize {
        self.framer.buffered_len()
    }

    /// Whether the stream close has been returned (further input is ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn poison(&mut self, e: XmlError) {
        log::debug!("xml: refusing input: {e:?}");
        self.error = Some(e);
        self.framer.clear();
    }

    fn finish(&mut self) {
        self.closed = true;
        self.framer.clear();
    }

    fn next_frame_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        // At most an XML declaration and then one other frame: the framer refuses a second
        // declaration, so two passes always end in a return.
        for _ in 0..2 {
            let Some(frame) = self.framer.next_frame()? else {
                return Ok(None);
            };
            // The framer validated these bytes; this is the safe conversion.
            let text = std::str::from_utf8(self.framer.bytes(&frame))
                .map_err(|_| XmlError::BadEncoding)?;
            match frame.kind {
                FrameKind::Decl => tree::check_declaration(text)?,
                FrameKind::Header | FrameKind::HeaderEmpty => {
                    self.scope.clear();
                    let parsed = tree::parse_header(text, &mut self.scope, self.limits.max_attrs)?;
                    self.root = Some((parsed.prefix, parsed.local));
                    self.close_next = frame.kind == FrameKind::HeaderEmpty;
                    return Ok(Some(StreamEvent::Open(parsed.header)));
                }
                FrameKind::Element => {
                    let element = tree::parse_element(
                        text,
                        &mut self.scope,
                        self.limits.max_attrs,
                        self.limits.max_depth,
                    )?;
                    return Ok(Some(StreamEvent::Element(element)));
                }
                FrameKind::Close => {
                    let (prefix, local) = tree::parse_close(text)?;
                    return match &self.root {
                        Some((p, l)) if p == prefix && l == local => Ok(Some(StreamEvent::Close)),
                        _ => Err(XmlError::NotWellFormed("end tag does not match the stream")),
                    };
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
