//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7) against the real binary: the relay
//! address in the reply, datagrams to echo servers and back for IPv4, IPv6
//! and names, what is dropped (fragments, other sources, other ports,
//! strangers writing to the outgoing sockets, anything after the control
//! connection closed), and the per-destination pinning to links.
//!
//! Everything is on loopback: the client, the proxy's relay, and the
//! destinations (echo servers or plain sockets the test drives itself).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_secs(1);
/// How long an expected datagram may take.
const ARRIVE: Duration = Duration::from_secs(5);
/// The largest IPv4 UDP payload (65535 - 20 - 8).
const MAX_V4_UDP: usize = 65_507;

const UDP_ASSOCIATE: u8 = 0x03;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.
fn datagram(frag: u8, dest: &Dest, data: &[u8]) -> Vec<u8> {
    // The request's address part is the same encoding: VER CMD RSV | ATYP ...
    let request = socks5_request(0, dest);
    let mut v = vec![0x00, 0x00, frag];
    v.extend_from_slice(&request[3..]);
    v.extend_from_slice(data);
    v
}

/// Strictly parses a datagram the relay sent to the client: RSV 0, FRAG 0,
/// an IP source (the proxy names destinations by address). Returns the
/// source it names and the data.
fn parse_reply(d: &[u8]) -> (SocketAddr, Vec<u8>) {
    assert!(d.len() >= 4, "datagram from the relay too short: {d:02x?}");
    assert_eq!(&d[..3], &[0, 0, 0], "RSV and FRAG of a relayed reply");
    match d[3] {
        0x01 => {
            assert!(d.len() >= 10, "truncated IPv4 header: {d:02x?}");
            let ip = Ipv4Addr::new(d[4], d[5], d[6], d[7]);
            let port = u16::from_be_bytes([d[8], d[9]]);
            (SocketAddr::new(IpAddr::V4(ip), port), d[10..].to_vec())
        }
        0x04 => {
            assert!(d.len() >= 22, "truncated IPv6 header: {d:02x?}");
            let mut o = [0u8; 16];
            o.copy_from_slice(&d[4..20]);
            let port = u16::from_be_bytes([d[20], d[21]]);
            (
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port),
                d[22..].to_vec(),
            )
        }
        other => panic!(
            "relayed reply with ATYP {other:#04x} (expected 1 or 4): {:02x?}",
            &d[..d.len().min(40)]
        ),
    }
}

/// A UDP socket bound to `ip`, port 0.
fn udp(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind UDP {ip}: {e}"));
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The next datagram on `s` within `within`, or None.
fn recv(s: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            // An ICMP error from an earlier send (ECONNREFUSED): keep waiting.
            Err(_) => {}
        }
    }
}

/// A datagram relayed back to the client: asserts it came from the relay
/// and parses its header.
fn recv_relayed(s: &UdpSocket, relay: SocketAddr, what: &str) -> (SocketAddr, Vec<u8>) {
    let (d, from) =
        recv(s, ARRIVE).unwrap_or_else(|| panic!("{what}: no datagram within {ARRIVE:?}"));
    assert_eq!(
        from, relay,
        "{what}: datagram from someone else than the relay"
    );
    parse_reply(&d)
}

/// Asserts nothing arrives on `s` for [`QUIET`].
fn assert_quiet(s: &UdpSocket, what: &str) {
    if let Some((d, from)) = recv(s, QUIET) {
        panic!(
            "{what}: expected nothing, got {} bytes from {from}: {:02x?}",
            d.len(),
            &d[..d.len().min(40)]
        );
    }
}

/// An association: the control connection and the relay from the reply.
struct Assoc {
    control: TcpStream,
    relay: SocketAddr,
}

/// Greets, sends UDP ASSOCIATE announcing `announce`, and returns the raw
/// reply (not checked).
fn associate_raw(proxy: SocketAddr, announce: SocketAddr) -> (TcpStream, Reply5) {
    let mut s = client(proxy);
    socks5_greet(&mut s);
    s.write_all(&socks5_request(UDP_ASSOCIATE, &Dest::Addr(announce)))
        .expect("send UDP ASSOCIATE");
    let reply = read_reply5(&mut s).expect("reply to UDP ASSOCIATE");
    (s, reply)
}

/// UDP ASSOCIATE that must succeed with an IP relay address.
fn associate(proxy: SocketAddr, announce: SocketAddr) -> Assoc {
    let (control, reply) = associate_raw(proxy, announce);
    assert_eq!(
        reply.rep,
        rep::SUCCEEDED,
        "UDP ASSOCIATE failed: reply {:02x?}",
        reply.raw
    );
    let relay = reply
        .bnd
        .unwrap_or_else(|| panic!("UDP ASSOCIATE reply without an IP: {:02x?}", reply.raw));
    Assoc { control, relay }
}

/// The usual announcement: "I do not know my address yet".
fn any4() -> SocketAddr {
    "0.0.0.0:0".parse().unwrap()
}

impl Assoc {
    /// Sends `data` for `dest` from `from` through the relay.
    fn send(&self, from: &UdpSocket, dest: &Dest, data: &[u8]) {
        self.send_frag(from, 0, dest, data);
    }

    fn send_frag(&self, from: &UdpSocket, frag: u8, dest: &Dest, data: &[u8]) {
        let d = datagram(frag, dest, data);
        let n = from
            .send_to(&d, self.relay)
            .unwrap_or_else(|e| panic!("send {} bytes to the relay {}: {e}", d.len(), self.relay));
        assert_eq!(n, d.len());
    }
}

