//! The service files in contrib/ describe a dispatch that starts: the
//! systemd unit passes `systemd-analyze verify`, the launchd plist parses,
//! and the command each runs starts this build (on a free port).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel)
}

/// Starts this build with `args` (a service file's command after the
/// program), the port made 0 so it cannot clash, and checks it listens.
fn starts_with(args: &[String]) {
    assert_eq!(args.first().map(String::as_str), Some("start"), "{args:?}");
    let mut args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    // Proxy::start gives --ip and --port itself: drop the file's.
    for opt in ["--ip", "--port"] {
        if let Some(i) = args.iter().position(|a| *a == opt) {
            args.drain(i..i + 2);
        }
    }
    // No link named: every usable interface, which a test machine may not
    // have; loopback stands in.
    if !args.iter().any(|a| !a.starts_with('-')) {
        args.push("127.0.0.1");
    }
    Proxy::start(&args).finish();
}

#[test]
fn systemd_unit_verifies_and_its_command_starts() {
    let unit = std::fs::read_to_string(contrib("systemd/dispatch.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/local/bin/dispatch");
    starts_with(&words[1..]);

    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        return not_run(
            "systemd_unit_verifies_and_its_command_starts",
            "needs systemd-analyze (Debian: systemd)",
        );
    };
    assert!(out.status.success());
    // verify checks that the program exists: point it at this build.
    let dir = TempDir::new();
    let copy = dir.path.join("dispatch.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/dispatch", env!("CARGO_BIN_EXE_dispatch")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn launchd_plist_parses_and_its_command_starts() {
    let plist = contrib("launchd/io.github.dispatch-proxy.plist");
    let script = "import plistlib, sys, json\n\
                  p = plistlib.load(open(sys.argv[1], 'rb'))\n\
                  print(json.dumps(p['ProgramArguments']))";
    let Ok(out) = Command::new("python3")
        .args(["-c", script])
        .arg(&plist)
        .output()
    else {
        return not_run(
            "launchd_plist_parses_and_its_command_starts",
            "needs python3 (plistlib)",
        );
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ["/usr/local/bin/dispatch", "start", ...]: a flat list of strings.
    let words: Vec<String> = stdout
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(", ")
        .map(|w| w.trim_matches('"').to_string())
        .collect();
    assert_eq!(words[0], "/usr/local/bin/dispatch");
    starts_with(&words[1..]);
}
