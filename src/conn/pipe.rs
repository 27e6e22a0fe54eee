//! One direction of a relay: a ring lent from the pool while bytes are in
//! flight, filled from one stream and flushed to another. The relay
//! ([`super::relay`]) and the HTTP forward exchange ([`super::forward`]) both
//! move their bytes with these.

use std::io::{self, Read, Write};

use super::io::{self as sock, Outcome, Ready, SHORT_IO_DRAINS};
use crate::http;
use crate::ring::{Ring, RingPool};

/// Rounds (one read and one write each way) before a busy connection
/// yields the loop to the others.
pub const MAX_ROUNDS: usize = 16;

/// A socket and what the poller said of it.
pub type Side<'a, S> = (&'a mut S, &'a mut Ready);

/// One direction of the relay.
#[derive(Default)]
pub struct Pipe {
    pub ring: Option<Ring>,
    /// The source sent EOF.
    pub eof: bool,
    /// EOF was passed on: the destination's write side is shut down.
    pub shut: bool,
    /// The source reset: once drained, the destination gets a reset too.
    pub reset: bool,
    /// Payload bytes read from the source.
    pub bytes: u64,
}

impl Pipe {
    /// Bytes read and not yet written.
    pub fn pending(&self) -> usize {
        self.ring.as_ref().map_or(0, Ring::len)
    }

    /// Bytes written on (read, less what waits; what [`Pipe::end`] dropped
    /// counts as written).
    pub fn sent(&self) -> u64 {
        self.bytes.saturating_sub(self.pending() as u64)
    }

    /// A pipe whose ring starts with `bytes` (what a client pipelined behind
    /// its request), counted as read.
    pub fn seeded(bytes: &[u8], pool: &mut RingPool) -> Pipe {
        let mut pipe = Pipe::default();
        if !bytes.is_empty() {
            let ring = pipe.ring.insert(pool.take());
            let n = ring.push(bytes);
            debug_assert_eq!(n, bytes.len(), "a handshake is smaller than a ring");
            pipe.bytes = n as u64;
        }
        pipe
    }

    /// Gives the ring back, whatever it holds.
    pub fn release(&mut self, pool: &mut RingPool) {
        if let Some(ring) = self.ring.take() {
            pool.give(ring);
        }
    }

    /// The destination will take no more: what is left is dropped.
    pub fn end(&mut self, pool: &mut RingPool) {
        self.eof = true;
        self.shut = true;
        self.release(pool);
    }
}

/// Reads from `src` into the pipe's ring until `WouldBlock`, EOF, or the ring
/// is full. Returns whether anything happened.
pub fn fill(
    src: &mut impl Read,
    ready: &mut Ready,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> io::Result<bool> {
    let mut moved = false;
    while ready.readable && !pipe.eof {
        let ring = pipe.ring.get_or_insert_with(|| pool.take());
        let free = ring.free_slice();
        if free.is_empty() {
            break;
        }
        let asked = free.len();
        match sock::read(src, free) {
            Outcome::Continue(n) => {
                ring.commit(n);
                pipe.bytes += n as u64;
                moved = true;
                if n < asked && SHORT_IO_DRAINS && !ready.read_closed {
                    ready.readable = false;
                }
            }
            Outcome::Closed => {
                pipe.eof = true;
                moved = true;
            }
            Outcome::WouldBlock => ready.readable = false,
            Outcome::Reset(e) | Outcome::Error(e) => {
                pool.give_if_empty(&mut pipe.ring);
                return Err(e);
            }
        }
    }
    pool.give_if_empty(&mut pipe.ring);
    Ok(moved)
}

/// Writes the pipe's ring to `dst` until `WouldBlock` or empty. Returns
/// whether anything was written.
pub fn flush(
    dst: &mut impl Write,
    ready: &mut Ready,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> io::Result<bool> {
    send_framed(
        dst,
        ready,
        pipe,
        &mut 0,
        &mut http::Framing::UntilClose,
        pool,
    )
}

/// Writes from the pipe's ring to `dst` until `WouldBlock` or empty: first
/// `verbatim` bytes as they are, then what `framing` says belongs to the
/// current message, and no more (a plain relay frames "until close": all of
/// it). A framing error comes back as `InvalidData`.
pub fn send_framed(
    dst: &mut impl Write,
    ready: &mut Ready,
    pipe: &mut Pipe,
    verbatim: &mut usize,
    framing: &mut http::Framing,
    pool: &mut RingPool,
) -> io::Result<bool> {
    let invalid = |e: http::HttpError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut moved = false;
    while ready.writable {
        let Some(ring) = pipe.ring.as_mut().filter(|r| !r.is_empty()) else {
            break;
        };
        let data = ring.data();
        let allowed = if *verbatim > 0 {
            (*verbatim).min(data.len())
        } else {
            // Ask a copy where the message ends, so nothing past it is written.
            let mut probe = *framing;
            probe.advance(data).map_err(invalid)?
        };
        if allowed == 0 {
            break;
        }
        match sock::write(dst, &data[..allowed]) {
            Outcome::Continue(n) => {
                if *verbatim > 0 {
                    *verbatim -= n;
                } else {
                    framing.advance(&data[..n]).map_err(invalid)?;
                }
                ring.consume(n);
                moved = true;
                // A short write means the send buffer is full.
                if n < allowed && SHORT_IO_DRAINS {
                    ready.writable = false;
                }
            }
            Outcome::WouldBlock => ready.writable = false,
            Outcome::Closed => return Err(io::ErrorKind::WriteZero.into()),
            Outcome::Reset(e) | Outcome::Error(e) => return Err(e),
        }
    }
    pool.give_if_empty(&mut pipe.ring);
    Ok(moved)
}
