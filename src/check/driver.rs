//! A blocking driver for the sans-IO [`Resolver`], for one-shot commands.
//!
//! Owns: the UDP sockets (one per address family the nameservers need), the DNS-over-TCP
//! exchanges after a truncated answer (done inline, one at a time, each with the try's
//! timeout), and the clock. The event loop's driver does the same with mio; a command that asks
//! a handful of questions and exits needs no more than read timeouts.
//!
//! Every wait is bounded: the resolver's own tries (timeout × attempts × servers) end each
//! question, and [`BlockingResolver::resolve_all`] also stops at a hard deadline of its own.

use crate::dns::resolv_conf::MAX_ATTEMPTS;
use crate::dns::wire::{MAX_MESSAGE_LEN, TcpDeframer};
use crate::dns::{
    DnsError, QueryId, Record, RecordType, Resolver, ResolverConfig, ResolverEvent, TcpId, Transmit,
};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Questions asked at once by one [`BlockingResolver::resolve_all`] call.
pub const MAX_QUESTIONS: usize = 16;
/// Turns of the wait loop per call; each turn either gets a datagram, passes a deadline or
/// sends something, so this only guards against a flood of unrelated datagrams.
const MAX_TURNS: usize = 10_000;
/// Longest wait on one socket when there are two (IPv4 and IPv6) to watch in turn.
const SLICE: Duration = Duration::from_millis(20);

/// A [`Resolver`] with sockets and a clock.
pub struct BlockingResolver {
    resolver: Resolver,
    sockets: Vec<UdpSocket>,
    /// The resolver's per-try timeout, also used for TCP exchanges.
    try_timeout: Duration,
    /// Upper bound for one `resolve_all` call.
    max_wait: Duration,
}

impl BlockingResolver {
    /// Binds an unspecified-address UDP socket for each family among the nameservers.
    /// `random` feeds message IDs (the system's random source in the command).
    pub fn new(
        config: ResolverConfig,
        random: crate::dns::resolver::RandomFill,
    ) -> io::Result<BlockingResolver> {
        let mut sockets = Vec::with_capacity(2);
        let mut last_error = None;
        for (wanted, local) in [
            (
                config.nameservers.iter().any(SocketAddr::is_ipv4),
                "0.0.0.0:0",
            ),
            (config.nameservers.iter().any(SocketAddr::is_ipv6), "[::]:0"),
        ] {
            if !wanted {
                continue;
            }
            // A host without IPv6 can still ask its IPv4 servers: only no socket at all fails.
            match UdpSocket::bind(local) {
                Ok(s) => sockets.push(s),
                Err(e) => last_error = Some(e),
            }
        }
        if let (true, Some(e)) = (sockets.is_empty(), last_error) {
            return Err(e);
        }
        let try_timeout = config.timeout.max(crate::dns::resolver::MIN_TIMEOUT);
        let servers = config
            .nameservers
            .len()
            .clamp(1, crate::dns::resolver::MAX_SERVERS);
        let tries = config.attempts.clamp(1, MAX_ATTEMPTS) * u32::try_from(servers).unwrap_or(1);
        // Every try may run to its timeout; one more for the TCP exchange and slack.
        let max_wait = try_timeout.saturating_mul(tries + 1);
        Ok(BlockingResolver {
            resolver: Resolver::new(config, random),
            sockets,
            try_timeout,
            max_wait,
        })
    }

    /// Random bytes from the resolver's source (for the SRV weights).
    pub fn fill_random(&mut self, buf: &mut [u8]) {
        self.resolver.fill_random(buf)
    }

    /// One question. See [`resolve_all`](Self::resolve_all).
    pub fn resolve(&mut self, name: &str, rtype: RecordType) -> Result<Vec<Record>, DnsError> {
        self.resolve_all(&[(name, rtype)])
            .pop()
            .unwrap_or(Err(DnsError::Timeout))
    }

