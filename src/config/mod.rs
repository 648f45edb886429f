//! Configuration: the typed, validated settings the server runs with, and loading them from a
//! TOML file.
//!
//! Owns: the [`Config`] struct, its built-in default, and mapping a parsed document onto it
//! with every check done once, at load. The TOML subset parser lives in [`toml`]; what the
//! settings mean at run time is left to the modules that use them.
//!
//! Relative paths in the file (`data_dir`, `tls.certs[].cert` and `.key`) resolve against the
//! file's folder, and so does the default `data_dir` when the file does not set one, so the
//! server's working directory never matters. Keys the file leaves out take
//! `Config::default()`'s values. An unknown key is an error that names it with its table
//! (`unknown key `c2s.listne` in /etc/hearth/hearth.toml (line 12)`); so are wrong types and
//! invalid values, naming key and value.
//!
//! Federation (`[s2s]`) is on in a config file (listening on `[::]:5269`) and off in the
//! built-in setup, whose domain `localhost` cannot federate. With federation on,
//! `Config::load` reads /etc/resolv.conf (the core never reads files): its nameservers are
//! used unless `[dns] nameservers` lists others, and its `options timeout/attempts` apply;
//! without the file, resolv.conf(5)'s defaults (a nameserver on 127.0.0.1).
//! `[dns] nameservers` entries are IP addresses with an optional port (53 by default).
//!
//! ```toml
//! domains = ["example.org"]
//! data_dir = "/var/lib/hearth"
//! log_level = "info"
//! [tls]
//! certs = [{ domain = "example.org", cert = "fullchain.pem", key = "privkey.pem" }]
//! [c2s]
//! listen = ["[::]:5222"]       # STARTTLS
//! listen_tls = ["[::]:5223"]   # direct TLS
//! auth_timeout_secs = 60
//! auth_failure_delay_ms = 1000
//! max_auth_failures = 3
//! idle_timeout_secs = 300
//! [limits]
//! max_connections = 1024
//! max_stanza_bytes = 262144
//! max_depth = 64
//! max_attrs = 64
//! max_outgoing_bytes = 1048576
//! max_sessions_per_account = 16
//! [storage]
//! cache_bytes = 4194304
//! [s2s]
//! enabled = true
//! listen = ["[::]:5269"]              # STARTTLS
//! listen_tls = ["[::]:5270"]          # direct TLS (XEP-0368); none by default
//! require_encryption = true           # TLS before authentication, both ways
//! require_valid_certificates = false  # true: no dialback, certificates only
//! ca_file = "/etc/ssl/certs/ca-certificates.crt"  # default: the system's roots
//! connect_timeout_secs = 30
//! idle_timeout_secs = 600
//! max_queued_stanzas = 128            # per remote domain while connecting
//! max_connections = 256               # s2s connections, both directions
//! [dns]
//! nameservers = ["127.0.0.1:5353"]    # default: those of /etc/resolv.conf
//! ```

pub mod toml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::jid::Jid;
use toml::{Entry, Table, Value};

/// Where the settings came from (logged at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    BuiltIn,
    File(PathBuf),
}

/// A certificate and key (PEM files) for one hosted domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertEntry {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// One entry per domain; a hosted domain without one gets a self-signed certificate made
    /// in `data_dir` on first start.
    pub certs: Vec<CertEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct C2sSettings {
    /// STARTTLS listeners (RFC 6120), default 127.0.0.1:5222 in the built-in setup.
    pub listen: Vec<SocketAddr>,
    /// Direct TLS listeners (XEP-0368), default 127.0.0.1:5223 in the built-in setup.
    pub listen_tls: Vec<SocketAddr>,
    /// A connection that has not authenticated and bound by then is closed.
    pub auth_timeout: Duration,
    /// Delay before answering a failed authentication (slows password guessing).
    pub auth_failure_delay: Duration,
    /// Failed attempts after which the stream is closed.
    pub max_auth_failures: u32,
    /// Silence after which an authenticated client is pinged (XEP-0199 later); 0 disables.
    pub idle_timeout: Duration,
    /// Stream management (XEP-0198): how long a session whose connection dropped waits for
    /// resumption; 0 disables resumption (acks still work).
    pub resume_timeout: Duration,
    /// Stanzas sent to a client and not yet acknowledged (XEP-0198); past it the stream is
    /// closed (see `server::session_mgmt`).
    pub max_unacked_stanzas: usize,
    /// The same bound in bytes.
    pub max_unacked_bytes: usize,
    /// A client past `max_unacked_stanzas`/`max_unacked_bytes` has this long to acknowledge
    /// enough to get back under them; then its stream is closed (the session stays resumable).
    pub ack_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attrs: usize,
    /// Bytes queued for one connection before it counts as a slow reader and is closed.
    pub max_outgoing_bytes: usize,
    /// Resources (sessions) one account may have bound at once.
    pub max_sessions_per_account: usize,
    /// Contacts on one roster.
    pub max_roster_items: usize,
    /// Offline messages kept for one account (XEP-0160); past it senders get an error.
    pub max_offline_per_account: usize,
    /// Offline messages kept for all accounts together.
    pub max_offline_total: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// redb page cache (redb's own default is 1 GiB).
    pub cache_bytes: usize,
}

/// In-band registration (XEP-0077).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationSettings {
    /// Whether strangers may create accounts from their client (off by default).
    pub enabled: bool,
    /// Accounts one IP address may create per hour.
    pub per_ip_per_hour: u32,
}

/// Federation (`[s2s]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2sSettings {
    /// Off in the built-in setup (domain `localhost` cannot federate); on by default in a
    /// config file.
    pub enabled: bool,
    /// STARTTLS listeners (RFC 6120), default `[::]:5269` in a config file.
    pub listen: Vec<SocketAddr>,
    /// Direct TLS listeners (XEP-0368, ALPN `xmpp-server`), none by default.
    pub listen_tls: Vec<SocketAddr>,
    /// TLS before authentication, both directions (default true).
    pub require_encryption: bool,
    /// Peers must present a certificate valid for their domain; false allows dialback over
    /// TLS with any certificate (default false).
    pub require_valid_certificates: bool,
    /// Trust roots for peers' certificates; `None`: the system's (/etc/ssl/certs).
    pub ca_file: Option<PathBuf>,
    /// An outgoing connection attempt (TCP and direct TLS) must finish within this.
    pub connect_timeout: Duration,
    /// A federation stream idle this long is closed.
    pub idle_timeout: Duration,
    /// Stanzas waiting for a remote domain's stream; past it the sender gets
    /// `resource-constraint`.
    pub max_queued_stanzas: usize,
    /// s2s connections (both directions) at once.
    pub max_connections: usize,
}

/// The stub resolver (`[dns]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Nameservers to ask; empty: those of /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// /etc/resolv.conf as read by `Config::load` when federation is on and `nameservers` is
    /// empty (the core never reads files); its timeout and attempts apply in any case.
    /// `None`: not read (built-in setup, `Config::parse`, or the file is missing).
    pub resolv_conf: Option<crate::dns::ResolvConf>,
}

