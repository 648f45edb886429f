//! Tests for the stream parser: event sequences, every refusal of RFC 6120 §11, limits,
//! restarts, and robustness against arbitrary bytes.

use super::*;
use crate::xml::{Node, ns};

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
    xml:lang='en'>";

/// Feeds `input` in chunks of `chunk` bytes, draining events after each feed.
fn run(input: &[u8], chunk: usize, limits: XmlLimits) -> Result<Vec<StreamEvent>, XmlError> {
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        p.feed(piece)?;
        drain(&mut p, &mut out)?;
    }
    Ok(out)
}

fn drain(p: &mut StreamParser, out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
    for _ in 0..10_000 {
        match p.next_event()? {
            Some(ev) => out.push(ev),
            None => return Ok(()),
        }
    }
    panic!("next_event never returned None");
}

fn events(input: &str) -> Result<Vec<StreamEvent>, XmlError> {
    run(input.as_bytes(), input.len(), XmlLimits::default())
}

/// Events after a standard header; the header itself is checked and dropped.
fn after_header(body: &str) -> Result<Vec<StreamEvent>, XmlError> {
    let mut evs = events(&format!("{HEADER}{body}"))?;
    assert!(matches!(evs.first(), Some(StreamEvent::Open(_))), "{evs:?}");
    evs.remove(0);
    Ok(evs)
}

fn one_element(body: &str) -> Element {
    match after_header(body).unwrap().as_slice() {
        [StreamEvent::Element(e)] => e.clone(),
        other => panic!("expected one element, got {other:?}"),
    }
}

fn refused(body: &str) -> XmlError {
    match after_header(body) {
        Err(e) => e,
        Ok(evs) => panic!("accepted {body:?}: {evs:?}"),
    }
}

fn realistic_stream() -> String {
    format!(
        "<?xml version='1.0' encoding='utf-8'?>\n{HEADER}\
         <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
         </starttls></stream:features> \n\t \
         <iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver='v&apos;1'>\
         <item jid='a@b' name=\"x &gt; y, 'q' &lt;&quot;>\"/></query></iq>\n\
         <message to='a@b' xml:lang='fr' xmlns:x='urn:x' x:foo='b>r'>\
         <body>héllo 😀 &lt;3 &amp; &#x1F600;&#65;</body>\
         <x:data><![CDATA[<raw> & ]]]]><![CDATA[>]]>tail</x:data></message>\
         \n \n</stream:stream>"
    )
}

#[test]
fn stream_whole_input_resolved_events() {
    let evs = events(&realistic_stream()).unwrap();
    assert_eq!(evs.len(), 5, "{evs:?}");
    let StreamEvent::Open(h) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(h.name, "stream");
    assert_eq!(h.ns, ns::STREAM);
    assert_eq!(h.default_ns, ns::CLIENT);
    assert_eq!(h.attr("to"), Some("example.com"));
    assert_eq!(h.attr("version"), Some("1.0"));
    assert!(
        h.attrs
            .iter()
            .any(|a| a.ns == ns::XML && a.name == "lang" && a.value == "en")
    );
    // Declarations are not attributes.
    assert_eq!(h.attrs.len(), 3, "{:?}", h.attrs);

    let StreamEvent::Element(features) = &evs[1] else {
        panic!()
    };
    assert!(features.is("features", ns::STREAM));
    let tls = features.child("starttls", ns::TLS).unwrap();
    assert!(tls.child("required", ns::TLS).is_some());
    assert!(tls.attrs.is_empty());

    let StreamEvent::Element(iq) = &evs[2] else {
        panic!()
    };
    assert!(iq.is("iq", ns::CLIENT));
    assert_eq!(iq.attr("id"), Some("r1"));
    let query = iq.child("query", ns::ROSTER).unwrap();
    assert_eq!(query.attr("ver"), Some("v'1"));
    assert_eq!(
        query.child("item", ns::ROSTER).unwrap().attr("name"),
        Some("x > y, 'q' <\">")
    );

    let StreamEvent::Element(msg) = &evs[3] else {
        panic!()
    };
    assert!(msg.is("message", ns::CLIENT));
    assert_eq!(msg.attr_ns(ns::XML, "lang"), Some("fr"));
    assert_eq!(msg.attr_ns("urn:x", "foo"), Some("b>r"));
    assert_eq!(msg.attrs.len(), 3, "{:?}", msg.attrs);
    assert_eq!(
        msg.child("body", ns::CLIENT).unwrap().text(),
        "héllo 😀 <3 & 😀A"
    );
    let data = msg.child("data", "urn:x").unwrap();
    // Text and CDATA merge into one node.
    assert_eq!(data.children, vec![Node::Text("<raw> & ]]>tail".into())]);

    assert_eq!(evs[4], StreamEvent::Close);
}

