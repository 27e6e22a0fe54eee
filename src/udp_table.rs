//! The table a UDP association keeps of its destinations (and of the names
//! it resolved): what each maps to, which are live, and which to forget
//! first. Pure: no sockets, time passed in.
//!
//! An entry is *live* while a datagram went either way within the idle
//! time, as a NAT mapping is (RFC 4787 REQ-5: at least 2 minutes). Once
//! idle it is not dropped but kept, value and all, as a memory of where
//! the key went, until the table is full and it is the least recently used:
//! a destination that comes back finds its link there.
//!
//! At the cap the least recently used idle entry is evicted. While every
//! entry is live, a new one is refused: a flow that keeps talking keeps its
//! place (and its link) however many new keys come.
//!
//! Every operation is O(1) (amortized for [`Table::expire`], which moves
//! each entry at most once per time it was used, and for the hash map): two
//! intrusive lists ordered by last use, live and idle, thread one slab of
//! slots; nothing scans the table. Slots and map grow up to the cap and are
//! then reused: a full table allocates nothing more.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    last: Instant,
    /// Towards the more recently used.
    prev: u32,
    /// Towards the less recently used.
    next: u32,
    live: bool,
}

/// One list through the slots: head is the most recently used.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// What [`Table::touch`] found.
pub struct Touched<'a, V> {
    pub value: &'a mut V,
    /// It was live; otherwise it had gone idle and is live again now.
    pub was_live: bool,
}

/// An entry that left the table, or left the live list.
pub struct Gone<K, V> {
    pub key: K,
    pub value: V,
    /// It was live when it went.
    pub was_live: bool,
}

pub struct Table<K, V> {
    map: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    /// Slots freed by [`Table::remove`].
    free: Vec<u32>,
    live: List,
    idle: List,
    cap: usize,
    idle_after: Duration,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    /// A table of at most `cap` entries (at least 1), live for `idle_after`
    /// after their last use.
    pub fn new(cap: usize, idle_after: Duration) -> Table<K, V> {
        assert!(
            cap >= 1 && cap < NIL as usize,
            "a table of 1 to 2^32-2 entries"
        );
        Table {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: List::EMPTY,
            idle: List::EMPTY,
            cap,
            idle_after,
        }
    }

    /// Entries kept, live and idle.
    pub fn len(&self) -> usize {
        self.live.len + self.idle.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn live_len(&self) -> usize {
        self.live.len
    }

    /// Whether [`Table::insert`] would take a new key now.
    pub fn has_room(&self) -> bool {
        self.len() < self.cap || self.idle.len > 0
    }

    /// The live entry for `key`, without counting this as a use.
    pub fn get_live<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let &i = self.map.get(key)?;
        let slot = &self.slots[i as usize];
        slot.live.then_some(&slot.value)
    }

