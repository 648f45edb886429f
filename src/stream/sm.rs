//! Stream management (XEP-0198) without I/O: the counters, the queue of stanzas the client has
//! not acknowledged, when to ask for an acknowledgement, and the wire elements.
//!
//! Owns: the outbound side of one managed session (`Outbound`: every stanza sent is counted
//! and kept until an `<a h/>` covers it; h wraps at 2^32, XEP-0198 §4), the rules for asking
//! for acks (`<r/>` every `request_every` stanzas, and on idle, decided by the server's timer),
//! the bounds of the queue and the parsing/building of `<enable/>`, `<enabled/>`, `<r/>`,
//! `<a/>`, `<resume/>`, `<resumed/>` and `<failed/>`. The inbound counter (stanzas the client
//! sent) is a plain `u32` in `stream::c2s`, which answers `<r/>` itself. Leaves to
//! `server::session_mgmt`: which session a queue belongs to, detaching, resuming and what
//! happens to the queue when the session ends.
//!
//! Bounds: `max_stanzas` stanzas and `max_bytes` bytes are the soft bound: past it
//! (`over_soft_bound`) the client is asked to acknowledge and given a grace period by the
//! caller, since a burst (a login's offline messages, a resumption's resend) legitimately
//! passes it. Three times the bound is the hard cap of an attached session, twice the bound
//! that of a session waiting for resumption (`set_headroom`); `push` past the hard cap returns
//! `Push::Overflow` (the stanza is still queued, so that nothing is lost) and the caller ends
//! the stream or the session (see `server::session_mgmt`). A resumed session starts at most at
//! twice the bound, under its hard cap, so a resumption never overflows at once.

use std::collections::VecDeque;

use crate::xml::Element;

pub const NS_SM: &str = "urn:xmpp:sm:3";
pub const NS_STANZA_ERRORS: &str = crate::xml::ns::STANZA_ERRORS;

/// The outcome of queueing one sent stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued; send it.
    Queued,
    /// Queued; send it, then send `<r/>`.
    QueuedRequestAck,
    /// Queued, but the queue is past its bound: the stream must end.
    Overflow,
}

/// An `<a h/>` that acknowledges more than was sent (XEP-0198 §5 `handled-count-too-high`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooHigh {
    pub h: u32,
    pub sent: u32,
}

/// What the server sent and the client has not yet acknowledged.
#[derive(Debug)]
pub struct Outbound {
    /// h of the last stanza queued (number sent, mod 2^32).
    sent: u32,
    /// h of the last acknowledgement (or of the start).
    acked: u32,
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Stanzas sent since the last `<r/>`.
    since_request: u32,
    /// A `<r/>` is outstanding.
    requested: bool,
    max_stanzas: usize,
    max_bytes: usize,
    request_every: u32,
    /// The bounds are doubled (see `set_headroom`).
    headroom: bool,
}

impl Outbound {
    /// A fresh queue, counting from `start` (0 at `<enable/>`; other values only in tests of
    /// the wrap).
    pub fn new(start: u32, max_stanzas: usize, max_bytes: usize, request_every: u32) -> Outbound {
        Outbound {
            sent: start,
            acked: start,
            queue: VecDeque::new(),
            bytes: 0,
            since_request: 0,
            requested: false,
            max_stanzas,
            max_bytes,
            request_every: request_every.max(1),
            headroom: false,
        }
    }

    /// Switches the hard cap to twice the bound (or back to three times): a session whose
    /// connection dropped, perhaps because its queue was full, still takes what arrives until
    /// the client resumes.
    pub fn set_headroom(&mut self, on: bool) {
        self.headroom = on;
    }

