//! Routing among sessions. (SKELETON: core)
