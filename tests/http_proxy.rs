//! HTTP proxying on the SOCKS port (issue 6): CONNECT tunnels, forwarding
//! of absolute-form requests (origin form, hop-by-hop headers, persistent
//! connections, streamed bodies in both framings), error responses, and
//! dispatch over the start addresses as for SOCKS.
//!
//! Clients are curl and a raw HTTP/1.1 client; the origin is
//! `common::http::HttpServer`, which records every request and connection.
//! Everything is on loopback, except the 504 test, which runs in a network
//! namespace of its own (root only).

mod common;

use common::http::*;
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn show(v: &[IpAddr]) -> String {
    v.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn peer_ips(s: &HttpServer) -> Vec<IpAddr> {
    s.peers().iter().map(|p| p.ip()).collect()
}

fn px(proxy: &Proxy) -> String {
    format!("http://{}", proxy.addr)
}

/// A short text body, as error responses must have.
fn assert_short_text_body(r: &Resp, what: &str) {
    assert!(
        !r.body.is_empty() && r.body.len() < 4096 && std::str::from_utf8(&r.body).is_ok(),
        "{what}: expected a short text body, got {:?}\n{}",
        r.text(),
        r.raw_head
    );
}

/// Sends `request` on a new connection and reads one response.
fn one(proxy: SocketAddr, request: &[u8]) -> Resp {
    let mut c = HttpConn::connect(proxy);
    c.send(request);
    c.try_response(false).unwrap_or_else(|e| {
        panic!(
            "no response to {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    })
}

// ---------------------------------------------------------------------------
// curl as the client
// ---------------------------------------------------------------------------

#[test]
fn curl_forward_proxy_plain_get() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let body = curl_ok(&["-x", &px(&proxy), &server.url("127.0.0.1", "/a/b?c=d")]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("server {} saw GET /a/b?c=d\n", server.addr.port())
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].request_line, "GET /a/b?c=d HTTP/1.1");
    assert_eq!(
        reqs[0].header("host"),
        Some(format!("127.0.0.1:{}", server.addr.port()).as_str())
    );
    assert_eq!(peer_ips(&server), vec![ip("127.0.0.2")]);
    proxy.finish();
}

#[test]
fn curl_forward_proxy_name_target() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.3"]);
    let body = curl_ok(&["-x", &px(&proxy), &server.url("localhost", "/named")]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("server {} saw GET /named\n", server.addr.port())
    );
    assert_eq!(peer_ips(&server), vec![ip("127.0.0.3")]);
    proxy.finish();
}

#[test]
fn curl_connect_tunnel() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    for host in ["127.0.0.1", "localhost"] {
        let body = curl_ok(&["-p", "-x", &px(&proxy), &server.url(host, "/tunnelled")]);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("server {} saw GET /tunnelled\n", server.addr.port()),
            "through CONNECT {host}"
        );
    }
    // Through a tunnel the origin sees what curl sent: origin form.
    for r in server.requests() {
        assert_eq!(r.request_line, "GET /tunnelled HTTP/1.1");
    }
    assert_eq!(peer_ips(&server), vec![ip("127.0.0.2"), ip("127.0.0.2")]);
    proxy.finish();
}

/// Forward, CONNECT and SOCKS5 clients share one weighted round robin.
#[test]
fn http_and_socks_clients_share_the_round_robin() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    let p = px(&proxy);
    let s5 = format!("socks5://{}", proxy.addr);
    let s5h = format!("socks5h://{}", proxy.addr);
    let url = server.url("127.0.0.1", "/rr");
    let name_url = server.url("localhost", "/rr");
    let runs: Vec<Vec<&str>> = vec![
        vec!["-x", &p, &url],
        vec!["-x", &p, &url],
        vec!["-p", "-x", &p, &url],
        vec!["-p", "-x", &p, &name_url],
        vec!["-x", &s5, &url],
        vec!["-x", &p, &name_url],
        vec!["-p", "-x", &p, &url],
        vec!["-x", &s5h, &name_url],
    ];
    for args in &runs {
        curl_ok(args);
    }
    let want: Vec<IpAddr> = [ip("127.0.0.2"), ip("127.0.0.3")]
        .iter()
        .copied()
        .cycle()
        .take(runs.len())
        .collect();
    assert_eq!(
        show(&peer_ips(&server)),
        show(&want),
        "source addresses of forward, CONNECT and SOCKS5 connections in turn"
    );
    proxy.finish();
}

// ---------------------------------------------------------------------------
// CONNECT, raw
// ---------------------------------------------------------------------------

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