/// A UDP echo server on its own thread that records who sent what.
struct Echo {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(SocketAddr, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(bind: &str) -> Echo {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind echo {bind}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        seen.lock().unwrap().push((from, n));
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            })
        };
        Echo {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// (source, length) of every datagram received, in order.
    fn seen(&self) -> Vec<(SocketAddr, usize)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the proxy's debug log has a line containing `needle`.
fn wait_log(proxy: &Proxy, needle: &str) {
    let deadline = Instant::now() + ARRIVE;
    while !proxy.stdout().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} within {ARRIVE:?}\n{}",
            tail(&proxy.stdout(), 30)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Succeeds once nothing holds the UDP address `addr` any more.
fn wait_udp_released(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + ARRIVE;
    loop {
        match UdpSocket::bind(addr) {
            Ok(_) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{what} {addr} still bound {ARRIVE:?} after the control connection closed: {e}"
            ),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `up` and `down` of the exit summary line `link <label>: ...`.
fn link_bytes(stdout: &str, label: &str) -> (u64, u64) {
    let prefix = format!("link {label}: ");
    let line = stdout
        .lines()
        .filter_map(|l| l.find(&prefix).map(|p| &l[p + prefix.len()..]))
        .next_back()
        .unwrap_or_else(|| panic!("no summary line for {label}:\n{stdout}"));
    let num = |field: &str, pre: &str| -> u64 {
        line.split(", ")
            .find_map(|f| f.strip_prefix(pre)?.strip_suffix(" B")?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in summary line {line:?}"))
    };
    (num("up", "up "), num("down", "down "))
}

/// A reply a destination sends straight back, through the relay, with the
/// header naming `dest`.
fn round_trip(assoc: &Assoc, sock: &UdpSocket, dest: &Dest, named: SocketAddr, data: &[u8]) {
    assoc.send(sock, dest, data);
    let what = format!("echo of {} bytes from {dest:?}", data.len());
    let (src, got) = recv_relayed(sock, assoc.relay, &what);
    assert_eq!(src, named, "{what}: header must name the destination");
    assert!(
        got == data,
        "{what}: data differs (got {} bytes)",
        got.len()
    );
}

// ---------------------------------------------------------------------------
// The reply
// ---------------------------------------------------------------------------

/// BND.ADDR:BND.PORT is a UDP socket on the address the client reached the
/// proxy on, and answers (it is the relay).
#[test]
fn reply_names_relay_on_the_address_the_client_reached() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let assoc = associate(proxy.addr, any4());
    assert_eq!(assoc.relay.ip(), proxy.addr.ip(), "relay IP");
    assert_ne!(assoc.relay.port(), 0, "relay port");
    // The port is bound by the proxy as a UDP socket.
    assert!(
        UdpSocket::bind(assoc.relay).is_err(),
        "nothing holds the relay address {} as UDP",
        assoc.relay
    );
    let echo = Echo::start("127.0.0.1:0");
    let sock = udp("127.0.0.1");
    round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, b"ping");
    drop(assoc);
    proxy.finish();
}

/// Listening on every address, the relay is on the one the client used.
#[test]
fn relay_follows_the_address_connected_to() {
    let proxy = Proxy::start_on("0.0.0.0", &["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    for ip in ["127.0.0.1", "127.0.0.7"] {
        let reached = SocketAddr::new(ip.parse().unwrap(), proxy.addr.port());
        let assoc = associate(reached, any4());
        assert_eq!(
            assoc.relay.ip().to_string(),
            ip,
            "client reached the proxy on {reached}: relay {}",
            assoc.relay
        );
        let sock = udp("127.0.0.1");
        round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, ip.as_bytes());
    }
    proxy.finish();
}

/// A proxy listening on `::` (both families) reached over IPv4: the client
/// connected to an IPv4 address, so the relay must be named as one (ATYP 1),
/// not as the IPv4-mapped `::ffff:127.0.0.1` (ATYP 4), which an IPv4 UDP
/// socket cannot send to (libtorrent, for one, only accepts ATYP 1 there).
#[test]
fn dual_stack_listener_names_an_ipv4_relay_to_ipv4_clients() {
    let proxy = Proxy::start_on("::", &["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    // Over IPv6 first: [::1] in, [::1] relay.
    let v6 = associate(
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), proxy.addr.port()),
        any4(),
    );
    assert_eq!(
        v6.relay.ip(),
        Ipv6Addr::LOCALHOST,
        "relay for an IPv6 client"
    );
    round_trip(&v6, &udp("::1"), &echo.addr.into(), echo.addr, b"from ::1");
    // Over IPv4.
    let reached = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), proxy.addr.port());
    let (control, reply) = associate_raw(reached, any4());
    assert_eq!(reply.rep, rep::SUCCEEDED, "reply {:02x?}", reply.raw);
    assert_eq!(
        (reply.atyp, reply.bnd.map(|a| a.ip())),
        (0x01, Some(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        "client reached the proxy on {reached}: the relay must be named as \
         127.0.0.1 (ATYP 1); reply {:02x?}",
        reply.raw
    );
    let v4 = Assoc {
        control,
        relay: reply.bnd.unwrap(),
    };
    round_trip(
        &v4,
        &udp("127.0.0.1"),
        &echo.addr.into(),
        echo.addr,
        b"from 127.0.0.1",
    );
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn ipv4_echo_round_trip() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let dest: Dest = echo.addr.into();
    let mut sizes = vec![1, 5, 1400, 9000];
    // The largest datagram the client can send over IPv4 with a 10-byte header.
    sizes.push(MAX_V4_UDP - 10);
    let mut prng = Prng::new(7);
    for &n in &sizes {
        let mut data = vec![0u8; n];
        prng.fill(&mut data);
        round_trip(&assoc, &sock, &dest, echo.addr, &data);
    }
    // The echo server saw the link's address, one source port throughout.
    let seen = echo.seen();
    assert_eq!(seen.len(), sizes.len(), "datagrams at the echo server");
    let sources: BTreeSet<SocketAddr> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(sources.len(), 1, "one source for one destination: {seen:?}");
    let src = *sources.iter().next().unwrap();
    assert_eq!(src.ip().to_string(), "127.0.0.2", "source is the link");
    let lens: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(lens, sizes, "payload sizes at the echo server");
    drop(assoc);
    let out = proxy.finish();
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(
        link_bytes(&out.stdout, "127.0.0.2"),
        (total, total),
        "link counters: payload bytes each way"
    );
}

#[test]
fn ipv6_echo_round_trip() {
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    let echo = Echo::start("[::1]:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let dest: Dest = echo.addr.into();
    for n in [1usize, 1200, 20_000] {
        let data = vec![0x5a; n];
        round_trip(&assoc, &sock, &dest, echo.addr, &data);
    }
    let seen = echo.seen();
    assert_eq!(seen.len(), 3, "datagrams at the echo server: {seen:?}");
    for (src, _) in &seen {
        assert_eq!(src.ip(), Ipv6Addr::LOCALHOST, "IPv6 leaves by the ::1 link");
    }
    assert!(
        seen.iter().all(|(a, _)| *a == seen[0].0),
        "one source port: {seen:?}"
    );
}

/// A name (resolved by the proxy; `localhost` is in /etc/hosts): the reply
/// names the address it resolved to.
#[test]
fn domain_name_echo_round_trip() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let dest = Dest::name("localhost", echo.addr.port());
    // The first datagram waits for the name; the others find it resolved.
    for i in 0..4u8 {
        let data = [b'n', i];
        round_trip(&assoc, &sock, &dest, echo.addr, &data);
    }
    // A name and its address are one destination: one source.
    round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, b"by address");
    let seen = echo.seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.iter().all(|(a, _)| *a == seen[0].0),
        "one source: {seen:?}"
    );
    assert_eq!(seen[0].0.ip().to_string(), "127.0.0.2");
}

