//! Scenario tests of PEP on the whole server (Harness): alice and bob are mutual contacts
//! whose clients advertise caps; carol is a stranger.

use super::notify::MAX_CAPS;
use super::*;
use crate::features::caps::{self, Identity, NS_CAPS};
use crate::server::ConnId;
use crate::testutil::Harness;

const CAPS_NODE: &str = "http://hearth.test/client";
const NOTIFY: [&str; 6] = [
    "urn:xmpp:avatar:metadata",
    "eu.siacs.conversations.axolotl.devicelist",
    "urn:xmpp:omemo:2:devices",
    "urn:xmpp:bookmarks:1",
    "urn:x:watched",
    "urn:x:whitelisted",
];

fn features(notify: &[&str]) -> Vec<String> {
    let mut f = vec![ns::DISCO_INFO.to_owned(), NS_CAPS.to_owned()];
    f.extend(notify.iter().map(|n| format!("{n}+notify")));
    f
}

fn ver(notify: &[&str]) -> String {
    let f = features(notify);
    let refs: Vec<&str> = f.iter().map(String::as_str).collect();
    let id = Identity {
        category: "client",
        kind: "pc",
        lang: "",
        name: "T",
    };
    caps::hash(&caps::verification_string(&[id], &refs, &[]))
}

fn caps_presence(notify: &[&str]) -> String {
    format!(
        "<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
        ver(notify)
    )
}

fn disco_answer(id: &str, to: &str, notify: &[&str], ver_: &str) -> String {
    let mut q = format!(
        "<iq type='result' id='{id}' to='{to}'><query xmlns='{}' node='{CAPS_NODE}#{ver_}'>\
         <identity category='client' type='pc' name='T'/>",
        ns::DISCO_INFO
    );
    for f in features(notify) {
        q.push_str(&format!("<feature var='{f}'/>"));
    }
    q.push_str("</query></iq>");
    q
}

/// The ids of caps queries in some output.
fn caps_queries(out: &str) -> Vec<String> {
    out.split("id='pep-caps-")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .map(|n| format!("pep-caps-{n}"))
        .collect()
}

/// Answers every caps query in `out` as a client with `notify`; returns what followed.
fn answer(h: &mut Harness, c: ConnId, out: &str, notify: &[&str]) -> String {
    let mut after = String::new();
    for id in caps_queries(out) {
        let from = if out.contains("from='alice@localhost'") {
            "alice@localhost"
        } else {
            "bob@localhost"
        };
        h.send(c, &disco_answer(&id, from, notify, &ver(notify)));
        after.push_str(&h.take(c));
    }
    after
}

/// Logs in with caps, available, answering the server's caps query.
fn online(h: &mut Harness, user: &str, res: &str, notify: &[&str]) -> ConnId {
    let c = h.login(user, res);
    h.send(
        c,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    h.take(c);
    h.send(c, &caps_presence(notify));
    let out = h.take(c);
    answer(h, c, &out, notify);
    c
}

/// alice and bob online with caps for NOTIFY, mutually subscribed.
fn pair() -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new();
    let a = online(&mut h, "alice", "a", &NOTIFY);
    let b = online(&mut h, "bob", "b", &NOTIFY);
    h.send(a, "<presence to='bob@localhost' type='subscribe'/>");
    h.send(b, "<presence to='alice@localhost' type='subscribed'/>");
    h.send(b, "<presence to='alice@localhost' type='subscribe'/>");
    h.send(a, "<presence to='bob@localhost' type='subscribed'/>");
    h.take(a);
    h.take(b);
    (h, a, b)
}

fn publish(h: &mut Harness, c: ConnId, node: &str, item: &str, options: &str) -> String {
    let opts = if options.is_empty() {
        String::new()
    } else {
        format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{}</value></field>{options}</x>\
             </publish-options>",
            node::NS_PUBLISH_OPTIONS
        )
    };
    h.send(
        c,
        &format!(
            "<iq type='set' id='pub'><pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>{item}</publish>{opts}</pubsub></iq>"
        ),
    );
    h.take(c)
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn items(h: &mut Harness, c: ConnId, to: &str, node: &str, inner: &str) -> String {
    h.send(
        c,
        &format!(
            "<iq type='get' id='get' to='{to}'><pubsub xmlns='{NS_PUBSUB}'><items node='{node}'{inner}</pubsub></iq>"
        ),
    );
    h.take(c)
}

