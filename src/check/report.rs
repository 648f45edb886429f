//! What `hearth check dns` found, and the report in plain words.
//!
//! Owns: the findings (SRV answers, the order a remote server tries the candidates, each
//! target's addresses and probe results, and for a hosted domain the listeners from the config)
//! and turning them into text and a verdict. No I/O here: the findings are built by
//! [`super::run`] from the network, and by tests from lists.
//!
//! The order of candidates is federation's own ([`order_candidates`]): priority, RFC 2782
//! weighted random choice within a priority, direct TLS first on ties; no SRV at all means
//! the domain itself on port 5269; a `.` target means "not offered" (no fallback).

use super::cert::CertSummary;
use super::probe::{CertVerdict, Probe};
use crate::dns::srv::{Candidate, DEFAULT_S2S_PORT, XMPP_SERVER, XMPPS_SERVER, order_candidates};
use crate::dns::{DnsError, Record, RecordData, Srv};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// RFC 6120 client service label.
pub const XMPP_CLIENT: &str = "_xmpp-client._tcp.";
/// XEP-0368 direct TLS client service label.
pub const XMPPS_CLIENT: &str = "_xmpps-client._tcp.";
/// The client port clients use without SRV records (RFC 6120 §3.2.2 by analogy).
pub const DEFAULT_C2S_PORT: u16 = 5222;

/// What one SRV lookup said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvLookup {
    /// Usable records (a `.` among others is dropped by the ordering).
    Records(Vec<Srv>),
    /// The single target `.`: the service is explicitly not offered.
    NotOffered,
    /// NXDOMAIN.
    NxDomain,
    /// The name exists but has no SRV records (NODATA).
    NoRecords,
    Failed(DnsError),
}

impl SrvLookup {
    pub fn from_answer(result: &Result<Vec<Record>, DnsError>) -> SrvLookup {
        let records = match result {
            Ok(r) => r,
            Err(DnsError::NxDomain) => return SrvLookup::NxDomain,
            Err(e) => return SrvLookup::Failed(*e),
        };
        let srvs: Vec<Srv> = records
            .iter()
            .filter_map(|r| match &r.data {
                RecordData::Srv(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        if srvs.is_empty() {
            SrvLookup::NoRecords
        } else if srvs.iter().all(Srv::is_root_target) {
            SrvLookup::NotOffered
        } else {
            SrvLookup::Records(srvs)
        }
    }

    fn records(&self) -> &[Srv] {
        match self {
            SrvLookup::Records(r) => r,
            _ => &[],
        }
    }
}

/// What a remote server will do, from the two SRV answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try these, in this order.
    Srv(Vec<Candidate>),
    /// No SRV records: the domain itself on port 5269 with STARTTLS.
    Fallback(Candidate),
    /// A `.` target and nothing else: give up at once.
    NotOffered,
    /// The STARTTLS lookup failed: nothing can be decided.
    DnsFailed(DnsError),
}

/// The same decision as federation's [`SrvResolution`](crate::dns::SrvResolution).
pub fn plan(
    domain: &str,
    direct: &SrvLookup,
    starttls: &SrvLookup,
    random: &mut dyn FnMut(&mut [u8]),
) -> Plan {
    let mut records = Vec::new();
    for (lookup, is_direct) in [(direct, true), (starttls, false)] {
        records.extend(lookup.records().iter().cloned().map(|s| (s, is_direct)));
    }
    let candidates = order_candidates(records, random);
    if !candidates.is_empty() {
        return Plan::Srv(candidates);
    }
    if *direct == SrvLookup::NotOffered || *starttls == SrvLookup::NotOffered {
        return Plan::NotOffered;
    }
    if let SrvLookup::Failed(e) = starttls {
        return Plan::DnsFailed(*e);
    }
    Plan::Fallback(Candidate {
        host: domain.to_owned(),
        port: DEFAULT_S2S_PORT,
        direct_tls: false,
    })
}

/// One candidate's addresses and what each did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub candidate: Candidate,
    /// Where a CNAME chain led, if the addresses belong to another name.
    pub canonical: Option<String>,
    /// Probed addresses in the order tried, or why there are none.
    pub addresses: Result<Vec<(SocketAddr, Probe)>, DnsError>,
    /// Addresses beyond the limit, not probed.
    pub omitted: usize,
}

/// A domain we host: our listeners and the client records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    pub s2s_enabled: bool,
    pub s2s_listen: Vec<SocketAddr>,
    pub s2s_listen_tls: Vec<SocketAddr>,
    pub c2s_listen: Vec<SocketAddr>,
    pub c2s_listen_tls: Vec<SocketAddr>,
    pub client: SrvLookup,
    pub client_tls: SrvLookup,
}

