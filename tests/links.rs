//! Links (issue 4): interface binding, failover, link health, following
//! address changes, per-link counters, and aggregation, proved on a real
//! three-link topology (root only).
//!
//! Each test builds its own pair of network namespaces:
//!
//! ```text
//!   home (proxy, clients)                     inet (servers on 10.9.0.1, on lo)
//!   l1 10.1.0.2/24  <-- veth -->  r1 10.1.0.1/24
//!   l2 10.2.0.2/24  <-- veth -->  r2 10.2.0.1/24
//!   l3 10.3.0.2/24  <-- veth -->  r3 10.3.0.1/24
//!   default via 10.1.0.1 dev l1 metric 100
//!   default via 10.2.0.1 dev l2 metric 200     strict reverse-path filter
//!   default via 10.3.0.1 dev l3 metric 300     (rp_filter=1) on all r*
//! ```
//!
//! There is no policy routing in home: a socket bound only to 10.2.0.2
//! leaves through l1 (the lowest-metric default route), and inet drops it
//! because 10.2.0.2 does not belong behind r1. Only a socket bound to the
//! device l2 gets through link 2. [`topology_drops_source_only_binding`]
//! checks that premise with curl.
//!
//! [`Topology::add_ipv6`] adds IPv6 beside it (fd0i::2 in home, fd0i::1 in
//! inet, the server on fd09::1) for the IPv6 link test.
//!
//! Sockets are made inside a namespace by a thread that has entered it with
//! `setns` (a network namespace is per thread); they stay in that namespace
//! whichever thread uses them. Servers live in inet, clients in home; the
//! test process itself never sends anything outside loopback or these
//! namespaces.

#![cfg(target_os = "linux")]

mod common;

