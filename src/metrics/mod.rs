//! What `--metrics` shows: the counters the event loop keeps beside the
//! links' own ([`Counters`]), and a [`Snapshot`] of everything taken when a
//! scrape asks. Rendering the snapshot is [`render`]'s (pure text); serving
//! it is [`serve`]'s (the loop's sockets); reading it back for `dispatch
//! status` is [`status`]'s.
//!
//! Counters are plain integers owned by the loop: counting is an add, never
//! an allocation, except the first error reply of a new HTTP status.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::balance::Strategy;
use crate::dns;
use crate::links::{Links, State};
use crate::socks::{Command, Reply, Version};

pub mod render;
pub mod serve;
pub mod status;

/// What a client asked for, by protocol and command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Socks5Connect,
    Socks5Bind,
    Socks5UdpAssociate,
    Socks4Connect,
    Socks4Bind,
    Socks4aConnect,
    Socks4aBind,
    HttpConnect,
    HttpForward,
}

impl Request {
    pub const ALL: [Request; 9] = [
        Request::Socks5Connect,
        Request::Socks5Bind,
        Request::Socks5UdpAssociate,
        Request::Socks4Connect,
        Request::Socks4Bind,
        Request::Socks4aConnect,
        Request::Socks4aBind,
        Request::HttpConnect,
        Request::HttpForward,
    ];

    /// A SOCKS request; `by_name` when its target is a name (SOCKS4a).
    pub fn socks(version: Version, command: Command, by_name: bool) -> Request {
        match (version, command, by_name) {
            (Version::Socks5, Command::Connect, _) => Request::Socks5Connect,
            (Version::Socks5, Command::Bind, _) => Request::Socks5Bind,
            (Version::Socks5, Command::UdpAssociate, _) => Request::Socks5UdpAssociate,
            // SOCKS4 has no UDP ASSOCIATE; such a request is refused as unsupported.
            (Version::Socks4, Command::Bind, false) => Request::Socks4Bind,
            (Version::Socks4, Command::Bind, true) => Request::Socks4aBind,
            (Version::Socks4, _, false) => Request::Socks4Connect,
            (Version::Socks4, _, true) => Request::Socks4aConnect,
        }
    }

    /// An HTTP proxy request: a forward one (`GET http://...`) or a CONNECT.
    pub fn http(forward: bool) -> Request {
        if forward {
            Request::HttpForward
        } else {
            Request::HttpConnect
        }
    }

    /// `(protocol, command)` as the metrics label them.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Request::Socks5Connect => ("socks5", "connect"),
            Request::Socks5Bind => ("socks5", "bind"),
            Request::Socks5UdpAssociate => ("socks5", "udp-associate"),
            Request::Socks4Connect => ("socks4", "connect"),
            Request::Socks4Bind => ("socks4", "bind"),
            Request::Socks4aConnect => ("socks4a", "connect"),
            Request::Socks4aBind => ("socks4a", "bind"),
            Request::HttpConnect => ("http", "connect"),
            Request::HttpForward => ("http", "forward"),
        }
    }
}

/// An error answer the proxy itself gave a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReply {
    /// A SOCKS reply other than success (a SOCKS4 client gets 91 on the
    /// wire for every one; counted here by the reason it stands for).
    Socks(Reply),
    /// No authentication method the client offered is acceptable.
    SocksNoMethod,
    /// The user name and password were refused (RFC 1929).
    SocksAuth,
    /// An HTTP status the proxy answered with (not a server's).
    Http(u16),
}

