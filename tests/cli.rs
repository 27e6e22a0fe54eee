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
        stderr.contains("warning: no-such-iface0 does not exist (interfaces now are "),
        "the warning should name the argument: {stderr}"
    );
    assert!(
        words(&stderr).contains(&"lo"),
        "the warning should list the interfaces (lo): {stderr}"
    );
    proxy.finish();
}

/// README (Platform notes): a loopback interface named is refused; and
/// dotted digits that are no address are a typo, not an interface name.
#[test]
fn loopback_interface_and_dotted_typos_are_refused() {
    let out = refused(&["start", "--port", "0", "lo"]);
    assert!(
        out.stderr.contains("lo is a loopback interface"),
        "{}",
        out.stderr
    );
    let out = refused(&["start", "--port", "0", "999.1.1.1"]);
    assert!(
        out.stderr.contains("999.1.1.1 is not an IP address"),
        "{}",
        out.stderr
    );
}

/// A proxy link that is this dispatch itself would loop each request back
/// to it: refused at start.
#[test]
fn a_proxy_link_to_itself_is_refused() {
    let port = free_port().to_string();
    let link = format!("socks5h://127.0.0.1:{port}");
    let out = refused(&["start", "--port", &port, &link]);
    assert!(
        out.stderr.contains("would loop back to it"),
        "{}",
        out.stderr
    );
}

/// --metrics on the proxy's own port is said to be that, not "another
/// program".
#[test]
fn metrics_on_the_proxy_port_is_refused_saying_so() {
    let port = free_port().to_string();
    let out = refused(&["start", "--port", &port, "--metrics", &port, "127.0.0.2"]);
    assert!(
        out.stderr.contains("the proxy's own --port"),
        "{}",
        out.stderr
    );
}

