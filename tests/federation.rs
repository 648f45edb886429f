//! Federation end to end: two real `hearth` processes on loopback, each hosting one domain
//! (a.test on 127.0.0.2, b.test on 127.0.0.3, s2s ports picked free), found through a tiny
//! DNS server inside the test (UDP on 127.0.0.1, simple-dns) that both use through
//! `[dns] nameservers`. Raw clients log in to each and exchange messages across.
//!
//! The DNS data: `_xmpp-server._tcp.a.test SRV 0 5 <port> xmpp.a.test` with
//! `xmpp.a.test A 127.0.0.2` (an SRV target that is not the domain: the certificate is still
//! checked against a.test), `_xmpp-server._tcp.b.test SRV 0 5 <port> b.test` with
//! `b.test A 127.0.0.3`; no `_xmpps-server` records (NODATA), no AAAA; anything else,
//! nx.test included, is NXDOMAIN. Certificates are the servers' self-signed ones, so the
//! streams authenticate with dialback over TLS.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Client, NS_STANZAS, Opts, Server, Token};
use simple_dns::rdata::{A, RData, SRV};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};

/// Federation needs a connect, TLS and a dialback round trip each way: more than one
/// answer's `WAIT`.
const FED_WAIT: Duration = Duration::from_secs(20);

/// What the test's DNS server knows: (lowercase name, type) to records.
#[derive(Clone, Default)]
struct Zone {
    srv: HashMap<String, (u16, String)>,
    a: HashMap<String, Ipv4Addr>,
}

impl Zone {
    fn exists(&self, name: &str) -> bool {
        self.srv.contains_key(name) || self.a.contains_key(name) || {
            // A parent of an existing name exists too (empty non-terminal), e.g. a.test.
            let suffix = format!(".{name}");
            self.srv
                .keys()
                .chain(self.a.keys())
                .any(|k| k.ends_with(&suffix))
        }
    }
}

/// A UDP DNS server on 127.0.0.1 answering from a `Zone`, until dropped.
struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind DNS socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            // Ends when the test drops the server (checked every 100 ms).
            while !stop2.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone, &buf[..n]) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?.clone();
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_owned();
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    reply.questions.push(question.clone());
    let owner = Name::new_unchecked(&name);
    match question.qtype {
        QTYPE::TYPE(TYPE::SRV) => {
            if let Some((port, target)) = zone.srv.get(&name) {
                reply.answers.push(ResourceRecord::new(
                    owner.clone(),
                    CLASS::IN,
                    60,
                    RData::SRV(SRV {
                        priority: 0,
                        weight: 5,
                        port: *port,
                        target: Name::new_unchecked(target),
                    }),
                ));
            }
        }
        QTYPE::TYPE(TYPE::A) => {
            if let Some(ip) = zone.a.get(&name) {
                reply.answers.push(ResourceRecord::new(
                    owner.clone(),
                    CLASS::IN,
                    60,
                    RData::A(A {
                        address: u32::from(*ip),
                    }),
                ));
            }
        }
        _ => {}
    }
    if !zone.exists(&name) {
        *reply.rcode_mut() = RCODE::NameError;
    }
    reply.build_bytes_vec().ok()
}

/// Starts a server hosting `domain` with user `user`/"pw", federating on `ip:port`.
fn start_domain(domain: &str, user: &str, ip: &str, s2s_port: u16, dns: SocketAddr) -> Server {
    let jid = format!("{user}@{domain}");
    let mut s = Server::prepare(Opts {
        domains: vec![domain.to_owned()],
        ..Opts::default()
    });
    let config = std::fs::read_to_string(&s.config).unwrap();
    let base = config
        .strip_suffix("[s2s]\nenabled = false\n")
        .expect("the harness ends its config with [s2s] enabled = false");
    std::fs::write(
        &s.config,
        format!(
            "{base}[s2s]\nenabled = true\nlisten = [\"{ip}:{s2s_port}\"]\n\
             connect_timeout_secs = 10\n\n[dns]\nnameservers = [\"{dns}\"]\n"
        ),
    )
    .unwrap();
    s.add_user(&jid, "pw");
    s.launch();
    s
}

fn zone(port_a: u16, port_b: u16) -> Zone {
    let mut z = Zone::default();
    z.srv.insert(
        "_xmpp-server._tcp.a.test".into(),
        (port_a, "xmpp.a.test".into()),
    );
    z.a.insert("xmpp.a.test".into(), Ipv4Addr::new(127, 0, 0, 2));
    z.srv
        .insert("_xmpp-server._tcp.b.test".into(), (port_b, "b.test".into()));
    z.a.insert("b.test".into(), Ipv4Addr::new(127, 0, 0, 3));
    z
}

fn wait_body(c: &mut Client, body: &str) -> String {
    let want = body.to_owned();
    match c.wait_for(
        &format!("message '{body}'"),
        FED_WAIT,
        move |t| matches!(t, Token::Element(e) if e.starts_with("<message") && e.contains(&want)),
    ) {
        Token::Element(e) => e,
        _ => unreachable!("predicate matched only elements"),
    }
}

#[test]
fn two_servers_messages_cross_both_ways_and_nxdomain_bounces() {
    let ports = common::free_ports(2);
    let (port_a, port_b) = (ports[0], ports[1]);
    let dns = DnsServer::start(zone(port_a, port_b));
    let a = start_domain("a.test", "alice", "127.0.0.2", port_a, dns.addr);
    let b = start_domain("b.test", "bob", "127.0.0.3", port_b, dns.addr);
    let mut alice = a.login("alice@a.test", "pw", "phone");
    let mut bob = b.login("bob@b.test", "pw", "laptop");

    // a.test -> b.test: a new outgoing stream, SRV to b.test's port, dialback.
    alice.send("<message to='bob@b.test/laptop' type='chat' id='m1'><body>hi bob</body></message>");
    let got = wait_body(&mut bob, "hi bob");
    assert!(got.contains("from='alice@a.test/phone'"), "{got}");

    // b.test -> a.test: the other direction has its own stream (SRV target xmpp.a.test).
    bob.send(
        "<message to='alice@a.test/phone' type='chat' id='m2'><body>hi alice</body></message>",
    );
    let got = wait_body(&mut alice, "hi alice");
    assert!(got.contains("from='bob@b.test/laptop'"), "{got}");

    // A domain that does not exist: the sender gets remote-server-not-found.
    alice.send("<message to='x@nx.test' type='chat' id='m3'><body>anyone?</body></message>");
    let err = match alice.wait_for(
        "error for m3",
        FED_WAIT,
        |t| matches!(t, Token::Element(e) if e.starts_with("<message") && e.contains("id='m3'")),
    ) {
        Token::Element(e) => e,
        _ => unreachable!("predicate matched only elements"),
    };
    assert!(err.contains("type='error'"), "{err}");
    assert!(
        err.contains(&format!("<remote-server-not-found xmlns='{NS_STANZAS}'/>")),
        "{err}"
    );
}
