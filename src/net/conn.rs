//! One socket's driver-side state and the byte plumbing between the socket, rustls and the
//! output queue.
//!
//! Owns: the socket, the output queue, the rustls session (server or client side), whether a
//! non-blocking connect is still in progress, and whether the core still knows the connection.
//! Leaves protocol state to the core and scheduling to `net::Driver`.
//!
//! While an outgoing connection is still connecting, nothing is written to the socket: what
//! is sent (a DNS query, a TLS ClientHello) waits in `out`, which the first writable event
//! after the connect flushes.
//!
//! What the core sends is not written at once either: `send` only encrypts into `out`, and
//! the driver flushes each connection once at the end of its turn (`flush_pending`). A burst
//! of stanzas for one client (a roster push to many resources, a backlog of messages) then
//! costs one `write` instead of one per stanza; on loopback each write also pays for waking
//! the reader, which was a third of the server's CPU per message.
//!
//! Invariant kept by `drain_tls`: after sending or feeding input, rustls holds no unsent
//! records (`wants_write()` is false); they are on the wire or in `out`. So `out.len()` is the
//! whole backlog the slow-reader bound is checked against. rustls may additionally hold
//! plaintext written before the handshake finished, capped by `TLS_BUFFER_LIMIT`, and, on a
//! closing connection whose queue is not yet flushed, its close_notify.
//!
//! Memory of an established, idle TLS 1.3 session (rustls 0.23.46 + ring, measured with
//! valgrind's DHAT at 1000 sessions): 4096 B deframer buffer, 1168 B `ServerConnection`,
//! 640 B handshake-deframer spans, 2 x 560 B AEAD keys, 224 B traffic state, 2 x 96 B queue
//! capacity: about 7.5 KB, all rustls's own. The buffered API never frees the deframer buffer
//! (it shrinks back to 4 KiB, never to 0); the unbuffered API, where the caller owns it, has no
//! `export_keying_material` or `server_name` for servers in 0.23, which `tls_info` needs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::Connection;

use super::control_socket::LineReader;
use super::outq::OutQueue;
use crate::dns::TcpId;
use crate::dns::wire::TcpDeframer;
use crate::server::{ConnId, TlsInfo};

/// rustls's cap on plaintext written before the handshake ends and on its unsent records.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// RFC 9266 exporter label for `tls-exporter` channel binding.
const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// A TCP or Unix stream; the driver treats both alike.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write_vectored(bufs),
            Sock::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Sock {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.register(r, t, i),
            Sock::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.reregister(r, t, i),
            Sock::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.deregister(r),
            Sock::Unix(s) => s.deregister(r),
        }
    }
}

/// What the connection is for.
pub enum Role {
    C2s,
    /// Accepted on an s2s listener.
    S2sIn,
    /// Opened for the core (`Action::Connect`); the core knows it by its own id.
    S2sOut(Box<Outgoing>),
    /// A control-socket client; its request line so far.
    Control(LineReader),
    /// A DNS-over-TCP exchange for the resolver.
    DnsTcp(Box<DnsTcp>),
}

/// An outgoing s2s connection's driver-side facts.
pub struct Outgoing {
    /// The core's id for it (`OUTGOING_CONN_BIT` set).
    pub core: ConnId,
    /// Once TLS started: the remote domain, against which the certificate is checked.
    pub server_name: Option<String>,
    /// A certificate for the local domain is configured on the TLS client.
    pub presented_cert: bool,
}

/// A DNS-over-TCP exchange: its id and the reply read so far (one message, at most
/// 2 + 65535 bytes, see `TcpDeframer`).
pub struct DnsTcp {
    pub id: TcpId,
    pub reply: TcpDeframer,
}

/// Whether the core still knows the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Bytes go to the core; errors are reported with `handle_disconnect`.
    Open,
    /// The core asked to close (or the control reply is out): flush `out`, send FIN, discard
    /// input until the peer's FIN or the deadline. The core is never told about it again.
    Closing,
}

