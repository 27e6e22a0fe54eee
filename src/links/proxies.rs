//! Links that are other proxies (see [`crate::upstream_proto`]): they sit
//! among the interface links, with the same health, counters and table,
//! but carry any target of either family, so they are chosen before a
//! target is resolved. [`Links::pick_route`] spreads new connections over
//! the proxies and the interfaces as a whole by weight (the interfaces
//! count as one route, weighing what their larger family weighs); among
//! the interfaces, the usual per-family selection follows.
//!
//! UDP destinations are placed on `socks5://` and `socks5h://` proxies
//! (through a UDP ASSOCIATE of their own, see `conn::udp_upstream`), never
//! on `http://` ones, nor on one that answered that it does not carry UDP
//! ([`Links::refuse_udp`]) until restart or SIGHUP.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Instant;

use super::{Link, Links, State, Tried, FIRST_BACKOFF, MAX_BACKOFF};
use crate::sys::Device;
use crate::upstream_proto::{ProxyUrl, Scheme};
use crate::wrr::Selector;

/// An upstream proxy given as a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub url: ProxyUrl,
    /// Where it listens (its host resolved at start).
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
}

/// What a link that is a proxy knows besides what every link does.
#[derive(Debug)]
pub struct Proxy {
    pub url: ProxyUrl,
    pub addr: SocketAddr,
    /// It refused our credentials: down until restart or SIGHUP.
    pub locked: bool,
    /// It answered UDP ASSOCIATE with "command not supported": no UDP is
    /// placed on it until restart or SIGHUP.
    pub no_udp: bool,
}

/// Where a new connection goes: through the interfaces (`None`), or
/// through the proxy link of this index.
pub type Route = Option<usize>;

impl Link {
    fn proxy(spec: ProxySpec) -> Link {
        Link {
            ip: None,
            ipv6: false,
            iface: None,
            device: None,
            bind: false,
            follow: false,
            uplink: false,
            flaps: Default::default(),
            weight: spec.weight,
            state: State::Up,
            failures_in_row: 0,
            srtt: None,
            stats: Default::default(),
            proxy: Some(Box::new(Proxy {
                url: spec.url,
                addr: spec.addr,
                locked: false,
                no_udp: false,
            })),
        }
    }

    /// The proxy this link is, if it is one.
    pub fn as_proxy(&self) -> Option<&Proxy> {
        self.proxy.as_deref()
    }
}

impl Links {
    /// Adds the proxy links, after the interface ones.
    pub fn with_proxies(mut self, proxies: Vec<ProxySpec>) -> Links {
        assert!(self.links.len() + proxies.len() <= super::MAX_LINKS);
        self.links.extend(proxies.into_iter().map(Link::proxy));
        self.reselect();
        self
    }

    /// Whether any link is a proxy.
    pub fn has_proxies(&self) -> bool {
        self.links.iter().any(|l| l.proxy.is_some())
    }

