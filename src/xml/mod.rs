//! XML for XMPP streams: incremental framing and parsing of untrusted bytes into
//! namespace-resolved elements, and serialization back to bytes.
//!
//! Owns: the byte-level restrictions of RFC 6120 §11 (no DTDs, comments, PIs; only predefined
//! entities), UTF-8 checks and the size, depth and attribute limits.
//! Leaves to others: what a stream header or stanza means (`stream`, `stanza`), and which
//! stream error each `XmlError` becomes (`stream::error`).

pub mod element;
pub mod fragment;
mod framer;
pub mod ns;
pub mod parser;
mod tree;

pub use element::{Attr, Element, Node};
pub use parser::{StreamEvent, StreamHeader, StreamParser, XmlError, XmlLimits};
