//! Turns one complete frame (cut by `xml::framer`) into a header, an element tree, a close
//! or a checked XML declaration, using xmlparser for the tokens.
//!
//! Owns: namespace resolution (XML Namespaces 1.0) with a scope stack seeded by the stream
//! header, attribute checks (duplicates, count), entity and character reference decoding
//! (only the five predefined entities exist: RFC 6120 §11.1), and XML 1.0 §2.11/§3.3.3
//! line-end and attribute-value normalization.
//! Leaves to others: finding frame boundaries and byte-level limits (`xml::framer`).

use std::borrow::Cow;

use xmlparser::{ElementEnd, StrSpan, Token, Tokenizer};

use super::element::{Attr, Element, Node};
use super::ns;
use super::parser::{StreamHeader, XmlError};

const SYNTAX: XmlError = XmlError::NotWellFormed("syntax error");

/// One in-scope namespace binding; `prefix` is empty for the default namespace.
///
/// The stream header's bindings live as long as the connection, so the usual spellings are
/// kept as shared constants rather than a heap string per connection (see `shared`).
struct Binding {
    prefix: Cow<'static, str>,
    uri: Cow<'static, str>,
}

/// `s` as a borrowed constant when it is one of the names every stream header declares or a
/// namespace most stanzas declare, else as the owned string: saves an idle connection its
/// header's small allocations, and a stanza's elements their copies of the namespace.
pub(crate) fn shared(s: String) -> Cow<'static, str> {
    const COMMON: [&str; 16] = [
        "",
        "stream",
        ns::STREAM,
        ns::CLIENT,
        ns::SERVER,
        ns::STANZA_ERRORS,
        ns::PING,
        ns::DISCO_INFO,
        ns::ROSTER,
        "urn:xmpp:receipts",
        "http://jabber.org/protocol/chatstates",
        "urn:xmpp:sid:0",
        "urn:xmpp:hints",
        "urn:xmpp:chat-markers:0",
        "urn:xmpp:sm:3",
        "eu.siacs.conversations.axolotl",
    ];
    match COMMON.iter().find(|c| **c == s) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(s),
    }
}

/// In-scope namespace bindings, innermost last. The stream header's bindings stay at the
/// bottom for the whole stream; each element's are popped when it closes.
#[derive(Default)]
pub(crate) struct Scope {
    bindings: Vec<Binding>,
}

impl Scope {
    /// The URI bound to `prefix` (empty prefix: the default namespace, "" if none).
    fn resolve(&self, prefix: &str) -> Option<&str> {
        self.resolve_shared(prefix).map(|uri| uri.as_ref())
    }

    /// As `resolve`, with the binding's own string: cloning it copies no bytes when the URI
    /// is one of the shared constants.
    fn resolve_shared(&self, prefix: &str) -> Option<&Cow<'static, str>> {
        const XML: Cow<'static, str> = Cow::Borrowed(ns::XML);
        const NONE: Cow<'static, str> = Cow::Borrowed("");
        if prefix == "xml" {
            return Some(&XML);
        }
        // Lengths first: most lookups are for the default namespace (empty prefix), and a
        // call to `memcmp` per binding showed up in profiles.
        let found =
            self.bindings.iter().rev().find(|b| {
                b.prefix.len() == prefix.len() && (prefix.is_empty() || b.prefix == prefix)
            });
        match found {
            Some(b) => Some(&b.uri),
            None if prefix.is_empty() => Some(&NONE),
            None => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bindings.len()
    }

    fn truncate(&mut self, len: usize) {
        self.bindings.truncate(len);
    }

    /// Heap bytes the scope holds beyond its bindings' own slots: spare capacity and owned
    /// (not shared) names. Zero for an idle stream with a usual header.
    #[cfg(test)]
    pub(crate) fn heap_overhead(&self) -> usize {
        let spare = self.bindings.capacity() - self.bindings.len();
        let owned = |c: &Cow<'static, str>| match c {
            Cow::Borrowed(_) => 0,
            Cow::Owned(s) => s.capacity(),
        };
        spare * std::mem::size_of::<Binding>()
            + self
                .bindings
                .iter()
                .map(|b| owned(&b.prefix) + owned(&b.uri))
                .sum::<usize>()
    }

    /// Gives back the room an element's declarations took once only the header's bindings
    /// remain, so an idle connection keeps exactly those (a shrink in place, no copy).
    fn release_spare(&mut self) {
        if self.bindings.capacity() > self.bindings.len() {
            self.bindings.shrink_to_fit();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.bindings = Vec::new();
    }
}

