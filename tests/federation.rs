//! Federation end to end: two real `hearth` processes on loopback, each hosting one domain
//! (a.test on 127.0.0.2, b.test on 127.0.0.3, s2s ports picked free), found through a tiny
//! DNS server inside the test (UDP on 127.0.0.1, simple-dns) that both use through
//! `[dns] nameservers`. Raw clients log in to each and exchange messages across.
//!
//! The DNS data: `_xmpp-server._tcp.a.test SRV 0 5 <port> xmpp.a.test` with
//! `xmpp.a.test A 127.0.0.2` (an SRV target that is not the domain: the certificate is still
//! checked against a.test), `_xmpp-server._tcp.b.test SRV 10 5 <port> b.test` and
//! `_xmpps-server._tcp.b.test SRV 0 5 <tls port> b.test` (truncated over UDP, so fetched over
//! TCP) with `b.test A 127.0.0.3`; `dead.test` points at a port nobody listens on; no AAAA;
//! anything else, nx.test included, is NXDOMAIN. Certificates are the servers' self-signed
//! ones, so the streams authenticate with dialback over TLS.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Names answered over UDP with TC set and no records: the full answer is over TCP.
    truncated: Vec<String>,
    /// SRV priorities other than 0.
    priority: HashMap<String, u16>,
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

