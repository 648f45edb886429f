//! SRV ordering (statistics over a seeded source), the `.` target, fallbacks, and the address
//! step, driven through a real [`Resolver`] against a fake nameserver.

use super::*;
use crate::dns::resolver::{ResolverConfig, ResolverEvent, Transmit};
use crate::dns::testutil::{Rr, question_of, reply, seeded_random};
use simple_dns::RCODE;
use std::time::Duration;

const NS: &str = "192.0.2.53:53";

/// A fake zone: (name, qtype, query) to the reply, or silence.
type Zone = dyn Fn(&str, u16, &[u8]) -> Option<Vec<u8>>;

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
    Srv {
        priority,
        weight,
        port,
        target: target.into(),
    }
}

fn resolver() -> Resolver {
    let config = ResolverConfig {
        nameservers: vec![NS.parse().unwrap()],
        timeout: Duration::from_secs(5),
        attempts: 1,
        rotate: false,
        max_pending: 16,
        cache_names: 16,
    };
    Resolver::new(config, seeded_random(11))
}

/// Answers every UDP query with `zone(name, qtype, query)` until the resolver stops asking,
/// then returns the events.
fn serve(
    r: &mut Resolver,
    now: Instant,
    zone: &Zone,
) -> Vec<(QueryId, Result<Vec<Record>, DnsError>)> {
    for _ in 0..32 {
        let Some(t) = r.poll_transmit() else { break };
        let Transmit::Udp { to, bytes } = t else {
            panic!("unexpected {t:?}")
        };
        let (name, qtype) = question_of(&bytes);
        if let Some(resp) = zone(&name, qtype, &bytes) {
            r.handle_udp(now, to, &resp);
        }
    }
    std::iter::from_fn(|| r.poll_event())
        .map(|ResolverEvent::Answer { id, result }| (id, result))
        .collect()
}

fn resolve_srv(zone: &Zone, domain: &str) -> Result<Vec<Candidate>, DnsError> {
    let mut r = resolver();
    let now = Instant::now();
    let mut s = SrvResolution::start(&mut r, now, domain).unwrap();
    let mut rng = seeded_random(5);
    for (id, result) in serve(&mut r, now, zone) {
        assert!(s.handle_answer(id, &result, &mut *rng));
    }
    s.take_result().expect("finished")
}

fn nxdomain(q: &[u8]) -> Option<Vec<u8>> {
    Some(reply(
        q,
        RCODE::NameError,
        &[],
        &[Rr::Soa("example.org", 60, 60)],
    ))
}

#[test]
fn ordering_lower_priority_always_first() {
    let mut rng = seeded_random(1);
    for _ in 0..100 {
        let out = order_candidates(
            vec![
                (srv(20, 100, 1, "late.org"), true),
                (srv(10, 0, 2, "early.org"), false),
                (srv(30, 65535, 3, "last.org"), true),
            ],
            &mut *rng,
        );
        let hosts: Vec<&str> = out.iter().map(|c| c.host.as_str()).collect();
        assert_eq!(hosts, ["early.org", "late.org", "last.org"]);
    }
}

#[test]
fn ordering_weights_60_40_give_60_40_first_choice() {
    let mut rng = seeded_random(42);
    let draws = 10_000;
    let mut heavy_first = 0;
    for i in 0..draws {
        // Alternate the input order: the result must not depend on it.
        let mut input = vec![
            (srv(10, 60, 5269, "heavy.org"), false),
            (srv(10, 40, 5269, "light.org"), false),
        ];
        if i % 2 == 1 {
            input.reverse();
        }
        let out = order_candidates(input, &mut *rng);
        assert_eq!(out.len(), 2);
        if out[0].host == "heavy.org" {
            heavy_first += 1;
        }
    }
    let share = f64::from(heavy_first) / f64::from(draws);
    assert!((0.58..=0.62).contains(&share), "heavy first {share}");
}

#[test]
fn ordering_weight_zero_keeps_a_small_chance() {
    let mut rng = seeded_random(9);
    let mut zero_first = 0;
    for _ in 0..10_000 {
        let out = order_candidates(
            vec![
                (srv(0, 100, 1, "w100.org"), false),
                (srv(0, 0, 1, "w0.org"), false),
            ],
            &mut *rng,
        );
        if out[0].host == "w0.org" {
            zero_first += 1;
        }
    }
    // Expected 1/101 of the draws: about 99.
    assert!((50..=160).contains(&zero_first), "zero first {zero_first}");
}

#[test]
fn ordering_prefers_direct_tls_on_equal_priority_and_zero_weight() {
    let mut rng = seeded_random(3);
    for _ in 0..100 {
        let out = order_candidates(
            vec![
                (srv(5, 0, 5269, "xmpp.example.org"), false),
                (srv(5, 0, 5223, "xmpp.example.org"), true),
            ],
            &mut *rng,
        );
        assert!(out[0].direct_tls, "{out:?}");
        assert_eq!(out[0].port, 5223);
    }
}