    /// Asks the questions at once and waits for all answers; one result per question, in
    /// order. At most [`MAX_QUESTIONS`]; later ones fail with `TooManyLookups`.
    pub fn resolve_all(
        &mut self,
        questions: &[(&str, RecordType)],
    ) -> Vec<Result<Vec<Record>, DnsError>> {
        let start = Instant::now();
        let hard_deadline = start + self.max_wait;
        let mut results: Vec<Option<Result<Vec<Record>, DnsError>>> = Vec::new();
        let mut ids: Vec<Option<QueryId>> = Vec::new();
        for (i, (name, rtype)) in questions.iter().enumerate() {
            if i >= MAX_QUESTIONS {
                results.push(Some(Err(DnsError::TooManyLookups)));
                ids.push(None);
                continue;
            }
            match self.resolver.lookup(start, name, *rtype) {
                Ok(id) => {
                    results.push(None);
                    ids.push(Some(id));
                }
                Err(e) => {
                    results.push(Some(Err(e)));
                    ids.push(None);
                }
            }
        }
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        for _ in 0..MAX_TURNS {
            self.flush_transmits();
            while let Some(ResolverEvent::Answer { id, result }) = self.resolver.poll_event() {
                let slot = ids
                    .iter()
                    .position(|q| *q == Some(id))
                    .and_then(|i| results.get_mut(i));
                if let Some(slot) = slot {
                    *slot = Some(result);
                }
            }
            if results.iter().all(Option::is_some) {
                break;
            }
            let now = Instant::now();
            if now >= hard_deadline {
                break;
            }
            let wake = self
                .resolver
                .poll_timeout()
                .unwrap_or(hard_deadline)
                .min(hard_deadline);
            if wake <= now {
                self.resolver.handle_timeout(now);
                continue;
            }
            self.wait(wake - now, &mut buf);
            let now = Instant::now();
            if self.resolver.poll_timeout().is_some_and(|t| t <= now) {
                self.resolver.handle_timeout(now);
            }
        }
        // Whatever is still unanswered stops here: the resolver forgets it.
        for (id, result) in ids.iter().zip(results.iter_mut()) {
            if result.is_none() {
                if let Some(id) = id {
                    self.resolver.cancel(*id);
                }
                *result = Some(Err(DnsError::Timeout));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(DnsError::Timeout)))
            .collect()
    }

    /// Waits up to `wait` for one datagram on the sockets and hands it to the resolver.
    fn wait(&mut self, wait: Duration, buf: &mut [u8]) {
        let slice = if self.sockets.len() > 1 {
            wait.min(SLICE)
        } else {
            wait
        };
        // A zero read timeout means "block forever" to the OS: never pass one.
        let slice = slice.max(Duration::from_millis(1));
        for socket in &self.sockets {
            if socket.set_read_timeout(Some(slice)).is_err() {
                continue;
            }
            match socket.recv_from(buf) {
                Ok((n, from)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    self.resolver.handle_udp(Instant::now(), from, bytes);
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                // An error that returns at once (an ICMP report, say) must not turn the wait
                // into a busy loop that ends the turns before the deadlines.
                Err(_) => std::thread::sleep(slice),
            }
        }
    }

    /// Sends what the resolver asks for; TCP exchanges run to completion here.
    fn flush_transmits(&mut self) {
        while let Some(t) = self.resolver.poll_transmit() {
            match t {
                Transmit::Udp { to, bytes } => {
                    let socket = self
                        .sockets
                        .iter()
                        .find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4()));
                    // A failed send is a lost datagram: the try's timeout handles it.
                    if let Some(socket) = socket {
                        let _ = socket.send_to(&bytes, to);
                    }
                }
                Transmit::TcpQuery { to, id, bytes } => {
                    let now = Instant::now();
                    match tcp_exchange(to, &bytes, self.try_timeout) {
                        Ok(message) => self.resolver.handle_tcp_response(now, id, &message),
                        Err(_) => self.resolver.handle_tcp_error(now, id),
                    }
                }
                // Exchanges are complete before the next transmit is taken: nothing stays open.
                Transmit::TcpClose { id: TcpId(_) } => {}
            }
        }
    }
}

