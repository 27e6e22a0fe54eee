//! The state machine, state × event: one connection driven by hand over
//! real loopback sockets, with the loop's parts built here instead of a
//! reactor, so each test says which state meets which event and what
//! follows.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream as StdStream};
use std::num::NonZeroU32;
use std::time::Duration;

use super::rig::{Rig, PATIENCE};
use super::*;
use crate::auth::Credentials;
use crate::links::{LinkSpec, Links};

fn read_exact(client: &mut StdStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    client.read_exact(&mut buf).unwrap();
    buf
}

fn socks5_connect_request(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else {
        panic!("IPv4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&a.ip().octets());
    req.extend_from_slice(&a.port().to_be_bytes());
    req
}

/// A connection through the SOCKS5 greeting, in `request`.
fn in_request(rig: &mut Rig) -> (Conn, StdStream) {
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[5, 1, 0]).unwrap();
    rig.run_until(&mut conn, "request");
    assert_eq!(read_exact(&mut client, 2), [5, 0]);
    (conn, client)
}

/// A relaying connection to a target the test holds.
fn relaying(rig: &mut Rig) -> (Conn, StdStream, StdStream) {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut conn, mut client) = in_request(rig);
    client
        .write_all(&socks5_connect_request(target.local_addr().unwrap()))
        .unwrap();
    rig.run_until(&mut conn, "relaying");
    let (server, _) = target.accept().unwrap();
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 0]);
    (conn, client, server)
}

#[test]
fn greeting_with_no_auth_offered_goes_to_request() {
    let mut rig = Rig::new();
    let (conn, _client) = in_request(&mut rig);
    assert!(rig.pool.lent() == 0, "no ring is lent for a handshake");
    rig.close(conn);
}

#[test]
fn greeting_without_an_acceptable_method_is_refused_then_closed_at_eof() {
    let mut rig = Rig::with_auth({
        let mut c = Credentials::default();
        c.add("u:p").unwrap();
        c
    });
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[5, 1, 0]).unwrap();
    rig.run_until(&mut conn, "closing");
    assert_eq!(read_exact(&mut client, 2), [5, 0xFF]);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        rig.run_to_close(&mut conn),
        "client offered no acceptable auth method"
    );
    rig.close(conn);
}

#[test]
fn greeting_then_partial_bytes_then_eof_closes() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[5, 2]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        rig.run_to_close(&mut conn),
        "client closed during handshake"
    );
    rig.close(conn);
}

#[test]
fn greeting_deadline_closes() {
    let mut rig = Rig::new();
    let (mut conn, _client) = rig.accept();
    assert_eq!(rig.expire(&mut conn), Progress::Close);
    assert_eq!(conn.reason, "handshake timed out");
    rig.close(conn);
}

#[test]
fn request_to_an_address_connects_then_relays_both_ways() {
    let mut rig = Rig::new();
    let (mut conn, mut client, mut server) = relaying(&mut rig);
    let peers = std::thread::spawn(move || {
        client.write_all(b"ping").unwrap();
        server.write_all(b"pong").unwrap();
        (read_exact(&mut server, 4), read_exact(&mut client, 4))
    });
    let (at_target, at_client) = rig.run_beside(&mut conn, peers);
    assert_eq!(
        (&at_target[..], &at_client[..]),
        (&b"ping"[..], &b"pong"[..])
    );
    assert_eq!(conn.state.name(), "relaying");
    rig.close(conn);
}

#[test]
fn request_with_pipelined_payload_delivers_it_first() {
    let mut rig = Rig::new();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut conn, mut client) = rig.accept();
    let mut burst = vec![5, 1, 0];
    burst.extend(socks5_connect_request(target.local_addr().unwrap()));
    burst.extend_from_slice(b"early bytes");
    client.write_all(&burst).unwrap();
    rig.run_until(&mut conn, "relaying");
    let (mut server, _) = target.accept().unwrap();
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    let got = rig.run_beside(
        &mut conn,
        std::thread::spawn(move || read_exact(&mut server, 11)),
    );
    assert_eq!(got, b"early bytes");
    assert_eq!(conn.bytes_up, 11);
    rig.close(conn);
}

#[test]
fn connecting_refused_by_the_target_answers_and_closes() {
    let mut rig = Rig::new();
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (mut conn, mut client) = in_request(&mut rig);
    client.write_all(&socks5_connect_request(refused)).unwrap();
    rig.run_until(&mut conn, "closing");
    assert_eq!(
        read_exact(&mut client, 10)[..2],
        [5, 5],
        "connection refused"
    );
    assert!(conn.failed);
    assert_eq!(conn.reason, "connect failed");
    rig.close(conn);
}

