//! Hostile and broken input on c2s: each test opens a bad connection next to two properly
//! logged-in clients (PLAIN over STARTTLS), checks that the bad one gets exactly the documented
//! stream error followed by `</stream:stream>` and a close, and that the good clients can still
//! exchange a message and ping the server afterwards.
//!
//! One server per test (startup is quick); tests run in parallel on their own ports.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ALICE: (&str, &str) = ("alice@localhost", "alice-secret");
const BOB: (&str, &str) = ("bob@localhost", "bob-secret");
const MALLORY: (&str, &str) = ("mallory@localhost", "mallory-secret");

struct World {
    server: Server,
    alice: Client,
    bob: Client,
}

fn world_with(opts: Opts) -> World {
    let server = Server::start(opts.with_users(&[ALICE, BOB, MALLORY]));
    let alice = server.login(ALICE.0, ALICE.1, "good");
    let bob = server.login(BOB.0, BOB.1, "good");
    World { server, alice, bob }
}

fn world() -> World {
    world_with(Opts::default())
}

impl World {
    /// A fresh plaintext connection that has sent its stream header and read the features.
    fn bad_plain(&self) -> Client {
        let mut c = self.server.connect();
        c.open_stream();
        c
    }

    /// A connection that is TLS-protected and has reopened the stream, but not authenticated.
    fn bad_tls_unauthenticated(&self) -> Client {
        let mut c = self.server.connect();
        c.open_stream();
        c.starttls();
        c.open_stream();
        c
    }

    /// A fully logged-in third client, to misbehave after authentication.
    fn bad_authenticated(&self) -> Client {
        self.server.login(MALLORY.0, MALLORY.1, "bad")
    }

    fn still_serving(&mut self, tag: &str) {
        assert_still_serving(&mut self.alice, &mut self.bob, tag);
        // And the other way round, so neither session was disturbed.
        assert_still_serving(&mut self.bob, &mut self.alice, tag);
    }

    fn bob_never_saw(&self, marker: &str) {
        assert!(
            !self.bob.transcript.contains(marker),
            "bob received content from the rejected stanza ({marker}):\n{}",
            self.bob.transcript
        );
    }
}

#[test]
fn garbage_after_header_gets_not_well_formed() {
    let mut w = world();
    let mut bad = w.bad_plain();
    bad.send("<<<this is not xml>>>");
    bad.expect_stream_error("not-well-formed", WAIT);
    w.still_serving("non-XML bytes");
}

#[test]
fn garbage_instead_of_header_gets_not_well_formed() {
    let mut w = world();
    let mut bad = w.server.connect();
    bad.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    bad.expect_stream_error("not-well-formed", WAIT);
    w.still_serving("HTTP request");
}

