//! The point of the program: each new outgoing connection leaves from the
//! local address picked by smooth weighted round robin, per address family.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};

/// One SOCKS5 CONNECT through `proxy` to a whoami server; returns the peer
/// address the server saw (checked against BND.ADDR:BND.PORT).
fn source_of(proxy: SocketAddr, target: impl Into<Dest>) -> IpAddr {
    let (s, bnd) = socks5_ok(proxy, target);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("whoami line");
    let seen: SocketAddr = line.trim().parse().expect("whoami address");
    assert_eq!(bnd, seen, "BND.ADDR:BND.PORT != peer seen by the target");
    seen.ip()
}

/// The nginx smooth weighted round robin, first listed wins ties.
fn nginx_swrr(weights: &[i64], n: usize) -> Vec<usize> {
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn show(v: &[IpAddr]) -> String {
    v.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn weights_2_1_give_exact_sequence() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2/2", "127.0.0.3/1"]);
    let got: Vec<IpAddr> = (0..30)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    assert_eq!(
        got.iter().filter(|ip| **ip == a).count(),
        20,
        "{}",
        show(&got)
    );
    assert_eq!(
        got.iter().filter(|ip| **ip == b).count(),
        10,
        "{}",
        show(&got)
    );
    let want: Vec<IpAddr> = [a, b, a].iter().copied().cycle().take(30).collect();
    assert_eq!(
        show(&got),
        show(&want),
        "sequence of source addresses must be .2 .3 .2 repeated"
    );
    // The server saw the same, in accept order.
    let seen: Vec<IpAddr> = server.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(show(&seen), show(&want));
    proxy.finish();
}

#[test]
fn weights_7_3_are_interleaved() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2/7", "127.0.0.3/3"]);
    let got: Vec<IpAddr> = (0..30)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    // Every period of 10 has exactly 7 and 3.
    for (i, period) in got.chunks(10).enumerate() {
        let n = period.iter().filter(|ip| **ip == a).count();
        assert_eq!(n, 7, "period {i} has {n} x .2: {}", show(&got));
    }
    // Smooth: never more than 3 in a row of the heavy one (nginx gives
    // A B A A A B A A B A), never 2 in a row of the light one.
    let mut run = 0;
    let mut prev = None;
    for ip in &got {
        run = if Some(ip) == prev { run + 1 } else { 1 };
        prev = Some(ip);
        let max = if *ip == a { 3 } else { 1 };
        assert!(run <= max, "run of {run} x {ip}: {}", show(&got));
    }
    proxy.finish();
}

#[test]
fn three_addresses_follow_nginx_order() {
    // The classic nginx example: weights 5, 1, 1 -> a a b a c a a.
    let server = Server::whoami("127.0.0.1:0");
    let addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let proxy = Proxy::start(&["127.0.0.2/5", "127.0.0.3/1", "127.0.0.4/1"]);
    let got: Vec<IpAddr> = (0..14)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let want: Vec<IpAddr> = nginx_swrr(&[5, 1, 1], 14)
        .into_iter()
        .map(|i| addrs[i].parse().unwrap())
        .collect();
    assert_eq!(
        show(&want[..7]),
        show(&ips(&[
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.2",
            "127.0.0.4",
            "127.0.0.2",
            "127.0.0.2"
        ]))
    );
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn unweighted_addresses_alternate() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    let got: Vec<IpAddr> = (0..10)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let want: Vec<IpAddr> = ips(&["127.0.0.2", "127.0.0.3"])
        .into_iter()
        .cycle()
        .take(10)
        .collect();
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn each_family_uses_its_own_addresses() {
    let v4 = Server::whoami("127.0.0.1:0");
    let v6 = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    for _ in 0..4 {
        assert_eq!(source_of(proxy.addr, v6.addr).to_string(), "::1");
        assert_eq!(source_of(proxy.addr, v4.addr).to_string(), "127.0.0.2");
    }
    // A name resolving to IPv4 uses the IPv4 address.
    assert_eq!(
        source_of(proxy.addr, Dest::name("localhost", v4.addr.port())).to_string(),
        "127.0.0.2"
    );
    proxy.finish();
}

#[test]
fn round_robin_state_is_per_family() {
    // IPv6 connections in between must not disturb the IPv4 sequence.
    let v4 = Server::whoami("127.0.0.1:0");
    let v6 = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2/2", "::1/5", "127.0.0.3/1"]);
    let mut got = Vec::new();
    for i in 0..12 {
        got.push(source_of(proxy.addr, v4.addr));
        for _ in 0..(i % 3) {
            assert_eq!(source_of(proxy.addr, v6.addr).to_string(), "::1");
        }
    }
    let want: Vec<IpAddr> = ips(&["127.0.0.2", "127.0.0.3", "127.0.0.2"])
        .into_iter()
        .cycle()
        .take(12)
        .collect();
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn socks4_connections_take_part_in_the_rotation() {
    // Every new outgoing connection is one pick, whichever protocol asked.
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    let mut s = client(proxy.addr);
    s.write_all(&socks4_request(
        Ipv4Addr::LOCALHOST,
        server.addr.port(),
        b"",
        None,
    ))
    .unwrap();
    let mut r = [0u8; 8];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..2], &[0x00, 0x5A]);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("127.0.0.3:"),
        "SOCKS4 connection from {line}"
    );
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    proxy.finish();
}
