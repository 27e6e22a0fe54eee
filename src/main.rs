use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Parser;
use dispatch::auth::Access;
use dispatch::balance::Strategy;
use dispatch::cli::{Cli, Command, StartArgs};
use dispatch::config;
use dispatch::links::LinkSpec;
use dispatch::links::Links;
use dispatch::logging::{self, Destination};
use dispatch::metrics;
use dispatch::reactor::{Binding, Reactor, Summary};
use dispatch::report;
use dispatch::{cli_docs, iface, learned, sys};
use std::path::{Path, PathBuf};

/// Why `dispatch` stopped early; printed as `error: <message>`.
enum Failure {
    /// The command line asks for something this machine cannot do (exit 2).
    Usage(String),
    /// Something went wrong while running (exit 1).
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    log::logger().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::List => {
            say(&iface::format_table(&interfaces()?));
            Ok(())
        }
        Command::Start(args) => start(&args, cli.debug),
        Command::Status(args) => {
            let status = metrics::status::fetch(args.metrics)
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            say(&metrics::status::table(&status));
            Ok(())
        }
        Command::Completions { shell } => {
            say(&String::from_utf8_lossy(&cli_docs::completions(shell)));
            Ok(())
        }
        Command::Man => {
            say(&String::from_utf8_lossy(&cli_docs::man_page()));
            Ok(())
        }
    }
}

fn interfaces() -> Result<Vec<iface::Interface>, Failure> {
    iface::discover()
        .map_err(|e| Failure::Runtime(format!("cannot list the network interfaces: {e}")))
}

