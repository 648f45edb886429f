//! Who gets PEP notifications (XEP-0163 §4.3): the owner's available resources and the
//! contacts whose presence reached the owner, filtered by access model and by the `NODE+notify`
//! features their clients advertise through entity capabilities (XEP-0115).
//!
//! Owns: `PepState` (kept in the router, never stored): per online owner the contacts' full
//! JIDs with their caps key, a bounded cache of caps key -> `+notify` nodes, and the
//! disco#info queries in flight. A caps `ver` with `hash='sha-1'` is checked against the
//! answer (§5.4) before it is shared between clients; any other caps is cached per full JID.
//! The queries go from the owner's bare JID, so their answers come back through the owner's
//! inbound hooks, for local and remote contacts alike.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::NS_EVENT;
use super::node::{self, Access, Node, SendLast};
use crate::features::caps::{self, Identity, NS_CAPS};
use crate::features::{Ctx, Flow, Inbound};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::stanza::StanzaKind;
use crate::xml::{Element, ns};

/// Caps keys remembered; past it the oldest is forgotten (and asked again when needed).
pub const MAX_CAPS: usize = 256;
/// Contacts' resources remembered per online owner; past it new ones get no notifications.
pub const MAX_RECIPIENTS: usize = 1024;
/// disco#info queries in flight; past it no new one is sent until some are answered or
/// expire.
pub const MAX_PENDING: usize = 128;
/// A query unanswered this long is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Resources waiting for one query's answer (to get the last items).
const MAX_WAITING: usize = 64;
const QUERY_PREFIX: &str = "pep-caps-";

struct Pending {
    key: String,
    /// Whom the query went to: only its answer counts.
    asked: Jid,
    sent: Instant,
    /// (owner, resource) pairs to send last items to once the answer is in.
    waiting: Vec<(Jid, Jid)>,
}

#[derive(Default)]
pub struct PepState {
    caps: HashMap<String, Vec<String>>,
    caps_order: VecDeque<String>,
    /// owner -> contact full JID -> caps key.
    recipients: HashMap<Jid, HashMap<Jid, String>>,
    pending: HashMap<String, Pending>,
    next_id: u64,
}

impl PepState {
    /// The `+notify` nodes of a caps key, if known.
    fn notify_nodes(&self, key: &str) -> Option<&Vec<String>> {
        self.caps.get(key)
    }

    fn remember(&mut self, key: String, nodes: Vec<String>) {
        if self.caps.insert(key.clone(), nodes).is_none() {
            self.caps_order.push_back(key);
            while self.caps_order.len() > MAX_CAPS {
                if let Some(old) = self.caps_order.pop_front() {
                    self.caps.remove(&old);
                }
            }
        }
    }

    /// Number of caps keys cached (tests and metrics).
    pub fn caps_len(&self) -> usize {
        self.caps.len()
    }

    #[cfg(test)]
    pub fn remember_for_test(&mut self, key: &str) {
        self.remember(key.to_owned(), Vec::new());
    }

    #[cfg(test)]
    pub fn knows(&self, key: &str) -> bool {
        self.caps.contains_key(key)
    }
}

/// The caps key and the disco node to ask for a presence's `<c/>`, if it has one.
fn caps_of(presence: &Element, full: &Jid) -> Option<(String, String)> {
    let c = presence.child("c", NS_CAPS)?;
    let node = c.attr("node")?;
    let ver = c.attr("ver")?;
    let disco_node = format!("{node}#{ver}");
    let key = if c.attr("hash") == Some("sha-1") {
        ver.to_owned()
    } else {
        format!("{full} {disco_node}")
    };
    Some((key, disco_node))
}

