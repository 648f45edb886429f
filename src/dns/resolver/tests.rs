//! Resolver traces on a fake clock: lookups in, packets out, built replies in, answers out.

use super::*;
use crate::dns::testutil::{Rr, question_of, reply, reply_with, seeded_random};
use simple_dns::RCODE;
use std::net::Ipv4Addr;

const S1: &str = "192.0.2.1:53";
const S2: &str = "192.0.2.2:53";
const S3: &str = "[2001:db8::3]:53";
const SECS: fn(u64) -> Duration = Duration::from_secs;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(servers: &[&str]) -> ResolverConfig {
    ResolverConfig {
        nameservers: servers.iter().map(|s| sa(s)).collect(),
        timeout: SECS(5),
        attempts: 2,
        rotate: false,
        max_pending: 8,
        cache_names: 16,
    }
}

fn resolver(servers: &[&str]) -> Resolver {
    Resolver::new(config(servers), seeded_random(7))
}

fn udp(r: &mut Resolver) -> (SocketAddr, Vec<u8>) {
    match r.poll_transmit() {
        Some(Transmit::Udp { to, bytes }) => (to, bytes),
        other => panic!("expected a UDP transmit, got {other:?}"),
    }
}

fn answers(r: &mut Resolver) -> Vec<(QueryId, Result<Vec<Record>, DnsError>)> {
    std::iter::from_fn(|| r.poll_event())
        .map(|ResolverEvent::Answer { id, result }| (id, result))
        .collect()
}

fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record {
        name: name.into(),
        ttl,
        data: RecordData::A(Ipv4Addr::from(ip)),
    }
}

#[test]
fn idle_lookup_sends_rd_query_to_first_server() {
    let mut r = resolver(&[S1, S2]);
    let now = Instant::now();
    r.lookup(now, "Example.ORG.", RecordType::A).unwrap();
    let (to, q) = udp(&mut r);
    assert_eq!(to, sa(S1));
    assert_eq!(question_of(&q), ("example.org".into(), 1));
    assert_eq!(q[2] & 0x01, 0x01, "RD set");
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(r.poll_timeout(), Some(now + SECS(5)));
}

#[test]
fn waiting_answer_reports_records_then_cache_answers_until_expiry() {
    let mut r = resolver(&[S1]);
    let t0 = Instant::now();
    let id = r.lookup(t0, "example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    let resp = reply(
        &q,
        RCODE::NoError,
        &[Rr::A("example.org", 300, [192, 0, 2, 10])],
        &[],
    );
    r.handle_udp(t0, sa(S1), &resp);
    assert_eq!(
        answers(&mut r),
        vec![(id, Ok(vec![a("example.org", 300, [192, 0, 2, 10])]))]
    );
    assert_eq!(r.poll_timeout(), None);

    let t1 = t0 + SECS(100);
    let id2 = r.lookup(t1, "EXAMPLE.org", RecordType::A).unwrap();
    assert_eq!(r.poll_transmit(), None, "answered from the cache");
    assert_eq!(
        answers(&mut r),
        vec![(id2, Ok(vec![a("example.org", 200, [192, 0, 2, 10])]))]
    );

    r.lookup(t0 + SECS(300), "example.org", RecordType::A)
        .unwrap();
    udp(&mut r);
    assert!(answers(&mut r).is_empty(), "expired: asked again");
}

#[test]
fn waiting_nxdomain_reports_error_and_caches_for_soa_minimum() {
    let mut r = resolver(&[S1]);
    let t0 = Instant::now();
    let id = r.lookup(t0, "nope.example.org", RecordType::Srv).unwrap();
    let (_, q) = udp(&mut r);
    let resp = reply(
        &q,
        RCODE::NameError,
        &[],
        &[Rr::Soa("example.org", 3600, 120)],
    );
    r.handle_udp(t0, sa(S1), &resp);
    assert_eq!(answers(&mut r), vec![(id, Err(DnsError::NxDomain))]);

    let id2 = r
        .lookup(t0 + SECS(119), "nope.example.org", RecordType::Srv)
        .unwrap();
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(answers(&mut r), vec![(id2, Err(DnsError::NxDomain))]);
    r.lookup(t0 + SECS(120), "nope.example.org", RecordType::Srv)
        .unwrap();
    udp(&mut r);
}

