//! One PEP node: its configuration (XEP-0060 §16.4 `pubsub#node_config`), who may read it,
//! publish-options (§7.1.5), and how it and its items are stored.
//!
//! Owns: the stored layout. Per account, kv "pep-nodes" lists the node names (one a line),
//! kv "pep-node:{node}" holds the node's configuration and its item ids oldest first (plain
//! text lines), and kv "pep-item:{node}\n{id}" holds one item's payload. Reading one
//! item or one node never loads the others. Names and ids with a line break are refused.

use crate::features::roster::internal;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::store::Store;
use crate::xml::fragment::parse_element;
use crate::xml::{Element, ns};

pub const NS_DATA: &str = "jabber:x:data";
pub const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

const KEY_NODES: &str = "pep-nodes";

// Bounds from `[pep]` (config::PepSettings): `max_nodes` per account (one more is refused
// with `resource-constraint`), `max_items` per node (what `max` means; past a node's
// `max_items` the oldest item is dropped on publish).
/// Longest node name or item id accepted.
pub const MAX_NAME_BYTES: usize = 1024;

/// `pubsub#access_model`: who besides the owner may read items and get notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    /// Contacts subscribed to the owner's presence.
    Presence,
    /// Nobody but the owner (no affiliations are managed yet).
    Whitelist,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Whitelist => "whitelist",
        }
    }

    fn parse(s: &str) -> Option<Access> {
        match s {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    fn name(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" => Some(SendLast::OnSub),
            "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub access: Access,
    /// 1..=`[pep] max_items`.
    pub max_items: usize,
    pub persist: bool,
    pub send_last: SendLast,
    pub notify_retract: bool,
}

impl Default for NodeConfig {
    /// PEP defaults (XEP-0163 §4.1.2 / what Prosody and ejabberd use): presence access, the
    /// last item kept and sent when a contact comes online.
    fn default() -> Self {
        NodeConfig {
            access: Access::Presence,
            max_items: 1,
            persist: true,
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
        }
    }
}

impl NodeConfig {
    /// How many items are actually kept: a node that does not persist items keeps the last
    /// one only, for `send_last_published_item`.
    pub fn kept(&self) -> usize {
        if self.persist { self.max_items } else { 1 }
    }

    /// Applies the known fields of a submitted form; unknown fields are ignored (clients send
    /// e.g. `pubsub#deliver_payloads` that PEP always honours). An invalid value of a known
    /// field is an error naming it.
    pub fn apply(&mut self, fields: &[(String, Vec<String>)], max: usize) -> Result<(), String> {
        for (var, values) in fields {
            let v = values.first().map(String::as_str).unwrap_or("");
            let bad = || format!("unsupported value for {var}");
            match var.as_str() {
                "pubsub#access_model" => self.access = Access::parse(v).ok_or_else(bad)?,
                "pubsub#max_items" => {
                    self.max_items = if v == "max" {
                        max
                    } else {
                        match v.parse::<usize>() {
                            Ok(n) if (1..=max).contains(&n) => n,
                            _ => return Err(bad()),
                        }
                    }
                }
                "pubsub#persist_items" => self.persist = parse_bool(v).ok_or_else(bad)?,
                "pubsub#notify_retract" => self.notify_retract = parse_bool(v).ok_or_else(bad)?,
                "pubsub#send_last_published_item" => {
                    self.send_last = SendLast::parse(v).ok_or_else(bad)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// XEP-0060 §7.1.5: whether publish-options hold for this node: each known option must
    /// equal the node's setting (`max` equals `max`, the configured bound).
    pub fn satisfies(&self, fields: &[(String, Vec<String>)], max: usize) -> bool {
        let mut wanted = self.clone();
        wanted.apply(fields, max).is_ok() && wanted == *self
    }

    /// The §8.2 configuration form (`form` to fill in, or `result`).
    pub fn to_form(&self, form_type: &str) -> Element {
        let field = |var: &str, kind: &str, value: &str| {
            Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", kind)
                .with_child(Element::new("value", NS_DATA).with_text(value))
        };
        let with_options = |mut f: Element, options: &[&str]| {
            for o in options {
                f.push_child(
                    Element::new("option", NS_DATA)
                        .with_child(Element::new("value", NS_DATA).with_text(o)),
                );
            }
            f
        };
        let b = |v: bool| if v { "1" } else { "0" };
        Element::new("x", NS_DATA)
            .with_attr("type", form_type)
            .with_child(field("FORM_TYPE", "hidden", NS_NODE_CONFIG))
            .with_child(with_options(
                field("pubsub#access_model", "list-single", self.access.name()),
                &["open", "presence", "whitelist"],
            ))
            .with_child(field(
                "pubsub#max_items",
                "text-single",
                &self.max_items.to_string(),
            ))
            .with_child(field("pubsub#persist_items", "boolean", b(self.persist)))
            .with_child(field(
                "pubsub#notify_retract",
                "boolean",
                b(self.notify_retract),
            ))
            .with_child(with_options(
                field(
                    "pubsub#send_last_published_item",
                    "list-single",
                    self.send_last.name(),
                ),
                &["never", "on_sub", "on_sub_and_presence"],
            ))
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The fields of a data form (XEP-0004), FORM_TYPE left out.
pub fn form_fields(x: &Element) -> Vec<(String, Vec<String>)> {
    x.child_elements()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            (var != "FORM_TYPE").then(|| {
                let values = f
                    .child_elements()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(Element::text)
                    .collect();
                (var.to_owned(), values)
            })
        })
        .collect()
}

/// A node as stored: configuration, a publish counter (for generated item ids) and its item
/// ids, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub config: NodeConfig,
    pub seq: u64,
    pub ids: Vec<String>,
}

impl Node {
    pub fn new(name: &str, config: NodeConfig) -> Node {
        Node {
            name: name.to_owned(),
            config,
            seq: 0,
            ids: Vec::new(),
        }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.ids.last().map(String::as_str)
    }

    /// One line of settings ("access max persist last retract seq"), then one id a line:
    /// plain text, since a large node is rewritten on every publish.
    fn encode(&self) -> Vec<u8> {
        let c = &self.config;
        let mut s = format!(
            "{} {} {} {} {} {}",
            c.access.name(),
            c.max_items,
            u8::from(c.persist),
            c.send_last.name(),
            u8::from(c.notify_retract),
            self.seq
        );
        for id in &self.ids {
            s.push('\n');
            s.push_str(id);
        }
        s.into_bytes()
    }

    fn decode(name: &str, bytes: &[u8]) -> Option<Node> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split('\n');
        let mut f = lines.next()?.split(' ');
        let config = NodeConfig {
            access: Access::parse(f.next()?)?,
            max_items: f.next()?.parse().ok()?,
            persist: f.next()? == "1",
            send_last: SendLast::parse(f.next()?)?,
            notify_retract: f.next()? == "1",
        };
        Some(Node {
            name: name.to_owned(),
            config,
            seq: f.next()?.parse().ok()?,
            ids: lines.map(str::to_owned).collect(),
        })
    }
}

/// A node name or item id that can be stored (no line break, bounded, not empty).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES && !s.contains(['\n', '\r'])
}

fn node_key(node: &str) -> String {
    format!("pep-node:{node}")
}

fn item_key(node: &str, id: &str) -> String {
    format!("pep-item:{node}\n{id}")
}

fn corrupt(account: &str, what: &str) -> StanzaError {
    log::error!("stored PEP {what} of {account} does not parse");
    StanzaError::new(StanzaCondition::InternalServerError)
}

/// The account's node names, in creation order.
pub fn names(store: &dyn Store, account: &str) -> Result<Vec<String>, StanzaError> {
    Ok(store
        .kv_get(account, KEY_NODES)
        .map_err(internal)?
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

fn put_names(store: &mut dyn Store, account: &str, names: &[String]) -> Result<(), StanzaError> {
    if names.is_empty() {
        store.kv_delete(account, KEY_NODES)
    } else {
        store.kv_put(account, KEY_NODES, names.join("\n").as_bytes())
    }
    .map_err(internal)
}

pub fn load(store: &dyn Store, account: &str, name: &str) -> Result<Option<Node>, StanzaError> {
    match store.kv_get(account, &node_key(name)).map_err(internal)? {
        None => Ok(None),
        Some(b) => Node::decode(name, &b)
            .map(Some)
            .ok_or_else(|| corrupt(account, "node")),
    }
}

/// Stores a node; a new one joins the index (refused past `max_nodes`).
pub fn save(
    store: &mut dyn Store,
    account: &str,
    node: &Node,
    max_nodes: usize,
) -> Result<(), StanzaError> {
    let key = node_key(&node.name);
    if store.kv_get(account, &key).map_err(internal)?.is_none() {
        let mut all = names(store, account)?;
        if all.len() >= max_nodes {
            return Err(StanzaError::with_text(
                StanzaCondition::ResourceConstraint,
                "too many PEP nodes",
            ));
        }
        all.push(node.name.clone());
        put_names(store, account, &all)?;
    }
    store
        .kv_put(account, &key, &node.encode())
        .map_err(internal)
}

/// Removes a node and all its items.
pub fn delete(store: &mut dyn Store, account: &str, node: &Node) -> Result<(), StanzaError> {
    for id in &node.ids {
        store
            .kv_delete(account, &item_key(&node.name, id))
            .map_err(internal)?;
    }
    store
        .kv_delete(account, &node_key(&node.name))
        .map_err(internal)?;
    let mut all = names(store, account)?;
    all.retain(|n| *n != node.name);
    put_names(store, account, &all)
}

/// One item's payload.
pub fn item(
    store: &dyn Store,
    account: &str,
    node: &str,
    id: &str,
) -> Result<Option<Element>, StanzaError> {
    match store
        .kv_get(account, &item_key(node, id))
        .map_err(internal)?
    {
        None => Ok(None),
        Some(b) => parse_element(&b)
            .map(Some)
            .ok_or_else(|| corrupt(account, "item")),
    }
}

/// Stores an item as the node's newest (replacing one with the same id), dropping the oldest
/// past what the node keeps. The caller saves the node afterwards.
pub fn put_item(
    store: &mut dyn Store,
    account: &str,
    node: &mut Node,
    id: &str,
    payload: &Element,
) -> Result<(), StanzaError> {
    store
        .kv_put(
            account,
            &item_key(&node.name, id),
            &payload.to_bytes(ns::CLIENT),
        )
        .map_err(internal)?;
    node.ids.retain(|i| i != id);
    node.ids.push(id.to_owned());
    trim(store, account, node)
}

/// Drops the oldest items past what the node keeps.
pub fn trim(store: &mut dyn Store, account: &str, node: &mut Node) -> Result<(), StanzaError> {
    let keep = node.config.kept();
    if node.ids.len() > keep {
        let gone: Vec<String> = node.ids.drain(..node.ids.len() - keep).collect();
        for id in gone {
            store
                .kv_delete(account, &item_key(&node.name, &id))
                .map_err(internal)?;
        }
    }
    Ok(())
}

/// Removes one item; `Ok(false)` if it was not there. The caller saves the node afterwards.
pub fn remove_item(
    store: &mut dyn Store,
    account: &str,
    node: &mut Node,
    id: &str,
) -> Result<bool, StanzaError> {
    if !node.ids.iter().any(|i| i == id) {
        return Ok(false);
    }
    node.ids.retain(|i| i != id);
    store
        .kv_delete(account, &item_key(&node.name, id))
        .map_err(internal)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
            .collect()
    }

    const MAX_ITEMS: usize = 1000;
    const MAX_NODES: usize = 256;

    #[test]
    fn options_max_equals_stored_max_and_number() {
        let mut c = NodeConfig::default();
        c.apply(&fields(&[("pubsub#max_items", "max")]), MAX_ITEMS)
            .unwrap();
        assert_eq!(c.max_items, MAX_ITEMS);
        assert!(c.satisfies(&fields(&[("pubsub#max_items", "max")]), MAX_ITEMS));
        assert!(c.satisfies(
            &fields(&[("pubsub#max_items", &MAX_ITEMS.to_string())]),
            MAX_ITEMS
        ));
        assert!(!c.satisfies(&fields(&[("pubsub#max_items", "1")]), MAX_ITEMS));
        assert!(c.satisfies(&fields(&[("pubsub#persist_items", "true")]), MAX_ITEMS));
        assert!(!c.satisfies(&fields(&[("pubsub#persist_items", "0")]), MAX_ITEMS));
        assert!(!c.satisfies(&fields(&[("pubsub#access_model", "authorize")]), MAX_ITEMS));
        assert!(c.satisfies(&fields(&[("pubsub#deliver_payloads", "1")]), MAX_ITEMS));
        assert!(
            c.apply(&fields(&[("pubsub#max_items", "0")]), MAX_ITEMS)
                .is_err()
        );
    }

    #[test]
    fn node_round_trips_and_items_trim_oldest() {
        let mut s = MemoryStore::new();
        let a = "alice@localhost";
        let mut n = Node::new("urn:x", NodeConfig::default());
        n.config.max_items = 2;
        for id in ["1", "2", "3"] {
            put_item(&mut s, a, &mut n, id, &Element::new("x", "urn:x")).unwrap();
        }
        assert_eq!(n.ids, ["2", "3"]);
        assert!(item(&s, a, "urn:x", "1").unwrap().is_none());
        save(&mut s, a, &n, MAX_NODES).unwrap();
        assert_eq!(load(&s, a, "urn:x").unwrap(), Some(n.clone()));
        assert_eq!(names(&s, a).unwrap(), ["urn:x"]);
        delete(&mut s, a, &n).unwrap();
        assert_eq!(load(&s, a, "urn:x").unwrap(), None);
        assert!(item(&s, a, "urn:x", "3").unwrap().is_none());
        assert!(names(&s, a).unwrap().is_empty());
    }

    #[test]
    fn node_limit_refuses_one_more() {
        let mut s = MemoryStore::new();
        let a = "alice@localhost";
        for i in 0..MAX_NODES {
            save(
                &mut s,
                a,
                &Node::new(&format!("n{i}"), NodeConfig::default()),
                MAX_NODES,
            )
            .unwrap();
        }
        let err = save(
            &mut s,
            a,
            &Node::new("more", NodeConfig::default()),
            MAX_NODES,
        )
        .unwrap_err();
        assert_eq!(err.condition, StanzaCondition::ResourceConstraint);
        // Saving an existing one again is fine.
        save(
            &mut s,
            a,
            &Node::new("n0", NodeConfig::default()),
            MAX_NODES,
        )
        .unwrap();
    }
}
