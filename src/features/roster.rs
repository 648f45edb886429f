//! Roster management (RFC 6121 §2): get with versioning (§2.6), set, remove, and pushes to
//! the account's interested resources.
//!
//! Owns: the `jabber:iq:roster` IQs and the wire form of roster items. The subscription
//! states themselves change in `presence`, which calls `push` here.

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::jid::Jid;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::store::{RosterItem, Subscription};
use crate::xml::{Element, ns};

/// XEP-0237 / RFC 6121 §2.6: roster versioning is advertised as a stream feature.
pub const NS_ROSTER_VER: &str = "urn:xmpp:features:rosterver";

/// RFC 6121 §3.4.1: the stream feature for subscription pre-approval.
pub const NS_PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";

/// Longest roster item name or group name accepted (bytes).
const MAX_NAME_BYTES: usize = 1024;
/// Most groups per item.
const MAX_GROUPS: usize = 32;

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Get, ns::ROSTER, get);
    r.iq(IqTo::Account, IqType::Set, ns::ROSTER, set);
    r.stream_features
        .push(|_, _| Some(Element::new("ver", NS_ROSTER_VER)));
    // RFC 6121 §3.4.1: pre-approvals (handled in `presence`) are advertised.
    r.stream_features
        .push(|_, _| Some(Element::new("sub", NS_PRE_APPROVAL)));
}

/// The `<item/>` for a record; `remove` renders a removal (RFC 6121 §2.1.2.5).
pub fn item_element(item: &RosterItem, remove: bool) -> Element {
    let mut e = Element::new("item", ns::ROSTER).with_attr("jid", &item.jid);
    if remove {
        e.set_attr("subscription", "remove");
        return e;
    }
    if let Some(n) = &item.name {
        e.set_attr("name", n);
    }
    e.set_attr("subscription", item.subscription.name());
    if item.ask {
        e.set_attr("ask", "subscribe");
    }
    if item.approved {
        e.set_attr("approved", "true");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", ns::ROSTER).with_text(g));
    }
    e
}

/// Sends a roster push for `item` (version `ver`) to the account's interested resources
/// (RFC 6121 §2.1.6).
pub fn push(ctx: &mut Ctx, account: &Jid, item: &RosterItem, ver: u64) {
    let query = Element::new("query", ns::ROSTER)
        .with_attr("ver", &ver.to_string())
        .with_child(item_element(item, !item.in_roster));
    let targets: Vec<(crate::server::ConnId, String)> = ctx
        .router
        .sessions_of(account)
        .filter(|s| s.roster_requested)
        .map(|s| (s.conn, s.jid.to_string()))
        .collect();
    for (conn, jid) in targets {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", &format!("push{ver}"))
            .with_attr("to", &jid)
            .with_child(query.clone());
        ctx.out.send(conn, &iq);
    }
}

/// Stores `item` and pushes it; returns the new version.
pub fn save_and_push(ctx: &mut Ctx, account: &Jid, item: &RosterItem) -> Result<u64, StanzaError> {
    let ver = ctx
        .store
        .roster_put(&account.to_string(), item)
        .map_err(internal)?;
    push(ctx, account, item, ver);
    Ok(ver)
}

pub(crate) fn internal(e: crate::store::StoreError) -> StanzaError {
    log::error!("store: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

fn forbidden() -> StanzaError {
    StanzaError::new(StanzaCondition::Forbidden)
}

/// RFC 6121 §2.1.3 and §2.6.
fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(forbidden());
    }
    if let Some(s) = req.session.and_then(|sid| ctx.router.session_mut(sid)) {
        s.roster_requested = true;
    }
    let account = req.to.to_string();
    let current = ctx.store.roster_version(&account).map_err(internal)?;
    let items = ctx.store.roster_items(&account).map_err(internal)?;
    let client_ver = req
        .payload
        .attr("ver")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v <= current);
    if let Some(since) = client_ver {
        // §2.6.3: an empty result, then pushes of what changed since the client's version.
        let conn = req
            .session
            .and_then(|sid| ctx.router.session(sid))
            .map(|s| s.conn);
        let mut changed: Vec<&RosterItem> = items.iter().filter(|i| i.version > since).collect();
        changed.sort_by_key(|i| i.version);
        if let Some(conn) = conn {
            for item in changed {
                let iq = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", &format!("push{}", item.version))
                    .with_attr("to", &req.from.to_string())
                    .with_child(
                        Element::new("query", ns::ROSTER)
                            .with_attr("ver", &item.version.to_string())
                            .with_child(item_element(item, !item.in_roster)),
                    );
                // Sent after the empty result (the outbox is flushed after the reply).
                ctx.out.send(conn, &iq);
            }
        }
        return Ok(None);
    }
    let mut q = Element::new("query", ns::ROSTER).with_attr("ver", &current.to_string());
    for item in items.iter().filter(|i| i.in_roster) {
        q.push_child(item_element(item, false));
    }
    Ok(Some(q))
}