#[test]
fn waiting_nodata_without_soa_reports_empty_and_caches_60s() {
    let mut r = resolver(&[S1]);
    let t0 = Instant::now();
    let id = r
        .lookup(t0, "v4only.example.org", RecordType::Aaaa)
        .unwrap();
    let (_, q) = udp(&mut r);
    r.handle_udp(t0, sa(S1), &reply(&q, RCODE::NoError, &[], &[]));
    assert_eq!(answers(&mut r), vec![(id, Ok(vec![]))]);
    r.lookup(t0 + SECS(59), "v4only.example.org", RecordType::Aaaa)
        .unwrap();
    assert_eq!(r.poll_transmit(), None);
    answers(&mut r);
    r.lookup(t0 + SECS(60), "v4only.example.org", RecordType::Aaaa)
        .unwrap();
    udp(&mut r);
}

#[test]
fn waiting_mismatched_id_question_or_source_is_ignored() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id = r.lookup(now, "example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    let good = reply(
        &q,
        RCODE::NoError,
        &[Rr::A("example.org", 60, [192, 0, 2, 1])],
        &[],
    );

    let mut wrong_id = good.clone();
    wrong_id[1] ^= 0xff;
    r.handle_udp(now, sa(S1), &wrong_id);

    let other_name =
        wire::build_query(u16::from_be_bytes([q[0], q[1]]), "evil.org", RecordType::A).unwrap();
    r.handle_udp(
        now,
        sa(S1),
        &reply(
            &other_name,
            RCODE::NoError,
            &[Rr::A("evil.org", 60, [6, 6, 6, 6])],
            &[],
        ),
    );
    let other_type = wire::build_query(
        u16::from_be_bytes([q[0], q[1]]),
        "example.org",
        RecordType::Aaaa,
    )
    .unwrap();
    r.handle_udp(now, sa(S1), &reply(&other_type, RCODE::NoError, &[], &[]));

    r.handle_udp(now, sa(S2), &good);
    r.handle_udp(now, sa("192.0.2.1:5353"), &good);
    assert!(answers(&mut r).is_empty());

    r.handle_udp(now, sa(S1), &good);
    assert_eq!(
        answers(&mut r),
        vec![(id, Ok(vec![a("example.org", 60, [192, 0, 2, 1])]))]
    );
}

