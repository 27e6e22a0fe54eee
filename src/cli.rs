//! Command-line syntax: what the user typed, parsed and type-checked, with no
//! look at the system. [`crate::config`] turns [`StartArgs`] into a
//! validated configuration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A SOCKS proxy that spreads outgoing connections over the machine's
/// network interfaces, by the capacity it learns for each or by weights.
#[derive(Debug, Parser)]
#[command(name = "dispatch", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// Write debug logs to stdout instead of the log file
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of `Start` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List all available network interfaces
    List,
    /// Start the SOCKS proxy server (SOCKS5, SOCKS4/4a and HTTP proxy on one port)
    Start(StartArgs),
    /// Show a running proxy's links, read from its --metrics endpoint
    Status(StatusArgs),
    /// Print a shell completion script (see README, "Completions and man page")
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), as in `dispatch man > dispatch.1`
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The running proxy's --metrics address: a port (on 127.0.0.1) or IP:PORT
    #[arg(long, value_name = "ADDR", default_value = "9180", value_parser = parse_metrics_addr)]
    pub metrics: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// The IP to accept connections on
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,

    /// The port to listen on (0 means any free port)
    #[arg(long, default_value_t = 1080)]
    pub port: u16,

    /// How long a client may take to send its request (a SOCKS handshake,
    /// or an HTTP head, which gets 408 if half-sent), in seconds
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub handshake_timeout: Duration,

    /// How long to wait for an outgoing connection through one link, in
    /// seconds, before trying the next link; a connect as a whole, over
    /// every address and link, gives up after three times this
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    /// How long a SOCKS BIND waits for its incoming connection, in seconds
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub bind_timeout: Duration,

    /// Close a connection that carried no byte either way for this long, in
    /// seconds (default: 2 h 4 min, what RFC 5382 asks of NATs)
    #[arg(long, value_name = "SECS", default_value = "7440", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Close a connection whose receiver took none of the bytes waiting for
    /// it for this long, in seconds
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub stall_timeout: Duration,

    /// Connections one client address may have open at once; more are
    /// closed at accept (logged once a minute per address)
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_client_connections: u32,

    /// UDP associations one client address may have open at once
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_client_associations: u32,

    /// On SIGTERM (Ctrl-C on Windows), how long transfers under way may
    /// take to finish before they are cut, in seconds (a second signal
    /// stops at once)
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub drain_timeout: Duration,

    /// Answer 504 when a web server sends no response head this long after
    /// an HTTP proxy request, in seconds
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub response_timeout: Duration,
    /// How long a UDP association keeps a destination pinned with no
    /// datagram either way, in seconds (RFC 4787: at least 120)
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub udp_idle_timeout: Duration,

    /// Destinations one UDP association remembers, live or idle; at the cap
    /// the least recently used idle one is forgotten (while all are live,
    /// new ones are dropped)
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub udp_max_destinations: u32,

    /// Bind outgoing sockets to the source address only, not to the
    /// interface (traffic then follows the routing table)
    #[arg(long)]
    pub no_bind_device: bool,

    /// With no ADDRESS given: do not use this interface (may be given
    /// several times)
    #[arg(long, value_name = "IFACE")]
    pub exclude: Vec<String>,

    /// Do not show the live table of links on a terminal
    #[arg(long, short)]
    pub quiet: bool,

    /// Require this user and password (SOCKS5 and HTTP proxy clients); may be
    /// given several times
    #[arg(long, value_name = "USER:PASS")]
    pub auth: Vec<String>,

    /// Require a user and password from this file (one user:pass a line),
    /// re-read on SIGHUP
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<std::path::PathBuf>,

    /// Accept clients only from this address range (as 192.168.1.0/24); may
    /// be given several times
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<crate::auth::Cidr>,

    /// How new connections are spread over the links: `learn` measures what
    /// each link carries while busy and sends each new connection where the
    /// most capacity is left; `weights` keeps to the /WEIGHT given with each
    /// ADDRESS (smooth weighted round robin). [default: `weights` when any
    /// ADDRESS has a /WEIGHT, else `learn`]
    #[arg(long, value_name = "HOW", value_enum)]
    pub balance: Option<Balance>,

    /// Keep the learned link capacities in this file across restarts
    /// [default: `capacities` beside the log file (`capacities-PORT` off
    /// port 1080)]
    #[arg(long, value_name = "PATH", conflicts_with = "no_state_file")]
    pub state_file: Option<std::path::PathBuf>,

    /// Neither read nor write learned link capacities
    #[arg(long)]
    pub no_state_file: bool,

    /// Serve GET /metrics (Prometheus text) and GET /status (JSON) on ADDR:
    /// a port (on 127.0.0.1, as 9180, which `dispatch status` reads by
    /// default; 0: any free port) or IP:PORT [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,

    /// Write the log to this file [default: `dispatch.log` (on another
    /// --port, `dispatch-PORT.log`) in the platform's log directory]
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<std::path::PathBuf>,

    /// Network interface IP addresses (or interface names) to dispatch to, as
    /// <address>[/weight] [default: every usable address]; or other proxies,
    /// as socks5://[user:pass@]host:port[@iface][/weight] (socks5h:// has the proxy
    /// resolve names; http:// uses CONNECT)
    #[arg(value_name = "ADDRESS", value_parser = AddressParser)]
    pub addresses: Vec<WeightedAddr>,
}

