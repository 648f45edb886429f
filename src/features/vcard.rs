//! vcard-temp (XEP-0054) and vCard-based avatars (XEP-0153).
//!
//! Owns: each account's vCard (stored whole, as the client sent it, under kv key "vcard"),
//! the SHA-1 of its photo (kv "vcard-photo-hash"), and adding that hash to the account's
//! presence broadcasts. The server's own vCard is empty. Leaves the broadcast itself to
//! `presence`: the hook here must run before `presence`'s, which stops the stanza.

use std::fmt::Write as _;

use ring::digest;

use super::{Ctx, Flow, IqRequest, IqResult, IqTo, IqType, Outbound, Registry, roster::internal};
use crate::stanza::{StanzaCondition, StanzaError, StanzaKind};
use crate::xml::fragment::parse_element;
use crate::xml::{Element, ns};

pub const NS_VCARD: &str = "vcard-temp";
/// XEP-0153 §3.1: the photo hash in presence.
pub const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";

const KEY_VCARD: &str = "vcard";
const KEY_PHOTO_HASH: &str = "vcard-photo-hash";

/// Largest vCard stored, serialized. XEP-0153 §5 asks for avatars under 8 KB, but clients
/// send bigger ones; this leaves room for a reasonable photo while keeping one account's
/// vCard from filling a small device. A larger one is refused with `not-acceptable`.
pub const MAX_VCARD_BYTES: usize = 64 * 1024;

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Get, NS_VCARD, get);
    r.iq(IqTo::Account, IqType::Set, NS_VCARD, set);
    r.iq(IqTo::Host, IqType::Get, NS_VCARD, host_get);
    r.feature(&[IqTo::Host, IqTo::Account], NS_VCARD);
    r.outbound.push(advertise_photo);
}

fn empty_vcard() -> Element {
    Element::new("vCard", NS_VCARD)
}

fn check_payload(req: &IqRequest) -> Result<(), StanzaError> {
    if req.payload.is("vCard", NS_VCARD) {
        Ok(())
    } else {
        Err(StanzaError::new(StanzaCondition::BadRequest))
    }
}

/// XEP-0054 §3.1 (one's own) and §3.3 (another user's): anyone may read a vCard.
///
/// An account without a vCard answers its owner with an empty `<vCard/>` (§3.1 allows it, and
/// clients treat it as "nothing set yet", as they get from ejabberd and Prosody, where
/// `item-not-found` makes some log an error at every login). Others get
/// `service-unavailable`, which §3.3 requires so that they cannot tell an account without a
/// vCard from one that does not exist (the router answers the latter the same way).
fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    check_payload(req)?;
    let account = req.to.to_string();
    match ctx.store.kv_get(&account, KEY_VCARD).map_err(internal)? {
        Some(bytes) => match parse_element(&bytes) {
            Some(v) => Ok(Some(v)),
            None => {
                log::error!("the stored vCard of {account} does not parse");
                Err(StanzaError::new(StanzaCondition::InternalServerError))
            }
        },
        None if req.from_owner() => Ok(Some(empty_vcard())),
        None => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
    }
}

/// XEP-0054 §3.2: the whole vCard is replaced; only its owner may set it. An empty `<vCard/>`
/// deletes it.
fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    if !req.from_owner() {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    }
    check_payload(req)?;
    let account = req.to.to_string();
    if req.payload.first_child().is_none() {
        ctx.store.kv_delete(&account, KEY_VCARD).map_err(internal)?;
        ctx.store
            .kv_delete(&account, KEY_PHOTO_HASH)
            .map_err(internal)?;
        super::pep::avatar::vcard_stored(ctx, req.to, req.payload);
        return Ok(None);
    }
    let bytes = req.payload.to_bytes(ns::CLIENT);
    if bytes.len() > MAX_VCARD_BYTES {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the vCard is too large",
        ));
    }
    ctx.store
        .kv_put(&account, KEY_VCARD, &bytes)
        .map_err(internal)?;
    match photo_hash(req.payload) {
        Some(hash) => ctx
            .store
            .kv_put(&account, KEY_PHOTO_HASH, hash.as_bytes())
            .map_err(internal)?,
        None => ctx
            .store
            .kv_delete(&account, KEY_PHOTO_HASH)
            .map_err(internal)?,
    }
    // XEP-0398: the photo becomes the PEP avatar too.
    super::pep::avatar::vcard_stored(ctx, req.to, req.payload);
    Ok(None)
}

