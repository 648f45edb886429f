//! `hearth check dns` end to end: the real binary against a tiny DNS server and XMPP/TLS
//! peers started inside the test, all on loopback.
//!
//! The DNS server answers from a table (simple-dns packets over UDP); names not in the table
//! get NXDOMAIN, known names without the asked type get NODATA, and a CNAME is followed
//! within the table. The peers are rustls servers with a certificate made here
//! (`hearth::tls::selfsigned`), trusted through `--ca-file`; a STARTTLS peer speaks just enough
//! `jabber:server` to offer and proceed with STARTTLS. Every thread stops when its test ends
//! (a stop flag polled every 50 ms) and every wait is bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use simple_dns::rdata::{self, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};

const POLL: Duration = Duration::from_millis(50);
/// Longest a helper thread lives, whatever happens to the test.
const LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Rr {
    /// owner, priority, weight, port, target
    Srv(&'static str, u16, u16, u16, &'static str),
    A(&'static str, [u8; 4]),
    Cname(&'static str, &'static str),
}

impl Rr {
    fn owner(&self) -> &'static str {
        match self {
            Rr::Srv(o, ..) | Rr::A(o, _) | Rr::Cname(o, _) => o,
        }
    }

    fn rtype(&self) -> TYPE {
        match self {
            Rr::Srv(..) => TYPE::SRV,
            Rr::A(..) => TYPE::A,
            Rr::Cname(..) => TYPE::CNAME,
        }
    }

    fn to_record(&self) -> ResourceRecord<'static> {
        let data = match self {
            Rr::Srv(_, priority, weight, port, target) => RData::SRV(rdata::SRV {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: Name::new(target).unwrap(),
            }),
            Rr::A(_, ip) => RData::A(rdata::A::from(Ipv4Addr::from(*ip))),
            Rr::Cname(_, target) => RData::CNAME(rdata::CNAME(Name::new(target).unwrap())),
        };
        ResourceRecord::new(Name::new(self.owner()).unwrap(), CLASS::IN, 60, data)
    }
}

/// Stops a helper thread when dropped.
struct Stopper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The reply to one query from the table.
fn answer(table: &[Rr], query: &[u8]) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?;
    let mut name = question.qname.to_string().to_ascii_lowercase();
    let qtype = question.qtype;
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    reply.questions = q.questions.clone();
    // Follow CNAMEs within the table, at most 4 links.
    for _ in 0..4 {
        let Some(cname) = table
            .iter()
            .find(|r| r.owner() == name && r.rtype() == TYPE::CNAME)
        else {
            break;
        };
        reply.answers.push(cname.to_record());
        if let Rr::Cname(_, target) = cname {
            name = (*target).to_owned();
        }
    }
    for r in table.iter().filter(|r| r.owner() == name) {
        if QTYPE::TYPE(r.rtype()) == qtype {
            reply.answers.push(r.to_record());
        }
    }
    if reply.answers.is_empty() && !table.iter().any(|r| r.owner() == name) {
        *reply.rcode_mut() = RCODE::NameError;
    }
    reply.build_bytes_vec_compressed().ok()
}

/// A DNS server on 127.0.0.1 answering from `table`.
fn dns_server(table: Vec<Rr>) -> (SocketAddr, Stopper) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(POLL)).unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        let started = Instant::now();
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = answer(&table, &buf[..n]) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    (
        addr,
        Stopper {
            stop,
            handle: Some(handle),
        },
    )
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hearth-check-dns-{}-{}",
        std::process::id(),
        DIR_COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `name`, its key, and the PEM file that trusts it.
struct Cert {
    der: Vec<u8>,
    key: Vec<u8>,
    pem: PathBuf,
}

fn cert_for(name: &str, dir: &std::path::Path) -> Cert {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let made =
        hearth::tls::selfsigned::generate(name, now, &ring::rand::SystemRandom::new()).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(
        &pem,
        hearth::tls::pem::encode("CERTIFICATE", &made.cert_der),
    )
    .unwrap();
    Cert {
        der: made.cert_der,
        key: made.key_pkcs8,
        pem,
    }
}

fn server_config(cert: &Cert, alpn: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())),
        )
        .unwrap();
    if alpn {
        c.alpn_protocols = vec![b"xmpp-server".to_vec()];
    }
    Arc::new(c)
}

