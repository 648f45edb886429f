//! Presence and subscriptions (RFC 6121 §3, §4 and Appendix A).
//!
//! Owns: what a session's presence broadcast reaches (its own resources and contacts with a
//! `from` subscription), probes and their answers, directed presence, unavailable presence
//! when a session ends, and the subscription state machine on both the user's and the
//! contact's side. Roster records live in the store; `roster` renders and pushes them.
//!
//! Subscription stanzas are processed twice, as RFC 6121 describes: outbound on the sender's
//! account (its roster) and inbound on the recipient's (its roster), so the same code serves
//! local contacts now and remote ones once federation routes to the same inbound hook.

use super::{Ctx, Flow, Inbound, Outbound, Registry, roster};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::server::ConnId;
use crate::stanza::StanzaKind;
use crate::store::RosterItem;
use crate::xml::{Element, ns};

/// Most directed-presence recipients remembered per session (RFC 6121 §4.6); beyond it the
/// oldest is forgotten and gets no unavailable presence at logout.
const MAX_DIRECTED_PRESENCE: usize = 64;

pub fn register(r: &mut Registry) {
    r.outbound.push(outbound);
    r.inbound.push(inbound);
    r.session_end.push(session_end);
}

fn presence(kind: &str, from: &str, to: &str) -> Element {
    let mut e = Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to);
    if !kind.is_empty() {
        e.set_attr("type", kind);
    }
    e
}

fn roster_of(ctx: &mut Ctx, account: &Jid) -> Vec<RosterItem> {
    ctx.store
        .roster_items(&account.to_string())
        .unwrap_or_else(|e| {
            log::error!("store: {e}");
            Vec::new()
        })
}

fn record(ctx: &mut Ctx, account: &Jid, contact: &str) -> Option<RosterItem> {
    ctx.store
        .roster_item(&account.to_string(), contact)
        .unwrap_or_else(|e| {
            log::error!("store: {e}");
            None
        })
}

fn save(ctx: &mut Ctx, account: &Jid, item: &RosterItem) {
    if let Err(e) = roster::save_and_push(ctx, account, item) {
        log::error!("roster update for {account} failed: {e:?}");
    }
}

/// Connections of the account's available sessions.
fn available_conns(ctx: &Ctx, account: &Jid) -> Vec<ConnId> {
    ctx.router
        .sessions_of(account)
        .filter(|s| s.is_available())
        .map(|s| s.conn)
        .collect()
}

fn outbound(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    if o.kind != StanzaKind::Presence {
        return Flow::Continue;
    }
    let kind = e.attr("type").map(str::to_owned);
    match (kind.as_deref(), o.to) {
        (None | Some("unavailable"), None) => {
            broadcast(ctx, o.session, e, kind.is_none());
            Flow::Stop
        }
        (None | Some("unavailable"), Some(to)) => {
            track_directed(ctx, o.session, to, kind.is_none());
            Flow::Continue
        }
        (Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")), Some(to)) => {
            let k = k.to_owned();
            outbound_subscription(ctx, o.from, to, &k, e)
        }
        // RFC 6121 §4.3: probes are the server's business; a client's is ignored.
        (Some("probe"), _) => Flow::Stop,
        (Some("error"), Some(_)) => Flow::Continue,
        _ => Flow::Stop,
    }
}

/// RFC 6121 §4.2 and §4.4: the session's own presence, to its own resources and to the
/// contacts that may see it; on initial presence, probes and pending requests.
fn broadcast(ctx: &mut Ctx, sid: SessionId, e: &Element, available: bool) {
    let priority = e
        .child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    let Some(s) = ctx.router.session_mut(sid) else {
        return;
    };
    let initial = available && s.presence.is_none();
    let me = s.conn;
    let full = s.jid.clone();
    let account = full.to_bare();
    let directed = if available {
        Vec::new()
    } else {
        std::mem::take(&mut s.directed)
    };
    s.priority = if available { priority } else { 0 };
    s.presence = available.then(|| e.clone());

    // The account's resources, including this one (§4.2.2).
    let mut own = available_conns(ctx, &account);
    if !own.contains(&me) {
        own.push(me);
    }
    ctx.out.send_all(&own, e);

    let items = roster_of(ctx, &account);
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        let mut copy = e.clone();
        copy.set_attr("to", &item.jid);
        ctx.out.route(copy);
    }
    for target in directed {
        let subscribed = items
            .iter()
            .any(|i| i.subscription.has_from() && i.jid == target.bare_str());
        if !subscribed {
            let mut copy = e.clone();
            copy.set_attr("to", &target.to_string());
            ctx.out.route(copy);
        }
    }
    if !initial {
        return;
    }
    // §4.2.3: probe the contacts this account is subscribed to.
    let bare = account.to_string();
    for item in items.iter().filter(|i| i.subscription.has_to()) {
        ctx.out.route(presence("probe", &bare, &item.jid));
    }
    // The account's other available resources, for the new one.
    let others: Vec<Element> = ctx
        .router
        .sessions_of(&account)
        .filter(|o| o.conn != me)
        .filter_map(|o| o.presence.clone())
        .collect();
    for p in others {
        ctx.out.send(me, &p);
    }
    // §3.1.3: subscription requests that waited for the user to come online.
    for item in items.iter().filter(|i| i.pending_in) {
        ctx.out.send(me, &presence("subscribe", &item.jid, &bare));
    }
}

