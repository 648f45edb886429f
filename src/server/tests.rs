//! Scenario tests of the whole core, driven by bytes on a fake clock (no sockets).

use super::*;
use crate::sasl::Credentials;
use crate::store::MemoryStore;
use std::time::Duration;

/// Deterministic randomness (xorshift64*).
struct SeededRandom(u64);

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

struct Harness {
    server: Server,
    now: Instant,
    next_conn: u64,
    /// Output per connection since last taken.
    out: HashMap<ConnId, String>,
    closed: Vec<ConnId>,
    starttls: Vec<ConnId>,
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
     xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

fn b64(s: &[u8]) -> String {
    crate::base64::encode(s)
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(Config::default())
    }

    fn with_config(config: Config) -> Harness {
        let mut store = MemoryStore::new();
        let mut rng = SeededRandom(7);
        for user in ["alice", "bob"] {
            let creds = Credentials::derive("pw", 4096, &mut |b| rng.fill(b)).unwrap();
            store
                .account_create(&format!("{user}@localhost"), &creds)
                .unwrap();
        }
        let now = Instant::now();
        Harness {
            server: Server::new(
                Arc::new(config),
                Box::new(store),
                Box::new(SeededRandom(42)),
                now,
            ),
            now,
            next_conn: 0,
            out: HashMap::new(),
            closed: Vec::new(),
            starttls: Vec::new(),
        }
    }

    fn drain(&mut self) {
        self.server.end_turn(self.now);
        while let Some(a) = self.server.poll_action() {
            match a {
                Action::Send { conn, bytes } => self
                    .out
                    .entry(conn)
                    .or_default()
                    .push_str(&String::from_utf8(bytes).unwrap()),
                Action::StartTls { conn, .. } => self.starttls.push(conn),
                Action::Close { conn } => self.closed.push(conn),
            }
        }
    }

    fn connect(&mut self) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.server.handle_accept(
            self.now,
            id,
            ListenerKind::C2sStartTls,
            "127.0.0.1:1".parse().unwrap(),
        );
        self.drain();
        id
    }

    fn send(&mut self, conn: ConnId, s: &str) {
        self.server.handle_bytes(self.now, conn, s.as_bytes());
        self.drain();
    }

    fn take(&mut self, conn: ConnId) -> String {
        self.out.remove(&conn).unwrap_or_default()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// STARTTLS, PLAIN, bind; returns the connection with its output taken.
    fn login(&mut self, user: &str, resource: &str) -> ConnId {
        let c = self.connect();
        self.send(c, HEADER);
        assert!(self.take(c).contains("<starttls"));
        self.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(self.take(c).contains("<proceed"));
        assert!(self.starttls.contains(&c));
        self.server
            .handle_tls_ready(self.now, c, TlsInfo::default());
        self.drain();
        self.send(c, HEADER);
        assert!(self.take(c).contains("<mechanism>PLAIN</mechanism>"));
        let auth = b64(format!("\0{user}\0pw").as_bytes());
        self.send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
        );
        assert!(self.take(c).contains("<success"), "login of {user} failed");
        self.send(c, HEADER);
        assert!(self.take(c).contains("urn:ietf:params:xml:ns:xmpp-bind"));
        self.send(
            c,
            &format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        );
        let bound = self.take(c);
        assert!(
            bound.contains(&format!("<jid>{user}@localhost/{resource}</jid>")),
            "{bound}"
        );
        c
    }
}

#[test]
fn pre_tls_features_offer_only_starttls() {
    let mut h = Harness::new();
    let c = h.connect();
    h.send(c, HEADER);
    let out = h.take(c);
    assert!(
        out.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>")
    );
    assert!(!out.contains("mechanism"), "{out}");
}

#[test]
fn header_unhosted_domain_host_unknown() {
    let mut h = Harness::new();
    let c = h.connect();
    h.send(c, &HEADER.replace("to='localhost'", "to='example.net'"));
    let out = h.take(c);
    assert!(
        out.starts_with("<?xml version='1.0'?><stream:stream"),
        "{out}"
    );
    assert!(out.contains("<host-unknown"), "{out}");
    assert!(out.ends_with("</stream:stream>"));
    assert_eq!(h.closed, vec![c]);
}

