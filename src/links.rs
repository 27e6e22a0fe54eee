//! The links outgoing connections leave by: which one the next connection
//! takes, whether each is healthy, which address it has now, and what it has
//! carried. A plain struct owned by the event loop; no I/O.
//!
//! Health, from evidence about the link rather than about one target (see
//! [`crate::evidence`]): a link the system cannot send through (no route
//! through its device, its address or device gone) is marked down at once
//! ([`Links::broken`]); one that stayed silent to targets other links
//! reached [`FAILURES_TO_DOWN`] times in a row ([`Links::failed`]) is marked
//! down too. A down link is skipped by the selector; after a backoff it
//! gets one trial connection, whose success brings it back up and whose
//! failure doubles the backoff, up to [`MAX_BACKOFF`]. Every transition is
//! logged once.
//!
//! Which links can reach a target at all (this machine, a LAN) is
//! [`crate::reach`]'s question, asked of the interfaces last read.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::balance::Balance;
use crate::eyeballs::Families;
use crate::iface::Interface;
use crate::learned;
use crate::reach::Reach;
use crate::sys::Device;
use crate::wrr::Selector;

mod health;
mod proxies;
mod select;

pub use proxies::{Proxy, ProxySpec, Route};

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
    /// UDP destinations ever pinned to it (one that idled and came back
    /// counts again).
    pub udp_destinations: u64,
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
    /// In default mode: a link only while its interface has a default route
    /// of its family (see [`Follow`]).
    uplink: bool,
    /// Joins and leaves, so a flapping interface is not logged at each flap.
    flaps: Flaps,
    weight: NonZeroU32,
    state: State,
    failures_in_row: u32,
    /// Smoothed time a connect through it takes (about one round trip).
    srtt: Option<Duration>,
    pub stats: Stats,
    /// For a link that is another proxy: which, and how it is reached.
    proxy: Option<Box<Proxy>>,
}

impl Link {
    fn new(spec: LinkSpec, devices: &[Interface], bind_device: bool) -> Link {
        // Loopback needs no binding, and binding to it would send every
        // other destination into the loopback device.
        let bind = spec.iface.is_some() && bind_device && !spec.ip.is_loopback();
        Link {
            ip: Some(spec.ip),
            ipv6: spec.ip.is_ipv6(),
            device: match &spec.iface {
                Some(name) if bind => device_of(devices, name),
                _ => None,
            },
            bind,
            iface: spec.iface,
            follow: spec.follow,
            uplink: false,
            flaps: Flaps::default(),
            weight: spec.weight,
            state: State::Up,
            failures_in_row: 0,
            srtt: None,
            stats: Stats::default(),
            proxy: None,
        }
    }

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

    /// `eth0 192.168.1.5`, or the address alone when no interface is known;
    /// a proxy's URL, its password redacted.
    pub fn label(&self) -> String {
        if let Some(p) = &self.proxy {
            return p.url.to_string();
        }
        let ip = self.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        match &self.iface {
            Some(name) => format!("{name} {ip}"),
            None => ip,
        }
    }
}

/// Which interfaces the links follow as they come and go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Follow {
    /// No address was given: every uplink (an interface with a usable
    /// address and a default route of that family, see
    /// [`Interface::is_uplink`]) is a link, but for these interfaces.
    pub uplinks: Option<Vec<String>>,
    /// Interfaces given by name, with their weights: one that appears after
    /// start, or gains an address family, gets its links then.
    pub named: Vec<(String, NonZeroU32)>,
}

impl Follow {
    fn excludes(&self, name: &str) -> bool {
        self.uplinks
            .as_ref()
            .is_some_and(|excluded| excluded.iter().any(|n| n == name))
    }

    /// The weight a link through `iface` in this family gets, if the
    /// interface should have one now.
    fn wants(&self, iface: &Interface, ipv6: bool) -> Option<NonZeroU32> {
        if let Some((_, weight)) = self.named.iter().find(|(n, _)| *n == iface.name) {
            let has = iface.usable_addrs().any(|ip| ip.is_ipv6() == ipv6);
            return has.then_some(*weight);
        }
        let excluded = self.uplinks.as_ref()?;
        (iface.is_uplink(ipv6) && !excluded.contains(&iface.name)).then_some(NonZeroU32::MIN)
    }
}

/// Counts a link's joins and leaves per minute: the first two are logged,
/// the rest only counted, and said in one line when the minute is over.
#[derive(Debug, Default, Clone, Copy)]
struct Flaps {
    since: Option<Instant>,
    changes: u32,
}