/// A DNS server on 127.0.0.1 (UDP, and TCP on the same port) answering from a `Zone`, until
/// dropped.
struct DnsServer {
    addr: SocketAddr,
    /// Queries answered over TCP.
    tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        // UDP and TCP on one port: a port free for UDP may be taken for TCP; a few tries.
        let (sock, listener) = (0..20)
            .find_map(|_| {
                let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
                let listener = TcpListener::bind(sock.local_addr().ok()?).ok()?;
                Some((sock, listener))
            })
            .expect("bind DNS sockets");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let (stop2, zone2) = (stop.clone(), zone.clone());
        let udp = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            // Ends when the test drops the server (checked every 100 ms).
            while !stop2.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone2, &buf[..n], true) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        let (stop3, count) = (stop.clone(), tcp_queries.clone());
        let tcp = std::thread::spawn(move || {
            // Ends when the test drops the server (checked every 50 ms).
            while !stop3.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut query).is_err() {
                    continue;
                }
                if let Some(reply) = answer(&zone, &query, false) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    let _ = conn.write_all(&framed);
                }
            }
        });
        DnsServer {
            addr,
            tcp_queries,
            stop,
            threads: vec![udp, tcp],
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The reply to `query`; over UDP (`udp`), names in `zone.truncated` get TC and no records.
fn answer(zone: &Zone, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?.clone();
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_owned();
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    reply.questions.push(question.clone());
    let owner = Name::new_unchecked(&name);
    if udp && zone.truncated.contains(&name) {
        reply.set_flags(PacketFlag::TRUNCATION);
        return reply.build_bytes_vec().ok();
    }
    match question.qtype {
        QTYPE::TYPE(TYPE::SRV) => {
            if let Some((port, target)) = zone.srv.get(&name) {
                reply.answers.push(ResourceRecord::new(
                    owner.clone(),
                    CLASS::IN,
                    60,
                    RData::SRV(SRV {
                        priority: zone.priority.get(&name).copied().unwrap_or(0),
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

/// Starts a server hosting `domain` with user `user`/"pw", federating on `ip:port` (STARTTLS)
/// and, if given, `ip:tls_port` (direct TLS).
fn start_domain(
    domain: &str,
    user: &str,
    ip: &str,
    ports: (u16, Option<u16>),
    dns: SocketAddr,
) -> Server {
    start_domain_with(domain, user, ip, ports, dns, "", "")
}

/// `start_domain` with extra tables (say `[tls]`) and extra lines for `[s2s]`.
fn start_domain_with(
    domain: &str,
    user: &str,
    ip: &str,
    (s2s_port, tls_port): (u16, Option<u16>),
    dns: SocketAddr,
    tables: &str,
    s2s_extra: &str,
) -> Server {
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
            "{base}{tables}[s2s]\nenabled = true\nlisten = [\"{ip}:{s2s_port}\"]\n{direct}\
             connect_timeout_secs = 10\n{s2s_extra}\n[dns]\nnameservers = [\"{dns}\"]\n",
            direct = tls_port
                .map(|p| format!("listen_tls = [\"{ip}:{p}\"]\n"))
                .unwrap_or_default(),
        ),
    )
    .unwrap();
    s.add_user(&jid, "pw");
    s.launch();
    s
}

fn zone(port_a: u16, port_b: u16, port_b_tls: u16, dead_port: u16) -> Zone {
    let mut z = Zone::default();
    // b.test offers direct TLS too, at a better priority than STARTTLS; its SRV answer is
    // too big for UDP (TC), so the resolver asks again over TCP.
    z.srv.insert(
        "_xmpps-server._tcp.b.test".into(),
        (port_b_tls, "b.test".into()),
    );
    z.truncated.push("_xmpps-server._tcp.b.test".into());
    z.priority.insert("_xmpp-server._tcp.b.test".into(), 10);
    // dead.test's only target refuses connections.
    z.srv.insert(
        "_xmpp-server._tcp.dead.test".into(),
        (dead_port, "xmpp.dead.test".into()),
    );
    z.a.insert("xmpp.dead.test".into(), Ipv4Addr::new(127, 0, 0, 4));
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
fn two_servers_messages_cross_both_ways_unreachable_domains_bounce() {
    let ports = common::free_ports(4);
    let (port_a, port_b, port_b_tls, dead) = (ports[0], ports[1], ports[2], ports[3]);
    let dns = DnsServer::start(zone(port_a, port_b, port_b_tls, dead));
    let a = start_domain("a.test", "alice", "127.0.0.2", (port_a, None), dns.addr);
    let b = start_domain(
        "b.test",
        "bob",
        "127.0.0.3",
        (port_b, Some(port_b_tls)),
        dns.addr,
    );
    let mut alice = a.login("alice@a.test", "pw", "phone");
    let mut bob = b.login("bob@b.test", "pw", "laptop");

    // a.test -> b.test: a new outgoing stream, direct TLS (ALPN xmpp-server) to the
    // `_xmpps-server` target learnt over DNS-over-TCP, dialback.
    alice.send("<message to='bob@b.test/laptop' type='chat' id='m1'><body>hi bob</body></message>");
    let got = wait_body(&mut bob, "hi bob");
    assert!(got.contains("from='alice@a.test/phone'"), "{got}");
    assert!(dns.tcp_queries.load(Ordering::SeqCst) >= 1);
    assert!(
        b.log_text().contains("(S2sDirectTls)"),
        "b.test should have accepted a direct TLS s2s connection"
    );

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

    // A domain whose only server refuses the connection: an error too, not silence.
    alice.send("<message to='x@dead.test' type='chat' id='m4'><body>hello?</body></message>");
    let err = match alice.wait_for(
        "error for m4",
        FED_WAIT,
        |t| matches!(t, Token::Element(e) if e.starts_with("<message") && e.contains("id='m4'")),
    ) {
        Token::Element(e) => e,
        _ => unreachable!("predicate matched only elements"),
    };
    assert!(err.contains("type='error'"), "{err}");
    assert!(
        err.contains("<remote-server-not-found") || err.contains("<remote-server-timeout"),
        "{err}"
    );

    // The established streams still work after all that.
    bob.send(
        "<message to='alice@a.test/phone' type='chat' id='m5'><body>still here</body></message>",
    );
    wait_body(&mut alice, "still here");
}

/// Runs `openssl` in `dir`; false (with a message) if it is not installed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) => {
            eprintln!("openssl not available ({e}): skipping the certificate test");
            false
        }
    }
}

/// A test CA (`ca.crt`) and, per (domain, EKU), `<domain>.crt` / `<domain>.key` signed by it.
fn make_pki(dir: &Path, leaves: &[(&str, &str)]) -> bool {
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(p256);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=Hearth federation test CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    if !openssl(dir, &ca) {
        return false;
    }
    for (domain, eku) in leaves {
        std::fs::write(
            dir.join(format!("{domain}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={eku}\nsubjectAltName=DNS:{domain}\n"
            ),
        )
        .unwrap();
        let (key, csr, crt, ext) = (
            format!("{domain}.key"),
            format!("{domain}.csr"),
            format!("{domain}.crt"),
            format!("{domain}.ext"),
        );
        let mut req = vec!["req"];
        req.extend(p256);
        let subj = format!("/CN={domain}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "7",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
    }
    true
}

#[test]
fn ca_signed_certificates_sasl_external_both_ways_serverauth_only_accepted() {
    let pki = std::env::temp_dir().join(format!("hearth-fed-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pki);
    std::fs::create_dir_all(&pki).unwrap();
    // a.test has a Let's-Encrypt-style serverAuth-only certificate: b.test must accept it
    // from a.test acting as the TLS client.
    if !make_pki(
        &pki,
        &[
            ("a.test", "serverAuth"),
            ("b.test", "serverAuth,clientAuth"),
        ],
    ) {
        return;
    }
    let ports = common::free_ports(2);
    let (port_a, port_b) = (ports[0], ports[1]);
    let mut z = Zone::default();
    z.srv
        .insert("_xmpp-server._tcp.a.test".into(), (port_a, "a.test".into()));
    z.a.insert("a.test".into(), Ipv4Addr::new(127, 0, 0, 2));
    z.srv
        .insert("_xmpp-server._tcp.b.test".into(), (port_b, "b.test".into()));
    z.a.insert("b.test".into(), Ipv4Addr::new(127, 0, 0, 3));
    let dns = DnsServer::start(z);
    let setup = |domain: &str| {
        let tables = format!(
            "[tls]\ncerts = [{{ domain = \"{domain}\", cert = \"{crt}\", key = \"{key}\" }}]\n\n",
            crt = pki.join(format!("{domain}.crt")).display(),
            key = pki.join(format!("{domain}.key")).display(),
        );
        let extra = format!(
            "ca_file = \"{}\"\nrequire_valid_certificates = true\n",
            pki.join("ca.crt").display()
        );
        (tables, extra)
    };
    let (tables, extra) = setup("a.test");
    let a = start_domain_with(
        "a.test",
        "alice",
        "127.0.0.2",
        (port_a, None),
        dns.addr,
        &tables,
        &extra,
    );
    let (tables, extra) = setup("b.test");
    let b = start_domain_with(
        "b.test",
        "bob",
        "127.0.0.3",
        (port_b, None),
        dns.addr,
        &tables,
        &extra,
    );
    let mut alice = a.login("alice@a.test", "pw", "phone");
    let mut bob = b.login("bob@b.test", "pw", "laptop");
    alice.send(
        "<message to='bob@b.test/laptop' type='chat' id='c1'><body>signed hi</body></message>",
    );
    wait_body(&mut bob, "signed hi");
    bob.send(
        "<message to='alice@a.test/phone' type='chat' id='c2'><body>signed back</body></message>",
    );
    wait_body(&mut alice, "signed back");
    // With require_valid_certificates, dialback is not allowed: the streams can only have
    // authenticated with the certificates.
    for (s, name) in [(&a, "a.test"), (&b, "b.test")] {
        let log = s.log_text();
        assert!(!log.contains("(Dialback)"), "{name} used dialback:\n{log}");
        assert!(log.contains("(SaslExternal)"), "{name} log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&pki);
}

#[test]
fn s2s_over_max_connections_refused_c2s_unaffected() {
    let port = common::free_ports(1)[0];
    let dns = DnsServer::start(Zone::default());
    let a = start_domain_with(
        "a.test",
        "alice",
        "127.0.0.2",
        (port, None),
        dns.addr,
        "",
        "max_connections = 1\n",
    );
    let addr: SocketAddr = ([127, 0, 0, 2], port).into();
    let mut first = std::net::TcpStream::connect(addr).unwrap();
    first
        .write_all(
            b"<?xml version='1.0'?><stream:stream to='a.test' from='b.test' version='1.0' \
              xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .unwrap();
    first.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut buf = [0u8; 512];
    // The first one is served: the server answers with its header.
    assert!(first.read(&mut buf).unwrap() > 0);
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(common::WAIT)).unwrap();
    // The second is closed at once, without a byte.
    match second.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // c2s connections are counted apart.
    a.login("alice@a.test", "pw", "phone");
}