/// A name idle past `--udp-idle-timeout` is forgotten like an address,
/// and resolved again when the client uses it again.
#[test]
fn idle_name_is_resolved_again() {
    let proxy = Proxy::start(&["--udp-idle-timeout", "1", "127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let port = echo.addr.port();
    let dest = Dest::name("localhost", port);
    round_trip(&assoc, &sock, &dest, echo.addr, b"first");
    round_trip(&assoc, &sock, &dest, echo.addr, b"resolved");
    wait_log(
        &proxy,
        &format!("UDP name localhost:{port} idle: forgotten"),
    );
    round_trip(&assoc, &sock, &dest, echo.addr, b"again");
    drop(assoc);
    let out = proxy.finish();
    let lookups = out
        .stdout
        .matches(&format!("UDP resolving localhost:{port}"))
        .count();
    assert_eq!(
        lookups,
        2,
        "resolved once, then again after idling:\n{}",
        tail(&out.stdout, 20)
    );
}

/// Several datagrams sent at once to a name not yet resolved.
#[test]
fn domain_name_burst_before_resolution() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let dest = Dest::name("localhost", echo.addr.port());
    for i in 0..3u8 {
        assoc.send(&sock, &dest, &[b'b', i]);
    }
    let mut got = Vec::new();
    while let Some((d, from)) = recv(&sock, QUIET) {
        assert_eq!(from, assoc.relay);
        let (src, data) = parse_reply(&d);
        assert_eq!(src, echo.addr);
        got.push(data);
    }
    got.sort();
    assert_eq!(
        got,
        vec![b"b\x00".to_vec(), b"b\x01".to_vec(), b"b\x02".to_vec()],
        "datagrams held while the name resolved are all sent"
    );
}

// ---------------------------------------------------------------------------
// What is dropped
// ---------------------------------------------------------------------------

#[test]
fn fragments_are_dropped() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let dest: Dest = echo.addr.into();
    assoc.send_frag(&sock, 0x01, &dest, b"fragment 1");
    assoc.send_frag(&sock, 0x82, &dest, b"fragment 2, last");
    assert_quiet(&sock, "after FRAG != 0 datagrams");
    assert!(echo.seen().is_empty(), "fragments reached the destination");
    round_trip(&assoc, &sock, &dest, echo.addr, b"whole");
    assert_eq!(echo.seen().len(), 1, "{:?}", echo.seen());
}

#[test]
fn malformed_datagrams_are_dropped() {
    let mut proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0, 0],
        vec![0, 0, 0, 1, 127, 0],              // truncated IPv4 address
        vec![0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0], // truncated IPv6 address
        vec![0, 0, 0, 3, 50, b'l', b'o'],      // name longer than the datagram
        vec![0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7], // unknown ATYP
        vec![0, 0, 0, 3, 0, 0, 80, b'x'],      // empty name
    ];
    for g in &garbage {
        sock.send_to(g, assoc.relay).unwrap();
    }
    assert_quiet(&sock, "after malformed datagrams");
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());
    proxy.assert_alive();
    round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, b"still works");
}

