//! Turns the command line into a validated [`Config`]: interface names are
//! resolved, addresses are test-bound, duplicates refused.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::auth::{Access, Credentials};
use crate::balance::Strategy;
use crate::cli::{self, AddrSpec, StartArgs};
use crate::iface::Interface;
use crate::learned;
use crate::links::{Follow, LinkSpec, ProxySpec, MAX_LINKS};
use std::path::PathBuf;

/// Everything the reactor needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub targets: Vec<LinkSpec>,
    /// Links that are other proxies.
    pub proxies: Vec<ProxySpec>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a BIND waits for its incoming connection.
    pub bind_timeout: Duration,
    /// No byte either way for this long: the connection is closed.
    pub idle_timeout: Duration,
    /// Bytes waiting that the receiver does not take for this long: closed.
    pub stall_timeout: Duration,
    /// No HTTP response head this long after the request: 504.
    pub response_timeout: Duration,
    /// How long a graceful stop lets transfers finish.
    pub drain_timeout: Duration,
    /// Connections one client address may have open at once.
    pub max_client_connections: u32,
    /// UDP associations one client address may have open at once.
    pub max_client_associations: u32,
    /// How long a UDP destination stays pinned while no datagram passes.
    pub udp_idle_timeout: Duration,
    /// Destinations (and names) one UDP association remembers.
    pub udp_max_destinations: usize,
    /// Bind outgoing sockets to the target's interface, not only its address.
    pub bind_device: bool,
    /// Credentials given with `--auth`.
    pub auth: Credentials,
    /// The `--auth-file`, re-read on SIGHUP.
    pub auth_file: Option<PathBuf>,
    /// Which clients may connect.
    pub access: Access,
    /// Which interfaces the links follow as they come and go.
    pub follow: Follow,
    /// Interfaces given by name that have no usable address yet (or do not
    /// exist yet): their links come when they do.
    pub waiting: Vec<String>,
    /// How new connections are spread over the links.
    pub balance: Strategy,
    /// Where learned capacities are kept across restarts (`None`: nowhere).
    pub state_file: Option<PathBuf>,
    /// Capacities learned in earlier runs (read from `state_file` at start).
    pub learned: Vec<learned::Entry>,
    /// Where `/metrics` and `/status` are served (`None`: they are not).
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// A configuration with the defaults of `dispatch start` (for benches
    /// and embedding): timeouts of 10 s, device binding on, no
    /// authentication, any client; balanced by learned capacity unless a
    /// target has a weight other than 1; no state file.
    pub fn new(listen: SocketAddr, targets: Vec<LinkSpec>) -> Config {
        let balance = if targets.iter().all(|t| t.weight.get() == 1) {
            Strategy::Learn
        } else {
            Strategy::Weights
        };
        Config {
            listen,
            targets,
            proxies: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            bind_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(7440),
            stall_timeout: Duration::from_secs(300),
            response_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            max_client_connections: 16384,
            max_client_associations: 64,
            udp_idle_timeout: Duration::from_secs(120),
            udp_max_destinations: 4096,
            bind_device: true,
            auth: Credentials::default(),
            auth_file: None,
            access: Access::Anyone,
            follow: Follow::default(),
            waiting: Vec::new(),
            balance,
            state_file: None,
            learned: Vec::new(),
            metrics: None,
        }
    }

    /// Every credential in force: `--auth` ones and the file's.
    pub fn credentials(&self) -> io::Result<Credentials> {
        let mut all = self.auth.clone();
        if let Some(path) = &self.auth_file {
            all.extend(Credentials::load_file(path)?);
            // An auth file asks for authentication, even while it is empty.
            all.require();
        }
        Ok(all)
    }
}

/// Why the command line does not make a usable configuration.
#[derive(Debug)]
pub enum ConfigError {
    /// An IP that is not assigned to this machine.
    NotLocal(IpAddr),
    /// An IP the test bind refused for another reason.
    Unbindable(IpAddr, io::Error),
    /// The same address reached twice.
    Duplicate(IpAddr),
    /// `--exclude` with addresses given: it only narrows the default set.
    ExcludeWithAddresses,
    /// More addresses than a connection attempt can track.
    TooMany(usize),
    /// The unspecified address, a multicast or broadcast one: no source.
    NotUnicast(IpAddr),
    /// An IPv6 link-local address, which needs a scope to be used.
    LinkLocal(IpAddr),
    /// An `--auth` value that is not `user:pass`.
    BadAuth,
    /// An `--auth-file` that cannot be read or parsed.
    AuthFile(PathBuf, io::Error),
    /// An upstream proxy whose host does not resolve (shown redacted).
    ProxyHost(String, io::Error),
    /// The same upstream proxy given twice.
    DuplicateProxy(String),
    /// An upstream proxy that is this very dispatch (shown redacted): each
    /// request would come back to it, again and again.
    ProxyIsSelf(String),
    /// Dotted digits that are no IPv4 address (a typo, not an interface).
    NotAnAddress(String),
    /// An interface whose addresses are all loopback: it reaches nothing
    /// beyond this machine.
    LoopbackInterface(String),
    /// `--state-file` names the `--log-file`: each would overwrite the other.
    StateFileIsLog(PathBuf),
    /// `--log-file` names a state file: the log would be appended to it.
    LogFileIsState(PathBuf),
}

