//! What a peer's certificate says about itself, for the report: the DNS names it is for, its
//! expiry date, and whether it signed itself.
//!
//! Owns: a minimal, bounded DER reader (X.690 definite lengths only) over an X.509
//! certificate (RFC 5280 §4.1), enough to pull `subjectAltName` dNSNames, the subject's
//! commonName and `notAfter`. Validation is rustls/webpki's job; this only explains a verdict
//! in words, so anything it cannot read is simply left out of the report.

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`.
const TAG_VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions`.
const TAG_EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` in GeneralNames.
const TAG_DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17, content octets.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// id-at-commonName, 2.5.4.3, content octets.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// Names reported at most; a certificate for hundreds of names is summarised.
pub const MAX_NAMES: usize = 16;

/// What the report says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertSummary {
    /// subjectAltName dNSNames (at most [`MAX_NAMES`]), or, without any, the subject's
    /// commonName (which RFC 6125 no longer uses, but operators recognise).
    pub names: Vec<String>,
    /// True if the names came from the commonName (no dNSName present).
    pub names_from_cn: bool,
    /// `notAfter` as `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: Option<String>,
    /// Issuer equals subject: a self-signed certificate (Hearth's own default).
    pub self_signed: bool,
}

/// One TLV: (tag, content, rest). `None` on anything malformed or indefinite.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        // 0x80 is the indefinite form (not DER); more than 4 length bytes is absurd here.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The content of a TLV with the expected tag, and what follows.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = tlv(input)?;
    (tag == want).then_some((content, rest))
}

/// Reads what the report needs from a DER certificate; fields it cannot read stay empty.
pub fn summarize(der: &[u8]) -> CertSummary {
    read(der).unwrap_or_default()
}

fn read(der: &[u8]) -> Option<CertSummary> {
    let (cert, _) = expect(der, TAG_SEQUENCE)?;
    let (tbs, _) = expect(cert, TAG_SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&TAG_VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = tlv(rest).map(|(_, c, r)| (c, r))?;
    let (_sig_alg, rest) = expect(rest, TAG_SEQUENCE)?;
    let (issuer_start, rest_after_issuer) = (rest, expect(rest, TAG_SEQUENCE)?.1);
    let issuer_raw = issuer_start.get(..issuer_start.len() - rest_after_issuer.len())?;
    let (validity, rest) = expect(rest_after_issuer, TAG_SEQUENCE)?;
    let subject_start = rest;
    let (subject, rest) = expect(rest, TAG_SEQUENCE)?;
    let subject_raw = subject_start.get(..subject_start.len() - rest.len())?;
    let (_spki, mut rest) = expect(rest, TAG_SEQUENCE)?;

    let mut summary = CertSummary {
        self_signed: issuer_raw == subject_raw,
        not_after: not_after(validity),
        ..CertSummary::default()
    };
    // Optional issuerUniqueID [1] and subjectUniqueID [2], then extensions [3].
    while let Some((tag, content, after)) = tlv(rest) {
        if tag == TAG_EXTENSIONS {
            summary.names = san_dns_names(content).unwrap_or_default();
        }
        rest = after;
    }
    if summary.names.is_empty() {
        summary.names = common_names(subject);
        summary.names_from_cn = !summary.names.is_empty();
    }
    Some(summary)
}

fn not_after(validity: &[u8]) -> Option<String> {
    let (_, _, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = match (tag, digits.len()) {
        // RFC 5280 §4.1.2.5.1: two-digit years 50..99 are 19xx, 00..49 are 20xx.
        (TAG_UTC_TIME, 12) => {
            let century = if digits < "50" { "20" } else { "19" };
            format!("{century}{digits}")
        }
        (TAG_GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return None,
    };
    let part = |a: usize, b: usize| full.get(a..b);
    Some(format!(
        "{}-{}-{} {}:{}:{} UTC",
        part(0, 4)?,
        part(4, 6)?,
        part(6, 8)?,
        part(8, 10)?,
        part(10, 12)?,
        part(12, 14)?
    ))
}

/// dNSNames of the subjectAltName extension, if the certificate has one.
fn san_dns_names(extensions: &[u8]) -> Option<Vec<String>> {
    let (mut list, _) = expect(extensions, TAG_SEQUENCE)?;
    while let Some((ext, after)) = expect(list, TAG_SEQUENCE) {
        list = after;
        let (oid, rest) = expect(ext, TAG_OID)?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let rest = match expect(rest, TAG_BOOLEAN) {
            Some((_, r)) => r,
            None => rest,
        };
        let (value, _) = expect(rest, TAG_OCTET_STRING)?;
        let (mut names, _) = expect(value, TAG_SEQUENCE)?;
        let mut out = Vec::new();
        while let Some((tag, content, after)) = tlv(names) {
            names = after;
            if tag == TAG_DNS_NAME && out.len() < MAX_NAMES {
                out.push(String::from_utf8_lossy(content).into_owned());
            }
        }
        return Some(out);
    }
    None
}

/// commonName values of a Name (`SEQUENCE OF SET OF AttributeTypeAndValue`).
fn common_names(name: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rdns = name;
    while let Some((set, after)) = expect(rdns, TAG_SET) {
        rdns = after;
        let mut atvs = set;
        while let Some((atv, after)) = expect(atvs, TAG_SEQUENCE) {
            atvs = after;
            let Some((oid, rest)) = expect(atv, TAG_OID) else {
                continue;
            };
            if oid != OID_COMMON_NAME || out.len() >= MAX_NAMES {
                continue;
            }
            if let Some((_, value, _)) = tlv(rest) {
                out.push(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn selfsigned_certificate_gives_name_expiry_and_self_signed() {
        // 2026-01-01 00:00:00 UTC; the certificate is valid ten years (3652 days) from then.
        let made = crate::tls::selfsigned::generate(
            "chat.example.org",
            1_767_225_600,
            &SystemRandom::new(),
        )
        .unwrap();
        let s = summarize(&made.cert_der);
        assert_eq!(s.names, vec!["chat.example.org".to_owned()]);
        assert!(!s.names_from_cn);
        assert!(s.self_signed);
        assert_eq!(s.not_after.as_deref(), Some("2036-01-01 00:00:00 UTC"));
    }

    #[test]
    fn non_ascii_domain_falls_back_to_common_name() {
        let made =
            crate::tls::selfsigned::generate("bücher.example", 1_767_225_600, &SystemRandom::new())
                .unwrap();
        let s = summarize(&made.cert_der);
        assert_eq!(s.names, vec!["bücher.example".to_owned()]);
        assert!(s.names_from_cn);
    }

    #[test]
    fn garbage_of_every_length_gives_empty_summary() {
        let made =
            crate::tls::selfsigned::generate("a.example", 1_767_225_600, &SystemRandom::new())
                .unwrap();
        for n in 0..made.cert_der.len() {
            // Truncated certificates must not panic; most give nothing.
            let _ = summarize(&made.cert_der[..n]);
        }
        assert_eq!(
            summarize(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            CertSummary::default()
        );
        assert_eq!(summarize(&[0x30, 0x80, 0, 0]), CertSummary::default());
    }
}
