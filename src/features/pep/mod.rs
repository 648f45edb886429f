//! Personal Eventing Protocol (XEP-0163): every account is a pubsub service (XEP-0060) with
//! its own nodes, enough of it for OMEMO (XEP-0384, both node layouts), avatars (XEP-0084)
//! and bookmarks (XEP-0402).
//!
//! Owns: registration and the IQ dispatch (publish with publish-options, retract, items,
//! owner configure, delete and purge), the account's pubsub disco identity and features, and
//! the node list in disco#items. Leaves to `node` the configuration and storage, to `notify`
//! who is told, and to `avatar` and `bookmarks` the conversions to and from vCard and private
//! storage. Only the owner publishes; nodes are created by publishing (auto-create).

pub mod avatar;
pub mod bookmarks;
pub mod node;
pub mod notify;

pub use notify::PepState;

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::jid::Jid;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::{Element, ns};
use node::{Node, NodeConfig};

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

const FEATURES: [&str; 16] = [
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#item-ids",
];

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Account, IqType::Get, NS_PUBSUB, pubsub_get);
    r.iq(IqTo::Account, IqType::Set, NS_PUBSUB, pubsub_set);
    r.iq(IqTo::Account, IqType::Get, NS_OWNER, owner_get);
    r.iq(IqTo::Account, IqType::Set, NS_OWNER, owner_set);
    r.identity(IqTo::Account, "pubsub", "pep", "");
    for f in FEATURES {
        r.feature(&[IqTo::Account], f);
    }
    r.feature(&[IqTo::Account], bookmarks::NS_COMPAT);
    r.feature(&[IqTo::Account], avatar::NS_VCARD_CONVERSION);
    r.inbound.push(notify::inbound);
    r.available.push(notify::own_available);
    r.session_end.push(notify::session_end);
}

/// A XEP-0060 error: a stanza condition with a pubsub#errors condition.
pub fn pubsub_error(condition: StanzaCondition, app: &str) -> StanzaError {
    StanzaError::new(condition).with_app(Element::new(app, NS_ERRORS))
}

fn unsupported(feature: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::FeatureNotImplemented)
        .with_app(Element::new("unsupported", NS_ERRORS).with_attr("feature", feature))
}

fn bad_request(text: &str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, text)
}

/// The one action child of `<pubsub/>` (publish-options aside).
fn action(payload: &Element) -> Result<&Element, StanzaError> {
    if payload.name != "pubsub" {
        return Err(bad_request("expected <pubsub/>"));
    }
    payload
        .child_elements()
        .find(|c| c.name != "publish-options")
        .ok_or_else(|| bad_request("empty <pubsub/>"))
}

fn node_attr(e: &Element) -> Result<&str, StanzaError> {
    match e.attr("node") {
        Some(n) if node::valid_name(n) => Ok(n),
        Some(_) => Err(bad_request("invalid node name")),
        None => Err(pubsub_error(StanzaCondition::BadRequest, "nodeid-required")),
    }
}

fn owner_only(req: &IqRequest) -> Result<(), StanzaError> {
    if req.from_owner() {
        Ok(())
    } else {
        Err(StanzaError::new(StanzaCondition::Forbidden))
    }
}

fn item_not_found() -> StanzaError {
    StanzaError::new(StanzaCondition::ItemNotFound)
}

/// A node for reading: it exists and the asker may read it (XEP-0060 §6.5.9).
fn readable(ctx: &mut Ctx, req: &IqRequest, name: &str) -> Result<Node, StanzaError> {
    let account = req.to.to_string();
    let n = node::load(ctx.store, &account, name)?.ok_or_else(item_not_found)?;
    if !notify::may_read(ctx, req.to, n.config.access, &req.from.to_bare()) {
        return Err(match n.config.access {
            node::Access::Whitelist => pubsub_error(StanzaCondition::NotAllowed, "closed-node"),
            _ => pubsub_error(
                StanzaCondition::NotAuthorized,
                "presence-subscription-required",
            ),
        });
    }
    Ok(n)
}

