//! Last Activity (XEP-0012): how long ago an account's user logged out, and the status of
//! their last unavailable presence; for the server, its uptime.
//!
//! Owns: the `jabber:iq:last` answers on behalf of accounts (§3) and of the server (§5), and
//! the per-account record they read (kv "last": wall-clock logout time, the session that wrote
//! it, the status text). The record is written when an account's last session ends, and when
//! its only session announces itself unavailable (to keep that presence's `<status/>`). The
//! hooks here must run before `presence`'s: its outbound hook stops unavailable broadcasts, and
//! its session-end hook forgets the session's presence.
//!
//! Times are wall-clock (`datetime::wall_clock`), since the record must survive restarts.

use super::{Ctx, Flow, IqRequest, IqResult, IqTo, IqType, Outbound, Registry, datetime};
use crate::router::SessionId;
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::xml::{Element, ns};

use super::roster::internal;

pub const NS_LAST: &str = "jabber:iq:last";

const KEY_LAST: &str = "last";

/// Longest status text kept (bytes); a longer one is cut at a character boundary.
pub const MAX_STATUS_BYTES: usize = 1024;

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Get, NS_LAST, account_last);
    r.iq(IqTo::Host, IqType::Get, NS_LAST, server_uptime);
    r.feature(&[IqTo::Host, IqTo::Account], NS_LAST);
    r.outbound.push(note_unavailable);
    r.session_end.push(note_logout);
}

/// What kv "last" holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    /// Seconds since the epoch when the user logged out (or went unavailable).
    at: u64,
    /// The session that wrote it: a logout keeps the status only if that session wrote it.
    session: u64,
    status: String,
}

impl Record {
    /// `"{at}\n{session}\n{status}"`; the status may itself contain line breaks.
    fn encode(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.at, self.session, self.status).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '\n');
        let at = parts.next()?.parse().ok()?;
        let session = parts.next()?.parse().ok()?;
        let status = parts.next()?.to_owned();
        Some(Record {
            at,
            session,
            status,
        })
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // `end` is a char boundary no greater than `s.len()`, so the range is valid.
    &s[..end]
}

fn read_record(ctx: &mut Ctx, account: &str) -> Result<Option<Record>, StanzaError> {
    let raw = ctx.store.kv_get(account, KEY_LAST).map_err(internal)?;
    Ok(raw.and_then(|b| {
        let r = Record::decode(&b);
        if r.is_none() {
            log::error!("the last-activity record of {account} does not parse");
        }
        r
    }))
}

fn write_record(ctx: &mut Ctx, account: &str, record: &Record) {
    if let Err(e) = ctx.store.kv_put(account, KEY_LAST, &record.encode()) {
        log::error!("store: {e}");
    }
}

/// Whether `sid` is the account's only session.
fn only_session(ctx: &Ctx, account: &crate::jid::Jid, sid: SessionId) -> bool {
    ctx.router.sessions_of(account).all(|s| s.id == sid)
}

/// The only session going unavailable: remember its status (§3: "the status message of the
/// last unavailable presence"), in case the user logs out next.
fn note_unavailable(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    if o.kind != StanzaKind::Presence || o.to.is_some() || e.attr("type") != Some("unavailable") {
        return Flow::Continue;
    }
    let account = o.from.to_bare();
    if !only_session(ctx, &account, o.session) {
        return Flow::Continue;
    }
    let status = e
        .child("status", ns::CLIENT)
        .map(|s| truncate(&s.text(), MAX_STATUS_BYTES).to_owned())
        .unwrap_or_default();
    let record = Record {
        at: datetime::unix_seconds(datetime::wall_clock()),
        session: o.session.0,
        status,
    };
    write_record(ctx, &account.to_string(), &record);
    Flow::Continue
}

/// The account's last session ends: the user has logged out now. The status is the one this
/// session sent with its unavailable presence, if it sent one and stayed unavailable.
fn note_logout(ctx: &mut Ctx, sid: SessionId) {
    let Some(s) = ctx.router.session(sid) else {
        return;
    };
    let account = s.jid.to_bare();
    let unavailable = s.presence.is_none();
    if !only_session(ctx, &account, sid) {
        return;
    }
    let key = account.to_string();
    let previous = read_record(ctx, &key).ok().flatten();
    let status = previous
        .filter(|r| unavailable && r.session == sid.0)
        .map(|r| r.status)
        .unwrap_or_default();
    let record = Record {
        at: datetime::unix_seconds(datetime::wall_clock()),
        session: sid.0,
        status,
    };
    write_record(ctx, &key, &record);
}

