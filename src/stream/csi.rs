//! Client state indication (XEP-0352) without I/O: what an inactive client's stream holds back
//! and when it is released.
//!
//! Owns: the classification of an outgoing stanza (urgent, or able to wait), the held queue of
//! one inactive session with only the latest presence per contact full JID kept, and the
//! order of release. Leaves to `server::session_mgmt` where the state lives (per session) and
//! the actual sending.
//!
//! Rules: while inactive, presence updates (available/unavailable), messages without a body
//! (chat states, receipts, markers) and PEP events wait; everything else (messages with a
//! body, subject or encrypted payload, subscription requests and answers, errors, IQs) is
//! urgent and goes at once, after everything held (so the client sees the order the server
//! had). `active` releases the held queue in order.
//!
//! Bound: at most `max_held` stanzas wait; the one that would pass it releases the queue (in
//! order, itself last), so an inactive client costs at most `max_held` stanzas of memory.

use std::collections::VecDeque;

use crate::xml::{Element, ns};

pub const NS_CSI: &str = "urn:xmpp:csi:0";

/// Payloads that make a message worth waking the client for, besides `<body/>`.
const URGENT_PAYLOADS: &[(&str, &str)] = &[
    ("subject", ns::CLIENT),
    // OMEMO (XEP-0384), both layouts; OpenPGP (XEP-0373); legacy encryption.
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    // Invitations (XEP-0249, XEP-0045 §7.8.2) and calls (XEP-0353).
    ("x", "jabber:x:conference"),
    ("propose", "urn:xmpp:jingle-message:0"),
];

/// How urgent an outgoing stanza is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Goes at once (after anything held).
    Urgent,
    /// Can wait; a presence carries its sender so a later one from the same JID replaces it.
    Wait { presence_from: Option<String> },
}

/// Whether `e` (a stanza to the client) can wait while the client is inactive.
pub fn classify(e: &Element) -> Class {
    let ty = e.attr("type");
    match e.name.as_str() {
        "presence" => match ty {
            None | Some("unavailable") => Class::Wait {
                presence_from: e.attr("from").map(str::to_owned),
            },
            // Subscription requests and answers, errors: the user must see them.
            _ => Class::Urgent,
        },
        "message" => {
            if ty == Some("error") || message_is_urgent(e) {
                Class::Urgent
            } else {
                Class::Wait {
                    presence_from: None,
                }
            }
        }
        _ => Class::Urgent,
    }
}

fn message_is_urgent(e: &Element) -> bool {
    if e.child("body", ns::CLIENT).is_some()
        || URGENT_PAYLOADS
            .iter()
            .any(|(name, n)| e.child(name, n).is_some())
    {
        return true;
    }
    // A carbon (XEP-0280) or another forward is as urgent as the message it wraps.
    e.child_elements().any(|c| {
        c.child("forwarded", "urn:xmpp:forward:0")
            .and_then(|f| f.child("message", ns::CLIENT))
            .is_some_and(message_is_urgent)
    })
}

/// The held queue of one session.
#[derive(Debug)]
pub struct Held {
    inactive: bool,
    /// (the presence's sender if it is a collapsible presence, the serialized stanza)
    queue: VecDeque<(Option<String>, Vec<u8>)>,
    max_held: usize,
}

impl Held {
    pub fn new(max_held: usize) -> Held {
        Held {
            inactive: false,
            queue: VecDeque::new(),
            max_held: max_held.max(1),
        }
    }

    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// `<inactive/>`.
    pub fn set_inactive(&mut self) {
        self.inactive = true;
    }

    /// `<active/>`: what was held, in order, to send now.
    pub fn set_active(&mut self) -> Vec<Vec<u8>> {
        self.inactive = false;
        self.take_all()
    }

    /// Everything held, in order (the session ends or moves).
    pub fn take_all(&mut self) -> Vec<Vec<u8>> {
        self.queue.drain(..).map(|(_, b)| b).collect()
    }