/// An attribute as tokenized, before namespace resolution.
struct RawAttr<'a> {
    prefix: &'a str,
    local: &'a str,
    /// The raw qualified name, for duplicate checks.
    qname: &'a str,
    value: &'a str,
}

/// An element start as tokenized.
struct RawStart<'a> {
    prefix: &'a str,
    local: &'a str,
}

/// An element whose end tag is still to come.
struct OpenElement<'a> {
    element: Element,
    prefix: &'a str,
    local: &'a str,
    scope_mark: usize,
}

/// The stream header, plus what the parser needs to recognise its close tag.
pub(crate) struct ParsedHeader {
    pub header: StreamHeader,
    pub prefix: Cow<'static, str>,
    pub local: Cow<'static, str>,
}

/// Checks the XML declaration frame: RFC 6120 §11.6 allows UTF-8 only.
pub(crate) fn check_declaration(text: &str) -> Result<(), XmlError> {
    let mut tokens = Tokenizer::from(text);
    match tokens.next() {
        Some(Ok(Token::Declaration { encoding, .. })) => {
            if let Some(enc) = encoding {
                if !enc.as_str().eq_ignore_ascii_case("UTF-8") {
                    return Err(XmlError::BadEncoding);
                }
            }
        }
        _ => return Err(XmlError::NotWellFormed("bad XML declaration")),
    }
    match tokens.next() {
        None => Ok(()),
        Some(_) => Err(XmlError::NotWellFormed("bad XML declaration")),
    }
}

/// Parses the header frame; its namespace declarations go into `scope` for the stream.
pub(crate) fn parse_header(
    text: &str,
    scope: &mut Scope,
    max_attrs: usize,
) -> Result<ParsedHeader, XmlError> {
    let mut start: Option<RawStart<'_>> = None;
    let mut attrs: Vec<RawAttr<'_>> = Vec::new();
    let mut ended = false;
    for token in Tokenizer::from(text) {
        match token.map_err(|_| SYNTAX)? {
            Token::ElementStart {
                prefix,
                local,
                span,
            } if start.is_none() => {
                start = Some(raw_start(prefix, local, span)?);
            }
            Token::Attribute {
                prefix,
                local,
                value,
                span,
            } if start.is_some() && !ended => {
                push_raw_attr(&mut attrs, prefix, local, value, span, max_attrs)?;
            }
            Token::ElementEnd {
                end: ElementEnd::Open | ElementEnd::Empty,
                ..
            } if start.is_some() && !ended => ended = true,
            other => return Err(unexpected(&other)),
        }
    }
    let (Some(start), true) = (start, ended) else {
        return Err(SYNTAX);
    };
    let base = scope.len();
    let element = open_element(&start, &attrs, scope)?;
    // The header's own default namespace, not one inherited from anything before it.
    let default_ns = scope
        .bindings
        .get(base..)
        .unwrap_or(&[])
        .iter()
        .rev()
        .find(|b| b.prefix.is_empty())
        .map(|b| b.uri.to_string())
        .unwrap_or_default();
    let declared = scope
        .bindings
        .get(base..)
        .unwrap_or(&[])
        .iter()
        .filter(|b| !b.prefix.is_empty())
        .map(|b| (b.prefix.to_string(), b.uri.to_string()))
        .collect();
    scope.release_spare();
    Ok(ParsedHeader {
        header: StreamHeader {
            name: element.name,
            ns: element.ns.into_owned(),
            default_ns,
            attrs: element.attrs,
            declared,
        },
        prefix: shared(start.prefix.to_owned()),
        local: shared(start.local.to_owned()),
    })
}

