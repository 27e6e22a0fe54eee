//! The links outgoing connections leave by: which one the next connection
//! takes, whether each is healthy, which address it has now, and what it has
//! carried. A plain struct owned by the event loop; no I/O.
//!
//! Health: a link that fails [`FAILURES_TO_DOWN`] times in a row for reasons
//! of its own (see [`crate::net::is_link_failure`]) is marked down and
//! skipped by the selector; after a backoff it gets one trial connection,
//! whose success brings it back up and whose failure doubles the backoff,
//! up to [`MAX_BACKOFF`]. Every transition is logged once.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::eyeballs::Families;
use crate::iface::Interface;
use crate::sys::Device;
use crate::wrr::Selector;

pub const FAILURES_TO_DOWN: u32 = 3;
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Links are tracked per connection attempt in a 64-bit set.
pub const MAX_LINKS: usize = 64;

/// One local address outgoing connections may leave from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub ip: IpAddr,
    pub weight: NonZeroU32,
    /// The interface the address belongs to, when known.
    pub iface: Option<String>,
    /// Given by interface name (or by default): follow the interface's
    /// address when it changes.
    pub follow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    /// Skipped until `retry_at`, then given one trial.
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
    /// One connection is testing the link.
    Trial {
        backoff: Duration,
    },
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Up => "up",
            State::Down { .. } => "down",
            State::Trial { .. } => "trial",
        })
    }
}

/// What a link has carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub open: u64,
    pub total: u64,
    pub failures: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Datagrams sent to UDP destinations through it (their bytes are in
    /// `udp_bytes_up`, and in `bytes_up` too).
    pub udp_up: u64,
    /// Datagrams from UDP destinations relayed back to clients.
    pub udp_down: u64,
    pub udp_bytes_up: u64,
    pub udp_bytes_down: u64,
    /// UDP destinations pinned to it now (live, across associations).
    pub udp_pinned: u64,
}

pub struct Link {
    /// The address now in use; `None` while the interface has none.
    ip: Option<IpAddr>,
    ipv6: bool,
    iface: Option<String>,
    /// Where outgoing sockets are bound, when device binding is on.
    device: Option<Device>,
    /// Device binding applies to this link (its interface may come later).
    bind: bool,
    follow: bool,
    weight: NonZeroU32,
    state: State,
    failures_in_row: u32,
    /// Smoothed time a connect through it takes (about one round trip).
    srtt: Option<Duration>,
    pub stats: Stats,
}

