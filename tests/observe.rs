//! What README's "Seeing it work" and "Logs" promise, from the outside: the
//! live table on a terminal and `--quiet`, SIGINT and the `dispatch
//! stopped` summary, the log file (its path, its level, `RUST_LOG`,
//! rotation at 10 MiB, the failure budget) and the per-link counters logged
//! once a minute.
//!
//! Everything is on loopback. The terminal is a pseudo-terminal made by a
//! small Python script (python3's `pty` module).

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs each command line of `argv` (JSON list of lists) under its own
/// pseudo-terminal, all at once. Waits until the first one's output has
/// `want` at least `times` times (or 60 s), then sends SIGINT to all,
/// reads them to EOF and prints, for each, `=== EXIT <code>` and its
/// output (in hex, as the terminal gave it).
const PY_PTY: &str = r#"
import json, os, pty, select, signal, sys, time
want, times, cmds = sys.argv[1].encode(), int(sys.argv[2]), json.loads(sys.argv[3])
kids = []
for argv in cmds:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    kids.append([pid, fd, b"", False])
def pump(until, stop):
    while time.monotonic() < until and not all(k[3] for k in kids):
        if stop():
            return
        fds = [k[1] for k in kids if not k[3]]
        r, _, _ = select.select(fds, [], [], 0.1)
        for k in kids:
            if k[1] in r:
                try:
                    b = os.read(k[1], 65536)
                except OSError:
                    b = b""
                if b:
                    k[2] += b
                else:
                    k[3] = True
pump(time.monotonic() + 60, lambda: kids[0][2].count(want) >= times)
for k in kids:
    os.kill(k[0], signal.SIGINT)
pump(time.monotonic() + 30, lambda: False)
for k in kids:
    _, status = os.waitpid(k[0], 0)
    print("=== EXIT %d" % os.waitstatus_to_exitcode(status))
    print(k[2].hex())
"#;

struct PtyRun {
    code: i32,
    output: String,
}

/// `dispatch ARGS` for each of `runs` under a terminal (see [`PY_PTY`]).
fn under_pty(state: &Path, want: &str, times: usize, runs: &[&[&str]]) -> Vec<PtyRun> {
    let cmds: Vec<String> = runs
        .iter()
        .map(|args| {
            let all: Vec<String> = std::iter::once(BIN)
                .chain(args.iter().copied())
                .map(|a| format!("\"{a}\""))
                .collect();
            format!("[{}]", all.join(","))
        })
        .collect();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        PY_PTY,
        want,
        &times.to_string(),
        &format!("[{}]", cmds.join(",")),
    ])
    .env("XDG_STATE_HOME", state)
    .stdin(Stdio::null());
    scrub_env(&mut cmd);
    let out = cmd.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the pty script failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    lines
        .chunks(2)
        .map(|pair| PtyRun {
            code: pair[0]
                .strip_prefix("=== EXIT ")
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("pty script output: {stdout}")),
            output: String::from_utf8_lossy(&unhex(pair.get(1).copied().unwrap_or("")))
                .into_owned(),
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from the pty script"))
        .collect()
}

/// The table's header row.
const TABLE: &str = "STATE  OPEN  TOTAL  FAILED";

/// On a terminal the links' table is redrawn every second; `--quiet` (run
/// beside it, for at least as long) draws none. Both stop on SIGINT with
/// status 0 and the summary lines.
#[test]
fn live_table_on_a_terminal_and_quiet_turns_it_off() {
    let state = TempDir::new();
    let runs = under_pty(
        &state.path,
        // The header at least twice: redrawn, not printed once.
        TABLE,
        2,
        &[
            &["start", "--port", "0", "127.0.0.2"],
            &["start", "--port", "0", "--quiet", "127.0.0.3"],
        ],
    );
    let (live, quiet) = (&runs[0], &runs[1]);
    assert!(
        live.output.matches(TABLE).count() >= 2,
        "no table redrawn on the terminal:\n{}",
        live.output
    );
    assert!(
        live.output.contains("\x1b[2K") && live.output.contains("127.0.0.2"),
        "the table is drawn in place and names the link:\n{:?}",
        live.output
    );
    assert!(
        !quiet.output.contains(TABLE) && !quiet.output.contains("\x1b["),
        "--quiet drew a table:\n{:?}",
        quiet.output
    );
    for (run, link) in [(live, "127.0.0.2"), (quiet, "127.0.0.3")] {
        assert_eq!(run.code, 0, "exit status after SIGINT:\n{}", run.output);
        assert!(
            run.output
                .contains(&format!("link lo {link}: up, 0 connections"))
                || run
                    .output
                    .contains(&format!("link {link}: up, 0 connections")),
            "no summary line for {link} after SIGINT:\n{}",
            run.output
        );
        assert!(
            run.output
                .contains("dispatch stopped: 0 connections, up 0 B, down 0 B"),
            "no 'dispatch stopped' line after SIGINT:\n{}",
            run.output
        );
    }
}