/// Issue 10: with a link whose address is not even this machine's (binding
/// to it could only fail), a target on loopback is still reached at once,
/// through no link, and the link is neither used nor blamed.
#[test]
fn a_target_on_this_machine_is_reached_through_no_link() {
    let mut rig = Rig::new();
    let elsewhere = LinkSpec {
        ip: "192.0.2.1".parse().unwrap(),
        weight: NonZeroU32::MIN,
        iface: None,
        follow: false,
    };
    rig.links = Links::new(vec![elsewhere], &[], false);
    let (conn, _client, _server) = relaying(&mut rig);
    let link = rig.links.get(0);
    assert_eq!((link.stats.total, link.stats.failures), (0, 0));
    assert_eq!(link.state(), crate::links::State::Up);
    rig.close(conn);
}

#[test]
fn connecting_deadline_with_no_link_left_answers_ttl_expired() {
    let mut rig = Rig::new();
    // A target that takes the SYN but is never accepted is still connected
    // by the kernel; to time out, fire the deadline while connecting.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut conn, mut client) = in_request(&mut rig);
    client
        .write_all(&socks5_connect_request(target.local_addr().unwrap()))
        .unwrap();
    rig.run_until(&mut conn, "connecting");
    // First the hedge delay: there is no other link to race beside it.
    rig.expire(&mut conn);
    assert_eq!(conn.state.name(), "connecting");
    rig.expire(&mut conn);
    assert_eq!(conn.state.name(), "closing");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 6], "TTL expired");
    rig.close(conn);
}

/// A name with many addresses that never answer is answered in bounded
/// time: the connect as a whole gives up after three connect timeouts, not
/// one per address and link.
#[test]
fn a_connect_gives_up_as_a_whole_after_three_connect_timeouts() {
    let hosts = std::env::temp_dir().join(format!("dispatch-rig-hosts-{}", std::process::id()));
    let lines: String = (11..=18)
        .map(|i| format!("127.0.0.{i} many.test\n"))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    let mut rig = Rig::with_hosts(&hosts);
    let (mut conn, mut client) = in_request(&mut rig);
    let mut req = vec![5, 1, 0, 3, 9];
    req.extend_from_slice(b"many.test");
    req.extend_from_slice(&9u16.to_be_bytes());
    client.write_all(&req).unwrap();
    rig.run_until(&mut conn, "connecting");
    let started = rig.clock;
    // Only timers from here: no attempt is ever seen to connect.
    for _ in 0..100 {
        if conn.state.name() != "connecting" {
            break;
        }
        let before = rig.clock;
        rig.expire(&mut conn);
        // (A deadline that fires again at once would spin the loop.)
        assert!(
            rig.clock > before || conn.state.name() != "connecting",
            "the same deadline fired twice"
        );
    }
    std::fs::remove_file(&hosts).unwrap();
    assert_eq!(conn.state.name(), "closing");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 6], "TTL expired");
    let took = rig.clock - started;
    let connect = rig.ctx().timeouts.connect;
    // (The clock read at "connecting" is a moment after the connect began.)
    assert!(
        took <= connect * super::connect::TOTAL_TIMEOUTS + Duration::from_secs(1),
        "{took:?}: 8 addresses x 2 links would be longer"
    );
    assert!(took >= connect, "{took:?}");
    rig.close(conn);
}

#[test]
fn request_for_a_name_resolves_then_connects() {
    let mut rig = Rig::new();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let (mut conn, mut client) = in_request(&mut rig);
    let mut req = vec![5, 1, 0, 3, 9];
    req.extend_from_slice(b"localhost");
    req.extend_from_slice(&port.to_be_bytes());
    client.write_all(&req).unwrap();
    rig.run_until(&mut conn, "resolving");
    rig.run_until(&mut conn, "relaying");
    rig.close(conn);
}

#[test]
fn resolving_deadline_answers_host_unreachable() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    let mut req = vec![5, 1, 0, 3, 9];
    req.extend_from_slice(b"localhost");
    req.extend_from_slice(&80u16.to_be_bytes());
    client.write_all(&req).unwrap();
    rig.run_until(&mut conn, "resolving");
    rig.expire(&mut conn);
    assert_eq!(conn.state.name(), "closing");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 4]);
    assert_eq!(conn.reason, "name resolution timed out");
    rig.close(conn);
}

#[test]
fn relaying_client_eof_reaches_the_target_and_the_answer_still_comes_back() {
    let mut rig = Rig::new();
    let (mut conn, mut client, mut server) = relaying(&mut rig);
    client.write_all(b"question").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let peers = std::thread::spawn(move || {
        server.read_to_end(&mut got).unwrap();
        server.write_all(b"answer").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        (got, answer)
    });
    let (question, answer) = rig.run_beside(&mut conn, peers);
    assert_eq!(question, b"question");
    assert_eq!(answer, b"answer");
    // Both EOFs passed on: the relay is done.
    assert_eq!(rig.run_to_close(&mut conn), "done");
    assert_eq!((conn.bytes_up, conn.bytes_down), (8, 6));
    rig.close(conn);
}

