//! Who may use the proxy (issue 6): `--auth USER:PASS` and `--auth-file`
//! (SOCKS5 username/password per RFC 1929, HTTP `Proxy-Authorization:
//! Basic`, SOCKS4 refused, the file re-read on SIGHUP), `--allow CIDR`
//! (others closed at accept), and the default range rule for a listener
//! beyond loopback (in network namespaces, root only).
//!
//! Clients are curl and raw sockets, bound to chosen loopback source
//! addresses where the test is about the client's address.

mod common;

use common::http::*;
use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

const BODY: &str = "hello through an authenticated proxy\n";

fn px(proxy: &Proxy) -> String {
    format!("http://{}", proxy.addr)
}

/// `http_code` (or `http_connect` with `-p`) curl reports, with its exit code.
fn curl_status(args: &[&str], connect: bool) -> (Option<i32>, String, String) {
    let w = if connect {
        "%{http_connect}"
    } else {
        "%{http_code}"
    };
    let mut a = vec!["-o", "/dev/null", "-w", w];
    a.extend_from_slice(args);
    let out = curl(&a);
    (out.code, out.text(), out.stderr)
}

/// SOCKS5 login then CONNECT to an echo server; checks the relay.
fn socks5_auth_echo(proxy: SocketAddr, echo: SocketAddr, user: &str, pass: &str) {
    let mut s = client(proxy);
    let st = socks5_login(&mut s, user, pass).unwrap_or_else(|e| panic!("{user}:{pass}: {e}"));
    assert_eq!(st, [0x01, 0x00], "RFC 1929 status for {user}:{pass}");
    s.write_all(&socks5_request(0x01, &echo.into())).unwrap();
    let r = read_reply5(&mut s).unwrap();
    assert_eq!(r.rep, rep::SUCCEEDED, "{:02x?}", r.raw);
    s.write_all(b"authenticated").unwrap();
    let mut b = [0u8; 13];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"authenticated");
}

