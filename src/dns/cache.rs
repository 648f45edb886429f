//! The answer cache: by (name, type), until the TTL runs out, bounded in names.
//!
//! Owns how long answers live: positive TTLs clamped to [`MIN_TTL`]..=[`MAX_TTL`] (a zero TTL
//! would have every federation attempt hit the network; a week-long one would pin a moved
//! server), negative answers (NXDOMAIN, NODATA) for the SOA's negative TTL or
//! [`DEFAULT_NEGATIVE_TTL`], capped at [`MAX_NEGATIVE_TTL`] (RFC 2308 §5). When full, expired
//! names go first, then the name whose answers expire soonest. Time is an argument; the resolver
//! decides what to store.

use super::DnsError;
use super::wire::{Record, RecordType};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest time an answer is kept, whatever its TTL.
pub const MIN_TTL: u32 = 5;
/// Longest time a positive answer is kept: one day.
pub const MAX_TTL: u32 = 86_400;
/// Negative answers without an SOA to say otherwise.
pub const DEFAULT_NEGATIVE_TTL: u32 = 60;
/// Longest time a negative answer is kept (RFC 2308 §5 suggests one to three hours).
pub const MAX_NEGATIVE_TTL: u32 = 10_800;
/// Records kept per answer; more are dropped (an XMPP domain with 32 SRV targets is plenty).
pub const MAX_RECORDS_PER_ANSWER: usize = 32;

#[derive(Debug, Clone)]
enum Cached {
    Records(Vec<Record>),
    NoData,
    NxDomain,
}

#[derive(Debug, Clone)]
struct Entry {
    expires: Instant,
    answer: Cached,
}

/// The answers for one name, one slot per [`RecordType`].
#[derive(Debug, Default)]
struct Slots([Option<Entry>; 4]);

fn slot(rtype: RecordType) -> usize {
    match rtype {
        RecordType::A => 0,
        RecordType::Aaaa => 1,
        RecordType::Cname => 2,
        RecordType::Srv => 3,
    }
}

impl Slots {
    fn latest_expiry(&self) -> Option<Instant> {
        self.0.iter().flatten().map(|e| e.expires).max()
    }
}

/// Cached answers keyed by lowercase name, then type.
#[derive(Debug)]
pub struct Cache {
    names: HashMap<String, Slots>,
    max_names: usize,
}

impl Cache {
    /// A cache holding answers for at most `max_names` names (0 disables caching).
    pub fn new(max_names: usize) -> Cache {
        Cache {
            names: HashMap::new(),
            max_names,
        }
    }

    /// Names currently held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The cached answer for `name` (lowercase) and `rtype`, if still fresh: records with their
    /// TTL set to the seconds remaining, `Ok(vec![])` for NODATA, `Err(NxDomain)`.
    pub fn get(
        &mut self,
        now: Instant,
        name: &str,
        rtype: RecordType,
    ) -> Option<Result<Vec<Record>, DnsError>> {
        let slots = self.names.get_mut(name)?;
        let entry = slots.0.get_mut(slot(rtype))?;
        let fresh = entry.as_ref().is_some_and(|e| e.expires > now);
        if !fresh {
            *entry = None;
            if slots.0.iter().all(Option::is_none) {
                self.names.remove(name);
            }
            return None;
        }
        let e = entry.as_ref()?;
        let remaining = u32::try_from(e.expires.duration_since(now).as_secs()).unwrap_or(u32::MAX);
        Some(match &e.answer {
            Cached::Records(records) => Ok(records
                .iter()
                .map(|r| Record {
                    ttl: remaining,
                    ..r.clone()
                })
                .collect()),
            Cached::NoData => Ok(Vec::new()),
            Cached::NxDomain => Err(DnsError::NxDomain),
        })
    }

    /// Stores a positive answer. An empty `records` is stored as NODATA with `ttl`.
    pub fn insert_records(
        &mut self,
        now: Instant,
        name: &str,
        rtype: RecordType,
        mut records: Vec<Record>,
        ttl: u32,
    ) {
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        records.truncate(MAX_RECORDS_PER_ANSWER);
        let answer = if records.is_empty() {
            Cached::NoData
        } else {
            Cached::Records(records)
        };
        self.insert(now, name, rtype, answer, ttl);
    }

    /// Stores a negative answer: NXDOMAIN if `nxdomain`, else NODATA. `ttl` is the SOA's
    /// negative TTL if the response had one.
    pub fn insert_negative(
        &mut self,
        now: Instant,
        name: &str,
        rtype: RecordType,
        nxdomain: bool,
        ttl: Option<u32>,
    ) {
        let ttl = ttl
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
            .clamp(MIN_TTL, MAX_NEGATIVE_TTL);
        let answer = if nxdomain {
            Cached::NxDomain
        } else {
            Cached::NoData
        };
        self.insert(now, name, rtype, answer, ttl);
    }

    fn insert(&mut self, now: Instant, name: &str, rtype: RecordType, answer: Cached, ttl: u32) {
        if self.max_names == 0 {
            return;
        }
        if !self.names.contains_key(name) && self.names.len() >= self.max_names {
            self.purge_expired(now);
            if self.names.len() >= self.max_names {
                self.evict_soonest();
            }
        }
        let entry = Entry {
            expires: now + Duration::from_secs(u64::from(ttl)),
            answer,
        };
        let slots = self.names.entry(name.to_owned()).or_default();
        if let Some(s) = slots.0.get_mut(slot(rtype)) {
            *s = Some(entry);
        }
    }

