//! Real clients through the proxy, one test each: `aria2c` splitting one
//! download over the HTTP proxy, `proxychains4` making curl (which is told
//! nothing of proxies) go through SOCKS5, and a headless Chromium loading a
//! page whose own script writes what the test looks for, once through
//! SOCKS5 and once through the HTTP proxy.
//!
//! The clients come from Debian packages (`aria2`, `proxychains4`,
//! `chromium`), which `.ci/run` installs. A test whose client is missing
//! says NOT RUN, which fails under `.ci/run` (see `not_run`).
//!
//! Every origin is a [`FileServer`] on 127.0.0.1 and the proxy's links are
//! 127.0.0.2 and 127.0.0.3, so the peer address the origin saw tells which
//! link a connection left through, and that it went through the proxy at
//! all (a direct connection comes from 127.0.0.1). Each client runs with a
//! time bound, in a process group of its own that is killed if it overruns.

#![cfg(target_os = "linux")]

mod common;

use common::files::{byte_range, FileServer, RangeAnswer, Served};
use common::http::fnv;
use common::*;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const LINKS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

// ---------------------------------------------------------------------------
// Running a client
// ---------------------------------------------------------------------------

/// The program `name` on the PATH, or None after saying NOT RUN with the
/// Debian package that has it.
fn require_program(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        not_run(
            test,
            &format!("needs {name} (apt-get install -y --no-install-recommends {package})"),
        );
    }
    found
}

struct ClientRun {
    /// None: overran its bound and was killed.
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: String,
}

impl ClientRun {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics, with what the client and the proxy said, unless the client
    /// exited with status 0 within its bound.
    fn assert_success(&self, what: &str, proxy: &Proxy) {
        assert!(
            self.status.is_some_and(|s| s.success()),
            "{what} {}\n--- its stdout (tail):\n{}\n--- its stderr (tail):\n{}\n--- proxy stdout (tail):\n{}",
            match self.status {
                Some(s) => format!("failed ({s})"),
                None => "overran its time bound and was killed".to_string(),
            },
            tail(&self.stdout_text(), 30),
            tail(&self.stderr, 30),
            tail(&proxy.stdout(), 30)
        );
    }
}