/// Everything found for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Lowercase, no trailing dot.
    pub domain: String,
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    /// `_xmpps-server._tcp` (direct TLS).
    pub direct: SrvLookup,
    /// `_xmpp-server._tcp` (STARTTLS).
    pub starttls: SrvLookup,
    pub plan: Plan,
    /// The candidates of the plan in order, with their probes.
    pub targets: Vec<Target>,
    /// Candidates beyond the limit, not probed.
    pub targets_omitted: usize,
    /// Where the trusted roots came from, and whether any loaded.
    pub roots: String,
    pub hosted: Option<Hosted>,
}

/// The text to print and whether a remote server could reach the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub reachable: bool,
}

/// Builds the report.
pub fn render(f: &Findings) -> Report {
    let mut out = String::new();
    let d = &f.domain;
    let servers: Vec<String> = f.nameservers.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "DNS check for {d}");
    let _ = writeln!(out, "Nameservers: {}", servers.join(", "));
    let _ = writeln!(out, "Trusted roots: {}", f.roots);
    let _ = writeln!(out);
    let _ = writeln!(out, "SRV records");
    srv_section(
        &mut out,
        &format!("{XMPPS_SERVER}{d}"),
        "direct TLS, XEP-0368",
        &f.direct,
    );
    srv_section(
        &mut out,
        &format!("{XMPP_SERVER}{d}"),
        "STARTTLS",
        &f.starttls,
    );
    let _ = writeln!(out);

    let mut problems: Vec<String> = Vec::new();
    match &f.plan {
        Plan::Srv(candidates) => {
            let _ = writeln!(out, "What a remote server tries, in order");
            if has_random_order(candidates, &f.direct, &f.starttls) {
                let _ = writeln!(
                    out,
                    "(by priority; records of equal priority are drawn at random by weight on \
                     every attempt, so their order here is one of the possible ones; direct TLS \
                     goes first on ties)"
                );
            } else {
                let _ = writeln!(
                    out,
                    "(by priority; one record per priority here, so this order is always the same)"
                );
            }
        }
        Plan::Fallback(_) => {
            let _ = writeln!(out, "What a remote server tries");
            let _ = writeln!(
                out,
                "(no SRV records: remote servers fall back to the domain's own A/AAAA \
                 addresses on port {DEFAULT_S2S_PORT}, STARTTLS)"
            );
        }
        Plan::NotOffered => {
            let which = if f.starttls == SrvLookup::NotOffered {
                format!("{XMPP_SERVER}{d}")
            } else {
                format!("{XMPPS_SERVER}{d}")
            };
            let _ = writeln!(out, "What a remote server tries: nothing");
            problems.push(format!(
                "{which} has the target \".\": the domain says it explicitly offers no \
                 server-to-server service, so remote servers give up at once \
                 (remote-server-not-found). Remove that record if {d} should receive messages \
                 from other servers."
            ));
        }
        Plan::DnsFailed(e) => {
            let _ = writeln!(out, "What a remote server tries: nothing");
            problems.push(format!(
                "The lookup of {XMPP_SERVER}{d} failed ({e}): remote servers cannot tell \
                 whether {d} has a server, and give up."
            ));
        }
    }
    for (i, t) in f.targets.iter().enumerate() {
        let fallback = matches!(f.plan, Plan::Fallback(_));
        target_section(&mut out, i + 1, d, t, fallback, &mut problems);
    }
    if f.targets_omitted > 0 {
        let _ = writeln!(
            out,
            "  ({} more candidates not checked: remote servers rarely get that far)",
            f.targets_omitted
        );
    }
    if let Plan::Srv(_) = f.plan {
        if f.direct == SrvLookup::NotOffered {
            let _ = writeln!(
                out,
                "Note: {XMPPS_SERVER}{d} has the target \".\": direct TLS is explicitly not \
                 offered."
            );
        }
        if f.starttls == SrvLookup::NotOffered {
            let _ = writeln!(
                out,
                "Note: {XMPP_SERVER}{d} has the target \".\": STARTTLS is explicitly not \
                 offered."
            );
        }
    }

    let first_good = f.targets.iter().find_map(|t| {
        t.addresses.as_ref().ok().and_then(|list| {
            list.iter()
                .find(|(_, p)| p.is_good())
                .map(|(a, _)| (*a, t.candidate.direct_tls))
        })
    });
    let some_tls = f.targets.iter().any(|t| {
        t.addresses
            .as_ref()
            .is_ok_and(|l| l.iter().any(|(_, p)| matches!(p, Probe::Tls { .. })))
    });

    if let Some(h) = &f.hosted {
        hosted_section(&mut out, f, h);
    }

    dedup(&mut problems);
    let _ = writeln!(out);
    if problems.is_empty() {
        let _ = writeln!(out, "Problems: none found");
    } else {
        let _ = writeln!(out, "Problems");
        for p in &problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    let _ = writeln!(out);
    match first_good {
        Some((addr, direct)) => {
            let _ = writeln!(
                out,
                "Result: a remote server can reach {d} (first at {addr}, {}).",
                mode(direct)
            );
        }
        None if some_tls => {
            let _ = writeln!(
                out,
                "Result: a remote server cannot reach {d} with a valid certificate. Servers \
                 that accept server dialback without one may still connect."
            );
        }
        None => {
            let _ = writeln!(out, "Result: a remote server cannot reach {d}.");
        }
    }
    Report {
        text: out,
        reachable: first_good.is_some(),
    }
}