    /// Counts and keeps one stanza that is being sent (or would be, on a detached session).
    pub fn push(&mut self, stanza: Vec<u8>) -> Push {
        self.sent = self.sent.wrapping_add(1);
        self.bytes += stanza.len();
        self.queue.push_back(stanza);
        self.since_request = self.since_request.saturating_add(1);
        let factor = if self.headroom { 2 } else { 3 };
        if self.queue.len() > self.max_stanzas.saturating_mul(factor)
            || self.bytes > self.max_bytes.saturating_mul(factor)
        {
            return Push::Overflow;
        }
        if !self.requested && self.since_request >= self.request_every {
            self.note_requested();
            return Push::QueuedRequestAck;
        }
        Push::Queued
    }

    /// Past `max_stanzas` or `max_bytes`: the client must catch up within the grace period.
    pub fn over_soft_bound(&self) -> bool {
        self.queue.len() > self.max_stanzas || self.bytes > self.max_bytes
    }

    /// Whether a `<r/>` is outstanding.
    pub fn is_requested(&self) -> bool {
        self.requested
    }

    /// The caller sent `<r/>` (on idle, or after resumption).
    pub fn note_requested(&mut self) {
        self.requested = true;
        self.since_request = 0;
    }

    /// Whether an idle `<r/>` is worth sending: something is unacknowledged and no request is
    /// outstanding.
    pub fn wants_idle_request(&self) -> bool {
        !self.queue.is_empty() && !self.requested
    }

    /// `<a h/>` (or the h of `<resume/>`): drops what it covers; returns how many. An h behind
    /// the last one (a stale ack) changes nothing; one ahead of what was sent is an error.
    pub fn ack(&mut self, h: u32) -> Result<usize, TooHigh> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.queue.len() {
            // Behind the last ack (mod 2^32, "behind" means more than 2^31 back): stale.
            if h.wrapping_sub(self.acked) > u32::MAX / 2 {
                return Ok(0);
            }
            return Err(TooHigh { h, sent: self.sent });
        }
        for _ in 0..n {
            if let Some(s) = self.queue.pop_front() {
                self.bytes -= s.len();
            }
        }
        self.acked = h;
        self.requested = false;
        Ok(n)
    }

    /// h of the last stanza sent.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// h of the last acknowledgement.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The unacknowledged stanzas, oldest first (to resend after `<resumed/>`).
    pub fn unacked(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.queue.iter()
    }

    /// Empties the queue (the session ends: each goes to offline storage or back).
    pub fn take_unacked(&mut self) -> VecDeque<Vec<u8>> {
        self.acked = self.sent;
        self.bytes = 0;
        std::mem::take(&mut self.queue)
    }
}

/// Parses an h attribute (an unsigned 32-bit integer, XEP-0198 §4).
pub fn parse_h(e: &Element) -> Option<u32> {
    e.attr("h")?.parse::<u32>().ok()
}

/// What a client may send about stream management on a c2s stream.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientSm {
    Enable {
        resume: bool,
    },
    Request,
    Ack(u32),
    Resume {
        previd: String,
        h: u32,
    },
    /// In the namespace but not understood (or an h that is not a number).
    Malformed,
}

impl ClientSm {
    /// `None` if `e` is not in the XEP-0198 namespace.
    pub fn parse(e: &Element) -> Option<ClientSm> {
        if e.ns != NS_SM {
            return None;
        }
        Some(match e.name.as_str() {
            "enable" => ClientSm::Enable {
                resume: matches!(e.attr("resume"), Some("true" | "1")),
            },
            "r" => ClientSm::Request,
            "a" => match parse_h(e) {
                Some(h) => ClientSm::Ack(h),
                None => ClientSm::Malformed,
            },
            "resume" => match (e.attr("previd"), parse_h(e)) {
                (Some(p), Some(h)) => ClientSm::Resume {
                    previd: p.to_owned(),
                    h,
                },
                _ => ClientSm::Malformed,
            },
            _ => ClientSm::Malformed,
        })
    }
}

pub fn feature() -> Element {
    Element::new("sm", NS_SM)
}

pub fn request() -> Element {
    Element::new("r", NS_SM)
}

pub fn answer(h: u32) -> Element {
    Element::new("a", NS_SM).with_attr("h", &h.to_string())
}