/// SOCKS5 login must fail with a nonzero status, then the proxy closes.
fn socks5_auth_refused(proxy: SocketAddr, user: &str, pass: &str) {
    let mut s = client(proxy);
    let st = socks5_login(&mut s, user, pass).unwrap_or_else(|e| panic!("{user}:{pass}: {e}"));
    assert_eq!(st[0], 0x01, "subnegotiation version in the status reply");
    assert_ne!(st[1], 0x00, "{user}:{pass} must be refused");
    let rest = read_until_closed(&mut s, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after a refused login for {user}:{pass}: {e}"));
    assert!(rest.is_empty(), "bytes after a failed login: {rest:02x?}");
}

fn http_get_with(proxy: SocketAddr, server: &HttpServer, auth: Option<(&str, &str)>) -> Resp {
    let port = server.addr.port();
    let mut c = HttpConn::connect(proxy);
    let auth = auth
        .map(|(u, p)| proxy_auth_header(u, p))
        .unwrap_or_default();
    c.send(
        format!("GET http://127.0.0.1:{port}/a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n")
            .as_bytes(),
    );
    c.response()
}

fn assert_407(r: &Resp, what: &str) {
    assert_eq!(r.status, 407, "{what}: {}{}", r.raw_head, r.text());
    assert_eq!(
        r.header("proxy-authenticate"),
        Some("Basic realm=\"dispatch\""),
        "{what}: {}",
        r.raw_head
    );
    assert!(
        !r.body.is_empty() && r.body.len() < 4096,
        "{what}: 407 should have a short text body, got {:?}",
        r.text()
    );
}

// ---------------------------------------------------------------------------
// --auth with curl
// ---------------------------------------------------------------------------

#[test]
fn curl_http_proxy_with_auth() {
    let server = Server::http("127.0.0.1:0", BODY);
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let p = px(&proxy);
    // Right credentials: forward and CONNECT.
    let body = curl_ok(&["-x", &p, "--proxy-user", "alice:s3cret", &url]);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    let body = curl_ok(&["-p", "-x", &p, "--proxy-user", "alice:s3cret", &url]);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    let upw = format!("http://alice:s3cret@{}", proxy.addr);
    let body = curl_ok(&["-x", &upw, &url]);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    assert_eq!(server.peers().len(), 3);
    // None, wrong password, unknown user: 407; CONNECT fails in curl (56).
    for creds in [None, Some("alice:wrong"), Some("mallory:s3cret")] {
        let mut args = vec!["-x", p.as_str()];
        if let Some(c) = creds {
            args.extend_from_slice(&["--proxy-user", c]);
        }
        args.push(&url);
        let (code, status, err) = curl_status(&args, false);
        assert_eq!(
            status, "407",
            "forward with {creds:?}: exit {code:?}, {err}"
        );
        let mut cargs = vec!["-p"];
        cargs.extend_from_slice(&args);
        let (code, status, err) = curl_status(&cargs, true);
        assert_eq!(code, Some(56), "CONNECT with {creds:?}: {err}");
        assert_eq!(status, "407", "CONNECT with {creds:?}: {err}");
    }
    assert_eq!(
        server.peers().len(),
        3,
        "refused clients must not reach the target"
    );
    proxy.finish();
}

#[test]
fn curl_socks5_with_auth() {
    let server = Server::http("127.0.0.1:0", BODY);
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let name_url = format!("http://localhost:{}/", server.addr.port());
    let addr = proxy.addr.to_string();
    let body = curl_ok(&["--socks5", &addr, "--proxy-user", "alice:s3cret", &url]);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    let h = format!("socks5h://alice:s3cret@{}", proxy.addr);
    let body = curl_ok(&["-x", &h, &name_url]);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    // curl 97: proxy handshake error.
    for creds in [None, Some("alice:wrong"), Some("bob:s3cret")] {
        let mut args = vec!["--socks5", addr.as_str()];
        if let Some(c) = creds {
            args.extend_from_slice(&["--proxy-user", c]);
        }
        args.push(&url);
        let out = curl(&args);
        assert_eq!(out.code, Some(97), "SOCKS5 with {creds:?}: {}", out.stderr);
    }
    // SOCKS4 and 4a are refused while auth is on.
    for opt in ["--socks4", "--socks4a"] {
        let out = curl(&[opt, &addr, &url]);
        assert_eq!(out.code, Some(97), "{opt}: {}", out.stderr);
    }
    assert_eq!(server.peers().len(), 2);
    proxy.finish();
}

// ---------------------------------------------------------------------------
// --auth, raw
// ---------------------------------------------------------------------------

#[test]
fn http_407_challenge_and_basic_credentials() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    assert_407(&http_get_with(proxy.addr, &server, None), "no credentials");
    let wrong = http_get_with(proxy.addr, &server, Some(("alice", "nope")));
    assert_407(&wrong, "wrong password");
    // The body says which: none given, or the one given refused; and a
    // refused one is logged, as a wrong SOCKS5 password is.
    assert!(
        wrong.text().contains("wrong user name or password"),
        "{}",
        wrong.text()
    );
    let none = http_get_with(proxy.addr, &server, None);
    assert!(
        none.text().contains("needs a user name and password"),
        "{}",
        none.text()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !proxy.stdout().contains("wrong HTTP proxy credentials") {
        assert!(
            std::time::Instant::now() < deadline,
            "not logged:\n{}",
            proxy.stdout()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_407(
        &http_get_with(proxy.addr, &server, Some(("alic", "s3cret"))),
        "wrong user",
    );
    // Other schemes and broken Basic values.
    let port = server.addr.port();
    for value in [
        "Bearer s3cret",
        "Basic",
        "Basic !!!notbase64!!!",
        "Basic YWxpY2VzM2NyZXQ=", // "alices3cret", no colon
    ] {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(
            format!(
                "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Proxy-Authorization: {value}\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_407(&c.response(), value);
    }
    // CONNECT without credentials.
    let mut c = HttpConn::connect(proxy.addr);
    c.send(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    assert_407(&c.response(), "CONNECT without credentials");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // The scheme is case-insensitive (RFC 9110, 11.1).
    let mut c = HttpConn::connect(proxy.addr);
    c.send(
        format!(
            "GET http://127.0.0.1:{port}/lower HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Proxy-Authorization: basic {}\r\n\r\n",
            base64(b"alice:s3cret")
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(
        r.status,
        200,
        "scheme \"basic\": {}{}",
        r.raw_head,
        r.text()
    );
    // Right: the origin gets the request without Proxy-Authorization.
    let r = http_get_with(proxy.addr, &server, Some(("alice", "s3cret")));
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let got = &server.requests()[1];
    assert!(
        got.header("proxy-authorization").is_none(),
        "credentials leaked to the origin:\n{}",
        got.raw_head
    );
    // Right, CONNECT, with tunnel bytes behind the head.
    let echo = Server::echo("127.0.0.1:0");
    let mut s = client(proxy.addr);
    let mut req = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n{1}\r\n",
        echo.addr,
        proxy_auth_header("alice", "s3cret")
    )
    .into_bytes();
    req.extend_from_slice(b"tunnel");
    s.write_all(&req).unwrap();
    let want = b"HTTP/1.1 200 Connection established\r\n\r\ntunnel";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    proxy.finish();
}

#[test]
fn rfc1929_exchange() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    // Method 0x02 only.
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "s3cret");
    // Offering 0x00 and 0x02: 0x02 is chosen; the rest byte by byte.
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x02, 0x00, 0x02]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [0x05, 0x02], "offered 00 and 02 with auth on");
    for b in rfc1929("alice", "s3cret") {
        s.write_all(&[b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let mut st = [0u8; 2];
    s.read_exact(&mut st).unwrap();
    assert_eq!(st, [0x01, 0x00]);
    s.write_all(&socks5_request(0x01, &echo.addr.into()))
        .unwrap();
    assert_eq!(read_reply5(&mut s).unwrap().rep, rep::SUCCEEDED);
    // Wrong password, wrong user, empty password: nonzero status, then closed.
    socks5_auth_refused(proxy.addr, "alice", "s3cres");
    socks5_auth_refused(proxy.addr, "alicf", "s3cret");
    socks5_auth_refused(proxy.addr, "alice", "");
    // Only "no authentication" offered: 05 FF, then closed.
    for greeting in [&[0x05u8, 0x01, 0x00][..], &[0x05, 0x02, 0x00, 0x01][..]] {
        let mut s = client(proxy.addr);
        s.write_all(greeting).unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("greeting {greeting:02x?}: {e}"));
        assert_eq!(got, [0x05, 0xFF], "greeting {greeting:02x?}");
    }
    // Wrong subnegotiation version: no success, closed.
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x01, 0x02]).unwrap();
    s.read_exact(&mut m).unwrap();
    let mut bad = rfc1929("alice", "s3cret");
    bad[0] = 0x05;
    s.write_all(&bad).unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert!(
        got.is_empty() || (got.len() == 2 && got[1] != 0x00),
        "subnegotiation version 5 got {got:02x?}"
    );
    // A CONNECT without logging in first (method 02 chosen, request sent as
    // if 00 had been): refused, closed, target not contacted.
    let mut s = client(proxy.addr);
    s.write_all(&[0x05, 0x01, 0x02]).unwrap();
    s.read_exact(&mut m).unwrap();
    s.write_all(&socks5_request(0x01, &echo.addr.into()))
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert!(
        got.is_empty() || (got.len() == 2 && got[1] != 0x00),
        "request in place of credentials got {got:02x?}"
    );
    // The second CONNECT exchanged no data: its accept may still be on the
    // way to the list.
    let deadline = Instant::now() + Duration::from_secs(2);
    while echo.peers().len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(echo.peers().len(), 2, "only the two logged-in CONNECTs");
    proxy.finish();
}

#[test]
fn socks4_and_4a_refused_under_auth() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    let port = echo.addr.port();
    for (what, req) in [
        (
            "SOCKS4",
            socks4_request(Ipv4Addr::LOCALHOST, port, b"alice", None),
        ),
        (
            "SOCKS4a",
            socks4_request(Ipv4Addr::new(0, 0, 0, 1), port, b"alice", Some("localhost")),
        ),
    ] {
        let mut s = client(proxy.addr);
        s.write_all(&req).unwrap();
        let r = read_reply4(&mut s).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r[0], 0x00, "{what}: reply version {r:02x?}");
        assert_eq!(r[1], 0x5B, "{what}: reply {r:02x?}");
        read_until_closed(&mut s, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert!(echo.peers().is_empty(), "{:?}", echo.peers());
    proxy.finish();
}

#[test]
fn several_users_and_a_colon_in_the_password() {
    let echo = Server::echo("127.0.0.1:0");
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&[
        "--auth",
        "alice:one",
        "--auth",
        "bob:two",
        "--auth",
        "carol:pa:ss",
        "127.0.0.2",
    ]);
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "one");
    socks5_auth_echo(proxy.addr, echo.addr, "bob", "two");
    socks5_auth_echo(proxy.addr, echo.addr, "carol", "pa:ss");
    socks5_auth_refused(proxy.addr, "alice", "two");
    socks5_auth_refused(proxy.addr, "bob", "one");
    for (u, p) in [("alice", "one"), ("bob", "two"), ("carol", "pa:ss")] {
        let r = http_get_with(proxy.addr, &server, Some((u, p)));
        assert_eq!(r.status, 200, "{u}:{p}: {}", r.raw_head);
    }
    assert_407(
        &http_get_with(proxy.addr, &server, Some(("carol", "pa"))),
        "carol:pa",
    );
    proxy.finish();
}

// ---------------------------------------------------------------------------
// --auth-file and SIGHUP
// ---------------------------------------------------------------------------

#[test]
fn auth_file_is_reread_on_sighup() {
    let echo = Server::echo("127.0.0.1:0");
    let server = HttpServer::start("127.0.0.1:0");
    let dir = TempDir::new();
    let file = dir.path.join("users");
    std::fs::write(
        &file,
        "# users of the proxy\n\nalice:one\n# bob:commented\n\ndave:four\n",
    )
    .unwrap();
    let mut proxy = Proxy::start(&["--auth-file", file.to_str().unwrap(), "127.0.0.2"]);
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "one");
    socks5_auth_echo(proxy.addr, echo.addr, "dave", "four");
    socks5_auth_refused(proxy.addr, "bob", "commented");
    socks5_auth_refused(proxy.addr, "# bob", "commented");
    assert_eq!(
        http_get_with(proxy.addr, &server, Some(("alice", "one"))).status,
        200
    );
    assert_407(&http_get_with(proxy.addr, &server, None), "no credentials");
    // SOCKS4 refused with auth from a file too.
    let mut s = client(proxy.addr);
    s.write_all(&socks4_request(
        Ipv4Addr::LOCALHOST,
        echo.addr.port(),
        b"",
        None,
    ))
    .unwrap();
    assert_eq!(read_reply4(&mut s).unwrap()[1], 0x5B);

    // New password for alice, dave gone, bob added.
    // (No newline at the end: the last line counts all the same.)
    std::fs::write(&file, "alice:two\nbob:three").unwrap();
    // Before SIGHUP nothing changes.
    thread::sleep(Duration::from_millis(300));
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "one");
    sighup(proxy.pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proxy.assert_alive();
        let mut s = client(proxy.addr);
        if socks5_login(&mut s, "alice", "two") == Ok([0x01, 0x00]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice:two still refused 30 s after SIGHUP\n--- stdout:\n{}",
            tail(&proxy.stdout(), 20)
        );
        thread::sleep(Duration::from_millis(50));
    }
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "two");
    socks5_auth_echo(proxy.addr, echo.addr, "bob", "three");
    socks5_auth_refused(proxy.addr, "alice", "one");
    socks5_auth_refused(proxy.addr, "dave", "four");
    assert_eq!(
        http_get_with(proxy.addr, &server, Some(("alice", "two"))).status,
        200
    );
    assert_407(
        &http_get_with(proxy.addr, &server, Some(("alice", "one"))),
        "old password after SIGHUP",
    );
    // curl agrees.
    let url = server.url("127.0.0.1", "/curl");
    curl_ok(&["-x", &px(&proxy), "--proxy-user", "alice:two", &url]);
    let (_, status, err) = curl_status(
        &["-x", &px(&proxy), "--proxy-user", "alice:one", &url],
        false,
    );
    assert_eq!(status, "407", "{err}");
    // A second SIGHUP with the same file changes nothing and kills nothing.
    sighup(proxy.pid);
    thread::sleep(Duration::from_millis(200));
    proxy.assert_alive();
    socks5_auth_echo(proxy.addr, echo.addr, "bob", "three");
    // A file emptied while running refuses everyone; it does not turn
    // authentication off.
    std::fs::write(&file, "# nobody for now\n").unwrap();
    sighup(proxy.pid);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        proxy.assert_alive();
        let mut s = client(proxy.addr);
        if socks5_login(&mut s, "bob", "three") != Ok([0x01, 0x00]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob:three still accepted 3 s after emptying the file and SIGHUP"
        );
        thread::sleep(Duration::from_millis(50));
    }
    socks5_auth_refused(proxy.addr, "alice", "two");
    let mut s = client(proxy.addr);
    s.write_all(&GREETING).unwrap();
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(5)).unwrap(),
        [0x05, 0xFF],
        "no-auth greeting after the file was emptied"
    );
    assert_407(
        &http_get_with(proxy.addr, &server, None),
        "emptied file, no credentials",
    );
    assert_407(
        &http_get_with(proxy.addr, &server, Some(("bob", "three"))),
        "emptied file",
    );
    proxy.finish();
}