#[test]
fn stream_every_chunk_size_same_events() {
    let input = realistic_stream();
    let reference = events(&input).unwrap();
    for chunk in 1..=17 {
        let evs = run(input.as_bytes(), chunk, XmlLimits::default()).unwrap();
        assert_eq!(evs, reference, "chunk size {chunk}");
    }
}

#[test]
fn stream_idle_after_stanzas_holds_no_buffer() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    let mut evs = Vec::new();
    drain(&mut p, &mut evs).unwrap();
    let big = format!("<message><body>{}</body></message>  ", "a".repeat(100_000));
    for piece in big.as_bytes().chunks(4096) {
        p.feed(piece).unwrap();
        drain(&mut p, &mut evs).unwrap();
    }
    assert_eq!(evs.len(), 2);
    assert_eq!(p.buffered_len(), 0);
    assert_eq!(p.framer.held_capacity(), 0);
    // A whitespace keepalive is consumed without being held.
    p.feed(b" ").unwrap();
    drain(&mut p, &mut evs).unwrap();
    assert_eq!(p.framer.held_capacity(), 0);
    // A partial stanza is held.
    p.feed(b"<pres").unwrap();
    drain(&mut p, &mut evs).unwrap();
    assert_eq!(p.buffered_len(), 5);
}

#[test]
fn stream_close_then_input_ignored() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(format!("{HEADER}</stream:stream><garbage").as_bytes())
        .unwrap();
    let mut evs = Vec::new();
    drain(&mut p, &mut evs).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1], StreamEvent::Close);
    assert!(p.is_closed());
    p.feed(b"\xff\xff not xml").unwrap();
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn header_other_prefix_closes_with_same_prefix() {
    let evs = events(
        "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'>\
         <presence/></s:stream>",
    )
    .unwrap();
    let StreamEvent::Open(h) = &evs[0] else {
        panic!()
    };
    assert_eq!((h.name.as_str(), h.ns.as_str()), ("stream", ns::STREAM));
    assert_eq!(h.default_ns, ns::SERVER);
    assert_eq!(
        evs[1],
        StreamEvent::Element(Element::new("presence", ns::SERVER))
    );
    assert_eq!(evs[2], StreamEvent::Close);
}

#[test]
fn header_reports_its_prefixed_declarations() {
    let evs = events(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' \
         xmlns:db='jabber:server:dialback' version='1.0'>",
    )
    .unwrap();
    let StreamEvent::Open(h) = &evs[0] else {
        panic!()
    };
    assert_eq!(
        h.declared,
        [
            ("stream".to_owned(), ns::STREAM.to_owned()),
            ("db".to_owned(), "jabber:server:dialback".to_owned())
        ]
    );
    assert!(h.declares("jabber:server:dialback"));
    assert!(
        !h.declares("jabber:server"),
        "the default namespace is not a prefix"
    );
    let evs = events("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>").unwrap();
    let StreamEvent::Open(h) = &evs[0] else {
        panic!()
    };
    assert!(!h.declares("jabber:server:dialback"));
}

#[test]
fn header_wrong_close_tag_not_well_formed() {
    let e = events("<s:stream xmlns:s='http://etherx.jabber.org/streams'></stream:stream>");
    assert!(matches!(e, Err(XmlError::NotWellFormed(_))), "{e:?}");
    let e = refused("</foo>");
    assert!(matches!(e, XmlError::NotWellFormed(_)), "{e:?}");
}

#[test]
fn header_self_closed_opens_and_closes() {
    let evs = events("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>").unwrap();
    assert!(matches!(&evs[0], StreamEvent::Open(h) if h.default_ns.is_empty()));
    assert_eq!(evs[1], StreamEvent::Close);
}

