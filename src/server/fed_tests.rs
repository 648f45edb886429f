//! Federation end to end, sans-IO: two `Server`s (a.example and b.example) in one test, joined
//! by a small network shim that carries `Connect`/`Send`/`Close` between them, stands in for
//! TLS (handshakes complete at once; each side's certificate names are chosen by the test)
//! and answers `Dns` queries from a zone the test describes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use simple_dns::RCODE;

use crate::config::Config;
use crate::dns::Transmit;
use crate::dns::testutil::{Rr, question_of, reply};
use crate::server::{Action, ConnId, ListenerKind, TlsInfo};
use crate::testutil::Harness;

const A_TYPE: u16 = 1;
const AAAA_TYPE: u16 = 28;
const SRV_TYPE: u16 = 33;
const NS: &str = "10.0.0.53:53";

/// What the zone answers for (name, type): rcode and answers; `None`: no reply at all.
type Zone = Box<dyn Fn(&str, u16) -> Option<(RCODE, Vec<Rr<'static>>)>>;

/// a.example and b.example, each with a STARTTLS SRV record to its own host.
fn standard_zone(name: &str, qtype: u16) -> Option<(RCODE, Vec<Rr<'static>>)> {
    let r = match (name, qtype) {
        ("_xmpp-server._tcp.a.example", SRV_TYPE) => vec![Rr::Srv(
            "_xmpp-server._tcp.a.example",
            300,
            0,
            0,
            5269,
            "xmpp.a.example",
        )],
        ("_xmpp-server._tcp.b.example", SRV_TYPE) => vec![Rr::Srv(
            "_xmpp-server._tcp.b.example",
            300,
            0,
            0,
            5269,
            "xmpp.b.example",
        )],
        ("xmpp.a.example", A_TYPE) => vec![Rr::A("xmpp.a.example", 300, [10, 0, 0, 1])],
        ("xmpp.b.example", A_TYPE) => vec![Rr::A("xmpp.b.example", 300, [10, 0, 0, 2])],
        (_, AAAA_TYPE) | ("xmpp.a.example" | "xmpp.b.example", _) => vec![],
        _ => return Some((RCODE::NameError, vec![])),
    };
    Some((RCODE::NoError, r))
}

fn config(domain: &str) -> Config {
    let mut c = Config {
        domains: vec![domain.to_owned()],
        ..Config::default()
    };
    c.s2s.enabled = true;
    c.dns.nameservers = vec![NS.parse().unwrap()];
    c
}

struct Net {
    h: [Harness; 2],
    /// (side, conn) ↔ (other side, its conn).
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    /// Listening addresses: (side, direct TLS).
    listeners: HashMap<SocketAddr, (usize, bool)>,
    /// Addresses that refuse connections at once.
    refuse: HashSet<SocketAddr>,
    /// The certificate names each side presents (empty: none, dialback it is).
    certs: [Vec<String>; 2],
    zone: Zone,
    next_in: u64,
    /// Connects seen, in order: (side, address).
    pub connects: Vec<(usize, SocketAddr)>,
}

impl Net {
    fn new() -> Net {
        Net::with_configs(config("a.example"), config("b.example"))
    }

    fn with_configs(a: Config, b: Config) -> Net {
        let mut listeners = HashMap::new();
        listeners.insert("10.0.0.1:5269".parse().unwrap(), (0, false));
        listeners.insert("10.0.0.2:5269".parse().unwrap(), (1, false));
        listeners.insert("10.0.0.2:5270".parse().unwrap(), (1, true));
        let mut b = Harness::with_config(b);
        // The same process clock for both sides.
        b.now = Harness::with_config(Config::default()).now;
        let mut a = Harness::with_config(a);
        a.now = b.now;
        Net {
            h: [a, b],
            links: HashMap::new(),
            listeners,
            refuse: HashSet::new(),
            certs: [Vec::new(), Vec::new()],
            zone: Box::new(standard_zone),
            next_in: 0,
            connects: Vec::new(),
        }
    }

    fn tls_info(&self, side: usize) -> TlsInfo {
        let other = 1 - side;
        TlsInfo {
            peer_cert_names: self.certs[other].clone(),
            presented_cert: !self.certs[side].is_empty(),
            ..TlsInfo::default()
        }
    }

    /// Carries everything until both sides are quiet (bounded).
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for side in 0..2 {
                self.h[side].drain();
                // Bytes first, then closes: a close flushes what was sent before it.
                let conns: Vec<ConnId> = self.h[side]
                    .out
                    .keys()
                    .copied()
                    .filter(|c| self.links.contains_key(&(side, *c)))
                    .collect();
                for c in conns {
                    let bytes = self.h[side].take(c);
                    if bytes.is_empty() {
                        continue;
                    }
                    busy = true;
                    let (o, oc) = self.links[&(side, c)];
                    let h = &mut self.h[o];
                    h.server.handle_bytes(h.now, oc, bytes.as_bytes());
                }
                let closed: Vec<ConnId> = std::mem::take(&mut self.h[side].closed);
                for c in closed {
                    if let Some((o, oc)) = self.links.remove(&(side, c)) {
                        busy = true;
                        self.links.remove(&(o, oc));
                        let h = &mut self.h[o];
                        h.server.handle_disconnect(h.now, oc);
                    }
                }
                // Server-side STARTTLS completes when the client side asks for it.
                self.h[side].starttls.clear();
                let fed = std::mem::take(&mut self.h[side].fed);
                for a in fed {
                    busy = true;
                    self.act(side, a);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the two servers never went quiet");
    }

    fn act(&mut self, side: usize, a: Action) {
        match a {
            Action::Dns(Transmit::Udp { to, bytes }) => {
                let (name, qtype) = question_of(&bytes);
                let name = name.trim_end_matches('.').to_owned();
                if let Some((rcode, answers)) = (self.zone)(&name, qtype) {
                    let r = reply(&bytes, rcode, &answers, &[]);
                    let h = &mut self.h[side];
                    h.server.handle_dns_udp(h.now, to, &r);
                }
            }
            Action::Dns(other) => panic!("unexpected DNS transmit {other:?}"),
            Action::Connect { conn, addr, tls } => {
                self.connects.push((side, addr));
                if self.refuse.contains(&addr) {
                    let h = &mut self.h[side];
                    return h.server.handle_disconnect(h.now, conn);
                }
                let Some(&(o, direct)) = self.listeners.get(&addr) else {
                    // Nobody there and no answer: only the connect timeout ends it.
                    return;
                };
                assert_eq!(direct, tls.is_some(), "TLS mode must match the port");
                self.next_in += 1;
                let oc = ConnId((1 << 40) + self.next_in);
                self.links.insert((side, conn), (o, oc));
                self.links.insert((o, oc), (side, conn));
                let kind = if direct {
                    ListenerKind::S2sDirectTls
                } else {
                    ListenerKind::S2sStartTls
                };
                let peer: SocketAddr = "10.0.0.9:40000".parse().unwrap();
                let info_o = self.tls_info(o);
                let info_s = self.tls_info(side);
                let h = &mut self.h[o];
                h.server.handle_accept(h.now, oc, kind, peer);
                if direct {
                    h.server.handle_tls_ready(h.now, oc, info_o);
                    let h = &mut self.h[side];
                    h.server.handle_tls_ready(h.now, conn, info_s);
                } else {
                    let h = &mut self.h[side];
                    h.server.handle_connected(h.now, conn);
                }
            }
            Action::StartTlsClient { conn, tls, .. } => {
                assert_eq!(tls.local_domain, self.h[side].domain);
                let Some(&(o, oc)) = self.links.get(&(side, conn)) else {
                    return;
                };
                // The server side first: it must be in TLS before the client's next bytes.
                let info_o = self.tls_info(o);
                let info_s = self.tls_info(side);
                let h = &mut self.h[o];
                h.server.handle_tls_ready(h.now, oc, info_o);
                let h = &mut self.h[side];
                h.server.handle_tls_ready(h.now, conn, info_s);
            }
            other => panic!("not a federation action: {other:?}"),
        }
    }

    fn advance(&mut self, d: Duration) {
        for h in &mut self.h {
            h.advance(d);
        }
        self.run();
    }

    fn login(&mut self, side: usize, user: &str, resource: &str) -> ConnId {
        let c = self.h[side].login(user, resource);
        // Roster pushes go only to sessions that asked for the roster.
        self.h[side].send(
            c,
            "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        );
        self.h[side].send(c, "<presence/>");
        self.run();
        self.h[side].take(c);
        c
    }

    fn send(&mut self, side: usize, conn: ConnId, s: &str) {
        self.h[side].send(conn, s);
        self.run();
    }

    fn take(&mut self, side: usize, conn: ConnId) -> String {
        self.h[side].take(conn)
    }

    fn s2s_links(&self) -> usize {
        self.links.len() / 2
    }
}

fn msg(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' id='{id}' type='chat'><body>{body}</body></message>")
}

#[test]
fn message_both_ways_with_dialback() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "hi bob"));
    let got = n.take(1, b);
    assert!(
        got.contains("from='alice@a.example/pc'") && got.contains("<body>hi bob</body>"),
        "{got}"
    );
    assert!(
        got.contains("to='bob@b.example'") && got.contains("xmlns='jabber:client'")
            || !got.contains("jabber:server"),
        "delivered as a client stanza: {got}"
    );
    n.send(1, b, &msg("alice@a.example/pc", "m2", "hi alice"));
    let got = n.take(0, a);
    assert!(
        got.contains("from='bob@b.example/phone'") && got.contains("<body>hi alice</body>"),
        "{got}"
    );
    assert_eq!(n.take(0, a), "");
    // One stream each way (the verification rode on them too).
    assert_eq!(n.s2s_links(), 2);
}