#[test]
fn dtd_with_entity_declaration_gets_restricted_xml() {
    let mut w = world();
    let mut bad = w.server.connect();
    // RFC 6120 §11.1: DTDs and entity declarations are forbidden (and are how "billion laughs"
    // attacks start).
    bad.send(
        "<?xml version='1.0'?>\
         <!DOCTYPE stream:stream [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>\
         <stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    bad.expect_stream_error("restricted-xml", WAIT);
    w.still_serving("DTD");
}

#[test]
fn one_mib_stanza_gets_policy_violation() {
    let mut w = world();
    let mut bad = w.bad_authenticated();
    let to = w.bob.jid.clone();
    let mut stanza = format!("<message to='{to}' type='chat'><body>").into_bytes();
    stanza.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    stanza.extend_from_slice(b"</body></message>");
    bad.send_until_answered(&stanza, 16 * 1024);
    bad.expect_stream_error("policy-violation", WAIT);
    w.still_serving("1 MiB stanza");
    w.bob_never_saw("aaaaaaaaaaaaaaaa");
}

#[test]
fn ten_thousand_deep_nesting_gets_policy_violation() {
    let mut w = world();
    let mut bad = w.bad_authenticated();
    let to = w.bob.jid.clone();
    let mut stanza =
        format!("<message to='{to}' type='chat'><body>marker-deep-4711</body>").into_bytes();
    for _ in 0..10_000 {
        stanza.extend_from_slice(b"<a>");
    }
    for _ in 0..10_000 {
        stanza.extend_from_slice(b"</a>");
    }
    stanza.extend_from_slice(b"</message>");
    bad.send_until_answered(&stanza, 4096);
    bad.expect_stream_error("policy-violation", WAIT);
    w.still_serving("deep nesting");
    w.bob_never_saw("marker-deep-4711");
}

#[test]
fn invalid_utf8_gets_unsupported_encoding() {
    let mut w = world();
    let mut bad = w.bad_authenticated();
    let to = w.bob.jid.clone();
    let mut stanza = format!("<message to='{to}' type='chat'><body>marker-utf8-4711 ").into_bytes();
    // A lone continuation byte, an invalid lead byte, and a truncated 2-byte sequence.
    stanza.extend_from_slice(&[0x80, 0xff, 0xc3, 0x28]);
    stanza.extend_from_slice(b"</body></message>");
    bad.send_bytes(&stanza);
    bad.expect_stream_error("unsupported-encoding", WAIT);
    w.still_serving("invalid UTF-8");
    w.bob_never_saw("marker-utf8-4711");
}

#[test]
fn undeclared_prefix_at_stream_level_gets_not_well_formed() {
    let mut w = world();
    let mut bad = w.bad_plain();
    bad.send("<foo:starttls/>");
    bad.expect_stream_error("not-well-formed", WAIT);
    w.still_serving("undeclared prefix (stream level)");
}

#[test]
fn undeclared_prefix_inside_stanza_gets_not_well_formed() {
    let mut w = world();
    let mut bad = w.bad_authenticated();
    let to = w.bob.jid.clone();
    bad.send(&format!(
        "<message to='{to}' type='chat'><body>marker-prefix-4711</body><x:payload/></message>"
    ));
    bad.expect_stream_error("not-well-formed", WAIT);
    w.still_serving("undeclared prefix (in stanza)");
    w.bob_never_saw("marker-prefix-4711");
}

#[test]
fn stanza_before_auth_gets_not_authorized() {
    let mut w = world();
    let mut bad = w.bad_tls_unauthenticated();
    let to = w.bob.jid.clone();
    bad.send(&format!(
        "<message to='{to}' type='chat' from='{}'><body>marker-sneaky-4711</body></message>",
        w.alice.jid
    ));
    bad.expect_stream_error("not-authorized", WAIT);
    w.still_serving("stanza before auth");
    w.bob_never_saw("marker-sneaky-4711");
}

#[test]
fn iq_before_tls_is_refused_with_stream_error() {
    let mut w = world();
    let mut bad = w.bad_plain();
    bad.send(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>x</resource></bind></iq>",
    );
    // RFC 6120 §4.9.3.12 (not-authorized) or §5.3.1 with TLS required (policy-violation).
    let toks = bad.read_until_closed(WAIT);
    let err = toks
        .iter()
        .find_map(|t| match t {
            Token::Element(e) if elem_name(e) == "stream:error" => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stream error; received:\n{}", bad.transcript));
    let cond = stream_error_condition(&err);
    assert!(
        matches!(cond.as_deref(), Some("not-authorized" | "policy-violation")),
        "unexpected condition {cond:?} in {err}"
    );
    assert!(
        toks.ends_with(&[Token::StreamClose, Token::Eof]),
        "{toks:?}"
    );
    w.still_serving("iq before TLS");
}

#[test]
fn stream_to_unhosted_domain_gets_host_unknown() {
    let mut w = world();
    let mut bad = Client::connect(w.server.c2s_port, "example.org");
    bad.send(&stream_header("example.org"));
    bad.expect_stream_error("host-unknown", WAIT);
    w.still_serving("unhosted domain");
}

#[test]
fn wrong_stream_namespace_gets_invalid_namespace() {
    let mut w = world();
    let mut bad = w.server.connect();
    bad.send(
        "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://example.com/not-the-streams-namespace'>",
    );
    bad.expect_stream_error("invalid-namespace", WAIT);
    w.still_serving("wrong stream namespace");
}

#[test]
fn wrong_content_namespace_gets_invalid_namespace() {
    let mut w = world();
    let mut bad = w.server.connect();
    // RFC 6120 §4.9.3.10: a default namespace other than jabber:client on a c2s stream.
    bad.send(
        "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
         xmlns='jabber:wrong' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    bad.expect_stream_error("invalid-namespace", WAIT);
    w.still_serving("wrong content namespace");
}

#[test]
fn silent_connection_gets_connection_timeout_after_auth_timeout() {
    let mut w = world_with(Opts {
        auth_timeout_secs: 2,
        ..Opts::default()
    });
    let start = Instant::now();
    let mut bad = w.server.connect();
    bad.expect_stream_error("connection-timeout", Duration::from_secs(8));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(6),
        "closed after {took:?}, expected about 2 s"
    );
    // The good clients logged in before the deadline and are older than 2 s by now: the
    // timeout must apply to unauthenticated connections only.
    w.still_serving("connection timeout");
}

#[test]
fn header_only_connection_gets_connection_timeout_after_auth_timeout() {
    let mut w = world_with(Opts {
        auth_timeout_secs: 2,
        ..Opts::default()
    });
    let start = Instant::now();
    let mut bad = w.bad_tls_unauthenticated();
    bad.expect_stream_error("connection-timeout", Duration::from_secs(8));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(6),
        "closed after {took:?}, expected about 2 s"
    );
    w.still_serving("connection timeout after STARTTLS");
}
