//! Outgoing s2s connections: the non-blocking connect the core asks for with
//! `Action::Connect`, direct TLS (XEP-0368) and STARTTLS as the TLS *client*.
//!
//! Owns: mapping the core's ids (`OUTGOING_CONN_BIT`) to slots, noticing the connect's
//! completion or failure, and setting up the client session (SNI = the remote domain, our
//! certificate for the local domain). Once connected, an outgoing connection goes through the
//! same plumbing as an accepted one (output queue, `max_outgoing_bytes`, read budget, linger).
//!
//! Timeouts are the core's (`s2s.connect_timeout`: it sends `Close`, which frees a connection
//! still connecting at once); the driver's own `HANDSHAKE_TIMEOUT` bounds the TLS handshake.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, warn};
use mio::net::TcpStream;

use super::conn::{self, Conn, Outgoing, Role, Sock, State};
use super::{Driver, HANDSHAKE_TIMEOUT, Timer};
use crate::server::{ClientTls, ConnId};
use crate::tls::TlsConfigs;
use crate::tls::client::S2sTls;

impl Driver {
    /// `Action::Connect`: starts a non-blocking connect; failures are reported at once with
    /// `handle_disconnect`.
    pub(super) fn connect(
        &mut self,
        core: ConnId,
        addr: SocketAddr,
        tls: Option<ClientTls>,
        now: Instant,
    ) {
        if self.outgoing.contains_key(&core) {
            warn!("{core:?}: connect for an id already in use ignored");
            return;
        }
        if self.s2s_count >= self.config.s2s.max_connections {
            if self.full_warn.allow(now) {
                warn!(
                    "s2s max_connections ({}) reached; not connecting to {addr}",
                    self.config.s2s.max_connections
                );
            }
            self.server.handle_disconnect(now, core);
            return;
        }
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                debug!("connecting to {addr} failed: {e}");
                self.server.handle_disconnect(now, core);
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{addr}: set_nodelay: {e}");
        }
        let out = Outgoing {
            core,
            server_name: None,
            presented_cert: false,
        };
        let mut conn = Conn::new(Sock::Tcp(stream), Role::S2sOut(Box::new(out)), Some(addr));
        conn.connecting = true;
        if let Some(tls) = &tls {
            if let Err(e) = client_session(&mut self.s2s_tls, &self.tls, &mut conn, tls, true) {
                warn!("{addr}: cannot start TLS: {e}");
                self.server.handle_disconnect(now, core);
                return;
            }
        }
        let Some(id) = self.insert(conn) else {
            self.server.handle_disconnect(now, core);
            return;
        };
        self.s2s_count += 1;
        self.outgoing.insert(core, id);
        debug!("connecting to {addr} as {id:?} for {core:?}");
        // WRITABLE interest announces the connect's completion.
        self.update_interest(id);
        if tls.is_some() {
            self.timers
                .push(now + HANDSHAKE_TIMEOUT, Timer::Handshake(id));
        }
    }

    /// `Action::StartTlsClient`: after `<proceed/>`, the TLS client handshake on an outgoing
    /// connection; `buffered` bytes are the first server records.
    pub(super) fn start_tls_client(
        &mut self,
        id: ConnId,
        buffered: Vec<u8>,
        tls: &ClientTls,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let ok = conn.state == State::Open
            && matches!(conn.role, Role::S2sOut(_))
            && conn.tls.is_none()
            && !conn.connecting;
        let result = if ok {
            client_session(&mut self.s2s_tls, &self.tls, conn, tls, false)
        } else {
            Err("STARTTLS on a connection that cannot have it".to_owned())
        };
        let peer = conn.peer_text();
        match result {
            Ok(()) => {
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.tls_stash = buffered;
                    if !conn.tls_stash.is_empty() {
                        self.tls_feed.push(id);
                    }
                }
                self.timers
                    .push(now + HANDSHAKE_TIMEOUT, Timer::Handshake(id));
                self.update_interest(id);
            }
            Err(e) => {
                warn!("{peer}: cannot start TLS: {e}");
                self.lost(id, now);
            }
        }
    }

    /// A connecting socket became ready: connected, still connecting (spurious wake-up), or
    /// failed (reported like any lost connection).
    pub(super) fn finish_connect(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Sock::Tcp(stream) = &conn.sock else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    // Not yet: wait for the next event.
                    return;
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            debug!("connecting to {} failed: {e}", conn.peer_text());
            self.lost(id, now);
            return;
        }
        conn.connecting = false;
        debug!("connected to {}", conn.peer_text());
        let connected = match &conn.role {
            Role::S2sOut(o) if conn.tls.is_none() => Some(o.core),
            _ => None,
        };
        // Queued bytes (a ClientHello, a DNS query) go out now.
        match conn.flush() {
            Ok(_) => self.update_interest(id),
            Err(e) => {
                debug!("{}: write failed: {e}", conn.peer_text());
                self.lost(id, now);
                return;
            }
        }
        if let Some(core) = connected {
            self.server.handle_connected(now, core);
        }
    }
}

/// Puts a TLS client session on `conn` (its ClientHello moved to the socket or `out`).
fn client_session(
    s2s_tls: &mut S2sTls,
    configs: &TlsConfigs,
    conn: &mut Conn,
    tls: &ClientTls,
    direct: bool,
) -> Result<(), String> {
    let session = s2s_tls
        .connect(configs, &tls.server_name, &tls.local_domain, direct)
        .map_err(|e| e.to_string())?;
    if let Role::S2sOut(o) = &mut conn.role {
        o.server_name = Some(tls.server_name.to_ascii_lowercase());
        o.presented_cert = session.presents_cert;
    }
    conn.tls = Some(conn::client_tls(session.tls));
    conn.tls_ready = false;
    conn.drain().map_err(|e| e.to_string())
}