#[test]
fn sasl_external_when_certificates_prove_domains() {
    let mut n = Net::new();
    n.certs = [
        vec!["a.example".into()],
        vec!["*.example".into(), "b.example".into()],
    ];
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "over external"));
    assert!(n.take(1, b).contains("over external"));
    // No dialback needed: no stream back from b to a.
    assert_eq!(n.s2s_links(), 1);
}

#[test]
fn subscription_both_ways_and_presence() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, "<presence to='bob@b.example' type='subscribe'/>");
    let to_a = n.take(0, a);
    assert!(
        to_a.contains("jid='bob@b.example'") && to_a.contains("ask='subscribe'"),
        "{to_a}"
    );
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("type='subscribe'") && to_b.contains("from='alice@a.example'"),
        "{to_b}"
    );
    n.send(1, b, "<presence to='alice@a.example' type='subscribed'/>");
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("jid='alice@a.example' subscription='from'"),
        "{to_b}"
    );
    let to_a = n.take(0, a);
    assert!(
        to_a.contains("jid='bob@b.example' subscription='to'"),
        "{to_a}"
    );
    assert!(to_a.contains("type='subscribed'"), "{to_a}");
    assert!(
        to_a.contains("from='bob@b.example/phone' to='alice@a.example'"),
        "bob's current presence follows the approval: {to_a}"
    );
    // The other way.
    n.send(1, b, "<presence to='alice@a.example' type='subscribe'/>");
    assert!(n.take(0, a).contains("type='subscribe'"));
    n.send(0, a, "<presence to='bob@b.example' type='subscribed'/>");
    let to_b = n.take(1, b);
    assert!(to_b.contains("subscription='both'"), "{to_b}");
    assert!(to_b.contains("from='alice@a.example/pc'"), "{to_b}");
    // Broadcast reaches the remote contact.
    n.send(0, a, "<presence><show>away</show></presence>");
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("<show>away</show>") && to_b.contains("from='alice@a.example/pc'"),
        "{to_b}"
    );
    // A new login probes the remote contact, whose server answers with bob's presence.
    let a2 = n.h[0].login("alice", "laptop");
    n.send(0, a2, "<presence/>");
    let got = n.take(0, a2);
    assert!(
        got.contains("from='bob@b.example/phone'"),
        "probe answered over s2s: {got}"
    );
    // Logging out tells the remote subscriber.
    n.h[0].server.handle_disconnect(n.h[0].now, a);
    n.run();
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("from='alice@a.example/pc'") && to_b.contains("type='unavailable'"),
        "{to_b}"
    );
}