/// Parses the close frame, returning the raw (prefix, local) of the end tag.
pub(crate) fn parse_close(text: &str) -> Result<(&str, &str), XmlError> {
    let mut tokens = Tokenizer::from_fragment(text, 0..text.len());
    let name = match tokens.next() {
        Some(Ok(Token::ElementEnd {
            end: ElementEnd::Close(prefix, local),
            ..
        })) => (prefix.as_str(), local.as_str()),
        _ => return Err(XmlError::NotWellFormed("bad end tag")),
    };
    match tokens.next() {
        None => Ok(name),
        Some(_) => Err(XmlError::NotWellFormed("bad end tag")),
    }
}

/// Parses one complete top-level element in the stream's namespace scope.
pub(crate) fn parse_element(
    text: &str,
    scope: &mut Scope,
    max_attrs: usize,
    max_depth: usize,
) -> Result<Element, XmlError> {
    let base = scope.len();
    let result = build(text, scope, max_attrs, max_depth);
    scope.truncate(base);
    scope.release_spare();
    result
}

fn build(
    text: &str,
    scope: &mut Scope,
    max_attrs: usize,
    max_depth: usize,
) -> Result<Element, XmlError> {
    let mut stack: Vec<OpenElement<'_>> = Vec::new();
    let mut start: Option<RawStart<'_>> = None;
    let mut attrs: Vec<RawAttr<'_>> = Vec::new();
    let mut root: Option<Element> = None;
    for token in Tokenizer::from(text) {
        match token.map_err(|_| SYNTAX)? {
            Token::ElementStart {
                prefix,
                local,
                span,
            } => {
                if root.is_some() || start.is_some() {
                    return Err(SYNTAX);
                }
                start = Some(raw_start(prefix, local, span)?);
                attrs.clear();
            }
            Token::Attribute {
                prefix,
                local,
                value,
                span,
            } => {
                if start.is_none() {
                    return Err(SYNTAX);
                }
                push_raw_attr(&mut attrs, prefix, local, value, span, max_attrs)?;
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open | ElementEnd::Empty => {
                    let s = start.take().ok_or(SYNTAX)?;
                    // The framer enforces this first; kept so the tree never outgrows it.
                    if stack.len() >= max_depth {
                        return Err(XmlError::LimitExceeded("element nesting too deep"));
                    }
                    let scope_mark = scope.len();
                    let element = open_element(&s, &attrs, scope)?;
                    if end == ElementEnd::Open {
                        stack.push(OpenElement {
                            element,
                            prefix: s.prefix,
                            local: s.local,
                            scope_mark,
                        });
                    } else {
                        scope.truncate(scope_mark);
                        attach(&mut stack, &mut root, element)?;
                    }
                }
                ElementEnd::Close(prefix, local) => {
                    let open = stack
                        .pop()
                        .ok_or(XmlError::NotWellFormed("stray end tag"))?;
                    if open.prefix != prefix.as_str() || open.local != local.as_str() {
                        return Err(XmlError::NotWellFormed("mismatched end tag"));
                    }
                    scope.truncate(open.scope_mark);
                    attach(&mut stack, &mut root, open.element)?;
                }
            },
            Token::Text { text } => {
                let Some(open) = stack.last_mut() else {
                    // xmlparser allows whitespace around the root; the framer never cuts it.
                    if text.as_str().bytes().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    return Err(XmlError::NotWellFormed("text outside a stanza"));
                };
                push_text(&mut open.element, text.as_str(), Mode::Text)?;
            }
            Token::Cdata { text, .. } => {
                let open = stack.last_mut().ok_or(SYNTAX)?;
                push_text(&mut open.element, text.as_str(), Mode::CData)?;
            }
            other => return Err(unexpected(&other)),
        }
    }
    if !stack.is_empty() || start.is_some() {
        return Err(XmlError::NotWellFormed("unclosed element"));
    }
    root.ok_or(SYNTAX)
}

/// The refusal for a token that has no place in a frame.
fn unexpected(token: &Token<'_>) -> XmlError {
    match token {
        Token::Comment { .. } => XmlError::Restricted("comment"),
        Token::ProcessingInstruction { .. } | Token::Declaration { .. } => {
            XmlError::Restricted("processing instruction")
        }
        Token::DtdStart { .. }
        | Token::EmptyDtd { .. }
        | Token::EntityDeclaration { .. }
        | Token::DtdEnd { .. } => XmlError::Restricted("DTD or markup declaration"),
        _ => SYNTAX,
    }
}

