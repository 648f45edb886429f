//! Test helpers: a seeded random source and a fake nameserver's replies built with simple-dns
//! (compressed, so every test also exercises compression pointers).

use crate::dns::resolver::RandomFill;
use simple_dns::rdata::{self, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, RCODE, ResourceRecord};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Deterministic bytes (xorshift64*), the same stream for the same seed.
pub(crate) fn seeded_random(seed: u64) -> RandomFill {
    let mut state = seed.max(1);
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    })
}

/// A record for a reply.
#[derive(Clone, Copy)]
pub(crate) enum Rr<'a> {
    A(&'a str, u32, [u8; 4]),
    Aaaa(&'a str, u32, &'a str),
    Cname(&'a str, u32, &'a str),
    /// owner, ttl, priority, weight, port, target
    Srv(&'a str, u32, u16, u16, u16, &'a str),
    /// zone, ttl, minimum
    Soa(&'a str, u32, u32),
}

fn to_rr<'a>(rr: &Rr<'a>) -> ResourceRecord<'a> {
    let n = |s: &'a str| Name::new(s).unwrap();
    let (name, ttl, data) = match *rr {
        Rr::A(name, ttl, ip) => (name, ttl, RData::A(rdata::A::from(Ipv4Addr::from(ip)))),
        Rr::Aaaa(name, ttl, ip) => (
            name,
            ttl,
            RData::AAAA(rdata::AAAA::from(ip.parse::<Ipv6Addr>().unwrap())),
        ),
        Rr::Cname(name, ttl, target) => (name, ttl, RData::CNAME(rdata::CNAME(n(target)))),
        Rr::Srv(name, ttl, priority, weight, port, target) => (
            name,
            ttl,
            RData::SRV(rdata::SRV {
                priority,
                weight,
                port,
                target: n(target),
            }),
        ),
        Rr::Soa(zone, ttl, minimum) => (
            zone,
            ttl,
            RData::SOA(rdata::SOA {
                mname: n("ns1.example.net"),
                rname: n("hostmaster.example.net"),
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum,
            }),
        ),
    };
    ResourceRecord::new(n(name), CLASS::IN, ttl, data)
}

/// The reply a nameserver would send to `query` (its ID and question echoed).
pub(crate) fn reply(
    query: &[u8],
    rcode: RCODE,
    answers: &[Rr<'_>],
    authority: &[Rr<'_>],
) -> Vec<u8> {
    reply_with(query, rcode, false, answers, authority)
}

pub(crate) fn reply_with(
    query: &[u8],
    rcode: RCODE,
    truncated: bool,
    answers: &[Rr<'_>],
    authority: &[Rr<'_>],
) -> Vec<u8> {
    let q = Packet::parse(query).unwrap();
    let mut p = Packet::new_reply(q.id());
    p.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    if truncated {
        p.set_flags(PacketFlag::TRUNCATION);
    }
    *p.rcode_mut() = rcode;
    p.questions = q.questions.clone();
    p.answers = answers.iter().map(to_rr).collect();
    p.name_servers = authority.iter().map(to_rr).collect();
    p.build_bytes_vec_compressed().unwrap()
}

/// The question name and type code of a query.
pub(crate) fn question_of(query: &[u8]) -> (String, u16) {
    let q = Packet::parse(query).unwrap();
    let question = &q.questions[0];
    (
        question.qname.to_string().to_ascii_lowercase(),
        question.qtype.into(),
    )
}
