//! Offline messages (XEP-0160), stamped with Delayed Delivery (XEP-0203).
//!
//! Owns: which messages for an account without an available resource are kept (§4: normal
//! and chat, not chat-state-only chats, not headline, groupchat or error; not those with the
//! XEP-0334 `<no-store/>` hint), their `<delay/>` stamp, the limits on the queue, and
//! delivery when the user next sends non-negative available presence (§2). The queue itself
//! is the store's (`offline_*`), kept as serialized stanzas in arrival order.
//!
//! Bounds: `limits.max_offline_per_account` messages per account and `max_offline_total`
//! for the server; past either the sender gets `resource-constraint` (type wait) and nothing
//! is stored. (XEP-0160 §2 suggests `service-unavailable` for a full queue; ejabberd answers
//! `resource-constraint`, which tells the sender to try later: kept so.)
//!
//! Delivery takes the whole queue out of the store in the turn the presence arrives; the
//! server commits that removal together with releasing the sends. A connection that dies
//! before the client read them loses them (stream management is what fixes that).

use super::datetime;

use super::carbons::NS_HINTS;
use super::{Ctx, Flow, Inbound, IqTo, Outbound, Registry};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::server::ConnId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind, error_reply};
use crate::xml::{Element, ns};

pub const NS_DELAY: &str = "urn:xmpp:delay";
/// The disco feature of XEP-0160 §5.
pub const FEATURE_MSGOFFLINE: &str = "msgoffline";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

pub fn register(r: &mut Registry) {
    r.undeliverable.push(store_message);
    r.available.push(deliver_on_initial_presence);
    // Sees a presence broadcast before `presence` consumes it: register before presence.
    r.outbound.push(deliver_on_priority_raised);
    r.feature(&[IqTo::Host], FEATURE_MSGOFFLINE);
}

/// XEP-0160 §4 and XEP-0334 §4.2: whether an undeliverable message is kept.
fn storable(e: &Element) -> bool {
    if e.child("no-store", NS_HINTS).is_some() {
        return false;
    }
    match e.attr("type").unwrap_or("normal") {
        "normal" => true,
        // A chat with nothing but a chat state (and its thread) is stale by the time the
        // user comes back.
        "chat" => !e
            .child_elements()
            .all(|c| c.ns == NS_CHATSTATES || c.is("thread", ns::CLIENT)),
        _ => false,
    }
}

/// The undeliverable hook: stores a message for an existing account that has no available
/// resource with non-negative priority. What is not stored gets the router's default
/// refusal (`service-unavailable`, RFC 6121 §8.5.2.2.1).
fn store_message(ctx: &mut Ctx, i: &Inbound) -> Flow {
    if i.kind != StanzaKind::Message || !storable(i.stanza) {
        return Flow::Continue;
    }
    let account = i.to.to_bare().to_string();
    let (count, total) = match (ctx.store.offline_count(&account), ctx.store.offline_total()) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("store: {e}");
            return Flow::Continue;
        }
    };
    let limits = &ctx.config.limits;
    if count >= limits.max_offline_per_account as u64 || total >= limits.max_offline_total as u64 {
        let err = StanzaError::with_text(
            StanzaCondition::ResourceConstraint,
            "the recipient's offline storage is full",
        );
        refuse(ctx, i, &err);
        return Flow::Stop;
    }
    let mut kept = i.stanza.clone();
    kept.push_child(
        Element::new("delay", NS_DELAY)
            .with_attr("from", i.to.domain())
            .with_attr("stamp", &datetime::utc_timestamp(datetime::wall_clock()))
            .with_text("Offline Storage"),
    );
    match ctx.store.offline_push(&account, &kept.to_bytes(ns::CLIENT)) {
        Ok(()) => Flow::Stop,
        Err(e) => {
            log::error!("store: {e}");
            Flow::Continue
        }
    }
}

/// Sends an error for `i.stanza` back to its sender: to its session when it is local,
/// otherwise routed back to its `from`.
fn refuse(ctx: &mut Ctx, i: &Inbound, err: &StanzaError) {
    let Some(reply) = error_reply(i.stanza, err, &i.to.to_string()) else {
        return;
    };
    match i
        .from_session
        .and_then(|sid| ctx.router.session(sid))
        .map(|s| s.conn)
    {
        Some(conn) => ctx.out.send(conn, &reply),
        None => ctx.out.route(reply),
    }
}

/// §2: the session that sends initial presence with non-negative priority gets the queue.
fn deliver_on_initial_presence(ctx: &mut Ctx, sid: SessionId) {
    let Some(s) = ctx.router.session(sid) else {
        return;
    };
    if s.priority < 0 {
        return;
    }
    let (conn, account) = (s.conn, s.jid.to_bare());
    deliver(ctx, conn, &account);
}

/// §2: an available session with negative priority that raises it to non-negative is now
/// one that gets messages, and so the queue.
fn deliver_on_priority_raised(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    if o.kind != StanzaKind::Presence || o.to.is_some() || e.attr("type").is_some() {
        return Flow::Continue;
    }
    let Some(s) = ctx.router.session(o.session) else {
        return Flow::Continue;
    };
    // Initial presence is `deliver_on_initial_presence`'s.
    if !s.is_available() || s.priority >= 0 {
        return Flow::Continue;
    }
    let priority = e
        .child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    if priority >= 0 {
        let (conn, account) = (s.conn, s.jid.to_bare());
        deliver(ctx, conn, &account);
    }
    Flow::Continue
}

