//! Client-to-server stream negotiation. (SKELETON: core)