use common::topology::*;
use common::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The premise of the binding tests: a socket bound only to 10.2.0.2 does
/// not get through (it leaves by l1 and inet's strict rp_filter drops it);
/// one bound to the device l2 does. Checked with curl, without the proxy.
#[test]
fn topology_drops_source_only_binding() {
    if !require_root("topology_drops_source_only_binding") {
        return;
    }
    let t = Topology::new("lt");
    let http = NsServer::wrap(&t.inet_fd, |bind| Server::http(bind, "hello\n"));
    let url = format!("http://{}/", http.addr());
    let curl = |iface: &str| {
        t.home.exec(
            "curl",
            &[
                "-sS",
                "--noproxy",
                "*",
                "--connect-timeout",
                "2",
                "--max-time",
                "4",
                "-w",
                " %{local_ip}",
                "--interface",
                iface,
                &url,
            ],
        )
    };
    for i in 1..=3u8 {
        let out = curl(&format!("l{i}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout == format!("hello\n {}", home_ip(i)),
            "curl --interface l{i} should reach the server from {}: {} {stdout:?} {}",
            home_ip(i),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = curl("10.1.0.2");
    assert!(
        out.status.success(),
        "curl --interface 10.1.0.2 (the default route's link) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ip in ["10.2.0.2", "10.3.0.2"] {
        let out = curl(ip);
        assert!(
            !out.status.success(),
            "negative control: curl --interface {ip} (source address only, no device) \
             reached the server, so the topology does not prove device binding: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let peers = http.peer_ips();
    for ip in ["10.2.0.2", "10.3.0.2"] {
        let n = peers.iter().filter(|p| p.to_string() == ip).count();
        assert_eq!(
            n, 1,
            "server saw {ip} {n} times (only the l* curls should arrive): {peers:?}"
        );
    }
}

/// 30 connections over `l1/2 l2/1 l3/1`: smooth weighted round robin gives
/// exactly 15 to link 1 and 8 and 7 to the others, each from the link's own
/// address and through its own veth (upload byte counters grow in step).
/// Links 2 and 3 only get through with device binding (see the module doc),
/// and a connection that failed over would show up as 10.1.0.2.
#[test]
fn distribution_follows_weights_over_interface_names() {
    if !require_root("distribution_follows_weights_over_interface_names") {
        return;
    }
    let t = Topology::new("ld");
    let server = t.exchange_server();
    let proxy = t.proxy(&["l1/2", "l2/1", "l3/1"]);
    const UP: u64 = 200_000;
    let before: Vec<u64> = (1..=3).map(|i| t.tx_bytes(i)).collect();
    let seen: Vec<Exchanged> = (0..30)
        .map(|_| exchange_ok(&t, &proxy, &server, UP, 0))
        .collect();
    let after: Vec<u64> = (1..=3).map(|i| t.tx_bytes(i)).collect();

    let by_reply = count_by_ip(seen.iter().map(|e| e.peer.ip()));
    let by_server = count_by_ip(server.peer_ips());
    assert_eq!(
        by_reply, by_server,
        "server's accept log and replies disagree"
    );
    let n: Vec<usize> = (1..=3).map(|i| count_of(&by_reply, home_ip(i))).collect();
    assert_eq!(
        n.iter().sum::<usize>(),
        30,
        "connections came from unexpected addresses: {by_reply:?}"
    );
    assert_eq!(n[0], 15, "link 1 (weight 2 of 4) carried {n:?} of 30");
    assert!(
        (7..=8).contains(&n[1]) && (7..=8).contains(&n[2]),
        "links 2 and 3 (weight 1 of 4 each) carried {n:?} of 30 (want 15/8/7 or 15/7/8)"
    );

    for i in 0..3 {
        let delta = after[i] - before[i];
        let payload = n[i] as u64 * UP;
        // Payload plus TCP/IP headers (GSO: one header set per super-packet),
        // ACKs of the small replies, ARP and IPv6 neighbour chatter.
        let max = payload + payload / 10 + 64 * 1024;
        assert!(
            (payload..=max).contains(&delta),
            "l{} sent {delta} bytes for {} connections of {UP} bytes up (want {payload}..={max}); \
             all deltas: {:?}",
            i + 1,
            n[i],
            (0..3).map(|j| after[j] - before[j]).collect::<Vec<_>>()
        );
    }

    let out = proxy.finish();
    for i in 1..=3u8 {
        let via = lines_with(&out.stdout, &format!(" via {}:", home_ip(i))).len();
        assert_eq!(
            via,
            n[usize::from(i) - 1],
            "debug lines 'via {}:' vs connections the server saw from it",
            home_ip(i)
        );
    }
}

/// Targets given as IPs are bound to the device that owns them: with no
/// policy routing and strict rp_filter on the far side, links 2 and 3 still
/// carry their connections, at once (no failover).
#[test]
fn ip_targets_are_bound_to_their_device() {
    if !require_root("ip_targets_are_bound_to_their_device") {
        return;
    }
    let t = Topology::new("lb");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "2", "10.1.0.2", "10.2.0.2", "10.3.0.2"]);
    let seen = exchanges(&t, &proxy, &server, 9);
    let by = count_by_ip(server.peer_ips());
    for i in 1..=3 {
        assert_eq!(
            count_of(&by, home_ip(i)),
            3,
            "equal weights over 9 connections: server saw {by:?}\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 20)
        );
    }
    assert_eq!(seen.len(), 9);
    let out = proxy.finish();
    let failed = failed_attempts(&out.stdout, None);
    assert!(failed.is_empty(), "attempts failed (failover?): {failed:?}");
    for i in 1..=3u8 {
        let label = format!("l{i} {}", home_ip(i));
        let sums = link_summaries(&out.stdout, &label);
        assert!(!sums.is_empty(), "no summary for {label}");
        for sum in sums {
            assert_eq!(sum.failures, 0, "link {i} at exit: {sum:?}");
        }
    }
    let down = lines_with(&out.stdout, " down:");
    assert!(down.is_empty(), "links went down: {down:?}");
}

/// The negative control of device binding: with `--no-bind-device`,
/// sockets bound only to 10.2.0.2 or 10.3.0.2 leave through l1 and are
/// dropped, so the server never sees those sources; clients either get an
/// error or are failed over to link 1.
#[test]
fn no_bind_device_does_not_get_through_other_links() {
    if !require_root("no_bind_device_does_not_get_through_other_links") {
        return;
    }
    let t = Topology::new("ln");
    let server = t.exchange_server();
    let proxy = t.proxy(&[
        "--no-bind-device",
        "--connect-timeout",
        "1",
        "l1",
        "l2",
        "l3",
    ]);
    let results: Vec<(Result<Exchanged, String>, f64)> = (0..6)
        .map(|_| {
            let start = Instant::now();
            let r = exchange(&t, proxy.addr, server.addr(), 100, 100);
            (r, start.elapsed().as_secs_f64())
        })
        .collect();
    let peers = server.peer_ips();
    let foreign: Vec<&IpAddr> = peers.iter().filter(|p| **p != home_ip(1)).collect();
    assert!(
        foreign.is_empty(),
        "with --no-bind-device the server still saw {foreign:?}: something sends \
         them out of their own link (policy routing? device binding not turned off?)\n\
         results: {results:?}"
    );
    // The control means something only if links 2 and 3 were tried: those
    // connections failed, or took a connect timeout before failing over.
    let hit = results
        .iter()
        .filter(|(r, secs)| r.is_err() || *secs >= 0.9)
        .count();
    assert!(
        hit >= 2,
        "expected connections assigned to l2/l3 to fail or fail over slowly; results: {results:?}\n\
         --- proxy stdout (tail):\n{}",
        tail(&proxy.stdout(), 30)
    );
    proxy.finish();
}

/// An HTTP/1.1 server for `data` with single-range support
/// (`Range: bytes=a-b` or `a-`), one request per connection.
fn range_handler(data: Arc<Vec<u8>>) -> impl Fn(TcpStream, SocketAddr) + Send + Sync + 'static {
    move |mut s, _| {
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            if req.len() > 16 * 1024 {
                return;
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&req).into_owned();
        let len = data.len();
        let range = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("range") {
                return None;
            }
            let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
            let a: usize = a.trim().parse().ok()?;
            let b: usize = match b.trim() {
                "" => len.checked_sub(1)?,
                b => b.parse::<usize>().ok()?.min(len.checked_sub(1)?),
            };
            (a <= b).then_some((a, b + 1))
        });
        let (start, end) = range.unwrap_or((0, len));
        let mut resp = format!(
            "HTTP/1.1 {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            if range.is_some() {
                "206 Partial Content"
            } else {
                "200 OK"
            },
            end - start
        );
        if range.is_some() {
            resp.push_str(&format!(
                "Content-Range: bytes {start}-{}/{len}\r\n",
                end - 1
            ));
        }
        resp.push_str("\r\n");
        if s.write_all(resp.as_bytes()).is_err() || s.write_all(&data[start..end]).is_err() {
            return;
        }
        let _ = s.shutdown(Shutdown::Write);
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

/// A command run inside `ns` with no proxy variables in its environment.
fn ns_command(ns: &Netns, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, prog]);
    scrub_env(&mut c);
    c
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Links shaped to 1,200, 1,200 and 400 kB/s both ways; a 12 MB file
/// fetched by curl in 12 parallel ranges through `l1/3 l2/3 l3/1` arrives
/// intact faster than the fastest link alone could bring it (> 1.5 x
/// 1,200 kB/s). 12 equal ranges split 5/5/2 over the links, so the best
/// possible is 2,400 kB/s (link 3 needs 2 MB / 400 kB/s = 5 s).
#[test]
fn parallel_ranges_aggregate_link_bandwidth() {
    if !require_root("parallel_ranges_aggregate_link_bandwidth") {
        return;
    }
    const SIZE: usize = 12_000_000;
    const RANGES: usize = 12;
    let t = Topology::new("lg");
    for (i, rate) in [(1, "1200kbps"), (2, "1200kbps"), (3, "400kbps")] {
        t.shape(i, rate);
    }
    let mut data = vec![0u8; SIZE];
    Prng::new(0xA66).fill(&mut data);
    let data = Arc::new(data);
    let server = NsServer::start(&t.inet_fd, range_handler(data.clone()));
    let dir = TempDir::new();
    let source = dir.path.join("source");
    std::fs::write(&source, &data[..]).expect("write source file");
    let proxy = t.proxy(&["l1/3", "l2/3", "l3/1"]);
    let url = format!("http://{}/file", server.addr());
    let socks = proxy.addr.to_string();
    let part = SIZE / RANGES;

    let start = Instant::now();
    let children: Vec<_> = (0..RANGES)
        .map(|k| {
            let range = format!("{}-{}", k * part, (k + 1) * part - 1);
            let out = dir.path.join(format!("part{k:02}"));
            ns_command(&t.home, "curl")
                .args([
                    "-sS",
                    "--fail",
                    "--max-time",
                    "60",
                    "--socks5",
                    &socks,
                    "-r",
                    &range,
                    "-o",
                ])
                .arg(&out)
                .arg(&url)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn curl")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for curl"))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    for (k, o) in outputs.iter().enumerate() {
        assert!(
            o.status.success(),
            "curl for range {k} failed ({}): {}\n--- proxy stdout (tail):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            tail(&proxy.stdout(), 20)
        );
    }
    let mut all = Vec::with_capacity(SIZE);
    for k in 0..RANGES {
        let mut f = File::open(dir.path.join(format!("part{k:02}"))).expect("open part");
        f.read_to_end(&mut all).expect("read part");
    }
    let joined = dir.path.join("joined");
    std::fs::write(&joined, &all).expect("write joined file");
    assert_eq!(all.len(), SIZE, "joined ranges have the wrong size");
    assert_eq!(
        sha256(&joined),
        sha256(&source),
        "sha256 of the joined ranges differs"
    );

    let rate = SIZE as f64 / secs;
    let per_link: Vec<usize> = (1..=3)
        .map(|i| lines_with(&proxy.stdout(), &format!(" via {}:", home_ip(i))).len())
        .collect();
    let report = format!(
        "{SIZE} bytes in {RANGES} ranges in {secs:.3} s = {:.0} kB/s = {:.3} x 1,200 kB/s, \
         {:.3} of the 2,800 kB/s sum; ranges per link {per_link:?}",
        rate / 1000.0,
        rate / 1_200_000.0,
        rate / 2_800_000.0
    );
    eprintln!("aggregation: {report}");
    assert!(
        rate > 1.5 * 1_200_000.0,
        "no aggregation: {report}\n--- proxy stdout (tail):\n{}",
        tail(&proxy.stdout(), 20)
    );
    proxy.finish();
}