#[test]
fn probe_from_stranger_is_not_answered() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    // bob subscribes to alice but she never approves: his server's probe gets nothing.
    n.send(1, b, "<presence to='alice@a.example' type='subscribe'/>");
    n.take(0, a);
    let b2 = n.login(1, "bob", "tablet");
    n.send(1, b2, "<presence/>");
    assert!(!n.take(1, b2).contains("alice@a.example/pc"));
}

#[test]
fn iq_both_ways() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    // To a remote full JID: delivered to the client, which answers.
    n.send(
        0,
        a,
        "<iq to='bob@b.example/phone' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    );
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("id='v1'") && to_b.contains("from='alice@a.example/pc'"),
        "{to_b}"
    );
    n.send(1, b, "<iq to='alice@a.example/pc' type='result' id='v1'><query xmlns='jabber:iq:version'><name>x</name></query></iq>");
    let to_a = n.take(0, a);
    assert!(
        to_a.contains("type='result'") && to_a.contains("<name>x</name>"),
        "{to_a}"
    );
    // To a remote bare JID: answered by the remote server (vCard), the other way round.
    n.send(
        0,
        a,
        "<iq type='set' id='set'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    );
    assert!(n.take(0, a).contains("type='result'"));
    n.send(
        1,
        b,
        "<iq to='alice@a.example' type='get' id='vc'><vCard xmlns='vcard-temp'/></iq>",
    );
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("id='vc'")
            && to_b.contains("from='alice@a.example'")
            && to_b.contains("type='result'")
            && to_b.contains("<FN>Alice</FN>"),
        "{to_b}"
    );
    // To the remote server itself; an unknown namespace comes back as an error over s2s.
    n.send(
        0,
        a,
        "<iq to='b.example' type='get' id='u'><nope xmlns='urn:example:nope'/></iq>",
    );
    let to_a = n.take(0, a);
    assert!(
        to_a.contains("id='u'")
            && to_a.contains("type='error'")
            && to_a.contains("service-unavailable"),
        "{to_a}"
    );
}

