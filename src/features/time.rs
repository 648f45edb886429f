//! Entity Time (XEP-0202) of the server: its UTC time, with offset zero.
//!
//! Owns: the `urn:xmpp:time` answer for hosted domains. The server always reports UTC
//! (`+00:00`): its local zone is none of a client's business, and a device like a router often
//! has none configured. Accounts' own clients answer for themselves at their full JIDs.

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry, datetime};
use crate::xml::Element;

pub const NS_TIME: &str = "urn:xmpp:time";

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Host, IqType::Get, NS_TIME, time);
    r.feature(&[IqTo::Host], NS_TIME);
}

/// XEP-0202 §3: `<tzo/>` (XEP-0082 TZD) and `<utc/>` (XEP-0082 DateTime in UTC).
fn time(_ctx: &mut Ctx, _req: &IqRequest) -> IqResult {
    let utc = datetime::utc_timestamp(datetime::wall_clock());
    Ok(Some(
        Element::new("time", NS_TIME)
            .with_child(Element::new("tzo", NS_TIME).with_text("+00:00"))
            .with_child(Element::new("utc", NS_TIME).with_text(&utc)),
    ))
}

#[cfg(test)]
mod tests {
    use crate::testutil::Harness;

    /// The text between `<tag>` and `</tag>`.
    fn between<'a>(s: &'a str, tag: &str) -> &'a str {
        let open = format!("<{tag}>");
        let start = s.find(&open).map(|i| i + open.len()).unwrap_or(0);
        let end = s[start..].find('<').map_or(s.len(), |i| start + i);
        &s[start..end]
    }

    #[test]
    fn host_time_get_answers_utc() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='t1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
        );
        let out = h.take(a);
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains("id='t1'"), "{out}");
        assert!(
            out.contains("<time xmlns='urn:xmpp:time'><tzo>+00:00</tzo><utc>"),
            "{out}"
        );
        let utc = between(&out, "utc");
        // YYYY-MM-DDThh:mm:ssZ
        assert_eq!(utc.len(), 20, "{utc}");
        let b = utc.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b'T', b':', b':', b'Z')
        );
        assert!(utc >= "2024", "{utc}");
    }

    #[test]
    fn host_time_set_is_service_unavailable() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='set' id='t2' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
        );
        let out = h.take(a);
        assert!(out.contains("type='error'"), "{out}");
        assert!(out.contains("<service-unavailable"), "{out}");
    }

    #[test]
    fn host_disco_lists_time() {
        let mut h = Harness::new();
        let a = h.login("alice", "a");
        h.send(
            a,
            "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert!(h.take(a).contains("<feature var='urn:xmpp:time'/>"));
    }
}
