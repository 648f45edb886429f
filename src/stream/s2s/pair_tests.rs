//! An `S2sOut` talking to an `S2sIn` in memory: TLS is simulated (both sides are told the
//! handshake finished), everything else is the real byte exchange.

use std::sync::Arc;
use std::time::Instant;

use super::incoming::Upcall as InUp;
use super::outgoing::Upcall as OutUp;
use super::*;
use crate::stanza::StanzaCondition;
use crate::testutil::SeededRandom;

fn server(host: &str, secret: &[u8]) -> Arc<S2sConfig> {
    Arc::new(S2sConfig::new(
        vec![host.to_owned()],
        DialbackSecret::new(secret),
    ))
}

/// One connection: an outgoing machine and the incoming machine at the other end.
struct Link {
    out: S2sOut,
    inn: S2sIn,
    now: Instant,
    rng: SeededRandom,
    /// What each side's certificate proves to the other (given to `handle_tls_ready`).
    out_cert: Vec<String>,
    in_cert: Vec<String>,
    out_events: Vec<OutUp>,
    in_events: Vec<InUp>,
}

impl Link {
    fn new(out: S2sOut, inn_cfg: Arc<S2sConfig>, out_cert: &[&str], in_cert: &[&str]) -> Link {
        let now = Instant::now();
        Link {
            out,
            inn: S2sIn::new(now, inn_cfg, false),
            now,
            rng: SeededRandom(11),
            out_cert: out_cert.iter().map(|s| s.to_string()).collect(),
            in_cert: in_cert.iter().map(|s| s.to_string()).collect(),
            out_events: Vec::new(),
            in_events: Vec::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn run(&mut self) {
        let (mut out_tls, mut in_tls) = (false, false);
        for _ in 0..100 {
            let mut moved = false;
            while let Some(u) = self.out.poll_upcall() {
                moved = true;
                match u {
                    OutUp::Send(b) => self.inn.handle_bytes(self.now, &b, &mut self.rng),
                    OutUp::StartTls(_) => out_tls = true,
                    other => self.out_events.push(other),
                }
            }
            while let Some(u) = self.inn.poll_upcall() {
                moved = true;
                match u {
                    InUp::Send(b) => self.out.handle_bytes(self.now, &b),
                    InUp::StartTls(_) => in_tls = true,
                    other => self.in_events.push(other),
                }
            }
            if out_tls && in_tls {
                (out_tls, in_tls) = (false, false);
                moved = true;
                let local_cert_valid = self.out_cert.iter().any(|d| d == self.out.local());
                self.inn.handle_tls_ready(
                    self.now,
                    S2sTlsInfo {
                        peer_cert_valid_for: self.out_cert.clone(),
                        local_cert_valid: false,
                    },
                    &mut self.rng,
                );
                self.out.handle_tls_ready(
                    self.now,
                    S2sTlsInfo {
                        peer_cert_valid_for: self.in_cert.clone(),
                        local_cert_valid,
                    },
                );
            }
            if !moved {
                return;
            }
        }
        panic!("link did not settle");
    }
}

fn msg(from: &str, to: &str, id: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("id", id)
        .with_child(Element::new("body", ns::CLIENT).with_text(id))
}

fn stanzas(events: &[InUp]) -> Vec<Element> {
    events
        .iter()
        .filter_map(|u| match u {
            InUp::Stanza { element } => Some(element.clone()),
            _ => None,
        })
        .collect()
}

/// a.example → b.example authenticated by dialback, with b asking a's authoritative server
/// over a separate verify-only link. `tamper` changes the key on its way to verification.
fn dialback(tamper: bool) -> (Link, Vec<OutUp>) {
    let a = server("a.example", b"secret of a");
    let b = server("b.example", b"secret of b");
    let now = Instant::now();
    let mut out = S2sOut::new(now, a.clone(), "a.example", "b.example", OutMode::Normal);
    out.send_stanza(now, msg("romeo@a.example/x", "juliet@b.example", "1"));
    out.send_stanza(now, msg("romeo@a.example/x", "juliet@b.example", "2"));
    out.handle_connected(now);
    let mut ab = Link::new(out, b.clone(), &[], &[]);
    ab.run();
    let Some(InUp::VerifyDialback {
        from,
        to,
        stream_id,
        key,
    }) = ab.in_events.pop()
    else {
        panic!("{:?}", ab.in_events);
    };
    assert_eq!((from.as_str(), to.as_str()), ("a.example", "b.example"));
    assert_eq!(Some(stream_id.as_str()), ab.inn.stream_id());
    // b asks a (the Authoritative Server) on its own verify-only stream b → a.
    let mut verify = S2sOut::new(now, b, "b.example", "a.example", OutMode::VerifyOnly);
    // Flip the last hex digit.
    let key = match (tamper, key.strip_suffix('0')) {
        (false, _) => key,
        (true, Some(k)) => format!("{k}1"),
        (true, None) => format!("{}0", &key[..key.len() - 1]),
    };
    verify.request_verify(now, "b.example", &stream_id, &key);
    verify.handle_connected(now);
    let mut ba = Link::new(verify, a, &[], &[]);
    ba.run();
    let verdict = ba.out_events.iter().find_map(|u| match u {
        OutUp::VerifyResult {
            receiving,
            originating,
            stream_id: id,
            verdict,
        } => {
            assert_eq!(
                (receiving.as_str(), originating.as_str()),
                ("b.example", "a.example")
            );
            assert_eq!(id, &stream_id);
            Some(*verdict)
        }
        _ => None,
    });
    let verdict = verdict.unwrap_or_else(|| panic!("{:?}", ba.out_events));
    assert!(ba.out.is_closed(), "verify-only stream closes when done");
    assert!(ab.inn.dialback_verified(now, &from, &to, verdict));
    ab.run();
    let events = std::mem::take(&mut ab.out_events);
    (ab, events)
}

#[test]
fn pair_dialback_valid_delivers_queued_stanzas_in_order() {
    let (mut ab, events) = dialback(false);
    assert!(events.contains(&OutUp::Ready {
        method: AuthMethod::Dialback
    }));
    let got = stanzas(&ab.in_events);
    assert_eq!(
        got,
        vec![
            msg("romeo@a.example/x", "juliet@b.example", "1"),
            msg("romeo@a.example/x", "juliet@b.example", "2")
        ]
    );
    ab.in_events.clear();
    ab.out
        .send_stanza(ab.now, msg("romeo@a.example/x", "juliet@b.example", "3"));
    ab.run();
    assert_eq!(stanzas(&ab.in_events).len(), 1);
}

#[test]
fn pair_dialback_tampered_key_invalid_bounces() {
    let (ab, events) = dialback(true);
    assert!(ab.inn.is_closed());
    assert!(ab.out.is_closed());
    let bounced: Vec<_> = events
        .iter()
        .filter_map(|u| match u {
            OutUp::Bounce { condition, .. } => Some(*condition),
            _ => None,
        })
        .collect();
    assert_eq!(bounced, vec![StanzaCondition::InternalServerError; 2]);
    assert!(stanzas(&ab.in_events).is_empty());
}

#[test]
fn pair_sasl_external_authenticates_and_passes_stanzas() {
    let a = server("a.example", b"secret of a");
    let b = server("b.example", b"secret of b");
    let now = Instant::now();
    let mut out = S2sOut::new(now, a, "a.example", "b.example", OutMode::Normal);
    out.send_stanza(now, msg("romeo@a.example/x", "juliet@b.example", "1"));
    out.handle_connected(now);
    let mut ab = Link::new(out, b, &["a.example"], &["b.example"]);
    ab.run();
    assert!(ab.out_events.contains(&OutUp::Ready {
        method: AuthMethod::SaslExternal
    }));
    assert!(ab.in_events.contains(&InUp::Authenticated {
        from: "a.example".into(),
        to: "b.example".into(),
        method: AuthMethod::SaslExternal
    }));
    assert_eq!(
        stanzas(&ab.in_events),
        vec![msg("romeo@a.example/x", "juliet@b.example", "1")]
    );
}

#[test]
fn pair_ready_spoofed_from_invalid_from() {
    let (mut ab, _) = dialback(false);
    ab.out
        .send_stanza(ab.now, msg("mallory@bank.example", "juliet@b.example", "9"));
    ab.run();
    assert!(ab.inn.is_closed());
    assert!(ab.out.is_closed());
    assert_eq!(
        stanzas(&ab.in_events).len(),
        2,
        "only the two queued before"
    );
}

#[test]
fn pair_unknown_to_host_unknown_bounces_not_found() {
    let a = server("a.example", b"secret of a");
    let b = server("b.example", b"secret of b");
    let now = Instant::now();
    let mut out = S2sOut::new(now, a, "a.example", "nobody.example", OutMode::Normal);
    out.send_stanza(now, msg("romeo@a.example/x", "x@nobody.example", "1"));
    out.handle_connected(now);
    let mut ab = Link::new(out, b, &[], &[]);
    ab.run();
    assert!(ab.out_events.contains(&OutUp::Bounce {
        stanza: msg("romeo@a.example/x", "x@nobody.example", "1"),
        condition: StanzaCondition::RemoteServerNotFound
    }));
    assert!(ab.inn.is_closed() && ab.out.is_closed());
}