#[test]
fn header_html_root_reported_as_is() {
    let evs = events("<html><body>").unwrap();
    let StreamEvent::Open(h) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!((h.name.as_str(), h.ns.as_str()), ("html", ""));
    assert_eq!(evs.len(), 1, "the unfinished <body> is not an event");
}

#[test]
fn header_unbound_stream_prefix_not_well_formed() {
    let e = events("<stream:stream xmlns='jabber:client'>");
    assert_eq!(e, Err(XmlError::NotWellFormed("unbound element prefix")));
}

#[test]
fn prolog_http_request_not_well_formed() {
    let e = events("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert!(matches!(e, Err(XmlError::NotWellFormed(_))), "{e:?}");
    // Refused at the first byte, before the request line is complete.
    let mut p = StreamParser::new(XmlLimits::default());
    assert!(matches!(p.feed(b"G"), Err(XmlError::NotWellFormed(_))));
}

#[test]
fn prolog_declaration_other_encoding_bad_encoding() {
    let e = events(&format!(
        "<?xml version='1.0' encoding='ISO-8859-1'?>{HEADER}"
    ));
    assert_eq!(e, Err(XmlError::BadEncoding));
    assert!(
        events(&format!(
            "<?xml version=\"1.0\" encoding=\"Utf-8\"?>{HEADER}"
        ))
        .is_ok()
    );
}

#[test]
fn prolog_second_declaration_restricted() {
    let e = events(&format!(
        "<?xml version='1.0'?><?xml version='1.0'?>{HEADER}"
    ));
    assert!(matches!(e, Err(XmlError::Restricted(_))), "{e:?}");
}

#[test]
fn stream_declaration_after_header_restricted() {
    let e = refused("<?xml version='1.0'?>");
    assert!(matches!(e, XmlError::Restricted(_)), "{e:?}");
}

#[test]
fn stanza_comment_restricted() {
    assert_eq!(refused("<!-- hi -->"), XmlError::Restricted("comment"));
    assert_eq!(
        refused("<message><!-- hi --></message>"),
        XmlError::Restricted("comment")
    );
    assert!(matches!(
        events(&format!("<!-- x -->{HEADER}")),
        Err(XmlError::Restricted(_))
    ));
}

#[test]
fn stanza_processing_instruction_restricted() {
    assert!(matches!(
        refused("<?php echo 1; ?>"),
        XmlError::Restricted(_)
    ));
    assert!(matches!(
        refused("<message><?target data?></message>"),
        XmlError::Restricted(_)
    ));
    assert!(matches!(
        events(&format!("<?xml-stylesheet href='a'?>{HEADER}")),
        Err(XmlError::Restricted(_))
    ));
}

#[test]
fn prolog_billion_laughs_dtd_restricted() {
    let lol = "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n<!ENTITY lol 'lol'>\n\
               <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>\n]>\n\
               <lolz>&lol2;</lolz>";
    assert_eq!(
        events(lol),
        Err(XmlError::Restricted("DTD or markup declaration"))
    );
    // Refused at `<!D`, before the DTD is buffered.
    let mut p = StreamParser::new(XmlLimits::default());
    assert!(matches!(p.feed(b"<!D"), Err(XmlError::Restricted(_))));
    // In the middle of a stream too.
    assert!(matches!(
        refused("<!ENTITY lol 'lol'>"),
        XmlError::Restricted(_)
    ));
    assert!(matches!(
        refused("<message><!DOCTYPE x></message>"),
        XmlError::Restricted(_)
    ));
}

#[test]
fn stanza_undefined_entity_not_well_formed() {
    for body in [
        "<message><body>&lol;</body></message>",
        "<message a='&nbsp;'/>",
        "<message><body>&amp</body></message>",
        "<message><body>a & b</body></message>",
    ] {
        assert!(
            matches!(refused(body), XmlError::NotWellFormed(_)),
            "{body}"
        );
    }
}

#[test]
fn stanza_bad_character_reference_not_well_formed() {
    for body in [
        "<m>&#0;</m>",
        "<m>&#xD800;</m>",
        "<m>&#x110000;</m>",
        "<m>&#xFFFE;</m>",
        "<m>&#1;</m>",
        "<m>&#+65;</m>",
        "<m>&#x;</m>",
        "<m a='&#0;'/>",
    ] {
        assert!(
            matches!(refused(body), XmlError::NotWellFormed(_)),
            "{body}"
        );
    }
    let e = one_element("<m>&#9;&#x10FFFF;&#0000065;</m>");
    assert_eq!(e.text(), "\t\u{10FFFF}A");
}

#[test]
fn stanza_unbound_element_prefix_not_well_formed() {
    assert_eq!(
        refused("<message><foo:bar/></message>"),
        XmlError::NotWellFormed("unbound element prefix")
    );
    assert_eq!(
        refused("<foo:bar/>"),
        XmlError::NotWellFormed("unbound element prefix")
    );
}

#[test]
fn stanza_unbound_attribute_prefix_not_well_formed() {
    assert_eq!(
        refused("<message foo:a='1'/>"),
        XmlError::NotWellFormed("unbound attribute prefix")
    );
}

#[test]
fn stanza_prefix_scope_ends_with_element() {
    let e = refused("<message><x xmlns:p='urn:p'><p:y/></x><p:z/></message>");
    assert_eq!(e, XmlError::NotWellFormed("unbound element prefix"));
    let e = refused("<a xmlns:p='urn:p'/><p:b/>");
    assert_eq!(e, XmlError::NotWellFormed("unbound element prefix"));
}

#[test]
fn stanza_undeclared_prefix_not_well_formed() {
    assert!(matches!(
        refused("<message xmlns:foo=''/>"),
        XmlError::NotWellFormed(_)
    ));
    assert!(matches!(
        refused("<message xmlns:xml='urn:not-xml'/>"),
        XmlError::NotWellFormed(_)
    ));
    // Undeclaring the default namespace is allowed.
    let e = one_element("<message><x xmlns=''/></message>");
    assert_eq!(e.first_child().unwrap().ns, "");
}

#[test]
fn stanza_duplicate_attribute_not_well_formed() {
    for body in [
        "<message to='a' to='b'/>",
        "<message xmlns:p='urn:p' xmlns:q='urn:p' p:a='1' q:a='2'/>",
        "<message xmlns='urn:a' xmlns='urn:b'/>",
    ] {
        assert_eq!(
            refused(body),
            XmlError::NotWellFormed("duplicate attribute"),
            "{body}"
        );
    }
}

#[test]
fn stanza_mismatched_tag_not_well_formed() {
    assert_eq!(
        refused("<message><body></message></body>"),
        XmlError::NotWellFormed("mismatched end tag")
    );
    assert_eq!(
        refused("<message xmlns:a='urn:x' xmlns:b='urn:x'><a:b></b:b></message>"),
        XmlError::NotWellFormed("mismatched end tag")
    );
}

#[test]
fn stanza_invalid_utf8_bad_encoding() {
    let mut input = format!("{HEADER}<message><body>").into_bytes();
    input.extend_from_slice(b"\xC3\x28</body></message>");
    assert_eq!(
        run(&input, input.len(), XmlLimits::default()),
        Err(XmlError::BadEncoding)
    );
    // Refused while the stanza is still incomplete.
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    assert_eq!(p.feed(b"<message>\xFF"), Err(XmlError::BadEncoding));
    // Poisoned afterwards.
    assert_eq!(p.next_event(), Err(XmlError::BadEncoding));
    assert_eq!(p.feed(b"<message/>"), Err(XmlError::BadEncoding));
}

#[test]
fn stanza_invalid_utf8_split_across_feeds_bad_encoding() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    p.feed(b"<message><body>\xE2\x82").unwrap();
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.feed(b"\x28</body></message>"), Err(XmlError::BadEncoding));
    // A valid character split the same way is fine.
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    p.feed(b"<message><body>\xE2\x82").unwrap();
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"\xAC</body></message>").unwrap();
    let Some(StreamEvent::Element(e)) = p.next_event().unwrap() else {
        panic!()
    };
    assert_eq!(e.child("body", ns::CLIENT).unwrap().text(), "€");
}

