//! DNS resolution for federation: Hearth's own small stub resolver, sans-IO.
//!
//! The pieces, one job each:
//! - [`wire`]: builds queries and parses responses (simple-dns underneath, behind a size guard),
//!   TCP length-prefix framing.
//! - [`answer`]: what a matched response means for a question (CNAME chains, RFC 2308 negative
//!   answers).
//! - [`cache`]: answers by (name, type) until their TTL runs out, bounded.
//! - [`resolv_conf`]: `/etc/resolv.conf` text to nameservers and retry settings.
//! - [`resolver`]: the [`Resolver`] state machine: lookups in, packets, deadlines and answers out;
//!   retries, rotation across nameservers, TCP fallback, coalescing.
//! - [`srv`]: XMPP server-to-server lookups on top (RFC 6120 §3.2, XEP-0368): SRV candidates in
//!   RFC 2782 order, then addresses per candidate.
//!
//! No sockets and no clock here: time and randomness are arguments, and the `net` driver sends
//! the [`Transmit`]s and feeds back what arrives. `/etc/hosts` is not consulted.

pub mod answer;
pub mod cache;
pub mod resolv_conf;
pub mod resolver;
pub mod srv;
#[cfg(test)]
pub(crate) mod testutil;
pub mod wire;

pub use resolv_conf::ResolvConf;
pub use resolver::{QueryId, Resolver, ResolverConfig, ResolverEvent, TcpId, Transmit};
pub use srv::{AddressResolution, Candidate, SrvResolution};
pub use wire::{Record, RecordData, RecordType, Srv};

use std::fmt;

/// Why a lookup gave no usable answer. Small and `Copy`: it travels in events and is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (RCODE NXDOMAIN).
    NxDomain,
    /// An SRV lookup answered with the single target `.`: the service is decidedly not offered
    /// at this domain (RFC 2782); federation reports `remote-server-not-found`.
    NoService,
    /// No nameserver answered within the attempts allowed.
    Timeout,
    /// The nameservers answered, but only with failures (SERVFAIL, REFUSED, FORMERR, ...) or
    /// unusable responses.
    ServerFailure,
    /// Too many lookups are pending (or answers not yet polled); try again later.
    TooManyLookups,
    /// The name is not a DNS name we ask about (empty, too long, non-ASCII, odd characters).
    InvalidName,
    /// A CNAME chain was longer than allowed, or looped.
    CnameChainTooLong,
    /// The resolver has no nameserver configured.
    NoNameservers,
    /// The host exists but has neither A nor AAAA records.
    NoAddresses,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::NxDomain => "name does not exist",
            DnsError::NoService => "service not offered at this domain",
            DnsError::Timeout => "no nameserver answered in time",
            DnsError::ServerFailure => "nameservers failed to answer",
            DnsError::TooManyLookups => "too many lookups pending",
            DnsError::InvalidName => "invalid DNS name",
            DnsError::CnameChainTooLong => "CNAME chain too long or looping",
            DnsError::NoNameservers => "no nameserver configured",
            DnsError::NoAddresses => "host has no addresses",
        })
    }
}

impl std::error::Error for DnsError {}