/// Reads until `needle` appears (bounded by size and time); false if it never does.
fn read_until(s: &mut TcpStream, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while Instant::now() < deadline && got.len() < 16 * 1024 {
        match s.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
        if String::from_utf8_lossy(&got).contains(needle) {
            return true;
        }
    }
    false
}

/// One peer connection: optional STARTTLS negotiation, then the TLS handshake.
fn serve_peer(mut s: TcpStream, config: Arc<rustls::ServerConfig>, starttls: bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    if starttls {
        if !read_until(&mut s, "<stream:stream") {
            return;
        }
        let _ = s.write_all(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
              xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='x' \
              version='1.0'><stream:features><starttls \
              xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
        );
        if !read_until(&mut s, "<starttls") {
            return;
        }
        let _ = s.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    }
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    for _ in 0..32 {
        if !conn.is_handshaking() {
            break;
        }
        if conn.complete_io(&mut s).is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    DirectTls,
    StartTls,
}

/// An XMPP peer on 127.0.0.1 (direct TLS or STARTTLS) with `cert`.
fn peer(cert: &Cert, mode: Mode) -> (u16, Stopper) {
    let starttls = mode == Mode::StartTls;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = server_config(cert, !starttls);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        let started = Instant::now();
        while !flag.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    serve_peer(s, config.clone(), starttls);
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (
        port,
        Stopper {
            stop,
            handle: Some(handle),
        },
    )
}

/// A port where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs `hearth check dns` in an empty folder (built-in config), bounded by `timeout` itself.
fn check(domain: &str, dns: SocketAddr, ca: &std::path::Path, dir: &std::path::Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .current_dir(dir)
        .args(["check", "dns", domain, "--nameserver"])
        .arg(dns.to_string())
        .args(["--timeout", "2", "--ca-file"])
        .arg(ca)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn all_good_domain_lists_srv_in_order_and_exits_0() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let (starttls_port, _p1) = peer(&cert, Mode::StartTls);
    let (direct_port, _p2) = peer(&cert, Mode::DirectTls);
    // STARTTLS at priority 5 before direct TLS at 10; the target is a CNAME.
    let (dns, _d) = dns_server(vec![
        Rr::Srv(
            "_xmpp-server._tcp.example.test",
            5,
            0,
            starttls_port,
            "xmpp.example.test",
        ),
        Rr::Srv(
            "_xmpps-server._tcp.example.test",
            10,
            0,
            direct_port,
            "xmpp.example.test",
        ),
        Rr::Cname("xmpp.example.test", "host.example.test"),
        Rr::A("host.example.test", [127, 0, 0, 1]),
    ]);
    let out = check("example.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let first = t
        .find(&format!(
            "1. xmpp.example.test port {starttls_port}, STARTTLS"
        ))
        .expect(&t);
    let second = t
        .find(&format!(
            "2. xmpp.example.test port {direct_port}, direct TLS"
        ))
        .expect(&t);
    assert!(first < second, "{t}");
    assert!(t.contains("(CNAME followed to host.example.test)"), "{t}");
    assert!(
        t.contains(&format!(
            "127.0.0.1:{direct_port}: connected; TLS 1.3, ALPN xmpp-server; certificate valid \
             for example.test"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "127.0.0.1:{starttls_port}: connected; TLS 1.3; certificate valid for example.test"
        )),
        "{t}"
    );
    assert!(t.contains("Problems: none found"), "{t}");
    assert!(
        t.contains(&format!(
            "Result: a remote server can reach example.test (first at 127.0.0.1:{starttls_port}, \
             STARTTLS)."
        )),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dot_target_exits_1_with_plain_message() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let (dns, _d) = dns_server(vec![Rr::Srv(
        "_xmpp-server._tcp.example.test",
        0,
        0,
        0,
        ".",
    )]);
    let out = check("example.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("target \".\": service explicitly not offered"),
        "{t}"
    );
    assert!(
        t.contains("the domain says it explicitly offers no server-to-server service"),
        "{t}"
    );
    assert!(
        t.contains("Result: a remote server cannot reach example.test."),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nxdomain_exits_1_no_srv_no_address() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let (dns, _d) = dns_server(vec![Rr::A("other.test", [127, 0, 0, 1])]);
    let out = check("nowhere.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("none (NXDOMAIN: the name does not exist)"),
        "{t}"
    );
    assert!(
        t.contains("nowhere.test has no SRV records and no A/AAAA records (NXDOMAIN"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn closed_port_exits_1_and_says_refused() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let port = closed_port();
    let (dns, _d) = dns_server(vec![
        Rr::Srv(
            "_xmpps-server._tcp.example.test",
            0,
            0,
            port,
            "xmpp.example.test",
        ),
        Rr::A("xmpp.example.test", [127, 0, 0, 1]),
    ]);
    let out = check("example.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "127.0.0.1:{port}: connection refused (port closed)"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("nothing listens on port {port} there")),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificate_for_another_name_exits_1_and_names_it() {
    let dir = temp_dir();
    let cert = cert_for("other.test", &dir);
    let (port, _p) = peer(&cert, Mode::DirectTls);
    let (dns, _d) = dns_server(vec![
        Rr::Srv(
            "_xmpps-server._tcp.example.test",
            0,
            0,
            port,
            "xmpp.example.test",
        ),
        Rr::A("xmpp.example.test", [127, 0, 0, 1]),
    ]);
    let out = check("example.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("certificate NOT for example.test: other.test"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "The certificate at 127.0.0.1:{port} is for other.test, not for example.test."
        )) || t.contains("is for other.test, not for example.test. It must name"),
        "{t}"
    );
    assert!(
        t.contains("cannot reach example.test with a valid certificate"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn untrusted_certificate_is_reported_self_signed() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    // Trust another certificate than the one the peer shows.
    let other = cert_for("unrelated.test", &dir);
    let (port, _p) = peer(&cert, Mode::StartTls);
    let (dns, _d) = dns_server(vec![
        Rr::Srv("_xmpp-server._tcp.example.test", 0, 0, port, "example.test"),
        Rr::A("example.test", [127, 0, 0, 1]),
    ]);
    let out = check("example.test", dns, &other.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("certificate UNTRUSTED, self-signed (example.test)"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn swapped_records_suggest_the_other_mode() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let (direct_port, _p1) = peer(&cert, Mode::DirectTls);
    let (starttls_port, _p2) = peer(&cert, Mode::StartTls);
    let (dns, _d) = dns_server(vec![
        // Each record names the other kind of port.
        Rr::Srv(
            "_xmpp-server._tcp.example.test",
            0,
            0,
            direct_port,
            "example.test",
        ),
        Rr::Srv(
            "_xmpps-server._tcp.example.test",
            0,
            0,
            starttls_port,
            "example.test",
        ),
        Rr::A("example.test", [127, 0, 0, 1]),
    ]);
    let out = check("example.test", dns, &cert.pem, &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "127.0.0.1:{starttls_port}: connected; TLS failed: no TLS answer in time (is this a \
             STARTTLS port?)"
        )),
        "{t}"
    );
    assert!(t.contains("(is this a direct TLS port?)"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hosted_domain_records_checked_against_config() {
    let dir = temp_dir();
    let cert = cert_for("example.test", &dir);
    let config = dir.join("hearth.toml");
    std::fs::write(
        &config,
        "domains = [\"example.test\"]\n\
         [c2s]\n\
         listen = [\"0.0.0.0:5322\"]\n\
         listen_tls = [\"0.0.0.0:5323\"]\n",
    )
    .unwrap();
    let (dns, _d) = dns_server(vec![
        Rr::Srv(
            "_xmpp-client._tcp.example.test",
            0,
            5,
            5999,
            "xmpp.example.test",
        ),
        Rr::A("xmpp.example.test", [127, 0, 0, 1]),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .current_dir(&dir)
        .args(["--config"])
        .arg(&config)
        .args([
            "check",
            "dns",
            "example.test",
            "--timeout=2",
            "--nameserver",
        ])
        .arg(dns.to_string())
        .arg("--ca-file")
        .arg(&cert.pem)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("example.test is hosted here"), "{t}");
    assert!(
        t.contains(
            "_xmpp-client._tcp.example.test points at port 5999, but [c2s] listen is on port \
             5322"
        ),
        "{t}"
    );
    assert!(
        t.contains("    _xmpps-client._tcp.example.test. 3600 IN SRV 0 5 5323 xmpp.example.test."),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_exit_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .current_dir(temp_dir())
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["check", "dns"][..],
        &["check", "dns", "a.test", "--timeout", "0"],
        &["check", "dns", "a.test", "--nameserver", "dns.example"],
        &["check", "dns", "a.test", "--ca-file", "/nonexistent/ca.pem"],
        &["check", "dns", "bad..name"],
        &["user", "list", "--timeout", "3"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