    /// The route selector over the proxies and the interfaces as one.
    pub(super) fn route_selector(links: &[Link]) -> Selector<Route> {
        let family = |v6: bool| {
            links
                .iter()
                .filter(|l| l.proxy.is_none() && l.ipv6 == v6)
                .map(|l| u64::from(l.weight.get()))
                .sum::<u64>()
        };
        let interfaces = family(false).max(family(true));
        let interfaces =
            NonZeroU32::new(u32::try_from(interfaces).unwrap_or(u32::MAX)).map(|w| (None, w));
        Selector::new(
            interfaces.into_iter().chain(
                links
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.proxy.is_some())
                    .map(|(i, l)| (Some(i), l.weight)),
            ),
        )
    }

    /// The route of a new connection, among proxies not in `tried` (the
    /// interfaces are a route while `interfaces` says they can carry the
    /// target, of family `v6` if it is an address, and one of theirs of
    /// that family is up or due its trial). A down proxy whose backoff has
    /// passed gets its trial first; when no route is up, the down proxy
    /// that comes back first is tried all the same, else the interfaces
    /// are. `None`: nothing is left to try.
    pub fn pick_route(
        &mut self,
        tried: Tried,
        interfaces: bool,
        v6: Option<bool>,
        now: Instant,
    ) -> Option<Route> {
        let links = &mut self.links;
        let untried = |i: usize, l: &Link| {
            tried & (1 << i) == 0 && l.proxy.as_ref().is_some_and(|p| !p.locked)
        };
        if let Some(i) = (0..links.len()).find(|&i| {
            untried(i, &links[i])
                && matches!(links[i].state, State::Down { retry_at, .. } if retry_at <= now)
        }) {
            let State::Down { backoff, .. } = links[i].state else {
                unreachable!()
            };
            links[i].state = State::Trial { backoff };
            log::info!("link {} trial", links[i].label());
            return Some(Some(i));
        }
        let links = &self.links;
        let of_family =
            |l: &Link| l.proxy.is_none() && l.ip.is_some() && v6.is_none_or(|v6| l.ipv6 == v6);
        let interfaces = interfaces && links.iter().any(of_family);
        // All of them down: their share goes to the proxies meanwhile.
        let usable = interfaces
            && links
                .iter()
                .filter(|l| of_family(l))
                .any(|l| match l.state {
                    State::Up => true,
                    State::Down { retry_at, .. } => retry_at <= now,
                    State::Trial { .. } => false,
                });
        let eligible = |r: &Route| match *r {
            None => usable,
            Some(i) => untried(i, &links[i]) && links[i].state == State::Up,
        };
        if let Some(route) = self.routes.next_where(eligible) {
            return Some(route);
        }
        (0..links.len())
            .filter(|&i| untried(i, &links[i]))
            .filter_map(|i| match links[i].state {
                State::Down { retry_at, .. } => Some((retry_at, i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| Some(i))
            .or(interfaces.then_some(None))
    }

    /// Proxy link `i` refused our credentials: down until restart or
    /// [`Links::unlock_proxies`], said once.
    pub fn lock(&mut self, i: usize, reason: &dyn std::fmt::Display, now: Instant) {
        let link = &mut self.links[i];
        link.stats.failures += 1;
        let Some(proxy) = link.proxy.as_mut() else {
            return;
        };
        if !std::mem::replace(&mut proxy.locked, true) {
            log::error!("link {} down until restart or SIGHUP: {reason}", proxy.url);
        }
        link.state = State::Down {
            retry_at: now + MAX_BACKOFF,
            backoff: MAX_BACKOFF,
        };
    }

    /// Where a connection to proxy link `i` leaves from: by the routing
    /// table (no address, no device), or, for a proxy written with
    /// `@iface`, from the interface's address of the proxy's family as the
    /// interfaces were last read, bound to the device unless device binding
    /// is off. An error says why it cannot leave now (a link failure).
    pub fn proxy_source(&self, i: usize) -> Result<(Option<IpAddr>, Option<Device>), String> {
        let Some(proxy) = self.links[i].proxy.as_deref() else {
            return Ok((None, None));
        };
        let Some(name) = &proxy.url.iface else {
            return Ok((None, None));
        };
        let v6 = proxy.addr.is_ipv6();
        let family = if v6 { "IPv6" } else { "IPv4" };
        let iface = self.ifaces.iter().find(|f| &f.name == name);
        let of_family = |a: &IpAddr| a.is_ipv6() == v6;
        // A usable address first: an IPv6 link-local one reaches no proxy
        // beyond the link.
        let ip = iface.and_then(|f| {
            f.usable_addrs()
                .find(of_family)
                .or_else(|| f.addrs.iter().copied().find(of_family))
        });
        let (Some(iface), Some(ip)) = (iface, ip) else {
            return Err(format!("interface {name} has no {family} address"));
        };
        let device = self.bind_device.then(|| Device {
            name: iface.name.clone(),
            index: iface.index,
        });
        Ok((Some(ip), device))
    }

    /// The proxy links that cannot carry UDP (HTTP ones, and those that
    /// refused it), as a set to leave out of [`Links::pick_route`].
    pub fn without_udp(&self) -> Tried {
        let cannot = |p: &Proxy| p.url.scheme == Scheme::Http || p.no_udp;
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.proxy.as_deref().is_some_and(cannot))
            .fold(0, |set, (i, _)| set | 1 << i)
    }

    /// Proxy link `i` does not carry UDP: none is placed on it until
    /// restart or SIGHUP, said once.
    pub fn refuse_udp(&mut self, i: usize) {
        if let Some(proxy) = self.links[i].proxy.as_mut() {
            if !std::mem::replace(&mut proxy.no_udp, true) {
                log::warn!(
                    "link {}: the upstream does not carry UDP (UDP ASSOCIATE not \
                     supported); UDP goes by other links until restart or SIGHUP",
                    proxy.url
                );
            }
        }
    }

    /// SIGHUP: proxies locked out by their credentials get a trial again,
    /// and those that refused UDP are asked again.
    pub fn unlock_proxies(&mut self, now: Instant) {
        for proxy in self.links.iter_mut().filter_map(|l| l.proxy.as_mut()) {
            proxy.no_udp = false;
        }
        for link in &mut self.links {
            if let Some(proxy) = link.proxy.as_mut().filter(|p| p.locked) {
                proxy.locked = false;
                link.state = State::Down {
                    retry_at: now,
                    backoff: FIRST_BACKOFF,
                };
                log::info!("link {} unlocked: it gets a trial", proxy.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkSpec;

    fn links(ifaces: &[(&str, u32)], proxies: &[(&str, u32)]) -> Links {
        let specs = ifaces
            .iter()
            .map(|&(ip, w)| LinkSpec {
                ip: ip.parse().unwrap(),
                weight: NonZeroU32::new(w).unwrap(),
                iface: None,
                follow: false,
            })
            .collect();
        let proxies = proxies
            .iter()
            .map(|&(url, w)| {
                let url: ProxyUrl = url.parse().unwrap();
                ProxySpec {
                    addr: SocketAddr::new(url.host.parse().unwrap(), url.port),
                    url,
                    weight: NonZeroU32::new(w).unwrap(),
                }
            })
            .collect();
        Links::new(specs, &[], false).with_proxies(proxies)
    }

    fn routes(l: &mut Links, tried: Tried, n: usize) -> Vec<Route> {
        let now = Instant::now();
        (0..n)
            .map(|_| l.pick_route(tried, true, None, now).unwrap())
            .collect()
    }

    #[test]
    fn routes_follow_the_weights_of_interfaces_and_proxies() {
        let mut l = links(
            &[("10.0.0.1", 1)],
            &[("socks5://127.0.0.1:1", 2), ("http://127.0.0.1:2", 1)],
        );
        // Smooth WRR over {interfaces: 1, 1: 2, 2: 1}.
        assert_eq!(routes(&mut l, 0, 4), [Some(1), None, Some(2), Some(1)]);
    }

    #[test]
    fn proxies_are_never_picked_for_a_family() {
        let mut l = links(&[("10.0.0.1", 1)], &[("socks5://127.0.0.1:1", 5)]);
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.pick("192.0.2.1".parse().unwrap(), 0, now), Some(0));
            assert_eq!(
                l.pick_for_datagrams("192.0.2.1".parse().unwrap(), Instant::now()),
                Some(0)
            );
        }
        assert!(!l.can_reach("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn a_tried_or_down_proxy_gives_way() {
        let mut l = links(
            &[("10.0.0.1", 1)],
            &[("socks5://127.0.0.1:1", 1), ("socks5://127.0.0.1:2", 1)],
        );
        assert_eq!(routes(&mut l, 1 << 1 | 1 << 2, 3), [None, None, None]);
        let now = Instant::now();
        l.broken(1, &"refused", now);
        let got = routes(&mut l, 0, 4);
        assert!(!got.contains(&Some(1)), "{got:?}");
        assert!(got.contains(&Some(2)) && got.contains(&None), "{got:?}");
    }

    #[test]
    fn a_target_the_interfaces_cannot_carry_goes_to_a_proxy() {
        let mut l = links(&[("10.0.0.1", 5)], &[("socks5://127.0.0.1:1", 1)]);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.pick_route(0, false, None, now), Some(Some(1)));
        }
        assert_eq!(l.pick_route(1 << 1, false, None, now), None);
    }

    #[test]
    fn with_only_proxies_a_down_one_is_tried_rather_than_none() {
        let mut l = links(&[], &[("socks5://127.0.0.1:1", 1)]);
        let now = Instant::now();
        l.broken(0, &"refused", now);
        assert_eq!(l.pick_route(0, true, None, now), Some(Some(0)));
        assert_eq!(
            l.pick_route(1, true, None, now),
            None,
            "nothing left untried"
        );
    }

    #[test]
    fn with_every_interface_link_down_the_proxies_take_their_share() {
        let mut l = links(&[("10.0.0.1", 1)], &[("socks5://127.0.0.1:1", 1)]);
        let now = Instant::now();
        l.broken(0, &"no route", now);
        for _ in 0..4 {
            assert_eq!(l.pick_route(0, true, None, now), Some(Some(1)));
        }
        // Only the proxy's failure leaves the interfaces, as a last resort.
        assert_eq!(l.pick_route(1 << 1, true, None, now), Some(None));
        // Once the interface link's trial is due, it has its share again.
        let later = now + FIRST_BACKOFF;
        let got = routes_at(&mut l, 4, later);
        assert!(got.contains(&None) && got.contains(&Some(1)), "{got:?}");
        // An IPv6 target: no interface link of its family is up.
        let mut l = links(
            &[("10.0.0.1", 1), ("2001:db8::1", 1)],
            &[("socks5://127.0.0.1:1", 1)],
        );
        l.broken(1, &"no route", now);
        for _ in 0..4 {
            assert_eq!(l.pick_route(0, true, Some(true), now), Some(Some(2)));
        }
        let got: Vec<Route> = (0..4)
            .map(|_| l.pick_route(0, true, Some(false), now).unwrap())
            .collect();
        assert!(got.contains(&None), "{got:?}");
    }

    fn routes_at(l: &mut Links, n: usize, now: Instant) -> Vec<Route> {
        (0..n)
            .map(|_| l.pick_route(0, true, None, now).unwrap())
            .collect()
    }

    #[test]
    fn a_locked_proxy_waits_for_sighup() {
        let mut l = links(&[("10.0.0.1", 1)], &[("socks5://u:p@127.0.0.1:1", 1)]);
        let now = Instant::now();
        l.lock(1, &"refused credentials", now);
        let later = now + MAX_BACKOFF * 10;
        for _ in 0..3 {
            assert_eq!(l.pick_route(0, true, None, later), Some(None));
        }
        l.unlock_proxies(later);
        assert_eq!(
            l.pick_route(0, true, None, later),
            Some(Some(1)),
            "its trial"
        );
    }

    #[test]
    fn a_proxy_with_an_interface_leaves_from_its_address() {
        let eth0 = crate::iface::Interface {
            name: "eth0".into(),
            index: 7,
            addrs: vec![
                "192.168.1.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ],
            default_route: [true, true],
            nets: vec![],
        };
        let url: ProxyUrl = "socks5://10.0.0.9:1080@eth0".parse().unwrap();
        let spec = ProxySpec {
            addr: "10.0.0.9:1080".parse().unwrap(),
            url,
            weight: NonZeroU32::MIN,
        };
        let l =
            Links::new(vec![], std::slice::from_ref(&eth0), true).with_proxies(vec![spec.clone()]);
        let (ip, dev) = l.proxy_source(0).unwrap();
        assert_eq!(ip, Some("192.168.1.5".parse().unwrap()));
        assert_eq!(dev.map(|d| (d.name, d.index)), Some(("eth0".into(), 7)));
        let l = Links::new(vec![], &[eth0], false).with_proxies(vec![spec.clone()]);
        assert!(l.proxy_source(0).unwrap().1.is_none(), "--no-bind-device");
        let l = Links::new(vec![], &[], true).with_proxies(vec![spec]);
        let e = l.proxy_source(0).unwrap_err();
        assert_eq!(e, "interface eth0 has no IPv4 address");
    }

    #[test]
    fn udp_leaves_out_http_proxies_and_those_that_refused_it_until_sighup() {
        let mut l = links(
            &[("10.0.0.1", 1)],
            &[("socks5://127.0.0.1:1", 1), ("http://127.0.0.1:2", 1)],
        );
        assert_eq!(l.without_udp(), 1 << 2);
        l.refuse_udp(1);
        assert_eq!(l.without_udp(), 1 << 1 | 1 << 2);
        l.unlock_proxies(Instant::now());
        assert_eq!(l.without_udp(), 1 << 2);
    }

    #[test]
    fn a_proxy_link_is_labelled_redacted() {
        let l = links(&[], &[("socks5://alice:hunter2@127.0.0.1:1080", 1)]);
        assert_eq!(l.get(0).label(), "socks5://alice:***@127.0.0.1:1080");
    }
}