fn start(args: &StartArgs, debug: bool) -> Result<(), Failure> {
    let mut config = config::build(args, &interfaces()?, config::test_bind)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let destination = logging::init(debug, args.log_file.clone(), args.port);
    LOG_ON_STDERR.store(destination == Destination::Stderr, Ordering::Relaxed);
    let mut state = StateFile::open(config.state_file.clone());
    config.learned = state.earlier.clone();
    if config.balance == Strategy::Weights && args.state_file.is_some() {
        let notice = "--state-file is not used when balancing by weights (nothing learned \
                      is kept then: it would be learned under the weights' split)";
        warn(notice);
    } else if config.balance == Strategy::Learn
        && config.state_file.is_none()
        && !args.no_state_file
    {
        // No --state-file, and no home directory for the default one.
        let notice = "no place for the state file (no home directory); learned capacities \
                      will not be kept across restarts (give --state-file PATH)";
        warn(notice);
    }
    match sys::raise_nofile_limit() {
        Ok(Some(limit)) => log::info!("open file limit: {limit}"),
        Ok(None) => {}
        Err(e) => log::warn!("cannot raise the open file limit: {e}"),
    }

    let listen = config.listen;
    let targets = config.targets.clone();
    let proxies = config.proxies.clone();
    let waiting = config.waiting.clone();
    let metrics_addr = config.metrics;
    let weighted = config.balance == Strategy::Weights;
    let mut reactor = Reactor::new(config).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Failure::Runtime(format!(
            "{listen} is already in use; stop the other program or pick another --port"
        )),
        // As a bad ADDRESS is: the command line asks for what cannot be.
        io::ErrorKind::AddrNotAvailable => Failure::Usage(format!(
            "--ip {}: not an address of this machine (`dispatch list` shows them; \
             0.0.0.0 or :: listens on all)",
            listen.ip()
        )),
        _ => Failure::Runtime(format!("cannot listen on {listen}: {e}")),
    })?;
    let metrics = match metrics_addr {
        Some(addr) => Some(serve_metrics(&mut reactor, addr)?),
        None => None,
    };
    // Before the banner: whoever reads it may signal at once.
    if let Err(e) = catch_signals(&reactor) {
        log::warn!("cannot catch signals ({e}); stopping will not print a summary");
    }
    let local = reactor.local_addr();
    let balancing = if weighted && !args.addresses.iter().any(|a| a.weighted) {
        // `--balance weights` with no /WEIGHT written: all weigh the same.
        "balancing by weights (none written: each link in turn)".to_string()
    } else {
        report::balancing_line(reactor.links())
    };
    say(&banner(
        local,
        &targets,
        args.addresses.is_empty(),
        Balancing {
            weighted,
            line: &balancing,
        },
        &destination,
    ));
    // Proxies are shown by their URL, whose Display redacts the password.
    for p in &proxies {
        say(&format!(
            "  {}  upstream proxy  weight {}\n",
            p.url, p.weight
        ));
    }
    if let Some(addr) = metrics {
        say(&format!("metrics on http://{addr}/metrics and /status\n"));
        log::info!("serving metrics on http://{addr}/metrics and /status");
        if !addr.ip().is_loopback() {
            let notice = format!(
                "metrics are served beyond loopback, on {addr}, to anyone who reaches it \
                 (they show the links' addresses and traffic)"
            );
            warn(&notice);
        }
    }
    let list: Vec<String> = targets
        .iter()
        .map(|t| match shows_weight(weighted, t) {
            true => format!("{} (weight {})", t.ip, t.weight),
            false => t.ip.to_string(),
        })
        .chain(
            proxies
                .iter()
                .map(|p| format!("{} (weight {})", p.url, p.weight)),
        )
        .collect();
    log::info!(
        "dispatch {} listening on {local}, dispatching to {}",
        env!("CARGO_PKG_VERSION"),
        list.join(", ")
    );

    if *reactor.access() == Access::LocalNetworks {
        let notice = "listening beyond loopback without --auth or --allow: accepting only \
                      loopback, private and link-local clients; give --allow (or --auth) to choose";
        log::warn!("{notice}");
        say(&format!("{notice}\n"));
    }
    if let Some(notice) = binding_notice(reactor.binding()) {
        warn(&notice);
    }
    let proxy_ifaces: Vec<(String, String)> = proxies
        .iter()
        .filter_map(|p| Some((p.url.to_string(), p.url.iface.clone()?)))
        .collect();
    let notices = waiting_notice(&targets, &waiting, args.addresses.is_empty(), &args.exclude);
    for notice in notices.into_iter().chain(proxy_iface_notice(&proxy_ifaces)) {
        warn(&notice);
    }

    log::info!("{balancing}");

    let live = !args.quiet && !debug && io::stdout().is_terminal();
    let mut reporter = Reporter::new(live);
    let summary = reactor
        .run_reporting(|links| {
            reporter.tick(links);
            if reporter.ticks % StateFile::SAVE_EVERY_TICKS == 0 {
                state.save(links);
            }
        })
        .map_err(|e| Failure::Runtime(format!("proxy stopped: {e}")))?;
    state.save(reactor.links());
    let mut lines = report::summary_lines(reactor.links());
    lines.push(summary_line(&summary));
    for line in &lines {
        log::info!("{line}");
    }
    // With -d the log is stdout already.
    if !debug {
        say(&format!("{}\n", lines.join("\n")));
    }
    Ok(())
}

/// The log goes to stderr (no place for a log file): warnings are there.
static LOG_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// A warning said at start: in the log, and on the terminal too, where
/// whoever started dispatch sees it (once: not when the log is stderr).
fn warn(notice: &str) {
    log::warn!("{notice}");
    if !LOG_ON_STDERR.load(Ordering::Relaxed) || !log::log_enabled!(log::Level::Warn) {
        eprintln!("warning: {notice}");
    }
}

