//! TLS client configurations for outgoing s2s streams, and the state the driver keeps for
//! s2s TLS between reloads.
//!
//! Owns: one rustls `ClientConfig` per (local domain, direct TLS or STARTTLS), made at the
//! first connection that needs it and kept until SIGHUP; the lazily loaded trust roots.
//!
//! Each configuration presents the local domain's certificate when the peer asks for one
//! (for SASL EXTERNAL, XEP-0178), offers ALPN `xmpp-server` for direct TLS (XEP-0368), sends
//! SNI = the remote domain (set per connection), accepts any server certificate during the
//! handshake (`verify::AnyServerCert`: the chain is judged afterwards, so dialback can still
//! run) and does not resume sessions (s2s streams are few and long-lived).

use std::path::Path;
use std::sync::Arc;

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, SignatureScheme};

use super::verify::{self, AnyServerCert, LazyRoots};
use super::{ALPN_XMPP_SERVER, TlsConfigs, TlsError};

/// Presents one certificate (or none) whatever the server hints.
#[derive(Debug)]
struct OneCert(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for OneCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .clone()
            .filter(|k| k.key.choose_scheme(sigschemes).is_some())
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// Builds a client configuration presenting `cert`.
pub fn client_config(
    cert: Option<Arc<CertifiedKey>>,
    direct: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert::new()))
        .with_client_cert_resolver(Arc::new(OneCert(cert)));
    if direct {
        c.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
    }
    c.resumption = Resumption::disabled();
    Ok(Arc::new(c))
}

/// A started client session and whether it will present a certificate.
pub struct ClientSession {
    pub tls: ClientConnection,
    /// A certificate for the local domain is configured (rustls sends it if the peer asks).
    pub presents_cert: bool,
}

/// The driver's s2s TLS state: trust roots and client configurations, both made on first
/// use. Replaced whole on SIGHUP (see [`S2sTls::reset`]).
pub struct S2sTls {
    pub roots: LazyRoots,
    /// (local domain, direct TLS, configuration); at most two per hosted domain.
    clients: Vec<(String, bool, Arc<ClientConfig>)>,
}

impl S2sTls {
    pub fn new(ca_file: Option<&Path>) -> S2sTls {
        S2sTls {
            roots: LazyRoots::new(ca_file),
            clients: Vec::new(),
        }
    }

    /// Forgets roots and client configurations (certificates were reloaded).
    pub fn reset(&mut self, ca_file: Option<&Path>) {
        self.roots = LazyRoots::new(ca_file);
        self.clients.clear();
    }

    /// A new client session to `server_name` (SNI and the identity checked later) presenting
    /// the certificate of `local_domain` if we host it.
    pub fn connect(
        &mut self,
        tls: &TlsConfigs,
        server_name: &str,
        local_domain: &str,
        direct: bool,
    ) -> Result<ClientSession, TlsError> {
        let local = local_domain.to_ascii_lowercase();
        let found = self
            .clients
            .iter()
            .find(|(d, dir, _)| *d == local && *dir == direct)
            .map(|(_, _, c)| (c.clone(), true));
        let (config, presents_cert) = match found {
            Some(f) => f,
            None => {
                let cert = tls.certs.find(&local);
                let has = cert.is_some();
                let c = client_config(cert, direct)?;
                // Bounded: only hosted domains have a certificate worth caching; others
                // share nothing and are built each time (the core never asks for them).
                if has {
                    self.clients.push((local, direct, c.clone()));
                }
                (c, has)
            }
        };
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TlsError(format!("{server_name}: not a server name: {e}")))?;
        let tls = ClientConnection::new(config, name)
            .map_err(|e| TlsError(format!("TLS client set-up failed: {e}")))?;
        Ok(ClientSession { tls, presents_cert })
    }

    /// Names of an incoming peer's valid certificate (see `verify::peer_names`).
    pub fn peer_names(&mut self, chain: Option<&[CertificateDer<'_>]>) -> Vec<String> {
        match chain {
            Some(chain) if !chain.is_empty() => {
                verify::peer_names(&self.roots.get(), chain, UnixTime::now())
            }
            _ => Vec::new(),
        }
    }

    /// Names of a remote server's certificate if valid for `server_name`.
    pub fn server_names(
        &mut self,
        chain: Option<&[CertificateDer<'_>]>,
        server_name: &str,
    ) -> Vec<String> {
        match chain {
            Some(chain) if !chain.is_empty() => {
                verify::server_names(&self.roots.get(), chain, server_name, UnixTime::now())
            }
            _ => Vec::new(),
        }
    }
}
