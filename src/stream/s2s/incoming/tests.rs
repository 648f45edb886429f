//! Incoming-stream transcripts: what Prosody 0.12 / ejabberd send as initiating servers.

use super::*;
use crate::stream::s2s::{DialbackSecret, S2sPolicy};
use crate::testutil::SeededRandom;
use std::time::Duration;

const PROSODY_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
    version='1.0' from='remote.example' to='hearth.example' xml:lang='en'>";

pub(crate) fn config(policy: S2sPolicy) -> Arc<S2sConfig> {
    let mut c = S2sConfig::new(
        vec!["hearth.example".into(), "chat.hearth.example".into()],
        DialbackSecret::new(b"test secret"),
    );
    c.policy = policy;
    Arc::new(c)
}

fn plain_policy() -> S2sPolicy {
    S2sPolicy {
        require_encryption: false,
        require_valid_certificates: false,
    }
}

struct T {
    s: S2sIn,
    now: Instant,
    rng: SeededRandom,
}

impl T {
    fn new(policy: S2sPolicy) -> T {
        let now = Instant::now();
        T {
            s: S2sIn::new(now, config(policy), false),
            now,
            rng: SeededRandom(7),
        }
    }

    fn feed(&mut self, s: &str) -> Vec<Upcall> {
        self.s.handle_bytes(self.now, s.as_bytes(), &mut self.rng);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Upcall> {
        std::iter::from_fn(|| self.s.poll_upcall()).collect()
    }

    /// Header, then STARTTLS and TLS with a certificate for `cert_for`.
    fn through_tls(&mut self, cert_for: &[&str]) -> Vec<Upcall> {
        self.feed(PROSODY_HEADER);
        let up = self.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(up.last(), Some(&Upcall::StartTls(Vec::new())));
        let info = S2sTlsInfo {
            peer_cert_valid_for: cert_for.iter().map(|s| s.to_string()).collect(),
            local_cert_valid: false,
        };
        self.s.handle_tls_ready(self.now, info, &mut self.rng);
        self.feed(PROSODY_HEADER)
    }
}

fn sent(up: &[Upcall]) -> String {
    up.iter()
        .filter_map(|u| match u {
            Upcall::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn expect_header_prosody_header_features_starttls_required_no_dialback() {
    let mut t = T::new(S2sPolicy::default());
    let out = sent(&t.feed(PROSODY_HEADER));
    let id = t.s.stream_id().unwrap().to_owned();
    assert_eq!(
        out,
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
             from='hearth.example' to='remote.example' id='{id}' version='1.0'>\
             <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
             </starttls></stream:features>"
        )
    );
}

#[test]
fn expect_header_unknown_to_host_unknown() {
    let mut t = T::new(S2sPolicy::default());
    let up = t.feed(&PROSODY_HEADER.replace("to='hearth.example'", "to='elsewhere.example'"));
    let out = sent(&up);
    assert!(out.contains("<host-unknown"), "{out}");
    assert_eq!(up.last(), Some(&Upcall::Close));
}

#[test]
fn expect_header_client_namespace_invalid_namespace() {
    let mut t = T::new(S2sPolicy::default());
    let out =
        sent(&t.feed(&PROSODY_HEADER.replace("xmlns='jabber:server'", "xmlns='jabber:client'")));
    assert!(out.contains("<invalid-namespace"), "{out}");
    assert!(t.s.is_closed());
}

#[test]
fn open_tls_with_valid_cert_offers_external_and_dialback() {
    let mut t = T::new(S2sPolicy::default());
    let out = sent(&t.through_tls(&["remote.example"]));
    assert!(
        out.ends_with(
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>EXTERNAL</mechanism></mechanisms>\
             <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"
        ),
        "{out}"
    );
}

#[test]
fn open_tls_without_cert_offers_dialback_only() {
    let mut t = T::new(S2sPolicy::default());
    let out = sent(&t.through_tls(&[]));
    assert!(out.ends_with(
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
         </stream:features>"
    ));
}

#[test]
fn open_sasl_external_empty_authzid_success_then_stanzas() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&["remote.example"]);
    let up = t.feed("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
    assert_eq!(
        sent(&up),
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    );
    assert!(up.contains(&Upcall::Authenticated {
        from: "remote.example".into(),
        to: "hearth.example".into(),
        method: AuthMethod::SaslExternal
    }));
    let out = sent(&t.feed(PROSODY_HEADER));
    assert!(out.ends_with(
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
         </stream:features>"
    ));
    let up = t.feed(
        "<message from='juliet@remote.example/balcony' to='romeo@hearth.example' type='chat' \
         id='m1'><body>hi</body></message>",
    );
    let Some(Upcall::Stanza { element }) = up.first() else {
        panic!("{up:?}");
    };
    assert_eq!(element.ns, ns::CLIENT);
    assert_eq!(
        String::from_utf8(element.to_bytes(ns::CLIENT)).unwrap(),
        "<message from='juliet@remote.example/balcony' to='romeo@hearth.example' type='chat' \
         id='m1'><body>hi</body></message>"
    );
}

#[test]
fn open_sasl_external_other_authzid_invalid_authzid() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&["remote.example", "other.example"]);
    let authzid = crate::base64::encode(b"other.example");
    let up = t.feed(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
    ));
    assert_eq!(
        sent(&up),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-authzid/></failure>"
    );
    assert!(!t.s.is_closed());
}