fn query(seconds: u64, status: &str) -> Element {
    let mut q = Element::new("query", NS_LAST).with_attr("seconds", &seconds.to_string());
    if !status.is_empty() {
        q.children.push(crate::xml::Node::Text(status.to_owned()));
    }
    q
}

/// §3: for the account itself and for those allowed to see its presence (RFC 6121: a
/// subscription `from` the account), `forbidden` for anyone else. An account with a session
/// answers 0 (§3); one that never logged out has nothing to tell (`item-not-found`).
fn account_last(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let account = req.to.to_string();
    if !req.from_owner() {
        let asker = req.from.to_bare().to_string();
        let subscribed = ctx
            .store
            .roster_item(&account, &asker)
            .map_err(internal)?
            .is_some_and(|i| i.subscription.has_from());
        if !subscribed {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        }
    }
    if ctx.router.sessions_of(req.to).next().is_some() {
        return Ok(Some(query(0, "")));
    }
    let Some(record) = read_record(ctx, &account)? else {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    };
    let now = datetime::unix_seconds(datetime::wall_clock());
    // A clock set back since the logout reads as "just now", not as a wrapped number.
    Ok(Some(query(now.saturating_sub(record.at), &record.status)))
}

/// §5: to a server, last activity means uptime.
///
/// The features' context carries no start time yet (`Ctx` has only the current instant), and
/// features keep no state of their own, so the server answers 0 until it does. A result is
/// kept rather than an error because clients ask this to check the server is up.
fn server_uptime(_ctx: &mut Ctx, _req: &IqRequest) -> IqResult {
    Ok(Some(query(0, "")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ConnId;
    use crate::testutil::Harness;

    fn ask(h: &mut Harness, c: ConnId, to: &str) -> String {
        h.send(
            c,
            &format!("<iq type='get' id='l' to='{to}'><query xmlns='jabber:iq:last'/></iq>"),
        );
        h.take(c)
    }

    /// Bob subscribes to Alice's presence and she approves: her roster has bob "from".
    fn bob_subscribes_to_alice(h: &mut Harness, a: ConnId, b: ConnId) {
        h.send(b, "<presence to='alice@localhost' type='subscribe'/>");
        h.send(a, "<presence to='bob@localhost' type='subscribed'/>");
        h.take(a);
        h.take(b);
    }

    /// The seconds of a result, which must be small (the test runs within a few seconds).
    fn assert_recent(out: &str) {
        let i = out.find("seconds='").unwrap_or_else(|| panic!("{out}")) + 9;
        let n: u64 = out[i..]
            .split('\'')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(n < 60, "{out}");
    }

    #[test]
    fn record_encoding_round_trips() {
        let r = Record {
            at: 1_700_000_000,
            session: 7,
            status: "two\nlines".into(),
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(
            Record::decode(b"12\n3\n"),
            Some(Record {
                at: 12,
                session: 3,
                status: String::new()
            })
        );
        assert_eq!(Record::decode(b"x\n3\n"), None);
        assert_eq!(Record::decode(b"12"), None);
        assert_eq!(Record::decode(b"\xff"), None);
    }

    #[test]
    fn truncate_cuts_at_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        // 'é' is two bytes: cutting inside it drops it.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn owner_online_seconds_zero() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = ask(&mut h, a, "alice@localhost");
        assert!(out.contains("type='result'"), "{out}");
        assert!(
            out.contains("<query xmlns='jabber:iq:last' seconds='0'/>"),
            "{out}"
        );
    }

    #[test]
    fn subscriber_after_logout_gets_seconds_and_status() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        bob_subscribes_to_alice(&mut h, a, b);
        h.send(a, "<presence/>");
        h.send(
            a,
            "<presence type='unavailable'><status>Heading Home</status></presence>",
        );
        h.send(a, "</stream:stream>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains(">Heading Home</query>"), "{out}");
        assert_recent(&out);
    }

    #[test]
    fn logout_without_unavailable_has_no_status() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        bob_subscribes_to_alice(&mut h, a, b);
        h.send(
            a,
            "<presence type='unavailable'><status>old</status></presence>",
        );
        // Available again, then the connection ends without a word.
        h.send(a, "<presence/>");
        h.send(a, "</stream:stream>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(
            out.contains("<query xmlns='jabber:iq:last' seconds='"),
            "{out}"
        );
        assert!(out.contains("'/></iq>"), "{out}");
        assert!(!out.contains("old"), "{out}");
        assert_recent(&out);
    }

    #[test]
    fn status_of_a_previous_login_not_reused() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        bob_subscribes_to_alice(&mut h, a, b);
        h.send(
            a,
            "<presence type='unavailable'><status>first</status></presence>",
        );
        h.send(a, "</stream:stream>");
        assert!(ask(&mut h, b, "alice@localhost").contains(">first</query>"));
        // A second login that never sends presence and ends.
        let a2 = h.login("alice", "a2");
        h.send(a2, "</stream:stream>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(!out.contains("first"), "{out}");
    }

    #[test]
    fn another_session_online_seconds_zero() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let a2 = h.login("alice", "a2");
        let b = h.login("bob", "b");
        bob_subscribes_to_alice(&mut h, a, b);
        h.send(
            a2,
            "<presence type='unavailable'><status>gone</status></presence>",
        );
        h.send(a2, "</stream:stream>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(
            out.contains("<query xmlns='jabber:iq:last' seconds='0'/>"),
            "{out}"
        );
        // The other session ends later without status: no status from a2's is shown.
        h.send(a, "</stream:stream>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(!out.contains("gone"), "{out}");
        assert_recent(&out);
    }

    #[test]
    fn stranger_forbidden() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let c = h.login("carol", "c");
        h.send(a, "</stream:stream>");
        let out = ask(&mut h, c, "alice@localhost");
        assert!(
            out.contains("type='error'") && out.contains("<forbidden"),
            "{out}"
        );
        assert!(!out.contains("seconds"), "{out}");
    }

    #[test]
    fn subscription_the_other_way_forbidden() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        // Alice subscribes to Bob: Bob may not see Alice's presence.
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>");
        let out = ask(&mut h, b, "alice@localhost");
        assert!(out.contains("<forbidden"), "{out}");
        // Alice may see Bob's.
        let out = ask(&mut h, a, "bob@localhost");
        assert!(out.contains("seconds='0'"), "{out}");
    }

    /// Calls the account handler directly, with no sessions and `stored` as the record.
    fn direct(stored: Option<&[u8]>) -> IqResult {
        use crate::config::Config;
        use crate::jid::Jid;
        use crate::router::Router;
        use crate::store::{MemoryStore, Store};
        let mut store = MemoryStore::new();
        if let Some(v) = stored {
            store.kv_put("alice@localhost", KEY_LAST, v).unwrap();
        }
        let config = Config::default();
        let mut router = Router::new();
        let mut out = super::super::Outbox::default();
        let mut ctx = Ctx {
            now: std::time::Instant::now(),
            config: &config,
            store: &mut store,
            router: &mut router,
            out: &mut out,
        };
        let from = Jid::parse("alice@localhost/a").unwrap();
        let to = Jid::parse("alice@localhost").unwrap();
        let payload = Element::new("query", NS_LAST);
        let iq = Element::new("iq", ns::CLIENT).with_child(payload.clone());
        let disco = super::super::DiscoInfo::default();
        let req = IqRequest {
            from: &from,
            session: None,
            to: &to,
            iq_type: IqType::Get,
            payload: &payload,
            iq: &iq,
            disco: &disco,
        };
        account_last(&mut ctx, &req)
    }

    #[test]
    fn never_logged_out_item_not_found() {
        let err = direct(None).unwrap_err();
        assert_eq!(err.condition, StanzaCondition::ItemNotFound);
    }

    #[test]
    fn stored_record_answers_elapsed_seconds() {
        let then = datetime::unix_seconds(datetime::wall_clock()) - 903;
        let stored = format!("{then}\n1\nHeading Home");
        let q = direct(Some(stored.as_bytes())).unwrap().unwrap();
        let seconds: u64 = q.attr("seconds").unwrap().parse().unwrap();
        assert!((903..963).contains(&seconds), "{seconds}");
        assert_eq!(q.text(), "Heading Home");
    }

    #[test]
    fn record_from_the_future_reads_as_zero() {
        let later = datetime::unix_seconds(datetime::wall_clock()) + 3600;
        let q = direct(Some(format!("{later}\n1\n").as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(q.attr("seconds"), Some("0"));
    }

    #[test]
    fn corrupt_record_item_not_found() {
        let err = direct(Some(b"garbage")).unwrap_err();
        assert_eq!(err.condition, StanzaCondition::ItemNotFound);
    }

    #[test]
    fn host_query_answers_result() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = ask(&mut h, a, "localhost");
        assert!(
            out.contains("type='result'") && out.contains("from='localhost'"),
            "{out}"
        );
        assert!(
            out.contains("<query xmlns='jabber:iq:last' seconds='"),
            "{out}"
        );
    }

    #[test]
    fn set_and_unknown_account_service_unavailable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='set' id='l' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>",
        );
        assert!(h.take(a).contains("<service-unavailable"));
        assert!(ask(&mut h, a, "nobody@localhost").contains("<service-unavailable"));
    }
}
