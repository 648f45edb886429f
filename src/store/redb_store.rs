//! The redb-backed `Store`: one file, ACID, small bounded page cache, group commit.
//!
//! Owns: the on-disk layout (one `TableDefinition` per kind of record, plus the `meta` table
//! holding the schema version), the grouping of writes into one transaction per event-loop
//! turn, and the mapping of redb errors to `StoreError`s that say what failed. Leaves to
//! others: JID normalisation and validation (callers pass normalised bare JIDs), the record
//! encodings (`sasl::Credentials::encode`, `RosterItem::encode`), and when to write and commit.
//!
//! Group commit: a durable redb commit costs tens of KiB of disk writes however small the
//! change, which wears SD cards. So the first write after a commit opens one
//! `WriteTransaction`, every later write reuses it, reads go through it (they see what is not
//! committed yet), and `commit()` makes the lot durable at once. The server calls `commit()`
//! once per event-loop turn, before releasing the replies that acknowledge those writes; a
//! caller that runs without the server (the CLI) commits after each command. The server is one
//! thread, so holding the write transaction across a turn stalls nobody.
//!
//! Tables (all keys are normalised bare JIDs; tuples order by their first element first, so an
//! account's records are one contiguous range):
//! - `accounts`: account -> `Credentials::encode()`
//! - `roster`: (account, contact) -> `RosterItem::encode()`, stamped with its version
//! - `roster_version`: account -> the account's roster version (absent = 0)
//! - `offline`: (account, sequence) -> serialized stanza; the sequence grows per account and
//!   restarts from 0 once the queue is emptied, so key order is arrival order
//! - `kv`: (account, key) -> value
//! - `archive`: (account, id) -> (with, serialized stanza); ids are archive times in
//!   microseconds, increasing per account, so an account's archive is one range in time order
//! - `archive_with`: (account, with, id) -> (), the index a `with` filter pages through
//! - `archive_count`: account -> messages in its archive (the retention limit reads it)
//!
//! Counts come from redb's B-tree headers (`len()` is O(1)), so `offline_total` needs no
//! counter of its own that would cost a page write per message and could drift.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};

use redb::{
    AccessGuard, Database, Durability, Key, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition, Value, WriteTransaction,
};

use super::{ArchiveRange, ArchivedMessage, RosterItem, Store, StoreError};
use crate::sasl::Credentials;

/// `meta`: bookkeeping about the file itself, keyed by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `accounts`: normalised bare JID -> `Credentials::encode()`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// `roster`: (account, contact) -> `RosterItem::encode()`.
const ROSTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster");
/// `roster_version`: account -> roster version.
const ROSTER_VERSION: TableDefinition<&str, u64> = TableDefinition::new("roster_version");
/// `offline`: (account, sequence) -> stanza bytes.
const OFFLINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline");
/// `kv`: (account, key) -> value.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// `archive`: (account, id) -> (with, stanza bytes).
const ARCHIVE: TableDefinition<(&str, u64), (&str, &[u8])> = TableDefinition::new("archive");
/// `archive_with`: (account, with, id) -> ().
const ARCHIVE_WITH: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("archive_with");
/// `archive_count`: account -> archived messages.
const ARCHIVE_COUNT: TableDefinition<&str, u64> = TableDefinition::new("archive_count");

const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The layout this code reads and writes. Bump it (and migrate in `open`) when a table's
/// key or value encoding changes; a file from a newer Hearth is refused, not misread. Adding a
/// table needs no bump: `open` creates missing tables, so a file holding only `accounts`
/// opens as is.
pub const SCHEMA_VERSION: u64 = 1;

pub struct RedbStore {
    /// The write transaction of the current group, opened by its first write.
    tx: Option<WriteTransaction>,
    /// `tx` holds changes (a write that changed nothing leaves it false).
    dirty: bool,
    /// A write failed, its transaction was aborted and the group's earlier writes with it; the
    /// next `commit()` reports that instead of claiming durability.
    lost: Option<String>,
    db: Database,
    path: PathBuf,
}

/// A table opened for reading, through the open write transaction or a fresh read one.
enum Reader<'t, K: Key + 'static, V: Value + 'static> {
    Write(redb::Table<'t, K, V>),
    Read(redb::ReadOnlyTable<K, V>),
}

