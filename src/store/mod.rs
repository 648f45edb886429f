//! Durable storage behind one trait, so that the protocol core is tested against the
//! in-memory twin and runs against redb.
//!
//! Owns: what is stored and its encoding. Leaves to others: when to store (features) and
//! credential derivation (`sasl`). Accounts are keyed by normalised bare JID (`user@domain`).

pub mod memory;
pub mod redb_store;
pub mod roster;

pub use memory::MemoryStore;
pub use redb_store::RedbStore;
pub use roster::{RosterItem, Subscription};

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

    // Rosters (RFC 6121). Records include hidden ones (pending requests, tombstones).

    /// Every roster record of an account, in any order.
    fn roster_items(&self, account: &str) -> Result<Vec<RosterItem>, StoreError>;
    /// One record, by the contact's bare JID.
    fn roster_item(&self, account: &str, contact: &str) -> Result<Option<RosterItem>, StoreError>;
    /// The account's roster version: 0 for a roster never written.
    fn roster_version(&self, account: &str) -> Result<u64, StoreError>;
    /// Stores a record, bumping the account's roster version and stamping the record with
    /// it; returns the new version.
    fn roster_put(&mut self, account: &str, item: &RosterItem) -> Result<u64, StoreError>;

    // Offline messages (XEP-0160), stored as serialized stanzas in arrival order.

    /// Appends a stanza to the account's offline queue.
    fn offline_push(&mut self, account: &str, stanza: &[u8]) -> Result<(), StoreError>;
    /// Number of stanzas queued for the account.
    fn offline_count(&self, account: &str) -> Result<u64, StoreError>;
    /// Number of stanzas queued for all accounts.
    fn offline_total(&self) -> Result<u64, StoreError>;
    /// Removes and returns the account's queue, oldest first.
    fn offline_take(&mut self, account: &str) -> Result<Vec<Vec<u8>>, StoreError>;

    // Small per-account values: vCard, private XML, block list, last activity. Keys are
    // chosen by the features ("vcard", "private:NS", "blocklist", "last").

    fn kv_get(&self, account: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn kv_put(&mut self, account: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn kv_delete(&mut self, account: &str, key: &str) -> Result<(), StoreError>;

    /// Makes every write since the last commit durable. The server calls it once per event
    /// loop turn (group commit) and releases what acknowledges those writes only after it.
    /// Reads see uncommitted writes.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Whether there are writes not yet committed.
    fn has_uncommitted(&self) -> bool;
}

/// The behaviour every `Store` implementation must share, run against each of them.
#[cfg(test)]
pub(crate) mod conformance {
    use super::{MemoryStore, Store};
    use crate::sasl::{Credentials, ScramCredentials};

    /// Distinct, decodable credentials numbered `n`.
    pub fn creds(n: u8) -> Credentials {
        Credentials {
            sha1: ScramCredentials {
                iterations: 4096,
                salt: vec![n; 16],
                stored_key: vec![n; 20],
                server_key: vec![n.wrapping_add(1); 20],
            },
            sha256: ScramCredentials {
                iterations: 4096,
                salt: vec![n; 16],
                stored_key: vec![n; 32],
                server_key: vec![n.wrapping_add(1); 32],
            },
        }
    }

    /// The behaviour every `Store` must share; run against each implementation.
    pub fn suite(s: &mut dyn Store) {
        assert_eq!(s.account_count().unwrap(), 0);
        assert_eq!(s.account_list(None).unwrap(), Vec::<String>::new());
        assert_eq!(s.account_credentials("alice@a.example").unwrap(), None);

        assert!(s.account_create("bob@b.example", &creds(1)).unwrap());
        assert!(s.account_create("alice@a.example", &creds(2)).unwrap());
        assert!(s.account_create("carol@a.example", &creds(3)).unwrap());
        // A duplicate changes nothing.
        assert!(!s.account_create("alice@a.example", &creds(9)).unwrap());
        assert_eq!(
            s.account_credentials("alice@a.example").unwrap(),
            Some(creds(2))
        );
        assert_eq!(s.account_count().unwrap(), 3);

        assert_eq!(
            s.account_list(None).unwrap(),
            ["alice@a.example", "bob@b.example", "carol@a.example"]
        );
        assert_eq!(
            s.account_list(Some("a.example")).unwrap(),
            ["alice@a.example", "carol@a.example"]
        );
        assert_eq!(
            s.account_list(Some("b.example")).unwrap(),
            ["bob@b.example"]
        );
        // A suffix of a domain is not that domain.
        assert_eq!(
            s.account_list(Some("example")).unwrap(),
            Vec::<String>::new()
        );

        assert!(
            s.account_set_credentials("alice@a.example", &creds(4))
                .unwrap()
        );
        assert_eq!(
            s.account_credentials("alice@a.example").unwrap(),
            Some(creds(4))
        );
        assert!(
            !s.account_set_credentials("nobody@a.example", &creds(4))
                .unwrap()
        );
        assert_eq!(s.account_credentials("nobody@a.example").unwrap(), None);

        assert!(s.account_delete("alice@a.example").unwrap());
        assert!(!s.account_delete("alice@a.example").unwrap());
        assert_eq!(s.account_credentials("alice@a.example").unwrap(), None);
        assert_eq!(s.account_count().unwrap(), 2);
        assert_eq!(
            s.account_list(None).unwrap(),
            ["bob@b.example", "carol@a.example"]
        );
    }

    #[test]
    fn memory_store_conformance_suite_passes() {
        suite(&mut MemoryStore::new());
    }
}
