//! The stanza pipeline: from a session (or a feature) through the hooks and the router to
//! sessions, features or an error reply.
//!
//! Order for a stanza a client sends: stamp `from` (c2s), parse `to`, outbound hooks (e.g.
//! presence, carbons, blocking), then `route`: for an existing local account the inbound hooks
//! (e.g. blocking, subscriptions), then the router's decision: delivery (then the delivered
//! hooks), the server's own IQ handlers, or a refusal (for a message the undeliverable hooks,
//! e.g. offline storage, get the first say). Stanzas features send with `Outbox::route` take
//! the same path from `route` on, and are never bounced.

use std::time::Instant;

use super::{Action, ConnId, Server};
use crate::features::{
    Ctx, Delivered, Flow, Inbound, InboundHook, IqRequest, IqTo, IqType, OutItem, Outbound,
    Registry,
};
use crate::jid::Jid;
use crate::router::{SessionId, Target};
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply, iq_result};
use crate::stream::error::{StreamCondition, StreamError};
use crate::xml::{Element, ns};

/// Most stanzas one feature call may cause to be routed before the server stops following
/// (a safety net against two features answering each other forever).
pub(super) const MAX_ROUTES_PER_FLUSH: usize = 100_000;

/// Who sent a stanza into `route`.
#[derive(Clone, Copy)]
pub(super) enum Origin {
    /// A local session: errors go back to it.
    Session(SessionId, ConnId),
    /// The server itself (a feature), or a bounce from federation: undeliverable stanzas are
    /// dropped, never bounced.
    Server,
    /// A remote server (an authenticated s2s stream): errors go back over federation, and
    /// an error is never answered (RFC 6120 §8.3.1).
    Remote,
}