fn mode(direct_tls: bool) -> &'static str {
    if direct_tls { "direct TLS" } else { "STARTTLS" }
}

/// True when some priority holds more than one record: their order is drawn at random.
fn has_random_order(candidates: &[Candidate], direct: &SrvLookup, starttls: &SrvLookup) -> bool {
    let mut priorities: Vec<u16> = direct
        .records()
        .iter()
        .chain(starttls.records())
        .filter(|s| !s.is_root_target())
        .map(|s| s.priority)
        .collect();
    priorities.sort_unstable();
    candidates.len() > 1 && priorities.windows(2).any(|w| w.first() == w.get(1))
}

fn srv_section(out: &mut String, name: &str, what: &str, lookup: &SrvLookup) {
    let _ = writeln!(out, "  {name} ({what})");
    match lookup {
        SrvLookup::Records(srvs) => {
            let mut srvs = srvs.clone();
            srvs.sort_by_key(|s| (s.priority, s.weight, s.port));
            for s in srvs {
                let target = if s.is_root_target() {
                    ".".to_owned()
                } else {
                    format!("{}.", s.target)
                };
                let _ = writeln!(
                    out,
                    "    priority {} weight {} port {} target {target}",
                    s.priority, s.weight, s.port
                );
            }
        }
        SrvLookup::NotOffered => {
            let _ = writeln!(out, "    target \".\": service explicitly not offered");
        }
        SrvLookup::NxDomain => {
            let _ = writeln!(out, "    none (NXDOMAIN: the name does not exist)");
        }
        SrvLookup::NoRecords => {
            let _ = writeln!(out, "    none (the name exists but has no SRV records)");
        }
        SrvLookup::Failed(e) => {
            let _ = writeln!(out, "    lookup failed: {e}");
        }
    }
}

