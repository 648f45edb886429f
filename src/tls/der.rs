//! A tiny DER writer (ITU-T X.690), just enough to build the self-signed X.509 certificates
//! of `selfsigned`: each function returns one complete TLV as bytes, and constructed values
//! take their already-encoded parts.
//!
//! Owns: encoding only. What goes into a certificate is `selfsigned`'s business.

pub const TAG_BOOLEAN: u8 = 0x01;
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_OID: u8 = 0x06;
pub const TAG_UTF8_STRING: u8 = 0x0c;
pub const TAG_UTC_TIME: u8 = 0x17;
pub const TAG_GENERALIZED_TIME: u8 = 0x18;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;

/// One TLV with a definite-length header (short form below 128 bytes, else long form).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Short form: fits the 7 bits (checked just above).
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        // At most size_of::<usize>() (8) bytes, so the count fits the 7 bits.
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A constructed value (SEQUENCE, SET, explicit tag) from already-encoded parts.
pub fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    constructed(TAG_SEQUENCE, parts)
}

pub fn set(parts: &[&[u8]]) -> Vec<u8> {
    constructed(TAG_SET, parts)
}

/// `[n] EXPLICIT`: a constructed context-specific wrapper around one encoded value.
pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(0xa0 | (n & 0x1f), inner)
}

/// `[n] IMPLICIT` for a primitive type: the content under a context-specific tag.
pub fn implicit_primitive(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0x80 | (n & 0x1f), content)
}

pub fn boolean(b: bool) -> Vec<u8> {
    tlv(TAG_BOOLEAN, &[if b { 0xff } else { 0x00 }])
}

/// A non-negative INTEGER from big-endian magnitude bytes, minimally encoded (X.690 §8.3.2:
/// no redundant leading zero, and a zero prepended when the top bit would read as a sign).
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|b| **b == 0).count();
    let trimmed = &magnitude[skip..];
    match trimmed.first() {
        None => tlv(TAG_INTEGER, &[0]),
        Some(b) if b & 0x80 != 0 => tlv(TAG_INTEGER, &[&[0u8][..], trimmed].concat()),
        Some(_) => tlv(TAG_INTEGER, trimmed),
    }
}

/// An OBJECT IDENTIFIER from its arcs (X.690 §8.19). The first arc must be 0..=2 and the
/// second below 40 for the first two; all callers pass constants.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        [a] => (a * 40, &[][..]),
        [] => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        // Base 128, most significant group first, high bit set on all but the last.
        let mut groups = [0u8; 10];
        let mut n = arc;
        let mut len = 0;
        loop {
            groups[len] = (n & 0x7f) as u8;
            len += 1;
            n >>= 7;
            if n == 0 {
                break;
            }
        }
        for i in (0..len).rev() {
            content.push(groups[i] | if i > 0 { 0x80 } else { 0 });
        }
    }
    tlv(TAG_OID, &content)
}

pub fn utf8_string(s: &str) -> Vec<u8> {
    tlv(TAG_UTF8_STRING, s.as_bytes())
}

pub fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, content)
}

/// A BIT STRING of whole bytes (no unused bits).
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(TAG_BIT_STRING, &[&[0u8][..], bytes].concat())
}

/// A BIT STRING with `unused` trailing bits in the last byte (for keyUsage flags).
pub fn bit_string_unused(unused: u8, bytes: &[u8]) -> Vec<u8> {
    tlv(TAG_BIT_STRING, &[&[unused][..], bytes].concat())
}

/// A certificate time (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` for years 1950 to 2049,
/// GeneralizedTime `YYYYMMDDHHMMSSZ` from 2050 on. Times before 1970 are not needed.
pub fn time(unix_secs: u64) -> Vec<u8> {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let hms = format!("{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60);
    if year < 2050 {
        tlv(
            TAG_UTC_TIME,
            format!("{:02}{month:02}{day:02}{hms}", year % 100).as_bytes(),
        )
    } else {
        tlv(
            TAG_GENERALIZED_TIME,
            format!("{year:04}{month:02}{day:02}{hms}").as_bytes(),
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_short_and_long_lengths_encoded() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        assert_eq!(long.len(), 203);
        let longer = tlv(0x04, &[0; 0x1234]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn integer_minimal_encoding() {
        assert_eq!(unsigned_integer(&[0, 0, 5]), [0x02, 1, 5]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[]), [0x02, 1, 0]);
        assert_eq!(unsigned_integer(&[0, 0]), [0x02, 1, 0]);
    }

    #[test]
    fn oid_known_encodings() {
        // ecdsa-with-SHA256 and prime256v1, as in every certificate.
        assert_eq!(
            oid(&[1, 2, 840, 10045, 4, 3, 2]),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(
            oid(&[1, 2, 840, 10045, 3, 1, 7]),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        assert_eq!(oid(&[2, 5, 29, 17]), [0x06, 0x03, 0x55, 0x1d, 0x11]);
    }

    #[test]
    fn time_utc_before_2050_generalized_after() {
        assert_eq!(time(0), tlv(TAG_UTC_TIME, b"700101000000Z"));
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(time(1_709_210_096), tlv(TAG_UTC_TIME, b"240229123456Z"));
        // 2049-12-31 23:59:59 and 2050-01-01 00:00:00 UTC.
        assert_eq!(time(2_524_607_999), tlv(TAG_UTC_TIME, b"491231235959Z"));
        assert_eq!(
            time(2_524_608_000),
            tlv(TAG_GENERALIZED_TIME, b"20500101000000Z")
        );
    }

    #[test]
    fn civil_from_days_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        // 2100 is not a leap year.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    }

    #[test]
    fn constructed_wraps_parts() {
        assert_eq!(
            sequence(&[&boolean(true), &[0x05, 0]]),
            [0x30, 5, 1, 1, 0xff, 5, 0]
        );
        assert_eq!(explicit(3, &[0x05, 0]), [0xa3, 2, 5, 0]);
        assert_eq!(implicit_primitive(2, b"a"), [0x82, 1, b'a']);
        assert_eq!(bit_string_unused(7, &[0x80]), [0x03, 2, 7, 0x80]);
    }
}
