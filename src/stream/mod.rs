//! Stream negotiation state machines (RFC 6120 §4-§7) and stream errors.

pub mod c2s;
pub mod csi;
pub mod error;
pub mod s2s;
pub mod sm;