/// Binds `--metrics` and has the reactor serve it; an address that cannot
/// be listened on is a usage error (exit 2), as a bad `--ip` is.
fn serve_metrics(reactor: &mut Reactor, addr: SocketAddr) -> Result<SocketAddr, Failure> {
    let listener = metrics::serve::bind(addr).map_err(|e| {
        Failure::Usage(match e.kind() {
            io::ErrorKind::AddrInUse if addr.port() == reactor.local_addr().port() => format!(
                "--metrics {addr}: that is the proxy's own --port; give the metrics another port"
            ),
            io::ErrorKind::AddrInUse => format!(
                "--metrics {addr}: already in use; stop the other program or pick another port"
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "--metrics {addr}: {} is not an address of this machine (`dispatch list` \
                 shows them; 0.0.0.0 or :: listens on all)",
                addr.ip()
            ),
            _ => format!("--metrics {addr}: cannot listen there: {e}"),
        })
    })?;
    reactor
        .serve_metrics(listener)
        .map_err(|e| Failure::Runtime(format!("cannot serve metrics on {addr}: {e}")))
}

/// SIGTERM stops the reactor gracefully (a second signal at once), SIGINT
/// at once; SIGHUP has it re-read the auth file.
#[cfg(unix)]
fn catch_signals(reactor: &Reactor) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::sync::atomic::Ordering;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let shutdown = reactor.shutdown_handle();
    let reload = reactor.reload_flag();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        reload.store(true, Ordering::SeqCst);
                        shutdown.wake();
                    }
                    // A service manager's stop: let transfers finish.
                    SIGTERM => shutdown.drain(),
                    // Ctrl-C: now.
                    _ => shutdown.trigger(),
                }
            }
        })?;
    Ok(())
}

/// Ctrl-C drains, as SIGTERM does on Unix: it is how service wrappers
/// (WinSW, NSSM) stop a console program. A second Ctrl-C stops at once.
#[cfg(not(unix))]
fn catch_signals(reactor: &Reactor) -> io::Result<()> {
    let shutdown = reactor.shutdown_handle();
    ctrlc::set_handler(move || shutdown.drain()).map_err(io::Error::other)
}

/// What is said once at start when sockets are bound to addresses only.
fn binding_notice(binding: &Binding) -> Option<String> {
    match binding {
        Binding::Device | Binding::SourceOnly => None,
        Binding::SourceOnlyRefused(why) => Some(format!(
            "cannot bind sockets to interfaces ({why}); binding source addresses only, so traffic \
             follows the routing table. To fix: `sudo setcap cap_net_raw+ep $(command -v dispatch)`, \
             or add policy routing (see README, \"Linux routing\")"
        )),
    }
}

/// The learned capacities across restarts (see [`dispatch::learned`]).
struct StateFile {
    path: Option<PathBuf>,
    /// What the file held at start.
    earlier: Vec<learned::Entry>,
    /// A failed write was said (the next ones are not).
    warned: bool,
    /// The text last written: the same is not written again.
    written: Option<String>,
}

impl StateFile {
    const SAVE_EVERY_TICKS: u32 = 60;

