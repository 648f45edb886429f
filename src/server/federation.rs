//! The federation manager: which s2s streams exist, where outgoing ones connect, and what
//! crosses between them and the rest of the core.
//!
//! Owns: the stub [`Resolver`], one outgoing route per (local domain, remote domain) with its
//! DNS steps, candidates, connection attempts and queue, the incoming [`S2sIn`] machines, and
//! the dialback verifications that go from an incoming stream to an outgoing one and back.
//! Leaves the protocol of each stream to `stream::s2s`, SRV ordering to `dns::srv`, routing
//! of what arrives and delivery of bounces to `server::routing` (through [`FedOut`]).
//!
//! Outgoing, for a stanza to a domain we do not host (RFC 6120 §3.2, §8.2.2; XEP-0368):
//! 1. no route for (from's domain, to's domain): one is made; `_xmpps-server` and
//!    `_xmpp-server` SRV are asked at once, stanzas wait in the route's queue;
//! 2. for each candidate in order, AAAA and A; for each address in order, a fresh [`S2sOut`]
//!    and an `Action::Connect` (with [`ClientTls`] for direct-TLS candidates) holding the
//!    queue; a machine that closes before it is ready hands its queue (and the dialback
//!    verifications it carried) to the next address or candidate;
//! 3. when none is left, everything queued comes back to its sender: `remote-server-not-found`
//!    when DNS says there is no such server (NXDOMAIN, SRV target `.`, no addresses),
//!    `remote-server-timeout` when DNS timed out or the last attempt could not connect, else
//!    the condition of the last attempt's failure;
//! 4. a ready stream carries later stanzas directly; when it closes (idle, or the peer), the
//!    route is forgotten and the next stanza starts again at 1.
//!
//! Incoming: an [`S2sIn`] per accepted s2s connection; its stanzas (addresses already
//! checked against the authenticated pairs) go to routing as [`FedOut::Inbound`], its refusals
//! are answered over the route back to the sender. A dialback key it receives (we are the
//! Receiving Server) is checked with the Authoritative Server over the normal route
//! `our domain → their domain` (made if needed, and kept by the route across failed
//! attempts); the verdict goes back to the incoming stream with that stream id, or is dropped
//! if it is gone. A peer claiming one of our own domains gets `invalid` without a lookup.
//!
//! The queue is bounded per route by `[s2s] max_queued_stanzas`; past it the stanza comes back
//! at once with `resource-constraint`. s2s connections of both directions together are
//! bounded by `[s2s] max_connections`: an accepted one past it is closed, an outgoing attempt
//! past it fails the route with `resource-constraint`.
//!
//! Deadlines are found by scanning the machines (at most `max_connections` of them), cheaper
//! in memory than an index for the few dozen streams a small server has.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Action, ClientTls, ConnId, OUTGOING_CONN_BIT, RandomSource, TlsInfo};
use crate::config::Config;
use crate::dns::resolver::RandomFill;
use crate::dns::{
    AddressResolution, Candidate, DnsError, Resolver, ResolverEvent, SrvResolution, TcpId,
};
use crate::jid::Jid;
use crate::stanza::{StanzaCondition, StanzaError, error_reply};
use crate::stream::error::{StreamCondition, StreamError};
use crate::stream::s2s::{
    DialbackSecret, DialbackVerdict, OutMode, S2sConfig, S2sIn, S2sOut, S2sPolicy, S2sTlsInfo,
    incoming, outgoing,
};
use crate::xml::Element;

/// What the manager hands back to the server, in order.
#[derive(Debug)]
pub(super) enum FedOut {
    Action(Action),
    /// An authenticated stanza from a remote server, in `jabber:client`: route it with the
    /// remote origin.
    Inbound(Element),
    /// An error reply for a stanza that could not reach a remote domain, addressed to its
    /// local sender: deliver it locally (never answered in turn).
    Bounce(Element),
}

/// A `<db:verify/>` to ask the Authoritative Server, kept by its route until answered so
/// that it survives a failed connection attempt.
#[derive(Clone, Debug)]
struct Verify {
    receiving: String,
    stream_id: String,
    key: String,
}

