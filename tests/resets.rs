//! Resets are passed on, both ways: after what was sent before them, a
//! reset from one peer reaches the other as a reset, not as an orderly EOF
//! (which would make a truncated download look complete).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;

/// Closes `s` with a reset (RST) instead of a FIN.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// 512 KiB of a pattern, ending with "partial body".
fn bulk_body() -> Vec<u8> {
    let mut body: Vec<u8> = (0..512 * 1024 - 12).map(|i| (i % 253) as u8).collect();
    body.extend_from_slice(b"partial body");
    body
}

/// Reads until EOF or an error: the bytes, and how it ended.
fn read_all(s: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

#[test]
fn target_reset_reaches_the_client_as_a_reset_after_its_bytes() {
    for relay in Relay::BOTH {
        target_reset_reaches_the_client_as_a_reset_after_its_bytes_with(relay);
    }
}

fn target_reset_reaches_the_client_as_a_reset_after_its_bytes_with(relay: Relay) {
    let proxy = start_relaying(relay, &["127.0.0.1"]);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut s, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut server, _) = target.accept().unwrap();
    // A bulk body first (which the proxy splices, where it can), then the
    // last bytes; all reach the client before the reset does.
    let body = bulk_body();
    server.write_all(&body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = vec![0u8; body.len()];
    s.read_exact(&mut first).unwrap();
    assert!(first == body, "the body arrived changed");
    reset(server);
    let (rest, end) = read_all(&mut s);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        end,
        Some(ErrorKind::ConnectionReset),
        "an EOF would look complete"
    );
    proxy.finish();
}

#[test]
fn client_reset_reaches_the_target_as_a_reset_after_its_bytes() {
    for relay in Relay::BOTH {
        client_reset_reaches_the_target_as_a_reset_after_its_bytes_with(relay);
    }
}

fn client_reset_reaches_the_target_as_a_reset_after_its_bytes_with(relay: Relay) {
    let proxy = start_relaying(relay, &["127.0.0.1"]);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (s, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut server, _) = target.accept().unwrap();
    let body = bulk_body();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || s.write_all(&body).unwrap())
    };
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = vec![0u8; body.len()];
    server.read_exact(&mut first).unwrap();
    assert!(first == body, "the upload arrived changed");
    writer.join().unwrap();
    reset(s);
    let (rest, end) = read_all(&mut server);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(end, Some(ErrorKind::ConnectionReset));
    proxy.finish();
}

#[test]
fn orderly_close_is_still_an_eof() {
    for relay in Relay::BOTH {
        orderly_close_is_still_an_eof_with(relay);
    }
}

fn orderly_close_is_still_an_eof_with(relay: Relay) {
    let proxy = start_relaying(relay, &["127.0.0.1"]);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut s, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut server, _) = target.accept().unwrap();
    server.write_all(b"whole body").unwrap();
    drop(server);
    let (got, end) = read_all(&mut s);
    assert_eq!(got, b"whole body");
    assert_eq!(end, None);
    proxy.finish();
}
