//! SCRAM credentials (RFC 5802 §3): the only form in which a password is stored.
//!
//! Owns: deriving SaltedPassword, StoredKey and ServerKey from a password (after SASLprep-lite,
//! see `saslprep`), checking a plaintext password against stored credentials (PLAIN and
//! XEP-0077 use this, as Prosody checks PLAIN against SCRAM-only storage), the hash primitives
//! the SCRAM exchange shares, and the stable binary encoding for the store.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

use super::SaslFailure;
use super::saslprep::saslprep;

/// Hash function of a SCRAM variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

/// Salt, iteration count, StoredKey and ServerKey for one hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// What is stored per account: SCRAM credentials for SHA-1 and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub sha1: ScramCredentials,
    pub sha256: ScramCredentials,
}

/// Default iteration count (RFC 7677 recommends at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length of the salts `derive` makes.
pub const SALT_BYTES: usize = 16;

impl ScramHash {
    /// Output length of the hash (and so of every key and proof), in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    /// HMAC(key, data).
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        };
        hmac::sign(&hmac::Key::new(alg, key), data)
            .as_ref()
            .to_vec()
    }

    /// H(data).
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    /// SaltedPassword := Hi(password, salt, i) (RFC 5802 §3), for an already prepared
    /// password. `None` for zero iterations.
    pub(crate) fn salted_password(
        self,
        prepared_password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Option<Vec<u8>> {
        let iterations = NonZeroU32::new(iterations)?;
        let mut out = vec![0u8; self.output_len()];
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            prepared_password.as_bytes(),
            &mut out,
        );
        Some(out)
    }
}

impl ScramCredentials {
    /// Derives the credentials for one hash from an already prepared password and a given
    /// salt. `None` for zero iterations.
    pub(crate) fn from_prepared(
        hash: ScramHash,
        prepared_password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Option<ScramCredentials> {
        let salted = hash.salted_password(prepared_password, salt, iterations)?;
        let client_key = hash.hmac(&salted, b"Client Key");
        Some(ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        })
    }
}

/// Constant-time equality of two byte strings (the length is not secret). ring 0.17's own
/// `constant_time` module is deprecated, hence this fold: it visits every byte whatever the
/// first difference, and `black_box` keeps the optimiser from turning it into an early exit.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `password` (SASLprep-lite applied) matches `creds`, checked with SCRAM-SHA-256's
/// salt and iteration count: SaltedPassword is recomputed and H(HMAC(SaltedPassword,
/// "Client Key")) compared with StoredKey in constant time. Costs one PBKDF2 run.
pub fn verify_password(creds: &Credentials, password: &str) -> bool {
    let Ok(prepared) = saslprep(password) else {
        return false;
    };
    verify_prepared(&creds.sha256, &prepared)
}

/// `verify_password` for one hash's credentials and an already prepared password.
pub(crate) fn verify_prepared(c: &ScramCredentials, prepared_password: &str) -> bool {
    match ScramCredentials::from_prepared(
        ScramHash::Sha256,
        prepared_password,
        &c.salt,
        c.iterations,
    ) {
        Some(derived) => ct_eq(&derived.stored_key, &c.stored_key),
        None => false,
    }
}

