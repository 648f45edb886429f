//! A SCRAM client (RFC 5802, RFC 7677) for the tests, with `tls-exporter` channel binding
//! (RFC 9266) from rustls, so that the -PLUS mechanisms are tested even though slixmpp on this
//! Python cannot do them. Uses ring directly; nothing from the crate under test.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

use super::{Client, Token, WAIT, base64_decode, base64_encode, elem_name};

/// What the client puts in the GS2 channel-binding flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `n`: client does not support channel binding.
    None,
    /// `y`: client supports it but thinks the server does not (a downgrade if it does).
    ClientOnly,
    /// `p=tls-exporter` with the real exporter value.
    Exporter,
    /// `p=tls-exporter` with a wrong value (as a man in the middle would produce).
    WrongExporter,
}

#[derive(Clone, Copy)]
struct Hash {
    pbkdf2: pbkdf2::Algorithm,
    hmac: hmac::Algorithm,
    digest: &'static digest::Algorithm,
}

fn hash_for(mech: &str) -> Hash {
    if mech.starts_with("SCRAM-SHA-256") {
        Hash {
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
            hmac: hmac::HMAC_SHA256,
            digest: &digest::SHA256,
        }
    } else if mech.starts_with("SCRAM-SHA-1") {
        Hash {
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA1,
            hmac: hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            digest: &digest::SHA1_FOR_LEGACY_USE_ONLY,
        }
    } else {
        panic!("not a SCRAM mechanism: {mech}")
    }
}

fn mac(h: Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(h.hmac, key), msg)
        .as_ref()
        .to_vec()
}

fn field(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn sasl_payload(e: &str) -> String {
    let gt = e.find('>').unwrap_or(0);
    if e[..=gt].ends_with("/>") {
        return String::new();
    }
    let end = e.rfind("</").unwrap_or(e.len());
    e[gt + 1..end].trim().to_owned()
}

/// Runs one SCRAM exchange. `Ok(())` only on `<success/>` whose server signature verifies;
/// `Err(failure element)` on `<failure/>`. Panics on protocol violations by the server.
pub fn auth_scram(
    c: &mut Client,
    mech: &str,
    user: &str,
    password: &str,
    binding: Binding,
) -> Result<(), String> {
    let gs2 = match binding {
        Binding::None => "n,,".to_owned(),
        Binding::ClientOnly => "y,,".to_owned(),
        Binding::Exporter | Binding::WrongExporter => "p=tls-exporter,,".to_owned(),
    };
    let cbdata: Vec<u8> = match binding {
        Binding::Exporter => {
            let tls = c.tls_connection().expect("channel binding needs TLS");
            tls.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .expect("tls-exporter")
                .to_vec()
        }
        Binding::WrongExporter => vec![0x42; 32],
        _ => Vec::new(),
    };
    let cnonce = base64_encode(&std::process::id().to_be_bytes())
        + &base64_encode(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                .to_be_bytes(),
        );
    let cnonce: String = cnonce
        .chars()
        .filter(|ch| *ch != '=' && *ch != ',')
        .collect();
    let first_bare = format!("n={user},r={cnonce}");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
        base64_encode(format!("{gs2}{first_bare}").as_bytes())
    ));

    let challenge = match c.next(WAIT) {
        Token::Element(e) if elem_name(&e) == "challenge" => e,
        Token::Element(e) if elem_name(&e) == "failure" => return Err(e),
        other => panic!("expected SASL challenge, got {other:?}\n{}", c.transcript),
    };
    let server_first =
        String::from_utf8(base64_decode(&sasl_payload(&challenge)).expect("challenge is base64"))
            .expect("challenge is UTF-8");
    let nonce = field(&server_first, 'r').expect("server nonce");
    assert!(
        nonce.starts_with(&cnonce) && nonce.len() > cnonce.len(),
        "server nonce must extend ours: {server_first}"
    );
    let (client_final, expect_sig) =
        client_final(mech, &gs2, &cbdata, &first_bare, &server_first, password);
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        base64_encode(client_final.as_bytes())
    ));

    let outcome = match c.next(WAIT) {
        Token::Element(e) if elem_name(&e) == "success" => e,
        Token::Element(e) if elem_name(&e) == "failure" => return Err(e),
        other => panic!(
            "expected SASL success/failure, got {other:?}\n{}",
            c.transcript
        ),
    };
    let server_final =
        String::from_utf8(base64_decode(&sasl_payload(&outcome)).expect("success data is base64"))
            .expect("success data is UTF-8");
    assert_eq!(
        field(&server_final, 'v'),
        Some(expect_sig.as_str()),
        "server signature in <success/> must verify (mutual authentication)"
    );
    Ok(())
}

/// The client-final-message for `server_first`, and the server signature (base64) that the
/// server's final message must carry. Pure, so it can be checked against RFC test vectors.
pub fn client_final(
    mech: &str,
    gs2: &str,
    cbdata: &[u8],
    first_bare: &str,
    server_first: &str,
    password: &str,
) -> (String, String) {
    let h = hash_for(mech);
    let nonce = field(server_first, 'r').expect("server nonce");
    let salt = base64_decode(field(server_first, 's').expect("salt")).expect("salt base64");
    let iters: u32 = field(server_first, 'i')
        .expect("iterations")
        .parse()
        .expect("iteration count");
    assert!(
        iters >= 4096,
        "RFC 7677 asks for at least 4096 iterations, got {iters}"
    );
    let mut salted = vec![0u8; h.digest.output_len()];
    pbkdf2::derive(
        h.pbkdf2,
        NonZeroU32::new(iters).expect("iterations > 0"),
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let client_key = mac(h, &salted, b"Client Key");
    let stored_key = digest::digest(h.digest, &client_key);
    let mut cb_input = gs2.as_bytes().to_vec();
    cb_input.extend_from_slice(cbdata);
    let final_wo_proof = format!("c={},r={nonce}", base64_encode(&cb_input));
    let auth_message = format!("{first_bare},{server_first},{final_wo_proof}");
    let client_sig = mac(h, stored_key.as_ref(), auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(client_sig.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = mac(h, &salted, b"Server Key");
    let server_sig = base64_encode(&mac(h, &server_key, auth_message.as_bytes()));
    (
        format!("{final_wo_proof},p={}", base64_encode(&proof)),
        server_sig,
    )
}
