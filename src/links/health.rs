//! Link health from evidence (see [`crate::evidence`]): what a connect
//! through a link showed of it, and which links can reach a target.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Links, State, FAILURES_TO_DOWN, FIRST_BACKOFF, MAX_BACKOFF};
use crate::reach::{self, LinkView, Reach};

impl Links {
    /// The system cannot send through link `i` at all (no route through its
    /// device, its address or device gone): down at once.
    pub fn broken(&mut self, i: usize, reason: &dyn fmt::Display, now: Instant) {
        self.refresh = true;
        let link = &mut self.links[i];
        link.stats.failures += 1;
        link.failures_in_row += 1;
        let backoff = match link.state {
            State::Trial { backoff } => (backoff * 2).min(MAX_BACKOFF),
            State::Up => FIRST_BACKOFF,
            State::Down { .. } => return,
        };
        link.state = State::Down {
            retry_at: now + backoff,
            backoff,
        };
        log::info!("link {} down: {reason}", link.label());
    }

    /// Link `i` stayed silent to a target another link reached: evidence
    /// against it, [`FAILURES_TO_DOWN`] in a row and it is down.
    pub fn failed(&mut self, i: usize, reason: &dyn fmt::Display, now: Instant) {
        self.refresh = true;
        let link = &mut self.links[i];
        link.stats.failures += 1;
        link.failures_in_row += 1;
        let backoff = match link.state {
            State::Trial { backoff } => (backoff * 2).min(MAX_BACKOFF),
            State::Up if link.failures_in_row >= FAILURES_TO_DOWN => FIRST_BACKOFF,
            _ => return,
        };
        link.state = State::Down {
            retry_at: now + backoff,
            backoff,
        };
        log::info!("link {} down: {reason}", link.label());
    }

    /// A connection gave up while its attempt through link `i` was in flight.
    pub fn abandoned(&mut self, i: usize, now: Instant) {
        let link = &mut self.links[i];
        if let State::Trial { backoff } = link.state {
            // Undecided: let the next connection make the trial.
            link.state = State::Down {
                retry_at: now,
                backoff,
            };
        }
    }

    /// The target refused (or the like): the link itself works.
    pub fn reached(&mut self, i: usize) {
        let link = &mut self.links[i];
        link.failures_in_row = 0;
        if link.state != State::Up {
            link.state = State::Up;
            log::info!("link {} up", link.label());
        }
    }

    /// Which links can reach `target`, by the interfaces last read.
    pub fn reach(&self, target: SocketAddr) -> Reach {
        let views = self.links.iter().map(|l| LinkView {
            ip: l.ip,
            iface: l.iface.as_deref(),
            ipv6: l.ipv6,
        });
        reach::decide(target, &self.ifaces, views)
    }
}
