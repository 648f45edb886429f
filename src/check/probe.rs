//! Probing one address as a remote server would: TCP connect, then direct TLS (ALPN
//! `xmpp-server`, XEP-0368) or a `jabber:server` stream and STARTTLS (RFC 6120 §5), then the
//! certificate checked for the XMPP domain (RFC 6125: the domain asked about, never the SRV
//! target).
//!
//! Owns: the blocking sockets of a probe and the rustls client. The certificate verifier
//! records webpki's verdict and the leaf certificate, then lets the handshake finish, so the
//! report can say both "TLS works" and what is wrong with the certificate. That is safe here
//! because the probe sends nothing after the handshake; it is never used to carry data.
//!
//! Every wait has a deadline: connect, each read of the stream negotiation (at most
//! [`MAX_NEGOTIATION_BYTES`]) and the handshake all end at the probe's deadline.

use super::cert::{self, CertSummary};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ALPN protocol id for direct TLS s2s (XEP-0368 §4).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";
/// Bytes of stream negotiation read at most before giving up on a peer.
pub const MAX_NEGOTIATION_BYTES: usize = 16 * 1024;
/// Handshake turns at most (each a blocking read or write with the deadline).
const MAX_HANDSHAKE_TURNS: usize = 64;

/// The certificate verdict for the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    Valid,
    /// The names in the certificate do not include the domain.
    WrongName,
    Expired,
    NotValidYet,
    /// Not issued by a trusted root (self-signed, private CA, missing intermediate).
    Untrusted,
    /// No trusted roots could be loaded, so nothing can be trusted.
    NoRoots,
    /// Any other reason, in rustls' words.
    Invalid(String),
}

/// How a probe of one address ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connection refused: nothing listens there (or a firewall rejects).
    Refused,
    /// No answer to the connection attempt within the timeout.
    ConnectTimeout,
    /// Another connect error (network unreachable, ...).
    ConnectFailed(String),
    /// The peer's stream negotiation went wrong before TLS (closed, stream error, no STARTTLS,
    /// not XMPP, too slow), in plain words.
    StreamFailed(String),
    /// The TLS handshake failed.
    TlsFailed(String),
    /// TLS works.
    Tls {
        /// "TLS 1.3" or "TLS 1.2".
        version: String,
        /// The ALPN protocol the server chose (direct TLS only).
        alpn: Option<String>,
        verdict: CertVerdict,
        cert: CertSummary,
    },
}

impl Probe {
    /// A remote server could authenticate this peer with its certificate here.
    pub fn is_good(&self) -> bool {
        matches!(
            self,
            Probe::Tls {
                verdict: CertVerdict::Valid,
                ..
            }
        )
    }
}

/// What every probe shares: trust roots and the crypto provider.
#[derive(Clone)]
pub struct Prober {
    provider: Arc<CryptoProvider>,
    /// `None` when no root could be loaded.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pub timeout: Duration,
}

