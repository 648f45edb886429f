//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), with and without `-PLUS`, server side.
//! Channel binding is `tls-exporter` only (RFC 9266).
//!
//! Owns: parsing the client-first and client-final messages, the GS2 header and channel binding
//! checks, the server nonce, the proof check and the server signature, and plausible answers for
//! accounts that do not exist. Leaves to `SaslSession` (mod.rs): choosing the mechanism,
//! randomness, and the state after the exchange.
//!
//! Policy decisions:
//! - authzid (`a=` in the GS2 header): the mechanism does not know the stream's domain, so it
//!   cannot tell whether an authzid names the user's own bare JID. Any authzid is refused with
//!   `invalid-authzid`; clients that want to act as themselves simply omit it (RFC 6120 §6.3.8
//!   and every client in common use do).
//! - An unknown account gets a normal-looking server-first-message, its salt derived by HMAC of
//!   the username under a secret key and 4096 iterations, and fails only at the final step
//!   with `not-authorized`, so the exchange does not reveal which accounts exist.
//! - `y` from a client while the server offers -PLUS is a downgrade (RFC 5802 §6) and fails
//!   with `not-authorized`, as does an unsupported channel binding type or data that does not
//!   match the `c=` attribute. Syntax errors fail with `malformed-request`.

use super::credentials::{ScramCredentials, ScramHash, ct_eq};
use super::{
    ChannelBinding, CredentialLookup, DEFAULT_ITERATIONS, SaslFailure, normalize_username,
};
use crate::base64;

/// The only channel binding type Hearth supports (RFC 9266).
const TLS_EXPORTER: &str = "tls-exporter";

/// Bytes of fake salt for unknown accounts (the length `Credentials::derive` uses).
const FAKE_SALT_BYTES: usize = super::credentials::SALT_BYTES;

/// The GS2 channel binding flag (RFC 5802 §7 `gs2-cbind-flag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<name>`: the client requires channel binding of this type.
    Required(&'a str),
}

/// A syntactically valid client-first-message.
struct ClientFirst<'a> {
    cbind: CbindFlag<'a>,
    /// Whether `a=` was present.
    authzid: bool,
    /// The GS2 header, including its final comma (it is repeated, base64, in `c=`).
    gs2_header: &'a str,
    /// `client-first-message-bare`, part of the AuthMessage.
    bare: &'a str,
    /// Username with `=2C` and `=3D` decoded, before SASLprep.
    username: String,
    client_nonce: &'a str,
}

/// What the exchange needs to remember between server-first and client-final.
pub(crate) struct ExpectClientFinal {
    hash: ScramHash,
    username: String,
    /// `None` for an account that does not exist: the exchange then fails at the end.
    account: Option<ScramCredentials>,
    /// `client-first-message-bare "," server-first-message "," `: the AuthMessage prefix.
    auth_message_prefix: String,
    /// Client and server nonce together, as the client must echo it.
    nonce: String,
    /// The decoded value the `c=` attribute must have: GS2 header plus channel binding data.
    expected_cbind: Vec<u8>,
}

/// Handles the client-first-message `msg`. `server_nonce` is the server's part of the nonce
/// (printable, no comma); `fake_key` keys the salts made up for unknown accounts. Returns the
/// server-first-message and the state to continue with.
pub(crate) fn client_first(
    hash: ScramHash,
    plus: bool,
    msg: &[u8],
    cb: &ChannelBinding,
    lookup: &mut dyn CredentialLookup,
    server_nonce: &str,
    fake_key: &[u8],
) -> Result<(ExpectClientFinal, Vec<u8>), SaslFailure> {
    let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
    let first = parse_client_first(msg).ok_or(SaslFailure::MalformedRequest)?;

    // RFC 5802 §6 and RFC 9266: which channel binding the client asked for must fit both the
    // mechanism it chose and what this server offered.
    let cb_data: &[u8] = match (first.cbind, plus) {
        (CbindFlag::NotSupported, false) => &[],
        (CbindFlag::ClientOnly, false) => {
            if cb.tls_exporter.is_some() {
                // We offered -PLUS, the client says it would have used it: someone removed it.
                return Err(SaslFailure::NotAuthorized);
            }
            &[]
        }
        (CbindFlag::Required(name), true) => match (name, cb.tls_exporter.as_deref()) {
            (TLS_EXPORTER, Some(data)) => data,
            _ => return Err(SaslFailure::NotAuthorized),
        },
        // -PLUS without `p=`, or `p=` with a mechanism that does not bind.
        (CbindFlag::NotSupported | CbindFlag::ClientOnly, true)
        | (CbindFlag::Required(_), false) => {
            return Err(SaslFailure::MalformedRequest);
        }
    };
    if first.authzid {
        return Err(SaslFailure::InvalidAuthzid);
    }
    let username = normalize_username(&first.username)?;

    let account = match lookup.credentials(&username) {
        Err(_) => return Err(SaslFailure::TemporaryAuthFailure),
        Ok(found) => found.map(|c| match hash {
            ScramHash::Sha1 => c.sha1,
            ScramHash::Sha256 => c.sha256,
        }),
    };
    let (salt, iterations) = match &account {
        Some(c) => (c.salt.clone(), c.iterations),
        None => (fake_salt(hash, &username, fake_key), DEFAULT_ITERATIONS),
    };

    let nonce = format!("{}{}", first.client_nonce, server_nonce);
    let server_first = format!("r={},s={},i={}", nonce, base64::encode(&salt), iterations);
    let mut expected_cbind = first.gs2_header.as_bytes().to_vec();
    expected_cbind.extend_from_slice(cb_data);
    let state = ExpectClientFinal {
        hash,
        username,
        account,
        auth_message_prefix: format!("{},{},", first.bare, server_first),
        nonce,
        expected_cbind,
    };
    Ok((state, server_first.into_bytes()))
}

