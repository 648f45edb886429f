//! XMPP Ping (XEP-0199): the server answers pings to itself and, on an account's behalf, to
//! bare JIDs. (Server-initiated pings of quiet clients come with the IM issue.)

use super::{Ctx, IqRequest, IqResult, IqTo, IqType, Registry};
use crate::xml::ns;

pub fn register(r: &mut Registry) {
    r.iq(IqTo::Host, IqType::Get, ns::PING, pong);
    r.iq(IqTo::Account, IqType::Get, ns::PING, pong);
    r.feature(&[IqTo::Host], ns::PING);
}

/// XEP-0199 §4.2: an empty result.
fn pong(_ctx: &mut Ctx, _req: &IqRequest) -> IqResult {
    Ok(None)
}
