//! Smooth weighted round robin, as nginx balances upstreams
//! (`ngx_http_upstream_get_peer`): every pick adds each entry's weight to its
//! running score, takes the highest score, and lowers the winner by the total.
//! Over any window of `total` picks each entry is chosen exactly `weight`
//! times, and the picks are spread out: weights 5 and 1 give `AAABAA`, not
//! `AAAAAB`.

use std::net::IpAddr;
use std::num::NonZeroU32;

struct Entry<T> {
    item: T,
    weight: i64,
    current: i64,
}

/// A weighted round-robin over items of one kind. Deterministic, no I/O.
///
/// ```
/// use std::num::NonZeroU32;
/// use dispatch::wrr::Selector;
///
/// let w = |n| NonZeroU32::new(n).unwrap();
/// let mut links = Selector::new([("eth0", w(2)), ("wlan0", w(1))]);
/// let picks: Vec<_> = (0..6).map(|_| links.next().unwrap()).collect();
/// assert_eq!(picks, ["eth0", "wlan0", "eth0", "eth0", "wlan0", "eth0"]);
/// ```
pub struct Selector<T> {
    entries: Vec<Entry<T>>,
    total: i64,
}

impl<T: Copy> Selector<T> {
    pub fn new(items: impl IntoIterator<Item = (T, NonZeroU32)>) -> Selector<T> {
        let entries: Vec<Entry<T>> = items
            .into_iter()
            .map(|(item, w)| Entry {
                item,
                weight: i64::from(w.get()),
                current: 0,
            })
            .collect();
        let total = entries.iter().map(|e| e.weight).sum();
        Selector { entries, total }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next item, `None` when there are none.
    #[allow(clippy::should_implement_trait)] // never ends: not an Iterator
    pub fn next(&mut self) -> Option<T> {
        let mut best: Option<(usize, i64)> = None;
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.current += e.weight;
            // Ties go to the earlier entry, as in nginx.
            if best.is_none_or(|(_, score)| e.current > score) {
                best = Some((i, e.current));
            }
        }
        let (i, _) = best?;
        let winner = &mut self.entries[i];
        winner.current -= self.total;
        Some(winner.item)
    }
}

/// One selector per address family: IPv4 targets leave from IPv4 addresses,
/// IPv6 targets from IPv6 ones.
pub struct Dispatcher {
    v4: Selector<IpAddr>,
    v6: Selector<IpAddr>,
}

impl Dispatcher {
    pub fn new(targets: impl IntoIterator<Item = (IpAddr, NonZeroU32)>) -> Dispatcher {
        let (v4, v6): (Vec<_>, Vec<_>) = targets.into_iter().partition(|(ip, _)| ip.is_ipv4());
        Dispatcher {
            v4: Selector::new(v4),
            v6: Selector::new(v6),
        }
    }

    fn family(&mut self, ipv6: bool) -> &mut Selector<IpAddr> {
        if ipv6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    /// Whether there is a local address of the family of `remote`.
    pub fn can_reach(&self, remote: IpAddr) -> bool {
        match remote {
            IpAddr::V4(_) => !self.v4.is_empty(),
            IpAddr::V6(_) => !self.v6.is_empty(),
        }
    }

    /// The local address the next connection to `remote` leaves from.
    pub fn pick_for(&mut self, remote: IpAddr) -> Option<IpAddr> {
        self.family(remote.is_ipv6()).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn sequence(weights: &[(char, u32)], picks: usize) -> String {
        let mut s = Selector::new(weights.iter().map(|&(c, n)| (c, w(n))));
        (0..picks).map(|_| s.next().unwrap()).collect()
    }

    #[test]
    fn weights_7_3_interleave() {
        let one_round = sequence(&[('A', 7), ('B', 3)], 10);
        assert_eq!(one_round, "ABAAABAABA");
        // Every round of 10 is the same: exactly 7 and 3, never a run of 7.
        assert_eq!(sequence(&[('A', 7), ('B', 3)], 30), one_round.repeat(3));
    }

    #[test]
    fn weights_5_1() {
        assert_eq!(sequence(&[('A', 5), ('B', 1)], 12), "AAABAAAAABAA");
    }

    #[test]
    fn weights_3_1() {
        assert_eq!(sequence(&[('A', 3), ('B', 1)], 8), "AABAAABA");
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(sequence(&[('A', 1), ('B', 1), ('C', 1)], 7), "ABCABCA");
    }

    #[test]
    fn weights_2_1() {
        assert_eq!(sequence(&[('A', 2), ('B', 1)], 6), "ABAABA");
    }

    #[test]
    fn single_item_always_wins() {
        assert_eq!(sequence(&[('A', 4)], 5), "AAAAA");
    }

    #[test]
    fn empty_selector_gives_none() {
        let mut s: Selector<char> = Selector::new([]);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn dispatcher_keeps_families_apart() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "fd00::1".parse().unwrap();
        let mut d = Dispatcher::new([(a, w(2)), (c, w(1)), (b, w(1))]);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let picks: Vec<_> = (0..3).map(|_| d.pick_for(v4).unwrap()).collect();
        assert_eq!(picks, [a, b, a]);
        assert_eq!(d.pick_for(v6), Some(c));
        assert!(d.can_reach(v6));
        let mut only_v4 = Dispatcher::new([(a, w(1))]);
        assert!(!only_v4.can_reach(v6));
        assert_eq!(only_v4.pick_for(v6), None);
    }
}
