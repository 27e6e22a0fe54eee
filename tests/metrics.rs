//! `--metrics` from the outside: real traffic through the proxy (curl over
//! SOCKS5, SOCKS4a and the HTTP proxy, raw SOCKS5 for a looked-up name),
//! then `/metrics` read by a real Prometheus parser (Debian's
//! `python3-prometheus-client`) and `/status` by python3's `json`; the
//! figures must match the traffic. Then the endpoint under hostile clients,
//! `dispatch status`, and the startup errors.
//!
//! Everything is on loopback.

mod common;

use common::http::{curl, curl_ok};
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Reads Prometheus text on stdin with `prometheus_client`'s parser and
/// prints its families as JSON: name, type, samples `[name, labels, value]`.
const PY_PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;

/// Reads JSON on stdin with python3's `json` and prints it back, so the
/// test sees what a strict parser made of it.
const PY_JSON: &str = "import json, sys; print(json.dumps(json.load(sys.stdin)))";

/// `/usr/bin/python3` when it has `prometheus_client`, else says NOT RUN.
fn require_parser(test: &str) -> Option<&'static str> {
    let py = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if py.is_none() {
        not_run(
            test,
            "needs python3-prometheus-client (apt-get install -y python3-prometheus-client)",
        );
    }
    py
}

