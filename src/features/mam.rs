//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`) with Unique and Stable Stanza IDs
//! (XEP-0359) and Result Set Management (XEP-0059) paging.
//!
//! Owns: which messages go into an account's archive (chat and normal messages with a body or
//! an end-to-end encryption payload, in both directions, unless a XEP-0334 hint or the user's
//! preferences say no), the `<stanza-id/>` the archive stamps on the delivered copy (and the
//! removal of any that claims to be ours from outside, XEP-0359 §5), queries and their paging,
//! preferences, archive metadata, and the retention limit. The archive itself is the store's
//! (`archive_*`), keyed by (account, id) where the id is the archiving time in microseconds,
//! so a time bound is an id bound and every page is one key range.
//!
//! Where: a message a local session sends is archived for the sender in the outbound hook
//! (after blocking and carbons); a message reaching a local account, from a local session,
//! the server or (later) a remote server, is archived for the recipient in the stamp hook,
//! which runs after the inbound hooks let it through and before delivery or offline storage,
//! so the delivered copy, its carbons and the offline copy all carry the stanza-id. A message
//! to the sender's own account is archived once, as received.
//!
//! Bounds: a page holds at most `MAX_PAGE` results whatever the client asks (`DEFAULT_PAGE`
//! when it does not say); an `ids` query names at most `MAX_PAGE` ids; preferences list at
//! most `MAX_PREFS_JIDS` JIDs. Retention (`[archive] max_age_days`, `max_messages`) removes
//! the oldest messages of an account at most `PRUNE_BATCH` at a time, after each message
//! archived for it and when it logs in, so no turn does unbounded work; an archive far over
//! the limit (the limit was lowered) shrinks by a batch per message until it fits.
//!
//! Not done: `with` matches bare JIDs only (a full JID filters by its bare JID); `flip-page`
//! and RSM `index` are refused with `feature-not-implemented`; `<count/>` is given only for
//! queries without form filters (counting a filtered set would read all of it).

use std::time::UNIX_EPOCH;

use super::carbons::{NS_CARBONS, NS_FORWARD, NS_HINTS};
use super::datetime;
use super::offline::NS_DELAY;
use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Outbound, Registry};
use crate::jid::Jid;
use crate::router::SessionId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::store::{ArchiveRange, ArchivedMessage};
use crate::xml::{Element, Node, ns};

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const FEATURE_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const FEATURE_METADATA: &str = "urn:xmpp:mam:2#metadata";
/// Unique and Stable Stanza IDs (XEP-0359).
pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
/// End-to-end payloads that stand for a body: OMEMO (XEP-0384, legacy and current), OpenPGP
/// for XMPP (XEP-0373) and legacy OpenPGP (XEP-0027).
const ENCRYPTED: [(&str, &str); 4] = [
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
];

/// Most results in one page, whatever the client asks.
pub const MAX_PAGE: usize = 250;
/// Results in a page when the client does not say.
pub const DEFAULT_PAGE: usize = 50;
/// Most messages the retention limit removes at once.
pub const PRUNE_BATCH: usize = 256;
/// Most JIDs in the always and never lists together.
pub const MAX_PREFS_JIDS: usize = 1000;
/// The kv key of an account's preferences.
const PREFS_KEY: &str = "mam:prefs";

pub fn register(r: &mut Registry) {
    // §4, §6: addressed to the user's own bare JID (or no `to`).
    r.iq(IqTo::Account, IqType::Set, NS_MAM, set);
    r.iq(IqTo::Account, IqType::Get, NS_MAM, get);
    r.feature(&[IqTo::Account], NS_MAM);
    r.feature(&[IqTo::Account], FEATURE_EXTENDED);
    r.feature(&[IqTo::Account], FEATURE_METADATA);
    r.feature(&[IqTo::Account], NS_SID);
    r.outbound.push(archive_sent);
    r.stamp.push(archive_received);
    r.available.push(prune_on_login);
}

// ------------------------------------------------------------------------------- archiving

/// XEP-0313 §7 (what is archived): chat and normal messages with a body or an encrypted
/// payload; not those hinted `no-store`/`no-permanent-store` (XEP-0334 §4.1–4.2), nor carbons
/// or archive results relayed by anyone. A `store` hint (§4.4) archives what has no body.
fn archivable(e: &Element) -> bool {
    if !matches!(e.attr("type").unwrap_or("normal"), "chat" | "normal") {
        return false;
    }
    let hinted = |name: &str| e.child(name, NS_HINTS).is_some();
    if hinted("no-store") || hinted("no-permanent-store") {
        return false;
    }
    if e.child("sent", NS_CARBONS).is_some()
        || e.child("received", NS_CARBONS).is_some()
        || e.child("result", NS_MAM).is_some()
    {
        return false;
    }
    e.child("body", ns::CLIENT).is_some()
        || ENCRYPTED.iter().any(|(n, s)| e.child(n, s).is_some())
        || hinted("store")
}

/// XEP-0359 §5: a `<stanza-id/>` that says it is by the recipient's own archive is a forgery
/// unless we added it, so every one of them from outside is removed.
fn strip_claimed_ids(e: &mut Element, account: &str) {
    e.children.retain(|n| match n {
        Node::Element(c) => !(c.is("stanza-id", NS_SID) && c.attr("by") == Some(account)),
        Node::Text(_) => true,
    });
}