/// XEP-0398: replaces the stored vCard's PHOTO with `photo` (MIME type, base64), or removes
/// it, keeping the rest of the card, and updates the photo hash. PEP calls it when the user
/// publishes an avatar.
pub fn set_photo(
    store: &mut dyn crate::store::Store,
    account: &str,
    photo: Option<(&str, &str)>,
) -> Result<(), StanzaError> {
    let mut card = match store.kv_get(account, KEY_VCARD).map_err(internal)? {
        Some(b) => parse_element(&b).unwrap_or_else(empty_vcard),
        None => empty_vcard(),
    };
    card.children
        .retain(|n| !matches!(n, crate::xml::Node::Element(e) if e.is("PHOTO", NS_VCARD)));
    if let Some((mime, b64)) = photo {
        card.push_child(
            Element::new("PHOTO", NS_VCARD)
                .with_child(Element::new("TYPE", NS_VCARD).with_text(mime))
                .with_child(Element::new("BINVAL", NS_VCARD).with_text(b64)),
        );
    }
    let bytes = card.to_bytes(ns::CLIENT);
    if bytes.len() > MAX_VCARD_BYTES {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the vCard is too large",
        ));
    }
    if card.children.is_empty() {
        store.kv_delete(account, KEY_VCARD).map_err(internal)?;
    } else {
        store.kv_put(account, KEY_VCARD, &bytes).map_err(internal)?;
    }
    match photo_hash(&card) {
        Some(hash) => store.kv_put(account, KEY_PHOTO_HASH, hash.as_bytes()),
        None => store.kv_delete(account, KEY_PHOTO_HASH),
    }
    .map_err(internal)
}

/// XEP-0054 §3.3 note: a server may have a vCard of its own; Hearth's is empty.
fn host_get(_ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    check_payload(req)?;
    Ok(Some(empty_vcard()))
}

/// XEP-0153 §3.1: the lower-case hex SHA-1 of the decoded `PHOTO/BINVAL`, if there is a photo.
/// A BINVAL that is not base64 gives no hash (the vCard is still stored: refusing it would
/// lose the rest of the user's card over a photo other clients may read fine).
pub fn photo_hash(vcard: &Element) -> Option<String> {
    let binval = vcard
        .child("PHOTO", NS_VCARD)?
        .child("BINVAL", NS_VCARD)?
        .text();
    let data = crate::base64::decode_lenient_ws(&binval)?;
    if data.is_empty() {
        return None;
    }
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &data);
    let mut hex = String::with_capacity(40);
    for b in d.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    Some(hex)
}

