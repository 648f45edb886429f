//! Outgoing-stream transcripts: what Prosody 0.12 / ejabberd answer as receiving servers.

use super::*;
use crate::stream::s2s::incoming::tests::config;
use crate::stream::s2s::{DialbackSecret, S2sPolicy};
use std::time::Duration;

const PROSODY_REPLY: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
    id='D60000229F' version='1.0' from='remote.example' to='hearth.example' xml:lang='en'>";
const PROSODY_FEATURES_PLAIN: &str = "<stream:features>\
    <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
    <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>";
const PROSODY_FEATURES_TLS: &str = "<stream:features>\
    <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism>\
    </mechanisms><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
    </stream:features>";

struct T {
    s: S2sOut,
    now: Instant,
}

impl T {
    fn new(policy: S2sPolicy, mode: OutMode) -> T {
        let now = Instant::now();
        T {
            s: S2sOut::new(
                now,
                config(policy),
                "hearth.example",
                "remote.example",
                mode,
            ),
            now,
        }
    }

    fn feed(&mut self, s: &str) -> Vec<Upcall> {
        self.s.handle_bytes(self.now, s.as_bytes());
        self.drain()
    }

    fn drain(&mut self) -> Vec<Upcall> {
        std::iter::from_fn(|| self.s.poll_upcall()).collect()
    }

    /// Connect, STARTTLS, TLS up.
    fn through_tls(&mut self, local_cert_valid: bool) -> Vec<Upcall> {
        self.s.handle_connected(self.now);
        self.drain();
        self.feed(PROSODY_REPLY);
        let up = self.feed(PROSODY_FEATURES_PLAIN);
        assert_eq!(
            sent(&up),
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        );
        let up = self.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(up, vec![Upcall::StartTls(Vec::new())]);
        self.s.handle_tls_ready(
            self.now,
            S2sTlsInfo {
                peer_cert_valid_for: vec!["remote.example".into()],
                local_cert_valid,
            },
        );
        self.drain()
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

fn msg(n: u32) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", "romeo@hearth.example/a")
        .with_attr("to", "juliet@remote.example")
        .with_attr("id", &n.to_string())
        .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='hearth.example' to='remote.example' version='1.0'>";

#[test]
fn connecting_connected_sends_header() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.handle_connected(t.now);
    assert_eq!(sent(&t.drain()), HEADER);
}

#[test]
fn expect_features_tls_then_dialback_valid_flushes_queue_in_order() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.s.send_stanza(t.now, msg(2));
    assert_eq!(sent(&t.through_tls(false)), HEADER);
    t.feed(PROSODY_REPLY);
    let up = t.feed(PROSODY_FEATURES_TLS);
    let key = DialbackSecret::new(b"test secret").generate(
        "remote.example",
        "hearth.example",
        "D60000229F",
    );
    assert_eq!(
        sent(&up),
        format!("<db:result from='hearth.example' to='remote.example'>{key}</db:result>")
    );
    let up = t.feed("<db:result from='remote.example' to='hearth.example' type='valid'/>");
    assert_eq!(
        sent(&up),
        "<message from='romeo@hearth.example/a' to='juliet@remote.example' id='1'>\
         <body>hi</body></message>\
         <message from='romeo@hearth.example/a' to='juliet@remote.example' id='2'>\
         <body>hi</body></message>"
    );
    assert_eq!(
        up.last(),
        Some(&Upcall::Ready {
            method: AuthMethod::Dialback
        })
    );
    t.s.send_stanza(t.now, msg(3));
    assert!(sent(&t.drain()).contains("id='3'"));
}

#[test]
fn expect_features_external_offered_with_cert_sasl_then_ready() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.through_tls(true);
    t.feed(PROSODY_REPLY);
    let up = t.feed(PROSODY_FEATURES_TLS);
    assert_eq!(
        sent(&up),
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{}</auth>",
            crate::base64::encode(b"hearth.example")
        )
    );
    let up = t.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_eq!(sent(&up), HEADER);
    t.feed(PROSODY_REPLY);
    let up = t.feed(
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
         </stream:features>",
    );
    assert_eq!(
        up,
        vec![Upcall::Ready {
            method: AuthMethod::SaslExternal
        }]
    );
}

#[test]
fn expect_sasl_result_failure_falls_back_to_dialback() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.through_tls(true);
    t.feed(PROSODY_REPLY);
    t.feed(PROSODY_FEATURES_TLS);
    let up =
        t.feed("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    assert!(sent(&up).starts_with("<db:result from='hearth.example' to='remote.example'>"));
}

#[test]
fn expect_dialback_result_invalid_bounces_internal_server_error() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.through_tls(false);
    t.feed(PROSODY_REPLY);
    t.feed(PROSODY_FEATURES_TLS);
    let up = t.feed("<db:result from='remote.example' to='hearth.example' type='invalid'/>");
    assert_eq!(
        up,
        vec![
            Upcall::Send(b"</stream:stream>".to_vec()),
            Upcall::Bounce {
                stanza: msg(1),
                condition: StanzaCondition::InternalServerError
            },
            Upcall::Close
        ]
    );
}

