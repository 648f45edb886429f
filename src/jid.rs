//! JIDs (RFC 7622): parsing, normalisation and comparison.
//!
//! Hearth applies a deliberately small subset of PRECIS, chosen to fit a router's flash
//! (the Unicode tables of full PRECIS cost ~240 KB): the localpart and domainpart are
//! case-folded with Unicode lowercase mapping, the localpart's forbidden characters
//! (`"&'/:<>@`, spaces and controls) are refused, controls are refused everywhere, a trailing
//! dot on the domain is dropped, and each part is limited to 1023 bytes. No Unicode
//! normalisation (NFC) is applied: two JIDs that differ only in composed vs decomposed
//! characters are different accounts. This matches Prosody and ejabberd for every ASCII JID.

use std::fmt;

/// Why a string is not a valid JID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JidError {
    Empty,
    TooLong,
    ForbiddenCharacter,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidError::Empty => "an empty part",
            JidError::TooLong => "a part longer than 1023 bytes",
            JidError::ForbiddenCharacter => "a forbidden character",
        })
    }
}

const MAX_PART_BYTES: usize = 1023;

/// A normalised JID, kept as its written form (`local@domain/resource`) in one allocation,
/// with the part boundaries: routing compares, hashes and prints JIDs on every stanza.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Jid {
    full: Box<str>,
    /// Bytes of the localpart (0: none; a localpart is never empty).
    local_len: u16,
    /// Bytes of the bare JID; a resource follows after a `/` when shorter than `full`.
    bare_len: u16,
}

impl Jid {
    /// Parses and normalises `s` (RFC 7622 §3.1: the first `/` separates the resource, then the
    /// last `@` before it separates the localpart).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match bare.rsplit_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        let local = local.map(normalize_local).transpose()?;
        let domain = normalize_domain(domain)?;
        let resource = resource.map(normalize_resource).transpose()?;
        Ok(Jid::from_parts(
            local.as_deref(),
            &domain,
            resource.as_deref(),
        ))
    }

    /// Joins normalised parts, each at most `MAX_PART_BYTES` long (so the lengths fit `u16`).
    fn from_parts(local: Option<&str>, domain: &str, resource: Option<&str>) -> Jid {
        let mut full = String::with_capacity(
            local.map_or(0, |l| l.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1),
        );
        if let Some(l) = local {
            full.push_str(l);
            full.push('@');
        }
        full.push_str(domain);
        let bare_len = full.len();
        if let Some(r) = resource {
            full.push('/');
            full.push_str(r);
        }
        Jid {
            full: full.into_boxed_str(),
            // Each part is at most 1023 bytes before case folding, which at most adds half
            // again (`check_len`): `full` stays far below `u16::MAX`.
            local_len: local.map_or(0, str::len) as u16,
            bare_len: bare_len as u16,
        }
    }

    /// A domain JID (`example.org`).
    pub fn domain_jid(domain: &str) -> Result<Jid, JidError> {
        Ok(Jid::from_parts(None, &normalize_domain(domain)?, None))
    }

    pub fn local(&self) -> Option<&str> {
        match self.local_len {
            0 => None,
            n => self.full.get(..usize::from(n)),
        }
    }

    pub fn domain(&self) -> &str {
        let start = match self.local_len {
            0 => 0,
            n => usize::from(n) + 1,
        };
        self.full
            .get(start..usize::from(self.bare_len))
            .unwrap_or_default()
    }

    pub fn resource(&self) -> Option<&str> {
        self.full.get(usize::from(self.bare_len) + 1..)
    }

    pub fn is_bare(&self) -> bool {
        usize::from(self.bare_len) == self.full.len()
    }

    /// The written form, as `to_string` gives it, without allocating.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The bare JID's written form.
    pub fn bare_str(&self) -> &str {
        self.full
            .get(..usize::from(self.bare_len))
            .unwrap_or_default()
    }

    /// Whether both JIDs have the same bare JID.
    pub fn bare_eq(&self, other: &Jid) -> bool {
        self.bare_str() == other.bare_str()
    }

    /// This JID without its resource.
    pub fn to_bare(&self) -> Jid {
        Jid {
            full: self.bare_str().into(),
            local_len: self.local_len,
            bare_len: self.bare_len,
        }
    }

    /// This bare JID with `resource` (normalised; fails on forbidden characters).
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Ok(Jid::from_parts(
            self.local(),
            self.domain(),
            Some(&normalize_resource(resource)?),
        ))
    }
}