enum Step {
    /// Asking SRV.
    Srv(SrvResolution),
    /// Asking AAAA and A for `current`.
    Addresses {
        rest: VecDeque<Candidate>,
        current: Candidate,
        lookup: AddressResolution,
    },
    /// A connection to one address of `current`.
    Connecting {
        rest: VecDeque<Candidate>,
        current: Candidate,
        addrs: VecDeque<SocketAddr>,
        conn: ConnId,
        machine: Box<S2sOut>,
        /// TCP (and direct TLS) came up.
        connected: bool,
        ready: bool,
    },
    /// Between a failed attempt and the next (never seen outside one call).
    Between,
}

/// Outgoing stanzas from one local domain to one remote domain.
struct Route {
    local: String,
    remote: String,
    /// Waiting while no machine exists (during DNS); a machine holds them afterwards.
    queue: VecDeque<Element>,
    verifies: Vec<Verify>,
    step: Step,
    /// Why the last attempt failed: what the queue comes back with when none is left.
    failure: StanzaCondition,
}

pub(super) struct Federation {
    config: Arc<S2sConfig>,
    max_connections: usize,
    resolver: Resolver,
    routes: HashMap<(String, String), Route>,
    /// Outgoing connection → its route's key.
    outs: HashMap<ConnId, (String, String)>,
    ins: HashMap<ConnId, Box<S2sIn>>,
    next_out: u64,
    out: VecDeque<FedOut>,
    /// Why the last route given up on failed (for a stanza whose route fails at once).
    last_failure: StanzaCondition,
}

/// A random stream for the resolver (query IDs, SRV weights): SHA-256 over a secret seed and
/// a counter, so IDs are not predictable from earlier ones (RFC 5452).
fn random_fill(seed: [u8; 32]) -> RandomFill {
    let mut counter: u64 = 0;
    Box::new(move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(32) {
            counter = counter.wrapping_add(1);
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&seed);
            ctx.update(&counter.to_be_bytes());
            let d = ctx.finish();
            let n = chunk.len();
            chunk.copy_from_slice(&d.as_ref()[..n]);
        }
    })
}

impl Federation {
    pub(super) fn new(config: &Config, random: &mut dyn RandomSource) -> Federation {
        let mut secret = [0u8; 32];
        random.fill(&mut secret);
        let mut seed = [0u8; 32];
        random.fill(&mut seed);
        let s = &config.s2s;
        let mut c = S2sConfig::new(config.domains.clone(), DialbackSecret::new(&secret));
        c.policy = S2sPolicy {
            require_encryption: s.require_encryption,
            require_valid_certificates: s.require_valid_certificates,
        };
        c.limits.max_stanza_bytes = config.limits.max_stanza_bytes;
        c.limits.max_depth = config.limits.max_depth;
        c.limits.max_attrs = config.limits.max_attrs;
        c.connect_timeout = s.connect_timeout;
        c.idle_timeout = s.idle_timeout;
        c.max_queued_stanzas = s.max_queued_stanzas;
        Federation {
            config: Arc::new(c),
            max_connections: s.max_connections,
            resolver: Resolver::new(config.dns.resolver_config(), random_fill(seed)),
            routes: HashMap::new(),
            outs: HashMap::new(),
            ins: HashMap::new(),
            next_out: 0,
            out: VecDeque::new(),
            last_failure: StanzaCondition::RemoteServerNotFound,
        }
    }

    pub(super) fn poll(&mut self) -> Option<FedOut> {
        self.out.pop_front()
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.ins.contains_key(&conn) || self.outs.contains_key(&conn)
    }

    fn connections(&self) -> usize {
        self.ins.len() + self.outs.len()
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let ins = self.ins.values().filter_map(|m| m.deadline());
        let outs = self.routes.values().filter_map(|r| match &r.step {
            Step::Connecting { machine, .. } => machine.deadline(),
            _ => None,
        });
        ins.chain(outs).chain(self.resolver.poll_timeout()).min()
    }

