//! Private XML Storage (XEP-0049), which also carries bookmarks (XEP-0048) for older clients.
//!
//! Owns: each account's private elements, one per (namespace, name), stored serialized under
//! kv key "private:{ns} {name}", and an index of those keys (kv "private-index", one
//! "{ns} {name}" a line) that bounds how many an account keeps. Only the account itself reads
//! or writes them; IQs to the server in this namespace are not handled (service-unavailable).

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry, roster::internal};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::store::Store;
use crate::xml::fragment::parse_element;
use crate::xml::{Element, ns};

pub const NS_PRIVATE: &str = "jabber:iq:private";

const KEY_INDEX: &str = "private-index";

/// Largest element stored, serialized; a larger one is refused with `not-acceptable`.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most elements one account keeps; a set that would add more is refused with
/// `resource-constraint` and stores nothing. With `MAX_VALUE_BYTES` this caps an account's
/// private storage at 6.4 MiB; clients use a handful (bookmarks, roster notes, preferences).
pub const MAX_KEYS: usize = 100;
/// Longest namespace plus name accepted, so keys stay small.
const MAX_KEY_BYTES: usize = 1024;

/// XEP-0049 §3: namespaces a client may not store under. Clients' own elements never use
/// them; an element without a namespace of its own inherits `jabber:iq:private`.
const RESERVED: [&str; 4] = [ns::CLIENT, ns::SERVER, NS_PRIVATE, ""];

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Get, NS_PRIVATE, get);
    r.iq(IqTo::Account, IqType::Set, NS_PRIVATE, set);
    // Prosody and ejabberd list it on the server too; clients look there.
    r.feature(&[IqTo::Host, IqTo::Account], NS_PRIVATE);
}

fn refuse(condition: StanzaCondition, text: &str) -> StanzaError {
    StanzaError::with_text(condition, text)
}

/// The index entry ("{ns} {name}") of an element, checked. The name (an XML name) has no
/// spaces, so the last space separates them; a namespace with a line break could not be
/// indexed and is refused.
fn entry_of(e: &Element) -> Result<String, StanzaError> {
    if RESERVED.contains(&e.ns.as_ref()) {
        return Err(refuse(
            StanzaCondition::NotAcceptable,
            "this namespace is reserved",
        ));
    }
    if e.ns.contains(['\n', '\r']) || e.ns.len() + e.name.len() > MAX_KEY_BYTES {
        return Err(refuse(
            StanzaCondition::NotAcceptable,
            "this namespace cannot be stored",
        ));
    }
    Ok(format!("{} {}", e.ns, e.name))
}

fn key_of(entry: &str) -> String {
    format!("private:{entry}")
}

/// The `<query/>` and its elements, refusing what XEP-0049 §2.3 refuses.
fn elements<'a>(req: &'a IqRequest) -> Result<Vec<&'a Element>, StanzaError> {
    if req.payload.name != "query" {
        return Err(StanzaError::new(StanzaCondition::BadRequest));
    }
    let children: Vec<&Element> = req.payload.child_elements().collect();
    if children.is_empty() {
        // §2.3: "at least one child element with a proper namespace MUST be included".
        return Err(refuse(
            StanzaCondition::NotAcceptable,
            "the query must contain an element",
        ));
    }
    Ok(children)
}

fn forbid_others(req: &IqRequest) -> Result<(), StanzaError> {
    // §2.3: forbidden is "preferable" to service-unavailable.
    if req.from_owner() {
        Ok(())
    } else {
        Err(StanzaError::new(StanzaCondition::Forbidden))
    }
}

