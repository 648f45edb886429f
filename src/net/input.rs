//! The input side of the driver: reading sockets and handing bytes to the core, through
//! rustls for TLS connections and through the line reader for control clients.
//!
//! Owns the order of input: STARTTLS leftovers before later reads, the handshake-complete
//! event before the first decrypted bytes, and the core's actions applied after every call
//! that may produce them, before more is read.

use std::io::{self, BufRead, Read};
use std::time::Instant;

use log::debug;

use super::conn::{self, Fed, Role, SendError, State};
use super::control_socket::{self, LineStatus};
use super::{CLOSE_LINGER, Driver, READ_BUDGET, Timer};
use crate::server::ConnId;

impl Driver {
    /// Reads until `WouldBlock`, a short read (unless `until_would_block`; see `Ready`) or the
    /// budget, handing bytes to the core or to rustls.
    pub(super) fn on_readable(&mut self, id: ConnId, until_would_block: bool, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut exhausted = true;
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(id) else {
                exhausted = false;
                break;
            };
            if conn.connecting {
                // Readiness before the connect completed: a refusal, or the connect is done.
                self.finish_connect(id, now);
                if self.conns.get(id).is_none_or(|c| c.connecting) {
                    exhausted = false;
                    break;
                }
                continue;
            }
            // STARTTLS leftovers come before anything read later.
            if !conn.tls_stash.is_empty() {
                let stash = std::mem::take(&mut conn.tls_stash);
                self.tls_input(id, &stash, now);
                continue;
            }
            let n = match conn.sock.read(&mut buf) {
                Ok(0) => {
                    self.peer_closed(id, now);
                    exhausted = false;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(e) => {
                    debug!("{}: read failed: {e}", conn.peer_text());
                    self.lost(id, now);
                    exhausted = false;
                    break;
                }
            };
            let bytes = buf.get(..n).unwrap_or_default();
            let drained = n < buf.len() && !until_would_block;
            if conn.state == State::Closing {
                // The core is done with it; input is only drained so the close is clean.
            } else if let Role::Control(_) = conn.role {
                self.control_input(id, bytes, now);
            } else if let Role::DnsTcp(_) = conn.role {
                self.dns_tcp_input(id, bytes, now);
            } else if conn.tls.is_some() {
                self.tls_input(id, bytes, now);
            } else {
                let core = conn.core_id(id);
                self.server.handle_bytes(now, core, bytes);
                // Before the next read: a StartTls must apply to the bytes that follow.
                self.apply_actions(now);
            }
            if drained {
                exhausted = false;
                break;
            }
        }
        self.read_buf = buf;
        if exhausted {
            let token = self.token_of(id);
            self.again.push(token);
        }
    }

    /// End of input from the peer.
    fn peer_closed(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match (&mut conn.role, conn.state) {
            (_, State::Closing) => self.free(id),
            (Role::Control(reader), State::Open) => {
                if reader.is_empty() {
                    self.free(id);
                } else {
                    let status = reader.finish();
                    self.control_answer(id, status, now);
                }
            }
            (Role::C2s | Role::S2sIn | Role::S2sOut(_), State::Open) => {
                debug!("{} closed the connection", conn.peer_text());
                self.lost(id, now);
            }
            (Role::DnsTcp(_), State::Open) => {
                debug!(
                    "{}: DNS server closed before a whole reply",
                    conn.peer_text()
                );
                self.lost(id, now);
            }
        }
    }