fn connect_and_echo(proxy: SocketAddr, authority: &str) {
    let mut s = client(proxy);
    // The request head and the first tunnel bytes in one write.
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes();
    req.extend_from_slice(b"early bytes, sent with the head");
    s.write_all(&req).unwrap();
    let mut head = vec![0u8; ESTABLISHED.len()];
    s.read_exact(&mut head)
        .unwrap_or_else(|e| panic!("CONNECT {authority}: reading the response: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(ESTABLISHED),
        "CONNECT {authority}"
    );
    let mut echo = vec![0u8; 31];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"early bytes, sent with the head");
    s.write_all(b"and more").unwrap();
    let mut more = [0u8; 8];
    s.read_exact(&mut more).unwrap();
    assert_eq!(&more, b"and more");
    // Half-close goes through the tunnel.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
}

#[test]
fn connect_ipv4_keeps_bytes_sent_with_the_head() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    connect_and_echo(proxy.addr, &echo.addr.to_string());
    assert_eq!(echo.peers()[0].ip(), ip("127.0.0.2"));
    proxy.finish();
}

#[test]
fn connect_bracketed_ipv6() {
    let echo = Server::echo("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    connect_and_echo(proxy.addr, &format!("[::1]:{}", echo.addr.port()));
    assert_eq!(echo.peers()[0].ip(), ip("::1"));
    proxy.finish();
}

#[test]
fn connect_name() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.3"]);
    connect_and_echo(proxy.addr, &format!("localhost:{}", echo.addr.port()));
    assert_eq!(echo.peers()[0].ip(), ip("127.0.0.3"));
    proxy.finish();
}

#[test]
fn connect_head_one_byte_at_a_time() {
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut s = client(proxy.addr);
    let req = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nUser-Agent: slow\r\n\r\n",
        echo.addr
    );
    for b in req.as_bytes() {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let mut head = vec![0u8; ESTABLISHED.len()];
    s.read_exact(&mut head).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(ESTABLISHED)
    );
    s.write_all(b"ping").unwrap();
    let mut r = [0u8; 4];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"ping");
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Forwarding: request rewriting
// ---------------------------------------------------------------------------

#[test]
fn forward_rewrites_to_origin_form_and_drops_hop_by_hop_headers() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let port = server.addr.port();
    let req = format!(
        "GET http://127.0.0.1:{port}/path/x?q=1&r=2 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic dTpw\r\n\
         Connection: keep-alive, X-Drop-Me\r\n\
         X-Drop-Me: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         Upgrade: h2c\r\n\
         X-Keep: yes\r\n\
         User-Agent: dispatch-test\r\n\
         \r\n"
    );
    let r = one(proxy.addr, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.text(), format!("server {port} saw GET /path/x?q=1&r=2\n"));
    let got = &server.requests()[0];
    assert_eq!(got.request_line, "GET /path/x?q=1&r=2 HTTP/1.1");
    let host = format!("127.0.0.1:{port}");
    assert_eq!(got.all("host"), vec![host.as_str()], "{}", got.raw_head);
    for h in [
        "proxy-connection",
        "proxy-authorization",
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            got.header(h).is_none(),
            "hop-by-hop header {h} reached the origin:\n{}",
            got.raw_head
        );
    }
    // The client's Connection header must not pass; the proxy may send its own.
    for v in got.all("connection") {
        assert!(
            v.eq_ignore_ascii_case("keep-alive") || v.eq_ignore_ascii_case("close"),
            "Connection: {v} reached the origin:\n{}",
            got.raw_head
        );
    }
    assert_eq!(got.header("x-keep"), Some("yes"), "{}", got.raw_head);
    assert_eq!(
        got.header("user-agent"),
        Some("dispatch-test"),
        "{}",
        got.raw_head
    );
    proxy.finish();
}

