//! The resolver state machine: lookups in; packets, deadlines and answers out.
//!
//! Owns the conversation with recursive nameservers: one "flight" per distinct (name, type)
//! in progress (identical concurrent lookups share it), a fresh random message ID per try,
//! retry on timeout or failure across the servers (`attempts` rounds × servers, bounded),
//! optional rotation of the first server, TCP after a truncated UDP answer (RFC 7766), CNAME
//! chains the server did not chase, and the [`Cache`]. Sockets and the clock are the driver's:
//!
//! - the driver calls [`Resolver::lookup`] and the `handle_*` methods with the current time;
//! - then drains [`Resolver::poll_transmit`] (sends UDP datagrams; for [`Transmit::TcpQuery`]
//!   opens one TCP connection per [`TcpId`], writes the bytes, reads one length-prefixed reply
//!   with [`wire::TcpDeframer`](super::wire::TcpDeframer) and hands the message to
//!   [`Resolver::handle_tcp_response`], or reports failure with [`Resolver::handle_tcp_error`];
//!   on [`Transmit::TcpClose`] it drops that connection if still open, unknown ids ignored);
//! - drains [`Resolver::poll_event`] for answers;
//! - and sleeps until [`Resolver::poll_timeout`], then calls [`Resolver::handle_timeout`].
//!
//! Responses are accepted only from a server this flight asked, with the ID of that try and our
//! question echoed (RFC 5452 §9.1); anything else, malformed packets included, is ignored as
//! possible spoofing and the try runs into its timeout. Over TCP the connection is ours, so a
//! bad reply fails the try at once.

use super::DnsError;
use super::answer::{self, Outcome};
use super::cache::Cache;
use super::resolv_conf::{MAX_ATTEMPTS, ResolvConf};
use super::wire::{self, Record, RecordData, RecordType, Response};
use log::debug;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Nameservers used at most (resolv.conf has 3; a configured list may have a few more).
pub const MAX_SERVERS: usize = 8;
/// Lookups waiting (plus answers not yet polled) by default.
pub const DEFAULT_MAX_PENDING: usize = 64;
/// Names cached by default.
pub const DEFAULT_CACHE_NAMES: usize = 512;
/// The shortest per-try timeout accepted, so a zero in the config cannot spin the timer loop.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Resolver settings. Build from resolv.conf with [`ResolverConfig::from_resolv_conf`], then
/// override servers from Hearth's config with [`ResolverConfig::with_nameservers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Servers in order of preference; only the first [`MAX_SERVERS`] are used.
    pub nameservers: Vec<SocketAddr>,
    /// Wait for one try before moving to the next server.
    pub timeout: Duration,
    /// Rounds through the servers (1..=5).
    pub attempts: u32,
    /// Start each new query at the next server instead of the first.
    pub rotate: bool,
    /// Lookups waiting for an answer, plus answers not yet polled; beyond, `lookup` fails with
    /// [`DnsError::TooManyLookups`].
    pub max_pending: usize,
    /// Names kept in the cache.
    pub cache_names: usize,
}

impl ResolverConfig {
    pub fn from_resolv_conf(conf: &ResolvConf) -> ResolverConfig {
        ResolverConfig {
            nameservers: conf.nameservers.clone(),
            timeout: conf.timeout,
            attempts: conf.attempts,
            rotate: conf.rotate,
            max_pending: DEFAULT_MAX_PENDING,
            cache_names: DEFAULT_CACHE_NAMES,
        }
    }

    /// Replaces the servers (e.g. `[dns] nameservers = ["127.0.0.1:5353"]`).
    pub fn with_nameservers(mut self, nameservers: Vec<SocketAddr>) -> ResolverConfig {
        self.nameservers = nameservers;
        self
    }
}

impl Default for ResolverConfig {
    fn default() -> ResolverConfig {
        ResolverConfig::from_resolv_conf(&ResolvConf::default())
    }
}

/// One lookup, as returned by [`Resolver::lookup`] and named in its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// One DNS-over-TCP exchange: one connection, one question, one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpId(pub u64);