    /// Feeds ciphertext to the connection's rustls session, tells the core when the
    /// handshake completes, and hands it the plaintext.
    pub(super) fn tls_input(&mut self, id: ConnId, input: &[u8], now: Instant) {
        let mut input = input;
        // Each round rustls takes at least one byte, or the loop ends.
        while !input.is_empty() {
            let Some(conn) = self.conns.get_mut(id).filter(|c| c.state == State::Open) else {
                break;
            };
            let Some(tls) = conn.tls.as_deref_mut() else {
                break;
            };
            let fed = conn::tls_feed(tls, &mut input);
            // Handshake messages, alerts and tickets go out whatever happened.
            let drained = conn::drain_tls(tls, &mut conn.out, &mut conn.sock);
            match fed {
                Err(e) => {
                    debug!("{}: TLS error: {e}", conn.peer_text());
                    // Best effort: the alert may already be on the wire; try once more.
                    let _ = conn.out.write_to(&mut conn.sock);
                    self.lost(id, now);
                    break;
                }
                Ok(Fed::Closed) => {
                    self.peer_closed(id, now);
                    break;
                }
                Ok(Fed::Progress) => {}
            }
            if let Err(e) = drained {
                debug!("{}: write failed: {e}", conn.peer_text());
                self.lost(id, now);
                break;
            }
            if !conn.tls_ready && !tls.is_handshaking() {
                conn.tls_ready = true;
                let mut info = conn::tls_info(tls);
                // s2s: the names the peer's certificate proves (trust roots read on first use).
                match &conn.role {
                    Role::S2sIn => {
                        info.peer_cert_names = self.s2s_tls.peer_names(tls.peer_certificates());
                    }
                    Role::S2sOut(o) => {
                        if let Some(name) = &o.server_name {
                            info.peer_cert_names =
                                self.s2s_tls.server_names(tls.peer_certificates(), name);
                        }
                        info.presented_cert = o.presented_cert;
                    }
                    _ => {}
                }
                debug!(
                    "{}: TLS ready (SNI {:?}, certificate names {:?})",
                    conn.peer_text(),
                    info.sni,
                    info.peer_cert_names
                );
                let core = conn.core_id(id);
                self.server.handle_tls_ready(now, core, info);
                self.apply_actions(now);
            }
            self.update_interest(id);
            self.tls_plaintext(id, now);
        }
    }

    /// Hands rustls's decrypted bytes to the core, straight from rustls's own record buffers
    /// (no copy, and no plaintext buffer of the driver's).
    fn tls_plaintext(&mut self, id: ConnId, now: Instant) {
        // rustls holds at most 16 KiB of plaintext; each round consumes one non-empty chunk.
        loop {
            let Some(conn) = self.conns.get_mut(id).filter(|c| c.state == State::Open) else {
                return;
            };
            let core = conn.core_id(id);
            let Some(tls) = conn.tls.as_deref_mut() else {
                return;
            };
            let mut reader = tls.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    // close_notify received.
                    self.peer_closed(id, now);
                    return;
                }
                Ok(chunk) => {
                    let n = chunk.len();
                    self.server.handle_bytes(now, core, chunk);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("{}: TLS read failed: {e}", conn.peer_text());
                    self.lost(id, now);
                    return;
                }
            }
            self.apply_actions(now);
        }
    }

    fn control_input(&mut self, id: ConnId, bytes: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Role::Control(reader) = &mut conn.role else {
            return;
        };
        let status = reader.push(bytes);
        self.control_answer(id, status, now);
    }

    fn control_answer(&mut self, id: ConnId, status: LineStatus, now: Instant) {
        let reply = match status {
            LineStatus::Incomplete => return,
            LineStatus::Line(request) => self.server.handle_control(now, &request),
            LineStatus::TooLong => control_socket::TOO_LONG_REPLY.to_owned(),
            LineStatus::NotUtf8 => control_socket::NOT_UTF8_REPLY.to_owned(),
        };
        // Whatever the core queued meanwhile is unrelated to this connection.
        self.apply_actions(now);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if let Err(SendError::Io(e)) = conn.send(reply.as_bytes()) {
            debug!("control reply failed: {e}");
            self.free(id);
            return;
        }
        conn.state = State::Closing;
        self.timers.push(now + CLOSE_LINGER, Timer::Linger(id));
        self.progress_close(id);
    }
}
