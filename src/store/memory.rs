//! In-memory `Store`: the twin of `RedbStore` that protocol tests run against.

use super::{Store, StoreError};
use crate::sasl::Credentials;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemoryStore {
    accounts: BTreeMap<String, Credentials>,
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
                *c = creds.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn account_delete(&mut self, bare_jid: &str) -> Result<bool, StoreError> {
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
}
