//! Self-tests of the harness in `common/` (tokenizer, attribute helpers, base64), so that a
//! broken helper shows up as itself rather than as a server bug. No server is started.

mod common;

use common::*;

#[test]
fn base64_roundtrip_known_vectors() {
    for (raw, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64_encode(raw.as_bytes()), enc);
        assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
    }
}

#[test]
fn scan_splits_header_elements_and_close() {
    let mut buf = b"<?xml version='1.0'?><stream:stream from='localhost' id='x'>\
        <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>\
        <stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
        .to_vec();
    let mut toks = Vec::new();
    while let Some((t, n)) = scan(&buf) {
        buf.drain(..n);
        if let Some(t) = t {
            toks.push(t);
        }
    }
    assert_eq!(toks.len(), 4, "{toks:?}");
    assert!(
        matches!(&toks[0], Token::StreamOpen(h) if attr(h, "from").as_deref() == Some("localhost"))
    );
    assert!(matches!(&toks[1], Token::Element(e) if elem_name(e) == "stream:features"));
    let Token::Element(err) = &toks[2] else {
        panic!()
    };
    assert_eq!(stream_error_condition(err).as_deref(), Some("host-unknown"));
    assert_eq!(toks[3], Token::StreamClose);
}

#[test]
fn scan_incomplete_element_waits() {
    assert!(scan(b"<message to='a'><body>hi</bo").is_none());
    assert!(scan(b"<message to='a>b'").is_none());
}

#[test]
fn helpers_read_attrs_children_and_errors() {
    let m = "<message from=\"a@b/c\" type='error' id='1'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>";
    assert_eq!(attr(m, "from").as_deref(), Some("a@b/c"));
    assert_eq!(attr(m, "id").as_deref(), Some("1"));
    assert_eq!(
        stanza_error(m),
        Some(("service-unavailable".to_owned(), "cancel".to_owned()))
    );
    let f = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
    assert_eq!(mechanisms(f), vec!["SCRAM-SHA-256", "PLAIN"]);
    assert_eq!(
        child_text("<iq><bind><jid>a@b/r</jid></bind></iq>", "jid").as_deref(),
        Some("a@b/r")
    );
}

#[test]
fn scram_sha_1_matches_rfc5802_vector() {
    let (fin, sig) = common::scram::client_final(
        "SCRAM-SHA-1",
        "n,,",
        b"",
        "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        "pencil",
    );
    assert_eq!(
        fin,
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    );
    assert_eq!(sig, "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

#[test]
fn scram_sha_256_matches_rfc7677_vector() {
    let (fin, sig) = common::scram::client_final(
        "SCRAM-SHA-256",
        "n,,",
        b"",
        "n=user,r=rOprNGfwEbeRWgbNEkqO",
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "pencil",
    );
    assert_eq!(
        fin,
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    assert_eq!(sig, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/// Checks the raw client itself against any running XMPP server with two accounts, e.g. a
/// reference server: `XMPP_EXTERNAL=starttls_port,direct_tls_port,user,password,user2,password2
/// cargo test --test harness -- --ignored`. Uses only behaviour every server shares.
#[test]
#[ignore]
fn client_against_external_server() {
    let Ok(spec) = std::env::var("XMPP_EXTERNAL") else {
        return;
    };
    let f: Vec<&str> = spec.split(',').collect();
    let (port, tls_port): (u16, u16) = (f[0].parse().unwrap(), f[1].parse().unwrap());
    let (u1, p1, u2, p2) = (f[2], f[3], f[4], f[5]);

    let login = |user: &str, pw: &str, res: &str| {
        let mut c = Client::connect(port, "localhost");
        let pre = c.open_stream();
        assert!(has_child(&pre, "starttls"), "{pre}");
        c.starttls();
        let post = c.open_stream();
        assert!(mechanisms(&post).contains(&"PLAIN".to_owned()), "{post}");
        c.auth_plain(user, pw).expect("PLAIN");
        c.open_stream();
        c.bind(res);
        c.send("<presence/>");
        c
    };
    let mut a = login(u1, p1, "h1");
    let mut b = login(u2, p2, "h2");
    assert_still_serving(&mut a, &mut b, "harness check");
    a.ping_server();

    let mut s = Client::connect(port, "localhost");
    s.open_stream();
    s.starttls();
    s.open_stream();
    common::scram::auth_scram(&mut s, "SCRAM-SHA-1", u1, p1, common::scram::Binding::None)
        .expect("SCRAM-SHA-1");

    let (mut d, _alpn) = Client::connect_direct_tls(tls_port, "localhost");
    d.open_stream();
    d.auth_plain(u1, p1).expect("PLAIN over direct TLS");

    let mut bad = Client::connect(port, "localhost");
    bad.open_stream();
    bad.send("<<<not xml>>>");
    bad.expect_stream_error("not-well-formed", WAIT);

    let mut bad = Client::connect(port, "example.org");
    bad.send(&stream_header("example.org"));
    bad.expect_stream_error("host-unknown", WAIT);

    let mut same = login(u1, p1, "h1");
    a.expect_stream_error("conflict", WAIT);
    same.ping_server();
}
