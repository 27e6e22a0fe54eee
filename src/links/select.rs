//! Which link a new connection (or UDP destination) takes: by smooth
//! weighted round robin over the given weights, or by learned capacity with
//! the round robin as tie-break (see [`crate::balance`]). Also the meters
//! that learn the capacities.

use std::net::IpAddr;
use std::time::Instant;

use super::{Link, Links, State, Tried};
use crate::balance::{Seen, Strategy};
use crate::learned;
use crate::wrr::Selector;

impl Links {
    /// Balances by `strategy`, starting from the capacities learned in
    /// earlier runs (`seeds`), for the links there are and those to come.
    pub fn balancing(mut self, strategy: Strategy, seeds: Vec<learned::Entry>) -> Links {
        self.balance.strategy = strategy;
        self.seeds = seeds;
        for i in 0..self.links.len() {
            self.seed(i);
        }
        self
    }

    pub fn strategy(&self) -> Strategy {
        self.balance.strategy
    }

    fn seed(&mut self, i: usize) {
        if let Some(c) = learned::lookup(&self.seeds, &self.links[i].label()) {
            self.balance.seed(i, c);
        }
    }

    /// One selector per family over the links there are now.
    pub(super) fn reselect(&mut self) {
        let family = |v6: bool| {
            Selector::new(
                self.links
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.ipv6 == v6 && l.proxy.is_none())
                    .map(|(i, l)| (i, l.weight)),
            )
        };
        (self.v4, self.v6) = (family(false), family(true));
        self.routes = Links::route_selector(&self.links);
        let known = self.balance.len();
        self.balance.resize(self.links.len());
        for i in known..self.links.len() {
            self.seed(i);
        }
    }

    /// The link the next connection to `remote` takes, among those not in
    /// `tried`: an up link by the balancing strategy, or a down one whose
    /// backoff has passed (it becomes the trial). When none is up, a down
    /// link is tried all the same: failing early would not help the client.
    pub fn pick(&mut self, remote: IpAddr, tried: Tried, now: Instant) -> Option<usize> {
        let links = &mut self.links;
        let ipv6 = remote.is_ipv6();
        let untried =
            |i: usize, l: &Link| tried & (1 << i) == 0 && l.ipv6 == ipv6 && l.ip.is_some();
        // A down link whose wait is over gets its trial first.
        if let Some(i) = (0..links.len()).find(|&i| {
            untried(i, &links[i])
                && matches!(links[i].state, State::Down { retry_at, .. } if retry_at <= now)
        }) {
            let State::Down { backoff, .. } = links[i].state else {
                unreachable!()
            };
            links[i].state = State::Trial { backoff };
            log::info!("link {} trial", links[i].label());
            return Some(i);
        }
        self.next_up(ipv6, now, |i, l| untried(i, l) && l.state == State::Up)
            .or_else(|| {
                let links = &self.links;
                // None up: the down link that comes back first (a link on
                // trial already has its one connection).
                (0..links.len())
                    .filter(|&i| untried(i, &links[i]))
                    .filter_map(|i| match links[i].state {
                        State::Down { retry_at, .. } => Some((retry_at, i)),
                        _ => None,
                    })
                    .min()
                    .map(|(_, i)| i)
            })
    }

    /// The link a new UDP destination is routed through: an up link by the
    /// balancing strategy, else any link of the family with an address.
    /// Datagrams say nothing of a link's health, so no trial is started.
    pub fn pick_for_datagrams(&mut self, remote: IpAddr, now: Instant) -> Option<usize> {
        let ipv6 = remote.is_ipv6();
        let usable = |l: &Link| l.ipv6 == ipv6 && l.ip.is_some();
        self.next_up(ipv6, now, |_, l| usable(l) && l.state == State::Up)
            .or_else(|| self.links.iter().position(usable))
    }

    /// The next of the family's links that `eligible` accepts, by the
    /// strategy; counted as placed on it.
    fn next_up(
        &mut self,
        ipv6: bool,
        now: Instant,
        eligible: impl Fn(usize, &Link) -> bool,
    ) -> Option<usize> {
        let links = &self.links;
        let balance = &mut self.balance;
        let selector = if ipv6 { &mut self.v6 } else { &mut self.v4 };
        let ok = |&i: &usize| eligible(i, &links[i]);
        let i = match balance.strategy {
            Strategy::Weights => selector.next_where(ok)?,
            Strategy::Learn => {
                for (i, l) in links.iter().enumerate() {
                    balance.failures(i, l.stats.failures, now);
                }
                // The best learned capacity among the links that may take
                // this connection (a faster link that is down, or already
                // tried, sets no standard for the others).
                let family = (0..links.len()).filter(|&i| {
                    links[i].ipv6 == ipv6 && links[i].proxy.is_none() && eligible(i, &links[i])
                });
                let unknown = balance.unknown(family);
                // What may be busy: connections and associations, and
                // the UDP destinations live on the link.
                let open = |i: usize| links[i].stats.open + links[i].stats.udp_pinned;
                balance.pick(selector, |i| ok(&i), open, unknown, now)?
            }
        };
        balance.placed(i, now);
        Some(i)
    }

    /// A connection tagged `seen` relayed `up` and `down` bytes through
    /// link `i`, `now`.
    pub fn carried(&mut self, i: usize, up: u64, down: u64, seen: &mut Seen, now: Instant) {
        self.add_bytes(i, up, down);
        self.balance.carried(i, seen, up + down, now);
    }

    /// A UDP destination tagged `seen`, placed on link `i`, answered with
    /// `bytes`: it counts on the link as a busy connection does (the bytes
    /// are counted by [`Links::datagram_down`]).
    pub fn answered(&mut self, i: usize, seen: &mut Seen, bytes: usize, now: Instant) {
        self.balance.carried(i, seen, bytes as u64, now);
    }

    /// `bytes` went to a UDP destination tagged `seen` on link `i`: they
    /// count towards its being busy once it answered (not before: sending
    /// is no answer).
    pub fn sent(&mut self, i: usize, seen: &mut Seen, bytes: u64) {
        self.balance.sent(i, seen, bytes);
    }

    /// Ends a measuring period (call about once a second).
    pub fn sample(&mut self, now: Instant) {
        let totals = self
            .links
            .iter()
            .map(|l| l.stats.bytes_up + l.stats.bytes_down);
        self.balance.sample(totals, now);
    }

    /// The capacity learned for link `i` (bytes/s), if any yet.
    pub fn learned(&self, i: usize) -> Option<f64> {
        self.balance.meter(i).capacity()
    }

    /// What is learned of every link with an address (its label names
    /// it), for the state file.
    pub fn learned_entries(&self) -> Vec<learned::Entry> {
        (0..self.links.len())
            .filter(|&i| self.links[i].ip.is_some())
            .filter_map(|i| {
                Some(learned::Entry {
                    label: self.links[i].label(),
                    capacity: self.learned(i)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkSpec;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn links(specs: &[(&str, u32)], strategy: Strategy, seeds: &[(&str, f64)]) -> Links {
        let specs = specs
            .iter()
            .map(|&(ip, w)| LinkSpec {
                ip: ip.parse().unwrap(),
                weight: NonZeroU32::new(w).unwrap(),
                iface: None,
                follow: false,
            })
            .collect();
        let seeds = seeds
            .iter()
            .map(|&(label, capacity)| learned::Entry {
                label: label.into(),
                capacity,
            })
            .collect();
        Links::new(specs, &[], false).balancing(strategy, seeds)
    }

    fn target() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn picks(l: &mut Links, n: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..n).map(|_| l.pick(target(), 0, now).unwrap()).collect()
    }

    #[test]
    fn weights_keep_their_exact_sequence() {
        let mut l = links(
            &[("10.0.0.1", 2), ("10.0.0.2", 1)],
            Strategy::Weights,
            &[("10.0.0.2", 1e9)],
        );
        assert_eq!(picks(&mut l, 6), [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn learning_with_nothing_learned_rotates() {
        let mut l = links(&[("10.0.0.1", 1), ("10.0.0.2", 1)], Strategy::Learn, &[]);
        assert_eq!(picks(&mut l, 4), [0, 1, 0, 1]);
    }

    #[test]
    fn learned_capacities_place_a_burst_of_connections() {
        let mut l = links(
            &[("10.1.0.2", 1), ("10.2.0.2", 1), ("10.3.0.2", 1)],
            Strategy::Learn,
            &[
                ("10.1.0.2", 1_200_000.0),
                ("10.2.0.2", 1_200_000.0),
                ("10.3.0.2", 400_000.0),
            ],
        );
        let got = picks(&mut l, 14);
        let per: Vec<usize> = (0..3)
            .map(|i| got.iter().filter(|&&p| p == i).count())
            .collect();
        assert_eq!(per, [6, 6, 2], "{got:?}");
    }

    #[test]
    fn a_link_not_learned_yet_counts_as_the_best() {
        let mut l = links(
            &[("10.0.0.1", 1), ("10.0.0.2", 1)],
            Strategy::Learn,
            &[("10.0.0.1", 500_000.0)],
        );
        assert_eq!(picks(&mut l, 4), [0, 1, 0, 1]);
    }

    #[test]
    fn a_link_whose_connects_fail_keeps_its_turns() {
        let mut l = links(&[("10.0.0.1", 1), ("10.0.0.2", 1)], Strategy::Learn, &[]);
        let now = Instant::now();
        let got: Vec<usize> = (0..5)
            .map(|_| {
                let i = l.pick(target(), 0, now).unwrap();
                if i == 0 {
                    // A short exchange, over before the next pick.
                    let mut seen = Seen::default();
                    l.connected(0);
                    l.carried(0, 10, 100, &mut seen, now);
                    l.closed(0);
                } else {
                    l.failed(1, &"timed out", now);
                }
                i
            })
            .collect();
        assert_eq!(got, [0, 1, 0, 1, 0], "tried in its turn, so found out");
    }

    #[test]
    fn datagrams_go_by_capacity_too() {
        let mut l = links(
            &[("10.0.0.1", 1), ("10.0.0.2", 1)],
            Strategy::Learn,
            &[("10.0.0.1", 300_000.0), ("10.0.0.2", 100_000.0)],
        );
        let got: Vec<usize> = (0..8)
            .map(|_| l.pick_for_datagrams(target(), Instant::now()).unwrap())
            .collect();
        assert_eq!(got.iter().filter(|&&i| i == 0).count(), 6, "{got:?}");
    }

    /// A BitTorrent client sends to hundreds of peers that never answer:
    /// the links are judged by the destinations that do.
    #[test]
    fn destinations_that_answer_count_and_silent_ones_do_not() {
        let mut l = links(
            &[("10.0.0.1", 1), ("10.0.0.2", 1)],
            Strategy::Learn,
            &[("10.0.0.1", 1e6), ("10.0.0.2", 1e6)],
        );
        let t = Instant::now();
        l.sample(t);
        let mut dests: Vec<(usize, Seen)> = (0..20)
            .map(|_| {
                let i = l.pick_for_datagrams(target(), Instant::now()).unwrap();
                l.pin(i, true);
                (i, Seen::default())
            })
            .collect();
        // Those on link 0 answer, in this period and the next; those on
        // link 1 are dead.
        for s in 1..=2u32 {
            for (i, seen) in dests.iter_mut().filter(|(i, _)| *i == 0) {
                l.answered(*i, seen, 4096, t);
            }
            if s == 1 {
                l.sample(t + Duration::from_secs(1));
            }
        }
        assert_eq!(dests.iter().filter(|(i, _)| *i == 0).count(), 10);
        // Link 1 carries nothing live: the next ten go there.
        let got: Vec<usize> = (0..10)
            .map(|_| l.pick_for_datagrams(target(), Instant::now()).unwrap())
            .collect();
        assert_eq!(got, [1; 10]);
    }

    #[test]
    fn busy_links_are_learned_from_what_they_carry() {
        let mut l = links(&[("10.0.0.1", 1), ("10.0.0.2", 1)], Strategy::Learn, &[]);
        // Two connections a link (one alone gives no first estimate).
        let mut seen = [[Seen::default(); 2]; 2];
        let t = Instant::now();
        l.sample(t);
        for s in 1..=4u32 {
            for (link, rate) in [(0, 1_000_000), (1, 250_000)] {
                let [a, b] = &mut seen[link];
                l.carried(link, 0, rate / 2, a, t);
                l.carried(link, 0, rate / 2, b, t);
            }
            l.sample(t + s * Duration::from_secs(1));
        }
        assert_eq!(l.learned(0), Some(1_000_000.0));
        assert_eq!(l.learned(1), Some(250_000.0));
        let entries = l.learned_entries();
        assert_eq!(entries[1].label, "10.0.0.2");
        assert_eq!(entries[1].capacity, 250_000.0);
    }
}
