//! The command line: help, version, `list`, refused input (exit 2), a port
//! in use (exit 1), SIGTERM (exit 0).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::Duration;
use std::time::Instant;

const QUICK: Duration = Duration::from_secs(10);

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `dispatch ARGS` must refuse the input: exit 2 and say why on stderr.
fn refused(args: &[&str]) -> Run {
    let run = run_bin(args, QUICK);
    assert_eq!(
        run.code,
        Some(2),
        "dispatch {args:?} should exit 2\n--- stdout:\n{}\n--- stderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        !run.stderr.trim().is_empty(),
        "dispatch {args:?}: no message on stderr"
    );
    run
}

#[test]
fn help_mentions_list_and_start() {
    let run = run_bin(&["--help"], QUICK);
    assert_eq!(run.code, Some(0), "{run:?}");
    let w = words(&run.stdout);
    assert!(w.contains(&"list"), "help: {}", run.stdout);
    assert!(w.contains(&"start"), "help: {}", run.stdout);
}

#[test]
fn start_help_mentions_the_options() {
    let run = run_bin(&["start", "--help"], QUICK);
    assert_eq!(run.code, Some(0), "{run:?}");
    for opt in ["--ip", "--port", "--handshake-timeout", "--connect-timeout"] {
        assert!(
            run.stdout.contains(opt),
            "{opt} missing from: {}",
            run.stdout
        );
    }
}

#[test]
fn version_is_printed() {
    let run = run_bin(&["-V"], QUICK);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(env!("CARGO_PKG_VERSION")),
        "version output: {:?}",
        run.stdout
    );
}

#[test]
fn list_shows_lo() {
    let run = run_bin(&["list"], QUICK);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(words(&run.stdout).contains(&"lo"), "list: {}", run.stdout);
    assert!(run.stdout.contains("127.0.0.1"), "list: {}", run.stdout);
}

#[test]
fn zero_weight_is_refused() {
    refused(&["start", "--port", "0", "127.0.0.2/0"]);
}

#[test]
fn non_numeric_weights_are_refused() {
    for arg in ["127.0.0.2/x", "127.0.0.2/-1", "127.0.0.2/1.5", "127.0.0.2/"] {
        refused(&["start", "--port", "0", arg]);
    }
}

/// An interface that does not exist (yet) is not refused: dispatch started
/// at boot uses a Wi-Fi or tether that comes later. It is named in a
/// warning beside the interfaces there are, so a typo is seen at once.
#[test]
fn unknown_interface_is_waited_for_with_a_warning_listing_interfaces() {
    let proxy = Proxy::start(&["127.0.0.1", "no-such-iface0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stderr = loop {
        let text = proxy.stderr();
        if text.contains("no-such-iface0") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        stderr.contains("warning: no-such-iface0 has no usable address yet"),
        "the warning should name the argument: {stderr}"
    );
    assert!(
        words(&stderr).contains(&"lo"),
        "the warning should list the interfaces (lo): {stderr}"
    );
    proxy.finish();
}

#[test]
fn address_not_on_this_machine_is_refused() {
    let run = refused(&["start", "--port", "0", "10.254.254.254"]);
    assert!(run.stderr.contains("10.254.254.254"), "{}", run.stderr);
    refused(&["start", "--port", "0", "127.0.0.2", "2001:db8::77"]);
}

#[test]
fn duplicate_address_is_refused() {
    refused(&["start", "--port", "0", "127.0.0.2", "127.0.0.2"]);
    refused(&[
        "start",
        "--port",
        "0",
        "127.0.0.2/1",
        "127.0.0.3",
        "127.0.0.2/5",
    ]);
}

#[test]
fn bad_options_are_refused() {
    refused(&[
        "start",
        "--port",
        "0",
        "--handshake-timeout",
        "0",
        "127.0.0.2",
    ]);
    refused(&[
        "start",
        "--port",
        "0",
        "--connect-timeout",
        "soon",
        "127.0.0.2",
    ]);
    refused(&["start", "--port", "65536", "127.0.0.2"]);
    refused(&["start", "--ip", "not-an-ip", "--port", "0", "127.0.0.2"]);
    refused(&["frobnicate"]);
}

#[test]
fn ip_not_of_this_machine_exits_2_saying_so() {
    // 192.0.2.1 (TEST-NET-1) is no machine's address; binding to it sends
    // nothing anywhere.
    let run = run_bin(
        &["start", "--ip", "192.0.2.1", "--port", "0", "127.0.0.2"],
        QUICK,
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let msg = run.stderr.trim();
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        msg.contains("--ip 192.0.2.1") && msg.contains("not an address of this machine"),
        "{msg}"
    );
}

#[test]
fn port_in_use_exits_1_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = run_bin(
        &["start", "--ip", "127.0.0.1", "--port", &port, "127.0.0.2"],
        QUICK,
    );
    assert_eq!(
        run.code,
        Some(1),
        "port in use should exit 1\n--- stdout:\n{}\n--- stderr:\n{}",
        run.stdout,
        run.stderr
    );
    let msg = run.stderr.trim();
    assert!(!msg.is_empty(), "no error message");
    assert_eq!(
        msg.lines().count(),
        1,
        "expected a one-line error, got:\n{msg}"
    );
    drop(taken);
}