    /// A stanza for the client: returns what to send now, in order (empty if it was held).
    pub fn offer(&mut self, class: Class, stanza: Vec<u8>) -> Vec<Vec<u8>> {
        if !self.inactive {
            return vec![stanza];
        }
        match class {
            Class::Urgent => {
                let mut out = self.take_all();
                out.push(stanza);
                out
            }
            Class::Wait { presence_from } => {
                if let Some(from) = &presence_from {
                    // Only the latest presence of this full JID matters; it takes the place at
                    // the end, so what the client sees keeps the server's order of latest events.
                    self.queue.retain(|(k, _)| k.as_ref() != Some(from));
                }
                if self.queue.len() >= self.max_held {
                    let mut out = self.take_all();
                    out.push(stanza);
                    return out;
                }
                self.queue.push_back((presence_from, stanza));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        crate::xml::fragment::parse_element(s.as_bytes()).unwrap()
    }

    fn offer(h: &mut Held, s: &str) -> Vec<String> {
        h.offer(classify(&el(s)), s.as_bytes().to_vec())
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    const P1: &str = "<presence from='b@d/1'/>";
    const P1_AWAY: &str = "<presence from='b@d/1'><show>away</show></presence>";
    const P2: &str = "<presence from='c@d/1'/>";
    const MSG: &str = "<message from='b@d/1' type='chat'><body>hi</body></message>";
    const STATE: &str = "<message from='b@d/1' type='chat'>\
                         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>";

    #[test]
    fn classify_rules() {
        assert!(
            matches!(classify(&el(P1)), Class::Wait { presence_from: Some(f) } if f == "b@d/1")
        );
        assert_eq!(
            classify(&el("<presence from='b@d' type='subscribe'/>")),
            Class::Urgent
        );
        assert_eq!(classify(&el(MSG)), Class::Urgent);
        assert_eq!(
            classify(&el(STATE)),
            Class::Wait {
                presence_from: None
            }
        );
        assert_eq!(
            classify(&el(
                "<message><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>"
            )),
            Class::Wait {
                presence_from: None
            }
        );
        assert_eq!(classify(&el("<iq type='get' id='1'/>")), Class::Urgent);
        assert_eq!(
            classify(&el("<message type='error'><error/></message>")),
            Class::Urgent
        );
        assert_eq!(
            classify(&el(
                "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
                 <message xmlns='jabber:client'><body>x</body></message></forwarded></received></message>"
            )),
            Class::Urgent
        );
        assert_eq!(
            classify(&el(
                "<message><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
            )),
            Class::Urgent
        );
    }

    #[test]
    fn active_passes_everything_through() {
        let mut h = Held::new(10);
        assert_eq!(offer(&mut h, P1), vec![P1]);
        assert!(h.is_empty());
    }

    #[test]
    fn inactive_presence_flood_collapses_per_full_jid() {
        let mut h = Held::new(10);
        h.set_inactive();
        assert!(offer(&mut h, P1).is_empty());
        assert!(offer(&mut h, P2).is_empty());
        assert!(offer(&mut h, P1_AWAY).is_empty());
        assert_eq!(h.len(), 2);
        let out: Vec<String> = h
            .set_active()
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(out, vec![P2, P1_AWAY]);
        assert!(!h.is_inactive());
    }

    #[test]
    fn inactive_urgent_flushes_held_first() {
        let mut h = Held::new(10);
        h.set_inactive();
        offer(&mut h, P1);
        offer(&mut h, STATE);
        assert_eq!(offer(&mut h, MSG), vec![P1, STATE, MSG]);
        assert!(h.is_empty());
        assert!(
            h.is_inactive(),
            "an urgent stanza does not make the client active"
        );
    }

    #[test]
    fn inactive_chat_states_are_not_collapsed() {
        let mut h = Held::new(10);
        h.set_inactive();
        offer(&mut h, STATE);
        offer(&mut h, STATE);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn inactive_full_queue_flushes_in_order() {
        let mut h = Held::new(2);
        h.set_inactive();
        offer(&mut h, P1);
        offer(&mut h, P2);
        let out = offer(&mut h, STATE);
        assert_eq!(out, vec![P1, P2, STATE]);
        assert!(h.is_empty());
        // A replacement does not count as growth.
        offer(&mut h, P1);
        offer(&mut h, P2);
        assert!(offer(&mut h, P1_AWAY).is_empty());
        assert_eq!(h.len(), 2);
    }
}