#[test]
fn forward_sets_a_missing_host() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let port = server.addr.port();
    let r = one(
        proxy.addr,
        format!("GET http://127.0.0.1:{port}/nohost HTTP/1.1\r\nUser-Agent: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let got = &server.requests()[0];
    assert_eq!(got.request_line, "GET /nohost HTTP/1.1");
    let host = format!("127.0.0.1:{port}");
    assert_eq!(got.all("host"), vec![host.as_str()], "{}", got.raw_head);
    proxy.finish();
}

#[test]
fn forward_to_ipv6_literal_and_empty_path() {
    let server = HttpServer::start("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    let port = server.addr.port();
    // No path at all: the origin gets "/".
    let r = one(
        proxy.addr,
        format!("GET http://[::1]:{port} HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.text(), format!("server {port} saw GET /\n"));
    let got = &server.requests()[0];
    assert_eq!(got.request_line, "GET / HTTP/1.1");
    assert_eq!(got.header("host"), Some(format!("[::1]:{port}").as_str()));
    assert_eq!(server.peers()[0].ip(), ip("::1"));
    proxy.finish();
}

#[test]
fn forward_other_methods() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    for (method, body) in [
        ("PUT", &b"put body"[..]),
        ("PATCH", b"patch"),
        ("DELETE", b""),
        ("OPTIONS", b""),
    ] {
        c.send(
            format!(
                "{method} http://127.0.0.1:{p}/m HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        c.send(body);
        let r = c.response();
        assert_eq!(r.text(), format!("server {p} saw {method} /m\n"));
        let got = server.requests().pop().unwrap();
        assert_eq!(got.request_line, format!("{method} /m HTTP/1.1"));
        assert_eq!(got.body_hash, fnv(body), "{method} body");
    }
    proxy.finish();
}

#[test]
fn client_asking_to_close_is_closed_after_the_response() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    for req in [
        format!("GET http://127.0.0.1:{p}/c11 HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET http://127.0.0.1:{p}/c10 HTTP/1.0\r\n\r\n"),
    ] {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(req.as_bytes());
        let all = c
            .until_closed(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{req:?}: the proxy must close after the response: {e}"));
        let (status, _, body) = parse_response(&all)
            .unwrap_or_else(|| panic!("{req:?}: {:?}", String::from_utf8_lossy(&all)));
        assert_eq!(status, 200);
        let path = if req.contains("c11") { "/c11" } else { "/c10" };
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("server {p} saw GET {path}\n")
        );
    }
    let r = &server.requests()[1];
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{p}").as_str()),
        "{}",
        r.raw_head
    );
    proxy.finish();
}

#[test]
fn forward_host_and_query_come_from_the_url() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    // A Host that disagrees with the URL: the URL's wins (RFC 9112, 3.2.2).
    c.send(
        format!("GET http://127.0.0.1:{p}/h HTTP/1.1\r\nHost: other.invalid:81\r\n\r\n").as_bytes(),
    );
    assert_eq!(c.response().status, 200);
    // No path but a query.
    c.send(
        format!("GET http://127.0.0.1:{p}?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n").as_bytes(),
    );
    assert_eq!(c.response().status, 200);
    let reqs = server.requests();
    let host = format!("127.0.0.1:{p}");
    assert_eq!(
        reqs[0].all("host"),
        vec![host.as_str()],
        "{}",
        reqs[0].raw_head
    );
    assert_eq!(reqs[1].request_line, "GET /?q=1 HTTP/1.1");
    proxy.finish();
}

#[test]
fn connection_cannot_remove_the_framing_headers() {
    // "Connection: Content-Length" must not make the origin see a request
    // without its length while the proxy frames it with one (smuggling).
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n");
    c.send(
        format!(
            "POST http://127.0.0.1:{p}/sink HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
             Connection: keep-alive, Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("{} {:016x}\n", smuggled.len(), fnv(smuggled.as_bytes()))
    );
    c.send(&get("127.0.0.1", p, "/after"));
    assert_eq!(c.response().text(), format!("server {p} saw GET /after\n"));
    let lines: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.request_line.clone())
        .collect();
    assert_eq!(lines, vec!["POST /sink HTTP/1.1", "GET /after HTTP/1.1"]);
    proxy.finish();
}

#[test]
fn extra_bytes_from_the_origin_are_not_taken_for_the_next_answer() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("127.0.0.1", p, "/overflow"));
    assert_eq!(c.response().text(), "hello");
    // Either the proxy closes the client connection, or the next answer is
    // the real one, never "smuggle".
    c.send(&get("127.0.0.1", p, "/next"));
    match c.try_response(false) {
        Ok(r) => assert_eq!(r.text(), format!("server {p} saw GET /next\n")),
        Err(e) => {
            let _ = e;
            assert_eq!(
                server.requests().len(),
                1,
                "the request went out, the answer did not come back"
            );
        }
    }
    proxy.finish();
}