// ---------------------------------------------------------------------------
// --allow
// ---------------------------------------------------------------------------

/// From `src`: a SOCKS5 greeting must get no reply and the connection closed.
fn refused_at_accept(src: &str, proxy: SocketAddr, first: &[u8]) {
    let mut s = client_from(src, proxy).unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    let _ = s.write_all(first);
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("client from {src} not closed: {e}"));
    assert!(
        got.is_empty(),
        "client from {src} got a reply {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// From `src`: a SOCKS5 CONNECT to `echo` works.
fn served_from(src: &str, proxy: SocketAddr, echo: SocketAddr) {
    let mut s = client_from(src, proxy).unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    socks5_greet(&mut s);
    s.write_all(&socks5_request(0x01, &echo.into())).unwrap();
    let r = read_reply5(&mut s).unwrap_or_else(|e| panic!("client from {src}: {e}"));
    assert_eq!(r.rep, rep::SUCCEEDED, "client from {src}: {:02x?}", r.raw);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
}

fn lines_with(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

#[test]
fn allow_list_closes_other_clients_at_accept() {
    let echo = Server::echo("127.0.0.1:0");
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["--allow", "127.0.0.1/32", "127.0.0.2"]);
    served_from("127.0.0.1", proxy.addr, echo.addr);
    let body = curl_ok(&["-x", &px(&proxy), &server.url("127.0.0.1", "/ok")]);
    assert!(!body.is_empty());
    // From 127.0.0.9: SOCKS5, SOCKS4, HTTP, all closed without a reply.
    let port = server.addr.port();
    refused_at_accept("127.0.0.9", proxy.addr, &GREETING);
    refused_at_accept(
        "127.0.0.9",
        proxy.addr,
        &socks4_request(Ipv4Addr::LOCALHOST, echo.addr.port(), b"", None),
    );
    refused_at_accept(
        "127.0.0.9",
        proxy.addr,
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
            .as_bytes(),
    );
    // curl from 127.0.0.9 fails too.
    let out = curl(&[
        "--interface",
        "127.0.0.9",
        "-x",
        &px(&proxy),
        &server.url("127.0.0.1", "/no"),
    ]);
    assert_ne!(
        out.code,
        Some(0),
        "curl from 127.0.0.9 got {:?}",
        out.text()
    );
    assert_eq!(
        server.requests().len(),
        1,
        "only the allowed request arrived"
    );
    assert_eq!(echo.peers().len(), 1);
    // Logged once per address per minute: four refusals, one line.
    refused_at_accept("127.0.0.10", proxy.addr, &GREETING);
    // Lines come in order: once .10's is there, every line about .9 is too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines_with(&proxy.stdout(), "127.0.0.10").is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let out = proxy.stdout();
    let nine = lines_with(&out, "127.0.0.9");
    assert_eq!(
        nine.len(),
        1,
        "four refusals of 127.0.0.9 should log one line, got {nine:#?}"
    );
    assert_eq!(
        lines_with(&out, "127.0.0.10").len(),
        1,
        "a refusal of another address logs its own line\n{}",
        tail(&out, 20)
    );
    proxy.finish();
}

#[test]
fn allow_is_repeatable_and_takes_ipv6() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["--allow", "127.0.0.8/30", "--allow", "::1/128", "127.0.0.2"]);
    // 127.0.0.8/30 is .8 to .11.
    served_from("127.0.0.9", proxy.addr, echo.addr);
    served_from("127.0.0.11", proxy.addr, echo.addr);
    refused_at_accept("127.0.0.1", proxy.addr, &GREETING);
    refused_at_accept("127.0.0.12", proxy.addr, &GREETING);
    proxy.finish();
    // An IPv6 listener with an IPv6 allow list.
    let proxy6 = Proxy::start_on("::1", &["--allow", "::1/128", "127.0.0.2"]);
    served_from("::1", proxy6.addr, echo.addr);
    proxy6.finish();
    let proxy6 = Proxy::start_on("::1", &["--allow", "fd00::/8", "127.0.0.2"]);
    refused_at_accept("::1", proxy6.addr, &GREETING);
    proxy6.finish();
}

