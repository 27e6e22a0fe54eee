//! Bookkeeping of the lookups handed to the pool, with no I/O and the time
//! passed in: which names are in flight and who waits for each, how many
//! lookups each client address has pending, and which names failed lately.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Who waits for a name: a connection (or a UDP association) and the port
/// it wants, as it spelled the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub key: usize,
    pub id: u64,
    pub host: String,
    pub port: u16,
    pub client: IpAddr,
}

/// Why a lookup failed, kept so every waiter (and the negative cache) can
/// be told; `io::Error` does not clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: io::ErrorKind,
    pub text: String,
}

impl Failure {
    pub fn from_io(e: &io::Error) -> Failure {
        Failure {
            kind: e.kind(),
            text: e.to_string(),
        }
    }

    pub fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.text.clone())
    }
}

/// What to do with a new waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Nobody asks for this name yet: start a lookup.
    Start,
    /// A lookup for it is running; the waiter gets its answer.
    Joined,
    /// The client has its cap of lookups pending: refuse now.
    OverCap,
    /// The name failed a moment ago: answer that again.
    Failed(Failure),
}

pub struct Lookups {
    /// Name (lower case) → who waits for it.
    flight: HashMap<String, Vec<Waiter>>,
    pending: HashMap<IpAddr, usize>,
    per_client: usize,
    /// Name → when its failure expires, and the failure.
    failed: HashMap<String, (Instant, Failure)>,
    /// The same names in the order they expire (one fixed lifetime).
    expiry: VecDeque<(Instant, String)>,
    negative_ttl: Duration,
    max_failed: usize,
}

impl Lookups {
    /// `per_client` lookups pending per client address at most; failures
    /// remembered `negative_ttl`, `max_failed` names at most.
    pub fn new(per_client: usize, negative_ttl: Duration, max_failed: usize) -> Lookups {
        Lookups {
            flight: HashMap::new(),
            pending: HashMap::new(),
            per_client,
            failed: HashMap::new(),
            expiry: VecDeque::new(),
            negative_ttl,
            max_failed,
        }
    }

    /// Registers `waiter` for `name` (already lower case) unless the cap or
    /// the negative cache answers first.
    pub fn admit(&mut self, name: &str, waiter: Waiter, now: Instant) -> Admit {
        self.expire(now);
        if let Some((_, failure)) = self.failed.get(name) {
            return Admit::Failed(failure.clone());
        }
        let pending = self.pending.entry(waiter.client).or_insert(0);
        if *pending >= self.per_client {
            return Admit::OverCap;
        }
        *pending += 1;
        match self.flight.get_mut(name) {
            Some(waiters) => {
                waiters.push(waiter);
                Admit::Joined
            }
            None => {
                self.flight.insert(name.to_string(), vec![waiter]);
                Admit::Start
            }
        }
    }

    /// A lookup ended: returns its waiters and frees their clients' slots.
    /// A failure of a lookup that really ran (`resolved`) is remembered.
    pub fn finish(
        &mut self,
        name: &str,
        failure: Option<&Failure>,
        resolved: bool,
        now: Instant,
    ) -> Vec<Waiter> {
        let waiters = self.flight.remove(name).unwrap_or_default();
        for w in &waiters {
            if let Some(n) = self.pending.get_mut(&w.client) {
                *n -= 1;
                if *n == 0 {
                    self.pending.remove(&w.client);
                }
            }
        }
        if let (Some(failure), true) = (failure, resolved) {
            self.remember(name, failure, now);
        }
        waiters
    }

    fn remember(&mut self, name: &str, failure: &Failure, now: Instant) {
        self.expire(now);
        if self.max_failed == 0 || self.failed.contains_key(name) {
            return;
        }
        if self.failed.len() >= self.max_failed {
            // Full of fresh failures: the oldest goes first.
            if let Some((_, oldest)) = self.expiry.pop_front() {
                self.failed.remove(&oldest);
            }
        }
        let until = now + self.negative_ttl;
        self.failed
            .insert(name.to_string(), (until, failure.clone()));
        self.expiry.push_back((until, name.to_string()));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((until, _)) = self.expiry.front() {
            if *until > now {
                break;
            }
            if let Some((_, name)) = self.expiry.pop_front() {
                self.failed.remove(&name);
            }
        }
    }

    /// Lookups `client` has pending.
    #[cfg(test)]
    pub fn pending(&self, client: IpAddr) -> usize {
        self.pending.get(&client).copied().unwrap_or(0)
    }

