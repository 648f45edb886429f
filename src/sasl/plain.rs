//! PLAIN (RFC 4616), server side, checked against SCRAM-only storage.
//!
//! Owns: parsing `[authzid] NUL authcid NUL passwd` and checking the password the way Prosody
//! does for SCRAM-hashed accounts: SCRAM-SHA-256's SaltedPassword is recomputed with the stored
//! salt and iteration count, and the resulting StoredKey compared in constant time. Leaves to
//! `offered`/`SaslSession`: refusing PLAIN on unencrypted streams.
//!
//! An authzid is refused (`invalid-authzid`), as for SCRAM. An unknown account costs the same
//! PBKDF2 run as a known one (with a made-up salt), so timing does not reveal which exist.

use super::credentials::{ScramCredentials, ScramHash, verify_prepared};
use super::saslprep::saslprep;
use super::{CredentialLookup, DEFAULT_ITERATIONS, SaslFailure, normalize_username};

/// Handles the PLAIN message; returns the authenticated username.
pub(crate) fn authenticate(
    msg: &[u8],
    lookup: &mut dyn CredentialLookup,
    fake_key: &[u8],
) -> Result<String, SaslFailure> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let (Ok(authcid), Ok(passwd)) = (std::str::from_utf8(authcid), std::str::from_utf8(passwd))
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    if authcid.is_empty() || passwd.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    if !authzid.is_empty() {
        return Err(SaslFailure::InvalidAuthzid);
    }
    let username = normalize_username(authcid)?;
    let account = lookup
        .credentials(&username)
        .map_err(|_| SaslFailure::TemporaryAuthFailure)?
        .map(|c| c.sha256);
    // A password SASLprep refuses cannot match anything; it still gets checked (as the empty
    // string never stored) so that it costs the same.
    let prepared = saslprep(passwd).ok();
    let candidate = prepared.as_deref().unwrap_or("");
    let ok = match &account {
        Some(c) => verify_prepared(c, candidate) && prepared.is_some(),
        None => {
            let mut key_input = b"PLAIN\0".to_vec();
            key_input.extend_from_slice(username.as_bytes());
            let salt = ScramHash::Sha256.hmac(fake_key, &key_input);
            // The result is thrown away: this only spends the time a real check would.
            let _ = ScramCredentials::from_prepared(
                ScramHash::Sha256,
                candidate,
                &salt,
                DEFAULT_ITERATIONS,
            );
            false
        }
    };
    if ok {
        Ok(username)
    } else {
        Err(SaslFailure::NotAuthorized)
    }
}
