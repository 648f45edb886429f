//! Stream management (XEP-0198) and client state indication (XEP-0352) for sessions: a session
//! that outlives its connection, and what it is sent while detached or inactive.
//!
//! Owns: the per-session state of both (`Managed`), kept apart from the connection because
//! a session can be detached from its connection (the connection dropped, the session waits
//! for `<resume/>` until the window from `[c2s] resume_timeout_secs` closes) and attached to
//! a new one (`<resume/>` takes the queue over and the old connection, if still open, is
//! closed with `conflict`); what happens to the unacknowledged stanzas when a session ends;
//! the idle ack request. Uses `stream::sm` for the counters and queue and `stream::csi` for
//! the held queue. The server calls in at a few points: every stanza to a client
//! (`sm_take`), the connection going away (`sm_detach`), a session ending (`sm_forget` then
//! `sm_dispose`), the end of a turn, timers, and the c2s upcalls.
//!
//! Order of a stanza to a managed session: CSI first (an inactive client's stanzas that can
//! wait are held; what is released goes on), then stream management (counted and queued
//! until acknowledged), then the connection if attached. A detached session holds nothing
//! back: all goes to the unacknowledged queue, to be resent on resumption.
//!
//! When a session ends (the window closes, a clean `</stream:stream>`, a resource conflict,
//! a stream error, shutdown) its unacknowledged and held stanzas are handled exactly once:
//! messages that matter (a body, an encrypted payload: `csi::classify` says urgent) take the
//! undeliverable path (offline storage, XEP-0160; what it does not keep and has a body is
//! refused to its sender), IQ requests are answered to their sender with
//! `service-unavailable`; presence, chat states, receipts and PEP events are dropped (the
//! unavailable presence that the session's end broadcasts replaces the presence).
//!
//! Bounds: `[c2s] max_unacked_stanzas` / `max_unacked_bytes` per session. Past either on an
//! attached session the stream is closed with `policy-violation` and the session handled as
//! a dropped connection (it waits for resumption, whose `h` frees the queue). A detached
//! session takes up to twice the bounds (so that what arrives while a stalled client
//! reconnects does not end it); past that the session ends at once (its queue goes to
//! offline storage as above). So one session holds at most 2 x the bounds.
//! The CSI queue holds at most `CSI_MAX_HELD` stanzas (then it is flushed, see `stream::csi`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::routing::Origin;
use super::{Action, ConnId, Server};
use crate::features::{Ctx, Flow, Inbound};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply};
use crate::stream::c2s::Resumed;
use crate::stream::csi::{self, Held};
use crate::stream::error::{StreamCondition, StreamError};
use crate::stream::sm::{self, Outbound, Push};
use crate::xml::fragment::parse_element;
use crate::xml::{Element, ns};

/// Most stanzas an inactive client's session holds back.
pub const CSI_MAX_HELD: usize = 100;
/// A `<r/>` goes out after this many unacknowledged stanzas ...
pub const REQUEST_EVERY: u32 = 5;
/// ... or when stanzas stayed unacknowledged this long.
pub const ACK_IDLE: Duration = Duration::from_secs(5);

/// Stream management and CSI state of one session.
struct Managed {
    /// The connection the session uses, or used last while detached (the router still
    /// names it: deliveries to it land here).
    conn: ConnId,
    attached: bool,
    /// Stream management is enabled.
    out: Option<Outbound>,
    /// The resumption id, when resumption was asked for and allowed.
    token: Option<String>,
    /// While detached: the client's stanzas the old connection handled (its h).
    handled: u32,
    csi: Held,
    /// The session's entry in `SessionMgmt::timers` (resumption window or idle ack).
    timer: Option<Instant>,
    /// The queue passed its hard cap: closed (attached) or ended (detached) at end of turn.
    overflowed: bool,
    /// The queue passed its soft bound: by then the client must have acknowledged enough to
    /// be back under it, or the stream is closed (`[c2s] ack_timeout_secs`).
    grace: Option<Instant>,
}

/// The server's table of managed sessions.
#[derive(Default)]
pub(super) struct SessionMgmt {
    managed: HashMap<SessionId, Box<Managed>>,
    by_conn: HashMap<ConnId, SessionId>,
    by_token: HashMap<String, SessionId>,
    timers: BTreeSet<(Instant, SessionId)>,
    /// Sessions to look at in `sm_end_turn` (a stanza was queued, or the queue overflowed).
    touched: Vec<SessionId>,
    /// Where the outbound h starts at `<enable/>` (0; tests start near 2^32 to see the wrap).
    #[cfg(test)]
    start_h: u32,
}

impl SessionMgmt {
    /// The next resumption window or idle ack, for `Server::poll_timeout`.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Sessions waiting for resumption.
    #[cfg(test)]
    pub(super) fn detached_count(&self) -> usize {
        self.managed.values().filter(|m| !m.attached).count()
    }

    fn set_timer(&mut self, sid: SessionId, when: Option<Instant>) {
        let Some(m) = self.managed.get_mut(&sid) else {
            return;
        };
        if let Some(old) = m.timer.take() {
            self.timers.remove(&(old, sid));
        }
        if let Some(t) = when {
            self.timers.insert((t, sid));
            m.timer = Some(t);
        }
    }

    fn entry(&mut self, sid: SessionId, conn: ConnId) -> &mut Managed {
        self.by_conn.insert(conn, sid);
        self.managed.entry(sid).or_insert_with(|| {
            Box::new(Managed {
                conn,
                attached: true,
                out: None,
                token: None,
                handled: 0,
                csi: Held::new(CSI_MAX_HELD),
                timer: None,
                overflowed: false,
                grace: None,
            })
        })
    }
}

