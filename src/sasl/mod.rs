//! SASL (RFC 6120 §6) mechanisms on the server side: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS)
//! and PLAIN, and the SCRAM credentials that are all Hearth stores of a password.
//! (SKELETON: the sasl helper writes the bodies.)
//!
//! Owns: the mechanism exchanges, channel binding checks (RFC 9266 `tls-exporter`), SaslPrep
//! of passwords, credential derivation. Leaves to others: the XML wrapping (`<auth/>`,
//! `<challenge/>` …, in `stream::c2s`), where credentials are stored (`store`), and delays and
//! attempt counting after failures (`stream::c2s`).

pub mod credentials;

pub use credentials::{Credentials, ScramCredentials, ScramHash};

/// Mechanisms in the order they are offered (strongest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::ScramSha256Plus,
            Mechanism::ScramSha1Plus,
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// The mechanisms to offer on a stream. PLAIN only over TLS; -PLUS only when channel-binding
/// data is available (TLS 1.3 exporter).
pub fn offered(tls: bool, channel_binding: bool) -> Vec<Mechanism> {
    let mut v = Vec::new();
    if channel_binding {
        v.push(Mechanism::ScramSha256Plus);
        v.push(Mechanism::ScramSha1Plus);
    }
    v.push(Mechanism::ScramSha256);
    v.push(Mechanism::ScramSha1);
    if tls {
        v.push(Mechanism::Plain);
    }
    v
}

/// RFC 6120 §6.5 failure conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslFailure {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslFailure {
    pub fn name(self) -> &'static str {
        use SaslFailure::*;
        match self {
            Aborted => "aborted",
            AccountDisabled => "account-disabled",
            CredentialsExpired => "credentials-expired",
            EncryptionRequired => "encryption-required",
            IncorrectEncoding => "incorrect-encoding",
            InvalidAuthzid => "invalid-authzid",
            InvalidMechanism => "invalid-mechanism",
            MalformedRequest => "malformed-request",
            MechanismTooWeak => "mechanism-too-weak",
            NotAuthorized => "not-authorized",
            TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// What the stream should do after a SASL step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Send `<challenge>` with these (raw, not yet base64) bytes.
    Challenge(Vec<u8>),
    /// Authenticated as `username` (the normalised localpart); send `<success>` with these
    /// additional data bytes (SCRAM's server-final-message; empty for PLAIN).
    Success {
        username: String,
        additional: Vec<u8>,
    },
    Failure(SaslFailure),
}

/// Facts about the transport that mechanisms need.
#[derive(Clone, Debug, Default)]
pub struct ChannelBinding {
    /// RFC 9266 tls-exporter data (32 bytes) when the stream runs over TLS 1.3.
    pub tls_exporter: Option<Vec<u8>>,
    /// Whether the stream is encrypted (PLAIN is refused otherwise).
    pub tls: bool,
}

/// Looks up the stored credentials of a (normalised) localpart on this stream's domain.
pub trait CredentialLookup {
    /// `Ok(None)`: no such account. `Err`: the store failed (the exchange then ends with
    /// `temporary-auth-failure`).
    fn credentials(&mut self, username: &str) -> Result<Option<Credentials>, SaslFailure>;
}

/// One authentication exchange in progress.
pub struct SaslSession {
    _private: (),
}

impl SaslSession {
    /// Starts `mechanism` with the client's initial response (raw bytes, already decoded from
    /// base64; empty if none or `=`). `nonce_source` fills buffers with random bytes.
    pub fn start(
        _mechanism: Mechanism,
        _initial_response: &[u8],
        _cb: &ChannelBinding,
        _lookup: &mut dyn CredentialLookup,
        _nonce_source: &mut dyn FnMut(&mut [u8]),
    ) -> (SaslSession, SaslStep) {
        todo!("sasl helper")
    }

    /// Continues with the client's `<response>` (raw bytes).
    pub fn step(
        &mut self,
        _response: &[u8],
        _cb: &ChannelBinding,
        _lookup: &mut dyn CredentialLookup,
    ) -> SaslStep {
        todo!("sasl helper")
    }
}
