//! Bookmarks (XEP-0402) and their compatibility with private-storage bookmarks
//! (XEP-0049 + XEP-0048), XEP-0402 §5.3 (`urn:xmpp:bookmarks:1#compat`).
//!
//! Owns: both directions. A change of the `urn:xmpp:bookmarks:1` node (publish, retract,
//! purge, delete) rewrites private `storage:bookmarks` from the node's items (keeping the
//! legacy `<url/>` entries that have no PEP form); a private-storage write of
//! `storage:bookmarks` publishes the conferences that changed and retracts those that went,
//! with notifications, as a XEP-0402 client would. Neither direction triggers the other.

use super::{node, publish_item, retract_items};
use crate::features::{Ctx, private};
use crate::jid::Jid;
use crate::xml::Element;

pub const NS_BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
pub const NS_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
pub const NS_STORAGE: &str = "storage:bookmarks";

fn autojoin(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// A legacy `<conference/>` as a XEP-0402 item: (room JID, payload).
fn to_pep(c: &Element) -> Option<(String, Element)> {
    let jid = c.attr("jid")?;
    if !node::valid_name(jid) {
        return None;
    }
    let mut e = Element::new("conference", NS_BOOKMARKS);
    if let Some(n) = c.attr("name") {
        e.set_attr("name", n);
    }
    if autojoin(c.attr("autojoin")) {
        e.set_attr("autojoin", "true");
    }
    for child in ["nick", "password"] {
        if let Some(v) = c.child(child, NS_STORAGE) {
            e.push_child(Element::new(child, NS_BOOKMARKS).with_text(&v.text()));
        }
    }
    Some((jid.to_owned(), e))
}

/// A XEP-0402 item as a legacy `<conference/>`.
fn to_legacy(jid: &str, c: &Element) -> Element {
    let mut e = Element::new("conference", NS_STORAGE).with_attr("jid", jid);
    if let Some(n) = c.attr("name") {
        e.set_attr("name", n);
    }
    e.set_attr(
        "autojoin",
        if autojoin(c.attr("autojoin")) {
            "true"
        } else {
            "false"
        },
    );
    for child in ["nick", "password"] {
        if let Some(v) = c.child(child, NS_BOOKMARKS) {
            e.push_child(Element::new(child, NS_STORAGE).with_text(&v.text()));
        }
    }
    e
}

/// The bookmarks node changed: private storage follows.
pub fn to_private(ctx: &mut Ctx, owner: &Jid) {
    let account = owner.to_string();
    let mut storage = Element::new("storage", NS_STORAGE);
    // Legacy entries without a PEP form stay.
    if let Ok(Some(old)) = private::stored(ctx.store, &account, NS_STORAGE, "storage") {
        for c in old.child_elements().filter(|c| c.name != "conference") {
            storage.push_child(c.clone());
        }
    }
    if let Ok(Some(n)) = node::load(ctx.store, &account, NS_BOOKMARKS) {
        for id in &n.ids {
            if let Ok(Some(c)) = node::item(ctx.store, &account, NS_BOOKMARKS, id) {
                storage.push_child(to_legacy(id, &c));
            }
        }
    }
    if let Err(e) = private::store_element(ctx.store, &account, &storage) {
        log::warn!("bookmarks to private storage for {account} failed: {e:?}");
    }
}

/// XEP-0402 §3 publish-options for the bookmarks node.
fn options() -> Vec<(String, Vec<String>)> {
    [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
    .collect()
}

/// Private `storage:bookmarks` was written (`storage` empty when deleted): the bookmarks
/// node follows.
pub fn from_private(ctx: &mut Ctx, owner: &Jid, storage: &Element) {
    let account = owner.to_string();
    let wanted: Vec<(String, Element)> = storage
        .child_elements()
        .filter(|c| c.is("conference", NS_STORAGE))
        .filter_map(to_pep)
        .collect();
    let existing = node::load(ctx.store, &account, NS_BOOKMARKS).ok().flatten();
    let mut opts = if existing.is_none() {
        Some(options())
    } else {
        None
    };
    let have: Vec<String> = existing.map(|n| n.ids).unwrap_or_default();
    for (jid, payload) in &wanted {
        let same = have.contains(jid)
            && node::item(ctx.store, &account, NS_BOOKMARKS, jid)
                .ok()
                .flatten()
                .as_ref()
                == Some(payload);
        if same {
            continue;
        }
        let o = opts.take();
        if let Err(e) = publish_item(
            ctx,
            owner,
            NS_BOOKMARKS,
            Some(jid),
            payload,
            o.as_deref(),
            false,
        ) {
            log::warn!("private bookmark to PEP for {account} failed: {e:?}");
            return;
        }
    }
    let gone: Vec<&str> = have
        .iter()
        .filter(|id| !wanted.iter().any(|(j, _)| j == *id))
        .map(String::as_str)
        .collect();
    if !gone.is_empty() {
        if let Err(e) = retract_items(ctx, owner, NS_BOOKMARKS, &gone, true, false) {
            log::warn!("private bookmark removal to PEP for {account} failed: {e:?}");
        }
    }
}