#[test]
fn error_for_remote_sender_goes_back_and_errors_are_not_answered() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    n.send(0, a, &msg("nobody@b.example", "x", "anyone?"));
    let got = n.take(0, a);
    assert!(
        got.contains("id='x'")
            && got.contains("type='error'")
            && got.contains("service-unavailable"),
        "{got}"
    );
    // An error to a nonexistent user is dropped, not answered.
    n.send(0, a, "<message to='nobody@b.example' type='error' id='e'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    assert_eq!(n.take(0, a), "");
}

fn bounced(n: &mut Net, zone: Zone, cond: &str) {
    n.zone = zone;
    let a = n.login(0, "alice", "pc");
    n.send(0, a, &msg("bob@nowhere.example", "m1", "one"));
    n.send(0, a, &msg("bob@nowhere.example", "m2", "two"));
    let got = n.take(0, a);
    let first = got.find("id='m1'").expect(&got);
    let second = got.find("id='m2'").expect(&got);
    assert!(first < second, "bounced in order: {got}");
    assert_eq!(got.matches(cond).count(), 2, "{got}");
    assert_eq!(got.matches("type='error'").count(), 2, "{got}");
    assert!(n.connects.is_empty(), "{:?}", n.connects);
}

#[test]
fn nxdomain_bounces_remote_server_not_found() {
    let mut n = Net::new();
    bounced(&mut n, Box::new(standard_zone), "remote-server-not-found");
}

#[test]
fn dot_target_bounces_remote_server_not_found_without_connecting() {
    let mut n = Net::new();
    let zone: Zone = Box::new(|name, qtype| match (name, qtype) {
        ("_xmpp-server._tcp.nowhere.example", SRV_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::Srv(
                "_xmpp-server._tcp.nowhere.example",
                300,
                0,
                0,
                0,
                ".",
            )],
        )),
        ("nowhere.example", A_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::A("nowhere.example", 300, [10, 0, 0, 2])],
        )),
        _ => standard_zone(name, qtype),
    });
    bounced(&mut n, zone, "remote-server-not-found");
}

#[test]
fn refused_connections_bounce_remote_server_timeout() {
    let mut n = Net::new();
    n.refuse.insert("10.0.0.2:5269".parse().unwrap());
    let a = n.login(0, "alice", "pc");
    n.send(0, a, &msg("bob@b.example", "m1", "one"));
    let got = n.take(0, a);
    assert!(
        got.contains("id='m1'") && got.contains("remote-server-timeout"),
        "{got}"
    );
}

