//! Running out of file descriptors on accept must neither spin the event loop
//! nor kill the process: it backs off, and serves again once descriptors free.

mod common;

use common::*;
use std::io::BufRead;
use std::io::BufReader;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// User + system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_backs_off_then_serves_again() {
    let mut proxy = Proxy::start(&["--handshake-timeout", "60", "127.0.0.1"]);
    let open = proxy.fd_count();
    // Room for a few connections only.
    let limit = open + 8;
    let status = Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(format!("--pid={}", proxy.pid))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());

    // More clients than descriptors: the later ones wait in the backlog.
    let clients: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.stdout().contains("out of file descriptors") {
        assert!(
            Instant::now() < deadline,
            "no 'out of file descriptors' warning with {} descriptors open and a limit of {limit}",
            proxy.fd_count()
        );
        thread::sleep(Duration::from_millis(50));
    }

    // Stuck at the limit, the loop must sleep, not spin: over one second it
    // may use a little CPU for its back-off retries, nowhere near all of it.
    let ticks_per_s = 100; // USER_HZ on Linux
    let before = cpu_ticks(proxy.pid);
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(proxy.pid) - before;
    assert!(
        used < ticks_per_s / 4,
        "proxy used {used} of {ticks_per_s} CPU ticks in 1 s while out of descriptors: spinning"
    );
    proxy.assert_alive();

    // Free the descriptors; the proxy picks up the backlog and serves anew.
    drop(clients);
    let server = Server::whoami("127.0.0.1:0");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = std::panic::catch_unwind(|| socks5_ok(proxy.addr, server.addr));
        match attempt {
            Ok((s, bnd)) => {
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).unwrap();
                assert_eq!(line.trim(), bnd.to_string());
                break;
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
            Err(_) => panic!("proxy did not serve again within 10 s after descriptors freed"),
        }
    }
    proxy.finish();
}