#[test]
fn stanza_control_character_not_well_formed() {
    assert!(matches!(
        refused("<message><body>a\u{1}b</body></message>"),
        XmlError::NotWellFormed(_)
    ));
    assert!(matches!(
        refused("<message><body>\u{FFFF}</body></message>"),
        XmlError::NotWellFormed(_)
    ));
}

#[test]
fn stanza_one_mib_limit_exceeded_before_end() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    p.feed(b"<message><body>").unwrap();
    let chunk = [b'a'; 4096];
    let mut fed = 0usize;
    let mut refused_at = None;
    for _ in 0..256 {
        fed += chunk.len();
        if let Err(e) = p.feed(&chunk).and_then(|()| p.next_event().map(|_| ())) {
            assert_eq!(e, XmlError::LimitExceeded("stanza too large"));
            refused_at = Some(fed);
            break;
        }
    }
    let at = refused_at.expect("1 MiB stanza accepted");
    assert!(
        at <= 256 * 1024 + chunk.len(),
        "refused only after {at} bytes"
    );
    assert_eq!(p.buffered_len(), 0, "an errored parser drops its buffer");
}

#[test]
fn stanza_limit_counts_whole_frame() {
    let limits = XmlLimits {
        max_stanza_bytes: 32,
        ..XmlLimits::default()
    };
    let header = "<stream>";
    let ok = format!("{header}<m>{}</m>", "a".repeat(25));
    assert!(run(ok.as_bytes(), 3, limits).is_ok());
    let too_big = format!("{header}<m>{}</m>", "a".repeat(26));
    assert_eq!(
        run(too_big.as_bytes(), 3, limits),
        Err(XmlError::LimitExceeded("stanza too large"))
    );
    let big_header = format!("<stream a='{}'>", "a".repeat(40));
    assert!(matches!(
        run(big_header.as_bytes(), 5, limits),
        Err(XmlError::LimitExceeded(_))
    ));
}

