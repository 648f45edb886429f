//! Push notifications (XEP-0357): the account's side, which tells an app server (and through
//! it the phone's vendor) that a sleeping device has messages waiting.
//!
//! Owns: each account's registrations (`<enable jid node>` with its publish-options form),
//! stored together under kv key "push" as one small XML element, with the counters of the
//! notifications they were sent; the notifications themselves; what the app server answers.
//!
//! When a notification goes out: a chat or normal message with a body or an end-to-end
//! encrypted payload (the messages MAM archives and CSI never holds back), then
//! - delivered to sessions that are detached (stream-management hibernation) or CSI-inactive
//!   (`Delivered::idle`): the registrations enabled from those sessions' resources;
//! - reaching no session (offline storage, the undeliverable hook, which runs before
//!   offline's): every registration of the account, as Prosody's mod_cloud_notify does.
//!
//! A message delivered to an active session sends nothing, even if another device has a
//! registration and no session: that device finds the message in MAM when it comes back.
//!
//! The notification is an IQ set from the account's bare JID to the registered JID, routed
//! like any server stanza (locally or over federation): `<pubsub><publish node><item>
//! <notification><x type='submit'>` with the `urn:xmpp:push:summary` form (`message-count`,
//! `last-message-sender`, and `last-message-body` only for a registration that asked for it
//! with the publish-option `include-body` = true/1 and only for an unencrypted body), then
//! the registration's `<publish-options>` as the client gave them (less `include-body`).
//!
//! Count and rate: each registration counts the messages since its client was last seen
//! awake (the counter resets when a session of the enabling resource resumes, sends
//! `<active/>`, becomes available again, or re-enables). While the count only grows, at most
//! one notification per `MIN_INTERVAL` goes out per registration; messages in between raise
//! the count silently and the next message after the interval carries the total. The first
//! message after a reset always goes out at once (it is what wakes the device, which then
//! fetches everything).
//!
//! Answers: the notification's id names the registration (`push-{hash of node}-{count}`).
//! An error from the registered JID whose type is not `wait` (item-not-found,
//! not-authorized, forbidden, remote-server-not-found, ...: the app server no longer knows the
//! device, XEP-0357 §8) disables that registration; `wait` errors and results change nothing.
//!
//! The app server may not be the account's own bare JID (its PEP service would take the
//! notifications as items): `not-acceptable`.
//!
//! Bounds: `MAX_REGISTRATIONS` per account (enabling one more drops the least recently
//! enabled: a reinstalled app leaves stale ones behind that nobody disables);
//! `MAX_OPTIONS_BYTES` for a publish-options form (larger: `not-acceptable`); node and JID
//! lengths by `MAX_NODE_BYTES`; a body in a notification is cut to `MAX_BODY_CHARS`.
//!
//! Known overlap: a message sent to a hibernating session, then moved to offline storage when
//! the resumption window closes, passes the undeliverable hook again and counts twice.

use std::time::Duration;

use super::roster::internal;
use super::{Ctx, Delivered, Flow, Inbound, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::store::Store;
use crate::xml::fragment::parse_element;
use crate::xml::{Element, Node, ns};

pub const NS_PUSH: &str = "urn:xmpp:push:0";
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_DATA: &str = "jabber:x:data";
pub const FORM_SUMMARY: &str = "urn:xmpp:push:summary";
/// The publish-option (a field of the `<enable/>` form) that asks for message bodies in
/// notifications; it is not passed on to the app server.
pub const INCLUDE_BODY: &str = "include-body";

/// Most registrations one account keeps.
pub const MAX_REGISTRATIONS: usize = 8;
/// Largest publish-options form accepted, serialized.
pub const MAX_OPTIONS_BYTES: usize = 2048;
/// Longest node (and app server JID) accepted.
pub const MAX_NODE_BYTES: usize = 1024;
/// Longest body sent in a notification, in characters.
pub const MAX_BODY_CHARS: usize = 256;
/// Least time between two notifications to one registration while its count only grows.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

const KEY: &str = "push";
const ID_PREFIX: &str = "push-";

/// End-to-end payloads that stand for a body (as in MAM and CSI).
const ENCRYPTED: [(&str, &str); 4] = [
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
];

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Set, NS_PUSH, enable_or_disable);
    r.feature(&[IqTo::Account], NS_PUSH);
    r.delivered.push(on_delivered);
    r.undeliverable.push(on_offline);
    r.inbound.push(on_answer);
    r.awake.push(on_awake);
    r.available.push(on_awake);
}