#[test]
fn new_node_publish_auto_creates_and_owner_reads_item() {
    let (mut h, a, _) = pair();
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='i1'><x xmlns='urn:x'>1</x></item>",
        "",
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(
        out.contains("<publish node='urn:x:n'><item id='i1'/></publish>"),
        "{out}"
    );
    let got = items(&mut h, a, "alice@localhost", "urn:x:n", "/>");
    assert!(
        got.contains("<items node='urn:x:n'><item id='i1'><x xmlns='urn:x'>1</x></item></items>"),
        "{got}"
    );
    // An item without id gets one.
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item><x xmlns='urn:x'>2</x></item>",
        "",
    );
    assert!(out.contains("<item id='2-"), "{out}");
}

#[test]
fn existing_node_conflicting_options_precondition_not_met() {
    let (mut h, a, _) = pair();
    let open = field("pubsub#access_model", "open");
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='1'><x xmlns='urn:x'/></item>",
        &open,
    );
    assert!(out.contains("type='result'"), "{out}");
    let white = field("pubsub#access_model", "whitelist");
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='2'><x xmlns='urn:x'/></item>",
        &white,
    );
    assert!(out.contains("<conflict"), "{out}");
    assert!(
        out.contains(&format!("<precondition-not-met xmlns='{NS_ERRORS}'/>")),
        "{out}"
    );
    // Matching options (and unknown ones) are fine.
    let same = format!("{open}{}", field("pubsub#deliver_payloads", "1"));
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='3'><x xmlns='urn:x'/></item>",
        &same,
    );
    assert!(out.contains("type='result'"), "{out}");
    // The refused item was not stored.
    let got = items(
        &mut h,
        a,
        "alice@localhost",
        "urn:x:n",
        "><item id='2'/></items>",
    );
    assert!(!got.contains("<item id='2'"), "{got}");
    // What Conversations does next: configure the node as wanted, then publish again.
    h.send(
        a,
        &format!(
            "<iq type='set' id='cfg'><pubsub xmlns='{NS_OWNER}'><configure node='urn:x:n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{}</value></field>{white}</x></configure></pubsub></iq>",
            node::NS_NODE_CONFIG
        ),
    );
    assert!(h.take(a).contains("type='result'"));
    let out = publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='2'><x xmlns='urn:x'/></item>",
        &white,
    );
    assert!(out.contains("type='result'"), "{out}");
}

#[test]
fn options_max_items_max_equals_node_max_on_republish() {
    let (mut h, a, _) = pair();
    let opts = format!(
        "{}{}",
        field("pubsub#max_items", "max"),
        field("pubsub#access_model", "open")
    );
    for id in ["1", "2", "3"] {
        let out = publish(
            &mut h,
            a,
            "urn:xmpp:omemo:2:bundles",
            &format!("<item id='{id}'><bundle xmlns='urn:xmpp:omemo:2'/></item>"),
            &opts,
        );
        assert!(out.contains("type='result'"), "{id}: {out}");
    }
    let got = items(
        &mut h,
        a,
        "alice@localhost",
        "urn:xmpp:omemo:2:bundles",
        "/>",
    );
    for id in ["1", "2", "3"] {
        assert!(got.contains(&format!("<item id='{id}'>")), "{got}");
    }
}

#[test]
fn presence_access_contact_reads_stranger_refused() {
    let (mut h, a, b) = pair();
    let c = online(&mut h, "carol", "c", &NOTIFY);
    publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='1'><x xmlns='urn:x'>s</x></item>",
        "",
    );
    let got = items(&mut h, b, "alice@localhost", "urn:x:n", "/>");
    assert!(got.contains("<item id='1'>"), "{got}");
    let got = items(&mut h, c, "alice@localhost", "urn:x:n", "/>");
    assert!(got.contains("<not-authorized"), "{got}");
    assert!(got.contains("<presence-subscription-required"), "{got}");
    assert!(!got.contains(">s</x>"), "{got}");
    let got = items(&mut h, c, "alice@localhost", "urn:x:none", "/>");
    assert!(got.contains("<item-not-found"), "{got}");
    // disco#items shows the node to bob, not to carol.
    let disco = "<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>";
    h.send(b, disco);
    assert!(h.take(b).contains("node='urn:x:n'"));
    h.send(c, disco);
    let out = h.take(c);
    assert!(
        out.contains("type='result'") && !out.contains("urn:x:n"),
        "{out}"
    );
}

