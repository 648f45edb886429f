//! Blocking Command (XEP-0191): the user's block list and its enforcement.
//!
//! Owns: the `urn:xmpp:blocking` IQs (get, block, unblock, unblock-all) and their pushes to
//! the resources that asked for the list (`Session::blocklist_requested`), the list in the
//! store (per-account value "blocklist", at most `MAX_BLOCKED` JIDs), JID matching (§7, the
//! order of XEP-0016), and enforcement both ways: stanzas from a blocked JID never reach the
//! user (§3.3: presence dropped, messages and IQ requests answered `service-unavailable`),
//! and stanzas the user sends to one are refused with `not-acceptable` + `<blocked/>`.
//!
//! Stanzas the server sends on the user's behalf (presence broadcasts, probe answers,
//! subscription handling) do not pass the outbound hook; the inbound hook of the recipient
//! also checks the *sender's* list, so a blocked contact sees no presence. Both hooks must
//! run before `presence`'s, which consumes presence stanzas.
//!
//! Never blocks between the resources of one account (XEP-0191 §5 note), nor stanzas to or
//! from the user's own server domain.

use std::collections::HashMap;
use std::rc::Rc;

use super::{Ctx, Flow, Inbound, IqRequest, IqResult, IqTo, IqType, Outbound, Registry};
use crate::jid::Jid;
use crate::server::ConnId;
use crate::stanza::{ErrorType, StanzaCondition, StanzaError, StanzaKind, error_reply};
use crate::store::{Store, StoreError};
use crate::xml::{Element, ns};

pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// The per-account store key: blocked JIDs, normalised, one per line, oldest first. JIDs
/// cannot contain control characters (RFC 7622), so a newline never occurs inside one.
const KEY: &str = "blocklist";
/// Most JIDs one account may block; a block beyond it fails with `resource-constraint` and
/// changes nothing.
pub const MAX_BLOCKED: usize = 1000;

pub fn register(r: &mut Registry) {
    // §3.2-§3.5: the IQs carry no `to`: they are addressed to the user's own account.
    r.iq(IqTo::Account, IqType::Get, NS_BLOCKING, get);
    r.iq(IqTo::Account, IqType::Set, NS_BLOCKING, set);
    r.feature(&[IqTo::Host], NS_BLOCKING);
    r.outbound.push(outbound);
    r.inbound.push(inbound);
}

/// §7 (XEP-0016 §2.1): whether block-list entry `item` covers `jid`. A full JID covers only
/// itself; a bare JID any of its resources; `domain/resource` only itself; a domain itself
/// and everything at it.
pub fn matches(item: &Jid, jid: &Jid) -> bool {
    match (item.local(), item.resource()) {
        (Some(_), Some(_)) => item == jid,
        (Some(_), None) => item.as_str() == jid.bare_str(),
        (None, Some(r)) => {
            jid.local().is_none() && jid.domain() == item.domain() && jid.resource() == Some(r)
        }
        (None, None) => jid.domain() == item.domain(),
    }
}

/// The account's block list, oldest entry first. Entries that no longer parse (a stricter
/// JID rule in a later version) are skipped.
fn load(store: &dyn Store, account: &str) -> Result<Vec<Jid>, StoreError> {
    let Some(bytes) = store.kv_get(account, KEY)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .split('\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| Jid::parse(l).ok())
        .take(MAX_BLOCKED)
        .collect())
}

fn save(store: &mut dyn Store, account: &str, list: &[Jid]) -> Result<(), StoreError> {
    if list.is_empty() {
        return store.kv_delete(account, KEY);
    }
    let text: Vec<String> = list.iter().map(Jid::to_string).collect();
    store.kv_put(account, KEY, text.join("\n").as_bytes())
}

/// Accounts whose block list was cached before the cache starts over (bounds its memory:
/// an empty list costs a key and a pointer).
const MAX_CACHED_LISTS: usize = 4096;

/// Block lists by account as last read from or written to the store, so that the check on
/// every stanza does not read the store (two redb reads per message were a quarter of the
/// server's CPU per message, even with no block list). Kept right by `save` (the only writer
/// of a list) and `forget` (the account was deleted). Lives in the router (in-memory state).
#[derive(Default)]
pub struct BlockCache {
    lists: HashMap<String, Rc<[Jid]>>,
}