#[test]
fn expect_dialback_result_error_bounces_remote_server_timeout() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.through_tls(false);
    t.feed(PROSODY_REPLY);
    t.feed(PROSODY_FEATURES_TLS);
    let up = t.feed(
        "<db:result from='remote.example' to='hearth.example' type='error'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         </error></db:result>",
    );
    assert!(up.contains(&Upcall::Bounce {
        stanza: msg(1),
        condition: StanzaCondition::RemoteServerTimeout
    }));
}

#[test]
fn expect_dialback_result_for_other_pair_ignored() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.through_tls(false);
    t.feed(PROSODY_REPLY);
    t.feed(PROSODY_FEATURES_TLS);
    let up = t.feed("<db:result from='evil.example' to='hearth.example' type='valid'/>");
    assert!(up.is_empty());
    assert!(!t.s.is_ready());
}

#[test]
fn expect_features_no_starttls_when_required_gives_up() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.s.handle_connected(t.now);
    t.feed(PROSODY_REPLY);
    let up = t.feed(
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
         </stream:features>",
    );
    assert!(up.contains(&Upcall::Bounce {
        stanza: msg(1),
        condition: StanzaCondition::RemoteServerNotFound
    }));
    assert!(t.s.is_closed());
}

#[test]
fn tls_ready_cert_required_not_valid_gives_up() {
    let mut t = T::new(
        S2sPolicy {
            require_encryption: true,
            require_valid_certificates: true,
        },
        OutMode::Normal,
    );
    t.s.handle_connected(t.now);
    t.feed(PROSODY_REPLY);
    t.feed(PROSODY_FEATURES_PLAIN);
    t.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    t.drain();
    t.s.handle_tls_ready(t.now, S2sTlsInfo::default());
    assert_eq!(t.drain(), vec![Upcall::Close]);
}

#[test]
fn queue_full_bounces_resource_constraint() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    for n in 0..128 {
        t.s.send_stanza(t.now, msg(n));
    }
    assert!(t.drain().is_empty());
    t.s.send_stanza(t.now, msg(999));
    assert_eq!(
        t.drain(),
        vec![Upcall::Bounce {
            stanza: msg(999),
            condition: StanzaCondition::ResourceConstraint
        }]
    );
    assert_eq!(t.s.queued_len(), 128);
}

#[test]
fn connecting_timeout_bounces_remote_server_timeout() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    let d = t.s.deadline().unwrap();
    assert_eq!(d, t.now + Duration::from_secs(30));
    t.s.handle_timeout(d);
    assert_eq!(
        t.drain(),
        vec![
            Upcall::Bounce {
                stanza: msg(1),
                condition: StanzaCondition::RemoteServerTimeout
            },
            Upcall::Close
        ]
    );
}

#[test]
fn connecting_refused_bounces_remote_server_not_found() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.s.handle_disconnect(t.now);
    assert!(t.drain().contains(&Upcall::Bounce {
        stanza: msg(1),
        condition: StanzaCondition::RemoteServerNotFound
    }));
}

#[test]
fn expect_features_stream_error_host_unknown_bounces_not_found() {
    let mut t = T::new(S2sPolicy::default(), OutMode::Normal);
    t.s.send_stanza(t.now, msg(1));
    t.s.handle_connected(t.now);
    t.feed(PROSODY_REPLY);
    let up = t.feed(
        "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         </stream:error></stream:stream>",
    );
    assert!(up.contains(&Upcall::Bounce {
        stanza: msg(1),
        condition: StanzaCondition::RemoteServerNotFound
    }));
}

#[test]
fn verify_only_sends_verify_reports_and_closes() {
    let mut t = T::new(S2sPolicy::default(), OutMode::VerifyOnly);
    t.s.request_verify(t.now, "hearth.example", "417GAF25", "abcd");
    t.through_tls(false);
    t.feed(PROSODY_REPLY);
    let up = t.feed(PROSODY_FEATURES_TLS);
    assert_eq!(
        sent(&up),
        "<db:verify from='hearth.example' to='remote.example' id='417GAF25'>abcd</db:verify>"
    );
    // An answer for another id is unsolicited.
    assert!(
        t.feed("<db:verify from='remote.example' to='hearth.example' id='X' type='valid'/>")
            .is_empty()
    );
    let up =
        t.feed("<db:verify from='remote.example' to='hearth.example' id='417GAF25' type='valid'/>");
    assert_eq!(
        up,
        vec![
            Upcall::VerifyResult {
                receiving: "hearth.example".into(),
                originating: "remote.example".into(),
                stream_id: "417GAF25".into(),
                verdict: DialbackVerdict::Valid
            },
            Upcall::Send(b"</stream:stream>".to_vec()),
            Upcall::Close
        ]
    );
}

#[test]
fn verify_pending_on_disconnect_reported_as_error() {
    let mut t = T::new(S2sPolicy::default(), OutMode::VerifyOnly);
    t.s.request_verify(t.now, "hearth.example", "417GAF25", "abcd");
    t.s.handle_connected(t.now);
    t.drain();
    t.s.handle_disconnect(t.now);
    assert!(t.drain().contains(&Upcall::VerifyResult {
        receiving: "hearth.example".into(),
        originating: "remote.example".into(),
        stream_id: "417GAF25".into(),
        verdict: DialbackVerdict::Error(StanzaCondition::RemoteServerTimeout)
    }));
}
