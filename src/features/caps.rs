//! Entity Capabilities (XEP-0115) of the server itself: the `<c/>` stream feature (§6.3) that
//! lets a client skip asking the server's disco#info on every login, and the verification
//! string (§5) that names that disco#info.
//!
//! Owns: computing `ver` from what disco#info lists for the server (identities, features,
//! XEP-0128 forms), and recognising the `NODE#VER` node a client may ask disco#info about.
//! Leaves answering disco#info to `disco`, which is generated from the same registry, so the
//! hash and the answer cannot drift apart.

use ring::digest;

use super::{DiscoInfo, IqTo, Registry};
use crate::config::Config;
use crate::xml::Element;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DATA_FORMS: &str = "jabber:x:data";

/// The node the server names itself by in `<c/>` (XEP-0115 §4: a URI for the software).
pub const NODE: &str = "https://hearth.example/caps";

pub fn register(r: &mut Registry) {
    // XEP-0115 §7: an entity that sends caps advertises the protocol.
    r.feature(&[IqTo::Host], NS_CAPS);
    r.stream_features.push(stream_feature);
}

/// `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=NODE ver=.../>`.
fn stream_feature(r: &Registry, config: &Config) -> Option<Element> {
    Some(
        Element::new("c", NS_CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", NODE)
            .with_attr("ver", &host_ver(r, config)),
    )
}

/// The server's verification string: what disco#info to a hosted domain answers, hashed.
pub fn host_ver(r: &Registry, config: &Config) -> String {
    ver(r.disco(IqTo::Host), config)
}

/// Whether `node` is `NODE#VER` for `info` (the server's disco#info): XEP-0115 §6.2 has a
/// disco#info request to that node answered like one without a node.
pub fn is_caps_node(info: &DiscoInfo, config: &Config, node: &str) -> bool {
    node.strip_prefix(NODE)
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|v| v == ver(info, config))
}

/// The verification string of one disco#info (XEP-0115 §5.1), SHA-1, base64.
pub fn ver(info: &DiscoInfo, config: &Config) -> String {
    // Disco sends no xml:lang on identities, so LANG is empty for all of them.
    let identities: Vec<Identity> = info
        .identities
        .iter()
        .map(|(category, kind, name)| Identity {
            category,
            kind,
            lang: "",
            name,
        })
        .collect();
    let forms: Vec<Element> = info
        .extensions
        .iter()
        .filter_map(|make| make(config))
        .collect();
    hash(&verification_string(&identities, &info.features, &forms))
}

/// One disco#info identity as §5.1 orders it.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub category: &'a str,
    pub kind: &'a str,
    pub lang: &'a str,
    pub name: &'a str,
}

