//! Limits per client address: one client cannot take every connection or
//! every UDP association; others are still served, and a limit hit is
//! logged once a minute, not per refusal.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use socket2::{Domain, Protocol, Socket, Type};

/// A TCP connection to `to` from `ip`.
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.bind(&SocketAddr::new(ip.parse().unwrap(), 0).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Whether the proxy closed `s` (EOF or reset) rather than waiting for it.
fn closed(s: &mut TcpStream) -> bool {
    match s.read(&mut [0u8; 16]) {
        Ok(0) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn a_client_over_its_connections_is_refused_and_others_are_served() {
    let proxy = Proxy::start(&["-d", "--max-client-connections", "3", "127.0.0.1"]);
    let echo = Server::echo("127.0.0.1:0");
    // Three held from 127.0.0.5: the fourth and fifth are closed at once.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| connect_from("127.0.0.5", proxy.addr))
        .collect();
    for _ in 0..2 {
        let mut over = connect_from("127.0.0.5", proxy.addr);
        assert!(closed(&mut over), "a fourth connection from 127.0.0.5");
    }
    // Another client is served meanwhile (socks5_ok comes from 127.0.0.1).
    let (_other, _) = socks5_ok(proxy.addr, echo.addr);
    // One of the three goes: a new one from 127.0.0.5 is served again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect_from("127.0.0.5", proxy.addr);
        again
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match again.read(&mut [0u8; 1]) {
            // Still counted as open: the proxy has not seen the closes yet.
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            // Held open: accepted (it waits for a greeting).
            _ => break,
        }
        assert!(std::time::Instant::now() < deadline, "never accepted again");
    }
    let out = proxy.finish();
    let refusals = out
        .stdout
        .lines()
        .filter(|l| l.contains("refused a client from 127.0.0.5: it has 3 connections open"))
        .count();
    assert_eq!(
        refusals,
        1,
        "one log line a minute:\n{}",
        tail(&out.stdout, 20)
    );
}

#[test]
fn a_client_over_its_udp_associations_is_refused() {
    let proxy = Proxy::start(&["--max-client-associations", "2", "127.0.0.1"]);
    let associate = |proxy: SocketAddr| {
        let mut s = client(proxy);
        socks5_greet(&mut s);
        use std::io::Write;
        s.write_all(&socks5_request(
            0x03,
            &Dest::Addr("0.0.0.0:0".parse().unwrap()),
        ))
        .unwrap();
        let r = read_reply5(&mut s).unwrap();
        (s, r.rep)
    };
    let (_a, first) = associate(proxy.addr);
    let (_b, second) = associate(proxy.addr);
    let (_c, third) = associate(proxy.addr);
    assert_eq!((first, second), (0, 0));
    assert_eq!(third, 0x01, "general failure past the limit");
    drop(_a);
    // The first one's place is freed once the proxy sees it close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while associate(proxy.addr).1 != 0 {
        assert!(std::time::Instant::now() < deadline, "never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.finish();
}
