//! TLS set-up: rustls server configurations (ring provider only) for STARTTLS and direct TLS,
//! certificate loading per domain with SNI selection, and self-signed certificates for
//! domains without one.
//!
//! Owns: certificates and rustls configs. Leaves the handshake itself to the driver (`net`).
//!
//! - Each hosted domain with a `[tls] certs` entry uses that PEM chain and key (`pem`:
//!   PKCS#8, SEC1 EC or PKCS#1 RSA); the key must match the leaf certificate. Every other
//!   domain gets a self-signed ECDSA P-256 certificate, made on first start and kept in
//!   `<data_dir>/certs/` (`selfsigned`).
//! - The certificate is picked by SNI (`sni`), defaulting to the first domain's.
//! - `starttls` offers no ALPN; `direct` (XEP-0368) offers `xmpp-client` and, as RFC 7301
//!   §3.2 asks, refuses a client that offers only other protocols (say `h2`). A client
//!   offering no ALPN at all is accepted on both.
//! - TLS 1.3 and 1.2, rustls' safe defaults. No client certificates on c2s (SASL). The s2s
//!   configurations (`s2s_starttls`, `s2s_direct` with ALPN `xmpp-server`) ask for one,
//!   never require it and accept any chain; `verify` judges it after the handshake, and
//!   `client` makes the configurations for outgoing s2s streams.
//! - Resumption: one stateful session cache of [`SESSION_CACHE_ENTRIES`] shared by both
//!   configurations, and one TLS 1.3 ticket per handshake (rustls sends two by default). A
//!   mobile client reconnecting often skips the certificate signature and key exchange,
//!   which matters on a small CPU, while memory stays bounded (an entry is a few hundred
//!   bytes, so well under 100 KB). Stateless tickets are off: they would need a rotating
//!   ticket key and weaken forward secrecy for no memory gain worth having here.
//!
//! `load` does file I/O and is meant to run at start and on SIGHUP, outside the event loop's
//! hot path.

pub mod client;
pub mod der;
pub mod pem;
pub mod selfsigned;
pub mod sni;
pub mod verify;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys, ServerConfig};

use crate::config::Config;
use sni::SniResolver;

/// ALPN protocol id for direct TLS c2s (XEP-0368 §4).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// ALPN protocol id for direct TLS s2s (XEP-0368 §4).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Resumable TLS sessions kept in memory, shared by both configurations.
pub const SESSION_CACHE_ENTRIES: usize = 256;

/// Why TLS could not be set up; names the file or domain.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The server configurations handed to new connections; replaced whole on SIGHUP.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For STARTTLS on the plain c2s port (no ALPN).
    pub starttls: Arc<rustls::ServerConfig>,
    /// For direct TLS (ALPN `xmpp-client`).
    pub direct: Arc<rustls::ServerConfig>,
    /// For STARTTLS on an s2s stream we accepted: asks for (never requires) a client
    /// certificate, accepting any chain (see `verify`).
    pub s2s_starttls: Arc<rustls::ServerConfig>,
    /// For direct TLS s2s (ALPN `xmpp-server`), client certificates as `s2s_starttls`.
    pub s2s_direct: Arc<rustls::ServerConfig>,
    /// The hosted domains' certificates: served by SNI, and presented as a client on
    /// outgoing s2s streams (`client`).
    pub certs: Arc<SniResolver>,
}

/// Builds the configurations from `config.tls` and the hosted domains, making and saving a
/// self-signed certificate in `data_dir` for each domain that has none.
pub fn load(config: &Config) -> Result<TlsConfigs, TlsError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    load_at(config, now)
}