fn pubsub_get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let a = action(req.payload)?;
    if a.name != "items" {
        return Err(unsupported(&format!("{NS_PUBSUB}#{}", a.name)));
    }
    let name = node_attr(a)?;
    let n = readable(ctx, req, name)?;
    let account = req.to.to_string();
    let asked: Vec<&str> = a
        .child_elements()
        .filter(|i| i.name == "item")
        .filter_map(|i| i.attr("id"))
        .collect();
    let ids: Vec<&str> = if asked.is_empty() {
        let mut all: Vec<&str> = n.ids.iter().map(String::as_str).collect();
        if let Some(max) = a.attr("max_items") {
            let max: usize = max.parse().map_err(|_| bad_request("invalid max_items"))?;
            let skip = all.len().saturating_sub(max);
            all.drain(..skip);
        }
        all
    } else {
        asked
            .into_iter()
            .filter(|id| n.ids.iter().any(|i| i == id))
            .collect()
    };
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(p) = node::item(ctx.store, &account, name, id)? {
            items.push((id.to_owned(), p));
        }
    }
    Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(
        notify::items_element(NS_PUBSUB, name, &items),
    )))
}

fn pubsub_set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let a = action(req.payload)?;
    match a.name.as_str() {
        "publish" => publish_iq(ctx, req, a),
        "retract" => retract_iq(ctx, req, a),
        other => Err(unsupported(&format!("{NS_PUBSUB}#{other}"))),
    }
}

fn publish_iq(ctx: &mut Ctx, req: &IqRequest, publish: &Element) -> IqResult {
    owner_only(req)?;
    let name = node_attr(publish)?;
    let mut items = publish.child_elements().filter(|i| i.name == "item");
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-payload"));
    };
    let mut payloads = item.child_elements();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-payload"));
    };
    let options = req
        .payload
        .child("publish-options", NS_PUBSUB)
        .and_then(|o| o.child("x", node::NS_DATA))
        .map(node::form_fields);
    let id = publish_item(
        ctx,
        req.to,
        name,
        item.attr("id"),
        payload,
        options.as_deref(),
        true,
    )?;
    Ok(Some(
        Element::new("pubsub", NS_PUBSUB).with_child(
            Element::new("publish", NS_PUBSUB)
                .with_attr("node", name)
                .with_child(Element::new("item", NS_PUBSUB).with_attr("id", &id)),
        ),
    ))
}

/// Publishes one item on the owner's node, creating the node (with `options` applied) if
/// needed, notifies, and with `convert` runs the vCard and private-storage conversions.
/// Returns the item id (generated when `id` is `None`).
pub fn publish_item(
    ctx: &mut Ctx,
    owner: &Jid,
    name: &str,
    id: Option<&str>,
    payload: &Element,
    options: Option<&[(String, Vec<String>)]>,
    convert: bool,
) -> Result<String, StanzaError> {
    let account = owner.to_string();
    let mut n = match node::load(ctx.store, &account, name)? {
        Some(n) => {
            if let Some(o) = options {
                if !n.config.satisfies(o, ctx.config.pep.max_items) {
                    return Err(pubsub_error(
                        StanzaCondition::Conflict,
                        "precondition-not-met",
                    ));
                }
            }
            n
        }
        None => {
            let mut config = NodeConfig::default();
            if let Some(o) = options {
                config
                    .apply(o, ctx.config.pep.max_items)
                    .map_err(|_| pubsub_error(StanzaCondition::Conflict, "precondition-not-met"))?;
            }
            Node::new(name, config)
        }
    };
    // The stanza limit bounds an item already; this keeps a stored item from outgrowing
    // what could be sent back in one stanza with its wrapper.
    if payload.to_bytes(ns::CLIENT).len() + 1024 > ctx.config.limits.max_stanza_bytes {
        return Err(StanzaError::with_text(
            StanzaCondition::NotAcceptable,
            "the item is too large",
        ));
    }
    n.seq += 1;
    let id = match id {
        Some(i) if node::valid_name(i) => i.to_owned(),
        Some(_) => return Err(bad_request("invalid item id")),
        None => generated_id(&n, payload),
    };
    node::put_item(ctx.store, &account, &mut n, &id, payload)?;
    node::save(ctx.store, &account, &n, ctx.config.pep.max_nodes)?;
    let child = notify::items_element(NS_EVENT, name, &[(id.clone(), payload.clone())]);
    notify::broadcast(ctx, owner, name, n.config.access, &child);
    if convert {
        if name == avatar::NS_METADATA {
            avatar::metadata_published(ctx, owner, payload);
        } else if name == bookmarks::NS_BOOKMARKS {
            bookmarks::to_private(ctx, owner);
        }
    }
    Ok(id)
}