/// Cuts link 2 (its far end goes down) under `--connect-timeout 1 l1 l2
/// l3`: every client still gets through (those tried on link 2 first are
/// retried on another link, after at most the connect timeout), three
/// failures mark it down, new connections avoid it, and once it is back it
/// gets one trial after the 5 s backoff, comes up and carries its share.
#[test]
fn failover_marks_a_dead_link_down_and_back_up() {
    if !require_root("failover_marks_a_dead_link_down_and_back_up") {
        return;
    }
    let t = Topology::new("lf");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    let l2 = home_ip(2);
    let log = |p: &Proxy| format!("\n--- proxy stdout (tail):\n{}", tail(&p.stdout(), 30));

    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 6)
            .iter()
            .map(|e| e.peer.ip()),
    );
    for i in 1..=3 {
        assert_eq!(
            count_of(&by, home_ip(i)),
            2,
            "before the cut: {by:?}{}",
            log(&proxy)
        );
    }

    // Cut: l2 stays configured (address, routes) but nothing comes back.
    t.inet.ip(&["link", "set", "dev", "r2", "down"]);
    let down_line = "link l2 10.2.0.2 down:";
    let mut during = Vec::new();
    while !proxy.stdout().contains(down_line) {
        assert!(
            during.len() < 15,
            "no {down_line:?} after {} connections since link 2 was cut (connect secs {:?}){}",
            during.len(),
            during
                .iter()
                .map(|e: &Exchanged| e.connect_secs)
                .collect::<Vec<_>>(),
            log(&proxy)
        );
        let e = exchange_ok(&t, &proxy, &server, 100, 100);
        assert_ne!(e.peer.ip(), l2, "a connection got through the cut link 2");
        during.push(e);
    }
    // Each of those connections failed at most once, on link 2 (a timeout,
    // however long the machine took), then went through another link.
    let out = proxy.stdout();
    let failed = failed_attempts(&out, None);
    assert!(
        failed.len() <= during.len() && failed.iter().all(|l| l.contains(" 10.2.0.2")),
        "{} connections since the cut; failed attempts: {failed:?}{}",
        during.len(),
        log(&proxy)
    );
    eprintln!(
        "failover: link 2 down after {} connections, connect secs {:?}",
        during.len(),
        during.iter().map(|e| e.connect_secs).collect::<Vec<_>>()
    );

    // Down: skipped, so nobody waits; links 1 and 3 keep 1:1. The 5 s
    // backoff bounds this phase: it ends early if the trial comes first
    // (only on a very slow machine), and the connection that saw the trial
    // line may have been the trial itself, so it does not count.
    let trial_line = "link l2 10.2.0.2 trial";
    let mut after = Vec::new();
    while after.len() < 8 && !proxy.stdout().contains(trial_line) {
        after.push(exchange_ok(&t, &proxy, &server, 100, 100));
    }
    if proxy.stdout().contains(trial_line) {
        after.pop();
    }
    assert!(
        after.len() >= 2,
        "only {} connections within the 5 s backoff{}",
        after.len(),
        log(&proxy)
    );
    let by = count_by_ip(after.iter().map(|e| e.peer.ip()));
    assert_eq!(count_of(&by, l2), 0, "link 2 is down: {by:?}");
    assert!(
        count_of(&by, home_ip(1)).abs_diff(count_of(&by, home_ip(3))) <= 1
            && count_of(&by, home_ip(1)) + count_of(&by, home_ip(3)) == after.len(),
        "links 1 and 3 (equal weights) alternate while link 2 is down: {by:?}{}",
        log(&proxy)
    );
    // Nothing tried link 2 between its down line and its trial.
    let out = proxy.stdout();
    let from = out.find(down_line).unwrap();
    let to = out.find(trial_line).unwrap_or(out.len());
    let tried = failed_attempts(&out[from..to], Some("10.2.0.2"));
    assert!(
        tried.is_empty(),
        "link 2 was tried while down (before its trial): {tried:?}{}",
        log(&proxy)
    );

    // Restore; keep connecting until a trial brings it up. If the first
    // trial came while it was still cut, it failed and the next one waits
    // 10 s: the deadline allows for that.
    t.inet.ip(&["link", "set", "dev", "r2", "up"]);
    let up_line = "link l2 10.2.0.2 up";
    let restored = Instant::now();
    while !proxy.stdout().contains(up_line) {
        assert!(
            restored.elapsed() < Duration::from_secs(60),
            "no {up_line:?} within 60 s of restoring link 2 (backoff 5 s, or 10 s after a failed trial){}",
            log(&proxy)
        );
        exchange_ok(&t, &proxy, &server, 100, 100);
        thread::sleep(Duration::from_millis(200));
    }
    let out = proxy.stdout();
    let (ti, ui, di) = (out.find(trial_line), out.find(up_line), out.find(down_line));
    assert!(
        matches!((di, ti, ui), (Some(d), Some(t), Some(u)) if d < t && t < u),
        "want {down_line:?}, then {trial_line:?}, then {up_line:?}{}",
        log(&proxy)
    );
    // The backoff by the proxy's own clock: its log timestamps.
    let (down_at, trial_at) = (
        log_time_of(&out, down_line, 0).expect("timestamp of the down line"),
        log_time_of(&out, trial_line, 0).expect("timestamp of the trial line"),
    );
    assert!(
        trial_at - down_at >= 4.99,
        "trial {:.3} s after the down line: the first backoff is 5 s",
        trial_at - down_at
    );
    let downs = lines_with(&out, " down:");
    assert!(
        downs.iter().all(|l| l.contains(down_line)),
        "only link 2 should go down: {downs:?}"
    );

    // Up again: its share of new connections.
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 9)
            .iter()
            .map(|e| e.peer.ip()),
    );
    assert!(
        (2..=4).contains(&count_of(&by, l2)),
        "link 2 is up again and should carry about a third of 9 connections: {by:?}{}",
        log(&proxy)
    );

    let fin = proxy.finish();
    let sums = link_summaries(&fin.stdout, "l2 10.2.0.2");
    assert!(
        !sums.is_empty(),
        "no exit summary for l2 10.2.0.2:\n{}",
        tail(&fin.stdout, 10)
    );
    for s in &sums {
        assert_eq!(s.state, "up", "l2 at exit: {s:?}");
        assert!(s.failures >= 3, "l2 failed at least 3 times: {s:?}");
    }
}

