//! Message Carbons (XEP-0280), with the `no-copy` hint of Message Processing Hints (XEP-0334).
//!
//! Owns: the enable/disable IQs (a per-session flag, `Session::carbons`), which messages are
//! eligible for copies (XEP-0280 §6.1), and the copies themselves: `sent` copies of what one
//! resource sends go to the account's other carbons-enabled resources (§8), `received` copies
//! of what one resource got go to the ones that did not get it (§7). Leaves delivery of the
//! original to the router; a message the blocking feature refuses never gets this far.
//!
//! `urn:xmpp:carbons:rules:0` is not advertised: the IM-payload and MUC rules are applied
//! only as far as a server that does not track MUC presence can (see `eligible`).

use super::{Ctx, Delivered, Flow, IqRequest, IqResult, IqTo, IqType, Outbound, Registry};
use crate::jid::Jid;
use crate::router::Session;
use crate::server::ConnId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::xml::{Element, ns};

pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// Stanza Forwarding (XEP-0297), the wrapper of a copy.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// Message Processing Hints (XEP-0334).
pub const NS_HINTS: &str = "urn:xmpp:hints";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Direct MUC invitations (XEP-0249).
const NS_CONFERENCE: &str = "jabber:x:conference";
/// Payloads "typically used in IM" (§6.1): receipts (XEP-0184), chat states (XEP-0085) and
/// chat markers (XEP-0333).
const IM_PAYLOADS: [&str; 3] = [
    "urn:xmpp:receipts",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:chat-markers:0",
];

pub fn register(r: &mut Registry) {
    // §4, §5: the IQ has no `to`, so it is addressed to the user's own account.
    r.iq(IqTo::Account, IqType::Set, NS_CARBONS, toggle);
    // §3: the server advertises it; Prosody lists it for accounts too, and so do we.
    r.feature(&[IqTo::Host, IqTo::Account], NS_CARBONS);
    r.outbound.push(outbound);
    r.delivered.push(delivered);
}

/// §4 and §5: `<enable/>` or `<disable/>`; repeating either is not an error (§11.1).
fn toggle(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    // §4.1, §5.1: only the account's own (local) sessions switch their carbons.
    if !req.from_owner() {
        return Err(StanzaError::new(StanzaCondition::NotAllowed));
    }
    let enable = match req.payload.name.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return Err(StanzaError::new(StanzaCondition::BadRequest)),
    };
    let Some(s) = req.session.and_then(|sid| ctx.router.session_mut(sid)) else {
        return Err(StanzaError::new(StanzaCondition::NotAllowed));
    };
    s.carbons = enable;
    Ok(None)
}

/// §6.1: whether a message is copied. `received` is true for a message reaching the account,
/// false for one a session of the account sends.
fn eligible(e: &Element, received: bool) -> bool {
    // §9 and XEP-0334 §4.3: the sender asked for no copies.
    if e.child("private", NS_CARBONS).is_some() || e.child("no-copy", NS_HINTS).is_some() {
        return false;
    }
    // A copy is never copied again; and a carbon from anyone is not an IM message.
    if e.child("sent", NS_CARBONS).is_some() || e.child("received", NS_CARBONS).is_some() {
        return false;
    }
    let kind = e.attr("type").unwrap_or("normal");
    if kind == "groupchat" {
        return false;
    }
    let muc_x = e.child("x", NS_MUC_USER);
    // Mediated (XEP-0045) and direct (XEP-0249) invitations are copied.
    if muc_x.is_some_and(|x| x.child("invite", NS_MUC_USER).is_some())
        || e.child("x", NS_CONFERENCE).is_some()
    {
        return true;
    }
    // A private message from a room occupant reaches every joined client from the room
    // already; it is recognised by the room's `<x/>` and its full-JID addressing.
    if received && muc_x.is_some() && e.attr("to").is_some_and(|t| t.contains('/')) {
        return false;
    }
    match kind {
        "chat" => true,
        "normal" if e.child("body", ns::CLIENT).is_some() => true,
        // The bounce of a message the user sent to a bare JID (the usual chat addressing)
        // comes from that bare JID; errors from a full JID answer something else.
        "error" => received && e.attr("from").is_some_and(|f| !f.contains('/')),
        _ => e
            .child_elements()
            .any(|c| IM_PAYLOADS.contains(&c.ns.as_ref())),
    }
}