fn track_directed(ctx: &mut Ctx, sid: SessionId, to: &Jid, available: bool) {
    let Some(s) = ctx.router.session_mut(sid) else {
        return;
    };
    if available {
        if !s.directed.contains(to) {
            if s.directed.len() >= MAX_DIRECTED_PRESENCE {
                s.directed.remove(0);
            }
            s.directed.push(to.clone());
        }
    } else {
        s.directed.retain(|d| d != to);
    }
}

/// RFC 6121 §3 on the user's side: the user's roster changes, then the stanza goes on to the
/// contact, addressed bare to bare.
fn outbound_subscription(ctx: &mut Ctx, from: &Jid, to: &Jid, kind: &str, e: &mut Element) -> Flow {
    let account = from.to_bare();
    let contact = to.to_bare();
    if contact == account {
        return Flow::Stop;
    }
    let key = contact.to_string();
    let mut item = record(ctx, &account, &key).unwrap_or_else(|| RosterItem::new(&key));
    let before = item.clone();
    match kind {
        // §3.1.2: Pending Out; the item appears on the roster if it was not there.
        "subscribe" => {
            if !item.subscription.has_to() {
                item.ask = true;
            }
            item.in_roster = true;
        }
        "subscribed" => {
            if item.pending_in {
                // §3.1.5: approval of a request; the user now has the contact on the roster.
                item.pending_in = false;
                item.in_roster = true;
                item.subscription = item.subscription.with_from(true);
            } else if !item.subscription.has_from() {
                // §3.4: pre-approval, nothing is sent to the contact.
                item.approved = true;
                item.in_roster = true;
                if item != before {
                    save(ctx, &account, &item);
                }
                return Flow::Stop;
            } else {
                return Flow::Stop;
            }
        }
        "unsubscribe" => {
            item.ask = false;
            item.subscription = item.subscription.with_to(false);
        }
        "unsubscribed" => {
            item.pending_in = false;
            item.approved = false;
            item.subscription = item.subscription.with_from(false);
        }
        _ => return Flow::Stop,
    }
    if item != before {
        save(ctx, &account, &item);
    }
    // RFC 6121 §3.1.2: the server stamps the bare JIDs.
    e.set_attr("from", &account.to_string());
    e.set_attr("to", &key);
    match kind {
        // §3.1.5: a new subscriber gets the user's current presence.
        "subscribed" if item.subscription.has_from() && !before.subscription.has_from() => {
            ctx.out.route(e.clone());
            send_current_presence(ctx, &account, &key);
            return Flow::Stop;
        }
        // §3.2.2: a cancelled subscriber is told the user is unavailable.
        "unsubscribed" if before.subscription.has_from() => {
            ctx.out.route(e.clone());
            send_unavailable(ctx, &account, &key);
            return Flow::Stop;
        }
        _ => {}
    }
    ctx.out.route(e.clone());
    Flow::Stop
}

/// Routes unavailable presence from each available session of `account` to `to`.
fn send_unavailable(ctx: &mut Ctx, account: &Jid, to: &str) {
    let jids: Vec<String> = ctx
        .router
        .sessions_of(account)
        .filter(|s| s.is_available())
        .map(|s| s.jid.to_string())
        .collect();
    for jid in jids {
        ctx.out.route(presence("unavailable", &jid, to));
    }
}

/// Routes the presence of each available session of `account` to `to`.
fn send_current_presence(ctx: &mut Ctx, account: &Jid, to: &str) {
    let current: Vec<Element> = ctx
        .router
        .sessions_of(account)
        .filter_map(|s| {
            s.presence.as_ref().map(|p| {
                let mut c = p.clone();
                c.set_attr("from", &s.jid.to_string());
                c.set_attr("to", to);
                c
            })
        })
        .collect();
    for p in current {
        ctx.out.route(p);
    }
}