/// One DNS-over-TCP exchange: connect, write the framed query, read one framed reply, all
/// within `timeout`.
fn tcp_exchange(to: SocketAddr, framed: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&to, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(framed)?;
    let mut deframer = TcpDeframer::new();
    let mut chunk = [0u8; 4096];
    // At most one message of 64 KiB plus its prefix: bounded by the deframer and the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(message) = deframer.push(chunk.get(..n).unwrap_or_default()) {
            return Ok(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn seeded() -> crate::dns::resolver::RandomFill {
        let mut x = 7u8;
        Box::new(move |b: &mut [u8]| {
            for v in b {
                x = x.wrapping_mul(31).wrapping_add(17);
                *v = x;
            }
        })
    }

    #[test]
    fn silent_nameserver_times_out_within_bound() {
        // A socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = ResolverConfig {
            nameservers: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(50),
            attempts: 2,
            rotate: false,
            max_pending: 8,
            cache_names: 8,
        };
        let mut r = BlockingResolver::new(config, seeded()).unwrap();
        let started = Instant::now();
        let result = r.resolve("example.org", RecordType::A);
        assert_eq!(result, Err(DnsError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// A reply to `query` with one A record, or an empty truncated one.
    fn reply(query: &[u8], truncated: bool) -> Vec<u8> {
        let query = simple_dns::Packet::parse(query).unwrap();
        let mut reply = simple_dns::Packet::new_reply(query.id());
        reply.questions = query.questions.clone();
        if truncated {
            reply.set_flags(simple_dns::PacketFlag::TRUNCATION);
        } else {
            reply.answers.push(simple_dns::ResourceRecord::new(
                simple_dns::Name::new("example.org").unwrap(),
                simple_dns::CLASS::IN,
                60,
                simple_dns::rdata::RData::A(std::net::Ipv4Addr::new(192, 0, 2, 9).into()),
            ));
        }
        reply.build_bytes_vec().unwrap()
    }

    #[test]
    fn truncated_udp_answer_is_asked_again_over_tcp() {
        // The TCP port number of the UDP socket may be taken by another process on a shared
        // machine: try a bounded number of fresh UDP ports.
        let (udp, addr, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = std::net::TcpListener::bind(addr).ok()?;
                Some((udp, addr, tcp))
            })
            .unwrap();
        let handle = thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            udp.send_to(&reply(&buf[..n], true), from).unwrap();
            let (mut s, _) = tcp.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut query).unwrap();
            let answer = reply(&query, false);
            let framed = crate::dns::wire::frame_tcp(&answer).unwrap();
            s.write_all(&framed).unwrap();
        });
        let config = ResolverConfig {
            nameservers: vec![addr],
            timeout: Duration::from_secs(2),
            attempts: 1,
            rotate: false,
            max_pending: 8,
            cache_names: 8,
        };
        let mut r = BlockingResolver::new(config, seeded()).unwrap();
        let records = r.resolve("example.org", RecordType::A).unwrap();
        assert_eq!(
            records.first().map(|r| r.data.clone()),
            Some(crate::dns::RecordData::A([192, 0, 2, 9].into()))
        );
        handle.join().unwrap();
    }

    #[test]
    fn answering_nameserver_gives_records() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let query = simple_dns::Packet::parse(&buf[..n]).unwrap();
            let mut reply = simple_dns::Packet::new_reply(query.id());
            reply.questions = query.questions.clone();
            reply.answers.push(simple_dns::ResourceRecord::new(
                simple_dns::Name::new("example.org").unwrap(),
                simple_dns::CLASS::IN,
                60,
                simple_dns::rdata::RData::A(std::net::Ipv4Addr::new(192, 0, 2, 7).into()),
            ));
            let reply = reply.build_bytes_vec().unwrap();
            server.send_to(&reply, from).unwrap();
        });
        let config = ResolverConfig {
            nameservers: vec![addr],
            timeout: Duration::from_secs(2),
            attempts: 1,
            rotate: false,
            max_pending: 8,
            cache_names: 8,
        };
        let mut r = BlockingResolver::new(config, seeded()).unwrap();
        let records = r.resolve("example.org", RecordType::A).unwrap();
        assert_eq!(
            records.first().map(|r| r.data.clone()),
            Some(crate::dns::RecordData::A([192, 0, 2, 7].into()))
        );
        handle.join().unwrap();
    }
}