const SEE_LIST: &str = "`dispatch list` shows the ones you can use";

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotLocal(ip) => write!(f, "{ip} is not an address of this machine; {SEE_LIST}"),
            ConfigError::Unbindable(ip, err) => {
                write!(f, "cannot send from {ip}: {err}; {SEE_LIST}")
            }
            ConfigError::ExcludeWithAddresses => write!(
                f,
                "--exclude only narrows the uplinks used when no ADDRESS is given; \
                 leave the interface out of the addresses instead"
            ),
            ConfigError::Duplicate(ip) => write!(
                f,
                "{ip} is given more than once (directly or through its interface name); give each address once"
            ),
            ConfigError::NotUnicast(ip) => write!(
                f,
                "{ip} cannot be a source address (it is unspecified, multicast or broadcast); \
                 give an address of this machine; {SEE_LIST}"
            ),
            ConfigError::LinkLocal(ip) => write!(
                f,
                "{ip} is link-local: it only reaches its own link, not the internet; \
                 give the interface's other address or its name; {SEE_LIST}"
            ),
            ConfigError::BadAuth => write!(
                f,
                "--auth takes user:pass (a non-empty user, each at most 255 bytes)"
            ),
            ConfigError::AuthFile(path, e) => write!(
                f,
                "cannot use the auth file {}: {e}; it needs one user:pass a line",
                path.display()
            ),
            ConfigError::ProxyHost(url, e) => {
                write!(f, "cannot find the upstream proxy {url}: {e}")
            }
            ConfigError::DuplicateProxy(url) => {
                write!(f, "the upstream proxy {url} is given more than once; give it once")
            }
            ConfigError::ProxyIsSelf(url) => write!(
                f,
                "the upstream proxy {url} is this dispatch's own --ip and --port: \
                 every request would loop back to it; give another proxy"
            ),
            ConfigError::NotAnAddress(text) => write!(
                f,
                "{text} is not an IP address (nor an interface name); {SEE_LIST}"
            ),
            ConfigError::LoopbackInterface(name) => write!(
                f,
                "{name} is a loopback interface: it reaches nothing beyond this machine; \
                 to use one of its addresses anyway, give it (as 127.0.0.2); {SEE_LIST}"
            ),
            ConfigError::StateFileIsLog(path) => write!(
                f,
                "--state-file and --log-file both name {}; give the state file another name",
                path.display()
            ),
            ConfigError::LogFileIsState(path) => write!(
                f,
                "--log-file {} is dispatch's state file (learned capacities); give the log \
                 another name",
                path.display()
            ),
            ConfigError::TooMany(n) => write!(
                f,
                "{n} addresses to dispatch to; at most {MAX_LINKS} are supported, give fewer"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks that outgoing sockets can be bound to `ip`, by binding one to a free port.
pub fn test_bind(ip: IpAddr) -> io::Result<()> {
    let addr = SocketAddr::new(ip, 0);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // Like the real outgoing sockets: no ephemeral port is taken, so the
    // check passes even while TIME_WAIT connections fill the port range.
    let _ = crate::sys::set_bind_address_no_port(&socket);
    socket.bind(&addr.into())
}

/// Builds the configuration for `dispatch start`. `ifaces` is the machine's
/// interface list ([`crate::iface::discover`]); `bind` checks an explicitly
/// given IP (normally [`test_bind`]).
pub fn build(
    args: &StartArgs,
    ifaces: &[Interface],
    bind: impl Fn(IpAddr) -> io::Result<()>,
) -> Result<Config, ConfigError> {
    let mut follow = Follow::default();
    let mut waiting = Vec::new();
    let mut proxies: Vec<ProxySpec> = Vec::new();
    for wa in &args.addresses {
        if let AddrSpec::Proxy(url) = &wa.addr {
            let addr = proxy_addr(url).map_err(|e| ConfigError::ProxyHost(url.to_string(), e))?;
            // (The same proxy through two interfaces is two links.)
            let same = |p: &ProxySpec| {
                p.addr == addr && p.url.scheme == url.scheme && p.url.iface == url.iface
            };
            if proxies.iter().any(same) {
                return Err(ConfigError::DuplicateProxy(url.to_string()));
            }
            if is_self(addr, args, ifaces) {
                return Err(ConfigError::ProxyIsSelf(url.to_string()));
            }
            proxies.push(ProxySpec {
                url: url.clone(),
                addr,
                weight: wa.weight,
            });
        }
    }
    let interfaces_given = args
        .addresses
        .iter()
        .any(|a| !matches!(a.addr, AddrSpec::Proxy(_)));
    let targets = if !interfaces_given && !proxies.is_empty() {
        // Only upstream proxies: no interface is a link.
        Vec::new()
    } else if args.addresses.is_empty() {
        follow.uplinks = Some(args.exclude.clone());
        uplinks(ifaces, &args.exclude)
    } else {
        if !args.exclude.is_empty() {
            return Err(ConfigError::ExcludeWithAddresses);
        }
        let mut targets: Vec<LinkSpec> = Vec::new();
        for wa in &args.addresses {
            if let AddrSpec::Name(name) = &wa.addr {
                follow.named.push((name.clone(), wa.weight));
            }
            if let AddrSpec::Proxy(_) = &wa.addr {
                continue;
            }
            let found = resolve(&wa.addr, wa.weight, ifaces, &bind)?;
            if found.is_empty() {
                if let AddrSpec::Name(name) = &wa.addr {
                    waiting.push(name.clone());
                }
            }
            for target in found {
                if targets.iter().any(|t| t.ip == target.ip) {
                    return Err(ConfigError::Duplicate(target.ip));
                }
                targets.push(target);
            }
        }
        targets
    };
    if targets.len() + proxies.len() > MAX_LINKS {
        return Err(ConfigError::TooMany(targets.len() + proxies.len()));
    }
    // Weights given are meant: they keep their meaning unless told otherwise.
    let balance = match args.balance {
        Some(cli::Balance::Learn) => Strategy::Learn,
        Some(cli::Balance::Weights) => Strategy::Weights,
        None if args.addresses.iter().any(|a| a.weighted) => Strategy::Weights,
        None => Strategy::Learn,
    };
    if let Some(log) = args
        .log_file
        .as_deref()
        .filter(|l| learned::is_state_file(l))
    {
        return Err(ConfigError::LogFileIsState(log.to_path_buf()));
    }
    let state_file = match (&args.state_file, args.no_state_file) {
        (_, true) => None,
        // What weights place is learned under their split (a link given a
        // small share looks slow): not kept, not to mislead a learning run.
        _ if balance == Strategy::Weights => None,
        (Some(path), false)
            if args
                .log_file
                .as_ref()
                .is_some_and(|l| learned::same_file(l, path)) =>
        {
            return Err(ConfigError::StateFileIsLog(path.clone()))
        }
        (Some(path), false) => Some(path.clone()),
        (None, false) => learned::default_path(args.log_file.as_deref(), args.port),
    };
    let mut auth = Credentials::default();
    for pair in &args.auth {
        auth.add(pair).map_err(|_| ConfigError::BadAuth)?;
    }
    let mut config = Config {
        listen: SocketAddr::new(args.ip, args.port),
        targets,
        proxies,
        handshake_timeout: args.handshake_timeout,
        connect_timeout: args.connect_timeout,
        bind_timeout: args.bind_timeout,
        idle_timeout: args.idle_timeout,
        stall_timeout: args.stall_timeout,
        response_timeout: args.response_timeout,
        drain_timeout: args.drain_timeout,
        max_client_connections: args.max_client_connections,
        max_client_associations: args.max_client_associations,
        udp_idle_timeout: args.udp_idle_timeout,
        udp_max_destinations: args.udp_max_destinations as usize,
        bind_device: !args.no_bind_device,
        auth,
        auth_file: args.auth_file.clone(),
        access: Access::Anyone,
        follow,
        waiting,
        balance,
        state_file,
        learned: Vec::new(),
        metrics: args.metrics,
    };
    let credentials = config
        .credentials()
        .map_err(|e| ConfigError::AuthFile(config.auth_file.clone().unwrap_or_default(), e))?;
    config.access = Access::new(args.ip, args.allow.clone(), credentials.required());
    Ok(config)
}

/// Where an upstream proxy listens: its host resolved once, at start (the
/// first address the system gives).
fn proxy_addr(url: &crate::upstream_proto::ProxyUrl) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, url.port));
    }
    (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
}

