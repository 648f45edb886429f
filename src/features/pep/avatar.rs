//! User avatars (XEP-0084) kept in step with the vCard photo (XEP-0398).
//!
//! Owns: both directions of the conversion. Publishing avatar metadata whose data item is
//! stored replaces the vCard's PHOTO (and the XEP-0153 hash in presence); storing a vCard
//! with a different photo publishes its data and metadata, and one without a photo publishes
//! empty metadata (XEP-0084 §4.2, avatar disabled). Neither direction triggers the other.

use std::fmt::Write as _;

use ring::digest;

use super::{node, publish_item};
use crate::features::Ctx;
use crate::features::vcard::{self, NS_VCARD};
use crate::jid::Jid;
use crate::xml::Element;

pub const NS_DATA: &str = "urn:xmpp:avatar:data";
pub const NS_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §4: the server converts between vCard and PEP avatars.
pub const NS_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

fn sha1_hex(data: &[u8]) -> String {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut hex = String::with_capacity(40);
    for b in d.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The owner published avatar metadata: the vCard photo follows.
pub fn metadata_published(ctx: &mut Ctx, owner: &Jid, metadata: &Element) {
    let account = owner.to_string();
    let info = metadata
        .child_elements()
        .find(|i| i.is("info", NS_METADATA) && i.attr("url").is_none());
    let result = match info {
        None => vcard::set_photo(ctx.store, &account, None),
        Some(info) => {
            let (Some(id), mime) = (info.attr("id"), info.attr("type").unwrap_or("image/png"))
            else {
                return;
            };
            match node::item(ctx.store, &account, NS_DATA, id) {
                Ok(Some(data)) => {
                    vcard::set_photo(ctx.store, &account, Some((mime, data.text().trim())))
                }
                // The data is published first (§4.1); without it there is no photo to copy.
                _ => return,
            }
        }
    };
    if let Err(e) = result {
        log::error!("avatar to vCard for {account} failed: {e:?}");
    }
}

/// The owner stored a vCard: its photo becomes the PEP avatar, unless it already is.
pub fn vcard_stored(ctx: &mut Ctx, owner: &Jid, card: &Element) {
    let account = owner.to_string();
    let photo = card.child("PHOTO", NS_VCARD);
    let data = photo
        .and_then(|p| p.child("BINVAL", NS_VCARD))
        .and_then(|b| crate::base64::decode_lenient_ws(&b.text()))
        .filter(|d| !d.is_empty());
    let current = node::load(ctx.store, &account, NS_METADATA)
        .ok()
        .flatten()
        .and_then(|n| {
            let id = n.last_id()?.to_owned();
            let payload = node::item(ctx.store, &account, NS_METADATA, &id).ok()??;
            payload
                .child("info", NS_METADATA)
                .and_then(|i| i.attr("id").map(str::to_owned))
        });
    let result = match data {
        Some(bytes) => {
            let id = sha1_hex(&bytes);
            if current.as_deref() == Some(id.as_str()) {
                return;
            }
            let mime = photo
                .and_then(|p| p.child("TYPE", NS_VCARD))
                .map(|t| t.text().trim().to_owned())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "image/png".to_owned());
            let data_el = Element::new("data", NS_DATA).with_text(&crate::base64::encode(&bytes));
            let meta = Element::new("metadata", NS_METADATA).with_child(
                Element::new("info", NS_METADATA)
                    .with_attr("id", &id)
                    .with_attr("bytes", &bytes.len().to_string())
                    .with_attr("type", &mime),
            );
            publish_item(ctx, owner, NS_DATA, Some(&id), &data_el, None, false)
                .and_then(|_| publish_item(ctx, owner, NS_METADATA, Some(&id), &meta, None, false))
        }
        None if current.is_some() => {
            let meta = Element::new("metadata", NS_METADATA);
            publish_item(ctx, owner, NS_METADATA, Some("none"), &meta, None, false)
        }
        None => return,
    };
    if let Err(e) = result {
        log::warn!("vCard photo to PEP avatar for {account} failed: {e:?}");
    }
}
