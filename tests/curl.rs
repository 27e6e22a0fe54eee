//! A real client: curl through the proxy in each SOCKS flavour, fetching a
//! body from a local HTTP server. curl (Debian package `curl`) must be
//! installed; a missing curl fails the tests.

mod common;

use common::*;
use std::process::Command;

const BODY: &str = "hello from the dispatch integration tests\n";

/// Runs curl with every proxy variable removed, no config file, a time
/// limit, and the given proxy option; returns the body.
fn curl(proxy_opt: &str, proxy: std::net::SocketAddr, url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--max-time", "10"])
        .arg(proxy_opt)
        .arg(proxy.to_string())
        .arg(url);
    scrub_env(&mut cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"));
    assert!(
        out.status.success(),
        "curl {proxy_opt} {proxy} {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fetch(proxy_opt: &str, host: &str, source: &str) {
    let server = Server::http("127.0.0.1:0", BODY);
    let proxy = Proxy::start(&[source]);
    let url = format!("http://{host}:{}/", server.addr.port());
    for _ in 0..3 {
        assert_eq!(curl(proxy_opt, proxy.addr, &url), BODY);
    }
    // All three went through the proxy, from its outgoing address.
    let peers = server.peers();
    assert_eq!(peers.len(), 3, "{peers:?}");
    for p in peers {
        assert_eq!(p.ip().to_string(), source);
    }
    proxy.finish();
}

#[test]
fn curl_socks5() {
    fetch("--socks5", "127.0.0.1", "127.0.0.2");
}

#[test]
fn curl_socks5_hostname() {
    fetch("--socks5-hostname", "localhost", "127.0.0.3");
}

#[test]
fn curl_socks4() {
    fetch("--socks4", "127.0.0.1", "127.0.0.4");
}

#[test]
fn curl_socks4a() {
    fetch("--socks4a", "localhost", "127.0.0.5");
}

#[test]
fn curl_socks5_ipv6_target() {
    let server = Server::http("[::1]:0", BODY);
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    let url = format!("http://[::1]:{}/", server.addr.port());
    assert_eq!(curl("--socks5", proxy.addr, &url), BODY);
    assert_eq!(server.peers()[0].ip().to_string(), "::1");
    proxy.finish();
}

#[test]
fn curl_reports_refused_through_socks5() {
    let target = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let out = Command::new("curl")
        .args(["-q", "-sS", "--max-time", "10", "--socks5"])
        .arg(proxy.addr.to_string())
        .arg(format!("http://127.0.0.1:{}/", target.port()))
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run curl");
    // curl exit 97: proxy handshake error (the refusal reported by the proxy).
    assert_eq!(
        out.status.code(),
        Some(97),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.finish();
}