/// With every link dead the target is silent through any: the client gets
/// an error reply once two links were tried (two connect timeouts of 1 s),
/// not after the first, and not after every link (issue 10: a target
/// silent through two links is dead); no link is blamed, since none
/// reached it.
#[test]
fn error_once_two_links_were_silent() {
    if !require_root("error_once_two_links_were_silent") {
        return;
    }
    let t = Topology::new("le");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    exchanges(&t, &proxy, &server, 3);
    for i in 1..=3 {
        t.inet.ip(&["link", "set", "dev", &format!("r{i}"), "down"]);
    }
    let start = Instant::now();
    let r = exchange(&t, proxy.addr, server.addr(), 100, 100);
    let secs = start.elapsed().as_secs_f64();
    match r {
        Err(e) if e.starts_with("CONNECT failed") => {}
        other => panic!(
            "with every link cut, expected an error reply, got {other:?}\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 20)
        ),
    }
    // Two links were tried before the answer: at least the two 1 s
    // timeouts (a lower bound no load can break), and two attempts in the
    // log, through different links.
    assert!(
        secs >= 1.9,
        "error reply after {secs:.3} s; two links with a 1 s connect timeout take about 2 s\n\
         --- proxy stdout (tail):\n{}",
        tail(&proxy.stdout(), 20)
    );
    let out = proxy.finish();
    let failed = failed_attempts(&out.stdout, None);
    let per_link: Vec<usize> = (1..=3u8)
        .map(|i| failed_attempts(&out.stdout, Some(&home_ip(i).to_string())).len())
        .collect();
    assert!(
        failed.len() == 2 && per_link.iter().all(|&n| n <= 1),
        "want two failed attempts through two links, got {per_link:?}: {failed:#?}"
    );
    let down = lines_with(&out.stdout, " down:");
    assert!(down.is_empty(), "a silent target blames no link: {down:?}");
}