#[test]
fn waiting_timeouts_rotate_through_servers_then_fail_with_timeout() {
    let mut r = resolver(&[S1, S2]);
    let t0 = Instant::now();
    let id = r.lookup(t0, "slow.example.org", RecordType::A).unwrap();
    let mut sent = vec![udp(&mut r).0];
    for _ in 0..3 {
        let now = r.poll_timeout().unwrap();
        r.handle_timeout(now - Duration::from_millis(1));
        assert_eq!(r.poll_transmit(), None, "not yet due");
        r.handle_timeout(now);
        sent.push(udp(&mut r).0);
        assert!(answers(&mut r).is_empty());
    }
    assert_eq!(
        sent,
        vec![sa(S1), sa(S2), sa(S1), sa(S2)],
        "attempts 2 × servers 2"
    );
    let now = r.poll_timeout().unwrap();
    assert_eq!(now, t0 + SECS(20));
    r.handle_timeout(now);
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(answers(&mut r), vec![(id, Err(DnsError::Timeout))]);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn waiting_servfail_moves_on_at_once_and_all_failing_is_server_failure() {
    let mut r = resolver(&[S1, S2]);
    let now = Instant::now();
    let id = r.lookup(now, "broken.example.org", RecordType::A).unwrap();
    for (server, rcode) in [
        (S1, RCODE::ServerFailure),
        (S2, RCODE::Refused),
        (S1, RCODE::FormatError),
        (S2, RCODE::ServerFailure),
    ] {
        let (to, q) = udp(&mut r);
        assert_eq!(to, sa(server));
        r.handle_udp(now, to, &reply(&q, rcode, &[], &[]));
    }
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(answers(&mut r), vec![(id, Err(DnsError::ServerFailure))]);
}

#[test]
fn waiting_late_answer_from_earlier_server_is_accepted() {
    let mut r = resolver(&[S1, S2]);
    let t0 = Instant::now();
    let id = r.lookup(t0, "example.org", RecordType::A).unwrap();
    let (_, q1) = udp(&mut r);
    r.handle_timeout(t0 + SECS(5));
    let (to2, _) = udp(&mut r);
    assert_eq!(to2, sa(S2));
    let late = reply(
        &q1,
        RCODE::NoError,
        &[Rr::A("example.org", 60, [192, 0, 2, 7])],
        &[],
    );
    r.handle_udp(t0 + SECS(6), sa(S1), &late);
    assert_eq!(
        answers(&mut r),
        vec![(id, Ok(vec![a("example.org", 60, [192, 0, 2, 7])]))]
    );
}

#[test]
fn waiting_truncated_answer_retries_same_server_over_tcp() {
    let mut r = resolver(&[S1, S2]);
    let now = Instant::now();
    let id = r.lookup(now, "big.example.org", RecordType::Srv).unwrap();
    let (_, q) = udp(&mut r);
    r.handle_udp(now, sa(S1), &reply_with(&q, RCODE::NoError, true, &[], &[]));
    let (to, tcp, framed) = match r.poll_transmit() {
        Some(Transmit::TcpQuery { to, id, bytes }) => (to, id, bytes),
        other => panic!("{other:?}"),
    };
    assert_eq!(to, sa(S1));
    let (tcp_query, used) = wire::deframe_tcp(&framed).unwrap();
    assert_eq!(used, framed.len());
    assert_eq!(question_of(tcp_query), ("big.example.org".into(), 33));

    // A UDP duplicate of the truncated answer changes nothing.
    r.handle_udp(now, sa(S1), &reply_with(&q, RCODE::NoError, true, &[], &[]));
    assert_eq!(r.poll_transmit(), None);

    let full = reply(
        tcp_query,
        RCODE::NoError,
        &[Rr::Srv(
            "big.example.org",
            60,
            0,
            0,
            5269,
            "xmpp.example.org",
        )],
        &[],
    );
    let mut deframer = wire::TcpDeframer::new();
    let message = deframer.push(&wire::frame_tcp(&full).unwrap()).unwrap();
    r.handle_tcp_response(now, tcp, &message);
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp }));
    let got = answers(&mut r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, id);
    assert!(matches!(&got[0].1, Ok(v) if v.len() == 1));
}

#[test]
fn tcp_timeout_error_or_bad_reply_moves_to_next_server_over_tcp() {
    let mut r = resolver(&[S1, S2]);
    let t0 = Instant::now();
    let id = r.lookup(t0, "big.example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    r.handle_udp(t0, sa(S1), &reply_with(&q, RCODE::NoError, true, &[], &[]));
    let Some(Transmit::TcpQuery { id: tcp1, .. }) = r.poll_transmit() else {
        panic!()
    };
    r.handle_timeout(t0 + SECS(5));
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp1 }));
    let Some(Transmit::TcpQuery { to, id: tcp2, .. }) = r.poll_transmit() else {
        panic!()
    };
    assert_eq!(to, sa(S2));
    r.handle_tcp_error(t0 + SECS(6), tcp2);
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp2 }));
    let Some(Transmit::TcpQuery { to, id: tcp3, .. }) = r.poll_transmit() else {
        panic!()
    };
    assert_eq!(to, sa(S1));
    r.handle_tcp_response(t0 + SECS(6), tcp3, b"\x00\x01garbage");
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp3 }));
    let Some(Transmit::TcpQuery {
        id: tcp4, bytes, ..
    }) = r.poll_transmit()
    else {
        panic!()
    };
    // A late reply on a closed exchange is ignored.
    r.handle_tcp_response(t0 + SECS(6), tcp1, b"late");
    let (query, _) = wire::deframe_tcp(&bytes).unwrap();
    let answer = reply(
        query,
        RCODE::NoError,
        &[Rr::A("big.example.org", 60, [192, 0, 2, 5])],
        &[],
    );
    r.handle_tcp_response(t0 + SECS(6), tcp4, &answer);
    assert_eq!(
        answers(&mut r),
        vec![(id, Ok(vec![a("big.example.org", 60, [192, 0, 2, 5])]))]
    );
}