#[test]
fn dead_first_candidate_then_working_second() {
    let mut n = Net::new();
    n.zone = Box::new(|name, qtype| match (name, qtype) {
        ("_xmpp-server._tcp.b.example", SRV_TYPE) => Some((
            RCODE::NoError,
            vec![
                Rr::Srv(
                    "_xmpp-server._tcp.b.example",
                    300,
                    0,
                    0,
                    5269,
                    "dead.b.example",
                ),
                Rr::Srv(
                    "_xmpp-server._tcp.b.example",
                    300,
                    10,
                    0,
                    5269,
                    "xmpp.b.example",
                ),
            ],
        )),
        ("dead.b.example", A_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::A("dead.b.example", 300, [10, 0, 0, 99])],
        )),
        ("dead.b.example", _) => Some((RCODE::NoError, vec![])),
        _ => standard_zone(name, qtype),
    });
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "first"));
    n.send(0, a, &msg("bob@b.example", "m2", "second"));
    assert_eq!(n.take(1, b), "", "nothing before the dead one times out");
    assert_eq!(n.connects, vec![(0, "10.0.0.99:5269".parse().unwrap())]);
    n.advance(Duration::from_secs(31));
    let got = n.take(1, b);
    let (p1, p2) = (
        got.find("first").expect(&got),
        got.find("second").expect(&got),
    );
    assert!(p1 < p2, "{got}");
    assert_eq!(n.take(0, a), "", "no error for alice");
    assert_eq!(n.connects[1], (0, "10.0.0.2:5269".parse().unwrap()));
}

#[test]
fn direct_tls_candidate_preferred() {
    let mut n = Net::new();
    n.zone = Box::new(|name, qtype| match (name, qtype) {
        ("_xmpps-server._tcp.b.example", SRV_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::Srv(
                "_xmpps-server._tcp.b.example",
                300,
                0,
                0,
                5270,
                "xmpp.b.example",
            )],
        )),
        _ => standard_zone(name, qtype),
    });
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "direct"));
    assert!(n.take(1, b).contains("direct"));
    assert_eq!(n.connects[0], (0, "10.0.0.2:5270".parse().unwrap()));
}

#[test]
fn stanzas_sent_while_connecting_arrive_in_order() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    // Send several before the shim carries anything.
    for i in 0..5 {
        n.h[0].send(a, &msg("bob@b.example", &format!("q{i}"), &format!("n{i}")));
    }
    n.run();
    let got = n.take(1, b);
    let pos: Vec<usize> = (0..5)
        .map(|i| got.find(&format!("n{i}<")).expect(&got))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{got}");
    // Later ones go straight over the ready stream.
    n.send(0, a, &msg("bob@b.example", "q5", "n5"));
    assert!(n.take(1, b).contains("n5<"));
}

#[test]
fn queue_bound_refuses_with_resource_constraint() {
    let mut ca = config("a.example");
    ca.s2s.max_queued_stanzas = 3;
    let mut n = Net::with_configs(ca, config("b.example"));
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    for i in 0..5 {
        n.h[0].send(a, &msg("bob@b.example", &format!("q{i}"), &format!("n{i}")));
    }
    let early = n.h[0].take(a);
    assert_eq!(early.matches("resource-constraint").count(), 2, "{early}");
    assert!(
        early.contains("id='q3'") && early.contains("id='q4'"),
        "{early}"
    );
    n.run();
    let got = n.take(1, b);
    assert!(
        got.contains("n0<") && got.contains("n1<") && got.contains("n2<"),
        "{got}"
    );
    assert!(!got.contains("n3<") && !got.contains("n4<"), "{got}");
}

#[test]
fn spoofed_from_is_refused() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "hello"));
    assert!(n.take(1, b).contains("hello"));
    // Our outgoing stream to b (authenticated for a.example only) carries a forged sender.
    let (&(_, out), &(_, inc)) = n
        .links
        .iter()
        .find(|((s, c), _)| *s == 0 && c.0 & crate::server::OUTGOING_CONN_BIT != 0)
        .unwrap();
    let forged = "<message xmlns='jabber:server' from='eve@evil.example' to='bob@b.example'><body>forged</body></message>";
    let h = &mut n.h[1];
    h.server.handle_bytes(h.now, inc, forged.as_bytes());
    h.drain();
    let reply = h.take(inc);
    assert!(reply.contains("invalid-from"), "{reply}");
    assert!(!n.take(1, b).contains("forged"));
    let _ = out;
}

#[test]
fn idle_stream_closes_and_a_later_stanza_reconnects() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "before"));
    assert!(n.take(1, b).contains("before"));
    assert_eq!(n.s2s_links(), 2);
    n.advance(Duration::from_secs(601));
    assert_eq!(n.s2s_links(), 0, "idle streams closed");
    for h in &n.h {
        let f = h.server.federation.as_ref().unwrap();
        assert_eq!(f.counts(), (0, 0), "routes and incoming streams forgotten");
    }
    let connects = n.connects.len();
    n.send(0, a, &msg("bob@b.example", "m2", "after"));
    assert!(n.take(1, b).contains("after"));
    assert!(n.connects.len() > connects, "reconnected");
    let to_a = n.take(0, a);
    assert!(!to_a.contains("type='error'"), "{to_a}");
}

