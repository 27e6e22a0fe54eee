//! Connecting through a link that is another proxy: a TCP connect to the
//! proxy (through the routing table, or from the interface its URL names),
//! then our side of its handshake
//! ([`crate::upstream_proto::Handshake`]), then the socket is handed to the
//! ordinary relay, as a direct connection's is.
//!
//! Whose fault a failure is: a proxy that refuses the connection, breaks
//! off, speaks something else or does not finish within the connect
//! timeout has failed as a link (down at once, and the request is tried
//! through another route); one that refuses our credentials is locked out
//! until restart or SIGHUP (and the request tried elsewhere); one that
//! answers that the target failed works, and its answer is the client's.
//!
//! Replies are peeked, then exactly their bytes are read: whatever the
//! target sent behind them stays in the socket for the relay.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use super::ctx::Ctx;
use super::io::{self as sock, forget, Outcome, Ready};
use super::token::{Handle, Side};
use super::upstream::Upstream;
use crate::links::Tried;
use crate::net;
use crate::socks::{Dest, Reply, Status};
use crate::upstream_proto::{Blame, Handshake, Step, UpstreamError};

/// Boxed: a connection spends little time here.
pub struct ViaProxy(Box<Inner>);

struct Inner {
    link: usize,
    stream: TcpStream,
    ready: Ready,
    connected: bool,
    handshake: Handshake,
    /// Where replies are peeked into: the longest reply fits, and one
    /// byte more tells a head that is too long.
    buf: Vec<u8>,
    started: Instant,
    /// The proxies tried for this request, this one included.
    tried: Tried,
}

/// What the attempt came to.
#[derive(Debug)]
pub enum Next {
    Wait,
    /// The tunnel is open: relay, naming the address the proxy bound (or
    /// ours).
    Established(Upstream, Option<std::net::SocketAddr>),
    /// The proxy failed as a link: try another route, not those tried.
    Failover(Tried, io::Error),
    /// The proxy answered that the target failed: tell the client.
    Failed(Reply, io::Error),
}

impl ViaProxy {
    /// Connects to proxy link `link` and queues the request for `dest`.
    /// An error is the link's (as a refused connect would be).
    pub fn start(
        ctx: &mut Ctx<'_>,
        conn: Handle,
        link: usize,
        tried: Tried,
        dest: Dest<'_>,
    ) -> Result<ViaProxy, (Tried, io::Error)> {
        let tried = tried | (1 << link);
        let proxy = ctx.links.get(link).as_proxy().expect("a proxy link");
        let handshake = Handshake::new(&proxy.url, dest);
        let source = ctx.links.proxy_source(link).map_err(io::Error::other);
        let started = source
            .and_then(|(local, device)| net::connect_from(local, device.as_ref(), proxy.addr));
        // Registering fails only for want of resources here.
        let started = started.and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            ctx.registry
                .register(&mut stream, conn.token(Side::Upstream), interest)
                .map(|()| stream)
                .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))
        });
        match started {
            Ok(stream) => Ok(ViaProxy(Box::new(Inner {
                link,
                stream,
                ready: Ready::default(),
                connected: false,
                buf: vec![0; handshake.reply_buffer_len()],
                handshake,
                started: ctx.now,
                tried,
            }))),
            // This machine ran short: the proxy is not to blame, and a
            // trial it was on is the next request's.
            Err(e) if is_local_shortage(&e) => {
                let label = ctx.links.get(link).label();
                log::debug!("#{} through {label}: cannot start: {e}", conn.id);
                ctx.links.abandoned(link, ctx.now);
                Err((tried, e))
            }
            Err(e) => {
                ctx.links.broken(link, &e, ctx.now);
                Err((tried, e))
            }
        }
    }

    pub fn ready_mut(&mut self) -> &mut Ready {
        &mut self.0.ready
    }

    /// The whole attempt, connect and handshake, has one connect timeout.
    pub fn deadline(&self, timeout: Duration) -> Instant {
        self.0.started + timeout
    }

    /// The timeout passed: the link failed.
    pub fn on_timer(self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        let e = io::Error::new(io::ErrorKind::TimedOut, "upstream proxy timed out");
        self.link_failed(ctx, conn, e)
    }

    /// The client left: the attempt says nothing of the link.
    pub fn abandon(mut self, ctx: &mut Ctx<'_>) {
        forget(ctx.registry, &mut self.0.stream);
        ctx.links.abandoned(self.0.link, ctx.now);
    }

    /// After readiness: connect, send, read replies as far as they go.
    pub fn poll(mut self, ctx: &mut Ctx<'_>, conn: Handle) -> (Option<ViaProxy>, Next) {
        match self.0.advance(ctx) {
            Ok(None) => (Some(self), Next::Wait),
            Ok(Some(bound)) => {
                let Inner {
                    link,
                    stream,
                    mut ready,
                    ..
                } = *self.0;
                ctx.links.connected(link);
                // The target may have spoken behind the reply: the relay
                // reads at once.
                ready.readable = true;
                let bound = bound.or_else(|| stream.local_addr().ok());
                (
                    None,
                    Next::Established(Upstream::new(stream, ready, Some(link)), bound),
                )
            }
            Err(Failure::Io(e)) => (None, self.link_failed(ctx, conn, e)),
            Err(Failure::Upstream(e)) => {
                let link = self.0.link;
                let label = ctx.links.get(link).label();
                log::debug!("#{} through {label}: {e}", conn.id);
                match e.blame() {
                    Blame::Target => {
                        ctx.links.reached(link);
                        forget(ctx.registry, &mut self.0.stream);
                        (None, Next::Failed(e.reply(), io::Error::other(e)))
                    }
                    Blame::Credentials => {
                        ctx.links.lock(link, &e, ctx.now);
                        forget(ctx.registry, &mut self.0.stream);
                        (None, Next::Failover(self.0.tried, io::Error::other(e)))
                    }
                    Blame::Link => (None, self.link_failed(ctx, conn, io::Error::other(e))),
                }
            }
        }
    }

    fn link_failed(mut self, ctx: &mut Ctx<'_>, conn: Handle, e: io::Error) -> Next {
        let link = self.0.link;
        log::debug!("#{} through {}: {e}", conn.id, ctx.links.get(link).label());
        forget(ctx.registry, &mut self.0.stream);
        ctx.links.broken(link, &e, ctx.now);
        Next::Failover(self.0.tried, e)
    }
}

