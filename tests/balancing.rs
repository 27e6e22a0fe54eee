//! The point of the program: each new outgoing connection leaves from the
//! local address picked by smooth weighted round robin when weights are
//! given, or by learned capacity when they are not, per address family.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};

/// One SOCKS5 CONNECT through `proxy` to a whoami server; returns the peer
/// address the server saw (checked against BND.ADDR:BND.PORT).
fn source_of(proxy: SocketAddr, target: impl Into<Dest>) -> IpAddr {
    let (s, bnd) = socks5_ok(proxy, target);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("whoami line");
    let seen: SocketAddr = line.trim().parse().expect("whoami address");
    assert_eq!(bnd, seen, "BND.ADDR:BND.PORT != peer seen by the target");
    seen.ip()
}

/// The nginx smooth weighted round robin, first listed wins ties.
fn nginx_swrr(weights: &[i64], n: usize) -> Vec<usize> {
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn show(v: &[IpAddr]) -> String {
    v.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn weights_2_1_give_exact_sequence() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2/2", "127.0.0.3/1"]);
    let got: Vec<IpAddr> = (0..30)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    assert_eq!(
        got.iter().filter(|ip| **ip == a).count(),
        20,
        "{}",
        show(&got)
    );
    assert_eq!(
        got.iter().filter(|ip| **ip == b).count(),
        10,
        "{}",
        show(&got)
    );
    let want: Vec<IpAddr> = [a, b, a].iter().copied().cycle().take(30).collect();
    assert_eq!(
        show(&got),
        show(&want),
        "sequence of source addresses must be .2 .3 .2 repeated"
    );
    // The server saw the same, in accept order.
    let seen: Vec<IpAddr> = server.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(show(&seen), show(&want));
    proxy.finish();
}

#[test]
fn weights_7_3_are_interleaved() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2/7", "127.0.0.3/3"]);
    let got: Vec<IpAddr> = (0..30)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    // Every period of 10 has exactly 7 and 3.
    for (i, period) in got.chunks(10).enumerate() {
        let n = period.iter().filter(|ip| **ip == a).count();
        assert_eq!(n, 7, "period {i} has {n} x .2: {}", show(&got));
    }
    // Smooth: never more than 3 in a row of the heavy one (nginx gives
    // A B A A A B A A B A), never 2 in a row of the light one.
    let mut run = 0;
    let mut prev = None;
    for ip in &got {
        run = if Some(ip) == prev { run + 1 } else { 1 };
        prev = Some(ip);
        let max = if *ip == a { 3 } else { 1 };
        assert!(run <= max, "run of {run} x {ip}: {}", show(&got));
    }
    proxy.finish();
}

