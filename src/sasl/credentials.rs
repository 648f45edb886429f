//! SCRAM credentials (RFC 5802 §3): the only form in which a password is stored.
//! (SKELETON: the sasl helper writes derivation; the encoding below is fixed.)

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

impl Credentials {
    /// Derives both credentials from a password (SaslPrep applied), with fresh random salts.
    pub fn derive(
        _password: &str,
        _iterations: u32,
        _random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Credentials, crate::sasl::SaslFailure> {
        todo!("sasl helper")
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
}