enum Failure {
    Io(io::Error),
    Upstream(UpstreamError),
}

impl Inner {
    /// Does what readiness allows; `Some(bound)` once the tunnel is open.
    fn advance(
        &mut self,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Option<std::net::SocketAddr>>, Failure> {
        if !self.connected {
            if !(self.ready.writable || self.ready.readable || self.ready.error) {
                return Ok(None);
            }
            match net::connect_result(&self.stream) {
                Ok(true) => {
                    self.connected = true;
                    let rtt = ctx.now.saturating_duration_since(self.started);
                    ctx.links.observe_connect(self.link, rtt);
                }
                Ok(false) => {
                    self.ready = Ready::default();
                    return Ok(None);
                }
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        loop {
            while self.ready.writable && !self.handshake.to_send().is_empty() {
                match sock::write(&mut self.stream, self.handshake.to_send()) {
                    Outcome::Continue(n) => self.handshake.sent(n),
                    Outcome::WouldBlock => self.ready.writable = false,
                    Outcome::Closed => return Err(Failure::Io(closed())),
                    Outcome::Reset(e) | Outcome::Error(e) => return Err(Failure::Io(e)),
                }
            }
            if !self.handshake.to_send().is_empty() || !self.ready.readable {
                return Ok(None);
            }
            let seen = match sock::attempt(|| self.stream.peek(&mut self.buf)) {
                Outcome::Continue(0) | Outcome::Closed => return Err(Failure::Io(closed())),
                Outcome::Continue(n) => n,
                Outcome::WouldBlock => {
                    self.ready.readable = false;
                    return Ok(None);
                }
                Outcome::Reset(e) | Outcome::Error(e) => return Err(Failure::Io(e)),
            };
            let (step, n) = match self.handshake.on_input(&self.buf[..seen]) {
                Ok(Status::Complete(step, n)) => (step, n),
                Ok(Status::Partial) => {
                    // Everything there is was seen: wait for more (a new
                    // arrival raises a new edge).
                    self.ready.readable = false;
                    return Ok(None);
                }
                Err(e) => return Err(Failure::Upstream(e)),
            };
            self.consume(n)?;
            match step {
                Step::Send => continue,
                Step::Established(bound) => return Ok(Some(bound)),
            }
        }
    }

    /// Reads the `n` bytes of a reply already seen.
    fn consume(&mut self, mut n: usize) -> Result<(), Failure> {
        while n > 0 {
            match sock::read(&mut self.stream, &mut self.buf[..n]) {
                Outcome::Continue(got) => n -= got,
                Outcome::Closed => return Err(Failure::Io(closed())),
                // Peeked bytes are there to read.
                Outcome::WouldBlock => return Err(Failure::Io(io::ErrorKind::WouldBlock.into())),
                Outcome::Reset(e) | Outcome::Error(e) => return Err(Failure::Io(e)),
            }
        }
        Ok(())
    }
}

/// Whether `e` says this machine ran short (descriptors, buffers,
/// memory) rather than anything of the proxy: out of descriptors, every
/// proxy would otherwise go down.
fn is_local_shortage(e: &io::Error) -> bool {
    if crate::sys::is_out_of_fds(e) || e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ENOBUFS)
    }
    #[cfg(windows)]
    {
        // WSAENOBUFS
        e.raw_os_error() == Some(10055)
    }
    #[cfg(not(any(unix, windows)))]
    {
        false
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream proxy closed the connection during its handshake",
    )
}
