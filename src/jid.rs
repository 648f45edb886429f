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

/// A normalised JID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    local: Option<String>,
    domain: String,
    resource: Option<String>,
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
        Ok(Jid {
            local,
            domain,
            resource,
        })
    }

    /// A domain JID (`example.org`).
    pub fn domain_jid(domain: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            local: None,
            domain: normalize_domain(domain)?,
            resource: None,
        })
    }

    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }

    /// This JID without its resource.
    pub fn to_bare(&self) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    /// This bare JID with `resource` (normalised; fails on forbidden characters).
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: Some(normalize_resource(resource)?),
        })
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
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
