//! Reply codes that need a network the test controls: each test makes its own
//! network namespace (root only), runs the proxy inside it with
//! `ip netns exec`, and runs a small SOCKS5 client (python3) inside it too.
//! Nothing can leave a namespace: its only links are `lo` and, where needed,
//! a veth pair whose both ends are inside the same namespace.

mod common;

use common::*;

/// Runs the client and checks REP; after an error the proxy must close.
fn expect(ns: &Netns, proxy: &Proxy, atyp: &str, dst: &str, port: u16, want: u8) -> NsReply {
    let r = ns_socks5(ns, proxy.addr, atyp, dst, port);
    assert_eq!(
        r.rep(),
        want,
        "CONNECT {dst}:{port} in {}: expected REP {want:#04x}, got {:02x?}\n--- proxy stdout (tail):\n{}",
        ns.name,
        r.raw,
        tail(&proxy.stdout(), 20)
    );
    if want != rep::SUCCEEDED {
        assert!(
            r.closed,
            "proxy did not close after error reply {want:#04x}"
        );
    }
    r
}

#[test]
fn netns_network_unreachable() {
    if !require_root("netns_network_unreachable") {
        return;
    }
    let ns = Netns::new("nu");
    let proxy = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // A listener inside the namespace to connect to (the proxy's own port
    // is refused: a request for the proxy itself would loop).
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // Sanity check of the harness: the proxy can reach itself.
    let ok = expect(
        &ns,
        &proxy,
        "4",
        "127.0.0.1",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    assert_eq!(ok.raw[3], 0x01);
    // Only lo exists: no route to 10.255.255.1 -> ENETUNREACH.
    expect(
        &ns,
        &proxy,
        "4",
        "10.255.255.1",
        80,
        rep::NETWORK_UNREACHABLE,
    );
    proxy.finish();
}

#[test]
fn netns_host_unreachable_route() {
    if !require_root("netns_host_unreachable_route") {
        return;
    }
    let ns = Netns::new("hu");
    ns.ip(&["route", "add", "unreachable", "198.51.100.0/24"]);
    let proxy = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // connect() fails at once with EHOSTUNREACH.
    expect(&ns, &proxy, "4", "198.51.100.7", 80, rep::HOST_UNREACHABLE);
    proxy.finish();
}

#[test]
fn netns_host_unreachable_after_arp_failure() {
    if !require_root("netns_host_unreachable_after_arp_failure") {
        return;
    }
    let ns = Netns::new("ha");
    ns.add_silent_link();
    let proxy = Proxy::start_in_netns(&ns, &["--connect-timeout", "10", "192.0.2.1"]);
    // The connect is in progress until ARP gives up (~3 s); the error then
    // comes asynchronously (SO_ERROR = EHOSTUNREACH).
    let r = expect(&ns, &proxy, "4", "192.0.2.2", 80, rep::HOST_UNREACHABLE);
    assert!(r.secs < 9.0, "took {} s", r.secs);
    proxy.finish();
}

#[test]
fn netns_connect_timeout_is_ttl_expired() {
    if !require_root("netns_connect_timeout_is_ttl_expired") {
        return;
    }
    let ns = Netns::new("to");
    ns.add_silent_link();
    let proxy = Proxy::start_in_netns(&ns, &["--connect-timeout", "1", "192.0.2.1"]);
    let r = expect(&ns, &proxy, "4", "192.0.2.2", 80, rep::TTL_EXPIRED);
    // Not before the 1 s given; the upper bound only tells it from the
    // 10 s default, with room for a loaded machine.
    assert!(
        (0.8..8.0).contains(&r.secs),
        "--connect-timeout 1 answered after {} s",
        r.secs
    );
    proxy.finish();
}

#[test]
fn netns_unresolvable_name_is_host_unreachable() {
    if !require_root("netns_unresolvable_name_is_host_unreachable") {
        return;
    }
    let mut ns = Netns::new("dn");
    // resolv.conf inside the namespace points at 127.0.0.1 (nothing there):
    // no DNS query can leave.
    ns.isolate_dns();
    let proxy = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // A listener inside the namespace to connect to (the proxy's own port
    // is refused: a request for the proxy itself would loop).
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    let r = expect(
        &ns,
        &proxy,
        "name",
        "no-such-host.invalid",
        80,
        rep::HOST_UNREACHABLE,
    );
    assert!(r.secs < 8.0, "took {} s", r.secs);
    // The name from /etc/hosts still works.
    expect(
        &ns,
        &proxy,
        "name",
        "localhost",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    proxy.finish();
}

#[test]
fn netns_loopback_source_to_other_link_is_general_failure() {
    if !require_root("netns_loopback_source_to_other_link_is_general_failure") {
        return;
    }
    let ns = Netns::new("gf");
    ns.add_silent_link();
    ns.ip(&["route", "add", "default", "dev", "v0"]);
    // Source 127.0.0.1 cannot leave through v0 (the default route): connect()
    // fails with EINVAL, which is none of the specific codes -> general
    // failure. (A target on v0's own subnet would be reached through no
    // link, since no link is on v0: see src/reach.rs.)
    let proxy = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    expect(&ns, &proxy, "4", "198.51.100.1", 80, rep::GENERAL_FAILURE);
    proxy.finish();
}

#[test]
fn netns_interface_name_selects_its_address() {
    if !require_root("netns_interface_name_selects_its_address") {
        return;
    }
    let ns = Netns::new("if");
    ns.add_silent_link();
    // v0 has 192.0.2.1 (and an IPv6 link-local address, which is not usable).
    // Source address only (device binding is tested in tests/links.rs).
    let proxy = Proxy::start_in_netns(&ns, &["--no-bind-device", "v0"]);
    // A listener inside the namespace to connect to (the proxy's own port
    // is refused: a request for the proxy itself would loop). This machine
    // is reached through no link: from 127.0.0.1.
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    let r = expect(
        &ns,
        &proxy,
        "4",
        "127.0.0.1",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    assert_eq!(r.raw[3], 0x01, "reply {:02x?}", r.raw);
    assert_eq!(&r.raw[4..8], &[127, 0, 0, 1], "BND.ADDR in {:02x?}", r.raw);
    // The silent neighbour 192.0.2.2 is on v0's subnet: tried from v0's
    // address, it is unreachable once ARP gives up.
    expect(&ns, &proxy, "4", "192.0.2.2", 80, rep::HOST_UNREACHABLE);
    let out = proxy.finish();
    assert!(
        out.stdout
            .contains("connect to 192.0.2.2:80 through link v0 192.0.2.1 failed"),
        "tried from v0's address:\n{}",
        tail(&out.stdout, 10)
    );
    target.finish();
}

#[test]
fn netns_socks4a_unresolvable_name_is_5b() {
    if !require_root("netns_socks4a_unresolvable_name_is_5b") {
        return;
    }
    let mut ns = Netns::new("d4");
    ns.isolate_dns();
    let proxy = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // A listener inside the namespace to connect to (the proxy's own port
    // is refused: a request for the proxy itself would loop).
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    let r = ns_socks5(&ns, proxy.addr, "4a", "no-such-host.invalid", 80);
    assert_eq!(&r.raw[..2], &[0x00, 0x5B], "SOCKS4a reply {:02x?}", r.raw);
    assert!(r.closed, "proxy did not close after 5B");
    let r = ns_socks5(&ns, proxy.addr, "4a", "localhost", target.addr.port());
    assert_eq!(&r.raw[..2], &[0x00, 0x5A], "SOCKS4a reply {:02x?}", r.raw);
    proxy.finish();
}

#[test]
fn netns_client_gone_while_connecting() {
    if !require_root("netns_client_gone_while_connecting") {
        return;
    }
    let ns = Netns::new("cg");
    ns.add_silent_link();
    // Source address only, so the proxy can still reach its own loopback port.
    let mut proxy = Proxy::start_in_netns(
        &ns,
        &["--connect-timeout", "2", "--no-bind-device", "192.0.2.1"],
    );
    // A listener inside the namespace to connect to (the proxy's own port
    // is refused: a request for the proxy itself would loop).
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    // Clients that leave while the connect to 192.0.2.2 is in progress.
    for _ in 0..5 {
        ns_socks5_abandon(&ns, proxy.addr, "192.0.2.2", 80);
    }
    // Still serving, before and after those connects time out.
    expect(
        &ns,
        &proxy,
        "4",
        "127.0.0.1",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    proxy.assert_alive();
    expect(
        &ns,
        &proxy,
        "4",
        "127.0.0.1",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    proxy.finish();
}

/// A namespace with `lo`, `v0` (192.0.2.1 with an IPv4 default route,
/// 2001:db8:77::1 without an IPv6 one, and its link-local address), `v1`
/// (link-local only) and `br0`, a bridge with an address and no default
/// route (as docker0 or virbr0), as `dispatch list` and a start without
/// ADDRESS see it.
fn usable_and_not(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.add_silent_link();
    ns.ip(&["addr", "add", "2001:db8:77::1/64", "dev", "v0", "nodad"]);
    ns.ip(&["route", "add", "default", "via", "192.0.2.2", "dev", "v0"]);
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "br0"]);
    ns.ip(&["link", "set", "br0", "up"]);
    ns
}

/// The link-local IPv6 address of `dev` in `ns` (the kernel makes it when
/// the link comes up; waits for it).
fn link_local(ns: &Netns, dev: &str) -> String {
    for _ in 0..300 {
        let out = ns.exec(
            "ip",
            &["-6", "-o", "addr", "show", "dev", dev, "scope", "link"],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(a) = text.split_whitespace().skip_while(|w| *w != "inet6").nth(1) {
            return a.split('/').next().unwrap().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no link-local address on {dev} in {} within 30 s", ns.name);
}

/// `dispatch list` from the outside: every interface and address, USABLE
/// "local only" for loopback, "no" for link-local, "yes" for the rest, and DEFAULT "yes"
/// only for an address with a default route of its family, else why not.
#[test]
fn netns_list_says_which_addresses_are_usable() {
    if !require_root("netns_list_says_which_addresses_are_usable") {
        return;
    }
    let ns = usable_and_not("ls");
    let v0_ll = link_local(&ns, "v0");
    let out = ns.exec(BIN, &["list"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dispatch list: {text}");
    // Columns are apart by two spaces or more; a cell may have words.
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect();
    assert_eq!(
        rows.first().cloned().unwrap_or_default(),
        ["INTERFACE", "FAMILY", "ADDRESS", "USABLE", "DEFAULT"],
        "{text}"
    );
    for want in [
        ["lo", "IPv4", "127.0.0.1", "local only", "no (loopback)"],
        ["lo", "IPv6", "::1", "local only", "no (loopback)"],
        ["v0", "IPv4", "192.0.2.1", "yes", "yes"],
        [
            "v0",
            "IPv6",
            "2001:db8:77::1",
            "yes",
            "no (no default route)",
        ],
        ["v0", "IPv6", &v0_ll, "no", "no (link-local only)"],
        ["br0", "IPv4", "172.17.0.1", "yes", "no (no default route)"],
    ] {
        assert!(
            rows.iter().any(|r| r[..] == want[..]),
            "no row {want:?} in:\n{text}"
        );
    }
    // Nothing else is called usable, and only one address is used by default.
    let usable = rows.iter().filter(|r| r[3] == "yes").count();
    assert_eq!(usable, 3, "usable rows:\n{text}");
    let default = rows.iter().filter(|r| r[4] == "yes").count();
    assert_eq!(default, 1, "rows used by default:\n{text}");
}

/// With no ADDRESS, the uplinks' addresses are the targets: an address
/// with a default route of its family. Loopback, link-local, an address
/// whose family has no default route and a bridge with none are left out,
/// and the start-up lines say how links are chosen.
#[test]
fn netns_no_address_uses_every_usable_interface() {
    if !require_root("netns_no_address_uses_every_usable_interface") {
        return;
    }
    let ns = usable_and_not("na");
    let v0_ll = link_local(&ns, "v0");
    let proxy = Proxy::start_in_netns(&ns, &[]);
    let out = proxy.finish();
    let head: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| !l.contains("link "))
        .collect();
    let targets: Vec<Vec<&str>> = head
        .iter()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Learning (no weight written): no weight shown.
    assert_eq!(
        targets,
        [vec!["192.0.2.1", "IPv4", "v0"],],
        "targets at start:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("balancing by learned capacity"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("dispatching over the uplinks, following them as they come and go"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(&v0_ll), "{}", out.stdout);
}

/// Runs `sys.argv[1:]` with `setsockopt(SOL_SOCKET, SO_BINDTODEVICE)`
/// failing with EPERM (a seccomp filter, x86_64 numbering), as on Linux
/// before 5.7 without CAP_NET_RAW. This kernel lets anyone bind to a
/// device, so dropping the capability (setpriv) would show nothing.
const PY_DENY_BINDTODEVICE: &str = r#"
import ctypes, os, platform, struct, sys
assert platform.machine() == "x86_64", "the filter uses x86_64 syscall numbers"
def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
def jeq(k, jt, jf): return struct.pack("HBBI", 0x15, jt, jf, k)
LD = 0x20  # BPF_LD | BPF_W | BPF_ABS
RET = 0x06
ALLOW, EPERM = 0x7fff0000, 0x00050000 | 1
prog = b"".join([
    stmt(LD, 4), jeq(0xC000003E, 1, 0), stmt(RET, ALLOW),   # arch
    stmt(LD, 0), jeq(54, 1, 0), stmt(RET, ALLOW),           # setsockopt
    stmt(LD, 24), jeq(1, 1, 0), stmt(RET, ALLOW),           # SOL_SOCKET
    stmt(LD, 32), jeq(25, 1, 0), stmt(RET, ALLOW),          # SO_BINDTODEVICE
    stmt(RET, EPERM),
])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
assert libc.prctl(38, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS"
fbuf = ctypes.create_string_buffer(fprog)
assert libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) == 0, "PR_SET_SECCOMP: errno %d" % ctypes.get_errno()
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// Where binding to a device is refused, dispatch says so once at start
/// (with the fix) and falls back to source addresses: connections still
/// work. The proof of the fallback: a connect to the silent neighbour
/// 192.0.2.2 is made from v0's address and ends unreachable once ARP gives
/// up; refused device binding would have answered "not allowed" at once.
#[test]
fn netns_refused_device_binding_falls_back_to_source_addresses() {
    if !require_root("netns_refused_device_binding_falls_back_to_source_addresses") {
        return;
    }
    let ns = Netns::new("cr");
    ns.add_silent_link();
    let target = Proxy::start_in_netns(&ns, &["127.0.0.1"]);
    let mut proxy = Proxy::launch(
        &Launch {
            netns: Some(&ns.name),
            wrap: vec!["python3", "-c", PY_DENY_BINDTODEVICE],
            ..Launch::default()
        },
        &["v0"],
    );
    expect(&ns, &proxy, "4", "192.0.2.2", 80, rep::HOST_UNREACHABLE);
    expect(
        &ns,
        &proxy,
        "4",
        "127.0.0.1",
        target.addr.port(),
        rep::SUCCEEDED,
    );
    proxy.assert_alive();
    let out = proxy.finish();
    assert!(
        out.stdout
            .contains("connect to 192.0.2.2:80 through link v0 192.0.2.1 failed"),
        "tried from v0's address:\n{}",
        tail(&out.stdout, 10)
    );
    let warning = "warning: cannot bind sockets to interfaces";
    assert_eq!(
        out.stderr.matches(warning).count(),
        1,
        "one notice on stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("setcap cap_net_raw+ep"),
        "the notice says how to fix it:\n{}",
        out.stderr
    );
    target.finish();
}
