//! Peer certificates on federation (s2s) streams: the verifiers rustls calls during the
//! handshake, the trust roots, and the names a validated certificate proves.
//!
//! Owns: deciding which DNS names of a peer's certificate may be believed. Leaves matching a
//! domain against them (and choosing SASL EXTERNAL or dialback) to the core.
//!
//! Why the handshake never fails on the certificate: server dialback (XEP-0220) over TLS is
//! allowed with any certificate when `require_valid_certificates` is false, so an untrusted
//! or self-signed certificate must not abort the stream; the core decides. The verifiers
//! below therefore accept every chain, but they still check the handshake signatures with the
//! presented key (so the peer holds the key of the certificate it showed). Once the handshake
//! is done the driver validates the chain with webpki ([`peer_names`], [`server_names`]) and
//! reports the names only when it is valid.
//!
//! Extended key usage: a peer that connects to us presents its certificate as a TLS *client*,
//! but Let's Encrypt's new profile issues serverAuth-only certificates, and refusing those
//! broke federation for ejabberd and Metronome users. A chain valid for serverAuth OR
//! clientAuth is accepted on incoming streams.
//!
//! Roots: `[s2s] ca_file` or the system bundle, loaded at the first use (about 150 roots are
//! ~70 KB that a server without federation traffic should not carry), dropped on SIGHUP so
//! the next use reads them again ([`LazyRoots`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

use super::{TlsError, pem};

/// The system's trust roots (Debian's `ca-certificates`), used when `ca_file` is not set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Names reported for one certificate, at most: a SAN list is normally a handful; a
/// certificate with thousands must not grow the core's state.
pub const MAX_REPORTED_NAMES: usize = 64;

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Loads trust roots from a PEM bundle; certificates webpki cannot use are skipped.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = pem::read_cert_chain(path)?;
    let mut roots = RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError(format!(
            "{}: no usable trust roots ({skipped} unusable)",
            path.display()
        )));
    }
    log::debug!(
        "loaded {added} trust roots from {} ({skipped} skipped)",
        path.display()
    );
    Ok(roots)
}

/// The s2s trust roots, read at the first use and kept until [`LazyRoots::reset`].
pub struct LazyRoots {
    path: PathBuf,
    roots: Option<Arc<RootCertStore>>,
}

impl LazyRoots {
    /// `ca_file` or, without one, the system bundle. Nothing is read yet.
    pub fn new(ca_file: Option<&Path>) -> LazyRoots {
        LazyRoots {
            path: ca_file.map_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE), Path::to_path_buf),
            roots: None,
        }
    }

    /// The roots, reading them now if needed. A file that cannot be read gives an empty store
    /// (no peer certificate validates; dialback still works), logged once per load.
    pub fn get(&mut self) -> Arc<RootCertStore> {
        if let Some(r) = &self.roots {
            return r.clone();
        }
        let roots = match load_roots(&self.path) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("s2s trust roots unavailable, no peer certificate will validate: {e}");
                RootCertStore::empty()
            }
        };
        let roots = Arc::new(roots);
        self.roots = Some(roots.clone());
        roots
    }

    /// Forgets the roots (SIGHUP): the next use reads the file again.
    pub fn reset(&mut self) {
        self.roots = None;
    }

    /// Whether the roots are in memory (for the memory test).
    pub fn is_loaded(&self) -> bool {
        self.roots.is_some()
    }
}

/// Which extended key usage a chain must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    ServerAuth,
    ClientAuth,
}

/// Whether `chain` (leaf first) validates against `roots` at `now` for `usage`.
fn chain_valid<'a>(
    roots: &RootCertStore,
    chain: &'a [CertificateDer<'a>],
    now: UnixTime,
    usage: Usage,
) -> Option<webpki::EndEntityCert<'a>> {
    let (leaf, intermediates) = chain.split_first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let eku = match usage {
        Usage::ServerAuth => webpki::KeyUsage::server_auth(),
        Usage::ClientAuth => webpki::KeyUsage::client_auth(),
    };
    let algs = algorithms();
    cert.verify_for_usage(algs.all, &roots.roots, intermediates, now, eku, None, None)
        .ok()?;
    Some(cert)
}

