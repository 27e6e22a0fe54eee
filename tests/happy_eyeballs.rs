//! Happy Eyeballs through the proxy (root: network namespaces).
//!
//! A home namespace runs `dispatch start` with no address, so its one
//! interface gives an IPv4 and an IPv6 link, both with default routes to a
//! far namespace. `dual.test` has an AAAA and an A record (the home
//! namespace's hosts file); the far side serves HTTP on the A record's
//! address, and silently drops everything sent to the AAAA's (a blackhole
//! route), as a broken IPv6 uplink does. Clients are curl with
//! `--socks5-hostname` and a SOCKS5 client that times the reply.

mod common;

use std::time::{Duration, Instant};

use common::*;

const V6_TARGET: &str = "2001:db8:2::10";
const V4_TARGET: &str = "192.0.2.2";
const PORT: u16 = 8080;

struct Setup {
    home: Netns,
    _server: WhoAmI,
    /// Held for the namespace's life.
    _far: Netns,
}

impl Setup {
    /// The two namespaces; `v6_works`: the far side has the AAAA address
    /// instead of dropping what is sent to it.
    fn new(tag: &str, v6_works: bool) -> Setup {
        let mut home = Netns::new(&format!("{tag}h"));
        let far = Netns::new(&format!("{tag}f"));
        home.isolate_dns();
        let hosts = format!(
            "127.0.0.1 localhost\n{V6_TARGET} dual.test\n{V4_TARGET} dual.test\n{V4_TARGET} v4only.test\n"
        );
        std::fs::write(format!("/etc/netns/{}/hosts", home.name), hosts).expect("write hosts");
        home.ip(&["link", "add", "h0", "type", "veth", "peer", "name", "f0"]);
        home.ip(&["link", "set", "f0", "netns", &far.name]);
        home.ip(&["addr", "add", "192.0.2.1/24", "dev", "h0"]);
        home.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "h0",
            "nodad",
        ]);
        home.ip(&["link", "set", "h0", "up"]);
        home.ip(&["route", "add", "default", "via", V4_TARGET]);
        home.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::2"]);
        far.ip(&["addr", "add", "192.0.2.2/24", "dev", "f0"]);
        far.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            "f0",
            "nodad",
        ]);
        far.ip(&["link", "set", "f0", "up"]);
        if v6_works {
            far.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{V6_TARGET}/128"),
                "dev",
                "lo",
            ]);
        } else {
            far.ip(&["-6", "route", "add", "blackhole", "2001:db8:2::/64"]);
        }
        let server = WhoAmI::start(&far, V4_TARGET, PORT);
        Setup {
            home,
            _server: server,
            _far: far,
        }
    }

    /// `curl --socks5-hostname` to `host` from the home namespace: the body
    /// (the address the server saw) and how long it took.
    fn curl(&self, proxy: &Proxy, host: &str) -> (String, Duration) {
        let start = Instant::now();
        let seen = ns_curl(
            &self.home,
            proxy,
            "--socks5-hostname",
            &format!("http://{host}:{PORT}/"),
        );
        (seen, start.elapsed())
    }
}

#[test]
fn broken_ipv6_costs_no_request_more_than_a_second() {
    if !require_root("broken_ipv6_costs_no_request_more_than_a_second") {
        return;
    }
    let s = Setup::new("he", false);
    let proxy = Proxy::start_in_netns(&s.home, &["-d"]);
    for i in 0..5 {
        let (seen, took) = s.curl(&proxy, "dual.test");
        assert!(
            took < Duration::from_secs(1),
            "request {i} took {took:?}\nproxy log:\n{}",
            tail(&proxy.stdout(), 30)
        );
        assert!(seen.ends_with("192.0.2.1"), "request {i} came from {seen}");
    }
    // The SOCKS reply names the winner's address: IPv4.
    let reply = ns_socks5(&s.home, proxy.addr, "name", "dual.test", PORT);
    assert_eq!(reply.rep(), 0, "{reply:?}");
    assert_eq!(reply.raw[3], 1, "BND.ADDR is the IPv4 winner: {reply:?}");
    assert!(reply.secs < 1.0, "{reply:?}");
    // Losing attempts were cancelled, not failures of the IPv6 link.
    let log = proxy.stdout();
    assert!(
        !log.contains("2001:db8:1::1 down"),
        "the IPv6 link was blamed:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn working_ipv6_is_still_preferred() {
    if !require_root("working_ipv6_is_still_preferred") {
        return;
    }
    let s = Setup::new("hw", true);
    let proxy = Proxy::start_in_netns(&s.home, &[]);
    for i in 0..3 {
        let (seen, took) = s.curl(&proxy, "dual.test");
        assert_eq!(seen, "2001:db8:1::1", "request {i} went over IPv4");
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
    }
    let reply = ns_socks5(&s.home, proxy.addr, "name", "dual.test", PORT);
    assert_eq!(reply.raw[3], 4, "BND.ADDR is the IPv6 winner: {reply:?}");
}

#[test]
fn ipv4_only_target_never_waits_on_ipv6() {
    if !require_root("ipv4_only_target_never_waits_on_ipv6") {
        return;
    }
    let s = Setup::new("h4", false);
    let proxy = Proxy::start_in_netns(&s.home, &[]);
    for i in 0..5 {
        let reply = ns_socks5(&s.home, proxy.addr, "name", "v4only.test", PORT);
        assert_eq!(reply.rep(), 0, "request {i}: {reply:?}");
        assert!(reply.secs < 0.2, "request {i} waited: {reply:?}");
    }
    let (seen, _) = s.curl(&proxy, "v4only.test");
    assert!(seen.ends_with("192.0.2.1"), "{seen}");
}
