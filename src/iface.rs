//! Network interface discovery and the `dispatch list` table.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use network_interface::{NetworkInterface, NetworkInterfaceConfig};

/// A network interface and all its addresses, in the order the system gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// The system's interface index (what macOS and Windows bind sockets by).
    pub index: u32,
    pub addrs: Vec<IpAddr>,
}

impl Interface {
    /// The addresses [`is_usable`] accepts.
    pub fn usable_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().copied().filter(|&ip| is_usable(ip))
    }
}

/// The machine's interfaces, one entry per name, in the system's index order.
pub fn discover() -> io::Result<Vec<Interface>> {
    let mut found = NetworkInterface::show().map_err(io::Error::other)?;
    // Some platforms return them in hash order; the index is stable.
    found.sort_by_key(|ni| ni.index);
    Ok(merge(found.into_iter().map(|ni| {
        let addrs = ni.addr.iter().map(|a| a.ip()).collect();
        (ni.name, ni.index, addrs)
    })))
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
                    addrs: Vec::new(),
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
pub fn format_table(ifaces: &[Interface]) -> String {
    let mut rows: Vec<[String; 4]> =
        vec![["INTERFACE", "FAMILY", "ADDRESS", "USABLE"].map(String::from)];
    for iface in ifaces {
        if iface.addrs.is_empty() {
            rows.push([iface.name.clone(), "-".into(), "-".into(), "no".into()]);
        }
        for &ip in &iface.addrs {
            let usable = if is_usable(ip) { "yes" } else { "no" };
            rows.push([
                iface.name.clone(),
                family(ip).into(),
                ip.to_string(),
                usable.into(),
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
        let [name, family, addr, usable] = row;
        let _ = writeln!(
            out,
            "{name:<w0$}  {family:<w1$}  {addr:<w2$}  {usable}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
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
    fn table_is_aligned_and_splits_into_four_fields() {
        let table = format_table(&[
            iface("lo", &["127.0.0.1", "::1"]),
            iface("enp3s0", &["192.168.1.20", "fe80::1234:5678"]),
            iface("dummy0", &[]),
        ]);
        let expected = "\
INTERFACE  FAMILY  ADDRESS          USABLE
lo         IPv4    127.0.0.1        no
lo         IPv6    ::1              no
enp3s0     IPv4    192.168.1.20     yes
enp3s0     IPv6    fe80::1234:5678  no
dummy0     -       -                no
";
        assert_eq!(table, expected);
        for line in table.lines() {
            assert_eq!(line.split_whitespace().count(), 4, "{line}");
        }
    }

    #[test]
    fn empty_table_has_header() {
        assert_eq!(format_table(&[]), "INTERFACE  FAMILY  ADDRESS  USABLE\n");
    }
}
