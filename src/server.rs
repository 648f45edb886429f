//! The sans-IO server core: every connection's protocol state, the sessions and the router.
//!
//! Inputs are `handle_*` calls carrying bytes, events and the current time; outputs are
//! `Action`s taken with `poll_action` and the next deadline from `poll_timeout`. Nothing here
//! touches a socket or reads a clock, so every behaviour is testable by feeding bytes.
//!
//! Owns: the connection table of the core, timers, presence broadcast and the dispatch of
//! stanzas to sessions or to features. Leaves negotiation to `stream::c2s`, delivery rules to
//! `router`, answers to `features`, persistence to `store`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::features::{IqRequest, IqTo, IqType, Registry};
use crate::jid::Jid;
use crate::router::{Router, Session, SessionId, Target};
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply, iq_result};
use crate::store::Store;
use crate::stream::c2s::{C2sConn, Env, Upcall};
use crate::stream::error::{StreamCondition, StreamError};
use crate::xml::{Element, ns};

/// The driver's handle for a connection. Opaque to the core; the driver makes it unique over
/// the process lifetime (slot index plus generation), so a stale id never aliases a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which listener accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP; TLS starts with STARTTLS (RFC 6120 §5).
    C2sStartTls,
    /// TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    C2sDirectTls,
}

/// What the driver learnt from a completed TLS handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Server name the client asked for (SNI), lowercase.
    pub sni: Option<String>,
    /// RFC 9266 `tls-exporter` channel-binding data: 32 bytes from the exporter with label
    /// "EXPORTER-Channel-Binding" and no context. Only for TLS 1.3 (None otherwise).
    pub channel_binding: Option<Vec<u8>>,
}

/// What the core asks the driver to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes (through TLS if the connection has it).
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Everything queued before this was sent in plaintext; now start a TLS server handshake
    /// on this connection. `buffered` are bytes the client already sent after `<starttls/>`:
    /// they are the first TLS records.
    StartTls { conn: ConnId, buffered: Vec<u8> },
    /// Flush what is queued, then close the connection. The core has forgotten it.
    Close { conn: ConnId },
}

/// A source of random bytes (the driver gives the system's; tests a seeded one).
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]);
}

/// Most directed-presence recipients remembered per session (RFC 6121 §4.6); beyond it the
/// oldest is forgotten and will not get unavailable presence at logout.
const MAX_DIRECTED_PRESENCE: usize = 64;

struct Conn {
    c2s: C2sConn,
    session: Option<SessionId>,
    peer: SocketAddr,
    /// The deadline under which this connection sits in `Server::timers`.
    timer: Option<Instant>,
}

