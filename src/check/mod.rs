//! `hearth check dns DOMAIN`: what a remote server finds for DOMAIN, and what is wrong.
//!
//! Owns the operators' diagnosis command: its options, the lookups (`_xmpps-server._tcp` and
//! `_xmpp-server._tcp`, plus the client records for a domain we host), the order federation
//! tries the candidates in, each target's addresses, a probe of each address (TCP, then direct
//! TLS or STARTTLS, then the certificate for DOMAIN), and the report. The pieces:
//!
//! - [`driver`]: a blocking driver for the sans-IO resolver (UDP sockets with read timeouts);
//! - [`probe`]: TCP connect, stream negotiation, TLS handshake and certificate verdict;
//! - [`cert`]: names and expiry of a certificate, for the report;
//! - [`report`]: the findings and their text; no I/O, tested from built lists.
//!
//! Bounded: at most [`MAX_TARGETS`] candidates and [`MAX_ADDRESSES`] addresses per candidate
//! are probed, each probe and each DNS try ends at the timeout.
//!
//! Exit status: 0 when a remote server could reach the domain (some address completes TLS with
//! a certificate valid for it), 1 otherwise, 2 when the check cannot run (usage, config, CA
//! file, sockets).

pub mod cert;
pub mod driver;
pub mod probe;
pub mod report;

use crate::config::Config;
use crate::dns::resolver::RandomFill;
use crate::dns::srv::{XMPP_SERVER, XMPPS_SERVER, interleave};
use crate::dns::{DnsError, RecordData, RecordType, ResolvConf, ResolverConfig, wire};
use driver::BlockingResolver;
use probe::{Probe, Prober};
use report::{Findings, Hosted, Plan, SrvLookup, Target, XMPP_CLIENT, XMPPS_CLIENT};
use rustls::RootCertStore;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The system's trusted roots (Debian's ca-certificates bundle).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The system's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Candidates probed at most, in the order tried.
pub const MAX_TARGETS: usize = 8;
/// Addresses probed at most per candidate.
pub const MAX_ADDRESSES: usize = 4;
/// Default wait for each network step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `--timeout` accepted.
pub const MAX_TIMEOUT_SECS: u64 = 60;
/// `--nameserver` given at most this many times.
pub const MAX_NAMESERVERS: usize = 8;

/// Options of `check dns` that take a value.
pub const VALUE_OPTIONS: [&str; 3] = ["--nameserver", "--timeout", "--ca-file"];

/// `hearth check dns` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheckArgs {
    pub domain: String,
    /// `--nameserver`, in order; empty: the config's, else /etc/resolv.conf's.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// For the command line parser: if `arg` is one of [`VALUE_OPTIONS`], its name and the value
/// given inline (`--timeout=3`), if any.
pub fn value_option(arg: &str) -> Option<(&'static str, Option<String>)> {
    let (name, inline) = match arg.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (arg, None),
    };
    VALUE_OPTIONS
        .iter()
        .find(|o| **o == name)
        .map(|o| (*o, inline))
}

