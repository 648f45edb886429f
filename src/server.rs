//! The sans-IO server core: every connection's protocol state, the sessions and the router.
//! (SKELETON of the public API; the driver in `net` depends only on what is here.)
//!
//! Inputs are `handle_*` calls carrying bytes, events and the current time; outputs are
//! `Action`s taken with `poll_action` and the next deadline from `poll_timeout`. Nothing here
//! touches a socket or reads a clock, so every behaviour is testable by feeding bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::store::Store;

/// The driver's handle for a connection. Opaque to the core; the driver makes it unique over
/// the process lifetime (slot index plus generation), so a stale id never aliases a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which listener accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP; TLS starts with STARTTLS (RFC 6120 §5).
    C2sStartTls,
    /// TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    C2sDirectTls,
}

/// What the driver learnt from a completed TLS handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Server name the client asked for (SNI), lowercase.
    pub sni: Option<String>,
    /// RFC 9266 `tls-exporter` channel-binding data: 32 bytes from the exporter with label
    /// "EXPORTER-Channel-Binding" and no context. Only for TLS 1.3 (None otherwise).
    pub channel_binding: Option<Vec<u8>>,
}

/// What the core asks the driver to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes (through TLS if the connection has it).
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Everything queued before this was sent in plaintext; now start a TLS server handshake
    /// on this connection. `buffered` are bytes the client already sent after `<starttls/>`:
    /// they are the first TLS records.
    StartTls { conn: ConnId, buffered: Vec<u8> },
    /// Flush what is queued, then close the connection. The core has forgotten it.
    Close { conn: ConnId },
}

/// A source of random bytes (the driver gives the system's; tests a seeded one).
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]);
}

pub struct Server {
    _config: Arc<Config>,
    _store: Box<dyn Store>,
    _random: Box<dyn RandomSource>,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Box<dyn Store>,
        random: Box<dyn RandomSource>,
        _now: Instant,
    ) -> Server {
        Server {
            _config: config,
            _store: store,
            _random: random,
        }
    }

    /// A connection was accepted.
    pub fn handle_accept(&mut self, _now: Instant, _conn: ConnId, _kind: ListenerKind, _peer: SocketAddr) {
        todo!("core")
    }

    /// A TLS handshake finished (direct TLS, or after `Action::StartTls`).
    pub fn handle_tls_ready(&mut self, _now: Instant, _conn: ConnId, _info: TlsInfo) {
        todo!("core")
    }

    /// Application bytes arrived (already decrypted when TLS is on).
    pub fn handle_bytes(&mut self, _now: Instant, _conn: ConnId, _bytes: &[u8]) {
        todo!("core")
    }

    /// The connection is gone (peer closed, I/O or TLS error, or the driver closed it because
    /// its output queue passed `limits.max_outgoing_bytes`). The core emits no `Close` for it.
    pub fn handle_disconnect(&mut self, _now: Instant, _conn: ConnId) {
        todo!("core")
    }

    /// Time passed; run what is due.
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!("core")
    }

    /// Graceful shutdown: every stream gets `system-shutdown` and a `Close`.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        todo!("core")
    }

    /// A command line from the control socket (see `control`); returns the full reply text.
    pub fn handle_control(&mut self, _now: Instant, _request: &str) -> String {
        todo!("core")
    }

    /// The next action for the driver, in the order produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        None
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