/// One `<enable/>` kept for an account.
#[derive(Clone, Debug, PartialEq)]
struct Registration {
    /// The app server's JID (normalized).
    jid: Jid,
    node: String,
    /// The resource of the session that enabled it: its device.
    resource: String,
    /// The publish-options form, as passed on.
    options: Option<Element>,
    body: bool,
    /// Messages since the client was last seen awake.
    count: u32,
    /// When the last notification went out, in milliseconds since the server started;
    /// `None` since the count was reset.
    last_ms: Option<u64>,
}

impl Registration {
    fn to_element(&self) -> Element {
        let mut e = Element::new("reg", NS_PUSH)
            .with_attr("jid", &self.jid.to_string())
            .with_attr("node", &self.node)
            .with_attr("resource", &self.resource)
            .with_attr("count", &self.count.to_string());
        if self.body {
            e.set_attr("body", "1");
        }
        if let Some(t) = self.last_ms {
            e.set_attr("last", &t.to_string());
        }
        if let Some(x) = &self.options {
            e.push_child(x.clone());
        }
        e
    }

    fn from_element(e: &Element) -> Option<Registration> {
        Some(Registration {
            jid: Jid::parse(e.attr("jid")?).ok()?,
            node: e.attr("node")?.to_owned(),
            resource: e.attr("resource").unwrap_or("").to_owned(),
            options: e.child("x", NS_DATA).cloned(),
            body: e.attr("body") == Some("1"),
            count: e.attr("count").and_then(|c| c.parse().ok()).unwrap_or(0),
            last_ms: e.attr("last").and_then(|t| t.parse().ok()),
        })
    }
}

fn load(store: &dyn Store, account: &str) -> Result<Vec<Registration>, StanzaError> {
    let Some(bytes) = store.kv_get(account, KEY).map_err(internal)? else {
        return Ok(Vec::new());
    };
    let Some(e) = parse_element(&bytes) else {
        log::error!("stored push registrations of {account} do not parse; ignored");
        return Ok(Vec::new());
    };
    Ok(e.child_elements()
        .filter_map(Registration::from_element)
        .take(MAX_REGISTRATIONS)
        .collect())
}

fn save(store: &mut dyn Store, account: &str, regs: &[Registration]) -> Result<(), StanzaError> {
    if regs.is_empty() {
        return store.kv_delete(account, KEY).map_err(internal);
    }
    let mut e = Element::new("push", NS_PUSH);
    for r in regs {
        e.push_child(r.to_element());
    }
    store
        .kv_put(account, KEY, &e.to_bytes(""))
        .map_err(internal)
}

fn bad(text: &str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, text)
}

// ------------------------------------------------------------------------ enable / disable

/// XEP-0357 §5 and §6, addressed to the user's own account (no `to`).
fn enable_or_disable(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    }
    let jid = match req.payload.attr("jid").map(Jid::parse) {
        Some(Ok(j)) if j.to_string().len() <= MAX_NODE_BYTES => j,
        Some(_) => return Err(StanzaError::new(StanzaCondition::JidMalformed)),
        None => return Err(bad("the app server's jid is missing")),
    };
    let node = req.payload.attr("node").filter(|n| !n.is_empty());
    let account = req.to.to_string();
    let mut regs = load(&*ctx.store, &account)?;
    match req.payload.name.as_str() {
        "enable" => {
            let node = node.ok_or_else(|| bad("the node is missing"))?;
            if node.len() > MAX_NODE_BYTES {
                return Err(StanzaError::with_text(
                    StanzaCondition::NotAcceptable,
                    "the node is too long",
                ));
            }
            if jid == *req.to {
                // The account's own bare JID would answer with its PEP service: the
                // notifications would become items of the user's own nodes.
                return Err(StanzaError::with_text(
                    StanzaCondition::NotAcceptable,
                    "the app server cannot be the account itself",
                ));
            }
            let (options, body) = publish_options(req.payload)?;
            regs.retain(|r| !(r.jid == jid && r.node == node));
            if regs.len() >= MAX_REGISTRATIONS {
                // The least recently enabled goes (see the module docs).
                regs.remove(0);
            }
            regs.push(Registration {
                jid,
                node: node.to_owned(),
                resource: req.from.resource().unwrap_or("").to_owned(),
                options,
                body,
                count: 0,
                last_ms: None,
            });
        }
        "disable" => regs.retain(|r| !(r.jid == jid && node.is_none_or(|n| r.node == n))),
        _ => return Err(StanzaError::new(StanzaCondition::BadRequest)),
    }
    save(ctx.store, &account, &regs)?;
    Ok(None)
}

