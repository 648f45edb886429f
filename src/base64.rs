//! Base64 (RFC 4648 §4: standard alphabet, with padding) for SASL payloads and PEM.
//!
//! Owns: encoding and strict decoding, plus a whitespace-tolerant decoder for PEM bodies and
//! XML character data that may be wrapped. Leaves to callers: size limits on the input (the
//! output is never larger than 3/4 of the input).
//!
//! `decode` is strict and canonical: characters outside the alphabet, missing or misplaced
//! padding and non-zero trailing bits (RFC 4648 §3.5) are all refused, so each byte string has
//! exactly one accepted encoding. SCRAM relies on this when it compares `c=` attributes.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        // Indexing is in bounds: the index is masked to 0..=63 and ALPHABET has 64 entries.
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Decodes strictly (see the module doc). The empty string decodes to no bytes.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    decode_bytes(s.bytes(), s.len())
}

/// Like `decode`, but ASCII whitespace (space, tab, CR, LF, FF) anywhere is ignored.
pub fn decode_lenient_ws(s: &str) -> Option<Vec<u8>> {
    let stripped = s.bytes().filter(|b| !b.is_ascii_whitespace());
    decode_bytes(stripped, s.len())
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes a stream of characters; `len_hint` only sizes the output buffer.
fn decode_bytes(input: impl Iterator<Item = u8>, len_hint: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len_hint / 4 * 3);
    let mut quad = [0u8; 4];
    let mut filled = 0usize;
    // Once a quantum with padding has been seen, nothing may follow.
    let mut finished = false;
    for c in input {
        if finished {
            return None;
        }
        // In bounds: `filled` is reset to 0 whenever it reaches 4.
        quad[filled] = c;
        filled += 1;
        if filled < 4 {
            continue;
        }
        filled = 0;
        let [c0, c1, c2, c3] = quad;
        let v0 = value(c0)?;
        let v1 = value(c1)?;
        match (c2, c3) {
            (b'=', b'=') => {
                // One byte; the low 4 bits of the second sextet must be zero.
                if v1 & 0x0f != 0 {
                    return None;
                }
                out.push(((v0 << 2) | (v1 >> 4)) as u8);
                finished = true;
            }
            (_, b'=') => {
                let v2 = value(c2)?;
                if v2 & 0x03 != 0 {
                    return None;
                }
                let n = (v0 << 18) | (v1 << 12) | (v2 << 6);
                out.push((n >> 16) as u8);
                out.push((n >> 8) as u8);
                finished = true;
            }
            _ => {
                let n = (v0 << 18) | (v1 << 12) | (value(c2)? << 6) | value(c3)?;
                out.push((n >> 16) as u8);
                out.push((n >> 8) as u8);
                out.push(n as u8);
            }
        }
    }
    (filled == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10.
    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn encode_rfc4648_vectors_match() {
        for (plain, enc) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), enc, "{plain:?}");
        }
    }

    #[test]
    fn decode_rfc4648_vectors_match() {
        for (plain, enc) in VECTORS {
            assert_eq!(decode(enc).as_deref(), Some(plain.as_bytes()), "{enc:?}");
            assert_eq!(decode_lenient_ws(enc).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn round_trip_all_byte_values_and_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..data.len() {
            let enc = encode(&data[..n]);
            assert_eq!(decode(&enc).as_deref(), Some(&data[..n]));
        }
    }

    #[test]
    fn decode_bad_input_refused() {
        for bad in [
            "Zg",
            "Zg=",
            "Zm9",
            "Z===",
            "====",
            "Zg==Zg==",
            "Zg==\n",
            "Zm9v!A==",
            "Zm9v YmFy",
            "Zh==",
            "Zm9=",
            "Zm8=Zm9v",
            "=Zm9",
            "Zm=v",
            "-_-_",
            "Zm9vYmFy=",
            "\u{e9}AAA",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decode_lenient_ws_line_breaks_ignored() {
        assert_eq!(
            decode_lenient_ws(" Zm9v\r\nYmFy\n\t").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(decode_lenient_ws("Zm\n9=").as_deref(), None);
        assert_eq!(decode_lenient_ws("Zm8=\nZm8=").as_deref(), None);
        assert_eq!(decode_lenient_ws(" \n ").as_deref(), Some(&b""[..]));
    }
}