#[test]
fn sigterm_exits_0() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    // It is really serving.
    let server = Server::whoami("127.0.0.1:0");
    let (s, bnd) = socks5_ok(proxy.addr, server.addr);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), bnd.to_string());
    // finish() sends SIGTERM and asserts exit status 0 and no panic.
    proxy.finish();
}

#[test]
fn sigterm_with_open_connections_exits_0() {
    let server = Server::echo("127.0.0.1:0");
    let proxy = Proxy::start(&["127.0.0.2"]);
    let (_relaying, _) = socks5_ok(proxy.addr, server.addr);
    let mut half = client(proxy.addr);
    std::io::Write::write_all(&mut half, &[0x05]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    proxy.finish();
}

#[test]
fn listen_address_is_printed_and_used() {
    let proxy = Proxy::start(&["127.0.0.2"]);
    assert_eq!(proxy.addr.ip().to_string(), "127.0.0.1");
    assert!(
        proxy
            .stdout()
            .lines()
            .any(|l| l.contains(&format!("dispatch listening on {}", proxy.addr))),
        "stdout: {}",
        proxy.stdout()
    );
    proxy.finish();
}

#[test]
fn listens_on_ipv6() {
    let server = Server::whoami("127.0.0.1:0");
    let proxy = Proxy::start_on("::1", &["127.0.0.2"]);
    assert_eq!(proxy.addr.ip().to_string(), "::1");
    let (s, bnd) = socks5_ok(proxy.addr, server.addr);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), bnd.to_string());
    assert_eq!(bnd.ip().to_string(), "127.0.0.2");
    proxy.finish();
}

/// "At start the soft limit on open files is raised to the hard limit":
/// started with a soft limit of 256 under a hard one of 4096, the running
/// proxy has 4096 for both (/proc/PID/limits) and says so.
#[test]
fn open_files_soft_limit_is_raised_to_the_hard_limit() {
    let proxy = Proxy::launch(
        &Launch {
            wrap: vec!["prlimit", "--nofile=256:4096", "--"],
            ..Launch::default()
        },
        &["127.0.0.2"],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid)).unwrap();
    let row: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[3..5], ["4096", "4096"], "{limits}");
    let out = proxy.finish();
    assert!(
        out.stdout.contains("open file limit: 4096"),
        "{}",
        out.stdout
    );
}

/// SIGTERM (a service manager's stop) drains: no new client is accepted,
/// a transfer under way finishes, then dispatch exits; a second signal
/// stops at once and the summary counts what was cut.
#[test]
fn sigterm_lets_a_transfer_finish_and_a_second_signal_cuts() {
    let proxy = Proxy::start(&["--drain-timeout", "30", "127.0.0.1"]);
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    use std::io::{Read, Write};
    let (mut busy, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (mut far, _) = target.accept().unwrap();
    // A client that only connected, with no request yet: closed at once.
    let mut idle = client(proxy.addr);
    sigterm(proxy.pid);
    wait_for(
        &proxy,
        "stopping: no new connections; 1 still carrying a request",
    );
    assert!(
        std::net::TcpStream::connect(proxy.addr).is_err(),
        "no new client while draining"
    );
    let mut b = [0u8; 1];
    assert_eq!(
        idle.read(&mut b).unwrap_or(0),
        0,
        "the idle client is closed"
    );
    // The transfer goes on, then ends, and dispatch with it.
    busy.write_all(b"last request").unwrap();
    let mut got = [0u8; 12];
    far.read_exact(&mut got).unwrap();
    far.write_all(b"last answer").unwrap();
    drop(far);
    let mut answer = Vec::new();
    busy.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"last answer");
    drop(busy);
    let out = proxy.wait_exit();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains(" cut"), "{}", tail(&out.stdout, 5));

    // Again, but a second signal does not wait for the transfer.
    let proxy = Proxy::start(&["--drain-timeout", "30", "127.0.0.1"]);
    let (_client, _) = socks5_ok(proxy.addr, target.local_addr().unwrap());
    let (_far, _) = target.accept().unwrap();
    sigterm(proxy.pid);
    wait_for(&proxy, "stopping: no new connections");
    sigterm(proxy.pid);
    let out = proxy.wait_exit();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("dispatch stopped: 1 connection, ") && out.stdout.contains(", 1 cut"),
        "{}",
        tail(&out.stdout, 5)
    );
}

/// Waits until the proxy's output has `text`.
fn wait_for(proxy: &Proxy, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.stdout().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            proxy.stdout()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
