//! In-band registration (XEP-0077, `jabber:iq:register`): creating an account from a client
//! before it authenticates, changing one's password, and removing one's account.
//!
//! Owns: the wire form of registration requests and answers, the rules a new username must
//! pass, creating the account in the store, and the per-IP limit on account creation
//! (`RegistrationLimiter`, which the server keeps). Before authentication the stream is
//! `stream::c2s`'s: it answers the get, checks the request and derives the credentials, then
//! asks the server (`Upcall::Register`) to call `create_account_limited`. After
//! authentication the IQ handlers here answer like any feature.
//!
//! Account creation is off unless `registration.enabled`; password change and removal of
//! one's own account are always on (the stream is always TLS, XEP-0077 §3.3's condition).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::config::Config;
use crate::jid::Jid;
use crate::sasl::{Credentials, DEFAULT_ITERATIONS};
use crate::stanza::{ErrorType, StanzaCondition, StanzaError};
use crate::store::Store;
use crate::xml::{Element, ns};

pub const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature that says registration is possible before authentication.
pub const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// Longest password accepted (bytes). A password is hashed twice with PBKDF2; a long one
/// costs little more, but there is no reason to take one bigger than this.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Registration attempts (IQ sets) one unauthenticated connection may make; after that, or
/// after one success, further sets get `not-acceptable` (XEP-0077 §3.1 allows this). Each
/// attempt costs two PBKDF2 runs, so this also bounds the CPU a connection can spend.
pub const MAX_ATTEMPTS_PER_CONNECTION: u32 = 3;

const INSTRUCTIONS: &str = "Choose a username and password for use with this service.";

pub fn register(r: &mut Registry) {
    // With no `to`, a client's IQ is addressed to its own account (RFC 6120 §10.3.3), which
    // is what XEP-0077 §3.2 recommends for removal; with `to` the domain, to the server.
    for to in [IqTo::Host, IqTo::Account] {
        r.iq(to, IqType::Get, NS_REGISTER, get);
        r.iq(to, IqType::Set, NS_REGISTER, set);
    }
    r.feature(&[IqTo::Host], NS_REGISTER);
}

/// The pre-authentication stream feature, offered only when registration is enabled.
pub fn stream_feature(config: &Config) -> Option<Element> {
    config
        .registration
        .enabled
        .then(|| Element::new("register", NS_REGISTER_FEATURE))
}

/// The answer to a get before authentication (XEP-0077 §3.1): the fields to fill in.
pub fn form() -> Element {
    Element::new("query", NS_REGISTER)
        .with_child(Element::new("instructions", NS_REGISTER).with_text(INSTRUCTIONS))
        .with_child(Element::new("username", NS_REGISTER))
        .with_child(Element::new("password", NS_REGISTER))
}

/// What an IQ set in `jabber:iq:register` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Register, or change the password: the fields given (`None` when absent).
    Fields {
        username: Option<String>,
        password: Option<String>,
    },
    /// XEP-0077 §3.2: cancel the registration.
    Remove,
}

/// Reads the `<query/>` of an IQ set.
pub fn parse_set(query: &Element) -> Result<Request, StanzaError> {
    if query.child("remove", NS_REGISTER).is_some() {
        // §3.2: `<remove/>` must be the only child.
        if query.child_elements().count() != 1 {
            return Err(StanzaError::new(StanzaCondition::BadRequest));
        }
        return Ok(Request::Remove);
    }
    Ok(Request::Fields {
        username: query.child("username", NS_REGISTER).map(Element::text),
        password: query.child("password", NS_REGISTER).map(Element::text),
    })
}

/// The account a username names on `domain`, normalised with the JID rules (the same ones
/// SASL applies to the name a client logs in with). Empty: `not-acceptable`; anything that is
/// not a valid localpart: `jid-malformed`.
pub fn account_jid(username: &str, domain: &str) -> Result<Jid, StanzaError> {
    if username.is_empty() {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "a username is required",
        ));
    }
    let malformed = || StanzaError::with_text(StanzaCondition::JidMalformed, "invalid username");
    // '/' and '@' would make the parse below read a different JID than the one meant.
    if username.contains(['/', '@']) {
        return Err(malformed());
    }
    let jid = Jid::parse(&format!("{username}@{domain}")).map_err(|_| malformed())?;
    if jid.local().is_none() || !jid.is_bare() || jid.domain() != domain {
        return Err(malformed());
    }
    Ok(jid)
}