#[test]
fn s2s_disabled_keeps_remote_domains_unreachable() {
    let mut h = Harness::new();
    let a = h.login("alice", "pc");
    h.send(a, &msg("bob@b.example", "m1", "x"));
    assert!(h.take(a).contains("remote-server-not-found"));
    assert!(h.fed.is_empty());
}

fn subscribe_both(n: &mut Net, a: ConnId, b: ConnId) {
    n.send(0, a, "<presence to='bob@b.example' type='subscribe'/>");
    n.send(1, b, "<presence to='alice@a.example' type='subscribed'/>");
    n.send(1, b, "<presence to='alice@a.example' type='subscribe'/>");
    n.send(0, a, "<presence to='bob@b.example' type='subscribed'/>");
    n.take(0, a);
    n.take(1, b);
}

#[test]
fn blocking_a_remote_subscriber_sends_unavailable_over_s2s() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    subscribe_both(&mut n, a, b);
    n.send(
        0,
        a,
        "<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='bob@b.example'/></block></iq>",
    );
    let to_b = n.take(1, b);
    assert!(
        to_b.contains("type='unavailable'") && to_b.contains("from='alice@a.example/pc'"),
        "{to_b}"
    );
    // bob's presence no longer reaches alice.
    n.send(1, b, "<presence><show>chat</show></presence>");
    assert!(!n.take(0, a).contains("<show>chat</show>"));
}

#[test]
fn remote_unsubscribe_cancels_and_announces_unavailable() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    subscribe_both(&mut n, a, b);
    n.send(1, b, "<presence to='alice@a.example' type='unsubscribed'/>");
    let to_a = n.take(0, a);
    assert!(to_a.contains("type='unsubscribed'"), "{to_a}");
    assert!(
        to_a.contains("from='bob@b.example/phone' to='alice@a.example' type='unavailable'"),
        "{to_a}"
    );
    assert!(
        to_a.contains("jid='bob@b.example' subscription='from'"),
        "{to_a}"
    );
    n.send(1, b, "<presence><show>dnd</show></presence>");
    assert!(!n.take(0, a).contains("dnd"));
}

#[test]
fn unanswered_connect_times_out_with_remote_server_timeout() {
    let mut n = Net::new();
    n.listeners.clear();
    let a = n.login(0, "alice", "pc");
    n.send(0, a, &msg("bob@b.example", "m1", "one"));
    assert_eq!(n.take(0, a), "");
    n.advance(Duration::from_secs(29));
    assert_eq!(n.take(0, a), "", "not before the connect timeout");
    n.advance(Duration::from_secs(2));
    let got = n.take(0, a);
    assert!(
        got.contains("id='m1'") && got.contains("remote-server-timeout"),
        "{got}"
    );
    let f = n.h[0].server.federation.as_ref().unwrap();
    assert_eq!(f.counts(), (0, 0));
}

#[test]
fn dialback_verification_survives_a_dead_first_candidate_on_the_way_back() {
    let mut n = Net::new();
    // b reaches a only through a second candidate; a's first is refused.
    n.zone = Box::new(|name, qtype| match (name, qtype) {
        ("_xmpp-server._tcp.a.example", SRV_TYPE) => Some((
            RCODE::NoError,
            vec![
                Rr::Srv(
                    "_xmpp-server._tcp.a.example",
                    300,
                    0,
                    0,
                    5269,
                    "dead.a.example",
                ),
                Rr::Srv(
                    "_xmpp-server._tcp.a.example",
                    300,
                    5,
                    0,
                    5269,
                    "xmpp.a.example",
                ),
            ],
        )),
        ("dead.a.example", A_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::A("dead.a.example", 300, [10, 0, 0, 98])],
        )),
        ("dead.a.example", _) => Some((RCODE::NoError, vec![])),
        _ => standard_zone(name, qtype),
    });
    n.refuse.insert("10.0.0.98:5269".parse().unwrap());
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "verified"));
    assert!(n.take(1, b).contains("verified"));
    assert!(n.connects.contains(&(1, "10.0.0.98:5269".parse().unwrap())));
}