#[test]
fn three_addresses_follow_nginx_order() {
    // The classic nginx example: weights 5, 1, 1 -> a a b a c a a.
    let server = Server::whoami("127.0.0.1:0");
    let addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let proxy = Proxy::start(&["127.0.0.2/5", "127.0.0.3/1", "127.0.0.4/1"]);
    let got: Vec<IpAddr> = (0..14)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let want: Vec<IpAddr> = nginx_swrr(&[5, 1, 1], 14)
        .into_iter()
        .map(|i| addrs[i].parse().unwrap())
        .collect();
    assert_eq!(
        show(&want[..7]),
        show(&ips(&[
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.2",
            "127.0.0.4",
            "127.0.0.2",
            "127.0.0.2"
        ]))
    );
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn unweighted_addresses_alternate() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    let got: Vec<IpAddr> = (0..10)
        .map(|_| source_of(proxy.addr, server.addr))
        .collect();
    let want: Vec<IpAddr> = ips(&["127.0.0.2", "127.0.0.3"])
        .into_iter()
        .cycle()
        .take(10)
        .collect();
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn each_family_uses_its_own_addresses() {
    let v4 = Server::whoami("127.0.0.1:0");
    let v6 = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2", "::1"]);
    for _ in 0..4 {
        assert_eq!(source_of(proxy.addr, v6.addr).to_string(), "::1");
        assert_eq!(source_of(proxy.addr, v4.addr).to_string(), "127.0.0.2");
    }
    // A name resolving to IPv4 uses the IPv4 address.
    assert_eq!(
        source_of(proxy.addr, Dest::name("localhost", v4.addr.port())).to_string(),
        "127.0.0.2"
    );
    proxy.finish();
}

#[test]
fn round_robin_state_is_per_family() {
    // IPv6 connections in between must not disturb the IPv4 sequence.
    let v4 = Server::whoami("127.0.0.1:0");
    let v6 = Server::whoami("[::1]:0");
    let proxy = Proxy::start(&["127.0.0.2/2", "::1/5", "127.0.0.3/1"]);
    let mut got = Vec::new();
    for i in 0..12 {
        got.push(source_of(proxy.addr, v4.addr));
        for _ in 0..(i % 3) {
            assert_eq!(source_of(proxy.addr, v6.addr).to_string(), "::1");
        }
    }
    let want: Vec<IpAddr> = ips(&["127.0.0.2", "127.0.0.3", "127.0.0.2"])
        .into_iter()
        .cycle()
        .take(12)
        .collect();
    assert_eq!(show(&got), show(&want));
    proxy.finish();
}

#[test]
fn socks4_connections_take_part_in_the_rotation() {
    // Every new outgoing connection is one pick, whichever protocol asked.
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2", "127.0.0.3"]);
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    let mut s = client(proxy.addr);
    s.write_all(&socks4_request(
        Ipv4Addr::LOCALHOST,
        server.addr.port(),
        b"",
        None,
    ))
    .unwrap();
    let mut r = [0u8; 8];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..2], &[0x00, 0x5A]);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("127.0.0.3:"),
        "SOCKS4 connection from {line}"
    );
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    proxy.finish();
}

// ---------------------------------------------------------------------------
// Learned capacities
// ---------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 256 * 1024;

use dispatch::learned::HEADER;

/// Sends a chunk of [`CHUNK`] bytes to each connection, then closes it,
/// pausing after each 8 kB: 1 ms for peers from 127.0.0.2, 10 ms for those
/// from 127.0.0.3 (a slow link, as loopback cannot be shaped without root).
/// Counts chunks sent per source address.
struct ChunkServer {
    addr: SocketAddr,
    sent: Arc<Mutex<BTreeMap<IpAddr, usize>>>,
}

impl ChunkServer {
    fn start() -> ChunkServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = Arc::clone(&sent);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let counts = Arc::clone(&counts);
                thread::spawn(move || {
                    let peer = conn.peer_addr().unwrap().ip();
                    let slow = peer.to_string() == "127.0.0.3";
                    let block = [0x5a; 8 * 1024];
                    for _ in 0..CHUNK / block.len() {
                        if conn.write_all(&block).is_err() {
                            return;
                        }
                        // Paced both ways, to spare the machine's CPU.
                        let pause = if slow { 10 } else { 1 };
                        thread::sleep(Duration::from_millis(pause));
                    }
                    *counts.lock().unwrap().entry(peer).or_insert(0) += 1;
                });
            }
        });
        ChunkServer { addr, sent }
    }

    fn sent(&self, ip: &str) -> usize {
        let ip: IpAddr = ip.parse().unwrap();
        self.sent.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

/// Waits (a few seconds at most) for `proxy` to log `needle`.
fn said(proxy: &Proxy, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.stdout().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            tail(&proxy.stdout(), 30)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `workers` clients pull chunks through `proxy`, a new connection each,
/// for `how_long`.
fn pull_chunks(proxy: SocketAddr, server: SocketAddr, workers: usize, how_long: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (mut s, _) = socks5_ok(proxy, server);
                    let mut got = Vec::with_capacity(CHUNK);
                    s.read_to_end(&mut got).expect("a chunk");
                    assert_eq!(got.len(), CHUNK);
                }
            })
        })
        .collect();
    thread::sleep(how_long);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a chunk worker");
    }
}