#[test]
fn open_sasl_external_without_cert_invalid_mechanism() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&[]);
    let up = t.feed("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
    assert!(sent(&up).contains("<invalid-mechanism/>"));
}

#[test]
fn open_db_result_asks_server_then_valid_authenticates() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&[]);
    let id = t.s.stream_id().unwrap().to_owned();
    let up = t.feed(
        "<db:result from='remote.example' to='hearth.example'>\
         b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3</db:result>",
    );
    assert_eq!(
        up,
        vec![Upcall::VerifyDialback {
            from: "remote.example".into(),
            to: "hearth.example".into(),
            stream_id: id,
            key: "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3".into(),
        }]
    );
    // Before the verdict, stanzas are refused.
    assert!(!t.s.is_authenticated("remote.example", "hearth.example"));
    assert!(t.s.dialback_verified(
        t.now,
        "remote.example",
        "hearth.example",
        DialbackVerdict::Valid
    ));
    let up = t.drain();
    assert_eq!(
        sent(&up),
        "<db:result from='hearth.example' to='remote.example' type='valid'/>"
    );
    assert!(t.s.is_authenticated("remote.example", "hearth.example"));
    // A second verdict for the same pair is unsolicited.
    assert!(!t.s.dialback_verified(
        t.now,
        "remote.example",
        "hearth.example",
        DialbackVerdict::Valid
    ));
}

#[test]
fn open_db_result_invalid_first_pair_invalid_and_close() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&[]);
    t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    t.s.dialback_verified(
        t.now,
        "remote.example",
        "hearth.example",
        DialbackVerdict::Invalid,
    );
    let up = t.drain();
    assert_eq!(
        sent(&up),
        "<db:result from='hearth.example' to='remote.example' type='invalid'/></stream:stream>"
    );
    assert_eq!(up.last(), Some(&Upcall::Close));
}

#[test]
fn open_db_result_invalid_second_pair_forbidden_stream_lives() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&[]);
    t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    t.s.dialback_verified(
        t.now,
        "remote.example",
        "hearth.example",
        DialbackVerdict::Valid,
    );
    t.drain();
    t.feed("<db:result from='muc.remote.example' to='hearth.example'>abcd</db:result>");
    t.s.dialback_verified(
        t.now,
        "muc.remote.example",
        "hearth.example",
        DialbackVerdict::Invalid,
    );
    assert_eq!(
        sent(&t.drain()),
        "<db:result from='hearth.example' to='muc.remote.example' type='error'>\
         <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
         </db:result>"
    );
    assert!(!t.s.is_closed());
}

#[test]
fn open_db_result_unknown_to_item_not_found() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&[]);
    let up = t.feed("<db:result from='remote.example' to='nobody.example'>abcd</db:result>");
    assert_eq!(
        sent(&up),
        "<db:result from='nobody.example' to='remote.example' type='error'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         </error></db:result>"
    );
    assert!(!t.s.is_closed());
}

#[test]
fn open_db_result_before_tls_when_required_policy_violation() {
    let mut t = T::new(S2sPolicy::default());
    t.feed(PROSODY_HEADER);
    let up = t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    assert!(sent(&up).contains("<policy-violation"));
    assert!(
        !up.iter()
            .any(|u| matches!(u, Upcall::VerifyDialback { .. }))
    );
}

#[test]
fn open_db_result_with_certificate_valid_without_asking() {
    let mut t = T::new(S2sPolicy::default());
    t.through_tls(&["remote.example"]);
    let up = t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    assert_eq!(
        sent(&up),
        "<db:result from='hearth.example' to='remote.example' type='valid'/>"
    );
    assert!(up.contains(&Upcall::Authenticated {
        from: "remote.example".into(),
        to: "hearth.example".into(),
        method: AuthMethod::DialbackWithCertificate
    }));
}

#[test]
fn open_db_result_cert_required_not_covered_not_authorized() {
    let mut t = T::new(S2sPolicy {
        require_encryption: true,
        require_valid_certificates: true,
    });
    t.through_tls(&["someone-else.example"]);
    let up = t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    assert!(sent(&up).contains("<not-authorized"));
}