#[test]
fn allow_and_auth_together() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&[
        "--allow",
        "127.0.0.1/32",
        "--auth",
        "alice:s3cret",
        "127.0.0.2",
    ]);
    refused_at_accept("127.0.0.9", proxy.addr, &[0x05, 0x01, 0x02]);
    socks5_auth_echo(proxy.addr, echo.addr, "alice", "s3cret");
    let mut s = client(proxy.addr);
    s.write_all(&GREETING).unwrap();
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(5)).unwrap(),
        [0x05, 0xFF]
    );
    proxy.finish();
}

#[test]
fn loopback_listener_serves_any_loopback_client_by_default() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    served_from("127.0.0.9", proxy.addr, echo.addr);
    served_from("127.0.0.1", proxy.addr, echo.addr);
    let out = proxy.finish();
    assert!(
        !out.stdout
            .contains("only loopback, private and link-local clients"),
        "the default range notice is for listeners beyond loopback:\n{}",
        tail(&out.stdout, 20)
    );
}

// ---------------------------------------------------------------------------
// The default range rule beyond loopback (namespaces)
// ---------------------------------------------------------------------------

const NOTICE: &str = "only loopback, private and link-local clients";

/// Two namespaces joined by a veth pair: the proxy side `pv` has 10.77.0.1/24
/// and fd77::1/64; the client side `cv` has 10.77.0.2/24, fd77::2/64 and the
/// extra client addresses, each routed back through `pv`.
struct Pair {
    proxy_ns: Netns,
    client_ns: Netns,
}