impl Link {
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    pub fn device(&self) -> Option<&Device> {
        self.device.as_ref()
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn weight(&self) -> NonZeroU32 {
        self.weight
    }

    pub fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// Smoothed connect time, once a connection through it was measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// `eth0 192.168.1.5`, or the address alone when no interface is known.
    pub fn label(&self) -> String {
        let ip = self.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        match &self.iface {
            Some(name) => format!("{name} {ip}"),
            None => ip,
        }
    }
}

/// All links, with one selector per address family.
pub struct Links {
    links: Vec<Link>,
    v4: Selector<usize>,
    v6: Selector<usize>,
    /// A link failed: the interfaces should be re-read soon.
    refresh: bool,
    /// Which address family leads when a name has both (Happy Eyeballs).
    pub families: Families,
}

/// A set of link indices (links tried by one connection attempt).
pub type Tried = u64;

impl Links {
    /// # Panics
    /// With more than [`MAX_LINKS`] links (the configuration refuses that).
    pub fn new(specs: Vec<LinkSpec>, devices: &[Interface], bind_device: bool) -> Links {
        assert!(specs.len() <= MAX_LINKS, "at most {MAX_LINKS} links");
        let links: Vec<Link> = specs
            .into_iter()
            .map(|spec| Link {
                ip: Some(spec.ip),
                ipv6: spec.ip.is_ipv6(),
                // Loopback needs no binding, and binding to it would send
                // every other destination into the loopback device.
                bind: spec.iface.is_some() && bind_device && !spec.ip.is_loopback(),
                device: match (&spec.iface, bind_device && !spec.ip.is_loopback()) {
                    (Some(name), true) => device_of(devices, name),
                    _ => None,
                },
                iface: spec.iface,
                follow: spec.follow,
                weight: spec.weight,
                state: State::Up,
                failures_in_row: 0,
                srtt: None,
                stats: Stats::default(),
            })
            .collect();
        let family = |v6: bool| {
            Selector::new(
                links
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.ipv6 == v6)
                    .map(|(i, l)| (i, l.weight)),
            )
        };
        Links {
            v4: family(false),
            v6: family(true),
            links,
            refresh: false,
            families: Families::default(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.links.iter()
    }

    pub fn get(&self, i: usize) -> &Link {
        &self.links[i]
    }

    /// Whether any link of `remote`'s family exists (up or not).
    pub fn can_reach(&self, remote: IpAddr) -> bool {
        self.links.iter().any(|l| l.ipv6 == remote.is_ipv6())
    }

    /// The link the next connection to `remote` takes, among those not in
    /// `tried`: an up link by weighted round robin, or a down one whose
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
        let selector = if ipv6 { &mut self.v6 } else { &mut self.v4 };
        selector
            .next_where(|&i| untried(i, &links[i]) && links[i].state == State::Up)
            .or_else(|| {
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

    /// The link a new UDP destination is routed through: an up link by
    /// weighted round robin, else any link of the family with an address.
    /// Datagrams say nothing of a link's health, so no trial is started.
    pub fn pick_for_datagrams(&mut self, remote: IpAddr) -> Option<usize> {
        let links = &self.links;
        let ipv6 = remote.is_ipv6();
        let usable = |i: usize| links[i].ipv6 == ipv6 && links[i].ip.is_some();
        let selector = if ipv6 { &mut self.v6 } else { &mut self.v4 };
        selector
            .next_where(|&i| usable(i) && links[i].state == State::Up)
            .or_else(|| (0..links.len()).find(|&i| usable(i)))
    }

    /// A connection through link `i` was established.
    pub fn connected(&mut self, i: usize) {
        let link = &mut self.links[i];
        link.failures_in_row = 0;
        link.stats.open += 1;
        link.stats.total += 1;
        if link.state != State::Up {
            link.state = State::Up;
            log::info!("link {} up", link.label());
        }
    }

    /// A connect through link `i` took `rtt` (SYN to SYN-ACK, about one
    /// round trip): smoothed as TCP does (RFC 6298, gain 1/8).
    pub fn observe_connect(&mut self, i: usize, rtt: Duration) {
        let link = &mut self.links[i];
        link.srtt = Some(link.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
    }

    /// Whether some link of the family is up (or on trial) with an address.
    pub fn family_up(&self, ipv6: bool) -> bool {
        self.links
            .iter()
            .any(|l| l.ipv6 == ipv6 && l.ip.is_some() && !matches!(l.state, State::Down { .. }))
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

    /// Whether a link failed since the last call (its address may be gone).
    pub fn take_refresh_request(&mut self) -> bool {
        std::mem::take(&mut self.refresh)
    }

    /// Connecting through link `i` failed for a reason of the link's.
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

    /// A connection through link `i` closed.
    pub fn closed(&mut self, i: usize) {
        let stats = &mut self.links[i].stats;
        stats.open = stats.open.saturating_sub(1);
    }

    /// A UDP association sends through link `i` for the first time: it
    /// counts as a connection until it closes ([`Links::closed`]), but says
    /// nothing of the link's health.
    pub fn associated(&mut self, i: usize) {
        let stats = &mut self.links[i].stats;
        stats.open += 1;
        stats.total += 1;
    }

    /// A datagram of `bytes` went out through link `i`.
    pub fn datagram_up(&mut self, i: usize, bytes: u64) {
        let stats = &mut self.links[i].stats;
        stats.udp_up += 1;
        stats.udp_bytes_up += bytes;
        stats.bytes_up += bytes;
    }

    /// A datagram of `bytes` came in through link `i` and went to a client.
    pub fn datagram_down(&mut self, i: usize, bytes: u64) {
        let stats = &mut self.links[i].stats;
        stats.udp_down += 1;
        stats.udp_bytes_down += bytes;
        stats.bytes_down += bytes;
    }

    /// A UDP destination is pinned to link `i` (`true`), or no longer is.
    pub fn pin(&mut self, i: usize, pinned: bool) {
        let stats = &mut self.links[i].stats;
        if pinned {
            stats.udp_pinned += 1;
        } else {
            stats.udp_pinned = stats.udp_pinned.saturating_sub(1);
        }
    }

    /// Whether link `i` is up with an address: a UDP destination that comes
    /// back after idling is pinned to it again.
    pub fn is_usable(&self, i: usize) -> bool {
        let link = &self.links[i];
        link.state == State::Up && link.ip.is_some()
    }

    pub fn add_bytes(&mut self, i: usize, up: u64, down: u64) {
        let stats = &mut self.links[i].stats;
        stats.bytes_up += up;
        stats.bytes_down += down;
    }

    /// Follows the interfaces as they are now: a link given by interface
    /// name takes the interface's new address when its old one is gone, and
    /// is down while the interface has none. Device indices are refreshed
    /// (an interface that comes back may have a new one).
    pub fn apply_interfaces(&mut self, ifaces: &[Interface], now: Instant) {
        for i in 0..self.links.len() {
            let Some(name) = self.links[i].iface.clone() else {
                continue;
            };
            // The interface may have come back with a new index, or appeared
            // only now (a tether plugged in after start).
            if self.links[i].bind {
                if let Some(fresh) = device_of(ifaces, &name) {
                    self.links[i].device = Some(fresh);
                }
            }
            if !self.links[i].follow {
                continue;
            }
            let ipv6 = self.links[i].ipv6;
            let current = self.links[i].ip;
            let addrs: Vec<IpAddr> = ifaces
                .iter()
                .filter(|f| f.name == name)
                .flat_map(|f| f.usable_addrs())
                .filter(|ip| ip.is_ipv6() == ipv6)
                .collect();
            if current.is_some_and(|ip| addrs.contains(&ip)) {
                continue;
            }
            let in_use: Vec<IpAddr> = self.links.iter().filter_map(|l| l.ip).collect();
            let fresh = addrs.into_iter().find(|ip| !in_use.contains(ip));
            let link = &mut self.links[i];
            match (current, fresh) {
                (Some(old), Some(new)) => {
                    link.ip = Some(new);
                    log::info!("link {name} address changed: {old} -> {new}");
                }
                (Some(_), None) => {
                    log::info!("link {} down: no address", link.label());
                    link.ip = None;
                    link.state = State::Down {
                        retry_at: now + FIRST_BACKOFF,
                        backoff: FIRST_BACKOFF,
                    };
                }
                (None, Some(new)) => {
                    link.ip = Some(new);
                    link.state = State::Up;
                    link.failures_in_row = 0;
                    log::info!("link {} up", link.label());
                }
                (None, None) => {}
            }
        }
    }
}

fn device_of(ifaces: &[Interface], name: &str) -> Option<Device> {
    ifaces.iter().find(|f| f.name == name).map(|f| Device {
        name: f.name.clone(),
        index: f.index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ip: &str, weight: u32, iface: Option<&str>) -> LinkSpec {
        LinkSpec {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::new(weight).unwrap(),
            iface: iface.map(String::from),
            follow: iface.is_some(),
        }
    }

    fn links(specs: Vec<LinkSpec>) -> Links {
        Links::new(specs, &[], false)
    }

    const V4: &str = "192.0.2.1";

    fn target() -> IpAddr {
        V4.parse().unwrap()
    }

    fn picks(l: &mut Links, n: usize, now: Instant) -> Vec<usize> {
        (0..n).map(|_| l.pick(target(), 0, now).unwrap()).collect()
    }

    #[test]
    fn picks_by_weight_within_the_family() {
        let mut l = links(vec![
            spec("10.0.0.1", 2, None),
            spec("fd00::1", 1, None),
            spec("10.0.0.2", 1, None),
        ]);
        assert_eq!(picks(&mut l, 6, Instant::now()), [0, 2, 0, 0, 2, 0]);
        assert_eq!(
            l.pick("2001:db8::1".parse().unwrap(), 0, Instant::now()),
            Some(1)
        );
    }

    #[test]
    fn tried_links_are_skipped() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let now = Instant::now();
        assert_eq!(l.pick(target(), 0b01, now), Some(1));
        assert_eq!(l.pick(target(), 0b10, now), Some(0));
        assert_eq!(l.pick(target(), 0b11, now), None);
    }

    #[test]
    fn three_failures_in_a_row_mark_a_link_down() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let now = Instant::now();
        l.failed(1, &"timed out", now);
        l.failed(1, &"timed out", now);
        assert_eq!(l.get(1).state(), State::Up);
        l.failed(1, &"timed out", now);
        assert!(matches!(l.get(1).state(), State::Down { .. }));
        assert_eq!(picks(&mut l, 4, now), [0, 0, 0, 0]);
        assert_eq!(l.get(1).stats.failures, 3);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut l = links(vec![spec("10.0.0.1", 1, None)]);
        let now = Instant::now();
        l.failed(0, &"x", now);
        l.failed(0, &"x", now);
        l.connected(0);
        l.failed(0, &"x", now);
        l.failed(0, &"x", now);
        assert_eq!(l.get(0).state(), State::Up);
    }

    #[test]
    fn down_link_gets_one_trial_after_backoff_then_comes_back() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.failed(1, &"x", t0);
        }
        let later = t0 + FIRST_BACKOFF;
        assert_eq!(l.pick(target(), 0, later), Some(1), "the trial");
        assert!(matches!(l.get(1).state(), State::Trial { .. }));
        assert_eq!(picks(&mut l, 3, later), [0, 0, 0], "one trial at a time");
        l.connected(1);
        assert_eq!(l.get(1).state(), State::Up);
        let both = picks(&mut l, 4, later);
        assert_eq!(both.iter().filter(|&&i| i == 1).count(), 2);
    }

    #[test]
    fn failed_trial_doubles_the_backoff_up_to_the_limit() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let mut now = Instant::now();
        for _ in 0..3 {
            l.failed(1, &"x", now);
        }
        let mut expected = FIRST_BACKOFF;
        for _ in 0..6 {
            now += expected;
            assert_eq!(l.pick(target(), 0, now), Some(1));
            l.failed(1, &"x", now);
            expected = (expected * 2).min(MAX_BACKOFF);
            assert_eq!(
                l.get(1).state(),
                State::Down {
                    retry_at: now + expected,
                    backoff: expected
                }
            );
        }
    }

    #[test]
    fn abandoned_trial_is_retried_by_the_next_connection() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.failed(1, &"x", t0);
        }
        let later = t0 + FIRST_BACKOFF;
        assert_eq!(l.pick(target(), 0, later), Some(1));
        l.abandoned(1, later);
        assert_eq!(l.pick(target(), 0, later), Some(1));
    }