impl ErrorReply {
    /// `(protocol, code, reason)` as the metrics label them.
    pub fn labels(self) -> (&'static str, String, String) {
        match self {
            ErrorReply::Socks(reply) => ("socks", (reply as u8).to_string(), reply.to_string()),
            ErrorReply::SocksNoMethod => ("socks", "255".into(), "no acceptable method".into()),
            ErrorReply::SocksAuth => ("socks", "auth".into(), "authentication failed".into()),
            ErrorReply::Http(status) => ("http", status.to_string(), http_reason(status).into()),
        }
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A limit that turned a client (or a request) away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-client-connections`: closed at accept.
    ClientConnections,
    /// `--max-client-associations`: UDP ASSOCIATE refused.
    ClientAssociations,
    /// Every UDP association the proxy allows is open.
    Associations,
    /// A datagram to a new destination (or name) dropped: its association
    /// remembers `--udp-max-destinations`, all live.
    UdpDestinations,
    /// Accepting paused: the open-files limit is near.
    Descriptors,
    /// A client outside `--allow` (or beyond loopback and private ranges
    /// with neither `--allow` nor `--auth`): closed at accept.
    Allow,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::ClientConnections,
        Limit::ClientAssociations,
        Limit::Associations,
        Limit::UdpDestinations,
        Limit::Descriptors,
        Limit::Allow,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Limit::ClientConnections => "client-connections",
            Limit::ClientAssociations => "client-associations",
            Limit::Associations => "associations",
            Limit::UdpDestinations => "udp-destinations",
            Limit::Descriptors => "descriptors",
            Limit::Allow => "allow",
        }
    }
}

/// Label of the limit the DNS resolver keeps ([`dns::PER_CLIENT`]).
pub const DNS_LIMIT: &str = "dns-lookups-per-client";

/// Counts kept by the loop that nothing else keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    requests: [u64; Request::ALL.len()],
    /// By SOCKS reply code 1..=8, then no-method and auth failure.
    socks_errors: [u64; 11],
    /// By HTTP status, in the order first seen (a handful at most).
    http_errors: Vec<(u16, u64)>,
    limits: [u64; Limit::ALL.len()],
}

impl Counters {
    pub fn request(&mut self, request: Request) {
        self.requests[request as usize] += 1;
    }

    pub fn error_reply(&mut self, error: ErrorReply) {
        let slot = match error {
            ErrorReply::Socks(reply) => reply as usize,
            ErrorReply::SocksNoMethod => 9,
            ErrorReply::SocksAuth => 10,
            ErrorReply::Http(status) => {
                match self.http_errors.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, n)) => *n += 1,
                    None => self.http_errors.push((status, 1)),
                }
                return;
            }
        };
        self.socks_errors[slot] += 1;
    }

    pub fn limit(&mut self, limit: Limit) {
        self.limits[limit as usize] += 1;
    }

    pub fn requests(&self) -> impl Iterator<Item = (Request, u64)> + '_ {
        Request::ALL
            .into_iter()
            .map(|r| (r, self.requests[r as usize]))
    }

    /// Every error reply given at least once: SOCKS ones by code, then
    /// HTTP ones by status.
    pub fn error_replies(&self) -> Vec<(ErrorReply, u64)> {
        let socks = [
            Reply::GeneralFailure,
            Reply::NotAllowed,
            Reply::NetworkUnreachable,
            Reply::HostUnreachable,
            Reply::ConnectionRefused,
            Reply::TtlExpired,
            Reply::CommandNotSupported,
            Reply::AddressTypeNotSupported,
        ]
        .map(ErrorReply::Socks);
        let mut out: Vec<(ErrorReply, u64)> = socks
            .into_iter()
            .chain([ErrorReply::SocksNoMethod, ErrorReply::SocksAuth])
            .map(|e| {
                let slot = match e {
                    ErrorReply::Socks(r) => r as usize,
                    ErrorReply::SocksNoMethod => 9,
                    _ => 10,
                };
                (e, self.socks_errors[slot])
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        let mut http = self.http_errors.clone();
        http.sort_unstable();
        out.extend(http.into_iter().map(|(s, n)| (ErrorReply::Http(s), n)));
        out
    }

    pub fn limits(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL.into_iter().map(|l| (l, self.limits[l as usize]))
    }
}

/// Buckets of a latency histogram, in seconds (upper bounds; `+Inf` follows).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: how many fell at or under each bound, and the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last one past every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum_micros = self
            .sum_micros
            .saturating_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` (None) last.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = BUCKETS.iter().copied().map(Some).chain([None]);
        bounds.zip(self.counts.iter().scan(0, |acc, &n| {
            *acc += n;
            Some(*acc)
        }))
    }
}