/// A refusal (RST from the target) is an answer, not a link failure: the
/// client gets "connection refused" at once and no link goes down, however
/// many refusals each link sees.
#[test]
fn refusal_is_not_a_link_failure() {
    if !require_root("refusal_is_not_a_link_failure") {
        return;
    }
    let t = Topology::new("lr");
    let closed = in_ns(&t.inet_fd, || closed_port(SERVER_IP));
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    for k in 0..12 {
        let (_s, reply) = in_ns(&t.home_fd, || socks5_connect(proxy.addr, *closed));
        assert_eq!(
            reply.rep,
            rep::CONNECTION_REFUSED,
            "connection {k} to a closed port: reply {:02x?}\n--- proxy stdout (tail):\n{}",
            reply.raw,
            tail(&proxy.stdout(), 20)
        );
    }
    let out = proxy.finish();
    // Answered at once: one attempt per client, none retried on another
    // link (which a refusal taken for a link failure would be).
    let attempts = failed_attempts(&out.stdout, None);
    assert!(
        attempts.len() == 12 && attempts.iter().all(|l| l.contains("refused")),
        "want 12 refused attempts, one per client: {attempts:#?}"
    );
    let down = lines_with(&out.stdout, " down:");
    assert!(down.is_empty(), "refusals took links down: {down:?}");
    for i in 1..=3u8 {
        let label = format!("l{i} {}", home_ip(i));
        for s in link_summaries(&out.stdout, &label) {
            assert_eq!(
                (s.state.as_str(), s.failures),
                ("up", 0),
                "refusals are not link failures; summary of {label}: {s:?}"
            );
        }
    }
}