/// The stamp hook: archives a message reaching a local account and adds the archive's
/// stanza-id to what is delivered (or stored offline).
fn archive_received(ctx: &mut Ctx, from: &Jid, to: &Jid, e: &mut Element) {
    let account = to.to_bare().to_string();
    strip_claimed_ids(e, &account);
    if !ctx.config.archive.enabled || !archivable(e) {
        return;
    }
    let with = from.to_bare().to_string();
    if !wanted(ctx, &account, &with) {
        return;
    }
    if let Some(id) = append(ctx, &account, &with, e) {
        e.push_child(
            Element::new("stanza-id", NS_SID)
                .with_attr("by", &account)
                .with_attr("id", &id.to_string()),
        );
    }
}

/// The outbound hook: archives a message a local session sends, for its sender.
fn archive_sent(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> super::Flow {
    if o.kind != StanzaKind::Message || !ctx.config.archive.enabled {
        return super::Flow::Continue;
    }
    // To the sender's own account: archived once, when it arrives there.
    let Some(to) = o.to.filter(|t| !t.bare_eq(o.from)) else {
        return super::Flow::Continue;
    };
    let account = o.from.to_bare();
    let (account, with) = (account.to_string(), to.to_bare().to_string());
    if archivable(e) && wanted(ctx, &account, &with) {
        append(ctx, &account, &with, e);
    }
    super::Flow::Continue
}

/// Stores `e` in `account`'s archive, then applies the retention limit; the id, or `None`
/// if the store failed (logged: the message still goes on, unarchived).
fn append(ctx: &mut Ctx, account: &str, with: &str, e: &Element) -> Option<u64> {
    // Serialized under a foreign parent so that it declares `jabber:client` and can be put
    // inside `<forwarded/>` as it is.
    let bytes = e.to_bytes(NS_FORWARD);
    match ctx
        .store
        .archive_append(account, now_micros(), with, &bytes)
    {
        Ok(id) => {
            prune(ctx, account);
            Some(id)
        }
        Err(err) => {
            log::error!("store: {err}");
            None
        }
    }
}

/// Removes at most `PRUNE_BATCH` of the account's oldest messages that are past the
/// retention limit.
fn prune(ctx: &mut Ctx, account: &str) {
    let limits = &ctx.config.archive;
    let older_than = limits.max_age.map_or(0, |age| {
        now_micros().saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
    });
    match ctx
        .store
        .archive_prune(account, older_than, limits.max_messages, PRUNE_BATCH)
    {
        Ok(0) => {}
        Ok(n) => log::debug!("{account}: {n} archived messages past the retention limit removed"),
        Err(err) => log::error!("store: {err}"),
    }
}

/// An account that logs in has its archive trimmed even if no message came for a while.
fn prune_on_login(ctx: &mut Ctx, sid: SessionId) {
    let Some(account) = ctx.router.session(sid).map(|s| s.jid.to_bare().to_string()) else {
        return;
    };
    prune(ctx, &account);
}

// ----------------------------------------------------------------------------- preferences

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Always,
    Never,
    Roster,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
            Policy::Roster => "roster",
        }
    }

    fn parse(s: &str) -> Option<Policy> {
        match s {
            "always" => Some(Policy::Always),
            "never" => Some(Policy::Never),
            "roster" => Some(Policy::Roster),
            _ => None,
        }
    }
}

/// §6.2: what the user wants archived. Stored as text: the default on the first line, then
/// `+jid` (always) and `-jid` (never) lines.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefs {
    default: Policy,
    always: Vec<String>,
    never: Vec<String>,
}

impl Prefs {
    fn new() -> Prefs {
        Prefs {
            default: Policy::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut s = self.default.name().to_owned();
        for j in &self.always {
            s.push_str("\n+");
            s.push_str(j);
        }
        for j in &self.never {
            s.push_str("\n-");
            s.push_str(j);
        }
        s.into_bytes()
    }

    fn decode(b: &[u8]) -> Option<Prefs> {
        let s = std::str::from_utf8(b).ok()?;
        let mut lines = s.split('\n');
        let mut p = Prefs {
            default: Policy::parse(lines.next()?)?,
            ..Prefs::new()
        };
        for l in lines {
            if let Some(j) = l.strip_prefix('+') {
                p.always.push(j.to_owned());
            } else if let Some(j) = l.strip_prefix('-') {
                p.never.push(j.to_owned());
            } else {
                return None;
            }
        }
        Some(p)
    }

    fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[String]| {
            let mut e = Element::new(name, NS_MAM);
            for j in jids {
                e.push_child(Element::new("jid", NS_MAM).with_text(j));
            }
            e
        };
        Element::new("prefs", NS_MAM)
            .with_attr("default", self.default.name())
            .with_child(list("always", &self.always))
            .with_child(list("never", &self.never))
    }
}

fn load_prefs(ctx: &Ctx, account: &str) -> Prefs {
    match ctx.store.kv_get(account, PREFS_KEY) {
        Ok(Some(b)) => Prefs::decode(&b).unwrap_or_else(|| {
            log::error!("{account}: stored archive preferences are corrupt; using the default");
            Prefs::new()
        }),
        Ok(None) => Prefs::new(),
        Err(e) => {
            log::error!("store: {e}");
            Prefs::new()
        }
    }
}

/// §6.2: whether the user wants messages exchanged with `with` (a bare JID) archived.
fn wanted(ctx: &Ctx, account: &str, with: &str) -> bool {
    let p = load_prefs(ctx, account);
    if p.never.iter().any(|j| j == with) {
        return false;
    }
    if p.always.iter().any(|j| j == with) {
        return true;
    }
    match p.default {
        Policy::Always => true,
        Policy::Never => false,
        Policy::Roster => match ctx.store.roster_item(account, with) {
            Ok(item) => item.is_some_and(|i| i.in_roster),
            Err(e) => {
                log::error!("store: {e}");
                false
            }
        },
    }
}