/// SCRAM credentials for a new password. Empty, too long or refused by SASLprep:
/// `not-acceptable`.
pub fn derive_credentials(
    password: &str,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Credentials, StanzaError> {
    if password.is_empty() {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "a password is required",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the password is too long",
        ));
    }
    Credentials::derive(password, DEFAULT_ITERATIONS, random).map_err(|_| {
        StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the password contains characters that are not allowed",
        )
    })
}

fn internal(e: impl std::fmt::Display) -> StanzaError {
    log::error!("store: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

/// Creates `account` (normalised, bare, from `account_jid`) with `creds`. Refuses with
/// `service-unavailable` when registration is off or the domain is not hosted, and with
/// `conflict` when the account exists (XEP-0077 §3.1).
pub fn create_account(
    store: &mut dyn Store,
    config: &Config,
    account: &Jid,
    creds: &Credentials,
) -> Result<(), StanzaError> {
    if !config.registration.enabled || !config.hosts(account.domain()) {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    if account.local().is_none() || !account.is_bare() {
        return Err(StanzaError::new(StanzaCondition::JidMalformed));
    }
    match store.account_create(&account.to_string(), creds) {
        Ok(true) => {
            log::info!("registered {account}");
            Ok(())
        }
        Ok(false) => Err(StanzaError::new(StanzaCondition::Conflict)),
        Err(e) => Err(internal(e)),
    }
}

/// `create_account` behind the per-IP limit: what the server calls for `Upcall::Register`.
/// Only successful creations count against the limit.
pub fn create_account_limited(
    limiter: &mut RegistrationLimiter,
    ip: IpAddr,
    now: Instant,
    store: &mut dyn Store,
    config: &Config,
    account: &Jid,
    creds: &Credentials,
) -> Result<(), StanzaError> {
    let per_hour = config.registration.per_ip_per_hour;
    if !limiter.allow(ip, now, per_hour) {
        log::info!("registration from {ip} refused: over {per_hour} accounts per hour");
        return Err(StanzaError {
            error_type: ErrorType::Wait,
            ..StanzaError::with_text(
                StanzaCondition::NotAcceptable,
                "too many accounts were created from this address; try again later",
            )
        });
    }
    create_account(store, config, account, creds)?;
    limiter.record(ip, now);
    Ok(())
}

/// The window the per-IP limit counts over.
const WINDOW: Duration = Duration::from_secs(3600);

/// Addresses the limiter remembers at once. An entry is ~48 bytes, so this bounds it to about
/// 50 KB. When full, expired entries are dropped; if none has expired, new addresses are
/// refused until one does: past that many registering addresses in an hour the server is
/// being flooded, and refusing (registration only) is the safe side.
pub const MAX_TRACKED_ADDRESSES: usize = 1024;

/// Accounts created per address in the current window: a fixed window per address (its first
/// creation starts it), O(1) memory per address whatever the configured rate.
#[derive(Debug, Default)]
pub struct RegistrationLimiter {
    by_addr: HashMap<IpAddr, (Instant, u32)>,
}

impl RegistrationLimiter {
    pub fn new() -> RegistrationLimiter {
        RegistrationLimiter::default()
    }

    /// Whether `ip` may create one more account now, with at most `per_hour` per window.
    pub fn allow(&mut self, ip: IpAddr, now: Instant, per_hour: u32) -> bool {
        let key = key(ip);
        match self.by_addr.get(&key) {
            Some((start, n)) if now.saturating_duration_since(*start) < WINDOW => *n < per_hour,
            Some(_) => true,
            None => {
                if self.by_addr.len() >= MAX_TRACKED_ADDRESSES {
                    self.expire(now);
                }
                per_hour > 0 && self.by_addr.len() < MAX_TRACKED_ADDRESSES
            }
        }
    }

    /// Counts one account created by `ip`. Call only after `allow` said yes.
    pub fn record(&mut self, ip: IpAddr, now: Instant) {
        let key = key(ip);
        if !self.by_addr.contains_key(&key) && self.by_addr.len() >= MAX_TRACKED_ADDRESSES {
            self.expire(now);
            if self.by_addr.len() >= MAX_TRACKED_ADDRESSES {
                return;
            }
        }
        let e = self.by_addr.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        self.by_addr
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
    }
}

/// What the limit is counted per: an IPv4 address, or an IPv6 /64 (one subscriber usually
/// has a whole /64, so counting single IPv6 addresses would count nothing).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                for s in &mut seg[4..] {
                    *s = 0;
                }
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// The account an authenticated request is about: always the sender's own, never `to`'s.
/// Only local sessions may use it, on their own domain (`to` is the domain or the account).
fn own_account(ctx: &Ctx, req: &IqRequest) -> Result<Jid, StanzaError> {
    let account = req.from.to_bare();
    let local = req.session.is_some() && ctx.config.hosts(account.domain());
    if !local || account.local().is_none() {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    if req.to.local().is_some() && *req.to != account {
        // Another account's registration is not this one's business: answered as if the
        // namespace were unknown there, like disco to a stranger's account.
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    if req.to.domain() != account.domain() {
        // Another hosted domain is a service this account is not registered with.
        return Err(StanzaError::new(StanzaCondition::NotAllowed));
    }
    Ok(account)
}

/// XEP-0077 §3.1: an authenticated entity is told it is registered, and as whom.
fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let account = own_account(ctx, req)?;
    let local = account.local().unwrap_or_default();
    Ok(Some(
        Element::new("query", NS_REGISTER)
            .with_child(Element::new("registered", NS_REGISTER))
            .with_child(Element::new("username", NS_REGISTER).with_text(local)),
    ))
}

fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let account = own_account(ctx, req)?;
    match parse_set(req.payload)? {
        Request::Remove => remove(ctx, &account),
        Request::Fields { username, password } => {
            change_password(ctx, &account, username.as_deref(), password.as_deref())
        }
    }
}

/// XEP-0077 §3.3. The salts come from the operating system (`ring`'s `SystemRandom`, the
/// getrandom syscall): `Ctx` carries no random source, and a salt must not be predictable.
fn change_password(
    ctx: &mut Ctx,
    account: &Jid,
    username: Option<&str>,
    password: Option<&str>,
) -> IqResult {
    if let Some(u) = username {
        let named = account_jid(u, account.domain()).ok();
        if named.as_ref() != Some(account) {
            return Err(StanzaError::with_text(
                StanzaCondition::BadRequest,
                "the username is not the account's",
            ));
        }
    }
    // §3.3: an empty password never replaces the existing one.
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(StanzaError::with_text(
            StanzaCondition::BadRequest,
            "a new password is required",
        ));
    };
    let creds = derive_credentials(password, &mut system_random()?)?;
    match ctx
        .store
        .account_set_credentials(&account.to_string(), &creds)
    {
        Ok(true) => {
            log::info!("{account}: password changed in-band");
            Ok(None)
        }
        Ok(false) => Err(StanzaError::new(StanzaCondition::ItemNotFound)),
        Err(e) => Err(internal(e)),
    }
}

/// A filler of random bytes from the OS; fails with `internal-server-error` if the OS does.
fn system_random() -> Result<impl FnMut(&mut [u8]), StanzaError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    // Probe once so that a broken source is an error here rather than a zero salt later.
    let mut probe = [0u8; 1];
    if rng.fill(&mut probe).is_err() {
        log::error!("the system random source failed");
        return Err(StanzaError::new(StanzaCondition::InternalServerError));
    }
    Ok(move |buf: &mut [u8]| {
        if rng.fill(buf).is_err() {
            // Unreachable in practice (the probe succeeded); a zero salt is still a valid,
            // if weaker, salt and the password stays hashed.
            log::error!("the system random source failed");
            buf.fill(0);
        }
    })
}