/// §8: a message a session sends is copied to the account's other carbons-enabled
/// resources, whether or not the sender has carbons enabled.
fn outbound(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    if o.kind != StanzaKind::Message {
        return Flow::Continue;
    }
    // A message to the user's own account reaches its resources; `delivered` copies it once
    // as `received` to those it did not reach.
    if o.to.is_none_or(|t| t.bare_eq(o.from)) || !eligible(e, false) {
        return Flow::Continue;
    }
    let account = o.from.to_bare();
    let sender = o.session;
    copy(ctx, &account, "sent", e, |s| s.id != sender);
    Flow::Continue
}

/// §7: a message delivered to some of the account's resources is copied to its other
/// carbons-enabled ones (never to those the router delivered it to, §7).
fn delivered(ctx: &mut Ctx, d: &Delivered) {
    if d.kind != StanzaKind::Message || !eligible(d.stanza, true) {
        return;
    }
    let account = d.to.to_bare();
    // The sending resource of a message to its own account already has it.
    copy(ctx, &account, "received", d.stanza, |s| {
        !d.conns.contains(&s.conn) && s.jid != *d.from
    });
}

/// Sends `<message from=bare to=full><{wrapper}><forwarded>original</forwarded></..></message>`
/// to each carbons-enabled session of `account` that `include` accepts.
fn copy(
    ctx: &mut Ctx,
    account: &Jid,
    wrapper: &str,
    original: &Element,
    include: impl Fn(&Session) -> bool,
) {
    let targets: Vec<(ConnId, String)> = ctx
        .router
        .sessions_of(account)
        .filter(|s| s.carbons && include(s))
        .map(|s| (s.conn, s.jid.to_string()))
        .collect();
    if targets.is_empty() {
        return;
    }
    let bare = account.to_string();
    let inner = Element::new(wrapper, NS_CARBONS)
        .with_child(Element::new("forwarded", NS_FORWARD).with_child(original.clone()));
    for (conn, full) in targets {
        let mut m = Element::new("message", ns::CLIENT)
            .with_attr("from", &bare)
            .with_attr("to", &full);
        // §7, §8: the copy keeps the original's type.
        if let Some(t) = original.attr("type") {
            m.set_attr("type", t);
        }
        m.push_child(inner.clone());
        ctx.out.send(conn, &m);
    }
}

#[cfg(test)]
mod tests {
    use crate::server::ConnId;
    use crate::testutil::Harness;

    const ENABLE: &str = "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>";
    const DISABLE: &str = "<iq type='set' id='c2'><disable xmlns='urn:xmpp:carbons:2'/></iq>";

    /// alice/a, alice/b with carbons enabled, alice/c without; bob/b.
    fn setup() -> (Harness, ConnId, ConnId, ConnId, ConnId) {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("alice", "b");
        let c = h.login("alice", "c");
        let bob = h.login("bob", "b");
        h.send(b, ENABLE);
        let out = h.take(b);
        assert!(
            out.contains("type='result' id='c1'") && out.contains("from='alice@localhost'"),
            "{out}"
        );
        (h, a, b, c, bob)
    }

    #[test]
    fn enabled_sent_chat_copied_to_other_enabled_resource_only() {
        let (mut h, a, b, c, bob) = setup();
        h.send(a, ENABLE);
        h.take(a);
        h.send(
            a,
            "<message to='bob@localhost/b' type='chat' id='m1'><body>hi</body></message>",
        );
        assert!(h.take(bob).contains("<body>hi</body>"));
        assert_eq!(
            h.take(b),
            "<message from='alice@localhost' to='alice@localhost/b' type='chat'>\
             <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' to='bob@localhost/b' type='chat' id='m1' \
             from='alice@localhost/a'><body>hi</body></message></forwarded></sent></message>"
        );
        // Not to the sender, even with carbons enabled; not to a resource without them.
        assert_eq!(h.take(a), "");
        assert_eq!(h.take(c), "");
    }

    #[test]
    fn enabled_received_chat_copied_to_resources_not_addressed() {
        let (mut h, a, b, c, bob) = setup();
        h.send(
            bob,
            "<message to='alice@localhost/a' type='chat' id='m2'><body>yo</body></message>",
        );
        let orig = h.take(a);
        assert!(
            orig.contains("<body>yo</body>") && !orig.contains("carbons"),
            "{orig}"
        );
        let copy = h.take(b);
        assert!(
            copy.starts_with(
                "<message from='alice@localhost' to='alice@localhost/b' type='chat'>\
                 <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
                 <message xmlns='jabber:client'"
            ) && copy.contains("from='bob@localhost/b'"),
            "{copy}"
        );
        assert_eq!(h.take(c), "");
        // The addressed resource gets no copy even when it has carbons enabled.
        h.send(
            bob,
            "<message to='alice@localhost/b' type='chat'><body>2</body></message>",
        );
        let direct = h.take(b);
        assert!(!direct.contains("<received"), "{direct}");
    }