/// What the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// One datagram to a nameserver.
    Udp { to: SocketAddr, bytes: Vec<u8> },
    /// Open a TCP connection to `to` and write `bytes` (already length-prefixed).
    TcpQuery {
        to: SocketAddr,
        id: TcpId,
        bytes: Vec<u8>,
    },
    /// The resolver no longer wants this exchange: close its connection if still open.
    TcpClose { id: TcpId },
}

/// What the resolver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverEvent {
    /// The answer to a lookup: the records of the asked type (CNAMEs already followed, so
    /// their names may differ from the one asked), `Ok(vec![])` if the name has none (NODATA),
    /// or why there is no answer.
    Answer {
        id: QueryId,
        result: Result<Vec<Record>, DnsError>,
    },
}

/// Fills a buffer with random bytes: the system's in the driver, a seeded one in tests.
pub type RandomFill = Box<dyn FnMut(&mut [u8])>;

/// The try in progress for a flight.
#[derive(Debug, Clone, Copy)]
struct Try {
    server: usize,
    msg_id: u16,
    tcp: Option<TcpId>,
    deadline: Instant,
}

/// One question on the network, shared by every lookup waiting for it.
struct Flight {
    /// Internal handle, stable while flights come and go.
    key: u64,
    /// What the lookups asked (lowercase): the cache and coalescing key.
    name: String,
    rtype: RecordType,
    /// What is being asked now: `name`, or where a CNAME chain led.
    qname: String,
    /// CNAME links followed by earlier questions of this flight, and their smallest TTL.
    links: usize,
    chain_ttl: u32,
    waiters: Vec<QueryId>,
    /// Tries started for `qname`.
    tries: u32,
    /// A server said the answer does not fit in UDP: stay on TCP for this question.
    use_tcp: bool,
    current: Try,
    /// Earlier UDP tries whose late answers are still welcome: (server, message ID).
    earlier: Vec<(SocketAddr, u16)>,
    /// What to report if the tries run out.
    last_error: DnsError,
}

/// The stub resolver. See the module doc for the driver's side.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    max_tries: u32,
    rotate: bool,
    max_pending: usize,
    random: RandomFill,
    cache: Cache,
    flights: Vec<Flight>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ResolverEvent>,
    next_query: u64,
    next_tcp: u64,
    next_flight: u64,
    /// Where the next flight starts when rotating.
    next_start: usize,
}

impl Resolver {
    pub fn new(config: ResolverConfig, random: RandomFill) -> Resolver {
        let mut servers = config.nameservers;
        servers.truncate(MAX_SERVERS);
        let attempts = config.attempts.clamp(1, MAX_ATTEMPTS);
        // At most 5 × 8 = 40 tries per question.
        let max_tries = attempts * u32::try_from(servers.len()).unwrap_or(1);
        Resolver {
            servers,
            timeout: config.timeout.max(MIN_TIMEOUT),
            max_tries,
            rotate: config.rotate,
            max_pending: config.max_pending,
            random,
            cache: Cache::new(config.cache_names),
            flights: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_query: 0,
            next_tcp: 0,
            next_flight: 0,
            next_start: 0,
        }
    }

