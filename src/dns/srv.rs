//! Where to connect for a remote XMPP server: SRV candidates, then addresses.
//!
//! Owns the XMPP rules on top of the [`Resolver`]: for a domain, ask
//! `_xmpps-server._tcp.DOMAIN` (direct TLS, XEP-0368) and `_xmpp-server._tcp.DOMAIN` (STARTTLS,
//! RFC 6120 §3.2.1) at once, merge both record sets and order them per RFC 2782: by priority,
//! then by weighted random selection within a priority (the running-sum algorithm, weight-0
//! records first in the list so they keep a small chance). Where RFC 2782 leaves the order
//! free, direct TLS goes first: among equal weights in the running-sum list, so with all weights
//! 0 (the common case) a direct TLS record of the same priority always comes first.
//!
//! A service whose only record has the target `.` is "decidedly not available" (RFC 2782). If
//! neither service gives a candidate and either said `.`, the lookup fails with
//! [`DnsError::NoService`] (remote-server-not-found) and does not fall back. If both have no
//! records (NXDOMAIN or NODATA), the domain itself on port 5269 with STARTTLS is the one
//! candidate (RFC 6120 §3.2.2).
//!
//! Then [`AddressResolution`] asks AAAA and A for one candidate's host (the resolver follows
//! CNAMEs, at most 8 links) and offers the addresses interleaved, IPv6 first (RFC 8305 §4):
//! v6, v4, v6, v4, ... Trying them in turn, and the next candidate after, is the caller's.
//!
//! Both machines are driven the same way: `start`, then hand every [`ResolverEvent`] answer to
//! `handle_answer` (it returns false for answers that are not its own), and after each, check
//! `take_result`.
//!
//! [`ResolverEvent`]: super::ResolverEvent

use super::DnsError;
use super::resolver::{QueryId, Resolver};
use super::wire::{self, Record, RecordData, RecordType, Srv};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// XEP-0368 direct TLS service label.
pub const XMPPS_SERVER: &str = "_xmpps-server._tcp.";
/// RFC 6120 STARTTLS service label.
pub const XMPP_SERVER: &str = "_xmpp-server._tcp.";
/// The server-to-server port when there are no SRV records (RFC 6120 §3.2.2).
pub const DEFAULT_S2S_PORT: u16 = 5269;
/// Candidates kept; a domain with more is not worth the tries.
pub const MAX_CANDIDATES: usize = 32;

/// One place to try: connect to `host`:`port`, with TLS from the first byte if `direct_tls`,
/// else plain then STARTTLS. `host` is lowercase without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
}

/// A uniformly drawn integer in `0..=max` (64 random bits reduced: the bias is below 2^-40
/// for the sums of 16-bit weights used here).
fn random_up_to(random: &mut dyn FnMut(&mut [u8]), max: u64) -> u64 {
    let mut b = [0u8; 8];
    random(&mut b);
    u64::from_be_bytes(b) % (max + 1)
}