fn set_prefs(ctx: &mut Ctx, account: &str, payload: &Element) -> IqResult {
    let bad = |why: &str| StanzaError::with_text(StanzaCondition::BadRequest, why);
    let default = payload
        .attr("default")
        .and_then(Policy::parse)
        .ok_or_else(|| bad("default must be always, never or roster"))?;
    let mut p = Prefs {
        default,
        ..Prefs::new()
    };
    let mut n = 0;
    for (name, list) in [("always", &mut p.always), ("never", &mut p.never)] {
        let Some(l) = payload.child(name, NS_MAM) else {
            continue;
        };
        for j in l.child_elements().filter(|c| c.is("jid", NS_MAM)) {
            n += 1;
            if n > MAX_PREFS_JIDS {
                return Err(StanzaError::with_text(
                    StanzaCondition::PolicyViolation,
                    "too many JIDs in the preferences",
                ));
            }
            let jid = Jid::parse(j.text().trim())
                .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))?
                .to_bare()
                .to_string();
            if !list.contains(&jid) {
                list.push(jid);
            }
        }
    }
    ctx.store
        .kv_put(account, PREFS_KEY, &p.encode())
        .map_err(internal)?;
    Ok(Some(p.to_element()))
}

// --------------------------------------------------------------------------------- queries

fn internal(e: crate::store::StoreError) -> StanzaError {
    log::error!("store: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

fn bad_request(why: &str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, why)
}

fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    // Only the owner reads or configures an archive.
    if !req.from_owner() {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    }
    let account = req.to.to_string();
    match req.payload.name.as_str() {
        "query" => query(ctx, req, &account),
        "prefs" => set_prefs(ctx, &account, req.payload),
        _ => Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)),
    }
}

fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    }
    let account = req.to.to_string();
    match req.payload.name.as_str() {
        // §5.1: the form a client may fill.
        "query" => Ok(Some(Element::new("query", NS_MAM).with_child(query_form()))),
        "prefs" => Ok(Some(load_prefs(ctx, &account).to_element())),
        "metadata" => metadata(ctx, &account),
        _ => Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)),
    }
}

fn query_form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", NS_DATA)
            .with_attr("type", kind)
            .with_attr("var", var)
    };
    Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_MAM)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(field("ids", "text-multi"))
}

/// XEP-0313 §6.3 (`#metadata`): the first and last message of the archive.
fn metadata(ctx: &mut Ctx, account: &str) -> IqResult {
    let mut m = Element::new("metadata", NS_MAM);
    for (name, reverse) in [("start", false), ("end", true)] {
        let page = ctx
            .store
            .archive_page(account, &ArchiveRange::ALL, reverse, 1)
            .map_err(internal)?;
        if let Some(first) = page.first() {
            m.push_child(
                Element::new(name, NS_MAM)
                    .with_attr("id", &first.id.to_string())
                    .with_attr("timestamp", &stamp(first.id)),
            );
        }
    }
    Ok(Some(m))
}

/// A parsed query: the result set (ids in `range`, or the listed `ids`) and the page asked.
#[derive(Debug, Default)]
struct Query {
    with: Option<String>,
    low: u64,
    high: u64,
    /// Form filters were given (the result set is not the whole archive).
    filtered: bool,
    ids: Vec<u64>,
    max: usize,
    /// RSM `<before/>`: page backwards from the end (or from this id).
    before: Option<Option<u64>>,
    after: Option<u64>,
    /// Ids the query names that must exist (after-id, before-id, RSM after/before).
    referenced: Vec<u64>,
}

/// An archive id as the client sent it; one that cannot be ours is not found.
fn parse_id(s: &str) -> Result<u64, StanzaError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    s.parse()
        .map_err(|_| StanzaError::new(StanzaCondition::ItemNotFound))
}

fn parse_query(payload: &Element) -> Result<Query, StanzaError> {
    let mut q = Query {
        low: 0,
        high: u64::MAX,
        max: DEFAULT_PAGE,
        ..Query::default()
    };
    if let Some(x) = payload.child("x", NS_DATA) {
        for f in x.child_elements().filter(|c| c.is("field", NS_DATA)) {
            let values: Vec<String> = f
                .child_elements()
                .filter(|c| c.is("value", NS_DATA))
                .map(|v| v.text())
                .collect();
            let var = f.attr("var").unwrap_or("");
            let Some(first) = values.first().map(|v| v.trim()).filter(|v| !v.is_empty()) else {
                // A field without a value filters nothing.
                continue;
            };
            match var {
                "FORM_TYPE" if first == NS_MAM => {}
                "FORM_TYPE" => return Err(bad_request("FORM_TYPE must be urn:xmpp:mam:2")),
                "with" => {
                    let j = Jid::parse(first)
                        .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))?;
                    q.with = Some(j.to_bare().to_string());
                }
                "start" => {
                    q.low = q
                        .low
                        .max(parse_datetime(first).ok_or_else(|| bad_request("bad start"))?)
                }
                "end" => {
                    q.high = q
                        .high
                        .min(parse_datetime(first).ok_or_else(|| bad_request("bad end"))?)
                }
                "after-id" => {
                    let id = parse_id(first)?;
                    q.referenced.push(id);
                    q.low = q.low.max(id.saturating_add(1));
                }
                "before-id" => {
                    let id = parse_id(first)?;
                    q.referenced.push(id);
                    q.high = q.high.min(id.saturating_sub(1));
                    if id == 0 {
                        q.low = 1;
                    }
                }
                "ids" => {
                    if values.len() > MAX_PAGE {
                        return Err(StanzaError::with_text(
                            StanzaCondition::PolicyViolation,
                            "too many ids in one query",
                        ));
                    }
                    for v in &values {
                        q.ids.push(parse_id(v)?);
                    }
                }
                other => return Err(bad_request(&format!("unsupported field {other}"))),
            }
            if var != "FORM_TYPE" {
                q.filtered = true;
            }
        }
    }
    if payload.child("flip-page", NS_MAM).is_some() {
        return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented));
    }
    if let Some(set) = payload.child("set", NS_RSM) {
        if set.child("index", NS_RSM).is_some() {
            return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented));
        }
        if let Some(m) = set.child("max", NS_RSM) {
            let n: usize = m
                .text()
                .trim()
                .parse()
                .map_err(|_| bad_request("bad max"))?;
            q.max = n.min(MAX_PAGE);
        }
        if let Some(a) = set.child("after", NS_RSM) {
            let id = parse_id(&a.text())?;
            q.referenced.push(id);
            q.after = Some(id);
        }
        if let Some(b) = set.child("before", NS_RSM) {
            let t = b.text();
            q.before = Some(if t.trim().is_empty() {
                None
            } else {
                let id = parse_id(&t)?;
                q.referenced.push(id);
                Some(id)
            });
        }
    }
    Ok(q)
}

