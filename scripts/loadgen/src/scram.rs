//! Client side of SASL SCRAM-SHA-1 (RFC 5802) with ring, plus base64 and the salted-password
//! cache (per user, salt and iteration count, as real clients keep it).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use ring::{digest, hmac, pbkdf2};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub fn b64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for &ch in s {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// (user, salt, iterations).
type CacheKey = (String, Vec<u8>, u32);

/// Salted passwords already derived: (user, salt, iterations) -> SaltedPassword.
#[derive(Default)]
pub struct Cache {
    pub map: Mutex<HashMap<CacheKey, Vec<u8>>>,
    pub enabled: bool,
}

impl Cache {
    pub fn load(path: Option<&str>) -> Cache {
        let mut map = HashMap::new();
        if let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                let [u, s, i, k] = f[..] else { continue };
                if let (Some(s), Ok(i), Some(k)) = (
                    b64_decode(s.as_bytes()),
                    i.parse(),
                    b64_decode(k.as_bytes()),
                ) {
                    map.insert((u.to_string(), s, i), k);
                }
            }
        }
        Cache {
            map: Mutex::new(map),
            enabled: path.is_some(),
        }
    }

    pub fn save(&self, path: &str) -> std::io::Result<()> {
        let map = self
            .map
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let mut out = String::new();
        for ((u, s, i), k) in map.iter() {
            out.push_str(&format!("{u} {} {i} {}\n", b64_encode(s), b64_encode(k)));
        }
        std::fs::write(path, out)
    }
}

/// One SCRAM exchange in progress.
pub struct Scram {
    user: String,
    password: String,
    cnonce: String,
    client_first_bare: String,
    server_sig: Option<Vec<u8>>,
}

impl Scram {
    pub fn new(user: &str, password: &str, rng: &dyn ring::rand::SecureRandom) -> Scram {
        let mut n = [0u8; 18];
        let _ = rng.fill(&mut n);
        let cnonce = b64_encode(&n);
        Scram {
            client_first_bare: format!("n={user},r={cnonce}"),
            user: user.to_string(),
            password: password.to_string(),
            cnonce,
            server_sig: None,
        }
    }

    /// `client-first-message`, to send base64'd in `<auth>`.
    pub fn first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// From `server-first-message` to `client-final-message`. Returns also whether the
    /// PBKDF2 derivation was served from the cache.
    pub fn respond(
        &mut self,
        server_first: &[u8],
        cache: &Cache,
    ) -> Result<(String, bool), String> {
        let sf = std::str::from_utf8(server_first).map_err(|_| "server-first not UTF-8")?;
        let (mut nonce, mut salt, mut iters) = (None, None, None);
        for part in sf.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = b64_decode(v.as_bytes());
            } else if let Some(v) = part.strip_prefix("i=") {
                iters = v.parse::<u32>().ok();
            }
        }
        let nonce = nonce.ok_or("no r=")?;
        let salt = salt.ok_or("no s=")?;
        let iters = iters.ok_or("no i=")?;
        if !nonce.starts_with(&self.cnonce) {
            return Err("server nonce does not extend ours".into());
        }
        let key = (self.user.clone(), salt, iters);
        let cached = if cache.enabled {
            cache.map.lock().ok().and_then(|m| m.get(&key).cloned())
        } else {
            None
        };
        let hit = cached.is_some();
        let salted = match cached {
            Some(s) => s,
            None => {
                let mut out = [0u8; 20];
                let it = NonZeroU32::new(iters).ok_or("i=0")?;
                pbkdf2::derive(
                    pbkdf2::PBKDF2_HMAC_SHA1,
                    it,
                    &key.1,
                    self.password.as_bytes(),
                    &mut out,
                );
                if let (true, Ok(mut m)) = (cache.enabled, cache.map.lock()) {
                    m.insert(key, out.to_vec());
                }
                out.to_vec()
            }
        };
        let sk = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salted);
        let client_key = hmac::sign(&sk, b"Client Key");
        let stored = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_msg = format!("{},{sf},{without_proof}", self.client_first_bare);
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, stored.as_ref()),
            auth_msg.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(sig.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&sk, b"Server Key");
        let ssig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, server_key.as_ref()),
            auth_msg.as_bytes(),
        );
        self.server_sig = Some(ssig.as_ref().to_vec());
        Ok((format!("{without_proof},p={}", b64_encode(&proof)), hit))
    }

    /// Checks `v=` in the server-final message (in `<success>`'s text).
    pub fn verify(&self, server_final: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(server_final) else {
            return false;
        };
        let Some(v) = s.split(',').find_map(|p| p.strip_prefix("v=")) else {
            return false;
        };
        match (b64_decode(v.as_bytes()), &self.server_sig) {
            (Some(got), Some(want)) => &got == want,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip_all_lengths() {
        for n in 0..40u8 {
            let d: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(b64_encode(&d).as_bytes()).unwrap(), d);
        }
        assert_eq!(b64_encode(b"n,,"), "biws");
    }

    /// RFC 5802 section 5 example.
    #[test]
    fn rfc5802_example_proof_and_signature() {
        let mut s = Scram {
            user: "user".into(),
            password: "pencil".into(),
            cnonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            client_first_bare: "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into(),
            server_sig: None,
        };
        let cache = Cache::default();
        let (fin, hit) = s
            .respond(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                &cache,
            )
            .unwrap();
        assert!(!hit);
        assert_eq!(
            fin,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(s.verify(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="));
        assert!(!s.verify(b"v=AAAApqV8S7suAoZWja4dJRkFsKQ="));
    }
}