#[test]
fn stanza_deep_nesting_limit_exceeded_early() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    let mut refused_after = None;
    for i in 0..10_000 {
        if let Err(e) = p.feed(b"<a>") {
            assert_eq!(e, XmlError::LimitExceeded("element nesting too deep"));
            refused_after = Some(i);
            break;
        }
    }
    // The 65th open tag is refused (the stanza is depth 1, the limit 64).
    assert_eq!(refused_after, Some(64));
    // Exactly at the limit is fine.
    let body = format!("{}{}", "<a>".repeat(64), "</a>".repeat(64));
    let evs = after_header(&body).unwrap();
    assert_eq!(evs.len(), 1);
    let deeper = format!("{}<b/>{}", "<a>".repeat(64), "</a>".repeat(64));
    assert!(matches!(refused(&deeper), XmlError::LimitExceeded(_)));
}

#[test]
fn stanza_too_many_attributes_limit_exceeded() {
    let attrs: String = (0..65).map(|i| format!(" a{i}='x'")).collect();
    assert_eq!(
        refused(&format!("<message{attrs}/>")),
        XmlError::LimitExceeded("too many attributes")
    );
    let attrs: String = (0..64).map(|i| format!(" a{i}='x'")).collect();
    assert_eq!(one_element(&format!("<message{attrs}/>")).attrs.len(), 64);
}

#[test]
fn stream_top_level_text_not_well_formed() {
    assert_eq!(
        refused("<presence/>hello<presence/>"),
        XmlError::NotWellFormed("text outside a stanza")
    );
    // Whitespace keepalives are fine.
    assert_eq!(after_header(" \n\t\r <presence/> \n ").unwrap().len(), 1);
}

#[test]
fn stanza_lt_in_attribute_value_not_well_formed() {
    assert!(matches!(
        refused("<message to='a<b'/>"),
        XmlError::NotWellFormed(_)
    ));
}

#[test]
fn stanza_cdata_outside_element_not_well_formed() {
    assert!(matches!(
        refused("<![CDATA[x]]>"),
        XmlError::NotWellFormed(_)
    ));
}

#[test]
fn stanza_bad_names_not_well_formed() {
    for body in [
        "<1a/>",
        "<:a/>",
        "<a: />",
        "<m 1x='1'/>",
        "<m :x='1'/>",
        "< m/>",
    ] {
        assert!(
            matches!(refused(body), XmlError::NotWellFormed(_)),
            "{body}"
        );
    }
}