#[test]
fn ordering_drops_root_targets() {
    let mut rng = seeded_random(3);
    let out = order_candidates(
        vec![(srv(0, 0, 0, "."), true), (srv(1, 0, 5269, "x.org"), false)],
        &mut *rng,
    );
    assert_eq!(
        out,
        vec![Candidate {
            host: "x.org".into(),
            port: 5269,
            direct_tls: false
        }]
    );
}

#[test]
fn srv_both_services_merge_into_ordered_candidates() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpps-server._tcp.example.org" => Some(reply(
            q,
            RCODE::NoError,
            &[Rr::Srv(
                "_xmpps-server._tcp.example.org",
                300,
                10,
                0,
                5223,
                "tls.example.org",
            )],
            &[],
        )),
        "_xmpp-server._tcp.example.org" => Some(reply(
            q,
            RCODE::NoError,
            &[
                Rr::Srv(
                    "_xmpp-server._tcp.example.org",
                    300,
                    10,
                    0,
                    5269,
                    "plain.example.org",
                ),
                Rr::Srv(
                    "_xmpp-server._tcp.example.org",
                    300,
                    5,
                    0,
                    5269,
                    "primary.example.org",
                ),
            ],
            &[],
        )),
        _ => None,
    };
    let got = resolve_srv(&zone, "Example.org").unwrap();
    let summary: Vec<(&str, u16, bool)> = got
        .iter()
        .map(|c| (c.host.as_str(), c.port, c.direct_tls))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("primary.example.org", 5269, false),
            ("tls.example.org", 5223, true),
            ("plain.example.org", 5269, false),
        ]
    );
}

#[test]
fn srv_dot_target_fails_with_no_service() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpp-server._tcp.example.org" => Some(reply(
            q,
            RCODE::NoError,
            &[Rr::Srv("_xmpp-server._tcp.example.org", 300, 0, 0, 0, ".")],
            &[],
        )),
        _ => nxdomain(q),
    };
    assert_eq!(resolve_srv(&zone, "example.org"), Err(DnsError::NoService));
}

#[test]
fn srv_dot_for_starttls_but_direct_tls_records_still_used() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpp-server._tcp.example.org" => Some(reply(
            q,
            RCODE::NoError,
            &[Rr::Srv("_xmpp-server._tcp.example.org", 300, 0, 0, 0, ".")],
            &[],
        )),
        _ => Some(reply(
            q,
            RCODE::NoError,
            &[Rr::Srv(
                "_xmpps-server._tcp.example.org",
                300,
                0,
                0,
                5223,
                "tls.example.org",
            )],
            &[],
        )),
    };
    let got = resolve_srv(&zone, "example.org").unwrap();
    assert_eq!(
        got,
        vec![Candidate {
            host: "tls.example.org".into(),
            port: 5223,
            direct_tls: true
        }]
    );
}

#[test]
fn srv_none_at_all_falls_back_to_domain_5269() {
    // NXDOMAIN for one, NODATA for the other.
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpps-server._tcp.example.org" => nxdomain(q),
        _ => Some(reply(
            q,
            RCODE::NoError,
            &[],
            &[Rr::Soa("example.org", 60, 60)],
        )),
    };
    assert_eq!(
        resolve_srv(&zone, "example.org."),
        Ok(vec![Candidate {
            host: "example.org".into(),
            port: 5269,
            direct_tls: false
        }])
    );
}

#[test]
fn srv_starttls_lookup_failing_is_reported_not_hidden() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpps-server._tcp.example.org" => nxdomain(q),
        _ => Some(reply(q, RCODE::ServerFailure, &[], &[])),
    };
    assert_eq!(
        resolve_srv(&zone, "example.org"),
        Err(DnsError::ServerFailure)
    );
}

#[test]
fn srv_direct_tls_lookup_failing_still_falls_back() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "_xmpps-server._tcp.example.org" => Some(reply(q, RCODE::Refused, &[], &[])),
        _ => nxdomain(q),
    };
    let got = resolve_srv(&zone, "example.org").unwrap();
    assert_eq!(got[0].port, 5269);
}

#[test]
fn srv_ip_literal_domain_is_ready_at_once() {
    let mut r = resolver();
    let mut s = SrvResolution::start(&mut r, Instant::now(), "[2001:db8::1]").unwrap();
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(
        s.take_result(),
        Some(Ok(vec![Candidate {
            host: "2001:db8::1".into(),
            port: 5269,
            direct_tls: false
        }]))
    );
}

#[test]
fn srv_foreign_answers_are_not_taken_and_cancel_frees_lookups() {
    let mut r = resolver();
    let now = Instant::now();
    let mut s = SrvResolution::start(&mut r, now, "example.org").unwrap();
    let mut rng = seeded_random(1);
    assert!(!s.handle_answer(QueryId(999), &Ok(vec![]), &mut *rng));
    assert_eq!(r.pending(), 2);
    s.cancel(&mut r);
    assert_eq!(r.pending(), 0);
}