/// §4: sends the matching messages to the querying session, one `<result/>` each, and
/// answers with `<fin/>` after them.
fn query(ctx: &mut Ctx, req: &IqRequest, account: &str) -> IqResult {
    let q = parse_query(req.payload)?;
    let Some(conn) = req
        .session
        .and_then(|sid| ctx.router.session(sid))
        .map(|s| s.conn)
    else {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    };
    for id in &q.referenced {
        if ctx
            .store
            .archive_get(account, *id)
            .map_err(internal)?
            .is_none()
        {
            return Err(StanzaError::new(StanzaCondition::ItemNotFound));
        }
    }
    let (page, complete) = if !q.ids.is_empty() {
        // #extended: exactly these messages, in archive order.
        let mut ids = q.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        let mut page = Vec::with_capacity(ids.len());
        for id in ids {
            match ctx.store.archive_get(account, id).map_err(internal)? {
                Some(m) => page.push(m),
                None => return Err(StanzaError::new(StanzaCondition::ItemNotFound)),
            }
        }
        (page, true)
    } else {
        let mut range = ArchiveRange {
            with: q.with.as_deref(),
            low: q.low,
            high: q.high,
        };
        if let Some(a) = q.after {
            range.low = range.low.max(a.saturating_add(1));
        }
        if let Some(Some(b)) = q.before {
            if b == 0 {
                range.low = 1;
            }
            range.high = range.high.min(b.saturating_sub(1));
        }
        let reverse = q.before.is_some();
        // One more than asked tells whether the page reaches the end of the set.
        let mut page = if q.max == 0 {
            Vec::new()
        } else {
            ctx.store
                .archive_page(account, &range, reverse, q.max + 1)
                .map_err(internal)?
        };
        let complete = page.len() <= q.max;
        page.truncate(q.max);
        if reverse {
            // Results go out oldest first in both directions (§4.1.2).
            page.reverse();
        }
        (page, complete)
    };
    let to = req.from.to_string();
    let queryid = req.payload.attr("queryid");
    for m in &page {
        ctx.out
            .send_bytes(conn, result_bytes(account, &to, queryid, m));
    }
    ctx.out.reply_after_sends();
    let mut set = Element::new("set", NS_RSM);
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        set.push_child(Element::new("first", NS_RSM).with_text(&first.id.to_string()));
        set.push_child(Element::new("last", NS_RSM).with_text(&last.id.to_string()));
    }
    if !q.filtered {
        let n = ctx.store.archive_count(account).map_err(internal)?;
        set.push_child(Element::new("count", NS_RSM).with_text(&n.to_string()));
    }
    let mut fin = Element::new("fin", NS_MAM)
        .with_attr("complete", if complete { "true" } else { "false" })
        .with_child(set);
    if let Some(qid) = queryid {
        fin.set_attr("queryid", qid);
    }
    Ok(Some(fin))
}

/// `<message from=account to=querier><result queryid id><forwarded><delay/>STORED</..>`,
/// with the stored bytes put in as they are (they were serialized by us, declaring their
/// namespace).
fn result_bytes(account: &str, to: &str, queryid: Option<&str>, m: &ArchivedMessage) -> Vec<u8> {
    const TAIL: &[u8] = b"</forwarded></result></message>";
    let mut result = Element::new("result", NS_MAM);
    if let Some(q) = queryid {
        result.set_attr("queryid", q);
    }
    result.set_attr("id", &m.id.to_string());
    let wrapper = Element::new("message", ns::CLIENT)
        .with_attr("from", account)
        .with_attr("to", to)
        .with_child(
            result.with_child(
                Element::new("forwarded", NS_FORWARD)
                    .with_child(Element::new("delay", NS_DELAY).with_attr("stamp", &stamp(m.id))),
            ),
        );
    let mut out = wrapper.to_bytes(ns::CLIENT);
    // The writer closes an element with children with its end tag, so the wrapper ends with
    // exactly TAIL (checked by a test); the stored message goes before it.
    let cut = out.len().saturating_sub(TAIL.len());
    let tail = out.split_off(cut);
    debug_assert_eq!(tail, TAIL);
    out.extend_from_slice(&m.stanza);
    out.extend_from_slice(&tail);
    out
}

