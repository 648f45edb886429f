//! TLS set-up: rustls server configurations (ring provider) for STARTTLS and direct TLS,
//! certificate loading per domain with SNI selection, and self-signed certificates for
//! domains without one. (SKELETON: the tls helper writes the bodies.)
//!
//! Owns: certificates and rustls configs. Leaves the handshake itself to the driver (`net`).

pub mod selfsigned;

use std::sync::Arc;

use crate::config::Config;

/// Why TLS could not be set up; names the file or domain.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server configurations handed to new connections; replaced whole on SIGHUP.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For STARTTLS on the plain c2s port (no ALPN).
    pub starttls: Arc<rustls::ServerConfig>,
    /// For direct TLS (ALPN `xmpp-client`).
    pub direct: Arc<rustls::ServerConfig>,
}

/// Builds the configurations from `config.tls` and the hosted domains, making and saving a
/// self-signed certificate in `data_dir` for each domain that has none.
pub fn load(_config: &Config) -> Result<TlsConfigs, TlsError> {
    todo!("tls helper")
}
