//! With no address given, dispatch follows the machine's uplinks (root:
//! network namespaces).
//!
//! A home namespace runs dispatch; a far one holds a web server on
//! 203.0.113.10 that answers with the client's address. Uplink `u1`
//! (192.0.2.1, default route, metric 100) is there from the start; `u2`
//! (198.51.100.1, its own default route, metric 200, as NetworkManager adds
//! for a tether or a Wi-Fi that connects later) comes and goes while
//! dispatch runs; `br0` is a bridge with an address and no default route,
//! as docker0 or virbr0. Clients are curl, in the home namespace.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SERVER: &str = "203.0.113.10";
const PORT: u16 = 8080;
const U1: &str = "192.0.2.1";
const U2: &str = "198.51.100.1";

/// Two SOCKS5 connections to a server, each sending half an HTTP request;
/// "ready", then on a line from stdin the rest, and the two bodies.
const PY_HELD: &str = r#"
import socket, sys
proxy, pport, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def connect():
    s = socket.create_connection((proxy, pport), timeout=60)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
    r = s.recv(10)
    assert r[1] == 0, r
    s.sendall(b"GET / HTTP/1.1\r\n")
    return s
conns = [connect(), connect()]
print("ready", flush=True)
sys.stdin.readline()
for s in conns:
    s.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
    print(data.split(b"\r\n\r\n", 1)[1].decode(), flush=True)
"#;

struct Net {
    home: Netns,
    far: Netns,
    _server: WhoAmI,
}

impl Net {
    fn new(tag: &str) -> Net {
        let home = Netns::new(&format!("{tag}h"));
        let far = Netns::new(&format!("{tag}f"));
        far.ip(&["addr", "add", &format!("{SERVER}/32"), "dev", "lo"]);
        let net = Net {
            _server: WhoAmI::start(&far, SERVER, PORT),
            home,
            far,
        };
        net.add_uplink(1);
        net.home.ip(&["link", "add", "br0", "type", "bridge"]);
        net.home.ip(&["addr", "add", "172.17.0.1/16", "dev", "br0"]);
        net.home.ip(&["link", "set", "br0", "up"]);
        net
    }

    /// Uplink `u{n}`: a veth to the far side with an address and a default
    /// route of metric 100 × n.
    fn add_uplink(&self, n: u8) {
        let (home_ip, far_ip) = match n {
            1 => (U1, "192.0.2.2"),
            _ => (U2, "198.51.100.2"),
        };
        let (u, f) = (format!("u{n}"), format!("f{n}"));
        self.home
            .ip(&["link", "add", &u, "type", "veth", "peer", "name", &f]);
        self.home.ip(&["link", "set", &f, "netns", &self.far.name]);
        self.home
            .ip(&["addr", "add", &format!("{home_ip}/24"), "dev", &u]);
        self.home.ip(&["link", "set", &u, "up"]);
        self.far
            .ip(&["addr", "add", &format!("{far_ip}/24"), "dev", &f]);
        self.far.ip(&["link", "set", &f, "up"]);
        let metric = (100 * u32::from(n)).to_string();
        self.home.ip(&[
            "route", "add", "default", "via", far_ip, "dev", &u, "metric", &metric,
        ]);
    }

    /// `n` downloads through the proxy: how many came from each address.
    fn sources(&self, proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for _ in 0..n {
            let seen = ns_curl(
                &self.home,
                proxy,
                "--socks5",
                &format!("http://{SERVER}:{PORT}/"),
            );
            let ip = seen.trim_start_matches("::ffff:").to_string();
            *by.entry(ip).or_insert(0) += 1;
        }
        by
    }
}

