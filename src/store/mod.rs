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

/// One message of an account's archive (XEP-0313).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Microseconds since the epoch when archived, unique and increasing per account.
    pub id: u64,
    /// The other party's bare JID.
    pub with: String,
    /// The stanza as archived (`Element::to_bytes` under a non-`jabber:client` parent, so it
    /// declares its namespace).
    pub stanza: Vec<u8>,
}

/// Which of an account's archived messages a page is read from: ids in `low..=high`, only
/// those exchanged with `with` if given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRange<'a> {
    pub with: Option<&'a str>,
    pub low: u64,
    pub high: u64,
}

impl ArchiveRange<'_> {
    /// The whole archive.
    pub const ALL: ArchiveRange<'static> = ArchiveRange {
        with: None,
        low: 0,
        high: u64::MAX,
    };
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

    // Message archive (XEP-0313). Ids are microseconds since the epoch at archiving, made
    // strictly increasing per account (`max(at, last + 1)`), so key order is time order and a
    // time bound is an id bound. The caller keeps `max` small: a page is read, never an archive.

    /// Archives a serialized stanza exchanged with `with` (a bare JID) at `at_micros`; returns
    /// its id.
    fn archive_append(
        &mut self,
        account: &str,
        at_micros: u64,
        with: &str,
        stanza: &[u8],
    ) -> Result<u64, StoreError>;
    /// One archived message by id.
    fn archive_get(&self, account: &str, id: u64) -> Result<Option<ArchivedMessage>, StoreError>;
    /// At most `max` messages of `range`: the oldest first, or with `reverse` the newest first.
    fn archive_page(
        &self,
        account: &str,
        range: &ArchiveRange,
        reverse: bool,
        max: usize,
    ) -> Result<Vec<ArchivedMessage>, StoreError>;
    /// Messages in the account's archive.
    fn archive_count(&self, account: &str) -> Result<u64, StoreError>;
    /// Removes the account's oldest messages while their id is below `older_than` or there are
    /// more than `keep`, at most `max_remove` of them; returns how many went.
    fn archive_prune(
        &mut self,
        account: &str,
        older_than: u64,
        keep: u64,
        max_remove: usize,
    ) -> Result<usize, StoreError>;
}

/// The behaviour every `Store` implementation must share, run against each of them.
#[cfg(test)]
pub(crate) mod conformance {
    use super::{MemoryStore, RosterItem, Store, Subscription};
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

    fn item(jid: &str, name: &str) -> RosterItem {
        RosterItem {
            in_roster: true,
            name: Some(name.to_owned()),
            groups: vec!["Friends".to_owned()],
            subscription: Subscription::To,
            ask: true,
            ..RosterItem::new(jid)
        }
    }

    fn sorted(mut items: Vec<RosterItem>) -> Vec<RosterItem> {
        items.sort_by(|a, b| a.jid.cmp(&b.jid));
        items
    }

