//! Roster records (RFC 6121 §2, §3 and Appendix A) as stored, and their byte encoding.
//!
//! One record per (account, contact). A record exists when the contact is on the roster
//! (`in_roster`), or when it only carries subscription facts the user has not acted on yet
//! (a pending inbound request), or as a tombstone after removal, so that roster versioning
//! (RFC 6121 §2.6) can tell a client which items went away since its version.

/// The subscription part of RFC 6121's states, without the pending flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn name(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self, on: bool) -> Subscription {
        Subscription::from_flags(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> Subscription {
        Subscription::from_flags(self.has_to(), on)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One contact of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID, normalised.
    pub jid: String,
    /// Shown on the roster (set by the user, or by an approved subscription).
    pub in_roster: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// The user asked to see the contact's presence and awaits an answer ("Pending Out").
    pub ask: bool,
    /// The contact asked to see the user's presence and awaits an answer ("Pending In").
    pub pending_in: bool,
    /// The user pre-approved a request the contact has not made yet (RFC 6121 §3.4).
    pub approved: bool,
    /// The roster version at which this record last changed (set by the store).
    pub version: u64,
}

impl RosterItem {
    pub fn new(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.to_owned(),
            in_roster: false,
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            approved: false,
            version: 0,
        }
    }

    /// Nothing left worth keeping except as a tombstone for versioning.
    pub fn is_empty(&self) -> bool {
        !self.in_roster && !self.pending_in && !self.approved
    }

    /// Stable encoding: version byte 1, flags, subscription, u64 version, then name and groups
    /// as u16-length-prefixed UTF-8 (the JID is the key and not repeated).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        let flags = (self.in_roster as u8)
            | (self.ask as u8) << 1
            | (self.pending_in as u8) << 2
            | (self.approved as u8) << 3
            | (self.name.is_some() as u8) << 4;
        out.push(flags);
        out.push(match self.subscription {
            Subscription::None => 0,
            Subscription::To => 1,
            Subscription::From => 2,
            Subscription::Both => 3,
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        let mut put = |s: &str| {
            // Names and groups are bounded far below 64 KiB by the stanza size limit.
            let b = s.as_bytes();
            let n = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&b[..n]);
        };
        put(self.name.as_deref().unwrap_or(""));
        for g in &self.groups {
            put(g);
        }
        out
    }

    /// Decodes `encode`'s output for contact `jid`; `None` if the bytes are not that.
    pub fn decode(jid: &str, b: &[u8]) -> Option<RosterItem> {
        let (&[1, flags, sub], rest) = b.split_first_chunk::<3>()? else {
            return None;
        };
        let (ver, mut rest) = rest.split_first_chunk::<8>()?;
        let mut strings = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let n = u16::from_be_bytes(*len) as usize;
            if tail.len() < n {
                return None;
            }
            let (s, tail) = tail.split_at(n);
            strings.push(String::from_utf8(s.to_vec()).ok()?);
            rest = tail;
        }
        let mut strings = strings.into_iter();
        let name = strings.next()?;
        Some(RosterItem {
            jid: jid.to_owned(),
            in_roster: flags & 1 != 0,
            ask: flags & 2 != 0,
            pending_in: flags & 4 != 0,
            approved: flags & 8 != 0,
            name: (flags & 16 != 0).then_some(name),
            groups: strings.collect(),
            subscription: match sub {
                0 => Subscription::None,
                1 => Subscription::To,
                2 => Subscription::From,
                3 => Subscription::Both,
                _ => return None,
            },
            version: u64::from_be_bytes(*ver),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_truncations_refused() {
        let item = RosterItem {
            jid: "bob@b".into(),
            in_roster: true,
            name: Some("Bob".into()),
            groups: vec!["Friends".into(), "Work".into()],
            subscription: Subscription::From,
            ask: true,
            pending_in: false,
            approved: true,
            version: 42,
        };
        let enc = item.encode();
        assert_eq!(RosterItem::decode("bob@b", &enc), Some(item.clone()));
        let plain = RosterItem::new("c@d");
        assert_eq!(RosterItem::decode("c@d", &plain.encode()), Some(plain));
        for n in 0..enc.len() - 1 {
            // Every shorter prefix either fails or decodes to something else.
            assert_ne!(RosterItem::decode("bob@b", &enc[..n]), Some(item.clone()));
        }
    }
}
