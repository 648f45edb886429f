//! Configuration: the typed, validated settings the server runs with, and loading them from a
//! TOML file. (SKELETON: the config helper writes the loader.)
//!
//! Relative paths in the file resolve against the file's folder; an unknown key is an error
//! that names it. Without a file, `Config::default()` is the built-in newcomer's setup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// redb page cache (redb's own default is 1 GiB).
    pub cache_bytes: usize,
}

/// All settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub source: ConfigSource,
    /// Hosted domains, normalised (lowercase); never empty.
    pub domains: Vec<String>,
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
    pub c2s: C2sSettings,
    pub limits: Limits,
    pub storage: StorageSettings,
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
            },
            limits: Limits {
                max_connections: 1024,
                max_stanza_bytes: 256 * 1024,
                max_depth: 64,
                max_attrs: 64,
                max_outgoing_bytes: 1024 * 1024,
                max_sessions_per_account: 16,
            },
            storage: StorageSettings {
                cache_bytes: 4 * 1024 * 1024,
            },
            log_level: "info".to_owned(),
        }
    }
}

/// Why a configuration could not be loaded; `Display` names the file, key and problem.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Loads `path`; relative paths inside resolve against its folder.
    pub fn load(_path: &Path) -> Result<Config, ConfigError> {
        todo!("config helper")
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
