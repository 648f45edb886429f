//! The redb-backed `Store`: one file, ACID, small bounded page cache. (SKELETON)

use super::{Store, StoreError};
use crate::sasl::Credentials;
use std::path::Path;

pub struct RedbStore {
    _db: redb::Database,
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path` with a page cache of `cache_bytes`.
    pub fn open(_path: &Path, _cache_bytes: usize) -> Result<RedbStore, StoreError> {
        todo!("store helper")
    }
}

impl Store for RedbStore {
    fn account_credentials(&self, _bare_jid: &str) -> Result<Option<Credentials>, StoreError> {
        todo!("store helper")
    }
    fn account_create(&mut self, _bare_jid: &str, _c: &Credentials) -> Result<bool, StoreError> {
        todo!("store helper")
    }
    fn account_set_credentials(
        &mut self,
        _bare_jid: &str,
        _c: &Credentials,
    ) -> Result<bool, StoreError> {
        todo!("store helper")
    }
    fn account_delete(&mut self, _bare_jid: &str) -> Result<bool, StoreError> {
        todo!("store helper")
    }
    fn account_list(&self, _domain: Option<&str>) -> Result<Vec<String>, StoreError> {
        todo!("store helper")
    }
    fn account_count(&self) -> Result<u64, StoreError> {
        todo!("store helper")
    }
}