#[test]
fn waiting_identical_lookups_share_one_query() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id1 = r.lookup(now, "example.org", RecordType::A).unwrap();
    let id2 = r.lookup(now, "example.org.", RecordType::A).unwrap();
    let id3 = r.lookup(now, "example.org", RecordType::Aaaa).unwrap();
    assert_ne!(id1, id2);
    let (_, q) = udp(&mut r);
    let (_, q3) = udp(&mut r);
    assert_eq!(r.poll_transmit(), None, "one query per distinct question");
    r.handle_udp(
        now,
        sa(S1),
        &reply(
            &q,
            RCODE::NoError,
            &[Rr::A("example.org", 60, [192, 0, 2, 1])],
            &[],
        ),
    );
    let rec = vec![a("example.org", 60, [192, 0, 2, 1])];
    assert_eq!(
        answers(&mut r),
        vec![(id1, Ok(rec.clone())), (id2, Ok(rec))]
    );
    r.handle_udp(now, sa(S1), &reply(&q3, RCODE::NoError, &[], &[]));
    assert_eq!(answers(&mut r), vec![(id3, Ok(vec![]))]);
}

#[test]
fn full_lookup_fails_with_too_many_lookups() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    for i in 0..8 {
        r.lookup(now, &format!("h{i}.example.org"), RecordType::A)
            .unwrap();
    }
    assert_eq!(
        r.lookup(now, "one-more.example.org", RecordType::A),
        Err(DnsError::TooManyLookups)
    );
    // Unpolled answers count too: an IP literal answered at once is still pending.
    assert_eq!(
        r.lookup(now, "192.0.2.1", RecordType::A),
        Err(DnsError::TooManyLookups)
    );
}

#[test]
fn idle_bad_input_fails_at_once() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    assert_eq!(
        r.lookup(now, "bad name.org", RecordType::A),
        Err(DnsError::InvalidName)
    );
    let mut none = Resolver::new(config(&[]), seeded_random(1));
    assert_eq!(
        none.lookup(now, "example.org", RecordType::A),
        Err(DnsError::NoNameservers)
    );
}

#[test]
fn idle_ip_literal_is_answered_as_itself() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let v4 = r.lookup(now, "192.0.2.44", RecordType::A).unwrap();
    let v4_aaaa = r.lookup(now, "192.0.2.44", RecordType::Aaaa).unwrap();
    let v6 = r.lookup(now, "[2001:db8::1]", RecordType::Aaaa).unwrap();
    assert_eq!(r.poll_transmit(), None);
    let got = answers(&mut r);
    assert_eq!(got[0], (v4, Ok(vec![a("192.0.2.44", 0, [192, 0, 2, 44])])));
    assert_eq!(got[1], (v4_aaaa, Ok(vec![])));
    assert_eq!(got[2].0, v6);
    assert!(
        matches!(&got[2].1, Ok(v) if v[0].data == RecordData::Aaaa("2001:db8::1".parse().unwrap()))
    );
}

#[test]
fn waiting_dangling_cname_asks_for_the_target() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id = r
        .lookup(now, "alias.example.org", RecordType::Aaaa)
        .unwrap();
    let (_, q) = udp(&mut r);
    r.handle_udp(
        now,
        sa(S1),
        &reply(
            &q,
            RCODE::NoError,
            &[Rr::Cname("alias.example.org", 40, "real.example.net")],
            &[],
        ),
    );
    let (_, q2) = udp(&mut r);
    assert_eq!(question_of(&q2), ("real.example.net".into(), 28));
    r.handle_udp(
        now,
        sa(S1),
        &reply(
            &q2,
            RCODE::NoError,
            &[Rr::Aaaa("real.example.net", 300, "2001:db8::9")],
            &[],
        ),
    );
    let got = answers(&mut r);
    let Ok(records) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(got[0].0, id);
    assert_eq!(records[0].ttl, 40, "the chain's smallest TTL");
    assert_eq!(records[0].name, "real.example.net");
    // Cached under the name asked.
    r.lookup(now, "alias.example.org", RecordType::Aaaa)
        .unwrap();
    assert_eq!(r.poll_transmit(), None);
}