#[test]
fn a_client_leaving_mid_body_ends_the_exchange() {
    let server = HttpServer::start("127.0.0.1:0");
    let mut proxy = Proxy::start(&["127.0.0.2"]);
    let p = server.addr.port();
    // Warm up, then count descriptors.
    curl_ok(&["-x", &px(&proxy), &server.url("127.0.0.1", "/warm")]);
    thread::sleep(Duration::from_millis(100));
    let baseline = proxy.fd_count_quiet();
    for _ in 0..5 {
        let mut c = HttpConn::connect(proxy.addr);
        let mut req = format!(
            "POST http://127.0.0.1:{p}/sink HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: 1000000\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&[7u8; 1000]);
        c.send(&req);
        thread::sleep(Duration::from_millis(50));
        drop(c);
    }
    let now = proxy.fd_count_settled(baseline, Duration::from_secs(5));
    assert!(
        now <= baseline,
        "{now} descriptors 5 s after five clients left mid-body, {baseline} before"
    );
    proxy.assert_alive();
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Forwarding: persistent connections
// ---------------------------------------------------------------------------

fn get(host: &str, port: u16, path: &str) -> Vec<u8> {
    format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").into_bytes()
}

#[test]
fn keep_alive_to_one_host_and_a_new_upstream_when_the_host_changes() {
    let a = HttpServer::start("127.0.0.1:0");
    let b = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let mut c = HttpConn::connect(proxy.addr);
    for path in ["/one", "/two"] {
        c.send(&get("127.0.0.1", pa, path));
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.raw_head);
        assert_eq!(r.text(), format!("server {pa} saw GET {path}\n"));
    }
    assert_eq!(
        a.peers().len(),
        1,
        "two requests to one host on one client connection must use one upstream connection"
    );
    assert!(a.requests().iter().all(|r| r.conn == 0));
    c.send(&get("127.0.0.1", pb, "/three"));
    let r = c.response();
    assert_eq!(r.text(), format!("server {pb} saw GET /three\n"));
    assert_eq!(b.peers().len(), 1);
    // And back to A on the same client connection.
    c.send(&get("127.0.0.1", pa, "/four"));
    let r = c.response();
    assert_eq!(r.text(), format!("server {pa} saw GET /four\n"));
    assert_eq!(a.requests().len(), 3);
    proxy.finish();
}

#[test]
fn keep_alive_host_is_the_name_not_the_address() {
    // 127.0.0.1 and localhost are two hosts, though one server.
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    for (host, path) in [
        ("127.0.0.1", "/1"),
        ("127.0.0.1", "/2"),
        ("localhost", "/3"),
        ("localhost", "/4"),
    ] {
        c.send(&get(host, p, path));
        let r = c.response();
        assert_eq!(r.text(), format!("server {p} saw GET {path}\n"));
    }
    let conns: Vec<usize> = s.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns,
        vec![0, 0, 1, 1],
        "upstream connection of each request (127.0.0.1, 127.0.0.1, localhost, localhost)"
    );
    assert_eq!(
        s.requests()[2].header("host"),
        Some(format!("localhost:{p}").as_str())
    );
    proxy.finish();
}

#[test]
fn curl_reuses_the_proxy_connection_for_two_urls() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let out = curl_ok(&[
        "-x",
        &px(&proxy),
        &s.url("127.0.0.1", "/first"),
        &s.url("127.0.0.1", "/second"),
    ]);
    let p = s.addr.port();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("server {p} saw GET /first\nserver {p} saw GET /second\n")
    );
    assert_eq!(s.peers().len(), 1, "one upstream connection for both");
    proxy.finish();
}

#[test]
fn pipelined_requests_to_one_host() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    let mut both = get("127.0.0.1", p, "/p1");
    both.extend_from_slice(&get("127.0.0.1", p, "/p2"));
    c.send(&both);
    assert_eq!(c.response().text(), format!("server {p} saw GET /p1\n"));
    assert_eq!(c.response().text(), format!("server {p} saw GET /p2\n"));
    assert_eq!(s.peers().len(), 1);
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Forwarding: bodies and framing
// ---------------------------------------------------------------------------

fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Prng::new(seed).fill(&mut v);
    v
}

#[test]
fn bodies_content_length_and_chunked_both_ways_on_one_connection() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    let cases = [
        (false, false, 100_000usize),
        (false, true, 70_001),
        (true, false, 123_457),
        (true, true, 5),
        (false, false, 0),
        (true, true, 0),
    ];
    for (i, (req_chunked, resp_chunked, len)) in cases.iter().copied().enumerate() {
        let body = prng_bytes(i as u64 + 1, len);
        let path = if resp_chunked {
            "/echo?chunked"
        } else {
            "/echo"
        };
        let mut req =
            format!("POST http://127.0.0.1:{p}{path} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n")
                .into_bytes();
        if req_chunked {
            req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            req.extend_from_slice(&chunked(&body, &[1, 4096, 333, 65536]));
        } else {
            req.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
            req.extend_from_slice(&body);
        }
        c.send(&req);
        let r = c.try_response(false).unwrap_or_else(|e| {
            panic!("case {i} (request chunked {req_chunked}, response chunked {resp_chunked}, {len} bytes): {e}")
        });
        assert_eq!(r.status, 200, "case {i}: {}", r.raw_head);
        assert_eq!(
            r.header("transfer-encoding").is_some(),
            resp_chunked,
            "case {i}: response framing changed:\n{}",
            r.raw_head
        );
        assert!(
            r.body == body,
            "case {i} (request chunked {req_chunked}, response chunked {resp_chunked}): \
             echoed {} bytes, fnv {:016x}; sent {len}, fnv {:016x}",
            r.body.len(),
            fnv(&r.body),
            fnv(&body)
        );
        let got = &s.requests()[i];
        assert_eq!(got.body_len, len as u64, "case {i}: origin got");
        assert_eq!(
            got.body_hash,
            fnv(&body),
            "case {i}: origin got other bytes"
        );
    }
    // A request after all that still works, on the same upstream connection.
    c.send(&get("127.0.0.1", p, "/after"));
    assert_eq!(c.response().text(), format!("server {p} saw GET /after\n"));
    assert_eq!(
        s.peers().len(),
        1,
        "one upstream connection for all requests"
    );
    proxy.finish();
}