/// Without weights, chunk downloads go where the capacity is: the link the
/// server feeds slowly holds its connections longer and is learned as
/// slower, so the fast one carries most chunks (alternating would give
/// both the same number).
#[test]
fn without_weights_chunks_go_to_the_faster_link() {
    let server = ChunkServer::start();
    let state = TempDir::new();
    let file = state.path.join("capacities");
    let file_arg = file.to_str().unwrap();
    let proxy = Proxy::start(&["--state-file", file_arg, "127.0.0.2", "127.0.0.3"]);
    pull_chunks(proxy.addr, server.addr, 4, Duration::from_secs(5));
    let (fast, slow) = (server.sent("127.0.0.2"), server.sent("127.0.0.3"));
    eprintln!("chunks: {fast} through the fast link, {slow} through the slow one");
    assert!(
        fast >= 3 * slow.max(1),
        "chunks through the fast link {fast}, through the slow one {slow}"
    );
    said(
        &proxy,
        "balancing by learned capacity (nothing learned yet)",
    );
    let out = proxy.finish();
    assert!(
        out.stdout.contains("link 127.0.0.2 learned: "),
        "the summary says what was learned:\n{}",
        tail(&out.stdout, 20)
    );
    // Kept at exit; the next start begins with it.
    let kept = std::fs::read_to_string(&file).expect("the state file");
    assert!(kept.lines().any(|l| l.ends_with(" 127.0.0.2")), "{kept}");
    let again = Proxy::start(&["--state-file", file_arg, "127.0.0.2", "127.0.0.3"]);
    said(
        &again,
        "balancing by learned capacity (learned before: 127.0.0.2 ",
    );
    again.finish();
}

/// Weights written on the command line keep their meaning: exactly 1 of 2,
/// however slow one link is.
#[test]
fn written_weights_are_kept_whatever_is_learned() {
    let server = ChunkServer::start();
    let proxy = Proxy::start(&["127.0.0.2/1", "127.0.0.3/1"]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(2));
    said(&proxy, "balancing by the weights given");
    let out = proxy.finish();
    // Asked for weights and none written: said so.
    let none = Proxy::start(&["--balance", "weights", "127.0.0.2", "127.0.0.3"]);
    said(
        &none,
        "balancing by weights (none written: each link in turn)",
    );
    none.finish();
    assert!(
        !out.stderr.contains("no place for the state file"),
        "by weights nothing is kept, so no place is missing: {}",
        out.stderr
    );
    let via = |ip: &str| out.stdout.matches(&format!(" via {ip}:")).count();
    let (a, b) = (via("127.0.0.2"), via("127.0.0.3"));
    assert!(a > 0 && a.abs_diff(b) <= 2, "{a} and {b} connections");
}

/// A corrupt state file is said once and ignored; the proxy works.
#[test]
fn a_corrupt_state_file_is_ignored() {
    let state = TempDir::new();
    let file = state.path.join("capacities");
    std::fs::write(&file, format!("{HEADER}\ngarbage, not capacities\n")).unwrap();
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["--state-file", file.to_str().unwrap(), "127.0.0.2"]);
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    said(
        &proxy,
        "balancing by learned capacity (nothing learned yet)",
    );
    let out = proxy.finish();
    assert_eq!(
        out.stdout.matches("ignoring learned capacities in").count(),
        1,
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("line 2 is not"), "{}", out.stdout);
}

/// A file that is not a state file (a user's notes, named by mistake) is
/// left as it was, though the proxy learned capacities and would save them
/// at exit; the user is told on the terminal.
#[test]
fn a_file_that_is_not_a_state_file_is_left_alone() {
    let server = ChunkServer::start();
    let state = TempDir::new();
    let file = state.path.join("notes.txt");
    let mine = "my notes, not capacities\n1200000 looks like a line\n";
    std::fs::write(&file, mine).unwrap();
    let proxy = Proxy::start(&["--state-file", file.to_str().unwrap(), "127.0.0.2"]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(4));
    let out = proxy.finish();
    assert!(
        out.stdout.contains("127.0.0.2 learned: "),
        "nothing learned, so nothing would be saved: {}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), mine);
    assert!(
        out.stderr.contains("not a dispatch state file") && out.stderr.contains("leaving it alone"),
        "stderr: {}",
        out.stderr
    );
}

/// A state file that cannot be written (here under /proc, where not even
/// root makes files: reading finds none, so it is not "not ours") is said
/// on the terminal at start, not at the first save a minute later; the
/// proxy works.
#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_state_file_is_said_at_start() {
    let file = format!("/proc/dispatch-test-{}/capacities", std::process::id());
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start(&["--state-file", &file, "127.0.0.2"]);
    assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
    let out = proxy.finish();
    assert_eq!(
        out.stderr.matches("cannot write the state file").count(),
        1,
        "stderr: {}",
        out.stderr
    );
}