    fn action(&mut self, a: Action) {
        self.out.push_back(FedOut::Action(a));
    }

    // ---- outgoing ----

    /// Sends `stanza` (in `jabber:client`, `from` in a hosted domain) to the remote domain of
    /// `to`.
    pub(super) fn send(&mut self, now: Instant, from: &Jid, to: &Jid, stanza: Element) {
        let local = from.domain().to_owned();
        let remote = to.domain().to_owned();
        if !self.config.hosts(&local) || self.config.hosts(&remote) {
            log::warn!("s2s: not sending a stanza from {from} to {to}: not ours to send");
            return;
        }
        let key = (local, remote);
        if !self.routes.contains_key(&key) {
            self.new_route(now, &key);
        }
        let max = self.config.max_queued_stanzas;
        let Some(route) = self.routes.get_mut(&key) else {
            // The route failed at once (a cached DNS failure, or too many lookups).
            return self.bounce(stanza, self.last_failure);
        };
        match &mut route.step {
            Step::Connecting { machine, .. } => machine.send_stanza(now, stanza),
            _ if route.queue.len() >= max => {
                return self.bounce(stanza, StanzaCondition::ResourceConstraint);
            }
            _ => return route.queue.push_back(stanza),
        }
        self.drain_out(now, &key, false);
    }

    /// Asks the Authoritative Server for `originating` whether `key` is valid, over the
    /// route `receiving → originating`.
    fn request_verify(
        &mut self,
        now: Instant,
        receiving: &str,
        originating: &str,
        stream_id: &str,
        key: &str,
    ) {
        let rkey = (receiving.to_owned(), originating.to_owned());
        if self.config.hosts(originating) {
            // A peer claiming one of our own domains is spoofing: no need to ask ourselves.
            log::info!("s2s: dialback from a peer claiming our own {originating}");
            let v = Verify {
                receiving: receiving.to_owned(),
                stream_id: stream_id.to_owned(),
                key: key.to_owned(),
            };
            return self.verify_answer(now, &v, originating, DialbackVerdict::Invalid);
        }
        if !self.routes.contains_key(&rkey) {
            self.new_route(now, &rkey);
        }
        let v = Verify {
            receiving: receiving.to_owned(),
            stream_id: stream_id.to_owned(),
            key: key.to_owned(),
        };
        let Some(route) = self.routes.get_mut(&rkey) else {
            let failure = self.last_failure;
            return self.verify_answer(now, &v, originating, DialbackVerdict::Error(failure));
        };
        if route.verifies.len() >= self.config.max_pending_verifies {
            return self.verify_answer(
                now,
                &v,
                originating,
                DialbackVerdict::Error(StanzaCondition::ResourceConstraint),
            );
        }
        route.verifies.push(v.clone());
        if let Step::Connecting { machine, .. } = &mut route.step {
            machine.request_verify(now, &v.receiving, &v.stream_id, &v.key);
            self.drain_out(now, &rkey, false);
        }
    }

    fn new_route(&mut self, now: Instant, key: &(String, String)) {
        log::debug!("s2s {} -> {}: resolving", key.0, key.1);
        match SrvResolution::start(&mut self.resolver, now, &key.1) {
            Ok(srv) => {
                self.routes.insert(
                    key.clone(),
                    Route {
                        local: key.0.clone(),
                        remote: key.1.clone(),
                        queue: VecDeque::new(),
                        verifies: Vec::new(),
                        step: Step::Srv(srv),
                        failure: StanzaCondition::RemoteServerNotFound,
                    },
                );
                // The cache may have answered already.
                self.pump_dns(now);
            }
            Err(e) => {
                log::info!("s2s {} -> {}: DNS: {e}", key.0, key.1);
                self.last_failure = dns_condition(e);
            }
        }
    }

