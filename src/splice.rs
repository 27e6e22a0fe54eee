//! Kernel pipes a relay moves bytes through with `splice(2)` on Linux, so
//! they go socket → pipe → socket without being copied into the process,
//! and the bounded pool they are lent from.
//!
//! A direction holds a pipe only while bytes are in flight and gives it
//! back once it is empty, as with rings: idle connections hold none, so
//! thousands of them still fit under the descriptor limit. When the pool is
//! spent (or pipes cannot be made), the relay falls back to its rings.
//! Elsewhere than Linux the pool never lends a pipe.

use std::io;

/// What one `splice` call came to.
#[derive(Debug)]
pub enum Spliced {
    /// Bytes moved.
    Moved(usize),
    /// The source sent EOF (only when reading a socket).
    Eof,
    /// Nothing can move now: the source is empty, or the destination full.
    WouldBlock,
    Failed(io::Error),
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Spliced;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// A kernel pipe and the bytes it holds.
    pub struct KernelPipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Bytes spliced in and not yet out.
        pending: usize,
        /// What it can hold (`F_GETPIPE_SZ`).
        pub capacity: usize,
    }

    impl KernelPipe {
        fn new(size: usize) -> io::Result<KernelPipe> {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors into the array we pass.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just made and are owned by no one else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // A larger pipe is not required: if the system refuses the size
            // (pipe-max-size, a user's pipe page quota), the default stays.
            let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
            // SAFETY: as above.
            let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            Ok(KernelPipe {
                read,
                write,
                pending: 0,
                capacity: usize::try_from(capacity).unwrap_or(4096),
            })
        }

        /// Bytes spliced in and not yet out.
        pub fn pending(&self) -> usize {
            self.pending
        }

        /// Moves up to the pipe's free room from socket `src` into it.
        pub fn fill_from(&mut self, src: RawFd) -> Spliced {
            let room = self.capacity.saturating_sub(self.pending);
            if room == 0 {
                return Spliced::WouldBlock;
            }
            match splice(src, self.write.as_raw_fd(), room) {
                Spliced::Moved(0) => Spliced::Eof,
                Spliced::Moved(n) => {
                    self.pending += n;
                    Spliced::Moved(n)
                }
                other => other,
            }
        }

        /// Moves what the pipe holds to socket `dst`.
        pub fn flush_to(&mut self, dst: RawFd) -> Spliced {
            if self.pending == 0 {
                return Spliced::WouldBlock;
            }
            match splice(self.read.as_raw_fd(), dst, self.pending) {
                // Only a read of an empty pipe returns 0, and it is not empty.
                Spliced::Moved(0) => Spliced::WouldBlock,
                Spliced::Moved(n) => {
                    self.pending -= n;
                    Spliced::Moved(n)
                }
                other => other,
            }
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> Spliced {
        loop {
            let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
            // SAFETY: both descriptors are open for the call's duration; no
            // offsets (sockets and pipes have none).
            let n = unsafe {
                libc::splice(
                    from,
                    std::ptr::null_mut(),
                    to,
                    std::ptr::null_mut(),
                    len,
                    flags,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                return Spliced::Moved(n);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Spliced::WouldBlock,
                _ => return Spliced::Failed(e),
            }
        }
    }

    /// Pipes lent to relays, at most `max` at a time; empty ones are kept
    /// for reuse, up to `keep`.
    pub struct PipePool {
        /// Boxed: a direction holds an `Option<Box<KernelPipe>>`, one word,
        /// and the boxes are reused with their pipes.
        #[allow(clippy::vec_box)]
        free: Vec<Box<KernelPipe>>,
        lent: usize,
        max: usize,
        keep: usize,
        size: usize,
        /// Making a pipe failed (descriptors or memory short): no more are
        /// tried until one is given back.
        starved: bool,
    }

    impl PipePool {
        /// A pool lending no pipe: relays use rings only.
        pub fn none() -> PipePool {
            PipePool::new(0, 0, 0)
        }

        /// Up to `max` pipes of `size` bytes (as the system allows).
        pub fn new(max: usize, keep: usize, size: usize) -> PipePool {
            PipePool {
                free: Vec::new(),
                lent: 0,
                max,
                keep,
                size,
                starved: false,
            }
        }

        /// Pipes lent now.
        pub fn lent(&self) -> usize {
            self.lent
        }

        /// The most it lends at once.
        pub fn max(&self) -> usize {
            self.max
        }

        /// Descriptors the pool holds, lent or kept.
        pub fn descriptors(&self) -> usize {
            2 * (self.lent + self.free.len())
        }

        /// A pipe, or `None` when the pool is spent.
        pub fn take(&mut self) -> Option<Box<KernelPipe>> {
            if self.lent >= self.max {
                return None;
            }
            let pipe = match self.free.pop() {
                Some(p) => p,
                None if self.starved => return None,
                None => match KernelPipe::new(self.size) {
                    Ok(p) => Box::new(p),
                    Err(e) => {
                        log::warn!("cannot make a pipe for splice ({e}): relaying through buffers");
                        self.starved = true;
                        return None;
                    }
                },
            };
            self.lent += 1;
            Some(pipe)
        }

        /// Takes a pipe back. One still holding bytes (its direction ended
        /// early) is closed: they cannot be taken out again.
        pub fn give(&mut self, pipe: Box<KernelPipe>) {
            self.lent -= 1;
            self.starved = false;
            if pipe.pending == 0 && self.free.len() < self.keep {
                self.free.push(pipe);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Spliced;

    /// Never made: only Linux splices.
    pub enum KernelPipe {}

    impl KernelPipe {
        pub fn pending(&self) -> usize {
            match *self {}
        }
        pub fn fill_from(&mut self, _: i32) -> Spliced {
            match *self {}
        }
        pub fn flush_to(&mut self, _: i32) -> Spliced {
            match *self {}
        }
    }

    pub struct PipePool;

    impl PipePool {
        pub fn none() -> PipePool {
            PipePool
        }
        pub fn new(_max: usize, _keep: usize, _size: usize) -> PipePool {
            PipePool
        }
        pub fn lent(&self) -> usize {
            0
        }
        pub fn max(&self) -> usize {
            0
        }
        pub fn descriptors(&self) -> usize {
            0
        }
        pub fn take(&mut self) -> Option<Box<KernelPipe>> {
            None
        }
        #[allow(clippy::boxed_local)] // the same signature as on Linux
        pub fn give(&mut self, pipe: Box<KernelPipe>) {
            match *pipe {}
        }
    }
}

pub use imp::{KernelPipe, PipePool};

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn bytes_go_socket_to_pipe_to_socket() {
        let (mut from_peer, from) = pair();
        let (to, mut to_peer) = pair();
        let mut pool = PipePool::new(2, 1, 64 * 1024);
        let mut p = pool.take().unwrap();
        assert!(p.capacity >= 4096);
        assert!(matches!(p.fill_from(from.as_raw_fd()), Spliced::WouldBlock));
        from_peer.write_all(b"hello").unwrap();
        // The bytes may take a moment to cross loopback.
        let n = loop {
            match p.fill_from(from.as_raw_fd()) {
                Spliced::Moved(n) => break n,
                Spliced::WouldBlock => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!((n, p.pending()), (5, 5));
        assert!(matches!(p.flush_to(to.as_raw_fd()), Spliced::Moved(5)));
        assert_eq!(p.pending(), 0);
        let mut got = [0; 5];
        to_peer.set_nonblocking(false).unwrap();
        to_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(from_peer);
        let eof = loop {
            match p.fill_from(from.as_raw_fd()) {
                Spliced::WouldBlock => std::thread::yield_now(),
                other => break other,
            }
        };
        assert!(matches!(eof, Spliced::Eof), "{eof:?}");
        pool.give(p);
        assert_eq!(
            (pool.lent(), pool.descriptors()),
            (0, 2),
            "an empty pipe is kept"
        );
    }

    #[test]
    fn the_pool_lends_at_most_max_and_closes_pipes_that_hold_bytes() {
        let (mut from_peer, from) = pair();
        let mut pool = PipePool::new(1, 4, 4096);
        let mut p = pool.take().unwrap();
        assert!(pool.take().is_none(), "spent");
        from_peer.write_all(b"x").unwrap();
        while !matches!(p.fill_from(from.as_raw_fd()), Spliced::Moved(1)) {
            std::thread::yield_now();
        }
        pool.give(p);
        assert_eq!(pool.descriptors(), 0, "a pipe with bytes in it is closed");
        assert!(pool.take().is_some());
    }

    #[test]
    fn a_reset_source_is_a_failure() {
        let (from_peer, from) = pair();
        socket2::SockRef::from(&from_peer)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(from_peer);
        let mut pool = PipePool::new(1, 1, 4096);
        let mut p = pool.take().unwrap();
        let r = loop {
            match p.fill_from(from.as_raw_fd()) {
                Spliced::WouldBlock => std::thread::yield_now(),
                other => break other,
            }
        };
        match r {
            Spliced::Failed(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
        pool.give(p);
    }
}