/// The targets one `ADDRESS` stands for.
fn resolve(
    spec: &AddrSpec,
    weight: NonZeroU32,
    ifaces: &[Interface],
    bind: &impl Fn(IpAddr) -> io::Result<()>,
) -> Result<Vec<LinkSpec>, ConfigError> {
    match spec {
        AddrSpec::Ip(ip) => {
            if ip.is_unspecified() || ip.is_multicast() || *ip == IpAddr::from([255, 255, 255, 255])
            {
                return Err(ConfigError::NotUnicast(*ip));
            }
            if let IpAddr::V6(v6) = ip {
                if v6.is_unicast_link_local() {
                    return Err(ConfigError::LinkLocal(*ip));
                }
            }
            bind(*ip).map_err(|err| match err.kind() {
                io::ErrorKind::AddrNotAvailable => ConfigError::NotLocal(*ip),
                _ => ConfigError::Unbindable(*ip, err),
            })?;
            let iface = ifaces
                .iter()
                .find(|i| i.addrs.contains(ip))
                .map(|i| i.name.clone());
            Ok(vec![LinkSpec {
                ip: *ip,
                weight,
                iface,
                follow: false,
            }])
        }
        // An interface that does not exist yet, or has no usable address
        // yet, has no link now; it gets its links when it does.
        AddrSpec::Proxy(_) => Ok(Vec::new()),
        AddrSpec::Name(name) if looks_like_ipv4(name) => {
            Err(ConfigError::NotAnAddress(name.clone()))
        }
        // `fe80::1%eth0`: an address with a scope, not an interface's name
        // (nor is `10.0.0.1%eth0`: a scope is for IPv6 link-local only).
        AddrSpec::Name(name) if scoped_ip(name).is_some() => match scoped_ip(name) {
            Some(IpAddr::V6(ip)) if ip.segments()[0] & 0xffc0 == 0xfe80 => {
                Err(ConfigError::LinkLocal(IpAddr::V6(ip)))
            }
            _ => Err(ConfigError::NotAnAddress(name.clone())),
        },
        AddrSpec::Name(name) => {
            let Some(iface) = ifaces.iter().find(|i| &i.name == name) else {
                return Ok(Vec::new());
            };
            if !iface.addrs.is_empty() && iface.addrs.iter().all(|ip| ip.is_loopback()) {
                return Err(ConfigError::LoopbackInterface(name.clone()));
            }
            Ok(targets_of(iface, weight))
        }
    }
}