/// Queues `batch` in the session's stream management (if on); returns whether to send `<r/>`.
fn queue(m: &mut Managed, batch: &[Vec<u8>]) -> bool {
    let Some(out) = &mut m.out else {
        return false;
    };
    let mut request = false;
    for b in batch {
        match out.push(b.clone()) {
            Push::Queued => {}
            Push::QueuedRequestAck => request = true,
            Push::Overflow => m.overflowed = true,
        }
    }
    request && m.attached
}

impl Server {
    /// Hook for every stanza to a client connection: returns true when the session is
    /// managed (stream management on, or CSI inactive) and the stanza was taken (sent,
    /// queued or held); false leaves the usual path to send it.
    pub(super) fn sm_take(&mut self, conn: ConnId, bytes: &[u8], e: Option<&Element>) -> bool {
        let Some(&sid) = self.sm.by_conn.get(&conn) else {
            return false;
        };
        let Some(m) = self.sm.managed.get_mut(&sid) else {
            return false;
        };
        let batch = if m.attached && m.csi.is_inactive() {
            let class = match e {
                Some(e) => csi::classify(e),
                // Bytes a feature serialized: read back only for an inactive client.
                None => parse_element(bytes).map_or(csi::Class::Urgent, |e| csi::classify(&e)),
            };
            m.csi.offer(class, bytes.to_vec())
        } else {
            vec![bytes.to_vec()]
        };
        self.sm_emit(sid, batch);
        true
    }

    /// Queues (stream management) and sends (if attached) stanzas already past CSI.
    fn sm_emit(&mut self, sid: SessionId, batch: Vec<Vec<u8>>) {
        let Some(m) = self.sm.managed.get_mut(&sid) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let request = queue(m, &batch);
        if (m.out.is_some() || m.overflowed) && self.sm.touched.last() != Some(&sid) {
            self.sm.touched.push(sid);
        }
        if !m.attached {
            return;
        }
        let conn = m.conn;
        for bytes in batch {
            self.push_action(Action::Send { conn, bytes });
        }
        if request {
            self.push_action(Action::Send {
                conn,
                bytes: sm::request().to_bytes(ns::CLIENT),
            });
        }
    }