/// A new id: the node's publish count and a digest of the payload, so that it is unique in
/// the node without a random source.
fn generated_id(n: &Node, payload: &Element) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &payload.to_bytes(ns::CLIENT));
    let mut s = format!("{}-", n.seq);
    for b in d.as_ref().iter().take(6) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn retract_iq(ctx: &mut Ctx, req: &IqRequest, retract: &Element) -> IqResult {
    owner_only(req)?;
    let name = node_attr(retract)?;
    let ids: Vec<&str> = retract
        .child_elements()
        .filter(|i| i.name == "item")
        .filter_map(|i| i.attr("id"))
        .collect();
    if ids.is_empty() {
        return Err(pubsub_error(StanzaCondition::BadRequest, "item-required"));
    }
    let notify = matches!(retract.attr("notify"), Some("1" | "true"));
    retract_items(ctx, req.to, name, &ids, notify, true)?;
    Ok(None)
}

/// Removes items from the owner's node, notifying (`<retract/>`) when asked.
pub fn retract_items(
    ctx: &mut Ctx,
    owner: &Jid,
    name: &str,
    ids: &[&str],
    notify: bool,
    convert: bool,
) -> Result<(), StanzaError> {
    let account = owner.to_string();
    let mut n = node::load(ctx.store, &account, name)?.ok_or_else(item_not_found)?;
    let mut gone = Vec::new();
    for id in ids {
        if node::remove_item(ctx.store, &account, &mut n, id)? {
            gone.push(*id);
        }
    }
    if gone.is_empty() {
        return Err(item_not_found());
    }
    node::save(ctx.store, &account, &n, ctx.config.pep.max_nodes)?;
    if notify {
        let mut items = Element::new("items", NS_EVENT).with_attr("node", name);
        for id in gone {
            items.push_child(Element::new("retract", NS_EVENT).with_attr("id", id));
        }
        notify::broadcast(ctx, owner, name, n.config.access, &items);
    }
    if convert && name == bookmarks::NS_BOOKMARKS {
        bookmarks::to_private(ctx, owner);
    }
    Ok(())
}

fn owner_get(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    owner_only(req)?;
    let a = owner_action(req.payload)?;
    match a.name.as_str() {
        "configure" => {
            let name = node_attr(a)?;
            let n = node::load(ctx.store, &req.to.to_string(), name)?.ok_or_else(item_not_found)?;
            Ok(Some(
                Element::new("pubsub", NS_OWNER).with_child(
                    Element::new("configure", NS_OWNER)
                        .with_attr("node", name)
                        .with_child(n.config.to_form("form")),
                ),
            ))
        }
        "default" => Ok(Some(Element::new("pubsub", NS_OWNER).with_child(
            Element::new("default", NS_OWNER).with_child(NodeConfig::default().to_form("form")),
        ))),
        other => Err(unsupported(&format!("{NS_PUBSUB}#{other}"))),
    }
}

fn owner_action(payload: &Element) -> Result<&Element, StanzaError> {
    if payload.name != "pubsub" {
        return Err(bad_request("expected <pubsub/>"));
    }
    payload
        .first_child()
        .ok_or_else(|| bad_request("empty <pubsub/>"))
}