    #[test]
    fn enabled_bare_message_copied_to_lower_priority_resource() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("alice", "b");
        let bob = h.login("bob", "b");
        h.send(a, "<presence><priority>5</priority></presence>");
        h.send(b, "<presence><priority>1</priority></presence>");
        h.send(b, ENABLE);
        h.take(a);
        h.take(b);
        h.send(
            bob,
            "<message to='alice@localhost' type='chat'><body>bare</body></message>",
        );
        assert!(!h.take(a).contains("<received"));
        assert!(h.take(b).contains("<received xmlns='urn:xmpp:carbons:2'>"));
    }

    #[test]
    fn enabled_private_or_no_copy_not_copied() {
        let (mut h, a, b, _c, bob) = setup();
        for hint in [
            "<private xmlns='urn:xmpp:carbons:2'/>",
            "<no-copy xmlns='urn:xmpp:hints'/>",
        ] {
            h.send(
                a,
                &format!(
                    "<message to='bob@localhost/b' type='chat'><body>x</body>{hint}</message>"
                ),
            );
            assert!(h.take(bob).contains("<body>x</body>"));
            h.send(
                bob,
                &format!(
                    "<message to='alice@localhost/a' type='chat'><body>y</body>{hint}</message>"
                ),
            );
            assert!(h.take(a).contains("<body>y</body>"));
            assert_eq!(h.take(b), "", "{hint}");
        }
    }

    #[test]
    fn enabled_ineligible_types_not_copied_normal_with_body_copied() {
        let (mut h, a, b, _c, bob) = setup();
        for m in [
            "<message to='bob@localhost/b' type='headline'><body>h</body></message>",
            "<message to='bob@localhost/b' type='groupchat'><body>g</body></message>",
            "<message to='bob@localhost/b'><subject>no body</subject></message>",
            "<message to='bob@localhost/b' type='error'><body>e</body></message>",
        ] {
            h.send(a, m);
            assert_eq!(h.take(b), "", "{m}");
        }
        h.send(
            a,
            "<message to='bob@localhost/b'><body>normal</body></message>",
        );
        let out = h.take(b);
        assert!(
            out.contains("<sent") && out.contains("<body>normal</body>"),
            "{out}"
        );
        // A chat state without a body is an IM payload and is copied.
        h.send(
            a,
            "<message to='bob@localhost/b' type='normal'>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(h.take(b).contains("<sent"));
        h.take(bob);
    }

    #[test]
    fn enabled_carbon_lookalike_never_copied() {
        let (mut h, _a, b, _c, bob) = setup();
        h.send(
            bob,
            "<message to='alice@localhost/a' type='chat'><received xmlns='urn:xmpp:carbons:2'>\
             <forwarded xmlns='urn:xmpp:forward:0'/></received></message>",
        );
        assert_eq!(h.take(b), "");
    }

    #[test]
    fn disabled_or_never_enabled_gets_no_copies() {
        let (mut h, a, b, c, bob) = setup();
        h.send(b, DISABLE);
        assert!(h.take(b).contains("type='result' id='c2'"));
        // A second disable is not an error (§11.1).
        h.send(b, DISABLE);
        assert!(h.take(b).contains("type='result' id='c2'"));
        h.send(
            a,
            "<message to='bob@localhost/b' type='chat'><body>1</body></message>",
        );
        h.send(
            bob,
            "<message to='alice@localhost/a' type='chat'><body>2</body></message>",
        );
        assert_eq!(h.take(b), "");
        assert_eq!(h.take(c), "");
    }

    #[test]
    fn toggle_for_other_account_not_allowed_and_disco_lists_feature() {
        let (mut h, a, _b, _c, bob) = setup();
        h.send(
            bob,
            "<iq type='set' id='x' to='alice@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        );
        assert!(h.take(bob).contains("<not-allowed"));
        h.send(
            a,
            "<iq type='set' id='y'><bogus xmlns='urn:xmpp:carbons:2'/></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
        h.send(
            a,
            "<iq type='get' id='d' to='localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert!(h.take(a).contains("<feature var='urn:xmpp:carbons:2'/>"));
    }
}
