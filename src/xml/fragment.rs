//! Parsing one element back from bytes the server itself serialized (a stored vCard, private
//! XML, an offline stanza).
//!
//! Owns: turning such bytes into an `Element` with the same parser that reads the network, so
//! that stored data gets the same checks (well-formedness, no DTDs, bounded depth). Leaves to
//! callers: what the element means and how it was stored (`Element::to_bytes(ns::CLIENT)`).

use super::element::Element;
use super::parser::{StreamEvent, StreamParser, XmlLimits};

/// The synthetic stream header the fragment is read inside: its default namespace is the one
/// `Element::to_bytes(ns::CLIENT)` leaves undeclared.
const HEADER: &str = "<stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams'>";

/// Deepest nesting and most attributes accepted. Stored bytes were parsed under the
/// configured limits before they were stored; these generous bounds only keep a corrupt
/// store from costing more than its length.
const MAX_DEPTH: usize = 256;
const MAX_ATTRS: usize = 256;

/// Parses exactly one element serialized as a child of a `jabber:client` context (as
/// `Element::to_bytes(ns::CLIENT)` writes it). `None` if the bytes are not one well-formed
/// element (nothing, two elements, trailing garbage, or anything the stream parser refuses).
pub fn parse_element(bytes: &[u8]) -> Option<Element> {
    let limits = XmlLimits {
        // The bytes are in memory already: the limit only has to admit them.
        max_stanza_bytes: bytes.len().max(XmlLimits::default().max_stanza_bytes),
        max_depth: MAX_DEPTH,
        max_attrs: MAX_ATTRS,
    };
    let mut parser = StreamParser::new(limits);
    parser.feed(HEADER.as_bytes()).ok()?;
    match parser.next_event() {
        Ok(Some(StreamEvent::Open(_))) => {}
        _ => return None,
    }
    parser.feed(bytes).ok()?;
    let element = match parser.next_event() {
        Ok(Some(StreamEvent::Element(e))) => e,
        _ => return None,
    };
    // Exactly one element: nothing may follow but whitespace.
    match parser.next_event() {
        Ok(None) if parser.buffered_len() == 0 => Some(element),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns;

    #[test]
    fn serialized_element_parses_back_equal() {
        let mut e = Element::new("vCard", "vcard-temp")
            .with_child(Element::new("FN", "vcard-temp").with_text("A & <B> 'c'"))
            .with_child(
                Element::new("x", "urn:other")
                    .with_attr("k", "v\n\"")
                    .with_child(Element::new("y", "urn:other")),
            );
        e.attrs.push(crate::xml::Attr {
            ns: ns::XML.into(),
            name: "lang".into(),
            value: "en".into(),
        });
        let bytes = e.to_bytes(ns::CLIENT);
        assert_eq!(parse_element(&bytes), Some(e));
    }

    #[test]
    fn client_namespace_element_parses_back_equal() {
        let e = Element::new("message", ns::CLIENT)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert_eq!(parse_element(&e.to_bytes(ns::CLIENT)), Some(e));
    }

    #[test]
    fn trailing_whitespace_accepted() {
        let e = parse_element(b"<a xmlns='urn:a'/>\n ").unwrap();
        assert!(e.is("a", "urn:a"));
    }

    #[test]
    fn empty_input_refused() {
        assert_eq!(parse_element(b""), None);
        assert_eq!(parse_element(b"   "), None);
    }

    #[test]
    fn two_elements_refused() {
        assert_eq!(parse_element(b"<a/><b/>"), None);
    }

    #[test]
    fn truncated_element_refused() {
        assert_eq!(parse_element(b"<a><b/>"), None);
        assert_eq!(parse_element(b"<a/><b"), None);
    }

    #[test]
    fn stream_close_refused() {
        assert_eq!(parse_element(b"</stream:stream>"), None);
        assert_eq!(parse_element(b"<a/></stream:stream>"), None);
    }

    #[test]
    fn restricted_xml_refused() {
        assert_eq!(parse_element(b"<!-- c --><a/>"), None);
        assert_eq!(parse_element(b"<a>&unknown;</a>"), None);
        assert_eq!(parse_element(b"<a>\xff</a>"), None);
    }

    #[test]
    fn large_element_within_its_own_length_accepted() {
        let text = "x".repeat(300 * 1024);
        let e = Element::new("a", "urn:a").with_text(&text);
        assert_eq!(parse_element(&e.to_bytes(ns::CLIENT)), Some(e));
    }
}
