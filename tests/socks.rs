//! SOCKS5 / SOCKS4 / SOCKS4a protocol tests with raw sockets against the real
//! binary: success replies, every reply code that can be produced on loopback,
//! and pipelined data.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Reads the "<peer>\n" line a whoami server sends.
fn read_whoami(s: &mut TcpStream) -> SocketAddr {
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .expect("read whoami line");
    line.trim()
        .parse()
        .unwrap_or_else(|e| panic!("whoami line {line:?}: {e}"))
}

fn assert_error_reply(proxy: SocketAddr, dest: impl Into<Dest>, want: u8) {
    let dest = dest.into();
    let (mut s, reply) = socks5_connect(proxy, dest.clone());
    assert_eq!(
        reply.rep, want,
        "CONNECT {dest:?}: expected REP {want:#04x}, got reply {:02x?}",
        reply.raw
    );
    let rest = read_until_closed(&mut s, CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("after error reply {want:#04x}: {e}"));
    assert!(rest.is_empty(), "data after error reply: {rest:02x?}");
}

#[test]
fn socks5_ipv4_success_bnd_is_what_the_target_sees() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let (mut s, bnd) = socks5_ok(proxy.addr, server.addr);
    assert_eq!(s.peer_addr().unwrap(), proxy.addr);
    let seen = read_whoami(&mut s);
    assert_eq!(
        bnd, seen,
        "BND.ADDR:BND.PORT must equal the peer the target sees"
    );
    assert_eq!(seen.ip().to_string(), "127.0.0.2");
    assert_ne!(bnd.port(), 0);
    assert_eq!(
        read_to_eof(&mut s),
        b"",
        "target closed: client must see EOF"
    );
    assert_eq!(server.peers(), vec![seen]);
    proxy.finish();
}

#[test]
fn socks5_domain_localhost_success() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.3"]);
    let (mut s, bnd) = socks5_ok(proxy.addr, Dest::name("localhost", server.addr.port()));
    let seen = read_whoami(&mut s);
    assert_eq!(bnd, seen);
    assert_eq!(seen.ip().to_string(), "127.0.0.3");
    proxy.finish();
}

#[test]
fn socks5_ipv6_success_bnd_is_what_the_target_sees() {
    let server = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["::1"]);
    let (mut s, reply) = socks5_connect(proxy.addr, server.addr);
    assert_eq!(reply.rep, rep::SUCCEEDED, "reply {:02x?}", reply.raw);
    assert_eq!(
        reply.atyp, 0x04,
        "IPv6 BND.ADDR expected: {:02x?}",
        reply.raw
    );
    let seen = read_whoami(&mut s);
    assert_eq!(reply.bnd, Some(seen));
    assert_eq!(seen.ip().to_string(), "::1");
    proxy.finish();
}

#[test]
fn socks5_relays_data_both_ways() {
    let server = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let (mut s, _) = socks5_ok(proxy.addr, server.addr);
    for i in 0..20u32 {
        let msg = format!("message number {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
    proxy.finish();
}

#[test]
fn socks5_greeting_with_several_methods_selects_no_auth() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x03, 0x02, 0x01, 0x00]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [0x05, 0x00]);
    s.write_all(&socks5_request(0x01, &server.addr.into()))
        .unwrap();
    let reply = read_reply5(&mut s).unwrap();
    assert_eq!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
    assert_eq!(reply.bnd, Some(read_whoami(&mut s)));
    proxy.finish();
}

#[test]
fn socks5_greeting_without_no_auth_gets_ff_and_close() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    for greeting in [&[0x05u8, 0x01, 0x02][..], &[0x05, 0x02, 0x01, 0x02][..]] {
        let mut s = client(proxy.addr);
        s.write_all(greeting).unwrap();
        let got = read_until_closed(&mut s, CLOSE_WITHIN)
            .unwrap_or_else(|e| panic!("greeting {greeting:02x?}: {e}"));
        assert_eq!(got, [0x05, 0xFF], "greeting {greeting:02x?}");
    }
    proxy.finish();
}

#[test]
fn socks5_greeting_with_zero_methods_is_closed() {
    // NMETHODS = 0 is malformed (RFC 1928: 1 to 255 methods): closing
    // without a reply and answering 05 FF are both fine, hanging is not.
    let proxy = Proxy::start(&["--handshake-timeout", "30", "127.0.0.2"]);
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x00]).unwrap();
    let got = read_until_closed(&mut s, CLOSE_WITHIN).unwrap();
    assert!(
        got.is_empty() || got == [0x05, 0xFF],
        "reply to a greeting with no methods: {got:02x?}"
    );
    proxy.finish();
}

