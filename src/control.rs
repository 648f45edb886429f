//! The control channel between `hearth user …` and a running server: a Unix socket in the data
//! folder carrying one request line and a reply. (SKELETON: the store helper writes it.)
// TEMPORARY stand-in until the store helper's control.rs is merged.
use crate::config::Config;
use crate::sasl::Credentials;
use crate::store::Store;
pub enum ControlRequest {
    UserAdd { jid: String, creds: Credentials },
    UserPasswd { jid: String, creds: Credentials },
    UserDel { jid: String },
    UserList { domain: Option<String> },
}
impl ControlRequest {
    pub fn parse(_l: &str) -> Result<ControlRequest, String> {
        Err("x".into())
    }
}
pub fn execute(
    _r: &ControlRequest,
    _c: &Config,
    _s: &mut dyn Store,
) -> Result<Vec<String>, String> {
    Err("x".into())
}
pub fn format_reply(_r: &Result<Vec<String>, String>) -> String {
    String::new()
}
