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
    server.write_all(b"partial body").unwrap();
    // Let the bytes reach the proxy before the reset.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"partial body");
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
    let (mut s, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut server, _) = target.accept().unwrap();
    s.write_all(b"last words").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 10];
    server.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"last words");
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