impl BlockCache {
    fn get(&mut self, store: &dyn Store, account: &str) -> Result<Rc<[Jid]>, StoreError> {
        if let Some(list) = self.lists.get(account) {
            return Ok(list.clone());
        }
        let list: Rc<[Jid]> = load(store, account)?.into();
        if self.lists.len() >= MAX_CACHED_LISTS {
            self.lists.clear();
        }
        self.lists.insert(account.to_owned(), list.clone());
        Ok(list)
    }

    /// The account's list changed or the account is gone: read it again next time.
    pub fn forget(&mut self, account: &str) {
        self.lists.remove(account);
    }
}

/// Whether local account `account` (bare) has blocked `jid`. A store failure is logged and
/// counts as "not blocked": the server is failing anyway, and losing messages would be worse.
pub fn is_blocked(cache: &mut BlockCache, store: &dyn Store, account: &Jid, jid: &Jid) -> bool {
    if jid.bare_str() == account.bare_str()
        || (jid.local().is_none() && jid.domain() == account.domain())
    {
        return false;
    }
    match cache.get(store, account.bare_str()) {
        Ok(list) => list.iter().any(|item| matches(item, jid)),
        Err(e) => {
            log::error!("store: {e}");
            false
        }
    }
}

fn internal(e: StoreError) -> StanzaError {
    super::roster::internal(e)
}

fn forbidden() -> StanzaError {
    StanzaError::new(StanzaCondition::Forbidden)
}

fn list_element(name: &str, items: &[Jid]) -> Element {
    let mut e = Element::new(name, NS_BLOCKING);
    for j in items {
        e.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", &j.to_string()));
    }
    e
}

/// §3.2: the list; the asking resource becomes interested in pushes.
fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(forbidden());
    }
    if req.payload.name != "blocklist" {
        return Err(StanzaError::new(StanzaCondition::BadRequest));
    }
    let list = load(ctx.store, &req.to.to_string()).map_err(internal)?;
    if let Some(s) = req.session.and_then(|sid| ctx.router.session_mut(sid)) {
        s.blocklist_requested = true;
    }
    Ok(Some(list_element("blocklist", &list)))
}

/// §3.3 (block), §3.4 (unblock) and §3.5 (unblock all).
fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(forbidden());
    }
    let block = match req.payload.name.as_str() {
        "block" => true,
        "unblock" => false,
        _ => return Err(StanzaError::new(StanzaCondition::BadRequest)),
    };
    let too_many = || StanzaError::with_text(StanzaCondition::ResourceConstraint, "too many JIDs");
    let mut items: Vec<Jid> = Vec::new();
    for el in req
        .payload
        .child_elements()
        .filter(|e| e.is("item", NS_BLOCKING))
    {
        let jid = el
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .ok_or_else(|| StanzaError::new(StanzaCondition::JidMalformed))?;
        if !items.contains(&jid) {
            if items.len() >= MAX_BLOCKED {
                return Err(too_many());
            }
            items.push(jid);
        }
    }
    // §3.3: a block without items is a bad request; an unblock without items unblocks all.
    if block && items.is_empty() {
        return Err(StanzaError::new(StanzaCondition::BadRequest));
    }
    let account = req.to.clone();
    let key = account.to_string();
    let before = load(ctx.store, &key).map_err(internal)?;
    let mut list = before.clone();
    if block {
        for j in &items {
            if !list.contains(j) {
                list.push(j.clone());
            }
        }
        if list.len() > MAX_BLOCKED {
            return Err(too_many());
        }
    } else if items.is_empty() {
        list.clear();
    } else {
        list.retain(|j| !items.contains(j));
    }
    if list != before {
        if block {
            let added: Vec<Jid> = list
                .iter()
                .filter(|j| !before.contains(j))
                .cloned()
                .collect();
            announce_unavailable(ctx, &account, &added);
        }
        ctx.router.blocking.forget(&key);
        save(ctx.store, &key, &list).map_err(internal)?;
        if !block {
            let removed: Vec<Jid> = before
                .iter()
                .filter(|j| !list.contains(j))
                .cloned()
                .collect();
            announce_current(ctx, &account, &removed);
        }
    }
    let pushed = list_element(if block { "block" } else { "unblock" }, &items);
    push(ctx, &account, pushed, req.iq.attr("id").unwrap_or(""));
    Ok(None)
}

