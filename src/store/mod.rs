//! Durable storage behind one trait, so that the protocol core is tested against the
//! in-memory twin and runs against redb. (SKELETON: the store helper writes the bodies.)
//!
//! Owns: what is stored and its encoding. Leaves to others: when to store (features) and
//! credential derivation (`sasl`). Accounts are keyed by normalised bare JID (`user@domain`).

pub mod memory;
pub mod redb_store;

pub use memory::MemoryStore;
pub use redb_store::RedbStore;

use crate::sasl::Credentials;

/// A storage failure. The protocol core answers it with `internal-server-error` and logs it.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the server keeps on disk.
pub trait Store {
    /// The credentials of an account, `None` if it does not exist.
    fn account_credentials(&self, bare_jid: &str) -> Result<Option<Credentials>, StoreError>;
    /// Creates an account; `Ok(false)` if it already exists (nothing changed).
    fn account_create(&mut self, bare_jid: &str, creds: &Credentials) -> Result<bool, StoreError>;
    /// Replaces an existing account's credentials; `Ok(false)` if there is no such account.
    fn account_set_credentials(
        &mut self,
        bare_jid: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError>;
    /// Deletes an account and everything stored for it; `Ok(false)` if there was none.
    fn account_delete(&mut self, bare_jid: &str) -> Result<bool, StoreError>;
    /// Bare JIDs of all accounts (of one domain if given), sorted.
    fn account_list(&self, domain: Option<&str>) -> Result<Vec<String>, StoreError>;
    /// Number of accounts.
    fn account_count(&self) -> Result<u64, StoreError>;
}