/// Parses an `ADDRESS`; a value that does not parse is echoed with any
/// password in it redacted (clap's own message would show it whole).
#[derive(Clone)]
struct AddressParser;

impl clap::builder::TypedValueParser for AddressParser {
    type Value = WeightedAddr;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<WeightedAddr, clap::Error> {
        let text = value.to_string_lossy();
        text.parse().map_err(|why: String| {
            let arg = arg.map_or_else(|| "ADDRESS".to_string(), ToString::to_string);
            let shown = crate::upstream_proto::redact_typed(&text);
            let msg = format!("invalid value '{shown}' for '{arg}': {why}\n");
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, msg).with_cmd(cmd)
        })
    }
}

/// The longest timeout accepted: a day. Anything longer is a typo, and would
/// overflow deadlines computed from it.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A positive duration in seconds, fractions allowed (`0.5`), at most a day.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a timeout; give a positive number of seconds up to 86400, as in 2.5")
    };
    let secs: f64 = s.trim().parse().map_err(|_| bad())?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => Ok(d),
        _ => Err(bad()),
    }
}

/// `--metrics ADDR`: a bare port is on loopback (127.0.0.1); else IP:PORT.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not a metrics address; give a port (9180, on 127.0.0.1) or IP:PORT \
             (0.0.0.0:9180, [::1]:9180)"
        )
    })
}

/// `--balance`: how new connections are spread over the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// By the capacity learned for each link
    Learn,
    /// By the /WEIGHT of each address
    Weights,
}

/// What an `ADDRESS` names before it is checked against the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    Ip(IpAddr),
    /// An interface name (or a typo: only [`crate::config`] can tell).
    Name(String),
    /// Another proxy: `socks5://`, `socks5h://` or `http://`.
    Proxy(crate::upstream_proto::ProxyUrl),
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrSpec::Ip(ip) => ip.fmt(f),
            AddrSpec::Name(name) => f.write_str(name),
            AddrSpec::Proxy(url) => url.fmt(f),
        }
    }
}

/// `ADDRESS[/WEIGHT]`: an IP or interface name, and its share of connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedAddr {
    pub addr: AddrSpec,
    pub weight: NonZeroU32,
    /// The weight was written (`/1` included), not taken by default.
    pub weighted: bool,
}