/// [`load`] with the clock as an argument (used for new self-signed certificates).
fn load_at(config: &Config, now_unix_secs: u64) -> Result<TlsConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs_dir = config.data_dir.join("certs");
    let mut keys = Vec::with_capacity(config.domains.len());
    for domain in &config.domains {
        let key = match config.tls.certs.iter().find(|c| &c.domain == domain) {
            Some(entry) => {
                let chain = pem::read_cert_chain(&entry.cert)?;
                let key = pem::read_private_key(&entry.key)?;
                certified_key(&provider, chain, key, &entry.cert, &entry.key)?
            }
            None => {
                let (chain, key) = selfsigned::load_or_create(&certs_dir, domain, now_unix_secs)?;
                let (crt, key_path) = selfsigned::paths(&certs_dir, domain);
                certified_key(&provider, chain, key, &crt, &key_path)?
            }
        };
        log::debug!("TLS certificate for {domain} loaded");
        keys.push((domain.clone(), Arc::new(key)));
    }
    let resolver =
        Arc::new(SniResolver::new(keys).ok_or_else(|| TlsError("no hosted domains".to_owned()))?);
    let sessions = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, TlsError> {
        let mut c = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        c.alpn_protocols = alpn;
        c.session_storage = sessions.clone();
        c.send_tls13_tickets = 1;
        Ok(Arc::new(c))
    };
    // s2s: peers reconnect rarely and must show their certificate each time, so no
    // resumption (a resumed session would also skip the client certificate).
    let client_certs = Arc::new(verify::AnyClientCert::new());
    let build_s2s = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, TlsError> {
        let mut c = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
            .with_client_cert_verifier(client_certs.clone())
            .with_cert_resolver(resolver.clone());
        c.alpn_protocols = alpn;
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        c.send_tls13_tickets = 0;
        Ok(Arc::new(c))
    };
    Ok(TlsConfigs {
        starttls: build(Vec::new())?,
        direct: build(vec![ALPN_XMPP_CLIENT.to_vec()])?,
        s2s_starttls: build_s2s(Vec::new())?,
        s2s_direct: build_s2s(vec![ALPN_XMPP_SERVER.to_vec()])?,
        certs: resolver,
    })
}