#[test]
fn stanza_attribute_whitespace_normalized() {
    let e = one_element("<m a='x\ty\r\nz\rw&#10;&#9;'/>");
    assert_eq!(e.attr("a"), Some("x y z w\n\t"));
}

#[test]
fn stanza_text_line_ends_normalized() {
    let e = one_element("<m>a\r\nb\rc&#13;</m>");
    assert_eq!(e.text(), "a\nb\nc\r");
}

#[test]
fn stanza_gt_and_quotes_inside_attribute_values() {
    let e = one_element("<m a=\"it's > fine\" b='say \"hi\" />'/>");
    assert_eq!(e.attr("a"), Some("it's > fine"));
    assert_eq!(e.attr("b"), Some("say \"hi\" />"));
}

#[test]
fn stanza_cdata_with_markup_kept_as_text() {
    let e = one_element("<m><![CDATA[</m><m>]]] ]]]]></m>");
    assert_eq!(e.children, vec![Node::Text("</m><m>]]] ]]".into())]);
}

#[test]
fn stanza_namespace_declarations_not_attributes() {
    let e = one_element("<iq xmlns:p='urn:p' id='1'><p:q xmlns='urn:d'><r/></p:q></iq>");
    assert_eq!(e.attrs.len(), 1);
    let q = e.child("q", "urn:p").unwrap();
    assert!(q.attrs.is_empty());
    assert!(q.child("r", "urn:d").is_some());
}

#[test]
fn restart_keeps_pipelined_bytes() {
    let second = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>";
    let mut p = StreamParser::new(XmlLimits::default());
    let input = format!(
        "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>{second}<iq/>"
    );
    p.feed(input.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
    let Ok(Some(StreamEvent::Element(auth))) = p.next_event() else {
        panic!()
    };
    assert!(auth.is("auth", ns::SASL));
    p.restart();
    let Ok(Some(StreamEvent::Open(h))) = p.next_event() else {
        panic!()
    };
    assert_eq!(h.attr("to"), Some("example.com"));
    assert!(h.attr("version").is_none());
    assert_eq!(
        p.next_event(),
        Ok(Some(StreamEvent::Element(Element::new("iq", ns::CLIENT))))
    );
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn restart_after_extra_poll_rescans_header() {
    // The caller looks once more before restarting: the new header is framed as an
    // unfinished stanza for now, and is rescanned as a header after the restart.
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(format!("{HEADER}<success/>{HEADER}<iq/>").as_bytes())
        .unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Element(_)))));
    assert_eq!(p.next_event(), Ok(None));
    p.restart();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
    assert_eq!(
        p.next_event(),
        Ok(Some(StreamEvent::Element(Element::new("iq", ns::CLIENT))))
    );
}

#[test]
fn restart_resets_namespace_scope() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(format!("{HEADER}<a/>").as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Element(_)))));
    p.restart();
    p.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><b/>")
        .unwrap();
    let Ok(Some(StreamEvent::Open(h))) = p.next_event() else {
        panic!()
    };
    assert_eq!(h.default_ns, "");
    assert_eq!(
        p.next_event(),
        Ok(Some(StreamEvent::Element(Element::new("b", ""))))
    );
}

#[test]
fn take_unparsed_returns_bytes_after_starttls() {
    let tls: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0xff, b'<', 0x00,
    ];
    let mut input =
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").into_bytes();
    input.extend_from_slice(tls);
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(&input).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
    let Ok(Some(StreamEvent::Element(st))) = p.next_event() else {
        panic!()
    };
    assert!(st.is("starttls", ns::TLS));
    assert_eq!(p.take_unparsed(), tls);
    assert_eq!(p.buffered_len(), 0);
    // The parser now expects a new stream.
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
}

#[test]
fn take_unparsed_after_starttls_alone_is_empty() {
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes())
        .unwrap();
    let mut evs = Vec::new();
    drain(&mut p, &mut evs).unwrap();
    assert_eq!(evs.len(), 2);
    assert!(p.take_unparsed().is_empty());
}

#[test]
fn feed_undrained_input_bounded() {
    let limits = XmlLimits {
        max_stanza_bytes: 64,
        ..XmlLimits::default()
    };
    let mut p = StreamParser::new(limits);
    // The header is pending and never taken; what follows must not grow without bound.
    p.feed(b"<stream>").unwrap();
    let mut result = Ok(());
    for _ in 0..100 {
        result = p.feed(b"<a/><a/><a/>");
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(XmlError::LimitExceeded("input not drained")));
}