/// The `<enable/>`'s form as passed on (without `include-body`), and whether bodies go out.
fn publish_options(enable: &Element) -> Result<(Option<Element>, bool), StanzaError> {
    let Some(x) = enable.child("x", NS_DATA) else {
        return Ok((None, false));
    };
    if x.to_bytes(NS_PUSH).len() > MAX_OPTIONS_BYTES {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the publish-options form is too large",
        ));
    }
    let is_body = |n: &Node| match n {
        Node::Element(f) => f.name == "field" && f.attr("var") == Some(INCLUDE_BODY),
        Node::Text(_) => false,
    };
    let body = x.children.iter().any(|n| {
        is_body(n)
            && matches!(n, Node::Element(f) if f.child("value", NS_DATA)
                .is_some_and(|v| matches!(v.text().trim(), "1" | "true")))
    });
    let mut forwarded = x.clone();
    forwarded.children.retain(|n| !is_body(n));
    Ok((Some(forwarded), body))
}

// ---------------------------------------------------------------------------- notifications

/// Whether a message is worth waking a device for.
fn pushable(e: &Element) -> bool {
    matches!(e.attr("type").unwrap_or("normal"), "chat" | "normal")
        && (e.child("body", ns::CLIENT).is_some()
            || ENCRYPTED.iter().any(|(name, n)| e.child(name, n).is_some()))
}

fn encrypted(e: &Element) -> bool {
    ENCRYPTED.iter().any(|(name, n)| e.child(name, n).is_some())
}

/// The delivered hook: registrations of the idle sessions that got the message.
fn on_delivered(ctx: &mut Ctx, d: &Delivered) {
    if d.idle.is_empty() || d.kind != StanzaKind::Message || !pushable(d.stanza) {
        return;
    }
    let account = d.to.to_bare();
    let resources: Vec<String> = ctx
        .router
        .sessions_of(&account)
        .filter(|s| d.idle.contains(&s.conn))
        .map(|s| s.jid.resource().unwrap_or("").to_owned())
        .collect();
    if resources.is_empty() {
        return;
    }
    notify(ctx, &account, d.from, d.stanza, |r| {
        resources.contains(&r.resource)
    });
}

/// The undeliverable hook (before offline storage): every registration of the account.
fn on_offline(ctx: &mut Ctx, i: &Inbound) -> Flow {
    if i.kind == StanzaKind::Message && pushable(i.stanza) {
        notify(ctx, &i.to.to_bare(), i.from, i.stanza, |_| true);
    }
    Flow::Continue
}

