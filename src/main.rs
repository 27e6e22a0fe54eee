use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use dispatch::cli::{Cli, Command, StartArgs};
use dispatch::config::{self, Target};
use dispatch::logging::{self, Destination};
use dispatch::reactor::{Reactor, Summary};
use dispatch::{iface, sys};

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
    }
}

fn interfaces() -> Result<Vec<iface::Interface>, Failure> {
    iface::discover()
        .map_err(|e| Failure::Runtime(format!("cannot list the network interfaces: {e}")))
}

fn start(args: &StartArgs, debug: bool) -> Result<(), Failure> {
    let config = config::build(args, &interfaces()?, config::test_bind)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let destination = logging::init(debug);
    match sys::raise_nofile_limit() {
        Ok(Some(limit)) => log::info!("open file limit: {limit}"),
        Ok(None) => {}
        Err(e) => log::warn!("cannot raise the open file limit: {e}"),
    }

    let listen = config.listen;
    let targets = config.targets.clone();
    let mut reactor = Reactor::new(config).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Failure::Runtime(format!(
            "{listen} is already in use; stop the other program or pick another --port"
        )),
        _ => Failure::Runtime(format!("cannot listen on {listen}: {e}")),
    })?;
    let local = reactor.local_addr();
    say(&banner(
        local,
        &targets,
        args.addresses.is_empty(),
        &destination,
    ));
    log::info!(
        "dispatch {} listening on {local}, {} targets",
        env!("CARGO_PKG_VERSION"),
        targets.len()
    );

    let shutdown = reactor.shutdown_handle();
    if let Err(e) = ctrlc::set_handler(move || shutdown.trigger()) {
        log::warn!("cannot catch Ctrl-C/SIGTERM ({e}); stopping will not print a summary");
    }
    let summary = reactor
        .run()
        .map_err(|e| Failure::Runtime(format!("proxy stopped: {e}")))?;
    let line = summary_line(&summary);
    log::info!("{line}");
    say(&format!("{line}\n"));
    Ok(())
}

/// What `start` prints once listening; tests read the first line.
fn banner(local: SocketAddr, targets: &[Target], every_iface: bool, log: &Destination) -> String {
    let mut out = format!("dispatch listening on {local}\n");
    let width = targets
        .iter()
        .map(|t| t.ip.to_string().len())
        .max()
        .unwrap_or(0);
    for t in targets {
        let ip = t.ip.to_string();
        let family = iface::family(t.ip);
        let _ = write!(out, "  {ip:<width$}  {family}  weight {}", t.weight);
        if let Some(name) = &t.iface {
            let _ = write!(out, "  {name}");
        }
        out.push('\n');
    }
    if every_iface {
        out.push_str("dispatching over every usable interface (no address given)\n");
    }
    match log {
        Destination::Stdout => {}
        Destination::File(path) => {
            let _ = writeln!(out, "logging to {}", path.display());
        }
        Destination::Stderr => out.push_str("logging to stderr\n"),
    }
    out
}

fn summary_line(s: &Summary) -> String {
    format!(
        "dispatch stopped: {} connections, {} bytes up, {} bytes down",
        s.connections, s.bytes_up, s.bytes_down
    )
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
    use std::path::PathBuf;

    fn target(ip: &str, weight: u32, iface: Option<&str>) -> Target {
        Target {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::new(weight).unwrap(),
            iface: iface.map(String::from),
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
            &Destination::File(PathBuf::from("/s/dispatch/dispatch.log")),
        );
        assert_eq!(
            text,
            "dispatch listening on 127.0.0.1:43567\n\
             \x20 192.168.1.5  IPv4  weight 3  eth0\n\
             \x20 2001:db8::5  IPv6  weight 1\n\
             dispatching over every usable interface (no address given)\n\
             logging to /s/dispatch/dispatch.log\n"
        );
    }

    #[test]
    fn banner_with_debug_logging() {
        let text = banner(
            "[::1]:1080".parse().unwrap(),
            &[target("::1", 1, Some("lo"))],
            false,
            &Destination::Stdout,
        );
        assert_eq!(
            text,
            "dispatch listening on [::1]:1080\n  ::1  IPv6  weight 1  lo\n"
        );
    }

    #[test]
    fn summary() {
        let s = Summary {
            connections: 3,
            bytes_up: 10,
            bytes_down: 2048,
        };
        assert_eq!(
            summary_line(&s),
            "dispatch stopped: 3 connections, 10 bytes up, 2048 bytes down"
        );
    }
}
