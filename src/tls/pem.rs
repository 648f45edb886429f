//! PEM files (RFC 7468): reading certificate chains and private keys for rustls, and writing
//! the self-signed certificate and key that `selfsigned` makes.
//!
//! Owns: file reading with bounded size and errors that name the file and what is wrong.
//! Decoding is rustls-pki-types' `PemObject`; encoding has a small private base64 writer so
//! that this module does not depend on `crate::base64`.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Larger files are refused: a long certificate chain is a few tens of KB.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let fail =
        |e: std::io::Error| TlsError(format!("cannot read {what} file {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > MAX_PEM_FILE_BYTES {
        return Err(TlsError(format!(
            "{what} file {} is too large ({len} bytes; at most {MAX_PEM_FILE_BYTES})",
            path.display()
        )));
    }
    std::fs::read(path).map_err(fail)
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    let why = match e {
        // `end_marker` is the section's label.
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM section is not closed (missing `-----END {}-----`)",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed PEM line `{}`", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(e) => format!("invalid base64 in a PEM section ({e})"),
        e => e.to_string(),
    };
    TlsError(format!("{}: {why}", path.display()))
}

/// All `CERTIFICATE` sections of `path`, leaf first (as in Let's Encrypt's fullchain.pem).
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate found (expected a PEM `BEGIN CERTIFICATE` section)",
            path.display()
        )));
    }
    Ok(chain)
}

/// The first private key of `path`: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
/// PKCS#1 (`RSA PRIVATE KEY`). Encrypted keys are not supported.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "private key")?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError(format!(
            "{}: no private key found (expected a PEM `PRIVATE KEY`, `EC PRIVATE KEY` or \
             `RSA PRIVATE KEY` section; encrypted keys are not supported)",
            path.display()
        ))),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// `der` as a PEM section with `label` (e.g. "CERTIFICATE"), base64 in 64-column lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = crate::base64::encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // The base64 alphabet is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn encode_then_read_round_trips_chain() {
        let a: Vec<u8> = (0..=255).collect();
        let b = vec![7u8; 100];
        let text = format!("{}{}", encode("CERTIFICATE", &a), encode("CERTIFICATE", &b));
        assert!(text.lines().all(|l| l.len() <= 64));
        let path = temp_file("chain.pem", text.as_bytes());
        let chain = read_cert_chain(&path).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].as_ref(), &a[..]);
        assert_eq!(chain[1].as_ref(), &b[..]);
    }

    #[test]
    fn read_key_kinds_recognised() {
        for (label, kind) in [
            ("PRIVATE KEY", "pkcs8"),
            ("EC PRIVATE KEY", "sec1"),
            ("RSA PRIVATE KEY", "pkcs1"),
        ] {
            let path = temp_file(&format!("{kind}.key"), encode(label, &[1, 2, 3]).as_bytes());
            let key = read_private_key(&path).unwrap();
            let got = match key {
                PrivateKeyDer::Pkcs8(_) => "pkcs8",
                PrivateKeyDer::Sec1(_) => "sec1",
                PrivateKeyDer::Pkcs1(_) => "pkcs1",
                _ => "other",
            };
            assert_eq!(got, kind);
            assert_eq!(key.secret_der(), &[1, 2, 3]);
        }
    }

    #[test]
    fn read_missing_file_names_it() {
        let path = std::env::temp_dir().join("hearth-pem-no-such-dir/fullchain.pem");
        let e = read_cert_chain(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot read certificate file {}: ",
                path.display()
            )),
            "{e}"
        );
        let e = read_private_key(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot read private key file {}: ",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn read_key_file_as_cert_says_no_certificate() {
        let path = temp_file("swapped.pem", encode("PRIVATE KEY", &[1]).as_bytes());
        assert_eq!(
            read_cert_chain(&path).unwrap_err().to_string(),
            format!(
                "{}: no certificate found (expected a PEM `BEGIN CERTIFICATE` section)",
                path.display()
            )
        );
        let path = temp_file("swapped.crt", encode("CERTIFICATE", &[1]).as_bytes());
        let e = read_private_key(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: no private key found", path.display())),
            "{e}"
        );
    }

    #[test]
    fn read_truncated_pem_says_not_closed() {
        let path = temp_file("cut.pem", b"-----BEGIN CERTIFICATE-----\nAAEC\n");
        assert_eq!(
            read_cert_chain(&path).unwrap_err().to_string(),
            format!(
                "{}: a PEM section is not closed (missing `-----END CERTIFICATE-----`)",
                path.display()
            )
        );
    }

    #[test]
    fn read_bad_base64_named() {
        let path = temp_file(
            "bad64.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let e = read_cert_chain(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: invalid base64", path.display())),
            "{e}"
        );
    }
}