/// RFC 6121 §2.1.5 (add/update) and §2.5 (remove).
fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(forbidden());
    }
    let bad = || StanzaError::new(StanzaCondition::BadRequest);
    let mut items = req
        .payload
        .child_elements()
        .filter(|e| e.is("item", ns::ROSTER));
    let (Some(el), None) = (items.next(), items.next()) else {
        return Err(bad());
    };
    let contact = el
        .attr("jid")
        .and_then(|j| Jid::parse(j).ok())
        .filter(|j| j.is_bare())
        .ok_or_else(bad)?;
    if contact == *req.to {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAllowed,
            "you cannot add yourself",
        ));
    }
    let account = req.to.to_string();
    let key = contact.to_string();
    let existing = ctx.store.roster_item(&account, &key).map_err(internal)?;
    if el.attr("subscription") == Some("remove") {
        return remove(ctx, req.to, existing);
    }
    let name = el.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    let mut groups: Vec<String> = Vec::new();
    for g in el.child_elements().filter(|e| e.is("group", ns::ROSTER)) {
        let text = g.text();
        // §2.1.5: an empty group name is not acceptable, a repeated one a bad request.
        if text.is_empty() {
            return Err(StanzaError::new(StanzaCondition::NotAcceptable));
        }
        if groups.contains(&text) {
            return Err(bad());
        }
        groups.push(text);
    }
    if groups.len() > MAX_GROUPS
        || name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES)
        || groups.iter().any(|g| g.len() > MAX_NAME_BYTES)
    {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable));
    }
    let mut item = existing.unwrap_or_else(|| RosterItem::new(&key));
    if !item.in_roster {
        let count = ctx
            .store
            .roster_items(&account)
            .map_err(internal)?
            .iter()
            .filter(|i| i.in_roster)
            .count();
        if count >= ctx.config.limits.max_roster_items {
            return Err(StanzaError::with_text(
                StanzaCondition::ResourceConstraint,
                "the roster is full",
            ));
        }
    }
    item.in_roster = true;
    item.name = name;
    item.groups = groups;
    save_and_push(ctx, req.to, &item)?;
    Ok(None)
}

/// §2.5.2: removing an item cancels the subscriptions both ways.
fn remove(ctx: &mut Ctx, account: &Jid, existing: Option<RosterItem>) -> IqResult {
    let Some(mut item) = existing.filter(|i| i.in_roster) else {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    };
    let me = account.to_string();
    let mut tell = |kind: &str| {
        ctx.out.route(
            Element::new("presence", ns::CLIENT)
                .with_attr("type", kind)
                .with_attr("from", &me)
                .with_attr("to", &item.jid),
        );
    };
    if item.subscription.has_to() || item.ask {
        tell("unsubscribe");
    }
    if item.subscription.has_from() || item.pending_in {
        tell("unsubscribed");
    }
    item.in_roster = false;
    item.subscription = Subscription::None;
    item.ask = false;
    item.pending_in = false;
    item.approved = false;
    item.name = None;
    item.groups.clear();
    save_and_push(ctx, account, &item)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::testutil::Harness;

    #[test]
    fn set_then_get_and_push() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let a2 = h.login("alice", "b");
        h.send(
            a2,
            "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>",
        );
        assert!(
            h.take(a2)
                .contains("<query xmlns='jabber:iq:roster' ver='0'/>")
        );
        h.send(
            a,
            "<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='Bob@Localhost' name='Bob'><group>Friends</group></item></query></iq>",
        );
        assert!(h.take(a).contains("type='result' id='s'"));
        let push = h.take(a2);
        assert!(
            push.contains("<item jid='bob@localhost' name='Bob' subscription='none'><group>Friends</group></item>"),
            "interested resource gets the push: {push}"
        );
        h.send(
            a,
            "<iq type='get' id='g2'><query xmlns='jabber:iq:roster'/></iq>",
        );
        assert!(h.take(a).contains("ver='1'><item jid='bob@localhost'"));
    }

    #[test]
    fn versioned_get_returns_only_delta() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        for c in ["bob", "carol"] {
            h.send(
                a,
                &format!("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='{c}@localhost'/></query></iq>"),
            );
        }
        h.take(a);
        h.send(
            a,
            "<iq type='get' id='v'><query xmlns='jabber:iq:roster' ver='2'/></iq>",
        );
        assert_eq!(
            h.take(a),
            "<iq type='result' id='v' to='alice@localhost/a' from='alice@localhost'/>"
        );
        h.send(
            a,
            "<iq type='get' id='v'><query xmlns='jabber:iq:roster' ver='1'/></iq>",
        );
        let out = h.take(a);
        assert!(out.contains("type='result' id='v'") && out.contains("jid='carol@localhost'"));
        assert!(!out.contains("jid='bob@localhost'"), "{out}");
        // A removal shows up in the delta too.
        h.send(a, "<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
        h.take(a);
        h.send(
            a,
            "<iq type='get' id='v'><query xmlns='jabber:iq:roster' ver='2'/></iq>",
        );
        assert!(
            h.take(a)
                .contains("<item jid='bob@localhost' subscription='remove'/>")
        );
    }

    #[test]
    fn bad_sets_refused() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        for (item, cond) in [
            ("<item jid='alice@localhost'/>", "not-allowed"),
            ("<item jid='x@y/z'/>", "bad-request"),
            ("<item/>", "bad-request"),
            (
                "<item jid='b@l'><group>g</group><group>g</group></item>",
                "bad-request",
            ),
            ("<item jid='b@l'><group/></item>", "not-acceptable"),
            (
                "<item jid='nobody@l' subscription='remove'/>",
                "item-not-found",
            ),
        ] {
            h.send(
                a,
                &format!(
                    "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
                ),
            );
            let out = h.take(a);
            assert!(out.contains(&format!("<{cond} ")), "{item}: {out}");
        }
        h.send(
            a,
            "<iq type='get' id='x' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>",
        );
        assert!(h.take(a).contains("<forbidden "));
    }
}