impl Credentials {
    /// Derives both credentials from a password (SASLprep-lite applied), with fresh random
    /// 16-byte salts, one per hash. Fails with `MalformedRequest` for a password that SASLprep
    /// refuses (empty, or containing prohibited characters) and for zero iterations.
    pub fn derive(
        password: &str,
        iterations: u32,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Credentials, SaslFailure> {
        let prepared = saslprep(password).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut one = |hash| {
            let mut salt = [0u8; SALT_BYTES];
            random(&mut salt);
            ScramCredentials::from_prepared(hash, &prepared, &salt, iterations)
                .ok_or(SaslFailure::MalformedRequest)
        };
        Ok(Credentials {
            sha1: one(ScramHash::Sha1)?,
            sha256: one(ScramHash::Sha256)?,
        })
    }

    /// Stable binary encoding for the store: version byte, then for each of sha1, sha256:
    /// u32 BE iterations, then salt, stored_key, server_key each as u16 BE length + bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        for c in [&self.sha1, &self.sha256] {
            out.extend_from_slice(&c.iterations.to_be_bytes());
            for part in [&c.salt, &c.stored_key, &c.server_key] {
                // Lengths are bounded by construction (salt 16..64, keys 20 or 32 bytes).
                out.extend_from_slice(&(part.len() as u16).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// Decodes `encode`'s output; `None` if it is not that.
    pub fn decode(mut b: &[u8]) -> Option<Credentials> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (head, tail) = b.split_at(n);
            *b = tail;
            Some(head)
        }
        fn one(b: &mut &[u8]) -> Option<ScramCredentials> {
            let it = u32::from_be_bytes(take(b, 4)?.try_into().ok()?);
            let mut parts = Vec::with_capacity(3);
            for _ in 0..3 {
                let n = u16::from_be_bytes(take(b, 2)?.try_into().ok()?) as usize;
                parts.push(take(b, n)?.to_vec());
            }
            let server_key = parts.pop()?;
            let stored_key = parts.pop()?;
            let salt = parts.pop()?;
            Some(ScramCredentials {
                iterations: it,
                salt,
                stored_key,
                server_key,
            })
        }
        if take(&mut b, 1)? != [1u8] {
            return None;
        }
        let sha1 = one(&mut b)?;
        let sha256 = one(&mut b)?;
        b.is_empty().then_some(Credentials { sha1, sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let c = Credentials {
            sha1: ScramCredentials {
                iterations: 4096,
                salt: vec![1; 16],
                stored_key: vec![2; 20],
                server_key: vec![3; 20],
            },
            sha256: ScramCredentials {
                iterations: 4096,
                salt: vec![4; 16],
                stored_key: vec![5; 32],
                server_key: vec![6; 32],
            },
        };
        assert_eq!(Credentials::decode(&c.encode()), Some(c.clone()));
        let enc = c.encode();
        for n in 0..enc.len() {
            assert_eq!(Credentials::decode(&enc[..n]), None);
        }
    }

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    /// RFC 5802 §5: "pencil" with salt QSXCR+Q6sek8bf92 and 4096 iterations.
    #[test]
    fn from_prepared_rfc5802_keys_match() {
        let salt = crate::base64::decode("QSXCR+Q6sek8bf92").unwrap();
        let c = ScramCredentials::from_prepared(ScramHash::Sha1, "pencil", &salt, 4096).unwrap();
        // ClientKey and ServerKey of the RFC example (as computed by independent
        // implementations, e.g. Python's hashlib).
        assert_eq!(
            crate::base64::encode(&c.server_key),
            "D+CSWLOshSulAsxiupA+qs2/fTE="
        );
        assert_eq!(
            crate::base64::encode(&c.stored_key),
            "6dlGYMOdZcOPutkcNY8U2g7vK9Y="
        );
    }

    #[test]
    fn derive_then_verify_password_matches() {
        let c = Credentials::derive("pencil", 64, &mut counter()).unwrap();
        assert_eq!(c.sha1.salt.len(), SALT_BYTES);
        assert_eq!(c.sha256.salt.len(), SALT_BYTES);
        assert_ne!(c.sha1.salt, c.sha256.salt);
        assert_eq!(c.sha1.stored_key.len(), 20);
        assert_eq!(c.sha256.server_key.len(), 32);
        assert_eq!(c.sha256.iterations, 64);
        assert!(verify_password(&c, "pencil"));
        // SASLprep-lite maps a no-break space to a space and drops a soft hyphen.
        let d = Credentials::derive("pen cil", 64, &mut counter()).unwrap();
        assert!(verify_password(&d, "pen\u{00A0}ci\u{00AD}l"));
        assert!(!verify_password(&c, "Pencil"));
        assert!(!verify_password(&c, ""));
        assert_eq!(Credentials::decode(&c.encode()), Some(c));
    }

    #[test]
    fn derive_bad_password_or_iterations_refused() {
        for p in ["", "\u{00AD}", "a\u{0000}b"] {
            assert_eq!(
                Credentials::derive(p, 64, &mut counter()),
                Err(SaslFailure::MalformedRequest)
            );
        }
        assert_eq!(
            Credentials::derive("pencil", 0, &mut counter()),
            Err(SaslFailure::MalformedRequest)
        );
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
