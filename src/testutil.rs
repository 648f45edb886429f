//! Test-only scenario harness: a whole `Server` on a `MemoryStore`, driven by bytes on a fake
//! clock (no sockets). Features write their scenario tests with it:
//! `let mut h = Harness::new(); let a = h.login("alice", "a"); h.send(a, "..."); h.take(a)`.

use crate::config::Config;
use crate::sasl::Credentials;
use crate::server::{Action, ConnId, ListenerKind, RandomSource, Server, TlsInfo};
use crate::store::MemoryStore;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// Deterministic randomness (xorshift64*).
pub struct SeededRandom(pub u64);

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

pub struct Harness {
    pub server: Server,
    pub now: Instant,
    next_conn: u64,
    /// Output per connection since last taken.
    pub out: HashMap<ConnId, String>,
    pub closed: Vec<ConnId>,
    pub starttls: Vec<ConnId>,
    /// Federation actions (`Connect`, `StartTlsClient`, `Dns`) for a test's network shim.
    pub fed: Vec<Action>,
    /// The first hosted domain: where alice, bob and carol live.
    pub domain: String,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
     xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

pub fn b64(s: &[u8]) -> String {
    crate::base64::encode(s)
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Harness {
        let mut store = MemoryStore::new();
        let mut rng = SeededRandom(7);
        let domain = config.domains[0].clone();
        for user in ["alice", "bob", "carol"] {
            let creds = Credentials::derive("pw", 4096, &mut |b| rng.fill(b)).unwrap();
            store
                .account_create(&format!("{user}@{domain}"), &creds)
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
            fed: Vec::new(),
            domain,
        }
    }

    pub fn drain(&mut self) {
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
                a @ (Action::Connect { .. } | Action::StartTlsClient { .. } | Action::Dns(_)) => {
                    self.fed.push(a)
                }
            }
        }
    }

    pub fn connect(&mut self) -> ConnId {
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

    pub fn send(&mut self, conn: ConnId, s: &str) {
        self.server.handle_bytes(self.now, conn, s.as_bytes());
        self.drain();
    }

    pub fn take(&mut self, conn: ConnId) -> String {
        self.out.remove(&conn).unwrap_or_default()
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// STARTTLS, PLAIN, bind; returns the connection with its output taken.
    pub fn login(&mut self, user: &str, resource: &str) -> ConnId {
        let c = self.connect();
        let header = HEADER.replace("to='localhost'", &format!("to='{}'", self.domain));
        self.send(c, &header);
        assert!(self.take(c).contains("<starttls"));
        self.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(self.take(c).contains("<proceed"));
        assert!(self.starttls.contains(&c));
        self.server
            .handle_tls_ready(self.now, c, TlsInfo::default());
        self.drain();
        self.send(c, &header);
        assert!(self.take(c).contains("<mechanism>PLAIN</mechanism>"));
        let auth = b64(format!("\0{user}\0pw").as_bytes());
        self.send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
        );
        assert!(self.take(c).contains("<success"), "login of {user} failed");
        self.send(c, &header);
        assert!(self.take(c).contains("urn:ietf:params:xml:ns:xmpp-bind"));
        self.send(
            c,
            &format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        );
        let bound = self.take(c);
        assert!(
            bound.contains(&format!("<jid>{user}@{}/{resource}</jid>", self.domain)),
            "{bound}"
        );
        c
    }
}
