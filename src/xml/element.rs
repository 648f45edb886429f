//! The element tree every stanza becomes after parsing, and its serializer.
//!
//! Owns: `Element`, `Node`, `Attr`, and escaping of text and attribute values.
//! Leaves to others: parsing (`xml::parser`), and what an element means (`stanza`, `features`).
//!
//! Namespaces are resolved: an element carries its namespace URI, never a prefix. The writer
//! emits `xmlns` only where an element's namespace differs from its parent's, so a stanza
//! written inside a `jabber:client` stream carries no redundant declarations.

use std::borrow::Cow;

use super::ns;

/// One attribute, namespace-resolved. `ns` is empty for unprefixed attributes (the common case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ns: String,
    pub name: String,
    pub value: String,
}

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// A namespace-resolved XML element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Local name (no prefix).
    pub name: String,
    /// Namespace URI: a shared constant for the namespaces Hearth knows (see
    /// `tree::shared`), so most parsed elements own no copy of it.
    pub ns: Cow<'static, str>,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: Cow::Owned(ns.to_owned()),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an unprefixed attribute.
    pub fn with_attr(mut self, name: &str, value: &str) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn with_text(mut self, text: &str) -> Element {
        self.children.push(Node::Text(text.to_owned()));
        self
    }

    /// The value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The value of a namespaced attribute (e.g. `xml:lang` is `(ns::XML, "lang")`).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Sets (or replaces) an unprefixed attribute.
    pub fn set_attr(&mut self, name: &str, value: &str) {
        match self
            .attrs
            .iter_mut()
            .find(|a| a.ns.is_empty() && a.name == name)
        {
            Some(a) => value.clone_into(&mut a.value),
            None => self.attrs.push(Attr {
                ns: String::new(),
                name: name.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// Removes an unprefixed attribute if present.
    pub fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|a| !(a.ns.is_empty() && a.name == name));
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Child elements, in document order.
    pub fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.child_elements().find(|e| e.is(name, ns))
    }

    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// The first child element, whatever its name (the payload of an IQ).
    pub fn first_child(&self) -> Option<&Element> {
        self.child_elements().next()
    }

    /// Concatenated direct text content.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serializes this element as it appears inside a stream whose default namespace is
    /// `parent_ns` (e.g. `jabber:client`).
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        self.write_xml(out, parent_ns);
    }

    /// Serializes to a new buffer, as a child of a `parent_ns` context.
    pub fn to_bytes(&self, parent_ns: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out, parent_ns);
        out
    }

    /// Serializes into a `String`.
    pub fn write_str(&self, out: &mut String, parent_ns: &str) {
        self.write_xml(out, parent_ns);
    }

    /// The serializer, for both outputs: wire bytes go straight into the caller's buffer
    /// (every stanza sent is serialized once, on the hot path).
    fn write_xml<O: XmlOut>(&self, out: &mut O, parent_ns: &str) {
        out.put("<");
        out.put(&self.name);
        if self.ns != parent_ns {
            out.put(" xmlns='");
            escape_attr_into(&self.ns, out);
            out.put("'");
        }
        // Prefixed attributes from namespaces other than `xml` need a declaration; prefixes
        // are generated (a0, a1, ...) since only the URI carries meaning.
        let mut next_prefix = 0usize;
        for a in &self.attrs {
            out.put(" ");
            if a.ns.is_empty() {
                out.put(&a.name);
            } else if a.ns == ns::XML {
                out.put("xml:");
                out.put(&a.name);
            } else {
                let prefix = format!("a{next_prefix}");
                out.put("xmlns:");
                out.put(&prefix);
                out.put("='");
                escape_attr_into(&a.ns, out);
                out.put("' ");
                out.put(&prefix);
                out.put(":");
                out.put(&a.name);
                next_prefix += 1;
            }
            out.put("='");
            escape_attr_into(&a.value, out);
            out.put("'");
        }
        if self.children.is_empty() {
            out.put("/>");
            return;
        }
        out.put(">");
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_xml(out, &self.ns),
                Node::Text(t) => escape_text_into(t, out),
            }
        }
        out.put("</");
        out.put(&self.name);
        out.put(">");
    }
}