#[test]
fn header_wrong_namespace_invalid_namespace() {
    let mut h = Harness::new();
    let c = h.connect();
    h.send(
        c,
        &HEADER.replace("xmlns='jabber:client'", "xmlns='jabber:server'"),
    );
    assert!(h.take(c).contains("<invalid-namespace"));
}

#[test]
fn stanza_before_auth_not_authorized() {
    let mut h = Harness::new();
    let c = h.connect();
    h.send(c, HEADER);
    h.take(c);
    h.send(c, "<message to='bob@localhost'><body>hi</body></message>");
    assert!(h.take(c).contains("<not-authorized"));
    assert_eq!(h.closed, vec![c]);
}

#[test]
fn bad_xml_not_well_formed_and_others_unaffected() {
    let mut h = Harness::new();
    let alice = h.login("alice", "a");
    let c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\n\r\n");
    let out = h.take(c);
    assert!(out.contains("<not-well-formed"), "{out}");
    h.send(
        alice,
        "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(h.take(alice).contains("type='result' id='p'"));
}

#[test]
fn auth_wrong_password_delayed_then_closed_after_three() {
    let mut h = Harness::new();
    let c = h.connect();
    h.send(c, HEADER);
    h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    h.server.handle_tls_ready(h.now, c, TlsInfo::default());
    h.send(c, HEADER);
    h.take(c);
    let bad = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        b64(b"\0alice\0wrong")
    );
    for attempt in 1..=3 {
        h.send(c, &bad);
        assert_eq!(h.take(c), "", "failure must wait for the delay");
        h.advance(Duration::from_millis(1100));
        let out = h.take(c);
        assert!(
            out.contains("<not-authorized/>"),
            "attempt {attempt}: {out}"
        );
        if attempt < 3 {
            assert!(h.closed.is_empty());
        }
    }
    assert_eq!(h.closed, vec![c]);
}

#[test]
fn unauthenticated_idle_connection_timeout() {
    let mut h = Harness::new();
    let c = h.connect();
    h.advance(Duration::from_secs(59));
    assert!(h.closed.is_empty());
    h.advance(Duration::from_secs(2));
    assert!(h.take(c).contains("<connection-timeout"));
    assert_eq!(h.closed, vec![c]);
}

#[test]
fn bound_session_never_times_out_for_auth() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    h.advance(Duration::from_secs(120));
    assert!(!h.closed.contains(&a));
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn message_between_users_stamped_from() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    let b = h.login("bob", "b");
    h.send(
        a,
        "<message to='bob@localhost/b' type='chat' id='m1'><body>hi &amp; bye</body></message>",
    );
    let got = h.take(b);
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    assert!(got.contains("<body>hi &amp; bye</body>"), "{got}");
}

#[test]
fn message_spoofed_from_is_overwritten() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    let b = h.login("bob", "b");
    h.send(
        a,
        "<message from='admin@localhost' to='bob@localhost/b'><body>x</body></message>",
    );
    let got = h.take(b);
    assert!(
        got.contains("from='alice@localhost/a'") && !got.contains("admin"),
        "{got}"
    );
}

#[test]
fn bare_message_to_available_resource_and_offline_error() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    let b = h.login("bob", "b");
    // bob has not sent initial presence: not available for bare-JID messages.
    h.send(
        a,
        "<message to='bob@localhost' type='chat' id='m'><body>1</body></message>",
    );
    assert!(h.take(a).contains("<service-unavailable"));
    h.send(b, "<presence/>");
    h.take(b);
    h.send(
        a,
        "<message to='bob@localhost' type='chat' id='m'><body>2</body></message>",
    );
    assert!(h.take(b).contains("<body>2</body>"));
}

