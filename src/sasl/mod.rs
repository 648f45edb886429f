//! SASL (RFC 6120 §6) mechanisms on the server side: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS)
//! and PLAIN, and the SCRAM credentials that are all Hearth stores of a password.
//! (SKELETON: the sasl helper writes the bodies.)
//!
//! Owns: the mechanism exchanges, channel binding checks (RFC 9266 `tls-exporter`), SaslPrep
//! of passwords, credential derivation. Leaves to others: the XML wrapping (`<auth/>`,
//! `<challenge/>` …, in `stream::c2s`), where credentials are stored (`store`), and delays and
//! attempt counting after failures (`stream::c2s`).
//!
//! Files: `scram.rs` (SCRAM and -PLUS), `plain.rs` (PLAIN), `saslprep.rs` (SASLprep-lite, see
//! there for what is left out), `credentials.rs` (derivation, password checks, storage form).
//!
//! Usernames are XMPP localparts: after `=2C`/`=3D` decoding (SCRAM) and SASLprep-lite, the
//! localpart rules of `jid` apply (forbidden `"&'/:<>@`, spaces and controls; lowercased). A
//! username that breaks them fails with `not-authorized`, as no such account can exist.
//! An authzid is always refused with `invalid-authzid`: the mechanisms do not know the
//! stream's domain, so they cannot tell a harmless authzid (the user's own bare JID) from an
//! attempt to act as someone else; clients omit it in practice.

pub mod credentials;
mod plain;
pub mod saslprep;
mod scram;

pub use credentials::{
    Credentials, DEFAULT_ITERATIONS, ScramCredentials, ScramHash, verify_password,
};

use crate::base64;
use crate::jid::Jid;

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

    /// A secret that stays the same for the life of the process (made once at startup from
    /// the random source). It keys the salts made up for accounts that do not exist, so that
    /// asking twice for the same unknown user gives the same salt, as for a real account.
    /// `None` (the default): each exchange draws its own key from `nonce_source`, which is
    /// correct but lets a client that asks twice tell unknown accounts from real ones.
    fn fake_salt_key(&self) -> Option<[u8; 32]> {
        None
    }
}

/// Upper bound on one client message (the c2s layer also bounds the element): ample for any
/// real username, nonce, password or proof.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Bytes of randomness in the server's part of the SCRAM nonce (base64-encoded: 32 chars).
const SERVER_NONCE_BYTES: usize = 24;

/// Where an exchange stands.
enum State {
    /// The client sent no initial response; we sent an empty challenge (RFC 6120 §6.4.2) and
    /// wait for the first message.
    ExpectInitial,
    /// SCRAM: server-first-message sent, waiting for client-final-message.
    ExpectClientFinal(Box<scram::ExpectClientFinal>),
    /// Succeeded or failed; nothing more is accepted.
    Done,
}

/// One authentication exchange in progress.
pub struct SaslSession {
    mechanism: Mechanism,
    state: State,
    /// The server's part of the SCRAM nonce, drawn at `start` (`step` has no random source).
    server_nonce: String,
    /// Keys made-up salts for unknown accounts (see `CredentialLookup::fake_salt_key`).
    fake_key: [u8; 32],
}

impl SaslSession {
    /// Starts `mechanism` with the client's initial response (raw bytes, already decoded from
    /// base64; empty if none or `=`). `nonce_source` fills buffers with random bytes.
    ///
    /// An empty initial response is answered with an empty challenge, after which the client's
    /// first message comes as a `<response>`. A mechanism that `offered` would not have listed
    /// for this transport fails at once (PLAIN without TLS: `encryption-required`; -PLUS
    /// without exporter data: `invalid-mechanism`).
    pub fn start(
        mechanism: Mechanism,
        initial_response: &[u8],
        cb: &ChannelBinding,
        lookup: &mut dyn CredentialLookup,
        nonce_source: &mut dyn FnMut(&mut [u8]),
    ) -> (SaslSession, SaslStep) {
        let fake_key = lookup.fake_salt_key().unwrap_or_else(|| {
            let mut k = [0u8; 32];
            nonce_source(&mut k);
            k
        });
        let server_nonce = if mechanism == Mechanism::Plain {
            String::new()
        } else {
            let mut raw = [0u8; SERVER_NONCE_BYTES];
            nonce_source(&mut raw);
            base64::encode(&raw)
        };
        Self::start_with(
            mechanism,
            initial_response,
            cb,
            lookup,
            server_nonce,
            fake_key,
        )
    }

