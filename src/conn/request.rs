//! What a client asked for, once its handshake is complete: the vocabulary
//! the phases of a connection hand each other.

use std::fmt;
use std::net::SocketAddr;

use crate::http;
use crate::socks::{Command, Version};

/// The destination, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Name(Box<str>, u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// What the client speaks, which decides how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Socks(Version),
    /// `CONNECT host:port`: answered `200 Connection established`, then a tunnel.
    HttpConnect,
    /// `GET http://...`: the rewritten request is the first thing sent on.
    HttpForward,
}

/// A complete SOCKS request.
#[derive(Debug)]
pub struct SocksRequest {
    pub version: Version,
    pub command: Command,
    pub target: Target,
}

/// An HTTP proxy request, owned, once its head has been parsed.
#[derive(Debug)]
pub struct HttpRequest {
    pub target: Target,
    /// The rewritten head to send on (forward requests), or `None` (CONNECT).
    pub forward: Option<ForwardHead>,
    /// Whether its `Proxy-Authorization` is accepted (or none is needed).
    pub authorized: bool,
    /// It sent a `Proxy-Authorization` that is refused.
    pub refused_credentials: bool,
}

/// A forward request's head, rewritten to origin form.
#[derive(Debug)]
pub struct ForwardHead {
    pub head: Vec<u8>,
    pub method: Box<str>,
    pub body: http::Body,
    pub close: bool,
}
