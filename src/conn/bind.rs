//! BIND (RFC 1928 §4): listen on a link for one incoming connection, as FTP
//! active mode and some peer-to-peer clients ask. The first reply names the
//! listening address, the second the peer that connected; then the
//! connection relays as for CONNECT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mio::net::TcpListener;
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use super::{token, Client, Conn, Ctx, Flow, Progress, Ready, Side, State, Target};
use crate::socks::Reply;
use crate::sys;

/// How long a BIND waits for its incoming connection.
pub const BIND_WAIT: Duration = Duration::from_secs(120);

impl Conn {
    /// Listens on the link the selector picks for the request's family.
    pub(super) fn start_bind(&mut self, ctx: &mut Ctx<'_>, client: Client) {
        let family: IpAddr = match &self.target {
            Some(Target::Addr(a)) if a.is_ipv6() => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        };
        let Some(link) = ctx.links.pick_for_datagrams(family) else {
            self.missing_family(ctx, client);
            return;
        };
        let listening = listen(ctx, link).and_then(|mut listener| {
            ctx.registry.register(
                &mut listener,
                token(self.key, Side::Upstream),
                Interest::READABLE,
            )?;
            Ok(listener)
        });
        let listener = match listening {
            Ok(l) => l,
            Err(e) => {
                self.fail(
                    ctx,
                    client,
                    Reply::GeneralFailure,
                    "cannot listen for BIND",
                    Some(e),
                );
                return;
            }
        };
        self.local = listener.local_addr().ok();
        self.queue_reply(ctx, client, Reply::Succeeded, self.local);
        self.upstream_ready = Ready::default();
        self.state = State::Binding {
            client,
            listener,
            link,
        };
        self.arm(ctx, BIND_WAIT);
    }

    /// Accepts the incoming connection, if it came, and starts relaying.
    pub(super) fn binding(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if let Err(e) = self.flush_client(ctx) {
            return self.broken("client write error", e);
        }
        // The client closing while we wait ends the BIND.
        if self.client_ready.read_closed {
            self.reason = "client closed during BIND";
            return Flow::Stop(Progress::Close);
        }
        let State::Binding {
            client,
            listener,
            link,
        } = &mut self.state
        else {
            unreachable!("checked by drive")
        };
        if !self.upstream_ready.readable {
            return Flow::Stop(Progress::Idle);
        }
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.upstream_ready.readable = false;
                return Flow::Stop(Progress::Idle);
            }
            // A peer that gave up before we accepted it: keep waiting.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Flow::Next,
            Err(e) => {
                let client = *client;
                self.fail(
                    ctx,
                    client,
                    Reply::GeneralFailure,
                    "BIND accept failed",
                    Some(e),
                );
                return Flow::Next;
            }
        };
        // RFC 1928 §4: DST.ADDR names the peer the client expects; another
        // one could splice itself into the client's stream.
        if let Some(Target::Addr(expected)) = &self.target {
            if !expected.ip().is_unspecified() && expected.ip() != peer.ip().to_canonical() {
                log::debug!(
                    "#{} BIND: {peer} is not the expected {}; refused",
                    self.id,
                    expected.ip()
                );
                drop(stream);
                return Flow::Next;
            }
        }
        let (client, link) = (*client, *link);
        let _ = ctx.registry.deregister(listener);
        let registered = ctx.registry.register(
            &mut stream,
            token(self.key, Side::Upstream),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            return self.broken("cannot register the BIND connection", e);
        }
        let _ = stream.set_nodelay(true);
        self.upstream = Some(stream);
        self.upstream_ready = Ready {
            readable: true,
            writable: true,
            ..Ready::default()
        };
        ctx.links.connected(link);
        self.link = Some(link);
        self.queue_reply(ctx, client, Reply::Succeeded, Some(peer));
        self.deadline = None;
        self.up.bytes = self.up.pending() as u64;
        self.state = State::Relaying;
        Flow::Next
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
