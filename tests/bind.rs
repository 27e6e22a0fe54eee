//! SOCKS5 and SOCKS4 BIND (RFC 1928 §4) against the real binary. The test
//! plays both parts: the client asking the proxy to listen, and the remote
//! peer that connects to the address of the first reply. Then the second
//! reply, bytes both ways, half-close, and BINDs abandoned before anyone
//! came.

mod common;

use common::*;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const BIND: u8 = 0x02;
const SOCKS4_GRANTED: u8 = 0x5A;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Greets and sends a SOCKS5 BIND for `dest` (the expected peer).
fn socks5_bind(proxy: SocketAddr, dest: SocketAddr) -> TcpStream {
    let mut s = client(proxy);
    socks5_greet(&mut s);
    s.write_all(&socks5_request(BIND, &Dest::Addr(dest)))
        .expect("send BIND");
    s
}

/// Reads a SOCKS5 reply that must be a success with an IP address.
fn reply_ok(s: &mut TcpStream, what: &str) -> SocketAddr {
    let r = read_reply5(s).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.rep, rep::SUCCEEDED, "{what}: reply {:02x?}", r.raw);
    r.bnd
        .unwrap_or_else(|| panic!("{what}: no IP in the reply {:02x?}", r.raw))
}

/// A TCP connection from `ip` (port 0) to `to`: the remote peer.
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let local = SocketAddr::new(ip.parse().unwrap(), 0);
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.bind(&local.into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    s.connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("peer connect {local} -> {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn read_n(s: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)
        .unwrap_or_else(|e| panic!("{what}: reading {n} bytes: {e}"));
    v
}

/// SOCKS4 request with CD = 2 (BIND).
fn socks4_bind_request(dest: SocketAddrV4) -> Vec<u8> {
    let mut v = socks4_request(*dest.ip(), dest.port(), b"tester", None);
    v[1] = BIND;
    v
}

fn parse_reply4(r: [u8; 8], what: &str) -> SocketAddr {
    assert_eq!(r[0], 0, "{what}: SOCKS4 reply VN: {r:02x?}");
    assert_eq!(r[1], SOCKS4_GRANTED, "{what}: SOCKS4 reply CD: {r:02x?}");
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(r[4], r[5], r[6], r[7])),
        u16::from_be_bytes([r[2], r[3]]),
    )
}

/// `(connections, up, down)` of the exit summary line for `label`.
fn link_summary(stdout: &str, label: &str) -> (u64, u64, u64) {
    let prefix = format!("link {label}: ");
    let line = stdout
        .lines()
        .filter_map(|l| l.find(&prefix).map(|p| &l[p + prefix.len()..]))
        .next_back()
        .unwrap_or_else(|| panic!("no summary line for {label}:\n{stdout}"));
    let field = |pre: &str, post: &str| -> u64 {
        line.split(", ")
            .find_map(|f| f.strip_prefix(pre)?.strip_suffix(post)?.parse().ok())
            .unwrap_or_else(|| panic!("no {pre:?}..{post:?} in summary line {line:?}"))
    };
    // "1 connection", "2 connections".
    let connections = line
        .split(", ")
        .find_map(|f| {
            let n = f
                .strip_suffix(" connections")
                .or_else(|| f.strip_suffix(" connection"))?;
            n.parse().ok()
        })
        .unwrap_or_else(|| panic!("no connection count in summary line {line:?}"));
    (connections, field("up ", " B"), field("down ", " B"))
}