fn target_section(
    out: &mut String,
    n: usize,
    domain: &str,
    t: &Target,
    fallback: bool,
    problems: &mut Vec<String>,
) {
    let c = &t.candidate;
    let host = c.host.as_str();
    let _ = writeln!(out, "  {n}. {host} port {}, {}", c.port, mode(c.direct_tls));
    if let Some(canonical) = &t.canonical {
        let _ = writeln!(out, "       (CNAME followed to {canonical})");
    }
    let list = match &t.addresses {
        Ok(list) => list,
        Err(e) => {
            let _ = writeln!(out, "       no addresses: {}", address_error(*e));
            problems.push(if fallback {
                match e {
                    DnsError::NxDomain | DnsError::NoAddresses => format!(
                        "{domain} has no SRV records and no A/AAAA records ({}): remote servers \
                         cannot find a server for it. Add {XMPP_SERVER}{domain} SRV records \
                         (or A/AAAA records for {domain}, used on port {DEFAULT_S2S_PORT}).",
                        address_error(*e)
                    ),
                    _ => format!("The addresses of {domain} could not be looked up ({e})."),
                }
            } else {
                format!(
                    "The SRV target {host} has no usable address ({}): the records pointing at \
                     it lead nowhere.",
                    address_error(*e)
                )
            });
            return;
        }
    };
    for (addr, probe) in list {
        let _ = writeln!(out, "       {addr}: {}", probe_line(domain, probe));
        if let Some(p) = problem(domain, host, *addr, probe) {
            problems.push(p);
        }
    }
    if t.omitted > 0 {
        let _ = writeln!(out, "       ({} more addresses not checked)", t.omitted);
    }
}

fn address_error(e: DnsError) -> String {
    match e {
        DnsError::NxDomain => "NXDOMAIN, the name does not exist".to_owned(),
        DnsError::NoAddresses => "the name exists but has no A or AAAA record".to_owned(),
        other => other.to_string(),
    }
}

fn names(cert: &CertSummary) -> String {
    if cert.names.is_empty() {
        return "no name at all".to_owned();
    }
    let list = cert.names.join(", ");
    if cert.names_from_cn {
        format!("{list} (subject CN only, no subjectAltName)")
    } else {
        list
    }
}

fn probe_line(domain: &str, p: &Probe) -> String {
    match p {
        Probe::Refused => "connection refused (port closed)".to_owned(),
        Probe::ConnectTimeout => "no answer to the connection (timeout)".to_owned(),
        Probe::ConnectFailed(e) => format!("cannot connect: {e}"),
        Probe::StreamFailed(why) => format!("connected; XMPP stream failed: {why}"),
        Probe::TlsFailed(why) => format!("connected; TLS failed: {why}"),
        Probe::Tls {
            version,
            alpn,
            verdict,
            cert,
        } => {
            let alpn = alpn
                .as_ref()
                .map(|a| format!(", ALPN {a}"))
                .unwrap_or_default();
            let cert_text = match verdict {
                CertVerdict::Valid => format!("certificate valid for {domain}"),
                CertVerdict::WrongName => format!("certificate NOT for {domain}: {}", names(cert)),
                CertVerdict::Expired => format!(
                    "certificate EXPIRED{}",
                    cert.not_after
                        .as_ref()
                        .map(|t| format!(" on {t}"))
                        .unwrap_or_default()
                ),
                CertVerdict::NotValidYet => "certificate NOT valid yet".to_owned(),
                CertVerdict::Untrusted => format!(
                    "certificate UNTRUSTED{} ({})",
                    if cert.self_signed {
                        ", self-signed"
                    } else {
                        ""
                    },
                    names(cert)
                ),
                CertVerdict::NoRoots => format!("certificate not checked ({})", names(cert)),
                CertVerdict::Invalid(why) => format!("certificate invalid: {why}"),
            };
            format!("connected; {version}{alpn}; {cert_text}")
        }
    }
}