const CLIENTS_V4: &[(&str, bool)] = &[
    ("10.77.0.2", true),
    ("172.16.5.5", true),
    ("172.31.255.254", true),
    ("192.168.5.5", true),
    ("169.254.7.7", true),
    ("172.32.0.5", false),
    ("198.18.0.5", false),
    ("203.0.113.5", false),
    ("11.0.0.5", false),
];

const CLIENTS_V6: &[(&str, bool)] = &[
    ("fd77::2", true),
    ("fc00::5", true),
    ("2001:db8::5", false),
    ("fe00::5", false),
];

impl Pair {
    fn new() -> Pair {
        let proxy_ns = Netns::new("pp");
        let client_ns = Netns::new("pc");
        // No duplicate address detection (addresses usable at once); through
        // /proc/sys, so that no sysctl binary is needed.
        for ns in [&proxy_ns, &client_ns] {
            let out = ns.exec(
                "sh",
                &[
                    "-c",
                    "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
                     echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
                ],
            );
            assert!(
                out.status.success(),
                "accept_dad=0 in {}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        proxy_ns.ip(&[
            "link",
            "add",
            "pv",
            "type",
            "veth",
            "peer",
            "name",
            "cv",
            "netns",
            &client_ns.name,
        ]);
        proxy_ns.ip(&["link", "set", "pv", "up"]);
        client_ns.ip(&["link", "set", "cv", "up"]);
        proxy_ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "pv"]);
        proxy_ns.ip(&["addr", "add", "fd77::1/64", "dev", "pv", "nodad"]);
        client_ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "cv"]);
        client_ns.ip(&["addr", "add", "fd77::2/64", "dev", "cv", "nodad"]);
        for (a, _) in CLIENTS_V4.iter().skip(1) {
            client_ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "cv"]);
            proxy_ns.ip(&["route", "add", &format!("{a}/32"), "dev", "pv"]);
        }
        for (a, _) in CLIENTS_V6.iter().skip(1) {
            client_ns.ip(&["addr", "add", &format!("{a}/128"), "dev", "cv", "nodad"]);
            proxy_ns.ip(&["route", "add", &format!("{a}/128"), "dev", "pv"]);
        }
        Pair {
            proxy_ns,
            client_ns,
        }
    }

    /// A SOCKS5 greeting from `src` in the client namespace: Some(reply)
    /// if answered, None if closed without a byte.
    fn greet_from(&self, src: &str, proxy: SocketAddr, greeting: &[u8]) -> Option<Vec<u8>> {
        let r = ns_raw(&self.client_ns, Some(src), proxy, greeting, 2, 5.0);
        if r.received.is_empty() {
            assert!(
                r.closed,
                "client from {src}: neither answered nor closed within 5 s"
            );
            None
        } else {
            Some(r.received)
        }
    }
}

