//! Kernel pipes a relay moves bytes through with `splice(2)` on Linux, so
//! they go socket → pipe → socket without being copied into the process,
//! and the bounded pool they are lent from.
//!
//! A direction holds a pipe only while bytes are in flight and gives it
//! back once it is empty, as with rings: idle connections hold none, so
//! thousands of them still fit under the descriptor limit. When the pool is
//! spent (or pipes cannot be made), the relay falls back to its rings.
//! Elsewhere than Linux the pool never lends a pipe.
//!
//! Known limits: splice stops at TCP urgent data's mark and then says
//! `EAGAIN` for good, so a peer that sends urgent data (`MSG_OOB`, which
//! no SOCKS or HTTP client does) in a bulk transfer stalls its own
//! connection until the idle timeout; other connections are not touched.
//! And splicing to a socket the peer reset raises `SIGPIPE` (splice has no
//! `MSG_NOSIGNAL`): Rust programs ignore it from the start, as dispatch
//! does; a host that embeds the reactor must too.

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
    use std::time::{Duration, Instant};

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

    /// Pipes lent to relays, at most `max` at a time and never more
    /// descriptors than the reactor can spare; empty ones are kept for
    /// reuse, up to `keep`, while they are used: see [`PipePool::trim`].
    pub struct PipePool {
        /// Boxed: a direction holds an `Option<Box<KernelPipe>>`, one word,
        /// and the boxes are reused with their pipes.
        #[allow(clippy::vec_box)]
        free: Vec<Box<KernelPipe>>,
        lent: usize,
        max: usize,
        keep: usize,
        size: usize,
        /// Descriptors the pool may hold (see [`PipePool::set_budget`]).
        budget: usize,
        /// Making a pipe failed (descriptors or memory short): none is
        /// tried again before then.
        starved_until: Option<Instant>,
        /// The failure was logged; said again only after a success.
        warned: bool,
        /// The fewest spares since the last trim: the ones at the bottom of
        /// the stack, up to it, were not taken all that time.
        low_water: usize,
        last_trim: Option<Instant>,
    }

    /// How long the pool waits after a pipe could not be made.
    const STARVED_BACKOFF: Duration = Duration::from_secs(1);
    /// Spares not taken for this long are closed.
    pub const SPARE_IDLE: Duration = Duration::from_secs(5);

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
                budget: usize::MAX,
                starved_until: None,
                warned: false,
                low_water: 0,
                last_trim: None,
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

        /// How many descriptors the pool may hold in all: what the open-file
        /// limit leaves once every connection has the descriptors it was
        /// admitted with. A new pipe is made only within it, so splicing
        /// never takes a descriptor a connection counts on.
        pub fn set_budget(&mut self, descriptors: usize) {
            self.budget = descriptors;
            // Spare pipes beyond it are closed.
            while self.descriptors() > self.budget && self.free.pop().is_some() {}
            self.low_water = self.low_water.min(self.free.len());
        }

        /// A pipe, or `None` when the pool is spent.
        pub fn take(&mut self) -> Option<Box<KernelPipe>> {
            if self.lent >= self.max {
                return None;
            }
            let pipe = match self.free.pop() {
                Some(p) => {
                    self.low_water = self.low_water.min(self.free.len());
                    p
                }
                None => self.make()?,
            };
            self.lent += 1;
            Some(pipe)
        }

        fn make(&mut self) -> Option<Box<KernelPipe>> {
            if self.descriptors() + 2 > self.budget {
                return None;
            }
            if let Some(until) = self.starved_until {
                if Instant::now() < until {
                    return None;
                }
                self.starved_until = None;
            }
            match KernelPipe::new(self.size) {
                Ok(p) => {
                    self.warned = false;
                    Some(Box::new(p))
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.warned, true) {
                        log::warn!(
                            "cannot make a pipe for splice ({e}): relaying through buffers, \
                             trying again every {} s",
                            STARVED_BACKOFF.as_secs()
                        );
                    }
                    self.starved_until = Some(Instant::now() + STARVED_BACKOFF);
                    None
                }
            }
        }

        /// Called now and then (the reactor does, once a second): closes
        /// the spares that were not taken for [`SPARE_IDLE`], so that a
        /// burst of transfers leaves no descriptors behind once it is over,
        /// while steady churn keeps reusing its pipes.
        pub fn trim(&mut self, now: Instant) {
            let Some(since) = self.last_trim else {
                self.last_trim = Some(now);
                self.low_water = self.free.len();
                return;
            };
            if now.saturating_duration_since(since) < SPARE_IDLE {
                return;
            }
            let unused = self.low_water.min(self.free.len());
            self.free.drain(..unused);
            self.low_water = self.free.len();
            self.last_trim = Some(now);
        }

        /// Takes a pipe back. One still holding bytes (its direction ended
        /// early) is closed: they cannot be taken out again; so is one the
        /// system made smaller than asked (a user's pipe quota spent), so
        /// that a later one may get the full size.
        pub fn give(&mut self, pipe: Box<KernelPipe>) {
            self.lent -= 1;
            let whole = pipe.capacity >= self.size;
            if pipe.pending == 0 && whole && self.free.len() < self.keep {
                self.free.push(pipe);
            }
        }
    }

    /// Pipes of `size` bytes an unprivileged user may hold before the
    /// kernel makes new ones small (`/proc/sys/fs/pipe-user-pages-soft`,
    /// counted over all of the user's processes), or `None` when no such
    /// limit applies (root, or the file is unreadable).
    pub fn user_pipe_quota(size: usize) -> Option<usize> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return None;
        }
        let pages: usize = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if pages == 0 {
            return None; // 0: no limit
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Some(pages * page / size.max(page))
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
        pub fn set_budget(&mut self, _descriptors: usize) {}
        pub fn trim(&mut self, _now: std::time::Instant) {}
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

/// See the Linux version; elsewhere no pipe is ever made.
#[cfg(not(target_os = "linux"))]
pub fn user_pipe_quota(_size: usize) -> Option<usize> {
    None
}
#[cfg(target_os = "linux")]
pub use imp::user_pipe_quota;

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
    fn no_pipe_is_made_beyond_the_descriptor_budget() {
        let mut pool = PipePool::new(8, 8, 4096);
        pool.set_budget(3);
        let a = pool.take().expect("two descriptors fit in three");
        assert!(pool.take().is_none(), "four do not");
        pool.give(a);
        assert_eq!(pool.descriptors(), 2, "kept for reuse");
        pool.set_budget(0);
        assert_eq!(pool.descriptors(), 0, "spares beyond the budget are closed");
        assert!(pool.take().is_none());
    }

    #[test]
    fn spares_not_taken_for_a_while_are_closed() {
        use super::imp::SPARE_IDLE;
        use std::time::Instant;
        let t0 = Instant::now();
        let mut pool = PipePool::new(4, 4, 4096);
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        pool.give(a);
        pool.give(b);
        pool.trim(t0);
        assert_eq!(pool.descriptors(), 4, "two spares kept");
        // One of them is taken and given back again within the period.
        let c = pool.take().unwrap();
        pool.give(c);
        pool.trim(t0 + SPARE_IDLE / 2);
        assert_eq!(pool.descriptors(), 4, "not yet a whole period");
        pool.trim(t0 + SPARE_IDLE);
        assert_eq!(
            pool.descriptors(),
            2,
            "the unused spare is closed, the used one kept"
        );
        pool.trim(t0 + SPARE_IDLE * 2);
        assert_eq!(pool.descriptors(), 0, "a whole period unused: closed");
        assert!(pool.take().is_some(), "and made again when needed");
    }

    #[test]
    fn a_pipe_smaller_than_asked_is_not_kept() {
        let mut pool = PipePool::new(2, 2, 4096);
        let mut p = pool.take().unwrap();
        p.capacity = 1024; // as if the quota had been spent
        pool.give(p);
        assert_eq!(pool.descriptors(), 0);
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