    /// Hands the resolver's answers to the routes waiting for them, then sends its packets.
    fn pump_dns(&mut self, now: Instant) {
        // Bounded: each event is consumed; new ones come only from the cache for lookups
        // that the finite set of routes start.
        while let Some(ResolverEvent::Answer { id, result }) = self.resolver.poll_event() {
            let key = self.routes.iter().find_map(|(k, r)| {
                let waiting = match &r.step {
                    Step::Srv(s) => s.is_waiting_for(id),
                    Step::Addresses { lookup, .. } => lookup.is_waiting_for(id),
                    Step::Connecting { .. } | Step::Between => false,
                };
                waiting.then(|| k.clone())
            });
            let Some(key) = key else { continue };
            let resolver = &mut self.resolver;
            let Some(route) = self.routes.get_mut(&key) else {
                continue;
            };
            match &mut route.step {
                Step::Srv(s) => {
                    s.handle_answer(id, &result, &mut |b| resolver.fill_random(b));
                    if let Some(r) = s.take_result() {
                        self.srv_done(now, &key, r);
                    }
                }
                Step::Addresses { lookup, .. } => {
                    lookup.handle_answer(id, &result);
                    if let Some(r) = lookup.take_result() {
                        self.addresses_done(now, &key, r);
                    }
                }
                Step::Connecting { .. } | Step::Between => {}
            }
        }
        while let Some(t) = self.resolver.poll_transmit() {
            self.action(Action::Dns(t));
        }
    }

    fn srv_done(
        &mut self,
        now: Instant,
        key: &(String, String),
        result: Result<Vec<Candidate>, DnsError>,
    ) {
        match result {
            Ok(c) if !c.is_empty() => {
                log::debug!("s2s {} -> {}: candidates {c:?}", key.0, key.1);
                self.next_candidate(now, key, c.into());
            }
            Ok(_) => self.fail_route(now, key, StanzaCondition::RemoteServerNotFound),
            Err(e) => {
                log::info!("s2s {} -> {}: SRV: {e}", key.0, key.1);
                self.fail_route(now, key, dns_condition(e));
            }
        }
    }

    /// Starts the address lookup of the first of `rest`, or gives up if there is none.
    fn next_candidate(
        &mut self,
        now: Instant,
        key: &(String, String),
        mut rest: VecDeque<Candidate>,
    ) {
        let Some(current) = rest.pop_front() else {
            let failure = self
                .routes
                .get(key)
                .map_or(StanzaCondition::RemoteServerNotFound, |r| r.failure);
            return self.fail_route(now, key, failure);
        };
        match AddressResolution::start(&mut self.resolver, now, &current.host, current.port) {
            Ok(lookup) => {
                if let Some(r) = self.routes.get_mut(key) {
                    r.step = Step::Addresses {
                        rest,
                        current,
                        lookup,
                    };
                }
                self.pump_dns(now);
            }
            Err(e) => {
                log::info!("s2s {} -> {}: {}: {e}", key.0, key.1, current.host);
                if let Some(r) = self.routes.get_mut(key) {
                    r.failure = dns_condition(e);
                }
                self.next_candidate(now, key, rest);
            }
        }
    }

    fn addresses_done(
        &mut self,
        now: Instant,
        key: &(String, String),
        result: Result<Vec<SocketAddr>, DnsError>,
    ) {
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        let Step::Addresses { rest, current, .. } = &mut route.step else {
            return;
        };
        let rest = std::mem::take(rest);
        let current = current.clone();
        match result {
            Ok(addrs) if !addrs.is_empty() => self.connect(now, key, rest, current, addrs.into()),
            other => {
                let why = other.err().unwrap_or(DnsError::NoAddresses);
                log::info!("s2s {} -> {}: {}: {why}", key.0, key.1, current.host);
                route.failure = dns_condition(why);
                self.next_candidate(now, key, rest);
            }
        }
    }

