//! Client-to-server protocol, black box: stream features before and after TLS, direct TLS with
//! ALPN, every offered SASL mechanism (SCRAM with and without tls-exporter binding, PLAIN),
//! authentication failures, binding and its conflicts, server-answered IQs, and routing between
//! local users. Startup details (self-signed certificates in a data_dir that is relative to the
//! config file) are checked here too.

mod common;

use std::time::{Duration, Instant};

use common::scram::{Binding, auth_scram};
use common::*;

const ALICE: (&str, &str) = ("alice@localhost", "alice-secret");
const BOB: (&str, &str) = ("bob@localhost", "bob-secret");

fn server() -> Server {
    Server::start(Opts::default().with_users(&[ALICE, BOB]))
}

/// STARTTLS done and the stream reopened; returns the client and the post-TLS features.
fn tls_client(s: &Server) -> (Client, String) {
    let mut c = s.connect();
    c.open_stream();
    c.starttls();
    let f = c.open_stream();
    (c, f)
}

#[test]
fn startup_makes_self_signed_cert_in_data_dir_relative_to_config() {
    let s = server();
    let certs = s.data_dir().join("certs");
    let entries: Vec<_> = std::fs::read_dir(&certs)
        .unwrap_or_else(|e| panic!("{}: {e}", certs.display()))
        .collect();
    assert!(!entries.is_empty(), "no files in {}", certs.display());
    assert!(
        !s.dir.join("cwd").join("data").exists(),
        "data_dir resolved against the working directory instead of the config's folder"
    );
    assert!(
        s.log_text().contains("listening on"),
        "log should say 'listening on':\n{}",
        s.log_text()
    );
}

#[test]
fn sigterm_stops_server_cleanly() {
    let mut s = server();
    let _alice = s.login(ALICE.0, ALICE.1, "r");
    let (status, clean) = s.stop().expect("was running");
    assert!(clean, "server ignored SIGTERM for 5 s");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn pre_tls_features_offer_only_required_starttls() {
    let s = server();
    let mut c = s.connect();
    let f = c.open_stream();
    let at = find_start_tag(&f, "starttls").unwrap_or_else(|| panic!("no <starttls/>: {f}"));
    assert_eq!(
        attr(&f[at..], "xmlns").as_deref(),
        Some("urn:ietf:params:xml:ns:xmpp-tls")
    );
    assert!(
        has_child(&f, "required"),
        "STARTTLS must be <required/>: {f}"
    );
    assert!(!has_child(&f, "mechanisms"), "no SASL before TLS: {f}");
    assert!(!f.contains("PLAIN"), "PLAIN offered before TLS: {f}");
    assert!(!has_child(&f, "bind"), "bind offered before TLS: {f}");
}

#[test]
fn plain_auth_before_tls_is_refused() {
    let s = server();
    let mut c = s.connect();
    c.open_stream();
    let payload = base64_encode(b"\0alice\0alice-secret");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
    ));
    // A SASL failure or a stream error, but never success.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(t) = c.try_next(deadline.saturating_duration_since(Instant::now())) {
        assert!(
            !matches!(&t, Token::Element(e) if elem_name(e) == "success"),
            "PLAIN succeeded in cleartext:\n{}",
            c.transcript
        );
        if t == Token::Eof {
            break;
        }
    }
}

#[test]
fn post_tls_features_offer_all_mechanisms_in_preference_order() {
    let s = server();
    let (c, f) = tls_client(&s);
    assert_eq!(
        c.tls_connection().and_then(|t| t.protocol_version()),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        mechanisms(&f),
        vec![
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN"
        ],
        "features: {f}"
    );
    assert!(!has_child(&f, "starttls"), "STARTTLS offered twice: {f}");
}

#[test]
fn direct_tls_negotiates_alpn_and_logs_in() {
    let s = server();
    let (mut c, alpn) = Client::connect_direct_tls(s.tls_port, "localhost");
    assert_eq!(alpn.as_deref(), Some(&b"xmpp-client"[..]));
    let f = c.open_stream();
    assert!(!has_child(&f, "starttls"), "STARTTLS on direct TLS: {f}");
    assert!(mechanisms(&f).contains(&"PLAIN".to_owned()), "{f}");
    c.auth_plain("alice", ALICE.1)
        .expect("PLAIN over direct TLS");
    c.open_stream();
    assert_eq!(c.bind("direct"), "alice@localhost/direct");
    c.ping_server();
}

fn scram_login(mech: &str, binding: Binding) {
    let s = server();
    let (mut c, _) = tls_client(&s);
    auth_scram(&mut c, mech, "alice", ALICE.1, binding)
        .unwrap_or_else(|f| panic!("{mech} ({binding:?}) failed: {f}"));
    c.open_stream();
    assert_eq!(c.bind("scram"), "alice@localhost/scram");
    c.ping_server();
}

#[test]
fn scram_sha_256_plus_with_tls_exporter_logs_in() {
    scram_login("SCRAM-SHA-256-PLUS", Binding::Exporter);
}