/// §3.3, §3.4: the change goes to every resource that asked for the list.
fn push(ctx: &mut Ctx, account: &Jid, payload: Element, request_id: &str) {
    let targets: Vec<(ConnId, String)> = ctx
        .router
        .sessions_of(account)
        .filter(|s| s.blocklist_requested)
        .map(|s| (s.conn, s.jid.to_string()))
        .collect();
    for (conn, full) in targets {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", &format!("block-push-{request_id}"))
            .with_attr("to", &full)
            .with_child(payload.clone());
        ctx.out.send(conn, &iq);
    }
}

/// The JIDs among `entries` that may see the user's presence (a `from` subscription), as
/// the JID to address: the contact's bare JID, or the blocked full JID of one of its
/// resources.
fn presence_subscribers(ctx: &mut Ctx, account: &Jid, entries: &[Jid]) -> Vec<Jid> {
    if entries.is_empty() {
        return Vec::new();
    }
    let roster = ctx
        .store
        .roster_items(&account.to_string())
        .unwrap_or_else(|e| {
            log::error!("store: {e}");
            Vec::new()
        });
    let mut out: Vec<Jid> = Vec::new();
    for item in roster.iter().filter(|i| i.subscription.has_from()) {
        let Ok(contact) = Jid::parse(&item.jid) else {
            continue;
        };
        for entry in entries {
            let target = if matches(entry, &contact) {
                contact.clone()
            } else if !entry.is_bare() && entry.bare_eq(&contact) && contact.is_bare() {
                entry.clone()
            } else {
                continue;
            };
            if !out.contains(&target) {
                out.push(target);
            }
        }
    }
    out
}

/// §3.3: newly blocked JIDs that may see the user's presence learn that each available
/// resource is unavailable. The block is stored before the outbox is processed, so these
/// cannot be routed (the recipient's inbound hook would drop them as coming from a user who
/// blocks the recipient): local contacts get them directly, as routing would deliver them.
fn announce_unavailable(ctx: &mut Ctx, account: &Jid, added: &[Jid]) {
    let targets = presence_subscribers(ctx, account, added);
    let resources: Vec<Jid> = ctx
        .router
        .sessions_of(account)
        .filter(|s| s.is_available())
        .map(|s| s.jid.clone())
        .collect();
    if resources.is_empty() {
        return;
    }
    for target in targets {
        // A remote contact has no inbound hook here to stop them: they go over federation.
        if !ctx.config.hosts(target.domain()) {
            for from in &resources {
                ctx.out.route(
                    Element::new("presence", ns::CLIENT)
                        .with_attr("type", "unavailable")
                        .with_attr("from", &from.to_string())
                        .with_attr("to", &target.to_string()),
                );
            }
            continue;
        }
        let recipient = target.to_bare();
        let conns: Vec<ConnId> = ctx
            .router
            .sessions_of(&recipient)
            .filter(|s| s.is_available() && (target.is_bare() || s.jid == target))
            .map(|s| s.conn)
            .collect();
        for from in &resources {
            // What the contact's own inbound hook would have done: it blocked us too.
            if conns.is_empty() || is_blocked(&mut ctx.router.blocking, ctx.store, &recipient, from)
            {
                continue;
            }
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", &from.to_string())
                .with_attr("to", &target.to_string());
            ctx.out.send_all(&conns, &p);
        }
    }
}

/// §3.4: unblocked JIDs that may see the user's presence get the current presence of each
/// available resource (routed: the block is already lifted), and contacts whose presence the
/// user sees are probed, since their broadcasts were dropped while blocked.
fn announce_current(ctx: &mut Ctx, account: &Jid, removed: &[Jid]) {
    for target in presence_subscribers(ctx, account, removed) {
        let current: Vec<Element> = ctx
            .router
            .sessions_of(account)
            .filter_map(|s| {
                s.presence.as_ref().map(|p| {
                    let mut c = p.clone();
                    c.set_attr("from", &s.jid.to_string());
                    c.set_attr("to", &target.to_string());
                    c
                })
            })
            .collect();
        for p in current {
            ctx.out.route(p);
        }
    }
    if removed.is_empty() {
        return;
    }
    let roster = ctx
        .store
        .roster_items(&account.to_string())
        .unwrap_or_default();
    let me = account.to_string();
    for item in roster.iter().filter(|i| i.subscription.has_to()) {
        let Ok(contact) = Jid::parse(&item.jid) else {
            continue;
        };
        if removed.iter().any(|r| matches(r, &contact)) {
            ctx.out.route(
                Element::new("presence", ns::CLIENT)
                    .with_attr("type", "probe")
                    .with_attr("from", &me)
                    .with_attr("to", &item.jid),
            );
        }
    }
}