#[test]
fn relaying_deadline_changes_nothing() {
    let mut rig = Rig::new();
    let (mut conn, _client, _server) = relaying(&mut rig);
    assert_eq!(conn.on_deadline(&mut rig.ctx()), Progress::Idle);
    assert_eq!(conn.state.name(), "relaying");
    rig.close(conn);
}

#[test]
fn closing_client_that_keeps_sending_is_cut_off() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[5, 1, 0x80]).unwrap();
    rig.run_until(&mut conn, "closing");
    let flood = vec![0u8; closing::LINGER_DISCARD_MAX + 4096];
    let writer = std::thread::spawn(move || {
        let _ = client.write_all(&flood);
        client
    });
    assert_eq!(
        rig.run_to_close(&mut conn),
        "client kept sending after the final reply"
    );
    drop(writer.join());
    rig.close(conn);
}

#[test]
fn closing_deadline_closes() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[5, 1, 0x80]).unwrap();
    rig.run_until(&mut conn, "closing");
    assert_eq!(rig.expire(&mut conn), Progress::Close);
    rig.close(conn);
}

#[test]
fn socks4_request_while_authentication_is_required_is_refused() {
    let mut rig = Rig::with_auth({
        let mut c = Credentials::default();
        c.add("u:p").unwrap();
        c
    });
    let (mut conn, mut client) = rig.accept();
    client.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).unwrap();
    rig.run_until(&mut conn, "closing");
    assert_eq!(read_exact(&mut client, 8)[..2], [0, 0x5B]);
    assert_eq!(conn.reason, "SOCKS4 refused: authentication is required");
    rig.close(conn);
}

#[test]
fn binding_client_eof_ends_the_bind() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    rig.run_until(&mut conn, "binding");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 0]);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rig.run_to_close(&mut conn), "client closed during BIND");
    rig.close(conn);
}

#[test]
fn binding_deadline_answers_ttl_expired() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    rig.run_until(&mut conn, "binding");
    read_exact(&mut client, 10);
    rig.expire(&mut conn);
    assert_eq!(conn.state.name(), "closing");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 6]);
    rig.close(conn);
}

#[test]
fn binding_peer_connects_then_relays() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    rig.run_until(&mut conn, "binding");
    let first = read_exact(&mut client, 10);
    let port = u16::from_be_bytes([first[8], first[9]]);
    let mut peer = StdStream::connect(("127.0.0.1", port)).unwrap();
    rig.run_until(&mut conn, "relaying");
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 0], "second reply");
    peer.write_all(b"hi").unwrap();
    let got = rig.run_beside(
        &mut conn,
        std::thread::spawn(move || read_exact(&mut client, 2)),
    );
    assert_eq!(got, b"hi");
    rig.close(conn);
}

#[test]
fn associated_control_connection_eof_ends_the_association() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    client.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    rig.run_until(&mut conn, "associated");
    assert_eq!(rig.associations, 1);
    assert_eq!(read_exact(&mut client, 10)[..2], [5, 0]);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rig.run_to_close(&mut conn), "control connection closed");
    rig.close(conn);
}

#[test]
fn http_forward_exchange_done_waits_for_the_next_request_then_idles_out() {
    let mut rig = Rig::new();
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let (mut conn, mut client) = rig.accept();
    write!(
        client,
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    rig.run_until(&mut conn, "forwarding");
    let (mut server, _) = origin.accept().unwrap();
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    rig.run_until(&mut conn, "http request");
    let mut response = vec![0; 40];
    client.read_exact(&mut response).unwrap();
    assert!(response.ends_with(b"ok"));
    assert_eq!(rig.links.get(0).stats.open, 1, "the upstream is kept");
    assert_eq!(rig.expire(&mut conn), Progress::Close);
    assert_eq!(conn.reason, "done (idle keep-alive)");
    rig.close(conn);
}

#[test]
fn http_garbage_is_answered_400_at_once() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = rig.accept();
    client.write_all(b"\x00\x01\x00").unwrap();
    rig.run_until(&mut conn, "closing");
    let mut head = [0u8; 12];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    rig.close(conn);
}

#[test]
fn events_of_a_closed_connection_are_not_taken_by_the_next_one_on_its_key() {
    // The old connection's client token, as it would sit in a poll batch.
    let mut rig = Rig::new();
    let (old, _c1) = rig.accept();
    let stale = old.handle.token(Side::Client);
    rig.close(old);
    // A new connection takes the same slab key.
    let (new, _c2) = rig.accept();
    let reused = Conn {
        handle: Handle {
            key: 1,
            id: new.handle.id,
        },
        ..new
    };
    assert_eq!(from_token(stale).0, reused.handle.key, "same key");
    assert!(!reused.owns(stale), "the stale event is dropped");
    assert!(reused.owns(reused.handle.token(Side::Client)));
    rig.close(reused);
}