impl Flaps {
    const WINDOW: Duration = Duration::from_secs(60);
    const LOGGED: u32 = 2;

    /// Notes a change: whether to log it, and how many went unlogged in the
    /// window that just ended.
    fn note(&mut self, now: Instant) -> (bool, u32) {
        let mut unlogged = 0;
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Self::WINDOW)
        {
            unlogged = self.changes.saturating_sub(Self::LOGGED);
            *self = Flaps {
                since: Some(now),
                changes: 0,
            };
        }
        self.changes += 1;
        (self.changes <= Self::LOGGED, unlogged)
    }
}

/// All links, with one selector per address family.
pub struct Links {
    links: Vec<Link>,
    v4: Selector<usize>,
    v6: Selector<usize>,
    /// Proxies and interfaces as routes (see [`Links::pick_route`]).
    routes: Selector<Route>,
    /// A link failed: the interfaces should be re-read soon.
    refresh: bool,
    /// Which address family leads when a name has both (Happy Eyeballs).
    pub families: Families,
    /// Which interfaces to follow as they come and go.
    follow: Follow,
    /// Bind sockets to their link's interface.
    bind_device: bool,
    /// [`MAX_LINKS`] was reached and said so.
    full: bool,
    /// The interfaces as last read, for [`Links::reach`].
    ifaces: Vec<Interface>,
    /// What each link carries, and how new connections use that.
    balance: Balance,
    /// Capacities learned before this start, for links as they come.
    seeds: Vec<learned::Entry>,
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
            .map(|spec| Link::new(spec, devices, bind_device))
            .collect();
        let mut links = Links {
            v4: Selector::new([]),
            v6: Selector::new([]),
            routes: Selector::new([]),
            links,
            refresh: false,
            families: Families::default(),
            follow: Follow::default(),
            bind_device,
            full: false,
            ifaces: devices.to_vec(),
            balance: Balance::new(crate::balance::Strategy::Weights),
            seeds: Vec::new(),
        };
        links.reselect();
        links
    }

    /// Follows interfaces as `follow` says (see [`Links::apply_interfaces`]).
    /// In default mode the links given are the uplinks at start.
    pub fn following(mut self, follow: Follow) -> Links {
        if follow.uplinks.is_some() {
            for link in &mut self.links {
                link.uplink = true;
            }
        }
        self.follow = follow;
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.links.iter()
    }

    pub fn get(&self, i: usize) -> &Link {
        &self.links[i]
    }

    /// Whether `remote` can be connected to: directly (this machine, see
    /// [`Links::reach`]), or because a link of its family exists (up or
    /// not) that may reach it.
    pub fn can_reach(&self, remote: IpAddr) -> bool {
        match self.reach(std::net::SocketAddr::new(remote, 0)) {
            Reach::Direct => true,
            Reach::Only(set) => set != 0,
            Reach::Any => self
                .links
                .iter()
                .any(|l| l.ipv6 == remote.is_ipv6() && l.proxy.is_none()),
        }
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
        let window = crate::balance::answer_window(link.srtt);
        self.balance.answer_window(i, window);
    }

    /// Whether some link of the family is up (or on trial) with an address.
    pub fn family_up(&self, ipv6: bool) -> bool {
        self.links
            .iter()
            .any(|l| l.ipv6 == ipv6 && l.ip.is_some() && !matches!(l.state, State::Down { .. }))
    }

    /// Whether a link failed since the last call (its address may be gone).
    pub fn take_refresh_request(&mut self) -> bool {
        std::mem::take(&mut self.refresh)
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
            stats.udp_destinations += 1;
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
    /// is down while the interface has none. In default mode a link leaves
    /// when its interface loses its default route (or goes), and comes back
    /// with it; an uplink or named interface seen for the first time gets
    /// links. Device indices are refreshed (an interface that comes back may
    /// have a new one). Links are never removed: a link that left keeps its
    /// index and counters for the exit summary.
    pub fn apply_interfaces(&mut self, ifaces: &[Interface], now: Instant) {
        if self.ifaces != ifaces {
            self.ifaces = ifaces.to_vec();
        }
        for i in 0..self.links.len() {
            self.follow_link(i, ifaces, now);
        }
        let mut added = false;
        for iface in ifaces {
            for ipv6 in [false, true] {
                let Some(weight) = self.follow.wants(iface, ipv6) else {
                    continue;
                };
                let known = self
                    .links
                    .iter()
                    .any(|l| l.ipv6 == ipv6 && l.iface.as_deref() == Some(&iface.name));
                if !known {
                    added |= self.add(iface, ipv6, weight, ifaces, now);
                }
            }
        }
        if added {
            self.reselect();
        }
    }

    /// A new link through `iface`, if there is room and a free address.
    fn add(
        &mut self,
        iface: &Interface,
        ipv6: bool,
        weight: NonZeroU32,
        ifaces: &[Interface],
        now: Instant,
    ) -> bool {
        if self.links.len() >= MAX_LINKS {
            if !std::mem::replace(&mut self.full, true) {
                log::warn!("{MAX_LINKS} links in use: {} is not used", iface.name);
            }
            return false;
        }
        let in_use: Vec<IpAddr> = self.links.iter().filter_map(|l| l.ip).collect();
        let Some(ip) = iface
            .usable_addrs()
            .find(|ip| ip.is_ipv6() == ipv6 && !in_use.contains(ip))
        else {
            return false;
        };
        let spec = LinkSpec {
            ip,
            weight,
            iface: Some(iface.name.clone()),
            follow: true,
        };
        let mut link = Link::new(spec, ifaces, self.bind_device);
        link.uplink = self.follow.uplinks.is_some()
            && !self.follow.named.iter().any(|(n, _)| *n == iface.name);
        link.flaps.note(now);
        log::info!("link {} joined", link.label());
        self.links.push(link);
        true
    }

    /// Link `i` as its interface is now.
    fn follow_link(&mut self, i: usize, ifaces: &[Interface], now: Instant) {
        let Some(name) = self.links[i].iface.clone() else {
            return;
        };
        let iface = ifaces.iter().find(|f| f.name == name);
        // The interface may have come back with a new index, or appeared
        // only now (a tether plugged in after start).
        if self.links[i].bind {
            if let Some(fresh) = iface.map(|f| Device {
                name: f.name.clone(),
                index: f.index,
            }) {
                self.links[i].device = Some(fresh);
            }
        }
        if !self.links[i].follow {
            return;
        }
        let ipv6 = self.links[i].ipv6;
        let current = self.links[i].ip;
        let why_not = match iface {
            None => Some("interface gone"),
            Some(f) if self.links[i].uplink && !f.default_route[ipv6 as usize] => {
                Some("no default route")
            }
            Some(f) if self.links[i].uplink && self.follow.excludes(&f.name) => Some("excluded"),
            _ => None,
        };
        let addrs: Vec<IpAddr> = match (iface, why_not) {
            (Some(f), None) => f.usable_addrs().filter(|ip| ip.is_ipv6() == ipv6).collect(),
            _ => Vec::new(),
        };
        if current.is_some_and(|ip| addrs.contains(&ip)) {
            return;
        }
        let in_use: Vec<IpAddr> = self.links.iter().filter_map(|l| l.ip).collect();
        let fresh = addrs.into_iter().find(|ip| !in_use.contains(ip));
        let uplink = self.links[i].uplink;
        let link = &mut self.links[i];
        match (current, fresh) {
            (Some(old), Some(new)) => {
                link.ip = Some(new);
                log::info!("link {name} address changed: {old} -> {new}");
            }
            (Some(_), None) => {
                let (log_it, unlogged) = link.flaps.note(now);
                flap_line(link, unlogged);
                let label = link.label();
                let why = why_not.unwrap_or("no address");
                if !uplink {
                    log_at(log_it, format_args!("link {label} down: {why}"));
                } else {
                    log_at(log_it, format_args!("link {label} left: {why}"));
                }
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
                let (log_it, unlogged) = link.flaps.note(now);
                flap_line(link, unlogged);
                let label = link.label();
                if !uplink {
                    log_at(log_it, format_args!("link {label} up"));
                } else {
                    log_at(log_it, format_args!("link {label} joined"));
                }
            }
            (None, None) => {}
        }
    }
}

/// Logs at info, or at debug when a flapping link's lines are held back.
fn log_at(info: bool, line: fmt::Arguments<'_>) {
    if info {
        log::info!("{line}");
    } else {
        log::debug!("{line}");
    }
}

/// Says how often a link changed beyond what was logged in the last minute.
fn flap_line(link: &Link, unlogged: u32) {
    if unlogged > 0 {
        let iface = link.iface.as_deref().unwrap_or("-");
        log::info!("link {iface} changed {unlogged} more times in a minute (flapping)");
    }
}

fn device_of(ifaces: &[Interface], name: &str) -> Option<Device> {
    ifaces.iter().find(|f| f.name == name).map(|f| Device {
        name: f.name.clone(),
        index: f.index,
    })
}

#[cfg(test)]
mod health_tests;

#[cfg(test)]
mod tests;