pub struct Conn {
    pub sock: Sock,
    pub role: Role,
    /// `None` for control connections.
    pub peer: Option<SocketAddr>,
    pub out: OutQueue,
    /// Boxed: a rustls session is large, and plaintext connections should stay small.
    pub tls: Option<Box<Connection>>,
    /// `handle_tls_ready` was sent.
    pub tls_ready: bool,
    /// Bytes from `Action::StartTls` not yet fed to rustls (the driver feeds them before the
    /// next socket read).
    pub tls_stash: Vec<u8>,
    pub state: State,
    /// WRITABLE interest is registered (only while `out` is non-empty).
    pub writable: bool,
    /// Our FIN was sent.
    pub write_shut: bool,
    /// A non-blocking connect has not completed yet (outgoing connections only).
    pub connecting: bool,
    /// `out` holds sent bytes that wait for the end-of-turn flush (the driver's list of such
    /// connections has this one once).
    pub flush_pending: bool,
}

impl Conn {
    pub fn new(sock: Sock, role: Role, peer: Option<SocketAddr>) -> Conn {
        Conn {
            sock,
            role,
            peer,
            out: OutQueue::new(),
            tls: None,
            tls_ready: false,
            tls_stash: Vec::new(),
            state: State::Open,
            writable: false,
            write_shut: false,
            connecting: false,
            flush_pending: false,
        }
    }

    /// The core knows this connection (a stream, not a control client or DNS exchange).
    pub fn is_core(&self) -> bool {
        matches!(self.role, Role::C2s | Role::S2sIn | Role::S2sOut(_))
    }

    /// The id the core knows the connection by: its own for outgoing ones, else the driver's.
    pub fn core_id(&self, id: ConnId) -> ConnId {
        match &self.role {
            Role::S2sOut(o) => o.core,
            _ => id,
        }
    }

    /// The peer for log lines.
    pub fn peer_text(&self) -> String {
        match self.peer {
            Some(p) => p.to_string(),
            None => "control client".to_owned(),
        }
    }

    /// Queues application bytes (encrypted when TLS is on) for the next `flush`; nothing is
    /// written here.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        match self.tls.as_deref_mut() {
            Some(tls) => tls_send(tls, &mut self.out, &mut NotYet, bytes),
            None => plain_send(&mut self.out, &mut NotYet, bytes).map_err(SendError::Io),
        }
    }

    /// Moves rustls's pending records (say a ClientHello) to the socket or the queue.
    pub fn drain(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        if self.connecting {
            drain_tls(tls, &mut self.out, &mut NotYet)
        } else {
            drain_tls(tls, &mut self.out, &mut self.sock)
        }
    }

    /// Writes what is queued, then any TLS records rustls produced meanwhile. Returns whether
    /// everything is out (never while still connecting).
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.connecting {
            return Ok(false);
        }
        if !self.out.write_to(&mut self.sock)? {
            return Ok(false);
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            drain_tls(tls, &mut self.out, &mut self.sock)?;
        }
        Ok(self.out.is_empty())
    }
}

/// A socket not yet connected: takes nothing, so writers queue everything.
struct NotYet;