#[test]
fn scram_sha_1_plus_with_tls_exporter_logs_in() {
    scram_login("SCRAM-SHA-1-PLUS", Binding::Exporter);
}

#[test]
fn scram_sha_256_without_binding_logs_in() {
    scram_login("SCRAM-SHA-256", Binding::None);
}

#[test]
fn scram_sha_1_without_binding_logs_in() {
    scram_login("SCRAM-SHA-1", Binding::None);
}

#[test]
fn scram_plus_with_wrong_binding_data_is_refused() {
    let s = server();
    let (mut c, _) = tls_client(&s);
    let r = auth_scram(
        &mut c,
        "SCRAM-SHA-256-PLUS",
        "alice",
        ALICE.1,
        Binding::WrongExporter,
    );
    let f = r.expect_err("a wrong tls-exporter value must not authenticate");
    assert!(elem_name(&f) == "failure", "{f}");
}

#[test]
fn scram_with_y_flag_while_plus_offered_is_refused() {
    // RFC 5802 §6: "y" says the client thinks the server cannot bind; the server offered
    // -PLUS, so this is a downgrade and must fail.
    let s = server();
    let (mut c, _) = tls_client(&s);
    let r = auth_scram(
        &mut c,
        "SCRAM-SHA-256",
        "alice",
        ALICE.1,
        Binding::ClientOnly,
    );
    assert!(r.is_err(), "downgraded SCRAM (gs2 'y') was accepted");
}

#[test]
fn scram_wrong_password_gets_not_authorized() {
    let s = server();
    let (mut c, _) = tls_client(&s);
    let f = auth_scram(&mut c, "SCRAM-SHA-256", "alice", "wrong", Binding::None)
        .expect_err("wrong password accepted");
    assert!(has_child(&f, "not-authorized"), "{f}");
}

#[test]
fn failed_auth_is_delayed_and_third_failure_closes_stream() {
    let s = Server::start(
        Opts {
            auth_failure_delay_ms: 600,
            ..Opts::default()
        }
        .with_users(&[ALICE]),
    );
    let (mut c, _) = tls_client(&s);
    for attempt in 1..=3 {
        let start = Instant::now();
        let f = c
            .auth_plain("alice", "wrong")
            .expect_err("wrong password accepted");
        let took = start.elapsed();
        assert!(has_child(&f, "not-authorized"), "attempt {attempt}: {f}");
        assert!(
            took >= Duration::from_millis(500),
            "attempt {attempt}: failure after {took:?}, the configured delay is 600 ms"
        );
    }
    // After max_auth_failures (3) the stream is closed.
    let toks = c.read_until_closed(WAIT);
    assert!(
        toks.ends_with(&[Token::StreamClose, Token::Eof]),
        "stream must be closed after 3 failures: {toks:?}"
    );
    // The right password still works on a new connection.
    let (mut c2, _) = tls_client(&s);
    c2.auth_plain("alice", ALICE.1)
        .expect("good password after failures");
}

#[test]
fn bind_then_session_ping_and_disco_are_answered() {
    let s = server();
    let (mut c, _) = tls_client(&s);
    c.auth_plain("alice", ALICE.1).expect("auth");
    let f = c.open_stream();
    assert!(has_child(&f, "bind"), "no bind feature after auth: {f}");
    assert!(
        !has_child(&f, "mechanisms"),
        "SASL offered again after auth: {f}"
    );
    assert_eq!(c.bind("home"), "alice@localhost/home");
    c.session();
    c.ping_server();

    let id = c.id();
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let iq = c.wait_element("iq", WAIT);
    assert_eq!(attr(&iq, "id").as_deref(), Some(id.as_str()), "{iq}");
    assert_eq!(attr(&iq, "type").as_deref(), Some("result"), "{iq}");
    assert_eq!(attr(&iq, "from").as_deref(), Some("localhost"), "{iq}");
    let q = find_start_tag(&iq, "query").unwrap_or_else(|| panic!("no query: {iq}"));
    assert_eq!(
        attr(&iq[q..], "xmlns").as_deref(),
        Some("http://jabber.org/protocol/disco#info")
    );
    let ident = find_start_tag(&iq, "identity").unwrap_or_else(|| panic!("no identity: {iq}"));
    assert_eq!(
        attr(&iq[ident..], "category").as_deref(),
        Some("server"),
        "{iq}"
    );
    assert!(
        iq.contains("var='urn:xmpp:ping'") || iq.contains("var=\"urn:xmpp:ping\""),
        "{iq}"
    );
    assert!(
        iq.contains("var='http://jabber.org/protocol/disco#info'")
            || iq.contains("var=\"http://jabber.org/protocol/disco#info\""),
        "{iq}"
    );
}

#[test]
fn post_auth_features_offer_bind_rosterver_preapproval_and_caps() {
    let s = server();
    let (mut c, _) = tls_client(&s);
    c.auth_plain("alice", ALICE.1).expect("auth");
    let f = c.open_stream();
    for want in [
        "urn:ietf:params:xml:ns:xmpp-bind",
        "urn:xmpp:features:rosterver",
        // RFC 6121 §3.4.1: pre-approval support MUST be advertised.
        "urn:xmpp:features:pre-approval",
        "http://jabber.org/protocol/caps",
    ] {
        assert!(f.contains(want), "{want} missing from {f}");
    }
    assert!(!f.contains("mechanisms"), "{f}");
}