/// Waits until connecting to `addr` is refused (nobody listens any more).
fn wait_refused(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            other => assert!(
                Instant::now() < deadline,
                "{what}: {addr} still accepts connections ({other:?})"
            ),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A CONNECT through the proxy still works.
fn still_serves(proxy: &mut Proxy) {
    proxy.assert_alive();
    let echo = Server::echo("127.0.0.1:0");
    let (mut s, _) = socks5_ok(proxy.addr, echo.addr);
    s.write_all(b"alive?").unwrap();
    assert_eq!(read_n(&mut s, 6, "echo through the proxy"), b"alive?");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The whole exchange: first reply (listening address on the link), the
/// peer connects, second reply (the peer as the proxy saw it), then bulk
/// data both ways, the client's half-close reaching the peer, which still
/// answers, and the counters at exit.
#[test]
fn socks5_bind_relays_both_ways_with_half_close() {
    const UP: u64 = 1 << 20;
    const DOWN: u64 = 2 << 20;
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "127.0.0.6:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    assert_eq!(
        listening.ip().to_string(),
        "127.0.0.2",
        "listens on the link"
    );
    assert_ne!(listening.port(), 0);

    let mut peer = connect_from("127.0.0.6", listening);
    let seen = reply_ok(&mut c, "second BIND reply");
    assert_eq!(
        seen,
        peer.local_addr().unwrap(),
        "second reply names the peer"
    );
    assert_eq!(peer.peer_addr().unwrap(), listening);

    c.write_all(b"hello peer").unwrap();
    assert_eq!(read_n(&mut peer, 10, "peer"), b"hello peer");
    peer.write_all(b"hello client").unwrap();
    assert_eq!(read_n(&mut c, 12, "client"), b"hello client");

    // Bulk: the client sends UP bytes and half-closes; the peer reads to
    // EOF, then answers DOWN bytes and closes.
    let mut c_send = c.try_clone().unwrap();
    let sender = thread::spawn(move || {
        send_stream(&mut c_send, 1, UP, 64 * 1024).expect("client sends");
        c_send.shutdown(Shutdown::Write).unwrap();
    });
    let mut p = peer.try_clone().unwrap();
    let peer_side = thread::spawn(move || {
        recv_stream(&mut p, 1, UP, 64 * 1024).expect("peer receives up to EOF");
        send_stream(&mut p, 2, DOWN, 64 * 1024).expect("peer answers after EOF");
        p.shutdown(Shutdown::Write).unwrap();
    });
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    recv_stream(&mut c, 2, DOWN, 64 * 1024)
        .unwrap_or_else(|e| panic!("client receives the answer: {e}"));
    sender.join().unwrap();
    peer_side.join().unwrap();
    drop(peer);
    drop(c);
    let out = proxy.finish();
    assert_eq!(
        link_summary(&out.stdout, "127.0.0.2"),
        (1, UP + 10, DOWN + 12),
        "link summary (connections, up, down)"
    );
}

/// The other way: the peer half-closes, the client sees EOF and can still
/// send.
#[test]
fn peer_half_close_reaches_client() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    let mut peer = connect_from("127.0.0.1", listening);
    reply_ok(&mut c, "second BIND reply");
    peer.write_all(b"last words").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"last words");
    c.write_all(b"I heard you").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut peer), b"I heard you");
    drop((c, peer));
    proxy.finish();
}

/// The peer may write at once: its bytes follow the second reply.
#[test]
fn socks4_bind() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = client(proxy.addr);
    c.write_all(&socks4_bind_request("127.0.0.6:0".parse().unwrap()))
        .unwrap();
    let r = read_reply4(&mut c).expect("first SOCKS4 BIND reply");
    let listening = parse_reply4(r, "first SOCKS4 BIND reply");
    assert_eq!(listening.ip().to_string(), "127.0.0.2");
    assert_ne!(listening.port(), 0);

    let mut peer = connect_from("127.0.0.6", listening);
    peer.write_all(b"early bytes").unwrap();
    let r = read_reply4(&mut c).expect("second SOCKS4 BIND reply");
    let seen = parse_reply4(r, "second SOCKS4 BIND reply");
    assert_eq!(
        seen,
        peer.local_addr().unwrap(),
        "second reply names the peer"
    );
    assert_eq!(read_n(&mut c, 11, "client"), b"early bytes");
    c.write_all(b"pong").unwrap();
    assert_eq!(read_n(&mut peer, 4, "peer"), b"pong");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut peer), b"");
    peer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"");
    drop((c, peer));
    proxy.finish();
}

/// An IPv6 DST.ADDR makes the proxy listen on an IPv6 link.
#[test]
fn ipv6_bind() {
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    let mut c = socks5_bind(proxy.addr, "[::1]:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    assert_eq!(
        listening.ip(),
        Ipv6Addr::LOCALHOST,
        "listens on the ::1 link"
    );
    let mut peer = connect_from("::1", listening);
    let seen = reply_ok(&mut c, "second BIND reply");
    assert_eq!(seen, peer.local_addr().unwrap());
    peer.write_all(b"over IPv6").unwrap();
    assert_eq!(read_n(&mut c, 9, "client"), b"over IPv6");
    c.write_all(b"ok").unwrap();
    assert_eq!(read_n(&mut peer, 2, "peer"), b"ok");
    drop((c, peer));
    proxy.finish();
}

/// One incoming connection per BIND: once it came, the port is closed.
#[test]
fn only_one_connection_is_accepted() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    let mut peer = connect_from("127.0.0.1", listening);
    reply_ok(&mut c, "second BIND reply");
    wait_refused(listening, "after the BIND's one connection");
    // The first one is unharmed.
    peer.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut c, 10, "client"), b"still here");
    drop((c, peer));
    proxy.finish();
}

/// BINDs, like new connections, go round the links.
#[test]
fn binds_go_round_the_links() {
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    let mut ips = Vec::new();
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
        ips.push(reply_ok(&mut c, "first BIND reply").ip().to_string());
        open.push(c);
    }
    let used: BTreeSet<&str> = ips.iter().map(String::as_str).collect();
    assert_eq!(
        used,
        BTreeSet::from(["127.0.0.2", "127.0.0.3"]),
        "listening addresses of 4 BINDs: {ips:?}"
    );
    drop(open);
    proxy.finish();
}