impl Prober {
    /// `roots` may be empty; every certificate is then reported as [`CertVerdict::NoRoots`].
    pub fn new(roots: RootCertStore, timeout: Duration) -> Prober {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        };
        Prober {
            provider,
            webpki,
            timeout,
        }
    }

    /// Probes `addr` for `domain` with direct TLS or STARTTLS.
    pub fn probe(&self, domain: &str, addr: SocketAddr, direct_tls: bool) -> Probe {
        let deadline = Instant::now() + self.timeout;
        let mut stream = match TcpStream::connect_timeout(&addr, self.timeout) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Probe::Refused,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Probe::ConnectTimeout;
            }
            Err(e) => return Probe::ConnectFailed(e.to_string()),
        };
        if !direct_tls {
            if let Err(why) = starttls(&mut stream, domain, deadline) {
                return Probe::StreamFailed(why);
            }
        }
        self.handshake(stream, domain, direct_tls, deadline)
    }

    fn handshake(
        &self,
        mut stream: TcpStream,
        domain: &str,
        direct_tls: bool,
        deadline: Instant,
    ) -> Probe {
        let seen: Seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(Recorder {
            provider: self.provider.clone(),
            webpki: self.webpki.clone(),
            seen: seen.clone(),
        });
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            });
        let mut config = match config {
            Ok(c) => c,
            Err(e) => return Probe::TlsFailed(format!("TLS set-up failed: {e}")),
        };
        if direct_tls {
            config.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        }
        let name = match ServerName::try_from(domain.to_owned()) {
            Ok(n) => n,
            Err(_) => return Probe::TlsFailed(format!("{domain} is not a valid TLS server name")),
        };
        let mut conn = match ClientConnection::new(Arc::new(config), name) {
            Ok(c) => c,
            Err(e) => return Probe::TlsFailed(e.to_string()),
        };
        for _ in 0..MAX_HANDSHAKE_TURNS {
            if !conn.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Probe::TlsFailed("no TLS answer in time".to_owned());
            }
            if stream.set_read_timeout(Some(left)).is_err()
                || stream.set_write_timeout(Some(left)).is_err()
            {
                return Probe::TlsFailed("socket error".to_owned());
            }
            if let Err(e) = conn.complete_io(&mut stream) {
                return Probe::TlsFailed(match e.kind() {
                    // A STARTTLS port waits for XML and never answers a ClientHello.
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if direct_tls => {
                        "no TLS answer in time (is this a STARTTLS port?)".to_owned()
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        "no TLS answer in time".to_owned()
                    }
                    io::ErrorKind::UnexpectedEof => {
                        "the peer closed the connection during the handshake".to_owned()
                    }
                    _ => e.to_string(),
                });
            }
        }
        if conn.is_handshaking() {
            return Probe::TlsFailed("the handshake did not finish".to_owned());
        }
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_owned(),
        };
        let alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let recorded = seen.lock().ok().and_then(|mut s| s.take());
        let (verdict, cert) = match recorded {
            Some((der, result)) => (result, cert::summarize(&der)),
            None => (
                CertVerdict::Invalid("no certificate presented".to_owned()),
                CertSummary::default(),
            ),
        };
        Probe::Tls {
            version,
            alpn,
            verdict,
            cert,
        }
    }
}

/// Opens a `jabber:server` stream to `domain`, waits for the features, asks for STARTTLS and
/// waits for `<proceed/>`. The error says what went wrong in plain words.
fn starttls(stream: &mut TcpStream, domain: &str, deadline: Instant) -> Result<(), String> {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    );
    write_by(stream, header.as_bytes(), deadline)?;
    let mut buf = Vec::new();
    let features = loop {
        let scan = scan(&buf);
        if let Some(child) = scan.children.first() {
            break child.clone();
        }
        if scan.closed {
            return Err("the peer closed the XMPP stream at once".to_owned());
        }
        if let Err(why) = read_more(stream, &mut buf, deadline) {
            // A TLS record (alert 0x15, handshake 0x16) or silence instead of XML: likely a
            // direct TLS port named by a STARTTLS record.
            let tls_like = matches!(buf.first(), None | Some(0x15 | 0x16));
            return Err(if tls_like {
                format!("{why} (is this a direct TLS port?)")
            } else {
                why
            });
        }
    };
    match features.name.as_str() {
        "features" if features.children.iter().any(|c| c == "starttls") => {}
        "features" => return Err("STARTTLS is not offered in the stream features".to_owned()),
        "error" => {
            return Err(format!(
                "stream error: {}",
                features.children.first().map_or("unknown", String::as_str)
            ));
        }
        other => return Err(format!("unexpected <{other}/> instead of stream features")),
    }
    write_by(
        stream,
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        deadline,
    )?;
    loop {
        let scan = scan(&buf);
        if let Some(reply) = scan.children.get(1) {
            return match reply.name.as_str() {
                "proceed" => Ok(()),
                "failure" => Err("the peer refused STARTTLS (<failure/>)".to_owned()),
                other => Err(format!("unexpected <{other}/> after <starttls/>")),
            };
        }
        if scan.closed {
            return Err("the peer closed the stream after <starttls/>".to_owned());
        }
        read_more(stream, &mut buf, deadline)?;
    }
}

fn write_by(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no answer in time".to_owned());
    }
    stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(bytes))
        .map_err(|e| format!("cannot write: {e}"))
}

/// Reads what is there (waiting at most until `deadline`) onto `buf`, bounded.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), String> {
    if buf.len() >= MAX_NEGOTIATION_BYTES {
        return Err(format!(
            "no usable answer in the first {MAX_NEGOTIATION_BYTES} bytes (not XMPP?)"
        ));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no XMPP answer in time".to_owned());
    }
    let mut chunk = [0u8; 4096];
    let room = (MAX_NEGOTIATION_BYTES - buf.len()).min(chunk.len());
    let n = stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.read(chunk.get_mut(..room).unwrap_or_default()))
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "no XMPP answer in time".to_owned()
            }
            _ => format!("read failed: {e}"),
        })?;
    if n == 0 {
        return Err("the peer closed the connection without an XMPP answer".to_owned());
    }
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(())
}