/// Ordered by localpart (none first), then domain, then resource (none first).
impl Ord for Jid {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.local(), self.domain(), self.resource()).cmp(&(
            other.local(),
            other.domain(),
            other.resource(),
        ))
    }
}

impl PartialOrd for Jid {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn check_len(s: &str) -> Result<(), JidError> {
    if s.is_empty() {
        Err(JidError::Empty)
    } else if s.len() > MAX_PART_BYTES {
        Err(JidError::TooLong)
    } else {
        Ok(())
    }
}

fn normalize_local(s: &str) -> Result<String, JidError> {
    check_len(s)?;
    // RFC 7622 §3.3.1: these are disallowed in the localpart.
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"&'/:<>@".contains(c))
    {
        return Err(JidError::ForbiddenCharacter);
    }
    let folded = s.to_lowercase();
    check_len(&folded)?;
    Ok(folded)
}

fn normalize_domain(s: &str) -> Result<String, JidError> {
    // RFC 7622 §3.2: a trailing dot is stripped before any other processing.
    let s = s.strip_suffix('.').unwrap_or(s);
    check_len(s)?;
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"&'/:<>@\\".contains(c))
    {
        // An IPv6 literal contains ':' but only inside brackets.
        if !(s.starts_with('[') && s.ends_with(']')) {
            return Err(JidError::ForbiddenCharacter);
        }
    }
    Ok(s.to_lowercase())
}

fn normalize_resource(s: &str) -> Result<String, JidError> {
    check_len(s)?;
    if s.chars().any(|c| c.is_control()) {
        return Err(JidError::ForbiddenCharacter);
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_full_jid_normalises_case() {
        let j = Jid::parse("Alice@Example.ORG/Phone").unwrap();
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(j.domain(), "example.org");
        assert_eq!(j.resource(), Some("Phone"));
        assert_eq!(j.to_string(), "alice@example.org/Phone");
        assert_eq!(j.bare_str(), "alice@example.org");
        assert!(!j.is_bare());
        let bare = j.to_bare();
        assert_eq!((bare.local(), bare.resource()), (Some("alice"), None));
        assert_eq!(bare.domain(), "example.org");
        assert!(bare.is_bare());
        let domain = Jid::parse("Example.org/r").unwrap();
        assert_eq!((domain.local(), domain.domain()), (None, "example.org"));
        assert_eq!(domain.resource(), Some("r"));
        assert_eq!(
            bare.with_resource("x").unwrap().as_str(),
            "alice@example.org/x"
        );
    }

    #[test]
    fn order_is_local_then_domain_then_resource() {
        let order = ["b.org", "b.org/r", "a@c.org", "b@a.org", "b@a.org/r"];
        let mut jids: Vec<Jid> = order.iter().rev().map(|s| Jid::parse(s).unwrap()).collect();
        jids.sort();
        let got: Vec<String> = jids.iter().map(Jid::to_string).collect();
        assert_eq!(got, order);
    }

    #[test]
    fn resource_may_contain_at_and_slash() {
        let j = Jid::parse("a@b/c@d/e").unwrap();
        assert_eq!(j.local(), Some("a"));
        assert_eq!(j.resource(), Some("c@d/e"));
    }

    #[test]
    fn domain_trailing_dot_dropped() {
        assert_eq!(
            Jid::parse("example.org.").unwrap().to_string(),
            "example.org"
        );
    }

    #[test]
    fn invalid_jids_refused() {
        for bad in ["", "@b", "a@", "a@b/", "a b@c", "a'@b", "a@b c", "\u{7}@b"] {
            assert!(Jid::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Jid::parse(&"x".repeat(1024)).unwrap_err(),
            JidError::TooLong
        );
    }
}
