//! Contact Addresses for XMPP Services (XEP-0157): the operator's addresses as a XEP-0128
//! data form in the server's disco#info.
//!
//! Owns: rendering `config.contact_addresses` as the `http://jabber.org/network/serverinfo`
//! form. Leaves to `config` which fields exist and validating them, and to `disco` where the
//! form goes.

use super::Registry;
use crate::config::{CONTACT_FIELDS, Config};
use crate::xml::Element;

/// XEP-0004 data forms.
pub const NS_DATA_FORMS: &str = "jabber:x:data";
/// XEP-0157 §3: the FORM_TYPE of server information.
pub const SERVERINFO: &str = "http://jabber.org/network/serverinfo";

pub fn register(r: &mut Registry) {
    r.disco_extension(form);
}

/// The form, or `None` when no addresses are configured (an empty form tells nobody
/// anything). Fields follow `CONTACT_FIELDS` order, so the result does not depend on the
/// order of the configuration file (XEP-0115 hashes disco#info, forms included).
fn form(config: &Config) -> Option<Element> {
    let mut x = Element::new("x", NS_DATA_FORMS)
        .with_attr("type", "result")
        .with_child(
            Element::new("field", NS_DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", NS_DATA_FORMS).with_text(SERVERINFO)),
        );
    let mut any = false;
    for name in CONTACT_FIELDS {
        let mut addresses = config
            .contact_addresses
            .iter()
            .filter(|(field, _)| field == name)
            .flat_map(|(_, list)| list.iter())
            .peekable();
        if addresses.peek().is_none() {
            continue;
        }
        let mut field =
            Element::new("field", NS_DATA_FORMS).with_attr("var", &format!("{name}-addresses"));
        for a in addresses {
            field.push_child(Element::new("value", NS_DATA_FORMS).with_text(a));
        }
        x.push_child(field);
        any = true;
    }
    any.then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Harness;

    const DISCO: &str = "<iq type='get' id='d' to='localhost'>\
        <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";

    fn config(addresses: &[(&str, &[&str])]) -> Config {
        Config {
            contact_addresses: addresses
                .iter()
                .map(|(f, l)| ((*f).to_owned(), l.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn configured_addresses_in_host_disco_info() {
        let mut h = Harness::with_config(config(&[
            ("support", &["https://example.org/help"]),
            (
                "abuse",
                &["mailto:abuse@example.org", "xmpp:abuse@example.org"],
            ),
        ]));
        let a = h.login("alice", "a");
        h.send(a, DISCO);
        let out = h.take(a);
        assert!(
            out.contains(
                "<x xmlns='jabber:x:data' type='result'>\
                 <field var='FORM_TYPE' type='hidden'>\
                 <value>http://jabber.org/network/serverinfo</value></field>\
                 <field var='abuse-addresses'><value>mailto:abuse@example.org</value>\
                 <value>xmpp:abuse@example.org</value></field>\
                 <field var='support-addresses'><value>https://example.org/help</value>\
                 </field></x></query>"
            ),
            "{out}"
        );
    }

    #[test]
    fn no_addresses_no_form() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(a, DISCO);
        let out = h.take(a);
        assert!(out.contains("<query"), "{out}");
        assert!(!out.contains("jabber:x:data"), "{out}");
    }

    #[test]
    fn empty_address_lists_no_form() {
        assert_eq!(form(&config(&[("admin", &[]), ("sales", &[])])), None);
    }

    #[test]
    fn all_fields_named_as_registered() {
        let all: Vec<(&str, &[&str])> = CONTACT_FIELDS.iter().map(|f| (*f, &["x:y"][..])).collect();
        let x = form(&config(&all)).unwrap();
        let vars: Vec<&str> = x.child_elements().filter_map(|f| f.attr("var")).collect();
        assert_eq!(
            vars,
            [
                "FORM_TYPE",
                "abuse-addresses",
                "admin-addresses",
                "feedback-addresses",
                "sales-addresses",
                "security-addresses",
                "status-addresses",
                "support-addresses"
            ]
        );
    }

    #[test]
    fn account_disco_info_has_no_form() {
        let mut h = Harness::with_config(config(&[("admin", &["xmpp:admin@localhost"])]));
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        let out = h.take(a);
        assert!(out.contains("type='result'"), "{out}");
        assert!(!out.contains("jabber:x:data"), "{out}");
    }
}
