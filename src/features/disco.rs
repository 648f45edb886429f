//! Service Discovery (XEP-0030): disco#info generated from the registry, so it lists exactly
//! what is registered; disco#items is empty until there are components.

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry, caps};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::{Element, ns};

pub fn register(r: &mut Registry) {
    for to in [IqTo::Host, IqTo::Account] {
        r.iq(to, IqType::Get, ns::DISCO_INFO, info);
        r.iq(to, IqType::Get, ns::DISCO_ITEMS, items);
    }
    r.feature(&[IqTo::Host, IqTo::Account], ns::DISCO_INFO);
    r.feature(&[IqTo::Host, IqTo::Account], ns::DISCO_ITEMS);
    r.identity(IqTo::Host, "server", "im", "Hearth");
    r.identity(IqTo::Account, "account", "registered", "");
}

fn info(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    // Nodes (XEP-0030 §3.2): only the server's caps node (XEP-0115 §6.2), which names this
    // same information.
    let node = req.payload.attr("node");
    if let Some(n) = node {
        // A PEP node of an account (XEP-0060 §5.3).
        if req.to.local().is_some() {
            return super::pep::node_info(ctx, req, n);
        }
        if !caps::is_caps_node(req.disco, ctx.config, n) {
            return Err(StanzaError::new(StanzaCondition::ItemNotFound));
        }
    }
    // XEP-0030 §3.1 / RFC 6121: an account's info is for the account itself and the contacts
    // it shares its presence with (they see its PEP identity, XEP-0163 §6.1, local or
    // remote, as Prosody answers them); strangers learn nothing about it.
    if req.to.local().is_some()
        && !super::pep::notify::may_read(
            ctx,
            req.to,
            super::pep::node::Access::Presence,
            &req.from.to_bare(),
        )
    {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    let mut q = Element::new("query", ns::DISCO_INFO);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    for (category, kind, name) in &req.disco.identities {
        let mut i = Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", category)
            .with_attr("type", kind);
        if !name.is_empty() {
            i.set_attr("name", name);
        }
        q.push_child(i);
    }
    for var in &req.disco.features {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", var));
    }
    for make in &req.disco.extensions {
        if let Some(form) = make(ctx.config) {
            q.push_child(form);
        }
    }
    Ok(Some(q))
}

fn items(ctx: &mut Ctx, req: &IqRequest) -> IqResult {
    // An account lists its PEP nodes (XEP-0163), those the asker may read.
    if req.to.local().is_some() {
        return super::pep::disco_items(ctx, req);
    }
    if req.payload.attr("node").is_some() {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    Ok(Some(Element::new("query", ns::DISCO_ITEMS)))
}

#[cfg(test)]
mod tests {
    use crate::testutil::Harness;

    const ASK: &str = "<iq type='get' id='d' to='alice@localhost'>\
                       <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";

    #[test]
    fn account_info_contact_with_presence_answered_stranger_refused() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        let b = h.login("bob", "b");
        let c = h.login("carol", "c");
        // bob is subscribed to alice's presence (alice's item for bob has `from`)
        h.send(b, "<presence to='alice@localhost' type='subscribe'/>");
        h.send(a, "<presence to='bob@localhost' type='subscribed'/>");
        h.take(a);
        h.take(b);
        h.send(b, ASK);
        let out = h.take(b);
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains("category='pubsub' type='pep'"), "{out}");
        h.send(c, ASK);
        let out = h.take(c);
        assert!(out.contains("<service-unavailable"), "{out}");
    }
}
