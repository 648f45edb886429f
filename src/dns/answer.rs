//! What a matched response means for our question.
//!
//! Owns the reading of RFC 1034 §3.6.2 (follow CNAMEs from the question name to the records of
//! the asked type, here at most [`MAX_CNAME_CHAIN`] links across all queries of one lookup, so
//! loops end) and RFC 2308 (NXDOMAIN and NODATA are answers, cacheable for the SOA's negative
//! TTL). Pure functions of a parsed [`Response`]; matching the response to the query, retries and
//! caching are `resolver.rs`'s.

use super::wire::{Rcode, Record, RecordData, RecordType, Response};

/// CNAME links followed for one lookup before giving up (loops included).
pub const MAX_CNAME_CHAIN: usize = 8;

/// The meaning of a response for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the asked type at the end of the chain. `ttl` is the smallest TTL along the
    /// chain and the records, so the cached answer dies with its weakest link.
    Records { records: Vec<Record>, ttl: u32 },
    /// The name exists but has no records of this type (NODATA). `ttl` from the SOA, if any.
    NoData { ttl: Option<u32> },
    /// The name (or the chain's last name) does not exist.
    NxDomain { ttl: Option<u32> },
    /// The chain ends at `target` with neither data nor an SOA saying there is none: the server
    /// did not chase it, so ask for `target`. `links` counts the links followed so far.
    Follow {
        target: String,
        links: usize,
        ttl: u32,
    },
    /// The server could not help (SERVFAIL, REFUSED, FORMERR, ...): ask another.
    ServerFailure,
    /// More than [`MAX_CNAME_CHAIN`] links, or a loop.
    ChainTooLong,
}

/// Reads `response` (already matched to the question `qname`/`rtype`). `links_so_far` counts
/// CNAME links followed by earlier queries of the same lookup.
pub fn interpret(
    response: &Response,
    qname: &str,
    rtype: RecordType,
    links_so_far: usize,
) -> Outcome {
    match response.rcode {
        Rcode::NoError | Rcode::NameError => {}
        Rcode::ServerFailure | Rcode::Refused | Rcode::Other => return Outcome::ServerFailure,
    }
    let mut name = qname;
    let mut links = links_so_far;
    let mut ttl = u32::MAX;
    if rtype != RecordType::Cname {
        // Each turn follows one link or stops; the link count bounds the turns.
        loop {
            let next = response.answers.iter().find_map(|r| match &r.data {
                RecordData::Cname(target) if r.name.eq_ignore_ascii_case(name) => {
                    Some((target, r.ttl))
                }
                _ => None,
            });
            let Some((target, link_ttl)) = next else {
                break;
            };
            links += 1;
            if links > MAX_CNAME_CHAIN {
                return Outcome::ChainTooLong;
            }
            ttl = ttl.min(link_ttl);
            name = target;
        }
    }
    let records: Vec<Record> = response
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype && r.name.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    if !records.is_empty() {
        let ttl = records.iter().fold(ttl, |t, r| t.min(r.ttl));
        let records = records.into_iter().map(|r| Record { ttl, ..r }).collect();
        return Outcome::Records { records, ttl };
    }
    if response.rcode == Rcode::NameError {
        return Outcome::NxDomain {
            ttl: response.negative_ttl,
        };
    }
    if name != qname && response.negative_ttl.is_none() {
        return Outcome::Follow {
            target: name.to_owned(),
            links,
            ttl,
        };
    }
    Outcome::NoData {
        ttl: response.negative_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cname(from: &str, to: &str, ttl: u32) -> Record {
        Record {
            name: from.into(),
            ttl,
            data: RecordData::Cname(to.into()),
        }
    }

    fn a(name: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record {
            name: name.into(),
            ttl,
            data: RecordData::A(Ipv4Addr::from(ip)),
        }
    }

    fn response(rcode: Rcode, answers: Vec<Record>, negative_ttl: Option<u32>) -> Response {
        Response {
            id: 1,
            rcode,
            truncated: false,
            question: None,
            answers,
            negative_ttl,
        }
    }

    #[test]
    fn chain_of_two_cnames_ends_in_records_with_min_ttl() {
        let r = response(
            Rcode::NoError,
            vec![
                cname("a.org", "b.org", 300),
                cname("b.org", "c.org", 50),
                a("c.org", [192, 0, 2, 1], 600),
                a("other.org", [192, 0, 2, 9], 600),
            ],
            None,
        );
        assert_eq!(
            interpret(&r, "a.org", RecordType::A, 0),
            Outcome::Records {
                records: vec![a("c.org", [192, 0, 2, 1], 50)],
                ttl: 50
            }
        );
    }

    #[test]
    fn cname_loop_is_bounded() {
        let r = response(
            Rcode::NoError,
            vec![cname("a.org", "b.org", 1), cname("b.org", "a.org", 1)],
            None,
        );
        assert_eq!(
            interpret(&r, "a.org", RecordType::A, 0),
            Outcome::ChainTooLong
        );
    }

    #[test]
    fn chain_of_eight_is_allowed_and_nine_is_not() {
        let names: Vec<String> = (0..=9).map(|i| format!("n{i}.org")).collect();
        let mut answers: Vec<Record> = (0..8)
            .map(|i| cname(&names[i], &names[i + 1], 60))
            .collect();
        answers.push(a(&names[8], [192, 0, 2, 1], 60));
        let ok = response(Rcode::NoError, answers.clone(), None);
        assert!(matches!(
            interpret(&ok, "n0.org", RecordType::A, 0),
            Outcome::Records { .. }
        ));
        // The same answer after one link followed in an earlier query is one too many.
        assert_eq!(
            interpret(&ok, "n0.org", RecordType::A, 1),
            Outcome::ChainTooLong
        );
    }

    #[test]
    fn dangling_chain_without_soa_asks_to_follow() {
        let r = response(Rcode::NoError, vec![cname("a.org", "B.org", 30)], None);
        assert_eq!(
            interpret(&r, "a.org", RecordType::A, 2),
            Outcome::Follow {
                target: "B.org".into(),
                links: 3,
                ttl: 30
            }
        );
        let with_soa = response(Rcode::NoError, vec![cname("a.org", "b.org", 30)], Some(10));
        assert_eq!(
            interpret(&with_soa, "a.org", RecordType::A, 0),
            Outcome::NoData { ttl: Some(10) }
        );
    }

    #[test]
    fn rcodes_map_to_outcomes() {
        let nx = response(Rcode::NameError, vec![], Some(42));
        assert_eq!(
            interpret(&nx, "a.org", RecordType::A, 0),
            Outcome::NxDomain { ttl: Some(42) }
        );
        let empty = response(Rcode::NoError, vec![], None);
        assert_eq!(
            interpret(&empty, "a.org", RecordType::A, 0),
            Outcome::NoData { ttl: None }
        );
        for rc in [Rcode::ServerFailure, Rcode::Refused, Rcode::Other] {
            let r = response(rc, vec![a("a.org", [192, 0, 2, 1], 5)], None);
            assert_eq!(
                interpret(&r, "a.org", RecordType::A, 0),
                Outcome::ServerFailure
            );
        }
    }

    #[test]
    fn cname_question_returns_the_cname_itself() {
        let r = response(Rcode::NoError, vec![cname("a.org", "b.org", 30)], None);
        assert_eq!(
            interpret(&r, "a.org", RecordType::Cname, 0),
            Outcome::Records {
                records: vec![cname("a.org", "b.org", 30)],
                ttl: 30
            }
        );
    }
}