fn python(py: &str, script: &str, input: &str) -> Value {
    let mut child = Command::new(py)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 could not parse it: {}\n--- input:\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The endpoint's address, from the line `start` prints.
fn metrics_addr(proxy: &Proxy) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = proxy.stdout();
        if let Some(rest) = out.split("metrics on http://").nth(1) {
            return rest.split('/').next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no metrics line:\n{out}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` as is and reads the whole response: (status, head, body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.write_all(request).unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(20)).unwrap();
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// One family's samples, as the parser gave them.
struct Families(Value);

impl Families {
    fn family(&self, name: &str) -> &Value {
        let all = self.0.as_array().unwrap();
        all.iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in {:#}", self.0))
    }

    /// The value of the one sample of `family` whose labels include `labels`.
    fn value(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let f = self.family(family);
        let found: Vec<&Value> = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| labels.iter().all(|(k, v)| s[1][k] == *v))
            .collect();
        assert_eq!(found.len(), 1, "{family} {labels:?}: {found:?}");
        found[0][2].as_f64().unwrap()
    }
}

#[test]
fn a_scrape_after_real_traffic_parses_and_counts_it() {
    let test = "a_scrape_after_real_traffic_parses_and_counts_it";
    let Some(py) = require_parser(test) else {
        return;
    };
    const BODY: usize = 100_000;
    const UPLOAD: usize = 50_000;
    let body: &'static str = Box::leak("x".repeat(BODY).into_boxed_str());
    let web = Server::http("127.0.0.1:0", body);
    let refused = closed_port("127.0.0.1");
    let proxy = Proxy::start(&["--metrics", "0", "127.0.0.1"]);
    let metrics = metrics_addr(&proxy);
    let url = format!("http://127.0.0.1:{}/", web.addr.port());
    let socks5 = format!("socks5://{}", proxy.addr);
    let http = format!("http://{}", proxy.addr);

    // Four downloads: SOCKS5, SOCKS4a (a name), an HTTP forward request
    // and an HTTP CONNECT tunnel.
    assert_eq!(curl_ok(&["-x", &socks5, &url]).len(), BODY);
    let by_name = format!("http://localhost:{}/", web.addr.port());
    let socks4a = format!("socks4a://{}", proxy.addr);
    assert_eq!(curl_ok(&["-x", &socks4a, &by_name]).len(), BODY);
    assert_eq!(curl_ok(&["-x", &http, &url]).len(), BODY);
    assert_eq!(curl_ok(&["-p", "-x", &http, &url]).len(), BODY);
    // An upload through SOCKS5.
    let dir = TempDir::new();
    let file = dir.path.join("upload");
    std::fs::write(&file, vec![b'u'; UPLOAD]).unwrap();
    let data = format!("@{}", file.display());
    curl_ok(&["-x", &socks5, "--data-binary", &data, &url]);
    // A name only the system resolver answers (getaddrinfo reads "127.1"
    // as 127.0.0.1 without asking a nameserver).
    let (mut s, _) = socks5_ok(proxy.addr, Dest::name("127.1", web.addr.port()));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut s).ends_with(body.as_bytes()));
    // Two refused targets: SOCKS reply 5, HTTP 502.
    let closed = format!("http://{refused}/");
    assert_ne!(curl(&["-x", &socks5, &closed]).code, Some(0));
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &http,
        &closed,
    ]);
    assert_eq!(out.text(), "502", "{out:?}");

    // The connections close as the clients go; the counters settle then.
    let deadline = Instant::now() + Duration::from_secs(10);
    let families = loop {
        let (status, head, text) = get(metrics, "/metrics");
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        let families = Families(python(py, PY_PARSE, &text));
        let open = families.value("dispatch_connections_open", &[]);
        if open == 0.0 || Instant::now() > deadline {
            break families;
        }
        thread::sleep(Duration::from_millis(50));
    };

    // Every sample belongs to a family declared with its type: the parser
    // makes any other an `unknown` family of its own.
    let mut names = std::collections::HashSet::new();
    for f in families.0.as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(names.insert(name.to_string()), "{name} twice");
        assert!(name.starts_with("dispatch_"), "{name}");
        let kind = f["type"].as_str().unwrap();
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind),
            "{name}: {kind}"
        );
    }

    let link = [("link", "lo 127.0.0.1"), ("family", "ipv4")];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = link.to_vec();
        l.push(extra);
        l
    };
    let down = families.value("dispatch_link_bytes", &with(("direction", "down")));
    let up = families.value("dispatch_link_bytes", &with(("direction", "up")));
    assert!(down >= (4 * BODY) as f64, "down {down}");
    assert!(up >= UPLOAD as f64, "up {up}");
    assert_eq!(families.value("dispatch_link_up", &link), 1.0);
    assert_eq!(
        families.value("dispatch_link_state", &with(("state", "up"))),
        1.0
    );
    // Six connected through the link; the refused ones did not connect.
    assert_eq!(families.value("dispatch_link_connections", &link), 6.0);
    assert_eq!(families.value("dispatch_link_connections_open", &link), 0.0);
    assert_eq!(families.value("dispatch_connections", &[]), 8.0);
    assert_eq!(
        families.value("dispatch_bytes", &[("direction", "down")]),
        down
    );

    let req = |protocol, command| {
        families.value(
            "dispatch_requests",
            &[("protocol", protocol), ("command", command)],
        )
    };
    assert_eq!(req("socks5", "connect"), 4.0);
    assert_eq!(req("socks4a", "connect"), 1.0);
    assert_eq!(req("http", "forward"), 2.0);
    assert_eq!(req("http", "connect"), 1.0);
    assert_eq!(req("socks5", "udp-associate"), 0.0);
    let socks_refused = families.value(
        "dispatch_error_replies",
        &[("protocol", "socks"), ("code", "5")],
    );
    assert_eq!(socks_refused, 1.0);
    let bad_gateway = families.value(
        "dispatch_error_replies",
        &[("protocol", "http"), ("code", "502")],
    );
    assert_eq!(bad_gateway, 1.0);

    let dns = |by| families.value("dispatch_dns_lookups", &[("answered_by", by)]);
    assert!(dns("local") >= 1.0, "localhost is answered on the loop");
    assert_eq!(dns("system"), 1.0);
    let lookups = families.family("dispatch_dns_lookup_duration_seconds");
    let count = lookups["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == "dispatch_dns_lookup_duration_seconds_count")
        .unwrap();
    assert_eq!(count[2], 1.0);
    assert_eq!(
        families.value("dispatch_limit_hits", &[("limit", "client-connections")]),
        0.0
    );

    // /status: the same figures, as JSON.
    let (status, head, text) = get(metrics, "/status");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let doc = python(py, PY_JSON, &text);
    let l = &doc["links"][0];
    assert_eq!(l["link"], "lo 127.0.0.1");
    assert_eq!(l["state"], "up");
    assert!(l["bytes_down"].as_f64().unwrap() >= down);
    assert_eq!(l["connections_total"], 6);
    assert_eq!(doc["totals"]["connections_total"], 8);
    assert_eq!(doc["listen"], proxy.addr.to_string());
    let refused_entry = doc["error_replies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["protocol"] == "http" && e["code"] == "502")
        .cloned();
    assert_eq!(refused_entry.unwrap()["count"], 1);
    proxy.finish();
}

#[test]
fn a_limit_hit_is_counted() {
    let test = "a_limit_hit_is_counted";
    let Some(py) = require_parser(test) else {
        return;
    };
    let proxy = Proxy::start(&[
        "--metrics",
        "0",
        "--max-client-connections",
        "1",
        "127.0.0.1",
    ]);
    let metrics = metrics_addr(&proxy);
    let _held = client(proxy.addr);
    let mut second = client(proxy.addr);
    // Closed at accept.
    read_until_closed(&mut second, Duration::from_secs(10)).unwrap();
    let (_, _, text) = get(metrics, "/metrics");
    let families = Families(python(py, PY_PARSE, &text));
    assert_eq!(
        families.value("dispatch_limit_hits", &[("limit", "client-connections")]),
        1.0
    );
    proxy.finish();
}

#[test]
fn an_association_over_the_client_limit_is_counted_with_its_reply() {
    let test = "an_association_over_the_client_limit_is_counted_with_its_reply";
    let Some(py) = require_parser(test) else {
        return;
    };
    let proxy = Proxy::start(&[
        "--metrics",
        "0",
        "--max-client-associations",
        "1",
        "127.0.0.1",
    ]);
    let metrics = metrics_addr(&proxy);
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let associate = |expected: u8| {
        let mut s = client(proxy.addr);
        socks5_greet(&mut s);
        s.write_all(&socks5_request(0x03, &Dest::from(any)))
            .unwrap();
        let reply = read_reply5(&mut s).unwrap();
        assert_eq!(reply.rep, expected);
        s
    };
    let _first = associate(rep::SUCCEEDED);
    let _second = associate(rep::GENERAL_FAILURE);
    let (_, _, text) = get(metrics, "/metrics");
    let families = Families(python(py, PY_PARSE, &text));
    let limit = [("limit", "client-associations")];
    assert_eq!(families.value("dispatch_limit_hits", &limit), 1.0);
    let general_failure = [("protocol", "socks"), ("code", "1")];
    assert_eq!(
        families.value("dispatch_error_replies", &general_failure),
        1.0
    );
    let udp = [("protocol", "socks5"), ("command", "udp-associate")];
    assert_eq!(families.value("dispatch_requests", &udp), 2.0);
    assert_eq!(families.value("dispatch_udp_associations_open", &[]), 1.0);
    proxy.finish();
}

#[test]
fn hostile_clients_neither_stall_the_endpoint_nor_the_proxy() {
    let web = Server::http("127.0.0.1:0", "fine");
    let proxy = Proxy::start(&["--metrics", "0", "127.0.0.1"]);
    let metrics = metrics_addr(&proxy);
    let url = format!("http://127.0.0.1:{}/", web.addr.port());
    let socks5 = format!("socks5://{}", proxy.addr);

    // A head past 4 KiB: 431, and the connection closes.
    let mut long = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    long.resize(5000, b'a');
    let (status, _, _) = exchange(metrics, &long);
    assert_eq!(status, 431);
    // Other methods and paths; garbage.
    assert_eq!(exchange(metrics, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(get(metrics, "/").0, 404);
    assert_eq!(
        exchange(metrics, b"\x16\x03\x01\x00\x05hello\r\n\r\n").0,
        400
    );

    // A head that never ends: 408, then closed.
    let mut slow = TcpStream::connect(metrics).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let got = read_until_closed(&mut slow, Duration::from_secs(20)).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");

    // Many connections that send nothing: the proxy keeps relaying
    // meanwhile, and once they go the endpoint answers again.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    assert_eq!(curl_ok(&["-x", &socks5, &url]), b"fine");
    // A client that sends its request but reads nothing: its response
    // waits in the socket buffers, and holds nothing else up.
    let mut mute = TcpStream::connect(metrics).unwrap();
    mute.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    drop(idle);
    let (status, _, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("dispatch_requests_total"), "{body}");
    let mut rest = String::new();
    mute.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
    assert_eq!(curl_ok(&["-x", &socks5, &url]), b"fine");
    proxy.finish();
}

#[test]
fn status_prints_the_link_table() {
    let web = Server::http("127.0.0.1:0", "hello");
    let proxy = Proxy::start(&["--metrics", "0", "127.0.0.1"]);
    let metrics = metrics_addr(&proxy);
    let url = format!("http://127.0.0.1:{}/", web.addr.port());
    curl_ok(&["-x", &format!("socks5://{}", proxy.addr), &url]);
    let run = run_bin(
        &["status", "--metrics", &metrics.to_string()],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "dispatch {} on {}, up ",
            env!("CARGO_PKG_VERSION"),
            proxy.addr
        )),
        "{}",
        run.stdout
    );
    assert!(
        lines[0].ends_with(", balancing by learned capacity"),
        "{}",
        run.stdout
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["LINK", "FAMILY", "STATE", "OPEN", "TOTAL", "FAILED", "UP", "DOWN", "LEARNED"]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["lo", "127.0.0.1", "ipv4", "up", "0", "1", "0"],
        "{}",
        run.stdout
    );
    assert!(
        lines[3].starts_with("total: 0 open, 1 connections, up "),
        "{}",
        run.stdout
    );
    proxy.finish();

    // Nothing listens there any more.
    let run = run_bin(
        &["status", "--metrics", &metrics.to_string()],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("error: nothing listens on {metrics}")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_metrics_address_that_cannot_be_served_is_a_usage_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cases = [
        (port.as_str(), "already in use"),
        // TEST-NET-1: not an address of this machine; only bound, never sent to.
        ("192.0.2.1:9180", "not an address of this machine"),
        ("not-an-address", "give a port"),
    ];
    for (addr, said) in cases {
        let run = run_bin(
            &["start", "--port", "0", "--metrics", addr, "127.0.0.1"],
            Duration::from_secs(20),
        );
        assert_eq!(run.code, Some(2), "{addr}: {}", run.stderr);
        assert!(run.stderr.contains(said), "{addr}: {}", run.stderr);
    }
}
