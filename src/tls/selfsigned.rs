//! Self-signed certificates for hosted domains without a configured one, so that a newcomer's
//! server speaks TLS from the first start (clients will ask the user to trust it).
//!
//! Owns: making an ECDSA P-256 key (ring) and a minimal X.509 v3 certificate for it (DER via
//! `der`, RFC 5280), and keeping both in `<data_dir>/certs/<domain>.crt` and `<domain>.key`
//! (PEM; the key file mode 0600) so that later starts reuse them and clients that pinned the
//! certificate keep trusting it. Leaves turning them into rustls keys to `tls`.
//!
//! The certificate: serial = 16 random bytes (positive), issuer = subject = `CN=<domain>`,
//! valid from a day before creation (clock skew) for about ten years, subjectAltName
//! `dNSName=<domain>` (plus IP 127.0.0.1 and ::1 for `localhost`), basicConstraints CA:false,
//! keyUsage digitalSignature, extKeyUsage serverAuth and clientAuth (s2s will present it as a
//! client too), signed ecdsa-with-SHA256. A non-ASCII domain gets no dNSName (that would need
//! its punycode A-label); clients see it only in the subject.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::der::{self, TAG_SEQUENCE};
use super::{TlsError, pem};

/// Validity starts this long before creation, for clients whose clock is a little behind.
const BACKDATE_SECS: u64 = 24 * 3600;
/// About ten years (3652 days).
const LIFETIME_SECS: u64 = 3652 * 24 * 3600;

const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_PRIME256V1: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
const OID_CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// A freshly made certificate and its key.
pub struct SelfSigned {
    /// The DER certificate.
    pub cert_der: Vec<u8>,
    /// The DER PKCS#8 private key (with its public key, as ring writes it).
    pub key_pkcs8: Vec<u8>,
}

/// Makes a key and a certificate for `domain`, valid from `now_unix_secs` minus a day.
pub fn generate(
    domain: &str,
    now_unix_secs: u64,
    rng: &dyn SecureRandom,
) -> Result<SelfSigned, TlsError> {
    let fail = |what: &str| {
        TlsError(format!(
            "cannot make a self-signed certificate for {domain}: {what}"
        ))
    };
    let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(alg, rng).map_err(|_| fail("key generation failed"))?;
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng)
        .map_err(|e| fail(&format!("generated key rejected: {e}")))?;

    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(|_| fail("no randomness"))?;
    // Positive (top bit clear) and minimally encoded at full length (a non-zero first byte).
    serial[0] = (serial[0] & 0x7f) | 0x40;

    let tbs = tbs_certificate(domain, &serial, now_unix_secs, key.public_key().as_ref());
    let signature = key.sign(rng, &tbs).map_err(|_| fail("signing failed"))?;
    let cert_der = der::sequence(&[
        &tbs,
        &der::sequence(&[&der::oid(OID_ECDSA_WITH_SHA256)]),
        &der::bit_string(signature.as_ref()),
    ]);
    Ok(SelfSigned {
        cert_der,
        key_pkcs8: pkcs8.as_ref().to_vec(),
    })
}

/// `TBSCertificate` (RFC 5280 §4.1).
fn tbs_certificate(domain: &str, serial: &[u8], now_unix_secs: u64, public_key: &[u8]) -> Vec<u8> {
    let name = der::sequence(&[&der::set(&[&der::sequence(&[
        &der::oid(OID_COMMON_NAME),
        &der::utf8_string(domain),
    ])])]);
    let not_before = now_unix_secs.saturating_sub(BACKDATE_SECS);
    let not_after = now_unix_secs.saturating_add(LIFETIME_SECS);
    let spki = der::sequence(&[
        &der::sequence(&[&der::oid(OID_EC_PUBLIC_KEY), &der::oid(OID_PRIME256V1)]),
        &der::bit_string(public_key),
    ]);

    let mut extensions: Vec<Vec<u8>> = Vec::new();
    let mut alt_names: Vec<Vec<u8>> = Vec::new();
    if domain.is_ascii() && !domain.starts_with('[') {
        alt_names.push(der::implicit_primitive(2, domain.as_bytes())); // dNSName
    }
    if domain == "localhost" {
        alt_names.push(der::implicit_primitive(7, &[127, 0, 0, 1])); // iPAddress
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        alt_names.push(der::implicit_primitive(7, &v6));
    }
    if !alt_names.is_empty() {
        let refs: Vec<&[u8]> = alt_names.iter().map(Vec::as_slice).collect();
        extensions.push(extension(
            OID_SUBJECT_ALT_NAME,
            false,
            &der::sequence(&refs),
        ));
    }
    // cA defaults to FALSE and DER omits defaults (X.690 §11.5): an empty SEQUENCE.
    extensions.push(extension(OID_BASIC_CONSTRAINTS, true, &der::sequence(&[])));
    // digitalSignature is bit 0: one significant bit, seven unused.
    extensions.push(extension(
        OID_KEY_USAGE,
        true,
        &der::bit_string_unused(7, &[0x80]),
    ));
    extensions.push(extension(
        OID_EXT_KEY_USAGE,
        false,
        &der::sequence(&[&der::oid(OID_SERVER_AUTH), &der::oid(OID_CLIENT_AUTH)]),
    ));
    let ext_refs: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();

    der::sequence(&[
        &der::explicit(0, &der::unsigned_integer(&[2])), // version v3
        &der::unsigned_integer(serial),
        &der::sequence(&[&der::oid(OID_ECDSA_WITH_SHA256)]),
        &name,
        &der::sequence(&[&der::time(not_before), &der::time(not_after)]),
        &name,
        &spki,
        &der::explicit(3, &der::constructed(TAG_SEQUENCE, &ext_refs)),
    ])
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::sequence(&[
            &der::oid(oid),
            &der::boolean(true),
            &der::octet_string(value),
        ])
    } else {
        der::sequence(&[&der::oid(oid), &der::octet_string(value)])
    }
}