    /// The entry for `key`, live or idle, without counting a use.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|&i| &self.slots[i as usize].value)
    }

    /// The entry for `key`, live or idle, to change, without counting a use.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let &i = self.map.get(key)?;
        Some(&mut self.slots[i as usize].value)
    }

    /// A datagram for `key` at `now`: the entry, live again if it was idle,
    /// becomes the most recently used.
    pub fn touch<Q>(&mut self, key: &Q, now: Instant) -> Option<Touched<'_, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        let was_live = self.slots[i as usize].live;
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.last = now;
        slot.live = true;
        self.push_live(i);
        Some(Touched {
            value: &mut self.slots[i as usize].value,
            was_live,
        })
    }

    /// A datagram for `key` at `now`, if its entry is live: it becomes the
    /// most recently used. An idle entry is left as it is.
    pub fn touch_live<Q>(&mut self, key: &Q, now: Instant) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        if !self.slots[i as usize].live {
            return None;
        }
        self.unlink(i);
        self.slots[i as usize].last = now;
        self.push_live(i);
        Some(&mut self.slots[i as usize].value)
    }

    /// Adds `key` (not in the table) as live and most recently used. At the
    /// cap, the least recently used idle entry makes room and is returned;
    /// with none idle, `value` is given back: refused.
    pub fn insert(&mut self, key: K, value: V, now: Instant) -> Result<Option<Gone<K, V>>, V> {
        debug_assert!(!self.map.contains_key(&key), "insert of a key already in");
        if self.len() >= self.cap && self.idle.len == 0 {
            return Err(value);
        }
        let fresh = Slot {
            key: key.clone(),
            value,
            last: now,
            prev: NIL,
            next: NIL,
            live: true,
        };
        let (i, gone) = if self.len() >= self.cap {
            let victim = self.idle.tail;
            self.unlink(victim);
            let old = std::mem::replace(&mut self.slots[victim as usize], fresh);
            self.map.remove(&old.key);
            let gone = Gone {
                key: old.key,
                value: old.value,
                was_live: old.live,
            };
            (victim, Some(gone))
        } else if let Some(i) = self.free.pop() {
            self.slots[i as usize] = fresh;
            (i, None)
        } else {
            self.slots.push(fresh);
            ((self.slots.len() - 1) as u32, None)
        };
        self.map.insert(key, i);
        self.push_live(i);
        Ok(gone)
    }

    /// Forgets `key`.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<(V, bool)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Default,
    {
        let i = self.map.remove(key)?;
        self.unlink(i);
        self.free.push(i);
        let slot = &mut self.slots[i as usize];
        Some((std::mem::take(&mut slot.value), slot.live))
    }

    /// Moves the entries unused since `now - idle_after` to the idle list,
    /// calling `went_idle` for each. Amortized O(1) per use.
    pub fn expire(&mut self, now: Instant, mut went_idle: impl FnMut(&K, &mut V)) {
        while self.live.tail != NIL {
            let i = self.live.tail;
            if now.saturating_duration_since(self.slots[i as usize].last) < self.idle_after {
                break;
            }
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            slot.live = false;
            went_idle(&slot.key, &mut slot.value);
            self.push_idle(i);
        }
    }

    /// When the next live entry goes idle, if nothing touches it first.
    pub fn next_expiry(&self) -> Option<Instant> {
        (self.live.tail != NIL).then(|| self.slots[self.live.tail as usize].last + self.idle_after)
    }

    /// Forgets every entry `gone` picks, handing each to `removed` (with
    /// whether it was live). O(n): for rare events (a link that ended),
    /// not per datagram.
    pub fn remove_where(
        &mut self,
        mut gone: impl FnMut(&K, &V) -> bool,
        mut removed: impl FnMut(K, V, bool),
    ) where
        V: Default,
    {
        let keys: Vec<K> = self
            .map
            .iter()
            .filter(|&(k, &i)| gone(k, &self.slots[i as usize].value))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some((value, was_live)) = self.remove(&key) {
                removed(key, value, was_live);
            }
        }
    }

    /// Takes every entry out (for closing: each live one was counted).
    pub fn drain(&mut self) -> impl Iterator<Item = Gone<K, V>> + '_ {
        self.map.clear();
        self.free.clear();
        self.live = List::EMPTY;
        self.idle = List::EMPTY;
        self.slots.drain(..).map(|s| Gone {
            key: s.key,
            value: s.value,
            was_live: s.live,
        })
    }

    fn list(&mut self, live: bool) -> &mut List {
        if live {
            &mut self.live
        } else {
            &mut self.idle
        }
    }

    /// Takes slot `i` out of the list it is in.
    fn unlink(&mut self, i: u32) {
        let (prev, next, live) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next, s.live)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        let list = self.list(live);
        if list.head == i {
            list.head = next;
        }
        if list.tail == i {
            list.tail = prev;
        }
        list.len -= 1;
    }

    fn push_live(&mut self, i: u32) {
        self.push(i, true);
    }

    fn push_idle(&mut self, i: u32) {
        self.push(i, false);
    }

    /// Puts slot `i` at the head of a list.
    fn push(&mut self, i: u32, live: bool) {
        let old_head = self.list(live).head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old_head;
        }
        if old_head != NIL {
            self.slots[old_head as usize].prev = i;
        }
        let list = self.list(live);
        list.head = i;
        if list.tail == NIL {
            list.tail = i;
        }
        list.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(120);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    /// Keys from least to most recently used, (idle ones, live ones).
    fn order(t: &Table<u32, u8>) -> (Vec<u32>, Vec<u32>) {
        let walk = |list: List| {
            let mut v = Vec::new();
            let mut i = list.tail;
            while i != NIL {
                v.push(t.slots[i as usize].key);
                i = t.slots[i as usize].prev;
            }
            assert_eq!(v.len(), list.len, "list length");
            v
        };
        (walk(t.idle), walk(t.live))
    }

    #[test]
    fn remove_where_forgets_what_it_picks_live_or_idle() {
        let t0 = Instant::now();
        let mut t: Table<u32, u8> = Table::new(8, IDLE);
        for k in 0..4 {
            t.insert(k, (k % 2) as u8, at(t0, u64::from(k))).unwrap();
        }
        expired(&mut t, at(t0, 121)); // 0 and 1 idle
        let mut gone = Vec::new();
        t.remove_where(|_, &v| v == 1, |k, _, live| gone.push((k, live)));
        gone.sort();
        assert_eq!(gone, [(1, false), (3, true)]);
        assert_eq!(order(&t), (vec![0], vec![2]));
        t.insert(5, 0, at(t0, 122)).unwrap();
        assert_eq!(t.len(), 3, "freed slots are reused");
    }

    fn expired(t: &mut Table<u32, u8>, now: Instant) -> Vec<u32> {
        let mut v = Vec::new();
        t.expire(now, |k, _| v.push(*k));
        v
    }

    #[test]
    fn touch_makes_most_recent_and_keeps_value() {
        let t0 = Instant::now();
        let mut t = Table::new(8, IDLE);
        for k in 0..3 {
            assert!(t.insert(k, k as u8 + 10, t0).unwrap().is_none());
        }
        let got = t.touch(&0, at(t0, 1)).unwrap();
        assert!(got.was_live);
        assert_eq!(*got.value, 10);
        assert_eq!(order(&t), (vec![], vec![1, 2, 0]));
        assert!(t.touch(&9, t0).is_none());
    }

    #[test]
    fn live_until_idle_time_then_kept_idle_with_its_value() {
        let t0 = Instant::now();
        let mut t = Table::new(8, IDLE);
        t.insert(1, 7, t0).unwrap();
        t.insert(2, 8, at(t0, 60)).unwrap();
        assert_eq!(t.next_expiry(), Some(at(t0, 120)));
        assert!(expired(&mut t, at(t0, 119)).is_empty());
        assert_eq!(expired(&mut t, at(t0, 120)), [1]);
        assert_eq!(t.live_len(), 1);
        assert_eq!(t.len(), 2);
        assert!(t.get_live(&1).is_none());
        assert!(t.touch_live(&1, at(t0, 121)).is_none(), "idle stays idle");
        assert_eq!(t.touch_live(&2, at(t0, 121)), Some(&mut 8));
        assert_eq!(t.get(&1), Some(&7), "an idle entry keeps its value");
        assert_eq!(t.next_expiry(), Some(at(t0, 241)));
        // Comes back: live again, told it had been idle.
        let got = t.touch(&1, at(t0, 500)).unwrap();
        assert!(!got.was_live);
        assert_eq!(*got.value, 7);
        assert_eq!(expired(&mut t, at(t0, 500)), [2]);
        assert_eq!(order(&t), (vec![2], vec![1]));
    }

    #[test]
    fn at_the_cap_the_least_recently_used_idle_entry_goes() {
        let t0 = Instant::now();
        let mut t = Table::new(3, IDLE);
        t.insert(1, 1, t0).unwrap();
        t.insert(2, 2, at(t0, 1)).unwrap();
        t.insert(3, 3, at(t0, 2)).unwrap();
        // All live: a new one is refused, and nothing changes.
        assert_eq!(t.insert(4, 4, at(t0, 3)).err(), Some(4));
        assert_eq!(order(&t), (vec![], vec![1, 2, 3]));
        t.touch(&1, at(t0, 200)); // live still, most recent
        assert_eq!(expired(&mut t, at(t0, 201)), [2, 3]);
        let gone = t.insert(4, 4, at(t0, 203)).unwrap().expect("room made");
        assert_eq!((gone.key, gone.value, gone.was_live), (2, 2, false));
        assert_eq!(order(&t), (vec![3], vec![1, 4]));
        let gone = t.insert(5, 5, at(t0, 204)).unwrap().expect("room made");
        assert_eq!((gone.key, gone.was_live), (3, false));
        assert_eq!(t.insert(6, 6, at(t0, 205)).err(), Some(6));
        assert_eq!(t.len(), 3);
        assert!(t.get(&3).is_none());
    }

    #[test]
    fn a_full_table_reuses_its_slots() {
        let t0 = Instant::now();
        // 50 live at most: room for every new one.
        let mut t = Table::new(100, Duration::from_millis(50));
        for k in 0..100_000u32 {
            let now = t0 + Duration::from_millis(u64::from(k));
            t.expire(now, |_, _| {});
            t.insert(k, 0, now).expect("an idle entry gives way");
            assert!(t.len() <= 100);
        }
        assert_eq!(t.slots.len(), 100);
        assert!(t.slots.capacity() <= 128, "grown only to the cap");
        let (idle, live) = order(&t);
        assert_eq!(idle.len() + live.len(), 100);
        // The last 50 ms are live, the 50 before them remembered.
        assert_eq!(live, (99_950..100_000).collect::<Vec<_>>());
        assert_eq!(idle, (99_900..99_950).collect::<Vec<_>>());
    }

    #[test]
    fn remove_frees_a_slot_for_the_next_insert() {
        let t0 = Instant::now();
        let mut t = Table::new(2, IDLE);
        t.insert(1, 1, t0).unwrap();
        t.insert(2, 2, t0).unwrap();
        assert_eq!(t.remove(&1), Some((1, true)));
        assert_eq!(t.remove(&1), None);
        assert!(
            t.insert(3, 3, t0).unwrap().is_none(),
            "room without eviction"
        );
        assert_eq!(order(&t), (vec![], vec![2, 3]));
        assert_eq!(t.slots.len(), 2);
    }

    #[test]
    fn drain_gives_every_entry() {
        let t0 = Instant::now();
        let mut t = Table::new(4, IDLE);
        t.insert(1, 1, t0).unwrap();
        t.insert(2, 2, at(t0, 200)).unwrap();
        t.expire(at(t0, 200), |_, _| {});
        let mut gone: Vec<(u32, bool)> = t.drain().map(|g| (g.key, g.was_live)).collect();
        gone.sort();
        assert_eq!(gone, [(1, false), (2, true)]);
        assert!(t.is_empty());
        assert!(t.insert(1, 1, t0).unwrap().is_none());
    }

    #[test]
    fn borrowed_keys_find_boxed_ones() {
        let t0 = Instant::now();
        let mut t: Table<Box<[u8]>, u8> = Table::new(4, IDLE);
        t.insert(Box::from(&b"example.org\x00\x35"[..]), 1, t0)
            .unwrap();
        let key: &[u8] = b"example.org\x00\x35";
        assert_eq!(t.get_live(key), Some(&1));
        assert!(t.touch(key, t0).is_some());
    }
}
