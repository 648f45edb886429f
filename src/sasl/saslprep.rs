//! SASLprep (RFC 4013) "lite" for passwords and SASL usernames.
//!
//! Owns: the mapping and prohibition steps of RFC 4013 §2.1 and §2.3. Leaves to `jid`: the
//! localpart rules applied to usernames after this.
//!
//! Deliberately omitted, to keep the Unicode tables out of a router's flash:
//! - NFKC normalisation (RFC 4013 §2.2). A password containing compatibility characters
//!   (full-width letters, ligatures, composed vs decomposed accents) must be typed exactly as it
//!   was when it was set. For ASCII passwords nothing changes.
//! - The unassigned code point check (RFC 3454 table A.1) and the bidi rules (RFC 3454 §6).
//!
//! What is done: non-ASCII spaces (table C.1.2) become U+0020, characters "commonly mapped to
//! nothing" (table B.1) are removed, and the prohibited output of RFC 4013 §2.3 (tables C.1.2
//! after mapping, C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.7, C.8, C.9) is refused. An empty result
//! is refused.

/// Why a string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslPrepError {
    /// Nothing left after mapping.
    Empty,
    /// A prohibited character (RFC 4013 §2.3).
    Prohibited,
}

/// Applies SASLprep-lite to `s`.
pub fn saslprep(s: &str) -> Result<String, SaslPrepError> {
    // Fast path: printable ASCII is unchanged by every step.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return if s.is_empty() {
            Err(SaslPrepError::Empty)
        } else {
            Ok(s.to_owned())
        };
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // B.1 first: U+200B is in both B.1 and C.1.2, and B.1 (removal) wins, as in other
        // SASLprep implementations.
        if mapped_to_nothing(c) {
            continue;
        }
        let c = if non_ascii_space(c) { ' ' } else { c };
        if prohibited(c) {
            return Err(SaslPrepError::Prohibited);
        }
        out.push(c);
    }
    if out.is_empty() {
        Err(SaslPrepError::Empty)
    } else {
        Ok(out)
    }
}

/// RFC 3454 table B.1.
fn mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 3454 table C.1.2.
fn non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 4013 §2.3 prohibited output (C.1.2 is mapped away before this is asked).
fn prohibited(c: char) -> bool {
    let cp = u32::from(c);
    // C.2.1 and the C0/C1 part of C.2.2.
    c.is_control()
        // Rest of C.2.2.
        || matches!(
            c,
            '\u{06DD}'
                | '\u{070F}'
                | '\u{180E}'
                | '\u{200C}'
                | '\u{200D}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2063}'
                | '\u{206A}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFC}'
                | '\u{1D173}'..='\u{1D17A}'
        )
        // C.3 private use.
        || matches!(
            c,
            '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}'
        )
        // C.4 non-characters: U+FDD0..U+FDEF and the last two code points of every plane.
        || matches!(c, '\u{FDD0}'..='\u{FDEF}')
        || cp & 0xFFFE == 0xFFFE
        // C.5 surrogates cannot occur in a `str`. C.6 inappropriate for plain text.
        || matches!(c, '\u{FFF9}'..='\u{FFFD}')
        // C.7 inappropriate for canonical representation.
        || matches!(c, '\u{2FF0}'..='\u{2FFB}')
        // C.8 change display properties or deprecated.
        || matches!(
            c,
            '\u{0340}' | '\u{0341}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
        )
        // C.9 tagging characters.
        || matches!(c, '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4013 §3 examples that do not need NFKC or bidi.
    #[test]
    fn saslprep_rfc4013_examples_match() {
        assert_eq!(saslprep("I\u{00AD}X").as_deref(), Ok("IX"));
        assert_eq!(saslprep("user").as_deref(), Ok("user"));
        assert_eq!(saslprep("USER").as_deref(), Ok("USER"));
        assert_eq!(saslprep("\u{0007}"), Err(SaslPrepError::Prohibited));
    }

    #[test]
    fn saslprep_spaces_mapped_and_soft_hyphen_removed() {
        assert_eq!(saslprep("a\u{00A0}b\u{3000}c").as_deref(), Ok("a b c"));
        assert_eq!(saslprep("pass\u{200B}word").as_deref(), Ok("password"));
        assert_eq!(saslprep("p\u{00E4}ss").as_deref(), Ok("p\u{00E4}ss"));
    }

    #[test]
    fn saslprep_prohibited_refused() {
        for s in [
            "a\u{0000}b",
            "a\u{007F}",
            "\u{0085}x",
            "x\u{E000}",
            "x\u{FDD0}",
            "x\u{FFFF}",
            "x\u{1FFFE}",
            "x\u{202E}",
            "x\u{E0041}",
            "x\u{2FF0}",
            "x\u{10FFFD}",
            "x\u{2028}",
        ] {
            assert_eq!(saslprep(s), Err(SaslPrepError::Prohibited), "{s:?}");
        }
    }

    #[test]
    fn saslprep_empty_refused() {
        assert_eq!(saslprep(""), Err(SaslPrepError::Empty));
        assert_eq!(saslprep("\u{00AD}\u{FEFF}"), Err(SaslPrepError::Empty));
    }
}
