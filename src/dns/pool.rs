//! The threads that run the blocking `getaddrinfo`.
//!
//! A few threads always run. When lookups wait and no thread is idle, one
//! more starts, up to a bound, so a name that hangs holds one thread, not
//! the names asked after it. A thread beyond the first few that stays idle
//! for [`Pool::IDLE_EXIT`] ends. Each finished lookup goes back over a
//! channel, and the loop is woken through its `mio::Waker`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use mio::Waker;

use super::lookups::Failure;

/// A name to look up.
pub struct Work {
    pub name: String,
    /// When its first asker stops waiting. Work still queued then is not
    /// looked up.
    pub deadline: Instant,
}

/// A lookup ended.
pub struct Done {
    pub name: String,
    pub result: Result<Vec<IpAddr>, Failure>,
    /// Whether `getaddrinfo` ran (not: skipped, its deadline passed).
    pub resolved: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    idle: usize,
    threads: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    min: usize,
}

pub struct Pool {
    shared: Arc<Shared>,
    max: usize,
    done_tx: Sender<Done>,
    done: Receiver<Done>,
    waker: Arc<Waker>,
    next_name: usize,
}

impl Pool {
    /// How long a thread beyond the first few waits for work before it ends.
    pub const IDLE_EXIT: Duration = Duration::from_secs(30);

    /// Starts `min` threads; at most `max` will run.
    pub fn new(min: usize, max: usize, waker: Arc<Waker>) -> io::Result<Pool> {
        let (done_tx, done) = mpsc::channel();
        let min = min.max(1);
        let mut pool = Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                min,
            }),
            max: max.max(min),
            done_tx,
            done,
            waker,
            next_name: 0,
        };
        for _ in 0..min {
            let shared = Arc::clone(&pool.shared);
            pool.spawn(&mut lock(&shared))?;
        }
        Ok(pool)
    }

    fn spawn(&mut self, state: &mut State) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let done = self.done_tx.clone();
        let waker = Arc::clone(&self.waker);
        self.next_name += 1;
        thread::Builder::new()
            .name(format!("dns-{}", self.next_name))
            .spawn(move || worker(&shared, &done, &waker))?;
        state.threads += 1;
        Ok(())
    }

    pub fn submit(&mut self, work: Work) {
        let shared = Arc::clone(&self.shared);
        let mut state = lock(&shared);
        state.queue.push_back(work);
        if state.idle < state.queue.len() && state.threads < self.max {
            match self.spawn(&mut state) {
                Ok(()) => log::debug!(
                    "{} lookups wait: DNS threads now {}",
                    state.queue.len(),
                    state.threads
                ),
                Err(e) => log::warn!("cannot start a DNS thread ({} running): {e}", state.threads),
            }
        }
        drop(state);
        shared.work.notify_one();
    }

    /// A finished lookup, if one is waiting.
    pub fn try_recv(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Threads running now.
    pub fn threads(&self) -> usize {
        lock(&self.shared).threads
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.work.notify_all();
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A worker never panics while holding the lock; if one did, the queue
    // is still consistent.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(shared: &Shared, done: &Sender<Done>, waker: &Waker) {
    let mut state = lock(shared);
    loop {
        if let Some(work) = state.queue.pop_front() {
            drop(state);
            let answer = run(work);
            if done.send(answer).is_err() {
                break; // the pool is gone
            }
            if let Err(e) = waker.wake() {
                log::warn!("DNS thread could not wake the event loop: {e}");
            }
            state = lock(shared);
            continue;
        }
        if state.closed {
            return exit(state);
        }
        state.idle += 1;
        let (guard, wait) = shared
            .work
            .wait_timeout(state, Pool::IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        state = guard;
        state.idle -= 1;
        if wait.timed_out() && state.queue.is_empty() && state.threads > shared.min {
            return exit(state);
        }
    }
    exit(lock(shared));
}

fn exit(mut state: MutexGuard<'_, State>) {
    state.threads -= 1;
}

fn run(work: Work) -> Done {
    if Instant::now() >= work.deadline {
        return Done {
            name: work.name,
            result: Err(Failure::from_io(&io::Error::from(io::ErrorKind::TimedOut))),
            resolved: false,
        };
    }
    let result = (work.name.as_str(), 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .map_err(|e| Failure::from_io(&e));
    Done {
        name: work.name,
        result,
        resolved: true,
    }
}
