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
    /// How long `getaddrinfo` took.
    pub took: Duration,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    idle: usize,
    threads: usize,
    closed: bool,
}

/// What a thread runs for a name: `getaddrinfo`, or a stand-in in tests.
pub type Lookup = Arc<dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync>;

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    min: usize,
    idle_exit: Duration,
    lookup: Lookup,
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

    /// Starts `min` threads running `getaddrinfo`; at most `max` will run.
    pub fn new(min: usize, max: usize, waker: Arc<Waker>) -> io::Result<Pool> {
        Pool::with_lookup(min, max, Pool::IDLE_EXIT, waker, Arc::new(getaddrinfo))
    }

    /// As [`Pool::new`], with threads beyond `min` ending after `idle_exit`
    /// without work, and `lookup` run for each name.
    pub fn with_lookup(
        min: usize,
        max: usize,
        idle_exit: Duration,
        waker: Arc<Waker>,
        lookup: Lookup,
    ) -> io::Result<Pool> {
        let (done_tx, done) = mpsc::channel();
        let min = min.max(1);
        let mut pool = Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                min,
                idle_exit,
                lookup,
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
            let answer = run(work, &shared.lookup);
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
            .wait_timeout(state, shared.idle_exit)
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

fn getaddrinfo(name: &str) -> io::Result<Vec<IpAddr>> {
    (name, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
}

fn run(work: Work, lookup: &Lookup) -> Done {
    if Instant::now() >= work.deadline {
        return Done {
            name: work.name,
            result: Err(Failure::from_io(&io::Error::from(io::ErrorKind::TimedOut))),
            resolved: false,
            took: Duration::ZERO,
        };
    }
    let started = Instant::now();
    let result = lookup(&work.name).map_err(|e| Failure::from_io(&e));
    Done {
        name: work.name,
        result,
        resolved: true,
        took: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::collections::HashSet;

    /// Names starting with "slow" block until `release` is dropped.
    fn gated() -> (Lookup, mpsc::Sender<()>) {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let lookup: Lookup = Arc::new(move |name: &str| {
            if name.starts_with("slow") {
                // Only a disconnect ends the wait (every slow name alike).
                let _ = gate.lock().unwrap().recv();
            }
            Ok(vec![IpAddr::from([192, 0, 2, 1])])
        });
        (lookup, release)
    }

    fn wait_for(poll: &mut Poll, pool: &Pool, n: usize) -> Vec<String> {
        let mut events = Events::with_capacity(8);
        let mut names = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while names.len() < n {
            assert!(Instant::now() < end, "only {names:?} within 10 s");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            while let Some(done) = pool.try_recv() {
                names.push(done.name);
            }
        }
        names
    }

    fn work(name: &str) -> Work {
        Work {
            name: name.into(),
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn slow_names_get_threads_of_their_own_up_to_the_bound_and_extras_exit_when_idle() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (lookup, release) = gated();
        let idle = Duration::from_millis(50);
        let mut pool = Pool::with_lookup(1, 3, idle, waker, lookup).unwrap();
        assert_eq!(pool.threads(), 1);
        pool.submit(work("slow-1"));
        pool.submit(work("slow-2"));
        pool.submit(work("fast-1"));
        assert_eq!(pool.threads(), 3, "a thread per waiting name");
        // Two threads are stuck; the third answers the fast name.
        assert_eq!(wait_for(&mut poll, &pool, 1), vec!["fast-1"]);
        pool.submit(work("slow-3"));
        pool.submit(work("fast-2"));
        assert_eq!(pool.threads(), 3, "never beyond the bound");
        drop(release);
        let rest: HashSet<String> = wait_for(&mut poll, &pool, 4).into_iter().collect();
        let want = ["slow-1", "slow-2", "slow-3", "fast-2"];
        assert_eq!(rest, want.iter().map(|s| s.to_string()).collect());
        let end = Instant::now() + Duration::from_secs(10);
        while pool.threads() > 1 {
            assert!(
                Instant::now() < end,
                "idle threads beyond the first never ended"
            );
            thread::sleep(idle);
        }
    }

    #[test]
    fn work_whose_deadline_passed_in_the_queue_is_not_looked_up() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let lookup: Lookup = Arc::new(|_: &str| panic!("looked up"));
        let mut pool = Pool::with_lookup(1, 1, Pool::IDLE_EXIT, waker, lookup).unwrap();
        pool.submit(Work {
            name: "late.test".into(),
            deadline: Instant::now(),
        });
        let mut events = Events::with_capacity(8);
        let end = Instant::now() + Duration::from_secs(10);
        let done = loop {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if let Some(done) = pool.try_recv() {
                break done;
            }
            assert!(Instant::now() < end, "no answer within 10 s");
        };
        assert!(!done.resolved);
        assert_eq!(done.result.unwrap_err().kind, io::ErrorKind::TimedOut);
    }
}