/// Asks `full` for its disco#info unless the key is known or asked already; `wait` is told
/// the last items once the answer is in.
fn ask(
    ctx: &mut Ctx,
    owner: &Jid,
    full: &Jid,
    key: &str,
    disco_node: &str,
    wait: Option<(Jid, Jid)>,
) {
    let now = ctx.now;
    let st = &mut ctx.router.pep;
    st.pending
        .retain(|_, p| now.saturating_duration_since(p.sent) < PENDING_TTL);
    if let Some(p) = st.pending.values_mut().find(|p| p.key == key) {
        if let Some(w) = wait {
            if p.waiting.len() < MAX_WAITING && !p.waiting.contains(&w) {
                p.waiting.push(w);
            }
        }
        return;
    }
    if st.pending.len() >= MAX_PENDING {
        log::warn!("too many caps queries in flight; {full} gets no PEP notifications for now");
        return;
    }
    st.next_id += 1;
    let id = format!("{QUERY_PREFIX}{}", st.next_id);
    st.pending.insert(
        id.clone(),
        Pending {
            key: key.to_owned(),
            asked: full.clone(),
            sent: now,
            waiting: wait.into_iter().collect(),
        },
    );
    let iq = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", &id)
        .with_attr("from", &owner.to_string())
        .with_attr("to", &full.to_string())
        .with_child(Element::new("query", ns::DISCO_INFO).with_attr("node", disco_node));
    ctx.out.route(iq);
}

/// Whether `reader` (a bare JID) may read the owner's node.
pub fn may_read(ctx: &mut Ctx, owner: &Jid, access: Access, reader: &Jid) -> bool {
    if reader == owner {
        return true;
    }
    match access {
        Access::Open => true,
        Access::Whitelist => false,
        Access::Presence => ctx
            .store
            .roster_item(&owner.to_string(), &reader.to_string())
            .unwrap_or_else(|e| {
                log::error!("store: {e}");
                None
            })
            .is_some_and(|r| r.subscription.has_from()),
    }
}

/// An event message from the owner to one resource.
fn event(owner: &Jid, to: &Jid, child: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", &owner.to_string())
        .with_attr("to", &to.to_string())
        .with_attr("type", "headline")
        .with_child(Element::new("event", NS_EVENT).with_child(child))
}

/// `<items node=...><item id=...>payload</item></items>`.
pub fn items_element(ns_: &str, node: &str, items: &[(String, Element)]) -> Element {
    let mut e = Element::new("items", ns_).with_attr("node", node);
    for (id, payload) in items {
        e.push_child(
            Element::new("item", ns_)
                .with_attr("id", id)
                .with_child(payload.clone()),
        );
    }
    e
}

/// Sends `child` (inside `<event/>`) to everyone who should learn about a change of the
/// owner's `node`: its own available resources and the contacts that may read it, each only
/// if its client asked for `node+notify`.
pub fn broadcast(ctx: &mut Ctx, owner: &Jid, node_name: &str, access: Access, child: &Element) {
    let mut targets: Vec<Jid> = Vec::new();
    let own: Vec<(Jid, Option<(String, String)>)> = ctx
        .router
        .sessions_of(owner)
        .filter_map(|s| {
            s.presence
                .as_ref()
                .map(|p| (s.jid.clone(), caps_of(p, &s.jid)))
        })
        .collect();
    for (full, caps) in own {
        if let Some((key, disco_node)) = caps {
            match ctx.router.pep.notify_nodes(&key) {
                Some(nodes) if nodes.iter().any(|n| n == node_name) => targets.push(full),
                Some(_) => {}
                None => ask(ctx, owner, &full, &key, &disco_node, None),
            }
        }
    }
    if access != Access::Whitelist {
        let contacts: Vec<(Jid, String)> = ctx
            .router
            .pep
            .recipients
            .get(owner)
            .map(|m| m.iter().map(|(j, k)| (j.clone(), k.clone())).collect())
            .unwrap_or_default();
        let mut allowed: HashMap<Jid, bool> = HashMap::new();
        for (full, key) in contacts {
            let wants = ctx
                .router
                .pep
                .notify_nodes(&key)
                .is_some_and(|nodes| nodes.iter().any(|n| n == node_name));
            if !wants {
                continue;
            }
            let bare = full.to_bare();
            let ok = match allowed.get(&bare) {
                Some(ok) => *ok,
                None => {
                    let ok = may_read(ctx, owner, access, &bare);
                    allowed.insert(bare, ok);
                    ok
                }
            };
            if ok {
                targets.push(full);
            }
        }
    }
    for to in targets {
        ctx.out.route(event(owner, &to, child.clone()));
    }
}