    /// Connects to the first of `addrs` with a fresh machine holding the route's queue, or
    /// moves on to the next candidate if there is none.
    fn connect(
        &mut self,
        now: Instant,
        key: &(String, String),
        rest: VecDeque<Candidate>,
        current: Candidate,
        mut addrs: VecDeque<SocketAddr>,
    ) {
        let Some(addr) = addrs.pop_front() else {
            return self.next_candidate(now, key, rest);
        };
        if self.connections() >= self.max_connections {
            log::warn!(
                "s2s: {} connections, not opening another",
                self.connections()
            );
            return self.fail_route(now, key, StanzaCondition::ResourceConstraint);
        }
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        self.next_out += 1;
        let conn = ConnId(OUTGOING_CONN_BIT | self.next_out);
        let mut machine = Box::new(S2sOut::new(
            now,
            self.config.clone(),
            &route.local,
            &route.remote,
            OutMode::Normal,
        ));
        for s in route.queue.drain(..) {
            machine.send_stanza(now, s);
        }
        for v in &route.verifies {
            machine.request_verify(now, &v.receiving, &v.stream_id, &v.key);
        }
        let tls = current.direct_tls.then(|| ClientTls {
            server_name: route.remote.clone(),
            local_domain: route.local.clone(),
        });
        log::debug!(
            "s2s {} -> {}: connecting to {addr} ({}:{}{})",
            key.0,
            key.1,
            current.host,
            current.port,
            if tls.is_some() { ", direct TLS" } else { "" }
        );
        route.step = Step::Connecting {
            rest,
            current,
            addrs,
            conn,
            machine,
            connected: false,
            ready: false,
        };
        self.outs.insert(conn, key.clone());
        self.action(Action::Connect { conn, addr, tls });
        self.drain_out(now, key, false);
    }

    /// Gives up on a route: everything queued comes back with `condition`, pending
    /// verifications fail.
    fn fail_route(&mut self, now: Instant, key: &(String, String), condition: StanzaCondition) {
        self.last_failure = condition;
        let Some(route) = self.routes.remove(key) else {
            return;
        };
        log::info!(
            "s2s {} -> {}: giving up ({}); {} stanza(s) bounced",
            key.0,
            key.1,
            condition.name(),
            route.queue.len()
        );
        match route.step {
            Step::Srv(s) => s.cancel(&mut self.resolver),
            Step::Addresses { lookup, .. } => lookup.cancel(&mut self.resolver),
            Step::Connecting { conn, .. } => {
                self.outs.remove(&conn);
            }
            Step::Between => {}
        }
        for s in route.queue {
            self.bounce(s, condition);
        }
        for v in &route.verifies {
            self.verify_answer(now, v, &route.remote, DialbackVerdict::Error(condition));
        }
    }

    fn bounce(&mut self, stanza: Element, condition: StanzaCondition) {
        let to = stanza.attr("to").unwrap_or_default().to_owned();
        if let Some(e) = error_reply(&stanza, &StanzaError::new(condition), &to) {
            self.out.push_back(FedOut::Bounce(e));
        }
    }

