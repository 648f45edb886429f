//! Certificate selection by SNI (RFC 6066 §3): one certificate per hosted domain.
//!
//! Owns: mapping the client's server name to a hosted domain's certificate. A name equal to
//! a hosted domain gets that domain's certificate; a subdomain of a hosted domain (say
//! `conference.example.org`) gets the closest hosted parent's, as a convenience for
//! components that have no certificate of their own; anything else, and a client that sends
//! no SNI (e.g. one connecting to an IP address), gets the first domain's certificate.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of the hosted domains; the first one is the default.
#[derive(Debug)]
pub struct SniResolver {
    /// (normalised domain, its certificate), in `Config::domains` order; never empty.
    certs: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `None` if `certs` is empty (a configuration always hosts at least one domain).
    pub fn new(certs: Vec<(String, Arc<CertifiedKey>)>) -> Option<SniResolver> {
        let default = certs.first()?.1.clone();
        Some(SniResolver { certs, default })
    }

    /// The certificate for `server_name` (as sent in SNI; any case, optional trailing dot).
    pub fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|n| self.find(n))
            .unwrap_or_else(|| self.default.clone())
    }

    /// The certificate of the hosted domain `name` or of its closest hosted parent; `None`
    /// if neither is hosted (no default: s2s presents a certificate only for its own domain).
    pub fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // From the whole name towards shorter parents; each step drops one label, so the
        // loop runs at most once per label.
        let mut candidate = name.as_str();
        loop {
            if let Some((_, key)) = self.certs.iter().find(|(d, _)| d == candidate) {
                return Some(key.clone());
            }
            match candidate.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => candidate = parent,
                _ => return None,
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::selfsigned;
    use ring::rand::SystemRandom;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn key(domain: &str) -> Arc<CertifiedKey> {
        let made = selfsigned::generate(domain, 1_767_225_600, &SystemRandom::new()).unwrap();
        let signing = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(made.key_pkcs8),
        ))
        .unwrap();
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(made.cert_der)],
            signing,
        ))
    }

    fn resolver() -> (SniResolver, [Arc<CertifiedKey>; 3]) {
        let keys = [
            key("localhost"),
            key("example.org"),
            key("chat.example.org"),
        ];
        let r = SniResolver::new(vec![
            ("localhost".into(), keys[0].clone()),
            ("example.org".into(), keys[1].clone()),
            ("chat.example.org".into(), keys[2].clone()),
        ])
        .unwrap();
        (r, keys)
    }

    #[test]
    fn lookup_exact_domain_any_case() {
        let (r, k) = resolver();
        assert!(Arc::ptr_eq(&r.lookup(Some("example.org")), &k[1]));
        assert!(Arc::ptr_eq(&r.lookup(Some("EXAMPLE.Org.")), &k[1]));
        assert!(Arc::ptr_eq(&r.lookup(Some("chat.example.org")), &k[2]));
    }

    #[test]
    fn lookup_subdomain_gets_closest_parent() {
        let (r, k) = resolver();
        assert!(Arc::ptr_eq(
            &r.lookup(Some("conference.example.org")),
            &k[1]
        ));
        assert!(Arc::ptr_eq(&r.lookup(Some("muc.chat.example.org")), &k[2]));
    }

    #[test]
    fn lookup_unknown_or_absent_gets_first_domain() {
        let (r, k) = resolver();
        assert!(Arc::ptr_eq(&r.lookup(None), &k[0]));
        assert!(Arc::ptr_eq(&r.lookup(Some("other.net")), &k[0]));
        assert!(Arc::ptr_eq(&r.lookup(Some("example.org.evil")), &k[0]));
        assert!(Arc::ptr_eq(&r.lookup(Some("")), &k[0]));
        assert!(Arc::ptr_eq(&r.lookup(Some("org")), &k[0]));
    }

    #[test]
    fn new_without_certs_is_none() {
        assert!(SniResolver::new(Vec::new()).is_none());
    }
}