    /// `<enable/>` on a bound stream.
    pub(super) fn sm_enable(&mut self, conn: ConnId, resume: bool) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let window = self.config.c2s.resume_timeout;
        let token = (resume && !window.is_zero()).then(|| {
            let mut rnd = [0u8; 16];
            self.random.fill(&mut rnd);
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        });
        let c2s = &self.config.c2s;
        #[cfg(test)]
        let start = self.sm.start_h;
        #[cfg(not(test))]
        let start = 0;
        let out = Outbound::new(
            start,
            c2s.max_unacked_stanzas,
            c2s.max_unacked_bytes,
            REQUEST_EVERY,
        );
        let m = self.sm.entry(sid, conn);
        m.out = Some(out);
        m.token = token.clone();
        if let Some(t) = &token {
            self.sm.by_token.insert(t.clone(), sid);
        }
        log::debug!(
            "{conn:?}: stream management enabled (resumable: {})",
            token.is_some()
        );
        let reply = sm::enabled(token.as_deref().map(|t| (t, window.as_secs())));
        self.push_action(Action::Send {
            conn,
            bytes: reply.to_bytes(ns::CLIENT),
        });
    }

    /// `<a h/>` from the client.
    pub(super) fn sm_ack(&mut self, conn: ConnId, h: u32) {
        let Some(sid) = self.sm.by_conn.get(&conn).copied() else {
            return;
        };
        let Some(out) = self.sm.managed.get_mut(&sid).and_then(|m| m.out.as_mut()) else {
            return;
        };
        if let Err(e) = out.ack(h) {
            // XEP-0198 §4: handled-count-too-high ends the stream; the session ends with it.
            let text = format!("handled-count-too-high: h={} but sent {}", e.h, e.sent);
            self.with_conn(conn, |c, env| {
                c.fail(
                    StreamError::with_text(StreamCondition::UndefinedCondition, &text),
                    env,
                )
            });
        }
    }

    /// `<active/>` / `<inactive/>`.
    pub(super) fn sm_csi(&mut self, conn: ConnId, active: bool) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let m = self.sm.entry(sid, conn);
        if active {
            let batch = m.csi.set_active();
            let plain = m.out.is_none();
            self.sm_emit(sid, batch);
            if plain {
                // Nothing left to manage: deliveries take the plain path again.
                self.sm.managed.remove(&sid);
                self.sm.by_conn.remove(&conn);
            }
        } else {
            m.csi.set_inactive();
        }
    }

    /// Hook where a connection is forgotten: true when its session stays, detached, for
    /// resumption (the caller then does not end it).
    pub(super) fn sm_detach(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        survives: bool,
        handled: Option<u32>,
    ) -> bool {
        let window = self.config.c2s.resume_timeout;
        let Some(m) = self.sm.managed.get_mut(&sid) else {
            return false;
        };
        if !survives || m.token.is_none() || m.overflowed || m.conn != conn {
            return false;
        }
        m.attached = false;
        m.handled = handled.unwrap_or(0);
        if let Some(out) = m.out.as_mut() {
            out.set_headroom(true);
        }
        // What an inactive client had not been sent yet is as unacknowledged as the rest.
        let held = m.csi.take_all();
        m.csi = Held::new(CSI_MAX_HELD);
        queue(m, &held);
        if m.overflowed {
            m.attached = true;
            return false;
        }
        log::info!(
            "{conn:?}: connection lost; session kept {} s for resumption ({} unacknowledged)",
            window.as_secs(),
            m.out.as_ref().map_or(0, |o| o.len())
        );
        self.sm.set_timer(sid, Some(now + window));
        true
    }

    /// Hook at the start of ending a session: forgets its management state and returns the
    /// stanzas it still owes the client (unacknowledged, then held), with the session's JID.
    pub(super) fn sm_forget(&mut self, sid: SessionId) -> Option<(Jid, Vec<Vec<u8>>)> {
        self.sm.set_timer(sid, None);
        let mut m = self.sm.managed.remove(&sid)?;
        if self.sm.by_conn.get(&m.conn) == Some(&sid) {
            self.sm.by_conn.remove(&m.conn);
        }
        if let Some(t) = &m.token {
            self.sm.by_token.remove(t);
        }
        let mut owed: Vec<Vec<u8>> = m
            .out
            .as_mut()
            .map(|o| o.take_unacked().into_iter().collect())
            .unwrap_or_default();
        owed.extend(m.csi.take_all());
        let jid = self.router.session(sid)?.jid.clone();
        Some((jid, owed))
    }

    /// Hook at the end of ending a session: what `sm_forget` returned goes where it can.
    pub(super) fn sm_dispose(&mut self, now: Instant, owed: Option<(Jid, Vec<Vec<u8>>)>) {
        let Some((jid, owed)) = owed else {
            return;
        };
        if !owed.is_empty() {
            log::info!(
                "{jid}: session ended with {} stanzas unacknowledged",
                owed.len()
            );
        }
        // A deleted account's session keeps nothing.
        let exists = matches!(
            self.store.account_credentials(&jid.to_bare().to_string()),
            Ok(Some(_))
        );
        for bytes in owed {
            let Some(e) = parse_element(&bytes) else {
                continue;
            };
            self.dispose_one(now, &jid, e, exists);
        }
    }

    fn dispose_one(&mut self, now: Instant, jid: &Jid, e: Element, exists: bool) {
        let Some(kind) = StanzaKind::of(&e) else {
            return;
        };
        let to = e
            .attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .unwrap_or_else(|| jid.clone());
        let Some(from) = e.attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        let refuse = match kind {
            StanzaKind::Presence => false,
            StanzaKind::Iq => matches!(e.attr("type"), Some("get" | "set")),
            StanzaKind::Message => {
                // Errors, and what only mattered then (chat states, receipts, PEP events: what
                // CSI would hold back), are dropped like presence.
                if e.attr("type") == Some("error") || csi::classify(&e) != csi::Class::Urgent {
                    return;
                }
                let info = Inbound {
                    from: &from,
                    to: &to,
                    kind,
                    stanza: &e,
                    from_session: None,
                };
                let mut flow = Flow::Continue;
                let hooks = if exists {
                    &self.registry.undeliverable[..]
                } else {
                    &[]
                };
                for hook in hooks {
                    let mut ctx = ctx!(self, now);
                    if hook(&mut ctx, &info) == Flow::Stop {
                        flow = Flow::Stop;
                        break;
                    }
                }
                self.flush_outbox(now);
                // Not kept (a chat state, a carbon, a headline): only a message with a body
                // is worth telling its sender about.
                flow == Flow::Continue && e.child("body", ns::CLIENT).is_some()
            }
        };
        if !refuse {
            return;
        }
        let err = StanzaError::new(StanzaCondition::ServiceUnavailable);
        if let Some(reply) = error_reply(&e, &err, &to.to_string()) {
            self.route(now, Origin::Server, &to, &from, kind, reply);
        }
    }

    /// `<resume/>` on an authenticated connection that is not bound.
    pub(super) fn sm_resume(&mut self, now: Instant, conn: ConnId, previd: &str, h: u32) {
        let account = self
            .conns
            .get(&conn)
            .and_then(|c| c.c2s.authenticated_account().cloned());
        let found = self.sm.by_token.get(previd).copied().filter(|sid| {
            let jid = self.router.session(*sid).map(|s| s.jid.to_bare());
            jid.is_some() && jid == account
        });
        let Some(sid) = found else {
            log::debug!("{conn:?}: resumption of an unknown session");
            return self.with_conn(conn, |c, env| {
                c.resume_done(now, Err("item-not-found"), env)
            });
        };
        let Some(m) = self.sm.managed.get_mut(&sid) else {
            return;
        };
        let Some(out) = m.out.as_mut() else {
            return;
        };
        if out.ack(h).is_err() {
            return self.with_conn(conn, |c, env| {
                c.resume_done(now, Err("undefined-condition"), env)
            });
        }
        out.set_headroom(false);
        let old = m.conn;
        let was_attached = m.attached;
        let held = m.csi.take_all();
        m.csi = Held::new(CSI_MAX_HELD);
        queue(m, &held);
        m.conn = conn;
        m.attached = true;
        m.overflowed = false;
        m.grace = None;
        let mut handled = m.handled;
        if was_attached {
            // The old connection is still open (its death not yet noticed): it is closed
            // and loses the session.
            if let Some(c) = self.conns.get_mut(&old) {
                handled = c.c2s.sm_handled().unwrap_or(0);
                c.session = None;
            }
            self.with_conn(old, |c, env| {
                c.fail(
                    StreamError::with_text(
                        StreamCondition::Conflict,
                        "the session was resumed on another connection",
                    ),
                    env,
                )
            });
        }
        self.sm.by_conn.remove(&old);
        self.sm.by_conn.insert(conn, sid);
        self.sm.set_timer(sid, None);
        let Some(jid) = self.router.session_mut(sid).map(|s| {
            s.conn = conn;
            s.jid.clone()
        }) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid);
        }
        log::info!("{conn:?}: {jid} resumed");
        let resumed = Resumed {
            jid,
            previd: previd.to_owned(),
            handled,
        };
        self.with_conn(conn, |c, env| c.resume_done(now, Ok(resumed), env));
        self.sm_awake(now, conn);
        // After `<resumed/>` (queued by resume_done): what the client has not acknowledged,
        // then a request so that the client says what it got.
        let Some(out) = self.sm.managed.get_mut(&sid).and_then(|m| m.out.as_mut()) else {
            return;
        };
        let resend: Vec<Vec<u8>> = out.unacked().cloned().collect();
        if !resend.is_empty() {
            out.note_requested();
        }
        let n = resend.len();
        for bytes in resend {
            self.pending.push_back((conn, super::Upcall::Send(bytes)));
        }
        if n > 0 {
            let r = sm::request().to_bytes(ns::CLIENT);
            self.pending.push_back((conn, super::Upcall::Send(r)));
        }
    }

    /// Of `conns`, those whose session is detached (waiting for resumption) or whose client
    /// said it is inactive: where a message may need a push notification (`features::push`).
    pub(super) fn sm_idle(&self, conns: &[ConnId]) -> Vec<ConnId> {
        conns
            .iter()
            .copied()
            .filter(|c| {
                self.sm
                    .by_conn
                    .get(c)
                    .and_then(|sid| self.sm.managed.get(sid))
                    .is_some_and(|m| !m.attached || m.csi.is_inactive())
            })
            .collect()
    }

    /// The client on `conn` came back (resumed, or `<active/>`): the awake hooks run.
    pub(super) fn sm_awake(&mut self, now: Instant, conn: ConnId) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        for hook in &self.registry.awake {
            let mut ctx = ctx!(self, now);
            hook(&mut ctx, sid);
        }
        self.flush_outbox(now);
    }

    /// Timers: resumption windows that closed, idle ack requests.
    pub(super) fn sm_timeout(&mut self, now: Instant) {
        // Bounded: each due entry is removed before it is handled.
        while let Some(&(when, sid)) = self.sm.timers.first() {
            if when > now {
                break;
            }
            self.sm.set_timer(sid, None);
            let Some(m) = self.sm.managed.get_mut(&sid) else {
                continue;
            };
            if !m.attached {
                log::info!("{:?}: resumption window closed", m.conn);
                self.end_session(now, sid);
                continue;
            }
            let conn = m.conn;
            if let Some(g) = m.grace {
                if m.out.as_ref().is_some_and(|o| o.over_soft_bound()) {
                    if g <= now {
                        self.sm_close_unacked(now, sid, conn);
                        continue;
                    }
                    self.sm.set_timer(sid, Some(g));
                    continue;
                }
                m.grace = None;
            }
            if let Some(out) = m.out.as_mut().filter(|o| o.wants_idle_request()) {
                out.note_requested();
                self.push_action(Action::Send {
                    conn,
                    bytes: sm::request().to_bytes(ns::CLIENT),
                });
            }
        }
        // Whatever ending sessions asked of connections (none today; cheap when empty).
        self.process(now);
    }

    /// The client did not acknowledge enough in time (or passed the hard cap): the stream is
    /// closed with `policy-violation` and the session kept for resumption with what it holds
    /// (from here the detached cap applies: twice the bound).
    fn sm_close_unacked(&mut self, now: Instant, sid: SessionId, conn: ConnId) {
        log::info!("{conn:?}: too many unacknowledged stanzas; stream closed");
        self.with_conn(conn, |c, env| {
            c.fail_keep_session(
                StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    "too many unacknowledged stanzas",
                ),
                env,
            )
        });
        if let Some(m) = self.sm.managed.get_mut(&sid) {
            m.overflowed = false;
            m.grace = None;
        }
        self.process(now);
    }

    /// Hook at shutdown, after the connections were closed: sessions waiting for
    /// resumption end now, so what they owe goes to offline storage before the process exits.
    pub(super) fn sm_shutdown(&mut self, now: Instant) {
        let detached: Vec<SessionId> = self
            .sm
            .managed
            .iter()
            .filter(|(_, m)| !m.attached)
            .map(|(sid, _)| *sid)
            .collect();
        for sid in detached {
            self.end_session(now, sid);
        }
    }

    /// Hook where an account's streams are closed (account deleted, password changed): its
    /// sessions waiting for resumption end too, rather than wait for a `<resume/>` that
    /// could only come with the new credentials.
    pub(super) fn sm_end_detached(&mut self, now: Instant, account: &Jid) {
        let detached: Vec<SessionId> = self
            .router
            .sessions_of(account)
            .map(|s| s.id)
            .filter(|sid| self.sm.managed.get(sid).is_some_and(|m| !m.attached))
            .collect();
        for sid in detached {
            self.end_session(now, sid);
        }
    }

    /// Hook at the end of a turn: queues past their bound are dealt with, idle ack requests
    /// armed.
    pub(super) fn sm_end_turn(&mut self, now: Instant) {
        if self.sm.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.sm.touched);
        touched.sort();
        touched.dedup();
        for sid in touched {
            let Some(m) = self.sm.managed.get_mut(&sid) else {
                continue;
            };
            if m.overflowed {
                let conn = m.conn;
                if m.attached {
                    self.sm_close_unacked(now, sid, conn);
                } else {
                    log::info!("{conn:?}: too many stanzas while detached; session ended");
                    self.end_session(now, sid);
                }
                continue;
            }
            let over = m.out.as_ref().is_some_and(|o| o.over_soft_bound());
            if !over {
                m.grace = None;
            } else if m.attached && m.grace.is_none() {
                // A burst passed the bound: ask for an ack now and give the client time.
                let deadline = now + self.config.c2s.ack_timeout;
                m.grace = Some(deadline);
                let conn = m.conn;
                let ask = m.out.as_mut().filter(|o| !o.is_requested()).map(|o| {
                    o.note_requested();
                });
                if m.timer.is_none_or(|t| t > deadline) {
                    self.sm.set_timer(sid, Some(deadline));
                }
                if ask.is_some() {
                    self.push_action(Action::Send {
                        conn,
                        bytes: sm::request().to_bytes(ns::CLIENT),
                    });
                }
                continue;
            }
            if m.attached
                && m.timer.is_none()
                && m.out.as_ref().is_some_and(|o| o.wants_idle_request())
            {
                self.sm.set_timer(sid, Some(now + ACK_IDLE));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::TlsInfo;
    use crate::testutil::{HEADER, Harness, b64};

    const ENABLE: &str = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>";

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    fn msg(to: &str, body: &str) -> String {
        format!("<message to='{to}' type='chat'><body>{body}</body></message>")
    }

    /// Enables resumable stream management; returns the resumption id.
    fn enable(h: &mut Harness, c: ConnId) -> String {
        h.send(c, ENABLE);
        let out = h.take(c);
        assert!(out.contains("<enabled xmlns='urn:xmpp:sm:3'"), "{out}");
        assert!(out.contains("resume='true' max='300'"), "{out}");
        let id = out.split("id='").nth(1).unwrap();
        id[..id.find('\'').unwrap()].to_owned()
    }

    /// A new connection up to authentication (no bind).
    fn authenticate(h: &mut Harness, user: &str) -> ConnId {
        let c = h.connect();
        h.send(c, HEADER);
        h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        h.server.handle_tls_ready(h.now, c, TlsInfo::default());
        h.drain();
        h.send(c, HEADER);
        let auth = b64(format!("\0{user}\0pw").as_bytes());
        h.send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
        );
        h.send(c, HEADER);
        let out = h.take(c);
        assert!(out.contains("<sm xmlns='urn:xmpp:sm:3'/>"), "{out}");
        assert!(out.contains("<csi xmlns='urn:xmpp:csi:0'/>"), "{out}");
        c
    }

    fn resume(h: &mut Harness, user: &str, previd: &str, acked: u32) -> (ConnId, String) {
        let c = authenticate(h, user);
        h.send(
            c,
            &format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{acked}'/>"),
        );
        let out = h.take(c);
        (c, out)
    }

    fn drop_conn(h: &mut Harness, c: ConnId) {
        h.server.handle_disconnect(h.now, c);
        h.drain();
    }

    /// alice/a available with resumable SM (enabled after her presence, so both counters
    /// start at 0), bob/b plain; alice sent directed presence to bob, who gets her
    /// unavailable presence when her session ends. No server pings (they would show in
    /// the output).
    fn setup(mut config: Config) -> (Harness, ConnId, ConnId, String) {
        config.c2s.idle_timeout = Duration::ZERO;
        let mut h = Harness::with_config(config);
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<presence/>");
        h.send(a, "<presence to='bob@localhost/b'/>");
        h.take(a);
        h.take(b);
        let id = enable(&mut h, a);
        (h, a, b, id)
    }

    #[test]
    fn detached_resume_gets_every_message_once() {
        let (mut h, a, b, id) = setup(Config::default());
        for i in 1..=3 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        assert_eq!(count(&h.take(a), "<body>"), 3);
        h.send(
            a,
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        assert!(h.take(a).contains("id='p'"));
        // The client saw the first only.
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='1'/>");
        drop_conn(&mut h, a);
        assert_eq!(h.server.sm.detached_count(), 1);
        for i in 4..=5 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        // Nothing bounced, no unavailable presence: the session is still there.
        assert_eq!(h.take(b), "");
        h.advance(Duration::from_secs(299));
        assert_eq!(h.take(b), "");
        let (a2, out) = resume(&mut h, "alice", &id, 1);
        // alice sent one stanza since enabling.
        assert!(
            out.starts_with(&format!(
                "<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>"
            )),
            "{out}"
        );
        for i in 2..=5 {
            assert_eq!(count(&out, &format!("<body>m{i}</body>")), 1, "{out}");
        }
        assert_eq!(
            count(&out, "id='p'"),
            1,
            "the unacknowledged ping result too"
        );
        assert_eq!(count(&out, "<body>m1</body>"), 0);
        let order: Vec<usize> = (2..=5)
            .map(|i| out.find(&format!("m{i}<")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
        assert!(out.ends_with("<r xmlns='urn:xmpp:sm:3'/>"), "{out}");
        // The window no longer applies; new messages reach the new connection.
        h.advance(Duration::from_secs(10));
        assert_eq!(h.take(b), "");
        h.send(b, &msg("alice@localhost/a", "m6"));
        assert!(h.take(a2).contains("<body>m6</body>"));
        assert_eq!(h.server.sm.detached_count(), 0);
        // Acks on the new connection count on from the old: 3 messages, the ping result,
        // 2 more messages, then m6.
        h.send(a2, "<a xmlns='urn:xmpp:sm:3' h='7'/>");
        assert!(!h.closed.contains(&a2));
        h.send(a2, "<a xmlns='urn:xmpp:sm:3' h='8'/>");
        assert!(h.take(a2).contains("<undefined-condition"));
    }

    #[test]
    fn detached_window_expiry_offline_and_unavailable() {
        let (mut h, a, b, _id) = setup(Config::default());
        h.send(b, &msg("alice@localhost/a", "before"));
        h.take(a);
        drop_conn(&mut h, a);
        h.send(b, &msg("alice@localhost/a", "during"));
        h.send(
            b,
            "<iq type='get' id='v1' to='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>",
        );
        // Stale by then: not kept.
        h.send(
            b,
            "<message to='alice@localhost/a'><received xmlns='urn:xmpp:receipts' id='x'/></message>",
        );
        h.advance(Duration::from_secs(299));
        assert_eq!(h.take(b), "");
        h.advance(Duration::from_secs(1));
        let out = h.take(b);
        assert!(
            out.contains(
                "<presence from='alice@localhost/a' to='bob@localhost/b' type='unavailable'/>"
            ) || out.contains("type='unavailable'"),
            "{out}"
        );
        // The unacknowledged IQ comes back as an error; messages are not bounced.
        assert!(out.contains("type='error' id='v1'"), "{out}");
        assert!(out.contains("<service-unavailable"), "{out}");
        assert_eq!(count(&out, "<message"), 0, "{out}");
        assert_eq!(h.server.sm.detached_count(), 0);
        assert_eq!(h.server.store.offline_count("alice@localhost").unwrap(), 2);
        // Both messages wait offline, once each.
        let a2 = h.login("alice", "a");
        h.send(a2, "<presence/>");
        let got = h.take(a2);
        assert_eq!(count(&got, "<body>before</body>"), 1, "{got}");
        assert_eq!(count(&got, "<body>during</body>"), 1, "{got}");
        // ... and nothing of it comes again later.
        h.advance(Duration::from_secs(600));
        assert_eq!(count(&h.take(a2), "<body>"), 0);
    }

    #[test]
    fn detached_at_shutdown_ends_to_offline() {
        let (mut h, a, b, _id) = setup(Config::default());
        drop_conn(&mut h, a);
        h.send(b, &msg("alice@localhost/a", "x"));
        h.server.handle_shutdown(h.now);
        h.drain();
        assert_eq!(h.server.sm.detached_count(), 0);
        assert_eq!(h.server.store.offline_count("alice@localhost").unwrap(), 1);
    }

    #[test]
    fn detached_account_kicked_ends_session() {
        let (mut h, a, b, _id) = setup(Config::default());
        drop_conn(&mut h, a);
        h.send(b, &msg("alice@localhost/a", "x"));
        h.server.handle_control(h.now, "user-del alice@localhost");
        h.drain();
        assert_eq!(h.server.sm.detached_count(), 0);
        let out = h.take(b);
        assert!(out.contains("type='unavailable'"), "{out}");
        // No offline storage for an account that is gone: the sender learns it.
        assert!(out.contains("<service-unavailable"), "{out}");
        assert_eq!(h.server.store.offline_count("alice@localhost").unwrap(), 0);
    }

    #[test]
    fn enabled_h_wraps_at_2_32_across_resumption() {
        let mut config = Config::default();
        config.c2s.idle_timeout = Duration::ZERO;
        let mut h = Harness::with_config(config);
        h.server.sm.start_h = u32::MAX - 1;
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        let id = enable(&mut h, a);
        for i in 1..=4 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        h.take(a);
        // Seen: m1 (h = 2^32-1), m2 (h wraps to 0), m3 (h = 1).
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='1'/>");
        assert!(h.closed.is_empty());
        drop_conn(&mut h, a);
        let (a2, out) = resume(&mut h, "alice", &id, 1);
        assert_eq!(count(&out, "<body>"), 1, "{out}");
        assert!(out.contains("<body>m4</body>"), "{out}");
        h.send(a2, "<a xmlns='urn:xmpp:sm:3' h='2'/>");
        h.send(a2, "<a xmlns='urn:xmpp:sm:3' h='3'/>");
        assert!(
            h.take(a2).contains("<undefined-condition"),
            "h=3 was never sent"
        );
    }

    #[test]
    fn enable_before_bind_and_resume_after_bind_fail() {
        let mut h = Harness::new();
        let c = authenticate(&mut h, "alice");
        h.send(c, ENABLE);
        assert!(
            h.take(c)
                .contains("<failed xmlns='urn:xmpp:sm:3'><unexpected-request")
        );
        h.send(
            c,
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(h.take(c).contains("<jid>"));
        h.send(c, "<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>");
        assert!(h.take(c).contains("<unexpected-request"));
        h.send(c, "<a xmlns='urn:xmpp:sm:3' h='x'/>");
        assert!(h.take(c).contains("<bad-format"));
    }

    #[test]
    fn detached_resume_after_window_fails_item_not_found() {
        let (mut h, a, _b, id) = setup(Config::default());
        drop_conn(&mut h, a);
        h.advance(Duration::from_secs(300));
        let (c, out) = resume(&mut h, "alice", &id, 0);
        assert_eq!(
            out,
            "<failed xmlns='urn:xmpp:sm:3'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        // The stream can still bind a new session.
        h.send(
            c,
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(h.take(c).contains("<jid>alice@localhost/"));
    }

    #[test]
    fn resume_by_other_account_item_not_found() {
        let (mut h, a, _b, id) = setup(Config::default());
        drop_conn(&mut h, a);
        let (_c, out) = resume(&mut h, "bob", &id, 0);
        assert!(out.contains("<item-not-found"), "{out}");
        assert_eq!(h.server.sm.detached_count(), 1);
    }

    #[test]
    fn attached_resume_closes_old_connection() {
        let (mut h, a, b, id) = setup(Config::default());
        h.send(b, &msg("alice@localhost/a", "x"));
        h.take(a);
        let (a2, out) = resume(&mut h, "alice", &id, 0);
        assert!(out.contains("<resumed"), "{out}");
        assert_eq!(count(&out, "<body>x</body>"), 1);
        let old = h.take(a);
        assert!(old.contains("<conflict"), "{old}");
        assert!(h.closed.contains(&a));
        // The closing of the old connection does not end the session.
        assert_eq!(h.take(b), "");
        h.send(b, &msg("alice@localhost/a", "y"));
        assert!(h.take(a2).contains("<body>y</body>"));
    }

    #[test]
    fn enabled_request_answered_with_handled_count() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(a, "<r xmlns='urn:xmpp:sm:3'/>");
        assert!(h.take(a).contains("<unexpected-request"));
        h.send(a, "<enable xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(h.take(a), "<enabled xmlns='urn:xmpp:sm:3'/>");
        h.send(
            a,
            "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        h.send(a, "<presence/>");
        h.take(a);
        h.send(a, "<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(h.take(a), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
        h.send(a, ENABLE);
        assert!(h.take(a).contains("<unexpected-request"));
    }

    #[test]
    fn enabled_server_requests_ack_by_count_and_on_idle() {
        let (mut h, a, b, _id) = setup(Config::default());
        h.send(b, &msg("alice@localhost/a", "1"));
        let out = h.take(a);
        assert!(!out.contains("<r xmlns"), "{out}");
        h.advance(ACK_IDLE);
        assert_eq!(h.take(a), "<r xmlns='urn:xmpp:sm:3'/>");
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='1'/>");
        for i in 0..REQUEST_EVERY {
            h.send(b, &msg("alice@localhost/a", &i.to_string()));
        }
        let out = h.take(a);
        assert_eq!(count(&out, "<r xmlns='urn:xmpp:sm:3'/>"), 1, "{out}");
        assert!(out.ends_with("<r xmlns='urn:xmpp:sm:3'/>"), "{out}");
    }

    #[test]
    fn enabled_ack_too_high_ends_stream() {
        let (mut h, a, _b, _id) = setup(Config::default());
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='5'/>");
        let out = h.take(a);
        assert!(out.contains("<undefined-condition"), "{out}");
        assert!(h.closed.contains(&a));
        assert_eq!(h.server.sm.detached_count(), 0);
    }

    #[test]
    fn unacked_past_bound_closes_then_resumable() {
        let mut config = Config::default();
        config.c2s.max_unacked_stanzas = 3;
        let (mut h, a, b, id) = setup(config);
        for i in 1..=4 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        let out = h.take(a);
        assert!(
            !out.contains("<policy-violation"),
            "a burst gets time: {out}"
        );
        assert!(out.contains("<r xmlns='urn:xmpp:sm:3'/>"), "{out}");
        h.advance(Duration::from_secs(29));
        assert!(!h.take(a).contains("<policy-violation"));
        h.advance(Duration::from_secs(2));
        let out = h.take(a);
        assert!(out.contains("<policy-violation"), "{out}");
        assert!(h.closed.contains(&a));
        assert_eq!(h.take(b), "", "no bounce, no unavailable");
        assert_eq!(h.server.sm.detached_count(), 1);
        // What arrives meanwhile is kept (up to twice the bound while detached).
        h.send(b, &msg("alice@localhost/a", "m5"));
        assert_eq!(h.server.sm.detached_count(), 1);
        let (_a2, out) = resume(&mut h, "alice", &id, 2);
        assert!(out.contains("<resumed"), "{out}");
        assert_eq!(count(&out, "<body>"), 3, "{out}");
        assert!(out.contains("m3<") && out.contains("m4<") && out.contains("m5<"));
    }

    #[test]
    fn burst_past_bound_acked_in_time_keeps_stream() {
        let mut config = Config::default();
        config.c2s.max_unacked_stanzas = 3;
        let (mut h, a, b, _id) = setup(config);
        for i in 1..=8 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        assert_eq!(
            count(&h.take(a), "<body>"),
            8,
            "up to three times the bound is sent"
        );
        h.advance(Duration::from_secs(10));
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='8'/>");
        h.advance(Duration::from_secs(60));
        let out = h.take(a);
        assert!(!out.contains("<policy-violation"), "{out}");
        assert!(!h.closed.contains(&a));
        h.send(b, &msg("alice@localhost/a", "later"));
        assert!(h.take(a).contains(">later<"));
    }

    #[test]
    fn past_three_times_bound_closes_at_once() {
        let mut config = Config::default();
        config.c2s.max_unacked_stanzas = 3;
        let (mut h, a, b, _id) = setup(config);
        for i in 1..=10 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        assert!(h.take(a).contains("<policy-violation"));
        assert_eq!(h.server.sm.detached_count(), 1);
    }

    #[test]
    fn resumed_with_queue_past_bound_gets_time_to_ack() {
        let mut config = Config::default();
        config.c2s.max_unacked_stanzas = 3;
        let (mut h, a, b, id) = setup(config);
        drop_conn(&mut h, a);
        for i in 1..=6 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        let (a2, out) = resume(&mut h, "alice", &id, 0);
        assert_eq!(count(&out, "<body>"), 6, "{out}");
        h.send(b, &msg("alice@localhost/a", "m7"));
        let out = h.take(a2);
        assert!(
            out.contains(">m7<") && !out.contains("<policy-violation"),
            "{out}"
        );
        h.send(a2, "<a xmlns='urn:xmpp:sm:3' h='7'/>");
        h.advance(Duration::from_secs(60));
        assert!(!h.take(a2).contains("<policy-violation"));
        assert!(!h.closed.contains(&a2));
    }

    #[test]
    fn detached_past_twice_bound_ends_session_to_offline() {
        let mut config = Config::default();
        config.c2s.max_unacked_stanzas = 3;
        let (mut h, a, b, _id) = setup(config);
        drop_conn(&mut h, a);
        for i in 1..=6 {
            h.send(b, &msg("alice@localhost/a", &format!("m{i}")));
        }
        assert_eq!(h.server.sm.detached_count(), 1, "up to twice the bound");
        h.send(b, &msg("alice@localhost/a", "m7"));
        let out = h.take(b);
        assert!(out.contains("type='unavailable'"), "{out}");
        assert_eq!(h.server.sm.detached_count(), 0);
        let a2 = h.login("alice", "a");
        h.send(a2, "<presence/>");
        assert_eq!(count(&h.take(a2), "<body>"), 7);
    }

    #[test]
    fn clean_close_unacked_go_offline() {
        let (mut h, a, b, _id) = setup(Config::default());
        h.send(b, &msg("alice@localhost/a", "x"));
        h.take(a);
        h.send(a, "</stream:stream>");
        assert!(h.take(b).contains("type='unavailable'"));
        assert_eq!(h.server.sm.detached_count(), 0);
        let a2 = h.login("alice", "a");
        h.send(a2, "<presence/>");
        assert_eq!(count(&h.take(a2), "<body>x</body>"), 1);
    }

    #[test]
    fn detached_resource_conflict_ends_session_to_offline() {
        let (mut h, a, b, _id) = setup(Config::default());
        drop_conn(&mut h, a);
        h.send(b, &msg("alice@localhost/a", "x"));
        let a2 = h.login("alice", "a");
        assert_eq!(h.server.sm.detached_count(), 0);
        h.send(a2, "<presence/>");
        assert_eq!(count(&h.take(a2), "<body>x</body>"), 1);
    }

    #[test]
    fn not_resumable_drop_ends_session() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<enable xmlns='urn:xmpp:sm:3'/>");
        h.send(a, "<presence/>");
        h.send(a, "<presence to='bob@localhost/b'/>");
        h.take(b);
        h.send(b, &msg("alice@localhost/a", "x"));
        drop_conn(&mut h, a);
        assert!(h.take(b).contains("type='unavailable'"));
        let a2 = h.login("alice", "a");
        h.send(a2, "<presence/>");
        assert_eq!(count(&h.take(a2), "<body>x</body>"), 1);
    }

    #[test]
    fn resume_timeout_zero_enables_without_resumption() {
        let mut config = Config::default();
        config.c2s.resume_timeout = Duration::ZERO;
        let mut h = Harness::with_config(config);
        let a = h.login("alice", "a");
        h.send(a, ENABLE);
        assert_eq!(h.take(a), "<enabled xmlns='urn:xmpp:sm:3'/>");
    }

    /// CSI: alice inactive; bob and carol flood her with presence.
    fn csi_setup() -> (Harness, ConnId, ConnId, ConnId) {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        let c = h.login("carol", "c");
        h.send(a, "<inactive xmlns='urn:xmpp:csi:0'/>");
        assert_eq!(h.take(a), "");
        (h, a, b, c)
    }

    #[test]
    fn inactive_presence_flood_collapsed_message_after_held() {
        let (mut h, a, b, c) = csi_setup();
        for show in ["away", "xa", "dnd"] {
            h.send(
                b,
                &format!("<presence to='alice@localhost/a'><show>{show}</show></presence>"),
            );
        }
        h.send(c, "<presence to='alice@localhost/a'/>");
        h.send(
            b,
            "<message to='alice@localhost/a' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(h.take(a), "", "all of it can wait");
        h.send(b, &msg("alice@localhost/a", "hello"));
        let out = h.take(a);
        assert_eq!(count(&out, "<presence"), 2, "{out}");
        assert!(!out.contains("<show>away") && !out.contains("<show>xa"));
        let dnd = out.find("<show>dnd").unwrap();
        let carol = out.find("from='carol@localhost/c'").unwrap();
        let composing = out.find("<composing").unwrap();
        let hello = out.find("<body>hello").unwrap();
        // Each contact's latest presence takes its place at the end of what is held.
        assert!(
            dnd < carol && carol < composing && composing < hello,
            "{out}"
        );
        // Subscription requests are urgent too.
        h.send(b, "<presence to='alice@localhost/a'/>");
        assert_eq!(h.take(a), "");
        h.send(a, "<active xmlns='urn:xmpp:csi:0'/>");
        assert!(h.take(a).contains("from='bob@localhost/b'"));
        h.send(
            b,
            "<presence to='alice@localhost/a'><show>chat</show></presence>",
        );
        assert!(h.take(a).contains("<show>chat"), "active again: at once");
    }

    #[test]
    fn inactive_iq_urgent() {
        let (mut h, a, b, _c) = csi_setup();
        h.send(b, "<presence to='alice@localhost/a'/>");
        h.send(
            b,
            "<iq type='get' id='q' to='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>",
        );
        let out = h.take(a);
        assert!(
            out.find("<presence").unwrap() < out.find("<iq").unwrap(),
            "{out}"
        );
    }

    #[test]
    fn inactive_full_held_queue_flushes() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<inactive xmlns='urn:xmpp:csi:0'/>");
        let composing = "<message to='alice@localhost/a' type='chat'>\
                         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
        for _ in 0..CSI_MAX_HELD {
            h.send(b, composing);
        }
        assert_eq!(h.take(a), "");
        h.send(b, composing);
        assert_eq!(count(&h.take(a), "<composing"), CSI_MAX_HELD + 1);
    }

    #[test]
    fn inactive_with_sm_held_not_counted_until_sent_then_resumed() {
        let (mut h, a, b, id) = setup(Config::default());
        h.send(a, "<inactive xmlns='urn:xmpp:csi:0'/>");
        h.send(
            b,
            "<presence to='alice@localhost/a'><show>away</show></presence>",
        );
        assert_eq!(h.take(a), "");
        // Nothing sent yet: an ack of 0 is right, 1 would be too high.
        h.send(a, "<a xmlns='urn:xmpp:sm:3' h='0'/>");
        assert!(h.closed.is_empty());
        drop_conn(&mut h, a);
        let (_a2, out) = resume(&mut h, "alice", &id, 0);
        assert!(
            out.contains("<show>away</show>"),
            "held presence resent: {out}"
        );
    }
}