    /// Reads the file; a missing or bad one is said in one line and ignored.
    /// One that is not a state file (or not a regular file) is left alone:
    /// said on the terminal too, and nothing is kept. One that cannot be
    /// written is said on the terminal at once.
    fn open(given: Option<PathBuf>) -> StateFile {
        let mut path = given.as_deref().map(learned::resolve);
        let earlier = match &path {
            None => Vec::new(),
            Some(p) => match learned::load(p) {
                Ok(entries) => entries,
                Err(learned::LoadError::Read(e)) if e.kind() == io::ErrorKind::NotFound => {
                    log::info!("no learned capacities yet ({} will keep them)", p.display());
                    Vec::new()
                }
                Err(e) if e.not_ours() => {
                    let shown = given.as_deref().unwrap_or(p);
                    let notice = format!(
                        "state file {}: {e}; leaving it alone, so learned capacities \
                         will not be kept (name another with --state-file, or give \
                         --no-state-file)",
                        shown.display()
                    );
                    warn(&notice);
                    path = None;
                    Vec::new()
                }
                Err(e) => {
                    log::warn!(
                        "ignoring learned capacities in {}: {e}; they will be learned again",
                        p.display()
                    );
                    Vec::new()
                }
            },
        };
        // Read-only: the user froze it (said in the log, it is asked for).
        if path.as_deref().is_some_and(learned::is_frozen) {
            let shown = given.as_deref().unwrap_or(Path::new(""));
            log::info!(
                "state file {} is read-only: its capacities are used, and not rewritten",
                shown.display()
            );
            path = None;
        }
        // Written back at once (what it held, or its header alone), so that
        // a path that cannot be written is said now, not at the first save
        // a minute or a download later.
        let mut warned = false;
        let mut written = None;
        if let Some(p) = &path {
            match learned::save(p, &earlier) {
                Ok(()) => written = Some(learned::format(&earlier)),
                Err(e) => {
                    let shown = given.as_deref().unwrap_or(p);
                    let notice = format!(
                        "cannot write the state file {}: {e}; learned capacities will not be \
                     kept (name another with --state-file, or give --no-state-file)",
                        shown.display()
                    );
                    warn(&notice);
                    warned = true;
                }
            }
        }
        StateFile {
            path,
            earlier,
            warned,
            written,
        }
    }

    /// Writes what is learned now (and what was of links absent now).
    fn save(&mut self, links: &Links) {
        let Some(path) = &self.path else {
            return;
        };
        // Made read-only since start: frozen now.
        if learned::is_frozen(path) {
            log::info!(
                "state file {} is read-only now: not rewritten",
                path.display()
            );
            self.path = None;
            return;
        }
        let now = links.learned_entries();
        if now.is_empty() {
            return;
        }
        let entries = learned::merge(now, &self.earlier);
        let text = learned::format(&entries);
        if self.written.as_ref() == Some(&text) {
            return;
        }
        match learned::save(path, &entries) {
            Ok(()) => {
                self.warned = false;
                self.written = Some(text);
            }
            Err(e) if !std::mem::replace(&mut self.warned, true) => {
                log::warn!("cannot keep learned capacities in {}: {e}", path.display());
            }
            Err(_) => {}
        }
    }
}

/// Shows the links as they go: a table redrawn in place each second on a
/// terminal, else their summary lines in the log once a minute.
struct Reporter {
    live: bool,
    ticks: u32,
    /// Rates are averaged over this many seconds.
    window: report::RateWindow,
    drawn_lines: usize,
}

impl Reporter {
    const LOG_EVERY_TICKS: u32 = 60;
    /// Bursty clients (a download manager's chunks) make per-second rates
    /// jump between 0 and a burst; a few seconds read steadily.
    const RATE_SECONDS: usize = 4;

    fn new(live: bool) -> Reporter {
        Reporter {
            live,
            ticks: 0,
            window: report::RateWindow::new(Self::RATE_SECONDS),
            drawn_lines: 0,
        }
    }

    fn tick(&mut self, links: &Links) {
        self.ticks += 1;
        if self.live {
            let (before, over) = self.window.push(Instant::now(), report::stats(links));
            let table = report::table(links, &before, over);
            // Move up over the previous table and overwrite it.
            let mut out = String::new();
            if self.drawn_lines > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn_lines);
            }
            for line in table.lines() {
                let _ = writeln!(out, "\x1b[2K{line}");
            }
            self.drawn_lines = table.lines().count();
            say(&out);
        } else if self.ticks % Self::LOG_EVERY_TICKS == 0 {
            // One line per link a minute, as the log's heartbeat.
            for line in report::summary_lines(links) {
                log::info!("{line}");
            }
        }
    }
}

/// How the banner shows the balancing: each link's weight when weights
/// are used (else only those written), and the line saying from what.
struct Balancing<'a> {
    weighted: bool,
    line: &'a str,
}