/// A proxy link's `@IFACE` that names no interface is said at start, not
/// found at the first failed connection.
#[test]
fn a_proxy_link_through_no_such_interface_is_warned_about() {
    let proxy = Proxy::start(&["socks5://127.0.0.1:9@nosuch0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.stderr().contains("there is no interface nosuch0") {
        assert!(Instant::now() < deadline, "no warning: {}", proxy.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.finish();
}

/// An --exclude that names no interface is said at start, not ignored.
#[test]
fn exclude_of_no_such_interface_is_warned_about() {
    let proxy = Proxy::start(&["--exclude", "eht0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy
        .stderr()
        .contains("--exclude eht0: there is no such interface")
    {
        assert!(Instant::now() < deadline, "no warning: {}", proxy.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
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

    // With nothing open, it says so (not "0 ... have up to 30 s"), and
    // does not wait for the drain time.
    let proxy = Proxy::start(&["--drain-timeout", "30", "127.0.0.1"]);
    let asked = std::time::Instant::now();
    sigterm(proxy.pid);
    wait_for(
        &proxy,
        "stopping: no new connections, and none carrying a request",
    );
    let out = proxy.wait_exit();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(20),
        "{:?} to stop",
        asked.elapsed()
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

// ---------------------------------------------------------------------------
// Completions and the man page, checked with the real shells and man tools.
// ---------------------------------------------------------------------------

/// Runs a system tool; `None` (with a NOT RUN line naming the Debian
/// package) when it is not installed.
fn tool(test: &str, package: &str, program: &str, args: &[&str]) -> Option<std::process::Output> {
    tool_with(
        test,
        package,
        std::process::Command::new(program).args(args),
    )
}

fn tool_with(
    test: &str,
    package: &str,
    cmd: &mut std::process::Command,
) -> Option<std::process::Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd
        .env("LC_ALL", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            not_run(
                test,
                &format!("needs {program} (Debian package {package}), not installed"),
            );
            None
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// `dispatch ARGS` succeeds; its stdout.
fn output_of(args: &[&str]) -> String {
    let run = run_bin(args, QUICK);
    assert_eq!(run.code, Some(0), "dispatch {args:?}: {run:?}");
    assert!(run.stderr.is_empty(), "dispatch {args:?}: {}", run.stderr);
    run.stdout
}

/// `dispatch completions SHELL` written to a file, for a shell to source.
fn script(dir: &TempDir, shell: &str) -> String {
    let path = dir.path.join(format!("dispatch.{shell}"));
    std::fs::write(&path, output_of(&["completions", shell])).unwrap();
    path.to_str().unwrap().to_string()
}

/// The subcommands `dispatch --help` lists (under "Commands:").
fn subcommands() -> Vec<String> {
    let help = output_of(&["--help"]);
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(list.len() >= 4, "no commands in: {help}");
    list
}

/// The long options `dispatch ARGS --help` names.
fn long_options(args: &[&str]) -> Vec<String> {
    let mut argv = args.to_vec();
    argv.push("--help");
    let help = output_of(&argv);
    let mut opts: Vec<String> = words(&help)
        .into_iter()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(String::from)
        .collect();
    opts.sort();
    opts.dedup();
    opts
}

#[test]
fn completions_and_man_are_in_help() {
    let list = subcommands();
    for sub in ["list", "start", "completions", "man"] {
        assert!(list.iter().any(|s| s == sub), "{sub} not in {list:?}");
    }
    let help = output_of(&["completions", "--help"]);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(words(&help).contains(&shell), "{shell} not in: {help}");
    }
}

#[test]
fn completions_for_an_unknown_shell_are_refused() {
    let run = refused(&["completions", "tcsh"]);
    assert!(run.stderr.contains("tcsh"), "{}", run.stderr);
}

/// What bash's completion function for `dispatch` offers for the words
/// typed so far (the last one being completed), as a real TAB would: the
/// function `complete -p dispatch` names, called with COMP_WORDS,
/// COMP_CWORD, COMP_LINE and COMP_POINT set, its COMPREPLY read back.
fn bash_completes(test: &str, script: &str, typed: &[&str]) -> Option<Vec<String>> {
    let words = typed.join(" ");
    let line = format!(
        r#"source "$1" || exit 3
spec=$(complete -p dispatch) || exit 4
fn=${{spec##*-F }}; fn=${{fn%% *}}
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="{words}"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
"$fn" dispatch "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let out = tool(
        test,
        "bash",
        "bash",
        &["--norc", "--noprofile", "-c", &line, "bash", script],
    )?;
    assert!(
        out.status.success(),
        "bash: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

#[test]
fn bash_completes_subcommands_and_options() {
    let test = "bash_completes_subcommands_and_options";
    let dir = TempDir::new();
    let script = script(&dir, "bash");
    let Some(got) = bash_completes(test, &script, &["dispatch", "st"]) else {
        return;
    };
    assert!(
        got.contains(&"start".to_string()),
        "dispatch st<TAB>: {got:?}"
    );
    assert!(got.iter().all(|w| w.starts_with("st")), "{got:?}");
    let got = bash_completes(test, &script, &["dispatch", "start", "--por"]).unwrap();
    assert_eq!(got, ["--port"], "dispatch start --por<TAB>");
    let got = bash_completes(test, &script, &["dispatch", "completions", "p"]).unwrap();
    assert_eq!(got, ["powershell"], "dispatch completions p<TAB>");
}

/// fish's own completion query, `complete -C`, on the sourced script.
#[test]
fn fish_completes_subcommands_and_options() {
    let test = "fish_completes_subcommands_and_options";
    let dir = TempDir::new();
    let script = script(&dir, "fish");
    let query = |typed: &str| {
        let cmd = format!("source '{script}'; and complete -C '{typed}'");
        let out = tool(test, "fish", "fish", &["--no-config", "-c", &cmd])?;
        assert!(
            out.status.success(),
            "fish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One candidate a line, then a tab and its description.
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split('\t').next().unwrap_or("").to_string())
                .collect::<Vec<_>>(),
        )
    };
    let Some(got) = query("dispatch st") else {
        return;
    };
    assert!(
        got.contains(&"start".to_string()),
        "dispatch st<TAB>: {got:?}"
    );
    let got = query("dispatch start --por").unwrap();
    assert_eq!(got, ["--port"], "dispatch start --por<TAB>");
}

/// zsh: the script parses (`zsh -n`), and sourced after `compinit` it
/// defines the `_dispatch` completion function and binds it to `dispatch`.
#[test]
fn zsh_script_parses_and_defines_the_completion() {
    let test = "zsh_script_parses_and_defines_the_completion";
    let dir = TempDir::new();
    let script = script(&dir, "zsh");
    let Some(out) = tool(test, "zsh", "zsh", &["-n", &script]) else {
        return;
    };
    assert!(
        out.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = format!(
        "autoload -U compinit && compinit -u -D && source '{script}' && \
         whence -w _dispatch && print -r -- $_comps[dispatch]"
    );
    let out = tool(test, "zsh", "zsh", &["-f", "-c", &cmd]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zsh: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["_dispatch: function", "_dispatch"]
    );
}

#[test]
fn powershell_script_registers_a_completer_for_dispatch() {
    let script = output_of(&["completions", "powershell"]);
    assert!(
        script.contains("Register-ArgumentCompleter -Native -CommandName 'dispatch'"),
        "{script}"
    );
    assert!(script.contains("'--port'"), "{script}");
}

/// The man page as man(1) renders it: plain text, no hyphenation or
/// justification, lines long enough that no option is broken.
fn rendered_man(test: &str, page: &str) -> Option<String> {
    let out = tool_with(
        test,
        "man-db",
        std::process::Command::new("man")
            .args(["--nh", "--nj", "-l", page])
            .env("MANWIDTH", "250"),
    )?;
    assert!(
        out.status.success(),
        "man -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_page_renders_without_warnings_and_documents_every_option() {
    let test = "man_page_renders_without_warnings_and_documents_every_option";
    let dir = TempDir::new();
    let page = dir.path.join("dispatch.1");
    std::fs::write(&page, output_of(&["man"])).unwrap();
    let page = page.to_str().unwrap();

    // groff at its strictest: every warning on, output discarded.
    let Some(out) = tool(test, "groff-base", "groff", &["-man", "-ww", "-z", page]) else {
        return;
    };
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "groff: {warnings}"
    );
    // mandoc's linter: no error (its style notes and warnings are about
    // clap_mangen's layout, as `.br` beside `.sp`, and are not failures).
    if let Some(out) = tool(
        test,
        "mandoc",
        "mandoc",
        &["-T", "lint", "-W", "error", page],
    ) {
        assert!(
            out.status.success(),
            "mandoc: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let Some(text) = rendered_man(test, page) else {
        return;
    };
    assert!(
        text.contains("NAME") && text.contains("dispatch - "),
        "{text}"
    );
    for opt in long_options(&[]) {
        assert!(text.contains(&opt), "{opt} missing from the man page");
    }
    // Each subcommand has its heading, and under it each of its options.
    // `help` takes no option but --help's own; its section is checked by
    // the heading alone.
    for sub in subcommands() {
        let heading = format!("\n   dispatch {sub}\n");
        let at = text
            .find(&heading)
            .unwrap_or_else(|| panic!("no heading for {sub} in:\n{text}"));
        let part = &text[at + heading.len()..];
        let part = &part[..part.find("\n   dispatch ").unwrap_or(part.len())];
        if sub == "help" {
            continue;
        }
        for opt in long_options(&[&sub]) {
            assert!(
                part.contains(&opt),
                "{opt} missing under dispatch {sub}:\n{part}"
            );
        }
    }
}
