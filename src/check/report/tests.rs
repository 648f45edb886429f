use super::*;
use crate::check::cert::CertSummary;
use crate::check::probe::{CertVerdict, Probe};

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
    Srv {
        priority,
        weight,
        port,
        target: target.to_owned(),
    }
}

fn cand(host: &str, port: u16, direct_tls: bool) -> Candidate {
    Candidate {
        host: host.to_owned(),
        port,
        direct_tls,
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tls(verdict: CertVerdict, names: &[&str]) -> Probe {
    Probe::Tls {
        version: "TLS 1.3".to_owned(),
        alpn: None,
        verdict,
        cert: CertSummary {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            names_from_cn: false,
            not_after: Some("2030-01-01 00:00:00 UTC".to_owned()),
            self_signed: true,
        },
    }
}

/// A zero random source: with all weights 0 the order is fully determined.
fn zero(b: &mut [u8]) {
    b.fill(0);
}

fn findings(direct: SrvLookup, starttls: SrvLookup, targets: Vec<Target>) -> Findings {
    let plan = plan("example.org", &direct, &starttls, &mut zero);
    Findings {
        domain: "example.org".to_owned(),
        nameservers: vec![sa("192.0.2.53:53")],
        timeout: Duration::from_secs(5),
        direct,
        starttls,
        plan,
        targets,
        targets_omitted: 0,
        roots: "test".to_owned(),
        hosted: None,
    }
}

fn target(c: Candidate, probes: Vec<(&str, Probe)>) -> Target {
    Target {
        candidate: c,
        canonical: None,
        addresses: Ok(probes.into_iter().map(|(a, p)| (sa(a), p)).collect()),
        omitted: 0,
    }
}

#[test]
fn plan_equal_priority_puts_direct_tls_first() {
    let direct = SrvLookup::Records(vec![srv(0, 0, 5270, "b.example.org")]);
    let starttls = SrvLookup::Records(vec![srv(0, 0, 5269, "a.example.org")]);
    assert_eq!(
        plan("example.org", &direct, &starttls, &mut zero),
        Plan::Srv(vec![
            cand("b.example.org", 5270, true),
            cand("a.example.org", 5269, false)
        ])
    );
}

#[test]
fn plan_priority_beats_direct_tls() {
    let direct = SrvLookup::Records(vec![srv(10, 0, 5270, "b.example.org")]);
    let starttls = SrvLookup::Records(vec![srv(5, 0, 5269, "a.example.org")]);
    let Plan::Srv(c) = plan("example.org", &direct, &starttls, &mut zero) else {
        panic!("no candidates");
    };
    assert_eq!(c[0], cand("a.example.org", 5269, false));
}

#[test]
fn plan_no_srv_falls_back_dot_does_not_failure_stops() {
    assert_eq!(
        plan(
            "example.org",
            &SrvLookup::NxDomain,
            &SrvLookup::NoRecords,
            &mut zero
        ),
        Plan::Fallback(cand("example.org", 5269, false))
    );
    assert_eq!(
        plan(
            "example.org",
            &SrvLookup::NxDomain,
            &SrvLookup::NotOffered,
            &mut zero
        ),
        Plan::NotOffered
    );
    assert_eq!(
        plan(
            "example.org",
            &SrvLookup::NxDomain,
            &SrvLookup::Failed(DnsError::Timeout),
            &mut zero
        ),
        Plan::DnsFailed(DnsError::Timeout)
    );
}

#[test]
fn srv_lookup_from_answer_classifies() {
    let rec = |s: Srv| Record {
        name: "_xmpp-server._tcp.example.org".to_owned(),
        ttl: 60,
        data: RecordData::Srv(s),
    };
    assert_eq!(
        SrvLookup::from_answer(&Err(DnsError::NxDomain)),
        SrvLookup::NxDomain
    );
    assert_eq!(SrvLookup::from_answer(&Ok(vec![])), SrvLookup::NoRecords);
    assert_eq!(
        SrvLookup::from_answer(&Ok(vec![rec(srv(0, 0, 0, "."))])),
        SrvLookup::NotOffered
    );
    assert_eq!(
        SrvLookup::from_answer(&Err(DnsError::ServerFailure)),
        SrvLookup::Failed(DnsError::ServerFailure)
    );
}

#[test]
fn all_good_lists_in_order_and_is_reachable() {
    let direct = SrvLookup::Records(vec![srv(0, 0, 5270, "xmpp.example.org")]);
    let starttls = SrvLookup::Records(vec![srv(0, 0, 5269, "xmpp.example.org")]);
    let f = findings(
        direct,
        starttls,
        vec![
            target(
                cand("xmpp.example.org", 5270, true),
                vec![("192.0.2.1:5270", tls(CertVerdict::Valid, &["example.org"]))],
            ),
            target(
                cand("xmpp.example.org", 5269, false),
                vec![("192.0.2.1:5269", tls(CertVerdict::Valid, &["example.org"]))],
            ),
        ],
    );
    let r = render(&f);
    assert!(r.reachable, "{}", r.text);
    let first = r
        .text
        .find("1. xmpp.example.org port 5270, direct TLS")
        .unwrap();
    let second = r
        .text
        .find("2. xmpp.example.org port 5269, STARTTLS")
        .unwrap();
    assert!(first < second);
    assert!(r.text.contains("drawn at random by weight"), "{}", r.text);
    assert!(r.text.contains("certificate valid for example.org"));
    assert!(r.text.contains("Problems: none found"));
    assert!(r.text.contains(
        "Result: a remote server can reach example.org (first at 192.0.2.1:5270, direct TLS)."
    ));
}

#[test]
fn dot_target_is_not_offered_and_unreachable() {
    let f = findings(SrvLookup::NxDomain, SrvLookup::NotOffered, vec![]);
    let r = render(&f);
    assert!(!r.reachable);
    assert!(
        r.text.contains("service explicitly not offered"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(
            "_xmpp-server._tcp.example.org has the target \".\": the domain says it explicitly \
             offers no server-to-server service"
        ),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("Result: a remote server cannot reach example.org.")
    );
}

#[test]
fn nxdomain_everywhere_says_no_srv_and_no_address() {
    let mut f = findings(SrvLookup::NxDomain, SrvLookup::NxDomain, vec![]);
    f.targets = vec![Target {
        candidate: cand("example.org", 5269, false),
        canonical: None,
        addresses: Err(DnsError::NxDomain),
        omitted: 0,
    }];
    let r = render(&f);
    assert!(!r.reachable);
    assert!(
        r.text.contains("fall back to the domain's own A/AAAA"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("example.org has no SRV records and no A/AAAA records (NXDOMAIN"),
        "{}",
        r.text
    );
}

#[test]
fn srv_target_without_address_is_named() {
    let starttls = SrvLookup::Records(vec![srv(0, 0, 5269, "gone.example.org")]);
    let mut f = findings(SrvLookup::NxDomain, starttls, vec![]);
    f.targets = vec![Target {
        candidate: cand("gone.example.org", 5269, false),
        canonical: None,
        addresses: Err(DnsError::NoAddresses),
        omitted: 0,
    }];
    let r = render(&f);
    assert!(
        r.text
            .contains("The SRV target gone.example.org has no usable address"),
        "{}",
        r.text
    );
}

#[test]
fn closed_port_and_bad_certificates_are_explained() {
    let starttls = SrvLookup::Records(vec![
        srv(0, 0, 5269, "a.example.org"),
        srv(1, 0, 5269, "b.example.org"),
        srv(2, 0, 5269, "c.example.org"),
        srv(3, 0, 5269, "d.example.org"),
    ]);
    let f = findings(
        SrvLookup::NxDomain,
        starttls,
        vec![
            target(
                cand("a.example.org", 5269, false),
                vec![("192.0.2.1:5269", Probe::Refused)],
            ),
            target(
                cand("b.example.org", 5269, false),
                vec![(
                    "192.0.2.2:5269",
                    tls(CertVerdict::WrongName, &["b.example.org", "other.org"]),
                )],
            ),
            target(
                cand("c.example.org", 5269, false),
                vec![(
                    "192.0.2.3:5269",
                    tls(CertVerdict::Expired, &["example.org"]),
                )],
            ),
            target(
                cand("d.example.org", 5269, false),
                vec![(
                    "192.0.2.4:5269",
                    tls(CertVerdict::Untrusted, &["example.org"]),
                )],
            ),
        ],
    );
    let r = render(&f);
    assert!(!r.reachable);
    let t = &r.text;
    assert!(
        t.contains("(by priority; one record per priority here, so this order is always the same)"),
        "{t}"
    );
    assert!(
        t.contains("192.0.2.1:5269: connection refused (port closed)"),
        "{t}"
    );
    assert!(t.contains("192.0.2.1:5269 refuses connections: nothing listens on port 5269"));
    assert!(t.contains(
        "The certificate at 192.0.2.2:5269 is for b.example.org, other.org, not for \
         example.org. It must name the XMPP domain example.org itself (RFC 6125), not the SRV \
         target b.example.org."
    ));
    assert!(
        t.contains("has expired (not after 2030-01-01 00:00:00 UTC)"),
        "{t}"
    );
    assert!(
        t.contains("is not signed by a trusted authority: it is self-signed"),
        "{t}"
    );
    assert!(
        t.contains("cannot reach example.org with a valid certificate"),
        "{t}"
    );
}

#[test]
fn one_good_address_among_bad_is_reachable() {
    let starttls = SrvLookup::Records(vec![srv(0, 0, 5269, "a.example.org")]);
    let f = findings(
        SrvLookup::NxDomain,
        starttls,
        vec![target(
            cand("a.example.org", 5269, false),
            vec![
                ("[2001:db8::1]:5269", Probe::ConnectTimeout),
                ("192.0.2.1:5269", tls(CertVerdict::Valid, &["example.org"])),
            ],
        )],
    );
    let r = render(&f);
    assert!(r.reachable);
    assert!(
        r.text.contains("[2001:db8::1]:5269 does not answer"),
        "{}",
        r.text
    );
    assert!(r.text.contains("first at 192.0.2.1:5269, STARTTLS"));
}

fn hosted(client: SrvLookup, client_tls: SrvLookup) -> Hosted {
    Hosted {
        s2s_enabled: true,
        s2s_listen: vec![sa("[::]:5269")],
        s2s_listen_tls: vec![sa("[::]:5270")],
        c2s_listen: vec![sa("0.0.0.0:5322")],
        c2s_listen_tls: vec![sa("127.0.0.1:5223")],
        client,
        client_tls,
    }
}

#[test]
fn hosted_domain_records_checked_against_listeners() {
    let direct = SrvLookup::Records(vec![srv(0, 0, 5271, "xmpp.example.org")]);
    let starttls = SrvLookup::Records(vec![srv(0, 0, 5269, "xmpp.example.org")]);
    let mut f = findings(direct, starttls, vec![]);
    f.hosted = Some(hosted(SrvLookup::NxDomain, SrvLookup::NxDomain));
    let t = render(&f).text;
    assert!(
        t.contains(
            "ok: _xmpp-server._tcp.example.org points at port 5269, where [s2s] listen listens."
        ),
        "{t}"
    );
    assert!(
        t.contains(
            "_xmpps-server._tcp.example.org points at port 5271, but [s2s] listen_tls is on \
             port 5270"
        ),
        "{t}"
    );
    assert!(
        t.contains("_xmpp-client._tcp.example.org is missing: clients try example.org port 5222, but [c2s] listen is on port 5322."),
        "{t}"
    );
    assert!(
        t.contains("[c2s] listen_tls listens on loopback only (127.0.0.1:5223)"),
        "{t}"
    );
    assert!(
        t.contains("    _xmpp-client._tcp.example.org. 3600 IN SRV 0 5 5322 xmpp.example.org."),
        "{t}"
    );
    assert!(
        t.contains("    _xmpps-client._tcp.example.org. 3600 IN SRV 0 5 5223 xmpp.example.org."),
        "{t}"
    );
}

#[test]
fn hosted_domain_with_federation_off_says_so() {
    let mut f = findings(SrvLookup::NxDomain, SrvLookup::NxDomain, vec![]);
    let mut h = hosted(
        SrvLookup::Records(vec![srv(0, 0, 5322, "example.org")]),
        SrvLookup::NotOffered,
    );
    h.s2s_enabled = false;
    h.c2s_listen_tls = vec![];
    f.hosted = Some(h);
    let t = render(&f).text;
    assert!(t.contains("Federation is off in this config"), "{t}");
    assert!(
        t.contains("ok: _xmpp-client._tcp.example.org points at port 5322"),
        "{t}"
    );
    assert!(!t.contains("Records to add"), "{t}");
}