fn attach(
    stack: &mut [OpenElement<'_>],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), XmlError> {
    if let Some(parent) = stack.last_mut() {
        parent.element.children.push(Node::Element(element));
    } else if root.is_none() {
        *root = Some(element);
    } else {
        return Err(SYNTAX);
    }
    Ok(())
}

/// Checks an NCName part. xmlparser accepts names made of name characters without checking
/// the first one, and an empty prefix or local part around `:`.
fn check_ncname(name: &str) -> Result<(), XmlError> {
    match name.chars().next() {
        None => Err(XmlError::NotWellFormed("empty name")),
        Some(c)
            if c.is_ascii_digit()
                || matches!(c, '-' | '.' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}') =>
        {
            Err(XmlError::NotWellFormed("bad name"))
        }
        Some(_) => Ok(()),
    }
}

/// Checks a qualified name given its raw text and xmlparser's split.
fn check_qname(raw: &str, prefix: &str, local: &str) -> Result<(), XmlError> {
    if raw.starts_with(':') {
        return Err(XmlError::NotWellFormed("empty prefix"));
    }
    if !prefix.is_empty() {
        check_ncname(prefix)?;
    }
    check_ncname(local)
}

fn raw_start<'a>(
    prefix: StrSpan<'a>,
    local: StrSpan<'a>,
    span: StrSpan<'a>,
) -> Result<RawStart<'a>, XmlError> {
    let raw = span.as_str().strip_prefix('<').unwrap_or("");
    check_qname(raw, prefix.as_str(), local.as_str())?;
    Ok(RawStart {
        prefix: prefix.as_str(),
        local: local.as_str(),
    })
}

fn push_raw_attr<'a>(
    attrs: &mut Vec<RawAttr<'a>>,
    prefix: StrSpan<'a>,
    local: StrSpan<'a>,
    value: StrSpan<'a>,
    span: StrSpan<'a>,
    max_attrs: usize,
) -> Result<(), XmlError> {
    if attrs.len() >= max_attrs {
        return Err(XmlError::LimitExceeded("too many attributes"));
    }
    let raw = span.as_str();
    let qname_len = raw.find(|c: char| c == '=' || c.is_ascii_whitespace());
    let qname = qname_len.and_then(|n| raw.get(..n)).unwrap_or(raw);
    check_qname(qname, prefix.as_str(), local.as_str())?;
    // XML 1.0 §3.1: an attribute name appears at most once per start tag.
    if attrs.iter().any(|a| a.qname == qname) {
        return Err(XmlError::NotWellFormed("duplicate attribute"));
    }
    attrs.push(RawAttr {
        prefix: prefix.as_str(),
        local: local.as_str(),
        qname,
        value: value.as_str(),
    });
    Ok(())
}

