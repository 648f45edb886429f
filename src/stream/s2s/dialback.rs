//! Server Dialback keys (XEP-0185) and the `<db:result/>` / `<db:verify/>` elements
//! (XEP-0220), parsed and written.
//!
//! Owns: the HMAC key generation and its constant-time check, and the wire form of dialback
//! elements (always with the conventional `db:` prefix, which the stream headers of both
//! machines declare: XEP-0220 §2.5.1 warns that some deployments accept only that prefix).
//! Leaves to `incoming` and `outgoing` when each element is allowed and what it changes.

use ring::{digest, hmac};

use crate::stanza::StanzaCondition;
use crate::xml::element::{escape_attr, escape_text};
use crate::xml::{Element, ns};

use super::DIALBACK;

/// Longest key accepted from the network. An HMAC-SHA256 key in hex is 64 characters; other
/// servers' generators may differ (the XEP only recommends), so leave room, but bound it.
pub const MAX_KEY_CHARS: usize = 256;

/// The process's dialback secret, kept as the HMAC key `SHA256(secret)` (XEP-0185 §3: the
/// secret is hashed so the HMAC key is long enough whatever the secret's length). As in the
/// XEP's worked example (and Prosody), the key is the *hex* digest's ASCII bytes. Only we
/// verify our own keys, so this matters for matching the published vectors, not for interop.
#[derive(Clone)]
pub struct DialbackSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for DialbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("DialbackSecret(..)")
    }
}

impl DialbackSecret {
    /// From the raw secret (the server makes 32 random bytes at startup; keys then only verify
    /// within this process's life, which is all dialback needs).
    pub fn new(secret: &[u8]) -> DialbackSecret {
        let hashed = hex(digest::digest(&digest::SHA256, secret).as_ref());
        DialbackSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, hashed.as_bytes()),
        }
    }

    /// XEP-0185 §3: `HEX(HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' + id))`.
    pub fn generate(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let tag = hmac::sign(
            &self.key,
            message(receiving, originating, stream_id).as_bytes(),
        );
        hex(tag.as_ref())
    }

    /// Whether `key` (hex, either case, surrounding whitespace ignored) is the key for these
    /// values. The comparison is ring's constant-time HMAC check, so a peer cannot learn the
    /// key byte by byte from timing.
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        let Some(tag) = unhex(key.trim()) else {
            return false;
        };
        hmac::verify(
            &self.key,
            message(receiving, originating, stream_id).as_bytes(),
            &tag,
        )
        .is_ok()
    }
}

fn message(receiving: &str, originating: &str, stream_id: &str) -> String {
    // XEP-0185 §3: spaces separate the parts so that concatenations cannot be ambiguous.
    format!("{receiving} {originating} {stream_id}")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > MAX_KEY_CHARS {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
            _ => None,
        })
        .collect()
}

/// Which dialback element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Result,
    Verify,
}

impl DbKind {
    fn name(self) -> &'static str {
        match self {
            DbKind::Result => "result",
            DbKind::Verify => "verify",
        }
    }
}

/// The `type` of an answer (XEP-0220 §2.1, §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbType {
    Valid,
    Invalid,
    Error(StanzaCondition),
}

/// A dialback element as received, addresses normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbElement {
    pub kind: DbKind,
    pub from: String,
    pub to: String,
    pub id: Option<String>,
    /// `None` for a request; requests carry a key instead.
    pub answer: Option<DbType>,
    /// The trimmed character data (the key of a request).
    pub key: String,
}

/// Why a dialback element could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbParseError {
    /// Missing or malformed `from`/`to`, or a `type` we do not know.
    BadAddressing,
    /// A request's key is empty or longer than `MAX_KEY_CHARS`.
    BadKey,
}

impl DbElement {
    /// Reads `<db:result/>` or `<db:verify/>`; `None` if `e` is neither.
    pub fn parse(e: &Element) -> Option<Result<DbElement, DbParseError>> {
        if e.ns != DIALBACK {
            return None;
        }
        let kind = match e.name.as_str() {
            "result" => DbKind::Result,
            "verify" => DbKind::Verify,
            _ => return None,
        };
        Some(Self::parse_kind(kind, e))
    }

    fn parse_kind(kind: DbKind, e: &Element) -> Result<DbElement, DbParseError> {
        let domain = |name| {
            e.attr(name)
                .and_then(super::normalize_domain)
                .ok_or(DbParseError::BadAddressing)
        };
        let from = domain("from")?;
        let to = domain("to")?;
        let answer = match e.attr("type") {
            None => None,
            Some("valid") => Some(DbType::Valid),
            Some("invalid") => Some(DbType::Invalid),
            Some("error") => Some(DbType::Error(error_condition(e))),
            Some(_) => return Err(DbParseError::BadAddressing),
        };
        let key = e.text().trim().to_owned();
        if answer.is_none() && (key.is_empty() || key.len() > MAX_KEY_CHARS) {
            return Err(DbParseError::BadKey);
        }
        Ok(DbElement {
            kind,
            from,
            to,
            id: e.attr("id").map(str::to_owned),
            answer,
            key,
        })
    }
}

/// The condition inside a dialback error; `undefined-condition` if it names none we know.
fn error_condition(e: &Element) -> StanzaCondition {
    e.child("error", ns::SERVER)
        .into_iter()
        .flat_map(|err| err.child_elements())
        .filter(|c| c.ns == ns::STANZA_ERRORS)
        .find_map(|c| StanzaCondition::from_name(&c.name))
        .unwrap_or(StanzaCondition::UndefinedCondition)
}

