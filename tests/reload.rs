//! SIGHUP reloads certificates: new connections get the new certificate, the sessions that
//! were open carry on.

mod common;

use common::{Opts, Server};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn served_certificate(server: &Server) -> Vec<u8> {
    let mut c = server.connect();
    c.open_stream();
    c.starttls();
    let tls = c.tls_connection().expect("TLS after STARTTLS");
    tls.peer_certificates().expect("server sent a certificate")[0].to_vec()
}

#[test]
fn sighup_serves_replaced_certificate_and_keeps_sessions() {
    let server = Server::start(Opts::default().with_users(&[("alice@localhost", "pw")]));
    let before = served_certificate(&server);
    let mut alice = server.login("alice@localhost", "pw", "r");

    // Replace the self-signed certificate files the server made on first start.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rng = ring::rand::SystemRandom::new();
    let fresh = hearth::tls::selfsigned::generate("localhost", now, &rng).unwrap();
    let certs = server.data_dir().join("certs");
    std::fs::write(
        certs.join("localhost.crt"),
        hearth::tls::pem::encode("CERTIFICATE", &fresh.cert_der),
    )
    .unwrap();
    std::fs::write(
        certs.join("localhost.key"),
        hearth::tls::pem::encode("PRIVATE KEY", &fresh.key_pkcs8),
    )
    .unwrap();

    let pid = server.pid().expect("running").to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_text().contains("reloaded certificates") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let after = served_certificate(&server);
    assert_ne!(before, after, "the old certificate is still served");
    assert_eq!(after, fresh.cert_der);
    // The session opened before the reload still works.
    alice.ping_server();
}