#[test]
fn head_204_and_304_responses_have_no_body() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    // HEAD: Content-Length of the GET answer, no body.
    c.send(
        format!("HEAD http://127.0.0.1:{p}/h HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n").as_bytes(),
    );
    let r = c.try_response(true).unwrap_or_else(|e| panic!("HEAD: {e}"));
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some(), "{}", r.raw_head);
    c.send(&get("127.0.0.1", p, "/nocontent"));
    let r = c.response();
    assert_eq!(r.status, 204);
    // 304 with a Content-Length: no body either.
    c.send(&get("127.0.0.1", p, "/notmodified"));
    let r = c.response();
    assert_eq!(r.status, 304);
    // Both answers ended at their heads: the next request works.
    c.send(&get("127.0.0.1", p, "/next"));
    let r = c.response();
    assert_eq!(r.text(), format!("server {p} saw GET /next\n"));
    assert_eq!(s.peers().len(), 1);
    proxy.finish();
}

#[test]
fn chunk_extensions_and_trailers_keep_the_framing() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    // Response: extensions, a zero-padded last chunk, trailer fields.
    c.send(&get("127.0.0.1", p, "/trailers"));
    let r = c.response();
    assert_eq!(r.text(), "hello, world");
    // Request: the same features.
    c.send(
        format!(
            "POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
             Transfer-Encoding: chunked\r\n\r\n\
             3;a=b\r\nabc\r\n\
             0A ; c=\"d;e\"\r\n0123456789\r\n\
             00\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.text(), "abc0123456789");
    // Both messages ended where they should: the next request works.
    c.send(&get("127.0.0.1", p, "/after"));
    assert_eq!(c.response().text(), format!("server {p} saw GET /after\n"));
    assert_eq!(s.peers().len(), 1);
    proxy.finish();
}

#[test]
fn origin_closing_after_an_answer_does_not_break_the_next_request() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("127.0.0.1", p, "/bye"));
    let r = c.response();
    assert_eq!(r.text(), format!("server {p} says bye\n"));
    // The origin said `Connection: close` and closed: the proxy closes the
    // client connection too, at once (not after an idle timeout), and the
    // client reconnects; not an error, not a hang.
    let left = read_until_closed(&mut c.w, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("client connection not closed after `Connection: close`: {e}"));
    assert!(left.is_empty(), "bytes after the response: {left:02x?}");
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("127.0.0.1", p, "/next"));
    let r = c.response();
    assert_eq!(r.status, 200, "{}{}", r.raw_head, r.text());
    assert_eq!(r.text(), format!("server {p} saw GET /next\n"));
    assert_eq!(s.peers().len(), 2);
    proxy.finish();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_stalled_reader_holds_bodies_back_instead_of_buffering_them() {
    const LEN: u64 = 64 * 1024 * 1024;
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let before = rss_kib(proxy.pid);
    // Download: the client reads the head, then nothing for a second.
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("127.0.0.1", p, &format!("/download?len={LEN}&seed=3")));
    let (line, _, _) = c.head();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    thread::sleep(Duration::from_secs(1));
    let during = rss_kib(proxy.pid);
    assert!(
        during < before + 16 * 1024,
        "proxy RSS grew from {before} KiB to {during} KiB while the client did not read a 64 MiB response"
    );
    let mut v = Verifier::new(3);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = LEN;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        c.r.read_exact(&mut buf[..n]).unwrap();
        v.check(&buf[..n]).unwrap();
        left -= n as u64;
    }
    // Upload: the origin reads nothing of the body for a second.
    let before = rss_kib(proxy.pid);
    let mut c = HttpConn::connect(proxy.addr);
    let head = format!(
        "POST http://127.0.0.1:{p}/sink?pause=1500 HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: {LEN}\r\n\r\n"
    );
    c.send(head.as_bytes());
    let mut w = c.w.try_clone().unwrap();
    let writer = thread::spawn(move || send_stream(&mut w, 11, LEN, 256 * 1024));
    thread::sleep(Duration::from_secs(1));
    let during = rss_kib(proxy.pid);
    assert!(
        during < before + 16 * 1024,
        "proxy RSS grew from {before} KiB to {during} KiB while the origin did not read a 64 MiB request body"
    );
    writer.join().unwrap().expect("send the body");
    let r = c.response();
    let mut h = Fnv::default();
    let mut prng = Prng::new(11);
    let mut left = LEN;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        prng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    assert_eq!(r.text(), format!("{LEN} {:016x}\n", h.0));
    proxy.finish();
}

#[test]
fn close_delimited_response_is_relayed_to_the_end() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("127.0.0.1", p, "/close"));
    let all = c
        .until_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the proxy must close after a close-delimited body: {e}"));
    let (status, _, body) = parse_response(&all)
        .unwrap_or_else(|| panic!("not a response: {:?}", String::from_utf8_lossy(&all)));
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("server {p} closes after this body\n")
    );
    proxy.finish();
}