/// The proxy without `-d`, logging to `<state>/dispatch/dispatch-0.log`,
/// and accepting clients from 127.0.0.1 only (see [`flush_log`]).
fn file_logging(state: &Path, env: &[(&'static str, &str)], args: &[&str]) -> Proxy {
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("XDG_STATE_HOME", state.to_str().unwrap().to_string()));
    let args: Vec<&str> = ["--allow", "127.0.0.1/32"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    Proxy::launch(
        &Launch {
            debug: false,
            env,
            ..Launch::default()
        },
        &args,
    )
}

static PROBE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Makes the proxy write a warning, and waits until it is in the file:
/// a client from outside `--allow` (once a minute per address, so each
/// call comes from a new 127.0.x.y). (Every line is written at once;
/// this orders the test's reads after what came before.)
fn flush_log(proxy: &Proxy, path: &Path) {
    let n = PROBE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let ip = format!("127.0.{}.{}", 10 + n / 250, 1 + n % 250);
    if let Ok(mut s) = common::http::client_from(&ip, proxy.addr) {
        let _ = read_until_closed(&mut s, Duration::from_secs(30));
    }
    let needle = format!("refused a client from {ip}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(path).contains(&needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log file within 30 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn log_path(state: &Path) -> PathBuf {
    // (The tests listen on port 0: not the default port's file.)
    state.join("dispatch").join("dispatch-0.log")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One connection refused by the target (a failed connection, logged at
/// info level within the budget).
fn refused_connection(proxy: &Proxy, closed: &ClosedPort) {
    let (_s, reply) = socks5_connect(proxy.addr, **closed);
    assert_eq!(reply.rep, rep::CONNECTION_REFUSED, "{:02x?}", reply.raw);
}

/// Without `-d`: the path is printed at start, the file gets info and
/// above (start with the targets, failed connections, the exit summary),
/// not the debug line of each connection; `RUST_LOG=debug` adds them.
#[test]
fn log_file_gets_info_and_rust_log_overrides() {
    let echo = Server::echo("127.0.0.1:0");
    let closed = closed_port("127.0.0.1");
    for (env, debug) in [(vec![], false), (vec![("RUST_LOG", "debug")], true)] {
        let state = TempDir::new();
        let proxy = file_logging(&state.path, &env, &["127.0.0.2"]);
        let path = log_path(&state.path);
        let (mut s, _) = socks5_ok(proxy.addr, echo.addr);
        s.write_all(b"ping").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), b"ping");
        refused_connection(&proxy, &closed);
        let out = proxy.finish();
        assert!(
            out.stdout
                .contains(&format!("logging to {}\n", path.display())),
            "the log file's path is printed at start:\n{}",
            out.stdout
        );
        assert!(
            !out.stdout.contains(" INFO ") && !out.stdout.contains(" DEBUG "),
            "log lines on stdout without -d:\n{}",
            out.stdout
        );
        let log = read(&path);
        let has = |needle: &str| log.lines().any(|l| l.contains(needle));
        assert!(
            has(" INFO ") && has("listening on") && has("dispatching to 127.0.0.2"),
            "start with the targets:\n{log}"
        );
        assert!(
            has(&format!("-> {closed} via")) && has("refused"),
            "the failed connection:\n{log}"
        );
        assert!(has("dispatch stopped: 2 connections"), "the stop:\n{log}");
        // The echo connection ended well: a debug line only.
        let ok_line = log
            .lines()
            .any(|l| l.contains(&format!("-> {} via", echo.addr)) && l.contains(" DEBUG "));
        assert_eq!(
            ok_line,
            debug,
            "RUST_LOG={}: the debug line of a good connection in the file:\n{log}",
            if debug { "debug" } else { "(unset)" }
        );
        assert_eq!(has(" DEBUG "), debug, "debug lines:\n{log}");
    }
}

/// `RUST_LOG=warn` keeps info lines out of the file; warnings still go in.
#[test]
fn rust_log_warn_keeps_info_out_of_the_file() {
    let state = TempDir::new();
    let proxy = file_logging(&state.path, &[("RUST_LOG", "warn")], &["127.0.0.2"]);
    let path = log_path(&state.path);
    flush_log(&proxy, &path);
    proxy.finish();
    let log = read(&path);
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("refused a client")),
        "the warning:\n{log}"
    );
    assert!(
        !log.contains(" INFO "),
        "info lines with RUST_LOG=warn:\n{log}"
    );
}

/// At 10 MiB the file is renamed to dispatch.log.1, replacing the previous
/// one, and a new file starts. The log of earlier runs counts: a file left
/// just under the limit is rotated once this run's lines push it over.
#[test]
fn log_file_rotates_at_10_mib() {
    const LIMIT: usize = 10 * 1024 * 1024;
    let state = TempDir::new();
    let path = log_path(&state.path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let old = PathBuf::from(format!("{}.1", path.display()));
    std::fs::write(&old, "the previous rotation\n").unwrap();
    // An earlier run's log, 100 bytes short of the limit.
    let line = "2026-01-01T00:00:00.000Z INFO  earlier run\n";
    let mut earlier = line.repeat((LIMIT - 100) / line.len());
    earlier.push_str(&"x".repeat(LIMIT - 101 - earlier.len()));
    earlier.push('\n');
    std::fs::write(&path, &earlier).unwrap();
    let proxy = file_logging(&state.path, &[], &["127.0.0.2"]);
    proxy.finish();
    let rotated = read(&old);
    assert!(
        rotated.starts_with(&earlier),
        "dispatch.log.1 should be the earlier log and what this run wrote before \
         passing 10 MiB; it has {} bytes starting {:?}",
        rotated.len(),
        &rotated[..rotated.len().min(80)]
    );
    assert!(
        rotated.len() < LIMIT + 4096,
        "rotated soon after 10 MiB, not at {} bytes",
        rotated.len()
    );
    let now = read(&path);
    assert!(
        !now.is_empty() && now.len() < 64 * 1024 && now.contains("dispatch stopped"),
        "a fresh dispatch.log with this run's last lines ({} bytes):\n{}",
        now.len(),
        tail(&now, 10)
    );
}

/// Failed connections are logged at info level up to five every 10 s;
/// the next window starts with a count of the rest.
#[test]
fn failed_connections_are_logged_five_per_10_s_then_counted() {
    let state = TempDir::new();
    let closed = closed_port("127.0.0.1");
    let proxy = file_logging(&state.path, &[], &["127.0.0.2"]);
    let path = log_path(&state.path);
    let more = "more failed connections not shown";
    // A failure a second until one opens a new window: that one is logged
    // after the count of those left out.
    let mut made = 0;
    let start = Instant::now();
    loop {
        refused_connection(&proxy, &closed);
        made += 1;
        flush_log(&proxy, &path);
        if read(&path).contains(more) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {more:?} line after {made} failures in 120 s:\n{}",
            read(&path)
        );
        if made >= 8 {
            thread::sleep(Duration::from_millis(500));
        }
    }
    proxy.finish();
    let log = read(&path);
    let failure = format!("-> {closed} via");
    let lines: Vec<&str> = log.lines().collect();
    let at = lines.iter().position(|l| l.contains(more)).unwrap();
    let shown = lines[..at].iter().filter(|l| l.contains(&failure)).count();
    assert_eq!(shown, 5, "five failures logged in the first window:\n{log}");
    // All but the last one fell in the first window.
    let want = format!("... and {} {more}", made - 1 - 5);
    assert!(
        lines[at].contains(&want),
        "want {want:?}, got {:?}",
        lines[at]
    );
    assert!(
        lines[at + 1..].iter().any(|l| l.contains(&failure)),
        "the next window logs failures again:\n{log}"
    );
}

/// Without a terminal, each link's counters go to the log once a minute
/// (this test takes a little over a minute).
#[test]
fn link_counters_logged_once_a_minute() {
    let state = TempDir::new();
    let echo = Server::echo("127.0.0.1:0");
    let proxy = file_logging(&state.path, &[], &["127.0.0.2"]);
    let (mut s, _) = socks5_ok(proxy.addr, echo.addr);
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"ping");
    let path = log_path(&state.path);
    let want = "127.0.0.2: up, 1 connection, 0 failures, up 4 B, down 4 B";
    let start = Instant::now();
    loop {
        flush_log(&proxy, &path);
        if read(&path).lines().any(|l| l.contains(want)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "no line with {want:?} in the log while running, {:?} after start:\n{}",
            start.elapsed(),
            read(&path)
        );
        thread::sleep(Duration::from_secs(1));
    }
    proxy.finish();
}

/// Every line reaches the file at once, info lines too, so `tail -F`
/// follows a running proxy; nothing waits for a warning or the exit.
#[test]
fn info_lines_reach_the_file_while_running() {
    let state = TempDir::new();
    let proxy = file_logging(&state.path, &[], &["127.0.0.2"]);
    let path = log_path(&state.path);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&path).contains(" INFO ") {
        assert!(
            Instant::now() < deadline,
            "no info line in {} 5 s after start:\n{}",
            path.display(),
            read(&path)
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!read(&path).contains(" WARN "), "{}", read(&path));
    proxy.finish();
}

/// `--log-file` puts the log where it says; the default file is not made.
#[test]
fn log_file_option_puts_the_log_there() {
    let state = TempDir::new();
    let file = state.path.join("elsewhere").join("mine.log");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let proxy = file_logging(
        &state.path,
        &[],
        &["--log-file", file.to_str().unwrap(), "127.0.0.2"],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&file).contains("listening on") {
        assert!(Instant::now() < deadline, "nothing in {}", file.display());
        thread::sleep(Duration::from_millis(20));
    }
    proxy.finish();
    assert!(
        !log_path(&state.path).exists(),
        "the default file was made too"
    );
}