/// RFC 6121 §3 on the contact's side and §4.3 probes, for a stanza reaching local account
/// `i.to`.
fn inbound(ctx: &mut Ctx, i: &Inbound) -> Flow {
    if i.kind != StanzaKind::Presence {
        return Flow::Continue;
    }
    let account = i.to.to_bare();
    let sender = i.from.to_bare();
    let key = sender.to_string();
    let kind = i.stanza.attr("type").unwrap_or("");
    match kind {
        "probe" => {
            let subscribed = record(ctx, &account, &key).is_some_and(|r| r.subscription.has_from());
            if subscribed {
                send_current_presence(ctx, &account, &i.from.to_string());
            }
            Flow::Stop
        }
        "subscribe" => {
            let mut item = record(ctx, &account, &key).unwrap_or_else(|| RosterItem::new(&key));
            let me = account.to_string();
            if item.subscription.has_from() {
                // §3.1.3: already subscribed: answer for the user.
                ctx.out.route(presence("subscribed", &me, &key));
                return Flow::Stop;
            }
            if item.approved {
                item.approved = false;
                item.subscription = item.subscription.with_from(true);
                save(ctx, &account, &item);
                ctx.out.route(presence("subscribed", &me, &key));
                send_current_presence(ctx, &account, &key);
                return Flow::Stop;
            }
            if item.pending_in {
                // A repeated request is not delivered again now; it is at the next login.
                return Flow::Stop;
            }
            item.pending_in = true;
            if let Err(e) = ctx.store.roster_put(&me, &item) {
                log::error!("store: {e}");
            }
            deliver_bare(ctx, &account, i.stanza, &key);
            Flow::Stop
        }
        "subscribed" => {
            let Some(mut item) = record(ctx, &account, &key).filter(|r| r.ask) else {
                return Flow::Stop;
            };
            item.ask = false;
            item.subscription = item.subscription.with_to(true);
            save(ctx, &account, &item);
            deliver_bare(ctx, &account, i.stanza, &key);
            Flow::Stop
        }
        "unsubscribe" => {
            let Some(mut item) =
                record(ctx, &account, &key).filter(|r| r.subscription.has_from() || r.pending_in)
            else {
                return Flow::Stop;
            };
            let had_from = item.subscription.has_from();
            item.pending_in = false;
            item.subscription = item.subscription.with_from(false);
            save(ctx, &account, &item);
            deliver_bare(ctx, &account, i.stanza, &key);
            if had_from {
                // §3.3.3: the former subscriber learns the user is now unavailable to it.
                send_unavailable(ctx, &account, &key);
            }
            Flow::Stop
        }
        "unsubscribed" => {
            let Some(mut item) =
                record(ctx, &account, &key).filter(|r| r.subscription.has_to() || r.ask)
            else {
                return Flow::Stop;
            };
            item.ask = false;
            item.subscription = item.subscription.with_to(false);
            save(ctx, &account, &item);
            deliver_bare(ctx, &account, i.stanza, &key);
            Flow::Stop
        }
        _ => Flow::Continue,
    }
}

/// Delivers a subscription stanza to the account's available resources, `from` the bare
/// sender (RFC 6121 §3.1.3: to all available resources).
fn deliver_bare(ctx: &mut Ctx, account: &Jid, stanza: &Element, from_bare: &str) {
    let conns = available_conns(ctx, account);
    let mut copy = stanza.clone();
    copy.set_attr("from", from_bare);
    copy.set_attr("to", &account.to_string());
    ctx.out.send_all(&conns, &copy);
}

