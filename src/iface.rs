//! Network interface discovery and the `dispatch list` table.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use network_interface::{NetworkInterface, NetworkInterfaceConfig};

/// A network interface and all its addresses, in the order the system gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// The system's interface index (what macOS and Windows bind sockets by).
    pub index: u32,
    pub addrs: Vec<IpAddr>,
    /// Whether a default route leaves through it, for IPv4 and IPv6 (`[v4,
    /// v6]`). Where routes cannot be read (not Linux), taken as true.
    pub default_route: [bool; 2],
    /// The directly connected subnets its addresses are on, where the
    /// system gives their masks.
    pub nets: Vec<Net>,
}

/// A directly connected subnet: an address of the interface and its prefix
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// The subnet `addr` is on, given its netmask; `None` for a mask of
    /// another family or with holes.
    pub fn from_mask(addr: IpAddr, mask: IpAddr) -> Option<Net> {
        let (bits, len) = match (addr, mask) {
            (IpAddr::V4(_), IpAddr::V4(m)) => (u128::from(u32::from(m)) << 96, 32),
            (IpAddr::V6(_), IpAddr::V6(m)) => (u128::from(m), 128),
            _ => return None,
        };
        let prefix = bits.leading_ones();
        (bits.checked_shl(prefix).unwrap_or(0) == 0 && prefix <= len).then_some(Net {
            addr,
            prefix: prefix as u8,
        })
    }

    /// Whether `ip` is on this subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, len) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let host_bits = len - u32::from(self.prefix.min(len as u8));
        a.checked_shr(host_bits).unwrap_or(0) == b.checked_shr(host_bits).unwrap_or(0)
    }
}

impl Interface {
    /// The addresses [`is_usable`] accepts.
    pub fn usable_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().copied().filter(|&ip| is_usable(ip))
    }

    /// Whether the interface reaches the internet in this family: a usable
    /// address and a default route. What `dispatch start` with no address
    /// uses.
    pub fn is_uplink(&self, ipv6: bool) -> bool {
        self.default_route[ipv6 as usize] && self.usable_addrs().any(|ip| ip.is_ipv6() == ipv6)
    }

    /// Whether `ip` (one of its addresses) is used with no address given,
    /// or why not.
    pub fn default_use(&self, ip: IpAddr) -> Result<(), &'static str> {
        if ip.is_loopback() {
            Err("loopback")
        } else if !is_usable(ip) {
            Err("link-local only")
        } else if !self.default_route[ip.is_ipv6() as usize] {
            Err("no default route")
        } else {
            Ok(())
        }
    }
}

/// The machine's interfaces, one entry per name, in the system's index
/// order, with their default routes.
pub fn discover() -> io::Result<Vec<Interface>> {
    let mut found = NetworkInterface::show().map_err(io::Error::other)?;
    // Some platforms return them in hash order; the index is stable.
    found.sort_by_key(|ni| ni.index);
    let nets: Vec<(String, Net)> = found
        .iter()
        .flat_map(|ni| {
            ni.addr.iter().filter_map(|a| {
                let net = Net::from_mask(a.ip(), a.netmask()?)?;
                Some((ni.name.clone(), net))
            })
        })
        .collect();
    let mut ifaces = merge(found.into_iter().map(|ni| {
        let addrs = ni.addr.iter().map(|a| a.ip()).collect();
        (ni.name, ni.index, addrs)
    }));
    for (name, net) in nets {
        if let Some(iface) = ifaces.iter_mut().find(|i| i.name == name) {
            if !iface.nets.contains(&net) {
                iface.nets.push(net);
            }
        }
    }
    let routes = default_routes();
    for iface in &mut ifaces {
        iface.default_route = match &routes {
            Some([v4, v6]) => [v4.contains(&iface.name), v6.contains(&iface.name)],
            None => [true, true],
        };
    }
    Ok(ifaces)
}

/// The interfaces default routes leave by, IPv4 and IPv6, as the kernel
/// lists them (`/proc/net/route`, `/proc/net/ipv6_route`); `None` where
/// they cannot be read.
fn default_routes() -> Option<[Vec<String>; 2]> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let v4 = std::fs::read_to_string("/proc/net/route").ok()?;
    // A kernel without IPv6 has no such file: no IPv6 default route.
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    Some([default_routes_v4(&v4), default_routes_v6(&v6)])
}

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// Interfaces of the usable default routes in `/proc/net/route`: a header,
/// then `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, in hex.
fn default_routes_v4(table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(dest), Some(flags), Some(mask)) =
            (f.first(), f.get(1), f.get(3), f.get(7))
        else {
            continue;
        };
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        let default = *dest == "00000000" && *mask == "00000000";
        if default
            && flags & RTF_UP != 0
            && flags & RTF_REJECT == 0
            && !out.iter().any(|n| n == name)
        {
            out.push(name.to_string());
        }
    }
    out
}