#[test]
fn expect_100_continue_is_relayed() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    let body = prng_bytes(9, 50_000);
    c.send(
        format!(
            "POST http://127.0.0.1:{p}/sink HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (line, _, raw) = c.head();
    assert!(
        line.starts_with("HTTP/1.1 100"),
        "expected the origin's 100 Continue before sending the body, got {raw:?}"
    );
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{} {:016x}\n", body.len(), fnv(&body)));
    // Framing still right afterwards.
    c.send(&get("127.0.0.1", p, "/after"));
    assert_eq!(c.response().text(), format!("server {p} saw GET /after\n"));
    proxy.finish();
}

#[test]
fn request_bodies_are_streamed_not_buffered() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    let body = prng_bytes(5, 1_000_000);
    // Content-Length: the first 64 KiB must reach the origin before the rest is sent.
    let mut head = format!(
        "POST http://127.0.0.1:{p}/sink HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body[..65536]);
    c.send(&head);
    assert!(
        s.wait_progress(65536, Duration::from_secs(5)),
        "Content-Length body: the origin got {} of the first 65536 bytes within 5 s; \
         the proxy holds the body back",
        s.progress()
    );
    c.send(&body[65536..]);
    let r = c.response();
    assert_eq!(r.text(), format!("{} {:016x}\n", body.len(), fnv(&body)));
    // Chunked: same.
    let base = s.progress();
    let mut head = format!(
        "POST http://127.0.0.1:{p}/sink HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(b"10000\r\n");
    head.extend_from_slice(&body[..65536]);
    head.extend_from_slice(b"\r\n");
    c.send(&head);
    assert!(
        s.wait_progress(base + 65536, Duration::from_secs(5)),
        "chunked body: the origin got {} of the first 65536 bytes within 5 s; \
         the proxy holds the body back",
        s.progress() - base
    );
    let rest = chunked(&body[65536..], &[100_000]);
    c.send(&rest);
    let r = c.response();
    assert_eq!(r.text(), format!("{} {:016x}\n", body.len(), fnv(&body)));
    proxy.finish();
}

#[test]
fn response_bodies_are_streamed_not_buffered() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get(
        "127.0.0.1",
        p,
        "/stall?len=300000&first=65536&seed=77",
    ));
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (line, _, _) = c.head();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut first = vec![0u8; 65536];
    if let Err(e) = c.r.read_exact(&mut first) {
        panic!("the first 65536 bytes of a stalled response did not arrive within 5 s ({e}): the proxy holds the body back");
    }
    let mut v = Verifier::new(77);
    v.check(&first).unwrap();
    s.release();
    let rest = c.read_exact(300_000 - 65536);
    v.check(&rest).unwrap();
    proxy.finish();
}