#[test]
fn netns_default_beyond_loopback_serves_only_private_clients() {
    if !require_root("netns_default_beyond_loopback_serves_only_private_clients") {
        return;
    }
    let pair = Pair::new();
    for (listen, clients) in [("10.77.0.1", CLIENTS_V4), ("fd77::1", CLIENTS_V6)] {
        let proxy = Proxy::start_in_netns_on(&pair.proxy_ns, listen, &["127.0.0.1"]);
        let mut wrong = Vec::new();
        for &(src, allowed) in clients {
            let got = pair.greet_from(src, proxy.addr, &GREETING);
            match (&got, allowed) {
                (Some(r), true) if r[..] == [0x05, 0x00] => {}
                (None, false) => {}
                _ => wrong.push(format!(
                    "{src}: expected {}, got {got:02x?}",
                    if allowed { "05 00" } else { "closed" }
                )),
            }
        }
        // A refused client's HTTP request is not answered either.
        let bad = clients.iter().find(|(_, ok)| !ok).unwrap().0;
        let r = ns_raw(
            &pair.client_ns,
            Some(bad),
            proxy.addr,
            b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
            0,
            5.0,
        );
        if !(r.received.is_empty() && r.closed) {
            wrong.push(format!("HTTP from {bad}: {r:?}"));
        }
        assert!(
            wrong.is_empty(),
            "proxy on {listen}:\n{}\n--- proxy stdout:\n{}",
            wrong.join("\n"),
            tail(&proxy.stdout(), 30)
        );
        // The notice follows the "listening on" line: look for it in all
        // the proxy printed, once it has exited.
        let out = proxy.finish();
        assert!(
            out.stdout.contains(NOTICE),
            "listening on {listen} without --auth or --allow: expected a line with {NOTICE:?}\n{}",
            tail(&out.stdout, 20)
        );
    }
}

