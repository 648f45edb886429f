//! Sessions and where a stanza goes (RFC 6120 §8.5, §10; RFC 6121 §8.5).
//!
//! Owns: the table of bound sessions (by id, by account), resource binding and conflicts,
//! each session's presence and priority, and the delivery rules that pick the sessions a
//! stanza reaches. Leaves to `server` the actual sending and error replies, and to `features`
//! what the server answers itself.
//!
//! A session is not its connection: it holds the connection it currently uses, so stream
//! management (XEP-0198) can later keep a session while its connection is gone.

use std::collections::HashMap;

use crate::jid::Jid;
use crate::server::ConnId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::xml::Element;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A bound resource.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub jid: Jid,
    pub conn: ConnId,
    /// The last available presence the client broadcast; `None` until initial presence (and
    /// after unavailable): such a session gets no bare-JID messages or presence broadcasts.
    pub presence: Option<Element>,
    pub priority: i8,
    /// Full JIDs that got directed available presence from this session (RFC 6121 §4.6), to
    /// send unavailable to when the session ends.
    pub directed: Vec<Jid>,
    /// The client asked for the roster: it is an "interested resource" that gets roster
    /// pushes (RFC 6121 §2.1.6).
    pub roster_requested: bool,
    /// Message Carbons (XEP-0280) are enabled: the session gets copies of the account's chats.
    pub carbons: bool,
    /// The client asked for the block list: it is an "interested resource" that gets block
    /// and unblock pushes (XEP-0191 §3.3).
    pub blocklist_requested: bool,
}

impl Session {
    pub fn is_available(&self) -> bool {
        self.presence.is_some()
    }
}

/// Where a stanza goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Answered by the server itself: addressed to a hosted domain, or an IQ to an account's
    /// bare JID (`account` set), answered on the account's behalf (RFC 6121 §8.5.1).
    Server { account: Option<Jid> },
    /// Delivered to these sessions' connections.
    Sessions(Vec<ConnId>),
    /// Refused: the sender gets this error (unless the stanza is itself an error).
    Refuse(StanzaCondition),
    /// Silently ignored (as RFC 6121 §8.5 prescribes for some cases).
    Drop,
}

#[derive(Default)]
pub struct Router {
    sessions: HashMap<SessionId, Box<Session>>,
    /// Keyed by the bare JID's written form, so a lookup borrows any JID's `bare_str`.
    by_account: HashMap<Box<str>, Vec<SessionId>>,
    next_id: u64,
    /// PEP's in-memory state (contacts' caps, who gets notifications); not stored.
    pub pep: crate::features::pep::PepState,
    /// Block lists read from the store (XEP-0191), so that stanzas do not read it.
    pub blocking: crate::features::blocking::BlockCache,
}

