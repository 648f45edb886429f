//! The connection table: a `Vec` of slots with a free list and a generation per slot.
//!
//! Owns the mapping between `ConnId`s (what the core sees), slot indexes (what mio tokens
//! carry) and the values stored. A `ConnId` is `(generation << 32) | index`; freeing a slot
//! bumps its generation, so an id the core still holds for a closed connection never names the
//! socket that later reuses the slot.
//!
//! Generations wrap at 2^31, so a driver id never has bit 63 set: that bit marks the ids the
//! core makes for outgoing connections (`server::OUTGOING_CONN_BIT`).

use crate::server::ConnId;

/// Generations count modulo this (see the module doc).
const GENERATION_MASK: u32 = 0x7fff_ffff;

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A generational slot table. Freed slots are reused before the `Vec` grows, so its length is
/// the high-water mark of simultaneous entries.
pub struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

fn make_id(generation: u32, index: u32) -> ConnId {
    ConnId((u64::from(generation) << 32) | u64::from(index))
}

/// Splits an id into (generation, index).
fn split_id(id: ConnId) -> (u32, u32) {
    // Both halves fit by construction: the shift leaves 32 bits, the mask keeps 32 bits.
    ((id.0 >> 32) as u32, (id.0 & 0xffff_ffff) as u32)
}

impl<T> Slots<T> {
    pub fn new() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its id, or gives the value back if the table already holds
    /// 2^32 entries (the index must fit in the id's low half).
    pub fn insert(&mut self, value: T) -> Result<ConnId, T> {
        if let Some(index) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                slot.value = Some(value);
                self.len += 1;
                return Ok(make_id(slot.generation, index));
            }
            // A free index always names an existing slot; fall through to growing if not.
        }
        let Ok(index) = u32::try_from(self.slots.len()) else {
            return Err(value);
        };
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        self.len += 1;
        Ok(make_id(0, index))
    }

    fn slot(&self, id: ConnId) -> Option<&Slot<T>> {
        let (generation, index) = split_id(id);
        self.slots
            .get(index as usize)
            .filter(|s| s.generation == generation && s.value.is_some())
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.slot(id).and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let (generation, index) = split_id(id);
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.value.as_mut())
    }

    /// The current occupant of slot `index` (from a mio token) and its id.
    pub fn id_at(&self, index: usize) -> Option<ConnId> {
        let slot = self.slots.get(index)?;
        slot.value.as_ref()?;
        // `index` came from a slot that exists, so it fits in u32 (see `insert`).
        Some(make_id(slot.generation, u32::try_from(index).ok()?))
    }

    /// The slot index of `id` (for its mio token), whether or not it is still occupied.
    pub fn index_of(id: ConnId) -> usize {
        split_id(id).1 as usize
    }

    /// Removes and returns the value; the slot's generation moves on so `id` goes stale.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let (generation, index) = split_id(id);
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    /// Ids of every occupied slot (for shutdown).
    pub fn ids(&self) -> Vec<ConnId> {
        (0..self.slots.len())
            .filter_map(|i| self.id_at(i))
            .collect()
    }
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_insert_returns_usable_id() {
        let mut s = Slots::new();
        let id = s.insert("a").unwrap();
        assert_eq!(s.get(id), Some(&"a"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.id_at(Slots::<&str>::index_of(id)), Some(id));
    }

    #[test]
    fn removed_id_is_stale() {
        let mut s = Slots::new();
        let id = s.insert(1).unwrap();
        assert_eq!(s.remove(id), Some(1));
        assert_eq!(s.get(id), None);
        assert!(s.get_mut(id).is_none());
        assert_eq!(s.remove(id), None);
        assert!(s.is_empty());
    }

    #[test]
    fn freed_slot_reuse_increments_generation() {
        let mut s = Slots::new();
        let old = s.insert(1).unwrap();
        s.remove(old);
        let new = s.insert(2).unwrap();
        // Same slot (so the same mio token), different id.
        assert_eq!(Slots::<i32>::index_of(old), Slots::<i32>::index_of(new));
        assert_ne!(old, new);
        assert_eq!(new.0 >> 32, (old.0 >> 32) + 1);
        assert_eq!(s.get(old), None);
        assert_eq!(s.get(new), Some(&2));
        assert_eq!(s.remove(old), None);
        assert_eq!(s.get(new), Some(&2));
    }

    #[test]
    fn free_list_reuses_before_growing() {
        let mut s = Slots::new();
        let a = s.insert('a').unwrap();
        let _b = s.insert('b').unwrap();
        s.remove(a);
        let c = s.insert('c').unwrap();
        assert_eq!(Slots::<char>::index_of(c), Slots::<char>::index_of(a));
        assert_eq!(s.slots.len(), 2);
    }

    #[test]
    fn vacant_index_has_no_id() {
        let mut s = Slots::new();
        let a = s.insert(0u8).unwrap();
        s.remove(a);
        assert_eq!(s.id_at(0), None);
        assert_eq!(s.id_at(7), None);
        assert!(s.ids().is_empty());
    }

    #[test]
    fn generation_at_mask_wraps_without_outgoing_bit() {
        let mut s = Slots::new();
        s.insert(1).unwrap();
        s.slots[0].generation = GENERATION_MASK;
        let top = make_id(GENERATION_MASK, 0);
        assert_eq!(top.0 & crate::server::OUTGOING_CONN_BIT, 0);
        assert_eq!(s.remove(top), Some(1));
        let b = s.insert(2).unwrap();
        assert_eq!(b.0 >> 32, 0);
        assert_eq!(b.0 & crate::server::OUTGOING_CONN_BIT, 0);
    }

    #[test]
    fn forged_generation_rejected() {
        let mut s = Slots::new();
        let a = s.insert(5).unwrap();
        let forged = ConnId(a.0 + (1 << 32));
        assert_eq!(s.get(forged), None);
        assert_eq!(s.remove(forged), None);
        assert_eq!(s.get(a), Some(&5));
    }
}