    #[test]
    fn all_down_still_tries_the_one_that_comes_back_first() {
        let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
        let now = Instant::now();
        for _ in 0..3 {
            l.failed(0, &"x", now);
        }
        for _ in 0..3 {
            l.failed(1, &"x", now + Duration::from_secs(1));
        }
        assert_eq!(l.pick(target(), 0, now), Some(0));
    }

    #[test]
    fn refusal_by_the_target_ends_a_trial_as_up() {
        let mut l = links(vec![spec("10.0.0.1", 1, None)]);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.failed(0, &"x", t0);
        }
        assert_eq!(l.pick(target(), 0, t0 + FIRST_BACKOFF), Some(0));
        l.reached(0);
        assert_eq!(l.get(0).state(), State::Up);
    }

    fn iface(name: &str, index: u32, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn named_link_follows_its_interface_address() {
        let mut l = Links::new(
            vec![spec("10.3.0.2", 1, Some("l3"))],
            &[iface("l3", 7, &["10.3.0.2"])],
            true,
        );
        assert_eq!(
            l.get(0).device(),
            Some(&Device {
                name: "l3".into(),
                index: 7
            })
        );
        let now = Instant::now();
        l.apply_interfaces(&[iface("l3", 7, &["10.3.0.7"])], now);
        assert_eq!(l.get(0).ip(), Some("10.3.0.7".parse().unwrap()));
        assert_eq!(l.get(0).state(), State::Up);
        // Gone, then back with a new index.
        l.apply_interfaces(&[], now);
        assert_eq!(l.get(0).ip(), None);
        assert!(matches!(l.get(0).state(), State::Down { .. }));
        assert_eq!(
            l.pick(target(), 0, now + MAX_BACKOFF),
            None,
            "no address, no pick"
        );
        l.apply_interfaces(&[iface("l3", 9, &["10.3.0.8"])], now);
        assert_eq!(l.get(0).ip(), Some("10.3.0.8".parse().unwrap()));
        assert_eq!(l.get(0).state(), State::Up);
        assert_eq!(l.get(0).device().unwrap().index, 9);
    }

    #[test]
    fn link_given_by_address_does_not_follow() {
        let mut l = links(vec![LinkSpec {
            follow: false,
            ..spec("10.3.0.2", 1, Some("l3"))
        }]);
        l.apply_interfaces(&[iface("l3", 7, &["10.3.0.7"])], Instant::now());
        assert_eq!(l.get(0).ip(), Some("10.3.0.2".parse().unwrap()));
    }

    #[test]
    fn labels_name_interface_and_address() {
        let l = links(vec![
            spec("10.2.0.2", 1, Some("l2")),
            spec("10.0.0.1", 1, None),
        ]);
        assert_eq!(l.get(0).label(), "l2 10.2.0.2");
        assert_eq!(l.get(1).label(), "10.0.0.1");
    }
}