fn owner_set(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    owner_only(req)?;
    let a = owner_action(req.payload)?;
    let name = node_attr(a)?;
    let account = req.to.to_string();
    let mut n = node::load(ctx.store, &account, name)?.ok_or_else(item_not_found)?;
    match a.name.as_str() {
        "configure" => {
            let Some(x) = a.child("x", node::NS_DATA) else {
                return Err(bad_request("missing form"));
            };
            if x.attr("type") == Some("cancel") {
                return Ok(None);
            }
            n.config
                .apply(&node::form_fields(x), ctx.config.pep.max_items)
                .map_err(|t| StanzaError::with_text(StanzaCondition::NotAcceptable, &t))?;
            node::trim(ctx.store, &account, &mut n)?;
            node::save(ctx.store, &account, &n, ctx.config.pep.max_nodes)
        }
        "delete" => {
            node::delete(ctx.store, &account, &n)?;
            let child = Element::new("delete", NS_EVENT).with_attr("node", name);
            notify::broadcast(ctx, req.to, name, n.config.access, &child);
            if name == bookmarks::NS_BOOKMARKS {
                bookmarks::to_private(ctx, req.to);
            }
            Ok(())
        }
        "purge" => {
            for id in n.ids.clone() {
                node::remove_item(ctx.store, &account, &mut n, &id)?;
            }
            node::save(ctx.store, &account, &n, ctx.config.pep.max_nodes)?;
            let child = Element::new("purge", NS_EVENT).with_attr("node", name);
            notify::broadcast(ctx, req.to, name, n.config.access, &child);
            if name == bookmarks::NS_BOOKMARKS {
                bookmarks::to_private(ctx, req.to);
            }
            Ok(())
        }
        other => Err(unsupported(&format!("{NS_PUBSUB}#{other}"))),
    }?;
    Ok(None)
}

/// disco#info about one of an account's nodes (XEP-0060 §5.3), for those who may read it:
/// a leaf node, with its metadata.
pub fn node_info(ctx: &mut Ctx, req: &IqRequest, name: &str) -> IqResult {
    let n = readable(ctx, req, name)?;
    let field = |var: &str, value: &str| {
        Element::new("field", node::NS_DATA)
            .with_attr("var", var)
            .with_child(Element::new("value", node::NS_DATA).with_text(value))
    };
    let form = Element::new("x", node::NS_DATA)
        .with_attr("type", "result")
        .with_child(
            field("FORM_TYPE", "http://jabber.org/protocol/pubsub#meta-data")
                .with_attr("type", "hidden"),
        )
        .with_child(field("pubsub#type", "leaf"))
        .with_child(field("pubsub#owner", &req.to.to_string()))
        .with_child(field("pubsub#access_model", n.config.access.name()))
        .with_child(field("pubsub#max_items", &n.config.max_items.to_string()));
    Ok(Some(
        Element::new("query", ns::DISCO_INFO)
            .with_attr("node", name)
            .with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "pubsub")
                    .with_attr("type", "leaf"),
            )
            .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", NS_PUBSUB))
            .with_child(form),
    ))
}

/// disco#items to an account (XEP-0060 §5.2): its nodes the asker may read; with a node,
/// that node's item ids (§5.5).
pub fn disco_items(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    let account = req.to.to_string();
    let asker = req.from.to_bare();
    let owner = req.to.clone();
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    if let Some(name) = req.payload.attr("node") {
        q.set_attr("node", name);
        let n = readable(ctx, req, name)?;
        for id in &n.ids {
            q.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", &account)
                    .with_attr("name", id),
            );
        }
        return Ok(Some(q));
    }
    for name in node::names(ctx.store, &account)? {
        let Some(n) = node::load(ctx.store, &account, &name)? else {
            continue;
        };
        if notify::may_read(ctx, &owner, n.config.access, &asker) {
            q.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", &account)
                    .with_attr("node", &name),
            );
        }
    }
    Ok(Some(q))
}

#[cfg(test)]
mod tests;
