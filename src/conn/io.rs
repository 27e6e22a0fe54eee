//! The one way a connection calls a socket: every read, write, accept and
//! datagram goes through [`attempt`], which retries `Interrupted` and says
//! what happened as an [`Outcome`] (sozu's `SocketResult`, with the reset
//! told apart from other errors so it can be passed on).
//!
//! Readiness is edge-triggered: a socket's [`Ready`] flags stay set until a
//! call shows the socket drained (`WouldBlock`, or on Linux a short read or
//! write: see [`SHORT_IO_DRAINS`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;

/// What one call on a socket did.
#[derive(Debug)]
pub enum Outcome<T = usize> {
    /// It moved this much (for a read, at least one byte: EOF is `Closed`).
    Continue(T),
    /// Nothing to do until the next readiness event.
    WouldBlock,
    /// The peer sent EOF (a read of 0 bytes).
    Closed,
    /// The peer reset or aborted the connection, or it was already gone.
    Reset(io::Error),
    Error(io::Error),
}

/// Runs one socket call, retrying it while interrupted by a signal.
pub fn attempt<T>(mut call: impl FnMut() -> io::Result<T>) -> Outcome<T> {
    loop {
        return match call() {
            Ok(v) => Outcome::Continue(v),
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => Outcome::WouldBlock,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Outcome::Reset(e),
                _ => Outcome::Error(e),
            },
        };
    }
}

/// Reads into `buf` (which must not be empty).
pub fn read(src: &mut impl Read, buf: &mut [u8]) -> Outcome {
    match attempt(|| src.read(buf)) {
        Outcome::Continue(0) => Outcome::Closed,
        other => other,
    }
}

/// Writes from `buf` (which must not be empty).
pub fn write(dst: &mut impl Write, buf: &[u8]) -> Outcome {
    match attempt(|| dst.write(buf)) {
        Outcome::Continue(0) => Outcome::Error(io::ErrorKind::WriteZero.into()),
        other => other,
    }
}

/// On Linux, a read that returns less than asked means the socket's receive
/// queue was empty at that moment; new data, a FIN or an error each raise a
/// new edge-triggered event. So the read that would only say `WouldBlock` can
/// be skipped, one syscall in three on the relay path. (A FIN that arrived
/// before the short read raised no new edge, which is why `read_closed` is
/// tracked.) Elsewhere readiness is only re-armed by `WouldBlock` (mio on
/// Windows), so the drain continues to it. Writes likewise.
pub const SHORT_IO_DRAINS: bool = cfg!(target_os = "linux");

/// What the poller said of one socket, kept until a call shows it drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN (or an error) was reported: read until EOF.
    pub read_closed: bool,
    /// An error was reported; the next call on the socket says which.
    pub error: bool,
}

impl Ready {
    /// Both directions, as for a socket that was just connected.
    pub const BOTH: Ready = Ready {
        readable: true,
        writable: true,
        read_closed: false,
        error: false,
    };

    /// Adds what an event reports. Errors and hang-ups count as both
    /// readable and writable: the next call on the socket reports them.
    pub fn record(&mut self, event: &mio::event::Event) {
        let broken = event.is_error();
        self.error |= broken;
        self.read_closed |= event.is_read_closed() || broken;
        self.readable |= event.is_readable() || self.read_closed;
        self.writable |= event.is_writable() || event.is_write_closed() || broken;
    }
}

/// Forgets a socket about to be dropped. On Linux closing the descriptor
/// takes it out of epoll, so the system call is saved; elsewhere mio wants
/// the deregistration.
pub fn forget(registry: &mio::Registry, source: &mut impl mio::event::Source) {
    if !cfg!(target_os = "linux") {
        let _ = registry.deregister(source);
    }
}

/// A byte stream a connection relays: a TCP socket, or in tests an
/// in-memory one.
pub trait Stream: Read + Write {
    /// Sends EOF (a FIN): the peer reads to the end, then sees it.
    fn shutdown_write(&mut self);
    /// The error the socket holds, if any (`SO_ERROR`).
    fn take_error(&self) -> Option<io::Error>;
    /// Makes its close a reset (RST, `SO_LINGER` 0) rather than an EOF: a
    /// reset from one peer is passed on to the other as a reset.
    fn abort(&mut self);
    /// Its descriptor, where the relay may `splice` to and from it (a TCP
    /// socket on Linux); `None` makes the relay copy through a ring.
    fn splice_fd(&self) -> Option<i32> {
        None
    }
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&mut self) {
        // The peer may already be gone; the other direction reports that.
        let _ = self.shutdown(Shutdown::Write);
    }

    fn take_error(&self) -> Option<io::Error> {
        match mio::net::TcpStream::take_error(self) {
            Ok(e) => e,
            Err(e) => Some(e),
        }
    }

    fn abort(&mut self) {
        let _ = socket2::SockRef::from(&*self).set_linger(Some(std::time::Duration::ZERO));
    }

    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<i32> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// Whether an error is the peer's reset (a write to a socket the peer
/// reset fails with a broken pipe), as opposed to a local failure.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_calls_are_retried() {
        let mut calls = 0;
        let out = attempt(|| {
            calls += 1;
            if calls < 3 {
                Err(io::ErrorKind::Interrupted.into())
            } else {
                Ok(7)
            }
        });
        assert!(matches!(out, Outcome::Continue(7)));
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_read_of_nothing_is_the_peers_eof() {
        let mut empty: &[u8] = &[];
        assert!(matches!(read(&mut empty, &mut [0; 4]), Outcome::Closed));
    }

    #[test]
    fn resets_are_told_from_other_errors() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert!(matches!(
                attempt::<()>(|| Err(kind.into())),
                Outcome::Reset(_)
            ));
        }
        assert!(matches!(
            attempt::<()>(|| Err(io::ErrorKind::WouldBlock.into())),
            Outcome::WouldBlock
        ));
        assert!(matches!(
            attempt::<()>(|| Err(io::ErrorKind::TimedOut.into())),
            Outcome::Error(_)
        ));
    }

    #[test]
    fn a_write_of_nothing_is_an_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(write(&mut Full, b"x"), Outcome::Error(_)));
    }
}