/// The problem with one probed address, in plain words.
fn problem(domain: &str, host: &str, addr: SocketAddr, p: &Probe) -> Option<String> {
    let port = addr.port();
    Some(match p {
        Probe::Refused => format!(
            "{addr} refuses connections: nothing listens on port {port} there (or a firewall \
             rejects them). Check that the server listens on that port and address."
        ),
        Probe::ConnectTimeout => format!(
            "{addr} does not answer connection attempts (a firewall dropping packets, or the \
             host is down)."
        ),
        Probe::ConnectFailed(e) if addr.is_ipv6() => format!(
            "Cannot connect to {addr}: {e}. If this machine has no IPv6 route, that says nothing \
             about the domain; servers with IPv6 will try it."
        ),
        Probe::ConnectFailed(e) => format!("Cannot connect to {addr}: {e}."),
        Probe::StreamFailed(why) => {
            format!("{addr} accepts connections but the XMPP stream failed: {why}.")
        }
        Probe::TlsFailed(why) => format!("TLS with {addr} failed: {why}."),
        Probe::Tls { verdict, cert, .. } => match verdict {
            CertVerdict::Valid => return None,
            CertVerdict::WrongName => {
                let mut s = format!(
                    "The certificate at {addr} is for {}, not for {domain}. It must name the \
                     XMPP domain {domain} itself (RFC 6125)",
                    names(cert)
                );
                if host != domain {
                    let _ = write!(s, ", not the SRV target {host}");
                }
                s.push('.');
                s
            }
            CertVerdict::Expired => format!(
                "The certificate at {addr} ({}) has expired{}: renew it.",
                names(cert),
                cert.not_after
                    .as_ref()
                    .map(|t| format!(" (not after {t})"))
                    .unwrap_or_default()
            ),
            CertVerdict::NotValidYet => format!(
                "The certificate at {addr} is not valid yet: check the clocks of both machines."
            ),
            CertVerdict::Untrusted => format!(
                "The certificate at {addr} ({}) is not signed by a trusted authority{}. Servers \
                 that require valid certificates refuse it. Use one from a public CA (such as \
                 Let's Encrypt), or pass --ca-file if your own CA issued it.",
                names(cert),
                if cert.self_signed {
                    ": it is self-signed"
                } else {
                    " (or an intermediate certificate is missing from the chain)"
                }
            ),
            CertVerdict::NoRoots => {
                "No trusted root certificate could be loaded, so no certificate could be \
                 checked: pass --ca-file."
                    .to_owned()
            }
            CertVerdict::Invalid(why) => {
                format!("The certificate at {addr} is not valid: {why}.")
            }
        },
    })
}

fn dedup(list: &mut Vec<String>) {
    let mut seen: Vec<String> = Vec::with_capacity(list.len());
    list.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
}

/// One service of ours against its DNS record.
struct Service<'a> {
    label: &'static str,
    lookup: &'a SrvLookup,
    listeners: &'a [SocketAddr],
    setting: &'static str,
    /// The port used without a record (none for direct TLS).
    default_port: Option<u16>,
    who: &'static str,
}

fn hosted_section(out: &mut String, f: &Findings, h: &Hosted) {
    let d = &f.domain;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{d} is hosted here: records others need to reach us (ports from the config)"
    );
    let mut lines: Vec<String> = Vec::new();
    let mut zone: Vec<String> = Vec::new();
    // The same host usually serves clients and servers: a record of one kind names the
    // target for the other's sample lines.
    let server_records = first_target(&[&f.direct, &f.starttls]);
    let client_records = first_target(&[&h.client_tls, &h.client]);
    let server_target = server_records.or(client_records).unwrap_or(d.as_str());
    let client_target = client_records.or(server_records).unwrap_or(d.as_str());
    let mut services = Vec::new();
    if h.s2s_enabled {
        services.push((
            Service {
                label: XMPP_SERVER,
                lookup: &f.starttls,
                listeners: &h.s2s_listen,
                setting: "[s2s] listen",
                default_port: Some(DEFAULT_S2S_PORT),
                who: "servers",
            },
            server_target,
        ));
        services.push((
            Service {
                label: XMPPS_SERVER,
                lookup: &f.direct,
                listeners: &h.s2s_listen_tls,
                setting: "[s2s] listen_tls",
                default_port: None,
                who: "servers",
            },
            server_target,
        ));
    } else {
        lines.push(
            "Federation is off in this config ([s2s] is not enabled): remote servers cannot \
             reach us whatever the DNS says."
                .to_owned(),
        );
    }
    services.push((
        Service {
            label: XMPP_CLIENT,
            lookup: &h.client,
            listeners: &h.c2s_listen,
            setting: "[c2s] listen",
            default_port: Some(DEFAULT_C2S_PORT),
            who: "clients",
        },
        client_target,
    ));
    services.push((
        Service {
            label: XMPPS_CLIENT,
            lookup: &h.client_tls,
            listeners: &h.c2s_listen_tls,
            setting: "[c2s] listen_tls",
            default_port: None,
            who: "clients",
        },
        client_target,
    ));
    for (s, target) in &services {
        check_service(d, s, target, &mut lines, &mut zone);
    }
    for l in &lines {
        let _ = writeln!(out, "  - {l}");
    }
    if !zone.is_empty() {
        let _ = writeln!(
            out,
            "Records to add to the {d} zone (put your server's host name as the target if it \
             is not the one shown):"
        );
        for z in &zone {
            let _ = writeln!(out, "    {z}");
        }
    }
}

