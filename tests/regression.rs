//! Regressions found in review of the core proxy, one test each.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

/// A client that sends its whole request, its payload and its EOF in one go
/// (`printf ... | nc -N`) is served: the payload and the EOF reach the target,
/// and the answer comes back.
#[test]
fn request_payload_and_eof_in_one_burst_are_served() {
    let mut proxy = Proxy::start(&["127.0.0.1"]);
    let echo = Server::echo("127.0.0.1:0");
    let SocketAddr::V4(target) = echo.addr else {
        unreachable!()
    };
    for version in [4u8, 5] {
        let mut burst = match version {
            4 => socks4_request(*target.ip(), target.port(), b"", None),
            _ => {
                let mut b = GREETING.to_vec();
                b.extend(socks5_request(0x01, &Dest::from(echo.addr)));
                b
            }
        };
        burst.extend_from_slice(b"ping\n");
        let mut s = client(proxy.addr);
        s.write_all(&burst).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_to_eof(&mut s);
        let reply_len = if version == 4 { 8 } else { 2 + 10 };
        assert!(got.len() >= reply_len, "SOCKS{version}: only {got:02x?}");
        let granted = if version == 4 {
            got[1] == 0x5A
        } else {
            got[3] == 0x00
        };
        assert!(granted, "SOCKS{version} refused: {got:02x?}");
        assert_eq!(&got[reply_len..], b"ping\n", "SOCKS{version} payload");
    }
    proxy.assert_alive();
    proxy.finish();
}

/// A client that floods the proxy after its error reply must not monopolise
/// the event loop: others are served meanwhile, and the flooder is cut off.
#[test]
fn flooding_after_an_error_reply_does_not_stall_others() {
    let proxy = Proxy::start(&["127.0.0.1"]);
    let addr = proxy.addr;
    let flooder = thread::spawn(move || {
        let mut s = client(addr);
        let junk = vec![b'x'; 64 * 1024];
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let start = Instant::now();
        // Keep writing until the proxy cuts us off (a write error).
        while start.elapsed() < Duration::from_secs(10) {
            if s.write_all(&junk).is_err() {
                return true;
            }
        }
        false
    });
    thread::sleep(Duration::from_millis(200));
    let server = Server::echo("127.0.0.1:0");
    let start = Instant::now();
    for _ in 0..20 {
        let (mut s, _) = socks5_ok(proxy.addr, server.addr);
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "20 echo round trips took {:?} while another client flooded",
        start.elapsed()
    );
    assert!(
        flooder.join().unwrap(),
        "the flooding client was never cut off"
    );
    proxy.finish();
}

/// The unspecified address (which Linux takes as "this host") and
/// multicast are refused with "not allowed".
#[test]
fn unspecified_and_multicast_destinations_are_not_allowed() {
    let proxy = Proxy::start(&["127.0.0.1"]);
    for dest in ["0.0.0.0:80", "224.0.0.1:80"] {
        let dest: SocketAddr = dest.parse().unwrap();
        let (_, reply) = socks5_connect(proxy.addr, dest);
        assert_eq!(reply.rep, 0x02, "CONNECT {dest}: {:02x?}", reply.raw);
    }
    proxy.finish();
}

/// An IPv4-mapped IPv6 destination is an IPv4 one: it leaves through an
/// IPv4 address even when the proxy has no IPv6 address.
#[test]
fn ipv4_mapped_ipv6_destination_uses_ipv4() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let server = Server::whoami("127.0.0.1:0");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", server.addr.port())
        .parse()
        .unwrap();
    let (_, bnd) = socks5_ok(proxy.addr, mapped);
    assert_eq!(bnd.ip().to_string(), "127.0.0.2");
    proxy.finish();
}

/// A SOCKS5 greeting that offers no method at all gets "no acceptable
/// method" rather than a silent close.
#[test]
fn greeting_with_zero_methods_gets_no_acceptable_method() {
    let proxy = Proxy::start(&["127.0.0.1"]);
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x00]).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x05, 0xFF]);
    proxy.finish();
}