/// The certificate and key files for `domain` in `dir`.
pub fn paths(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    )
}

/// The saved certificate and key for `domain` in `dir` if both files exist, else new ones,
/// saved there first. Returns the chain (one certificate) and the key.
pub fn load_or_create(
    dir: &Path,
    domain: &str,
    now_unix_secs: u64,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (crt_path, key_path) = paths(dir, domain);
    if crt_path.exists() && key_path.exists() {
        return Ok((
            pem::read_cert_chain(&crt_path)?,
            pem::read_private_key(&key_path)?,
        ));
    }
    let made = generate(domain, now_unix_secs, &SystemRandom::new())?;
    std::fs::create_dir_all(dir)
        .map_err(|e| TlsError(format!("cannot create {}: {e}", dir.display())))?;
    // The key first: a certificate without its key would be useless on the next start.
    write_atomically(
        &key_path,
        pem::encode("PRIVATE KEY", &made.key_pkcs8).as_bytes(),
        0o600,
    )?;
    write_atomically(
        &crt_path,
        pem::encode("CERTIFICATE", &made.cert_der).as_bytes(),
        0o644,
    )?;
    log::info!(
        "made a self-signed certificate for {domain}: {}",
        crt_path.display()
    );
    Ok((
        vec![CertificateDer::from(made.cert_der)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pkcs8)),
    ))
}

/// Writes `data` to a temporary file with `mode`, then renames it over `path`, so that a
/// crash never leaves a half-written key.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let fail = |e: std::io::Error| TlsError(format!("cannot write {}: {e}", path.display()));
    // A stale temporary file could have a wider mode, which `mode()` would not narrow.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    // The umask may have narrowed `mode`; never widened it. Set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    f.write_all(data).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn generate_cert_contains_domain_and_validity() {
        let made = generate("example.org", NOW, &SystemRandom::new()).unwrap();
        let c = &made.cert_der;
        assert_eq!(c[0], 0x30);
        assert!(contains(c, &der::utf8_string("example.org")));
        assert!(contains(c, &der::implicit_primitive(2, b"example.org")));
        assert!(!contains(c, &der::implicit_primitive(7, &[127, 0, 0, 1])));
        assert!(contains(c, &der::time(NOW - BACKDATE_SECS)));
        assert!(contains(c, &der::time(NOW + LIFETIME_SECS)));
        // 2025-12-31 and 2036-01-01 (3652 days: ten years with two leap days).
        assert!(contains(c, b"251231000000Z"));
        assert!(contains(c, b"360101000000Z"));
    }

    #[test]
    fn generate_localhost_gets_loopback_addresses() {
        let made = generate("localhost", NOW, &SystemRandom::new()).unwrap();
        assert!(contains(
            &made.cert_der,
            &der::implicit_primitive(7, &[127, 0, 0, 1])
        ));
    }

    #[test]
    fn generate_twice_differs() {
        let rng = SystemRandom::new();
        let a = generate("example.org", NOW, &rng).unwrap();
        let b = generate("example.org", NOW, &rng).unwrap();
        assert_ne!(a.cert_der, b.cert_der);
        assert_ne!(a.key_pkcs8, b.key_pkcs8);
    }

    #[test]
    fn generate_signature_verifies_with_public_key() {
        let rng = SystemRandom::new();
        let made = generate("example.org", NOW, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &made.key_pkcs8, &rng)
            .unwrap();
        // Certificate = SEQUENCE { tbs, algorithm, BIT STRING signature }: split by lengths.
        let c = &made.cert_der;
        let (_, body) = split_tlv(c);
        let (tbs, rest) = split_tlv_whole(body);
        let (_, rest) = split_tlv_whole(rest);
        let (_, sig) = split_tlv(rest);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.public_key().as_ref(),
        );
        public.verify(tbs, &sig[1..]).unwrap();
    }

    /// (header length, content) of the TLV at the start of `b`.
    fn split_tlv(b: &[u8]) -> (usize, &[u8]) {
        let (hl, len) = match b[1] {
            n if n < 0x80 => (2, n as usize),
            0x81 => (3, b[2] as usize),
            0x82 => (4, (b[2] as usize) << 8 | b[3] as usize),
            _ => panic!("long length"),
        };
        (hl, &b[hl..hl + len])
    }

    /// (whole first TLV, the rest).
    fn split_tlv_whole(b: &[u8]) -> (&[u8], &[u8]) {
        let (hl, content) = split_tlv(b);
        b.split_at(hl + content.len())
    }

    #[test]
    fn load_or_create_writes_then_reuses_files() {
        let dir = std::env::temp_dir().join(format!("hearth-selfsigned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (chain, key) = load_or_create(&dir, "example.org", NOW).unwrap();
        let (crt_path, key_path) = paths(&dir, "example.org");
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let crt_text = std::fs::read_to_string(&crt_path).unwrap();
        assert!(crt_text.starts_with("-----BEGIN CERTIFICATE-----\n"));

        let (chain2, key2) = load_or_create(&dir, "example.org", NOW + 1000).unwrap();
        assert_eq!(chain, chain2);
        assert_eq!(key.secret_der(), key2.secret_der());
        assert_eq!(std::fs::read_to_string(&crt_path).unwrap(), crt_text);

        // Without its key the certificate is made anew.
        std::fs::remove_file(&key_path).unwrap();
        let (chain3, _) = load_or_create(&dir, "example.org", NOW).unwrap();
        assert_ne!(chain, chain3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