/// Sends `to` the last item of each of the owner's nodes it asked to be notified of and may
/// read (XEP-0163 §4.3.3: on a contact's or the owner's own new presence).
fn send_last_items(ctx: &mut Ctx, owner: &Jid, to: &Jid, notify: &[String]) {
    let account = owner.to_string();
    let names = match node::names(ctx.store, &account) {
        Ok(n) => n,
        Err(_) => return,
    };
    let reader = to.to_bare();
    for name in names.iter().filter(|n| notify.contains(n)) {
        let Ok(Some(n)) = node::load(ctx.store, &account, name) else {
            continue;
        };
        if n.config.send_last != SendLast::OnSubAndPresence
            || !may_read(ctx, owner, n.config.access, &reader)
        {
            continue;
        }
        if let Some(item) = last_item(ctx, &account, &n) {
            let child = items_element(NS_EVENT, name, &[item]);
            ctx.out.route(event(owner, to, child));
        }
    }
}

fn last_item(ctx: &mut Ctx, account: &str, n: &Node) -> Option<(String, Element)> {
    let id = n.last_id()?;
    let payload = node::item(ctx.store, account, &n.name, id).ok()??;
    Some((id.to_owned(), payload))
}

/// A resource became interesting: send it the last items now if its caps are known, or ask
/// its client and send them with the answer.
fn greet(ctx: &mut Ctx, owner: &Jid, full: &Jid, key: &str, disco_node: &str) {
    match ctx.router.pep.notify_nodes(key).cloned() {
        Some(nodes) => send_last_items(ctx, owner, full, &nodes),
        None => ask(
            ctx,
            owner,
            full,
            key,
            disco_node,
            Some((owner.clone(), full.clone())),
        ),
    }
}

/// `available` hook: the owner's own new resource gets the last items it is interested in.
pub fn own_available(ctx: &mut Ctx, sid: SessionId) {
    let Some((full, presence)) = ctx
        .router
        .session(sid)
        .and_then(|s| s.presence.clone().map(|p| (s.jid.clone(), p)))
    else {
        return;
    };
    if let Some((key, disco_node)) = caps_of(&presence, &full) {
        greet(ctx, &full.to_bare(), &full, &key, &disco_node);
    }
}

/// `session_end` hook: an owner going offline forgets whom to notify; its contacts' presence
/// comes back (probes) at its next login.
pub fn session_end(ctx: &mut Ctx, sid: SessionId) {
    let Some(account) = ctx.router.session(sid).map(|s| s.jid.to_bare()) else {
        return;
    };
    if ctx.router.sessions_of(&account).count() <= 1 {
        ctx.router.pep.recipients.remove(&account);
    }
}