#[test]
fn waiting_cname_loop_across_queries_ends_in_error() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id = r.lookup(now, "n0.example.org", RecordType::A).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("n{i}.example.org")).collect();
    // Each query is answered by one dangling link; the ninth link is refused.
    for i in 0..9 {
        let (_, q) = udp(&mut r);
        assert_eq!(question_of(&q).0, names[i]);
        r.handle_udp(
            now,
            sa(S1),
            &reply(
                &q,
                RCODE::NoError,
                &[Rr::Cname(&names[i], 60, &names[i + 1])],
                &[],
            ),
        );
    }
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(
        answers(&mut r),
        vec![(id, Err(DnsError::CnameChainTooLong))]
    );
}

#[test]
fn idle_rotate_starts_each_query_at_the_next_server() {
    let mut cfg = config(&[S1, S2, S3]);
    cfg.rotate = true;
    let mut r = Resolver::new(cfg, seeded_random(3));
    let now = Instant::now();
    let mut firsts = Vec::new();
    for i in 0..4 {
        r.lookup(now, &format!("h{i}.example.org"), RecordType::A)
            .unwrap();
        firsts.push(udp(&mut r).0);
    }
    assert_eq!(firsts, vec![sa(S1), sa(S2), sa(S3), sa(S1)]);
}

#[test]
fn waiting_every_truncated_reply_is_ignored_without_panic() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id = r
        .lookup(now, "_xmpp-server._tcp.example.org", RecordType::Srv)
        .unwrap();
    let (_, q) = udp(&mut r);
    let full = reply(
        &q,
        RCODE::NoError,
        &[
            Rr::Srv(
                "_xmpp-server._tcp.example.org",
                60,
                0,
                5,
                5269,
                "a.example.org",
            ),
            Rr::Srv(
                "_xmpp-server._tcp.example.org",
                60,
                1,
                5,
                5269,
                "b.example.org",
            ),
        ],
        &[Rr::Soa("example.org", 60, 60)],
    );
    for len in 0..full.len() {
        r.handle_udp(now, sa(S1), &full[..len]);
        assert!(answers(&mut r).is_empty(), "len {len}");
        assert_eq!(r.poll_transmit(), None, "len {len}");
    }
    r.handle_udp(now, sa(S1), &full);
    let got = answers(&mut r);
    assert_eq!(got[0].0, id);
    assert!(matches!(&got[0].1, Ok(v) if v.len() == 2));
}

#[test]
fn waiting_huge_count_header_is_ignored() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    r.lookup(now, "example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    let mut hostile = q[..12].to_vec();
    hostile[2] = 0x81;
    hostile[3] = 0x80;
    hostile[6] = 0xff;
    hostile[7] = 0xff;
    r.handle_udp(now, sa(S1), &hostile);
    assert!(answers(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), Some(now + SECS(5)), "still waiting");
}

#[test]
fn waiting_cancel_drops_the_answer_and_the_query() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id1 = r.lookup(now, "example.org", RecordType::A).unwrap();
    let id2 = r.lookup(now, "example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    r.cancel(id1);
    r.handle_udp(now, sa(S1), &reply(&q, RCODE::NoError, &[], &[]));
    assert_eq!(answers(&mut r), vec![(id2, Ok(vec![]))]);
    let id3 = r.lookup(now, "other.org", RecordType::A).unwrap();
    udp(&mut r);
    r.cancel(id3);
    assert_eq!(r.poll_timeout(), None, "nobody waits: the query is dropped");
    assert_eq!(r.pending(), 0);
}

