//! What a connection borrows from the loop that owns it while it is called.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::Registry;

use super::notice::Notices;
use crate::auth::Credentials;
use crate::dns::Resolver;
use crate::links::Links;
use crate::metrics::Counters;
use crate::ring::RingPool;

/// Deadlines waiting to fire, soonest first: `(when, slab key, connection
/// id)`. A connection has at most one: re-arming or closing removes the old
/// one, so a long timeout (idle: hours) leaves nothing behind when its
/// connection goes, however many come and go.
pub type Timers = BTreeSet<(Instant, usize, u64)>;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    pub connect: Duration,
    /// How long a BIND waits for its peer.
    pub bind: Duration,
    /// No byte either way for this long: closed.
    pub idle: Duration,
    /// Bytes waiting that their receiver does not take for this long: closed.
    pub stall: Duration,
    /// No HTTP response head this long after a forwarded request: 504.
    pub response: Duration,
    /// How long a UDP destination stays pinned with no datagram.
    pub udp_idle: Duration,
    /// Destinations (and names) one association remembers.
    pub udp_destinations: usize,
}

pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub links: &'a mut Links,
    pub pool: &'a mut RingPool,
    pub resolver: &'a mut Resolver,
    pub timers: &'a mut Timers,
    pub notices: &'a mut Notices,
    /// What the metrics count beyond the links' own counters.
    pub counters: &'a mut Counters,
    pub auth: &'a Credentials,
    /// The buffer datagrams pass through ([`super::UDP_BUFFER`] bytes).
    pub udp_buf: &'a mut [u8],
    /// UDP associations open across connections.
    pub associations: &'a mut usize,
    /// UDP associations open per client address, and how many one may have.
    pub client_associations: &'a mut HashMap<IpAddr, u32>,
    pub max_client_associations: u32,
    /// The proxy's own listening address, which no request may target.
    pub listen: SocketAddr,
    /// Every address of this machine (for [`Ctx::is_self`] with a wildcard listener).
    pub local_ips: &'a [IpAddr],
    pub timeouts: Timeouts,
    pub now: Instant,
}

impl Ctx<'_> {
    /// Whether `addr` is the proxy itself: a request for it would loop.
    pub fn is_self(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.listen.port() {
            return false;
        }
        let ip = addr.ip();
        ip == self.listen.ip()
            || (self.listen.ip().is_unspecified()
                && (ip.is_loopback() || ip.is_unspecified() || self.local_ips.contains(&ip)))
    }
}