/// S of XEP-0115 §5.1, before hashing. Sorting is by bytes ("i;octet"), which is how Rust
/// orders `str`. Forms without a hidden FORM_TYPE field are left out, as §5.4 step 3.3
/// tells a verifier to do.
pub fn verification_string(
    identities: &[Identity],
    features: &[&str],
    forms: &[Element],
) -> String {
    let mut s = String::new();
    let mut ids: Vec<&Identity> = identities.iter().collect();
    ids.sort_by(|a, b| (a.category, a.kind, a.lang).cmp(&(b.category, b.kind, b.lang)));
    for i in ids {
        for part in [i.category, "/", i.kind, "/", i.lang, "/", i.name, "<"] {
            s.push_str(part);
        }
    }
    let mut feats: Vec<&str> = features.to_vec();
    feats.sort_unstable();
    for f in feats {
        s.push_str(f);
        s.push('<');
    }
    let mut typed: Vec<(String, &Element)> = forms
        .iter()
        .filter_map(|f| form_type(f).map(|t| (t, f)))
        .collect();
    typed.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, form) in typed {
        s.push_str(&form_type);
        s.push('<');
        let mut fields: Vec<(&str, Vec<String>)> = form
            .child_elements()
            .filter(|f| f.is("field", NS_DATA_FORMS))
            .filter_map(|f| f.attr("var").map(|v| (v, f)))
            .filter(|(var, _)| *var != "FORM_TYPE")
            .map(|(var, f)| (var, values(f)))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (var, mut vals) in fields {
            s.push_str(var);
            s.push('<');
            vals.sort_unstable();
            for v in vals {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    s
}

/// The FORM_TYPE of a XEP-0128 form, if it has one in a hidden field.
fn form_type(form: &Element) -> Option<String> {
    if !form.is("x", NS_DATA_FORMS) {
        return None;
    }
    let field = form
        .child_elements()
        .find(|f| f.is("field", NS_DATA_FORMS) && f.attr("var") == Some("FORM_TYPE"))?;
    if field.attr("type") != Some("hidden") {
        return None;
    }
    values(field).into_iter().next()
}

fn values(field: &Element) -> Vec<String> {
    field
        .child_elements()
        .filter(|v| v.is("value", NS_DATA_FORMS))
        .map(Element::text)
        .collect()
}

/// base64(SHA-1(S)) (§5.1 step 9). SHA-1 is what every client understands here; its weakness
/// matters for caps poisoning of client hashes, not for a server announcing itself.
pub fn hash(s: &str) -> String {
    crate::base64::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    const MUC: &str = "http://jabber.org/protocol/muc";

    #[test]
    fn simple_example_section_5_2_hashes_to_published_ver() {
        let ids = [Identity {
            category: "client",
            kind: "pc",
            lang: "",
            name: "Exodus 0.9.1",
        }];
        // Unsorted on purpose: the function sorts.
        let features = [DISCO_ITEMS, MUC, NS_CAPS, DISCO_INFO];
        let s = verification_string(&ids, &features, &[]);
        assert_eq!(
            s,
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<"
        );
        assert_eq!(hash(&s), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    fn field(var: &str, vals: &[&str]) -> Element {
        let mut f = Element::new("field", NS_DATA_FORMS).with_attr("var", var);
        for v in vals {
            f.push_child(Element::new("value", NS_DATA_FORMS).with_text(v));
        }
        f
    }

    #[test]
    fn complex_example_section_5_3_with_form_hashes_to_published_ver() {
        let ids = [
            Identity {
                category: "client",
                kind: "pc",
                lang: "en",
                name: "Psi 0.11",
            },
            Identity {
                category: "client",
                kind: "pc",
                lang: "el",
                name: "\u{3a8} 0.11",
            },
        ];
        let features = [NS_CAPS, DISCO_INFO, DISCO_ITEMS, MUC];
        let form = Element::new("x", NS_DATA_FORMS)
            .with_attr("type", "result")
            .with_child(
                field("FORM_TYPE", &["urn:xmpp:dataforms:softwareinfo"])
                    .with_attr("type", "hidden"),
            )
            .with_child(field("os_version", &["10.5.1"]))
            .with_child(field("ip_version", &["ipv6", "ipv4"]))
            .with_child(field("software_version", &["0.11"]))
            .with_child(field("os", &["Mac"]))
            .with_child(field("software", &["Psi"]));
        // A form without a hidden FORM_TYPE does not count.
        let stray = Element::new("x", NS_DATA_FORMS).with_child(field("a", &["b"]));
        let s = verification_string(&ids, &features, &[stray, form]);
        assert!(s.ends_with(
            "urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<\
             software<Psi<software_version<0.11<"
        ));
        assert_eq!(hash(&s), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn registry_stream_feature_carries_ver_of_host_disco() {
        let r = Registry::with_all_features();
        let config = Config::default();
        let c = stream_feature(&r, &config).unwrap();
        let ver = c.attr("ver").unwrap().to_owned();
        assert_eq!(ver, host_ver(&r, &config));
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(NODE));
        assert!(r.disco(IqTo::Host).features.contains(&NS_CAPS));
        let info = r.disco(IqTo::Host);
        assert!(is_caps_node(info, &config, &format!("{NODE}#{ver}")));
        assert!(!is_caps_node(info, &config, &format!("{NODE}#x{ver}")));
        assert!(!is_caps_node(info, &config, &ver));
    }

    #[test]
    fn host_ver_changes_with_features() {
        let config = Config::default();
        let mut r = Registry::new();
        r.identity(IqTo::Host, "server", "im", "Hearth");
        let before = host_ver(&r, &config);
        r.feature(&[IqTo::Host], "urn:example:x");
        assert_ne!(before, host_ver(&r, &config));
        assert_eq!(
            hash("server/im//Hearth<urn:example:x<"),
            host_ver(&r, &config)
        );
    }

    #[test]
    fn disco_info_to_caps_node_answered_like_no_node() {
        let mut h = crate::testutil::Harness::new();
        let a = h.login("alice", "a");
        let ver = host_ver(&Registry::with_all_features(), &Config::default());
        h.send(
            a,
            "<iq type='get' id='plain' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        let plain = h.take(a);
        h.send(
            a,
            &format!(
                "<iq type='get' id='n' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{NODE}#{ver}'/></iq>"
            ),
        );
        let with_node = h.take(a);
        assert!(
            with_node.contains(&format!("node='{NODE}#{ver}'")),
            "{with_node}"
        );
        // Same identities and features, only the node echoed.
        let body = |s: &str| s.split_once("'>").map(|(_, b)| b.to_owned());
        let strip = |s: &str| s.replace(&format!(" node='{NODE}#{ver}'"), "");
        assert_eq!(body(&strip(&with_node)), body(&plain));
        h.send(
            a,
            &format!(
                "<iq type='get' id='old' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{NODE}#AAAA'/></iq>"
            ),
        );
        assert!(h.take(a).contains("<item-not-found"));
    }

    #[test]
    fn stream_features_after_login_include_caps() {
        let mut h = crate::testutil::Harness::new();
        let c = h.connect();
        h.send(c, crate::testutil::HEADER);
        h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        h.server
            .handle_tls_ready(h.now, c, crate::server::TlsInfo::default());
        h.send(c, crate::testutil::HEADER);
        let pre = h.take(c);
        assert!(!pre.contains(NS_CAPS), "{pre}");
        let auth = crate::testutil::b64(b"\0alice\0pw");
        h.send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
        );
        h.send(c, crate::testutil::HEADER);
        let post = h.take(c);
        let r = Registry::with_all_features();
        let want = format!(
            "<c xmlns='{NS_CAPS}' hash='sha-1' node='{NODE}' ver='{}'/>",
            host_ver(&r, &Config::default())
        );
        assert!(post.contains(&want), "{post}");
    }
}