fn first_target<'a>(lookups: &[&'a SrvLookup]) -> Option<&'a str> {
    lookups
        .iter()
        .flat_map(|l| l.records())
        .find(|s| !s.is_root_target())
        .map(|s| s.target.as_str())
}

fn ports(listeners: &[SocketAddr]) -> Vec<u16> {
    let mut p: Vec<u16> = listeners.iter().map(SocketAddr::port).collect();
    p.sort_unstable();
    p.dedup();
    p
}

fn port_list(p: &[u16]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_service(
    d: &str,
    s: &Service<'_>,
    target: &str,
    lines: &mut Vec<String>,
    zone: &mut Vec<String>,
) {
    let name = format!("{}{d}", s.label);
    let ours = ports(s.listeners);
    let sample = |port: u16| format!("{name}. 3600 IN SRV 0 5 {port} {target}.");
    if !s.listeners.is_empty() && s.listeners.iter().all(|a| a.ip().is_loopback()) {
        lines.push(format!(
            "{} listens on loopback only ({}): {} on other machines cannot connect.",
            s.setting,
            s.listeners
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            s.who
        ));
    }
    match s.lookup {
        SrvLookup::Records(srvs) => {
            for srv in srvs.iter().filter(|r| !r.is_root_target()) {
                if ours.contains(&srv.port) {
                    lines.push(format!(
                        "ok: {name} points at port {}, where {} listens.",
                        srv.port, s.setting
                    ));
                } else if ours.is_empty() {
                    lines.push(format!(
                        "{name} points at port {}, but {} is empty: nothing of ours listens \
                         there.",
                        srv.port, s.setting
                    ));
                } else {
                    lines.push(format!(
                        "{name} points at port {}, but {} is on port {}: {} following the \
                         record will not find us.",
                        srv.port,
                        s.setting,
                        port_list(&ours),
                        s.who
                    ));
                }
            }
        }
        SrvLookup::NotOffered if !ours.is_empty() => lines.push(format!(
            "{name} says \".\" (not offered), but {} is on port {}: {} will not use it.",
            s.setting,
            port_list(&ours),
            s.who
        )),
        SrvLookup::NotOffered => {}
        SrvLookup::Failed(e) => lines.push(format!("The lookup of {name} failed ({e}).")),
        SrvLookup::NxDomain | SrvLookup::NoRecords => {
            let Some(&first) = ours.first() else {
                return;
            };
            match s.default_port {
                Some(def) if ours.contains(&def) => {
                    lines.push(format!(
                        "{name} is missing: {} fall back to {d} port {def}, where {} listens; \
                         a record is still recommended.",
                        s.who, s.setting
                    ));
                    zone.push(sample(def));
                }
                Some(def) => {
                    lines.push(format!(
                        "{name} is missing: {} try {d} port {def}, but {} is on port {}.",
                        s.who,
                        s.setting,
                        port_list(&ours)
                    ));
                    zone.push(sample(first));
                }
                None => {
                    lines.push(format!(
                        "{name} is missing: {} will not find direct TLS on port {}.",
                        s.who,
                        port_list(&ours)
                    ));
                    zone.push(sample(first));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