impl Write for NotYet {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a send failed.
#[derive(Debug)]
pub enum SendError {
    /// The socket broke.
    Io(io::Error),
    /// rustls would not take more plaintext before the handshake finished.
    TlsBufferFull,
}

/// Writes `bytes` straight to `sock` while nothing is queued ahead of them; queues the rest.
pub fn plain_send<W: Write>(out: &mut OutQueue, sock: &mut W, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    if out.is_empty() {
        // Each round writes at least one byte or leaves the loop.
        while !rest.is_empty() {
            match sock.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    Ok(())
}

/// Encrypts `bytes` and moves the records to the wire or the queue.
pub fn tls_send<W: Write>(
    tls: &mut Connection,
    out: &mut OutQueue,
    sock: &mut W,
    bytes: &[u8],
) -> Result<(), SendError> {
    let mut rest = bytes;
    // Each round rustls takes at least one byte (its record buffer was emptied by the previous
    // `drain_tls`) or the loop ends with `TlsBufferFull`.
    while !rest.is_empty() {
        let n = tls.writer().write(rest).map_err(SendError::Io)?;
        if n == 0 {
            return Err(SendError::TlsBufferFull);
        }
        rest = rest.get(n..).unwrap_or_default();
        drain_tls(tls, out, sock).map_err(SendError::Io)?;
    }
    Ok(())
}

/// Moves rustls's unsent records out: to `sock` directly while nothing is queued ahead of
/// them, the rest into `out`. Afterwards `tls.wants_write()` is false.
pub fn drain_tls<W: Write>(
    tls: &mut Connection,
    out: &mut OutQueue,
    sock: &mut W,
) -> io::Result<()> {
    // Each round moves at least one byte out of rustls's bounded buffer, or returns.
    while tls.wants_write() {
        if out.is_empty() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // The queue takes everything (its `write` never fails).
        tls.write_tls(out)?;
    }
    Ok(())
}

/// A fresh rustls server session with the driver's buffer cap.
pub fn new_tls(
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<Box<Connection>, rustls::Error> {
    let mut tls = rustls::ServerConnection::new(config)?;
    tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(Box::new(Connection::Server(tls)))
}

/// A rustls client session with the driver's buffer cap.
pub fn client_tls(mut tls: rustls::ClientConnection) -> Box<Connection> {
    tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Box::new(Connection::Client(tls))
}

/// What the completed handshake tells the core: SNI (lowercase, server side) and, for TLS 1.3,
/// the RFC 9266 `tls-exporter` channel binding. Certificate names are the driver's to add.
pub fn tls_info(tls: &Connection) -> TlsInfo {
    let channel_binding = if tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        tls.export_keying_material([0u8; 32], CHANNEL_BINDING_LABEL, None)
            .ok()
            .map(|b| b.to_vec())
    } else {
        None
    };
    let sni = match tls {
        Connection::Server(s) => s.server_name().map(|s| s.to_ascii_lowercase()),
        Connection::Client(_) => None,
    };
    TlsInfo {
        sni,
        channel_binding,
        ..TlsInfo::default()
    }
}

/// The outcome of feeding one piece of ciphertext.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// rustls took some bytes and processed them.
    Progress,
    /// The peer sent close_notify; rustls takes nothing more.
    Closed,
}

/// Feeds the front of `input` to rustls (advancing it) and processes the records. An error
/// is fatal for the connection; rustls may have queued an alert (send it with `drain_tls`).
pub fn tls_feed(tls: &mut Connection, input: &mut &[u8]) -> Result<Fed, String> {
    let n = tls.read_tls(input).map_err(|e| e.to_string())?;
    tls.process_new_packets().map_err(|e| e.to_string())?;
    if n == 0 && !input.is_empty() {
        return Ok(Fed::Closed);
    }
    Ok(Fed::Progress)
}

#[cfg(test)]
mod tests {
    use super::super::outq::tests::Throttled;
    use super::*;
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    // A self-signed P-256 certificate for "localhost", made for these tests only.
    const CERT_DER: &[u8] = include_bytes!("testdata/cert.der");
    const KEY_DER: &[u8] = include_bytes!("testdata/key.der");

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config() -> Arc<rustls::ServerConfig> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(CERT_DER.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY_DER.to_vec())),
            )
            .unwrap();
        Arc::new(cfg)
    }

    fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(CERT_DER.to_vec())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("LocalHost").unwrap();
        rustls::ClientConnection::new(Arc::new(cfg), name).unwrap()
    }

    fn wire() -> Throttled {
        Throttled {
            room: usize::MAX,
            written: Vec::new(),
        }
    }

    /// Runs the handshake through the driver's helpers; returns the server session and what
    /// it wrote to its socket.
    fn handshake(c: &mut rustls::ClientConnection, out: &mut OutQueue) -> Box<Connection> {
        let mut s = new_tls(server_config()).unwrap();
        let mut sock = wire();
        // Bounded: a TLS handshake takes a few flights.
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).unwrap();
            }
            let mut input = &to_server[..];
            while !input.is_empty() {
                assert_eq!(tls_feed(&mut s, &mut input).unwrap(), Fed::Progress);
            }
            drain_tls(&mut s, out, &mut sock).unwrap();
            assert!(!s.wants_write());
            let mut to_client = &sock.written[..];
            while !to_client.is_empty() {
                c.read_tls(&mut to_client).unwrap();
                c.process_new_packets().unwrap();
            }
            sock.written.clear();
            if !s.is_handshaking() && !c.is_handshaking() {
                return s;
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn tls13_handshake_done_info_has_sni_and_binding() {
        let mut c = client(&[&rustls::version::TLS13]);
        let s = handshake(&mut c, &mut OutQueue::new());
        let info = tls_info(&s);
        assert_eq!(info.sni.as_deref(), Some("localhost"));
        let expected = c
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        assert_eq!(info.channel_binding, Some(expected.to_vec()));
    }

    #[test]
    fn tls12_handshake_done_info_has_no_binding() {
        let mut c = client(&[&rustls::version::TLS12]);
        let s = handshake(&mut c, &mut OutQueue::new());
        assert_eq!(tls_info(&s).channel_binding, None);
    }

    #[test]
    fn handshaking_send_over_limit_buffer_full() {
        let mut s = new_tls(server_config()).unwrap();
        let mut out = OutQueue::new();
        let big = vec![b'x'; TLS_BUFFER_LIMIT + 1];
        assert!(matches!(
            tls_send(&mut s, &mut out, &mut wire(), &big),
            Err(SendError::TlsBufferFull)
        ));
    }

    #[test]
    fn established_blocked_socket_records_queued_in_order() {
        let mut c = client(&[&rustls::version::TLS13]);
        let mut out = OutQueue::new();
        let mut s = handshake(&mut c, &mut out);
        let mut sock = Throttled {
            room: 100,
            written: Vec::new(),
        };
        // More than rustls's own cap in one send: it must all end up on the wire or queued.
        let msg: Vec<u8> = (0..TLS_BUFFER_LIMIT * 2).map(|i| (i % 251) as u8).collect();
        tls_send(&mut s, &mut out, &mut sock, &msg).unwrap();
        assert!(!s.wants_write());
        assert!(out.len() > TLS_BUFFER_LIMIT);
        sock.room = usize::MAX;
        assert!(out.write_to(&mut sock).unwrap());
        let mut received = Vec::new();
        let mut input = &sock.written[..];
        while !input.is_empty() {
            c.read_tls(&mut input).unwrap();
            c.process_new_packets().unwrap();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = c.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..n]);
            }
        }
        assert_eq!(received, msg);
    }

    #[test]
    fn starttls_queued_proceed_goes_before_server_hello() {
        // `<proceed/>` could not be written yet; the ServerHello must queue behind it.
        let mut out = OutQueue::new();
        out.push(b"<proceed/>");
        let mut c = client(&[&rustls::version::TLS13]);
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let mut s = new_tls(server_config()).unwrap();
        let mut input = &hello[..];
        while !input.is_empty() {
            tls_feed(&mut s, &mut input).unwrap();
        }
        let mut sock = wire();
        drain_tls(&mut s, &mut out, &mut sock).unwrap();
        assert!(sock.written.is_empty());
        assert!(out.len() > 10);
        out.write_to(&mut sock).unwrap();
        assert!(sock.written.starts_with(b"<proceed/>"));
        // 0x16 = TLS handshake record.
        assert_eq!(sock.written.get(10), Some(&0x16));
    }

    #[test]
    fn fresh_session_garbage_fails_with_alert() {
        let mut s = new_tls(server_config()).unwrap();
        let mut input: &[u8] = b"<?xml version='1.0'?><stream:stream>";
        assert!(tls_feed(&mut s, &mut input).is_err());
        let mut out = OutQueue::new();
        let mut sock = wire();
        drain_tls(&mut s, &mut out, &mut sock).unwrap();
        // 0x15 = alert record.
        assert_eq!(sock.written.first(), Some(&0x15));
    }

    /// A mio stream whose connect to a local listener may still be in progress.
    fn connecting_conn() -> (Conn, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = Conn::new(Sock::Tcp(stream), Role::C2s, None);
        conn.connecting = true;
        (conn, listener)
    }

    #[test]
    fn connecting_send_queued_not_written_until_connected() {
        let (mut conn, listener) = connecting_conn();
        conn.send(b"<query/>").unwrap();
        assert_eq!(conn.out.len(), 8);
        assert!(!conn.flush().unwrap());
        assert_eq!(conn.out.len(), 8);
        // Connected: the queue goes out in order.
        let (mut peer, _) = listener.accept().unwrap();
        conn.connecting = false;
        let mut done = false;
        // Bounded: a loopback socket takes 8 bytes at once, or soon after.
        for _ in 0..100 {
            if conn.flush().unwrap() {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(done);
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"<query/>");
    }

    #[test]
    fn open_sends_wait_for_flush_then_go_in_one_write() {
        let (mut conn, listener) = connecting_conn();
        let (mut peer, _) = listener.accept().unwrap();
        conn.connecting = false;
        conn.send(b"<a/>").unwrap();
        conn.send(b"<b/>").unwrap();
        // Nothing on the wire before the flush.
        assert_eq!(conn.out.len(), 8);
        peer.set_nonblocking(true).unwrap();
        let mut got = [0u8; 16];
        let early = peer.read(&mut got);
        assert!(matches!(early, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock));
        assert!(conn.flush().unwrap());
        assert_eq!(conn.out.capacity(), 0, "a drained queue frees its memory");
        peer.set_nonblocking(false).unwrap();
        peer.read_exact(&mut got[..8]).unwrap();
        assert_eq!(&got[..8], b"<a/><b/>");
    }

    #[test]
    fn connecting_client_hello_queued_in_out() {
        let (mut conn, _listener) = connecting_conn();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(CERT_DER.to_vec())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        conn.tls = Some(client_tls(tls));
        conn.drain().unwrap();
        // 0x16 = TLS handshake record: the ClientHello waits for the connect.
        assert!(conn.out.len() > 5);
        let mut sink = wire();
        conn.out.write_to(&mut sink).unwrap();
        assert_eq!(sink.written.first(), Some(&0x16));
    }

    #[test]
    fn idle_conn_small_struct() {
        // Memory budget: an idle connection is this struct plus the kernel's socket buffers.
        let size = std::mem::size_of::<Option<Conn>>();
        assert!(size <= 192, "Conn grew to {size} bytes");
    }

    #[test]
    fn plain_blocked_socket_queues_rest_behind_queue() {
        let mut out = OutQueue::new();
        let mut sock = Throttled {
            room: 3,
            written: Vec::new(),
        };
        plain_send(&mut out, &mut sock, b"abcdef").unwrap();
        assert_eq!(sock.written, b"abc");
        sock.room = 100;
        // Something is queued: new bytes must go behind it, not straight out.
        plain_send(&mut out, &mut sock, b"gh").unwrap();
        assert_eq!(sock.written, b"abc");
        out.write_to(&mut sock).unwrap();
        assert_eq!(sock.written, b"abcdefgh");
    }
}
