//! The timeouts of a connection that is relaying, each shortened by its
//! flag: idle (no byte either way), stalled (a receiver that takes
//! nothing), and an HTTP server that sends no response head.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits for `s` to be closed by the proxy (EOF or reset); how long it took.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

#[test]
fn idle_connection_is_closed_at_the_idle_timeout_and_active_ones_are_not() {
    let proxy = Proxy::start(&["-d", "--idle-timeout", "1", "127.0.0.1"]);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    // An active one: a byte each 300 ms for 2.4 s outlives the idle timeout.
    let (mut active, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut far, _) = target.accept().unwrap();
    for i in 0..8 {
        if i > 0 {
            thread::sleep(Duration::from_millis(300));
        }
        active.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        far.read_exact(&mut b).unwrap();
    }
    // Then it goes quiet, and is closed both ways, not before its second.
    let took = closed_within(&mut active, Duration::from_secs(30));
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    closed_within(&mut far, Duration::from_secs(30));
    let out = proxy.finish();
    assert!(out.stdout.contains(", idle"), "{}", tail(&out.stdout, 10));
}

#[test]
fn receiver_that_takes_nothing_is_closed_at_the_stall_timeout() {
    let proxy = Proxy::start(&["-d", "--stall-timeout", "1", "127.0.0.1"]);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    // The client never reads; the target sends until it cannot.
    let (_client, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut far, _) = target.accept().unwrap();
    far.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let flood = vec![7u8; 1 << 20];
    let start = Instant::now();
    let ended = loop {
        match far.write_all(&flood) {
            Ok(()) => assert!(start.elapsed() < Duration::from_secs(30), "never stalled"),
            Err(e) => break e,
        }
    };
    // The proxy gave up on the stalled client and closed the target too.
    assert!(
        matches!(
            ended.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{ended}"
    );
    let out = proxy.finish();
    assert!(out.stdout.contains("stalled"), "{}", tail(&out.stdout, 10));
}

#[test]
fn http_server_that_never_answers_gets_the_client_a_504() {
    let proxy = Proxy::start(&["--response-timeout", "1", "127.0.0.1"]);
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    write!(
        s,
        "GET http://127.0.0.1:{port}/slow HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let (_silent, _) = origin.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 504 "), "{response}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    s.shutdown(Shutdown::Both).ok();
    proxy.finish();
}