/// Only the client's IP may use the relay.
#[test]
fn datagrams_from_another_address_are_dropped() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let dest: Dest = echo.addr.into();
    let stranger = udp("127.0.0.9");
    assoc.send(&stranger, &dest, b"from 127.0.0.9");
    assert_quiet(&stranger, "stranger before the client spoke");
    assert!(echo.seen().is_empty(), "relayed for 127.0.0.9");
    // The stranger did not become the client: the real one works...
    let sock = udp("127.0.0.1");
    round_trip(&assoc, &sock, &dest, echo.addr, b"from the client");
    // ...and the stranger is still refused.
    assoc.send(&stranger, &dest, b"from 127.0.0.9 again");
    assert_quiet(&stranger, "stranger after the client spoke");
    assert_quiet(&sock, "client, after the stranger's datagram");
    assert_eq!(echo.seen().len(), 1, "{:?}", echo.seen());
}

/// A port announced in the request is the only one accepted.
#[test]
fn announced_client_port_is_enforced() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let announced = udp("127.0.0.1");
    let other = udp("127.0.0.1");
    let assoc = associate(proxy.addr, announced.local_addr().unwrap());
    let dest: Dest = echo.addr.into();
    assoc.send(&other, &dest, b"from another port");
    assert_quiet(&other, "unannounced port");
    assert!(echo.seen().is_empty(), "relayed from an unannounced port");
    round_trip(&assoc, &announced, &dest, echo.addr, b"announced");
    assert_quiet(&other, "unannounced port after the echo");
}

/// Announcing 0: the first datagram's port is the client's from then on.
#[test]
fn learnt_client_port_sticks() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let first = udp("127.0.0.1");
    let second = udp("127.0.0.1");
    let assoc = associate(proxy.addr, "127.0.0.1:0".parse().unwrap());
    let dest: Dest = echo.addr.into();
    round_trip(&assoc, &first, &dest, echo.addr, b"first");
    assoc.send(&second, &dest, b"second");
    assert_quiet(&second, "a second port");
    assert_quiet(&first, "first port, after the second's datagram");
    assert_eq!(echo.seen().len(), 1, "{:?}", echo.seen());
}

/// Only destinations the client sent to may answer; they may answer more
/// than once and whenever they like (uTP does).
#[test]
fn only_destinations_may_answer() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let peer = udp("127.0.0.1");
    assoc.send(&sock, &peer.local_addr().unwrap().into(), b"hello peer");
    let (d, out) = recv(&peer, ARRIVE).expect("the peer gets the datagram");
    assert_eq!(d, b"hello peer");
    assert_eq!(
        out.ip().to_string(),
        "127.0.0.2",
        "outgoing socket's address"
    );
    // The peer speaks twice, unprompted the second time.
    for msg in [&b"answer 1"[..], b"answer 2"] {
        peer.send_to(msg, out).unwrap();
        let (src, data) = recv_relayed(&sock, assoc.relay, "peer's datagram");
        assert_eq!(src, peer.local_addr().unwrap());
        assert_eq!(data, msg);
    }
    // Strangers writing to the outgoing socket: same IP other port, other IP.
    for ip in ["127.0.0.1", "127.0.0.8"] {
        let stranger = udp(ip);
        stranger.send_to(b"unsolicited", out).unwrap();
        assert_quiet(&sock, &format!("unsolicited datagram from {ip}"));
    }
    // The peer still gets through.
    peer.send_to(b"answer 3", out).unwrap();
    let (src, data) = recv_relayed(&sock, assoc.relay, "peer's third datagram");
    assert_eq!(
        (src, &data[..]),
        (peer.local_addr().unwrap(), &b"answer 3"[..])
    );
}

/// When the control connection closes, the association's sockets close:
/// nothing goes either way any more.
#[test]
fn nothing_relayed_after_control_connection_closes() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let fds = proxy.fd_count_quiet();
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let peer = udp("127.0.0.1");
    let peer_dest: Dest = peer.local_addr().unwrap().into();
    assoc.send(&sock, &peer_dest, b"before");
    let (d, out) = recv(&peer, ARRIVE).expect("the peer gets the datagram");
    assert_eq!(d, b"before");
    peer.send_to(b"reply before", out).unwrap();
    recv_relayed(&sock, assoc.relay, "reply before the close");

    let relay = assoc.relay;
    let control_local = assoc.control.local_addr().unwrap();
    drop(assoc.control);
    wait_log(
        &proxy,
        &format!("{control_local} -> 0.0.0.0:0 via {relay}: "),
    );
    // Client to destination.
    let d = datagram(0, &peer_dest, b"after");
    let _ = sock.send_to(&d, relay);
    assert_quiet(&peer, "destination, after the control connection closed");
    // Destination to client.
    let _ = peer.send_to(b"reply after", out);
    assert_quiet(&sock, "client, after the control connection closed");
    // Both sockets are gone, and so is every descriptor of the association.
    wait_udp_released(relay, "relay");
    wait_udp_released(out, "outgoing socket");
    assert_eq!(
        proxy.fd_count_settled(fds, ARRIVE),
        fds,
        "descriptors after the association"
    );
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

