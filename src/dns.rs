//! Name resolution off the event loop.
//!
//! `getaddrinfo` blocks, so a few worker threads run it. The loop submits a
//! [`Job`]; a worker resolves it, sends the [`Answer`] back over a channel and
//! wakes the loop through its `mio::Waker`. An answer names the connection by
//! slab key *and* connection id: the loop drops answers whose connection has
//! gone (its key possibly reused by a newer one).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use mio::Waker;

pub struct Job {
    pub key: usize,
    pub id: u64,
    pub host: String,
    pub port: u16,
    /// When the connection stops waiting. A job still queued then is skipped,
    /// so a burst of slow names does not delay the names asked after it.
    pub deadline: Instant,
}

pub struct Answer {
    pub key: usize,
    pub id: u64,
    /// The name asked for (a UDP association asks for several).
    pub host: String,
    pub port: u16,
    pub result: io::Result<Vec<SocketAddr>>,
}

pub struct Resolver {
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
}

impl Resolver {
    /// Starts `threads` workers that wake `waker` after each answer.
    pub fn new(threads: usize, waker: Arc<Waker>) -> io::Result<Resolver> {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (answer_tx, answers) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for n in 0..threads.max(1) {
            let jobs = Arc::clone(&job_rx);
            let answers = answer_tx.clone();
            let waker = Arc::clone(&waker);
            thread::Builder::new()
                .name(format!("dns-{n}"))
                .spawn(move || worker(&jobs, &answers, &waker))?;
        }
        Ok(Resolver {
            jobs: job_tx,
            answers,
        })
    }

    pub fn submit(&self, job: Job) {
        // Workers only stop when this sender is dropped, so this cannot fail
        // while `self` lives.
        let _ = self.jobs.send(job);
    }

    /// The next answer, if one is waiting.
    pub fn try_recv(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, answers: &Sender<Answer>, waker: &Waker) {
    loop {
        // Hold the lock only to take a job, never while resolving.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A job whose connection stopped waiting is answered at once, not
        // resolved: the answer still tells a UDP association to let go of
        // the datagrams it held for the name.
        let result = if Instant::now() >= job.deadline {
            Err(io::Error::from(io::ErrorKind::TimedOut))
        } else {
            (job.host.as_str(), job.port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect())
        };
        let answer = Answer {
            key: job.key,
            id: job.id,
            host: job.host,
            port: job.port,
            result,
        };
        if answers.send(answer).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            log::warn!("DNS worker could not wake the event loop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn resolves_and_wakes_the_loop() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let resolver = Resolver::new(2, waker).unwrap();
        resolver.submit(Job {
            key: 3,
            id: 42,
            host: "127.0.0.1".into(),
            port: 80,
            deadline: Instant::now() + Duration::from_secs(10),
        });
        let mut events = Events::with_capacity(4);
        let mut answer = None;
        for _ in 0..50 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if let Some(a) = resolver.try_recv() {
                answer = Some(a);
                break;
            }
        }
        let answer = answer.expect("an answer within 5 s");
        assert_eq!((answer.key, answer.id), (3, 42));
        assert_eq!(
            answer.result.unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
    }
}
