//! Turns the command line into a validated [`Config`]: interface names are
//! resolved, addresses are test-bound, duplicates refused.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

/// One local address outgoing connections may leave from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ip: IpAddr,
    pub weight: NonZeroU32,
    /// The interface the address belongs to, when known.
    pub iface: Option<String>,
}

/// Everything the reactor needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub targets: Vec<Target>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
}
