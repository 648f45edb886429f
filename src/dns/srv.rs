//! XMPP server lookups (placeholder while building).
