//! The driver's own deadlines (TLS handshake timeouts, closing-connection flush deadlines,
//! control-request timeouts, accept back-off): a min-heap of `(Instant, key)`.
//!
//! Owns only ordering. Entries are never removed early: whoever pops a key checks that it
//! still applies (slot generation and state), which keeps cancelling free. The heap holds at
//! most one or two entries per connection opened within the longest timeout, so it stays
//! bounded by the accept rate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

pub struct DeadlineHeap<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> DeadlineHeap<K> {
    pub fn new() -> Self {
        DeadlineHeap {
            heap: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes one entry due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, key))| key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

impl<K: Ord> Default for DeadlineHeap<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn empty_pop_due_none() {
        let mut h: DeadlineHeap<u8> = DeadlineHeap::new();
        assert_eq!(h.next_deadline(), None);
        assert_eq!(h.pop_due(Instant::now()), None);
    }

    #[test]
    fn several_pop_due_earliest_first_and_only_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = DeadlineHeap::new();
        h.push(t0 + 3 * s, 'c');
        h.push(t0 + s, 'a');
        h.push(t0 + 2 * s, 'b');
        assert_eq!(h.next_deadline(), Some(t0 + s));
        assert_eq!(h.pop_due(t0), None);
        assert_eq!(h.pop_due(t0 + 2 * s), Some('a'));
        assert_eq!(h.pop_due(t0 + 2 * s), Some('b'));
        assert_eq!(h.pop_due(t0 + 2 * s), None);
        assert_eq!(h.len(), 1);
        assert_eq!(h.next_deadline(), Some(t0 + 3 * s));
    }

    #[test]
    fn earliest_picks_minimum_of_present() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(earliest(Some(t1), Some(t0)), Some(t0));
        assert_eq!(earliest(None, Some(t1)), Some(t1));
        assert_eq!(earliest(Some(t1), None), Some(t1));
        assert_eq!(earliest(None, None), None);
    }
}