#[test]
fn stanza_byte_by_byte_large_is_linear() {
    // 200 KiB one byte at a time, polling after each: each byte is scanned once and the
    // buffer is never compacted mid-frame, so this is linear by construction.
    let mut p = StreamParser::new(XmlLimits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(p.next_event().unwrap().is_some());
    let text = "é".repeat(100 * 1024);
    let stanza = format!("<message><body>{text}</body></message>");
    let mut got = None;
    for &b in stanza.as_bytes() {
        p.feed(&[b]).unwrap();
        if let Some(ev) = p.next_event().unwrap() {
            got = Some(ev);
        }
    }
    let Some(StreamEvent::Element(e)) = got else {
        panic!("no element")
    };
    assert_eq!(
        e.child("body", ns::CLIENT).unwrap().text().len(),
        text.len()
    );
    assert_eq!(p.buffered_len(), 0);
}

/// A small deterministic PRNG for the robustness test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn stream_random_and_mutated_input_no_panic() {
    let limits = XmlLimits {
        max_stanza_bytes: 512,
        max_depth: 8,
        max_attrs: 8,
    };
    let valid = realistic_stream().into_bytes();
    let alphabet: &[u8] =
        b"<>/?!=:'\" \n&;#x[]CDATAmsgxmlnsstream-\xC3\xA9\xF0\x9F\x98\x80\xFF\x00";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    for round in 0..20_000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(300);
            (0..len)
                .map(|_| *alphabet.get(rng.below(alphabet.len())).unwrap_or(&b'<'))
                .collect()
        } else {
            let mut v = valid.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(v.len());
                match rng.below(4) {
                    0 => {
                        if let Some(b) = v.get_mut(at) {
                            *b = rng.next() as u8;
                        }
                    }
                    1 => v.insert(
                        at,
                        *alphabet.get(rng.below(alphabet.len())).unwrap_or(&b'<'),
                    ),
                    2 => {
                        if at < v.len() {
                            v.remove(at);
                        }
                    }
                    _ => v.truncate(at),
                }
            }
            v
        };
        let mut p = StreamParser::new(limits);
        let mut rest: &[u8] = &input;
        let mut evs = Vec::new();
        let mut ok = true;
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(rest.len().min(1 + rng.below(40)));
            rest = tail;
            if p.feed(piece).is_err() || drain(&mut p, &mut evs).is_err() {
                ok = false;
                break;
            }
            assert!(p.buffered_len() <= 2 * limits.max_stanza_bytes + 40);
        }
        if ok {
            accepted += 1;
        }
        if round % 7 == 0 {
            let _ = p.take_unparsed();
            assert_eq!(p.buffered_len(), 0);
        }
    }
    // Some mutations leave the stream valid (e.g. changed text); the test must exercise both.
    assert!(accepted > 0 && accepted < 20_000, "accepted {accepted}");
}

#[test]
fn idle_after_declaring_stanza_scope_holds_no_spare_heap() {
    // Memory budget: an idle stream keeps its header's bindings and nothing else; the usual
    // names are shared constants, and an element's declarations give their room back.
    let mut p = StreamParser::new(XmlLimits::default());
    let mut out = Vec::new();
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<iq type='get' id='1'><query xmlns='jabber:iq:roster' xmlns:x='urn:x'/></iq>")
        .unwrap();
    drain(&mut p, &mut out).unwrap();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(p.scope.len(), 2);
    assert_eq!(p.scope.heap_overhead(), 0);
    assert!(matches!(
        &p.root,
        Some((Cow::Borrowed(_), Cow::Borrowed(_)))
    ));
}

#[test]
fn header_uncommon_namespace_kept_owned_and_resolved() {
    let header = "<s:stream xmlns='urn:other' xmlns:s='http://etherx.jabber.org/streams' \
        to='example.com' version='1.0'>";
    let evs = events(&format!("{header}<message/>")).unwrap();
    let Some(StreamEvent::Element(e)) = evs.get(1) else {
        panic!("{evs:?}");
    };
    assert_eq!(e.ns, "urn:other");
}