/// With two links, new destinations alternate between them; each
/// destination keeps its link and sees one source ip:port throughout, and
/// each link has one outgoing socket per association. Weighted round robin
/// (`--balance weights`), so that the picks are known in advance: learned
/// balancing favours the link whose destinations answered.
#[test]
fn destinations_are_spread_and_pinned() {
    const DESTS: usize = 6;
    const ROUNDS: usize = 4;
    let proxy = Proxy::start(&["--balance", "weights", "127.0.0.2", "127.0.0.3"]);
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let peers: Vec<UdpSocket> = (0..DESTS).map(|_| udp("127.0.0.1")).collect();
    // Source each peer saw, per round.
    let mut sources: Vec<Vec<SocketAddr>> = vec![Vec::new(); DESTS];
    let mut per_link: BTreeMap<IpAddr, (u64, u64)> = BTreeMap::new();
    for round in 0..ROUNDS {
        for (i, peer) in peers.iter().enumerate() {
            let addr = peer.local_addr().unwrap();
            let msg = format!("round {round} dest {i}");
            assoc.send(&sock, &addr.into(), msg.as_bytes());
            let (d, from) = recv(peer, ARRIVE)
                .unwrap_or_else(|| panic!("dest {i} got nothing in round {round}"));
            assert_eq!(d, msg.as_bytes());
            sources[i].push(from);
            let answer = format!("answer {round} from {i}");
            peer.send_to(answer.as_bytes(), from).unwrap();
            let (src, data) = recv_relayed(&sock, assoc.relay, &msg);
            assert_eq!(src, addr, "header of the answer to {msg:?}");
            assert_eq!(data, answer.as_bytes());
            let e = per_link.entry(from.ip()).or_default();
            e.0 += msg.len() as u64;
            e.1 += answer.len() as u64;
        }
    }
    for (i, s) in sources.iter().enumerate() {
        assert!(
            s.iter().all(|a| *a == s[0]),
            "dest {i} saw several sources over {ROUNDS} rounds: {s:?}"
        );
    }
    let first: Vec<SocketAddr> = sources.iter().map(|s| s[0]).collect();
    let ips: Vec<String> = first.iter().map(|a| a.ip().to_string()).collect();
    for w in ips.windows(2) {
        assert_ne!(
            w[0], w[1],
            "new destinations alternate between the links: {ips:?}"
        );
    }
    let distinct: BTreeSet<SocketAddr> = first.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        2,
        "one outgoing socket per link for the association: {first:?}"
    );
    let by_ip: BTreeSet<String> = ips.iter().cloned().collect();
    assert_eq!(
        by_ip,
        ["127.0.0.2", "127.0.0.3"].map(String::from).into(),
        "both links used: {first:?}"
    );

    // A second association gets sockets of its own.
    let assoc2 = associate(proxy.addr, any4());
    let sock2 = udp("127.0.0.1");
    let mut second = BTreeSet::new();
    for (i, peer) in peers.iter().take(2).enumerate() {
        let msg = format!("association 2 dest {i}");
        assoc2.send(&sock2, &peer.local_addr().unwrap().into(), msg.as_bytes());
        let (d, from) = recv(peer, ARRIVE).expect("second association's datagram");
        assert_eq!(d, msg.as_bytes());
        second.insert(from);
        per_link.entry(from.ip()).or_default().0 += msg.len() as u64;
    }
    assert!(
        second.is_disjoint(&distinct),
        "the second association reuses the first one's sockets: {second:?} vs {distinct:?}"
    );
    drop(assoc);
    drop(assoc2);
    let out = proxy.finish();
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let want = per_link[&ip.parse::<IpAddr>().unwrap()];
        assert_eq!(
            link_bytes(&out.stdout, ip),
            want,
            "link {ip} counters (payload up, down)"
        );
    }
}

// ---------------------------------------------------------------------------
// Edges
// ---------------------------------------------------------------------------

/// An announcement given as a name (ATYP 3) still names the port the client
/// will send from: it is held to it as to an announced address's port.
#[test]
fn port_announced_with_a_name_is_enforced() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let announced = udp("127.0.0.1");
    let other = udp("127.0.0.1");
    let mut control = client(proxy.addr);
    socks5_greet(&mut control);
    let port = announced.local_addr().unwrap().port();
    control
        .write_all(&socks5_request(
            UDP_ASSOCIATE,
            &Dest::name("localhost", port),
        ))
        .unwrap();
    let reply = read_reply5(&mut control).expect("reply to UDP ASSOCIATE");
    assert_eq!(reply.rep, rep::SUCCEEDED, "reply {:02x?}", reply.raw);
    let assoc = Assoc {
        control,
        relay: reply.bnd.expect("relay address"),
    };
    let dest: Dest = echo.addr.into();
    assoc.send(&other, &dest, b"from another port");
    assert_quiet(
        &other,
        "port other than the one announced (as localhost:PORT)",
    );
    assert!(
        echo.seen().is_empty(),
        "relayed from port {} though the request announced localhost:{port}",
        other.local_addr().unwrap().port()
    );
}

/// With username/password authentication on, an authenticated client gets
/// its association.
#[test]
fn associate_after_authentication() {
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let mut control = client(proxy.addr);
    control.write_all(&[0x05, 0x01, 0x02]).unwrap();
    let mut m = [0u8; 2];
    std::io::Read::read_exact(&mut control, &mut m).unwrap();
    assert_eq!(m, [0x05, 0x02], "method selection");
    control.write_all(b"\x01\x05alice\x06s3cret").unwrap();
    std::io::Read::read_exact(&mut control, &mut m).unwrap();
    assert_eq!(m, [0x01, 0x00], "RFC 1929 status");
    control
        .write_all(&socks5_request(UDP_ASSOCIATE, &Dest::Addr(any4())))
        .unwrap();
    let reply = read_reply5(&mut control).expect("reply to UDP ASSOCIATE");
    assert_eq!(reply.rep, rep::SUCCEEDED, "reply {:02x?}", reply.raw);
    let assoc = Assoc {
        control,
        relay: reply.bnd.expect("relay address"),
    };
    round_trip(
        &assoc,
        &udp("127.0.0.1"),
        &echo.addr.into(),
        echo.addr,
        b"authenticated",
    );
}