    /// Starts a lookup of `name` (a trailing dot is optional; IP literals are answered as
    /// themselves). The answer always comes as a [`ResolverEvent::Answer`] for the returned id,
    /// from the cache at once or later from the network. Fails if the name is invalid, too
    /// many lookups are pending, or there is no nameserver to ask.
    pub fn lookup(
        &mut self,
        now: Instant,
        name: &str,
        rtype: RecordType,
    ) -> Result<QueryId, DnsError> {
        if self.pending() >= self.max_pending {
            return Err(DnsError::TooManyLookups);
        }
        if let Some(result) = ip_literal(name, rtype) {
            let id = self.new_query_id();
            self.events.push_back(ResolverEvent::Answer { id, result });
            return Ok(id);
        }
        let name = wire::normalize_name(name)?;
        if let Some(result) = self.cache.get(now, &name, rtype) {
            let id = self.new_query_id();
            self.events.push_back(ResolverEvent::Answer { id, result });
            return Ok(id);
        }
        if let Some(flight) = self
            .flights
            .iter_mut()
            .find(|f| f.rtype == rtype && f.name == name)
        {
            let id = QueryId(self.next_query);
            self.next_query += 1;
            flight.waiters.push(id);
            return Ok(id);
        }
        if self.servers.is_empty() {
            return Err(DnsError::NoNameservers);
        }
        let id = self.new_query_id();
        let start = if self.rotate {
            let s = self.next_start % self.servers.len();
            self.next_start = self.next_start.wrapping_add(1);
            s
        } else {
            0
        };
        let key = self.next_flight;
        self.next_flight += 1;
        self.flights.push(Flight {
            key,
            qname: name.clone(),
            name,
            rtype,
            links: 0,
            chain_ttl: u32::MAX,
            waiters: vec![id],
            tries: 0,
            use_tcp: false,
            current: Try {
                server: start,
                msg_id: 0,
                tcp: None,
                deadline: now,
            },
            earlier: Vec::new(),
            last_error: DnsError::Timeout,
        });
        self.send_try(now, key, start, true);
        Ok(id)
    }

    /// Forgets a lookup: no answer will be reported for it. The network question stops too if
    /// nobody else waits for it.
    pub fn cancel(&mut self, id: QueryId) {
        self.events
            .retain(|ResolverEvent::Answer { id: e, .. }| *e != id);
        let Some(i) = self.flights.iter().position(|f| f.waiters.contains(&id)) else {
            return;
        };
        let Some(flight) = self.flights.get_mut(i) else {
            return;
        };
        flight.waiters.retain(|w| *w != id);
        if flight.waiters.is_empty() {
            let flight = self.flights.swap_remove(i);
            if let Some(tcp) = flight.current.tcp {
                self.transmits.push_back(Transmit::TcpClose { id: tcp });
            }
        }
    }