/// Writes a dialback element with the `db:` prefix, for a `jabber:server` stream whose header
/// declared `xmlns:db`. `key` is the character data of a request; `answer` makes it a reply.
pub fn write(
    kind: DbKind,
    from: &str,
    to: &str,
    id: Option<&str>,
    answer: Option<DbType>,
    key: Option<&str>,
) -> Vec<u8> {
    let mut s = String::from("<db:");
    s.push_str(kind.name());
    for (name, value) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
        if let Some(v) = value {
            s.push(' ');
            s.push_str(name);
            s.push_str("='");
            escape_attr(v, &mut s);
            s.push('\'');
        }
    }
    let (type_name, error) = match answer {
        None => (None, None),
        Some(DbType::Valid) => (Some("valid"), None),
        Some(DbType::Invalid) => (Some("invalid"), None),
        Some(DbType::Error(c)) => (Some("error"), Some(c)),
    };
    if let Some(t) = type_name {
        s.push_str(" type='");
        s.push_str(t);
        s.push('\'');
    }
    match (key, error) {
        (Some(k), _) => {
            s.push('>');
            escape_text(k, &mut s);
        }
        (None, Some(c)) => {
            s.push('>');
            // XEP-0220 §2.4: the <error/> is implicitly qualified by 'jabber:server' (the
            // stream's default namespace), its condition by the stanza-errors namespace.
            Element::new("error", ns::SERVER)
                .with_attr("type", c.default_type().name())
                .with_child(Element::new(c.name(), ns::STANZA_ERRORS))
                .write_str(&mut s, ns::SERVER);
        }
        (None, None) => {
            s.push_str("/>");
            return s.into_bytes();
        }
    }
    s.push_str("</db:");
    s.push_str(kind.name());
    s.push('>');
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{StreamEvent, StreamParser, XmlLimits};

    #[test]
    fn key_xep0185_example_matches() {
        let s = DialbackSecret::new(b"s3cr3tf0rd14lb4ck");
        assert_eq!(
            s.generate("xmpp.example.com", "example.org", "D60000229F"),
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
    }

    #[test]
    fn key_xep0220_examples_match() {
        let s = DialbackSecret::new(b"s3cr3tf0rd14lb4ck");
        assert_eq!(
            s.generate("montague.example", "capulet.example", "D60000229F"),
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
        );
        let s = DialbackSecret::new(b"d14lb4ck43v3r");
        assert_eq!(
            s.generate("capulet.example", "montague.example", "417GAF25"),
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"
        );
    }

    #[test]
    fn verify_good_key_with_whitespace_and_uppercase_valid() {
        let s = DialbackSecret::new(b"s3cr3tf0rd14lb4ck");
        let key = "\n  37C69B1CF07A3F67C04A5EF5902FA5114F2C76FE4A2686482BA5B89323075643\n";
        assert!(s.verify("xmpp.example.com", "example.org", "D60000229F", key));
    }

    #[test]
    fn verify_wrong_id_or_secret_or_garbage_invalid() {
        let s = DialbackSecret::new(b"s3cr3tf0rd14lb4ck");
        let key = "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643";
        assert!(!s.verify("xmpp.example.com", "example.org", "D60000229G", key));
        assert!(!DialbackSecret::new(b"other").verify(
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            key
        ));
        assert!(!s.verify("xmpp.example.com", "example.org", "D60000229F", "zz"));
        assert!(!s.verify("xmpp.example.com", "example.org", "D60000229F", ""));
        assert!(!s.verify("xmpp.example.com", "example.org", "D60000229F", "abc"));
    }

    fn parse_one(xml: &str) -> Element {
        let mut p = StreamParser::new(XmlLimits::default());
        let header = "<stream:stream xmlns='jabber:server' \
            xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>";
        p.feed(header.as_bytes()).unwrap();
        p.feed(xml.as_bytes()).unwrap();
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
        match p.next_event() {
            Ok(Some(StreamEvent::Element(e))) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_error_answer_reads_condition() {
        let e = parse_one(
            "<db:result from='montague.example' to='capulet.example' type='error'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></db:result>",
        );
        let db = DbElement::parse(&e).unwrap().unwrap();
        assert_eq!(db.kind, DbKind::Result);
        assert_eq!(
            db.answer,
            Some(DbType::Error(StanzaCondition::ItemNotFound))
        );
    }

    #[test]
    fn parse_request_without_key_bad_key() {
        let e = parse_one("<db:result from='a.example' to='b.example'/>");
        assert_eq!(DbElement::parse(&e), Some(Err(DbParseError::BadKey)));
        let e = parse_one("<db:result to='b.example'>abcd</db:result>");
        assert_eq!(DbElement::parse(&e), Some(Err(DbParseError::BadAddressing)));
    }

    #[test]
    fn write_roundtrips_through_parser() {
        let bytes = write(
            DbKind::Verify,
            "a.example",
            "b.example",
            Some("id'1"),
            Some(DbType::Error(StanzaCondition::ItemNotFound)),
            None,
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "<db:verify from='a.example' to='b.example' id='id&apos;1' type='error'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></db:verify>"
        );
        let db = DbElement::parse(&parse_one(&text)).unwrap().unwrap();
        assert_eq!(db.id.as_deref(), Some("id'1"));
        assert_eq!(
            db.answer,
            Some(DbType::Error(StanzaCondition::ItemNotFound))
        );
    }
}