#[test]
fn whitelist_access_only_owner_reads_and_is_notified() {
    let (mut h, a, b) = pair();
    let white = field("pubsub#access_model", "whitelist");
    let out = publish(
        &mut h,
        a,
        "urn:x:whitelisted",
        "<item id='1'><x xmlns='urn:x'>w</x></item>",
        &white,
    );
    assert!(out.contains("<message"), "own resource notified: {out}");
    assert!(!h.take(b).contains(">w</x>"));
    let got = items(&mut h, b, "alice@localhost", "urn:x:whitelisted", "/>");
    assert!(got.contains("<not-allowed"), "{got}");
    assert!(got.contains("<closed-node"), "{got}");
    assert!(!got.contains(">w</x>"), "{got}");
}

#[test]
fn publish_notifies_by_notify_caps_only() {
    let (mut h, a, b) = pair();
    let out = publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>n</x></item>",
        "",
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(
        out.contains(&format!(
            "<message from='alice@localhost' to='alice@localhost/a' type='headline'><event xmlns='{NS_EVENT}'><items node='urn:x:watched'><item id='1'><x xmlns='urn:x'>n</x></item></items></event></message>"
        )),
        "{out}"
    );
    let to_b = h.take(b);
    assert!(
        to_b.contains("to='bob@localhost/b' type='headline'") && to_b.contains(">n</x>"),
        "{to_b}"
    );
    // Nobody asked for urn:x:other+notify.
    publish(
        &mut h,
        a,
        "urn:x:other",
        "<item id='1'><x xmlns='urn:x'>o</x></item>",
        "",
    );
    assert!(!h.take(a).contains("<message"));
    assert!(!h.take(b).contains("<message"));
}

#[test]
fn contact_coming_online_gets_last_item() {
    let (mut h, a, _) = pair();
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>old</x></item>",
        "",
    );
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='2'><x xmlns='urn:x'>last</x></item>",
        "",
    );
    let b3 = h.login("bob", "b3");
    h.send(b3, &caps_presence(&NOTIFY));
    let got = h.take(b3);
    assert!(
        got.contains("to='bob@localhost/b3' type='headline'"),
        "{got}"
    );
    assert!(
        got.contains(">last</x>") && !got.contains(">old</x>"),
        "{got}"
    );
    // A node that never sends its last item does not.
    let never = field("pubsub#send_last_published_item", "never");
    publish(
        &mut h,
        a,
        "urn:xmpp:bookmarks:1",
        "<item id='r@m'><conference xmlns='urn:xmpp:bookmarks:1'/></item>",
        &never,
    );
    // The owner's own new resource gets the last item too.
    let a2 = h.login("alice", "a2");
    h.send(a2, &caps_presence(&NOTIFY));
    let got = h.take(a2);
    assert!(
        got.contains("to='alice@localhost/a2' type='headline'"),
        "{got}"
    );
    assert!(got.contains(">last</x>"), "{got}");
    assert!(!got.contains("r@m"), "{got}");
}

#[test]
fn unknown_caps_asked_once_then_last_item_sent() {
    let (mut h, a, _) = pair();
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>v</x></item>",
        "",
    );
    let notify = ["urn:x:watched"];
    let b2 = h.login("bob", "b2");
    h.send(b2, &caps_presence(&notify));
    let out = h.take(b2);
    let queries = caps_queries(&out);
    // alice's service and bob's own ask; the answer is shared by ver, so the second one
    // is answered through the first query's result.
    assert!(!queries.is_empty(), "{out}");
    assert!(
        !out.contains(">v</x>"),
        "not before the caps are known: {out}"
    );
    let got = answer(&mut h, b2, &out, &notify);
    assert!(got.contains(">v</x>"), "{got}");
    // Cached by ver: the next resource with it is not asked, and greeted at once.
    let b3 = h.login("bob", "b3");
    h.send(b3, &caps_presence(&notify));
    let out = h.take(b3);
    assert!(caps_queries(&out).is_empty(), "{out}");
    assert!(out.contains(">v</x>"), "{out}");
}