/// §3.3: the user's own stanzas to a blocked JID are not routed; the client learns why.
fn outbound(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    let Some(to) = o.to else {
        return Flow::Continue;
    };
    let account = o.from.to_bare();
    if !is_blocked(&mut ctx.router.blocking, ctx.store, &account, to) {
        return Flow::Continue;
    }
    let err = StanzaError {
        error_type: ErrorType::Cancel,
        ..StanzaError::new(StanzaCondition::NotAcceptable)
    };
    // Errors and IQ results are never answered (RFC 6120 §8.3.1); they are dropped.
    if let Some(mut reply) = error_reply(e, &err, &to.to_string()) {
        if let Some(error) = reply.child_mut("error", ns::CLIENT) {
            error.push_child(Element::new("blocked", NS_BLOCKING_ERRORS));
        }
        ctx.out.send(o.conn, &reply);
    }
    Flow::Stop
}

/// §3.3: stanzas from a blocked JID never reach the user; and stanzas the server sends for a
/// local user to a JID that user blocked never reach that JID.
fn inbound(ctx: &mut Ctx, i: &Inbound) -> Flow {
    let account = i.to.to_bare();
    if is_blocked(&mut ctx.router.blocking, ctx.store, &account, i.from) {
        // Presence (notifications, subscriptions, probes) silently; messages and IQ
        // requests with `service-unavailable`, so the user appears offline; never an error
        // to an error or an IQ result.
        if i.kind != StanzaKind::Presence {
            let err = StanzaError::new(StanzaCondition::ServiceUnavailable);
            if let Some(reply) = error_reply(i.stanza, &err, &i.to.to_string()) {
                let conn = i
                    .from_session
                    .and_then(|sid| ctx.router.session(sid))
                    .map(|s| s.conn);
                match conn {
                    Some(conn) => ctx.out.send(conn, &reply),
                    // From the server or (later) a remote server: back the way it came.
                    None => ctx.out.route(reply),
                }
            }
        }
        return Flow::Stop;
    }
    // A stanza from a local session was checked against its sender's list on the way out.
    // Errors pass: they answer what the recipient sent (e.g. the refusal above).
    let sender = i.from.to_bare();
    if i.from_session.is_none()
        && i.stanza.attr("type") != Some("error")
        && sender.local().is_some()
        && ctx.config.hosts(sender.domain())
        && is_blocked(&mut ctx.router.blocking, ctx.store, &sender, i.to)
    {
        return Flow::Stop;
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ConnId;
    use crate::testutil::Harness;

    #[test]
    fn cache_reads_store_once_until_forgotten_and_is_bounded() {
        let mut store = crate::store::memory::MemoryStore::new();
        let mut cache = BlockCache::default();
        let alice = j("alice@localhost");
        let mallory = j("mallory@evil.example");
        assert!(!is_blocked(&mut cache, &store, &alice, &mallory));
        // Written behind the cache's back: the cached (empty) list still answers, which is
        // what spares the store a read per stanza.
        save(
            &mut store,
            "alice@localhost",
            std::slice::from_ref(&mallory),
        )
        .unwrap();
        assert!(!is_blocked(&mut cache, &store, &alice, &mallory));
        cache.forget("alice@localhost");
        assert!(is_blocked(&mut cache, &store, &alice, &mallory));
        for i in 0..MAX_CACHED_LISTS + 10 {
            let other = j(&format!("u{i}@localhost"));
            is_blocked(&mut cache, &store, &other, &mallory);
        }
        assert!(cache.lists.len() <= MAX_CACHED_LISTS);
    }

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    const GET: &str = "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>";

    fn block(h: &mut Harness, c: ConnId, jid: &str) -> String {
        h.send(
            c,
            &format!(
                "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='{jid}'/>\
                 </block></iq>"
            ),
        );
        h.take(c)
    }

    /// alice and bob subscribed to each other, both available.
    fn friends(h: &mut Harness) -> (ConnId, ConnId) {
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<presence/>");
        h.send(b, "<presence/>");
        h.send(a, "<presence type='subscribe' to='bob@localhost'/>");
        h.send(b, "<presence type='subscribed' to='alice@localhost'/>");
        h.send(b, "<presence type='subscribe' to='alice@localhost'/>");
        h.send(a, "<presence type='subscribed' to='bob@localhost'/>");
        h.take(a);
        h.take(b);
        // Both see each other's presence changes now.
        h.send(a, "<presence><show>away</show></presence>");
        assert!(h.take(b).contains("from='alice@localhost/a'"));
        h.send(b, "<presence><show>away</show></presence>");
        assert!(h.take(a).contains("from='bob@localhost/b'"));
        (a, b)
    }

    #[test]
    fn matches_follows_xep0016_order() {
        let cases = [
            ("bob@d/r", "bob@d/r", true),
            ("bob@d/r", "bob@d/s", false),
            ("bob@d/r", "bob@d", false),
            ("bob@d", "bob@d/any", true),
            ("bob@d", "bob@d", true),
            ("bob@d", "eve@d", false),
            ("d/r", "d/r", true),
            ("d/r", "bob@d/r", false),
            ("d", "bob@d/r", true),
            ("d", "d", true),
            ("d", "bob@other", false),
        ];
        for (item, jid, want) in cases {
            assert_eq!(matches(&j(item), &j(jid)), want, "{item} vs {jid}");
        }
    }

    #[test]
    fn empty_list_block_pushes_to_interested_and_lists() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let other = h.login("alice", "o");
        h.send(a, GET);
        let out = h.take(a);
        assert!(
            out.contains("<blocklist xmlns='urn:xmpp:blocking'/>") && out.contains("id='g'"),
            "{out}"
        );
        let out = block(&mut h, a, "Bob@LocalHost");
        assert!(out.contains("type='result' id='b'"), "{out}");
        assert!(
            out.contains(
                "<iq type='set' id='block-push-b' to='alice@localhost/a'>\
                 <block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>"
            ),
            "{out}"
        );
        // A resource that never asked for the list gets no push.
        assert_eq!(h.take(other), "");
        h.send(other, GET);
        assert!(h.take(other).contains(
            "<blocklist xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></blocklist>"
        ));
    }

    #[test]
    fn block_bad_requests_refused() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='set' id='1'><block xmlns='urn:xmpp:blocking'/></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
        let out = block(&mut h, a, "bad@@jid");
        assert!(out.contains("<jid-malformed"), "{out}");
        // Another user's list is not theirs to read.
        let b = h.login("bob", "b");
        h.send(
            b,
            "<iq type='get' id='2' to='alice@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
        );
        assert!(h.take(b).contains("<forbidden"));
    }

    #[test]
    fn full_list_block_resource_constraint() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let mut items = String::new();
        for n in 0..MAX_BLOCKED {
            items.push_str(&format!("<item jid='u{n}@example.net'/>"));
        }
        h.send(
            a,
            &format!("<iq type='set' id='1'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"),
        );
        assert!(h.take(a).contains("type='result'"));
        let out = block(&mut h, a, "one-more@example.net");
        assert!(
            out.contains("<resource-constraint") && out.contains("type='wait'"),
            "{out}"
        );
        // Blocking one already blocked changes nothing and succeeds.
        assert!(block(&mut h, a, "u0@example.net").contains("type='result'"));
    }

    #[test]
    fn blocked_contact_message_and_iq_service_unavailable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<presence/>");
        block(&mut h, a, "bob@localhost");
        h.send(
            b,
            "<message to='alice@localhost' id='m' type='chat'><body>hi</body></message>",
        );
        let out = h.take(b);
        assert!(
            out.contains("type='error' id='m'")
                && out.contains("<service-unavailable")
                && !out.contains("blocked"),
            "{out}"
        );
        h.send(
            b,
            "<iq to='alice@localhost' id='v' type='get'><vCard xmlns='vcard-temp'/></iq>",
        );
        assert!(h.take(b).contains("<service-unavailable"));
        // An IQ result is dropped silently.
        h.send(b, "<iq to='alice@localhost/a' id='r' type='result'/>");
        assert_eq!(h.take(b), "");
        assert_eq!(h.take(a), "");
    }

    #[test]
    fn user_to_blocked_not_acceptable_with_blocked_condition() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        block(&mut h, a, "bob@localhost");
        h.send(
            a,
            "<message to='bob@localhost/b' id='m'><body>hi</body></message>",
        );
        assert_eq!(
            h.take(a),
            "<message type='error' id='m' to='alice@localhost/a' from='bob@localhost/b'>\
             <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <blocked xmlns='urn:xmpp:blocking:errors'/></error></message>"
        );
        assert_eq!(h.take(b), "");
        // Own resources and the server itself are never blocked.
        let out = block(&mut h, a, "localhost");
        assert!(out.contains("type='result'"));
        h.send(
            a,
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        assert!(h.take(a).contains("type='result' id='p'"));
    }

    #[test]
    fn blocked_contact_sees_no_presence_then_unblock_restores() {
        let mut h = Harness::new();
        let (a, b) = friends(&mut h);
        block(&mut h, a, "bob@localhost");
        // §3.3: the contact is told the user went unavailable.
        let out = h.take(b);
        assert!(
            out.contains(
                "<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>"
            ),
            "{out}"
        );
        h.send(a, "<presence><show>dnd</show></presence>");
        assert_eq!(h.take(b), "");
        // (The user's own echo.)
        assert!(h.take(a).contains("<show>dnd</show>"));
        // Nor does the user get the contact's presence.
        h.send(b, "<presence><show>xa</show></presence>");
        assert_eq!(h.take(a), "");
        h.send(
            a,
            "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/>\
             </unblock></iq>",
        );
        assert!(h.take(a).contains("<show>xa</show>"), "probe answered");
        assert!(h.take(b).contains("<show>dnd</show>"));
    }

    #[test]
    fn unblock_all_clears_and_pushes() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        let c = h.login("carol", "c");
        h.send(a, GET);
        h.take(a);
        block(&mut h, a, "bob@localhost");
        block(&mut h, a, "carol@localhost/c");
        h.send(
            a,
            "<iq type='set' id='all'><unblock xmlns='urn:xmpp:blocking'/></iq>",
        );
        let out = h.take(a);
        assert!(
            out.contains("type='result' id='all'")
                && out.contains("<unblock xmlns='urn:xmpp:blocking'/></iq>"),
            "{out}"
        );
        h.send(a, GET);
        assert!(h.take(a).contains("<blocklist xmlns='urn:xmpp:blocking'/>"));
        for (c, who) in [(b, "bob"), (c, "carol")] {
            h.send(
                c,
                "<message to='alice@localhost/a' type='chat'><body>back</body></message>",
            );
            assert!(h.take(a).contains("<body>back</body>"), "{who}");
        }
    }

    #[test]
    fn user_to_blocked_no_sent_carbon() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let other = h.login("alice", "o");
        h.login("bob", "b");
        h.send(
            other,
            "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        );
        h.take(other);
        block(&mut h, a, "bob@localhost");
        h.send(
            a,
            "<message to='bob@localhost/b' type='chat'><body>x</body></message>",
        );
        assert!(h.take(a).contains("<blocked"));
        assert_eq!(h.take(other), "");
    }

    #[test]
    fn blocked_contact_message_to_offline_user_refused_not_stored() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        block(&mut h, a, "bob@localhost");
        h.send(
            b,
            "<message to='alice@localhost' type='chat' id='o'><body>x</body></message>",
        );
        assert!(h.take(b).contains("<service-unavailable"));
        h.send(a, "<presence/>");
        assert!(!h.take(a).contains("<body>x</body>"));
    }

    #[test]
    fn full_jid_block_only_that_resource() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b1 = h.login("bob", "one");
        let b2 = h.login("bob", "two");
        block(&mut h, a, "bob@localhost/one");
        h.send(
            b1,
            "<message to='alice@localhost/a'><body>1</body></message>",
        );
        assert!(h.take(b1).contains("<service-unavailable"));
        h.send(
            b2,
            "<message to='alice@localhost/a'><body>2</body></message>",
        );
        assert!(h.take(a).contains("<body>2</body>"));
    }
}