impl DnsSettings {
    /// The resolver's settings: resolv.conf's (or the resolver's defaults), with
    /// `nameservers` taking the place of resolv.conf's servers when set.
    pub fn resolver_config(&self) -> crate::dns::ResolverConfig {
        let base = self.resolv_conf.clone().unwrap_or_default();
        let rc = crate::dns::ResolverConfig::from_resolv_conf(&base);
        if self.nameservers.is_empty() {
            rc
        } else {
            rc.with_nameservers(self.nameservers.clone())
        }
    }
}

/// The message archive (`[archive]`, XEP-0313).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// Whether messages are archived at all (default true).
    pub enabled: bool,
    /// Messages older than this are removed (`max_age_days`, 0 = kept however old; default 0).
    pub max_age: Option<Duration>,
    /// Most messages kept per account; the oldest go first (`max_messages`, default 10,000).
    pub max_messages: u64,
}

/// PEP (XEP-0163) bounds (`[pep]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepSettings {
    /// Items one node keeps at most; what `pubsub#max_items` = `max` means.
    pub max_items: usize,
    /// Nodes one account keeps at most (OMEMO's legacy layout takes one per device).
    pub max_nodes: usize,
}

/// The XEP-0157 fields an operator may publish.
pub const CONTACT_FIELDS: [&str; 7] = [
    "abuse", "admin", "feedback", "sales", "security", "status", "support",
];

/// All settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub source: ConfigSource,
    /// Hosted domains, normalised (lowercase); never empty.
    pub domains: Vec<String>,
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
    pub c2s: C2sSettings,
    pub s2s: S2sSettings,
    pub dns: DnsSettings,
    pub limits: Limits,
    pub storage: StorageSettings,
    pub registration: RegistrationSettings,
    pub archive: ArchiveSettings,
    pub pep: PepSettings,
    /// Contact addresses (XEP-0157): (field, addresses), fields from `CONTACT_FIELDS`.
    pub contact_addresses: Vec<(String, Vec<String>)>,
    /// `log` level filter unless RUST_LOG is set ("error", "warn", "info", "debug", "trace").
    pub log_level: String,
}

impl Default for Config {
    /// The built-in setup: domain `localhost`, c2s on 127.0.0.1:5222 (STARTTLS) and :5223
    /// (direct TLS), data in ./hearth-data.
    fn default() -> Self {
        Config {
            source: ConfigSource::BuiltIn,
            domains: vec!["localhost".to_owned()],
            data_dir: PathBuf::from("hearth-data"),
            tls: TlsSettings { certs: Vec::new() },
            c2s: C2sSettings {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
                listen_tls: vec![SocketAddr::from(([127, 0, 0, 1], 5223))],
                auth_timeout: Duration::from_secs(60),
                auth_failure_delay: Duration::from_secs(1),
                max_auth_failures: 3,
                idle_timeout: Duration::from_secs(300),
                resume_timeout: Duration::from_secs(300),
                max_unacked_stanzas: 500,
                max_unacked_bytes: 1024 * 1024,
                ack_timeout: Duration::from_secs(30),
            },
            s2s: S2sSettings {
                enabled: false,
                listen: Vec::new(),
                listen_tls: Vec::new(),
                require_encryption: true,
                require_valid_certificates: false,
                ca_file: None,
                connect_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(600),
                max_queued_stanzas: 128,
                max_connections: 256,
            },
            dns: DnsSettings {
                nameservers: Vec::new(),
                resolv_conf: None,
            },
            limits: Limits {
                max_connections: 1024,
                max_stanza_bytes: 256 * 1024,
                max_depth: 64,
                max_attrs: 64,
                max_outgoing_bytes: 1024 * 1024,
                max_sessions_per_account: 16,
                max_roster_items: 1000,
                max_offline_per_account: 1000,
                max_offline_total: 100_000,
            },
            storage: StorageSettings {
                // redb allocates its cache as it fills; 256 KiB keeps a big scan from growing
                // the process past the idle budget (4 MiB measured +0.3 KiB/session).
                cache_bytes: 256 * 1024,
            },
            registration: RegistrationSettings {
                enabled: false,
                per_ip_per_hour: 5,
            },
            archive: ArchiveSettings {
                enabled: true,
                max_age: None,
                max_messages: 10_000,
            },
            pep: PepSettings {
                max_items: 1000,
                max_nodes: 256,
            },
            contact_addresses: Vec::new(),
            log_level: "info".to_owned(),
        }
    }
}

/// Why a configuration could not be loaded; `Display` names the file, key and problem.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads `path`; relative paths inside resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        // The canonical path is what the log and errors show, and anchors relative paths
        // independently of the working directory.
        let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut c = Config::parse(&text, &file)?;
        if c.s2s.enabled {
            // The resolver's timeout and attempts come from it even with `[dns] nameservers`.
            // Without the file, resolv.conf(5)'s defaults apply (a nameserver on this host).
            if let Ok(t) = std::fs::read_to_string(RESOLV_CONF) {
                c.dns.resolv_conf = Some(crate::dns::resolv_conf::parse(&t));
            }
        }
        Ok(c)
    }

    /// Builds a configuration from `text` as if it had been read from `file`: `file` names
    /// the source in errors and its folder anchors relative paths (it is not read).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let doc = toml::parse(text).map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Loader { file, base }.config(&doc)
    }

    /// `--config PATH` if given, else ./hearth.toml if it exists, else the built-in default.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(p) => Config::load(p),
            None if Path::new("hearth.toml").exists() => Config::load(Path::new("hearth.toml")),
            None => Ok(Config::default()),
        }
    }

    /// True if `domain` (already normalised) is hosted here.
    pub fn hosts(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    /// The redb file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hearth.redb")
    }

    /// The control socket the CLI uses while the server runs.
    pub fn control_socket_path(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

/// Where the system's nameservers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// A config file's s2s listener when `[s2s] listen` is not given.
const DEFAULT_S2S_PORT: u16 = 5269;

/// RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes.
const MIN_STANZA_BYTES: i64 = 10_000;
/// Caps on durations, so that `now + timeout` can never overflow an `Instant`.
const MAX_SECS: i64 = 365 * 24 * 3600;
const MAX_MILLIS: i64 = 3600 * 1000;
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// One `[tls] certs` element before it is checked against `domains`.
struct RawCert {
    name: String,
    line: u32,
    domain: String,
    domain_line: u32,
    cert: PathBuf,
    key: PathBuf,
}

/// Maps a parsed document onto [`Config`]; `file` names the source, `base` anchors paths.
struct Loader<'a> {
    file: &'a Path,
    base: PathBuf,
}