/// XEP-0153 §3.1: an available presence broadcast carries the hash of the stored photo.
/// Added when the client sent no `<x/>` (it does not know XEP-0153) or an empty one (it has
/// not read the vCard yet, §4.1); a client's own `<photo/>`, empty or not, is left alone: it
/// has just uploaded or cleared the photo and knows better than a stale hash.
fn advertise_photo(ctx: &mut Ctx, o: &Outbound, e: &mut Element) -> Flow {
    if o.kind != StanzaKind::Presence || o.to.is_some() || e.attr("type").is_some() {
        return Flow::Continue;
    }
    if e.child("x", NS_VCARD_UPDATE)
        .is_some_and(|x| x.child("photo", NS_VCARD_UPDATE).is_some())
    {
        return Flow::Continue;
    }
    let account = o.from.to_bare().to_string();
    let hash = match ctx.store.kv_get(&account, KEY_PHOTO_HASH) {
        Ok(Some(h)) => String::from_utf8_lossy(&h).into_owned(),
        Ok(None) => return Flow::Continue,
        Err(err) => {
            log::error!("store: {err}");
            return Flow::Continue;
        }
    };
    let photo = Element::new("photo", NS_VCARD_UPDATE).with_text(&hash);
    match e.child_mut("x", NS_VCARD_UPDATE) {
        Some(x) => x.push_child(photo),
        None => e.push_child(Element::new("x", NS_VCARD_UPDATE).with_child(photo)),
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Harness;

    /// SHA-1 of "hello"; "aGVsbG8=" is its base64.
    const HELLO_SHA1: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    const CARD: &str = "<vCard xmlns='vcard-temp'><FN>Alice</FN><NICKNAME>al</NICKNAME></vCard>";
    const PHOTO_CARD: &str = "<vCard xmlns='vcard-temp'><FN>Alice</FN>\
        <PHOTO><TYPE>image/png</TYPE><BINVAL>aGVs\n bG8=</BINVAL></PHOTO></vCard>";

    fn set_card(h: &mut Harness, c: crate::server::ConnId, card: &str) -> String {
        h.send(c, &format!("<iq type='set' id='s'>{card}</iq>"));
        h.take(c)
    }

    fn get_card(h: &mut Harness, c: crate::server::ConnId, to: Option<&str>) -> String {
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        h.send(
            c,
            &format!("<iq type='get' id='g'{to}><vCard xmlns='vcard-temp'/></iq>"),
        );
        h.take(c)
    }

    #[test]
    fn owner_without_vcard_get_returns_empty_vcard() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = get_card(&mut h, a, None);
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");
    }

    #[test]
    fn owner_set_then_get_returns_same_vcard() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = set_card(&mut h, a, CARD);
        assert!(
            out.contains("type='result'") && out.contains("id='s'"),
            "{out}"
        );
        let out = get_card(&mut h, a, None);
        assert!(out.contains(CARD), "{out}");
        // Addressed to the own bare JID explicitly: the same.
        assert!(get_card(&mut h, a, Some("alice@localhost")).contains(CARD));
    }

    #[test]
    fn owner_set_to_own_bare_jid_accepted() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            &format!("<iq type='set' id='s' to='alice@localhost'>{CARD}</iq>"),
        );
        assert!(h.take(a).contains("type='result'"));
        assert!(get_card(&mut h, a, None).contains(CARD));
    }

    #[test]
    fn other_user_get_returns_stored_vcard() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        set_card(&mut h, a, CARD);
        let out = get_card(&mut h, b, Some("alice@localhost"));
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains("from='alice@localhost'"), "{out}");
        assert!(out.contains(CARD), "{out}");
    }

    #[test]
    fn other_user_get_without_vcard_is_service_unavailable() {
        let mut h = Harness::new();
        let b = h.login("bob", "b");
        let out = get_card(&mut h, b, Some("alice@localhost"));
        assert!(out.contains("type='error'"), "{out}");
        assert!(out.contains("<service-unavailable"), "{out}");
        // The same answer as for an account that does not exist (XEP-0054 §3.3).
        let none = get_card(&mut h, b, Some("nobody@localhost"));
        assert!(none.contains("<service-unavailable"), "{none}");
    }

    #[test]
    fn other_user_set_is_forbidden() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(
            b,
            &format!("<iq type='set' id='s' to='alice@localhost'>{CARD}</iq>"),
        );
        let out = h.take(b);
        assert!(
            out.contains("type='error'") && out.contains("<forbidden"),
            "{out}"
        );
        assert!(get_card(&mut h, a, None).contains("<vCard xmlns='vcard-temp'/>"));
    }

    #[test]
    fn oversized_set_not_acceptable_and_old_vcard_kept() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, CARD);
        let big = format!(
            "<vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard>",
            "x".repeat(MAX_VCARD_BYTES)
        );
        let out = set_card(&mut h, a, &big);
        assert!(out.contains("<not-acceptable"), "{out}");
        assert!(get_card(&mut h, a, None).contains(CARD));
    }

    #[test]
    fn set_at_limit_accepted() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let frame = "<vCard xmlns='vcard-temp'><DESC></DESC></vCard>".len();
        let card = format!(
            "<vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard>",
            "x".repeat(MAX_VCARD_BYTES - frame)
        );
        assert!(set_card(&mut h, a, &card).contains("type='result'"));
    }

    #[test]
    fn wrong_element_in_vcard_namespace_bad_request() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = set_card(&mut h, a, "<card xmlns='vcard-temp'><FN>A</FN></card>");
        assert!(out.contains("<bad-request"), "{out}");
        h.send(a, "<iq type='get' id='g'><vcard xmlns='vcard-temp'/></iq>");
        assert!(h.take(a).contains("<bad-request"));
    }

    #[test]
    fn empty_set_deletes_vcard_and_photo_hash() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, PHOTO_CARD);
        let out = set_card(&mut h, a, "<vCard xmlns='vcard-temp'/>");
        assert!(out.contains("type='result'"), "{out}");
        assert!(get_card(&mut h, a, None).contains("<vCard xmlns='vcard-temp'/>"));
        h.send(a, "<presence/>");
        assert!(!h.take(a).contains(NS_VCARD_UPDATE));
    }

    #[test]
    fn host_get_returns_empty_vcard() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = get_card(&mut h, a, Some("localhost"));
        assert!(
            out.contains("type='result'") && out.contains("from='localhost'"),
            "{out}"
        );
        assert!(out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");
    }

    #[test]
    fn host_set_is_service_unavailable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            &format!("<iq type='set' id='s' to='localhost'>{CARD}</iq>"),
        );
        assert!(h.take(a).contains("<service-unavailable"));
    }

    #[test]
    fn host_disco_lists_vcard_temp() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert!(h.take(a).contains("<feature var='vcard-temp'/>"));
    }

    #[test]
    fn photo_hash_is_sha1_of_decoded_binval() {
        let card = parse_element(PHOTO_CARD.as_bytes()).unwrap();
        assert_eq!(photo_hash(&card).as_deref(), Some(HELLO_SHA1));
        let bad = parse_element(
            b"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>not base64!</BINVAL></PHOTO></vCard>",
        )
        .unwrap();
        assert_eq!(photo_hash(&bad), None);
        let empty =
            parse_element(b"<vCard xmlns='vcard-temp'><PHOTO><BINVAL/></PHOTO></vCard>").unwrap();
        assert_eq!(photo_hash(&empty), None);
    }

    #[test]
    fn photo_set_presence_broadcast_carries_hash() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, PHOTO_CARD);
        h.send(a, "<presence><show>away</show></presence>");
        let out = h.take(a);
        assert!(
            out.contains(&format!(
                "<show>away</show><x xmlns='vcard-temp:x:update'><photo>{HELLO_SHA1}</photo></x>"
            )),
            "{out}"
        );
    }

    #[test]
    fn photo_set_contact_receives_hash() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(b, "<presence/>");
        h.send(b, "<presence to='alice@localhost' type='subscribe'/>");
        h.send(a, "<presence to='bob@localhost' type='subscribed'/>");
        set_card(&mut h, a, PHOTO_CARD);
        h.take(b);
        h.send(a, "<presence/>");
        let out = h.take(b);
        assert!(out.contains("from='alice@localhost/a'"), "{out}");
        assert!(
            out.contains(&format!("<photo>{HELLO_SHA1}</photo>")),
            "{out}"
        );
    }

    #[test]
    fn empty_update_element_gets_photo() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, PHOTO_CARD);
        h.send(a, "<presence><x xmlns='vcard-temp:x:update'/></presence>");
        let out = h.take(a);
        assert!(
            out.contains(&format!(
                "<x xmlns='vcard-temp:x:update'><photo>{HELLO_SHA1}</photo></x>"
            )),
            "{out}"
        );
        assert_eq!(out.matches("vcard-temp:x:update").count(), 1, "{out}");
    }

    #[test]
    fn client_photo_element_left_alone() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, PHOTO_CARD);
        h.send(
            a,
            "<presence><x xmlns='vcard-temp:x:update'><photo>abcd</photo></x></presence>",
        );
        let out = h.take(a);
        assert!(out.contains("<photo>abcd</photo>"), "{out}");
        assert!(!out.contains(HELLO_SHA1), "{out}");
        h.send(
            a,
            "<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        );
        let out = h.take(a);
        assert!(
            out.contains("<photo/>") && !out.contains(HELLO_SHA1),
            "{out}"
        );
    }

    #[test]
    fn vcard_without_photo_presence_unchanged() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        set_card(&mut h, a, PHOTO_CARD);
        set_card(&mut h, a, CARD);
        h.send(a, "<presence/>");
        let out = h.take(a);
        assert!(out.contains("<presence"), "{out}");
        assert!(!out.contains(NS_VCARD_UPDATE), "{out}");
    }

    #[test]
    fn unavailable_and_directed_presence_get_no_hash() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        h.send(b, "<presence/>");
        h.take(b);
        set_card(&mut h, a, PHOTO_CARD);
        h.send(a, "<presence/>");
        h.take(a);
        h.send(a, "<presence to='bob@localhost/b'/>");
        let out = h.take(b);
        assert!(out.contains("<presence"), "{out}");
        assert!(!out.contains(HELLO_SHA1), "{out}");
        h.send(a, "<presence type='unavailable'/>");
        let out = h.take(a);
        assert!(out.contains("type='unavailable'"), "{out}");
        assert!(!out.contains(HELLO_SHA1), "{out}");
    }
}