    /// Rosters: versions count up per account from 0, records come back stamped with the
    /// version of their last change, and accounts do not see each other's records.
    pub fn roster_suite(s: &mut dyn Store) {
        let a = "alice@a.example";
        assert_eq!(s.roster_version(a).unwrap(), 0);
        assert_eq!(s.roster_items(a).unwrap(), []);
        assert_eq!(s.roster_item(a, "bob@b.example").unwrap(), None);

        // The version the caller passes is ignored: the store stamps its own.
        let bob = RosterItem {
            version: 99,
            ..item("bob@b.example", "Bob")
        };
        assert_eq!(s.roster_put(a, &bob).unwrap(), 1);
        assert_eq!(
            s.roster_put(a, &item("carol@b.example", "Carol")).unwrap(),
            2
        );
        let bob2 = RosterItem {
            subscription: Subscription::Both,
            ask: false,
            groups: vec![],
            name: None,
            ..bob.clone()
        };
        assert_eq!(s.roster_put(a, &bob2).unwrap(), 3);
        assert_eq!(s.roster_version(a).unwrap(), 3);
        let want_bob = RosterItem {
            version: 3,
            ..bob2.clone()
        };
        let want_carol = RosterItem {
            version: 2,
            ..item("carol@b.example", "Carol")
        };
        assert_eq!(
            s.roster_item(a, "bob@b.example").unwrap(),
            Some(want_bob.clone())
        );
        assert_eq!(
            sorted(s.roster_items(a).unwrap()),
            [want_bob.clone(), want_carol.clone()]
        );

        // Other accounts, including one whose JID extends this one's, are separate.
        for other in ["bob@b.example", "alice@a.example.org", "alice@a.exampl"] {
            assert_eq!(s.roster_version(other).unwrap(), 0, "{other}");
            assert_eq!(s.roster_items(other).unwrap(), [], "{other}");
            assert_eq!(s.roster_item(other, "bob@b.example").unwrap(), None);
        }
        assert_eq!(
            s.roster_put("alice@a.example.org", &item("bob@b.example", "B"))
                .unwrap(),
            1
        );
        assert_eq!(s.roster_version(a).unwrap(), 3);
        assert_eq!(sorted(s.roster_items(a).unwrap()), [want_bob, want_carol]);
        assert_eq!(s.roster_items("alice@a.example.org").unwrap().len(), 1);
    }

