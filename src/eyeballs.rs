//! Happy Eyeballs (RFC 8305) for names the proxy resolves: the order the
//! addresses are tried in, how long to wait before racing the next one, and
//! which address family leads. Pure: no sockets, time passed in.
//!
//! A name with addresses of both families is tried interleaved (§4): one of
//! the leading family, one of the other, and so on. While an attempt is in
//! flight the next one starts after the Connection Attempt Delay (§5), not
//! after the connect timeout, so a family whose packets go nowhere costs a
//! quarter of a second, once. A family that lost a race or failed is
//! demoted for a while ([`DEMOTION`]): the next names lead with the other.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The Connection Attempt Delay when no round-trip time is known (§5).
pub const DEFAULT_DELAY: Duration = Duration::from_millis(250);
/// The delay's bounds (§5: at least 100 ms, at most 2 s).
pub const MIN_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// How long a family that failed, or lost a race it led, stays second.
pub const DEMOTION: Duration = Duration::from_secs(600);

/// `addrs` in the order to try them: families alternating, starting with
/// IPv6 if `v6_first`, each family keeping the resolver's order.
pub fn interleave(addrs: &[SocketAddr], v6_first: bool) -> Vec<SocketAddr> {
    let (mut lead, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == v6_first);
    lead.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !lead.is_empty() || !other.is_empty() {
        out.extend(lead.pop());
        out.extend(other.pop());
    }
    out
}

/// The delay before racing the next attempt: twice the link's smoothed
/// connect time (one round trip) when known, within the RFC's bounds.
pub fn attempt_delay(srtt: Option<Duration>) -> Duration {
    srtt.map_or(DEFAULT_DELAY, |rtt| (rtt * 2).clamp(MIN_DELAY, MAX_DELAY))
}

/// What was learnt of each address family.
#[derive(Debug, Default, Clone, Copy)]
pub struct Families {
    /// Until when each family (IPv4, IPv6) is second.
    demoted_until: [Option<Instant>; 2],
}

impl Families {
    /// Whether IPv6 leads, for a name the resolver listed IPv6-first or not.
    pub fn v6_leads(&self, resolver_v6_first: bool, now: Instant) -> bool {
        let demoted = |v6: bool| self.demoted_until[v6 as usize].is_some_and(|t| now < t);
        match (demoted(resolver_v6_first), demoted(!resolver_v6_first)) {
            (true, false) => !resolver_v6_first,
            _ => resolver_v6_first,
        }
    }

    /// A connection through this family succeeded.
    pub fn succeeded(&mut self, v6: bool) {
        self.demoted_until[v6 as usize] = None;
    }

    /// An attempt of this family failed through no fault of the target, or
    /// lost the race it led.
    pub fn demote(&mut self, v6: bool, now: Instant) {
        self.demoted_until[v6 as usize] = Some(now + DEMOTION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_starting_with_the_leader() {
        let a = addrs(&[
            "[2001:db8::1]:80",
            "[2001:db8::2]:80",
            "192.0.2.1:80",
            "192.0.2.2:80",
        ]);
        assert_eq!(
            interleave(&a, true),
            addrs(&[
                "[2001:db8::1]:80",
                "192.0.2.1:80",
                "[2001:db8::2]:80",
                "192.0.2.2:80"
            ])
        );
        assert_eq!(
            interleave(&a, false),
            addrs(&[
                "192.0.2.1:80",
                "[2001:db8::1]:80",
                "192.0.2.2:80",
                "[2001:db8::2]:80"
            ])
        );
    }

    #[test]
    fn the_longer_family_finishes_the_list_in_order() {
        let a = addrs(&[
            "192.0.2.1:80",
            "[2001:db8::1]:80",
            "192.0.2.2:80",
            "192.0.2.3:80",
        ]);
        assert_eq!(
            interleave(&a, true),
            addrs(&[
                "[2001:db8::1]:80",
                "192.0.2.1:80",
                "192.0.2.2:80",
                "192.0.2.3:80"
            ])
        );
    }

    #[test]
    fn one_family_keeps_the_resolvers_order() {
        let a = addrs(&["192.0.2.3:80", "192.0.2.1:80"]);
        assert_eq!(interleave(&a, true), a);
        assert_eq!(interleave(&a, false), a);
        assert!(interleave(&[], true).is_empty());
    }

    #[test]
    fn delay_is_250_ms_until_a_round_trip_is_known() {
        assert_eq!(attempt_delay(None), DEFAULT_DELAY);
    }

    #[test]
    fn delay_follows_the_round_trip_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(attempt_delay(Some(ms(150))), ms(300));
        assert_eq!(
            attempt_delay(Some(ms(1))),
            MIN_DELAY,
            "a LAN still waits 100 ms"
        );
        assert_eq!(attempt_delay(Some(ms(5000))), MAX_DELAY);
    }

    #[test]
    fn a_demoted_family_stops_leading_until_its_demotion_ends() {
        let now = Instant::now();
        let mut f = Families::default();
        assert!(f.v6_leads(true, now), "the resolver's order by default");
        assert!(!f.v6_leads(false, now));
        f.demote(true, now);
        assert!(!f.v6_leads(true, now), "IPv6 lost: IPv4 leads");
        assert!(!f.v6_leads(true, now + DEMOTION - Duration::from_secs(1)));
        assert!(f.v6_leads(true, now + DEMOTION), "tried first again later");
    }

    #[test]
    fn success_ends_a_demotion() {
        let now = Instant::now();
        let mut f = Families::default();
        f.demote(true, now);
        f.succeeded(true);
        assert!(f.v6_leads(true, now));
    }

    #[test]
    fn both_demoted_keeps_the_resolvers_order() {
        let now = Instant::now();
        let mut f = Families::default();
        f.demote(true, now);
        f.demote(false, now);
        assert!(f.v6_leads(true, now));
        assert!(!f.v6_leads(false, now));
    }
}