/// Link 3's 10.3.0.2 is replaced by 10.3.0.7 (as a DHCP renewal might):
/// the target `l3` follows, logs the change, and new connections leave
/// from 10.3.0.7, still through l3 (the far side only accepts 10.3.0.x on
/// r3).
#[test]
fn interface_target_follows_its_new_address() {
    if !require_root("interface_target_follows_its_new_address") {
        return;
    }
    let t = Topology::new("la");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 6)
            .iter()
            .map(|e| e.peer.ip()),
    );
    assert_eq!(count_of(&by, home_ip(3)), 2, "before the change: {by:?}");

    // Deleting the only address also flushed l3's default route: put it back.
    ip_batch(
        &t.home,
        &[
            "addr del 10.3.0.2/24 dev l3",
            "addr add 10.3.0.7/24 dev l3",
            "route add default via 10.3.0.1 dev l3 metric 300",
        ],
    );
    let line = "link l3 address changed: 10.3.0.2 -> 10.3.0.7";
    // Re-read every 2 s; the deadline is for a hang, not a measurement.
    let took = wait_log(&proxy, line, 1, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("address change noticed after {took:?}");

    let seen = exchanges(&t, &proxy, &server, 9);
    let by = count_by_ip(seen.iter().map(|e| e.peer.ip()));
    let new = "10.3.0.7".parse::<IpAddr>().unwrap();
    assert_eq!(
        count_of(&by, home_ip(3)),
        0,
        "old address still used: {by:?}"
    );
    assert!(
        (2..=4).contains(&count_of(&by, new)),
        "l3 should carry about a third of 9 connections from 10.3.0.7: {by:?}\n--- proxy stdout (tail):\n{}",
        tail(&proxy.stdout(), 30)
    );
    let out = proxy.finish();
    let after = &out.stdout[out.stdout.find(line).unwrap()..];
    let failed = failed_attempts(after, None);
    assert!(
        failed.is_empty(),
        "attempts failed after the change (from the old address?): {failed:?}"
    );
    let down = lines_with(&out.stdout, " down:");
    assert!(
        down.is_empty(),
        "an address change is not a link going down: {down:?}"
    );
}

/// Connections avoid l3 (none from 10.3.0.x, no attempt through it) and
/// succeed.
fn assert_avoids_l3(t: &Topology, proxy: &Proxy, server: &NsServer, when: &str) {
    let before = proxy.stdout().len();
    let seen = exchanges(t, proxy, server, 6);
    let bad: Vec<&Exchanged> = seen
        .iter()
        .filter(|e| matches!(e.peer.ip(), IpAddr::V4(v) if v.octets()[1] == 3))
        .collect();
    let out = proxy.stdout();
    let failed = failed_attempts(&out[before..], None);
    assert!(
        bad.is_empty() && failed.is_empty(),
        "{when}: connections used l3 {bad:?} or failed over {failed:?}\n--- proxy stdout (tail):\n{}",
        tail(&out, 30)
    );
}

/// An interface that loses its address, or disappears, is down ("no
/// address") until it is back; meanwhile connections go elsewhere without
/// waiting, and afterwards it carries its share again.
#[test]
fn interface_without_address_is_down_until_it_returns() {
    if !require_root("interface_without_address_is_down_until_it_returns") {
        return;
    }
    let t = Topology::new("lz");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    let l3 = home_ip(3);
    let share = |when: &str| {
        let by = count_by_ip(
            exchanges(&t, &proxy, &server, 6)
                .iter()
                .map(|e| e.peer.ip()),
        );
        assert!(
            (1..=3).contains(&count_of(&by, l3)),
            "{when}: l3 should carry about a third of 6 connections: {by:?}\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 30)
        );
    };
    share("at start");

    t.home.ip(&["addr", "flush", "dev", "l3"]);
    wait_lines(
        &proxy,
        &["link l3 ", "down: no address"],
        1,
        Duration::from_secs(60),
    );
    assert_avoids_l3(&t, &proxy, &server, "address flushed");

    t.home.ip(&["addr", "add", "10.3.0.2/24", "dev", "l3"]);
    t.add_default_route(3);
    wait_lines(&proxy, &["link l3 10.3.0.2 up"], 1, Duration::from_secs(60));
    share("address back");

    // The interface disappears (deleting l3 deletes r3 too), then returns.
    t.home.ip(&["link", "del", "dev", "l3"]);
    wait_lines(
        &proxy,
        &["link l3 ", "down: interface gone"],
        1,
        Duration::from_secs(60),
    );
    assert_avoids_l3(&t, &proxy, &server, "interface deleted");

    t.add_link(3);
    wait_lines(&proxy, &["link l3 10.3.0.2 up"], 2, Duration::from_secs(60));
    share("interface re-created");
    proxy.finish();
}