/// §2.3: one element per get; what was never stored comes back as asked, empty.
fn get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    forbid_others(req)?;
    let children = elements(req)?;
    let [wanted] = children.as_slice() else {
        return Err(refuse(
            StanzaCondition::BadRequest,
            "ask for one element at a time",
        ));
    };
    let entry = entry_of(wanted)?;
    let account = req.to.to_string();
    let stored = match ctx
        .store
        .kv_get(&account, &key_of(&entry))
        .map_err(internal)?
    {
        Some(bytes) => match parse_element(&bytes) {
            Some(e) => e,
            None => {
                log::error!("stored private XML of {account} does not parse");
                return Err(StanzaError::new(StanzaCondition::InternalServerError));
            }
        },
        None => Element::new(&wanted.name, &wanted.ns),
    };
    Ok(Some(Element::new("query", NS_PRIVATE).with_child(stored)))
}

fn read_index(store: &dyn Store, account: &str) -> Result<Vec<String>, StanzaError> {
    let raw = store.kv_get(account, KEY_INDEX).map_err(internal)?;
    Ok(raw
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// §2.3: a set may carry several elements; each replaces the stored one of its namespace and
/// name. An element with no attributes and no content deletes it (getting it then answers
/// the same empty element). All are checked before any is stored.
fn set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    forbid_others(req)?;
    let children = elements(req)?;
    let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(children.len());
    for e in children {
        let entry = entry_of(e)?;
        let value = if e.children.is_empty() && e.attrs.is_empty() {
            None
        } else {
            let bytes = e.to_bytes(ns::CLIENT);
            if bytes.len() > MAX_VALUE_BYTES {
                return Err(refuse(
                    StanzaCondition::NotAcceptable,
                    "the element is too large",
                ));
            }
            Some(bytes)
        };
        // A later element of the same namespace and name wins.
        writes.retain(|(k, _)| *k != entry);
        writes.push((entry, value));
    }
    let account = req.to.to_string();
    write(ctx.store, &account, &writes)?;
    // XEP-0402 §5.3: legacy bookmarks and PEP bookmarks are one list.
    if let Some((_, value)) = writes.iter().find(|(e, _)| e == BOOKMARKS_ENTRY) {
        let storage = value
            .as_deref()
            .and_then(parse_element)
            .unwrap_or_else(|| Element::new("storage", "storage:bookmarks"));
        super::pep::bookmarks::from_private(ctx, req.to, &storage);
    }
    Ok(None)
}

const BOOKMARKS_ENTRY: &str = "storage:bookmarks storage";

/// The stored element of this namespace and name, if any (PEP's bookmarks conversion).
pub fn stored(
    store: &dyn Store,
    account: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Element>, StanzaError> {
    Ok(store
        .kv_get(account, &key_of(&format!("{namespace} {name}")))
        .map_err(internal)?
        .and_then(|b| parse_element(&b)))
}

/// Stores (or, when it is empty, deletes) one element as a set from the owner would, with
/// the same limits (PEP's bookmarks conversion).
pub fn store_element(store: &mut dyn Store, account: &str, e: &Element) -> Result<(), StanzaError> {
    let entry = entry_of(e)?;
    let value = if e.children.is_empty() && e.attrs.is_empty() {
        None
    } else {
        let bytes = e.to_bytes(ns::CLIENT);
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(refuse(
                StanzaCondition::NotAcceptable,
                "the element is too large",
            ));
        }
        Some(bytes)
    };
    write(store, account, &[(entry, value)])
}

fn write(
    store: &mut dyn Store,
    account: &str,
    writes: &[(String, Option<Vec<u8>>)],
) -> Result<(), StanzaError> {
    let mut index = read_index(store, account)?;
    let before = index.clone();
    for (entry, value) in writes {
        let present = index.contains(entry);
        match value {
            Some(_) if !present => index.push(entry.clone()),
            None if present => index.retain(|i| i != entry),
            _ => {}
        }
    }
    if index.len() > MAX_KEYS && index.len() > before.len() {
        return Err(refuse(
            StanzaCondition::ResourceConstraint,
            "too many private elements stored",
        ));
    }
    for (entry, value) in writes {
        let key = key_of(entry);
        match value {
            Some(bytes) => store.kv_put(account, &key, bytes),
            None => store.kv_delete(account, &key),
        }
        .map_err(internal)?;
    }
    if index != before {
        if index.is_empty() {
            store.kv_delete(account, KEY_INDEX)
        } else {
            store.kv_put(account, KEY_INDEX, index.join("\n").as_bytes())
        }
        .map_err(internal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ConnId;
    use crate::testutil::Harness;

    const BOOKMARKS: &str = "<storage xmlns='storage:bookmarks'>\
        <conference autojoin='true' jid='room@muc.localhost' name='Room'><nick>al</nick>\
        </conference></storage>";

    fn iq(h: &mut Harness, c: ConnId, kind: &str, to: Option<&str>, inner: &str) -> String {
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        h.send(
            c,
            &format!(
                "<iq type='{kind}' id='p'{to}><query xmlns='jabber:iq:private'>{inner}</query></iq>"
            ),
        );
        h.take(c)
    }

    #[test]
    fn owner_set_then_get_returns_element() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = iq(&mut h, a, "set", None, BOOKMARKS);
        assert!(out.contains("type='result'"), "{out}");
        let out = iq(
            &mut h,
            a,
            "get",
            None,
            "<storage xmlns='storage:bookmarks'/>",
        );
        assert!(
            out.contains(&format!(
                "<query xmlns='jabber:iq:private'>{BOOKMARKS}</query>"
            )),
            "{out}"
        );
    }

    #[test]
    fn never_stored_get_returns_empty_element() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = iq(&mut h, a, "get", None, "<prefs xmlns='exodus:prefs'/>");
        assert!(out.contains("type='result'"), "{out}");
        assert!(
            out.contains("<query xmlns='jabber:iq:private'><prefs xmlns='exodus:prefs'/></query>"),
            "{out}"
        );
    }

    #[test]
    fn same_name_other_namespace_is_another_element() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        iq(
            &mut h,
            a,
            "set",
            None,
            "<storage xmlns='urn:a'><x/></storage>",
        );
        let out = iq(&mut h, a, "get", None, "<storage xmlns='urn:b'/>");
        assert!(out.contains("<storage xmlns='urn:b'/>"), "{out}");
    }

    #[test]
    fn several_elements_in_one_set_all_stored() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = iq(
            &mut h,
            a,
            "set",
            Some("alice@localhost"),
            "<a xmlns='urn:a'>1</a><b xmlns='urn:b'>2</b>",
        );
        assert!(out.contains("type='result'"), "{out}");
        assert!(
            iq(&mut h, a, "get", None, "<a xmlns='urn:a'/>").contains("<a xmlns='urn:a'>1</a>")
        );
        assert!(
            iq(&mut h, a, "get", None, "<b xmlns='urn:b'/>").contains("<b xmlns='urn:b'>2</b>")
        );
    }

    #[test]
    fn other_user_get_and_set_forbidden() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        iq(&mut h, a, "set", None, BOOKMARKS);
        let get = iq(
            &mut h,
            b,
            "get",
            Some("alice@localhost"),
            "<storage xmlns='storage:bookmarks'/>",
        );
        assert!(get.contains("<forbidden"), "{get}");
        assert!(!get.contains("room@muc"), "{get}");
        let set = iq(
            &mut h,
            b,
            "set",
            Some("alice@localhost"),
            "<x xmlns='urn:x'>1</x>",
        );
        assert!(set.contains("<forbidden"), "{set}");
        let out = iq(&mut h, a, "get", None, "<x xmlns='urn:x'/>");
        assert!(out.contains("<x xmlns='urn:x'/>"), "{out}");
    }

    #[test]
    fn reserved_namespaces_not_acceptable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        for inner in [
            "<x>inherits jabber:iq:private</x>",
            "<x xmlns='jabber:client'>1</x>",
            "<x xmlns='jabber:server'>1</x>",
            "<x xmlns=''>1</x>",
        ] {
            let out = iq(&mut h, a, "set", None, inner);
            assert!(out.contains("<not-acceptable"), "{inner}: {out}");
            let out = iq(&mut h, a, "get", None, inner);
            assert!(out.contains("<not-acceptable"), "{inner}: {out}");
        }
    }

    #[test]
    fn empty_query_not_acceptable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        assert!(iq(&mut h, a, "get", None, "").contains("<not-acceptable"));
        assert!(iq(&mut h, a, "set", None, "").contains("<not-acceptable"));
    }

    #[test]
    fn get_of_two_elements_bad_request() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = iq(
            &mut h,
            a,
            "get",
            None,
            "<a xmlns='urn:a'/><b xmlns='urn:b'/>",
        );
        assert!(out.contains("<bad-request"), "{out}");
    }

    #[test]
    fn wrong_payload_element_bad_request() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='p'><storage xmlns='jabber:iq:private'><a xmlns='urn:a'/></storage></iq>",
        );
        assert!(h.take(a).contains("<bad-request"));
    }

    #[test]
    fn oversized_element_not_acceptable_and_nothing_stored() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let big = format!("<b xmlns='urn:b'>{}</b>", "x".repeat(MAX_VALUE_BYTES));
        let out = iq(
            &mut h,
            a,
            "set",
            None,
            &format!("<a xmlns='urn:a'>1</a>{big}"),
        );
        assert!(out.contains("<not-acceptable"), "{out}");
        let out = iq(&mut h, a, "get", None, "<a xmlns='urn:a'/>");
        assert!(out.contains("<a xmlns='urn:a'/>"), "{out}");
    }

    #[test]
    fn key_limit_refuses_new_keys_but_allows_replacing_and_deleting() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let full: String = (0..MAX_KEYS)
            .map(|i| format!("<k xmlns='urn:k{i}'>v</k>"))
            .collect();
        assert!(iq(&mut h, a, "set", None, &full).contains("type='result'"));
        let out = iq(&mut h, a, "set", None, "<k xmlns='urn:new'>v</k>");
        assert!(out.contains("<resource-constraint"), "{out}");
        assert!(
            iq(&mut h, a, "get", None, "<k xmlns='urn:new'/>").contains("<k xmlns='urn:new'/>")
        );
        // Replacing a stored element does not add a key.
        assert!(iq(&mut h, a, "set", None, "<k xmlns='urn:k0'>w</k>").contains("type='result'"));
        assert!(iq(&mut h, a, "get", None, "<k xmlns='urn:k0'/>").contains(">w</k>"));
        // Deleting one frees a slot.
        assert!(iq(&mut h, a, "set", None, "<k xmlns='urn:k1'/>").contains("type='result'"));
        assert!(iq(&mut h, a, "set", None, "<k xmlns='urn:new'>v</k>").contains("type='result'"));
    }

    #[test]
    fn too_many_in_one_set_stores_nothing() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let over: String = (0..=MAX_KEYS)
            .map(|i| format!("<k xmlns='urn:k{i}'>v</k>"))
            .collect();
        assert!(iq(&mut h, a, "set", None, &over).contains("<resource-constraint"));
        assert!(iq(&mut h, a, "get", None, "<k xmlns='urn:k0'/>").contains("<k xmlns='urn:k0'/>"));
    }

    #[test]
    fn empty_element_set_deletes() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        iq(&mut h, a, "set", None, BOOKMARKS);
        let out = iq(
            &mut h,
            a,
            "set",
            None,
            "<storage xmlns='storage:bookmarks'/>",
        );
        assert!(out.contains("type='result'"), "{out}");
        let out = iq(
            &mut h,
            a,
            "get",
            None,
            "<storage xmlns='storage:bookmarks'/>",
        );
        assert!(
            out.contains("<storage xmlns='storage:bookmarks'/>"),
            "{out}"
        );
    }

    #[test]
    fn host_private_is_service_unavailable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let out = iq(&mut h, a, "get", Some("localhost"), "<a xmlns='urn:a'/>");
        assert!(out.contains("<service-unavailable"), "{out}");
    }
}