/// Takes the account's queue and sends it, oldest first, to `conn`.
fn deliver(ctx: &mut Ctx, conn: ConnId, account: &Jid) {
    match ctx.store.offline_take(&account.to_string()) {
        Ok(queue) => {
            for bytes in queue {
                ctx.out.send_bytes(conn, bytes);
            }
        }
        Err(e) => log::error!("store: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testutil::Harness;
    use std::time::Duration;

    fn chat(h: &mut Harness, from: ConnId, body: &str) {
        h.send(
            from,
            &format!(
                "<message to='alice@localhost' type='chat' id='{body}'><body>{body}</body></message>"
            ),
        );
    }

    #[test]
    fn utc_timestamp_known_dates() {
        use datetime::utc_timestamp;
        use std::time::UNIX_EPOCH;
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // XEP-0203's example.
        assert_eq!(at(1_031_699_305), "2002-09-10T23:08:25Z");
        assert_eq!(at(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn no_available_resource_chat_stored_and_delivered_in_order_with_delay() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        chat(&mut h, b, "one");
        chat(&mut h, b, "two");
        // Stored: the sender hears nothing.
        assert_eq!(h.take(b), "");
        let a = h.login("alice", "a");
        assert_eq!(h.take(a), "");
        h.send(a, "<presence/>");
        let out = h.take(a);
        let one = out.find("<body>one</body>").expect(&out);
        let two = out.find("<body>two</body>").expect(&out);
        assert!(one < two, "{out}");
        assert!(
            out.contains(
                "<message to='alice@localhost' type='chat' id='one' from='bob@localhost/b'>\
                 <body>one</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='"
            ) && out.contains("'/><delay xmlns='urn:xmpp:delay' from='localhost' stamp='"),
            "{out}"
        );
        assert_eq!(
            out.matches("Z'>Offline Storage</delay></message>").count(),
            2
        );
    }

    #[test]
    fn delivered_queue_delivered_only_once() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        chat(&mut h, b, "once");
        let a = h.login("alice", "a");
        h.send(a, "<presence/>");
        assert!(h.take(a).contains("<body>once</body>"));
        let a2 = h.login("alice", "a2");
        h.send(a2, "<presence/>");
        assert!(!h.take(a2).contains("<body>once</body>"));
        // Presence updates do not deliver again either.
        h.send(a, "<presence><show>away</show></presence>");
        assert!(!h.take(a).contains("<body>once</body>"));
    }

    #[test]
    fn bound_but_unavailable_session_still_stores() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        chat(&mut h, b, "waiting");
        assert_eq!(h.take(a), "");
        assert_eq!(h.take(b), "");
        h.send(a, "<presence/>");
        assert!(h.take(a).contains("<body>waiting</body>"));
    }

    #[test]
    fn headline_groupchat_error_chatstate_nostore_not_stored() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        h.send(
            b,
            "<message to='alice@localhost' type='headline'><body>h</body></message>",
        );
        assert_eq!(h.take(b), "");
        h.send(
            b,
            "<message to='alice@localhost' type='groupchat' id='g'><body>g</body></message>",
        );
        assert!(h.take(b).contains("<service-unavailable"));
        h.send(
            b,
            "<message to='alice@localhost' type='error'><body>e</body></message>",
        );
        assert_eq!(h.take(b), "");
        h.send(
            b,
            "<message to='alice@localhost' type='chat' id='s'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(h.take(b).contains("<service-unavailable"));
        h.send(
            b,
            "<message to='alice@localhost' type='chat' id='n'><body>n</body>\
             <no-store xmlns='urn:xmpp:hints'/></message>",
        );
        assert!(h.take(b).contains("<service-unavailable"));
        let a = h.login("alice", "a");
        h.send(a, "<presence/>");
        assert!(!h.take(a).contains("<message"));
    }

    #[test]
    fn negative_priority_not_delivered_until_raised() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        chat(&mut h, b, "later");
        let a = h.login("alice", "a");
        h.send(a, "<presence><priority>-1</priority></presence>");
        assert!(!h.take(a).contains("<body>later</body>"));
        // Still no resource for bare messages: this one is stored too.
        chat(&mut h, b, "also");
        assert_eq!(h.take(b), "");
        h.send(a, "<presence><priority>0</priority></presence>");
        let out = h.take(a);
        let later = out.find("<body>later</body>").expect(&out);
        let also = out.find("<body>also</body>").expect(&out);
        assert!(later < also, "{out}");
    }

    fn with_limits(per_account: usize, total: usize) -> Harness {
        let mut config = Config::default();
        config.limits.max_offline_per_account = per_account;
        config.limits.max_offline_total = total;
        Harness::with_config(config)
    }

    #[test]
    fn full_account_queue_resource_constraint() {
        let mut h = with_limits(2, 100);
        let b = h.login("bob", "b");
        chat(&mut h, b, "1");
        chat(&mut h, b, "2");
        assert_eq!(h.take(b), "");
        chat(&mut h, b, "3");
        let out = h.take(b);
        assert!(
            out.contains("type='error' id='3'")
                && out.contains("<error type='wait'><resource-constraint"),
            "{out}"
        );
        let a = h.login("alice", "a");
        h.send(a, "<presence/>");
        let out = h.take(a);
        assert!(
            out.contains("<body>2</body>") && !out.contains("<body>3</body>"),
            "{out}"
        );
    }

    #[test]
    fn full_server_queue_resource_constraint() {
        let mut h = with_limits(10, 2);
        let b = h.login("bob", "b");
        chat(&mut h, b, "1");
        h.send(
            b,
            "<message to='carol@localhost' id='c'><body>c</body></message>",
        );
        assert_eq!(h.take(b), "");
        chat(&mut h, b, "2");
        assert!(h.take(b).contains("<resource-constraint"));
    }

    #[test]
    fn disco_lists_msgoffline() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='d' to='localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert!(h.take(a).contains("<feature var='msgoffline'/>"));
    }
}
