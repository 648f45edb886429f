//! The redb-backed `Store`: one file, ACID, small bounded page cache.
//!
//! Owns: the on-disk layout (one `TableDefinition` per kind of record, plus the `meta` table
//! holding the schema version) and the mapping of redb errors to `StoreError`s that say what
//! failed. Leaves to others: JID normalisation and validation (callers pass normalised bare
//! JIDs), the credential encoding (`sasl::Credentials::encode`), and when to write.
//!
//! Every write is its own short transaction, committed before returning: the server is one
//! thread, and a long write transaction would stall every connection. Later kinds (roster,
//! offline messages) add a table definition here and, where many small writes arrive together,
//! a grouped commit.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Store, StoreError};
use crate::sasl::Credentials;

/// `meta`: bookkeeping about the file itself, keyed by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `accounts`: normalised bare JID -> `Credentials::encode()`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The layout this code reads and writes. Bump it (and migrate in `open`) when a table's
/// key or value encoding changes; a file from a newer Hearth is refused, not misread.
pub const SCHEMA_VERSION: u64 = 1;

pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path` with a page cache of `cache_bytes`.
    /// The folder must exist. Fails if another process (a running server) has the file open,
    /// or if the file was written by a newer schema.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<RedbStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                    "{}: the database is in use by a running server",
                    path.display()
                )),
                e => StoreError(format!("{}: cannot open the database: {e}", path.display())),
            })?;
        let store = RedbStore {
            db,
            path: path.to_owned(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Checks the schema version, stamping a fresh file, and creates every table so that read
    /// transactions never meet a missing one.
    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(self.err("begin write"))?;
        {
            let mut meta = tx.open_table(META).map_err(self.err("open meta"))?;
            let found = meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(self.err("read schema version"))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
                        .map_err(self.err("write schema version"))?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError(format!(
                        "{}: schema version {v} is newer than this Hearth understands \
                         ({SCHEMA_VERSION}); use a newer Hearth",
                        self.path.display()
                    )));
                }
                Some(_) => {}
            }
            tx.open_table(ACCOUNTS).map_err(self.err("open accounts"))?;
        }
        tx.commit().map_err(self.err("commit"))
    }

    /// Maps a redb error to a `StoreError` naming the file and the step that failed.
    fn err<E: std::fmt::Display>(&self, what: &'static str) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError(format!("{}: {what}: {e}", self.path.display()))
    }

    /// Runs `f` on the accounts table in one write transaction and commits.
    fn write_accounts<T>(
        &mut self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(self.err("begin write"))?;
        let out = {
            let mut table = tx.open_table(ACCOUNTS).map_err(self.err("open accounts"))?;
            f(&mut table).map_err(self.err("write accounts"))?
        };
        tx.commit().map_err(self.err("commit"))?;
        Ok(out)
    }

    fn read_accounts(
        &self,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        let tx = self.db.begin_read().map_err(self.err("begin read"))?;
        tx.open_table(ACCOUNTS).map_err(self.err("open accounts"))
    }
}

impl Store for RedbStore {
    fn account_credentials(&self, bare_jid: &str) -> Result<Option<Credentials>, StoreError> {
        let table = self.read_accounts()?;
        let Some(v) = table.get(bare_jid).map_err(self.err("read account"))? else {
            return Ok(None);
        };
        Credentials::decode(v.value()).map(Some).ok_or_else(|| {
            StoreError(format!(
                "{}: account {bare_jid}: stored credentials are corrupt",
                self.path.display()
            ))
        })
    }

    fn account_create(&mut self, bare_jid: &str, creds: &Credentials) -> Result<bool, StoreError> {
        let value = creds.encode();
        self.write_accounts(|t| {
            if t.get(bare_jid)?.is_some() {
                return Ok(false);
            }
            t.insert(bare_jid, value.as_slice())?;
            Ok(true)
        })
    }

    fn account_set_credentials(
        &mut self,
        bare_jid: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError> {
        let value = creds.encode();
        self.write_accounts(|t| {
            if t.get(bare_jid)?.is_none() {
                return Ok(false);
            }
            t.insert(bare_jid, value.as_slice())?;
            Ok(true)
        })
    }

    fn account_delete(&mut self, bare_jid: &str) -> Result<bool, StoreError> {
        // Later kinds (roster, offline messages) are removed here in the same transaction.
        self.write_accounts(|t| Ok(t.remove(bare_jid)?.is_some()))
    }

    fn account_list(&self, domain: Option<&str>) -> Result<Vec<String>, StoreError> {
        let table = self.read_accounts()?;
        let mut out = Vec::new();
        // Keys iterate in byte order, which is the sorted order the trait promises.
        for entry in table.iter().map_err(self.err("list accounts"))? {
            let (k, _) = entry.map_err(self.err("list accounts"))?;
            let jid = k.value();
            if domain.is_none_or(|d| jid.rsplit_once('@').is_some_and(|(_, kd)| kd == d)) {
                out.push(jid.to_owned());
            }
        }
        Ok(out)
    }

    fn account_count(&self) -> Result<u64, StoreError> {
        self.read_accounts()?
            .len()
            .map_err(self.err("count accounts"))
    }
    // SKELETON: the store helper implements these with group commit.
    fn roster_items(&self, _account: &str) -> Result<Vec<super::RosterItem>, StoreError> {
        todo!()
    }
    fn roster_item(
        &self,
        _account: &str,
        _contact: &str,
    ) -> Result<Option<super::RosterItem>, StoreError> {
        todo!()
    }
    fn roster_version(&self, _account: &str) -> Result<u64, StoreError> {
        todo!()
    }
    fn roster_put(&mut self, _account: &str, _item: &super::RosterItem) -> Result<u64, StoreError> {
        todo!()
    }
    fn offline_push(&mut self, _account: &str, _stanza: &[u8]) -> Result<(), StoreError> {
        todo!()
    }
    fn offline_count(&self, _account: &str) -> Result<u64, StoreError> {
        todo!()
    }
    fn offline_total(&self) -> Result<u64, StoreError> {
        todo!()
    }
    fn offline_take(&mut self, _account: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        todo!()
    }
    fn kv_get(&self, _account: &str, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        todo!()
    }
    fn kv_put(&mut self, _account: &str, _key: &str, _value: &[u8]) -> Result<(), StoreError> {
        todo!()
    }
    fn kv_delete(&mut self, _account: &str, _key: &str) -> Result<(), StoreError> {
        todo!()
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn has_uncommitted(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{creds, suite};

    /// A folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "hearth-store-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn db(&self) -> PathBuf {
            self.0.join("hearth.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CACHE: usize = 256 * 1024;

    #[test]
    fn redb_store_conformance_suite_passes() {
        let dir = TempDir::new("suite");
        suite(&mut RedbStore::open(&dir.db(), CACHE).unwrap());
    }

    #[test]
    fn redb_reopened_accounts_persist() {
        let dir = TempDir::new("reopen");
        {
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            assert!(s.account_create("alice@a.example", &creds(1)).unwrap());
            assert!(s.account_create("bob@a.example", &creds(2)).unwrap());
            assert!(s.account_delete("bob@a.example").unwrap());
        }
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert_eq!(s.account_count().unwrap(), 1);
        assert_eq!(
            s.account_credentials("alice@a.example").unwrap(),
            Some(creds(1))
        );
        assert_eq!(s.account_credentials("bob@a.example").unwrap(), None);
    }

    #[test]
    fn redb_open_while_open_says_in_use() {
        let dir = TempDir::new("locked");
        let _held = RedbStore::open(&dir.db(), CACHE).unwrap();
        let err = RedbStore::open(&dir.db(), CACHE).err().unwrap();
        assert!(
            err.0.contains("the database is in use by a running server"),
            "{err}"
        );
    }

    #[test]
    fn redb_newer_schema_refused() {
        let dir = TempDir::new("schema");
        drop(RedbStore::open(&dir.db(), CACHE).unwrap());
        {
            let db = Database::create(dir.db()).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let err = RedbStore::open(&dir.db(), CACHE).err().unwrap();
        assert!(err.0.contains("schema version 2 is newer"), "{err}");
    }

    #[test]
    fn redb_fresh_file_stamped_with_schema_version() {
        let dir = TempDir::new("stamp");
        drop(RedbStore::open(&dir.db(), CACHE).unwrap());
        let db = Database::create(dir.db()).unwrap();
        let tx = db.begin_read().unwrap();
        let v = tx
            .open_table(META)
            .unwrap()
            .get(SCHEMA_VERSION_KEY)
            .unwrap();
        assert_eq!(v.map(|v| v.value()), Some(SCHEMA_VERSION));
    }

    #[test]
    fn redb_corrupt_credentials_error_names_account() {
        let dir = TempDir::new("corrupt");
        drop(RedbStore::open(&dir.db(), CACHE).unwrap());
        {
            let db = Database::create(dir.db()).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(ACCOUNTS)
                .unwrap()
                .insert("alice@a.example", &[7u8, 7, 7][..])
                .unwrap();
            tx.commit().unwrap();
        }
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        let err = s.account_credentials("alice@a.example").unwrap_err();
        assert!(err.0.contains("alice@a.example"), "{err}");
    }
}