/// A target that answers and closes while the client is still uploading:
/// the client still gets the whole answer.
#[test]
fn answer_is_delivered_when_target_stops_reading_an_upload() {
    const ANSWER: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    let mut proxy = Proxy::start(&["127.0.0.1"]);
    let server = Server::start("127.0.0.1:0", |mut s, _| {
        let mut head = [0u8; 16];
        let _ = s.read_exact(&mut head);
        let _ = s.write_all(ANSWER);
        // Close with unread data: the kernel resets the upload.
    });
    let (mut s, _) = socks5_ok(proxy.addr, server.addr);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let reader = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
    };
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..256 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let got = reader.join().unwrap();
    assert_eq!(got, ANSWER);
    proxy.assert_alive();
    proxy.finish();
}

/// An HTTP/1.0 client keeps its connection only if the response says
/// keep-alive; an origin answering in HTTP/1.1 style need not, so the proxy
/// closes after the exchange instead of leaving the client waiting.
#[test]
fn http10_client_is_closed_after_its_exchange() {
    let mut proxy = Proxy::start(&["127.0.0.1"]);
    // Answers every request on the connection, never closing first.
    let server = Server::start("127.0.0.1:0", |mut s, _| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0
                || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
            {
                return;
            }
        }
    });
    let mut s = client(proxy.addr);
    let port = server.addr.port();
    write!(
        s,
        "GET http://127.0.0.1:{port}/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n"
    )
    .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3)).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("ok"),
        "{text:?}"
    );
    proxy.assert_alive();
    proxy.finish();
}

/// BIND accepts only the peer the client named in DST.ADDR (RFC 1928 §4):
/// another host connecting first is refused, not spliced into the stream.
#[test]
fn bind_accepts_only_the_expected_peer() {
    let proxy = Proxy::start(&["127.0.0.1"]);
    let mut s = client(proxy.addr);
    socks5_greet(&mut s);
    let expected: SocketAddr = "127.0.0.7:0".parse().unwrap();
    s.write_all(&socks5_request(0x02, &Dest::from(expected)))
        .unwrap();
    let first = read_reply5(&mut s).unwrap();
    assert_eq!(first.rep, 0x00, "{:02x?}", first.raw);
    let listening = first.bnd.unwrap();
    // A stranger (127.0.0.1) connects first: closed without a word.
    // Only a close (EOF or reset) counts: a stranger kept open, even
    // silently, runs into the deadline, which only a hang reaches.
    let mut stranger = common::http::client_from("127.0.0.1", listening).unwrap();
    let said = read_until_closed(&mut stranger, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("stranger kept: {e}"));
    assert!(said.is_empty(), "stranger was told {said:02x?}");
    // The expected peer is accepted, and the second reply names it.
    let mut peer = common::http::client_from("127.0.0.7", listening).unwrap();
    let second = read_reply5(&mut s).unwrap();
    assert_eq!(second.rep, 0x00, "{:02x?}", second.raw);
    assert_eq!(second.bnd.unwrap().ip().to_string(), "127.0.0.7");
    peer.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    proxy.finish();
}

/// A handshake sent in one write that is longer than the handshake buffer
/// (a greeting offering every method, 255-byte credentials, the request)
/// is read in turns: each message parsed makes room for the next. Review of
/// the connection core: the rest once waited for an edge that never came,
/// until the handshake timeout.
#[test]
fn pipelined_handshake_longer_than_the_buffer_is_served() {
    let (user, pass) = ("u".repeat(255), "p".repeat(255));
    let auth = format!("{user}:{pass}");
    let mut proxy = Proxy::start(&["--auth", &auth, "127.0.0.1"]);
    let echo = Server::echo("127.0.0.1:0");
    let mut burst = vec![5, 255];
    burst.extend(0..=254u8);
    burst.extend([1, 255]);
    burst.extend(user.as_bytes());
    burst.push(255);
    burst.extend(pass.as_bytes());
    burst.extend(socks5_request(0x01, &Dest::from(echo.addr)));
    burst.extend_from_slice(b"ping");
    assert!(burst.len() > 520, "longer than any one handshake message");
    let mut s = client(proxy.addr);
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s.write_all(&burst).unwrap();
    let mut answers = [0u8; 2 + 2 + 10 + 4];
    s.read_exact(&mut answers)
        .expect("the whole handshake answered before the 10 s handshake timeout");
    assert_eq!(
        answers[..4],
        [5, 2, 1, 0],
        "method, then credentials accepted"
    );
    assert_eq!(answers[4..6], [5, 0], "connected");
    assert_eq!(&answers[14..], b"ping");
    proxy.assert_alive();
    proxy.finish();
}