impl ExpectClientFinal {
    /// Handles the client-final-message. On success returns the username and the
    /// server-final-message (`v=ServerSignature`).
    pub(crate) fn client_final(self, msg: &[u8]) -> Result<(String, Vec<u8>), SaslFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let (without_proof, proof) =
            parse_client_final(msg).ok_or(SaslFailure::MalformedRequest)?;
        if !ct_eq(&without_proof.cbind, &self.expected_cbind) || without_proof.nonce != self.nonce {
            return Err(SaslFailure::NotAuthorized);
        }
        let Some(account) = &self.account else {
            return Err(SaslFailure::NotAuthorized);
        };
        if proof.len() != self.hash.output_len() {
            return Err(SaslFailure::NotAuthorized);
        }
        let auth_message = format!("{}{}", self.auth_message_prefix, without_proof.text);
        // RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and the proof
        // is right if H(ClientKey) = StoredKey.
        let client_signature = self.hash.hmac(&account.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !ct_eq(&self.hash.digest(&client_key), &account.stored_key) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&account.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", base64::encode(&server_signature));
        Ok((self.username, server_final.into_bytes()))
    }
}

/// A plausible salt for an account that does not exist: stable for a given username and key,
/// unpredictable without the key.
fn fake_salt(hash: ScramHash, username: &str, fake_key: &[u8]) -> Vec<u8> {
    let label: &[u8] = match hash {
        ScramHash::Sha1 => b"SCRAM-SHA-1\0",
        ScramHash::Sha256 => b"SCRAM-SHA-256\0",
    };
    let mut data = label.to_vec();
    data.extend_from_slice(username.as_bytes());
    let mut salt = ScramHash::Sha256.hmac(fake_key, &data);
    salt.truncate(FAKE_SALT_BYTES);
    salt
}

/// RFC 5802 §7 `printable`: any printable ASCII except `,`.
fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An attribute-value pair `a=value`, with `a` a single letter.
fn attr(s: &str, name: char) -> Option<&str> {
    let mut chars = s.chars();
    (chars.next()? == name && chars.next()? == '=').then_some(chars.as_str())
}

/// RFC 5802 §7 `extensions`: each must at least look like an attribute; the values are ignored.
fn valid_extension(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b, [a, b'=', rest @ ..] if a.is_ascii_alphabetic() && !rest.is_empty())
}

/// Decodes a `saslname` (RFC 5802 §5.1): `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i)?);
        let after = rest.get(i..)?;
        if let Some(r) = after.strip_prefix("=2C") {
            out.push(',');
            rest = r;
        } else if let Some(r) = after.strip_prefix("=3D") {
            out.push('=');
            rest = r;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

fn parse_client_first(msg: &str) -> Option<ClientFirst<'_>> {
    let (flag, rest) = msg.split_once(',')?;
    let (authzid, bare) = rest.split_once(',')?;
    let gs2_header = msg.get(..msg.len() - bare.len())?;

    let cbind = match flag {
        "n" => CbindFlag::NotSupported,
        "y" => CbindFlag::ClientOnly,
        _ => {
            let name = attr(flag, 'p')?;
            // RFC 5802 §7 `cb-name`: 1*(ALPHA / DIGIT / "." / "-").
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return None;
            }
            CbindFlag::Required(name)
        }
    };
    let authzid = match authzid {
        "" => false,
        a => {
            attr(a, 'a')?;
            true
        }
    };

    let mut attrs = bare.split(',');
    // A leading `m=` is the reserved mandatory extension (RFC 5802 §5.1): nothing is defined
    // for it, so it cannot be honoured; `attr(.., 'n')` refuses it as malformed.
    let username = decode_saslname(attr(attrs.next()?, 'n')?)?;
    let client_nonce = attr(attrs.next()?, 'r')?;
    if !is_printable_nonce(client_nonce) || !attrs.all(valid_extension) {
        return None;
    }
    Some(ClientFirst {
        cbind,
        authzid,
        gs2_header,
        bare,
        username,
        client_nonce,
    })
}