fn collect<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// True once `pid` has exited, without reaping it: while it is a zombie its
/// PID, and so its process group's ID, cannot be taken by another process.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (comm) STATE ...": comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Runs `cmd` (proxy variables removed, stdin empty) in a process group of
/// its own. When it exits, or at `limit`, the whole group is killed, so
/// that helper processes (Chromium's) never outlive the test.
fn run_client(cmd: &mut Command, limit: Duration) -> ClientRun {
    scrub_env(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let pid = child.id();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let mut overran = false;
    while !exited(pid) {
        if Instant::now() >= deadline {
            overran = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // The group's ID is the leader's PID, still ours: not yet reaped.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let status = child.wait().expect("wait for the client");
    ClientRun {
        status: (!overran).then_some(status),
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// What the origin and the proxy saw
// ---------------------------------------------------------------------------

fn ip_of(peer: &std::net::SocketAddr) -> String {
    peer.ip().to_string()
}

/// Panics unless every connection the origin accepted came from one of
/// `links` (so through the proxy), and there was at least one.
fn assert_all_through(origin: &FileServer, links: &[&str]) {
    let peers = origin.peers();
    assert!(!peers.is_empty(), "the origin accepted no connection");
    let direct: Vec<_> = peers
        .iter()
        .filter(|p| !links.contains(&ip_of(p).as_str()))
        .collect();
    assert!(
        direct.is_empty(),
        "connections reached the origin from {direct:?}, not from the links {links:?}: \
         they did not go through the proxy"
    );
}

/// The targets of the proxy's per-connection debug lines
/// (`#N client -> target via local: ...`), leaving out the connections that
/// never named one (`-`: Chromium opens a spare connection to its proxy
/// and closes it unused).
fn proxied_targets(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| {
            let l = &l[l.find(" #")? + 1..];
            let (_, rest) = l.split_once(" -> ")?;
            let (target, _) = rest.split_once(" via ")?;
            (target != "-").then(|| target.to_string())
        })
        .collect()
}

/// Panics unless the proxy logged connections, all of them to `origin`.
fn assert_only_to(stdout: &str, origin: &FileServer) {
    let targets = proxied_targets(stdout);
    let want = origin.addr.to_string();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| *t == want),
        "the proxy's connections went to {targets:?}, expected only {want}\n--- proxy stdout (tail):\n{}",
        tail(stdout, 30)
    );
}

fn describe(served: &[Served]) -> String {
    served
        .iter()
        .map(|s| {
            format!(
                "  conn {} from {}: {} {} range {:?} -> {} ({} B)",
                s.conn, s.peer, s.method, s.target, s.range, s.status, s.body_len
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// The origin's Range support, which the aria2c test relies on
// ---------------------------------------------------------------------------

#[test]
fn file_server_byte_ranges() {
    use RangeAnswer::*;
    let p = |start, end| Partial { start, end };
    assert_eq!(byte_range(None, 10), Full);
    assert_eq!(byte_range(Some("bytes=0-3"), 10), p(0, 3));
    assert_eq!(byte_range(Some("bytes=4-"), 10), p(4, 9));
    assert_eq!(byte_range(Some("bytes=5-100"), 10), p(5, 9));
    assert_eq!(byte_range(Some("bytes=-3"), 10), p(7, 9));
    assert_eq!(byte_range(Some("bytes=-30"), 10), p(0, 9));
    assert_eq!(byte_range(Some("bytes=10-"), 10), Unsatisfiable);
    assert_eq!(byte_range(Some("bytes=-0"), 10), Unsatisfiable);
    assert_eq!(byte_range(Some("bytes=3-2"), 10), Full);
    assert_eq!(byte_range(Some("bytes=0-1,4-5"), 10), Full);
    assert_eq!(byte_range(Some("items=0-1"), 10), Full);
    assert_eq!(byte_range(Some("bytes=x-1"), 10), Full);

    // And on the wire: a 206 with the slice, a 416, a 404.
    let data: Vec<u8> = (0..=255u8).collect();
    let origin = FileServer::start(
        "127.0.0.1:0",
        vec![("/f", "application/octet-stream", data.clone())],
    );
    let mut c = http::HttpConn::from_stream(
        std::net::TcpStream::connect(origin.addr).expect("connect to the origin"),
    );
    c.send(b"GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=16-31\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 206, "{}", r.raw_head);
    assert_eq!(r.header("content-range"), Some("bytes 16-31/256"));
    assert_eq!(r.body, &data[16..32]);
    c.send(b"GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=300-\r\n\r\n");
    assert_eq!(c.response().status, 416);
    c.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 404);
    let served = origin.served();
    assert_eq!(served.len(), 3, "{}", describe(&served));
    assert!(served.iter().all(|s| s.conn == 0), "one connection");
}

// ---------------------------------------------------------------------------
// aria2c
// ---------------------------------------------------------------------------

/// Parts aria2c is asked to split the download into.
const SPLIT: usize = 4;
const ARIA_SIZE: usize = 8 << 20;

#[test]
fn aria2c_splits_a_download_over_the_http_proxy_and_both_links() {
    let test = "aria2c_splits_a_download_over_the_http_proxy_and_both_links";
    let Some(aria2c) = require_program(test, "aria2c", "aria2") else {
        return;
    };
    let mut data = vec![0u8; ARIA_SIZE];
    Prng::new(13).fill(&mut data);
    // Bodies wait until all the parts are asked for: side by side, as a
    // split download is meant to run, however fast loopback is.
    let origin = FileServer::start_holding(
        "127.0.0.1:0",
        vec![("/file.bin", "application/octet-stream", data.clone())],
        SPLIT,
    );
    let proxy = Proxy::start(&LINKS);
    let work = TempDir::new();
    let run = run_client(
        Command::new(aria2c)
            .env("HOME", &work.path)
            .arg("--no-conf")
            .arg("--no-netrc")
            .arg(format!("--all-proxy=http://{}", proxy.addr))
            .args([
                "-x",
                &SPLIT.to_string(),
                "-s",
                &SPLIT.to_string(),
                "-k",
                "1M",
            ])
            .arg("--dir")
            .arg(&work.path)
            .args(["-o", "file.bin"])
            .args([
                "--file-allocation=none",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--max-tries=1",
                "--connect-timeout=10",
                "--timeout=20",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--show-console-readout=false",
            ])
            .arg(origin.url("/file.bin")),
        Duration::from_secs(40),
    );
    run.assert_success("aria2c", &proxy);

    let got = std::fs::read(work.path.join("file.bin")).expect("read the downloaded file");
    assert!(
        got == data,
        "downloaded {} bytes, fnv64 {:016x}; served {} bytes, fnv64 {:016x}",
        got.len(),
        fnv(&got),
        data.len(),
        fnv(&data)
    );

    let served = origin.served();
    let ranged: Vec<&Served> = served
        .iter()
        .filter(|s| s.method == "GET" && s.status == 206 && s.body_len > 0)
        .collect();
    let starts: BTreeSet<u64> = ranged
        .iter()
        .filter_map(|s| match byte_range(s.range.as_deref(), ARIA_SIZE as u64) {
            RangeAnswer::Partial { start, .. } => Some(start),
            _ => None,
        })
        .collect();
    assert!(
        starts.len() >= 2,
        "aria2c did not split the download: ranged requests\n{}",
        describe(&served)
    );
    assert_all_through(&origin, &LINKS);
    let links_used: BTreeSet<String> = ranged.iter().map(|s| ip_of(&s.peer)).collect();
    assert_eq!(
        links_used.len(),
        LINKS.len(),
        "the parts left through {links_used:?}, not through both links\n{}",
        describe(&served)
    );
    let out = proxy.finish();
    assert_only_to(&out.stdout, &origin);
}

// ---------------------------------------------------------------------------
// proxychains4
// ---------------------------------------------------------------------------

#[test]
fn proxychains4_sends_curl_through_socks5() {
    let test = "proxychains4_sends_curl_through_socks5";
    let Some(proxychains) = require_program(test, "proxychains4", "proxychains4") else {
        return;
    };
    let body = format!("hello through proxychains, {}\n", unique("token"));
    let origin = FileServer::start(
        "127.0.0.1:0",
        vec![("/hello.txt", "text/plain", body.clone().into_bytes())],
    );
    let proxy = Proxy::start(&LINKS[..1]);
    let work = TempDir::new();
    // No `localnet` line: loopback targets are proxied like any other. No
    // `proxy_dns`: the target is an address, and curl resolves nothing.
    let conf = work.path.join("proxychains.conf");
    std::fs::write(
        &conf,
        format!(
            "strict_chain\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n\
             [ProxyList]\nsocks5 {} {}\n",
            proxy.addr.ip(),
            proxy.addr.port()
        ),
    )
    .expect("write proxychains.conf");
    let run = run_client(
        Command::new(proxychains)
            .arg("-f")
            .arg(&conf)
            .args(["curl", "-q", "-sS", "--max-time", "15"])
            .arg(origin.url("/hello.txt")),
        Duration::from_secs(30),
    );
    run.assert_success("curl under proxychains4", &proxy);
    assert_eq!(run.stdout_text(), body, "what curl received");
    // Its own account: `[proxychains] Strict chain  ...  PROXY  ...  TARGET  ...  OK`.
    let chained = format!(
        "Strict chain  ...  {}  ...  {}  ...  OK",
        proxy.addr, origin.addr
    );
    assert!(
        run.stderr.contains(&chained),
        "proxychains4 did not say {chained:?}:\n{}",
        run.stderr
    );
    assert_all_through(&origin, &LINKS[..1]);
    let out = proxy.finish();
    assert_only_to(&out.stdout, &origin);
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

/// A page whose script (a file of its own, so a second request) writes the
/// reverse of `secret` into it: the reversed text is in neither file, so
/// finding it in the dumped DOM means the page was rendered and its script
/// ran.
fn page_files(secret: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let html = "<!doctype html><html><head><title>dispatch test</title>\
                <script src=\"/app.js\"></script></head>\
                <body><p id=\"out\">not rendered</p>\
                <script>render();</script></body></html>\n";
    let js = format!(
        "function render() {{\n  document.getElementById('out').textContent =\n    \
         '{secret}'.split('').reverse().join('');\n}}\n"
    );
    vec![
        ("/index.html", "text/html; charset=utf-8", html.into()),
        ("/app.js", "text/javascript", js.into_bytes()),
    ]
}

/// `--proxy-bypass-list` for Chromium: loopback through the proxy
/// (`<-loopback>` removes the implicit bypass), and every name with a
/// letter in it *not*. Chromium calls Google on its own (seen with 156:
/// clients2.google.com for the time, update.googleapis.com,
/// accounts.google.com); through the proxy, dispatch would resolve those
/// names and connect. Bypassed, they meet `--host-resolver-rules`, which
/// resolves nothing, so they never leave Chromium. Only address literals
/// (the origin's) reach the proxy.
fn bypass_list() -> String {
    let mut list = String::from("<-loopback>");
    for c in 'a'..='z' {
        list.push_str(&format!(";*{c}*"));
    }
    list
}

fn chromium_loads_a_page_through(test: &str, scheme: &str) {
    let Some(chromium) = require_program(test, "chromium", "chromium") else {
        return;
    };
    let secret = unique("knot-rendered");
    let rendered: String = secret.chars().rev().collect();
    let files = page_files(&secret);
    assert!(
        files
            .iter()
            .all(|(_, _, b)| !String::from_utf8_lossy(b).contains(&rendered)),
        "the sources must not hold the rendered text"
    );
    let origin = FileServer::start("127.0.0.1:0", files);
    let proxy = Proxy::start(&LINKS[..1]);
    let profile = TempDir::new();
    let run = run_client(
        Command::new(chromium)
            .env("HOME", &profile.path)
            .env("XDG_CONFIG_HOME", profile.path.join("config"))
            .env("XDG_CACHE_HOME", profile.path.join("cache"))
            .arg("--headless")
            // The sandbox cannot start as root (CI); the page is the test's own.
            .arg("--no-sandbox")
            .arg(format!(
                "--user-data-dir={}",
                profile.path.join("profile").display()
            ))
            .arg(format!("--proxy-server={scheme}://{}", proxy.addr))
            .arg(format!("--proxy-bypass-list={}", bypass_list()))
            // The proxy's own address is resolved too: leave it alone.
            .arg("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
            .args([
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-pings",
                "--disable-domain-reliability",
                "--metrics-recording-only",
                "--dump-dom",
            ])
            .arg(origin.url("/index.html")),
        Duration::from_secs(60),
    );
    run.assert_success("chromium", &proxy);
    let dom = run.stdout_text();
    assert!(
        dom.contains(&format!("<p id=\"out\">{rendered}</p>")),
        "the dumped DOM lacks the text the page's script writes ({rendered}):\n{dom}\n--- chromium stderr (tail):\n{}\n--- origin:\n{}",
        tail(&run.stderr, 20),
        describe(&origin.served())
    );
    let served = origin.served();
    for path in ["/index.html", "/app.js"] {
        assert!(
            served
                .iter()
                .any(|s| s.method == "GET" && s.target == path && s.status == 200),
            "the origin did not serve {path}:\n{}",
            describe(&served)
        );
    }
    assert_all_through(&origin, &LINKS[..1]);
    let out = proxy.finish();
    assert_only_to(&out.stdout, &origin);
}

#[test]
fn chromium_loads_a_page_through_socks5() {
    chromium_loads_a_page_through("chromium_loads_a_page_through_socks5", "socks5");
}

#[test]
fn chromium_loads_a_page_through_the_http_proxy() {
    chromium_loads_a_page_through("chromium_loads_a_page_through_the_http_proxy", "http");
}