fn dns_names(cert: &webpki::EndEntityCert<'_>) -> Vec<String> {
    cert.valid_dns_names()
        .take(MAX_REPORTED_NAMES)
        .map(|n| n.to_ascii_lowercase())
        .collect()
}

/// Incoming s2s: the DNS names (lowercase, wildcards kept) of a peer's client certificate
/// whose chain is valid for serverAuth or clientAuth; empty if none was presented or it is
/// not valid.
pub fn peer_names<'a>(
    roots: &RootCertStore,
    chain: &'a [CertificateDer<'a>],
    now: UnixTime,
) -> Vec<String> {
    chain_valid(roots, chain, now, Usage::ServerAuth)
        .or_else(|| chain_valid(roots, chain, now, Usage::ClientAuth))
        .map(|c| dns_names(&c))
        .unwrap_or_default()
}

/// Outgoing s2s: the certificate's DNS names when its chain is valid for serverAuth and it
/// is valid for `server_name` (RFC 6125: the remote domain, never the SRV target); empty
/// otherwise.
pub fn server_names<'a>(
    roots: &RootCertStore,
    chain: &'a [CertificateDer<'a>],
    server_name: &str,
    now: UnixTime,
) -> Vec<String> {
    let Ok(name) = ServerName::try_from(server_name) else {
        return Vec::new();
    };
    match chain_valid(roots, chain, now, Usage::ServerAuth) {
        Some(c) if c.verify_is_valid_for_subject_name(&name).is_ok() => dns_names(&c),
        _ => Vec::new(),
    }
}

/// Server side of s2s: asks for a client certificate, never requires one, and accepts any
/// chain (validated after the handshake by [`peer_names`]); signatures are checked.
#[derive(Debug)]
pub struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    pub fn new() -> AnyClientCert {
        AnyClientCert { algs: algorithms() }
    }
}