impl Server {
    /// A stanza from a bound session (`from` stamped by c2s).
    pub(super) fn route_from_session(&mut self, now: Instant, conn: ConnId, mut e: Element) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(from) = self.router.session(sid).map(|s| s.jid.clone()) else {
            return;
        };
        let Some(kind) = StanzaKind::of(&e) else {
            return;
        };
        let to = match e.attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    let err = StanzaError::new(StanzaCondition::JidMalformed);
                    return self.refuse(conn, &e, err, from.domain());
                }
            },
        };
        let was_available = self.router.session(sid).is_some_and(|s| s.is_available());
        let info = Outbound {
            session: sid,
            conn,
            from: &from,
            to: to.as_ref(),
            kind,
        };
        let mut flow = Flow::Continue;
        for hook in &self.registry.outbound {
            if hook(&mut ctx!(self, now), &info, &mut e) == Flow::Stop {
                flow = Flow::Stop;
                break;
            }
        }
        self.flush_outbox(now);
        let now_available = self.router.session(sid).is_some_and(|s| s.is_available());
        if !was_available && now_available {
            for hook in &self.registry.available {
                hook(&mut ctx!(self, now), sid);
            }
            self.flush_outbox(now);
        }
        if flow == Flow::Stop {
            return;
        }
        // RFC 6120 §10.3: no `to` means the sender's own account. Presence without `to` is a
        // broadcast that the presence feature owns; without it, nobody receives one.
        let to = match to {
            Some(t) => t,
            None if kind == StanzaKind::Presence => return,
            None => from.to_bare(),
        };
        self.route(now, Origin::Session(sid, conn), &from, &to, kind, e);
    }

    /// A stanza from an incoming s2s stream: its `from` is in a domain authenticated on that
    /// stream and its `to` in a domain we host (`stream::s2s` checked both).
    pub(super) fn route_from_remote(&mut self, now: Instant, e: Element) {
        let (Some(kind), Some(Ok(from)), Some(Ok(to))) = (
            StanzaKind::of(&e),
            e.attr("from").map(Jid::parse),
            e.attr("to").map(Jid::parse),
        ) else {
            log::warn!("s2s: a stanza without from/to passed the stream checks; dropped");
            return;
        };
        if !self.config.hosts(to.domain()) {
            log::warn!("s2s: a stanza to {to} passed the stream checks; dropped");
            return;
        }
        self.route(now, Origin::Remote, &from, &to, kind, e);
    }

    /// An error reply for a stanza federation could not deliver, to its local sender: the
    /// normal local delivery, never answered in turn.
    pub(super) fn route_bounce(&mut self, now: Instant, e: Element) {
        let (Some(kind), Some(Ok(from)), Some(Ok(to))) = (
            StanzaKind::of(&e),
            e.attr("from").map(Jid::parse),
            e.attr("to").map(Jid::parse),
        ) else {
            return;
        };
        self.route(now, Origin::Server, &from, &to, kind, e);
    }

    /// Delivers `e` from `from` to `to`, running the recipient's hooks.
    pub(super) fn route(
        &mut self,
        now: Instant,
        origin: Origin,
        from: &Jid,
        to: &Jid,
        kind: StanzaKind,
        mut e: Element,
    ) {
        let hosted = self.config.hosts(to.domain());
        if !hosted {
            if let Some(f) = self.federation.as_mut() {
                if self.config.hosts(from.domain()) {
                    return f.send(now, from, to, e);
                }
                // Only our own users' stanzas go out (a remote's to a remote is not ours).
                log::debug!("not relaying a stanza from {from} to {to}");
                return;
            }
        }
        let account = to.to_bare();
        // An account with a session exists; only otherwise is the store asked (the hot path
        // of a chat between online users never reads the disk).
        let exists = hosted
            && to.local().is_some()
            && (self.router.sessions_of(&account).next().is_some()
                || match self.store.account_credentials(&account.to_string()) {
                    Ok(found) => found.is_some(),
                    Err(err) => {
                        log::error!("store: {err}");
                        let err = StanzaError::new(StanzaCondition::InternalServerError);
                        return self.refuse_origin(now, origin, &e, err, to);
                    }
                });
        let from_session = match origin {
            Origin::Session(sid, _) => Some(sid),
            Origin::Server | Origin::Remote => None,
        };
        let info = Inbound {
            from,
            to,
            kind,
            stanza: &e,
            from_session,
        };
        if exists && self.run_inbound_hooks(now, |r| &r.inbound, &info) == Flow::Stop {
            return;
        }
        if exists && kind == StanzaKind::Message && !self.registry.stamp.is_empty() {
            for hook in &self.registry.stamp {
                hook(&mut ctx!(self, now), from, to, &mut e);
            }
            self.flush_outbox(now);
        }
        let info = Inbound {
            from,
            to,
            kind,
            stanza: &e,
            from_session,
        };
        let target = self
            .router
            .resolve(kind, e.attr("type"), to, hosted, exists);
        match target {
            Target::Sessions(conns) => {
                self.deliver(&conns, &e);
                let idle = if kind == StanzaKind::Message {
                    self.sm_idle(&conns)
                } else {
                    Vec::new()
                };
                let info = Delivered {
                    from,
                    to,
                    kind,
                    stanza: &e,
                    conns: &conns,
                    idle: &idle,
                };
                for hook in &self.registry.delivered {
                    hook(&mut ctx!(self, now), &info);
                }
                self.flush_outbox(now);
            }
            Target::Server { account } => {
                if kind == StanzaKind::Iq {
                    self.server_iq(now, origin, from, to, account, &e);
                }
            }
            Target::Refuse(cond) => {
                if exists
                    && kind == StanzaKind::Message
                    && self.run_inbound_hooks(now, |r| &r.undeliverable, &info) == Flow::Stop
                {
                    return;
                }
                self.refuse_origin(now, origin, &e, StanzaError::new(cond), to);
            }
            Target::Drop => {}
        }
    }

    /// Runs one list of inbound-shaped hooks until one stops the stanza, then carries out
    /// what they queued.
    fn run_inbound_hooks(
        &mut self,
        now: Instant,
        list: fn(&Registry) -> &Vec<InboundHook>,
        info: &Inbound,
    ) -> Flow {
        let mut flow = Flow::Continue;
        for hook in list(&self.registry) {
            if hook(&mut ctx!(self, now), info) == Flow::Stop {
                flow = Flow::Stop;
                break;
            }
        }
        self.flush_outbox(now);
        flow
    }

    /// An IQ the server answers itself (RFC 6120 §8.4 for what nobody handles).
    fn server_iq(
        &mut self,
        now: Instant,
        origin: Origin,
        from: &Jid,
        to: &Jid,
        account: Option<Jid>,
        e: &Element,
    ) {
        let iq_type = match e.attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            // Results and errors addressed to the server answer nothing we asked.
            _ => return,
        };
        let mut payloads = e.child_elements();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            let err = StanzaError::new(StanzaCondition::BadRequest);
            return self.refuse_origin(now, origin, e, err, to);
        };
        let target = if account.is_some() {
            IqTo::Account
        } else {
            IqTo::Host
        };
        let addressee = account.unwrap_or_else(|| to.to_bare());
        let Some(handler) = self.registry.handler(target, iq_type, &payload.ns) else {
            let err = StanzaError::new(StanzaCondition::ServiceUnavailable);
            return self.refuse_origin(now, origin, e, err, to);
        };
        let req = IqRequest {
            from,
            session: match origin {
                Origin::Session(sid, _) => Some(sid),
                Origin::Server | Origin::Remote => None,
            },
            to: &addressee,
            iq_type,
            payload,
            iq: e,
            disco: self.registry.disco(target),
        };
        let result = handler(&mut ctx!(self, now), &req);
        // The answer goes out after what the handler queued (a roster push before the result
        // would be fine too, but RFC 6121 §2.1.5 examples show the result first: keep it so).
        let to_str = to.to_string();
        let reply = match result {
            Ok(payload) => {
                let mut r = iq_result(e, &to_str);
                if let Some(p) = payload {
                    r.push_child(p);
                }
                Some(r)
            }
            Err(err) => error_reply(e, &err, &to_str),
        };
        if std::mem::take(&mut self.outbox.reply_last) {
            self.flush_outbox(now);
        }
        match (reply, origin) {
            (Some(r), Origin::Session(_, conn)) => self.reply(conn, &r),
            (Some(r), Origin::Remote) => self.reply_remote(now, r),
            _ => {}
        }
        self.flush_outbox(now);
    }

    /// Sends `e` to each connection that is still a bound session (serialized once).
    pub(super) fn deliver(&mut self, conns: &[ConnId], e: &Element) {
        if conns.is_empty() {
            return;
        }
        let bytes = e.to_bytes(ns::CLIENT);
        for c in conns {
            if self.sm_take(*c, &bytes, Some(e)) {
                continue;
            }
            if self.is_bound(*c) {
                self.push_action(Action::Send {
                    conn: *c,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn is_bound(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|k| k.c2s.bound_jid().is_some())
    }

    pub(super) fn reply(&mut self, conn: ConnId, e: &Element) {
        let bytes = e.to_bytes(ns::CLIENT);
        if self.sm_take(conn, &bytes, Some(e)) {
            return;
        }
        self.push_action(Action::Send { conn, bytes });
    }

    pub(super) fn refuse(&mut self, conn: ConnId, stanza: &Element, err: StanzaError, from: &str) {
        if let Some(r) = error_reply(stanza, &err, from) {
            self.reply(conn, &r);
        }
    }

    fn refuse_origin(
        &mut self,
        now: Instant,
        origin: Origin,
        stanza: &Element,
        err: StanzaError,
        to: &Jid,
    ) {
        match origin {
            Origin::Session(_, conn) => self.refuse(conn, stanza, err, &to.to_string()),
            Origin::Remote => {
                // `error_reply` answers no error (RFC 6120 §8.3.1).
                if let Some(r) = error_reply(stanza, &err, &to.to_string()) {
                    self.reply_remote(now, r);
                }
            }
            Origin::Server => {}
        }
    }

    /// Sends the server's answer to a remote sender over federation.
    fn reply_remote(&mut self, now: Instant, r: Element) {
        let (Some(Ok(from)), Some(Ok(to))) =
            (r.attr("from").map(Jid::parse), r.attr("to").map(Jid::parse))
        else {
            return;
        };
        if let Some(f) = self.federation.as_mut() {
            f.send(now, &from, &to, r);
        }
    }

    /// Carries out what features queued: sends, and stanzas to route (which may queue more).
    pub(super) fn flush_outbox(&mut self, now: Instant) {
        let mut routed = 0usize;
        // Bounded by MAX_ROUTES_PER_FLUSH routes; sends only drain.
        loop {
            if self.outbox.items.is_empty() {
                return;
            }
            let items = std::mem::take(&mut self.outbox.items);
            for item in items {
                match item {
                    OutItem::Send(conn, bytes) => {
                        if self.sm_take(conn, &bytes, None) {
                            continue;
                        }
                        if self.is_bound(conn) {
                            self.push_action(Action::Send { conn, bytes });
                        }
                    }
                    OutItem::Route(e) => {
                        routed += 1;
                        if routed > MAX_ROUTES_PER_FLUSH {
                            log::error!("features routed too many stanzas in one turn; dropped");
                            self.outbox.items.clear();
                            return;
                        }
                        let (Some(kind), Some(Ok(from)), Some(Ok(to))) = (
                            StanzaKind::of(&e),
                            e.attr("from").map(Jid::parse),
                            e.attr("to").map(Jid::parse),
                        ) else {
                            log::warn!("a feature routed a stanza without from/to; dropped");
                            continue;
                        };
                        self.route(now, Origin::Server, &from, &to, kind, e);
                    }
                    OutItem::CloseAccount(account, why) => {
                        self.sm_end_detached(now, &account);
                        let conns: Vec<ConnId> =
                            self.router.sessions_of(&account).map(|s| s.conn).collect();
                        for c in conns {
                            // The closes are upcalls: the `process` loop this runs under
                            // ends the sessions after what is already queued.
                            self.with_conn(c, |c, env| {
                                c.fail(
                                    StreamError::with_text(StreamCondition::NotAuthorized, why),
                                    env,
                                )
                            });
                        }
                    }
                }
            }
        }
    }
}
