//! Name resolution that never makes one name wait behind another.
//!
//! The loop submits a [`Job`] and later takes [`Answer`]s with
//! [`Resolver::try_recv`]. On the way:
//! - address literals, `localhost` (and `*.localhost`) and hosts-file names
//!   are answered at once, on the loop's thread, without a system call
//!   ([`hosts`]);
//! - a name that failed within [`NEGATIVE_TTL`] gets the same failure again;
//! - a client address with [`PER_CLIENT`] lookups pending is refused;
//! - a name already being looked up is not asked twice: the new asker joins
//!   the lookup in flight ([`lookups`]);
//! - anything else goes to a pool of threads running the blocking
//!   `getaddrinfo`, which grows from [`MIN_THREADS`] to [`MAX_THREADS`] while
//!   lookups wait ([`pool`]) and wakes the loop through its `mio::Waker`.
//!
//! An answer names the connection by slab key *and* connection id: the loop
//! drops answers whose connection has gone (its key possibly reused by a
//! newer one). Successful answers are not cached: getaddrinfo (and nscd or
//! systemd-resolved behind it) do that.

mod hosts;
mod lookups;
mod pool;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use hosts::Hosts;
use lookups::{Admit, Lookups, Waiter};
use pool::{Pool, Work};

/// Threads always running.
pub const MIN_THREADS: usize = 4;
/// Threads at most. A name whose nameserver never answers holds a thread
/// for the resolver's whole timeout (10 s with glibc's defaults), so the
/// bound is well above what one client may hold ([`PER_CLIENT`]): names
/// from working servers still find a thread while many hang.
pub const MAX_THREADS: usize = 128;
/// Lookups one client address may have pending, joined ones included.
pub const PER_CLIENT: usize = 64;
/// How long a name that failed to resolve is answered with that failure.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Failed names remembered at most.
const MAX_FAILED: usize = 4096;

pub struct Job {
    pub key: usize,
    pub id: u64,
    pub host: String,
    pub port: u16,
    /// The client's address, for the cap on its pending lookups.
    pub client: IpAddr,
    /// When the connection stops waiting. A lookup still queued at its
    /// first asker's deadline is skipped (every asker is told it timed out),
    /// so a burst of slow names does not delay the names asked after it;
    /// lookups queue only while all [`MAX_THREADS`] threads are busy.
    pub deadline: Instant,
}

pub struct Answer {
    pub key: usize,
    pub id: u64,
    /// The name asked for, as spelled (a UDP association asks for several).
    pub host: String,
    pub port: u16,
    pub result: io::Result<Vec<SocketAddr>>,
}

/// What the resolver did, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Answered on the loop: address literals, `localhost`, the hosts file.
    pub local: u64,
    /// Handed to the system resolver (`getaddrinfo` in the pool).
    pub system: u64,
    /// Joined a lookup of the same name already in flight.
    pub joined: u64,
    /// Answered with a failure remembered for [`NEGATIVE_TTL`].
    pub negative: u64,
    /// Refused: the client had [`PER_CLIENT`] lookups pending.
    pub refused: u64,
    /// System lookups that failed, or waited past their deadline in the queue.
    pub failed: u64,
    /// How long the system lookups that ran took.
    pub latency: crate::metrics::Histogram,
}

pub struct Resolver {
    pool: Pool,
    lookups: Lookups,
    hosts: Hosts,
    /// Answers given without the pool, and those a finished lookup fanned
    /// out to its waiters, not yet taken.
    ready: VecDeque<Answer>,
    /// Refusals over the cap: when last logged, and how many since.
    refused_logged: Option<Instant>,
    refused: u64,
    stats: Stats,
}

impl Resolver {
    /// Starts the pool, whose threads wake `waker` after each lookup, and
    /// reads the hosts file.
    pub fn new(waker: Arc<Waker>) -> io::Result<Resolver> {
        Resolver::with(MIN_THREADS, crate::sys::hosts_path(), waker)
    }

    /// As [`Resolver::new`] with `min_threads` and another hosts file.
    pub fn with(min_threads: usize, hosts: PathBuf, waker: Arc<Waker>) -> io::Result<Resolver> {
        Ok(Resolver {
            pool: Pool::new(min_threads, MAX_THREADS, waker)?,
            lookups: Lookups::new(PER_CLIENT, NEGATIVE_TTL, MAX_FAILED),
            hosts: Hosts::load(hosts, Instant::now()),
            ready: VecDeque::new(),
            refused_logged: None,
            refused: 0,
            stats: Stats::default(),
        })
    }

    pub fn submit(&mut self, job: Job, now: Instant) {
        self.hosts.refresh(now);
        if let Some(ips) = hosts::answer(&job.host, self.hosts.table()) {
            let port = job.port;
            let addrs = ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
            self.stats.local += 1;
            self.ready.push_back(answer_to(job, Ok(addrs)));
            return;
        }
        let name = job.host.to_ascii_lowercase();
        let (deadline, client) = (job.deadline, job.client);
        let waiter = Waiter {
            key: job.key,
            id: job.id,
            host: job.host,
            port: job.port,
            client,
        };
        match self.lookups.admit(&name, waiter.clone(), now) {
            Admit::Start => {
                self.stats.system += 1;
                self.pool.submit(Work { name, deadline });
            }
            Admit::Joined => self.stats.joined += 1,
            Admit::Failed(failure) => {
                self.stats.negative += 1;
                self.ready.push_back(answer(waiter, Err(failure.to_io())));
            }
            Admit::OverCap => {
                self.stats.refused += 1;
                self.log_refusal(client, now);
                let e = io::Error::other(format!(
                    "{PER_CLIENT} lookups are pending for {client} already"
                ));
                self.ready.push_back(answer(waiter, Err(e)));
            }
        }
    }