impl<K: Key + 'static, V: Value + 'static> Reader<'_, K, V> {
    fn get<'a>(
        &self,
        key: impl std::borrow::Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        match self {
            Reader::Write(t) => t.get(key),
            Reader::Read(t) => ReadableTable::get(t, key),
        }
    }

    fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<redb::Range<'_, K, V>, StorageError>
    where
        KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
    {
        match self {
            Reader::Write(t) => t.range(range),
            Reader::Read(t) => ReadableTable::range(t, range),
        }
    }

    fn len(&self) -> Result<u64, StorageError> {
        match self {
            Reader::Write(t) => t.len(),
            Reader::Read(t) => t.len(),
        }
    }
}

/// The first string after `s` in byte order: `(s, x) < (after(s), "")` for every `x`, so
/// `(s, "")..(after(s), "")` holds exactly the records whose first key element is `s`.
fn after(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    out.push_str(s);
    out.push('\0');
    out
}

/// Maps a redb error to a `StoreError` naming the file and the step that failed.
fn err<'a, E: std::fmt::Display>(
    path: &'a Path,
    what: &'static str,
) -> impl Fn(E) -> StoreError + 'a {
    move |e| StoreError(format!("{}: {what}: {e}", path.display()))
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
            tx: None,
            dirty: false,
            lost: None,
            db,
            path: path.to_owned(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Checks the schema version, stamping a fresh file, and creates every table so that read
    /// transactions never meet a missing one. A file that needs neither is not written to.
    fn init_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready() {
            return Ok(());
        }
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
            tx.open_table(ROSTER).map_err(self.err("open roster"))?;
            tx.open_table(ROSTER_VERSION)
                .map_err(self.err("open roster_version"))?;
            tx.open_table(OFFLINE).map_err(self.err("open offline"))?;
            tx.open_table(KV).map_err(self.err("open kv"))?;
            tx.open_table(ARCHIVE).map_err(self.err("open archive"))?;
            tx.open_table(ARCHIVE_WITH)
                .map_err(self.err("open archive_with"))?;
            tx.open_table(ARCHIVE_COUNT)
                .map_err(self.err("open archive_count"))?;
        }
        tx.commit().map_err(self.err("commit"))
    }

    /// The file carries a schema version this code reads and every table exists. Any error
    /// answers `false`: the write path in `init_schema` then reports it properly.
    fn schema_ready(&self) -> bool {
        let Ok(tx) = self.db.begin_read() else {
            return false;
        };
        let version_ok = tx
            .open_table(META)
            .ok()
            .and_then(|meta| meta.get(SCHEMA_VERSION_KEY).ok().flatten())
            .is_some_and(|v| v.value() <= SCHEMA_VERSION);
        version_ok
            && tx.open_table(ACCOUNTS).is_ok()
            && tx.open_table(ROSTER).is_ok()
            && tx.open_table(ROSTER_VERSION).is_ok()
            && tx.open_table(OFFLINE).is_ok()
            && tx.open_table(KV).is_ok()
            && tx.open_table(ARCHIVE).is_ok()
            && tx.open_table(ARCHIVE_WITH).is_ok()
            && tx.open_table(ARCHIVE_COUNT).is_ok()
    }

    fn err<E: std::fmt::Display>(&self, what: &'static str) -> impl Fn(E) -> StoreError + '_ {
        err(&self.path, what)
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError(format!(
            "{}: {what}: stored record is corrupt",
            self.path.display()
        ))
    }

    /// Opens `def` for reading: through the group's write transaction when one is open, so
    /// that uncommitted writes are seen, else in a read transaction of the last commit.
    fn reader<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
        what: &'static str,
    ) -> Result<Reader<'_, K, V>, StoreError> {
        match &self.tx {
            Some(tx) => tx
                .open_table(def)
                .map(Reader::Write)
                .map_err(self.err(what)),
            None => {
                let tx = self.db.begin_read().map_err(self.err("begin read"))?;
                // The table keeps what it needs of the transaction alive.
                tx.open_table(def).map(Reader::Read).map_err(self.err(what))
            }
        }
    }

    /// Runs `f` in the group's write transaction, opening it if this is the group's first
    /// write. `f` returns its result and whether it changed anything. On failure the whole
    /// transaction is aborted (it may hold part of this write); if earlier writes of the group
    /// went with it, the next `commit()` says so.
    fn write<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool), redb::Error>,
    ) -> Result<T, StoreError> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self
                .db
                .begin_write()
                .map_err(err(&self.path, "begin write"))?,
        };
        let tx = self.tx.insert(tx);
        match f(tx) {
            Ok((out, changed)) => {
                self.dirty |= changed;
                Ok(out)
            }
            Err(e) => {
                if let Some(tx) = self.tx.take() {
                    // Aborting only frees this transaction's pages; a failure here changes
                    // nothing for the caller, who already gets the write's error.
                    let _ = tx.abort();
                }
                let e = StoreError(format!("{}: {what}: {e}", self.path.display()));
                if std::mem::take(&mut self.dirty) && self.lost.is_none() {
                    self.lost = Some(e.0.clone());
                }
                Err(e)
            }
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if self.dirty {
                log::debug!(
                    "{}: closing with uncommitted writes; they are discarded",
                    self.path.display()
                );
            }
            if let Err(e) = tx.abort() {
                log::debug!("{}: aborting on close: {e}", self.path.display());
            }
        }
    }
}