impl FromStr for WeightedAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // The last '/': an IPv6 address has none, a weight cannot have one
        // (nor can a proxy URL after its `scheme://`).
        let url = crate::upstream_proto::is_url(s);
        // In a URL, a '/' with an '@' after it is in the credentials.
        let split = match s.rsplit_once('/') {
            Some((addr, w)) if url && (!addr.contains("://") || w.contains('@')) => None,
            found => found,
        };
        let (addr, weight) = match split {
            Some((addr, weight)) => (addr, Some(weight)),
            None => (s, None),
        };
        let weighted = weight.is_some();
        let weight = match weight {
            None => NonZeroU32::MIN,
            // A URL's weight is not echoed: it may be a piece of a password.
            Some(w) if url => w.parse().map_err(|_| {
                "bad weight after the URL: weight must be a whole number from 1 to 4294967295, as in socks5://host:1080/3".to_string()
            })?,
            Some(w) => w.parse().map_err(|_| {
                format!(
                    "bad weight {w:?}: weight must be a whole number from 1 to 4294967295, as in 10.0.0.1/3"
                )
            })?,
        };
        if addr.is_empty() {
            return Err("missing address before the weight, as in 10.0.0.1/3".to_string());
        }
        let addr = match addr.parse() {
            Ok(ip) => AddrSpec::Ip(ip),
            Err(_) if url => AddrSpec::Proxy(addr.parse().map_err(|e| format!("{e}"))?),
            Err(_) => AddrSpec::Name(addr.to_string()),
        };
        Ok(WeightedAddr {
            addr,
            weight,
            weighted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn weighted(s: &str) -> Result<(AddrSpec, u32), String> {
        s.parse::<WeightedAddr>().map(|w| (w.addr, w.weight.get()))
    }

    fn ip(s: &str) -> AddrSpec {
        AddrSpec::Ip(s.parse().unwrap())
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn weight_defaults_to_one() {
        assert_eq!(weighted("10.0.0.1"), Ok((ip("10.0.0.1"), 1)));
        assert_eq!(weighted("::1"), Ok((ip("::1"), 1)));
        assert_eq!(weighted("eth0"), Ok((AddrSpec::Name("eth0".into()), 1)));
    }

    #[test]
    fn weight_after_last_slash() {
        assert_eq!(weighted("10.0.0.1/3"), Ok((ip("10.0.0.1"), 3)));
        assert_eq!(weighted("fe80::1:2/7"), Ok((ip("fe80::1:2"), 7)));
        assert_eq!(weighted("wlan0/2"), Ok((AddrSpec::Name("wlan0".into()), 2)));
        assert_eq!(weighted("a/b/4"), Ok((AddrSpec::Name("a/b".into()), 4)));
    }

    #[test]
    fn bad_weights_say_what_to_do() {
        for s in [
            "10.0.0.1/0",
            "10.0.0.1/x",
            "10.0.0.1/",
            "10.0.0.1/-1",
            "eth0/1.5",
        ] {
            let err = weighted(s).unwrap_err();
            assert!(
                err.contains("whole number from 1 to 4294967295"),
                "{s}: {err}"
            );
        }
        assert!(weighted("/3").is_err());
        assert!(weighted("").is_err());
    }

    #[test]
    fn a_written_weight_is_told_from_the_default() {
        let w = |s: &str| s.parse::<WeightedAddr>().unwrap().weighted;
        assert!(!w("10.0.0.1"));
        assert!(w("10.0.0.1/1"));
        assert!(w("eth0/3"));
    }

    #[test]
    fn balance_and_state_file_options() {
        let args = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Start(a)) => Ok(a),
            Ok(_) => panic!("not start"),
            Err(e) => Err(e),
        };
        let a = args(&["dispatch", "start"]).unwrap();
        assert_eq!(
            (a.balance, a.state_file, a.no_state_file),
            (None, None, false)
        );
        let a = args(&[
            "dispatch",
            "start",
            "--balance",
            "weights",
            "--state-file",
            "/s",
        ])
        .unwrap();
        assert_eq!(a.balance, Some(Balance::Weights));
        assert_eq!(a.state_file.as_deref(), Some(std::path::Path::new("/s")));
        let a = args(&["dispatch", "start", "--balance", "learn", "--no-state-file"]).unwrap();
        assert_eq!((a.balance, a.no_state_file), (Some(Balance::Learn), true));
        assert!(args(&["dispatch", "start", "--balance", "fastest"]).is_err());
        assert!(args(&["dispatch", "start", "--state-file", "/s", "--no-state-file"]).is_err());
    }

    #[test]
    fn metrics_addresses() {
        let addr = |s: &str| parse_metrics_addr(s).map(|a| a.to_string());
        assert_eq!(addr("9180").unwrap(), "127.0.0.1:9180");
        assert_eq!(addr("0.0.0.0:9100").unwrap(), "0.0.0.0:9100");
        assert_eq!(addr("[::1]:9100").unwrap(), "[::1]:9100");
        for bad in ["", "x", "70000", "10.0.0.1", "::1", "localhost:9180"] {
            let e = parse_metrics_addr(bad).unwrap_err();
            assert!(e.contains("give a port"), "{bad}: {e}");
        }
        let status = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Status(a)) => a.metrics.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(status(&["dispatch", "status"]), "127.0.0.1:9180");
        assert_eq!(
            status(&["dispatch", "status", "--metrics", "9"]),
            "127.0.0.1:9"
        );
        let start = Cli::try_parse_from(["dispatch", "start", "--metrics", "nope"]);
        assert_eq!(start.unwrap_err().exit_code(), 2);
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("86400"), Ok(MAX_TIMEOUT));
        assert!(parse_secs("86401").is_err());
        assert!(parse_secs("1e15").is_err());
        for s in ["0", "-1", "abc", "", "NaN", "inf", "1e300"] {
            assert!(parse_secs(s).is_err(), "{s}");
        }
    }

    #[test]
    fn start_defaults() {
        let cli = Cli::try_parse_from(["dispatch", "start"]).unwrap();
        assert!(!cli.debug);
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        assert_eq!(args.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(args.port, 1080);
        assert_eq!(args.handshake_timeout, Duration::from_secs(10));
        assert_eq!(args.connect_timeout, Duration::from_secs(10));
        assert!(args.addresses.is_empty());
    }

    #[test]
    fn start_with_everything() {
        let cli = Cli::try_parse_from([
            "dispatch",
            "start",
            "--ip",
            "::1",
            "--port",
            "0",
            "--handshake-timeout",
            "0.25",
            "--connect-timeout",
            "3",
            "127.0.0.2/2",
            "eth0",
            "-d",
        ])
        .unwrap();
        assert!(cli.debug);
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        assert_eq!(args.port, 0);
        assert_eq!(args.handshake_timeout, Duration::from_millis(250));
        assert_eq!(args.connect_timeout, Duration::from_secs(3));
        assert_eq!(args.addresses.len(), 2);
        assert_eq!(args.addresses[0].weight.get(), 2);
    }

    #[test]
    fn debug_before_subcommand() {
        let cli = Cli::try_parse_from(["dispatch", "--debug", "list"]).unwrap();
        assert!(cli.debug);
        assert!(matches!(cli.command, Command::List));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for argv in [
            &["dispatch", "start", "10.0.0.1/0"][..],
            &["dispatch", "start", "--port", "70000"],
            &["dispatch", "start", "--connect-timeout", "0"],
            &["dispatch", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn proxy_links_take_a_weight_after_the_port() {
        let w = "socks5://al:p%2Fw@127.0.0.1:1080/3"
            .parse::<WeightedAddr>()
            .unwrap();
        assert_eq!((w.weight.get(), w.weighted), (3, true));
        assert_eq!(w.addr.to_string(), "socks5://al:***@127.0.0.1:1080");
        let w = "http://[::1]:3128".parse::<WeightedAddr>().unwrap();
        assert_eq!((w.weight.get(), w.weighted), (1, false));
        assert!(matches!(w.addr, AddrSpec::Proxy(_)));
        let e = "socks5://h/2".parse::<WeightedAddr>().unwrap_err();
        assert!(e.contains("no port"), "{e}");
        let e = "socks5://al:hunter2@h:1/x"
            .parse::<WeightedAddr>()
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_malformed_proxy_link_never_shows_its_password() {
        // A '/' in a password is the password's, not a weight's.
        let w = "socks5://alice:s3c/retpw@127.0.0.1:1080"
            .parse::<WeightedAddr>()
            .unwrap();
        let AddrSpec::Proxy(url) = &w.addr else {
            panic!("{w:?}")
        };
        assert_eq!(url.credentials.as_ref().unwrap().1, "s3c/retpw");
        assert!(!w.weighted);
        for typed in [
            "socks5://alice:s3cretpw@host",
            "socks5://alice:s3cret@pw@host",
            "socks5://alice:s3c/retpw@host:x",
            "socks5://alice:s3c/ret/pw@host:1/x",
        ] {
            let err = Cli::try_parse_from(["dispatch", "start", typed]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("invalid value"), "{typed}: {msg}");
            for piece in ["s3c", "ret", "pw@"] {
                assert!(!msg.contains(piece), "{typed}: {msg}");
            }
        }
    }

    #[test]
    fn addr_spec_displays_as_typed() {
        assert_eq!(ip("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(ip("fe80::1").to_string(), "fe80::1");
        assert_eq!(AddrSpec::Name("wlan0".into()).to_string(), "wlan0");
    }
}