#[test]
fn bind_without_resource_gets_generated_one() {
    let s = server();
    let (mut c, _) = tls_client(&s);
    c.auth_plain("alice", ALICE.1).expect("auth");
    c.open_stream();
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let iq = c.wait_element("iq", WAIT);
    assert_eq!(attr(&iq, "type").as_deref(), Some("result"), "{iq}");
    let jid = child_text(&iq, "jid").unwrap_or_default();
    let res = jid.strip_prefix("alice@localhost/").unwrap_or("");
    assert!(!res.is_empty(), "no generated resource: {iq}");
}

#[test]
fn second_login_same_resource_replaces_first_with_conflict() {
    let s = server();
    let mut first = s.login(ALICE.0, ALICE.1, "phone");
    let mut second = s.login(ALICE.0, ALICE.1, "phone");
    assert_eq!(second.jid, "alice@localhost/phone");
    first.expect_stream_error("conflict", WAIT);
    second.ping_server();
    // Messages to the full JID now reach the new session.
    let mut bob = s.login(BOB.0, BOB.1, "r");
    bob.send_message("alice@localhost/phone", "to the new one");
    second.expect_message("to the new one");
}

#[test]
fn messages_flow_both_ways_with_from_stamped() {
    let s = server();
    let mut alice = s.login(ALICE.0, ALICE.1, "a");
    let mut bob = s.login(BOB.0, BOB.1, "b");
    // A forged from is replaced by the server (RFC 6120 §8.1.2.1).
    alice.send("<message to='bob@localhost/b' from='eve@localhost/x' type='chat' id='m1'><body>hi bob</body></message>");
    let m = bob.expect_message("hi bob");
    assert_eq!(
        attr(&m, "from").as_deref(),
        Some("alice@localhost/a"),
        "{m}"
    );
    assert_eq!(attr(&m, "id").as_deref(), Some("m1"), "{m}");
    // To the bare JID: delivered to the available resource.
    bob.send_message("alice@localhost", "hi alice");
    let m = alice.expect_message("hi alice");
    assert_eq!(attr(&m, "from").as_deref(), Some("bob@localhost/b"), "{m}");
}

#[test]
fn directed_presence_reaches_the_other_user() {
    let s = server();
    let mut alice = s.login(ALICE.0, ALICE.1, "a");
    let mut bob = s.login(BOB.0, BOB.1, "b");
    alice.send("<presence to='bob@localhost/b'><status>here</status></presence>");
    let p = bob.wait_for("alice's presence", WAIT, |t| {
        matches!(t, Token::Element(e) if elem_name(e) == "presence"
            && attr(e, "from").as_deref() == Some("alice@localhost/a"))
    });
    let Token::Element(p) = p else { unreachable!() };
    assert_eq!(child_text(&p, "status").as_deref(), Some("here"), "{p}");
}

fn expect_error_reply(c: &mut Client, id: &str, condition: &str) {
    let want = id.to_owned();
    let t = c.wait_for(&format!("error reply to {id}"), WAIT, move |t| {
        matches!(t, Token::Element(e) if elem_name(e) == "message"
            && attr(e, "id").as_deref() == Some(want.as_str()))
    });
    let Token::Element(m) = t else { unreachable!() };
    assert_eq!(attr(&m, "type").as_deref(), Some("error"), "{m}");
    assert_eq!(
        stanza_error(&m).map(|(c, _)| c).as_deref(),
        Some(condition),
        "{m}"
    );
}

#[test]
fn message_to_unknown_user_gets_service_unavailable() {
    let s = server();
    let mut alice = s.login(ALICE.0, ALICE.1, "a");
    let id = alice.send_message("nobody@localhost", "anyone?");
    expect_error_reply(&mut alice, &id, "service-unavailable");
}

#[test]
fn message_to_other_domain_gets_remote_server_not_found() {
    let s = server();
    let mut alice = s.login(ALICE.0, ALICE.1, "a");
    let id = alice.send_message("someone@elsewhere.example", "hello out there");
    expect_error_reply(&mut alice, &id, "remote-server-not-found");
}

/// The driver stops reading a socket at a short read, but not when the same event carries the
/// peer's FIN: data and FIN arriving together must still close the connection at once, not at
/// the 60 s authentication timeout.
#[test]
fn data_and_fin_in_one_event_closes_at_once() {
    use std::io::{Read, Write};
    let s = server();
    // Several rounds: each may or may not put the data and the FIN into one event.
    for round in 0..5 {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", s.c2s_port)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        raw.write_all(header.as_bytes()).unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let read = raw.read_to_end(&mut got);
        assert!(
            read.is_ok(),
            "round {round}: no close after the FIN: {read:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {round}: close took too long"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("<stream:features"), "round {round}: {text}");
    }
}