/// The outcome of binding.
pub struct Bound {
    pub id: SessionId,
    pub jid: Jid,
    /// The older session that had the same full JID and was replaced (RFC 6120 §7.7.2.2).
    pub replaced: Option<Session>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id).map(|s| &**s)
    }

    pub fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&id).map(|s| &mut **s)
    }

    /// Sessions of an account (bare JID).
    /// The sessions of `account`'s bare JID (a full JID's resource is ignored).
    pub fn sessions_of(&self, account: &Jid) -> impl Iterator<Item = &Session> {
        self.by_account
            .get(account.bare_str())
            .into_iter()
            .flatten()
            .filter_map(|id| self.sessions.get(id).map(|s| &**s))
    }

    pub fn find_full(&self, jid: &Jid) -> Option<&Session> {
        self.sessions_of(jid).find(|s| s.jid == *jid)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Binds `resource` (or `generated` when the client gave none) for `account` on `conn`.
    /// A session with the same full JID is replaced; beyond `max_per_account` sessions the
    /// bind fails with `resource-constraint`.
    pub fn bind(
        &mut self,
        account: &Jid,
        resource: Option<&str>,
        generated: &str,
        conn: ConnId,
        max_per_account: usize,
    ) -> Result<Bound, StanzaError> {
        let jid = account
            .with_resource(resource.unwrap_or(generated))
            .map_err(|_| StanzaError::new(StanzaCondition::BadRequest))?;
        let replaced = match self.find_full(&jid).map(|s| s.id) {
            Some(old) => self.unbind(old),
            None => None,
        };
        if replaced.is_none() && self.sessions_of(account).count() >= max_per_account {
            return Err(StanzaError::with_text(
                StanzaCondition::ResourceConstraint,
                "too many sessions for this account",
            ));
        }
        self.next_id += 1;
        let id = SessionId(self.next_id);
        self.sessions.insert(
            id,
            Box::new(Session {
                id,
                jid: jid.clone(),
                conn,
                presence: None,
                priority: 0,
                directed: Vec::new(),
                roster_requested: false,
                carbons: false,
                blocklist_requested: false,
            }),
        );
        self.by_account
            .entry(account.bare_str().into())
            .or_default()
            .push(id);
        Ok(Bound { id, jid, replaced })
    }

    /// Removes a session; returns it.
    pub fn unbind(&mut self, id: SessionId) -> Option<Session> {
        let s = *self.sessions.remove(&id)?;
        let account = s.jid.bare_str();
        if let Some(ids) = self.by_account.get_mut(account) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_account.remove(account);
            }
        }
        Some(s)
    }

    /// Where a stanza of `kind` and `stanza_type` addressed to `to` goes (RFC 6121 §8.5).
    /// `account_exists` says whether a local bare JID is an account; `hosted` whether a
    /// domain is ours.
    pub fn resolve(
        &self,
        kind: StanzaKind,
        stanza_type: Option<&str>,
        to: &Jid,
        hosted: bool,
        account_exists: bool,
    ) -> Target {
        if !hosted {
            // Only reached with federation off (`[s2s] enabled = false`): the server sends
            // stanzas for other domains to `federation` before asking the router.
            return match kind {
                StanzaKind::Presence => Target::Drop,
                _ => Target::Refuse(StanzaCondition::RemoteServerNotFound),
            };
        }
        if to.local().is_none() {
            return match kind {
                StanzaKind::Iq => Target::Server { account: None },
                // Presence to the server and messages to it have nothing to answer.
                _ => Target::Drop,
            };
        }
        if !account_exists {
            // RFC 6121 §8.5.1: no such user. Presence is ignored so as not to reveal it.
            return match kind {
                StanzaKind::Presence => Target::Drop,
                _ if stanza_type == Some("error") => Target::Drop,
                _ => Target::Refuse(StanzaCondition::ServiceUnavailable),
            };
        }
        if !to.is_bare() {
            if let Some(s) = self.find_full(to) {
                // RFC 6121 §8.5.3.1: a matching resource gets it, whatever the type.
                return Target::Sessions(vec![s.conn]);
            }
            // RFC 6121 §8.5.3.2: no such resource.
            return match (kind, stanza_type.unwrap_or("normal")) {
                (StanzaKind::Message, "normal" | "chat") => {
                    self.resolve_bare_message(&to.to_bare(), "chat")
                }
                (StanzaKind::Message, "groupchat") => {
                    Target::Refuse(StanzaCondition::ServiceUnavailable)
                }
                (StanzaKind::Iq, "get" | "set") => {
                    Target::Refuse(StanzaCondition::ServiceUnavailable)
                }
                _ => Target::Drop,
            };
        }
        match kind {
            StanzaKind::Iq => Target::Server {
                account: Some(to.clone()),
            },
            StanzaKind::Message => self.resolve_bare_message(to, stanza_type.unwrap_or("normal")),
            // RFC 6121 §8.5.2.1.1: available resources get presence sent to the bare JID.
            StanzaKind::Presence => {
                let conns: Vec<ConnId> = self
                    .sessions_of(to)
                    .filter(|s| s.is_available())
                    .map(|s| s.conn)
                    .collect();
                if conns.is_empty() {
                    Target::Drop
                } else {
                    Target::Sessions(conns)
                }
            }
        }
    }

    /// RFC 6121 §8.5.2.1.1: normal and chat messages go to the available resources with the
    /// highest non-negative priority; headline to all non-negative ones; groupchat is refused.
    fn resolve_bare_message(&self, account: &Jid, msg_type: &str) -> Target {
        let candidates = self
            .sessions_of(account)
            .filter(|s| s.is_available() && s.priority >= 0);
        let conns: Vec<ConnId> = match msg_type {
            "groupchat" => return Target::Refuse(StanzaCondition::ServiceUnavailable),
            "error" => return Target::Drop,
            "headline" => candidates.map(|s| s.conn).collect(),
            _ => {
                let all: Vec<&Session> = candidates.collect();
                let top = all.iter().map(|s| s.priority).max();
                all.iter()
                    .filter(|s| Some(s.priority) == top)
                    .map(|s| s.conn)
                    .collect()
            }
        };
        if !conns.is_empty() {
            return Target::Sessions(conns);
        }
        match msg_type {
            // Offline storage is its own issue; until then the sender learns it failed.
            "normal" | "chat" => Target::Refuse(StanzaCondition::ServiceUnavailable),
            _ => Target::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn available(r: &mut Router, id: SessionId, priority: i8) {
        let s = r.session_mut(id).unwrap();
        s.presence = Some(Element::new("presence", crate::xml::ns::CLIENT));
        s.priority = priority;
    }

    #[test]
    fn bind_same_resource_replaces_older_session() {
        let mut r = Router::new();
        let a = j("a@d");
        let first = r.bind(&a, Some("r"), "x", ConnId(1), 4).unwrap();
        let second = r.bind(&a, Some("r"), "x", ConnId(2), 4).unwrap();
        assert_eq!(second.replaced.map(|s| s.conn), Some(ConnId(1)));
        assert!(r.session(first.id).is_none());
        assert_eq!(r.find_full(&j("a@d/r")).map(|s| s.conn), Some(ConnId(2)));
    }

    #[test]
    fn bind_beyond_limit_resource_constraint() {
        let mut r = Router::new();
        let a = j("a@d");
        r.bind(&a, Some("1"), "x", ConnId(1), 1).unwrap();
        let e = r.bind(&a, Some("2"), "x", ConnId(2), 1).err().unwrap();
        assert_eq!(e.condition, StanzaCondition::ResourceConstraint);
    }

    #[test]
    fn bare_chat_goes_to_highest_priority() {
        let mut r = Router::new();
        let a = j("a@d");
        let s1 = r.bind(&a, Some("1"), "x", ConnId(1), 4).unwrap().id;
        let s2 = r.bind(&a, Some("2"), "x", ConnId(2), 4).unwrap().id;
        let s3 = r.bind(&a, Some("3"), "x", ConnId(3), 4).unwrap().id;
        available(&mut r, s1, 5);
        available(&mut r, s2, 1);
        available(&mut r, s3, -1);
        let t = r.resolve(StanzaKind::Message, Some("chat"), &a, true, true);
        assert_eq!(t, Target::Sessions(vec![ConnId(1)]));
        let t = r.resolve(StanzaKind::Message, Some("headline"), &a, true, true);
        assert_eq!(t, Target::Sessions(vec![ConnId(1), ConnId(2)]));
    }

    #[test]
    fn negative_priority_only_gets_no_bare_message() {
        let mut r = Router::new();
        let a = j("a@d");
        let s = r.bind(&a, Some("1"), "x", ConnId(1), 4).unwrap().id;
        available(&mut r, s, -1);
        let t = r.resolve(StanzaKind::Message, Some("chat"), &a, true, true);
        assert_eq!(t, Target::Refuse(StanzaCondition::ServiceUnavailable));
        // ... but a message to its full JID reaches it.
        let t = r.resolve(StanzaKind::Message, None, &j("a@d/1"), true, true);
        assert_eq!(t, Target::Sessions(vec![ConnId(1)]));
    }

    #[test]
    fn unknown_user_presence_dropped_message_refused() {
        let r = Router::new();
        let b = j("nobody@d");
        assert_eq!(
            r.resolve(StanzaKind::Presence, None, &b, true, false),
            Target::Drop
        );
        assert_eq!(
            r.resolve(StanzaKind::Message, None, &b, true, false),
            Target::Refuse(StanzaCondition::ServiceUnavailable)
        );
    }

    #[test]
    fn full_jid_without_session_rules() {
        let r = Router::new();
        let f = j("a@d/gone");
        assert_eq!(
            r.resolve(StanzaKind::Iq, Some("get"), &f, true, true),
            Target::Refuse(StanzaCondition::ServiceUnavailable)
        );
        assert_eq!(
            r.resolve(StanzaKind::Message, Some("headline"), &f, true, true),
            Target::Drop
        );
        assert_eq!(
            r.resolve(StanzaKind::Presence, None, &f, true, true),
            Target::Drop
        );
    }

    #[test]
    fn other_domain_remote_server_not_found() {
        let r = Router::new();
        assert_eq!(
            r.resolve(StanzaKind::Message, None, &j("a@elsewhere"), false, false),
            Target::Refuse(StanzaCondition::RemoteServerNotFound)
        );
    }
}
