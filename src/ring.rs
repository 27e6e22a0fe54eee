//! A fixed-capacity byte ring, and the free list rings are borrowed from.
//!
//! The ring exposes its largest contiguous free or filled slice, so a socket
//! reads straight into it and writes straight out of it: no copy in between.
//! When it empties, its indices reset to the start, which keeps the common
//! case (read a chunk, write it all) contiguous.

/// A byte ring of fixed capacity. Never grows.
pub struct Ring {
    buf: Box<[u8]>,
    /// Index of the first filled byte.
    read_at: usize,
    /// Number of filled bytes.
    len: usize,
}

impl Ring {
    pub fn with_capacity(capacity: usize) -> Ring {
        Ring {
            buf: vec![0; capacity].into_boxed_slice(),
            read_at: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    pub fn clear(&mut self) {
        self.read_at = 0;
        self.len = 0;
    }

    /// The largest contiguous run of free space (empty when full).
    pub fn free_slice(&mut self) -> &mut [u8] {
        let cap = self.buf.len();
        if self.len == cap {
            return &mut [];
        }
        let write_at = (self.read_at + self.len) % cap;
        let end = if write_at >= self.read_at {
            cap
        } else {
            self.read_at
        };
        &mut self.buf[write_at..end]
    }

    /// Marks `n` bytes at the start of [`Ring::free_slice`] as filled.
    ///
    /// # Panics
    /// If `n` exceeds the free space.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.len, "commit beyond free space");
        self.len += n;
    }

    /// The largest contiguous run of filled bytes, oldest first.
    pub fn data(&self) -> &[u8] {
        let end = (self.read_at + self.len).min(self.buf.len());
        &self.buf[self.read_at..end]
    }

    /// Drops `n` bytes from the front.
    ///
    /// # Panics
    /// If `n` exceeds [`Ring::len`].
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len, "consume beyond filled bytes");
        self.len -= n;
        self.read_at = if self.len == 0 {
            0
        } else {
            (self.read_at + n) % self.buf.len()
        };
    }

    /// Copies as much of `bytes` in as fits; returns how much did.
    pub fn push(&mut self, mut bytes: &[u8]) -> usize {
        let mut total = 0;
        while !bytes.is_empty() {
            let free = self.free_slice();
            let n = free.len().min(bytes.len());
            if n == 0 {
                break;
            }
            free[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
            total += n;
        }
        total
    }

    /// Moves the filled bytes to the start so [`Ring::data`] returns all of them.
    pub fn make_contiguous(&mut self) {
        self.buf.rotate_left(self.read_at);
        self.read_at = 0;
    }
}

/// Rings lent to connections that have bytes in flight.
///
/// Idle connections hold no ring: a connection takes one when data arrives
/// and gives it back once drained, so memory follows the bytes in flight,
/// not the number of connections. At most `keep` spare rings are kept.
pub struct RingPool {
    /// Kernel pipes, for relays that splice (Linux); none unless given
    /// with [`RingPool::with_pipes`].
    pub pipes: crate::splice::PipePool,
    free: Vec<Ring>,
    ring_size: usize,
    keep: usize,
    lent: usize,
}

impl RingPool {
    pub fn new(ring_size: usize, keep: usize) -> RingPool {
        RingPool {
            pipes: crate::splice::PipePool::none(),
            free: Vec::new(),
            ring_size,
            keep,
            lent: 0,
        }
    }

    /// The pool also lends kernel pipes from `pipes`.
    pub fn with_pipes(mut self, pipes: crate::splice::PipePool) -> RingPool {
        self.pipes = pipes;
        self
    }

    /// Rings currently held by connections.
    pub fn lent(&self) -> usize {
        self.lent
    }

    pub fn take(&mut self) -> Ring {
        self.lent += 1;
        self.free
            .pop()
            .unwrap_or_else(|| Ring::with_capacity(self.ring_size))
    }

    pub fn give(&mut self, mut ring: Ring) {
        self.lent -= 1;
        if self.free.len() < self.keep {
            ring.clear();
            self.free.push(ring);
        }
    }