    fn log_refusal(&mut self, client: IpAddr, now: Instant) {
        self.refused += 1;
        if self
            .refused_logged
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        log::warn!(
            "client {client} has {PER_CLIENT} name lookups pending: further names are \
             answered as unresolved ({} refused since the last such line; said at most \
             once a minute)",
            self.refused
        );
        self.refused_logged = Some(now);
        self.refused = 0;
    }

    /// Whether an answer is waiting without a wake-up (answered locally, or
    /// left from a lookup whose waiters were not all taken).
    /// Descriptors the lookups may hold at once: each pool thread's
    /// `getaddrinfo` opens a socket to the nameserver, and may read a file
    /// or ask the kernel for the addresses in use beside it.
    pub fn descriptors(&self) -> usize {
        2 * self.pool.threads()
    }

    /// What it did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next answer, if one is waiting.
    pub fn try_recv(&mut self, now: Instant) -> Option<Answer> {
        loop {
            if let Some(a) = self.ready.pop_front() {
                return Some(a);
            }
            let done = self.pool.try_recv()?;
            let failure = done.result.as_ref().err();
            if done.resolved {
                self.stats.latency.observe(done.took);
            }
            self.stats.failed += u64::from(failure.is_some());
            for waiter in self.lookups.finish(&done.name, failure, done.resolved, now) {
                let result = match &done.result {
                    Ok(ips) => Ok(ips
                        .iter()
                        .map(|&ip| SocketAddr::new(ip, waiter.port))
                        .collect()),
                    Err(f) => Err(f.to_io()),
                };
                self.ready.push_back(answer(waiter, result));
            }
        }
    }
}

fn answer(w: Waiter, result: io::Result<Vec<SocketAddr>>) -> Answer {
    Answer {
        key: w.key,
        id: w.id,
        host: w.host,
        port: w.port,
        result,
    }
}

fn answer_to(job: Job, result: io::Result<Vec<SocketAddr>>) -> Answer {
    Answer {
        key: job.key,
        id: job.id,
        host: job.host,
        port: job.port,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    fn job(key: usize, host: &str, client: &str) -> Job {
        Job {
            key,
            id: key as u64 + 100,
            host: host.into(),
            port: 80,
            client: client.parse().unwrap(),
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    #[test]
    fn literals_localhost_and_hosts_names_are_answered_without_a_wakeup() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let path = std::env::temp_dir().join(format!("dispatch-dns-{}", std::process::id()));
        std::fs::write(&path, "192.0.2.7 files.test\n").unwrap();
        let mut resolver = Resolver::with(1, path.clone(), waker).unwrap();
        std::fs::remove_file(&path).unwrap();
        let now = Instant::now();
        resolver.submit(job(1, "127.0.0.1", "10.0.0.1"), now);
        resolver.submit(job(2, "Files.Test", "10.0.0.1"), now);
        resolver.submit(job(3, "x.localhost", "10.0.0.1"), now);
        assert!(resolver.has_ready());
        let got: Vec<(usize, u64, String, Vec<SocketAddr>)> = (0..3)
            .map(|_| {
                let a = resolver.try_recv(now).unwrap();
                (a.key, a.id, a.host, a.result.unwrap())
            })
            .collect();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            got,
            vec![
                (1, 101, "127.0.0.1".into(), vec![addr("127.0.0.1:80")]),
                (2, 102, "Files.Test".into(), vec![addr("192.0.2.7:80")]),
                (
                    3,
                    103,
                    "x.localhost".into(),
                    vec![addr("127.0.0.1:80"), addr("[::1]:80")]
                ),
            ]
        );
        assert!(resolver.try_recv(now).is_none());
        assert_eq!(resolver.stats().local, 3);
        assert_eq!(resolver.stats().system, 0);
    }

    #[test]
    fn a_pool_lookup_wakes_the_loop_and_answers_every_waiter() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let mut resolver = Resolver::with(1, "/nonexistent/hosts".into(), waker).unwrap();
        let now = Instant::now();
        // Not a literal std parses, so it goes to getaddrinfo, which reads
        // it as an IPv4 address without asking any nameserver.
        resolver.submit(job(3, "127.1", "10.0.0.1"), now);
        resolver.submit(job(4, "127.1", "10.0.0.2"), now);
        assert!(!resolver.has_ready());
        let mut events = Events::with_capacity(4);
        let mut answers = Vec::new();
        for _ in 0..50 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            while let Some(a) = resolver.try_recv(Instant::now()) {
                answers.push(a);
            }
            if answers.len() == 2 {
                break;
            }
        }
        assert_eq!(answers.len(), 2, "two answers within 5 s");
        for (a, key) in answers.into_iter().zip([3, 4]) {
            assert_eq!((a.key, a.host.as_str()), (key, "127.1"));
            assert_eq!(a.result.unwrap(), vec!["127.0.0.1:80".parse().unwrap()]);
        }
        // One lookup ran, the second asker joined it.
        let stats = resolver.stats();
        assert_eq!((stats.system, stats.joined, stats.failed), (1, 1, 0));
        assert_eq!(stats.latency.count(), 1);
    }
}
