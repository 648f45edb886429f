//! Hearth: a small, fast, single-threaded XMPP server for small hardware.
//!
//! The protocol core (`xml`, `stream`, `sasl`, `server`, `router`, `features`) is sans-IO: it
//! takes bytes and time in and gives bytes and actions out. Only `net` touches sockets.
#![forbid(unsafe_code)]

pub mod base64;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod features;
pub mod jid;
pub mod net;
pub mod router;
pub mod sasl;
pub mod server;
pub mod stanza;
pub mod store;
pub mod stream;
pub mod tls;
pub mod xml;

#[cfg(test)]
pub(crate) mod testutil;