#[test]
fn netns_auth_or_allow_replaces_the_default_ranges() {
    if !require_root("netns_auth_or_allow_replaces_the_default_ranges") {
        return;
    }
    let pair = Pair::new();
    // With --auth every address may try (and must log in).
    let proxy = Proxy::start_in_netns_on(
        &pair.proxy_ns,
        "10.77.0.1",
        &["--auth", "alice:s3cret", "127.0.0.1"],
    );
    for src in ["198.18.0.5", "10.77.0.2"] {
        let got = pair.greet_from(src, proxy.addr, &[0x05, 0x01, 0x02]);
        assert_eq!(
            got.as_deref(),
            Some(&[0x05u8, 0x02][..]),
            "from {src} with --auth"
        );
    }
    // All it printed, once it has exited: the notice comes after the
    // "listening on" line, so reading at start would race it.
    let out = proxy.finish();
    assert!(
        !out.stdout.contains(NOTICE),
        "with --auth the default ranges do not apply:\n{}",
        tail(&out.stdout, 20)
    );
    // With --allow, exactly the listed ranges.
    let proxy = Proxy::start_in_netns_on(
        &pair.proxy_ns,
        "10.77.0.1",
        &["--allow", "198.18.0.0/24", "127.0.0.1"],
    );
    assert_eq!(
        pair.greet_from("198.18.0.5", proxy.addr, &GREETING)
            .as_deref(),
        Some(&[0x05u8, 0x00][..]),
        "198.18.0.5 with --allow 198.18.0.0/24"
    );
    assert_eq!(
        pair.greet_from("10.77.0.2", proxy.addr, &GREETING),
        None,
        "10.77.0.2 is private but not in --allow 198.18.0.0/24"
    );
    let out = proxy.finish();
    assert!(
        !out.stdout.contains(NOTICE),
        "with --allow the default ranges do not apply:\n{}",
        tail(&out.stdout, 20)
    );
}