#[test]
fn socks5_connection_refused() {
    let target = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["127.0.0.2"]);
    assert_error_reply(proxy.addr, *target, rep::CONNECTION_REFUSED);
    // By name too.
    assert_error_reply(
        proxy.addr,
        Dest::name("localhost", target.port()),
        rep::CONNECTION_REFUSED,
    );
    proxy.finish();
}

#[test]
fn socks5_ipv6_connection_refused() {
    let target = closed_port("::1");
    let proxy = Proxy::start(&["::1"]);
    assert_error_reply(proxy.addr, *target, rep::CONNECTION_REFUSED);
    proxy.finish();
}

#[test]
fn socks5_unknown_commands_not_supported() {
    // BIND (2) and UDP ASSOCIATE (3) are supported: tests/bind.rs, tests/udp.rs.
    let proxy = Proxy::start(&["127.0.0.2"]);
    for cmd in [0x04u8, 0x09, 0xff] {
        let mut s = client(proxy.addr);
        socks5_greet(&mut s);
        let dest: Dest = "127.0.0.1:0".parse::<SocketAddr>().unwrap().into();
        s.write_all(&socks5_request(cmd, &dest)).unwrap();
        let reply = read_reply5(&mut s).unwrap_or_else(|e| panic!("cmd {cmd}: {e}"));
        assert_eq!(
            reply.rep,
            rep::COMMAND_NOT_SUPPORTED,
            "cmd {cmd}: reply {:02x?}",
            reply.raw
        );
        let rest =
            read_until_closed(&mut s, CLOSE_WITHIN).unwrap_or_else(|e| panic!("cmd {cmd}: {e}"));
        assert!(rest.is_empty(), "cmd {cmd}: data after reply {rest:02x?}");
    }
    proxy.finish();
}

#[test]
fn socks5_unknown_address_type_not_supported() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    socks5_greet(&mut s);
    s.write_all(&[0x05, 0x01, 0x00, 0x09]).unwrap();
    let reply = read_reply5(&mut s).expect("reply to ATYP 9");
    assert_eq!(
        reply.rep,
        rep::ATYP_NOT_SUPPORTED,
        "reply {:02x?}",
        reply.raw
    );
    read_until_closed(&mut s, CLOSE_WITHIN).expect("closed after ATYP 9");
    proxy.finish();
}

#[test]
fn socks5_family_without_local_address_is_network_unreachable() {
    // A real server on [::1] so that a wrong answer cannot be "refused".
    let v6 = Server::whoami("[::1]:0");
    let v4 = Server::whoami("127.0.0.1:0");

    let only_v4 = Proxy::start(&["127.0.0.2"]);
    assert_error_reply(only_v4.addr, v6.addr, rep::NETWORK_UNREACHABLE);
    only_v4.finish();

    let only_v6 = Proxy::start(&["::1"]);
    assert_error_reply(only_v6.addr, v4.addr, rep::NETWORK_UNREACHABLE);
    only_v6.finish();

    assert!(v6.peers().is_empty() && v4.peers().is_empty());
}

#[test]
fn socks4_success() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    for user in [&b""[..], &b"alice"[..]] {
        let mut s = client(proxy.addr);
        s.write_all(&socks4_request(
            Ipv4Addr::LOCALHOST,
            server.addr.port(),
            user,
            None,
        ))
        .unwrap();
        let r = read_reply4(&mut s).expect("SOCKS4 reply");
        assert_eq!(&r[..2], &[0x00, 0x5A], "SOCKS4 reply {r:02x?}");
        let seen = read_whoami(&mut s);
        assert_eq!(seen.ip().to_string(), "127.0.0.2");
        assert_eq!(read_to_eof(&mut s), b"");
    }
    proxy.finish();
}

#[test]
fn socks4a_success_by_name() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.3"]);
    let mut s = client(proxy.addr);
    s.write_all(&socks4_request(
        Ipv4Addr::new(0, 0, 0, 1),
        server.addr.port(),
        b"bob",
        Some("localhost"),
    ))
    .unwrap();
    let r = read_reply4(&mut s).expect("SOCKS4a reply");
    assert_eq!(&r[..2], &[0x00, 0x5A], "SOCKS4a reply {r:02x?}");
    assert_eq!(read_whoami(&mut s).ip().to_string(), "127.0.0.3");
    proxy.finish();
}

