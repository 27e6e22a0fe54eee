//! Which links can reach a target at all. Pure: given the target and the
//! interfaces and links as last read, it answers; no sockets.
//!
//! - This machine (loopback, or an address of one of its interfaces) is
//!   reached without a link: a socket bound to eth0 cannot reach 127.0.0.1,
//!   and its connects would only time out. Links on loopback addresses (as
//!   tests use, standing in for real links) are the exception: then the
//!   machine is reached through those of its family, and a family without
//!   one cannot reach it, as with any other target.
//! - An IPv6 link-local target with a scope leaves by the interface the
//!   scope names.
//! - A target on an interface's directly connected subnet leaves by that
//!   interface's links (a printer on the LAN behind eth0 is not behind the
//!   phone), or without a link when the interface has none (a bridge, a VPN).
//! - Anything else may take any link of its family.

use std::net::{IpAddr, SocketAddr};

use crate::iface::Interface;
use crate::links::Tried;

/// How a target may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through no link: the system routes it (no source address, no device).
    Direct,
    /// Only through these links (none: it cannot be reached).
    Only(Tried),
    /// Through any link of its family.
    Any,
}

/// What [`decide`] needs to know of one link.
#[derive(Debug, Clone, Copy)]
pub struct LinkView<'a> {
    pub ip: Option<IpAddr>,
    pub iface: Option<&'a str>,
    pub ipv6: bool,
}

/// How `target` may be reached, with `ifaces` as they are and `links` by
/// index.
pub fn decide<'a, I>(target: SocketAddr, ifaces: &[Interface], links: I) -> Reach
where
    I: Iterator<Item = LinkView<'a>> + Clone,
{
    let ip = target.ip().to_canonical();
    let v6 = ip.is_ipv6();
    let on_machine =
        ip.is_loopback() || ip.is_unspecified() || ifaces.iter().any(|f| f.addrs.contains(&ip));
    if on_machine {
        let on_loopback = |l: &LinkView| l.ip.is_some_and(|a| a.is_loopback());
        if !links.clone().any(|l| on_loopback(&l)) {
            return Reach::Direct;
        }
        return Reach::Only(mask(links, |l| l.ipv6 == v6 && on_loopback(l)));
    }
    if let SocketAddr::V6(t) = target {
        if is_link_local_v6(ip) && t.scope_id() != 0 {
            return match ifaces.iter().find(|f| f.index == t.scope_id()) {
                Some(f) => only_or_direct(on_iface(links, f, v6)),
                None => Reach::Direct,
            };
        }
    }
    // The longest prefix wins, as in routing; a prefix of 0 is no subnet.
    let longest = ifaces
        .iter()
        .flat_map(|f| f.nets.iter())
        .filter(|n| n.prefix > 0 && n.contains(ip))
        .map(|n| n.prefix)
        .max();
    let Some(longest) = longest else {
        return Reach::Any;
    };
    let lan = ifaces
        .iter()
        .filter(|f| f.nets.iter().any(|n| n.prefix == longest && n.contains(ip)))
        .fold(0, |set, f| set | on_iface(links.clone(), f, v6));
    only_or_direct(lan)
}

fn only_or_direct(set: Tried) -> Reach {
    if set == 0 {
        Reach::Direct
    } else {
        Reach::Only(set)
    }
}

/// Links of the family on `iface`: named after it, or with one of its
/// addresses.
fn on_iface<'a>(links: impl Iterator<Item = LinkView<'a>>, iface: &Interface, v6: bool) -> Tried {
    mask(links, |l| {
        l.ipv6 == v6
            && (l.iface == Some(iface.name.as_str())
                || l.ip.is_some_and(|a| iface.addrs.contains(&a)))
    })
}