#[test]
fn forged_caps_answer_not_cached() {
    let (mut h, a, _) = pair();
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>v</x></item>",
        "",
    );
    let b2 = h.login("bob", "b2");
    let claimed = ["urn:x:watched", "urn:x:claimed"];
    h.send(b2, &caps_presence(&claimed));
    let out = h.take(b2);
    for id in caps_queries(&out) {
        // Answers with other features than the ver hashes.
        h.send(
            b2,
            &disco_answer(&id, "alice@localhost", &["urn:x:watched"], &ver(&claimed)),
        );
    }
    let got = h.take(b2);
    assert!(!got.contains(">v</x>"), "{got}");
    // Not cached: the same ver is asked about again.
    let b3 = h.login("bob", "b3");
    h.send(b3, &caps_presence(&claimed));
    assert!(!caps_queries(&h.take(b3)).is_empty());
}

#[test]
fn retract_with_notify_sends_retract_and_removes_item() {
    let (mut h, a, b) = pair();
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>r</x></item>",
        "",
    );
    h.take(b);
    h.send(
        a,
        &format!(
            "<iq type='set' id='ret'><pubsub xmlns='{NS_PUBSUB}'><retract node='urn:x:watched' notify='true'><item id='1'/></retract></pubsub></iq>"
        ),
    );
    assert!(h.take(a).contains("type='result'"));
    let to_b = h.take(b);
    assert!(
        to_b.contains("<items node='urn:x:watched'><retract id='1'/></items>"),
        "{to_b}"
    );
    let got = items(&mut h, a, "alice@localhost", "urn:x:watched", "/>");
    assert!(
        got.contains("type='result'") && !got.contains("<item "),
        "{got}"
    );
    // bob may not retract alice's items.
    h.send(
        b,
        &format!(
            "<iq type='set' id='ret' to='alice@localhost'><pubsub xmlns='{NS_PUBSUB}'><retract node='urn:x:watched'><item id='1'/></retract></pubsub></iq>"
        ),
    );
    assert!(h.take(b).contains("<forbidden"));
}

#[test]
fn owner_delete_notifies_and_node_gone() {
    let (mut h, a, b) = pair();
    publish(
        &mut h,
        a,
        "urn:x:watched",
        "<item id='1'><x xmlns='urn:x'>d</x></item>",
        "",
    );
    h.take(b);
    h.send(
        a,
        &format!("<iq type='set' id='del'><pubsub xmlns='{NS_OWNER}'><delete node='urn:x:watched'/></pubsub></iq>"),
    );
    assert!(h.take(a).contains("type='result'"));
    assert!(h.take(b).contains("<delete node='urn:x:watched'/>"));
    let got = items(&mut h, a, "alice@localhost", "urn:x:watched", "/>");
    assert!(got.contains("<item-not-found"), "{got}");
}

#[test]
fn owner_configure_get_and_set_form() {
    let (mut h, a, b) = pair();
    publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='1'><x xmlns='urn:x'/></item>",
        "",
    );
    let get = format!(
        "<iq type='get' id='cfg'><pubsub xmlns='{NS_OWNER}'><configure node='urn:x:n'/></pubsub></iq>"
    );
    h.send(a, &get);
    let out = h.take(a);
    assert!(
        out.contains("<field var='pubsub#access_model' type='list-single'><value>presence</value>"),
        "{out}"
    );
    h.send(
        a,
        &format!(
            "<iq type='set' id='cfg'><pubsub xmlns='{NS_OWNER}'><configure node='urn:x:n'><x xmlns='jabber:x:data' type='submit'>{}{}</x></configure></pubsub></iq>",
            field("pubsub#access_model", "open"),
            field("pubsub#max_items", "max")
        ),
    );
    assert!(h.take(a).contains("type='result'"));
    h.send(a, &get);
    let out = h.take(a);
    assert!(out.contains("<value>open</value>"), "{out}");
    assert!(
        out.contains(&format!(
            "<value>{}</value>",
            crate::config::Config::default().pep.max_items
        )),
        "{out}"
    );
    // Only the owner configures.
    h.send(b, &get.replace("id='cfg'", "id='cfg' to='alice@localhost'"));
    assert!(h.take(b).contains("<forbidden"));
}