/// A value with its type, as shown in messages: `string "60"`, `integer 7`, `a table`.
fn show_typed(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

impl Loader<'_> {
    fn err(&self, line: u32, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{msg} in {} (line {line})", self.file.display()))
    }

    fn unknown(&self, name: &str, line: u32) -> ConfigError {
        self.err(line, format!("unknown key `{name}`"))
    }

    fn wrong_type(&self, name: &str, want: &str, v: &Value, line: u32) -> ConfigError {
        self.err(
            line,
            format!("`{name}` must be {want}, not {}", show_typed(v)),
        )
    }

    fn config(&self, doc: &Table) -> Result<Config, ConfigError> {
        let mut c = Config {
            source: ConfigSource::File(self.file.to_path_buf()),
            ..Config::default()
        };
        c.data_dir = self.base.join(&c.data_dir);
        // A config file names real domains, which federate unless told not to.
        c.s2s.enabled = true;
        c.s2s.listen = vec![SocketAddr::from(([0u16; 8], DEFAULT_S2S_PORT))];
        let mut certs = Vec::new();
        for e in doc.entries() {
            match e.key.as_str() {
                "domains" => c.domains = self.domains(e)?,
                "data_dir" => c.data_dir = self.path("data_dir", e)?,
                "log_level" => c.log_level = self.log_level(e)?,
                "tls" => {
                    for e in self.table("tls", e)?.entries() {
                        match e.key.as_str() {
                            "certs" => certs = self.certs(e)?,
                            k => return Err(self.unknown(&format!("tls.{k}"), e.line)),
                        }
                    }
                }
                "c2s" => self.c2s(self.table("c2s", e)?, &mut c.c2s)?,
                "limits" => self.limits(self.table("limits", e)?, &mut c.limits)?,
                "s2s" => self.s2s(self.table("s2s", e)?, &mut c.s2s)?,
                "dns" => {
                    for e in self.table("dns", e)?.entries() {
                        match e.key.as_str() {
                            "nameservers" => c.dns.nameservers = self.nameservers(e)?,
                            k => return Err(self.unknown(&format!("dns.{k}"), e.line)),
                        }
                    }
                }
                "storage" => {
                    for e in self.table("storage", e)?.entries() {
                        match e.key.as_str() {
                            "cache_bytes" => {
                                c.storage.cache_bytes =
                                    self.int("storage.cache_bytes", e, 0, None)?;
                            }
                            k => return Err(self.unknown(&format!("storage.{k}"), e.line)),
                        }
                    }
                }
                "archive" => self.archive(self.table("archive", e)?, &mut c.archive)?,
                "registration" => {
                    for e in self.table("registration", e)?.entries() {
                        match e.key.as_str() {
                            "enabled" => match &e.value {
                                Value::Boolean(b) => c.registration.enabled = *b,
                                v => {
                                    return Err(self.wrong_type(
                                        "registration.enabled",
                                        "a boolean",
                                        v,
                                        e.line,
                                    ));
                                }
                            },
                            "per_ip_per_hour" => {
                                c.registration.per_ip_per_hour =
                                    self.int("registration.per_ip_per_hour", e, 1, None)?;
                            }
                            k => return Err(self.unknown(&format!("registration.{k}"), e.line)),
                        }
                    }
                }
                "pep" => self.pep(self.table("pep", e)?, &mut c.pep)?,
                "contact_addresses" => {
                    for e in self.table("contact_addresses", e)?.entries() {
                        let name = format!("contact_addresses.{}", e.key);
                        if !CONTACT_FIELDS.contains(&e.key.as_str()) {
                            return Err(self.unknown(&name, e.line));
                        }
                        let addrs = self.strings(&name, e)?;
                        c.contact_addresses.push((
                            e.key.clone(),
                            addrs.into_iter().map(str::to_owned).collect(),
                        ));
                    }
                }
                k => return Err(self.unknown(k, e.line)),
            }
        }
        c.tls.certs = self.check_certs(certs, &c.domains)?;
        if c.c2s.listen.is_empty() && c.c2s.listen_tls.is_empty() {
            let line = doc.entry("c2s").map_or(1, |e| e.line);
            return Err(self.err(
                line,
                "`c2s.listen` and `c2s.listen_tls` are both empty, so no client could connect",
            ));
        }
        Ok(c)
    }

    fn pep(&self, t: &Table, p: &mut PepSettings) -> Result<(), ConfigError> {
        for e in t.entries() {
            match e.key.as_str() {
                "max_items" => p.max_items = self.int("pep.max_items", e, 1, Some(100_000))?,
                "max_nodes" => p.max_nodes = self.int("pep.max_nodes", e, 1, Some(10_000))?,
                k => return Err(self.unknown(&format!("pep.{k}"), e.line)),
            }
        }
        Ok(())
    }

    fn table<'t>(&self, name: &str, e: &'t Entry) -> Result<&'t Table, ConfigError> {
        match &e.value {
            Value::Table(t) => Ok(t),
            v => Err(self.wrong_type(name, "a table", v, e.line)),
        }
    }

    fn string<'t>(&self, name: &str, e: &'t Entry) -> Result<&'t str, ConfigError> {
        match &e.value {
            Value::String(s) => Ok(s),
            v => Err(self.wrong_type(name, "a string", v, e.line)),
        }
    }

    fn strings<'t>(&self, name: &str, e: &'t Entry) -> Result<Vec<&'t str>, ConfigError> {
        let Value::Array(items) = &e.value else {
            return Err(self.wrong_type(name, "an array of strings", &e.value, e.line));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(self.err(
                    e.line,
                    format!("`{name}` must contain only strings, not {}", show_typed(v)),
                )),
            })
            .collect()
    }

    /// An integer in `min..=max` (default max: the target type's), converted to `T`.
    fn int<T: TryFrom<i64>>(
        &self,
        name: &str,
        e: &Entry,
        min: i64,
        max: Option<i64>,
    ) -> Result<T, ConfigError> {
        let Value::Integer(n) = e.value else {
            return Err(self.wrong_type(name, "an integer", &e.value, e.line));
        };
        if n < min {
            let why = if min == MIN_STANZA_BYTES {
                " (RFC 6120 §13.12)"
            } else {
                ""
            };
            return Err(self.err(
                e.line,
                format!("`{name}` = {n} is invalid: must be at least {min}{why}"),
            ));
        }
        match max {
            Some(max) if n > max => Err(self.err(
                e.line,
                format!("`{name}` = {n} is invalid: must be at most {max}"),
            )),
            _ => T::try_from(n)
                .map_err(|_| self.err(e.line, format!("`{name}` = {n} is invalid: too large"))),
        }
    }

    fn path(&self, name: &str, e: &Entry) -> Result<PathBuf, ConfigError> {
        let s = self.string(name, e)?;
        if s.is_empty() {
            return Err(self.err(e.line, format!("`{name}` is empty")));
        }
        // `join` keeps an absolute path as it is.
        Ok(self.base.join(s))
    }

    fn domains(&self, e: &Entry) -> Result<Vec<String>, ConfigError> {
        let raw = self.strings("domains", e)?;
        if raw.is_empty() {
            return Err(self.err(e.line, "`domains` is empty: at least one domain is needed"));
        }
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for s in raw {
            let d = self.domain("domains", s, e.line)?;
            if out.contains(&d) {
                return Err(self.err(e.line, format!("`domains` lists {d:?} twice")));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// A domain JID, normalised (RFC 7622).
    fn domain(&self, name: &str, s: &str, line: u32) -> Result<String, ConfigError> {
        match Jid::domain_jid(s) {
            Ok(j) => Ok(j.domain().to_owned()),
            Err(why) => Err(self.err(
                line,
                format!("`{name}` value {s:?} is not a valid domain: {why}"),
            )),
        }
    }

    fn log_level(&self, e: &Entry) -> Result<String, ConfigError> {
        let s = self.string("log_level", e)?.to_ascii_lowercase();
        if !LOG_LEVELS.contains(&s.as_str()) {
            return Err(self.err(
                e.line,
                format!(
                    "`log_level` value {:?} is invalid: expected one of {}",
                    self.string("log_level", e)?,
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        Ok(s)
    }

    fn certs(&self, e: &Entry) -> Result<Vec<RawCert>, ConfigError> {
        let Value::Array(items) = &e.value else {
            return Err(self.wrong_type("tls.certs", "an array of tables", &e.value, e.line));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let name = format!("tls.certs[{i}]");
            let Value::Table(t) = item else {
                return Err(self.err(
                    e.line,
                    format!("`{name}` must be a table, not {}", show_typed(item)),
                ));
            };
            let line = t.entries().first().map_or(e.line, |f| f.line);
            let (mut domain, mut cert, mut key) = (None, None, None);
            for f in t.entries() {
                let fname = format!("{name}.{}", f.key);
                match f.key.as_str() {
                    "domain" => domain = Some((self.string(&fname, f)?, f.line)),
                    "cert" => cert = Some(self.path(&fname, f)?),
                    "key" => key = Some(self.path(&fname, f)?),
                    _ => return Err(self.unknown(&fname, f.line)),
                }
            }
            let missing = |what: &str| self.err(line, format!("`{name}` needs `{what}`"));
            let (domain, domain_line) = domain.ok_or_else(|| missing("domain"))?;
            out.push(RawCert {
                domain: self.domain(&format!("{name}.domain"), domain, domain_line)?,
                domain_line,
                cert: cert.ok_or_else(|| missing("cert"))?,
                key: key.ok_or_else(|| missing("key"))?,
                name,
                line,
            });
        }
        Ok(out)
    }

    /// Every certificate is for a hosted domain, and no domain has two.
    fn check_certs(
        &self,
        raw: Vec<RawCert>,
        domains: &[String],
    ) -> Result<Vec<CertEntry>, ConfigError> {
        let mut out: Vec<CertEntry> = Vec::with_capacity(raw.len());
        for r in raw {
            if !domains.contains(&r.domain) {
                return Err(self.err(
                    r.domain_line,
                    format!(
                        "`{}.domain` value {:?} is not one of `domains`",
                        r.name, r.domain
                    ),
                ));
            }
            if out.iter().any(|c| c.domain == r.domain) {
                return Err(self.err(
                    r.line,
                    format!(
                        "`{}.domain`: {:?} has a second certificate entry",
                        r.name, r.domain
                    ),
                ));
            }
            out.push(CertEntry {
                domain: r.domain,
                cert: r.cert,
                key: r.key,
            });
        }
        Ok(out)
    }

    fn addrs(&self, name: &str, e: &Entry) -> Result<Vec<SocketAddr>, ConfigError> {
        self.strings(name, e)?
            .into_iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    self.err(
                        e.line,
                        format!(
                            "`{name}` value {s:?} is not a socket address \
                             (an IP address and port, like \"[::]:5222\" or \"0.0.0.0:5222\")"
                        ),
                    )
                })
            })
            .collect()
    }

    fn c2s(&self, t: &Table, c: &mut C2sSettings) -> Result<(), ConfigError> {
        for e in t.entries() {
            let name = format!("c2s.{}", e.key);
            match e.key.as_str() {
                "listen" => c.listen = self.addrs(&name, e)?,
                "listen_tls" => c.listen_tls = self.addrs(&name, e)?,
                "auth_timeout_secs" => {
                    c.auth_timeout = Duration::from_secs(self.int(&name, e, 1, Some(MAX_SECS))?);
                }
                "auth_failure_delay_ms" => {
                    c.auth_failure_delay =
                        Duration::from_millis(self.int(&name, e, 0, Some(MAX_MILLIS))?);
                }
                "max_auth_failures" => c.max_auth_failures = self.int(&name, e, 1, None)?,
                "idle_timeout_secs" => {
                    c.idle_timeout = Duration::from_secs(self.int(&name, e, 0, Some(MAX_SECS))?);
                }
                "resume_timeout_secs" => {
                    c.resume_timeout =
                        Duration::from_secs(self.int(&name, e, 0, Some(MAX_SECS))?);
                }
                "max_unacked_stanzas" => c.max_unacked_stanzas = self.int(&name, e, 1, None)?,
                "max_unacked_bytes" => c.max_unacked_bytes = self.int(&name, e, 1, None)?,
                "ack_timeout_secs" => {
                    c.ack_timeout = Duration::from_secs(self.int(&name, e, 1, Some(MAX_SECS))?);
                }
                _ => return Err(self.unknown(&name, e.line)),
            }
        }
        self.no_repeated_listener(t, "c2s", &c.listen, &c.listen_tls)?;
        Ok(())
    }

    fn archive(&self, t: &Table, a: &mut ArchiveSettings) -> Result<(), ConfigError> {
        for e in t.entries() {
            let name = format!("archive.{}", e.key);
            match e.key.as_str() {
                "enabled" => a.enabled = self.bool(&name, e)?,
                "max_age_days" => {
                    let days: u64 = self.int(&name, e, 0, Some(100 * 365))?;
                    a.max_age = (days > 0).then(|| Duration::from_secs(days * 86_400));
                }
                "max_messages" => a.max_messages = self.int(&name, e, 1, None)?,
                _ => return Err(self.unknown(&name, e.line)),
            }
        }
        Ok(())
    }

    fn bool(&self, name: &str, e: &Entry) -> Result<bool, ConfigError> {
        match &e.value {
            Value::Boolean(b) => Ok(*b),
            v => Err(self.wrong_type(name, "a boolean", v, e.line)),
        }
    }

    fn s2s(&self, t: &Table, c: &mut S2sSettings) -> Result<(), ConfigError> {
        for e in t.entries() {
            let name = format!("s2s.{}", e.key);
            match e.key.as_str() {
                "enabled" => c.enabled = self.bool(&name, e)?,
                "listen" => c.listen = self.addrs(&name, e)?,
                "listen_tls" => c.listen_tls = self.addrs(&name, e)?,
                "require_encryption" => c.require_encryption = self.bool(&name, e)?,
                "require_valid_certificates" => {
                    c.require_valid_certificates = self.bool(&name, e)?;
                }
                "ca_file" => c.ca_file = Some(self.path(&name, e)?),
                "connect_timeout_secs" => {
                    c.connect_timeout =
                        Duration::from_secs(self.int(&name, e, 1, Some(MAX_SECS))?);
                }
                "idle_timeout_secs" => {
                    c.idle_timeout = Duration::from_secs(self.int(&name, e, 1, Some(MAX_SECS))?);
                }
                "max_queued_stanzas" => c.max_queued_stanzas = self.int(&name, e, 1, None)?,
                "max_connections" => c.max_connections = self.int(&name, e, 1, None)?,
                _ => return Err(self.unknown(&name, e.line)),
            }
        }
        self.no_repeated_listener(t, "s2s", &c.listen, &c.listen_tls)?;
        if c.enabled && c.listen.is_empty() && c.listen_tls.is_empty() {
            let line = t.entries().first().map_or(1, |e| e.line);
            return Err(self.err(
                line,
                "`s2s.listen` and `s2s.listen_tls` are both empty, so no server could reach \
                 us; set `s2s.enabled = false` to turn federation off",
            ));
        }
        Ok(())
    }

    /// A socket address listed twice in `listen` and `listen_tls` of `table` is an error at
    /// the line of the later list that repeats it (or of the list that repeats it).
    fn no_repeated_listener(
        &self,
        t: &Table,
        table: &str,
        listen: &[SocketAddr],
        listen_tls: &[SocketAddr],
    ) -> Result<(), ConfigError> {
        for (i, a) in listen.iter().chain(listen_tls).enumerate() {
            if listen.iter().chain(listen_tls).skip(i + 1).any(|b| a == b) {
                let key = if listen_tls.contains(a) {
                    "listen_tls"
                } else {
                    "listen"
                };
                let line = t.entry(key).map_or(1, |e| e.line);
                return Err(self.err(
                    line,
                    format!("`{table}`: the socket address \"{a}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// `[dns] nameservers`: IP addresses, with an optional port (default 53).
    fn nameservers(&self, e: &Entry) -> Result<Vec<SocketAddr>, ConfigError> {
        let list = self.strings("dns.nameservers", e)?;
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            let parsed = s.parse::<SocketAddr>().ok().or_else(|| {
                s.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(a) if a.port() != 0 => out.push(a),
                _ => {
                    return Err(self.err(
                        e.line,
                        format!(
                            "`dns.nameservers` value {s:?} is not a nameserver address \
                             (an IP address with an optional port, like \"127.0.0.1:5353\", \
                             \"[::1]:53\" or \"9.9.9.9\")"
                        ),
                    ));
                }
            }
        }
        if out.len() > crate::dns::resolver::MAX_SERVERS {
            return Err(self.err(
                e.line,
                format!(
                    "`dns.nameservers` lists {} servers: at most {} are used",
                    out.len(),
                    crate::dns::resolver::MAX_SERVERS
                ),
            ));
        }
        Ok(out)
    }

    fn limits(&self, t: &Table, l: &mut Limits) -> Result<(), ConfigError> {
        for e in t.entries() {
            let name = format!("limits.{}", e.key);
            let field = match e.key.as_str() {
                "max_connections" => &mut l.max_connections,
                "max_stanza_bytes" => {
                    l.max_stanza_bytes = self.int(&name, e, MIN_STANZA_BYTES, None)?;
                    continue;
                }
                "max_depth" => &mut l.max_depth,
                "max_attrs" => &mut l.max_attrs,
                "max_outgoing_bytes" => &mut l.max_outgoing_bytes,
                "max_sessions_per_account" => &mut l.max_sessions_per_account,
                "max_roster_items" => &mut l.max_roster_items,
                "max_offline_per_account" => &mut l.max_offline_per_account,
                "max_offline_total" => &mut l.max_offline_total,
                _ => return Err(self.unknown(&name, e.line)),
            };
            *field = self.int(&name, e, 1, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/hearth/hearth.toml";

    const EXAMPLE: &str = r#"
domains = ["example.org"]
data_dir = "/var/lib/hearth"
log_level = "info"
[tls]
certs = [{ domain = "example.org", cert = "/etc/letsencrypt/live/example.org/fullchain.pem", key = "/etc/letsencrypt/live/example.org/privkey.pem" }]
[c2s]
listen = ["[::]:5222"]       # STARTTLS
listen_tls = ["[::]:5223"]   # direct TLS
auth_timeout_secs = 60
auth_failure_delay_ms = 1000
max_auth_failures = 3
idle_timeout_secs = 300
[limits]
max_connections = 1024
max_stanza_bytes = 262144
max_depth = 64
max_attrs = 64
max_outgoing_bytes = 1048576
max_sessions_per_account = 16
max_roster_items = 1000
max_offline_per_account = 1000
max_offline_total = 100000
[storage]
cache_bytes = 4194304
[s2s]
enabled = true
listen = ["[::]:5269"]
listen_tls = ["[::]:5270"]
require_encryption = true
require_valid_certificates = false
ca_file = "/etc/ssl/certs/ca-certificates.crt"
connect_timeout_secs = 30
idle_timeout_secs = 600
max_queued_stanzas = 128
max_connections = 256
[dns]
nameservers = ["127.0.0.1:5353"]
[registration]
enabled = true
per_ip_per_hour = 3
[contact_addresses]
abuse = ["mailto:abuse@example.org"]
admin = ["xmpp:admin@example.org", "mailto:admin@example.org"]
"#;

    fn parse(text: &str) -> Config {
        match Config::parse(text, Path::new(FILE)) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(text: &str) -> String {
        match Config::parse(text, Path::new(FILE)) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn at(line: u32) -> String {
        format!(" in {FILE} (line {line})")
    }

    /// A fresh, empty folder under the system temp dir (tests run in parallel).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pep_table_sets_bounds_and_refuses_unknown_and_zero() {
        let c = parse("[pep]\nmax_items = 50\nmax_nodes = 9\n");
        assert_eq!((c.pep.max_items, c.pep.max_nodes), (50, 9));
        assert!(err("[pep]\nmax_item = 5\n").contains("pep.max_item"));
        assert!(err("[pep]\nmax_items = 0\n").contains("pep.max_items"));
    }

    #[test]
    fn example_file_parses_to_expected_config() {
        let c = parse(EXAMPLE);
        let any6 = |port| SocketAddr::from(([0u16; 8], port));
        let expected = Config {
            source: ConfigSource::File(PathBuf::from(FILE)),
            domains: vec!["example.org".to_owned()],
            data_dir: PathBuf::from("/var/lib/hearth"),
            tls: TlsSettings {
                certs: vec![CertEntry {
                    domain: "example.org".to_owned(),
                    cert: PathBuf::from("/etc/letsencrypt/live/example.org/fullchain.pem"),
                    key: PathBuf::from("/etc/letsencrypt/live/example.org/privkey.pem"),
                }],
            },
            c2s: C2sSettings {
                listen: vec![any6(5222)],
                listen_tls: vec![any6(5223)],
                auth_timeout: Duration::from_secs(60),
                auth_failure_delay: Duration::from_millis(1000),
                max_auth_failures: 3,
                idle_timeout: Duration::from_secs(300),
                ..Config::default().c2s
            },
            s2s: S2sSettings {
                enabled: true,
                listen: vec![any6(5269)],
                listen_tls: vec![any6(5270)],
                require_encryption: true,
                require_valid_certificates: false,
                ca_file: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
                connect_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(600),
                max_queued_stanzas: 128,
                max_connections: 256,
            },
            dns: DnsSettings {
                nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
                resolv_conf: None,
            },
            limits: Limits {
                max_connections: 1024,
                max_stanza_bytes: 262144,
                max_depth: 64,
                max_attrs: 64,
                max_outgoing_bytes: 1048576,
                max_sessions_per_account: 16,
                max_roster_items: 1000,
                max_offline_per_account: 1000,
                max_offline_total: 100_000,
            },
            storage: StorageSettings {
                cache_bytes: 4194304,
            },
            registration: RegistrationSettings {
                enabled: true,
                per_ip_per_hour: 3,
            },
            archive: Config::default().archive,
            pep: Config::default().pep,
            contact_addresses: vec![
                (
                    "abuse".to_owned(),
                    vec!["mailto:abuse@example.org".to_owned()],
                ),
                (
                    "admin".to_owned(),
                    vec![
                        "xmpp:admin@example.org".to_owned(),
                        "mailto:admin@example.org".to_owned(),
                    ],
                ),
            ],
            log_level: "info".to_owned(),
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn example_values_differ_from_defaults_where_set() {
        let c = parse(
            "domains = ['a.example', 'B.Example.']\nlog_level = 'DEBUG'\n\
             [c2s]\nlisten = []\nauth_failure_delay_ms = 0\nidle_timeout_secs = 0\n\
             [limits]\nmax_stanza_bytes = 10_000\n[storage]\ncache_bytes = 0",
        );
        assert_eq!(c.domains, ["a.example", "b.example"]);
        assert_eq!(c.log_level, "debug");
        assert!(c.c2s.listen.is_empty());
        assert_eq!(c.c2s.listen_tls, Config::default().c2s.listen_tls);
        assert_eq!(c.c2s.auth_failure_delay, Duration::ZERO);
        assert_eq!(c.c2s.idle_timeout, Duration::ZERO);
        assert_eq!(c.limits.max_stanza_bytes, 10_000);
        assert_eq!(c.limits.max_depth, 64);
        assert_eq!(c.storage.cache_bytes, 0);
    }

    #[test]
    fn empty_file_gives_defaults_with_data_dir_beside_it() {
        let c = parse("# nothing here\n");
        let d = Config::default();
        assert_eq!(c.source, ConfigSource::File(PathBuf::from(FILE)));
        assert_eq!(c.data_dir, PathBuf::from("/etc/hearth/hearth-data"));
        // A config file federates by default; the built-in setup does not.
        assert!(c.s2s.enabled && !d.s2s.enabled);
        assert_eq!(c.s2s.listen, [SocketAddr::from(([0u16; 8], 5269))]);
        assert_eq!(
            Config {
                source: d.source.clone(),
                data_dir: d.data_dir.clone(),
                s2s: S2sSettings {
                    enabled: false,
                    listen: Vec::new(),
                    ..c.s2s.clone()
                },
                ..c
            },
            d
        );
    }

    #[test]
    fn s2s_values_parse_and_unset_ones_keep_defaults() {
        let c = parse(
            "[s2s]\nlisten = ['127.0.0.1:5999']\nrequire_encryption = false\n\
             require_valid_certificates = true\nca_file = 'roots.pem'\nconnect_timeout_secs = 5\n\
             max_queued_stanzas = 7\n[dns]\nnameservers = ['127.0.0.1:5353', '::1', '9.9.9.9']",
        );
        assert!(c.s2s.enabled);
        assert_eq!(c.s2s.listen, [SocketAddr::from(([127, 0, 0, 1], 5999))]);
        assert!(c.s2s.listen_tls.is_empty());
        assert!(!c.s2s.require_encryption);
        assert!(c.s2s.require_valid_certificates);
        assert_eq!(c.s2s.ca_file, Some(PathBuf::from("/etc/hearth/roots.pem")));
        assert_eq!(c.s2s.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.s2s.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.s2s.max_queued_stanzas, 7);
        assert_eq!(c.s2s.max_connections, 256);
        assert_eq!(
            c.dns.nameservers,
            [
                SocketAddr::from(([127, 0, 0, 1], 5353)),
                "[::1]:53".parse().unwrap(),
                SocketAddr::from(([9, 9, 9, 9], 53)),
            ]
        );
        let rc = c.dns.resolver_config();
        assert_eq!(rc.nameservers, c.dns.nameservers);
    }

    #[test]
    fn s2s_disabled_needs_no_listener() {
        let c = parse("[s2s]\nenabled = false\nlisten = []");
        assert!(!c.s2s.enabled);
        assert!(c.s2s.listen.is_empty());
    }

    #[test]
    fn s2s_bad_values_are_named() {
        assert_eq!(
            err("[s2s]\nenabled = 'yes'"),
            format!(
                "`s2s.enabled` must be a boolean, not string \"yes\"{}",
                at(2)
            )
        );
        assert_eq!(
            err("[s2s]\nlisten = []"),
            format!(
                "`s2s.listen` and `s2s.listen_tls` are both empty, so no server could reach us; \
                 set `s2s.enabled = false` to turn federation off{}",
                at(2)
            )
        );
        assert!(
            err("[s2s]\nlisten = ['example.org:5269']")
                .starts_with("`s2s.listen` value \"example.org:5269\" is not a socket address"),
        );
        assert_eq!(
            err("[s2s]\nconnect_timeout_secs = 0"),
            format!(
                "`s2s.connect_timeout_secs` = 0 is invalid: must be at least 1{}",
                at(2)
            )
        );
        assert_eq!(
            err("[s2s]\nmax_queued_stanzas = -1"),
            format!(
                "`s2s.max_queued_stanzas` = -1 is invalid: must be at least 1{}",
                at(2)
            )
        );
        assert_eq!(
            err("[s2s]\nlisten = ['[::]:5269']\nlisten_tls = ['[::]:5269']"),
            format!(
                "`s2s`: the socket address \"[::]:5269\" is listed twice{}",
                at(3)
            )
        );
        assert_eq!(
            err("[s2s]\nlisten_tsl = []"),
            format!("unknown key `s2s.listen_tsl`{}", at(2))
        );
        assert_eq!(
            err("[s2s]\nca_file = ''"),
            format!("`s2s.ca_file` is empty{}", at(2))
        );
    }

    #[test]
    fn dns_bad_values_are_named() {
        assert!(err("[dns]\nnameservers = ['ns1.example.net']").starts_with(
            "`dns.nameservers` value \"ns1.example.net\" is not a nameserver address"
        ));
        assert!(err("[dns]\nnameservers = ['127.0.0.1:0']").contains("not a nameserver address"));
        assert_eq!(
            err("[dns]\nnameservers = '127.0.0.1'"),
            format!(
                "`dns.nameservers` must be an array of strings, not string \"127.0.0.1\"{}",
                at(2)
            )
        );
        let nine = ["'127.0.0.1'"; 9].join(", ");
        assert!(err(&format!("[dns]\nnameservers = [{nine}]")).contains("at most 8 are used"));
        assert_eq!(
            err("[dns]\nsearch = []"),
            format!("unknown key `dns.search`{}", at(2))
        );
    }

    #[test]
    fn load_reads_resolv_conf_only_when_federating() {
        let dir = temp_dir("resolv");
        let on = dir.join("on.toml");
        let off = dir.join("off.toml");
        std::fs::write(&on, "domains = ['example.org']\n").unwrap();
        std::fs::write(&off, "domains = ['example.org']\n[s2s]\nenabled = false\n").unwrap();
        let c = Config::load(&on).unwrap();
        assert_eq!(
            c.dns.resolv_conf.is_some(),
            Path::new(RESOLV_CONF).exists(),
            "read when present"
        );
        assert_eq!(Config::load(&off).unwrap().dns.resolv_conf, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dns_resolver_config_uses_resolv_conf_when_no_nameservers() {
        let mut d = Config::default().dns;
        d.resolv_conf = Some(crate::dns::resolv_conf::parse(
            "nameserver 192.0.2.53\noptions timeout:2 attempts:3\n",
        ));
        let rc = d.resolver_config();
        assert_eq!(rc.nameservers, [SocketAddr::from(([192, 0, 2, 53], 53))]);
        assert_eq!(rc.timeout, Duration::from_secs(2));
        assert_eq!(rc.attempts, 3);
        d.nameservers = vec![SocketAddr::from(([127, 0, 0, 1], 5353))];
        let rc = d.resolver_config();
        assert_eq!(rc.nameservers, d.nameservers);
        assert_eq!(rc.attempts, 3, "resolv.conf's options still apply");
    }

    #[test]
    fn empty_tables_give_defaults() {
        let c = parse("[tls]\n[c2s]\n[limits]\n[storage]\n");
        let d = Config::default();
        assert_eq!(
            (c.tls, c.c2s, c.limits, c.storage),
            (d.tls, d.c2s, d.limits, d.storage)
        );
    }

    #[test]
    fn relative_paths_resolve_against_file_folder() {
        let c = parse(
            "domains = ['a.example', 'b.example']\ndata_dir = 'data'\n\
             [[tls.certs]]\ndomain = 'a.example'\ncert = 'certs/a.crt'\nkey = '../keys/a.key'\n\
             [[tls.certs]]\ndomain = 'b.example'\ncert = '/abs/b.crt'\nkey = './b.key'\n",
        );
        assert_eq!(c.data_dir, PathBuf::from("/etc/hearth/data"));
        assert_eq!(
            c.tls.certs[0].cert,
            PathBuf::from("/etc/hearth/certs/a.crt")
        );
        assert_eq!(
            c.tls.certs[0].key,
            PathBuf::from("/etc/hearth/../keys/a.key")
        );
        assert_eq!(c.tls.certs[1].cert, PathBuf::from("/abs/b.crt"));
        assert_eq!(c.tls.certs[1].key, PathBuf::from("/etc/hearth/./b.key"));
    }

    #[test]
    fn load_file_resolves_against_canonical_folder() {
        let dir = temp_dir("load");
        std::fs::write(dir.join("hearth.toml"), "data_dir = 'state'\n").unwrap();
        // Through a `..` detour: the canonical path is what is reported and used.
        let detour = dir
            .join("..")
            .join(dir.file_name().unwrap())
            .join("hearth.toml");
        let c = Config::load(&detour).unwrap();
        let canon = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(c.source, ConfigSource::File(canon.join("hearth.toml")));
        assert_eq!(c.data_dir, canon.join("state"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_missing_file_names_it() {
        let dir = temp_dir("missing");
        let path = dir.join("nope.toml");
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}: ", path.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn discover_explicit_path_is_loaded() {
        let dir = temp_dir("discover");
        let path = dir.join("x.toml");
        std::fs::write(&path, "domains = ['d.example']\n").unwrap();
        let c = Config::discover(Some(&path)).unwrap();
        assert_eq!(c.domains, ["d.example"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        assert_eq!(
            err("domains = ['a']\n\nx = 1.5\n"),
            format!("{FILE}: line 3: unsupported TOML: floats (`1.5`)")
        );
    }

    #[test]
    fn unknown_keys_named_with_their_table() {
        assert_eq!(
            err("domain = ['a']"),
            format!("unknown key `domain`{}", at(1))
        );
        assert_eq!(
            err("[c2s]\nlisten = []\nlistne = []"),
            format!("unknown key `c2s.listne`{}", at(3))
        );
        assert_eq!(
            err("[limits]\nmax_conns = 1"),
            format!("unknown key `limits.max_conns`{}", at(2))
        );
        assert_eq!(
            err("[storage]\ncache = 1"),
            format!("unknown key `storage.cache`{}", at(2))
        );
        assert_eq!(
            err("[tls]\ncert = 'x'"),
            format!("unknown key `tls.cert`{}", at(2))
        );
        assert_eq!(
            err("[[tls.certs]]\ndomain = 'localhost'\ncert = 'a'\nkey = 'b'\nchain = 'c'"),
            format!("unknown key `tls.certs[0].chain`{}", at(5))
        );
        assert_eq!(
            err("c2s.listen_tsl = []"),
            format!("unknown key `c2s.listen_tsl`{}", at(1))
        );
    }

    #[test]
    fn wrong_types_named_with_value() {
        assert_eq!(
            err("domains = 'example.org'"),
            format!(
                "`domains` must be an array of strings, not string \"example.org\"{}",
                at(1)
            )
        );
        assert_eq!(
            err("domains = ['a', 7]"),
            format!(
                "`domains` must contain only strings, not integer 7{}",
                at(1)
            )
        );
        assert_eq!(
            err("data_dir = 5"),
            format!("`data_dir` must be a string, not integer 5{}", at(1))
        );
        assert_eq!(
            err("log_level = true"),
            format!("`log_level` must be a string, not boolean true{}", at(1))
        );
        assert_eq!(
            err("c2s = 1"),
            format!("`c2s` must be a table, not integer 1{}", at(1))
        );
        assert_eq!(
            err("[c2s]\nauth_timeout_secs = '60'"),
            format!(
                "`c2s.auth_timeout_secs` must be an integer, not string \"60\"{}",
                at(2)
            )
        );
        assert_eq!(
            err("[c2s]\nlisten = '[::]:5222'"),
            format!(
                "`c2s.listen` must be an array of strings, not string \"[::]:5222\"{}",
                at(2)
            )
        );
        assert_eq!(
            err("[tls]\ncerts = {}"),
            format!(
                "`tls.certs` must be an array of tables, not a table{}",
                at(2)
            )
        );
        assert_eq!(
            err("[tls]\ncerts = ['x']"),
            format!("`tls.certs[0]` must be a table, not string \"x\"{}", at(2))
        );
        assert_eq!(
            err("[tls]\ncerts = [{ domain = 1 }]"),
            format!(
                "`tls.certs[0].domain` must be a string, not integer 1{}",
                at(2)
            )
        );
    }

    #[test]
    fn invalid_socket_address_named() {
        assert_eq!(
            err("[c2s]\nlisten_tls = ['[::]:5223', 'localhost:5223']"),
            format!(
                "`c2s.listen_tls` value \"localhost:5223\" is not a socket address (an IP address \
                 and port, like \"[::]:5222\" or \"0.0.0.0:5222\"){}",
                at(2)
            )
        );
    }

    #[test]
    fn listeners_both_empty_or_repeated_rejected() {
        assert_eq!(
            err("[c2s]\nlisten = []\nlisten_tls = []"),
            format!(
                "`c2s.listen` and `c2s.listen_tls` are both empty, so no client could connect{}",
                at(1)
            )
        );
        assert_eq!(
            err("[c2s]\nlisten = ['0.0.0.0:5222']\nlisten_tls = ['0.0.0.0:5222']"),
            format!(
                "`c2s`: the socket address \"0.0.0.0:5222\" is listed twice{}",
                at(3)
            )
        );
        assert_eq!(
            err("[c2s]\nlisten = ['[::1]:1', '[::1]:1']"),
            format!(
                "`c2s`: the socket address \"[::1]:1\" is listed twice{}",
                at(2)
            )
        );
    }

    #[test]
    fn zero_and_negative_limits_rejected() {
        for key in [
            "max_connections",
            "max_depth",
            "max_attrs",
            "max_outgoing_bytes",
            "max_sessions_per_account",
        ] {
            assert_eq!(
                err(&format!("[limits]\n{key} = 0")),
                format!("`limits.{key}` = 0 is invalid: must be at least 1{}", at(2))
            );
        }
        assert_eq!(
            err("[c2s]\nmax_auth_failures = 0"),
            format!(
                "`c2s.max_auth_failures` = 0 is invalid: must be at least 1{}",
                at(2)
            )
        );
        assert_eq!(
            err("[c2s]\nauth_timeout_secs = 0"),
            format!(
                "`c2s.auth_timeout_secs` = 0 is invalid: must be at least 1{}",
                at(2)
            )
        );
        assert_eq!(
            err("[c2s]\nidle_timeout_secs = -5"),
            format!(
                "`c2s.idle_timeout_secs` = -5 is invalid: must be at least 0{}",
                at(2)
            )
        );
        assert_eq!(
            err("[storage]\ncache_bytes = -1"),
            format!(
                "`storage.cache_bytes` = -1 is invalid: must be at least 0{}",
                at(2)
            )
        );
    }

    #[test]
    fn oversized_values_rejected() {
        assert_eq!(
            err("[c2s]\nauth_failure_delay_ms = 3_600_001"),
            format!(
                "`c2s.auth_failure_delay_ms` = 3600001 is invalid: must be at most 3600000{}",
                at(2)
            )
        );
        assert_eq!(
            err("[c2s]\nidle_timeout_secs = 31536001"),
            format!(
                "`c2s.idle_timeout_secs` = 31536001 is invalid: must be at most 31536000{}",
                at(2)
            )
        );
        assert_eq!(
            err("[c2s]\nmax_auth_failures = 4294967296"),
            format!(
                "`c2s.max_auth_failures` = 4294967296 is invalid: too large{}",
                at(2)
            )
        );
    }

    #[test]
    fn small_max_stanza_bytes_rejected() {
        assert_eq!(
            err("[limits]\nmax_stanza_bytes = 9999"),
            format!(
                "`limits.max_stanza_bytes` = 9999 is invalid: must be at least 10000 (RFC 6120 §13.12){}",
                at(2)
            )
        );
    }

    #[test]
    fn bad_domains_rejected() {
        assert_eq!(
            err("domains = []"),
            format!("`domains` is empty: at least one domain is needed{}", at(1))
        );
        assert_eq!(
            err("domains = ['bad domain']"),
            format!(
                "`domains` value \"bad domain\" is not a valid domain: a forbidden character{}",
                at(1)
            )
        );
        assert_eq!(
            err("domains = ['user@example.org']"),
            format!(
                "`domains` value \"user@example.org\" is not a valid domain: a forbidden character{}",
                at(1)
            )
        );
        assert_eq!(
            err("domains = ['']"),
            format!(
                "`domains` value \"\" is not a valid domain: an empty part{}",
                at(1)
            )
        );
        assert_eq!(
            err("domains = ['example.org', 'EXAMPLE.org.']"),
            format!("`domains` lists \"example.org\" twice{}", at(1))
        );
    }

    #[test]
    fn bad_log_level_rejected() {
        assert_eq!(
            err("log_level = 'verbose'"),
            format!(
                "`log_level` value \"verbose\" is invalid: expected one of error, warn, info, debug, trace{}",
                at(1)
            )
        );
    }

    #[test]
    fn empty_data_dir_rejected() {
        assert_eq!(
            err("data_dir = ''"),
            format!("`data_dir` is empty{}", at(1))
        );
    }

    #[test]
    fn cert_entries_checked_against_domains() {
        assert_eq!(
            err(
                "domains = ['a.example']\n[tls]\ncerts = [\n  { domain = 'b.example', cert = 'c', key = 'k' },\n]"
            ),
            format!(
                "`tls.certs[0].domain` value \"b.example\" is not one of `domains`{}",
                at(4)
            )
        );
        assert_eq!(
            err(
                "[tls]\ncerts = [{ domain = 'localhost', cert = 'c', key = 'k' },\n  { domain = 'LocalHost', cert = 'c2', key = 'k2' }]"
            ),
            format!(
                "`tls.certs[1].domain`: \"localhost\" has a second certificate entry{}",
                at(3)
            )
        );
        assert_eq!(
            err("[tls]\ncerts = [{ domain = 'localhost', cert = 'c' }]"),
            format!("`tls.certs[0]` needs `key`{}", at(2))
        );
        assert_eq!(
            err("[[tls.certs]]\ncert = 'c'\nkey = 'k'"),
            format!("`tls.certs[0]` needs `domain`{}", at(2))
        );
        assert_eq!(
            err("[tls]\ncerts = [{ domain = 'localhost', cert = '', key = 'k' }]"),
            format!("`tls.certs[0].cert` is empty{}", at(2))
        );
    }

    #[test]
    fn cert_entry_domain_normalised() {
        let c = parse(
            "domains = ['example.org']\n[[tls.certs]]\ndomain = 'Example.Org'\ncert = 'c'\nkey = 'k'",
        );
        assert_eq!(c.tls.certs[0].domain, "example.org");
        assert!(c.hosts("example.org"));
    }

    #[test]
    fn archive_table_sets_retention_and_rejects_unknown_keys() {
        let c = parse("[archive]\nenabled = false\nmax_age_days = 30\nmax_messages = 500\n");
        assert!(!c.archive.enabled);
        assert_eq!(c.archive.max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.archive.max_messages, 500);
        let c = parse("[archive]\nmax_age_days = 0\n");
        assert_eq!(c.archive.max_age, None);
        assert_eq!(c.archive.max_messages, 10_000);
        assert!(err("[archive]\nmax_messages = 0\n").contains("at least 1"));
        assert!(err("[archive]\nbogus = 1\n").contains("archive.bogus"));
    }

    #[test]
    fn c2s_stream_management_keys_parse_and_ack_timeout_zero_refused() {
        let c = parse(
            "[c2s]\nresume_timeout_secs = 0\nmax_unacked_stanzas = 20\nack_timeout_secs = 5\n",
        );
        assert_eq!(c.c2s.resume_timeout, Duration::ZERO);
        assert_eq!(c.c2s.max_unacked_stanzas, 20);
        assert_eq!(c.c2s.ack_timeout, Duration::from_secs(5));
        assert_eq!(Config::default().c2s.ack_timeout, Duration::from_secs(30));
        assert!(err("[c2s]\nack_timeout_secs = 0\n").contains("at least 1"));
    }
}