/// "Passwords are ... never logged": not the right one, not a wrong one,
/// not their Basic encoding, even with `-d` (debug lines for every
/// connection, failed logins included) and with a log file at debug level.
#[test]
fn passwords_never_reach_the_log_after_failed_logins() {
    let echo = Server::echo("127.0.0.1:0");
    let server = HttpServer::start("127.0.0.1:0");
    let (good, bad) = ("Corr3ctH0rse", "Wr0ngB4ttery");
    let user = format!("alice:{good}");
    let state = TempDir::new();
    let file_log = Proxy::launch(
        &Launch {
            debug: false,
            env: vec![
                ("RUST_LOG", "debug".to_string()),
                ("XDG_STATE_HOME", state.path.to_str().unwrap().to_string()),
            ],
            ..Launch::default()
        },
        &["--auth", &user, "127.0.0.2"],
    );
    let debug = Proxy::start(&["--auth", &user, "127.0.0.2"]);
    for proxy in [&debug, &file_log] {
        socks5_auth_refused(proxy.addr, "alice", bad);
        socks5_auth_refused(proxy.addr, "mallory", good);
        assert_407(
            &http_get_with(proxy.addr, &server, Some(("alice", bad))),
            "wrong password",
        );
        socks5_auth_echo(proxy.addr, echo.addr, "alice", good);
        assert_eq!(
            http_get_with(proxy.addr, &server, Some(("alice", good))).status,
            200
        );
    }
    let outs = [debug.finish(), file_log.finish()];
    let log =
        std::fs::read_to_string(state.path.join("dispatch/dispatch-0.log")).expect("the log file");
    assert!(
        log.contains(" DEBUG ") && outs[0].stdout.contains(" DEBUG "),
        "both logs at debug level:\n{log}\n{}",
        outs[0].stdout
    );
    let basic = |p: &str| {
        proxy_auth_header("alice", p)
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    for (what, text) in [
        ("-d stdout", &outs[0].stdout),
        ("-d stderr", &outs[0].stderr),
        ("stdout", &outs[1].stdout),
        ("log file", &log),
    ] {
        for secret in [good.to_string(), bad.to_string(), basic(good), basic(bad)] {
            assert!(
                !text.contains(&secret),
                "{secret:?} in the {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(&secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// An open proxy is an explicit `--allow 0.0.0.0/0` (`::/0` for IPv6): beyond
/// loopback it then serves clients from anywhere, public addresses
/// included, and prints no notice about the default ranges.
#[test]
fn netns_allow_everything_serves_public_clients() {
    if !require_root("netns_allow_everything_serves_public_clients") {
        return;
    }
    let pair = Pair::new();
    for (listen, clients, all) in [
        ("10.77.0.1", CLIENTS_V4, "0.0.0.0/0"),
        ("fd77::1", CLIENTS_V6, "::/0"),
    ] {
        let proxy =
            Proxy::start_in_netns_on(&pair.proxy_ns, listen, &["--allow", all, "127.0.0.1"]);
        let mut wrong = Vec::new();
        for &(src, _) in clients {
            let got = pair.greet_from(src, proxy.addr, &GREETING);
            if got.as_deref() != Some(&[0x05u8, 0x00][..]) {
                wrong.push(format!("{src}: {got:02x?}"));
            }
        }
        let out = proxy.finish();
        assert!(
            wrong.is_empty(),
            "with --allow {all} on {listen}, refused:\n{}",
            wrong.join("\n")
        );
        assert!(
            !out.stdout.contains(NOTICE),
            "no default-range notice with --allow:\n{}",
            tail(&out.stdout, 20)
        );
    }
}

/// A malformed RFC 1929 message (a wrong version, an empty user name) is
/// answered in RFC 1929's own format, `01` and a failure, then closed; not
/// with a SOCKS5 method selection (`05 FF`), which the client is no longer
/// reading.
#[test]
fn malformed_credentials_get_an_rfc1929_failure() {
    let proxy = Proxy::start(&["--auth", "alice:s3cret", "127.0.0.2"]);
    for bad in [
        &[0x05, 0x05, b'a', b'l', b'i', b'c', b'e', 0x01, b'x'][..],
        &[0x01, 0x00, 0x01, b'x'][..],
    ] {
        let mut s = client(proxy.addr);
        s.write_all(&[0x05, 0x01, 0x02]).unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).unwrap();
        assert_eq!(method, [0x05, 0x02]);
        s.write_all(bad).unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
        assert_eq!(got, [0x01, 0x01], "answer to {bad:02x?}");
    }
    proxy.finish();
}