pub struct Server {
    config: Arc<Config>,
    store: Box<dyn Store>,
    random: Box<dyn RandomSource>,
    registry: Registry,
    router: Router,
    conns: HashMap<ConnId, Conn>,
    /// Connection deadlines, earliest first.
    timers: BTreeSet<(Instant, ConnId)>,
    actions: VecDeque<Action>,
    /// Upcalls waiting to be processed, tagged with their connection.
    pending: VecDeque<(ConnId, Upcall)>,
    /// Made once so an unknown account's SCRAM salt is the same on every attempt.
    fake_salt_key: [u8; 32],
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Box<dyn Store>,
        mut random: Box<dyn RandomSource>,
        _now: Instant,
    ) -> Server {
        let mut fake_salt_key = [0u8; 32];
        random.fill(&mut fake_salt_key);
        Server {
            fake_salt_key,
            config,
            store,
            random,
            registry: Registry::with_all_features(),
            router: Router::new(),
            conns: HashMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// A connection was accepted.
    pub fn handle_accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        kind: ListenerKind,
        peer: SocketAddr,
    ) {
        log::debug!("{conn:?}: accepted from {peer} ({kind:?})");
        let c2s = C2sConn::new(now, kind, &self.config);
        self.conns.insert(
            conn,
            Conn {
                c2s,
                session: None,
                peer,
                timer: None,
            },
        );
        self.refresh_timer(conn);
    }

    /// A TLS handshake finished (direct TLS, or after `Action::StartTls`).
    pub fn handle_tls_ready(&mut self, now: Instant, conn: ConnId, info: TlsInfo) {
        self.with_conn(conn, |c, env| c.handle_tls_ready(now, info, env));
        self.process(now);
    }

    /// Application bytes arrived (already decrypted when TLS is on).
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.with_conn(conn, |c, env| c.handle_bytes(now, bytes, env));
        self.process(now);
    }

    /// The connection is gone (peer closed, I/O or TLS error, or the driver closed it because
    /// its output queue passed `limits.max_outgoing_bytes`). The core emits no `Close` for it.
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            log::debug!("{conn:?}: disconnected ({})", c.peer);
        }
        self.forget_conn(conn);
        self.process(now);
    }

    /// Time passed; run what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each due entry is removed before its connection is handled.
        while let Some(&(when, conn)) = self.timers.first() {
            if when > now {
                break;
            }
            self.timers.remove(&(when, conn));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.timer = None;
            }
            self.with_conn(conn, |c, env| c.handle_timeout(now, env));
            self.process(now);
        }
    }

    /// Graceful shutdown: every stream gets `system-shutdown` and a `Close`.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.with_conn(id, |c, env| {
                c.fail(StreamError::new(StreamCondition::SystemShutdown), env)
            });
        }
        self.process(now);
    }

    /// A command line from the control socket (see `control`); returns the full reply text.
    pub fn handle_control(&mut self, now: Instant, request: &str) -> String {
        use crate::control::{ControlRequest, execute, format_reply};
        let result = match ControlRequest::parse(request) {
            Ok(req) => {
                let r = execute(&req, &self.config, &mut *self.store);
                if r.is_ok() {
                    match &req {
                        ControlRequest::UserDel { jid } => {
                            self.kick_account(now, jid, "account deleted")
                        }
                        ControlRequest::UserPasswd { jid, .. } => {
                            self.kick_account(now, jid, "password changed")
                        }
                        _ => {}
                    }
                }
                r
            }
            Err(e) => Err(e),
        };
        format_reply(&result)
    }

    /// The next action for the driver, in the order produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Connections the core knows.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Runs `f` on a connection's state machine with its environment, then queues what it
    /// asked for.
    fn with_conn(&mut self, id: ConnId, f: impl FnOnce(&mut C2sConn, &mut Env)) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut out = Vec::new();
        let mut env = Env {
            config: &self.config,
            store: &*self.store,
            random: &mut *self.random,
            fake_salt_key: self.fake_salt_key,
            out: &mut out,
        };
        f(&mut conn.c2s, &mut env);
        self.pending.extend(out.into_iter().map(|u| (id, u)));
        self.refresh_timer(id);
    }

    fn refresh_timer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let want = conn.c2s.deadline();
        if conn.timer != want {
            if let Some(old) = conn.timer {
                self.timers.remove(&(old, id));
            }
            if let Some(new) = want {
                self.timers.insert((new, id));
            }
            conn.timer = want;
        }
    }

    /// Processes upcalls until none are left (handling one may produce more).
    fn process(&mut self, now: Instant) {
        // Bounded: every upcall is consumed; new ones come only from finite buffered input.
        while let Some((id, up)) = self.pending.pop_front() {
            match up {
                Upcall::Send(bytes) => self.actions.push_back(Action::Send { conn: id, bytes }),
                Upcall::StartTls(buffered) => self
                    .actions
                    .push_back(Action::StartTls { conn: id, buffered }),
                Upcall::Close => {
                    self.actions.push_back(Action::Close { conn: id });
                    self.forget_conn(id);
                }
                Upcall::Bind { iq_id, resource } => self.bind(now, id, &iq_id, resource),
                Upcall::Stanza(e) => self.route_from_session(now, id, e),
            }
        }
    }

    fn forget_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(t) = conn.timer {
            self.timers.remove(&(t, id));
        }
        if let Some(sid) = conn.session {
            self.end_session(sid);
        }
    }

    /// Removes a session, telling whoever saw it available that it is gone.
    fn end_session(&mut self, sid: SessionId) {
        if let Some(s) = self.router.unbind(sid) {
            log::info!("session ended: {}", s.jid);
            self.announce_gone(&s);
        }
    }

    /// Sends unavailable presence for a session that left the router to the account's other
    /// available resources and to those it sent directed presence to (RFC 6121 §4.5.2, §4.6).
    fn announce_gone(&mut self, s: &Session) {
        if !s.is_available() {
            return;
        }
        let unavailable = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", &s.jid.to_string());
        let mut conns: Vec<ConnId> = self
            .router
            .sessions_of(&s.jid.to_bare())
            .filter(|o| o.is_available())
            .map(|o| o.conn)
            .collect();
        for target in &s.directed {
            if let Some(t) = self.router.find_full(target) {
                conns.push(t.conn);
            }
        }
        conns.sort();
        conns.dedup();
        self.deliver(&conns, &unavailable, true);
    }

    fn bind(&mut self, now: Instant, id: ConnId, iq_id: &str, resource: Option<String>) {
        let Some(account) = self
            .conns
            .get(&id)
            .and_then(|c| c.c2s.authenticated_account().cloned())
        else {
            return;
        };
        let mut rnd = [0u8; 6];
        self.random.fill(&mut rnd);
        let generated: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let generated = format!("hearth-{generated}");
        let result = self.router.bind(
            &account,
            resource.as_deref(),
            &generated,
            id,
            self.config.limits.max_sessions_per_account,
        );
        let result = match result {
            Ok(bound) => {
                if let Some(old) = bound.replaced {
                    log::info!("{}: replaced by a new login", old.jid);
                    let old_conn = old.conn;
                    if let Some(c) = self.conns.get_mut(&old_conn) {
                        c.session = None;
                    }
                    self.announce_gone(&old);
                    self.with_conn(old_conn, |c, env| {
                        c.fail(
                            StreamError::with_text(
                                StreamCondition::Conflict,
                                "replaced by a new login with the same resource",
                            ),
                            env,
                        )
                    });
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.session = Some(bound.id);
                }
                log::info!("bound {}", bound.jid);
                Ok(bound.jid)
            }
            Err(e) => Err(e),
        };
        self.with_conn(id, |c, env| c.bind_done(now, iq_id, result, env));
    }

    fn kick_account(&mut self, now: Instant, bare: &str, why: &str) {
        let Ok(account) = Jid::parse(bare) else {
            return;
        };
        let conns: Vec<ConnId> = self.router.sessions_of(&account).map(|s| s.conn).collect();
        for c in conns {
            self.with_conn(c, |c, env| {
                c.fail(
                    StreamError::with_text(StreamCondition::NotAuthorized, why),
                    env,
                )
            });
        }
        self.process(now);
    }

    /// Sends `e` to each connection (serialized once). `only_bound` skips connections whose
    /// stream is not in the bound state any more.
    fn deliver(&mut self, conns: &[ConnId], e: &Element, only_bound: bool) {
        if conns.is_empty() {
            return;
        }
        let bytes = e.to_bytes(ns::CLIENT);
        for c in conns {
            let ok = self
                .conns
                .get(c)
                .is_some_and(|k| !only_bound || k.c2s.bound_jid().is_some());
            if ok {
                self.actions.push_back(Action::Send {
                    conn: *c,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn reply(&mut self, conn: ConnId, e: &Element) {
        self.actions.push_back(Action::Send {
            conn,
            bytes: e.to_bytes(ns::CLIENT),
        });
    }

    fn refuse(&mut self, conn: ConnId, stanza: &Element, err: StanzaError, domain: &str) {
        if let Some(r) = error_reply(stanza, &err, domain) {
            self.reply(conn, &r);
        }
    }

    /// A stanza from a bound session (`from` stamped).
    fn route_from_session(&mut self, now: Instant, conn: ConnId, e: Element) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(from) = self.router.session(sid).map(|s| s.jid.clone()) else {
            return;
        };
        let Some(kind) = StanzaKind::of(&e) else {
            return;
        };
        let own_domain = from.domain().to_owned();
        let to = match e.attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    return self.refuse(
                        conn,
                        &e,
                        StanzaError::new(StanzaCondition::JidMalformed),
                        &own_domain,
                    );
                }
            },
        };
        let to = match (kind, to) {
            // RFC 6121 §4.2.2: presence without `to` is a broadcast.
            (StanzaKind::Presence, None) => return self.presence_broadcast(now, sid, e),
            // RFC 6120 §10.3: no `to` means the sender's own account.
            (_, None) => from.to_bare(),
            (_, Some(t)) => t,
        };
        if kind == StanzaKind::Presence {
            self.track_directed(sid, &to, e.attr("type"));
        }
        let hosted = self.config.hosts(to.domain());
        let exists = match to.local() {
            Some(_) if hosted => match self.store.account_credentials(&to.to_bare().to_string()) {
                Ok(found) => found.is_some(),
                Err(err) => {
                    log::error!("store: {err}");
                    return self.refuse(
                        conn,
                        &e,
                        StanzaError::new(StanzaCondition::InternalServerError),
                        &own_domain,
                    );
                }
            },
            _ => false,
        };
        match self
            .router
            .resolve(kind, e.attr("type"), &to, hosted, exists)
        {
            Target::Sessions(conns) => self.deliver(&conns, &e, true),
            Target::Refuse(cond) => self.refuse(conn, &e, StanzaError::new(cond), &own_domain),
            Target::Drop => {}
            Target::Server { account } => self.server_iq(now, conn, &from, &to, account, &e),
        }
    }

    /// An IQ the server answers itself (RFC 6120 §8.4 for what nobody handles).
    fn server_iq(
        &mut self,
        now: Instant,
        conn: ConnId,
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
        let to_str = to.to_string();
        let mut payloads = e.child_elements();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            return self.refuse(
                conn,
                e,
                StanzaError::new(StanzaCondition::BadRequest),
                &to_str,
            );
        };
        let target = if account.is_some() {
            IqTo::Account
        } else {
            IqTo::Host
        };
        let addressee = account.unwrap_or_else(|| to.to_bare());
        let Some(handler) = self.registry.handler(target, iq_type, &payload.ns) else {
            return self.refuse(
                conn,
                e,
                StanzaError::new(StanzaCondition::ServiceUnavailable),
                &to_str,
            );
        };
        let req = IqRequest {
            now,
            config: &self.config,
            from,
            to: &addressee,
            iq_type,
            payload,
            disco: self.registry.disco(target),
        };
        match handler(&req) {
            Ok(payload) => {
                let mut r = iq_result(e, &to_str);
                if let Some(p) = payload {
                    r.push_child(p);
                }
                self.reply(conn, &r);
            }
            Err(err) => self.refuse(conn, e, err, &to_str),
        }
    }

    /// RFC 6121 §4.2 and §4.5: presence without `to` updates the session and goes to the
    /// account's available resources (contacts come with rosters).
    fn presence_broadcast(&mut self, _now: Instant, sid: SessionId, e: Element) {
        let available = match e.attr("type") {
            None => true,
            Some("unavailable") => false,
            // Subscription and probe types need a `to`.
            _ => return,
        };
        let priority = e
            .child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let Some(s) = self.router.session_mut(sid) else {
            return;
        };
        let initial = available && s.presence.is_none();
        let me = s.conn;
        let account = s.jid.to_bare();
        let directed = if available {
            Vec::new()
        } else {
            std::mem::take(&mut s.directed)
        };
        s.priority = if available { priority } else { 0 };
        s.presence = available.then(|| e.clone());
        let mut conns: Vec<ConnId> = self
            .router
            .sessions_of(&account)
            .filter(|o| o.is_available() || o.conn == me)
            .map(|o| o.conn)
            .collect();
        for t in &directed {
            if let Some(o) = self.router.find_full(t) {
                conns.push(o.conn);
            }
        }
        conns.sort();
        conns.dedup();
        self.deliver(&conns, &e, true);
        if initial {
            // The new resource learns about the account's other available resources.
            let others: Vec<Element> = self
                .router
                .sessions_of(&account)
                .filter(|o| o.conn != me)
                .filter_map(|o| o.presence.clone())
                .collect();
            for p in others {
                self.deliver(&[me], &p, true);
            }
        }
    }

    fn track_directed(&mut self, sid: SessionId, to: &Jid, presence_type: Option<&str>) {
        let Some(s) = self.router.session_mut(sid) else {
            return;
        };
        match presence_type {
            None if !s.directed.contains(to) => {
                if s.directed.len() >= MAX_DIRECTED_PRESENCE {
                    s.directed.remove(0);
                }
                s.directed.push(to.clone());
            }
            Some("unavailable") => s.directed.retain(|d| d != to),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
