//! The control channel between `hearth user …` and a running server: a Unix socket in the data
//! folder carrying one request line and a reply. (SKELETON: the store helper writes it.)
