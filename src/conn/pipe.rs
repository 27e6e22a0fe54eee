//! One direction of a relay: a ring lent from the pool while bytes are in
//! flight, filled from one stream and flushed to another. The relay
//! ([`super::relay`]) and the HTTP forward exchange ([`super::forward`]) both
//! move their bytes with these.

use std::io::{self, Read, Write};

use super::io::{self as sock, Outcome, Ready, SHORT_IO_DRAINS};
use crate::http;
use crate::ring::{Ring, RingPool};
use crate::splice::{KernelPipe, Spliced};

/// Rounds (one read and one write each way) before a busy connection
/// yields the loop to the others.
pub const MAX_ROUNDS: usize = 16;

/// A socket and what the poller said of it.
pub type Side<'a, S> = (&'a mut S, &'a mut Ready);

/// One direction of the relay. Its bytes in flight are in a ring, or (a
/// plain relay between two sockets on Linux) in a kernel pipe; never both.
#[derive(Default)]
pub struct Pipe {
    pub ring: Option<Ring>,
    pub kernel: Option<Box<KernelPipe>>,
    /// The source sent EOF.
    pub eof: bool,
    /// EOF was passed on: the destination's write side is shut down.
    pub shut: bool,
    /// The source reset: once drained, the destination gets a reset too.
    pub reset: bool,
    /// Payload bytes read from the source.
    pub bytes: u64,
    /// One read brought [`BULK_READ`] bytes or more: a bulk transfer,
    /// which splices from then on (see [`splices`]).
    pub bulk: bool,
}

/// A read this large marks a direction as bulk. Small messages (requests,
/// answers, BitTorrent's chatter) stay in rings, where a short read tells
/// that the socket is drained: two system calls a message, where splice
/// needs four (its `EAGAIN` cannot tell an empty socket from a full pipe).
pub const BULK_READ: usize = 32 * 1024;

impl Pipe {
    /// Bytes read and not yet written.
    pub fn pending(&self) -> usize {
        self.ring.as_ref().map_or(0, Ring::len) + self.kernel.as_ref().map_or(0, |k| k.pending())
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

    /// Gives the ring or pipe back, whatever it holds.
    pub fn release(&mut self, pool: &mut RingPool) {
        if let Some(ring) = self.ring.take() {
            pool.give(ring);
        }
        if let Some(k) = self.kernel.take() {
            pool.pipes.give(k);
        }
    }

    /// The destination will take no more: what is left is dropped.
    pub fn end(&mut self, pool: &mut RingPool) {
        self.eof = true;
        self.shut = true;
        self.release(pool);
    }
}

/// Whether this direction's next bytes go through a kernel pipe: it holds
/// one, or it is a bulk transfer whose ring is empty, both ends are sockets
/// that splice, there is something to read, and the pool lends one.
pub fn splices(
    pipe: &mut Pipe,
    src_ready: &Ready,
    fds: (Option<i32>, Option<i32>),
    pool: &mut RingPool,
) -> bool {
    if pipe.kernel.is_some() {
        return true;
    }
    let (Some(_), Some(_)) = fds else {
        return false;
    };
    if !pipe.bulk || pipe.ring.is_some() || pipe.eof || !src_ready.readable {
        return false;
    }
    pipe.kernel = pool.pipes.take();
    pipe.kernel.is_some()
}

/// Splices from socket `src` into the pipe's kernel pipe until the socket
/// is drained, EOF, or the pipe is full. Returns whether anything happened.
pub fn fill_spliced(src: i32, ready: &mut Ready, pipe: &mut Pipe) -> io::Result<bool> {
    let mut moved = false;
    let Some(k) = pipe.kernel.as_mut() else {
        return Ok(false);
    };
    while ready.readable && !pipe.eof {
        match k.fill_from(src) {
            Spliced::Moved(n) => {
                pipe.bytes += n as u64;
                moved = true;
            }
            Spliced::Eof => {
                pipe.eof = true;
                moved = true;
            }
            Spliced::WouldBlock => {
                // The socket is drained, or the pipe is full: only an
                // empty pipe tells which. Otherwise it is asked again once
                // the pipe has been flushed.
                if k.pending() == 0 {
                    ready.readable = false;
                }
                break;
            }
            Spliced::Failed(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Splices the kernel pipe's bytes out to socket `dst` until it is empty
/// or the socket's buffer is full, then gives an empty pipe back.
pub fn flush_spliced(
    dst: i32,
    ready: &mut Ready,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> io::Result<bool> {
    let mut moved = false;
    if let Some(k) = pipe.kernel.as_mut() {
        while ready.writable && k.pending() > 0 {
            let before = k.pending();
            match k.flush_to(dst) {
                Spliced::Moved(n) => {
                    moved = true;
                    // A short write means the send buffer is full.
                    if n < before && SHORT_IO_DRAINS {
                        ready.writable = false;
                    }
                }
                Spliced::WouldBlock | Spliced::Eof => ready.writable = false,
                Spliced::Failed(e) => {
                    give_if_empty(pipe, pool);
                    return Err(e);
                }
            }
        }
    }
    give_if_empty(pipe, pool);
    Ok(moved)
}

fn give_if_empty(pipe: &mut Pipe, pool: &mut RingPool) {
    if let Some(k) = pipe.kernel.take_if(|k| k.pending() == 0) {
        pool.pipes.give(k);
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
                pipe.bulk |= n >= BULK_READ;
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

#[cfg(test)]
mod tests {
    use super::super::testio::Mem;
    use super::*;

    #[test]
    fn only_a_large_read_marks_a_direction_bulk() {
        let mut pool = RingPool::new(128 * 1024, 1);
        let mut src = Mem::new(0);
        let mut pipe = Pipe::default();
        src.send(&[7; 1000]);
        fill(&mut src, &mut { Ready::BOTH }, &mut pipe, &mut pool).unwrap();
        assert!(!pipe.bulk, "a small message stays in the ring");
        pipe.release(&mut pool);
        src.send(&vec![7; BULK_READ]);
        fill(&mut src, &mut { Ready::BOTH }, &mut pipe, &mut pool).unwrap();
        assert!(pipe.bulk);
        pipe.release(&mut pool);
    }

    #[test]
    fn in_memory_streams_never_splice() {
        let mut pool = RingPool::new(1024, 1);
        let mut pipe = Pipe {
            bulk: true,
            ..Pipe::default()
        };
        assert!(!splices(&mut pipe, &Ready::BOTH, (None, None), &mut pool));
        assert!(pipe.kernel.is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_bulk_direction_splices_once_its_ring_is_empty() {
        let mut pool = RingPool::new(1024, 1).with_pipes(crate::splice::PipePool::new(1, 1, 4096));
        let fds = (Some(0), Some(1)); // (only their presence matters here)
        let mut pipe = Pipe::default();
        assert!(
            !splices(&mut pipe, &Ready::BOTH, fds, &mut pool),
            "not bulk"
        );
        pipe.bulk = true;
        pipe.ring = Some(pool.take());
        assert!(
            !splices(&mut pipe, &Ready::BOTH, fds, &mut pool),
            "ring first"
        );
        pipe.release(&mut pool);
        assert!(splices(&mut pipe, &Ready::BOTH, fds, &mut pool));
        assert_eq!(pool.pipes.lent(), 1);
        pipe.release(&mut pool);
        assert_eq!(pool.pipes.lent(), 0);
    }
}
