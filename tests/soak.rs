//! The soak of issue 11 in its short mode: `benches/soak/soak.py` (the load
//! that `benches/soak.sh` runs for hours) for 2 minutes against the debug
//! binary. It mixes connect/close churn (SOCKS5, SOCKS4, SOCKS4a, HTTP
//! CONNECT), byte-checked bulk transfers both ways, UDP ASSOCIATE, BIND,
//! HTTP forward requests, bad handshakes, wrong passwords and clients that
//! vanish mid-transfer, through two proxies (with and without
//! `--auth-file`), and fails on any wrong byte, any unexpected error, or
//! RSS/descriptors that keep growing or do not come back once the load stops.
//!
//! `SOAK_SECONDS` changes the length (at least 30 s: the growth verdict
//! needs samples). `SOAK_INJECT=flip` or `SOAK_INJECT=hold` makes it fail on
//! purpose (a flipped byte; connections held open, as a descriptor leak
//! would look), to see that it can.
//!
//! Linux only (/proc, and every 127.x address is local). Needs python3.

#![cfg(target_os = "linux")]

mod common;

use common::{TempDir, BIN};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn soak_short_mode_passes() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
        .max(30);
    let dir = TempDir::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak/soak.py");
    // Lighter than the hour-long run: CI has two cores and runs other tests.
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(script)
        .args(["--seconds", &seconds.to_string()])
        .args(["--sample", &(seconds / 12).max(5).to_string()])
        .args(["--bin", BIN])
        .arg("--out")
        .arg(&dir.path);
    if std::env::var_os("SOAK_WORKERS").is_none() {
        cmd.env("SOAK_WORKERS", "6");
    }
    if std::env::var_os("SOAK_RATE").is_none() {
        cmd.env("SOAK_RATE", "4e6");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs benches/soak/soak.py; is python3 installed?");

    // Read both pipes on threads so that neither can fill and block it.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    // The run itself, the 90 s the workers may take to finish, the settling.
    let deadline = Instant::now() + Duration::from_secs(seconds + 180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SIGTERM: the generator stops its proxies on the way out.
            common::sigterm(child.id());
            std::thread::sleep(Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("summary:"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{summary}");
    match status {
        Some(st) if st.success() && stdout.contains("soak passed") => {}
        Some(st) => panic!("soak failed ({st}):\n{stdout}\n{stderr}"),
        None => panic!("soak did not finish within {seconds} s + 180 s:\n{stdout}\n{stderr}"),
    }
}