#[test]
fn ten_mib_up_and_down_through_the_forward_proxy() {
    const LEN: usize = 10 * 1024 * 1024;
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let dir = TempDir::new();
    let up = dir.path.join("up.bin");
    let data = prng_bytes(42, LEN);
    std::fs::write(&up, &data).unwrap();
    let want = format!("{LEN} {:016x}\n", fnv(&data));
    let upload = format!("@{}", up.display());
    let sink = s.url("127.0.0.1", "/sink");
    let started = Instant::now();
    // Content-Length upload, then chunked upload.
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let mut args = vec![
            "-x",
            &px(&proxy)[..],
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &upload,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(h) = extra {
            args.push("-H".into());
            args.push(h.into());
        }
        args.push(sink.clone());
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = curl_ok(&a);
        assert_eq!(
            String::from_utf8_lossy(&out),
            want,
            "upload {extra:?}: origin's length and hash"
        );
    }
    let last = s.requests();
    assert_eq!(
        last[1].header("transfer-encoding"),
        Some("chunked"),
        "second upload should be chunked"
    );
    // Content-Length download, then chunked download.
    for (i, q) in ["", "&chunked"].iter().enumerate() {
        let out = dir.path.join(format!("down{i}.bin"));
        let url = s.url("127.0.0.1", &format!("/download?len={LEN}&seed=43{q}"));
        curl_ok(&["-x", &px(&proxy), "-o", out.to_str().unwrap(), &url]);
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), LEN, "download {q:?}: length");
        let mut v = Verifier::new(43);
        v.check(&got)
            .unwrap_or_else(|e| panic!("download {q:?}: {e}"));
    }
    eprintln!(
        "4 x 10 MiB through the forward proxy: {:?}",
        started.elapsed()
    );
    for p in s.peers() {
        assert_eq!(p.ip(), ip("127.0.0.2"));
    }
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn malformed_requests_get_400() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let p = s.addr.port();
    let cases: Vec<String> = vec![
        "GET\r\n\r\n".into(),
        "GET http://127.0.0.1/ \r\n\r\n".into(),
        "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n".into(),
        "CONNECT 127.0.0.1:notaport HTTP/1.1\r\n\r\n".into(),
        "CONNECT [::1:80 HTTP/1.1\r\n\r\n".into(),
        format!("GET http://127.0.0.1:{p}/ HTTP/1.1\r\nno colon in this header\r\n\r\n"),
        format!("POST http://127.0.0.1:{p}/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
        format!(
            "POST http://127.0.0.1:{p}/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        ),
        "GET /origin-form HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
        format!(
            "POST http://127.0.0.1:{p}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    ];
    for req in &cases {
        let r = one(proxy.addr, req.as_bytes());
        assert_eq!(r.status, 400, "{req:?} got\n{}{}", r.raw_head, r.text());
        assert_short_text_body(&r, req);
    }
    assert!(
        s.requests().is_empty(),
        "malformed requests reached the origin: {:?}",
        s.requests()
    );
    proxy.finish();
}

#[test]
fn binary_garbage_that_is_not_socks_gets_400_promptly() {
    // A TLS ClientHello start: someone set an https:// proxy URL.
    // A handshake timeout far beyond the bound below: a 400 within it came
    // from the bytes, not from the timeout, however slow the machine.
    let proxy = Proxy::start(&["--handshake-timeout", "120", "127.0.0.2"]);
    let started = Instant::now();
    let r = one(
        proxy.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
    );
    assert_eq!(r.status, 400, "{}", r.raw_head);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "400 came after {:?}, not at the first impossible byte",
        started.elapsed()
    );
    proxy.finish();
}

#[test]
fn refused_connect_gets_502_saying_why() {
    let closed = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let reqs = [
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n"),
        format!("GET http://{closed}/x HTTP/1.1\r\nHost: {closed}\r\n\r\n"),
    ];
    for req in &reqs {
        let r = one(proxy.addr, req.as_bytes());
        assert_eq!(r.status, 502, "{req:?} got\n{}{}", r.raw_head, r.text());
        assert_short_text_body(&r, req);
        assert!(
            r.text().to_ascii_lowercase().contains("refused"),
            "502 body should say the connection was refused: {:?}",
            r.text()
        );
        // One reason, not the reply and the error saying it twice.
        assert_eq!(
            r.text().to_ascii_lowercase().matches("refused").count(),
            1,
            "{:?}",
            r.text()
        );
    }
    proxy.finish();
}

/// Half a request head, then nothing: after the handshake timeout the
/// client gets a 408 saying so, not a silent close.
#[test]
fn half_sent_head_gets_408_after_the_handshake_timeout() {
    let proxy = Proxy::start(&["--handshake-timeout", "1", "127.0.0.2"]);
    let heads: [&[u8]; 2] = [
        b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.",
        b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n",
    ];
    for head in heads {
        let t = Instant::now();
        let r = one(proxy.addr, head);
        assert_eq!(r.status, 408, "{}{}", r.raw_head, r.text());
        assert_short_text_body(&r, "408");
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
    proxy.finish();
}

#[test]
fn curl_sees_502_for_refused_connect() {
    let closed = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let url = format!("http://{closed}/");
    let out = curl(&["-p", "-x", &px(&proxy), "-w", "%{http_connect}", &url]);
    // curl 56: CONNECT tunnel failed.
    assert_eq!(out.code, Some(56), "{}", out.stderr);
    assert_eq!(out.text(), "502", "{}", out.stderr);
    let out = curl(&[
        "-x",
        &px(&proxy),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(out.text(), "502", "{}", out.stderr);
    proxy.finish();
}

#[test]
fn head_over_16_kib_gets_431() {
    let s = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let url = s.url("127.0.0.1", "/big");
    // 15,000 bytes of header is under the limit.
    let ok = format!("X-Big: {}", "a".repeat(15_000));
    let out = curl(&[
        "-x",
        &px(&proxy),
        "-H",
        &ok,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(out.text(), "200", "15,000-byte header: {}", out.stderr);
    // 20 KiB is over.
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    let out = curl(&[
        "-x",
        &px(&proxy),
        "-H",
        &big,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(out.text(), "431", "20 KiB header: {}", out.stderr);
    // CONNECT too, raw.
    let req = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nX-Big: {1}\r\n\r\n",
        s.addr,
        "b".repeat(20 * 1024)
    );
    let r = one(proxy.addr, req.as_bytes());
    assert_eq!(r.status, 431, "{}", r.raw_head);
    assert_short_text_body(&r, "431");
    assert_eq!(
        s.requests().len(),
        1,
        "only the small request reached the origin"
    );
    proxy.finish();
}

#[test]
fn a_431_survives_a_client_still_sending() {
    // 256 KiB of header, sent while the proxy has already answered: the
    // answer must not be destroyed by a reset.
    let proxy = Proxy::start(&["127.0.0.2"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut w = c.w.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let _ = w.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n");
        let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
        for _ in 0..256 {
            if w.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    let r = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no 431 for a client still sending its head: {e}"));
    assert_eq!(r.status, 431, "{}", r.raw_head);
    drop(c);
    writer.join().unwrap();
    proxy.finish();
}

#[test]
fn requests_for_the_proxy_itself_are_refused() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    let own = proxy.addr;
    for req in [
        format!("CONNECT {own} HTTP/1.1\r\nHost: {own}\r\n\r\n"),
        format!("GET http://{own}/ HTTP/1.1\r\nHost: {own}\r\n\r\n"),
    ] {
        let r = one(proxy.addr, req.as_bytes());
        assert_eq!(r.status, 403, "{req:?} got\n{}{}", r.raw_head, r.text());
        assert_short_text_body(&r, &req);
    }
    // SOCKS5: REP 0x02, connection not allowed by ruleset.
    let (mut s, reply) = socks5_connect(proxy.addr, own);
    assert_eq!(
        reply.rep, 0x02,
        "SOCKS5 CONNECT to the proxy itself: {:02x?}",
        reply.raw
    );
    read_until_closed(&mut s, Duration::from_secs(5)).unwrap();
    // curl -p gets 403 too.
    let out = curl(&[
        "-p",
        "-x",
        &px(&proxy),
        "-w",
        "%{http_connect}",
        &format!("http://{own}/"),
    ]);
    assert_eq!(out.text(), "403", "{}", out.stderr);
    proxy.finish();
}

#[test]
fn a_name_for_the_proxy_itself_is_refused() {
    // localhost resolves to 127.0.0.1, where the proxy listens.
    let proxy = Proxy::start(&["127.0.0.2"]);
    let port = proxy.addr.port();
    let r = one(
        proxy.addr,
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        r.status,
        403,
        "CONNECT localhost:{port} got\n{}{}",
        r.raw_head,
        r.text()
    );
    let (_s, reply) = socks5_connect(proxy.addr, Dest::name("localhost", port));
    assert_eq!(
        reply.rep, 0x02,
        "SOCKS5 CONNECT localhost:{port}: {:02x?}",
        reply.raw
    );
    proxy.finish();
}

#[test]
fn netns_connect_timeout_gets_504_and_unreachable_502() {
    if !require_root("netns_connect_timeout_gets_504_and_unreachable_502") {
        return;
    }
    let ns = Netns::new("h504");
    ns.add_silent_link();
    let proxy = Proxy::start_in_netns(&ns, &["--connect-timeout", "1", "192.0.2.1"]);
    for req in [
        "CONNECT 192.0.2.2:80 HTTP/1.1\r\nHost: 192.0.2.2:80\r\n\r\n",
        "GET http://192.0.2.2:80/x HTTP/1.1\r\nHost: 192.0.2.2:80\r\n\r\n",
    ] {
        let r = ns_raw(&ns, None, proxy.addr, req.as_bytes(), 0, 20.0);
        let (status, _, body) = parse_response(&r.received).unwrap_or_else(|| {
            panic!(
                "{req:?}: no complete response within 20 s: {:?}",
                String::from_utf8_lossy(&r.received)
            )
        });
        assert_eq!(
            status,
            504,
            "{req:?}: {:?}",
            String::from_utf8_lossy(&r.received)
        );
        assert!(!body.is_empty(), "504 without a body");
        let first = r.first.unwrap();
        // Not before the 1 s given; the upper bound only tells it from the
        // 10 s default, with room for a loaded machine.
        assert!(
            (0.8..8.0).contains(&first),
            "--connect-timeout 1 answered after {first} s"
        );
    }
    proxy.finish();
    // No route at all: 502 saying so. (Through a loopback source: a socket
    // bound to v0's device would take any destination as on-link.)
    let proxy = Proxy::start_in_netns(&ns, &["--connect-timeout", "1", "127.0.0.1"]);
    let r = ns_raw(
        &ns,
        None,
        proxy.addr,
        b"CONNECT 10.255.255.1:80 HTTP/1.1\r\nHost: 10.255.255.1:80\r\n\r\n",
        0,
        5.0,
    );
    let (status, _, body) = parse_response(&r.received)
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&r.received)));
    assert_eq!(status, 502, "{:?}", String::from_utf8_lossy(&r.received));
    assert!(
        String::from_utf8_lossy(&body)
            .to_ascii_lowercase()
            .contains("unreachable"),
        "502 body should say the network is unreachable: {:?}",
        String::from_utf8_lossy(&body)
    );
    proxy.finish();
}

/// A forwarded request counts in its link's bytes up, as a SOCKS client's
/// bytes do: a GET is not "up 0 B".
#[test]
fn forwarded_requests_count_in_the_links_bytes_up() {
    let server = HttpServer::start("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let url = server.url("127.0.0.1", "/counted");
    let req = format!(
        "GET {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let r = one(proxy.addr, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let out = proxy.finish();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("127.0.0.2: up, 1 connection"))
        .unwrap_or_else(|| panic!("no link summary:\n{}", tail(&out.stdout, 10)));
    let up: u64 = line
        .split(", up ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // "GET /counted HTTP/1.1" and a Host header at least.
    assert!(up >= 30, "{line}");
}