    /// Names being looked up.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn waiter(key: usize, client: &str) -> Waiter {
        Waiter {
            key,
            id: key as u64,
            host: "Name.Test".into(),
            port: 80 + key as u16,
            client: client.parse().unwrap(),
        }
    }

    fn nxdomain() -> Failure {
        Failure {
            kind: io::ErrorKind::Other,
            text: "failed to lookup address information".into(),
        }
    }

    #[test]
    fn a_second_waiter_joins_the_lookup_in_flight_and_both_are_answered() {
        let mut l = Lookups::new(8, TTL, 16);
        let t = Instant::now();
        assert_eq!(l.admit("name.test", waiter(1, "10.0.0.1"), t), Admit::Start);
        assert_eq!(
            l.admit("name.test", waiter(2, "10.0.0.2"), t),
            Admit::Joined
        );
        assert_eq!(
            l.admit("other.test", waiter(3, "10.0.0.1"), t),
            Admit::Start
        );
        assert_eq!(l.in_flight(), 2);
        assert_eq!(l.pending("10.0.0.1".parse().unwrap()), 2);
        let done = l.finish("name.test", None, true, t);
        assert_eq!(done, vec![waiter(1, "10.0.0.1"), waiter(2, "10.0.0.2")]);
        assert_eq!(l.pending("10.0.0.1".parse().unwrap()), 1);
        assert_eq!(l.pending("10.0.0.2".parse().unwrap()), 0);
        // Answered: the next asker starts a new lookup (successes are not cached).
        assert_eq!(l.admit("name.test", waiter(4, "10.0.0.2"), t), Admit::Start);
    }

    #[test]
    fn a_client_at_its_cap_is_refused_until_a_lookup_ends() {
        let mut l = Lookups::new(2, TTL, 16);
        let t = Instant::now();
        assert_eq!(l.admit("a.test", waiter(1, "10.0.0.1"), t), Admit::Start);
        assert_eq!(l.admit("a.test", waiter(2, "10.0.0.1"), t), Admit::Joined);
        assert_eq!(l.admit("b.test", waiter(3, "10.0.0.1"), t), Admit::OverCap);
        assert_eq!(l.admit("b.test", waiter(4, "10.0.0.2"), t), Admit::Start);
        l.finish("a.test", None, true, t);
        assert_eq!(l.admit("b.test", waiter(5, "10.0.0.1"), t), Admit::Joined);
    }

    #[test]
    fn a_failure_is_answered_from_the_cache_until_it_expires() {
        let mut l = Lookups::new(8, TTL, 16);
        let t = Instant::now();
        assert_eq!(l.admit("nx.test", waiter(1, "10.0.0.1"), t), Admit::Start);
        l.finish("nx.test", Some(&nxdomain()), true, t);
        let later = t + TTL - Duration::from_millis(1);
        assert_eq!(
            l.admit("nx.test", waiter(2, "10.0.0.1"), later),
            Admit::Failed(nxdomain())
        );
        assert_eq!(l.pending("10.0.0.1".parse().unwrap()), 0);
        assert_eq!(
            l.admit("nx.test", waiter(3, "10.0.0.1"), t + TTL),
            Admit::Start
        );
    }

    #[test]
    fn a_lookup_that_never_ran_is_not_cached() {
        let mut l = Lookups::new(8, TTL, 16);
        let t = Instant::now();
        l.admit("late.test", waiter(1, "10.0.0.1"), t);
        let timed_out = Failure {
            kind: io::ErrorKind::TimedOut,
            text: "timed out".into(),
        };
        l.finish("late.test", Some(&timed_out), false, t);
        assert_eq!(l.admit("late.test", waiter(2, "10.0.0.1"), t), Admit::Start);
    }

    #[test]
    fn the_negative_cache_is_bounded_oldest_out_first() {
        let mut l = Lookups::new(8, TTL, 2);
        let t = Instant::now();
        for (i, name) in ["a.test", "b.test", "c.test"].iter().enumerate() {
            let at = t + Duration::from_millis(i as u64);
            l.admit(name, waiter(i, "10.0.0.1"), at);
            l.finish(name, Some(&nxdomain()), true, at);
        }
        let now = t + Duration::from_millis(3);
        assert_eq!(l.admit("a.test", waiter(7, "10.0.0.1"), now), Admit::Start);
        assert!(matches!(
            l.admit("b.test", waiter(8, "10.0.0.1"), now),
            Admit::Failed(_)
        ));
        assert!(matches!(
            l.admit("c.test", waiter(9, "10.0.0.1"), now),
            Admit::Failed(_)
        ));
    }
}
