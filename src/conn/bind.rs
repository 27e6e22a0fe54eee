//! BIND (RFC 1928 §4): listen on a link for one incoming connection, as FTP
//! active mode and some peer-to-peer clients ask. The first reply names the
//! listening address, the second the peer that connected; then the
//! connection relays as for CONNECT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::TcpListener;
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use super::ctx::Ctx;
use super::io::{attempt, Outcome, Ready};
use super::request::Target;
use super::token::{Handle, Side};
use super::upstream::Upstream;
use crate::sys;

pub struct Binding {
    listener: TcpListener,
    ready: Ready,
    link: usize,
    /// The peer the client said to expect (RFC 1928 §4: DST.ADDR); any when
    /// unspecified.
    expected: Option<IpAddr>,
}

/// Why a BIND could not start.
#[derive(Debug)]
pub enum Refusal {
    /// No link of the request's family.
    NoLink,
    Listen(io::Error),
}

/// What waiting for the peer came to.
#[derive(Debug)]
pub enum Next {
    Wait,
    /// The peer connected: relay with it.
    Accepted(Upstream, SocketAddr),
    Failed(io::Error),
}

impl Binding {
    /// Listens on the link the selector picks for the request's family.
    pub fn start(
        ctx: &mut Ctx<'_>,
        conn: Handle,
        target: Option<&Target>,
    ) -> Result<Binding, Refusal> {
        let family: IpAddr = match target {
            Some(Target::Addr(a)) if a.is_ipv6() => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        };
        let link = ctx
            .links
            .pick_for_datagrams(family, ctx.now)
            .ok_or(Refusal::NoLink)?;
        let mut listener = listen(ctx, link).map_err(Refusal::Listen)?;
        ctx.registry
            .register(
                &mut listener,
                conn.token(Side::Upstream),
                Interest::READABLE,
            )
            .map_err(Refusal::Listen)?;
        let expected = match target {
            Some(Target::Addr(a)) if !a.ip().is_unspecified() => Some(a.ip()),
            _ => None,
        };
        Ok(Binding {
            listener,
            ready: Ready::default(),
            link,
            expected,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn ready_mut(&mut self) -> &mut Ready {
        &mut self.ready
    }

    /// Accepts the expected peer, if it came.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        while self.ready.readable {
            let (mut stream, peer) = match attempt(|| self.listener.accept()) {
                Outcome::Continue(accepted) => accepted,
                Outcome::WouldBlock => {
                    self.ready.readable = false;
                    return Next::Wait;
                }
                // A peer that gave up before we accepted it: keep waiting.
                Outcome::Reset(_) | Outcome::Closed => continue,
                Outcome::Error(e) => return Next::Failed(e),
            };
            // Another peer could splice itself into the client's stream.
            if let Some(expected) = self.expected.filter(|&ip| ip != peer.ip().to_canonical()) {
                log::debug!(
                    "#{} BIND: {peer} is not the expected {expected}; refused",
                    conn.id
                );
                drop(stream);
                continue;
            }
            let _ = ctx.registry.deregister(&mut self.listener);
            if let Err(e) = ctx.registry.register(
                &mut stream,
                conn.token(Side::Upstream),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                return Next::Failed(e);
            }
            let _ = stream.set_nodelay(true);
            ctx.links.connected(self.link);
            let upstream = Upstream::new(stream, Ready::BOTH, Some(self.link));
            return Next::Accepted(upstream, peer);
        }
        Next::Wait
    }

    /// Stops listening.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx.registry.deregister(&mut self.listener);
    }
}

fn listen(ctx: &mut Ctx<'_>, link: usize) -> io::Result<TcpListener> {
    let through = ctx.links.get(link);
    let ip = through
        .ip()
        .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    if let Some(dev) = through.device() {
        sys::bind_device(&socket, dev, ip.is_ipv6())?;
    }
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.listen(1)?;
    Ok(TcpListener::from_std(socket.into()))
}