fn resolve_addresses(zone: &Zone, host: &str) -> Result<Vec<SocketAddr>, DnsError> {
    let mut r = resolver();
    let now = Instant::now();
    let mut a = AddressResolution::start(&mut r, now, host, 5269).unwrap();
    for (id, result) in serve(&mut r, now, zone) {
        assert!(a.handle_answer(id, &result));
    }
    a.take_result().expect("finished")
}

#[test]
fn addresses_interleave_ipv6_first_through_cnames() {
    let zone = |name: &str, qtype: u16, q: &[u8]| match (name, qtype) {
        ("xmpp.example.org", 28) => Some(reply(
            q,
            RCODE::NoError,
            &[
                Rr::Cname("xmpp.example.org", 60, "host.example.net"),
                Rr::Aaaa("host.example.net", 60, "2001:db8::1"),
                Rr::Aaaa("host.example.net", 60, "2001:db8::2"),
            ],
            &[],
        )),
        ("xmpp.example.org", 1) => Some(reply(
            q,
            RCODE::NoError,
            &[
                Rr::Cname("xmpp.example.org", 60, "host.example.net"),
                Rr::A("host.example.net", 60, [192, 0, 2, 1]),
                Rr::A("host.example.net", 60, [192, 0, 2, 2]),
                Rr::A("host.example.net", 60, [192, 0, 2, 3]),
            ],
            &[],
        )),
        _ => None,
    };
    let got = resolve_addresses(&zone, "xmpp.example.org").unwrap();
    let expected: Vec<SocketAddr> = [
        "[2001:db8::1]:5269",
        "192.0.2.1:5269",
        "[2001:db8::2]:5269",
        "192.0.2.2:5269",
        "192.0.2.3:5269",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn addresses_ipv4_only_host_is_fine() {
    let zone = |_: &str, qtype: u16, q: &[u8]| match qtype {
        1 => Some(reply(
            q,
            RCODE::NoError,
            &[Rr::A("v4.example.org", 60, [192, 0, 2, 8])],
            &[],
        )),
        _ => Some(reply(
            q,
            RCODE::NoError,
            &[],
            &[Rr::Soa("example.org", 60, 60)],
        )),
    };
    assert_eq!(
        resolve_addresses(&zone, "v4.example.org"),
        Ok(vec!["192.0.2.8:5269".parse().unwrap()])
    );
}

#[test]
fn addresses_errors_say_why() {
    let nx = |_: &str, _: u16, q: &[u8]| nxdomain(q);
    assert_eq!(
        resolve_addresses(&nx, "gone.example.org"),
        Err(DnsError::NxDomain)
    );
    let empty = |_: &str, _: u16, q: &[u8]| Some(reply(q, RCODE::NoError, &[], &[]));
    assert_eq!(
        resolve_addresses(&empty, "bare.example.org"),
        Err(DnsError::NoAddresses)
    );
    let broken = |_: &str, qtype: u16, q: &[u8]| match qtype {
        1 => Some(reply(q, RCODE::ServerFailure, &[], &[])),
        _ => nxdomain(q),
    };
    assert_eq!(
        resolve_addresses(&broken, "x.example.org"),
        Err(DnsError::ServerFailure)
    );
}

#[test]
fn addresses_cname_loop_is_an_error() {
    let zone = |name: &str, _: u16, q: &[u8]| match name {
        "a.example.org" => Some(reply(
            q,
            RCODE::NoError,
            &[
                Rr::Cname("a.example.org", 60, "b.example.org"),
                Rr::Cname("b.example.org", 60, "a.example.org"),
            ],
            &[],
        )),
        _ => None,
    };
    assert_eq!(
        resolve_addresses(&zone, "a.example.org"),
        Err(DnsError::CnameChainTooLong)
    );
}

#[test]
fn addresses_ip_literal_host_needs_no_query() {
    let mut r = resolver();
    let now = Instant::now();
    let mut a = AddressResolution::start(&mut r, now, "192.0.2.77", 5223).unwrap();
    assert_eq!(r.poll_transmit(), None);
    for (id, result) in serve(&mut r, now, &|_, _, _| None) {
        a.handle_answer(id, &result);
    }
    assert_eq!(
        a.take_result(),
        Some(Ok(vec!["192.0.2.77:5223".parse().unwrap()]))
    );
}

#[test]
fn interleave_handles_uneven_lists() {
    let v6: Vec<Ipv6Addr> = vec!["::1".parse().unwrap()];
    let v4 = vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
    let got = interleave(&v6, &v4, 1);
    assert_eq!(got.len(), 3);
    assert!(got[0].is_ipv6() && got[1].is_ipv4() && got[2].is_ipv4());
    assert!(interleave(&[], &[], 1).is_empty());
}