/// Clients that close before anyone connected: the listeners close, no
/// descriptor is left behind, and the proxy keeps serving (CONNECT and a
/// complete BIND).
#[test]
fn abandoned_binds_do_not_leak() {
    let mut proxy = Proxy::start(&["127.0.0.2"]);
    let fds = proxy.fd_count_quiet();
    let mut listening = Vec::new();
    for _ in 0..20 {
        let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
        listening.push(reply_ok(&mut c, "first BIND reply"));
        drop(c);
    }
    // SOCKS4 too.
    let mut c = client(proxy.addr);
    c.write_all(&socks4_bind_request("0.0.0.0:0".parse().unwrap()))
        .unwrap();
    listening.push(parse_reply4(read_reply4(&mut c).unwrap(), "SOCKS4 BIND"));
    drop(c);
    for addr in &listening {
        wait_refused(*addr, "listener of an abandoned BIND");
    }
    assert_eq!(
        proxy.fd_count_settled(fds, Duration::from_secs(5)),
        fds,
        "descriptors after 21 abandoned BINDs"
    );
    // The log lines come through a pipe: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let count = |p: &Proxy| p.stdout().matches("client closed during BIND").count();
    while count(&proxy) < 21 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count(&proxy),
        21,
        "log lines for the abandoned BINDs:\n{}",
        tail(&proxy.stdout(), 30)
    );

    still_serves(&mut proxy);
    let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
    let addr = reply_ok(&mut c, "first BIND reply");
    let mut peer = connect_from("127.0.0.1", addr);
    reply_ok(&mut c, "second BIND reply");
    peer.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 1, "client"), b"x");
    drop((c, peer));
    proxy.finish();
}

/// Bytes the client sends while the proxy still waits for the peer reach
/// the peer once it came.
#[test]
fn client_bytes_sent_while_waiting_reach_the_peer() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    c.write_all(b"sent before you came").unwrap();
    thread::sleep(Duration::from_millis(200));
    let mut peer = connect_from("127.0.0.1", listening);
    reply_ok(&mut c, "second BIND reply");
    assert_eq!(read_n(&mut peer, 20, "peer"), b"sent before you came");
    drop((c, peer));
    proxy.finish();
}

/// A peer that connects and leaves at once: the client gets the second
/// reply, then EOF.
#[test]
fn peer_that_connects_and_leaves() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "0.0.0.0:0".parse().unwrap());
    let listening = reply_ok(&mut c, "first BIND reply");
    let peer = connect_from("127.0.0.1", listening);
    let peer_addr = peer.local_addr().unwrap();
    drop(peer);
    assert_eq!(reply_ok(&mut c, "second BIND reply"), peer_addr);
    let rest = read_until_closed(&mut c, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after the peer left: {e}"));
    assert!(rest.is_empty(), "data after the second reply: {rest:02x?}");
    proxy.finish();
}

/// A BIND for a family the proxy has no link of: network unreachable.
#[test]
fn bind_without_a_link_of_the_family_is_refused() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = socks5_bind(proxy.addr, "[::1]:0".parse().unwrap());
    let r = read_reply5(&mut c).expect("reply to an IPv6 BIND");
    assert_eq!(
        r.rep,
        rep::NETWORK_UNREACHABLE,
        "IPv6 BIND with IPv4 links only: reply {:02x?}",
        r.raw
    );
    read_until_closed(&mut c, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after the error reply: {e}"));
    proxy.finish();
}

/// README: BIND waits up to 2 minutes (`--bind-timeout`) for its peer, then
/// answers TTL expired and closes. Shortened here; the default is checked
/// in `--help`.
#[test]
fn bind_with_no_peer_answers_ttl_expired_at_its_timeout() {
    let mut proxy = Proxy::start(&["--bind-timeout", "1", "127.0.0.1"]);
    let mut s = socks5_bind(proxy.addr, "127.0.0.1:0".parse().unwrap());
    reply_ok(&mut s, "first reply");
    let waited = Instant::now();
    let second = read_reply5(&mut s).expect("a second reply at the timeout");
    assert_eq!(second.rep, 0x06, "TTL expired: {:02x?}", second.raw);
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "answered before the timeout: {:?}",
        waited.elapsed()
    );
    read_until_closed(&mut s, Duration::from_secs(10)).expect("closed after the reply");
    let help = run_bin(&["start", "--help"], Duration::from_secs(10));
    assert!(
        help.stdout.contains("--bind-timeout <SECS>") && help.stdout.contains("[default: 120]"),
        "{}",
        help.stdout
    );
    proxy.assert_alive();
    proxy.finish();
}
