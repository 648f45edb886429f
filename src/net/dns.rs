//! The resolver's sockets: one non-blocking UDP socket per address family, bound on first
//! use, and short DNS-over-TCP exchanges after a truncated answer.
//!
//! Owns: carrying out `Action::Dns` (`dns::Transmit`) and feeding what arrives back to the
//! core (`handle_dns_udp`, `handle_dns_tcp`). The resolver (in the core) owns IDs, matching,
//! timeouts and retries; a datagram the socket would not take is dropped (the resolver's
//! retry covers it).
//!
//! Bounds: at most [`MAX_DNS_TCP`] TCP exchanges at once (more fail at once with
//! `handle_dns_tcp(id, None)`); each reads one length-prefixed reply of at most 2 + 65535
//! bytes (`TcpDeframer`). Datagrams are read into the driver's shared 16 KiB buffer; a longer
//! one is truncated by the kernel and then refused by the resolver's parser, which the
//! resolver treats as no answer (its queries carry no EDNS, so answers are at most 512 bytes).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};

use super::conn::{Conn, DnsTcp, Role, Sock};
use super::{DNS_UDP4_TOKEN, DNS_UDP6_TOKEN, Driver, READ_BUDGET};
use crate::dns::wire::TcpDeframer;
use crate::dns::{TcpId, Transmit};
use crate::server::ConnId;

/// DNS-over-TCP exchanges open at once.
pub const MAX_DNS_TCP: usize = 8;

#[derive(Default)]
pub struct DnsSockets {
    udp4: Option<UdpSocket>,
    udp6: Option<UdpSocket>,
    /// Open TCP exchanges and their slots; at most `MAX_DNS_TCP`.
    tcp: Vec<(TcpId, ConnId)>,
}

impl DnsSockets {
    /// The exchange's connection is gone (called when its slot is freed).
    pub fn forget_tcp(&mut self, id: TcpId) {
        self.tcp.retain(|(t, _)| *t != id);
    }

    fn slot_of(&self, id: TcpId) -> Option<ConnId> {
        self.tcp.iter().find(|(t, _)| *t == id).map(|(_, c)| *c)
    }
}

impl Driver {
    pub(super) fn dns_transmit(&mut self, t: Transmit, now: Instant) {
        match t {
            Transmit::Udp { to, bytes } => self.dns_udp_send(to, &bytes),
            Transmit::TcpQuery { to, id, bytes } => self.dns_tcp_open(to, id, &bytes, now),
            Transmit::TcpClose { id } => {
                if let Some(slot) = self.dns.slot_of(id) {
                    // The resolver gave up on it: no report.
                    self.free(slot);
                }
                self.dns.forget_tcp(id);
            }
        }
    }

    /// The socket for `to`'s family, bound and registered on first use.
    fn dns_udp_socket(&mut self, to: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, token, any): (&mut Option<UdpSocket>, Token, SocketAddr) = if to.is_ipv4() {
            (
                &mut self.dns.udp4,
                DNS_UDP4_TOKEN,
                SocketAddr::from(([0, 0, 0, 0], 0)),
            )
        } else {
            (
                &mut self.dns.udp6,
                DNS_UDP6_TOKEN,
                SocketAddr::from(([0u16; 8], 0)),
            )
        };
        if slot.is_none() {
            let mut sock = UdpSocket::bind(any)?;
            self.poll
                .registry()
                .register(&mut sock, token, Interest::READABLE)?;
            debug!(
                "DNS socket bound to {}",
                sock.local_addr().map_or(any, |a| a)
            );
            *slot = Some(sock);
        }
        // Set just above when it was empty.
        slot.as_ref()
            .ok_or_else(|| io::Error::other("DNS socket missing"))
    }

    fn dns_udp_send(&mut self, to: SocketAddr, bytes: &[u8]) {
        let sock = match self.dns_udp_socket(to) {
            Ok(s) => s,
            Err(e) => {
                debug!("DNS socket for {to}: {e}");
                return;
            }
        };
        if let Err(e) = sock.send_to(bytes, to) {
            // Dropped: the resolver retries after its timeout.
            debug!("DNS query to {to} not sent: {e}");
        }
    }

    /// Reads datagrams (up to the budget) and hands them to the resolver.
    pub(super) fn dns_udp_readable(&mut self, token: Token, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut exhausted = true;
        for _ in 0..READ_BUDGET {
            let sock = if token == DNS_UDP4_TOKEN {
                self.dns.udp4.as_ref()
            } else {
                self.dns.udp6.as_ref()
            };
            let Some(sock) = sock else {
                exhausted = false;
                break;
            };
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    self.server.handle_dns_udp(now, from, bytes);
                    self.apply_actions(now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(e) => {
                    // E.g. ICMP port unreachable reported on the socket: the resolver's
                    // timeout handles the lost query.
                    debug!("DNS socket read: {e}");
                }
            }
        }
        self.read_buf = buf;
        if exhausted {
            self.again.push(token);
        }
    }

    fn dns_tcp_open(&mut self, to: SocketAddr, id: TcpId, bytes: &[u8], now: Instant) {
        if self.dns.tcp.len() >= MAX_DNS_TCP {
            debug!("DNS over TCP to {to}: too many exchanges open");
            self.server.handle_dns_tcp(now, id, None);
            return;
        }
        let stream = match TcpStream::connect(to) {
            Ok(s) => s,
            Err(e) => {
                debug!("DNS over TCP to {to}: {e}");
                self.server.handle_dns_tcp(now, id, None);
                return;
            }
        };
        let role = Role::DnsTcp(Box::new(DnsTcp {
            id,
            reply: TcpDeframer::new(),
        }));
        let mut conn = Conn::new(Sock::Tcp(stream), role, Some(to));
        conn.connecting = true;
        conn.out.push(bytes);
        let Some(slot) = self.insert(conn) else {
            self.server.handle_dns_tcp(now, id, None);
            return;
        };
        self.dns.tcp.push((id, slot));
        self.update_interest(slot);
    }

    /// Bytes of a DNS-over-TCP reply; a whole message goes to the resolver and ends the
    /// exchange.
    pub(super) fn dns_tcp_input(&mut self, slot: ConnId, bytes: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Role::DnsTcp(d) = &mut conn.role else {
            return;
        };
        let id = d.id;
        if let Some(msg) = d.reply.push(bytes) {
            // Freed first so the resolver's follow-up (say a TcpClose) finds nothing open.
            self.free(slot);
            self.server.handle_dns_tcp(now, id, Some(&msg));
            self.apply_actions(now);
        }
    }
}
