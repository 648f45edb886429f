//! Offline messages are durable (XEP-0160): stored for an offline recipient, they survive a
//! clean restart and a `kill -9` taken right after the sender saw no error, are delivered in
//! order with a `urn:xmpp:delay` stamp at the recipient's next available presence, and are
//! delivered once only (the removal is durable too).

mod common;

use std::time::{Duration, Instant};

use common::{Client, Opts, Server, Token, attr, elem_name, find_start_tag, start_tag};

const ALICE: (&str, &str) = ("alice@localhost", "alice-secret");
const BOB: (&str, &str) = ("bob@localhost", "bob-secret");
const NS_DELAY: &str = "urn:xmpp:delay";
/// How long the sender waits for an error before counting the message as accepted.
const ERROR_WINDOW: Duration = Duration::from_millis(200);

fn server() -> Server {
    Server::start(Opts::default().with_users(&[ALICE, BOB]))
}

/// Sends `bodies` to bob's bare JID, then reads for `ERROR_WINDOW`: no error may come back
/// (presence echoes of the sender's own login are fine).
fn send_accepted(alice: &mut Client, bodies: &[&str]) {
    for b in bodies {
        alice.send_message(BOB.0, b);
    }
    let deadline = Instant::now() + ERROR_WINDOW;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match alice.try_next(left) {
            None => return,
            Some(Token::Element(e)) => {
                let name = elem_name(&e);
                assert!(
                    !(matches!(name, "message" | "iq")
                        && attr(&e, "type").as_deref() == Some("error")),
                    "the sender got an error for an offline message: {e}"
                );
                assert!(
                    name != "stream:error",
                    "stream error after an offline message: {e}"
                );
            }
            Some(Token::Eof | Token::StreamClose) => {
                panic!("server closed the sender's stream:\n{}", alice.transcript)
            }
            Some(_) => {}
        }
    }
}

/// Asserts `m` carries `<delay xmlns='urn:xmpp:delay' stamp='…'/>` with an XEP-0082 UTC
/// DateTime (CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)).
fn assert_delay(m: &str) {
    let at = find_start_tag(m, "delay").unwrap_or_else(|| panic!("no <delay> in {m}"));
    let tag = start_tag(&m[at..]);
    assert_eq!(
        attr(tag, "xmlns").as_deref(),
        Some(NS_DELAY),
        "delay namespace in {m}"
    );
    let stamp = attr(tag, "stamp").unwrap_or_else(|| panic!("delay without stamp: {m}"));
    let b = stamp.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (stamp.ends_with('Z') || matches!(b[b.len() - 6], b'+' | b'-'))
        && b[..4].iter().all(u8::is_ascii_digit);
    assert!(
        shape_ok,
        "stamp {stamp:?} is not an XEP-0082 DateTime in {m}"
    );
}

/// Logs bob in (initial presence included) and expects `bodies` in this order, each from
/// alice's full JID with a delay stamp.
fn expect_delivered(srv: &Server, alice_jid: &str, bodies: &[&str]) -> Client {
    let mut bob = srv.login(BOB.0, BOB.1, "phone");
    let mut got = Vec::new();
    for _ in bodies {
        let m = bob.wait_element("message", common::WAIT);
        got.push(m);
    }
    for (m, want) in got.iter().zip(bodies) {
        assert_eq!(
            common::child_text(m, "body").as_deref(),
            Some(*want),
            "order of offline messages; got:\n{}",
            got.join("\n")
        );
        assert_eq!(attr(m, "from").as_deref(), Some(alice_jid), "from of {m}");
        assert_delay(m);
    }
    bob
}

/// Asserts no message reaches a fresh login of bob within a second.
fn expect_nothing_more(srv: &Server) {
    let mut bob = srv.login(BOB.0, BOB.1, "again");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match bob.try_next(left) {
            None => return,
            Some(Token::Element(e)) if elem_name(&e) == "message" => {
                panic!("offline message delivered a second time: {e}")
            }
            Some(Token::Eof) => panic!("server closed bob's stream:\n{}", bob.transcript),
            Some(_) => {}
        }
    }
}

#[test]
fn offline_message_clean_restart_delivered_with_delay() {
    let mut srv = server();
    let mut alice = srv.login(ALICE.0, ALICE.1, "desk");
    let alice_jid = alice.jid.clone();
    let bodies = ["before restart 1", "before restart 2", "before restart 3"];
    send_accepted(&mut alice, &bodies);
    drop(alice);
    let (status, clean) = srv.stop().expect("server was running");
    assert!(
        clean && status.success(),
        "SIGTERM must end the server cleanly: {status:?}"
    );
    srv.launch();
    let bob = expect_delivered(&srv, &alice_jid, &bodies);
    drop(bob);
    // The delivery removed them for good, across a restart too.
    srv.restart();
    expect_nothing_more(&srv);
}

#[test]
fn offline_message_kill_9_after_no_error_delivered_with_delay() {
    let mut srv = server();
    let mut alice = srv.login(ALICE.0, ALICE.1, "desk");
    let alice_jid = alice.jid.clone();
    let bodies = ["before kill 1", "before kill 2", "before kill 3"];
    send_accepted(&mut alice, &bodies);
    srv.kill_hard().expect("server was running");
    drop(alice);
    srv.launch();
    expect_delivered(&srv, &alice_jid, &bodies);
}

#[test]
fn offline_message_kill_9_single_message_survives() {
    let mut srv = server();
    let mut alice = srv.login(ALICE.0, ALICE.1, "desk");
    let alice_jid = alice.jid.clone();
    send_accepted(&mut alice, &["the only one"]);
    srv.kill_hard().expect("server was running");
    drop(alice);
    srv.launch();
    expect_delivered(&srv, &alice_jid, &["the only one"]);
}