/// An interface set down that keeps its address: connects through it fail
/// (the link's fault, so the client is failed over at once and never
/// notices), three mark it down, and once the interface is up again a
/// trial brings it back.
#[test]
fn interface_set_down_with_its_address_fails_over_and_returns() {
    if !require_root("interface_set_down_with_its_address_fails_over_and_returns") {
        return;
    }
    let t = Topology::new("ld");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    let l3 = home_ip(3);
    exchanges(&t, &proxy, &server, 3);

    t.home.ip(&["link", "set", "dev", "l3", "down"]);
    let out = t.home.exec("ip", &["-o", "addr", "show", "dev", "l3"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.3.0.2/24"),
        "l3 keeps its address while down"
    );
    let down_line = "link l3 10.3.0.2 down:";
    let mut n = 0;
    while !proxy.stdout().contains(down_line) {
        assert!(
            n < 15,
            "no {down_line:?} after {n} connections since l3 was set down\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 30)
        );
        let e = exchange_ok(&t, &proxy, &server, 100, 100);
        assert_ne!(
            e.peer.ip(),
            l3,
            "a connection got through l3 while it was down"
        );
        n += 1;
    }
    assert_avoids_l3(&t, &proxy, &server, "l3 set down");

    t.home.ip(&["link", "set", "dev", "l3", "up"]);
    // Going down took l3's routes with it.
    t.home.ip(&[
        "route", "replace", "default", "via", "10.3.0.1", "dev", "l3", "metric", "300",
    ]);
    let up_line = "link l3 10.3.0.2 up";
    let start = Instant::now();
    while !proxy.stdout().contains(up_line) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {up_line:?} within 60 s of setting l3 up (backoff 5 s)\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 30)
        );
        exchange_ok(&t, &proxy, &server, 100, 100);
        thread::sleep(Duration::from_millis(200));
    }
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 6)
            .iter()
            .map(|e| e.peer.ip()),
    );
    assert_eq!(
        count_of(&by, l3),
        2,
        "l3 up again carries its third: {by:?}"
    );
    proxy.finish();
}

/// IPv6 links, given by interface name like the IPv4 ones: each leaves
/// through its own interface (its byte counter shows the upload), a dead
/// one is failed over and marked down, and an address change is followed.
#[test]
fn ipv6_links_bind_fail_over_and_follow_address_changes() {
    if !require_root("ipv6_links_bind_fail_over_and_follow_address_changes") {
        return;
    }
    let t = Topology::new("l6");
    t.add_ipv6();
    let server = t.exchange_server6();
    let proxy = t.proxy(&["--connect-timeout", "1", "l1", "l2", "l3"]);
    let log = |p: &Proxy| format!("\n--- proxy stdout (tail):\n{}", tail(&p.stdout(), 30));

    // Binding: two connections per link, each uploading 200 kB, which
    // leave by that link's interface (without device binding all would
    // take l1, the lowest-metric default route).
    const UP: u64 = 200_000;
    let tx: Vec<u64> = (1..=3).map(|i| t.tx_bytes(i)).collect();
    let seen: Vec<Exchanged> = (0..6)
        .map(|_| exchange_ok(&t, &proxy, &server, UP, 100))
        .collect();
    let by = count_by_ip(seen.iter().map(|e| e.peer.ip()));
    for i in 1..=3u8 {
        assert_eq!(
            count_of(&by, home_ip6(i)),
            2,
            "equal weights over 6 connections: {by:?}{}",
            log(&proxy)
        );
        let sent = t.tx_bytes(i) - tx[usize::from(i) - 1];
        assert!(
            sent >= 2 * UP,
            "l{i} sent {sent} bytes for two 200 kB uploads: not its own connections?"
        );
    }

    // Failover: link 2 cut; clients still get through, and it goes down.
    t.inet.ip(&["link", "set", "dev", "r2", "down"]);
    let down_line = "link l2 fd02::2 down:";
    let mut n = 0;
    while !proxy.stdout().contains(down_line) {
        assert!(
            n < 15,
            "no {down_line:?} after {n} connections since link 2 was cut{}",
            log(&proxy)
        );
        let e = exchange_ok(&t, &proxy, &server, 100, 100);
        assert_ne!(e.peer.ip(), home_ip6(2), "through the cut link 2");
        n += 1;
    }
    let before = proxy.stdout().len();
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 4)
            .iter()
            .map(|e| e.peer.ip()),
    );
    assert_eq!(
        (count_of(&by, home_ip6(1)), count_of(&by, home_ip6(3))),
        (2, 2),
        "links 1 and 3 while link 2 is down: {by:?}{}",
        log(&proxy)
    );
    let out = proxy.stdout();
    let tried = failed_attempts(&out[before..], Some("fd02::2"));
    assert!(tried.is_empty(), "link 2 tried while down: {tried:?}");

    // Address change on l3: followed, logged, and used.
    ip_batch(
        &t.home,
        &[
            "addr del fd03::2/64 dev l3",
            "addr add fd03::7/64 dev l3 nodad",
            "route replace default via fd03::1 dev l3 metric 300",
        ],
    );
    let line = "link l3 address changed: fd03::2 -> fd03::7";
    wait_log(&proxy, line, 1, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 4)
            .iter()
            .map(|e| e.peer.ip()),
    );
    let new: IpAddr = "fd03::7".parse().unwrap();
    assert_eq!(
        (count_of(&by, home_ip6(1)), count_of(&by, new)),
        (2, 2),
        "l3 from its new address, beside l1: {by:?}{}",
        log(&proxy)
    );
    proxy.finish();
}