#[test]
fn dialback_claiming_our_own_domain_is_invalid_without_asking_anyone() {
    let mut n = Net::new();
    let h = &mut n.h[1];
    let c = ConnId(1 << 41);
    h.server.handle_accept(
        h.now,
        c,
        ListenerKind::S2sStartTls,
        "10.0.0.66:4000".parse().unwrap(),
    );
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='b.example' to='b.example' version='1.0'>";
    h.send(c, header);
    h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(h.take(c).contains("<proceed"));
    h.server.handle_tls_ready(h.now, c, TlsInfo::default());
    h.send(c, header);
    h.take(c);
    h.send(
        c,
        "<db:result from='b.example' to='b.example'>00</db:result>",
    );
    let out = h.take(c);
    assert!(out.contains("type='invalid'"), "{out}");
    assert!(h.closed.contains(&c));
    assert!(h.fed.is_empty(), "no DNS, no connection: {:?}", h.fed);
}

#[test]
fn connection_limit_refuses_past_it_and_senders_get_errors() {
    let mut cb = config("b.example");
    cb.s2s.max_connections = 1;
    let mut n = Net::with_configs(config("a.example"), cb);
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "one"));
    // b accepted a's stream but may not open the one back to verify a's key.
    assert_eq!(n.take(1, b), "");
    let got = n.take(0, a);
    assert!(
        got.contains("id='m1'") && got.contains("type='error'"),
        "{got}"
    );
    assert!(
        !n.connects.iter().any(|(side, _)| *side == 1),
        "{:?}",
        n.connects
    );
}

#[test]
fn shutdown_closes_streams_and_bounces_what_waits() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "pc");
    let b = n.login(1, "bob", "phone");
    n.send(0, a, &msg("bob@b.example", "m1", "up"));
    assert!(n.take(1, b).contains("up"));
    // A second remote domain is still connecting (nobody answers there).
    n.zone = Box::new(|name, qtype| match (name, qtype) {
        ("_xmpp-server._tcp.c.example", SRV_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::Srv(
                "_xmpp-server._tcp.c.example",
                300,
                0,
                0,
                5269,
                "xmpp.c.example",
            )],
        )),
        ("xmpp.c.example", A_TYPE) => Some((
            RCODE::NoError,
            vec![Rr::A("xmpp.c.example", 300, [10, 0, 0, 3])],
        )),
        _ => standard_zone(name, qtype),
    });
    n.send(0, a, &msg("carol@c.example", "m2", "waiting"));
    let h = &mut n.h[0];
    h.server.handle_shutdown(h.now);
    n.run();
    let got = n.take(0, a);
    assert!(
        got.contains("id='m2'") && got.contains("remote-server-timeout"),
        "{got}"
    );
    assert_eq!(n.s2s_links(), 0, "every s2s stream closed");
    let f = n.h[0].server.federation.as_ref().unwrap();
    assert_eq!(f.counts(), (0, 0));
}

#[test]
fn push_notification_crosses_s2s_and_remote_error_disables() {
    let mut n = Net::new();
    let a = n.login(0, "alice", "phone");
    let c = n.login(0, "carol", "pc");
    let app = n.login(1, "bob", "push");
    n.send(
        0,
        a,
        "<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='bob@b.example/push' node='dev1'/></iq>",
    );
    assert!(n.take(0, a).contains("type='result'"));
    n.send(0, a, "<inactive xmlns='urn:xmpp:csi:0'/>");
    n.send(0, c, &msg("alice@a.example", "m1", "private words"));
    assert!(n.take(0, a).contains("private words"));
    let got = n.take(1, app);
    assert!(
        got.contains("from='alice@a.example'")
            && got.contains("<publish node='dev1'>")
            && got.contains("<value>urn:xmpp:push:summary</value>")
            && got.contains("<value>carol@a.example/pc</value>"),
        "{got}"
    );
    assert!(!got.contains("private words"), "{got}");
    let id = got.split("id='").nth(1).unwrap();
    let id = &id[..id.find('\'').unwrap()];
    // The app server no longer knows the device: the registration goes.
    n.send(
        1,
        app,
        &format!(
            "<iq type='error' to='alice@a.example' id='{id}'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ),
    );
    n.advance(crate::features::push::MIN_INTERVAL);
    n.send(0, c, &msg("alice@a.example", "m2", "again"));
    assert!(n.take(0, a).contains("again"));
    assert_eq!(n.take(1, app), "");
}