/// Whether a target's weight is shown: always when weights place, and
/// when learning only one written (it breaks ties).
fn shows_weight(weighted: bool, target: &LinkSpec) -> bool {
    weighted || target.weight.get() != 1
}

/// What `start` prints once listening; tests read the first line.
fn banner(
    local: SocketAddr,
    targets: &[LinkSpec],
    every_iface: bool,
    balancing: Balancing<'_>,
    log: &Destination,
) -> String {
    let mut out = format!("dispatch listening on {local}\n");
    let width = targets
        .iter()
        .map(|t| t.ip.to_string().len())
        .max()
        .unwrap_or(0);
    for t in targets {
        let ip = t.ip.to_string();
        let family = iface::family(t.ip);
        let _ = write!(out, "  {ip:<width$}  {family}");
        if shows_weight(balancing.weighted, t) {
            let _ = write!(out, "  weight {}", t.weight);
        }
        if let Some(name) = &t.iface {
            let _ = write!(out, "  {name}");
        }
        out.push('\n');
    }
    if every_iface {
        out.push_str(
            "dispatching over the uplinks, following them as they come and go (no address given)\n",
        );
    }
    match log {
        // The log, on stdout, says the balancing line itself.
        Destination::Stdout => {}
        Destination::File(path) => {
            let _ = writeln!(out, "{}\nlogging to {}", balancing.line, path.display());
        }
        Destination::Stderr => {
            let _ = writeln!(out, "{}\nlogging to stderr", balancing.line);
        }
    }
    out
}

/// Said at start when links are still to come: interfaces given by name
/// that do not exist (perhaps a typo) or have no usable address yet, no
/// uplink at all in default mode, or an `--exclude` naming no interface.
fn waiting_notice(
    targets: &[LinkSpec],
    waiting: &[String],
    every_iface: bool,
    exclude: &[String],
) -> Vec<String> {
    let ifaces = dispatch::iface::discover().unwrap_or_default();
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    let present = names.join(", ");
    let mut notices = Vec::new();
    for name in exclude.iter().filter(|n| !names.contains(&n.as_str())) {
        notices.push(format!(
            "--exclude {name}: there is no such interface (interfaces now are {present})"
        ));
    }
    if every_iface && targets.is_empty() {
        let excluded = if exclude.is_empty() {
            String::new()
        } else {
            format!(" but the excluded {}", exclude.join(", "))
        };
        notices.push(format!(
            "no interface{excluded} has a default route yet (interfaces: {present}); \
             dispatching starts as soon as one has (see `dispatch list`)"
        ));
    }
    let (absent, unready): (Vec<&String>, Vec<&String>) =
        waiting.iter().partition(|n| !names.contains(&n.as_str()));
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if !absent.is_empty() {
        notices.push(format!(
            "{} {} not exist (interfaces now are {present}); used as soon as it appears",
            join(&absent),
            if absent.len() == 1 { "does" } else { "do" },
        ));
    }
    if !unready.is_empty() {
        notices.push(format!(
            "{} {} no usable address yet (see `dispatch list`); used as soon as it has one",
            join(&unready),
            if unready.len() == 1 { "has" } else { "have" },
        ));
    }
    notices
}

/// Said at start for a proxy link whose `@IFACE` names no interface (a
/// typo shows at once, not at the first failed connection): `(link shown
/// redacted, interface)`.
fn proxy_iface_notice(links: &[(String, String)]) -> Vec<String> {
    if links.is_empty() {
        return Vec::new();
    }
    let ifaces = dispatch::iface::discover().unwrap_or_default();
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    links
        .iter()
        .filter(|(_, iface)| !names.contains(&iface.as_str()))
        .map(|(link, iface)| {
            format!(
                "{link}: there is no interface {iface} (interfaces now are {}); \
                 connections through this link fail until it appears",
                names.join(", ")
            )
        })
        .collect()
}