/// XEP-0077 §3.2: deletes the account with everything stored for it, after telling each
/// contact the subscriptions are gone (so their rosters are right), then closes the
/// account's sessions with `<not-authorized/>` (after the result, which the server sends
/// before what the handler queued).
fn remove(ctx: &mut Ctx, account: &Jid) -> IqResult {
    let me = account.to_string();
    let items = ctx.store.roster_items(&me).map_err(internal)?;
    for item in &items {
        // The contact's side: it no longer gets our presence, nor we its.
        if item.subscription.has_to() || item.ask {
            ctx.out.route(subscription("unsubscribe", &me, &item.jid));
        }
        if item.subscription.has_from() || item.pending_in {
            ctx.out.route(subscription("unsubscribed", &me, &item.jid));
        }
    }
    match ctx.store.account_delete(&me) {
        Ok(true) => {
            ctx.router.blocking.forget(&me);
            log::info!("{account}: account removed in-band");
            ctx.out.close_account(account, "account removed");
            Ok(None)
        }
        Ok(false) => Err(StanzaError::new(StanzaCondition::ItemNotFound)),
        Err(e) => Err(internal(e)),
    }
}

fn subscription(kind: &str, from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("from", from)
        .with_attr("to", to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ConnId, TlsInfo};
    use crate::testutil::{HEADER, Harness, b64};

    fn enabled(per_hour: u32) -> Harness {
        let mut config = Config::default();
        config.registration.enabled = true;
        config.registration.per_ip_per_hour = per_hour;
        Harness::with_config(config)
    }

    /// A new connection through STARTTLS, at the SASL step; returns it and the features.
    fn tls_stream(h: &mut Harness) -> (ConnId, String) {
        let c = h.connect();
        h.send(c, HEADER);
        h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        h.server.handle_tls_ready(h.now, c, TlsInfo::default());
        h.drain();
        h.take(c);
        h.send(c, HEADER);
        let features = h.take(c);
        (c, features)
    }

    fn plain(user: &str, pw: &str) -> String {
        let auth = b64(format!("\0{user}\0{pw}").as_bytes());
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>")
    }

    /// Whether `user`/`pw` authenticates on a fresh connection.
    fn can_login(h: &mut Harness, user: &str, pw: &str) -> bool {
        let (c, _) = tls_stream(h);
        h.send(c, &plain(user, pw));
        // A failure is answered after the failure delay.
        h.advance(Duration::from_secs(2));
        h.take(c).contains("<success")
    }

    fn reg_set(id: &str, user: &str, pw: &str) -> String {
        format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
             <username>{user}</username><password>{pw}</password></query></iq>"
        )
    }

    fn error_of(out: &str, id: &str, condition: &str) -> bool {
        out.contains(&format!("type='error' id='{id}'")) && out.contains(&format!("<{condition} "))
    }

    #[test]
    fn preauth_disabled_get_service_unavailable_and_not_advertised() {
        let mut h = Harness::new();
        let (c, features) = tls_stream(&mut h);
        assert!(!features.contains(NS_REGISTER_FEATURE), "{features}");
        h.send(
            c,
            "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>",
        );
        let out = h.take(c);
        assert!(error_of(&out, "r1", "service-unavailable"), "{out}");
        h.send(c, &reg_set("r2", "dave", "secret"));
        assert!(error_of(&h.take(c), "r2", "service-unavailable"));
        assert!(h.closed.is_empty());
        assert!(!can_login(&mut h, "dave", "secret"));
    }

    #[test]
    fn preauth_enabled_get_returns_form_and_feature_advertised() {
        let mut h = enabled(5);
        let (c, features) = tls_stream(&mut h);
        assert!(
            features.contains("<register xmlns='http://jabber.org/features/iq-register'/>"),
            "{features}"
        );
        h.send(
            c,
            "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>",
        );
        let out = h.take(c);
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains("id='r1'"), "{out}");
        assert!(out.contains("<username/><password/></query></iq>"), "{out}");
        assert!(out.contains("<instructions>"), "{out}");
    }

    #[test]
    fn preauth_set_creates_account_then_login_succeeds() {
        let mut h = enabled(5);
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r1", "Dave", "secret"));
        assert_eq!(h.take(c), "<iq type='result' id='r1'/>");
        // The localpart was normalised: any case logs in.
        assert!(can_login(&mut h, "dave", "secret"));
        assert!(can_login(&mut h, "DAVE", "secret"));
        assert!(!can_login(&mut h, "dave", "pw"));
        // The registering stream goes on to authenticate as the new account.
        h.send(c, &plain("dave", "secret"));
        assert!(h.take(c).contains("<success"));
    }

    #[test]
    fn preauth_set_pipelined_auth_waits_for_account() {
        let mut h = enabled(5);
        let (c, _) = tls_stream(&mut h);
        h.send(
            c,
            &(reg_set("r1", "erin", "secret") + &plain("erin", "secret")),
        );
        let out = h.take(c);
        let result = out.find("<iq type='result' id='r1'/>");
        let success = out.find("<success");
        assert!(result.is_some() && success > result, "{out}");
    }

    #[test]
    fn preauth_set_existing_username_gets_conflict() {
        let mut h = enabled(5);
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r1", "ALICE", "other"));
        let out = h.take(c);
        assert!(error_of(&out, "r1", "conflict"), "{out}");
        assert!(out.contains("type='cancel'"), "{out}");
        assert!(can_login(&mut h, "alice", "pw"));
        assert!(!can_login(&mut h, "alice", "other"));
    }

    #[test]
    fn preauth_set_bad_fields_get_errors_named_by_xep() {
        let mut h = enabled(5);
        for (user, pw, condition) in [
            ("a b", "pw", "jid-malformed"),
            ("x/y", "pw", "jid-malformed"),
            ("x@y", "pw", "jid-malformed"),
            ("", "pw", "not-acceptable"),
            ("frank", "", "not-acceptable"),
        ] {
            // Each connection has a few attempts only: one connection per case.
            let (c, _) = tls_stream(&mut h);
            h.send(c, &reg_set("r", user, pw));
            let out = h.take(c);
            assert!(error_of(&out, "r", condition), "{user:?}/{pw:?}: {out}");
        }
        let (c, _) = tls_stream(&mut h);
        h.send(
            c,
            "<iq type='set' id='m'><query xmlns='jabber:iq:register'><username>gina</username></query></iq>",
        );
        assert!(error_of(&h.take(c), "m", "not-acceptable"));
        h.send(
            c,
            "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
        );
        assert!(error_of(&h.take(c), "rm", "unexpected-request"));
        assert!(h.closed.is_empty());
        assert!(!can_login(&mut h, "frank", "pw"));
    }

    #[test]
    fn preauth_second_set_after_success_not_acceptable() {
        let mut h = enabled(5);
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r1", "dave", "secret"));
        h.take(c);
        h.send(c, &reg_set("r2", "dave2", "secret"));
        assert!(error_of(&h.take(c), "r2", "not-acceptable"));
        assert!(!can_login(&mut h, "dave2", "secret"));
    }

    #[test]
    fn preauth_attempts_per_connection_bounded() {
        let mut h = enabled(5);
        let (c, _) = tls_stream(&mut h);
        for n in 0..MAX_ATTEMPTS_PER_CONNECTION {
            h.send(c, &reg_set(&format!("r{n}"), "alice", "x"));
            assert!(error_of(&h.take(c), &format!("r{n}"), "conflict"));
        }
        h.send(c, &reg_set("last", "newname", "x"));
        assert!(error_of(&h.take(c), "last", "not-acceptable"));
    }

    #[test]
    fn preauth_over_ip_limit_refused_until_an_hour_passed() {
        let mut h = enabled(1);
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r1", "dave", "secret"));
        assert!(h.take(c).contains("type='result'"));
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r2", "erin", "secret"));
        let out = h.take(c);
        assert!(error_of(&out, "r2", "not-acceptable"), "{out}");
        assert!(out.contains("type='wait'"), "{out}");
        assert!(!can_login(&mut h, "erin", "secret"));
        h.advance(Duration::from_secs(3600));
        let (c, _) = tls_stream(&mut h);
        h.send(c, &reg_set("r3", "erin", "secret"));
        assert!(h.take(c).contains("type='result'"));
    }

    #[test]
    fn preauth_register_before_tls_closes_stream() {
        let mut h = enabled(5);
        let c = h.connect();
        h.send(c, HEADER);
        h.take(c);
        h.send(c, &reg_set("r1", "dave", "secret"));
        assert!(h.take(c).contains("<not-authorized"));
        assert_eq!(h.closed, vec![c]);
    }

    #[test]
    fn bound_get_says_registered_with_username() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='g' to='localhost'><query xmlns='jabber:iq:register'/></iq>",
        );
        let out = h.take(a);
        assert!(
            out.contains("<registered/><username>alice</username>"),
            "{out}"
        );
    }

    #[test]
    fn bound_password_change_then_only_new_password_logs_in() {
        // Always on, even with account creation off.
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='set' id='c1' to='localhost'><query xmlns='jabber:iq:register'>\
             <username>alice</username><password>n3w</password></query></iq>",
        );
        let out = h.take(a);
        assert!(
            out.contains("type='result'") && out.contains("id='c1'"),
            "{out}"
        );
        assert!(can_login(&mut h, "alice", "n3w"));
        assert!(!can_login(&mut h, "alice", "pw"));
        assert!(!h.closed.contains(&a));
    }

    #[test]
    fn bound_password_change_refusals_keep_old_password() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        for (id, query) in [
            // Someone else's username.
            ("u", "<username>bob</username><password>x</password>"),
            // §3.3: an empty password never replaces the old one.
            ("e", "<username>alice</username><password/>"),
            ("n", "<username>alice</username>"),
        ] {
            h.send(
                a,
                &format!(
                    "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>{query}</query></iq>"
                ),
            );
            let out = h.take(a);
            assert!(error_of(&out, id, "bad-request"), "{id}: {out}");
        }
        // Addressed to another account: never acts on it.
        h.send(
            b,
            "<iq type='set' id='s' to='alice@localhost'><query xmlns='jabber:iq:register'>\
             <username>alice</username><password>x</password></query></iq>",
        );
        assert!(error_of(&h.take(b), "s", "service-unavailable"));
        h.send(
            b,
            "<iq type='set' id='s2' to='alice@localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>",
        );
        assert!(error_of(&h.take(b), "s2", "service-unavailable"));
        assert!(can_login(&mut h, "alice", "pw"));
        assert!(can_login(&mut h, "bob", "pw"));
    }

    #[test]
    fn bound_remove_with_other_children_bad_request() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'><remove/><username>alice</username></query></iq>",
        );
        assert!(error_of(&h.take(a), "r", "bad-request"));
        assert!(can_login(&mut h, "alice", "pw"));
    }

    #[test]
    fn bound_remove_deletes_account_and_closes_its_sessions() {
        let mut h = Harness::new();
        let a1 = h.login("alice", "one");
        let a2 = h.login("alice", "two");
        let b = h.login("bob", "b");
        // Bob has alice on his roster; she subscribes, he approves: his item has `from`.
        h.send(
            b,
            "<iq type='set' id='add'><query xmlns='jabber:iq:roster'><item jid='alice@localhost'/></query></iq>",
        );
        h.send(a1, "<presence type='subscribe' to='bob@localhost'/>");
        h.send(b, "<presence type='subscribed' to='alice@localhost'/>");
        h.send(
            b,
            "<iq type='get' id='ro'><query xmlns='jabber:iq:roster'/></iq>",
        );
        let roster = h.take(b);
        assert!(roster.contains("subscription='from'"), "{roster}");
        h.send(b, "<presence/>");
        h.take(a1);
        h.take(a2);
        h.take(b);

        h.send(
            a1,
            "<iq type='set' id='unreg'><query xmlns='jabber:iq:register'><remove/></query></iq>",
        );
        let out = h.take(a1);
        let result = out.find("<iq type='result' id='unreg'");
        let error = out.find("<not-authorized");
        assert!(result.is_some() && error > result, "{out}");
        assert!(h.take(a2).contains("<not-authorized"));
        assert!(h.closed.contains(&a1) && h.closed.contains(&a2));
        assert!(!h.closed.contains(&b));
        // Bob learns the subscription is gone, and his roster says so.
        let to_bob = h.take(b);
        assert!(
            to_bob.contains("type='unsubscribe'") && to_bob.contains("from='alice@localhost'"),
            "{to_bob}"
        );
        assert!(to_bob.contains("subscription='none'"), "{to_bob}");
        assert!(!can_login(&mut h, "alice", "pw"));
    }

    #[test]
    fn account_jid_normalises_and_refuses() {
        assert_eq!(
            account_jid("Dave", "localhost").unwrap().to_string(),
            "dave@localhost"
        );
        for bad in ["a/b", "a@b", "a b", "a'b", "\u{7}"] {
            assert_eq!(
                account_jid(bad, "localhost").unwrap_err().condition,
                StanzaCondition::JidMalformed,
                "{bad:?}"
            );
        }
        assert_eq!(
            account_jid("", "localhost").unwrap_err().condition,
            StanzaCondition::NotAcceptable
        );
        assert_eq!(
            account_jid(&"x".repeat(1024), "localhost")
                .unwrap_err()
                .condition,
            StanzaCondition::JidMalformed
        );
    }

    #[test]
    fn derive_credentials_refuses_empty_and_oversized() {
        let mut zero = |b: &mut [u8]| b.fill(0);
        for bad in [String::new(), "x".repeat(MAX_PASSWORD_BYTES + 1)] {
            assert_eq!(
                derive_credentials(&bad, &mut zero).unwrap_err().condition,
                StanzaCondition::NotAcceptable
            );
        }
        let c = derive_credentials("secret", &mut zero).unwrap();
        assert!(crate::sasl::verify_password(&c, "secret"));
    }

    #[test]
    fn create_account_disabled_or_foreign_domain_unavailable() {
        let mut store = crate::store::MemoryStore::new();
        let creds = crate::store::conformance::creds(1);
        let jid = Jid::parse("dave@localhost").unwrap();
        let mut config = Config::default();
        assert_eq!(
            create_account(&mut store, &config, &jid, &creds)
                .unwrap_err()
                .condition,
            StanzaCondition::ServiceUnavailable
        );
        config.registration.enabled = true;
        let other = Jid::parse("dave@elsewhere.example").unwrap();
        assert_eq!(
            create_account(&mut store, &config, &other, &creds)
                .unwrap_err()
                .condition,
            StanzaCondition::ServiceUnavailable
        );
        assert_eq!(create_account(&mut store, &config, &jid, &creds), Ok(()));
        assert_eq!(
            create_account(&mut store, &config, &jid, &creds)
                .unwrap_err()
                .condition,
            StanzaCondition::Conflict
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limiter_counts_per_address_until_window_passes() {
        let mut l = RegistrationLimiter::new();
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(l.allow(a, t, 3));
            l.record(a, t);
        }
        assert!(!l.allow(a, t + Duration::from_secs(3599), 3));
        assert!(l.allow(ip("192.0.2.2"), t, 3));
        assert!(l.allow(a, t + WINDOW, 3));
        l.record(a, t + WINDOW);
        assert!(l.allow(a, t + WINDOW, 3));
    }

    #[test]
    fn limiter_ipv6_counted_per_64_and_mapped_v4_as_v4() {
        let mut l = RegistrationLimiter::new();
        let t = Instant::now();
        l.record(ip("2001:db8:1:2::1"), t);
        assert!(!l.allow(ip("2001:db8:1:2:ffff::9"), t, 1));
        assert!(l.allow(ip("2001:db8:1:3::1"), t, 1));
        l.record(ip("::ffff:192.0.2.7"), t);
        assert!(!l.allow(ip("192.0.2.7"), t, 1));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn limiter_full_table_expires_old_then_refuses_new_addresses() {
        let mut l = RegistrationLimiter::new();
        let t = Instant::now();
        for n in 0..MAX_TRACKED_ADDRESSES as u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            l.record(a, t);
        }
        assert_eq!(l.len(), MAX_TRACKED_ADDRESSES);
        let newcomer = ip("198.51.100.1");
        assert!(!l.allow(newcomer, t + Duration::from_secs(10), 5));
        l.record(newcomer, t + Duration::from_secs(10));
        assert_eq!(l.len(), MAX_TRACKED_ADDRESSES);
        // A known address is still counted normally.
        assert!(l.allow(ip("10.0.0.1"), t, 5));
        // Once the old entries expire, there is room again.
        assert!(l.allow(newcomer, t + WINDOW, 5));
        assert_eq!(l.len(), 0);
    }
}