#[test]
fn max_items_keeps_newest_and_items_max_items_returns_last() {
    let (mut h, a, _) = pair();
    let opts = field("pubsub#max_items", "3");
    for i in 1..=5 {
        publish(
            &mut h,
            a,
            "urn:x:n",
            &format!("<item id='i{i}'><x xmlns='urn:x'>{i}</x></item>"),
            &opts,
        );
    }
    let got = items(&mut h, a, "alice@localhost", "urn:x:n", "/>");
    assert!(!got.contains("id='i2'") && got.contains("id='i3'") && got.contains("id='i5'"));
    let got = items(&mut h, a, "alice@localhost", "urn:x:n", " max_items='2'/>");
    assert!(!got.contains("id='i3'") && got.contains("id='i4'") && got.contains("id='i5'"));
    let got = items(
        &mut h,
        a,
        "alice@localhost",
        "urn:x:n",
        "><item id='i3'/></items>",
    );
    assert!(got.contains("id='i3'") && !got.contains("id='i4'"), "{got}");
}

/// Conversations' legacy OMEMO stanzas (devicelist and bundle with publish-options).
#[test]
fn omemo_legacy_device_list_and_bundle_between_accounts() {
    let (mut h, a, b) = pair();
    let c = online(&mut h, "carol", "c", &NOTIFY);
    let open = field("pubsub#access_model", "open");
    let out = publish(
        &mut h,
        a,
        "eu.siacs.conversations.axolotl.devicelist",
        "<item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list></item>",
        &open,
    );
    assert!(out.contains("type='result'"), "{out}");
    let to_b = h.take(b);
    assert!(to_b.contains("<device id='1234'/>"), "bob notified: {to_b}");
    let out = publish(
        &mut h,
        a,
        "eu.siacs.conversations.axolotl.bundles:1234",
        "<item id='current'><bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>BASE64</signedPreKeyPublic><identityKey>KEY</identityKey><prekeys><preKeyPublic preKeyId='1'>PK</preKeyPublic></prekeys></bundle></item>",
        &open,
    );
    assert!(out.contains("type='result'"), "{out}");
    // bob and even the stranger carol fetch the bundle (open).
    for conn in [b, c] {
        let got = items(
            &mut h,
            conn,
            "alice@localhost",
            "eu.siacs.conversations.axolotl.bundles:1234",
            " max_items='1'/>",
        );
        assert!(got.contains("<identityKey>KEY</identityKey>"), "{got}");
        let got = items(
            &mut h,
            conn,
            "alice@localhost",
            "eu.siacs.conversations.axolotl.devicelist",
            "/>",
        );
        assert!(got.contains("<device id='1234'/>"), "{got}");
    }
    // A second device updates the list; Conversations republishes with the same options.
    publish(
        &mut h,
        a,
        "eu.siacs.conversations.axolotl.devicelist",
        "<item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/><device id='99'/></list></item>",
        &open,
    );
    assert!(h.take(b).contains("<device id='99'/>"));
}