impl Store for RedbStore {
    fn account_credentials(&self, bare_jid: &str) -> Result<Option<Credentials>, StoreError> {
        let table = self.reader(ACCOUNTS, "open accounts")?;
        let Some(v) = table.get(bare_jid).map_err(self.err("read account"))? else {
            return Ok(None);
        };
        Credentials::decode(v.value())
            .map(Some)
            .ok_or_else(|| self.corrupt(format!("account {bare_jid}")))
    }

    fn account_create(&mut self, bare_jid: &str, creds: &Credentials) -> Result<bool, StoreError> {
        let value = creds.encode();
        self.write("create account", |tx| {
            let mut t = tx.open_table(ACCOUNTS)?;
            if t.get(bare_jid)?.is_some() {
                return Ok((false, false));
            }
            t.insert(bare_jid, value.as_slice())?;
            Ok((true, true))
        })
    }

    fn account_set_credentials(
        &mut self,
        bare_jid: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError> {
        let value = creds.encode();
        self.write("set credentials", |tx| {
            let mut t = tx.open_table(ACCOUNTS)?;
            if t.get(bare_jid)?.is_none() {
                return Ok((false, false));
            }
            t.insert(bare_jid, value.as_slice())?;
            Ok((true, true))
        })
    }

    fn account_delete(&mut self, bare_jid: &str) -> Result<bool, StoreError> {
        let end = after(bare_jid);
        self.write("delete account", |tx| {
            let existed = tx.open_table(ACCOUNTS)?.remove(bare_jid)?.is_some();
            let mut changed = existed;
            {
                let mut t = tx.open_table(ROSTER)?;
                let before = t.len()?;
                t.retain_in((bare_jid, "")..(end.as_str(), ""), |_, _| false)?;
                changed |= t.len()? != before;
            }
            changed |= tx.open_table(ROSTER_VERSION)?.remove(bare_jid)?.is_some();
            {
                let mut t = tx.open_table(OFFLINE)?;
                let before = t.len()?;
                t.retain_in((bare_jid, 0)..=(bare_jid, u64::MAX), |_, _| false)?;
                changed |= t.len()? != before;
            }
            {
                let mut t = tx.open_table(KV)?;
                let before = t.len()?;
                t.retain_in((bare_jid, "")..(end.as_str(), ""), |_, _| false)?;
                changed |= t.len()? != before;
            }
            changed |= archive_delete_all(tx, bare_jid)?;
            Ok((existed, changed))
        })
    }

    fn account_list(&self, domain: Option<&str>) -> Result<Vec<String>, StoreError> {
        let table = self.reader(ACCOUNTS, "open accounts")?;
        let mut out = Vec::new();
        // Keys iterate in byte order, which is the sorted order the trait promises.
        for entry in table.range::<&str>(..).map_err(self.err("list accounts"))? {
            let (k, _) = entry.map_err(self.err("list accounts"))?;
            let jid = k.value();
            if domain.is_none_or(|d| jid.rsplit_once('@').is_some_and(|(_, kd)| kd == d)) {
                out.push(jid.to_owned());
            }
        }
        Ok(out)
    }

    fn account_count(&self) -> Result<u64, StoreError> {
        self.reader(ACCOUNTS, "open accounts")?
            .len()
            .map_err(self.err("count accounts"))
    }

    fn roster_items(&self, account: &str) -> Result<Vec<RosterItem>, StoreError> {
        let table = self.reader(ROSTER, "open roster")?;
        let end = after(account);
        let mut out = Vec::new();
        for entry in table
            .range((account, "")..(end.as_str(), ""))
            .map_err(self.err("read roster"))?
        {
            let (k, v) = entry.map_err(self.err("read roster"))?;
            let (_, contact) = k.value();
            out.push(
                RosterItem::decode(contact, v.value())
                    .ok_or_else(|| self.corrupt(format!("roster of {account}: {contact}")))?,
            );
        }
        Ok(out)
    }

    fn roster_item(&self, account: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        let table = self.reader(ROSTER, "open roster")?;
        let Some(v) = table
            .get((account, contact))
            .map_err(self.err("read roster"))?
        else {
            return Ok(None);
        };
        RosterItem::decode(contact, v.value())
            .map(Some)
            .ok_or_else(|| self.corrupt(format!("roster of {account}: {contact}")))
    }

    fn roster_version(&self, account: &str) -> Result<u64, StoreError> {
        let table = self.reader(ROSTER_VERSION, "open roster_version")?;
        let v = table
            .get(account)
            .map_err(self.err("read roster version"))?;
        Ok(v.map_or(0, |v| v.value()))
    }

    fn roster_put(&mut self, account: &str, item: &RosterItem) -> Result<u64, StoreError> {
        let mut stored = item.clone();
        self.write("write roster", |tx| {
            let mut versions = tx.open_table(ROSTER_VERSION)?;
            // A version bump per roster change cannot reach u64::MAX.
            let version = versions
                .get(account)?
                .map_or(0, |v| v.value())
                .saturating_add(1);
            versions.insert(account, version)?;
            stored.version = version;
            tx.open_table(ROSTER)?
                .insert((account, stored.jid.as_str()), stored.encode().as_slice())?;
            Ok((version, true))
        })
    }

    fn offline_push(&mut self, account: &str, stanza: &[u8]) -> Result<(), StoreError> {
        self.write("queue offline message", |tx| {
            let mut t = tx.open_table(OFFLINE)?;
            let last = t
                .range((account, 0)..=(account, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            // Sequences restart at 0 when the queue empties: u64::MAX is out of reach.
            let next = last.map_or(0, |s| s.saturating_add(1));
            t.insert((account, next), stanza)?;
            Ok(((), true))
        })
    }

    fn offline_count(&self, account: &str) -> Result<u64, StoreError> {
        let table = self.reader(OFFLINE, "open offline")?;
        let mut n = 0;
        // A walk over the account's own queue, which the features keep bounded.
        for entry in table
            .range((account, 0)..=(account, u64::MAX))
            .map_err(self.err("count offline messages"))?
        {
            entry.map_err(self.err("count offline messages"))?;
            n += 1;
        }
        Ok(n)
    }

    fn offline_total(&self) -> Result<u64, StoreError> {
        self.reader(OFFLINE, "open offline")?
            .len()
            .map_err(self.err("count offline messages"))
    }

    fn offline_take(&mut self, account: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.write("take offline messages", |tx| {
            let mut t = tx.open_table(OFFLINE)?;
            let mut out = Vec::new();
            // Only the entries read from this iterator are removed: it is read to the end.
            for entry in t.extract_from_if((account, 0)..=(account, u64::MAX), |_, _| true)? {
                let (_, v) = entry?;
                out.push(v.value().to_vec());
            }
            let changed = !out.is_empty();
            Ok((out, changed))
        })
    }

    fn kv_get(&self, account: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.reader(KV, "open kv")?;
        let v = table.get((account, key)).map_err(self.err("read kv"))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn kv_put(&mut self, account: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write("write kv", |tx| {
            tx.open_table(KV)?.insert((account, key), value)?;
            Ok(((), true))
        })
    }

    fn kv_delete(&mut self, account: &str, key: &str) -> Result<(), StoreError> {
        self.write("delete kv", |tx| {
            let existed = tx.open_table(KV)?.remove((account, key))?.is_some();
            Ok(((), existed))
        })
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.dirty);
        let tx = self.tx.take();
        if let Some(lost) = self.lost.take() {
            // All of the group or none of it: what came after the failure goes too.
            if let Some(tx) = tx {
                let _ = tx.abort();
            }
            return Err(StoreError(format!(
                "writes since the last commit were discarded after a failure: {lost}"
            )));
        }
        let Some(mut tx) = tx else {
            return Ok(());
        };
        if !dirty {
            // Only reads and no-op writes: nothing to make durable, so no disk write.
            return tx.abort().map_err(self.err("end transaction"));
        }
        tx.set_durability(Durability::Immediate)
            .map_err(self.err("set durability"))?;
        tx.commit().map_err(self.err("commit"))
    }

    fn has_uncommitted(&self) -> bool {
        self.dirty || self.lost.is_some()
    }

    fn archive_append(
        &mut self,
        account: &str,
        at_micros: u64,
        with: &str,
        stanza: &[u8],
    ) -> Result<u64, StoreError> {
        self.write("archive message", |tx| {
            let mut t = tx.open_table(ARCHIVE)?;
            let last = t
                .range((account, 0)..=(account, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            // Strictly increasing even when the clock steps back or two messages share a
            // microsecond.
            let id = last.map_or(at_micros, |l| at_micros.max(l.saturating_add(1)));
            t.insert((account, id), (with, stanza))?;
            tx.open_table(ARCHIVE_WITH)?
                .insert((account, with, id), ())?;
            let mut counts = tx.open_table(ARCHIVE_COUNT)?;
            let n = counts.get(account)?.map_or(0, |v| v.value());
            counts.insert(account, n.saturating_add(1))?;
            Ok((id, true))
        })
    }

    fn archive_get(&self, account: &str, id: u64) -> Result<Option<ArchivedMessage>, StoreError> {
        let table = self.reader(ARCHIVE, "open archive")?;
        let v = table.get((account, id)).map_err(self.err("read archive"))?;
        Ok(v.map(|v| {
            let (with, stanza) = v.value();
            ArchivedMessage {
                id,
                with: with.to_owned(),
                stanza: stanza.to_vec(),
            }
        }))
    }

    fn archive_page(
        &self,
        account: &str,
        range: &ArchiveRange,
        reverse: bool,
        max: usize,
    ) -> Result<Vec<ArchivedMessage>, StoreError> {
        let mut out = Vec::new();
        if range.low > range.high || max == 0 {
            return Ok(out);
        }
        let table = self.reader(ARCHIVE, "open archive")?;
        match range.with {
            None => {
                let mut it = table
                    .range((account, range.low)..=(account, range.high))
                    .map_err(self.err("read archive"))?;
                // At most `max` entries are read.
                while out.len() < max {
                    let next = if reverse { it.next_back() } else { it.next() };
                    let Some(entry) = next else { break };
                    let (k, v) = entry.map_err(self.err("read archive"))?;
                    let (with, stanza) = v.value();
                    out.push(ArchivedMessage {
                        id: k.value().1,
                        with: with.to_owned(),
                        stanza: stanza.to_vec(),
                    });
                }
            }
            Some(with) => {
                let index = self.reader(ARCHIVE_WITH, "open archive_with")?;
                let mut it = index
                    .range((account, with, range.low)..=(account, with, range.high))
                    .map_err(self.err("read archive index"))?;
                while out.len() < max {
                    let next = if reverse { it.next_back() } else { it.next() };
                    let Some(entry) = next else { break };
                    let (k, _) = entry.map_err(self.err("read archive index"))?;
                    let id = k.value().2;
                    let v = table
                        .get((account, id))
                        .map_err(self.err("read archive"))?
                        .ok_or_else(|| self.corrupt(format!("archive index of {account}: {id}")))?;
                    let (_, stanza) = v.value();
                    out.push(ArchivedMessage {
                        id,
                        with: with.to_owned(),
                        stanza: stanza.to_vec(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn archive_count(&self, account: &str) -> Result<u64, StoreError> {
        let table = self.reader(ARCHIVE_COUNT, "open archive_count")?;
        let v = table.get(account).map_err(self.err("read archive count"))?;
        Ok(v.map_or(0, |v| v.value()))
    }

    fn archive_prune(
        &mut self,
        account: &str,
        older_than: u64,
        keep: u64,
        max_remove: usize,
    ) -> Result<usize, StoreError> {
        // Most calls find nothing to do: decide that from reads alone, so they open no write.
        let count = self.archive_count(account)?;
        if count <= keep {
            let table = self.reader(ARCHIVE, "open archive")?;
            let first = table
                .range((account, 0)..=(account, u64::MAX))
                .map_err(self.err("read archive"))?
                .next()
                .transpose()
                .map_err(self.err("read archive"))?
                .map(|(k, _)| k.value().1);
            if first.is_none_or(|id| id >= older_than) {
                return Ok(0);
            }
        }
        self.write("prune archive", |tx| {
            let mut t = tx.open_table(ARCHIVE)?;
            let mut index = tx.open_table(ARCHIVE_WITH)?;
            let mut left = count;
            let mut removed = 0;
            // Bounded by `max_remove`.
            while removed < max_remove {
                let Some((id, with)) = t
                    .range((account, 0)..=(account, u64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, v)| (k.value().1, v.value().0.to_owned()))
                else {
                    break;
                };
                if id >= older_than && left <= keep {
                    break;
                }
                t.remove((account, id))?;
                index.remove((account, with.as_str(), id))?;
                left = left.saturating_sub(1);
                removed += 1;
            }
            let mut counts = tx.open_table(ARCHIVE_COUNT)?;
            if left == 0 {
                counts.remove(account)?;
            } else {
                counts.insert(account, left)?;
            }
            Ok((removed, removed > 0))
        })
    }
}

/// Removes an account's whole archive (account deletion, which is rare and explicit, so it is
/// not split into batches); whether anything was there.
fn archive_delete_all(tx: &WriteTransaction, account: &str) -> Result<bool, redb::Error> {
    let end = after(account);
    let mut t = tx.open_table(ARCHIVE)?;
    let before = t.len()?;
    t.retain_in((account, 0)..=(account, u64::MAX), |_, _| false)?;
    let changed = t.len()? != before;
    tx.open_table(ARCHIVE_WITH)?
        .retain_in((account, "", 0)..(end.as_str(), "", 0), |_, _| false)?;
    tx.open_table(ARCHIVE_COUNT)?.remove(account)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{all_suites, creds};
    use crate::store::{RosterItem, Subscription};

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
        let mut n = 0;
        all_suites(|| {
            n += 1;
            let path = dir.0.join(format!("suite{n}.redb"));
            Box::new(RedbStore::open(&path, CACHE).unwrap())
        });
    }

    #[test]
    fn redb_reopened_accounts_persist() {
        let dir = TempDir::new("reopen");
        {
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            assert!(s.account_create("alice@a.example", &creds(1)).unwrap());
            assert!(s.account_create("bob@a.example", &creds(2)).unwrap());
            assert!(s.account_delete("bob@a.example").unwrap());
            s.commit().unwrap();
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

    fn roster_item(jid: &str) -> RosterItem {
        RosterItem {
            in_roster: true,
            subscription: Subscription::Both,
            ..RosterItem::new(jid)
        }
    }

    /// Writes one of each kind for `account`.
    fn write_all_kinds(s: &mut RedbStore, account: &str) {
        assert!(s.account_create(account, &creds(1)).unwrap());
        s.roster_put(account, &roster_item("bob@b.example"))
            .unwrap();
        s.offline_push(account, b"<message/>").unwrap();
        s.kv_put(account, "vcard", b"<vCard/>").unwrap();
    }

    fn assert_all_kinds(s: &RedbStore, account: &str, present: bool) {
        assert_eq!(
            s.account_credentials(account).unwrap().is_some(),
            present,
            "{account}"
        );
        assert_eq!(
            s.roster_item(account, "bob@b.example").unwrap().is_some(),
            present
        );
        assert_eq!(s.roster_version(account).unwrap(), present as u64);
        assert_eq!(s.offline_count(account).unwrap(), present as u64);
        assert_eq!(s.kv_get(account, "vcard").unwrap().is_some(), present);
    }

    #[test]
    fn redb_committed_writes_survive_reopen() {
        let dir = TempDir::new("durable");
        {
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            write_all_kinds(&mut s, "alice@a.example");
            s.commit().unwrap();
        }
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert!(!s.has_uncommitted());
        assert_all_kinds(&s, "alice@a.example", true);
        assert_eq!(
            s.roster_item("alice@a.example", "bob@b.example").unwrap(),
            Some(RosterItem {
                version: 1,
                ..roster_item("bob@b.example")
            })
        );
        assert_eq!(s.offline_total().unwrap(), 1);
    }

    #[test]
    fn redb_uncommitted_writes_gone_after_drop_and_reopen() {
        let dir = TempDir::new("dropped");
        {
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            write_all_kinds(&mut s, "alice@a.example");
            s.commit().unwrap();
            write_all_kinds(&mut s, "bob@a.example");
            // Changes to committed records are discarded as well.
            s.offline_take("alice@a.example").unwrap();
            s.kv_delete("alice@a.example", "vcard").unwrap();
            assert!(s.has_uncommitted());
            assert_all_kinds(&s, "bob@a.example", true);
        }
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert_all_kinds(&s, "alice@a.example", true);
        assert_all_kinds(&s, "bob@a.example", false);
        assert_eq!(s.account_count().unwrap(), 1);
    }

    #[test]
    fn redb_many_writes_made_durable_by_one_commit() {
        let dir = TempDir::new("group");
        let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
        // What the last commit holds, bypassing the group's transaction.
        let committed = |s: &RedbStore| {
            let tx = s.db.begin_read().unwrap();
            tx.open_table(OFFLINE).unwrap().len().unwrap()
        };
        for i in 0..100u32 {
            s.offline_push("alice@a.example", &i.to_be_bytes()).unwrap();
        }
        assert_eq!(s.offline_total().unwrap(), 100);
        assert_eq!(committed(&s), 0);
        s.commit().unwrap();
        assert_eq!(committed(&s), 100);
        assert!(!s.has_uncommitted());
    }

    #[test]
    fn redb_version1_file_with_only_accounts_opens_and_gains_tables() {
        let dir = TempDir::new("v1");
        {
            let db = Database::create(dir.db()).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, 1)
                .unwrap();
            tx.open_table(ACCOUNTS)
                .unwrap()
                .insert("alice@a.example", creds(1).encode().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert_eq!(
            s.account_credentials("alice@a.example").unwrap(),
            Some(creds(1))
        );
        assert_eq!(s.roster_version("alice@a.example").unwrap(), 0);
        assert_eq!(s.offline_total().unwrap(), 0);
        assert_eq!(s.kv_get("alice@a.example", "vcard").unwrap(), None);
        s.offline_push("alice@a.example", b"<m/>").unwrap();
        s.commit().unwrap();
        drop(s);
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert_eq!(s.offline_count("alice@a.example").unwrap(), 1);
    }

    #[test]
    fn redb_corrupt_roster_record_error_names_contact() {
        let dir = TempDir::new("corrupt-roster");
        drop(RedbStore::open(&dir.db(), CACHE).unwrap());
        {
            let db = Database::create(dir.db()).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(ROSTER)
                .unwrap()
                .insert(("alice@a.example", "bob@b.example"), &[9u8][..])
                .unwrap();
            tx.commit().unwrap();
        }
        let s = RedbStore::open(&dir.db(), CACHE).unwrap();
        let err = s.roster_items("alice@a.example").unwrap_err();
        assert!(err.0.contains("bob@b.example"), "{err}");
        let err = s
            .roster_item("alice@a.example", "bob@b.example")
            .unwrap_err();
        assert!(err.0.contains("bob@b.example"), "{err}");
    }

    /// (write_bytes, wchar) of this process so far, from /proc/self/io.
    fn io_counters() -> (u64, u64) {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap()
        };
        (field("write_bytes:"), field("wchar:"))
    }

    /// Disk writes per offline message in a burst, by messages per commit. Run alone:
    /// `cargo test --lib redb_offline_burst_write_cost -- --ignored --nocapture --test-threads=1`
    /// (`HEARTH_BURST_MESSAGES` changes the count, 10,000 by default).
    #[test]
    #[ignore]
    fn redb_offline_burst_write_cost() {
        let total: u64 = std::env::var("HEARTH_BURST_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let stanza = {
            let head = b"<message xmlns='jabber:client' from='bob@b.example/phone' \
                         to='alice@a.example' type='chat' id='";
            let mut m = head.to_vec();
            m.resize(200 - b"'><body>hi</body></message>".len(), b'x');
            m.extend_from_slice(b"'><body>hi</body></message>");
            m
        };
        assert_eq!(stanza.len(), 200);
        println!("{total} offline messages of {} bytes each:", stanza.len());
        for (per_commit, accounts) in [(100u64, 1u64), (100, 100), (1, 1)] {
            let dir = TempDir::new("burst");
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            let (wb0, wc0) = io_counters();
            let start = std::time::Instant::now();
            for i in 0..total {
                let account = format!("user{}@a.example", i % accounts);
                s.offline_push(&account, &stanza).unwrap();
                if (i + 1) % per_commit == 0 {
                    s.commit().unwrap();
                }
            }
            s.commit().unwrap();
            let elapsed = start.elapsed();
            let (wb1, wc1) = io_counters();
            assert_eq!(s.offline_total().unwrap(), total);
            let size = std::fs::metadata(dir.db()).unwrap().len();
            println!(
                "  {per_commit:>3} per commit, {accounts:>3} account(s): \
                 {:>7} bytes/message to disk (write_bytes), {:>7} bytes/message written \
                 (wchar), file {size} bytes, {:.1?}",
                (wb1 - wb0) / total,
                (wc1 - wc0) / total,
                elapsed
            );
        }
    }

    #[test]
    fn redb_archive_survives_reopen_with_index_and_count() {
        use crate::store::ArchiveRange;
        let dir = TempDir::new("archive");
        let a = "alice@a.example";
        {
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            s.archive_append(a, 100, "bob@b.example", b"<m1/>").unwrap();
            s.archive_append(a, 200, "carol@b.example", b"<m2/>")
                .unwrap();
            s.commit().unwrap();
            // Not committed: gone after the reopen.
            s.archive_append(a, 300, "bob@b.example", b"<m3/>").unwrap();
        }
        let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
        assert_eq!(s.archive_count(a).unwrap(), 2);
        let bob = ArchiveRange {
            with: Some("bob@b.example"),
            ..ArchiveRange::ALL
        };
        let page = s.archive_page(a, &bob, false, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(
            (page[0].id, page[0].stanza.as_slice()),
            (100, &b"<m1/>"[..])
        );
        // Ids keep increasing after the reopen.
        assert_eq!(
            s.archive_append(a, 150, "bob@b.example", b"<m4/>").unwrap(),
            201
        );
    }

    /// Disk writes per archived message, by messages per commit, against offline storage of
    /// the same stanza. Run alone:
    /// `cargo test --release --lib redb_archive_write_cost -- --ignored --nocapture --test-threads=1`
    #[test]
    #[ignore]
    fn redb_archive_write_cost() {
        let total: u64 = 5_000;
        let mut stanza = b"<message xmlns='jabber:client' from='bob@b.example/phone' \
                           to='alice@a.example' type='chat' id='"
            .to_vec();
        stanza.resize(200 - b"'><body>hi</body></message>".len(), b'x');
        stanza.extend_from_slice(b"'><body>hi</body></message>");
        println!("{total} messages of {} bytes each:", stanza.len());
        for (per_commit, archive) in [(100u64, false), (100, true), (1, false), (1, true)] {
            let dir = TempDir::new("archive-cost");
            let mut s = RedbStore::open(&dir.db(), CACHE).unwrap();
            let (wb0, _) = io_counters();
            for i in 0..total {
                if archive {
                    s.archive_append("alice@a.example", 1_000_000 + i, "bob@b.example", &stanza)
                        .unwrap();
                    s.archive_prune("alice@a.example", 0, 10_000, 256).unwrap();
                } else {
                    s.offline_push("alice@a.example", &stanza).unwrap();
                }
                if (i + 1) % per_commit == 0 {
                    s.commit().unwrap();
                }
            }
            s.commit().unwrap();
            let (wb1, _) = io_counters();
            let size = std::fs::metadata(dir.db()).unwrap().len();
            println!(
                "  {per_commit:>3} per commit, {}: {:>7} bytes/message to disk, file {size} bytes",
                if archive { "archive" } else { "offline" },
                (wb1 - wb0) / total
            );
        }
    }
}