/// Waits until the proxy's output has a line with every one of `parts`.
fn wait_line(proxy: &Proxy, parts: &[&str]) {
    let start = Instant::now();
    loop {
        let out = proxy.stdout();
        if out.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no line with {parts:?} within 60 s (interfaces are re-read every 2 s):\n{}",
            tail(&out, 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses the start-up lines list (`-d`: the log line that follows
/// them says they are complete).
fn banner_targets(proxy: &Proxy) -> Vec<String> {
    wait_line(proxy, &["listening on", "dispatching to"]);
    proxy
        .stdout()
        .lines()
        .take_while(|l| !l.contains("dispatching over"))
        // A target's line is indented: `  192.0.2.1  IPv4  u1`.
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn second_uplink_joins_after_start_then_leaves_without_failing_anyone() {
    if !require_root("second_uplink_joins_after_start_then_leaves_without_failing_anyone") {
        return;
    }
    let net = Net::new("up");
    let proxy = Proxy::start_in_netns(&net.home, &["-d"]);
    // The bridge is no uplink: every download works, through u1.
    assert_eq!(banner_targets(&proxy), [U1], "{}", proxy.stdout());
    let by = net.sources(&proxy, 12);
    assert_eq!(by.get(U1), Some(&12), "{by:?}");

    net.add_uplink(2);
    wait_line(&proxy, &["link u2 198.51.100.1 joined"]);
    let by = net.sources(&proxy, 12);
    assert!(
        by.get(U1).copied().unwrap_or(0) >= 4 && by.get(U2).copied().unwrap_or(0) >= 4,
        "both uplinks should carry about half: {by:?}"
    );

    // It goes: no download fails, and none tries it.
    net.home.ip(&["link", "del", "u2"]);
    wait_line(&proxy, &["link u2 ", "left: interface gone"]);
    let by = net.sources(&proxy, 12);
    assert_eq!(by.get(U1), Some(&12), "{by:?}");
    let out = proxy.finish();
    // Its counters stay in the exit summary.
    let u2_line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("link u2 "))
        .unwrap_or_default()
        .to_string();
    assert!(u2_line.contains("connections"), "{}", out.stdout);
    assert!(!u2_line.contains(" 0 connections"), "{u2_line}");
}

#[test]
fn uplink_losing_its_default_route_leaves_and_open_connections_stay() {
    if !require_root("uplink_losing_its_default_route_leaves_and_open_connections_stay") {
        return;
    }
    let net = Net::new("ur");
    net.add_uplink(2);
    let proxy = Proxy::start_in_netns(&net.home, &["-d"]);
    assert_eq!(banner_targets(&proxy), [U1, U2], "{}", proxy.stdout());
    // Two connections held open across the change, one through each link
    // (round robin): each sends half a request, waits, then the rest.
    let mut held = Command::new("ip")
        .args(["netns", "exec", &net.home.name, "python3", "-c", PY_HELD])
        .args([&proxy.addr.ip().to_string(), &proxy.addr.port().to_string()])
        .args([SERVER, &PORT.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the held client");
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    net.home.ip(&["route", "del", "default", "dev", "u2"]);
    wait_line(&proxy, &["link u2 198.51.100.1 left: no default route"]);
    let by = net.sources(&proxy, 6);
    assert_eq!(by.get(U1), Some(&6), "{by:?}");
    net.home.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.51.100.2",
        "dev",
        "u2",
        "metric",
        "200",
    ]);
    wait_line(&proxy, &["link u2 198.51.100.1 joined"]);
    // The held connections finish their requests, through both links.
    writeln!(held.stdin.take().unwrap(), "go").unwrap();
    let answers: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(held.wait().unwrap().success(), "{answers:?}");
    let mut from: Vec<&str> = answers
        .iter()
        .map(|a| a.trim_start_matches("::ffff:"))
        .collect();
    from.sort();
    assert_eq!(from, [U1, U2], "both held connections answered");
    let by = net.sources(&proxy, 6);
    assert!(by.get(U2).copied().unwrap_or(0) >= 2, "{by:?}");
    // dispatch cut no connection when u2 left: every close was the client's.
    let out = proxy.finish();
    assert!(
        !out.stdout.contains("upstream error") && !out.stdout.contains("reset"),
        "{}",
        tail(&out.stdout, 30)
    );
}

#[test]
fn named_interface_that_appears_after_start_is_picked_up() {
    if !require_root("named_interface_that_appears_after_start_is_picked_up") {
        return;
    }
    let net = Net::new("un");
    let proxy = Proxy::start_in_netns(&net.home, &["-d", "u1", "u2"]);
    assert_eq!(banner_targets(&proxy), [U1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned =
        |e: &str| e.contains("u2 does not exist") || e.contains("u2 has no usable address yet");
    while !warned(&proxy.stderr()) {
        assert!(Instant::now() < deadline, "no warning: {}", proxy.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    net.add_uplink(2);
    wait_line(&proxy, &["link u2 198.51.100.1 joined"]);
    let by = net.sources(&proxy, 12);
    assert!(
        by.get(U1).copied().unwrap_or(0) >= 4 && by.get(U2).copied().unwrap_or(0) >= 4,
        "{by:?}"
    );
    proxy.finish();
}

#[test]
fn excluded_uplink_is_not_used() {
    if !require_root("excluded_uplink_is_not_used") {
        return;
    }
    let net = Net::new("ux");
    net.add_uplink(2);
    let proxy = Proxy::start_in_netns(&net.home, &["-d", "--exclude", "u2"]);
    assert_eq!(banner_targets(&proxy), [U1], "{}", proxy.stdout());
    let by = net.sources(&proxy, 6);
    assert_eq!(by.get(U1), Some(&6), "{by:?}");
    proxy.finish();
}