#[test]
fn open_db_verify_good_key_valid_bad_key_invalid() {
    let mut t = T::new(plain_policy());
    t.feed(PROSODY_HEADER);
    let key =
        t.s.config
            .secret
            .generate("remote.example", "hearth.example", "417GAF25");
    let up = t.feed(&format!(
        "<db:verify from='remote.example' to='hearth.example' id='417GAF25'>{key}</db:verify>"
    ));
    assert_eq!(
        sent(&up),
        "<db:verify from='hearth.example' to='remote.example' id='417GAF25' type='valid'/>"
    );
    let up = t.feed(&format!(
        "<db:verify from='remote.example' to='hearth.example' id='417GAF26'>{key}</db:verify>"
    ));
    assert_eq!(
        sent(&up),
        "<db:verify from='hearth.example' to='remote.example' id='417GAF26' type='invalid'/>"
    );
}

#[test]
fn open_db_verify_unknown_to_item_not_found() {
    let mut t = T::new(plain_policy());
    t.feed(PROSODY_HEADER);
    let up = t.feed("<db:verify from='remote.example' to='x.example' id='1'>abcd</db:verify>");
    assert!(sent(&up).contains("type='error'><error type='cancel'><item-not-found"));
}

#[test]
fn open_unsolicited_db_result_valid_ignored() {
    let mut t = T::new(plain_policy());
    t.feed(PROSODY_HEADER);
    let up = t.feed("<db:result from='remote.example' to='hearth.example' type='valid'/>");
    assert!(up.is_empty());
    assert!(!t.s.is_authenticated("remote.example", "hearth.example"));
}

fn authenticated_plain() -> T {
    let mut t = T::new(plain_policy());
    t.feed(PROSODY_HEADER);
    t.feed("<db:result from='remote.example' to='hearth.example'>abcd</db:result>");
    t.s.dialback_verified(
        t.now,
        "remote.example",
        "hearth.example",
        DialbackVerdict::Valid,
    );
    t.drain();
    t
}

#[test]
fn open_stanza_before_authentication_not_authorized() {
    let mut t = T::new(plain_policy());
    t.feed(PROSODY_HEADER);
    let out = sent(&t.feed("<message from='a@remote.example' to='b@hearth.example'/>"));
    assert!(out.contains("<not-authorized"), "{out}");
    assert!(t.s.is_closed());
}

#[test]
fn open_stanza_spoofed_from_invalid_from() {
    let mut t = authenticated_plain();
    let out = sent(&t.feed("<message from='a@bank.example' to='b@hearth.example'/>"));
    assert!(out.contains("<invalid-from"), "{out}");
    assert!(t.s.is_closed());
}

#[test]
fn open_stanza_without_from_improper_addressing() {
    let mut t = authenticated_plain();
    let out = sent(&t.feed("<message to='b@hearth.example'/>"));
    assert!(out.contains("<improper-addressing"), "{out}");
    assert!(t.s.is_closed());
}

#[test]
fn open_stanza_without_to_improper_addressing() {
    let mut t = authenticated_plain();
    let out = sent(&t.feed("<message from='a@remote.example'/>"));
    assert!(out.contains("<improper-addressing"), "{out}");
    assert!(t.s.is_closed());
}

#[test]
fn open_stanza_unpaired_hosted_to_rejected_not_authorized() {
    let mut t = authenticated_plain();
    let up = t.feed("<iq from='a@remote.example' to='chat.hearth.example' type='get' id='1'/>");
    assert!(matches!(
        up.as_slice(),
        [Upcall::Reject {
            condition: StanzaCondition::NotAuthorized,
            ..
        }]
    ));
    let up = t.feed("<iq from='a@remote.example' to='x.other.example' type='get' id='2'/>");
    assert!(matches!(
        up.as_slice(),
        [Upcall::Reject {
            condition: StanzaCondition::ItemNotFound,
            ..
        }]
    ));
    assert!(!t.s.is_closed());
}

#[test]
fn open_unknown_element_unsupported_stanza_type() {
    let mut t = authenticated_plain();
    let out = sent(&t.feed("<foo xmlns='urn:x'/>"));
    assert!(out.contains("<unsupported-stanza-type"));
}

#[test]
fn open_peer_closes_we_close() {
    let mut t = authenticated_plain();
    let up = t.feed("</stream:stream>");
    assert_eq!(sent(&up), "</stream:stream>");
    assert_eq!(up.last(), Some(&Upcall::Close));
}

#[test]
fn handshake_timeout_connection_timeout() {
    let mut t = T::new(S2sPolicy::default());
    t.feed(PROSODY_HEADER);
    let d = t.s.deadline().unwrap();
    assert_eq!(d, t.now + Duration::from_secs(60));
    t.s.handle_timeout(d - Duration::from_millis(1));
    assert!(t.drain().is_empty());
    t.s.handle_timeout(d);
    assert!(sent(&t.drain()).contains("<connection-timeout"));
}

#[test]
fn ready_idle_timeout_closes_politely() {
    let mut t = authenticated_plain();
    let d = t.s.deadline().unwrap();
    assert_eq!(d, t.now + Duration::from_secs(600));
    t.s.handle_timeout(d);
    let up = t.drain();
    assert_eq!(sent(&up), "</stream:stream>");
    assert_eq!(up.last(), Some(&Upcall::Close));
}