    /// Takes what the outgoing machine of `key` asked for. `gone`: the driver already
    /// forgot the connection (no `Close` for it).
    fn drain_out(&mut self, now: Instant, key: &(String, String), gone: bool) {
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        let Step::Connecting {
            machine,
            conn,
            connected,
            ready,
            ..
        } = &mut route.step
        else {
            return;
        };
        let conn = *conn;
        let mut ups = Vec::new();
        while let Some(u) = machine.poll_upcall() {
            ups.push(u);
        }
        let closing = ups.iter().any(|u| matches!(u, outgoing::Upcall::Close));
        let was_ready = *ready;
        let was_connected = *connected;
        // A stream that ends before it was ready gives its queue to the next attempt.
        let mut retry: VecDeque<Element> = VecDeque::new();
        let mut failure = None;
        let remote = route.remote.clone();
        let local = route.local.clone();
        for u in ups {
            match u {
                outgoing::Upcall::Send(bytes) => self.action(Action::Send { conn, bytes }),
                outgoing::Upcall::StartTls(buffered) => self.action(Action::StartTlsClient {
                    conn,
                    buffered,
                    tls: ClientTls {
                        server_name: remote.clone(),
                        local_domain: local.clone(),
                    },
                }),
                outgoing::Upcall::Ready { method } => {
                    log::info!("s2s {local} -> {remote}: ready ({method:?})");
                    if let Some(Route {
                        step: Step::Connecting { ready, .. },
                        ..
                    }) = self.routes.get_mut(key)
                    {
                        *ready = true;
                    }
                }
                outgoing::Upcall::Bounce { stanza, condition } => {
                    if closing && !was_ready && condition != StanzaCondition::ResourceConstraint {
                        failure = Some(condition);
                        retry.push_back(stanza);
                    } else {
                        self.bounce(stanza, condition);
                    }
                }
                outgoing::Upcall::VerifyResult {
                    receiving,
                    originating,
                    stream_id,
                    verdict,
                } => {
                    if closing && !was_ready && matches!(verdict, DialbackVerdict::Error(_)) {
                        // Asked again on the next attempt (the route keeps it).
                        continue;
                    }
                    let v = Verify {
                        receiving,
                        stream_id,
                        key: String::new(),
                    };
                    if let Some(r) = self.routes.get_mut(key) {
                        r.verifies.retain(|p| {
                            !(p.receiving == v.receiving && p.stream_id == v.stream_id)
                        });
                    }
                    self.verify_answer(now, &v, &originating, verdict);
                }
                outgoing::Upcall::Close => {
                    if !gone {
                        self.action(Action::Close { conn });
                    }
                }
            }
        }
        if !closing {
            return;
        }
        self.outs.remove(&conn);
        let Some(route) = self.routes.remove(key) else {
            return;
        };
        if was_ready {
            log::debug!("s2s {local} -> {remote}: closed");
            // Verifications it still owed were answered with errors above.
            return;
        }
        let Route {
            queue,
            verifies,
            step,
            ..
        } = route;
        let Step::Connecting {
            rest,
            current,
            addrs,
            ..
        } = step
        else {
            return;
        };
        // Could not connect at all: the server is not answering (timeout or refusal).
        let failure = if was_connected {
            failure.unwrap_or(StanzaCondition::RemoteServerTimeout)
        } else {
            StanzaCondition::RemoteServerTimeout
        };
        retry.extend(queue);
        self.routes.insert(
            key.clone(),
            Route {
                local,
                remote,
                queue: retry,
                verifies,
                step: Step::Between,
                failure,
            },
        );
        self.connect(now, key, rest, current, addrs);
    }

    /// Hands a dialback verdict to the incoming stream that asked for it.
    fn verify_answer(
        &mut self,
        now: Instant,
        v: &Verify,
        originating: &str,
        verdict: DialbackVerdict,
    ) {
        let found = self
            .ins
            .iter()
            .find(|(_, m)| m.stream_id() == Some(v.stream_id.as_str()))
            .map(|(c, _)| *c);
        let Some(conn) = found else {
            // XEP-0220 §2.1.2: the connection is gone; the answer has nobody to go to.
            return;
        };
        if let Some(m) = self.ins.get_mut(&conn) {
            m.dialback_verified(now, originating, &v.receiving, verdict);
        }
        self.drain_in(now, conn, false);
    }

    // ---- incoming ----

    pub(super) fn accept(&mut self, now: Instant, conn: ConnId, direct_tls: bool) {
        if self.connections() >= self.max_connections {
            log::warn!("s2s: {} connections, refusing {conn:?}", self.connections());
            return self.action(Action::Close { conn });
        }
        self.ins.insert(
            conn,
            Box::new(S2sIn::new(now, self.config.clone(), direct_tls)),
        );
    }