/// Counts `message` for the chosen registrations of `account` and sends the notifications
/// the rate limit lets through.
fn notify(
    ctx: &mut Ctx,
    account: &Jid,
    from: &Jid,
    message: &Element,
    chosen: impl Fn(&Registration) -> bool,
) {
    let key = account.to_string();
    let mut regs = match load(&*ctx.store, &key) {
        Ok(r) => r,
        Err(_) => return,
    };
    if !regs.iter().any(&chosen) {
        return;
    }
    let now_ms = u64::try_from(ctx.now.saturating_duration_since(ctx.started).as_millis())
        .unwrap_or(u64::MAX);
    let interval = u64::try_from(MIN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    let body = (!encrypted(message))
        .then(|| message.child("body", ns::CLIENT).map(Element::text))
        .flatten();
    for r in regs.iter_mut().filter(|r| chosen(r)) {
        r.count = r.count.saturating_add(1);
        // A time after now was written before a restart: long ago.
        let recent = r
            .last_ms
            .is_some_and(|t| t <= now_ms && now_ms - t < interval);
        if recent {
            continue;
        }
        r.last_ms = Some(now_ms);
        let body = if r.body { body.as_deref() } else { None };
        ctx.out.route(notification(account, from, r, body));
    }
    if let Err(err) = save(ctx.store, &key, &regs) {
        log::error!("push: counters of {key} not saved: {err:?}");
    }
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", NS_DATA)
        .with_attr("var", var)
        .with_child(Element::new("value", NS_DATA).with_text(value))
}

/// FNV-1a of the node: names the registration in the notification's id.
fn node_hash(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The publish IQ of XEP-0357 §7.
fn notification(account: &Jid, from: &Jid, r: &Registration, body: Option<&str>) -> Element {
    let mut form = Element::new("x", NS_DATA)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", FORM_SUMMARY))
        .with_child(field("message-count", &r.count.to_string()))
        .with_child(field("last-message-sender", &from.to_string()));
    if let Some(b) = body {
        let cut: String = b.chars().take(MAX_BODY_CHARS).collect();
        form.push_child(field("last-message-body", &cut));
    }
    let publish = Element::new("publish", NS_PUBSUB)
        .with_attr("node", &r.node)
        .with_child(
            Element::new("item", NS_PUBSUB)
                .with_child(Element::new("notification", NS_PUSH).with_child(form)),
        );
    let mut pubsub = Element::new("pubsub", NS_PUBSUB).with_child(publish);
    if let Some(x) = &r.options {
        pubsub.push_child(Element::new("publish-options", NS_PUBSUB).with_child(x.clone()));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("from", &account.to_string())
        .with_attr("to", &r.jid.to_string())
        .with_attr(
            "id",
            &format!("{ID_PREFIX}{:016x}-{}", node_hash(&r.node), r.count),
        )
        .with_child(pubsub)
}

// ------------------------------------------------------------------------ answers and resets

/// The inbound hook: the app server's answer to a notification (to the account's bare JID).
fn on_answer(ctx: &mut Ctx, i: &Inbound) -> Flow {
    if i.kind != StanzaKind::Iq || !i.to.is_bare() {
        return Flow::Continue;
    }
    let ty = i.stanza.attr("type");
    let Some(hash) = i
        .stanza
        .attr("id")
        .and_then(|id| id.strip_prefix(ID_PREFIX))
        .and_then(|rest| rest.split('-').next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
    else {
        return Flow::Continue;
    };
    match ty {
        Some("result") => Flow::Stop,
        Some("error") => {
            let wait = i
                .stanza
                .child("error", ns::CLIENT)
                .is_some_and(|e| e.attr("type") == Some("wait"));
            if !wait {
                disable_answered(ctx, i.to, i.from, hash);
            }
            Flow::Stop
        }
        _ => Flow::Continue,
    }
}

fn disable_answered(ctx: &mut Ctx, account: &Jid, app: &Jid, hash: u64) {
    let key = account.to_string();
    let Ok(mut regs) = load(&*ctx.store, &key) else {
        return;
    };
    let before = regs.len();
    regs.retain(|r| !(r.jid == *app && node_hash(&r.node) == hash));
    if regs.len() != before {
        log::info!("push: {app} refused a notification for {key}; registration disabled");
        if let Err(err) = save(ctx.store, &key, &regs) {
            log::error!("push: registrations of {key} not saved: {err:?}");
        }
    }
}

/// The awake and available hooks: the device of this session is back; its counts restart.
fn on_awake(ctx: &mut Ctx, sid: SessionId) {
    let Some(jid) = ctx.router.session(sid).map(|s| s.jid.clone()) else {
        return;
    };
    let resource = jid.resource().unwrap_or("");
    let key = jid.to_bare().to_string();
    let Ok(mut regs) = load(&*ctx.store, &key) else {
        return;
    };
    let mut changed = false;
    for r in regs.iter_mut().filter(|r| r.resource == resource) {
        if r.count != 0 || r.last_ms.is_some() {
            r.count = 0;
            r.last_ms = None;
            changed = true;
        }
    }
    if changed && let Err(err) = save(ctx.store, &key, &regs) {
        log::error!("push: counters of {key} not saved: {err:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::{ConnId, TlsInfo};
    use crate::testutil::{HEADER, Harness, b64};

    const APP: &str = "bob@localhost/push";

    fn harness() -> Harness {
        let mut config = Config::default();
        // No server pings in the output when the clock moves.
        config.c2s.idle_timeout = Duration::ZERO;
        Harness::with_config(config)
    }

    /// alice/phone (available), bob/push (the app server), carol/c (the sender).
    fn setup() -> (Harness, ConnId, ConnId, ConnId) {
        let mut h = harness();
        let a = h.login("alice", "phone");
        let b = h.login("bob", "push");
        let c = h.login("carol", "c");
        h.send(a, "<presence/>");
        h.take(a);
        (h, a, b, c)
    }

    fn enable(h: &mut Harness, a: ConnId, node: &str, form: &str) {
        h.send(
            a,
            &format!("<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='{node}'>{form}</enable></iq>"),
        );
        let out = h.take(a);
        assert!(
            out.contains("type='result'") && out.contains("id='en'"),
            "{out}"
        );
    }

    fn options(fields: &str) -> String {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>{fields}</x>"
        )
    }

    fn message(h: &mut Harness, c: ConnId, body: &str) {
        h.send(
            c,
            &format!("<message to='alice@localhost' type='chat'><body>{body}</body></message>"),
        );
    }

    fn notifications(out: &str) -> usize {
        out.matches("<notification xmlns='urn:xmpp:push:0'>")
            .count()
    }

    fn count_field(n: u32) -> String {
        format!("<field var='message-count'><value>{n}</value></field>")
    }

    fn inactive(h: &mut Harness, a: ConnId) {
        h.send(a, "<inactive xmlns='urn:xmpp:csi:0'/>");
    }

    /// Resumable stream management on `a`; returns the resumption id.
    fn sm_enable(h: &mut Harness, a: ConnId) -> String {
        h.send(a, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
        let out = h.take(a);
        let id = out.split("id='").nth(1).unwrap();
        id[..id.find('\'').unwrap()].to_owned()
    }

    fn sm_resume(h: &mut Harness, previd: &str) -> (ConnId, String) {
        let c = h.connect();
        h.send(c, HEADER);
        h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        h.server.handle_tls_ready(h.now, c, TlsInfo::default());
        h.drain();
        h.send(c, HEADER);
        let auth = b64(b"\0alice\0pw");
        h.send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
        );
        h.send(c, HEADER);
        h.take(c);
        h.send(
            c,
            &format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"),
        );
        let out = h.take(c);
        (c, out)
    }

    #[test]
    fn enabled_account_disco_lists_push() {
        let (mut h, a, _, _) = setup();
        h.send(
            a,
            "<iq type='get' to='alice@localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert!(h.take(a).contains("<feature var='urn:xmpp:push:0'/>"));
    }

    #[test]
    fn inactive_message_notifies_summary_without_body_with_options() {
        let (mut h, a, b, c) = setup();
        enable(
            &mut h,
            a,
            "n1",
            &options("<field var='secret'><value>s3cr3t</value></field>"),
        );
        inactive(&mut h, a);
        message(&mut h, c, "secret words");
        // The message itself is delivered at once (CSI holds back no body).
        assert!(h.take(a).contains("secret words"));
        let out = h.take(b);
        assert_eq!(notifications(&out), 1, "{out}");
        assert!(
            out.contains("type='set'")
                && out.contains("from='alice@localhost'")
                && out.contains("to='bob@localhost/push'")
                && out.contains(
                    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n1'><item>"
                )
                && out.contains("<value>urn:xmpp:push:summary</value>")
                && out.contains(&count_field(1))
                && out.contains(
                    "<field var='last-message-sender'><value>carol@localhost/c</value></field>"
                )
                && out.contains("<publish-options><x xmlns='jabber:x:data' type='submit'>")
                && out.contains("<value>s3cr3t</value>"),
            "{out}"
        );
        assert!(
            !out.contains("last-message-body") && !out.contains("secret words"),
            "{out}"
        );
    }

    #[test]
    fn active_session_message_no_notification() {
        let (mut h, a, b, c) = setup();
        enable(&mut h, a, "n1", "");
        message(&mut h, c, "hi");
        assert!(h.take(a).contains("hi"));
        assert_eq!(h.take(b), "");
        // Nor for what has no body.
        inactive(&mut h, a);
        h.send(
            c,
            "<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(notifications(&h.take(b)), 0);
    }

    #[test]
    fn include_body_option_sends_body_not_the_option() {
        let (mut h, a, b, c) = setup();
        enable(
            &mut h,
            a,
            "n1",
            &options("<field var='include-body'><value>true</value></field>"),
        );
        inactive(&mut h, a);
        message(&mut h, c, "see you");
        let out = h.take(b);
        assert!(
            out.contains("<field var='last-message-body'><value>see you</value></field>"),
            "{out}"
        );
        assert!(!out.contains("include-body"), "{out}");
        // An encrypted message rings without its fallback body.
        h.advance(MIN_INTERVAL);
        h.send(
            c,
            "<message to='alice@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'>\
             <header sid='1'/><payload>AAAA</payload></encrypted><body>OMEMO fallback</body></message>",
        );
        let out = h.take(b);
        assert!(out.contains(&count_field(2)), "{out}");
        assert!(!out.contains("last-message-body"), "{out}");
    }

    #[test]
    fn hibernated_after_drop_notifies_and_resume_resets_count() {
        let (mut h, a, b, c) = setup();
        let previd = sm_enable(&mut h, a);
        enable(&mut h, a, "n1", "");
        h.server.handle_disconnect(h.now, a);
        h.drain();
        message(&mut h, c, "one");
        let out = h.take(b);
        assert_eq!(notifications(&out), 1, "{out}");
        assert!(out.contains(&count_field(1)), "{out}");
        h.advance(MIN_INTERVAL);
        message(&mut h, c, "two");
        assert!(h.take(b).contains(&count_field(2)));
        let (a2, out) = sm_resume(&mut h, &previd);
        assert!(out.contains("<resumed") && out.contains("two"), "{out}");
        h.server.handle_disconnect(h.now, a2);
        h.drain();
        message(&mut h, c, "three");
        let out = h.take(b);
        assert!(
            out.contains(&count_field(1)),
            "count reset on resume: {out}"
        );
    }

    #[test]
    fn offline_message_notifies_every_registration() {
        let (mut h, a, b, c) = setup();
        enable(&mut h, a, "n1", "");
        enable(&mut h, a, "n2", "");
        h.send(a, "</stream:stream>");
        h.take(b);
        message(&mut h, c, "are you there");
        let out = h.take(b);
        assert_eq!(notifications(&out), 2, "{out}");
        assert!(
            out.contains("node='n1'") && out.contains("node='n2'"),
            "{out}"
        );
        // And the message is still kept offline.
        let a = h.login("alice", "phone");
        h.send(a, "<presence/>");
        assert!(h.take(a).contains("are you there"));
    }

    #[test]
    fn growing_count_rate_limited_then_carried_and_reset_on_active() {
        let (mut h, a, b, c) = setup();
        enable(&mut h, a, "n1", "");
        inactive(&mut h, a);
        message(&mut h, c, "1");
        assert_eq!(notifications(&h.take(b)), 1);
        message(&mut h, c, "2");
        h.advance(MIN_INTERVAL - Duration::from_millis(1));
        message(&mut h, c, "3");
        assert_eq!(h.take(b), "", "suppressed within the interval");
        h.advance(Duration::from_millis(1));
        message(&mut h, c, "4");
        let out = h.take(b);
        assert_eq!(notifications(&out), 1, "{out}");
        assert!(out.contains(&count_field(4)), "{out}");
        h.send(a, "<active xmlns='urn:xmpp:csi:0'/>");
        inactive(&mut h, a);
        message(&mut h, c, "5");
        let out = h.take(b);
        assert!(
            out.contains(&count_field(1)),
            "reset and sent at once: {out}"
        );
    }

    fn answer(h: &mut Harness, b: ConnId, notified: &str, error: Option<&str>) {
        let id = notified.split("id='").nth(1).unwrap();
        let id = &id[..id.find('\'').unwrap()];
        let reply = match error {
            None => format!("<iq type='result' to='alice@localhost' id='{id}'/>"),
            Some(e) => format!("<iq type='error' to='alice@localhost' id='{id}'>{e}</iq>"),
        };
        h.send(b, &reply);
        assert_eq!(h.take(b), "", "answers are not answered");
    }

    #[test]
    fn error_answer_disables_wait_and_result_keep() {
        let (mut h, a, b, c) = setup();
        enable(&mut h, a, "n1", "");
        inactive(&mut h, a);
        message(&mut h, c, "1");
        let out = h.take(b);
        answer(&mut h, b, &out, None);
        h.advance(MIN_INTERVAL);
        message(&mut h, c, "2");
        let out = h.take(b);
        assert_eq!(notifications(&out), 1, "kept after a result");
        answer(
            &mut h,
            b,
            &out,
            Some(
                "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            ),
        );
        h.advance(MIN_INTERVAL);
        message(&mut h, c, "3");
        let out = h.take(b);
        assert_eq!(notifications(&out), 1, "kept after a wait error");
        answer(
            &mut h,
            b,
            &out,
            Some(
                "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            ),
        );
        h.advance(MIN_INTERVAL);
        message(&mut h, c, "4");
        assert_eq!(h.take(b), "", "disabled by item-not-found");
    }

    #[test]
    fn disable_by_node_then_by_jid_stops_notifications() {
        let (mut h, a, b, c) = setup();
        enable(&mut h, a, "n1", "");
        enable(&mut h, a, "n2", "");
        h.send(
            a,
            &format!("<iq type='set' id='d1'><disable xmlns='urn:xmpp:push:0' jid='{APP}' node='n1'/></iq>"),
        );
        assert!(h.take(a).contains("type='result'"));
        inactive(&mut h, a);
        message(&mut h, c, "1");
        let out = h.take(b);
        assert!(
            notifications(&out) == 1 && out.contains("node='n2'"),
            "{out}"
        );
        h.send(
            a,
            &format!("<iq type='set' id='d2'><disable xmlns='urn:xmpp:push:0' jid='{APP}'/></iq>"),
        );
        assert!(h.take(a).contains("type='result'"));
        h.advance(MIN_INTERVAL);
        message(&mut h, c, "2");
        assert_eq!(h.take(b), "");
    }

    #[test]
    fn past_bound_enable_drops_least_recent() {
        let (mut h, a, b, c) = setup();
        for i in 0..=MAX_REGISTRATIONS {
            enable(&mut h, a, &format!("node{i}"), "");
        }
        inactive(&mut h, a);
        message(&mut h, c, "1");
        let out = h.take(b);
        assert_eq!(notifications(&out), MAX_REGISTRATIONS, "{out}");
        assert!(!out.contains("node='node0'"), "{out}");
        assert!(
            out.contains(&format!("node='node{MAX_REGISTRATIONS}'")),
            "{out}"
        );
    }

    #[test]
    fn malformed_or_foreign_enable_refused() {
        let (mut h, a, _, c) = setup();
        h.send(
            a,
            "<iq type='set' id='x'><enable xmlns='urn:xmpp:push:0' jid='push.example'/></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
        h.send(
            a,
            "<iq type='set' id='x'><enable xmlns='urn:xmpp:push:0' node='n'/></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
        let big = "v".repeat(MAX_OPTIONS_BYTES);
        h.send(
            a,
            &format!("<iq type='set' id='x'><enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>{}</enable></iq>",
                options(&format!("<field var='secret'><value>{big}</value></field>"))),
        );
        assert!(h.take(a).contains("<not-acceptable"));
        h.send(
            a,
            "<iq type='set' id='x'><enable xmlns='urn:xmpp:push:0' jid='alice@localhost' node='n'/></iq>",
        );
        assert!(h.take(a).contains("<not-acceptable"));
        h.send(
            c,
            "<iq type='set' to='alice@localhost' id='x'><enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'/></iq>",
        );
        assert!(h.take(c).contains("<forbidden"));
    }
}