fn summary_line(s: &Summary) -> String {
    let mut line = format!(
        "dispatch stopped: {}, up {} B, down {} B",
        report::count(s.connections, "connection"),
        s.bytes_up,
        s.bytes_down
    );
    if s.cut > 0 {
        let _ = write!(line, ", {} cut", s.cut);
    }
    line
}

/// Prints and flushes; a closed stdout (a reader that went away) is not an error.
fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn target(ip: &str, weight: u32, iface: Option<&str>) -> LinkSpec {
        LinkSpec {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::new(weight).unwrap(),
            iface: iface.map(String::from),
            follow: false,
        }
    }

    #[test]
    fn banner_lists_targets_and_log_file() {
        let text = banner(
            "127.0.0.1:43567".parse().unwrap(),
            &[
                target("192.168.1.5", 3, Some("eth0")),
                target("2001:db8::5", 1, None),
            ],
            true,
            Balancing {
                weighted: true,
                line: "balancing by the weights given",
            },
            &Destination::File(PathBuf::from("/s/dispatch/dispatch.log")),
        );
        assert_eq!(
            text,
            "dispatch listening on 127.0.0.1:43567\n\
             \x20 192.168.1.5  IPv4  weight 3  eth0\n\
             \x20 2001:db8::5  IPv6  weight 1\n\
             dispatching over the uplinks, following them as they come and go (no address given)\n\
             balancing by the weights given\n\
             logging to /s/dispatch/dispatch.log\n"
        );
    }

    /// Learning, weights of 1 would be a lie: links are listed without,
    /// but a weight written (`--balance learn 10.1.0.2/2`) breaks ties.
    #[test]
    fn banner_when_learning_shows_only_weights_written() {
        let text = banner(
            "127.0.0.1:1080".parse().unwrap(),
            &[
                target("10.0.0.2", 1, Some("eth0")),
                target("10.1.0.2", 2, None),
            ],
            false,
            Balancing {
                weighted: false,
                line: "balancing by learned capacity (nothing learned yet)",
            },
            &Destination::Stderr,
        );
        assert_eq!(
            text,
            "dispatch listening on 127.0.0.1:1080\n\
             \x20 10.0.0.2  IPv4  eth0\n\
             \x20 10.1.0.2  IPv4  weight 2\n\
             balancing by learned capacity (nothing learned yet)\n\
             logging to stderr\n"
        );
    }

    #[test]
    fn banner_with_debug_logging() {
        let text = banner(
            "[::1]:1080".parse().unwrap(),
            &[target("::1", 1, Some("lo"))],
            false,
            Balancing {
                weighted: true,
                line: "balancing by the weights given",
            },
            &Destination::Stdout,
        );
        assert_eq!(
            text,
            "dispatch listening on [::1]:1080\n  ::1  IPv6  weight 1  lo\n"
        );
    }

    #[test]
    fn refused_device_binding_is_said_once_with_the_fix() {
        assert_eq!(binding_notice(&Binding::Device), None);
        assert_eq!(binding_notice(&Binding::SourceOnly), None);
        let notice = binding_notice(&Binding::SourceOnlyRefused(
            "Operation not permitted (os error 1)".into(),
        ))
        .unwrap();
        assert!(notice.contains("Operation not permitted"), "{notice}");
        assert!(notice.contains("setcap cap_net_raw+ep"), "{notice}");
        assert!(notice.contains("policy routing"), "{notice}");
    }

    #[test]
    fn summary() {
        let mut s = Summary {
            connections: 3,
            bytes_up: 10,
            bytes_down: 2048,
            cut: 0,
        };
        assert_eq!(
            summary_line(&s),
            "dispatch stopped: 3 connections, up 10 B, down 2048 B"
        );
        s.cut = 1;
        assert_eq!(
            summary_line(&s),
            "dispatch stopped: 3 connections, up 10 B, down 2048 B, 1 cut"
        );
    }
}