/// One link as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    /// As the live table names it: `eth0 10.0.0.2`.
    pub link: String,
    pub ipv6: bool,
    pub state: &'static str,
    pub stats: crate::links::Stats,
    /// Learned capacity, bytes a second, once there is one.
    pub capacity: Option<f64>,
    /// Smoothed connect time, once measured.
    pub connect_rtt: Option<Duration>,
}

/// Everything a scrape shows, taken at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: &'static str,
    pub listen: SocketAddr,
    /// When the proxy started (wall clock), and how long ago.
    pub started: SystemTime,
    pub uptime: Duration,
    /// How new connections are spread.
    pub balance: Strategy,
    pub links: Vec<LinkRow>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub associations_open: u64,
    pub counters: Counters,
    pub dns: dns::Stats,
}

/// What [`Snapshot::take`] reads, lent by the loop.
pub struct View<'a> {
    pub links: &'a Links,
    pub counters: &'a Counters,
    pub dns: &'a dns::Stats,
    pub listen: SocketAddr,
    pub started: SystemTime,
    pub connections_open: usize,
    pub connections_total: u64,
    pub associations_open: usize,
}

impl Snapshot {
    pub fn take(view: &View<'_>) -> Snapshot {
        let links = view
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| LinkRow {
                link: l.label(),
                ipv6: l.is_ipv6(),
                state: match l.state() {
                    State::Up => "up",
                    State::Down { .. } => "down",
                    State::Trial { .. } => "trial",
                },
                stats: l.stats,
                capacity: view.links.learned(i),
                connect_rtt: l.srtt(),
            })
            .collect();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            listen: view.listen,
            started: view.started,
            uptime: view.started.elapsed().unwrap_or_default(),
            balance: view.links.strategy(),
            links,
            connections_open: view.connections_open as u64,
            connections_total: view.connections_total,
            associations_open: view.associations_open as u64,
            counters: view.counters.clone(),
            dns: view.dns.clone(),
        }
    }

    /// Bytes every link carried, up and down.
    pub fn bytes(&self) -> (u64, u64) {
        self.links.iter().fold((0, 0), |(u, d), l| {
            (u + l.stats.bytes_up, d + l.stats.bytes_down)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let c: Vec<(Option<f64>, u64)> = h.cumulative().collect();
        assert_eq!(c[0], (Some(0.001), 2));
        assert_eq!(c[4], (Some(0.05), 3));
        assert_eq!(c[11], (Some(10.0), 3));
        assert_eq!(c[12], (None, 4));
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 60.0315).abs() < 1e-9);
    }

    #[test]
    fn requests_are_told_apart_by_protocol_and_command() {
        let r = |v, c, n| Request::socks(v, c, n).labels();
        assert_eq!(
            r(Version::Socks4, Command::Connect, true),
            ("socks4a", "connect")
        );
        assert_eq!(r(Version::Socks4, Command::Bind, false), ("socks4", "bind"));
        assert_eq!(
            r(Version::Socks5, Command::UdpAssociate, true),
            ("socks5", "udp-associate")
        );
        let mut c = Counters::default();
        c.request(Request::HttpForward);
        c.request(Request::HttpForward);
        let got: Vec<_> = c.requests().filter(|&(_, n)| n > 0).collect();
        assert_eq!(got, [(Request::HttpForward, 2)]);
    }

    #[test]
    fn error_replies_list_socks_codes_then_http_statuses_in_order() {
        let mut c = Counters::default();
        c.error_reply(ErrorReply::Http(504));
        c.error_reply(ErrorReply::Http(502));
        c.error_reply(ErrorReply::Http(504));
        c.error_reply(ErrorReply::Socks(Reply::ConnectionRefused));
        c.error_reply(ErrorReply::SocksAuth);
        assert_eq!(
            c.error_replies(),
            [
                (ErrorReply::Socks(Reply::ConnectionRefused), 1),
                (ErrorReply::SocksAuth, 1),
                (ErrorReply::Http(502), 1),
                (ErrorReply::Http(504), 2),
            ]
        );
        assert_eq!(
            ErrorReply::Socks(Reply::ConnectionRefused).labels(),
            ("socks", "5".to_string(), "connection refused".to_string())
        );
    }
}