    /// Drops every answer that has expired by `now`, and names left with none.
    pub fn purge_expired(&mut self, now: Instant) {
        self.names.retain(|_, slots| {
            for s in slots.0.iter_mut() {
                if s.as_ref().is_some_and(|e| e.expires <= now) {
                    *s = None;
                }
            }
            slots.0.iter().any(Option::is_some)
        });
    }

    fn evict_soonest(&mut self) {
        let victim = self
            .names
            .iter()
            .min_by_key(|(_, slots)| slots.latest_expiry())
            .map(|(name, _)| name.clone());
        if let Some(name) = victim {
            self.names.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::RecordData;
    use std::net::Ipv4Addr;

    fn a(name: &str, ttl: u32) -> Record {
        Record {
            name: name.into(),
            ttl,
            data: RecordData::A(Ipv4Addr::new(192, 0, 2, 1)),
        }
    }

    #[test]
    fn fresh_hit_reports_remaining_ttl_then_expires() {
        let t0 = Instant::now();
        let mut c = Cache::new(8);
        c.insert_records(t0, "a.org", RecordType::A, vec![a("a.org", 100)], 100);
        let hit = c.get(t0 + Duration::from_secs(40), "a.org", RecordType::A);
        assert_eq!(hit, Some(Ok(vec![a("a.org", 60)])));
        assert_eq!(c.get(t0, "a.org", RecordType::Aaaa), None);
        assert_eq!(
            c.get(t0 + Duration::from_secs(100), "a.org", RecordType::A),
            None
        );
        assert!(c.is_empty(), "expired entry is dropped on lookup");
    }

    #[test]
    fn ttl_is_clamped_to_min_and_max() {
        let t0 = Instant::now();
        let mut c = Cache::new(8);
        c.insert_records(t0, "zero.org", RecordType::A, vec![a("zero.org", 0)], 0);
        assert!(
            c.get(t0 + Duration::from_secs(4), "zero.org", RecordType::A)
                .is_some()
        );
        assert!(
            c.get(t0 + Duration::from_secs(5), "zero.org", RecordType::A)
                .is_none()
        );
        c.insert_records(
            t0,
            "long.org",
            RecordType::A,
            vec![a("long.org", 1)],
            u32::MAX,
        );
        let day = Duration::from_secs(u64::from(MAX_TTL));
        assert!(
            c.get(t0 + day - Duration::from_secs(1), "long.org", RecordType::A)
                .is_some()
        );
        assert!(c.get(t0 + day, "long.org", RecordType::A).is_none());
    }

    #[test]
    fn negative_answers_use_soa_ttl_or_default() {
        let t0 = Instant::now();
        let mut c = Cache::new(8);
        c.insert_negative(t0, "nx.org", RecordType::A, true, Some(30));
        c.insert_negative(t0, "nodata.org", RecordType::Srv, false, None);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            c.get(at(29), "nx.org", RecordType::A),
            Some(Err(DnsError::NxDomain))
        );
        assert_eq!(c.get(at(30), "nx.org", RecordType::A), None);
        assert_eq!(
            c.get(at(59), "nodata.org", RecordType::Srv),
            Some(Ok(vec![]))
        );
        assert_eq!(c.get(at(60), "nodata.org", RecordType::Srv), None);
        c.insert_negative(t0, "capped.org", RecordType::A, true, Some(u32::MAX));
        let cap = u64::from(MAX_NEGATIVE_TTL);
        assert!(c.get(at(cap), "capped.org", RecordType::A).is_none());
    }

    #[test]
    fn full_cache_evicts_expired_then_soonest_expiring() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.insert_records(t0, "short.org", RecordType::A, vec![a("short.org", 10)], 10);
        c.insert_records(
            t0,
            "long.org",
            RecordType::A,
            vec![a("long.org", 1000)],
            1000,
        );
        c.insert_records(t0, "new.org", RecordType::A, vec![a("new.org", 500)], 500);
        assert_eq!(c.len(), 2);
        assert!(c.get(t0, "short.org", RecordType::A).is_none());
        assert!(c.get(t0, "long.org", RecordType::A).is_some());
        // At t=600 new.org (expired at 500) is purged to make room; long.org stays.
        let t1 = t0 + Duration::from_secs(600);
        c.insert_records(t1, "newer.org", RecordType::A, vec![a("newer.org", 5)], 5);
        assert_eq!(c.len(), 2);
        assert!(c.get(t1, "long.org", RecordType::A).is_some());
        assert!(c.get(t1, "newer.org", RecordType::A).is_some());
    }

    #[test]
    fn a_second_type_for_a_cached_name_takes_no_new_name() {
        let t0 = Instant::now();
        let mut c = Cache::new(1);
        c.insert_records(t0, "a.org", RecordType::A, vec![a("a.org", 60)], 60);
        c.insert_negative(t0, "a.org", RecordType::Aaaa, false, None);
        assert_eq!(c.len(), 1);
        assert!(c.get(t0, "a.org", RecordType::A).is_some());
        assert_eq!(c.get(t0, "a.org", RecordType::Aaaa), Some(Ok(vec![])));
    }

    #[test]
    fn zero_capacity_caches_nothing_and_records_are_capped() {
        let t0 = Instant::now();
        let mut off = Cache::new(0);
        off.insert_records(t0, "a.org", RecordType::A, vec![a("a.org", 60)], 60);
        assert!(off.get(t0, "a.org", RecordType::A).is_none());
        let mut c = Cache::new(4);
        let many = (0..100).map(|_| a("a.org", 60)).collect();
        c.insert_records(t0, "a.org", RecordType::A, many, 60);
        let got = c.get(t0, "a.org", RecordType::A).unwrap().unwrap();
        assert_eq!(got.len(), MAX_RECORDS_PER_ANSWER);
    }
}
