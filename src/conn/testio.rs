//! An in-memory stream for unit tests of the phases that are generic over
//! [`Stream`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::io::{Ready, Stream};

/// One end of an in-memory connection: what the peer sent (then EOF, a
/// reset or nothing yet), and what was written to the peer, with room
/// for at most `room` unread bytes.
#[derive(Default)]
pub struct Mem {
    pub incoming: VecDeque<u8>,
    /// The peer sent EOF after `incoming`.
    pub eof: bool,
    /// The peer reset after `incoming`, and no call has reported it yet
    /// (with `gone`: the first read or write that does clears it).
    pub reset: bool,
    pub written: Vec<u8>,
    pub room: usize,
    /// Our write side was shut down.
    pub shut: bool,
    /// Writes fail with a reset (the peer is gone).
    pub gone: bool,
    /// Its close will be a reset.
    pub aborted: bool,
    /// A write found no room (or room for part): the socket is full, and
    /// epoll reports it writable again only once the peer reads.
    pub blocked: bool,
}

impl Mem {
    pub fn new(room: usize) -> Mem {
        Mem {
            room,
            ..Mem::default()
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.incoming.extend(bytes);
    }

    /// The peer reads what was written to it.
    #[cfg(test)]
    pub fn drain_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            // A peer that is gone shut both directions: once its reset was
            // reported (to a write), reads give EOF, as on Linux.
            return if self.reset {
                // A peer's reset is reported once; then its socket is shut
                // both ways (as on Linux).
                if self.gone {
                    self.reset = false;
                }
                Err(io::ErrorKind::ConnectionReset.into())
            } else if self.eof || self.gone {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.incoming.len());
        for (b, v) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.gone {
            // The write takes the reset's error: later reads give EOF.
            self.reset = false;
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        assert!(!self.shut, "write after shutdown");
        let n = buf.len().min(self.room - self.written.len());
        self.blocked = n < buf.len();
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Mem {
    fn shutdown_write(&mut self) {
        self.shut = true;
    }

    fn take_error(&self) -> Option<io::Error> {
        None
    }

    fn abort(&mut self) {
        self.aborted = true;
    }
}

/// A peer of the code under test over a [`Mem`], as the fuzz targets play
/// it: what it does raises readiness the way epoll raises it (an edge on
/// each change), and it keeps what it sent (`S`: the bytes, or how far
/// into a stream it got) and what it read.
pub struct MemPeer<S> {
    pub mem: Mem,
    pub ready: Ready,
    pub sent: S,
    /// What it read of what was written to it.
    pub got: Vec<u8>,
    pub eof: bool,
    pub reset: bool,
}

impl<S: Default> MemPeer<S> {
    pub fn new(room: usize) -> MemPeer<S> {
        MemPeer {
            mem: Mem::new(room),
            ready: Ready::BOTH,
            sent: S::default(),
            got: Vec::new(),
            eof: false,
            reset: false,
        }
    }

    /// Sends `bytes` (nothing once it has ended): a readable edge. Whether
    /// it sent them.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.eof || self.reset {
            return false;
        }
        self.mem.send(bytes);
        self.ready.readable = true;
        true
    }

    pub fn send_eof(&mut self) {
        if self.eof || self.reset {
            return;
        }
        self.eof = true;
        self.mem.eof = true;
        self.ready.readable = true;
        self.ready.read_closed = true;
    }

    /// Resets: reads fail after what it had sent, writes fail at once,
    /// and epoll reports an error on both directions.
    pub fn send_reset(&mut self) {
        if self.reset {
            return;
        }
        self.reset = true;
        self.mem.reset = true;
        self.mem.gone = true;
        self.ready = Ready {
            readable: true,
            writable: true,
            read_closed: true,
            error: true,
        };
    }

    /// Reads up to `n` of what was written to it: a writable edge, if a
    /// write had found the socket full (as epoll raises `EPOLLOUT`).
    pub fn read(&mut self, n: usize) {
        let n = n.min(self.mem.written.len());
        self.got.extend(self.mem.written.drain(..n));
        if n > 0 {
            self.room_freed();
        }
    }

    /// Its receive window becomes `room` (never below what is queued: a
    /// window does not unsend): a writable edge if it grew past a full one.
    pub fn set_room(&mut self, room: usize) {
        let grew = room > self.mem.room;
        self.mem.room = room.max(self.mem.written.len());
        if grew {
            self.room_freed();
        }
    }

    fn room_freed(&mut self) {
        if std::mem::take(&mut self.mem.blocked) {
            self.ready.writable = true;
        }
    }
}