/// Without --state-file the file goes beside the log, under the
/// XDG_STATE_HOME given (tests never touch the user's own), named for the
/// instance's port as the log is (`--port 0`: `dispatch-0.log`,
/// `capacities-0`).
#[test]
fn the_state_file_lives_beside_the_log() {
    let server = ChunkServer::start();
    let state = TempDir::new();
    let launch = Launch {
        env: vec![("XDG_STATE_HOME", state.path.display().to_string())],
        ..Launch::default()
    };
    let proxy = Proxy::launch(&launch, &["127.0.0.2"]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(4));
    proxy.finish();
    let kept = std::fs::read_to_string(state.path.join("dispatch").join("capacities-0"))
        .expect("the state file beside the log");
    assert!(kept.lines().any(|l| l.ends_with(" 127.0.0.2")), "{kept}");
}

/// Capacities kept from an earlier run place a burst of connections opened
/// at once (a download split into static ranges) before anything is
/// measured: 4 to 1 here, where alternating would give 5 and 5.
#[test]
fn capacities_from_the_state_file_split_a_burst() {
    let state = TempDir::new();
    let file = state.path.join("capacities");
    std::fs::write(
        &file,
        format!("{HEADER}\n1000000 127.0.0.2\n250000 127.0.0.3\n"),
    )
    .unwrap();
    let echo = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&[
        "--state-file",
        file.to_str().unwrap(),
        "127.0.0.2",
        "127.0.0.3",
    ]);
    // Each reply's BND.ADDR is the address the connection left from.
    let (open, from): (Vec<_>, Vec<IpAddr>) = (0..10)
        .map(|_| {
            let (s, bnd) = socks5_ok(proxy.addr, echo.addr);
            (s, bnd.ip())
        })
        .unzip();
    let fast = from
        .iter()
        .filter(|ip| ip.to_string() == "127.0.0.2")
        .count();
    assert!(
        fast >= 7,
        "{fast} of 10 through the faster link: {}",
        show(&from)
    );
    drop(open);
    proxy.finish();
}

/// With no home directory (nor XDG_STATE_HOME) there is no default place
/// for the state file: the proxy works and says once, on the terminal,
/// that capacities will not be kept, and how to keep them.
#[test]
fn no_place_for_the_state_file_is_said() {
    let server = Server::whoami("127.0.0.1:0");
    // With -d (the log on stdout), and without (no place for a log file
    // either: the log is stderr, where the warning is then said once).
    for debug in [true, false] {
        let launch = Launch {
            env: vec![("HOME", String::new()), ("XDG_STATE_HOME", String::new())],
            debug,
            ..Launch::default()
        };
        let proxy = Proxy::launch(&launch, &["127.0.0.2"]);
        assert_eq!(source_of(proxy.addr, server.addr).to_string(), "127.0.0.2");
        let out = proxy.finish();
        assert_eq!(
            out.stderr.matches("no place for the state file").count(),
            1,
            "debug {debug}, stderr: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--state-file"), "{}", out.stderr);
    }
}

/// A log file named as the state file would be (`--log-file dir/capacities`;
/// `capacities-0` for the tests' `--port 0`) keeps both: the state goes to
/// `capacities-0.state` beside it, and the log is not taken for a foreign
/// state file.
#[test]
fn a_log_named_capacities_gets_its_state_file_beside_it() {
    let server = ChunkServer::start();
    let dir = TempDir::new();
    let log = dir.path.join("capacities-0");
    let launch = Launch {
        debug: false,
        ..Launch::default()
    };
    let proxy = Proxy::launch(&launch, &["--log-file", log.to_str().unwrap(), "127.0.0.2"]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(4));
    let out = proxy.finish();
    assert!(!out.stderr.contains("leaving it alone"), "{}", out.stderr);
    let kept = std::fs::read_to_string(dir.path.join("capacities-0.state"))
        .expect("the state file beside the log");
    assert!(kept.lines().any(|l| l.ends_with(" 127.0.0.2")), "{kept}");
    let logged = std::fs::read_to_string(&log).expect("the log");
    assert!(logged.contains("listening on"), "{logged}");
}

