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
    let account = o.from.to_bare();
    // To the sender's own account: archived once, when it arrives there.
    let Some(to) = o.to.filter(|t| t.to_bare() != account) else {
        return super::Flow::Continue;
    };
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
