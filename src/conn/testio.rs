//! An in-memory stream for unit tests of the phases that are generic over
//! [`Stream`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::io::Stream;

/// One end of an in-memory connection: what the peer sent (then EOF, a
/// reset or nothing yet), and what was written to the peer, with room
/// for at most `room` unread bytes.
#[derive(Default)]
pub struct Mem {
    pub incoming: VecDeque<u8>,
    /// The peer sent EOF after `incoming`.
    pub eof: bool,
    /// The peer reset after `incoming`.
    pub reset: bool,
    pub written: Vec<u8>,
    pub room: usize,
    /// Our write side was shut down.
    pub shut: bool,
    /// Writes fail with a reset (the peer is gone).
    pub gone: bool,
    /// Its close will be a reset.
    pub aborted: bool,
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
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        assert!(!self.shut, "write after shutdown");
        let n = buf.len().min(self.room - self.written.len());
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