    fn drain_in(&mut self, now: Instant, conn: ConnId, gone: bool) {
        let Some(m) = self.ins.get_mut(&conn) else {
            return;
        };
        let mut ups = Vec::new();
        while let Some(u) = m.poll_upcall() {
            ups.push(u);
        }
        for u in ups {
            match u {
                incoming::Upcall::Send(bytes) => self.action(Action::Send { conn, bytes }),
                incoming::Upcall::StartTls(buffered) => {
                    self.action(Action::StartTls { conn, buffered })
                }
                incoming::Upcall::Close => {
                    self.ins.remove(&conn);
                    if !gone {
                        self.action(Action::Close { conn });
                    }
                }
                incoming::Upcall::VerifyDialback {
                    from,
                    to,
                    stream_id,
                    key,
                } => self.request_verify(now, &to, &from, &stream_id, &key),
                incoming::Upcall::Authenticated { from, to, method } => {
                    log::info!("s2s {from} -> {to}: incoming stream authenticated ({method:?})");
                }
                incoming::Upcall::Stanza { element } => {
                    self.out.push_back(FedOut::Inbound(element))
                }
                incoming::Upcall::Reject { stanza, condition } => {
                    self.answer_remote(now, &stanza, condition)
                }
            }
        }
    }

    /// Sends an error for a stanza a remote sent us back to it, if it may be answered and
    /// came to a domain we host (the only ones we can speak for).
    pub(super) fn answer_remote(
        &mut self,
        now: Instant,
        stanza: &Element,
        condition: StanzaCondition,
    ) {
        let to = stanza.attr("to").unwrap_or_default();
        let Some(reply) = error_reply(stanza, &StanzaError::new(condition), to) else {
            return;
        };
        let (Some(Ok(from)), Some(Ok(to))) = (
            reply.attr("from").map(Jid::parse),
            reply.attr("to").map(Jid::parse),
        ) else {
            return;
        };
        self.send(now, &from, &to, reply);
    }

    // ---- events from the driver ----

    pub(super) fn tls_ready(
        &mut self,
        now: Instant,
        conn: ConnId,
        info: TlsInfo,
        random: &mut dyn RandomSource,
    ) {
        if let Some(m) = self.ins.get_mut(&conn) {
            let info = S2sTlsInfo {
                peer_cert_valid_for: info.peer_cert_names,
                local_cert_valid: false,
            };
            m.handle_tls_ready(now, info, random);
            return self.drain_in(now, conn, false);
        }
        let Some(key) = self.outs.get(&conn).cloned() else {
            return;
        };
        if let Some(Route {
            step: Step::Connecting {
                machine, connected, ..
            },
            ..
        }) = self.routes.get_mut(&key)
        {
            *connected = true;
            machine.handle_tls_ready(
                now,
                S2sTlsInfo {
                    peer_cert_valid_for: info.peer_cert_names,
                    local_cert_valid: info.presented_cert,
                },
            );
        }
        self.drain_out(now, &key, false);
    }

    pub(super) fn connected(&mut self, now: Instant, conn: ConnId) {
        let Some(key) = self.outs.get(&conn).cloned() else {
            return;
        };
        if let Some(Route {
            step: Step::Connecting {
                machine, connected, ..
            },
            ..
        }) = self.routes.get_mut(&key)
        {
            *connected = true;
            machine.handle_connected(now);
        }
        self.drain_out(now, &key, false);
    }

    pub(super) fn bytes(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        random: &mut dyn RandomSource,
    ) {
        if let Some(m) = self.ins.get_mut(&conn) {
            m.handle_bytes(now, bytes, random);
            return self.drain_in(now, conn, false);
        }
        let Some(key) = self.outs.get(&conn).cloned() else {
            return;
        };
        if let Some(Route {
            step: Step::Connecting { machine, .. },
            ..
        }) = self.routes.get_mut(&key)
        {
            machine.handle_bytes(now, bytes);
        }
        self.drain_out(now, &key, false);
    }

    pub(super) fn disconnect(&mut self, now: Instant, conn: ConnId) {
        if self.ins.contains_key(&conn) {
            log::debug!("{conn:?}: s2s incoming connection gone");
            self.ins.remove(&conn);
            return;
        }
        let Some(key) = self.outs.get(&conn).cloned() else {
            return;
        };
        if let Some(Route {
            step: Step::Connecting { machine, .. },
            ..
        }) = self.routes.get_mut(&key)
        {
            machine.handle_disconnect(now);
        }
        self.drain_out(now, &key, true);
    }