/// RFC 6121 §4.5.2: a session that ends unannounced is announced unavailable to its own
/// resources, its subscribers and those it sent directed presence to.
fn session_end(ctx: &mut Ctx, sid: SessionId) {
    let Some(s) = ctx.router.session_mut(sid) else {
        return;
    };
    if s.presence.is_none() {
        return;
    }
    s.presence = None;
    let full = s.jid.to_string();
    let account = s.jid.to_bare();
    let me = s.conn;
    let directed = std::mem::take(&mut s.directed);
    let unavailable = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", &full);
    let own: Vec<ConnId> = available_conns(ctx, &account)
        .into_iter()
        .filter(|c| *c != me)
        .collect();
    ctx.out.send_all(&own, &unavailable);
    let items = roster_of(ctx, &account);
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        ctx.out.route(presence("unavailable", &full, &item.jid));
    }
    for target in directed {
        let t = target.to_bare().to_string();
        if !items
            .iter()
            .any(|i| i.subscription.has_from() && i.jid == t)
        {
            ctx.out
                .route(presence("unavailable", &full, &target.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::server::ConnId;
    use crate::testutil::Harness;

    const ROSTER_GET: &str = "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>";

    /// alice and bob logged in, available, with rosters requested.
    fn pair() -> (Harness, ConnId, ConnId) {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        for c in [a, b] {
            h.send(c, ROSTER_GET);
            h.send(c, "<presence/>");
            h.take(c);
        }
        (h, a, b)
    }

    fn subscribe_both(h: &mut Harness, a: ConnId, b: ConnId) {
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>");
        h.send(b, "<presence to='alice@localhost' type='subscribe'/>");
        h.send(a, "<presence to='bob@localhost' type='subscribed'/>");
        h.take(a);
        h.take(b);
    }

    #[test]
    fn subscribe_request_reaches_contact_and_sets_ask() {
        let (mut h, a, b) = pair();
        h.send(a, "<presence to='bob@localhost/b' type='subscribe'/>");
        let to_a = h.take(a);
        assert!(
            to_a.contains("jid='bob@localhost' subscription='none' ask='subscribe'"),
            "{to_a}"
        );
        let to_b = h.take(b);
        assert!(
            to_b.contains("<presence to='bob@localhost' type='subscribe' from='alice@localhost'/>"),
            "request stamped bare to bare: {to_b}"
        );
    }

    #[test]
    fn approval_gives_to_and_from_and_current_presence() {
        let (mut h, a, b) = pair();
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
        h.take(a);
        h.take(b);
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>");
        let to_b = h.take(b);
        assert!(
            to_b.contains("jid='alice@localhost' subscription='from'"),
            "{to_b}"
        );
        let to_a = h.take(a);
        assert!(
            to_a.contains("jid='bob@localhost' subscription='to'"),
            "{to_a}"
        );
        assert!(to_a.contains("type='subscribed'"), "{to_a}");
        assert!(
            to_a.contains("<presence from='bob@localhost/b' to='alice@localhost'"),
            "{to_a}"
        );
    }

    #[test]
    fn broadcast_reaches_subscribers_not_strangers() {
        let (mut h, a, b) = pair();
        let c = h.login("carol", "c");
        h.send(c, "<presence/>");
        h.take(c);
        subscribe_both(&mut h, a, b);
        h.send(a, "<presence><show>away</show></presence>");
        assert!(h.take(b).contains("<show>away</show>"));
        assert!(
            !h.take(c).contains("alice"),
            "a stranger saw alice's presence"
        );
    }

    #[test]
    fn probe_on_login_returns_contacts_presence() {
        let (mut h, a, b) = pair();
        subscribe_both(&mut h, a, b);
        let a2 = h.login("alice", "second");
        h.send(a2, "<presence/>");
        let got = h.take(a2);
        assert!(got.contains("from='bob@localhost/b'"), "{got}");
        assert!(
            !got.contains("type='probe'"),
            "probes are not delivered: {got}"
        );
    }

    #[test]
    fn preapproval_auto_answers_later_request() {
        let (mut h, a, b) = pair();
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>");
        assert!(h.take(b).contains("approved='true'"));
        assert_eq!(h.take(a), "", "a pre-approval is not sent");
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
        let to_a = h.take(a);
        assert!(to_a.contains("subscription='to'"), "{to_a}");
        let to_b = h.take(b);
        assert!(
            to_b.contains("subscription='from'") && !to_b.contains("type='subscribe'"),
            "{to_b}"
        );
    }

    #[test]
    fn unsubscribed_cancels_and_sends_unavailable() {
        let (mut h, a, b) = pair();
        subscribe_both(&mut h, a, b);
        h.send(b, "<presence to='alice@localhost' type='unsubscribed'/>");
        let to_a = h.take(a);
        assert!(to_a.contains("type='unsubscribed'"), "{to_a}");
        assert!(
            to_a.contains(
                "<presence from='bob@localhost/b' to='alice@localhost' type='unavailable'/>"
            ),
            "{to_a}"
        );
        assert!(
            to_a.contains("jid='bob@localhost' subscription='from'"),
            "{to_a}"
        );
        h.send(b, "<presence><show>dnd</show></presence>");
        assert!(!h.take(a).contains("dnd"));
    }

    #[test]
    fn pending_request_delivered_again_at_next_login() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(a, "<presence/>");
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
        let b = h.login("bob", "b");
        h.send(b, "<presence/>");
        let to_b = h.take(b);
        assert!(
            to_b.contains("<presence from='alice@localhost' to='bob@localhost' type='subscribe'/>"),
            "{to_b}"
        );
    }

    #[test]
    fn disconnect_sends_unavailable_to_subscribers() {
        let (mut h, a, b) = pair();
        subscribe_both(&mut h, a, b);
        h.server.handle_disconnect(h.now, a);
        h.drain();
        let to_b = h.take(b);
        assert!(
            to_b.contains("from='alice@localhost/a' to='bob@localhost' type='unavailable'"),
            "{to_b}"
        );
    }
}