/// urn:xmpp:omemo:2: device list with item id 'current', bundles one item per device.
#[test]
fn omemo2_devices_and_bundles_between_accounts() {
    let (mut h, a, b) = pair();
    let opts = format!(
        "{}{}",
        field("pubsub#access_model", "open"),
        field("pubsub#max_items", "max")
    );
    let out = publish(
        &mut h,
        a,
        "urn:xmpp:omemo:2:devices",
        "<item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='11'/><device id='22' label='phone'/></devices></item>",
        &field("pubsub#access_model", "open"),
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(h.take(b).contains("<device id='22' label='phone'/>"));
    for id in ["11", "22"] {
        let out = publish(
            &mut h,
            a,
            "urn:xmpp:omemo:2:bundles",
            &format!(
                "<item id='{id}'><bundle xmlns='urn:xmpp:omemo:2'><ik>IK{id}</ik></bundle></item>"
            ),
            &opts,
        );
        assert!(out.contains("type='result'"), "{out}");
    }
    let got = items(
        &mut h,
        b,
        "alice@localhost",
        "urn:xmpp:omemo:2:bundles",
        "><item id='11'/></items>",
    );
    assert!(
        got.contains("<ik>IK11</ik>") && !got.contains("IK22"),
        "{got}"
    );
    let got = items(
        &mut h,
        b,
        "alice@localhost",
        "urn:xmpp:omemo:2:bundles",
        "><item id='22'/></items>",
    );
    assert!(got.contains("<ik>IK22</ik>"), "{got}");
}

#[test]
fn avatar_publish_sets_vcard_photo_and_vcard_publishes_avatar() {
    let (mut h, a, b) = pair();
    // "hello" as the image; its SHA-1 is the id.
    let id = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    publish(
        &mut h,
        a,
        avatar::NS_DATA,
        &format!("<item id='{id}'><data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data></item>"),
        "",
    );
    let out = publish(
        &mut h,
        a,
        avatar::NS_METADATA,
        &format!(
            "<item id='{id}'><metadata xmlns='urn:xmpp:avatar:metadata'><info id='{id}' bytes='5' type='image/png'/></metadata></item>"
        ),
        "",
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(h.take(b).contains(&format!("<info id='{id}'")));
    h.send(
        b,
        "<iq type='get' id='v' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    );
    let card = h.take(b);
    assert!(card.contains("<BINVAL>aGVsbG8=</BINVAL>"), "{card}");
    assert!(card.contains("<TYPE>image/png</TYPE>"), "{card}");

    // The other way: a vCard photo ("hi!") becomes the PEP avatar, with a notification.
    h.send(
        a,
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>A</FN><PHOTO><TYPE>image/jpeg</TYPE><BINVAL>aGkh</BINVAL></PHOTO></vCard></iq>",
    );
    h.take(a);
    let to_b = h.take(b);
    assert!(to_b.contains("type='image/jpeg'"), "{to_b}");
    let got = items(
        &mut h,
        b,
        "alice@localhost",
        avatar::NS_DATA,
        " max_items='1'/>",
    );
    assert!(got.contains(">aGkh</data>"), "{got}");
    // A vCard without a photo disables the avatar.
    h.send(
        a,
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>",
    );
    h.take(a);
    let got = items(
        &mut h,
        b,
        "alice@localhost",
        avatar::NS_METADATA,
        " max_items='1'/>",
    );
    assert!(
        got.contains("<metadata xmlns='urn:xmpp:avatar:metadata'/>"),
        "{got}"
    );
}

#[test]
fn bookmarks2_publish_shows_in_private_storage_and_back() {
    let (mut h, a, b) = pair();
    let opts = format!(
        "{}{}{}{}",
        field("pubsub#persist_items", "true"),
        field("pubsub#max_items", "max"),
        field("pubsub#send_last_published_item", "never"),
        field("pubsub#access_model", "whitelist"),
    );
    let out = publish(
        &mut h,
        a,
        bookmarks::NS_BOOKMARKS,
        "<item id='room@muc.localhost'><conference xmlns='urn:xmpp:bookmarks:1' name='Room' autojoin='true'><nick>al</nick></conference></item>",
        &opts,
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(!h.take(b).contains("room@muc"), "whitelist: bob not told");
    let private = "<iq type='get' id='p'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>";
    h.send(a, private);
    let got = h.take(a);
    assert!(
        got.contains("<conference jid='room@muc.localhost' name='Room' autojoin='true'><nick>al</nick></conference>"),
        "{got}"
    );
    // A legacy client replaces the list: one room gone, another added.
    h.send(
        a,
        "<iq type='set' id='p'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='other@muc.localhost' autojoin='false' name='Other'/></storage></query></iq>",
    );
    let out = h.take(a);
    assert!(out.contains("type='result'"), "{out}");
    assert!(out.contains("<retract id='room@muc.localhost'/>"), "{out}");
    assert!(out.contains("<item id='other@muc.localhost'>"), "{out}");
    let got = items(&mut h, a, "alice@localhost", bookmarks::NS_BOOKMARKS, "/>");
    assert!(got.contains("<item id='other@muc.localhost'><conference xmlns='urn:xmpp:bookmarks:1' name='Other'/></item>"), "{got}");
    assert!(!got.contains("room@muc"), "{got}");
    // The node keeps its whitelist.
    let got = items(&mut h, b, "alice@localhost", bookmarks::NS_BOOKMARKS, "/>");
    assert!(got.contains("<not-allowed"), "{got}");
}

#[test]
fn account_disco_info_has_pep_identity_and_features() {
    let (mut h, a, _) = pair();
    h.send(a, "<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let out = h.take(a);
    assert!(
        out.contains("<identity category='pubsub' type='pep'/>"),
        "{out}"
    );
    for f in FEATURES {
        assert!(out.contains(&format!("var='{f}'")), "{f}: {out}");
    }
}

#[test]
fn caps_cache_bounded_forgets_oldest() {
    let mut st = PepState::default();
    for i in 0..=MAX_CAPS {
        st.remember_for_test(&format!("v{i}"));
    }
    assert_eq!(st.caps_len(), MAX_CAPS);
    assert!(!st.knows("v0"));
    assert!(st.knows(&format!("v{MAX_CAPS}")));
}

#[test]
fn stranger_cannot_publish_on_owner_account() {
    let (mut h, _, b) = pair();
    h.send(
        b,
        &format!("<iq type='set' id='x' to='alice@localhost'><pubsub xmlns='{NS_PUBSUB}'><publish node='urn:x:n'><item><x xmlns='urn:x'/></item></publish></pubsub></iq>"),
    );
    assert!(h.take(b).contains("<forbidden"));
}

#[test]
fn node_and_item_size_bounds_from_config() {
    let mut config = crate::config::Config::default();
    config.pep.max_nodes = 2;
    config.pep.max_items = 3;
    let mut h = Harness::with_config(config);
    let a = online(&mut h, "alice", "a", &NOTIFY);
    for n in ["urn:x:1", "urn:x:2"] {
        let out = publish(&mut h, a, n, "<item id='1'><x xmlns='urn:x'/></item>", "");
        assert!(out.contains("type='result'"), "{out}");
    }
    let out = publish(
        &mut h,
        a,
        "urn:x:3",
        "<item id='1'><x xmlns='urn:x'/></item>",
        "",
    );
    assert!(out.contains("<resource-constraint"), "{out}");
    // `max` is the configured bound; more than it is refused.
    let out = publish(
        &mut h,
        a,
        "urn:x:1",
        "<item id='2'><x xmlns='urn:x'/></item>",
        &field("pubsub#max_items", "4"),
    );
    assert!(out.contains("<precondition-not-met"), "{out}");
    // An item that could not be sent back in one stanza is refused.
    let big = "y".repeat(crate::config::Config::default().limits.max_stanza_bytes - 600);
    let out = publish(
        &mut h,
        a,
        "urn:x:1",
        &format!("<item id='big'><x xmlns='urn:x'>{big}</x></item>"),
        "",
    );
    assert!(
        out.contains("<not-acceptable"),
        "{}",
        &out[..200.min(out.len())]
    );
}

#[test]
fn node_disco_info_for_readers_only() {
    let (mut h, a, b) = pair();
    let c = online(&mut h, "carol", "c", &NOTIFY);
    publish(
        &mut h,
        a,
        "urn:x:n",
        "<item id='1'><x xmlns='urn:x'/></item>",
        "",
    );
    let q = "<iq type='get' id='i' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:x:n'/></iq>";
    h.send(b, q);
    let out = h.take(b);
    assert!(
        out.contains("<identity category='pubsub' type='leaf'/>"),
        "{out}"
    );
    assert!(out.contains("<value>presence</value>"), "{out}");
    h.send(c, q);
    assert!(h.take(c).contains("<not-authorized"));
    h.send(b, &q.replace("urn:x:n", "urn:x:none"));
    assert!(h.take(b).contains("<item-not-found"));
}

/// A measurement, not a check: `cargo test --release --lib bench_publish -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn bench_publish_1000_and_fetch_all() {
    let (mut h, a, b) = pair();
    let opts = field("pubsub#max_items", "max");
    let t = std::time::Instant::now();
    for i in 0..1000 {
        publish(
            &mut h,
            a,
            "urn:x:watched",
            &format!(
                "<item id='i{i}'><x xmlns='urn:x'>{}</x></item>",
                "z".repeat(200)
            ),
            &opts,
        );
        h.take(b);
    }
    let pubs = t.elapsed();
    let t1 = std::time::Instant::now();
    for i in 0..1000 {
        publish(
            &mut h,
            a,
            "urn:x:one",
            &format!(
                "<item id='i{i}'><x xmlns='urn:x'>{}</x></item>",
                "z".repeat(200)
            ),
            "",
        );
    }
    eprintln!("1000 publishes on a 1-item node: {:?}", t1.elapsed());
    let t = std::time::Instant::now();
    let got = items(&mut h, b, "alice@localhost", "urn:x:watched", "/>");
    eprintln!(
        "1000 publishes (each notifying 2 resources): {pubs:?}; fetch all 1000: {:?}, {} bytes",
        t.elapsed(),
        got.len()
    );
}