#[test]
fn associated_datagrams_go_out_by_the_link_and_replies_come_back_with_a_header() {
    use std::net::UdpSocket;
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    let udp_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_client.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = udp_client.local_addr().unwrap().port().to_be_bytes();
    client
        .write_all(&[5, 3, 0, 1, 127, 0, 0, 1, port[0], port[1]])
        .unwrap();
    rig.run_until(&mut conn, "associated");
    let reply = read_exact(&mut client, 10);
    let relay = SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([reply[8], reply[9]])));
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(PATIENCE)).unwrap();
    let dest = echo.local_addr().unwrap();
    let mut datagram = vec![0, 0, 0, 1, 127, 0, 0, 1];
    datagram.extend_from_slice(&dest.port().to_be_bytes());
    datagram.extend_from_slice(b"ping");
    udp_client.send_to(&datagram, relay).unwrap();
    let echoed = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        echo.send_to(b"pong", from).unwrap();
        let (m, _) = udp_client.recv_from(&mut buf[n..]).unwrap();
        (buf[..n].to_vec(), buf[n..n + m].to_vec())
    });
    let (at_dest, at_client) = rig.run_beside(&mut conn, echoed);
    assert_eq!(at_dest, b"ping");
    assert_eq!(
        &at_client[..10],
        &datagram[..10],
        "the header names the source"
    );
    assert_eq!(&at_client[10..], b"pong");
    assert_eq!((conn.bytes_up, conn.bytes_down), (4, 4));
    drop(client);
    rig.close(conn);
}

#[test]
fn binding_refuses_a_peer_other_than_the_expected_one() {
    let mut rig = Rig::new();
    let (mut conn, mut client) = in_request(&mut rig);
    // Expect a peer at 127.0.0.9; the one that comes is 127.0.0.1.
    client.write_all(&[5, 2, 0, 1, 127, 0, 0, 9, 0, 0]).unwrap();
    rig.run_until(&mut conn, "binding");
    let first = read_exact(&mut client, 10);
    let port = u16::from_be_bytes([first[8], first[9]]);
    let stranger = StdStream::connect(("127.0.0.1", port)).unwrap();
    stranger.set_read_timeout(Some(PATIENCE)).unwrap();
    let refused = std::thread::spawn(move || {
        // EOF or a reset says it was refused; a timeout would not.
        match (&stranger).read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    });
    assert!(
        rig.run_beside(&mut conn, refused),
        "the stranger was closed"
    );
    assert_eq!(
        conn.state.name(),
        "binding",
        "still waiting for the right one"
    );
    rig.close(conn);
}

#[test]
fn relaying_moves_its_idle_deadline_lazily_not_per_event() {
    let mut rig = Rig::new();
    let (mut conn, client, server) = relaying(&mut rig);
    let armed = rig.timers.len();
    let peers = std::thread::spawn(move || {
        let (mut client, mut server) = (client, server);
        for _ in 0..100 {
            client.write_all(b"ping").unwrap();
            read_exact(&mut server, 4);
        }
        (client, server)
    });
    let _peers = rig.run_beside(&mut conn, peers);
    assert!(
        rig.timers.len() <= armed + 1,
        "{} timers after 100 exchanges",
        rig.timers.len()
    );
    // Its deadline comes, bytes having moved since: it is moved on, not fired.
    let first = conn.deadline().unwrap();
    assert_eq!(rig.expire(&mut conn), Progress::Idle);
    assert!(conn.deadline().unwrap() > first);
    // Then nothing moves until it comes again: idle.
    assert_eq!(rig.expire(&mut conn), Progress::Close);
    assert_eq!(conn.reason, "idle");
    rig.close(conn);
}

/// A connection's size is what every idle connection costs (README: about
/// 0.4 KiB each); it must not creep up unnoticed. (Sockets and addresses
/// are other sizes elsewhere: checked where the figure was measured.)
/// 416 bytes before splice; each direction's kernel pipe added a word;
/// the balancer's per-period byte count (`Seen`, 8 bytes for a byte)
/// another (440 in a debug build, where the layout differs).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[test]
fn a_connection_stays_small() {
    assert!(
        std::mem::size_of::<Conn>() <= 440,
        "{} bytes",
        std::mem::size_of::<Conn>()
    );
}

#[test]
fn closed_connections_leave_no_timer_behind() {
    let mut rig = Rig::new();
    for _ in 0..20 {
        let (conn, _client, _server) = relaying(&mut rig);
        assert_eq!(rig.timers.len(), 1, "one deadline a connection");
        rig.close(conn);
    }
    assert!(rig.timers.is_empty(), "{} left", rig.timers.len());
}