/// Destinations the proxy will not or cannot send to are dropped without
/// harming the association: a closed port (ICMP errors come back on the
/// outgoing socket), the proxy's own address, an IPv6 one with no IPv6 link.
#[test]
fn unreachable_destinations_do_not_break_the_association() {
    let mut proxy = Proxy::start(&["127.0.0.2"]);
    let echo = Echo::start("127.0.0.1:0");
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let closed = {
        let s = udp("127.0.0.1");
        s.local_addr().unwrap()
    };
    for _ in 0..3 {
        assoc.send(&sock, &closed.into(), b"nobody here");
    }
    // The proxy's own address: nobody would answer on UDP there anyway,
    // so to tell a refusal from a datagram lost, the test listens there
    // itself (UDP on the TCP listener's port number). A refused datagram
    // never reaches it. The proxy relays datagrams in order through one
    // socket per link, and loopback delivers at once: when a control
    // datagram sent right after it has arrived, the first would have too.
    let own = UdpSocket::bind(proxy.addr)
        .unwrap_or_else(|e| panic!("bind UDP {} (the proxy's own address): {e}", proxy.addr));
    let control = udp("127.0.0.1");
    assoc.send(&sock, &proxy.addr.into(), b"to the proxy itself");
    assoc.send(&sock, &control.local_addr().unwrap().into(), b"control");
    let (got, _) = recv(&control, ARRIVE).expect("the control datagram, sent right after, arrives");
    assert_eq!(got, b"control");
    own.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match own.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a datagram for the proxy's own address was sent there: {other:?}"),
    }
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assoc.send(&sock, &v6.into(), b"no IPv6 link");
    assert_quiet(&sock, "after datagrams to unreachable destinations");
    proxy.assert_alive();
    round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, b"still works");
    round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, b"and again");
}

/// Many associations opened and closed: every descriptor comes back.
#[test]
fn associations_do_not_leak() {
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    let fds = proxy.fd_count_quiet();
    let echo = Echo::start("127.0.0.1:0");
    for i in 0..30u8 {
        let assoc = associate(proxy.addr, any4());
        let sock = udp("127.0.0.1");
        round_trip(&assoc, &sock, &echo.addr.into(), echo.addr, &[i]);
    }
    assert_eq!(
        proxy.fd_count_settled(fds, ARRIVE),
        fds,
        "descriptors after 30 associations"
    );
    proxy.finish();
}

/// The link summary line for UDP at exit, `link <label> udp: ...`.
fn udp_summary(stdout: &str, label: &str) -> String {
    let prefix = format!("link {label} udp: ");
    stdout
        .lines()
        .filter_map(|l| l.find(&prefix).map(|p| l[p + prefix.len()..].to_string()))
        .next_back()
        .unwrap_or_else(|| panic!("no UDP summary line for {label}:\n{}", tail(stdout, 20)))
}

/// The proxy's resident memory, from /proc.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A destination address of its own for each `i` (100,000 fit): 127.1.x.y
/// and 127.2.x.y, all loopback, never .0 or .255.
fn distinct_dest(i: usize, port: u16) -> SocketAddr {
    let (hi, lo) = (i / 62_500, i % 62_500);
    SocketAddr::from((
        [127, 1 + hi as u8, (lo / 250) as u8, (lo % 250) as u8 + 1],
        port,
    ))
}

/// At the cap (lowered to 4 by `--udp-max-destinations`), while all four
/// destinations are live a new one is refused: a flow that keeps talking is
/// never cut for a newcomer. Once some are idle (`--udp-idle-timeout` 1 s),
/// the least recently used idle one makes room; one remembered comes back
/// without needing room. Both are logged once.
#[test]
fn at_the_cap_a_new_destination_waits_for_an_idle_one() {
    let proxy = Proxy::start(&[
        "--udp-max-destinations",
        "4",
        "--udp-idle-timeout",
        "1",
        "127.0.0.2",
    ]);
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    // One socket receives for every destination: 127.1.0.k, all on its
    // port, so what it receives comes in the order the proxy relayed it.
    let sink = UdpSocket::bind("0.0.0.0:0").expect("bind the sink");
    let port = sink.local_addr().unwrap().port();
    let dest = |k: u8| SocketAddr::from(([127, 1, 0, k], port));
    let relayed = |k: u8, what: &[u8]| {
        assoc.send(&sock, &dest(k).into(), what);
        let (got, _) = recv(&sink, ARRIVE).unwrap_or_else(|| {
            panic!(
                "{}: nothing arrived\n{}",
                dest(k),
                tail(&proxy.stdout(), 10)
            )
        });
        assert_eq!(got, what, "to {}", dest(k));
    };
    for k in 1..=4 {
        relayed(k, format!("to {k}").as_bytes());
    }
    // Five while four are live: dropped. The control, sent after it to a
    // destination it has, is what the sink gets next.
    assoc.send(&sock, &dest(5).into(), b"to 5, refused");
    relayed(1, b"control");
    wait_log(&proxy, "a UDP association has 4 live destinations, its cap");
    // 2, 3 and 4 go idle (1 is younger): five takes 2's place.
    wait_log(&proxy, &format!("UDP {} idle: forgotten", dest(4)));
    relayed(5, b"to 5");
    // 3 is remembered: it comes back without needing room; 2 is gone and
    // needs it, which 4 (idle) gives.
    relayed(3, b"to 3 again");
    relayed(2, b"to 2 again");
    drop(assoc);
    let out = proxy.finish();
    for line in [
        "a UDP association has 4 live destinations, its cap",
        "a UDP association reached 4 destinations",
    ] {
        assert_eq!(
            out.stdout.matches(line).count(),
            1,
            "{line:?} logged once:\n{}",
            tail(&out.stdout, 20)
        );
    }
}