/// Pairs a chain with its key, checking that the key belongs to the leaf certificate.
fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError(format!("{}: unusable private key: {e}", key_path.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls cannot tell, nor can we.
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError(format!(
                "private key {} does not belong to certificate {}",
                key_path.display(),
                cert_path.display()
            )))
        }
        Err(e) => Err(TlsError(format!(
            "certificate {} with key {}: {e}",
            cert_path.display(),
            key_path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertEntry;
    use ring::rand::SystemRandom;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
    use std::path::PathBuf;

    /// A fresh, empty folder under the system temp dir (tests run in parallel).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(dir: &Path, domains: &[&str]) -> Config {
        Config {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    fn read_crt(dir: &Path, domain: &str) -> CertificateDer<'static> {
        let (crt, _) = selfsigned::paths(&dir.join("data").join("certs"), domain);
        pem::read_cert_chain(&crt).unwrap().remove(0)
    }

    /// Writes a generated certificate and key as PEM files; returns their paths.
    fn write_pem_pair(dir: &Path, name: &str, domain: &str) -> (PathBuf, PathBuf) {
        let made = selfsigned::generate(domain, now(), &SystemRandom::new()).unwrap();
        let (crt, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&crt, pem::encode("CERTIFICATE", &made.cert_der)).unwrap();
        std::fs::write(&key, pem::encode("PRIVATE KEY", &made.key_pkcs8)).unwrap();
        (crt, key)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A client trusting exactly `anchors` (self-signed certificates as their own roots).
    fn client(anchors: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for a in anchors {
            roots.add(a.clone()).unwrap();
        }
        let mut c =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    /// Runs a handshake in memory; on failure says which side failed and why. Also used by
    /// `verify`'s tests.
    pub(super) fn handshake(
        server: &Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), String> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut c = ClientConnection::new(client, name).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        // A TLS 1.3 handshake takes two round trips, 1.2 a few more; ten is plenty.
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()
                    .map_err(|e| format!("server: {e}"))?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()
                    .map_err(|e| format!("client: {e}"))?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        Err("handshake did not finish".to_owned())
    }

    fn served_cert(c: &ClientConnection) -> CertificateDer<'static> {
        c.peer_certificates().unwrap()[0].clone().into_owned()
    }

    #[test]
    fn load_self_signed_creates_files_then_reuses_them() {
        let dir = temp_dir("reuse");
        let cfg = config(&dir, &["localhost", "example.org"]);
        let first = load(&cfg).unwrap();
        let certs = dir.join("data").join("certs");
        let mut names: Vec<_> = std::fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "example.org.crt",
                "example.org.key",
                "localhost.crt",
                "localhost.key"
            ]
        );
        let crt_before = std::fs::read(certs.join("example.org.crt")).unwrap();
        let key_before = std::fs::read(certs.join("example.org.key")).unwrap();

        let second = load(&cfg).unwrap();
        assert_eq!(
            std::fs::read(certs.join("example.org.crt")).unwrap(),
            crt_before
        );
        assert_eq!(
            std::fs::read(certs.join("example.org.key")).unwrap(),
            key_before
        );
        // Both loads serve the saved certificate.
        let anchor = read_crt(&dir, "example.org");
        for tls in [first, second] {
            let (c, _) = handshake(
                &tls.starttls,
                client(std::slice::from_ref(&anchor), &[]),
                "example.org",
            )
            .unwrap();
            assert_eq!(served_cert(&c), anchor);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_pem_entry_served_for_its_domain() {
        let dir = temp_dir("pem");
        let (crt, key) = write_pem_pair(&dir, "fullchain", "example.org");
        let mut cfg = config(&dir, &["localhost", "example.org"]);
        cfg.tls.certs.push(CertEntry {
            domain: "example.org".into(),
            cert: crt.clone(),
            key,
        });
        let tls = load(&cfg).unwrap();
        let anchor = pem::read_cert_chain(&crt).unwrap().remove(0);
        let (c, _) = handshake(
            &tls.direct,
            client(std::slice::from_ref(&anchor), &[]),
            "example.org",
        )
        .unwrap();
        assert_eq!(served_cert(&c), anchor);
        // Only the domain without an entry got a self-signed certificate.
        assert!(dir.join("data/certs/localhost.crt").exists());
        assert!(!dir.join("data/certs/example.org.crt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Keys in the other two formats, made by OpenSSL (`ecparam -genkey`, `genrsa
    /// -traditional`) with 100-year self-signed certificates: test fixtures, not secrets.
    #[test]
    fn load_openssl_sec1_and_pkcs1_keys_served() {
        let dir = temp_dir("openssl");
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata");
        let mut cfg = config(&dir, &["example.org", "example.net"]);
        for (domain, crt, key) in [
            ("example.org", "ec.crt", "ec-sec1.key"),
            ("example.net", "rsa.crt", "rsa-pkcs1.key"),
        ] {
            cfg.tls.certs.push(CertEntry {
                domain: domain.into(),
                cert: data.join(crt),
                key: data.join(key),
            });
        }
        let tls = load(&cfg).unwrap();
        for (domain, crt) in [("example.org", "ec.crt"), ("example.net", "rsa.crt")] {
            let anchor = pem::read_cert_chain(&data.join(crt)).unwrap().remove(0);
            let (c, _) = handshake(
                &tls.direct,
                client(std::slice::from_ref(&anchor), &[]),
                domain,
            )
            .unwrap();
            assert_eq!(served_cert(&c), anchor);
        }
        // Nothing was generated: every domain has its entry.
        assert!(!dir.join("data").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_missing_cert_file_names_it() {
        let dir = temp_dir("missing");
        let mut cfg = config(&dir, &["example.org"]);
        let crt = dir.join("nope.pem");
        cfg.tls.certs.push(CertEntry {
            domain: "example.org".into(),
            cert: crt.clone(),
            key: dir.join("nope-key.pem"),
        });
        let e = load(&cfg).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("cannot read certificate file {}: ", crt.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_key_not_matching_cert_rejected() {
        let dir = temp_dir("mismatch");
        let (crt, _) = write_pem_pair(&dir, "a", "example.org");
        let (_, other_key) = write_pem_pair(&dir, "b", "example.org");
        let mut cfg = config(&dir, &["example.org"]);
        cfg.tls.certs.push(CertEntry {
            domain: "example.org".into(),
            cert: crt.clone(),
            key: other_key.clone(),
        });
        assert_eq!(
            load(&cfg).err().unwrap().to_string(),
            format!(
                "private key {} does not belong to certificate {}",
                other_key.display(),
                crt.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_garbage_key_rejected() {
        let dir = temp_dir("garbage");
        let (crt, key) = write_pem_pair(&dir, "a", "example.org");
        std::fs::write(&key, pem::encode("PRIVATE KEY", b"not a key")).unwrap();
        let mut cfg = config(&dir, &["example.org"]);
        cfg.tls.certs.push(CertEntry {
            domain: "example.org".into(),
            cert: crt,
            key: key.clone(),
        });
        let e = load(&cfg).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("{}: unusable private key: ", key.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_sni_selects_domain_certificate() {
        let dir = temp_dir("sni");
        let cfg = config(&dir, &["localhost", "example.org", "example.net"]);
        let tls = load(&cfg).unwrap();
        let anchors: Vec<_> = cfg.domains.iter().map(|d| read_crt(&dir, d)).collect();
        for (domain, anchor) in cfg.domains.iter().zip(&anchors) {
            let (c, _) = handshake(&tls.starttls, client(&anchors, &[]), domain).unwrap();
            assert_eq!(&served_cert(&c), anchor, "{domain}");
        }
        // No SNI (an IP address): the first domain's, valid for 127.0.0.1 too.
        let (c, s) = handshake(&tls.starttls, client(&anchors, &[]), "127.0.0.1").unwrap();
        assert_eq!(s.server_name(), None);
        assert_eq!(served_cert(&c), anchors[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_wrong_anchor_fails_verification() {
        let dir = temp_dir("wrong");
        let tls = load(&config(&dir, &["localhost", "example.org"])).unwrap();
        // Trusting only localhost's certificate, example.org's must not verify.
        let e = handshake(
            &tls.starttls,
            client(&[read_crt(&dir, "localhost")], &[]),
            "example.org",
        )
        .err()
        .unwrap();
        assert!(e.starts_with("client: invalid peer certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_alpn_negotiates_xmpp_client() {
        let dir = temp_dir("alpn");
        let tls = load(&config(&dir, &["localhost"])).unwrap();
        let anchor = read_crt(&dir, "localhost");
        let (c, s) = handshake(
            &tls.direct,
            client(std::slice::from_ref(&anchor), &[b"h2", b"xmpp-client"]),
            "localhost",
        )
        .unwrap();
        assert_eq!(c.alpn_protocol(), Some(ALPN_XMPP_CLIENT));
        assert_eq!(s.alpn_protocol(), Some(ALPN_XMPP_CLIENT));
        // A client offering no ALPN at all is still served.
        let (c, _) = handshake(&tls.direct, client(&[anchor], &[]), "localhost").unwrap();
        assert_eq!(c.alpn_protocol(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_alpn_h2_only_refused() {
        let dir = temp_dir("h2");
        let tls = load(&config(&dir, &["localhost"])).unwrap();
        let anchor = read_crt(&dir, "localhost");
        let e = handshake(&tls.direct, client(&[anchor], &[b"h2"]), "localhost")
            .err()
            .unwrap();
        assert_eq!(e, format!("server: {}", RustlsError::NoApplicationProtocol));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn starttls_offers_no_alpn() {
        let dir = temp_dir("starttls");
        let tls = load(&config(&dir, &["localhost"])).unwrap();
        let anchor = read_crt(&dir, "localhost");
        let (c, _) = handshake(
            &tls.starttls,
            client(&[anchor], &[b"xmpp-client"]),
            "localhost",
        )
        .unwrap();
        assert_eq!(c.alpn_protocol(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_tls12_client_served() {
        let dir = temp_dir("tls12");
        let tls = load(&config(&dir, &["localhost"])).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(read_crt(&dir, "localhost")).unwrap();
        let c =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let (c, _) = handshake(&tls.starttls, Arc::new(c), "localhost").unwrap();
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