    pub(super) fn timeout(&mut self, now: Instant) {
        self.resolver.handle_timeout(now);
        self.pump_dns(now);
        let due_in: Vec<ConnId> = self
            .ins
            .iter()
            .filter(|(_, m)| m.deadline().is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due_in {
            if let Some(m) = self.ins.get_mut(&conn) {
                m.handle_timeout(now);
            }
            self.drain_in(now, conn, false);
        }
        let due_out: Vec<(String, String)> = self
            .routes
            .iter()
            .filter(|(_, r)| match &r.step {
                Step::Connecting { machine, .. } => machine.deadline().is_some_and(|d| d <= now),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due_out {
            if let Some(Route {
                step: Step::Connecting { machine, .. },
                ..
            }) = self.routes.get_mut(&key)
            {
                machine.handle_timeout(now);
            }
            self.drain_out(now, &key, false);
        }
    }

    pub(super) fn dns_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.resolver.handle_udp(now, from, bytes);
        self.pump_dns(now);
    }

    pub(super) fn dns_tcp(&mut self, now: Instant, id: TcpId, reply: Option<&[u8]>) {
        match reply {
            Some(m) => self.resolver.handle_tcp_response(now, id, m),
            None => self.resolver.handle_tcp_error(now, id),
        }
        self.pump_dns(now);
    }

    /// Every stream ends: incoming ones with `system-shutdown`, outgoing ones closed (their
    /// queues come back to the senders).
    pub(super) fn shutdown(&mut self, now: Instant) {
        let ins: Vec<ConnId> = self.ins.keys().copied().collect();
        for conn in ins {
            if let Some(m) = self.ins.get_mut(&conn) {
                m.fail(StreamError::new(StreamCondition::SystemShutdown));
            }
            self.drain_in(now, conn, false);
        }
        let keys: Vec<(String, String)> = self.routes.keys().cloned().collect();
        for key in keys {
            let connecting = match self.routes.get_mut(&key) {
                Some(Route {
                    step: Step::Connecting { machine, .. },
                    ..
                }) => {
                    machine.fail(now, StanzaCondition::RemoteServerTimeout);
                    true
                }
                _ => false,
            };
            if connecting {
                // Its queue bounced in `fail`: nothing is retried on the way down.
                if let Some(Route {
                    step: Step::Connecting { ready, .. },
                    ..
                }) = self.routes.get_mut(&key)
                {
                    *ready = true;
                }
                self.drain_out(now, &key, false);
            } else {
                self.fail_route(now, &key, StanzaCondition::RemoteServerTimeout);
            }
        }
    }

    /// Streams and routes, for tests and metrics: (incoming, outgoing routes).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.ins.len(), self.routes.len())
    }
}

/// The stanza error for a DNS failure (RFC 6120 §8.3.3.15/16): a name that is not there is
/// "not found"; a resolver that could not get an answer is a timeout.
fn dns_condition(e: DnsError) -> StanzaCondition {
    match e {
        DnsError::Timeout | DnsError::ServerFailure | DnsError::TooManyLookups => {
            StanzaCondition::RemoteServerTimeout
        }
        _ => StanzaCondition::RemoteServerNotFound,
    }
}

#[cfg(test)]
mod tests {
    use crate::stream::s2s::cert_name_matches;

    #[test]
    fn wildcard_covers_one_label_only() {
        assert!(cert_name_matches("*.example.org", "a.example.org"));
        assert!(cert_name_matches("*.Example.org", "A.example.org."));
        assert!(!cert_name_matches("*.example.org", "example.org"));
        assert!(!cert_name_matches("*.example.org", "b.a.example.org"));
        assert!(!cert_name_matches("*.org", "example.org"));
        assert!(!cert_name_matches("a*.example.org", "ab.example.org"));
        assert!(cert_name_matches("example.org", "example.org"));
        assert!(!cert_name_matches("example.org", "www.example.org"));
    }
}