    /// A datagram arrived from `from` on the resolver's UDP socket.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(msg_id) = wire::peek_id(bytes) else {
            return;
        };
        // Cheap check first: parse only what some flight expects from this server.
        if !self
            .flights
            .iter()
            .any(|f| self.expects_udp(f, from, msg_id))
        {
            debug!("dns: unexpected datagram from {from} (id {msg_id})");
            return;
        }
        let response = match wire::parse_response(bytes) {
            Ok(r) => r,
            Err(e) => {
                debug!("dns: ignoring bad response from {from}: {e:?}");
                return;
            }
        };
        let Some(key) = self
            .flights
            .iter()
            .find(|f| {
                self.expects_udp(f, from, msg_id) && response.answers_question(&f.qname, f.rtype)
            })
            .map(|f| f.key)
        else {
            debug!("dns: response from {from} does not match its question");
            return;
        };
        self.process_response(now, key, response, false);
    }

    /// The reply read from the TCP connection of exchange `id` (the message without its length
    /// prefix, as [`wire::TcpDeframer`](super::wire::TcpDeframer) gives it).
    pub fn handle_tcp_response(&mut self, now: Instant, id: TcpId, message: &[u8]) {
        let Some(f) = self.flights.iter().find(|f| f.current.tcp == Some(id)) else {
            return;
        };
        let (key, msg_id) = (f.key, f.current.msg_id);
        let response = match wire::parse_response(message) {
            Ok(r) if r.id == msg_id && r.answers_question(&f.qname, f.rtype) => r,
            Ok(_) => {
                debug!("dns: TCP reply does not match its question");
                return self.fail_try(now, key, DnsError::ServerFailure);
            }
            Err(e) => {
                debug!("dns: bad TCP reply: {e:?}");
                return self.fail_try(now, key, DnsError::ServerFailure);
            }
        };
        self.process_response(now, key, response, true);
    }

    /// The TCP connection of exchange `id` failed (refused, reset, closed before a reply).
    pub fn handle_tcp_error(&mut self, now: Instant, id: TcpId) {
        if let Some(key) = self
            .flights
            .iter()
            .find(|f| f.current.tcp == Some(id))
            .map(|f| f.key)
        {
            self.fail_try(now, key, DnsError::ServerFailure);
        }
    }

    /// Time passed: tries whose deadline is `now` or earlier move to the next server, or fail.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .flights
            .iter()
            .filter(|f| f.current.deadline <= now)
            .map(|f| f.key)
            .collect();
        for key in expired {
            self.fail_try(now, key, DnsError::Timeout);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ResolverEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline of the tries in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flights.iter().map(|f| f.current.deadline).min()
    }

    /// Random bytes from the resolver's source, for callers that need a few (SRV weights).
    pub fn fill_random(&mut self, buf: &mut [u8]) {
        (self.random)(buf)
    }

    /// Lookups waiting plus answers not yet polled.
    pub fn pending(&self) -> usize {
        self.flights.iter().map(|f| f.waiters.len()).sum::<usize>() + self.events.len()
    }

    /// Names in the cache.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn new_query_id(&mut self) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        id
    }

    fn expects_udp(&self, f: &Flight, from: SocketAddr, msg_id: u16) -> bool {
        let current = f.current.tcp.is_none()
            && f.current.msg_id == msg_id
            && self.servers.get(f.current.server) == Some(&from);
        current || f.earlier.contains(&(from, msg_id))
    }

    /// A random message ID not used by any try in progress (RFC 5452 §9.2). A few draws; if
    /// all collide (astronomically unlikely) the question match still tells flights apart.
    fn fresh_msg_id(&mut self) -> u16 {
        let mut id = 0;
        for _ in 0..8 {
            let mut b = [0u8; 2];
            (self.random)(&mut b);
            id = u16::from_be_bytes(b);
            let in_use = self
                .flights
                .iter()
                .any(|f| f.current.msg_id == id || f.earlier.iter().any(|&(_, e)| e == id));
            if !in_use {
                break;
            }
        }
        id
    }

    /// Sends the flight's question to `server`. `counts` is false for the TCP retry after a
    /// truncated answer, which continues the same try.
    fn send_try(&mut self, now: Instant, key: u64, server: usize, counts: bool) {
        let msg_id = self.fresh_msg_id();
        let Some(i) = self.flights.iter().position(|f| f.key == key) else {
            return;
        };
        let Some(f) = self.flights.get(i) else {
            return;
        };
        let query = match wire::build_query(msg_id, &f.qname, f.rtype) {
            Ok(q) => q,
            // Only a CNAME target from the wire can fail here (a 254-byte name, say).
            Err(e) => return self.finish(key, Err(e)),
        };
        let Some(&to) = self.servers.get(server) else {
            return self.finish(key, Err(DnsError::NoNameservers));
        };
        let tcp = if f.use_tcp {
            let Ok(bytes) = wire::frame_tcp(&query) else {
                return self.finish(key, Err(DnsError::InvalidName));
            };
            let id = TcpId(self.next_tcp);
            self.next_tcp += 1;
            self.transmits
                .push_back(Transmit::TcpQuery { to, id, bytes });
            Some(id)
        } else {
            self.transmits.push_back(Transmit::Udp { to, bytes: query });
            None
        };
        let Some(f) = self.flights.get_mut(i) else {
            return;
        };
        if counts {
            f.tries += 1;
        }
        f.current = Try {
            server,
            msg_id,
            tcp,
            deadline: now + self.timeout,
        };
    }

    /// The current try failed: ask the next server, or give up after `max_tries`.
    fn fail_try(&mut self, now: Instant, key: u64, error: DnsError) {
        let Some(f) = self.flights.iter_mut().find(|f| f.key == key) else {
            return;
        };
        // A server that answered badly says more than one that stayed silent.
        if error != DnsError::Timeout || f.last_error == DnsError::Timeout {
            f.last_error = error;
        }
        let current = f.current;
        match current.tcp {
            Some(id) => self.transmits.push_back(Transmit::TcpClose { id }),
            None => {
                if let Some(&addr) = self.servers.get(current.server) {
                    f.earlier.push((addr, current.msg_id));
                }
            }
        }
        if f.tries >= self.max_tries {
            let error = f.last_error;
            return self.finish(key, Err(error));
        }
        let next = (current.server + 1) % self.servers.len().max(1);
        self.send_try(now, key, next, true);
    }

    fn process_response(&mut self, now: Instant, key: u64, response: Response, via_tcp: bool) {
        let Some(f) = self.flights.iter_mut().find(|f| f.key == key) else {
            return;
        };
        if response.truncated {
            if via_tcp {
                return self.fail_try(now, key, DnsError::ServerFailure);
            }
            if f.use_tcp {
                return; // a late duplicate; the TCP exchange is under way
            }
            f.use_tcp = true;
            let server = f.current.server;
            return self.send_try(now, key, server, false);
        }
        let (name, rtype) = (f.name.clone(), f.rtype);
        match answer::interpret(&response, &f.qname, rtype, f.links) {
            Outcome::Records { mut records, ttl } => {
                let ttl = ttl.min(f.chain_ttl);
                for r in &mut records {
                    r.ttl = r.ttl.min(ttl);
                }
                self.cache
                    .insert_records(now, &name, rtype, records.clone(), ttl);
                self.finish(key, Ok(records));
            }
            Outcome::NoData { ttl } => {
                self.cache.insert_negative(now, &name, rtype, false, ttl);
                self.finish(key, Ok(Vec::new()));
            }
            Outcome::NxDomain { ttl } => {
                self.cache.insert_negative(now, &name, rtype, true, ttl);
                self.finish(key, Err(DnsError::NxDomain));
            }
            Outcome::ServerFailure => self.fail_try(now, key, DnsError::ServerFailure),
            Outcome::ChainTooLong => self.finish(key, Err(DnsError::CnameChainTooLong)),
            Outcome::Follow { target, links, ttl } => {
                self.follow(now, key, target, links, ttl);
            }
        }
    }

    /// The server gave a CNAME chain ending at `target` without data: ask for `target`, from
    /// the cache if it knows, else afresh from the first try.
    fn follow(&mut self, now: Instant, key: u64, target: String, links: usize, ttl: u32) {
        let Some(f) = self.flights.iter_mut().find(|f| f.key == key) else {
            return;
        };
        let chain_ttl = f.chain_ttl.min(ttl);
        if let Some(result) = self.cache.get(now, &target, f.rtype) {
            return self.finish(key, result);
        }
        if let Some(tcp) = f.current.tcp {
            self.transmits.push_back(Transmit::TcpClose { id: tcp });
        }
        f.qname = target;
        f.links = links;
        f.chain_ttl = chain_ttl;
        f.tries = 0;
        f.use_tcp = false;
        f.current.tcp = None;
        f.earlier.clear();
        f.last_error = DnsError::Timeout;
        let server = f.current.server;
        self.send_try(now, key, server, true);
    }

    /// Ends a flight: every waiter gets the result.
    fn finish(&mut self, key: u64, result: Result<Vec<Record>, DnsError>) {
        let Some(i) = self.flights.iter().position(|f| f.key == key) else {
            return;
        };
        let flight = self.flights.swap_remove(i);
        if let Some(tcp) = flight.current.tcp {
            self.transmits.push_back(Transmit::TcpClose { id: tcp });
        }
        for id in flight.waiters {
            self.events.push_back(ResolverEvent::Answer {
                id,
                result: result.clone(),
            });
        }
    }
}

/// An IP literal is its own answer: an A record for IPv4 asked as A, AAAA for IPv6 asked as
/// AAAA, nothing for the other types. Brackets around IPv6 (as in XMPP domains) are allowed.
fn ip_literal(name: &str, rtype: RecordType) -> Option<Result<Vec<Record>, DnsError>> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let ip: IpAddr = bare.parse().ok()?;
    let data = match (ip, rtype) {
        (IpAddr::V4(v4), RecordType::A) => RecordData::A(v4),
        (IpAddr::V6(v6), RecordType::Aaaa) => RecordData::Aaaa(v6),
        _ => return Some(Ok(Vec::new())),
    };
    Some(Ok(vec![Record {
        name: bare.to_owned(),
        ttl: 0,
        data,
    }]))
}

#[cfg(test)]
mod tests;