/// At exit, one summary line per link with its state, connection and
/// failure counts, and the exact bytes relayed each way.
#[test]
fn exit_summary_per_link() {
    if !require_root("exit_summary_per_link") {
        return;
    }
    let t = Topology::new("ls");
    let server = t.exchange_server();
    let proxy = t.proxy(&["l1/2", "l2/1", "l3/1"]);
    let mut want: BTreeMap<IpAddr, (u64, u64, u64)> = BTreeMap::new();
    for k in 1..=8u64 {
        let e = exchange_ok(&t, &proxy, &server, 1000 * k + 7, 3000 * k + 11);
        let w = want.entry(e.peer.ip()).or_default();
        w.0 += 1;
        w.1 += e.up;
        w.2 += e.down;
    }
    // The counters are final once the proxy has closed each connection:
    // its debug line for each (`#n ... via ...: up .. B, down .. B, ...`).
    wait_log(&proxy, " via ", 8, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let out = proxy.finish();
    for i in 1..=3u8 {
        let label = format!("l{i} {}", home_ip(i));
        let (n, up, down) = want.get(&home_ip(i)).copied().unwrap_or_default();
        assert!(n > 0, "link {i} carried no connection: {want:?}");
        let sums = link_summaries(&out.stdout, &label);
        assert!(
            !sums.is_empty(),
            "no line 'link {label}: ...' on stdout after SIGTERM:\n{}",
            tail(&out.stdout, 15)
        );
        for s in sums {
            assert_eq!(
                s,
                LinkSummary {
                    state: "up".into(),
                    connections: n,
                    failures: 0,
                    up,
                    down,
                },
                "summary of {label} (up/down: payload bytes relayed each way)"
            );
        }
    }
}

/// A link that is still dead at its trial goes back down, and waits twice
/// as long (10 s) for the next trial; clients never notice (the trial
/// connection fails over like any other).
#[test]
fn failed_trial_doubles_the_backoff() {
    if !require_root("failed_trial_doubles_the_backoff") {
        return;
    }
    let t = Topology::new("lk");
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "0.5", "l1", "l2", "l3"]);
    t.inet.ip(&["link", "set", "dev", "r2", "down"]);
    let (down, trial) = ("link l2 10.2.0.2 down:", "link l2 10.2.0.2 trial");
    // Keep connecting (a trial needs a connection) until the second down
    // line, which the second trial's failure writes.
    let start = Instant::now();
    while proxy.stdout().matches(down).count() < 2 || proxy.stdout().matches(trial).count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "want down, trial (after 5 s), down, trial (after 10 s) within 90 s\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 30)
        );
        let e = exchange_ok(&t, &proxy, &server, 100, 100);
        assert_ne!(
            e.peer.ip(),
            home_ip(2),
            "a connection got through the cut link 2"
        );
        thread::sleep(Duration::from_millis(250));
    }
    // The waits by the proxy's own clock (its log timestamps), not by when
    // this test looked. The lower bounds are the rule; the upper ones only
    // tell a 5 s wait from a 10 s one, with room for a slow machine.
    let out = proxy.stdout();
    let at = |needle: &str, nth: usize| {
        log_time_of(&out, needle, nth)
            .unwrap_or_else(|| panic!("no timestamp on {needle:?} #{nth}:\n{}", tail(&out, 30)))
    };
    let first = at(trial, 0) - at(down, 0);
    let second = at(trial, 1) - at(down, 1);
    eprintln!("backoffs in the log: {first:.3} s, then {second:.3} s");
    assert!(
        (4.99..9.0).contains(&first),
        "first trial {first:.3} s after going down (backoff 5 s)"
    );
    assert!(
        (9.99..20.0).contains(&second),
        "second trial {second:.3} s after the failed trial (backoff doubled to 10 s)"
    );
    proxy.finish();
}