/// Whether an upstream proxy at `addr` is this dispatch itself: its own
/// listening address, or (listening on a wildcard) its port on loopback or
/// on an address of this machine. (A loop through another proxy cannot be
/// seen from here; the per-client connection limit bounds it.)
fn is_self(addr: SocketAddr, args: &StartArgs, ifaces: &[Interface]) -> bool {
    if addr.port() != args.port || args.port == 0 {
        return false;
    }
    let ip = addr.ip().to_canonical();
    ip == args.ip.to_canonical()
        || (args.ip.is_unspecified()
            && (ip.is_loopback()
                || ip.is_unspecified()
                || ifaces.iter().any(|i| i.addrs.contains(&ip))))
}

/// Dotted digits, as `999.1.1.1` or `10.0.0`: meant as an IPv4 address,
/// never an interface's name.
fn looks_like_ipv4(text: &str) -> bool {
    text.contains('.') && text.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The address of `addr%scope` when `addr` is an IP address.
fn scoped_ip(text: &str) -> Option<IpAddr> {
    text.split_once('%')?.0.parse().ok()
}

fn targets_of(iface: &Interface, weight: NonZeroU32) -> Vec<LinkSpec> {
    iface
        .usable_addrs()
        .map(|ip| LinkSpec {
            ip,
            weight,
            iface: Some(iface.name.clone()),
            follow: true,
        })
        .collect()
}

/// The default when no `ADDRESS` is given: every uplink's usable addresses
/// (an interface with a default route of the family, see
/// [`Interface::is_uplink`]), weight 1, but for the `excluded` interfaces.
/// There may be none yet (a machine at boot): links come as uplinks do.
fn uplinks(ifaces: &[Interface], excluded: &[String]) -> Vec<LinkSpec> {
    let mut targets: Vec<LinkSpec> = Vec::new();
    for iface in ifaces.iter().filter(|i| !excluded.contains(&i.name)) {
        for t in targets_of(iface, NonZeroU32::MIN) {
            // Merged interfaces never share an address, but a bridge and its
            // port may; one target per address.
            if iface.is_uplink(t.ip.is_ipv6()) && !targets.iter().any(|seen| seen.ip == t.ip) {
                targets.push(t);
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests;