impl DnsCheckArgs {
    /// Builds the arguments from the domain and the (option, value) pairs collected.
    pub fn parse(domain: &str, options: &[(&'static str, String)]) -> Result<DnsCheckArgs, String> {
        let mut args = DnsCheckArgs {
            domain: domain.to_owned(),
            nameservers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
        };
        for (name, value) in options {
            match *name {
                "--nameserver" => {
                    let addr =
                        crate::dns::resolv_conf::parse_nameserver(value).ok_or_else(|| {
                            format!("--nameserver {value}: expected IP or IP:PORT ([IPv6]:PORT)")
                        })?;
                    if args.nameservers.len() >= MAX_NAMESERVERS {
                        return Err(format!(
                            "--nameserver given more than {MAX_NAMESERVERS} times"
                        ));
                    }
                    args.nameservers.push(addr);
                }
                "--timeout" => {
                    let secs: u64 = value
                        .parse()
                        .ok()
                        .filter(|s| (1..=MAX_TIMEOUT_SECS).contains(s))
                        .ok_or_else(|| {
                            format!("--timeout {value}: expected seconds, 1 to {MAX_TIMEOUT_SECS}")
                        })?;
                    args.timeout = Duration::from_secs(secs);
                }
                "--ca-file" => {
                    if value.is_empty() {
                        return Err("--ca-file needs a path".to_owned());
                    }
                    args.ca_file = Some(PathBuf::from(value));
                }
                other => return Err(format!("{other} is not an option of check dns")),
            }
        }
        Ok(args)
    }
}

/// The resolver settings: `cli` servers if any, else `configured` (`[dns] nameservers`), else
/// resolv.conf's; the per-try timeout is at most `timeout`.
pub fn resolver_config(
    cli: &[SocketAddr],
    configured: &[SocketAddr],
    resolv_conf: &ResolvConf,
    timeout: Duration,
) -> ResolverConfig {
    let mut config = ResolverConfig::from_resolv_conf(resolv_conf);
    if !cli.is_empty() {
        config = config.with_nameservers(cli.to_vec());
    } else if !configured.is_empty() {
        config = config.with_nameservers(configured.to_vec());
    }
    config.timeout = config.timeout.min(timeout);
    config
}

/// Runs the command; returns the exit status. Prints the report on standard output, errors
/// that stop the check on standard error.
pub fn main(config_path: Option<&Path>, args: &DnsCheckArgs) -> i32 {
    match run(config_path, args) {
        Ok(report) => {
            print!("{}", report.text);
            if report.reachable { 0 } else { 1 }
        }
        Err(msg) => {
            eprintln!("hearth: {msg}");
            2
        }
    }
}

/// Does the check and builds the report; `Err` when it cannot run.
pub fn run(config_path: Option<&Path>, args: &DnsCheckArgs) -> Result<report::Report, String> {
    let config = Config::discover(config_path).map_err(|e| e.to_string())?;
    let domain = wire::normalize_name(&args.domain)
        .map_err(|_| format!("{} is not a domain name", args.domain))?;
    let (roots, roots_text) = load_roots(args.ca_file.as_deref(), config.s2s.ca_file.as_deref())?;
    let resolv = std::fs::read_to_string(RESOLV_CONF)
        .map(|t| crate::dns::resolv_conf::parse(&t))
        .unwrap_or_default();
    let rconfig = resolver_config(
        &args.nameservers,
        &config.dns.nameservers,
        &resolv,
        args.timeout,
    );
    let nameservers = rconfig.nameservers.clone();
    let random = os_random()?;
    let mut resolver = BlockingResolver::new(rconfig, random)
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let prober = Prober::new(roots, args.timeout);
    let mut findings = gather(
        &mut resolver,
        &prober,
        &domain,
        hosted_config(&config, &domain),
    );
    findings.nameservers = nameservers;
    findings.timeout = args.timeout;
    findings.roots = roots_text;
    Ok(report::render(&findings))
}

/// Our listeners, if we host `domain`.
fn hosted_config(config: &Config, domain: &str) -> Option<Hosted> {
    if !config.hosts(domain) {
        return None;
    }
    Some(Hosted {
        s2s_enabled: config.s2s.enabled,
        s2s_listen: config.s2s.listen.clone(),
        s2s_listen_tls: config.s2s.listen_tls.clone(),
        c2s_listen: config.c2s.listen.clone(),
        c2s_listen_tls: config.c2s.listen_tls.clone(),
        client: SrvLookup::NoRecords,
        client_tls: SrvLookup::NoRecords,
    })
}

/// The lookups and probes. `hosted` (our listeners) also asks the client records.
pub fn gather(
    resolver: &mut BlockingResolver,
    prober: &Prober,
    domain: &str,
    mut hosted: Option<Hosted>,
) -> Findings {
    let names = [
        format!("{XMPPS_SERVER}{domain}"),
        format!("{XMPP_SERVER}{domain}"),
        format!("{XMPPS_CLIENT}{domain}"),
        format!("{XMPP_CLIENT}{domain}"),
    ];
    let asked = if hosted.is_some() { 4 } else { 2 };
    let questions: Vec<(&str, RecordType)> = names
        .iter()
        .take(asked)
        .map(|n| (n.as_str(), RecordType::Srv))
        .collect();
    let answers = resolver.resolve_all(&questions);
    let lookup = |i: usize| {
        answers
            .get(i)
            .map_or(SrvLookup::Failed(DnsError::Timeout), SrvLookup::from_answer)
    };
    let (direct, starttls) = (lookup(0), lookup(1));
    if let Some(h) = hosted.as_mut() {
        h.client_tls = lookup(2);
        h.client = lookup(3);
    }
    let plan = report::plan(domain, &direct, &starttls, &mut |b| resolver.fill_random(b));
    let candidates = match &plan {
        Plan::Srv(c) => c.clone(),
        Plan::Fallback(c) => vec![c.clone()],
        Plan::NotOffered | Plan::DnsFailed(_) => Vec::new(),
    };
    let targets_omitted = candidates.len().saturating_sub(MAX_TARGETS);
    // Probes already done, by (address, direct TLS): the same target often appears twice.
    let mut done: Vec<(SocketAddr, bool, Probe)> = Vec::new();
    let mut targets = Vec::new();
    for candidate in candidates.into_iter().take(MAX_TARGETS) {
        let (addresses, canonical) = addresses(resolver, &candidate.host, candidate.port);
        let mut omitted = 0;
        let addresses = addresses.map(|list| {
            omitted = list.len().saturating_sub(MAX_ADDRESSES);
            list.into_iter()
                .take(MAX_ADDRESSES)
                .map(|addr| {
                    let known = done
                        .iter()
                        .find(|(a, d, _)| *a == addr && *d == candidate.direct_tls)
                        .map(|(_, _, p)| p.clone());
                    let probe = known.unwrap_or_else(|| {
                        let p = prober.probe(domain, addr, candidate.direct_tls);
                        done.push((addr, candidate.direct_tls, p.clone()));
                        p
                    });
                    (addr, probe)
                })
                .collect()
        });
        targets.push(Target {
            candidate,
            canonical,
            addresses,
            omitted,
        });
    }
    Findings {
        domain: domain.to_owned(),
        nameservers: Vec::new(),
        timeout: prober.timeout,
        direct,
        starttls,
        plan,
        targets,
        targets_omitted,
        roots: String::new(),
        hosted,
    }
}

/// AAAA and A of `host`, interleaved IPv6 first as federation tries them, and the name a
/// CNAME chain led to (if any).
fn addresses(
    resolver: &mut BlockingResolver,
    host: &str,
    port: u16,
) -> (Result<Vec<SocketAddr>, DnsError>, Option<String>) {
    let answers = resolver.resolve_all(&[(host, RecordType::Aaaa), (host, RecordType::A)]);
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    let mut canonical = None;
    let mut errors = Vec::new();
    for answer in &answers {
        match answer {
            Ok(records) => {
                for r in records {
                    match r.data {
                        RecordData::Aaaa(ip) => v6.push(ip),
                        RecordData::A(ip) => v4.push(ip),
                        _ => continue,
                    }
                    if r.name != host.trim_end_matches('.') && canonical.is_none() {
                        canonical = Some(r.name.clone());
                    }
                }
            }
            Err(e) => errors.push(*e),
        }
    }
    let list = interleave(&v6, &v4, port);
    if !list.is_empty() {
        return (Ok(list), canonical);
    }
    // The most telling reason, as federation reports it: a failure beats NXDOMAIN, which beats
    // "exists without addresses".
    let err = if let Some(e) = errors.iter().find(|e| **e != DnsError::NxDomain) {
        *e
    } else if errors.len() == answers.len() && !errors.is_empty() {
        DnsError::NxDomain
    } else {
        DnsError::NoAddresses
    };
    (Err(err), canonical)
}

/// Trusted roots: `--ca-file`, else `[s2s] ca_file`, else the system bundle. A named file
/// that cannot be used stops the check; a missing system bundle only empties the store.
fn load_roots(
    cli: Option<&Path>,
    configured: Option<&Path>,
) -> Result<(RootCertStore, String), String> {
    let explicit = cli.or(configured);
    let path = explicit.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let mut store = RootCertStore::empty();
    match crate::tls::pem::read_cert_chain(path) {
        Ok(certs) => {
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 && explicit.is_some() {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
            let plural = if added == 1 { "" } else { "s" };
            Ok((
                store,
                format!("{} ({added} certificate{plural})", path.display()),
            ))
        }
        Err(e) if explicit.is_some() => Err(e.to_string()),
        Err(_) => Ok((store, format!("none ({} not readable)", path.display()))),
    }
}

/// The kernel's random bytes for DNS message IDs and SRV weights.
fn os_random() -> Result<RandomFill, String> {
    let mut file = File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(Box::new(move |buf: &mut [u8]| {
        // A failed read leaves the bytes as they were; `fill` cannot report, and a DNS ID
        // repeated once is only a retry.
        let _ = file.read_exact(buf);
    }))
}
