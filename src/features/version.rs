//! Software Version (XEP-0092) of the server.

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::xml::{Element, ns};

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Host, IqType::Get, ns::VERSION, version);
    r.feature(&[IqTo::Host], ns::VERSION);
}

/// XEP-0092 §2: name and version; the OS is left out, as the XEP allows, so as not to tell
/// strangers what to attack.
fn version(_ctx: &mut Ctx, _req: &IqRequest) -> IqResult {
    Ok(Some(
        Element::new("query", ns::VERSION)
            .with_child(Element::new("name", ns::VERSION).with_text("Hearth"))
            .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION"))),
    ))
}