fn mask<'a>(links: impl Iterator<Item = LinkView<'a>>, f: impl Fn(&LinkView) -> bool) -> Tried {
    links
        .enumerate()
        .filter(|(_, l)| f(l))
        .fold(0, |set, (i, _)| set | (1 << i))
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::Net;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An interface with addresses `a/prefix`.
    fn iface(name: &str, index: u32, nets: &[(&str, u8)]) -> Interface {
        Interface {
            name: name.into(),
            index,
            addrs: nets.iter().map(|(a, _)| ip(a)).collect(),
            nets: nets
                .iter()
                .map(|&(a, prefix)| Net {
                    addr: ip(a),
                    prefix,
                })
                .collect(),
            ..Interface::default()
        }
    }

    /// lo, eth0 on a LAN (192.168.1.0/24, fd00:1::/64 and fe80::/64),
    /// wwan0 on a carrier's /30, docker0 (no link).
    fn machine() -> Vec<Interface> {
        vec![
            iface("lo", 1, &[("127.0.0.1", 8), ("::1", 128)]),
            iface(
                "eth0",
                2,
                &[("192.168.1.5", 24), ("fd00:1::5", 64), ("fe80::5", 64)],
            ),
            iface("wwan0", 3, &[("100.64.7.9", 30)]),
            iface("docker0", 4, &[("172.17.0.1", 16)]),
        ]
    }

    /// Links: 0 eth0 v4, 1 wwan0 v4, 2 eth0 v6.
    fn links() -> Vec<LinkView<'static>> {
        vec![
            LinkView {
                ip: Some(ip("192.168.1.5")),
                iface: Some("eth0"),
                ipv6: false,
            },
            LinkView {
                ip: Some(ip("100.64.7.9")),
                iface: Some("wwan0"),
                ipv6: false,
            },
            LinkView {
                ip: Some(ip("fd00:1::5")),
                iface: Some("eth0"),
                ipv6: true,
            },
        ]
    }

    fn reach(target: &str) -> Reach {
        decide(target.parse().unwrap(), &machine(), links().into_iter())
    }

    #[test]
    fn loopback_and_the_machines_own_addresses_take_no_link() {
        for t in [
            "127.0.0.1:80",
            "127.1.2.3:80",
            "[::1]:80",
            "192.168.1.5:80",
            "100.64.7.9:80",
            "172.17.0.1:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(reach(t), Reach::Direct, "{t}");
        }
    }

    #[test]
    fn links_on_loopback_addresses_reach_the_machine() {
        let lo = [
            LinkView {
                ip: Some(ip("127.0.0.2")),
                iface: None,
                ipv6: false,
            },
            LinkView {
                ip: Some(ip("127.0.0.1")),
                iface: Some("lo"),
                ipv6: false,
            },
        ];
        let r = decide("127.0.0.1:80".parse().unwrap(), &machine(), lo.into_iter());
        assert_eq!(r, Reach::Only(0b11));
        let r = decide("[::1]:80".parse().unwrap(), &machine(), lo.into_iter());
        assert_eq!(r, Reach::Only(0), "no IPv6 link on loopback: unreachable");
    }

    #[test]
    fn a_lan_target_leaves_only_by_its_interfaces_links() {
        assert_eq!(reach("192.168.1.20:631"), Reach::Only(0b001));
        assert_eq!(reach("100.64.7.10:53"), Reach::Only(0b010));
        assert_eq!(reach("[fd00:1::20]:631"), Reach::Only(0b100));
    }

    #[test]
    fn a_subnet_of_an_interface_without_links_takes_no_link() {
        assert_eq!(reach("172.17.0.2:80"), Reach::Direct);
    }

    #[test]
    fn anything_else_takes_any_link() {
        for t in ["192.0.2.1:80", "100.64.7.13:80", "[2001:db8::1]:443"] {
            assert_eq!(reach(t), Reach::Any, "{t}");
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let mut m = machine();
        m.push(iface("vpn0", 5, &[("192.168.0.9", 16)]));
        let l = links();
        let r = decide("192.168.1.20:80".parse().unwrap(), &m, l.iter().copied());
        assert_eq!(r, Reach::Only(0b001), "eth0's /24, not vpn0's /16");
        let r = decide("192.168.7.1:80".parse().unwrap(), &m, l.into_iter());
        assert_eq!(r, Reach::Direct, "vpn0's /16, which has no link");
    }

    #[test]
    fn two_interfaces_on_one_lan_both_reach_it() {
        let mut m = machine();
        m.push(iface("wlan0", 6, &[("192.168.1.6", 24)]));
        let mut l = links();
        l.push(LinkView {
            ip: Some(ip("192.168.1.6")),
            iface: Some("wlan0"),
            ipv6: false,
        });
        let r = decide("192.168.1.20:80".parse().unwrap(), &m, l.into_iter());
        assert_eq!(r, Reach::Only(0b1001));
    }

    #[test]
    fn a_scoped_link_local_target_leaves_by_its_interface() {
        let scoped = |scope| {
            let a = SocketAddrV6::new("fe80::99".parse::<Ipv6Addr>().unwrap(), 80, 0, scope);
            decide(SocketAddr::V6(a), &machine(), links().into_iter())
        };
        assert_eq!(scoped(2), Reach::Only(0b100), "eth0's IPv6 link");
        assert_eq!(scoped(3), Reach::Direct, "wwan0 has no IPv6 link");
        assert_eq!(
            scoped(77),
            Reach::Direct,
            "no such interface: the system says"
        );
    }

    #[test]
    fn a_link_given_by_address_is_on_the_interface_with_that_address() {
        let l = [LinkView {
            ip: Some(ip("192.168.1.5")),
            iface: None,
            ipv6: false,
        }];
        let r = decide(
            "192.168.1.20:80".parse().unwrap(),
            &machine(),
            l.into_iter(),
        );
        assert_eq!(r, Reach::Only(0b1));
    }

    #[test]
    fn no_interfaces_known_means_any_link_but_for_loopback() {
        let l = links();
        let r = decide("192.168.1.20:80".parse().unwrap(), &[], l.iter().copied());
        assert_eq!(r, Reach::Any);
        let r = decide("127.0.0.1:80".parse().unwrap(), &[], l.into_iter());
        assert_eq!(r, Reach::Direct);
    }
}