/// The same file for both is refused at start (exit 2), before either is
/// written.
#[test]
fn the_state_file_cannot_be_the_log() {
    let dir = TempDir::new();
    let file = dir.path.join("both");
    let both = file.to_str().unwrap();
    let run = run_bin(
        &[
            "start",
            "--port",
            "0",
            "--log-file",
            both,
            "--state-file",
            both,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("both name"), "{}", run.stderr);
    assert!(!file.exists(), "nothing written");
}

/// A read-only state file is the user's freeze: its capacities are used,
/// and it is never rewritten, whatever is learned meanwhile.
#[cfg(unix)]
#[test]
fn a_read_only_state_file_is_used_and_kept_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let server = ChunkServer::start();
    let state = TempDir::new();
    let file = state.path.join("capacities");
    let frozen = format!("{HEADER}\n1000000 127.0.0.2\n250000 127.0.0.3\n");
    std::fs::write(&file, &frozen).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let proxy = Proxy::start(&[
        "--state-file",
        file.to_str().unwrap(),
        "127.0.0.2",
        "127.0.0.3",
    ]);
    said(
        &proxy,
        "balancing by learned capacity (learned before: 127.0.0.2 1.00 MB/s",
    );
    said(
        &proxy,
        "is read-only: its capacities are used, and not rewritten",
    );
    pull_chunks(proxy.addr, server.addr, 4, Duration::from_secs(4));
    let out = proxy.finish();
    assert!(
        out.stdout.contains("link 127.0.0.2 learned: "),
        "something was learned:\n{}",
        tail(&out.stdout, 20)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), frozen);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444);
}

/// Balancing by weights, nothing learned is kept (it would be learned
/// under the weights' split: a link given a small share looks slow), and
/// a --state-file given is said to be unused.
#[test]
fn weights_keep_no_state_file() {
    let server = ChunkServer::start();
    let state = TempDir::new();
    let file = state.path.join("capacities");
    let proxy = Proxy::start(&[
        "--state-file",
        file.to_str().unwrap(),
        "127.0.0.2/3",
        "127.0.0.3/1",
    ]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(3));
    said(&proxy, "balancing by the weights given");
    let out = proxy.finish();
    assert!(!file.exists(), "no state file written");
    assert_eq!(
        out.stderr.matches("--state-file is not used").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("learned before") && !out.stdout.contains("nothing learned yet"),
        "{}",
        tail(&out.stdout, 20)
    );
}

/// A --log-file that is a state file is refused at start (exit 2), and
/// the state file is left as it was.
#[test]
fn the_log_cannot_be_a_state_file() {
    let dir = TempDir::new();
    let file = dir.path.join("caps");
    let kept = format!("{HEADER}\n1000000 127.0.0.2\n");
    std::fs::write(&file, &kept).unwrap();
    let run = run_bin(
        &["start", "--port", "0", "--log-file", file.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("is dispatch's state file"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), kept);
}

/// Made read-only while dispatch runs, the state file is frozen from then
/// on: the save at exit leaves it as it was.
#[cfg(unix)]
#[test]
fn a_state_file_made_read_only_while_running_is_not_rewritten() {
    use std::os::unix::fs::PermissionsExt;
    let server = ChunkServer::start();
    let state = TempDir::new();
    let file = state.path.join("capacities");
    let proxy = Proxy::start(&["--state-file", file.to_str().unwrap(), "127.0.0.2"]);
    pull_chunks(proxy.addr, server.addr, 2, Duration::from_secs(4));
    let before = std::fs::read_to_string(&file).expect("written back at start");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = proxy.finish();
    assert!(
        out.stdout.contains("link 127.0.0.2 learned: "),
        "something was learned:\n{}",
        tail(&out.stdout, 20)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert!(
        out.stdout.contains("is read-only now: not rewritten"),
        "{}",
        tail(&out.stdout, 20)
    );
}