    /// `start` with the randomness already drawn; tests inject the RFC examples' nonces here.
    fn start_with(
        mechanism: Mechanism,
        initial_response: &[u8],
        cb: &ChannelBinding,
        lookup: &mut dyn CredentialLookup,
        server_nonce: String,
        fake_key: [u8; 32],
    ) -> (SaslSession, SaslStep) {
        let mut session = SaslSession {
            mechanism,
            state: State::Done,
            server_nonce,
            fake_key,
        };
        let refused = match mechanism {
            Mechanism::Plain if !cb.tls => Some(SaslFailure::EncryptionRequired),
            Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus if cb.tls_exporter.is_none() => {
                Some(SaslFailure::InvalidMechanism)
            }
            _ => None,
        };
        if let Some(f) = refused {
            return (session, SaslStep::Failure(f));
        }
        if initial_response.is_empty() {
            session.state = State::ExpectInitial;
            return (session, SaslStep::Challenge(Vec::new()));
        }
        let step = session.first_message(initial_response, cb, lookup);
        (session, step)
    }

    /// Continues with the client's `<response>` (raw bytes).
    pub fn step(
        &mut self,
        response: &[u8],
        cb: &ChannelBinding,
        lookup: &mut dyn CredentialLookup,
    ) -> SaslStep {
        if response.len() > MAX_MESSAGE_BYTES {
            self.state = State::Done;
            return SaslStep::Failure(SaslFailure::MalformedRequest);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            // A second empty message would loop forever; the first message is never empty.
            State::ExpectInitial if response.is_empty() => {
                SaslStep::Failure(SaslFailure::MalformedRequest)
            }
            State::ExpectInitial => self.first_message(response, cb, lookup),
            State::ExpectClientFinal(expect) => match expect.client_final(response) {
                Ok((username, additional)) => SaslStep::Success {
                    username,
                    additional,
                },
                Err(f) => SaslStep::Failure(f),
            },
            State::Done => SaslStep::Failure(SaslFailure::MalformedRequest),
        }
    }

    /// Handles the mechanism's first client message (state is `Done` on entry).
    fn first_message(
        &mut self,
        msg: &[u8],
        cb: &ChannelBinding,
        lookup: &mut dyn CredentialLookup,
    ) -> SaslStep {
        if msg.len() > MAX_MESSAGE_BYTES {
            return SaslStep::Failure(SaslFailure::MalformedRequest);
        }
        let (hash, plus) = match self.mechanism {
            Mechanism::Plain => {
                return match plain::authenticate(msg, lookup, &self.fake_key) {
                    Ok(username) => SaslStep::Success {
                        username,
                        additional: Vec::new(),
                    },
                    Err(f) => SaslStep::Failure(f),
                };
            }
            Mechanism::ScramSha256Plus => (ScramHash::Sha256, true),
            Mechanism::ScramSha1Plus => (ScramHash::Sha1, true),
            Mechanism::ScramSha256 => (ScramHash::Sha256, false),
            Mechanism::ScramSha1 => (ScramHash::Sha1, false),
        };
        match scram::client_first(
            hash,
            plus,
            msg,
            cb,
            lookup,
            &self.server_nonce,
            &self.fake_key,
        ) {
            Ok((expect, server_first)) => {
                self.state = State::ExpectClientFinal(Box::new(expect));
                SaslStep::Challenge(server_first)
            }
            Err(f) => SaslStep::Failure(f),
        }
    }
}