impl Default for AnyClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a peer picks its certificate by its own domain, not by our roots.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client side of s2s: accepts any server chain (validated after the handshake by
/// [`server_names`]); signatures are checked.
#[derive(Debug)]
pub struct AnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

impl AnyServerCert {
    pub fn new() -> AnyServerCert {
        AnyServerCert { algs: algorithms() }
    }
}

impl Default for AnyServerCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client::client_config;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConnection, ServerConfig, ServerConnection};
    use std::process::Command;

    /// A folder of certificates made by the `openssl` command line: a test CA, and leaves
    /// signed by it. `None` (with a message) if openssl is not installed.
    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        fn new(name: &str) -> Option<Pki> {
            if Command::new("openssl").arg("version").output().is_err() {
                eprintln!("openssl not installed: skipping certificate verification test");
                return None;
            }
            let dir =
                std::env::temp_dir().join(format!("hearth-verify-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let pki = Pki { dir };
            pki.ca("ca");
            Some(pki)
        }

        fn run(&self, args: &[&str]) {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// A self-signed CA `name`.crt / `name`.key.
        fn ca(&self, name: &str) {
            self.run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-subj",
                &format!("/CN=Hearth test {name}"),
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }

        /// A leaf `name`.crt / `name`.key signed by CA `ca`, with these SANs and EKUs.
        fn leaf(&self, name: &str, ca: &str, sans: &[&str], eku: &str) {
            let ext = self.dir.join(format!("{name}.ext"));
            let sans: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
            std::fs::write(
                &ext,
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                     extendedKeyUsage={eku}\nsubjectAltName={}\n",
                    sans.join(",")
                ),
            )
            .unwrap();
            self.run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            self.run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                "0x4242",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]);
        }

        fn chain(&self, name: &str) -> Vec<CertificateDer<'static>> {
            pem::read_cert_chain(&self.dir.join(format!("{name}.crt"))).unwrap()
        }

        fn key(&self, name: &str) -> PrivateKeyDer<'static> {
            pem::read_private_key(&self.dir.join(format!("{name}.key"))).unwrap()
        }

        fn certified(&self, cert: &str, key: &str) -> Arc<CertifiedKey> {
            let signing = rustls::crypto::ring::sign::any_supported_type(&self.key(key)).unwrap();
            Arc::new(CertifiedKey::new(self.chain(cert), signing))
        }

        fn roots(&self) -> RootCertStore {
            load_roots(&self.dir.join("ca.crt")).unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn incoming_serverauth_only_leaf_names_reported() {
        let Some(pki) = Pki::new("srvonly") else {
            return;
        };
        pki.leaf("leaf", "ca", &["A.test", "xmpp.a.test"], "serverAuth");
        assert_eq!(
            peer_names(&pki.roots(), &pki.chain("leaf"), now()),
            ["a.test", "xmpp.a.test"]
        );
    }

    #[test]
    fn incoming_clientauth_only_leaf_names_reported() {
        let Some(pki) = Pki::new("clionly") else {
            return;
        };
        pki.leaf("leaf", "ca", &["a.test"], "clientAuth");
        assert_eq!(
            peer_names(&pki.roots(), &pki.chain("leaf"), now()),
            ["a.test"]
        );
    }

    #[test]
    fn incoming_email_only_eku_no_names() {
        let Some(pki) = Pki::new("email") else {
            return;
        };
        pki.leaf("leaf", "ca", &["a.test"], "emailProtection");
        assert!(peer_names(&pki.roots(), &pki.chain("leaf"), now()).is_empty());
    }

    #[test]
    fn incoming_untrusted_ca_no_names() {
        let Some(pki) = Pki::new("untrusted") else {
            return;
        };
        pki.ca("other");
        pki.leaf("leaf", "other", &["a.test"], "serverAuth,clientAuth");
        assert!(peer_names(&pki.roots(), &pki.chain("leaf"), now()).is_empty());
        // Expired by the time it is checked: no names either.
        pki.leaf("good", "ca", &["a.test"], "serverAuth");
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now().as_secs() + 10 * 24 * 3600,
        ));
        assert!(peer_names(&pki.roots(), &pki.chain("good"), later).is_empty());
        assert!(peer_names(&pki.roots(), &[], now()).is_empty());
    }

    #[test]
    fn outgoing_name_matches_names_reported_wrong_name_rejected() {
        let Some(pki) = Pki::new("outgoing") else {
            return;
        };
        pki.leaf("leaf", "ca", &["b.test"], "serverAuth");
        let roots = pki.roots();
        let chain = pki.chain("leaf");
        assert_eq!(server_names(&roots, &chain, "b.test", now()), ["b.test"]);
        assert_eq!(server_names(&roots, &chain, "B.Test", now()), ["b.test"]);
        // The SRV target is not an identity: only the remote domain counts.
        assert!(server_names(&roots, &chain, "xmpp.b.test", now()).is_empty());
        assert!(server_names(&roots, &chain, "c.test", now()).is_empty());
        assert!(server_names(&roots, &chain, "not a name", now()).is_empty());
    }

    #[test]
    fn outgoing_wildcard_names_reported_kept() {
        let Some(pki) = Pki::new("wildcard") else {
            return;
        };
        pki.leaf("leaf", "ca", &["*.b.test", "b.test"], "serverAuth");
        let (roots, chain) = (pki.roots(), pki.chain("leaf"));
        assert_eq!(
            server_names(&roots, &chain, "chat.b.test", now()),
            ["*.b.test", "b.test"]
        );
        assert_eq!(peer_names(&roots, &chain, now()), ["*.b.test", "b.test"]);
        // A wildcard covers one label only.
        assert!(server_names(&roots, &chain, "x.chat.b.test", now()).is_empty());
    }

    #[test]
    fn outgoing_clientauth_only_server_cert_rejected() {
        let Some(pki) = Pki::new("srvclionly") else {
            return;
        };
        pki.leaf("leaf", "ca", &["b.test"], "clientAuth");
        assert!(server_names(&pki.roots(), &pki.chain("leaf"), "b.test", now()).is_empty());
    }

    #[test]
    fn lazy_roots_loaded_on_first_use_reset_forgets() {
        let Some(pki) = Pki::new("lazy") else {
            return;
        };
        let mut lazy = LazyRoots::new(Some(&pki.dir.join("ca.crt")));
        assert!(!lazy.is_loaded());
        assert_eq!(lazy.get().len(), 1);
        assert!(lazy.is_loaded());
        lazy.reset();
        assert!(!lazy.is_loaded());
        // A missing file: an empty store, nothing validates, no panic.
        let mut missing = LazyRoots::new(Some(&pki.dir.join("nope.crt")));
        assert!(missing.get().is_empty());
    }

    // ---- whole handshakes with the s2s configurations ----

    fn s2s_server(cert: Arc<CertifiedKey>) -> Arc<ServerConfig> {
        let resolver =
            Arc::new(crate::tls::sni::SniResolver::new(vec![("b.test".to_owned(), cert)]).unwrap());
        let c =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(Arc::new(AnyClientCert::new()))
                .with_cert_resolver(resolver);
        Arc::new(c)
    }

    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), String> {
        crate::tls::tests::handshake(&server, client, name)
    }

    #[test]
    fn s2s_handshake_serverauth_client_cert_accepted_names_reported() {
        let Some(pki) = Pki::new("hs-valid") else {
            return;
        };
        pki.leaf("a", "ca", &["a.test"], "serverAuth");
        pki.leaf("b", "ca", &["b.test"], "serverAuth");
        let server = s2s_server(pki.certified("b", "b"));
        let client = client_config(Some(pki.certified("a", "a")), false).unwrap();
        let (c, s) = handshake(server, client, "b.test").unwrap();
        let roots = pki.roots();
        let incoming = s.peer_certificates().unwrap();
        assert_eq!(peer_names(&roots, incoming, now()), ["a.test"]);
        let outgoing = c.peer_certificates().unwrap();
        assert_eq!(server_names(&roots, outgoing, "b.test", now()), ["b.test"]);
    }

    #[test]
    fn s2s_handshake_untrusted_certs_complete_without_names() {
        let Some(pki) = Pki::new("hs-untrusted") else {
            return;
        };
        pki.ca("other");
        pki.leaf("a", "other", &["a.test"], "serverAuth");
        pki.leaf("b", "other", &["b.test"], "serverAuth");
        let server = s2s_server(pki.certified("b", "b"));
        let client = client_config(Some(pki.certified("a", "a")), true).unwrap();
        // Dialback may still run: neither side aborts the handshake.
        let (c, s) = handshake(server, client, "b.test").unwrap();
        let roots = pki.roots();
        assert!(peer_names(&roots, s.peer_certificates().unwrap(), now()).is_empty());
        assert!(server_names(&roots, c.peer_certificates().unwrap(), "b.test", now()).is_empty());
    }

    #[test]
    fn s2s_handshake_without_client_cert_completes() {
        let Some(pki) = Pki::new("hs-nocert") else {
            return;
        };
        pki.leaf("b", "ca", &["b.test"], "serverAuth");
        let server = s2s_server(pki.certified("b", "b"));
        let (_, s) = handshake(server, client_config(None, false).unwrap(), "b.test").unwrap();
        assert!(s.peer_certificates().is_none());
    }

    #[test]
    fn s2s_handshake_server_key_not_matching_cert_fails() {
        // The verifier accepts any chain but must still check the handshake signature: a
        // server showing b's certificate without b's key is refused.
        let Some(pki) = Pki::new("hs-badsig") else {
            return;
        };
        pki.leaf("b", "ca", &["b.test"], "serverAuth");
        pki.leaf("mallory", "ca", &["m.test"], "serverAuth");
        let server = s2s_server(pki.certified("b", "mallory"));
        let e = handshake(server, client_config(None, false).unwrap(), "b.test")
            .err()
            .unwrap();
        assert!(e.starts_with("client: "), "{e}");
    }

    #[test]
    fn s2s_handshake_client_key_not_matching_cert_fails() {
        let Some(pki) = Pki::new("hs-badclient") else {
            return;
        };
        pki.leaf("a", "ca", &["a.test"], "serverAuth");
        pki.leaf("b", "ca", &["b.test"], "serverAuth");
        pki.leaf("mallory", "ca", &["m.test"], "serverAuth");
        let server = s2s_server(pki.certified("b", "b"));
        let client = client_config(Some(pki.certified("a", "mallory")), false).unwrap();
        let e = handshake(server, client, "b.test").err().unwrap();
        assert!(e.starts_with("server: "), "{e}");
    }
}