/// A destination idle past `--udp-idle-timeout` is forgotten (its answers
/// are dropped), and when the client sends to it again it goes out through
/// the link and socket it had, although the selector's next pick is the
/// other link. Weighted round robin, so that the next pick is known: under
/// learned balancing d's answer would draw the next picks to d's link.
#[test]
fn idle_destination_is_forgotten_then_pinned_again_to_its_link() {
    let proxy = Proxy::start(&[
        "--balance",
        "weights",
        "--udp-idle-timeout",
        "1",
        "127.0.0.2",
        "127.0.0.3",
    ]);
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    let peers: Vec<UdpSocket> = (0..5).map(|_| udp("127.0.0.1")).collect();
    let addr = |i: usize| peers[i].local_addr().unwrap();
    let reach = |i: usize, what: &[u8]| -> SocketAddr {
        assoc.send(&sock, &addr(i).into(), what);
        let (d, from) =
            recv(&peers[i], ARRIVE).unwrap_or_else(|| panic!("destination {i}: nothing arrived"));
        assert_eq!(d, what, "destination {i}");
        from
    };
    let (d, e, f) = (0, 1, 2);
    let via_d = reach(d, b"to d");
    let via_e = reach(e, b"to e");
    let via_f = reach(f, b"to f");
    assert_ne!(via_d.ip(), via_e.ip(), "new destinations alternate links");
    assert_eq!(via_d, via_f, "and share the link's socket");
    peers[d].send_to(b"from d", via_d).unwrap();
    assert_eq!(
        recv_relayed(&sock, assoc.relay, "answer of d"),
        (addr(d), b"from d".to_vec())
    );
    // Nothing passes for d: the proxy forgets it within the idle time.
    wait_log(&proxy, &format!("UDP {} idle: forgotten", addr(d)));
    // Two new destinations: picks 4 and 5, on e's link then d's.
    let (g, h) = (3, 4);
    let via_g = reach(g, b"to g");
    let via_h = reach(h, b"to h");
    assert_eq!((via_g, via_h), (via_e, via_d), "picks keep alternating");
    // d's answer is dropped now; h's, after it on the same socket, arrives.
    peers[d].send_to(b"from d, forgotten", via_d).unwrap();
    peers[h].send_to(b"from h", via_d).unwrap();
    assert_eq!(
        recv_relayed(&sock, assoc.relay, "answer of h"),
        (addr(h), b"from h".to_vec())
    );
    // d speaks again: the next pick would be e's link, but d keeps its own.
    assert_eq!(
        reach(d, b"to d again"),
        via_d,
        "d comes back through its link"
    );
    peers[d].send_to(b"from d again", via_d).unwrap();
    assert_eq!(
        recv_relayed(&sock, assoc.relay, "answer of d again"),
        (addr(d), b"from d again".to_vec())
    );
    drop(assoc);
    proxy.finish();
}

/// One association sends to 100,000 distinct destinations over time, in
/// batches of 2,000, each sent once the one before is forgotten
/// (`--udp-idle-timeout` 0.3 s; the default cap of 4,096 is reached on the
/// third batch, after which idle ones make room): every datagram is
/// relayed, every 100th destination's answer comes back, the proxy's
/// memory stays flat, and the link counters add up.
#[test]
fn a_hundred_thousand_destinations_through_one_association() {
    const TOTAL: usize = 100_000;
    const BATCH: usize = 2_000;
    const ANSWERING: usize = 100;
    let proxy = Proxy::start(&["--udp-idle-timeout", "0.3", "127.0.0.2"]);
    let assoc = associate(proxy.addr, any4());
    let sock = udp("127.0.0.1");
    // One socket receives for the silent destinations, on every 127.1/16
    // and 127.2/16 address, all on its port.
    let sink = UdpSocket::bind("0.0.0.0:0").expect("bind the sink");
    let port = sink.local_addr().unwrap().port();
    let mut rss = Vec::new();
    let (mut up, mut down) = (0u64, 0u64);
    let mut log_seen = 0;
    for batch in 0..TOTAL / BATCH {
        let mut last = None;
        for i in batch * BATCH..(batch + 1) * BATCH {
            let data = format!("datagram {i}");
            if i % ANSWERING == 0 {
                // One that answers: a socket of its own on its own address.
                let peer = UdpSocket::bind(distinct_dest(i, 0)).expect("bind a destination");
                peer.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let addr = peer.local_addr().unwrap();
                assoc.send(&sock, &addr.into(), data.as_bytes());
                let (got, from) = recv(&peer, ARRIVE)
                    .unwrap_or_else(|| panic!("destination {i} ({addr}): nothing arrived"));
                assert_eq!(got, data.as_bytes(), "destination {i}");
                peer.send_to(b"answer", from).unwrap();
                let what = format!("answer of destination {i}");
                assert_eq!(
                    recv_relayed(&sock, assoc.relay, &what),
                    (addr, b"answer".to_vec())
                );
                down += 6;
                last = Some(addr);
            } else {
                let dest = distinct_dest(i, port);
                assoc.send(&sock, &dest.into(), data.as_bytes());
                let (got, _) = recv(&sink, ARRIVE).unwrap_or_else(|| {
                    panic!(
                        "destination {i} ({dest}): nothing arrived\n--- proxy stdout (tail):\n{}",
                        tail(&proxy.stdout(), 20)
                    )
                });
                assert_eq!(got, data.as_bytes(), "destination {i}");
                last = Some(dest);
            }
            up += data.len() as u64;
        }
        // The batch's last destination forgotten: the whole batch is.
        let needle = format!("UDP {} idle: forgotten", last.unwrap());
        let deadline = Instant::now() + ARRIVE;
        while !proxy.stdout_from(log_seen).contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within {ARRIVE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
        log_seen = proxy.stdout_len();
        if batch % 10 == 9 {
            rss.push(vm_rss_kib(proxy.pid));
        }
    }
    eprintln!("proxy VmRSS every 20,000 destinations: {rss:?} KiB");
    // Full since the third batch: from 20,000 on, what it holds stays.
    let growth = rss.iter().max().unwrap() - rss[0];
    assert!(
        growth <= 1024,
        "VmRSS grew by {growth} KiB after 20,000 destinations: {rss:?} KiB"
    );
    drop(assoc);
    let out = proxy.finish();
    assert_eq!(
        udp_summary(&out.stdout, "127.0.0.2"),
        format!(
            "{TOTAL} destinations, up {TOTAL} datagrams {up} B, down {} datagrams {down} B",
            TOTAL / ANSWERING
        ),
        "the link's UDP counters at exit"
    );
    assert_eq!(link_bytes(&out.stdout, "127.0.0.2"), (up, down));
    assert!(
        out.stdout.contains("link 127.0.0.2: up, 1 connection,"),
        "the association counts as the link's connection:\n{}",
        tail(&out.stdout, 5)
    );
    assert!(
        !out.stdout.contains("live destinations, its cap"),
        "a destination was refused"
    );
}

/// The soft and hard open-files limits of this process.
fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let row: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files row")
        .split_whitespace()
        .collect();
    let n = |s: &str| s.parse().unwrap_or(u64::MAX);
    (n(row[3]), n(row[4]))
}