/// A response as captured, with fixed ID 0x4a21: the random source is made to produce it.
#[test]
fn waiting_recorded_srv_packet_with_pointers_is_answered() {
    let recorded: &[u8] = &[
        0x4a, 0x21, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, //
        0x0d, b'_', b'x', b'm', b'p', b'p', b's', b'-', b's', b'e', b'r', b'v', b'e', b'r', //
        0x04, b'_', b't', b'c', b'p', 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', //
        0x03, b'o', b'r', b'g', 0x00, 0x00, 0x21, 0x00, 0x01, //
        0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x0c, //
        0x00, 0x00, 0x00, 0x00, 0x14, 0x7f, 0x03, b'x', b'm', b'p', 0xc0, 0x1f,
    ];
    let fixed: RandomFill = Box::new(|buf: &mut [u8]| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0x4a } else { 0x21 };
        }
    });
    let mut r = Resolver::new(config(&[S1]), fixed);
    let now = Instant::now();
    let id = r
        .lookup(now, "_xmpps-server._tcp.example.org", RecordType::Srv)
        .unwrap();
    let (_, q) = udp(&mut r);
    assert_eq!(&q[..2], &[0x4a, 0x21]);
    r.handle_udp(now, sa(S1), recorded);
    assert_eq!(
        answers(&mut r),
        vec![(
            id,
            Ok(vec![Record {
                name: "_xmpps-server._tcp.example.org".into(),
                ttl: 3600,
                data: RecordData::Srv(wire::Srv {
                    priority: 0,
                    weight: 0,
                    port: 5247,
                    target: "xmp.example.org".into()
                })
            }])
        )]
    );
}

#[test]
fn tcp_reply_still_truncated_fails_the_try() {
    let mut r = resolver(&[S1]);
    let now = Instant::now();
    let id = r.lookup(now, "huge.example.org", RecordType::A).unwrap();
    let (_, q) = udp(&mut r);
    r.handle_udp(now, sa(S1), &reply_with(&q, RCODE::NoError, true, &[], &[]));
    let Some(Transmit::TcpQuery { id: tcp, bytes, .. }) = r.poll_transmit() else {
        panic!()
    };
    let (query, _) = wire::deframe_tcp(&bytes).unwrap();
    r.handle_tcp_response(now, tcp, &reply_with(query, RCODE::NoError, true, &[], &[]));
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp }));
    // Second attempt (attempts 2 × 1 server), still over TCP.
    let Some(Transmit::TcpQuery { id: tcp2, .. }) = r.poll_transmit() else {
        panic!()
    };
    r.handle_tcp_error(now, tcp2);
    assert_eq!(r.poll_transmit(), Some(Transmit::TcpClose { id: tcp2 }));
    assert_eq!(answers(&mut r), vec![(id, Err(DnsError::ServerFailure))]);
}

#[test]
fn idle_config_from_resolv_conf_with_override() {
    let conf = crate::dns::resolv_conf::parse(
        "nameserver 192.0.2.1\noptions timeout:2 attempts:3 rotate\n",
    );
    let cfg = ResolverConfig::from_resolv_conf(&conf);
    assert_eq!(cfg.nameservers, vec![sa(S1)]);
    assert_eq!((cfg.timeout, cfg.attempts, cfg.rotate), (SECS(2), 3, true));
    let cfg = cfg.with_nameservers(vec![sa("127.0.0.1:5353")]);
    let mut r = Resolver::new(cfg, seeded_random(1));
    let now = Instant::now();
    r.lookup(now, "example.org", RecordType::A).unwrap();
    assert_eq!(udp(&mut r).0, sa("127.0.0.1:5353"));
    assert_eq!(r.poll_timeout(), Some(now + SECS(2)));
}

#[test]
fn idle_zero_timeout_is_raised_to_the_minimum() {
    let mut cfg = config(&[S1]);
    cfg.timeout = Duration::ZERO;
    let mut r = Resolver::new(cfg, seeded_random(1));
    let now = Instant::now();
    r.lookup(now, "example.org", RecordType::A).unwrap();
    assert_eq!(r.poll_timeout(), Some(now + MIN_TIMEOUT));
}