/// `<enabled/>`: with an id and the window in seconds when the session can be resumed.
pub fn enabled(resume: Option<(&str, u64)>) -> Element {
    let e = Element::new("enabled", NS_SM);
    match resume {
        Some((id, max)) => e
            .with_attr("id", id)
            .with_attr("resume", "true")
            .with_attr("max", &max.to_string()),
        None => e,
    }
}

pub fn resumed(previd: &str, h: u32) -> Element {
    Element::new("resumed", NS_SM)
        .with_attr("previd", previd)
        .with_attr("h", &h.to_string())
}

/// `<failed/>` with a stanza error condition (XEP-0198 §3, §5).
pub fn failed(condition: &str) -> Element {
    Element::new("failed", NS_SM).with_child(Element::new(condition, NS_STANZA_ERRORS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Outbound {
        Outbound::new(0, 5, 1000, 3)
    }

    #[test]
    fn fresh_push_counts_and_keeps() {
        let mut o = q();
        assert_eq!(o.push(b"one".to_vec()), Push::Queued);
        assert_eq!(o.push(b"two".to_vec()), Push::Queued);
        assert_eq!(o.sent(), 2);
        assert_eq!(o.len(), 2);
        assert_eq!(o.bytes(), 6);
    }

    #[test]
    fn pushes_reach_request_every_asks_once() {
        let mut o = q();
        o.push(vec![1]);
        o.push(vec![2]);
        assert_eq!(o.push(vec![3]), Push::QueuedRequestAck);
        // Outstanding: no second request until an answer.
        assert_eq!(o.push(vec![4]), Push::Queued);
        assert!(!o.wants_idle_request());
        o.ack(4).unwrap();
        assert!(!o.wants_idle_request());
        o.push(vec![5]);
        assert!(o.wants_idle_request());
    }

    #[test]
    fn ack_drops_covered_only() {
        let mut o = q();
        for i in 0..4u8 {
            o.push(vec![i]);
        }
        assert_eq!(o.ack(3), Ok(3));
        assert_eq!(o.unacked().cloned().collect::<Vec<_>>(), vec![vec![3u8]]);
        assert_eq!(o.bytes(), 1);
        // The same h again: nothing more.
        assert_eq!(o.ack(3), Ok(0));
    }

    #[test]
    fn ack_beyond_sent_too_high() {
        let mut o = q();
        o.push(vec![0]);
        assert_eq!(o.ack(2), Err(TooHigh { h: 2, sent: 1 }));
        assert_eq!(o.len(), 1, "an invalid ack drops nothing");
    }

    #[test]
    fn ack_behind_last_is_stale() {
        let mut o = q();
        o.push(vec![0]);
        o.push(vec![1]);
        o.ack(2).unwrap();
        o.push(vec![2]);
        assert_eq!(o.ack(1), Ok(0));
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn counters_near_max_wrap_to_zero() {
        let mut o = Outbound::new(u32::MAX - 1, 10, 1000, 100);
        for i in 0..4u8 {
            o.push(vec![i]);
        }
        assert_eq!(o.sent(), 2, "MAX-1 + 4 wraps to 2");
        assert_eq!(o.ack(u32::MAX), Ok(1));
        assert_eq!(o.ack(0), Ok(1));
        assert_eq!(o.ack(1), Ok(1));
        assert_eq!(o.unacked().cloned().collect::<Vec<_>>(), vec![vec![3u8]]);
        assert_eq!(o.ack(3), Err(TooHigh { h: 3, sent: 2 }));
        assert_eq!(o.ack(2), Ok(1));
        assert!(o.is_empty());
    }

    #[test]
    fn push_past_max_stanzas_soft_then_hard_overflows_but_keeps() {
        let mut o = Outbound::new(0, 2, 1000, 100);
        assert_eq!(o.push(vec![0]), Push::Queued);
        assert_eq!(o.push(vec![1]), Push::Queued);
        assert!(!o.over_soft_bound());
        assert_eq!(
            o.push(vec![2]),
            Push::Queued,
            "past the soft bound: grace, not overflow"
        );
        assert!(o.over_soft_bound());
        o.push(vec![3]);
        o.push(vec![4]);
        o.push(vec![5]);
        assert_eq!(o.push(vec![6]), Push::Overflow, "7 > 3 x 2");
        assert_eq!(o.len(), 7);
    }

    #[test]
    fn headroom_caps_at_twice_bound_until_restored() {
        let mut o = Outbound::new(0, 2, 1000, 100);
        o.set_headroom(true);
        for i in 0..4 {
            assert_eq!(o.push(vec![i]), Push::Queued);
        }
        assert_eq!(o.push(vec![4]), Push::Overflow, "5 > 2 x 2");
        o.set_headroom(false);
        assert_eq!(
            o.push(vec![5]),
            Push::Queued,
            "6 <= 3 x 2 once attached again"
        );
        o.ack(5).unwrap();
        assert!(!o.over_soft_bound());
    }

    #[test]
    fn push_past_max_bytes_overflows() {
        let mut o = Outbound::new(0, 100, 10, 100);
        assert_eq!(o.push(vec![0; 6]), Push::Queued);
        assert_eq!(o.push(vec![0; 5]), Push::Queued);
        assert!(o.over_soft_bound());
        assert_eq!(o.push(vec![0; 20]), Push::Overflow, "31 > 3 x 10");
    }

    #[test]
    fn take_unacked_empties_in_order() {
        let mut o = q();
        o.push(vec![1]);
        o.push(vec![2]);
        let all: Vec<_> = o.take_unacked().into_iter().collect();
        assert_eq!(all, vec![vec![1u8], vec![2u8]]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
        assert_eq!(o.ack(2), Ok(0));
    }

    #[test]
    fn parse_client_elements() {
        let e = |s: &str| crate::xml::fragment::parse_element(s.as_bytes()).unwrap();
        assert_eq!(
            ClientSm::parse(&e("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")),
            Some(ClientSm::Enable { resume: true })
        );
        assert_eq!(
            ClientSm::parse(&e("<enable xmlns='urn:xmpp:sm:3'/>")),
            Some(ClientSm::Enable { resume: false })
        );
        assert_eq!(
            ClientSm::parse(&e("<a xmlns='urn:xmpp:sm:3' h='4294967295'/>")),
            Some(ClientSm::Ack(u32::MAX))
        );
        assert_eq!(
            ClientSm::parse(&e("<a xmlns='urn:xmpp:sm:3' h='4294967296'/>")),
            Some(ClientSm::Malformed)
        );
        assert_eq!(
            ClientSm::parse(&e("<a xmlns='urn:xmpp:sm:3' h='-1'/>")),
            Some(ClientSm::Malformed)
        );
        assert_eq!(
            ClientSm::parse(&e("<resume xmlns='urn:xmpp:sm:3' previd='x' h='7'/>")),
            Some(ClientSm::Resume {
                previd: "x".into(),
                h: 7
            })
        );
        assert_eq!(
            ClientSm::parse(&e("<resume xmlns='urn:xmpp:sm:3' h='7'/>")),
            Some(ClientSm::Malformed)
        );
        assert_eq!(ClientSm::parse(&e("<r xmlns='urn:other'/>")), None);
    }

    #[test]
    fn builds_wire_elements() {
        let s = |e: Element| String::from_utf8(e.to_bytes(crate::xml::ns::CLIENT)).unwrap();
        assert_eq!(
            s(enabled(Some(("id1", 300)))),
            "<enabled xmlns='urn:xmpp:sm:3' id='id1' resume='true' max='300'/>"
        );
        assert_eq!(
            s(failed("item-not-found")),
            "<failed xmlns='urn:xmpp:sm:3'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(s(answer(3)), "<a xmlns='urn:xmpp:sm:3' h='3'/>");
    }
}