#[test]
fn message_to_unknown_user_and_remote_domain_errors() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    h.send(
        a,
        "<message to='nobody@localhost' id='1'><body>x</body></message>",
    );
    assert!(h.take(a).contains("<service-unavailable"));
    h.send(
        a,
        "<message to='bob@elsewhere.example' id='2'><body>x</body></message>",
    );
    assert!(h.take(a).contains("<remote-server-not-found"));
    h.send(a, "<message to='bad@@jid' id='3'><body>x</body></message>");
    assert!(h.take(a).contains("<jid-malformed"));
}

#[test]
fn same_resource_login_replaces_older() {
    let mut h = Harness::new();
    let first = h.login("alice", "r");
    let second = h.login("alice", "r");
    assert!(h.take(first).contains("<conflict"));
    assert!(h.closed.contains(&first));
    h.send(
        second,
        "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(h.take(second).contains("type='result'"));
}

#[test]
fn presence_broadcast_to_own_resources_and_unavailable_on_disconnect() {
    let mut h = Harness::new();
    let a1 = h.login("alice", "1");
    let a2 = h.login("alice", "2");
    let b = h.login("bob", "b");
    h.send(a1, "<presence><priority>5</priority></presence>");
    assert!(h.take(a1).contains("from='alice@localhost/1'"));
    h.send(a2, "<presence/>");
    let to_a2 = h.take(a2);
    assert!(
        to_a2.contains("from='alice@localhost/1'"),
        "a2 learns a1: {to_a2}"
    );
    assert!(h.take(a1).contains("from='alice@localhost/2'"));
    // Directed presence to bob, then a1 drops: bob and a2 get unavailable.
    h.send(a1, "<presence to='bob@localhost/b'/>");
    assert!(h.take(b).contains("from='alice@localhost/1'"));
    h.server.handle_disconnect(h.now, a1);
    h.drain();
    assert!(h.take(b).contains("type='unavailable'"));
    assert!(h.take(a2).contains("type='unavailable'"));
}

#[test]
fn server_iq_ping_disco_version_and_unknown() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    h.send(
        a,
        "<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        h.take(a)
            .contains("<iq type='result' id='1' to='alice@localhost/a' from='localhost'/>")
    );
    h.send(a, "<iq type='get' id='2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let d = h.take(a);
    assert!(
        d.contains("var='urn:xmpp:ping'") && d.contains("category='server'"),
        "{d}"
    );
    h.send(
        a,
        "<iq type='get' id='3' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert!(h.take(a).contains("<name>Hearth</name>"));
    h.send(
        a,
        "<iq type='get' id='4' to='localhost'><query xmlns='urn:example:nothing'/></iq>",
    );
    assert!(h.take(a).contains("<service-unavailable"));
    // No `to`: answered on the account's behalf.
    h.send(
        a,
        "<iq type='get' id='5'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(h.take(a).contains("type='result' id='5'"));
    // Legacy session IQ.
    h.send(
        a,
        "<iq type='set' id='6'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    );
    assert!(h.take(a).contains("type='result' id='6'"));
    // Results to the server are not answered.
    h.send(a, "<iq type='result' id='7' to='localhost'/>");
    assert_eq!(h.take(a), "");
}

#[test]
fn shutdown_sends_system_shutdown_to_all() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    let c = h.connect();
    h.server.handle_shutdown(h.now);
    h.drain();
    assert!(h.take(a).contains("<system-shutdown"));
    assert!(h.take(c).contains("<system-shutdown"));
    assert!(h.closed.contains(&a) && h.closed.contains(&c));
    assert_eq!(h.server.connection_count(), 0);
}

#[test]
fn stream_close_answered_with_close() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    h.send(a, "</stream:stream>");
    assert!(h.take(a).ends_with("</stream:stream>"));
    assert_eq!(h.closed, vec![a]);
}

#[test]
fn huge_stanza_in_chunks_policy_violation() {
    let mut h = Harness::new();
    let a = h.login("alice", "a");
    h.send(a, "<message to='bob@localhost'><body>");
    let chunk = "a".repeat(16 * 1024);
    for _ in 0..64 {
        h.send(a, &chunk);
        if h.closed.contains(&a) {
            break;
        }
    }
    assert!(h.take(a).contains("<policy-violation"));
    assert_eq!(h.closed, vec![a]);
}