/// A completed child of the stream root: its local name and its children's local names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Child {
    name: String,
    children: Vec<String>,
}

/// What the peer's stream says so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// Completed top-level elements, in order.
    children: Vec<Child>,
    /// The stream was closed.
    closed: bool,
}

/// Tokenizes the bytes received so far; an incomplete or malformed tail just ends the scan
/// (the caller reads more, bounded by size and deadline).
fn scan(bytes: &[u8]) -> Scan {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or_default())
            .unwrap_or_default(),
    };
    let mut out = Scan::default();
    let mut depth = 0usize;
    let mut current: Option<Child> = None;
    for token in xmlparser::Tokenizer::from(text) {
        let Ok(token) = token else {
            break;
        };
        match token {
            xmlparser::Token::ElementStart { local, .. } => {
                depth += 1;
                if depth == 2 {
                    current = Some(Child {
                        name: local.as_str().to_owned(),
                        children: Vec::new(),
                    });
                } else if depth == 3 {
                    if let Some(c) = current.as_mut() {
                        c.children.push(local.as_str().to_owned());
                    }
                }
            }
            xmlparser::Token::ElementEnd { end, .. } => {
                if matches!(end, xmlparser::ElementEnd::Open) {
                    continue;
                }
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    out.children.extend(current.take());
                }
                if depth == 0 {
                    out.closed = true;
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

/// Records webpki's verdict and the leaf, and lets the handshake go on (see the module doc).
/// Handshake signatures are still verified for real.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    seen: Seen,
}

/// The leaf certificate (DER) and its verdict, once the handshake showed it.
type Seen = Arc<Mutex<Option<(Vec<u8>, CertVerdict)>>>;

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.webpki {
            None => CertVerdict::NoRoots,
            Some(v) => match v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(_) => CertVerdict::Valid,
                Err(e) => verdict_of(e),
            },
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((end_entity.as_ref().to_vec(), verdict));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn verdict_of(e: rustls::Error) -> CertVerdict {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertVerdict::WrongName
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertVerdict::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertVerdict::NotValidYet
            }
            CertificateError::UnknownIssuer => CertVerdict::Untrusted,
            other => CertVerdict::Invalid(format!("{other:?}")),
        },
        other => CertVerdict::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_partial_stream_waits_then_sees_features() {
        let head = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
                    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
                    <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><req";
        assert_eq!(scan(head.as_bytes()), Scan::default());
        let full = format!("{head}uired/></starttls><dialback/></stream:features><proceed/>");
        let s = scan(full.as_bytes());
        assert_eq!(
            s.children,
            vec![
                Child {
                    name: "features".into(),
                    children: vec!["starttls".into(), "dialback".into()]
                },
                Child {
                    name: "proceed".into(),
                    children: vec![]
                }
            ]
        );
        assert!(!s.closed);
    }

    #[test]
    fn scan_stream_error_and_close() {
        let s = scan(
            b"<stream:stream><stream:error><host-unknown xmlns='x'/></stream:error></stream:stream>",
        );
        assert_eq!(s.children[0].name, "error");
        assert_eq!(s.children[0].children, vec!["host-unknown".to_owned()]);
        assert!(s.closed);
    }

    #[test]
    fn scan_garbage_gives_nothing() {
        assert_eq!(scan(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Scan::default());
        assert_eq!(scan(&[0xff, 0xfe, b'<']), Scan::default());
    }

    #[test]
    fn probe_closed_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = Prober::new(RootCertStore::empty(), Duration::from_secs(2));
        assert_eq!(p.probe("example.org", addr, true), Probe::Refused);
    }

    #[test]
    fn probe_silent_peer_times_out_within_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let p = Prober::new(RootCertStore::empty(), Duration::from_millis(300));
        let started = Instant::now();
        let r = p.probe("example.org", addr, false);
        assert_eq!(
            r,
            Probe::StreamFailed("no XMPP answer in time (is this a direct TLS port?)".into())
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(l);
    }
}