/// Applies an element's namespace declarations to `scope` and builds the element with its
/// name and attributes resolved. Declarations are not kept as attributes: the writer
/// declares what it needs.
fn open_element(
    start: &RawStart<'_>,
    attrs: &[RawAttr<'_>],
    scope: &mut Scope,
) -> Result<Element, XmlError> {
    for a in attrs {
        let prefix = match (a.prefix, a.local) {
            ("", "xmlns") => "",
            ("xmlns", p) => p,
            _ => continue,
        };
        let mut uri = String::new();
        decode(a.value, &mut uri, Mode::Attr)?;
        check_binding(prefix, &uri)?;
        scope.bindings.push(Binding {
            prefix: shared(prefix.to_owned()),
            uri: shared(uri),
        });
    }
    if start.prefix == "xmlns" {
        return Err(XmlError::NotWellFormed("element in the xmlns namespace"));
    }
    let ns = scope
        .resolve_shared(start.prefix)
        .ok_or(XmlError::NotWellFormed("unbound element prefix"))?
        .clone();
    let mut element = Element {
        name: start.local.to_owned(),
        ns,
        attrs: Vec::new(),
        children: Vec::new(),
    };
    for a in attrs {
        if a.prefix == "xmlns" || (a.prefix.is_empty() && a.local == "xmlns") {
            continue;
        }
        // XML Namespaces §6.2: unprefixed attributes are in no namespace.
        let ns = if a.prefix.is_empty() {
            ""
        } else {
            scope
                .resolve(a.prefix)
                .ok_or(XmlError::NotWellFormed("unbound attribute prefix"))?
        };
        // XML Namespaces §6.3: no two attributes with the same expanded name.
        if element
            .attrs
            .iter()
            .any(|b| b.ns == ns && b.name == a.local)
        {
            return Err(XmlError::NotWellFormed("duplicate attribute"));
        }
        let mut value = String::new();
        decode(a.value, &mut value, Mode::Attr)?;
        element.attrs.push(Attr {
            ns: ns.to_owned(),
            name: a.local.to_owned(),
            value,
        });
    }
    Ok(element)
}

/// XML Namespaces 1.0 §3: reserved prefixes and URIs, and no undeclaring of a prefix.
fn check_binding(prefix: &str, uri: &str) -> Result<(), XmlError> {
    let bad = match prefix {
        "xmlns" => true,
        "xml" => uri != ns::XML,
        "" => uri == ns::XML || uri == ns::XMLNS,
        _ => uri.is_empty() || uri == ns::XML || uri == ns::XMLNS,
    };
    if bad {
        return Err(XmlError::NotWellFormed("bad namespace declaration"));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    CData,
    Attr,
}

/// Appends decoded text to `element`, merging with a preceding text node.
fn push_text(element: &mut Element, raw: &str, mode: Mode) -> Result<(), XmlError> {
    if let Some(Node::Text(t)) = element.children.last_mut() {
        return decode(raw, t, mode);
    }
    let mut t = String::new();
    decode(raw, &mut t, mode)?;
    if !t.is_empty() {
        element.children.push(Node::Text(t));
    }
    Ok(())
}

/// Decodes references (not in CDATA) and normalizes line ends (XML 1.0 §2.11) and, in
/// attribute values, whitespace (§3.3.3).
fn decode(raw: &str, out: &mut String, mode: Mode) -> Result<(), XmlError> {
    let special = |c: char| match mode {
        Mode::Text => c == '&' || c == '\r',
        Mode::CData => c == '\r',
        Mode::Attr => matches!(c, '&' | '\r' | '\n' | '\t'),
    };
    let newline = if mode == Mode::Attr { ' ' } else { '\n' };
    let mut rest = raw;
    // Each pass consumes at least one character of `rest`.
    while let Some(at) = rest.find(special) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let mut chars = from.chars();
        match chars.next() {
            Some('&') => {
                let after = chars.as_str();
                // The longest reference is `&#x10FFFF;` or `&#1114111;`; allow leading zeros
                // up to a small bound rather than scanning the whole text for `;`.
                let semi = after
                    .bytes()
                    .take(16)
                    .position(|b| b == b';')
                    .ok_or(XmlError::NotWellFormed("unterminated reference"))?;
                let (name, tail) = after.split_at(semi);
                out.push(reference(name)?);
                rest = tail.get(1..).unwrap_or("");
            }
            Some('\r') => {
                out.push(newline);
                let tail = chars.as_str();
                rest = tail.strip_prefix('\n').unwrap_or(tail);
            }
            Some(_) => {
                // Tab or LF in an attribute value.
                out.push(' ');
                rest = chars.as_str();
            }
            None => break,
        }
    }
    out.push_str(rest);
    Ok(())
}

/// The character a reference stands for: one of the five predefined entities or a character
/// reference to a character XML allows. Anything else would need a DTD, which XMPP forbids.
fn reference(name: &str) -> Result<char, XmlError> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let (digits, radix) = if let Some(hex) = name.strip_prefix("#x") {
                (hex, 16)
            } else if let Some(dec) = name.strip_prefix('#') {
                (dec, 10)
            } else {
                return Err(XmlError::NotWellFormed("undefined entity"));
            };
            // `from_str_radix` would accept a leading '+'.
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return Err(XmlError::NotWellFormed("bad character reference"));
            }
            let code = u32::from_str_radix(digits, radix)
                .map_err(|_| XmlError::NotWellFormed("bad character reference"))?;
            let c =
                char::from_u32(code).ok_or(XmlError::NotWellFormed("bad character reference"))?;
            if !is_xml_char(c) {
                return Err(XmlError::NotWellFormed("reference to a non-XML character"));
            }
            c
        }
    };
    Ok(c)
}

/// XML 1.0 §2.2 [2] Char.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}