/// Orders SRV records (each with whether it is direct TLS) per RFC 2782, as described in the
/// module doc. Records with the target `.` are dropped.
pub fn order_candidates(
    records: Vec<(Srv, bool)>,
    random: &mut dyn FnMut(&mut [u8]),
) -> Vec<Candidate> {
    let mut records: Vec<(Srv, bool)> = records
        .into_iter()
        .filter(|(srv, _)| !srv.is_root_target())
        .collect();
    // Stable sort: priority first; then weight-0 before the others (RFC 2782), direct TLS
    // before STARTTLS, equal weights grouped.
    records.sort_by_key(|(srv, direct)| (srv.priority, srv.weight != 0, !*direct, srv.weight));
    let mut out = Vec::with_capacity(records.len().min(MAX_CANDIDATES));
    let mut rest = records.as_slice();
    while let Some((first, _)) = rest.first() {
        let same = rest
            .iter()
            .take_while(|(srv, _)| srv.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        let mut group: Vec<&(Srv, bool)> = group.iter().collect();
        // Each turn removes one record, so the loop runs once per record.
        while !group.is_empty() {
            let total: u64 = group.iter().map(|(srv, _)| u64::from(srv.weight)).sum();
            let pick = random_up_to(random, total);
            let mut running = 0u64;
            let index = group
                .iter()
                .position(|(srv, _)| {
                    running += u64::from(srv.weight);
                    running >= pick
                })
                .unwrap_or(0);
            let (srv, direct_tls) = group.remove(index);
            out.push(Candidate {
                host: srv.target.clone(),
                port: srv.port,
                direct_tls: *direct_tls,
            });
        }
        rest = tail;
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// What one of the two SRV lookups said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    Waiting(QueryId),
    Records(Vec<Srv>),
    /// NXDOMAIN or NODATA.
    Absent,
    /// The single target `.`.
    Unavailable,
    Failed(DnsError),
}

impl Service {
    fn from_answer(result: &Result<Vec<Record>, DnsError>) -> Service {
        let records = match result {
            Ok(records) => records,
            Err(DnsError::NxDomain) => return Service::Absent,
            Err(e) => return Service::Failed(*e),
        };
        let srvs: Vec<Srv> = records
            .iter()
            .filter_map(|r| match &r.data {
                RecordData::Srv(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        if srvs.is_empty() {
            Service::Absent
        } else if srvs.iter().all(Srv::is_root_target) {
            Service::Unavailable
        } else {
            Service::Records(srvs)
        }
    }
}

/// The SRV step for one remote domain. See the module doc.
#[derive(Debug)]
pub struct SrvResolution {
    domain: String,
    direct_tls: Service,
    starttls: Service,
    result: Option<Result<Vec<Candidate>, DnsError>>,
}

impl SrvResolution {
    /// Asks both SRV names. An IP-literal domain has no SRV records to ask (RFC 6120 §3.2.1
    /// applies to names): its result, the literal on port 5269, is ready at once.
    pub fn start(
        resolver: &mut Resolver,
        now: Instant,
        domain: &str,
    ) -> Result<SrvResolution, DnsError> {
        let bare = domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
            .unwrap_or(domain);
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(SrvResolution {
                domain: bare.to_owned(),
                direct_tls: Service::Absent,
                starttls: Service::Absent,
                result: Some(Ok(vec![fallback(bare)])),
            });
        }
        let domain = wire::normalize_name(domain)?;
        let direct = resolver.lookup(now, &format!("{XMPPS_SERVER}{domain}"), RecordType::Srv)?;
        let starttls =
            match resolver.lookup(now, &format!("{XMPP_SERVER}{domain}"), RecordType::Srv) {
                Ok(id) => id,
                Err(e) => {
                    resolver.cancel(direct);
                    return Err(e);
                }
            };
        Ok(SrvResolution {
            domain,
            direct_tls: Service::Waiting(direct),
            starttls: Service::Waiting(starttls),
            result: None,
        })
    }

    /// True if `id` is one of this resolution's lookups still unanswered.
    pub fn is_waiting_for(&self, id: QueryId) -> bool {
        self.direct_tls == Service::Waiting(id) || self.starttls == Service::Waiting(id)
    }

    /// Takes a resolver answer; false if it is not ours. `random` orders equal-priority
    /// records (e.g. `&mut |b| resolver.fill_random(b)`).
    pub fn handle_answer(
        &mut self,
        id: QueryId,
        result: &Result<Vec<Record>, DnsError>,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        if self.direct_tls == Service::Waiting(id) {
            self.direct_tls = Service::from_answer(result);
        } else if self.starttls == Service::Waiting(id) {
            self.starttls = Service::from_answer(result);
        } else {
            return false;
        }
        let waiting = |s: &Service| matches!(s, Service::Waiting(_));
        if !waiting(&self.direct_tls) && !waiting(&self.starttls) {
            self.result = Some(self.decide(random));
        }
        true
    }

    fn decide(&self, random: &mut dyn FnMut(&mut [u8])) -> Result<Vec<Candidate>, DnsError> {
        let mut records = Vec::new();
        for (service, direct) in [(&self.direct_tls, true), (&self.starttls, false)] {
            if let Service::Records(srvs) = service {
                records.extend(srvs.iter().cloned().map(|s| (s, direct)));
            }
        }
        let candidates = order_candidates(records, random);
        if !candidates.is_empty() {
            return Ok(candidates);
        }
        if self.direct_tls == Service::Unavailable || self.starttls == Service::Unavailable {
            return Err(DnsError::NoService);
        }
        // Without an answer for the mandatory STARTTLS service we cannot tell "no SRV" from
        // "DNS broken"; falling back would only hide the failure.
        if let Service::Failed(e) = self.starttls {
            return Err(e);
        }
        Ok(vec![fallback(&self.domain)])
    }

    /// The ordered candidates (or why there are none), once both answers are in. Taken once.
    pub fn take_result(&mut self) -> Option<Result<Vec<Candidate>, DnsError>> {
        self.result.take()
    }

    /// Stops waiting: the resolver forgets the lookups still unanswered.
    pub fn cancel(self, resolver: &mut Resolver) {
        for service in [self.direct_tls, self.starttls] {
            if let Service::Waiting(id) = service {
                resolver.cancel(id);
            }
        }
    }
}

fn fallback(domain: &str) -> Candidate {
    Candidate {
        host: domain.to_owned(),
        port: DEFAULT_S2S_PORT,
        direct_tls: false,
    }
}

/// One address family's lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Family {
    Waiting(QueryId),
    Done(Result<Vec<IpAddr>, DnsError>),
}

/// The address step for one candidate: AAAA and A for its host. See the module doc.
#[derive(Debug)]
pub struct AddressResolution {
    port: u16,
    v6: Family,
    v4: Family,
    result: Option<Result<Vec<SocketAddr>, DnsError>>,
}

impl AddressResolution {
    /// Asks AAAA and A for `host` (an IP literal is answered as itself by the resolver).
    pub fn start(
        resolver: &mut Resolver,
        now: Instant,
        host: &str,
        port: u16,
    ) -> Result<AddressResolution, DnsError> {
        let v6 = resolver.lookup(now, host, RecordType::Aaaa)?;
        let v4 = match resolver.lookup(now, host, RecordType::A) {
            Ok(id) => id,
            Err(e) => {
                resolver.cancel(v6);
                return Err(e);
            }
        };
        Ok(AddressResolution {
            port,
            v6: Family::Waiting(v6),
            v4: Family::Waiting(v4),
            result: None,
        })
    }

    /// True if `id` is one of this resolution's lookups still unanswered.
    pub fn is_waiting_for(&self, id: QueryId) -> bool {
        self.v6 == Family::Waiting(id) || self.v4 == Family::Waiting(id)
    }

    /// Takes a resolver answer; false if it is not ours.
    pub fn handle_answer(&mut self, id: QueryId, result: &Result<Vec<Record>, DnsError>) -> bool {
        let ips = result.as_ref().map_err(|e| *e).map(|records| {
            records
                .iter()
                .filter_map(|r| match r.data {
                    RecordData::A(ip) => Some(IpAddr::V4(ip)),
                    RecordData::Aaaa(ip) => Some(IpAddr::V6(ip)),
                    _ => None,
                })
                .collect::<Vec<IpAddr>>()
        });
        if self.v6 == Family::Waiting(id) {
            self.v6 = Family::Done(ips);
        } else if self.v4 == Family::Waiting(id) {
            self.v4 = Family::Done(ips);
        } else {
            return false;
        }
        if let (Family::Done(v6), Family::Done(v4)) = (&self.v6, &self.v4) {
            self.result = Some(combine(v6, v4, self.port));
        }
        true
    }

    /// The addresses to try in order (or why there are none), once both answers are in.
    /// Taken once.
    pub fn take_result(&mut self) -> Option<Result<Vec<SocketAddr>, DnsError>> {
        self.result.take()
    }

    /// Stops waiting: the resolver forgets the lookups still unanswered.
    pub fn cancel(self, resolver: &mut Resolver) {
        for family in [self.v6, self.v4] {
            if let Family::Waiting(id) = family {
                resolver.cancel(id);
            }
        }
    }
}

fn combine(
    v6: &Result<Vec<IpAddr>, DnsError>,
    v4: &Result<Vec<IpAddr>, DnsError>,
    port: u16,
) -> Result<Vec<SocketAddr>, DnsError> {
    let list = |r: &Result<Vec<IpAddr>, DnsError>| r.clone().unwrap_or_default();
    let v6s: Vec<Ipv6Addr> = list(v6)
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
        .collect();
    let v4s: Vec<Ipv4Addr> = list(v4)
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    let addrs = interleave(&v6s, &v4s, port);
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    // Nothing to try: say the most telling reason. A failure (timeout, SERVFAIL) beats
    // NXDOMAIN, which beats "exists without addresses".
    let errors = [v6.as_ref().err(), v4.as_ref().err()];
    if let Some(e) = errors.iter().flatten().find(|e| ***e != DnsError::NxDomain) {
        return Err(**e);
    }
    if errors.iter().all(Option::is_some) {
        return Err(DnsError::NxDomain);
    }
    Err(DnsError::NoAddresses)
}

/// IPv6 and IPv4 addresses alternated, IPv6 first (RFC 8305 §4), each with `port`.
pub fn interleave(v6: &[Ipv6Addr], v4: &[Ipv4Addr], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    for i in 0..v6.len().max(v4.len()) {
        if let Some(ip) = v6.get(i) {
            out.push(SocketAddr::new(IpAddr::V6(*ip), port));
        }
        if let Some(ip) = v4.get(i) {
            out.push(SocketAddr::new(IpAddr::V4(*ip), port));
        }
    }
    out
}

#[cfg(test)]
mod tests;