    /// Offline queues: arrival order per account, counts per account and in total, and a take
    /// that empties only the account's own queue.
    pub fn offline_suite(s: &mut dyn Store) {
        let a = "alice@a.example";
        let a2 = "alice@a.example.org";
        assert_eq!(s.offline_total().unwrap(), 0);
        assert_eq!(s.offline_count(a).unwrap(), 0);
        assert_eq!(s.offline_take(a).unwrap(), Vec::<Vec<u8>>::new());

        s.offline_push(a, b"<m1/>").unwrap();
        s.offline_push(a2, b"<n1/>").unwrap();
        s.offline_push(a, b"<m2/>").unwrap();
        s.offline_push("bob@b.example", b"<o1/>").unwrap();
        s.offline_push(a, b"<m3/>").unwrap();
        assert_eq!(s.offline_count(a).unwrap(), 3);
        assert_eq!(s.offline_count(a2).unwrap(), 1);
        assert_eq!(s.offline_count("bob@b.example").unwrap(), 1);
        assert_eq!(s.offline_count("carol@b.example").unwrap(), 0);
        assert_eq!(s.offline_total().unwrap(), 5);

        assert_eq!(
            s.offline_take(a).unwrap(),
            [b"<m1/>".to_vec(), b"<m2/>".to_vec(), b"<m3/>".to_vec()]
        );
        assert_eq!(s.offline_count(a).unwrap(), 0);
        assert_eq!(s.offline_total().unwrap(), 2);
        assert_eq!(s.offline_take(a).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(s.offline_count(a2).unwrap(), 1);

        // A queue refilled after a take keeps its order, over many messages.
        let many: Vec<Vec<u8>> = (0..300).map(|i| format!("<m{i}/>").into_bytes()).collect();
        for m in &many {
            s.offline_push(a, m).unwrap();
        }
        assert_eq!(s.offline_count(a).unwrap(), 300);
        assert_eq!(s.offline_total().unwrap(), 302);
        assert_eq!(s.offline_take(a).unwrap(), many);
        assert_eq!(s.offline_take(a2).unwrap(), [b"<n1/>".to_vec()]);
        assert_eq!(
            s.offline_take("bob@b.example").unwrap(),
            [b"<o1/>".to_vec()]
        );
        assert_eq!(s.offline_total().unwrap(), 0);
    }

    /// Per-account values: put, get, overwrite, delete, and no leaking between accounts or keys.
    pub fn kv_suite(s: &mut dyn Store) {
        let a = "alice@a.example";
        assert_eq!(s.kv_get(a, "vcard").unwrap(), None);
        s.kv_put(a, "vcard", b"<vCard/>").unwrap();
        assert_eq!(s.kv_get(a, "vcard").unwrap(), Some(b"<vCard/>".to_vec()));
        s.kv_put(a, "vcard", b"<vCard><FN>A</FN></vCard>").unwrap();
        assert_eq!(
            s.kv_get(a, "vcard").unwrap(),
            Some(b"<vCard><FN>A</FN></vCard>".to_vec())
        );
        s.kv_put(a, "private:jabber:x", b"").unwrap();
        assert_eq!(s.kv_get(a, "private:jabber:x").unwrap(), Some(Vec::new()));
        assert_eq!(s.kv_get(a, "vcar").unwrap(), None);
        assert_eq!(s.kv_get("alice@a.example.org", "vcard").unwrap(), None);
        assert_eq!(s.kv_get("bob@b.example", "vcard").unwrap(), None);

        s.kv_delete(a, "vcard").unwrap();
        assert_eq!(s.kv_get(a, "vcard").unwrap(), None);
        assert_eq!(s.kv_get(a, "private:jabber:x").unwrap(), Some(Vec::new()));
        // Deleting what is not there is fine.
        s.kv_delete(a, "vcard").unwrap();
        s.kv_delete("nobody@a.example", "vcard").unwrap();
    }

    /// Deleting an account removes its roster, roster version, offline queue and values, and
    /// nothing of any other account.
    pub fn account_delete_cascade_suite(s: &mut dyn Store) {
        let a = "alice@a.example";
        for acc in [a, "alice@a.example.org", "bob@b.example"] {
            assert!(s.account_create(acc, &creds(1)).unwrap());
            s.roster_put(acc, &item("carol@b.example", "C")).unwrap();
            s.roster_put(acc, &item("dave@b.example", "D")).unwrap();
            s.offline_push(acc, b"<m/>").unwrap();
            s.offline_push(acc, b"<n/>").unwrap();
            s.kv_put(acc, "vcard", b"<vCard/>").unwrap();
            s.kv_put(acc, "last", b"1").unwrap();
        }
        assert_eq!(s.offline_total().unwrap(), 6);

        assert!(s.account_delete(a).unwrap());
        assert_eq!(s.account_credentials(a).unwrap(), None);
        assert_eq!(s.roster_items(a).unwrap(), []);
        assert_eq!(s.roster_item(a, "carol@b.example").unwrap(), None);
        assert_eq!(s.roster_version(a).unwrap(), 0);
        assert_eq!(s.offline_count(a).unwrap(), 0);
        assert_eq!(s.offline_take(a).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(s.kv_get(a, "vcard").unwrap(), None);
        assert_eq!(s.kv_get(a, "last").unwrap(), None);
        assert_eq!(s.offline_total().unwrap(), 4);

        for acc in ["alice@a.example.org", "bob@b.example"] {
            assert_eq!(s.account_credentials(acc).unwrap(), Some(creds(1)), "{acc}");
            assert_eq!(s.roster_items(acc).unwrap().len(), 2, "{acc}");
            assert_eq!(s.roster_version(acc).unwrap(), 2, "{acc}");
            assert_eq!(s.offline_count(acc).unwrap(), 2, "{acc}");
            assert_eq!(s.kv_get(acc, "vcard").unwrap(), Some(b"<vCard/>".to_vec()));
        }

        // A re-created account starts empty.
        assert!(s.account_create(a, &creds(2)).unwrap());
        assert_eq!(s.roster_version(a).unwrap(), 0);
        assert_eq!(s.offline_count(a).unwrap(), 0);
        assert_eq!(s.kv_get(a, "vcard").unwrap(), None);
    }

    /// Group commit: every write is readable before `commit`, `has_uncommitted` says whether
    /// one is pending, and writes that change nothing leave nothing to commit.
    pub fn group_commit_suite(s: &mut dyn Store) {
        let a = "alice@a.example";
        assert!(!s.has_uncommitted());
        s.commit().unwrap();
        assert!(!s.has_uncommitted());

        assert!(s.account_create(a, &creds(1)).unwrap());
        assert!(s.has_uncommitted());
        s.roster_put(a, &item("bob@b.example", "Bob")).unwrap();
        s.offline_push(a, b"<m/>").unwrap();
        s.kv_put(a, "vcard", b"<vCard/>").unwrap();
        // Read your writes before the commit.
        assert_eq!(s.account_credentials(a).unwrap(), Some(creds(1)));
        assert_eq!(s.account_count().unwrap(), 1);
        assert_eq!(s.account_list(None).unwrap(), [a]);
        assert_eq!(s.roster_version(a).unwrap(), 1);
        assert_eq!(s.roster_items(a).unwrap().len(), 1);
        assert_eq!(s.offline_count(a).unwrap(), 1);
        assert_eq!(s.offline_total().unwrap(), 1);
        assert_eq!(s.kv_get(a, "vcard").unwrap(), Some(b"<vCard/>".to_vec()));
        assert!(s.has_uncommitted());

        s.commit().unwrap();
        assert!(!s.has_uncommitted());
        // Still all there after the commit.
        assert_eq!(s.account_credentials(a).unwrap(), Some(creds(1)));
        assert_eq!(s.roster_version(a).unwrap(), 1);
        assert_eq!(s.offline_count(a).unwrap(), 1);
        assert_eq!(s.kv_get(a, "vcard").unwrap(), Some(b"<vCard/>".to_vec()));
        // Reads alone leave nothing to commit.
        assert!(!s.has_uncommitted());

        // Writes that change nothing leave nothing to commit either.
        assert!(!s.account_create(a, &creds(2)).unwrap());
        assert!(
            !s.account_set_credentials("nobody@a.example", &creds(2))
                .unwrap()
        );
        assert_eq!(
            s.offline_take("nobody@a.example").unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert!(!s.has_uncommitted());
        s.commit().unwrap();

        // A second group is independent of the first.
        assert_eq!(s.offline_take(a).unwrap(), [b"<m/>".to_vec()]);
        assert!(s.has_uncommitted());
        assert_eq!(s.offline_total().unwrap(), 0);
        s.commit().unwrap();
        assert!(!s.has_uncommitted());
        assert_eq!(s.offline_total().unwrap(), 0);
    }

    /// Message archive: ids unique and increasing per account even for equal or earlier
    /// times, pages by id range both ways with and without `with`, counts, bounded pruning,
    /// and no leaking between accounts.
    pub fn archive_suite(s: &mut dyn Store) {
        use super::ArchiveRange;
        let a = "alice@a.example";
        assert_eq!(s.archive_count(a).unwrap(), 0);
        assert_eq!(
            s.archive_page(a, &ArchiveRange::ALL, false, 10).unwrap(),
            []
        );
        assert_eq!(s.archive_get(a, 1).unwrap(), None);
        let i1 = s
            .archive_append(a, 1000, "bob@b.example", b"<m1/>")
            .unwrap();
        // The same time and a time in the past still give later ids.
        let i2 = s
            .archive_append(a, 1000, "carol@b.example", b"<m2/>")
            .unwrap();
        let i3 = s.archive_append(a, 5, "bob@b.example", b"<m3/>").unwrap();
        let i4 = s
            .archive_append(a, 5000, "bob@b.example", b"<m4/>")
            .unwrap();
        assert_eq!((i1, i2, i3, i4), (1000, 1001, 1002, 5000));
        s.archive_append("alice@a.example.org", 2000, "bob@b.example", b"<x/>")
            .unwrap();
        assert_eq!(s.archive_count(a).unwrap(), 4);
        let got = s.archive_get(a, i2).unwrap().unwrap();
        assert_eq!(
            (got.id, got.with.as_str(), got.stanza.as_slice()),
            (i2, "carol@b.example", &b"<m2/>"[..])
        );
        let ids = |v: Vec<super::ArchivedMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.archive_page(a, &ArchiveRange::ALL, false, 3).unwrap()),
            [i1, i2, i3]
        );
        assert_eq!(
            ids(s.archive_page(a, &ArchiveRange::ALL, true, 3).unwrap()),
            [i4, i3, i2]
        );
        let bob = ArchiveRange {
            with: Some("bob@b.example"),
            ..ArchiveRange::ALL
        };
        assert_eq!(
            ids(s.archive_page(a, &bob, false, 10).unwrap()),
            [i1, i3, i4]
        );
        assert_eq!(ids(s.archive_page(a, &bob, true, 2).unwrap()), [i4, i3]);
        let mid = ArchiveRange {
            with: Some("bob@b.example"),
            low: 1001,
            high: 4999,
        };
        assert_eq!(ids(s.archive_page(a, &mid, false, 10).unwrap()), [i3]);
        let empty = ArchiveRange {
            with: None,
            low: 10,
            high: 9,
        };
        assert_eq!(s.archive_page(a, &empty, false, 10).unwrap(), []);
        // Pruning: by age, then by count, never more than asked at once.
        assert_eq!(s.archive_prune(a, 1001, 100, 10).unwrap(), 1);
        assert_eq!(s.archive_prune(a, 1001, 100, 10).unwrap(), 0);
        assert_eq!(ids(s.archive_page(a, &bob, false, 10).unwrap()), [i3, i4]);
        assert_eq!(s.archive_prune(a, 0, 1, 1).unwrap(), 1);
        assert_eq!(s.archive_prune(a, 0, 1, 10).unwrap(), 1);
        assert_eq!(
            ids(s.archive_page(a, &ArchiveRange::ALL, false, 10).unwrap()),
            [i4]
        );
        assert_eq!(s.archive_count(a).unwrap(), 1);
        assert_eq!(s.archive_count("alice@a.example.org").unwrap(), 1);
        // A big backlog goes in bounded batches.
        for i in 0..600u64 {
            s.archive_append(a, 10_000 + i, "dave@b.example", b"<d/>")
                .unwrap();
        }
        assert_eq!(s.archive_prune(a, 0, 100, 256).unwrap(), 256);
        assert_eq!(s.archive_prune(a, 0, 100, 256).unwrap(), 245);
        assert_eq!(s.archive_prune(a, 0, 100, 256).unwrap(), 0);
        assert_eq!(s.archive_count(a).unwrap(), 100);
        let dave = ArchiveRange {
            with: Some("dave@b.example"),
            ..ArchiveRange::ALL
        };
        assert_eq!(s.archive_page(a, &dave, false, 1000).unwrap().len(), 100);
        assert_eq!(s.archive_page(a, &dave, false, 1).unwrap()[0].id, 10_500);
        // Deleting the account takes its archive, and only its.
        assert!(s.account_create(a, &creds(1)).unwrap());
        assert!(s.account_delete(a).unwrap());
        assert_eq!(s.archive_count(a).unwrap(), 0);
        assert_eq!(s.archive_page(a, &dave, false, 10).unwrap(), []);
        assert_eq!(s.archive_count("alice@a.example.org").unwrap(), 1);
    }

    type Suite = fn(&mut dyn Store);

    /// Every suite, each on a fresh store from `fresh`.
    pub fn all_suites(mut fresh: impl FnMut() -> Box<dyn Store>) {
        let suites: [(&str, Suite); 7] = [
            ("accounts", suite),
            ("roster", roster_suite),
            ("offline", offline_suite),
            ("kv", kv_suite),
            ("account_delete cascade", account_delete_cascade_suite),
            ("group commit", group_commit_suite),
            ("archive", archive_suite),
        ];
        for (name, run) in suites {
            eprintln!("conformance: {name}");
            run(fresh().as_mut());
        }
    }

    #[test]
    fn memory_store_conformance_suite_passes() {
        all_suites(|| Box::new(MemoryStore::new()));
    }
}