/// At most 4,096 associations: the next one gets an error reply and the
/// refusal is logged; closing one makes room.
#[test]
fn at_most_4096_associations() {
    const LIMIT: usize = 4096;
    // 4,097 control connections here: the soft limit up to the hard one.
    let (soft, hard) = nofile_limits();
    if soft < 6000 {
        sh(
            "prlimit",
            &[
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={hard}:{hard}"),
            ],
        );
    }
    if nofile_limits().0 < 6000 {
        not_run(
            "at_most_4096_associations",
            "needs an open-files limit of 6,000 (ulimit -Hn)",
        );
        return;
    }
    // (One client opens them all: its own limit is lifted for this.)
    let proxy = Proxy::start(&["--max-client-associations", "5000", "127.0.0.2"]);
    let mut held: Vec<Assoc> = (0..LIMIT).map(|_| associate(proxy.addr, any4())).collect();
    let (mut s, reply) = associate_raw(proxy.addr, any4());
    assert_eq!(
        reply.rep,
        rep::GENERAL_FAILURE,
        "association {}: {:02x?}",
        LIMIT + 1,
        reply.raw
    );
    read_until_closed(&mut s, Duration::from_secs(30)).expect("closed after the refusal");
    // One closed: a new one fits once the proxy has seen the close.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, reply) = associate_raw(proxy.addr, any4());
        if reply.rep == rep::SUCCEEDED {
            held.push(Assoc {
                control: s,
                relay: reply.bnd.unwrap(),
            });
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room 30 s after closing an association"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let out = proxy.finish();
    assert!(
        out.stdout.contains(&format!(
            "UDP ASSOCIATE refused: {LIMIT} associations are open"
        )),
        "the refusal is logged:\n{}",
        tail(&out.stdout, 20)
    );
    drop(held);
}

/// The descriptor budget counts what each UDP association really holds
/// (its relay socket and one socket per link it sends by), not two per
/// connection: near the open-file limit a new client waits in the backlog,
/// and every association admitted still opens all its sockets.
#[test]
fn associations_count_every_socket_in_the_descriptor_budget() {
    // 80 descriptors: the reserve (32) and the process's own leave room
    // for a handful of associations of five descriptors each.
    let proxy = Proxy::launch(
        &Launch {
            wrap: vec!["prlimit", "--nofile=80:80", "--"],
            ..Launch::default()
        },
        &["127.0.0.2/1", "127.0.0.3/1", "127.0.0.4/1"],
    );
    let echos: Vec<Echo> = (0..3).map(|_| Echo::start("127.0.0.1:0")).collect();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(&GREETING).unwrap();
        let mut r = [0u8; 2];
        if s.read_exact(&mut r).is_err() {
            break; // not accepted: the budget is spent
        }
        s.write_all(&socks5_request(UDP_ASSOCIATE, &Dest::Addr(any4())))
            .unwrap();
        let reply = read_reply5(&mut s).expect("reply to UDP ASSOCIATE");
        assert_eq!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
        let assoc = Assoc {
            control: s,
            relay: reply.bnd.unwrap(),
        };
        let sock = udp("127.0.0.1");
        // Three destinations, three links (weights 1/1/1 take turns).
        for e in &echos {
            round_trip(&assoc, &sock, &e.addr.into(), e.addr, b"ping");
        }
        held.push((assoc, sock));
    }
    let n = held.len();
    assert!(
        (2..20).contains(&n),
        "{n} associations admitted under an 80-descriptor limit"
    );
    drop(held);
    let out = proxy.finish();
    assert!(
        !out.stdout.contains("Too many open files"),
        "{}",
        tail(&out.stdout, 20)
    );
}