    /// Gives `slot`'s ring back if it is empty.
    pub fn give_if_empty(&mut self, slot: &mut Option<Ring>) {
        if slot.as_ref().is_some_and(Ring::is_empty) {
            self.give(slot.take().expect("checked"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(r: &mut Ring, bytes: &[u8]) {
        assert_eq!(r.push(bytes), bytes.len());
    }

    /// Empties `r` in at most two reads of its contiguous data (the run up
    /// to the end of the buffer, then the run from its start): a broken
    /// ring fails here instead of looping for ever.
    fn drain(r: &mut Ring) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..2 {
            let d = r.data().to_vec();
            r.consume(d.len());
            out.extend(d);
        }
        assert!(r.is_empty(), "two reads drain a ring");
        out
    }

    #[test]
    fn new_ring_is_empty_with_all_space_free() {
        let mut r = Ring::with_capacity(8);
        assert!(r.is_empty());
        assert_eq!(r.free_slice().len(), 8);
        assert!(r.data().is_empty());
    }

    #[test]
    fn commit_then_data_then_consume() {
        let mut r = Ring::with_capacity(8);
        r.free_slice()[..3].copy_from_slice(b"abc");
        r.commit(3);
        assert_eq!(r.data(), b"abc");
        r.consume(2);
        assert_eq!(r.data(), b"c");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn consuming_everything_resets_to_start() {
        let mut r = Ring::with_capacity(8);
        fill(&mut r, b"abcdef");
        r.consume(6);
        assert_eq!(r.free_slice().len(), 8, "whole buffer contiguous again");
    }

    #[test]
    fn wraps_around() {
        let mut r = Ring::with_capacity(8);
        fill(&mut r, b"abcdef");
        r.consume(4); // "ef" at 4..6
        assert_eq!(r.free_slice().len(), 2); // 6..8
        fill(&mut r, b"ghij"); // gh at 6..8, ij at 0..2
        assert!(r.len() == 6);
        assert_eq!(r.data(), b"efgh");
        assert_eq!(r.free_slice().len(), 2); // 2..4
        assert_eq!(drain(&mut r), b"efghij");
    }

    #[test]
    fn full_ring_has_no_free_slice() {
        let mut r = Ring::with_capacity(4);
        fill(&mut r, b"wxyz");
        assert!(r.is_full());
        assert!(r.free_slice().is_empty());
        assert_eq!(r.push(b"!"), 0);
    }

    #[test]
    fn make_contiguous_joins_wrapped_data() {
        let mut r = Ring::with_capacity(8);
        fill(&mut r, b"abcdef");
        r.consume(5);
        fill(&mut r, b"ghijk"); // f at 5, gh at 6..8, ijk at 0..3
        assert_eq!(r.data(), b"fgh");
        r.make_contiguous();
        assert_eq!(r.data(), b"fghijk");
        fill(&mut r, b"lm");
        assert_eq!(drain(&mut r), b"fghijklm");
    }

    #[test]
    fn zero_capacity_ring_is_always_full_and_empty() {
        let mut r = Ring::with_capacity(0);
        assert!(r.is_empty() && r.is_full());
        assert_eq!(r.push(b"a"), 0);
    }

    #[test]
    #[should_panic(expected = "commit beyond free space")]
    fn commit_past_free_space_panics() {
        Ring::with_capacity(2).commit(3);
    }

    #[test]
    #[should_panic(expected = "consume beyond filled bytes")]
    fn consume_past_len_panics() {
        Ring::with_capacity(2).consume(1);
    }

    #[test]
    fn pool_reuses_and_caps_spares() {
        let mut pool = RingPool::new(16, 1);
        let mut a = pool.take();
        let b = pool.take();
        assert_eq!(pool.lent(), 2);
        a.push(b"x");
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.lent(), 0);
        assert_eq!(pool.free.len(), 1, "only `keep` spares are kept");
        let c = pool.take();
        assert!(c.is_empty(), "a returned ring comes back cleared");
        assert_eq!(c.capacity(), 16);
    }

    #[test]
    fn give_if_empty_keeps_rings_with_data() {
        let mut pool = RingPool::new(16, 4);
        let mut slot = Some(pool.take());
        slot.as_mut().unwrap().push(b"x");
        pool.give_if_empty(&mut slot);
        assert!(slot.is_some());
        slot.as_mut().unwrap().consume(1);
        pool.give_if_empty(&mut slot);
        assert!(slot.is_none());
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn ring_is_full_only_when_every_byte_is_filled() {
        let mut r = Ring::with_capacity(4);
        assert!(!r.is_full(), "empty");
        fill(&mut r, b"wxy");
        assert!(!r.is_full(), "one byte free");
        fill(&mut r, b"z");
        assert!(r.is_full());
        r.consume(1);
        assert!(!r.is_full(), "after a consume");
    }
}