/// Interfaces of the usable default routes in `/proc/net/ipv6_route`: no
/// header; `dest plen src splen nexthop metric refcnt use flags iface`.
fn default_routes_v6(table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (dest, plen, flags, name) = (f[0], f[1], f[8], f[9]);
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        let default = dest.bytes().all(|b| b == b'0') && plen == "00";
        if default
            && flags & RTF_UP != 0
            && flags & RTF_REJECT == 0
            && name != "lo"
            && !out.iter().any(|n| n == name)
        {
            out.push(name.to_string());
        }
    }
    out
}

/// Joins entries of the same name (some platforms list an interface once per
/// address), keeping first-seen order and dropping repeated addresses.
pub fn merge(entries: impl IntoIterator<Item = (String, u32, Vec<IpAddr>)>) -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    for (name, index, addrs) in entries {
        let i = match out.iter().position(|iface| iface.name == name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name,
                    index,
                    ..Interface::default()
                });
                out.len() - 1
            }
        };
        for ip in addrs {
            if !out[i].addrs.contains(&ip) {
                out[i].addrs.push(ip);
            }
        }
    }
    out
}

/// Whether outgoing connections should leave from `ip` when the user did not
/// pick addresses: it must reach beyond this machine and its link.
pub fn is_usable(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        // fe80::/10
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

/// `IPv4` or `IPv6`.
pub fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// The `dispatch list` table: a header, then one row per address (`-` for an
/// interface without any), in space-aligned columns so `awk` can split it.
/// USABLE: whether the address can be given as a dispatch target; DEFAULT:
/// whether `dispatch start` with no address uses it, or why not (the last
/// column, so its words do not shift the others).
pub fn format_table(ifaces: &[Interface]) -> String {
    let mut rows: Vec<[String; 5]> =
        vec![["INTERFACE", "FAMILY", "ADDRESS", "USABLE", "DEFAULT"].map(String::from)];
    for iface in ifaces {
        if iface.addrs.is_empty() {
            let row = [&iface.name, "-", "-", "no", "no (no address)"];
            rows.push(row.map(String::from));
        }
        for &ip in &iface.addrs {
            // A loopback address may be given (tests, a local server), but
            // reaches nothing beyond this machine.
            let usable = match ip {
                _ if is_usable(ip) => "yes",
                _ if ip.is_loopback() => "local only",
                _ => "no",
            };
            let default = match iface.default_use(ip) {
                Ok(()) => "yes".to_string(),
                Err(why) => format!("no ({why})"),
            };
            rows.push([
                iface.name.clone(),
                family(ip).into(),
                ip.to_string(),
                usable.into(),
                default,
            ]);
        }
    }
    let mut widths = [0; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let [name, family, addr, usable, default] = row;
        let _ = writeln!(
            out,
            "{name:<w0$}  {family:<w1$}  {addr:<w2$}  {usable:<w3$}  {default}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    }
    out
}

/// Re-reads the interfaces off the event loop: every `period`, and soon
/// after [`Watcher::poke`]. A changed list is sent over a channel and the
/// loop woken through its waker.
pub struct Watcher {
    poke: mpsc::Sender<()>,
    changes: mpsc::Receiver<Vec<Interface>>,
}

impl Watcher {
    pub fn spawn(
        first: Vec<Interface>,
        period: Duration,
        waker: Arc<mio::Waker>,
    ) -> io::Result<Watcher> {
        let (poke, poked) = mpsc::channel::<()>();
        let (send, changes) = mpsc::channel();
        thread::Builder::new()
            .name("iface-watch".into())
            .spawn(move || {
                let mut last = first;
                loop {
                    match poked.recv_timeout(period) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    // Several pokes in a row are one re-read.
                    while poked.try_recv().is_ok() {}
                    let Ok(now) = discover() else { continue };
                    if now != last {
                        last = now.clone();
                        if send.send(now).is_err() {
                            return;
                        }
                        let _ = waker.wake();
                    }
                }
            })?;
        Ok(Watcher { poke, changes })
    }

    /// Asks for a re-read now (a link just failed: its address may be gone).
    pub fn poke(&self) {
        let _ = self.poke.send(());
    }

    /// The newest interface list, if it changed since the last call.
    pub fn latest(&self) -> Option<Vec<Interface>> {
        self.changes.try_iter().last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn iface(name: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index: 0,
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            default_route: [false, false],
            ..Interface::default()
        }
    }

    #[test]
    fn usable_addresses() {
        for a in [
            "192.168.1.5",
            "10.0.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
            "fec0::1",
        ] {
            assert!(is_usable(ip(a)), "{a}");
        }
        for a in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "169.254.3.4",
            "fe80::1",
            "febf::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_usable(ip(a)), "{a}");
        }
    }

    #[test]
    fn merges_by_name_keeping_order() {
        let merged = merge(vec![
            ("eth0".to_string(), 0, vec![ip("10.0.0.1")]),
            ("lo".to_string(), 0, vec![ip("127.0.0.1")]),
            (
                "eth0".to_string(),
                0,
                vec![ip("2001:db8::1"), ip("10.0.0.1")],
            ),
            ("wg0".to_string(), 0, vec![]),
        ]);
        assert_eq!(
            merged,
            vec![
                iface("eth0", &["10.0.0.1", "2001:db8::1"]),
                iface("lo", &["127.0.0.1"]),
                iface("wg0", &[]),
            ]
        );
    }

    #[test]
    fn usable_addrs_filters() {
        let eth = iface("eth0", &["fe80::1", "10.0.0.1", "2001:db8::1"]);
        assert_eq!(
            eth.usable_addrs().collect::<Vec<_>>(),
            vec![ip("10.0.0.1"), ip("2001:db8::1")]
        );
    }

    #[test]
    fn table_is_aligned_and_says_why_an_address_is_not_used_by_default() {
        let mut enp = iface(
            "enp3s0",
            &["192.168.1.20", "fe80::1234:5678", "2001:db8::20"],
        );
        enp.default_route = [true, false];
        let table = format_table(&[
            iface("lo", &["127.0.0.1", "::1"]),
            enp,
            iface("docker0", &["172.17.0.1"]),
            iface("dummy0", &[]),
        ]);
        let expected = "\
INTERFACE  FAMILY  ADDRESS          USABLE      DEFAULT
lo         IPv4    127.0.0.1        local only  no (loopback)
lo         IPv6    ::1              local only  no (loopback)
enp3s0     IPv4    192.168.1.20     yes         yes
enp3s0     IPv6    fe80::1234:5678  no          no (link-local only)
enp3s0     IPv6    2001:db8::20     yes         no (no default route)
docker0    IPv4    172.17.0.1       yes         no (no default route)
dummy0     -       -                no          no (no address)
";
        assert_eq!(table, expected);
    }

    #[test]
    fn uplinks_need_a_usable_address_and_a_default_route_of_the_family() {
        let mut eth = iface("eth0", &["fe80::1", "10.0.0.1"]);
        eth.default_route = [true, true];
        assert!(eth.is_uplink(false));
        assert!(
            !eth.is_uplink(true),
            "a link-local address reaches no further"
        );
        eth.default_route = [false, true];
        assert!(!eth.is_uplink(false));
    }

    #[test]
    fn default_routes_are_read_from_the_kernels_tables() {
        let v4 = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
";
        assert_eq!(default_routes_v4(v4), ["eth0", "wlan0"]);
        let v6 = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001       lo
";
        assert_eq!(
            default_routes_v6(v6),
            ["eth0"],
            "the unreachable default on lo is none"
        );
    }

    #[test]
    fn empty_table_has_header() {
        assert_eq!(
            format_table(&[]),
            "INTERFACE  FAMILY  ADDRESS  USABLE  DEFAULT\n"
        );
    }

    #[test]
    fn a_netmask_gives_the_prefix_and_the_subnet_holds_its_neighbours() {
        let net = Net::from_mask(ip("192.168.1.5"), ip("255.255.255.0")).unwrap();
        assert_eq!(net.prefix, 24);
        assert!(net.contains(ip("192.168.1.200")));
        assert!(!net.contains(ip("192.168.2.1")));
        assert!(!net.contains(ip("fd00::1")), "another family");
        let v6 = Net::from_mask(ip("fd01::2"), ip("ffff:ffff:ffff:ffff::")).unwrap();
        assert_eq!(v6.prefix, 64);
        assert!(v6.contains(ip("fd01::99")));
        assert!(!v6.contains(ip("fd02::2")));
        let host = Net::from_mask(ip("10.9.0.1"), ip("255.255.255.255")).unwrap();
        assert!(host.contains(ip("10.9.0.1")) && !host.contains(ip("10.9.0.2")));
        let all = Net::from_mask(ip("10.0.0.1"), ip("0.0.0.0")).unwrap();
        assert_eq!(all.prefix, 0);
        assert!(all.contains(ip("192.0.2.1")));
    }

    #[test]
    fn a_mask_with_holes_or_of_another_family_is_no_subnet() {
        assert_eq!(Net::from_mask(ip("10.0.0.1"), ip("255.0.255.0")), None);
        assert_eq!(Net::from_mask(ip("10.0.0.1"), ip("ffff::")), None);
    }
}