// ------------------------------------------------------------------------------------ time

#[cfg(test)]
thread_local! {
    /// Test-only: seconds added to the wall clock (tests move time forward).
    static SKEW_SECS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The wall clock in microseconds since the epoch (the archive's ids).
fn now_micros() -> u64 {
    let t = datetime::wall_clock();
    #[cfg(test)]
    let t = t + std::time::Duration::from_secs(SKEW_SECS.with(|s| s.get()));
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// An archive id as an XEP-0082 timestamp with microseconds (so that it round-trips through
/// `start`/`end` exactly).
fn stamp(id: u64) -> String {
    let secs = datetime::utc_timestamp_from_unix(id / 1_000_000);
    format!("{}.{:06}Z", secs.trim_end_matches('Z'), id % 1_000_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`) as microseconds since the epoch;
/// instants before 1970 read as 0.
fn parse_datetime(s: &str) -> Option<u64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |i: usize, c: u8| s.as_bytes().get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(digits).enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(c - b'0');
            }
        }
        for _ in digits..6 {
            micros *= 10;
        }
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return Some(0);
    }
    u64::try_from(secs * 1_000_000 + micros).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::ConnId;
    use crate::testutil::Harness;
    use std::time::Duration;

    /// Moves this test's wall clock forward.
    fn skew(secs: u64) {
        SKEW_SECS.with(|s| s.set(s.get() + secs));
    }

    fn chat(h: &mut Harness, from: ConnId, to: &str, body: &str) {
        h.send(
            from,
            &format!("<message to='{to}' type='chat' id='m-{body}'><body>{body}</body></message>"),
        );
    }

    /// Sends a query (form fields and RSM children as given) and returns the (id, body) of
    /// each result in order, and the `<iq>` answer.
    fn query(
        h: &mut Harness,
        c: ConnId,
        fields: &str,
        rsm: &str,
    ) -> (Vec<(String, String)>, String) {
        let form = if fields.is_empty() {
            String::new()
        } else {
            format!(
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
                 <value>urn:xmpp:mam:2</value></field>{fields}</x>"
            )
        };
        let set = if rsm.is_empty() {
            String::new()
        } else {
            format!("<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>")
        };
        h.send(
            c,
            &format!(
                "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'>{form}{set}</query></iq>"
            ),
        );
        let out = h.take(c);
        let iq_at = out
            .find("<iq ")
            .unwrap_or_else(|| panic!("no iq answer: {out}"));
        let mut results = Vec::new();
        for part in out[..iq_at].split("<message from=").skip(1) {
            assert!(
                part.contains("<result xmlns='urn:xmpp:mam:2' queryid='f27' id='"),
                "{part}"
            );
            let id = between(part, "queryid='f27' id='", "'");
            let body = between(part, "<body>", "</body>");
            results.push((id.to_owned(), body.to_owned()));
        }
        (results, out[iq_at..].to_owned())
    }

    fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
        let start = s.find(a).unwrap_or_else(|| panic!("{a} not in {s}")) + a.len();
        let len = s[start..]
            .find(b)
            .unwrap_or_else(|| panic!("{b} not in {s}"));
        &s[start..start + len]
    }

    fn bodies(r: &[(String, String)]) -> Vec<&str> {
        r.iter().map(|(_, b)| b.as_str()).collect()
    }

    fn field(var: &str, value: &str) -> String {
        format!("<field var='{var}'><value>{value}</value></field>")
    }

    /// alice/a and bob/b online; bob sent alice `n` chats "0".."n-1".
    fn with_messages(n: usize) -> (Harness, ConnId, ConnId) {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<presence/>");
        h.send(b, "<presence/>");
        for i in 0..n {
            chat(&mut h, b, "alice@localhost", &i.to_string());
        }
        h.take(a);
        h.take(b);
        (h, a, b)
    }

    #[test]
    fn online_chat_archived_both_sides_stanza_id_on_delivered_copy() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(a, "<presence/>");
        h.take(a);
        chat(&mut h, b, "alice@localhost", "hello");
        let got = h.take(a);
        assert!(
            got.contains(
                "<body>hello</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='"
            ),
            "{got}"
        );
        let sid = between(&got, "by='alice@localhost' id='", "'").to_owned();
        let (r, fin) = query(&mut h, a, "", "");
        assert_eq!(r, [(sid.clone(), "hello".to_owned())]);
        assert!(
            fin.contains("type='result' id='q1'")
                && fin.contains("<fin xmlns='urn:xmpp:mam:2' complete='true' queryid='f27'>")
                && fin.contains(&format!(
                    "<first>{sid}</first><last>{sid}</last><count>1</count>"
                )),
            "{fin}"
        );
        // The sender's archive has it too (no stanza-id goes to the recipient from it).
        assert!(!got.contains("by='bob@localhost'"), "{got}");
        let (r, _) = query(&mut h, b, "", "");
        assert_eq!(bodies(&r), ["hello"]);
        // The result carries the original with its delay.
        h.send(
            b,
            "<iq type='set' id='q2'><query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>",
        );
        let out = h.take(b);
        assert!(
            out.starts_with(
                "<message from='bob@localhost' to='bob@localhost/b'><result xmlns='urn:xmpp:mam:2' \
                 queryid='x' id='"
            ) && out.contains(
                "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='"
            ) && out.contains(
                "Z'/><message xmlns='jabber:client' to='alice@localhost' type='chat' id='m-hello' \
                 from='bob@localhost/b'><body>hello</body></message></forwarded></result></message><iq"
            ),
            "{out}"
        );
    }

    #[test]
    fn offline_recipient_archived_and_offline_copy_has_stanza_id() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        chat(&mut h, b, "alice@localhost", "later");
        let a = h.login("alice", "a");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["later"]);
        h.send(a, "<presence/>");
        let out = h.take(a);
        assert!(
            out.contains(&format!(
                "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='{}'/>",
                r[0].0
            )),
            "{out}"
        );
    }

    #[test]
    fn claimed_stanza_id_from_outside_stripped_others_kept() {
        let (mut h, a, b) = with_messages(0);
        h.send(
            b,
            "<message to='alice@localhost' type='chat'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='theirs'/></message>",
        );
        let out = h.take(a);
        assert!(!out.contains("forged"), "{out}");
        assert!(out.contains("id='theirs'"), "{out}");
        assert_eq!(out.matches("by='alice@localhost'").count(), 1, "{out}");
        // Even on a message that is not archived.
        h.send(
            b,
            "<message to='alice@localhost' type='headline'><body>h</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/></message>",
        );
        let out = h.take(a);
        assert!(
            out.contains("<body>h</body>") && !out.contains("stanza-id"),
            "{out}"
        );
    }

    #[test]
    fn rsm_pages_forward_and_backward_through_archive() {
        let (mut h, a, _) = with_messages(7);
        let (p1, fin) = query(&mut h, a, "", "<max>3</max>");
        assert_eq!(bodies(&p1), ["0", "1", "2"]);
        assert!(
            fin.contains("complete='false'") && fin.contains("<count>7</count>"),
            "{fin}"
        );
        let (p2, _) = query(
            &mut h,
            a,
            "",
            &format!("<max>3</max><after>{}</after>", p1[2].0),
        );
        assert_eq!(bodies(&p2), ["3", "4", "5"]);
        let (p3, fin) = query(
            &mut h,
            a,
            "",
            &format!("<max>3</max><after>{}</after>", p2[2].0),
        );
        assert_eq!(bodies(&p3), ["6"]);
        assert!(fin.contains("complete='true'"), "{fin}");
        // Backwards: `<before/>` is the last page; results still oldest first.
        let (b1, fin) = query(&mut h, a, "", "<max>3</max><before/>");
        assert_eq!(bodies(&b1), ["4", "5", "6"]);
        assert!(fin.contains("complete='false'"), "{fin}");
        assert!(fin.contains(&format!(
            "<first>{}</first><last>{}</last>",
            b1[0].0, b1[2].0
        )));
        let (b2, _) = query(
            &mut h,
            a,
            "",
            &format!("<max>3</max><before>{}</before>", b1[0].0),
        );
        assert_eq!(bodies(&b2), ["1", "2", "3"]);
        let (b3, fin) = query(
            &mut h,
            a,
            "",
            &format!("<max>3</max><before>{}</before>", b2[0].0),
        );
        assert_eq!(bodies(&b3), ["0"]);
        assert!(fin.contains("complete='true'"), "{fin}");
        // An exact fit is complete too; max 0 only counts.
        let (all, fin) = query(&mut h, a, "", "<max>7</max>");
        assert_eq!(all.len(), 7);
        assert!(fin.contains("complete='true'"), "{fin}");
        let (none, fin) = query(&mut h, a, "", "<max>0</max>");
        assert!(none.is_empty() && fin.contains("<count>7</count>"), "{fin}");
    }

    #[test]
    fn page_size_bounded_whatever_client_asks() {
        let (mut h, a, _) = with_messages(MAX_PAGE + 5);
        let (r, fin) = query(&mut h, a, "", "<max>100000</max>");
        assert_eq!(r.len(), MAX_PAGE);
        assert!(fin.contains("complete='false'"), "{fin}");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(r.len(), DEFAULT_PAGE);
    }

    #[test]
    fn with_filter_only_that_contact_both_directions() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        let c = h.login("carol", "c");
        chat(&mut h, b, "alice@localhost", "from-bob");
        chat(&mut h, c, "alice@localhost", "from-carol");
        chat(&mut h, a, "bob@localhost/b", "to-bob");
        chat(&mut h, a, "carol@localhost", "to-carol");
        let (r, fin) = query(&mut h, a, &field("with", "bob@localhost"), "");
        assert_eq!(bodies(&r), ["from-bob", "to-bob"]);
        // A filtered set is not counted (that would read all of it).
        assert!(!fin.contains("<count>"), "{fin}");
        let (r, _) = query(
            &mut h,
            a,
            &field("with", "carol@localhost/c"),
            "<max>1</max><before/>",
        );
        assert_eq!(bodies(&r), ["to-carol"]);
        let (r, _) = query(&mut h, a, &field("with", "dave@localhost"), "");
        assert!(r.is_empty());
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn start_end_bound_by_time() {
        let (mut h, a, b) = with_messages(1);
        skew(3600);
        chat(&mut h, b, "alice@localhost", "1");
        skew(3600);
        chat(&mut h, b, "alice@localhost", "2");
        let (all, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&all), ["0", "1", "2"]);
        let t1 = stamp(all[1].0.parse().unwrap());
        let (r, _) = query(&mut h, a, &field("start", &t1), "");
        assert_eq!(bodies(&r), ["1", "2"]);
        let (r, _) = query(&mut h, a, &field("end", &t1), "");
        assert_eq!(bodies(&r), ["0", "1"]);
        // Half an hour after message 0, in another time zone, to half an hour after 1.
        let id0: u64 = all[0].0.parse().unwrap();
        let secs = (id0 / 1_000_000 + 1800) as i64;
        let plus2 = datetime::utc_timestamp_from_unix((secs + 7200) as u64).replace('Z', "+02:00");
        let end = datetime::utc_timestamp_from_unix((secs + 3600) as u64);
        let (r, _) = query(
            &mut h,
            a,
            &format!("{}{}", field("start", &plus2), field("end", &end)),
            "",
        );
        assert_eq!(bodies(&r), ["1"]);
        h.send(
            a,
            "<iq type='set' id='bad'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' \
             type='submit'><field var='start'><value>yesterday</value></field></x></query></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
    }

    #[test]
    fn extended_ids_after_id_before_id() {
        let (mut h, a, _) = with_messages(5);
        let (all, _) = query(&mut h, a, "", "");
        let ids: Vec<&str> = all.iter().map(|(i, _)| i.as_str()).collect();
        let (r, fin) = query(
            &mut h,
            a,
            &format!(
                "<field var='ids'><value>{}</value><value>{}</value></field>",
                ids[3], ids[1]
            ),
            "",
        );
        assert_eq!(bodies(&r), ["1", "3"]);
        assert!(fin.contains("complete='true'"), "{fin}");
        let (r, _) = query(&mut h, a, &field("after-id", ids[1]), "");
        assert_eq!(bodies(&r), ["2", "3", "4"]);
        let (r, _) = query(&mut h, a, &field("before-id", ids[2]), "");
        assert_eq!(bodies(&r), ["0", "1"]);
        let (r, _) = query(
            &mut h,
            a,
            &format!(
                "{}{}",
                field("after-id", ids[0]),
                field("before-id", ids[4])
            ),
            "<max>2</max><before/>",
        );
        assert_eq!(bodies(&r), ["2", "3"]);
    }

    #[test]
    fn unknown_ids_item_not_found() {
        let (mut h, a, b) = with_messages(2);
        let (all, _) = query(&mut h, a, "", "");
        let real = all[0].0.clone();
        // bob's archive has other ids: one of alice's is unknown there.
        let (bob_all, _) = query(&mut h, b, "", "");
        assert!(!bob_all.iter().any(|(i, _)| *i == real));
        for (fields, rsm) in [
            (String::new(), "<after>12345</after>".to_owned()),
            (String::new(), "<before>notanumber</before>".to_owned()),
            (field("after-id", "1"), String::new()),
            (field("before-id", "99999999999999999999"), String::new()),
            (
                format!("<field var='ids'><value>{real}</value><value>7</value></field>"),
                String::new(),
            ),
        ] {
            h.send(
                a,
                &format!(
                    "<iq type='set' id='nf'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' \
                     type='submit'>{fields}</x><set xmlns='http://jabber.org/protocol/rsm'>{rsm}\
                     </set></query></iq>"
                ),
            );
            let out = h.take(a);
            assert!(
                out.starts_with("<iq")
                    && out.contains("type='error'")
                    && out.contains("<item-not-found"),
                "{fields} {rsm}: {out}"
            );
        }
        h.send(
            b,
            &format!(
                "<iq type='set' id='nf'><query xmlns='urn:xmpp:mam:2'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><after>{real}</after></set></query></iq>"
            ),
        );
        assert!(h.take(b).contains("<item-not-found"));
    }

    #[test]
    fn prefs_never_and_always_lists_stored_and_applied() {
        let (mut h, a, b) = with_messages(0);
        let c = h.login("carol", "c");
        h.send(
            a,
            "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='always'>\
             <always/><never><jid>bob@localhost/x</jid></never></prefs></iq>",
        );
        let out = h.take(a);
        assert!(
            out.contains("type='result' id='p'")
                && out.contains("<prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never><jid>bob@localhost</jid></never></prefs>"),
            "{out}"
        );
        chat(&mut h, b, "alice@localhost", "secret");
        chat(&mut h, c, "alice@localhost", "kept");
        chat(&mut h, a, "bob@localhost", "secret-out");
        let out = h.take(a);
        // Delivered all the same, without a stanza-id for the one not archived.
        assert!(out.contains("<body>secret</body></message>"), "{out}");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["kept"]);
        // bob's own archive is bob's business.
        let (r, _) = query(&mut h, b, "", "");
        assert_eq!(bodies(&r), ["secret", "secret-out"]);
        h.send(
            a,
            "<iq type='get' id='g'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
        );
        assert!(
            h.take(a)
                .contains("<never><jid>bob@localhost</jid></never>")
        );
        // default never with an always list.
        h.send(
            a,
            "<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='never'>\
             <always><jid>bob@localhost</jid></always></prefs></iq>",
        );
        h.take(a);
        chat(&mut h, b, "alice@localhost", "now");
        chat(&mut h, c, "alice@localhost", "not-now");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["kept", "now"]);
        h.send(
            a,
            "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
    }

    #[test]
    fn prefs_roster_archives_roster_contacts_only() {
        let (mut h, a, b) = with_messages(0);
        let c = h.login("carol", "c");
        h.send(
            a,
            "<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>",
        );
        h.send(
            a,
            "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>",
        );
        assert!(h.take(a).contains("default='roster'"));
        chat(&mut h, b, "alice@localhost", "contact");
        chat(&mut h, c, "alice@localhost", "stranger");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["contact"]);
    }

    fn with_archive_limits(max_messages: u64, max_age_days: Option<u64>) -> Harness {
        let mut config = Config::default();
        config.archive.max_messages = max_messages;
        config.archive.max_age = max_age_days.map(|d| Duration::from_secs(d * 86_400));
        Harness::with_config(config)
    }

    #[test]
    fn retention_max_messages_removes_oldest() {
        let mut h = with_archive_limits(3, None);
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        for i in 0..5 {
            chat(&mut h, b, "alice@localhost", &i.to_string());
        }
        let (r, fin) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["2", "3", "4"]);
        assert!(fin.contains("<count>3</count>"), "{fin}");
    }

    #[test]
    fn retention_max_age_removes_old_on_next_message_and_on_login() {
        let mut h = with_archive_limits(1000, Some(1));
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        chat(&mut h, b, "alice@localhost", "old");
        skew(2 * 86_400);
        chat(&mut h, b, "alice@localhost", "new");
        let (r, _) = query(&mut h, a, "", "");
        assert_eq!(bodies(&r), ["new"]);
        // bob's archive (the sent copies) went on his next message; here on his login.
        skew(2 * 86_400);
        let b2 = h.login("bob", "b2");
        h.send(b2, "<presence/>");
        let (r, _) = query(&mut h, b2, "", "");
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn not_archived_headline_groupchat_nostore_chatstate_archived_encrypted() {
        let (mut h, a, b) = with_messages(0);
        for m in [
            "<message to='alice@localhost/a' type='headline'><body>h</body></message>",
            "<message to='alice@localhost/a' type='groupchat'><body>g</body></message>",
            "<message to='alice@localhost/a' type='error'><body>e</body></message>",
            "<message to='alice@localhost' type='chat'><body>n</body><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message to='alice@localhost' type='chat'><body>p</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
            "<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        ] {
            h.send(b, m);
        }
        h.send(
            b,
            "<message to='alice@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'>\
             <header sid='1'/><payload>AAAA</payload></encrypted></message>",
        );
        h.send(
            b,
            "<message to='alice@localhost'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='2'/>\
             </encrypted></message>",
        );
        let out = h.take(a);
        assert_eq!(out.matches("by='alice@localhost'").count(), 2, "{out}");
        h.send(
            a,
            "<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'/></iq>",
        );
        let out = h.take(a);
        assert_eq!(out.matches("<result ").count(), 2, "{out}");
        assert!(out.contains("eu.siacs.conversations.axolotl") && out.contains("urn:xmpp:omemo:2"));
    }

    #[test]
    fn other_account_forbidden_disco_and_metadata() {
        let (mut h, a, b) = with_messages(3);
        h.send(
            b,
            "<iq type='set' id='x' to='alice@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>",
        );
        let out = h.take(b);
        assert!(
            out.contains("<forbidden") && !out.contains("<result"),
            "{out}"
        );
        h.send(
            a,
            "<iq type='get' id='d' to='alice@localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        let out = h.take(a);
        for f in [NS_MAM, FEATURE_EXTENDED, FEATURE_METADATA, NS_SID] {
            assert!(out.contains(&format!("<feature var='{f}'/>")), "{f}: {out}");
        }
        let (all, _) = query(&mut h, a, "", "");
        h.send(
            a,
            "<iq type='get' id='m'><metadata xmlns='urn:xmpp:mam:2'/></iq>",
        );
        let out = h.take(a);
        let first: u64 = all[0].0.parse().unwrap();
        let last: u64 = all[2].0.parse().unwrap();
        assert!(
            out.contains(&format!(
                "<metadata xmlns='urn:xmpp:mam:2'><start id='{first}' timestamp='{}'/>\
                 <end id='{last}' timestamp='{}'/></metadata>",
                stamp(first),
                stamp(last)
            )),
            "{out}"
        );
        h.send(
            a,
            "<iq type='get' id='f'><query xmlns='urn:xmpp:mam:2'/></iq>",
        );
        let out = h.take(a);
        assert!(
            out.contains("<field type='text-multi' var='ids'/>"),
            "{out}"
        );
    }

    #[test]
    fn disabled_archive_stores_nothing() {
        let mut config = Config::default();
        config.archive.enabled = false;
        let mut h = Harness::with_config(config);
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        chat(&mut h, b, "alice@localhost", "x");
        assert!(!h.take(a).contains("stanza-id"));
        let (r, _) = query(&mut h, a, "", "");
        assert!(r.is_empty());
    }

    #[test]
    fn datetime_parse_known_values_and_garbage() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2002-09-10T23:08:25Z"),
            Some(1_031_699_305_000_000)
        );
        assert_eq!(
            parse_datetime("2002-09-10T23:08:25.5Z"),
            Some(1_031_699_305_500_000)
        );
        assert_eq!(
            parse_datetime("2002-09-11T01:08:25.1234567+02:00"),
            Some(1_031_699_305_123_456)
        );
        assert_eq!(
            parse_datetime("2000-02-29T12:00:00-01:30"),
            Some(951_831_000_000_000)
        );
        assert_eq!(parse_datetime("1960-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2002-09-10",
            "2002-09-10T23:08:25",
            "2002-13-10T23:08:25Z",
            "2002-09-10T23:08:25.Z",
            "2002-09-10T23:08:25+0200",
            "2002-09-10Té3:08:25Z",
            "２002-09-10T23:08:25Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert_eq!(stamp(1_031_699_305_000_042), "2002-09-10T23:08:25.000042Z");
        assert_eq!(
            parse_datetime(&stamp(1_031_699_305_000_042)),
            Some(1_031_699_305_000_042)
        );
    }
}