#[test]
fn socks4_failure_is_5b_and_close() {
    let target = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["127.0.0.2"]);
    // SOCKS4 and SOCKS4a.
    for req in [
        socks4_request(Ipv4Addr::LOCALHOST, target.port(), b"", None),
        socks4_request(
            Ipv4Addr::new(0, 0, 0, 7),
            target.port(),
            b"x",
            Some("localhost"),
        ),
    ] {
        let mut s = client(proxy.addr);
        s.write_all(&req).unwrap();
        let r = read_reply4(&mut s).unwrap_or_else(|e| panic!("reply to {req:02x?}: {e}"));
        assert_eq!(&r[..2], &[0x00, 0x5B], "reply {r:02x?} to {req:02x?}");
        let rest = read_until_closed(&mut s, CLOSE_WITHIN).unwrap();
        assert!(rest.is_empty(), "data after 5B: {rest:02x?}");
    }
    proxy.finish();
}

#[test]
fn socks4_ipv4_request_without_ipv4_address_fails() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["::1"]);
    let mut s = client(proxy.addr);
    s.write_all(&socks4_request(
        Ipv4Addr::LOCALHOST,
        server.addr.port(),
        b"",
        None,
    ))
    .unwrap();
    let r = read_reply4(&mut s).expect("SOCKS4 reply");
    assert_eq!(&r[..2], &[0x00, 0x5B], "reply {r:02x?}");
    read_until_closed(&mut s, CLOSE_WITHIN).unwrap();
    assert!(server.peers().is_empty());
    proxy.finish();
}

fn pipelined_socks5(payload: &[u8]) {
    let server = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    let mut all = GREETING.to_vec();
    all.extend_from_slice(&socks5_request(0x01, &server.addr.into()));
    all.extend_from_slice(payload);
    s.write_all(&all).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [0x05, 0x00]);
    let reply = read_reply5(&mut s).unwrap();
    assert_eq!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
    s.shutdown(Shutdown::Write).unwrap();
    let back = read_to_eof(&mut s);
    assert_eq!(back.len(), payload.len(), "echoed length");
    assert!(back == payload, "echoed payload differs");
    proxy.finish();
}

#[test]
fn socks5_pipelined_greeting_request_and_data() {
    pipelined_socks5(b"GET / HTTP/1.0\r\n\r\npipelined bytes");
}

#[test]
fn socks5_pipelined_large_payload() {
    let mut payload = vec![0u8; 48 * 1024];
    Prng::new(7).fill(&mut payload);
    pipelined_socks5(&payload);
}

#[test]
fn socks4_pipelined_request_and_data() {
    let server = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    let mut all = socks4_request(Ipv4Addr::LOCALHOST, server.addr.port(), b"u", None);
    all.extend_from_slice(b"hello through socks4");
    s.write_all(&all).unwrap();
    let r = read_reply4(&mut s).unwrap();
    assert_eq!(&r[..2], &[0x00, 0x5A], "{r:02x?}");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"hello through socks4");
    proxy.finish();
}

#[test]
fn socks5_request_split_into_single_bytes() {
    // The opposite of pipelining: every byte in its own segment.
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    let mut all = GREETING.to_vec();
    let greeting_len = all.len();
    all.extend_from_slice(&socks5_request(
        0x01,
        &Dest::name("localhost", server.addr.port()),
    ));
    for (i, b) in all.iter().enumerate() {
        s.write_all(&[*b]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        if i + 1 == greeting_len {
            let mut m = [0u8; 2];
            s.read_exact(&mut m).unwrap();
            assert_eq!(m, [0x05, 0x00]);
        }
    }
    let reply = read_reply5(&mut s).unwrap();
    assert_eq!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
    assert_eq!(reply.bnd, Some(read_whoami(&mut s)));
    proxy.finish();
}

#[test]
fn socks5_domain_that_is_an_ip_literal() {
    let v4 = Server::whoami("127.0.0.1:0");
    let v6 = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    let (mut s, bnd) = socks5_ok(proxy.addr, Dest::name("127.0.0.1", v4.addr.port()));
    assert_eq!(read_whoami(&mut s), bnd);
    assert_eq!(bnd.ip().to_string(), "127.0.0.2");
    let (mut s, bnd) = socks5_ok(proxy.addr, Dest::name("::1", v6.addr.port()));
    assert_eq!(read_whoami(&mut s), bnd);
    assert_eq!(bnd.ip().to_string(), "::1");
    proxy.finish();
}
