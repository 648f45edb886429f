//! In-memory `Store`: the twin of `RedbStore` that protocol tests run against.

use super::{ArchiveRange, ArchivedMessage, RosterItem, Store, StoreError};
use crate::sasl::Credentials;
use std::collections::{BTreeMap, VecDeque};

#[derive(Default)]
pub struct MemoryStore {
    accounts: BTreeMap<String, Credentials>,
    /// account -> (version, contact -> record)
    rosters: BTreeMap<String, (u64, BTreeMap<String, RosterItem>)>,
    offline: BTreeMap<String, VecDeque<Vec<u8>>>,
    kv: BTreeMap<(String, String), Vec<u8>>,
    /// (account, id) -> (with, stanza)
    archive: BTreeMap<(String, u64), (String, Vec<u8>)>,
    uncommitted: bool,
    /// Commits made (tests check grouping).
    pub commits: u64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn account_credentials(&self, bare_jid: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(self.accounts.get(bare_jid).cloned())
    }
    fn account_create(&mut self, bare_jid: &str, creds: &Credentials) -> Result<bool, StoreError> {
        if self.accounts.contains_key(bare_jid) {
            return Ok(false);
        }
        self.uncommitted = true;
        self.accounts.insert(bare_jid.to_owned(), creds.clone());
        Ok(true)
    }
    fn account_set_credentials(
        &mut self,
        bare_jid: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError> {
        match self.accounts.get_mut(bare_jid) {
            Some(c) => {
                self.uncommitted = true;
                *c = creds.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn account_delete(&mut self, bare_jid: &str) -> Result<bool, StoreError> {
        self.uncommitted = true;
        self.rosters.remove(bare_jid);
        self.offline.remove(bare_jid);
        self.kv.retain(|(a, _), _| a != bare_jid);
        self.archive.retain(|(a, _), _| a != bare_jid);
        Ok(self.accounts.remove(bare_jid).is_some())
    }
    fn account_list(&self, domain: Option<&str>) -> Result<Vec<String>, StoreError> {
        Ok(self
            .accounts
            .keys()
            .filter(|k| domain.is_none_or(|d| k.rsplit_once('@').is_some_and(|(_, kd)| kd == d)))
            .cloned()
            .collect())
    }
    fn account_count(&self) -> Result<u64, StoreError> {
        Ok(self.accounts.len() as u64)
    }

    fn roster_items(&self, account: &str) -> Result<Vec<RosterItem>, StoreError> {
        Ok(self
            .rosters
            .get(account)
            .map(|(_, items)| items.values().cloned().collect())
            .unwrap_or_default())
    }
    fn roster_item(&self, account: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        Ok(self
            .rosters
            .get(account)
            .and_then(|(_, items)| items.get(contact).cloned()))
    }
    fn roster_version(&self, account: &str) -> Result<u64, StoreError> {
        Ok(self.rosters.get(account).map_or(0, |(v, _)| *v))
    }
    fn roster_put(&mut self, account: &str, item: &RosterItem) -> Result<u64, StoreError> {
        self.uncommitted = true;
        let (version, items) = self.rosters.entry(account.to_owned()).or_default();
        *version += 1;
        let mut stored = item.clone();
        stored.version = *version;
        items.insert(item.jid.clone(), stored);
        Ok(*version)
    }
    fn offline_push(&mut self, account: &str, stanza: &[u8]) -> Result<(), StoreError> {
        self.uncommitted = true;
        self.offline
            .entry(account.to_owned())
            .or_default()
            .push_back(stanza.to_vec());
        Ok(())
    }
    fn offline_count(&self, account: &str) -> Result<u64, StoreError> {
        Ok(self.offline.get(account).map_or(0, |q| q.len() as u64))
    }
    fn offline_total(&self) -> Result<u64, StoreError> {
        Ok(self.offline.values().map(|q| q.len() as u64).sum())
    }
    fn offline_take(&mut self, account: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let q = self.offline.remove(account).unwrap_or_default();
        if !q.is_empty() {
            self.uncommitted = true;
        }
        Ok(q.into())
    }
    fn kv_get(&self, account: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv.get(&(account.to_owned(), key.to_owned())).cloned())
    }
    fn kv_put(&mut self, account: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.uncommitted = true;
        self.kv
            .insert((account.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }
    fn kv_delete(&mut self, account: &str, key: &str) -> Result<(), StoreError> {
        self.uncommitted = true;
        self.kv.remove(&(account.to_owned(), key.to_owned()));
        Ok(())
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.uncommitted {
            self.uncommitted = false;
            self.commits += 1;
        }
        Ok(())
    }
    fn has_uncommitted(&self) -> bool {
        self.uncommitted
    }

    fn archive_append(
        &mut self,
        account: &str,
        at_micros: u64,
        with: &str,
        stanza: &[u8],
    ) -> Result<u64, StoreError> {
        let last = self
            .archive
            .range((account.to_owned(), 0)..=(account.to_owned(), u64::MAX))
            .next_back()
            .map(|((_, id), _)| *id);
        let id = last.map_or(at_micros, |l| at_micros.max(l.saturating_add(1)));
        self.uncommitted = true;
        self.archive
            .insert((account.to_owned(), id), (with.to_owned(), stanza.to_vec()));
        Ok(id)
    }
    fn archive_get(&self, account: &str, id: u64) -> Result<Option<ArchivedMessage>, StoreError> {
        Ok(self
            .archive
            .get(&(account.to_owned(), id))
            .map(|(with, stanza)| ArchivedMessage {
                id,
                with: with.clone(),
                stanza: stanza.clone(),
            }))
    }
    fn archive_page(
        &self,
        account: &str,
        range: &ArchiveRange,
        reverse: bool,
        max: usize,
    ) -> Result<Vec<ArchivedMessage>, StoreError> {
        if range.low > range.high {
            return Ok(Vec::new());
        }
        let all = self
            .archive
            .range((account.to_owned(), range.low)..=(account.to_owned(), range.high));
        let matching = |(k, v): (&(String, u64), &(String, Vec<u8>))| {
            range
                .with
                .is_none_or(|w| w == v.0)
                .then(|| ArchivedMessage {
                    id: k.1,
                    with: v.0.clone(),
                    stanza: v.1.clone(),
                })
        };
        Ok(if reverse {
            all.rev().filter_map(matching).take(max).collect()
        } else {
            all.filter_map(matching).take(max).collect()
        })
    }
    fn archive_count(&self, account: &str) -> Result<u64, StoreError> {
        Ok(self
            .archive
            .range((account.to_owned(), 0)..=(account.to_owned(), u64::MAX))
            .count() as u64)
    }
    fn archive_prune(
        &mut self,
        account: &str,
        older_than: u64,
        keep: u64,
        max_remove: usize,
    ) -> Result<usize, StoreError> {
        let mut count = self.archive_count(account)?;
        let mut removed = 0;
        while removed < max_remove {
            let Some(&(_, id)) = self
                .archive
                .range((account.to_owned(), 0)..=(account.to_owned(), u64::MAX))
                .next()
                .map(|(k, _)| k)
            else {
                break;
            };
            if id >= older_than && count <= keep {
                break;
            }
            self.archive.remove(&(account.to_owned(), id));
            self.uncommitted = true;
            count -= 1;
            removed += 1;
        }
        Ok(removed)
    }
}