/// Inbound hook: contacts' presence to the owner (who may be notified) and answers to the
/// caps queries.
pub fn inbound(ctx: &mut Ctx, i: &Inbound) -> Flow {
    match i.kind {
        StanzaKind::Presence => {
            contact_presence(ctx, i);
            Flow::Continue
        }
        StanzaKind::Iq => {
            let is_ours = matches!(i.stanza.attr("type"), Some("result" | "error"))
                && i.stanza
                    .attr("id")
                    .is_some_and(|id| id.starts_with(QUERY_PREFIX));
            if is_ours {
                caps_answer(ctx, i);
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
        StanzaKind::Message => Flow::Continue,
    }
}

fn contact_presence(ctx: &mut Ctx, i: &Inbound) {
    if i.from.is_bare() || i.from.bare_eq(i.to) {
        return;
    }
    let owner = i.to.to_bare();
    match i.stanza.attr("type") {
        None => {}
        Some("unavailable") => {
            if let Some(m) = ctx.router.pep.recipients.get_mut(&owner) {
                m.remove(i.from);
                if m.is_empty() {
                    ctx.router.pep.recipients.remove(&owner);
                }
            }
            return;
        }
        _ => return,
    }
    // Only an online owner notifies (its sessions are what publishes).
    if ctx.router.sessions_of(&owner).next().is_none() {
        return;
    }
    let Some((key, disco_node)) = caps_of(i.stanza, i.from) else {
        if let Some(m) = ctx.router.pep.recipients.get_mut(&owner) {
            m.remove(i.from);
        }
        return;
    };
    let m = ctx.router.pep.recipients.entry(owner.clone()).or_default();
    let previous = m.get(i.from).cloned();
    if previous.is_none() && m.len() >= MAX_RECIPIENTS {
        log::warn!(
            "{owner} has too many contacts online to notify; {} left out",
            i.from
        );
        return;
    }
    m.insert(i.from.clone(), key.clone());
    if previous.is_none() {
        greet(ctx, &owner, i.from, &key, &disco_node);
    } else if ctx.router.pep.notify_nodes(&key).is_none() {
        ask(ctx, &owner, i.from, &key, &disco_node, None);
    }
}

fn caps_answer(ctx: &mut Ctx, i: &Inbound) {
    let Some(id) = i.stanza.attr("id") else {
        return;
    };
    let Some(p) = ctx.router.pep.pending.get(id) else {
        return;
    };
    if p.asked != *i.from {
        return;
    }
    let Some(p) = ctx.router.pep.pending.remove(id) else {
        return;
    };
    let nodes = match i.stanza.child("query", ns::DISCO_INFO) {
        Some(q) if i.stanza.attr("type") == Some("result") => {
            if p.key.contains(' ') || verifies(q, &p.key) {
                notify_features(q)
            } else {
                log::warn!("caps of {} do not match their ver; ignored", i.from);
                return;
            }
        }
        // A client that cannot answer gets no notifications; asking again would not help.
        _ => Vec::new(),
    };
    ctx.router.pep.remember(p.key, nodes.clone());
    for (owner, full) in p.waiting {
        send_last_items(ctx, &owner, &full, &nodes);
    }
}

/// XEP-0115 §5.4: the answer hashes to the ver it was asked for.
fn verifies(q: &Element, ver: &str) -> bool {
    let identities: Vec<Identity> = q
        .child_elements()
        .filter(|e| e.is("identity", ns::DISCO_INFO))
        .map(|e| Identity {
            category: e.attr("category").unwrap_or(""),
            kind: e.attr("type").unwrap_or(""),
            lang: e.attr_ns(ns::XML, "lang").unwrap_or(""),
            name: e.attr("name").unwrap_or(""),
        })
        .collect();
    let features: Vec<&str> = q
        .child_elements()
        .filter(|e| e.is("feature", ns::DISCO_INFO))
        .filter_map(|e| e.attr("var"))
        .collect();
    let forms: Vec<Element> = q
        .child_elements()
        .filter(|e| e.is("x", node::NS_DATA))
        .cloned()
        .collect();
    caps::hash(&caps::verification_string(&identities, &features, &forms)) == ver
}

fn notify_features(q: &Element) -> Vec<String> {
    q.child_elements()
        .filter(|e| e.is("feature", ns::DISCO_INFO))
        .filter_map(|e| e.attr("var")?.strip_suffix("+notify").map(str::to_owned))
        .take(MAX_NOTIFY_NODES)
        .collect()
}

/// Most `+notify` nodes remembered per client (clients list a few dozen).
const MAX_NOTIFY_NODES: usize = 256;