/// Turns a SASL username (after any mechanism-specific unescaping) into the localpart it names:
/// SASLprep-lite, then the localpart rules of `jid`. Anything refused is `not-authorized`.
fn normalize_username(raw: &str) -> Result<String, SaslFailure> {
    let prepared = saslprep::saslprep(raw).map_err(|_| SaslFailure::NotAuthorized)?;
    // Checked here as well as by `Jid::parse` because `@` and `/` would otherwise be taken as
    // JID separators below instead of being refused.
    if prepared
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"&'/:<>@".contains(c))
    {
        return Err(SaslFailure::NotAuthorized);
    }
    let jid =
        Jid::parse(&format!("{prepared}@localhost")).map_err(|_| SaslFailure::NotAuthorized)?;
    jid.local()
        .map(str::to_owned)
        .ok_or(SaslFailure::NotAuthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory account table; `broken` makes every lookup fail like a dead store.
    #[derive(Default)]
    struct Accounts {
        map: HashMap<String, Credentials>,
        broken: bool,
        key: Option<[u8; 32]>,
    }

    impl CredentialLookup for Accounts {
        fn credentials(&mut self, username: &str) -> Result<Option<Credentials>, SaslFailure> {
            if self.broken {
                return Err(SaslFailure::TemporaryAuthFailure);
            }
            Ok(self.map.get(username).cloned())
        }

        fn fake_salt_key(&self) -> Option<[u8; 32]> {
            self.key
        }
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::decode(s).unwrap()
    }

    /// "pencil" with the salts of RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256).
    fn rfc_creds() -> Credentials {
        Credentials {
            sha1: ScramCredentials::from_prepared(
                ScramHash::Sha1,
                "pencil",
                &b64("QSXCR+Q6sek8bf92"),
                4096,
            )
            .unwrap(),
            sha256: ScramCredentials::from_prepared(
                ScramHash::Sha256,
                "pencil",
                &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
                4096,
            )
            .unwrap(),
        }
    }

    fn accounts_with(name: &str, creds: Credentials) -> Accounts {
        let mut a = Accounts::default();
        a.map.insert(name.to_owned(), creds);
        a
    }

    fn user_pencil() -> Accounts {
        accounts_with("user", rfc_creds())
    }

    fn no_tls() -> ChannelBinding {
        ChannelBinding::default()
    }

    fn tls12() -> ChannelBinding {
        ChannelBinding {
            tls_exporter: None,
            tls: true,
        }
    }

    fn tls13(data: &[u8]) -> ChannelBinding {
        ChannelBinding {
            tls_exporter: Some(data.to_vec()),
            tls: true,
        }
    }

    /// Deterministic "random" bytes: 1, 2, 3, …
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    /// The client side of SCRAM: builds the client-final-message answering `server_first`.
    fn client_final(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind_input: &[u8],
    ) -> String {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for a in server_first.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = a.strip_prefix("s=") {
                salt = b64(v);
            } else if let Some(v) = a.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            }
        }
        let without_proof = format!("c={},r={}", base64::encode(cbind_input), nonce);
        let salted = hash.salted_password(password, &salt, iterations).unwrap();
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.digest(&client_key);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hash.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", base64::encode(&proof))
    }

    fn challenge(step: SaslStep) -> String {
        match step {
            SaslStep::Challenge(c) => String::from_utf8(c).unwrap(),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Runs a whole SCRAM exchange with a random server nonce and returns the final step.
    fn scram_exchange(
        mech: Mechanism,
        password: &str,
        gs2_header: &str,
        cb_data: &[u8],
        cb: &ChannelBinding,
        accounts: &mut Accounts,
    ) -> SaslStep {
        let hash = match mech {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => ScramHash::Sha1,
            _ => ScramHash::Sha256,
        };
        let bare = "n=user,r=clientnonce123";
        let first = format!("{gs2_header}{bare}");
        let (mut s, step) =
            SaslSession::start(mech, first.as_bytes(), cb, accounts, &mut counter());
        let server_first = challenge(step);
        let mut cbind = gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(cb_data);
        let fin = client_final(hash, password, bare, &server_first, &cbind);
        s.step(fin.as_bytes(), cb, accounts)
    }

    fn success(additional_prefix: &str) -> impl Fn(&SaslStep) -> bool + '_ {
        move |s| matches!(s, SaslStep::Success { username, additional } if username == "user" && additional.starts_with(additional_prefix.as_bytes()))
    }

    #[test]
    fn scram_sha1_rfc5802_example_succeeds() {
        let mut acc = user_pencil();
        let (mut s, step) = SaslSession::start_with(
            Mechanism::ScramSha1,
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &no_tls(),
            &mut acc,
            "3rfcNHYJY1ZVvWVs7j".to_owned(),
            [7; 32],
        );
        assert_eq!(
            step,
            SaslStep::Challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096".to_vec()
            )
        );
        let step = s.step(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            &no_tls(),
            &mut acc,
        );
        assert_eq!(
            step,
            SaslStep::Success {
                username: "user".to_owned(),
                additional: b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec(),
            }
        );
    }

    #[test]
    fn scram_sha256_rfc7677_example_succeeds() {
        let mut acc = user_pencil();
        let (mut s, step) = SaslSession::start_with(
            Mechanism::ScramSha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &tls12(),
            &mut acc,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
            [7; 32],
        );
        assert_eq!(
            challenge(step),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let step = s.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            &tls12(),
            &mut acc,
        );
        assert_eq!(
            step,
            SaslStep::Success {
                username: "user".to_owned(),
                additional: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            }
        );
    }

    #[test]
    fn scram_start_server_nonce_from_source() {
        let mut acc = user_pencil();
        let (_, step) = SaslSession::start(
            Mechanism::ScramSha256,
            b"n,,n=user,r=abc",
            &no_tls(),
            &mut acc,
            &mut counter(),
        );
        // The fake key takes bytes 1..=32, the nonce the next 24.
        let raw: Vec<u8> = (33..57).collect();
        let expected = format!(
            "r=abc{},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            base64::encode(&raw)
        );
        assert_eq!(challenge(step), expected);
    }

    #[test]
    fn scram_plus_tls_exporter_succeeds() {
        let cb = tls13(&[0xab; 32]);
        for mech in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
            let step = scram_exchange(
                mech,
                "pencil",
                "p=tls-exporter,,",
                &[0xab; 32],
                &cb,
                &mut user_pencil(),
            );
            assert!(success("v=")(&step), "{mech:?}: {step:?}");
        }
    }

    #[test]
    fn scram_plus_mismatched_cb_data_not_authorized() {
        let cb = tls13(&[0xab; 32]);
        let step = scram_exchange(
            Mechanism::ScramSha256Plus,
            "pencil",
            "p=tls-exporter,,",
            &[0xac; 32],
            &cb,
            &mut user_pencil(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
        // The GS2 header alone, without the binding data, does not do either.
        let step = scram_exchange(
            Mechanism::ScramSha256Plus,
            "pencil",
            "p=tls-exporter,,",
            &[],
            &cb,
            &mut user_pencil(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
    }

    #[test]
    fn scram_cb_input_other_than_header_not_authorized() {
        // Non-PLUS: c= must be exactly base64("n,,").
        let step = scram_exchange(
            Mechanism::ScramSha256,
            "pencil",
            "n,,",
            b"x",
            &tls12(),
            &mut user_pencil(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
    }

    #[test]
    fn scram_y_flag_with_plus_offered_not_authorized() {
        let mut acc = user_pencil();
        let (_, step) = SaslSession::start(
            Mechanism::ScramSha256,
            b"y,,n=user,r=abc",
            &tls13(&[1; 32]),
            &mut acc,
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
    }

    #[test]
    fn scram_y_flag_without_plus_offered_succeeds() {
        let step = scram_exchange(
            Mechanism::ScramSha1,
            "pencil",
            "y,,",
            &[],
            &tls12(),
            &mut user_pencil(),
        );
        assert!(success("v=")(&step), "{step:?}");
    }

    #[test]
    fn scram_n_flag_with_plus_offered_succeeds() {
        // The client does not support channel binding at all: no downgrade to detect.
        let step = scram_exchange(
            Mechanism::ScramSha256,
            "pencil",
            "n,,",
            &[],
            &tls13(&[1; 32]),
            &mut user_pencil(),
        );
        assert!(success("v=")(&step), "{step:?}");
    }

    #[test]
    fn scram_cb_flag_mechanism_mismatch_refused() {
        let cb = tls13(&[1; 32]);
        let cases = [
            (
                Mechanism::ScramSha256Plus,
                "n,,n=user,r=abc",
                SaslFailure::MalformedRequest,
            ),
            (
                Mechanism::ScramSha1Plus,
                "y,,n=user,r=abc",
                SaslFailure::MalformedRequest,
            ),
            (
                Mechanism::ScramSha256,
                "p=tls-exporter,,n=user,r=abc",
                SaslFailure::MalformedRequest,
            ),
            (
                Mechanism::ScramSha256Plus,
                "p=tls-unique,,n=user,r=abc",
                SaslFailure::NotAuthorized,
            ),
            (
                Mechanism::ScramSha256Plus,
                "p=tls-server-end-point,,n=user,r=abc",
                SaslFailure::NotAuthorized,
            ),
        ];
        for (mech, first, failure) in cases {
            let (_, step) = SaslSession::start(
                mech,
                first.as_bytes(),
                &cb,
                &mut user_pencil(),
                &mut counter(),
            );
            assert_eq!(step, SaslStep::Failure(failure), "{mech:?} {first}");
        }
    }

    #[test]
    fn scram_plus_without_exporter_invalid_mechanism() {
        let (_, step) = SaslSession::start(
            Mechanism::ScramSha256Plus,
            b"p=tls-exporter,,n=user,r=abc",
            &tls12(),
            &mut user_pencil(),
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::InvalidMechanism));
    }

    #[test]
    fn scram_wrong_password_not_authorized() {
        for mech in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
            let step = scram_exchange(mech, "pencil2", "n,,", &[], &tls12(), &mut user_pencil());
            assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
        }
    }

    #[test]
    fn scram_unknown_user_challenge_then_not_authorized() {
        let mut acc = Accounts {
            key: Some([9; 32]),
            ..Accounts::default()
        };
        let start = |acc: &mut Accounts| {
            SaslSession::start(
                Mechanism::ScramSha256,
                b"n,,n=nobody,r=abc",
                &tls12(),
                acc,
                &mut counter(),
            )
        };
        let (mut s, step) = start(&mut acc);
        let server_first = challenge(step);
        let salt = server_first
            .split(",s=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(b64(salt).len(), 16);
        assert!(server_first.ends_with(",i=4096"), "{server_first}");
        // Same salt on a second attempt, as a real account would show.
        let (_, again) = start(&mut acc);
        assert!(challenge(again).contains(&format!(",s={salt},")));
        let fin = client_final(
            ScramHash::Sha256,
            "pencil",
            "n=nobody,r=abc",
            &server_first,
            b"n,,",
        );
        assert_eq!(
            s.step(fin.as_bytes(), &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn scram_authzid_invalid_authzid() {
        for first in ["n,a=user@example.org,n=user,r=abc", "n,a=,n=user,r=abc"] {
            let (_, step) = SaslSession::start(
                Mechanism::ScramSha256,
                first.as_bytes(),
                &tls12(),
                &mut user_pencil(),
                &mut counter(),
            );
            assert_eq!(
                step,
                SaslStep::Failure(SaslFailure::InvalidAuthzid),
                "{first}"
            );
        }
    }

    #[test]
    fn scram_nonce_mismatch_not_authorized() {
        let mut acc = user_pencil();
        let bare = "n=user,r=abc";
        let (mut s, step) = SaslSession::start(
            Mechanism::ScramSha256,
            format!("n,,{bare}").as_bytes(),
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        // A client that computes its proof over a different nonce than the server's.
        let server_first = challenge(step).replacen("r=abc", "r=abd", 1);
        let fin = client_final(ScramHash::Sha256, "pencil", bare, &server_first, b"n,,");
        assert_eq!(
            s.step(fin.as_bytes(), &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn scram_username_escaped_and_lowercased() {
        let mut acc = accounts_with("a,b=c", rfc_creds());
        let bare = "n=A=2Cb=3DC,r=abc";
        let (mut s, step) = SaslSession::start(
            Mechanism::ScramSha1,
            format!("n,,{bare}").as_bytes(),
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        let fin = client_final(ScramHash::Sha1, "pencil", bare, &challenge(step), b"n,,");
        match s.step(fin.as_bytes(), &tls12(), &mut acc) {
            SaslStep::Success { username, .. } => assert_eq!(username, "a,b=c"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scram_username_forbidden_not_authorized() {
        for name in ["a@b", "a/b", "a b", "a:b", "a\u{0001}b", "a'b", "\u{00AD}"] {
            let first = format!("n,,n={name},r=abc");
            let (_, step) = SaslSession::start(
                Mechanism::ScramSha256,
                first.as_bytes(),
                &tls12(),
                &mut user_pencil(),
                &mut counter(),
            );
            assert_eq!(
                step,
                SaslStep::Failure(SaslFailure::NotAuthorized),
                "{name:?}"
            );
        }
    }

    #[test]
    fn scram_store_error_temporary_auth_failure() {
        let mut acc = Accounts {
            broken: true,
            ..Accounts::default()
        };
        let (_, step) = SaslSession::start(
            Mechanism::ScramSha256,
            b"n,,n=user,r=abc",
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::TemporaryAuthFailure));
    }

    #[test]
    fn scram_bad_first_message_malformed_request() {
        for first in [
            &b"n,,m=x,n=user,r=abc"[..],
            b"n,,n=user",
            b"n,,n=us=41er,r=abc",
            b"n,,n=user,r=\xff",
            b"hello",
        ] {
            let (_, step) = SaslSession::start(
                Mechanism::ScramSha256,
                first,
                &tls12(),
                &mut user_pencil(),
                &mut counter(),
            );
            assert_eq!(step, SaslStep::Failure(SaslFailure::MalformedRequest));
        }
        let long = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_BYTES));
        let (_, step) = SaslSession::start(
            Mechanism::ScramSha256,
            long.as_bytes(),
            &tls12(),
            &mut user_pencil(),
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::MalformedRequest));
    }

    #[test]
    fn scram_no_initial_response_empty_challenge_then_proceeds() {
        let mut acc = user_pencil();
        let (mut s, step) = SaslSession::start(
            Mechanism::ScramSha256,
            b"",
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Challenge(Vec::new()));
        let bare = "n=user,r=abc";
        let server_first = challenge(s.step(format!("n,,{bare}").as_bytes(), &tls12(), &mut acc));
        let fin = client_final(ScramHash::Sha256, "pencil", bare, &server_first, b"n,,");
        assert!(success("v=")(&s.step(fin.as_bytes(), &tls12(), &mut acc)));
        // A second empty message instead of the first one is refused.
        let (mut s, _) = SaslSession::start(
            Mechanism::ScramSha256,
            b"",
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        assert_eq!(
            s.step(b"", &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::MalformedRequest)
        );
    }

    #[test]
    fn session_step_after_end_malformed_request() {
        let mut acc = user_pencil();
        let bare = "n=user,r=abc";
        let (mut s, step) = SaslSession::start(
            Mechanism::ScramSha256,
            format!("n,,{bare}").as_bytes(),
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        let fin = client_final(ScramHash::Sha256, "pencil", bare, &challenge(step), b"n,,");
        assert!(success("v=")(&s.step(fin.as_bytes(), &tls12(), &mut acc)));
        // Replaying the final message after success.
        assert_eq!(
            s.step(fin.as_bytes(), &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::MalformedRequest)
        );
        // And after a failure.
        let (mut s, step) = SaslSession::start(
            Mechanism::Plain,
            b"\0user\0nope",
            &tls12(),
            &mut acc,
            &mut counter(),
        );
        assert_eq!(step, SaslStep::Failure(SaslFailure::NotAuthorized));
        assert_eq!(
            s.step(b"\0user\0pencil", &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::MalformedRequest)
        );
    }

    fn plain(msg: &[u8], cb: &ChannelBinding, acc: &mut Accounts) -> SaslStep {
        SaslSession::start(Mechanism::Plain, msg, cb, acc, &mut counter()).1
    }

    #[test]
    fn plain_correct_password_succeeds() {
        let mut acc = user_pencil();
        assert_eq!(
            plain(b"\0User\0pencil", &tls12(), &mut acc),
            SaslStep::Success {
                username: "user".to_owned(),
                additional: Vec::new(),
            }
        );
        // Without an initial response: empty challenge, then the message.
        let (mut s, step) =
            SaslSession::start(Mechanism::Plain, b"", &tls12(), &mut acc, &mut counter());
        assert_eq!(step, SaslStep::Challenge(Vec::new()));
        assert!(success("")(&s.step(b"\0user\0pencil", &tls12(), &mut acc)));
    }

    #[test]
    fn plain_wrong_password_not_authorized() {
        let mut acc = user_pencil();
        for msg in [
            &b"\0user\0Pencil"[..],
            b"\0user\0pencil ",
            b"\0user\0\xc2\xad",
        ] {
            assert_eq!(
                plain(msg, &tls12(), &mut acc),
                SaslStep::Failure(SaslFailure::NotAuthorized)
            );
        }
    }

    #[test]
    fn plain_without_tls_encryption_required() {
        assert_eq!(
            plain(b"\0user\0pencil", &no_tls(), &mut user_pencil()),
            SaslStep::Failure(SaslFailure::EncryptionRequired)
        );
    }

    #[test]
    fn plain_authzid_invalid_authzid() {
        assert_eq!(
            plain(
                b"user@localhost\0user\0pencil",
                &tls12(),
                &mut user_pencil()
            ),
            SaslStep::Failure(SaslFailure::InvalidAuthzid)
        );
    }

    #[test]
    fn plain_unknown_user_not_authorized() {
        assert_eq!(
            plain(b"\0nobody\0pencil", &tls12(), &mut user_pencil()),
            SaslStep::Failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn plain_store_error_temporary_auth_failure() {
        let mut acc = Accounts {
            broken: true,
            ..Accounts::default()
        };
        assert_eq!(
            plain(b"\0user\0pencil", &tls12(), &mut acc),
            SaslStep::Failure(SaslFailure::TemporaryAuthFailure)
        );
    }

    #[test]
    fn plain_bad_message_malformed_request() {
        for msg in [
            &b"user\0pencil"[..],
            b"\0user\0pencil\0",
            b"\0\0pencil",
            b"\0user\0",
            b"\0us\xffer\0pencil",
        ] {
            assert_eq!(
                plain(msg, &tls12(), &mut user_pencil()),
                SaslStep::Failure(SaslFailure::MalformedRequest),
                "{msg:?}"
            );
        }
    }

    /// xorshift64: reproducible pseudo-random mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Truncations and random single-byte edits of `msg`, each different from `msg`.
    fn mutations(msg: &[u8], rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
        const SPECIAL: [u8; 8] = [b',', b'=', 0, 0xff, 0xc3, b'p', b'r', b'A'];
        let mut out: Vec<Vec<u8>> = (0..msg.len()).map(|n| msg[..n].to_vec()).collect();
        for _ in 0..count {
            let mut m = msg.to_vec();
            let at = rng.below(m.len() + 1);
            match rng.below(4) {
                0 if at < m.len() => m[at] ^= 1 << rng.below(8),
                1 if at < m.len() => {
                    m.remove(at);
                }
                2 => m.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
                _ => m.insert(at, rng.next() as u8),
            }
            if m != msg {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn session_mutated_messages_never_panic_nor_succeed() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let cb = tls13(&[0x5a; 32]);
        for (mech, gs2) in [
            (Mechanism::ScramSha256Plus, "p=tls-exporter,,"),
            (Mechanism::ScramSha1, "n,,"),
        ] {
            let hash = if mech == Mechanism::ScramSha1 {
                ScramHash::Sha1
            } else {
                ScramHash::Sha256
            };
            let cb_data: &[u8] = if gs2.starts_with('p') {
                &[0x5a; 32]
            } else {
                &[]
            };
            let bare = "n=user,r=abcdef";
            let first = format!("{gs2}{bare}");
            let mut acc = user_pencil();
            // Mutated first messages.
            for m in mutations(first.as_bytes(), &mut rng, 400) {
                let (mut s, step) = SaslSession::start(mech, &m, &cb, &mut acc, &mut counter());
                if let SaslStep::Challenge(c) = step {
                    // Echoing the challenge back is no client-final-message.
                    let step = s.step(&c, &cb, &mut acc);
                    assert!(matches!(step, SaslStep::Failure(_)), "{step:?}");
                }
            }
            // Mutated final messages against a proper first step.
            let start = |acc: &mut Accounts| {
                SaslSession::start(mech, first.as_bytes(), &cb, acc, &mut counter())
            };
            let (_, step) = start(&mut acc);
            let server_first = challenge(step);
            let mut cbind = gs2.as_bytes().to_vec();
            cbind.extend_from_slice(cb_data);
            let fin = client_final(hash, "pencil", bare, &server_first, &cbind);
            let (mut s, _) = start(&mut acc);
            assert!(success("v=")(&s.step(fin.as_bytes(), &cb, &mut acc)));
            for m in mutations(fin.as_bytes(), &mut rng, 400) {
                let (mut s, _) = start(&mut acc);
                let step = s.step(&m, &cb, &mut acc);
                assert!(
                    matches!(step, SaslStep::Failure(_)),
                    "{:?} gave {step:?}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
        // PLAIN: each attempt costs a PBKDF2 run, so fewer.
        let mut acc = user_pencil();
        let msg = b"\0user\0pencil";
        for m in mutations(msg, &mut rng, 40) {
            let step = plain(&m, &tls12(), &mut acc);
            // Changing the username's case is the only edit that may still succeed.
            if let SaslStep::Success { username, .. } = &step {
                assert_eq!(username, "user");
                assert!(m.eq_ignore_ascii_case(msg), "{m:?}");
            }
        }
    }

    #[test]
    fn offered_depends_on_tls_and_channel_binding() {
        assert_eq!(
            offered(false, false),
            [Mechanism::ScramSha256, Mechanism::ScramSha1]
        );
        assert_eq!(
            offered(true, true),
            [
                Mechanism::ScramSha256Plus,
                Mechanism::ScramSha1Plus,
                Mechanism::ScramSha256,
                Mechanism::ScramSha1,
                Mechanism::Plain
            ]
        );
        for m in offered(true, true) {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
    }
}