/// `client-final-message-without-proof`, parsed.
struct WithoutProof<'a> {
    /// The whole text, part of the AuthMessage.
    text: &'a str,
    /// `c=`, decoded.
    cbind: Vec<u8>,
    nonce: &'a str,
}

/// Parses the client-final-message into its part without proof and the decoded proof.
fn parse_client_final(msg: &str) -> Option<(WithoutProof<'_>, Vec<u8>)> {
    // The proof is the last attribute (RFC 5802 §7), and base64 has no commas.
    let (text, proof) = msg.rsplit_once(",p=")?;
    let proof = base64::decode(proof)?;
    let mut attrs = text.split(',');
    let cbind = base64::decode(attr(attrs.next()?, 'c')?)?;
    let nonce = attr(attrs.next()?, 'r')?;
    // Neither `c=` nor `p=` may be empty (RFC 5802 §7: the GS2 header is never empty, and
    // `proof` is base64 of a hash).
    if cbind.is_empty() || proof.is_empty() {
        return None;
    }
    if !is_printable_nonce(nonce) || !attrs.all(valid_extension) {
        return None;
    }
    Some((WithoutProof { text, cbind, nonce }, proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_saslname_escapes_decoded() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("=3D").as_deref(), Some("="));
        assert_eq!(decode_saslname("plain").as_deref(), Some("plain"));
        for bad in ["", "a=", "a=2", "a=2c", "a=41", "=", "a=3Db=x"] {
            assert_eq!(decode_saslname(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_client_first_fields_split() {
        let f = parse_client_first("p=tls-exporter,,n=user,r=abc,x=ext").unwrap();
        assert_eq!(f.cbind, CbindFlag::Required("tls-exporter"));
        assert!(!f.authzid);
        assert_eq!(f.gs2_header, "p=tls-exporter,,");
        assert_eq!(f.bare, "n=user,r=abc,x=ext");
        assert_eq!(f.username, "user");
        assert_eq!(f.client_nonce, "abc");
        let f = parse_client_first("y,a=admin,n=u,r=n").unwrap();
        assert_eq!(f.cbind, CbindFlag::ClientOnly);
        assert!(f.authzid);
    }

    #[test]
    fn parse_client_first_bad_syntax_refused() {
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "p=,,n=user,r=abc",
            "p=tls_exporter,,n=user,r=abc",
            "n,b=x,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,r=abc,n=user",
            "n,,n=user",
            "n,,n=user,r=",
            "n,,n=user,r=a b",
            "n,,n=,r=abc",
            "n,,n=us=er,r=abc",
            "n,,n=user,r=abc,",
            "n,,n=user,r=abc,1=x",
            "n,,n=user,r=abc,x=",
        ] {
            assert!(parse_client_first(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn parse_client_final_fields_split() {
        let (w, proof) = parse_client_final("c=biws,r=abc,p=AAEC").unwrap();
        assert_eq!(w.text, "c=biws,r=abc");
        assert_eq!(w.cbind, b"n,,");
        assert_eq!(w.nonce, "abc");
        assert_eq!(proof, [0, 1, 2]);
        for bad in [
            "",
            "c=biws,r=abc",
            "c=biws,r=abc,p=",
            "c=biws,r=abc,p=AAE",
            "c=bi,r=abc,p=AAEC",
            "c=,r=abc,p=AAEC",
            "r=abc,c=biws,p=AAEC",
            "c=biws,p=AAEC",
            "c=biws,r=abc,p=AAEC,x=y",
        ] {
            assert!(parse_client_final(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn fake_salt_stable_per_user_and_key() {
        let a = fake_salt(ScramHash::Sha256, "alice", b"k1");
        assert_eq!(a.len(), FAKE_SALT_BYTES);
        assert_eq!(a, fake_salt(ScramHash::Sha256, "alice", b"k1"));
        assert_ne!(a, fake_salt(ScramHash::Sha256, "bob", b"k1"));
        assert_ne!(a, fake_salt(ScramHash::Sha256, "alice", b"k2"));
        assert_ne!(a, fake_salt(ScramHash::Sha1, "alice", b"k1"));
    }
}