/// Where the serializer writes.
trait XmlOut {
    fn put(&mut self, s: &str);
}

impl XmlOut for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl XmlOut for Vec<u8> {
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Escapes character data: `&`, `<` and `>` (the last so that `]]>` never appears).
pub fn escape_text(s: &str, out: &mut String) {
    escape_text_into(s, out);
}

fn escape_text_into<O: XmlOut>(s: &str, out: &mut O) {
    escape_into(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        _ => None,
    });
}

/// Escapes an attribute value for single-quoted output; also escapes `"` so values can be
/// copied into either quoting style, and control whitespace so it survives normalization.
pub fn escape_attr(s: &str, out: &mut String) {
    escape_attr_into(s, out);
}

fn escape_attr_into<O: XmlOut>(s: &str, out: &mut O) {
    escape_into(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\'' => Some("&apos;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#9;"),
        b'\n' => Some("&#10;"),
        b'\r' => Some("&#13;"),
        _ => None,
    });
}

/// Copies `s` in runs between the bytes `entity` replaces. Every such byte is ASCII, so the
/// runs split `s` at character boundaries.
fn escape_into<O: XmlOut>(s: &str, out: &mut O, entity: impl Fn(u8) -> Option<&'static str>) {
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(replacement) = entity(b) {
            out.put(s.get(run_start..i).unwrap_or_default());
            out.put(replacement);
            run_start = i + 1;
        }
    }
    out.put(s.get(run_start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_between_multibyte_runs() {
        let mut a = String::new();
        escape_attr("é&'\n\"<>\tx\r€", &mut a);
        assert_eq!(a, "é&amp;&apos;&#10;&quot;&lt;&gt;&#9;x&#13;€");
        let mut t = String::new();
        escape_text("]]>€&<'\"", &mut t);
        assert_eq!(t, "]]&gt;€&amp;&lt;'\"");
        let e = Element::new("x", "urn:a")
            .with_attr("v", "ü'")
            .with_text("<ü>");
        assert_eq!(
            String::from_utf8(e.to_bytes("urn:a")).unwrap(),
            "<x v='ü&apos;'>&lt;ü&gt;</x>"
        );
    }

    #[test]
    fn write_omits_inherited_namespace() {
        let e = Element::new("message", ns::CLIENT)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert_eq!(
            String::from_utf8(e.to_bytes(ns::CLIENT)).unwrap(),
            "<message to='a@b'><body>hi</body></message>"
        );
    }

    #[test]
    fn write_declares_child_namespace() {
        let e = Element::new("iq", ns::CLIENT).with_child(Element::new("ping", ns::PING));
        assert_eq!(
            String::from_utf8(e.to_bytes(ns::CLIENT)).unwrap(),
            "<iq><ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }

    #[test]
    fn write_escapes_text_and_attrs() {
        let e = Element::new("body", ns::CLIENT)
            .with_attr("x", "a'b\"c<&>")
            .with_text("1 < 2 && ]]> 3");
        assert_eq!(
            String::from_utf8(e.to_bytes(ns::CLIENT)).unwrap(),
            "<body x='a&apos;b&quot;c&lt;&amp;&gt;'>1 &lt; 2 &amp;&amp; ]]&gt; 3</body>"
        );
    }

    #[test]
    fn write_prefixed_attributes() {
        let mut e = Element::new("x", "urn:x");
        e.attrs.push(Attr {
            ns: ns::XML.into(),
            name: "lang".into(),
            value: "en".into(),
        });
        e.attrs.push(Attr {
            ns: "urn:other".into(),
            name: "k".into(),
            value: "v".into(),
        });
        assert_eq!(
            String::from_utf8(e.to_bytes("urn:x")).unwrap(),
            "<x xml:lang='en' xmlns:a0='urn:other' a0:k='v'/>"
        );
    }
}
