//! A UDP association's legs through SOCKS5 upstream links: for each proxy
//! link a destination is placed on, one UDP ASSOCIATE of our own with that
//! upstream (RFC 1928 §7), opened when first needed and kept for as long as
//! the client's association lives.
//!
//! A leg is a TCP control connection (connected like a CONNECT through the
//! link, see [`super::via_proxy`]: greeting, credentials, then `UDP
//! ASSOCIATE 0.0.0.0:0`) and one UDP socket. Datagrams go to the relay the
//! upstream names in its reply (its own address when it names `0.0.0.0`)
//! with the SOCKS5 UDP header in front, which the association has already
//! written into the shared buffer; replies come back from that relay with a
//! header naming their source, and go to the client as they are. Replies
//! are taken only from the relay: which sources it lets through is the
//! upstream's business, as a NAT's is for an interface link.
//!
//! While the handshake runs, the first few datagrams wait in the leg; if
//! the upstream turns out to carry no UDP, they are placed again.
//! Health follows the rules for connections through a proxy: a refused
//! connect, a broken handshake or one that outlasts the connect timeout
//! marks the link down, refused credentials lock it until SIGHUP; a reply
//! 07 (command not supported), or the connection closed at the request
//! after a good greeting (OpenSSH's `ssh -D` does that), leaves the link up
//! but keeps UDP off it until restart or SIGHUP ([`crate::links::Links::refuse_udp`]). Once open, the
//! control connection's end (EOF or error) ends the leg, and the link is
//! marked down: its destinations are forgotten by the association, so the
//! next datagram to them is placed again.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpStream, UdpSocket};
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use super::ctx::Ctx;
use super::io::{self as sock, attempt, forget, Outcome, Ready};
use super::token::{Handle, Side};
use super::udp::{drain_control, Control};
use crate::links::Tried;
use crate::net;
use crate::socks::{self, Reply, Status};
use crate::sys;
use crate::upstream_proto::{self, Handshake, Step, UdpBlame, UpstreamError};

/// Datagrams a leg holds while its handshake runs.
const HELD: usize = 4;

/// The legs of one association, by link index (`None`: no leg there).
#[derive(Default)]
pub struct Legs {
    legs: Vec<Option<Box<Leg>>>,
}

struct Leg {
    control: TcpStream,
    ready: Ready,
    connected: bool,
    /// `Some` until the upstream's relay is known.
    handshake: Option<Handshake>,
    /// Where replies are peeked into during the handshake.
    buf: Vec<u8>,
    started: Instant,
    upstream: SocketAddr,
    socket: UdpSocket,
    readable: bool,
    /// The upstream's UDP relay, once the handshake is done.
    relay: Option<SocketAddr>,
    /// Whole datagrams (header and payload) waiting for the handshake.
    held: Vec<Box<[u8]>>,
}

/// What a leg that ended did to its link (the association then forgets
/// the destinations it had there).
#[derive(Debug)]
enum End {
    Io(io::Error),
    Upstream(UpstreamError),
}

impl Legs {
    /// Descriptors held: two per leg.
    pub fn sockets(&self) -> usize {
        2 * self.legs.iter().flatten().count()
    }

    fn get_mut(&mut self, link: usize) -> Option<&mut Leg> {
        self.legs.get_mut(link).and_then(|l| l.as_deref_mut())
    }

    /// Whether link `link` has a leg (open, or opening).
    pub fn has(&self, link: usize) -> bool {
        matches!(self.legs.get(link), Some(Some(_)))
    }

    /// Records an event for a leg's socket; false if `side` is none of
    /// them.
    pub fn on_event(&mut self, side: Side, event: &Event) -> bool {
        match side {
            Side::UdpControl(n) => {
                if let Some(leg) = self.get_mut(usize::from(n)) {
                    leg.ready.record(event);
                }
                true
            }
            Side::UdpOut(n) => match self.get_mut(usize::from(n)) {
                Some(leg) => {
                    leg.readable = true;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The earliest time a leg's handshake times out.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.legs
            .iter()
            .flatten()
            .filter(|l| l.handshake.is_some())
            .map(|l| l.started + timeout)
            .min()
    }

    /// Makes sure proxy link `link` has a leg, opening one if not. An
    /// error is the link's, and has been counted against it.
    pub fn ensure(&mut self, ctx: &mut Ctx<'_>, conn: Handle, link: usize) -> io::Result<()> {
        if self.has(link) {
            return Ok(());
        }
        if link >= self.legs.len() {
            self.legs.resize_with(link + 1, || None);
        }
        match Leg::open(ctx, conn, link) {
            Ok(leg) => {
                log::debug!(
                    "#{} UDP ASSOCIATE through {}",
                    conn.id,
                    ctx.links.get(link).label()
                );
                self.legs[link] = Some(Box::new(leg));
                Ok(())
            }
            Err(e) => {
                log::debug!(
                    "#{} UDP ASSOCIATE through {}: {e}",
                    conn.id,
                    ctx.links.get(link).label()
                );
                ctx.links.broken(link, &e, ctx.now);
                Err(e)
            }
        }
    }

    /// Sends the whole datagram `ctx.udp_buf[datagram]` (header and
    /// `payload` bytes) through link `link`'s leg, or holds it while the
    /// leg opens. Returns the payload bytes sent.
    pub fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        link: usize,
        datagram: Range<usize>,
        payload: usize,
    ) -> usize {
        let Some(leg) = self.get_mut(link) else {
            return 0;
        };
        let datagram = &ctx.udp_buf[datagram];
        let Some(relay) = leg.relay else {
            if leg.held.len() < HELD {
                leg.held.push(datagram.into());
            }
            return 0;
        };
        match attempt(|| leg.socket.send_to(datagram, relay)) {
            Outcome::Continue(_) => {
                ctx.links.datagram_up(link, payload as u64);
                payload
            }
            _ => 0, // UDP may drop
        }
    }

    /// Receives one datagram from link `link`'s relay into `buf`: `Some(n,
    /// start)` is a whole datagram whose payload starts at `start`;
    /// `None` when the socket is drained (or the leg gone). What comes
    /// from elsewhere, or malformed, is skipped (`Some((0, 0))`).
    pub fn recv(&mut self, link: usize, buf: &mut [u8]) -> Option<(usize, usize)> {
        let leg = self.get_mut(link)?;
        if !leg.readable {
            return None;
        }
        match attempt(|| leg.socket.recv_from(buf)) {
            Outcome::Continue((n, from)) => {
                if Some(net::canonical(from)) != leg.relay.map(net::canonical) {
                    return Some((0, 0));
                }
                match socks::parse_udp_header(&buf[..n]) {
                    Ok(Status::Complete(h, start)) if h.frag == 0 => Some((n, start)),
                    _ => Some((0, 0)),
                }
            }
            Outcome::WouldBlock => {
                leg.readable = false;
                None
            }
            // An ICMP error from an earlier send: nothing to do.
            _ => Some((0, 0)),
        }
    }

    /// Links whose leg has datagrams waiting to be received.
    pub fn readable(&self) -> Tried {
        self.legs
            .iter()
            .enumerate()
            .filter(|(_, l)| l.as_ref().is_some_and(|l| l.readable))
            .fold(0, |set, (i, _)| set | 1 << i)
    }

    /// Drives every leg's control connection: connect, handshake, then
    /// watching for its end. Returns the links whose leg ended (their
    /// health already told), for the association to forget what it placed
    /// there; datagrams a leg held when its upstream refused UDP (or our
    /// credentials) are put in `orphans`, to be placed again.
    pub fn drive(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: Handle,
        orphans: &mut Vec<Box<[u8]>>,
    ) -> Tried {
        let mut ended = 0;
        for link in 0..self.legs.len() {
            let Some(leg) = self.legs[link].as_deref_mut() else {
                continue;
            };
            let result = match leg.advance(ctx, link) {
                Ok(()) if leg.handshake.is_some() => {
                    if ctx.now >= leg.started + ctx.timeouts.connect {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "upstream proxy timed out");
                        Err(End::Io(e))
                    } else {
                        Ok(())
                    }
                }
                other => other,
            };
            if let Err(end) = result {
                let mut leg = self.legs[link].take().expect("a leg");
                // Placed again only where the link will not be picked again
                // (no UDP, or locked): a dead upstream, the last route
                // left, could otherwise take them back forever.
                if matches!(&end, End::Upstream(e) if e.udp_blame() != UdpBlame::Link) {
                    orphans.append(&mut leg.held);
                }
                leg.ended(ctx, conn, link, end);
                ended |= 1 << link;
            }
        }
        ended
    }

    /// Closes every leg: the association ended.
    pub fn close(&mut self, ctx: &mut Ctx<'_>) {
        for (link, leg) in self.legs.iter_mut().enumerate() {
            if let Some(mut leg) = leg.take() {
                leg.forget(ctx);
                if leg.handshake.is_some() {
                    ctx.links.abandoned(link, ctx.now);
                } else {
                    ctx.links.closed(link);
                }
            }
        }
    }
}

impl Leg {
    /// Starts the control connection to proxy link `link` (from where the
    /// link says) and opens the UDP socket datagrams will leave from: on
    /// the same address, so the upstream sees them come from its client.
    fn open(ctx: &mut Ctx<'_>, conn: Handle, link: usize) -> io::Result<Leg> {
        let proxy = ctx.links.get(link).as_proxy().expect("a proxy link");
        let (url, upstream) = (&proxy.url, proxy.addr);
        let any = SocketAddr::new(unspecified(upstream.is_ipv6()), 0);
        let handshake = Handshake::udp_associate(url, any);
        let (local, device) = ctx.links.proxy_source(link).map_err(io::Error::other)?;
        let mut control = net::connect_from(local, device.as_ref(), upstream)?;
        let n = u8::try_from(link).expect("at most 64 links");
        let interest = Interest::READABLE | Interest::WRITABLE;
        ctx.registry
            .register(&mut control, conn.token(Side::UdpControl(n)), interest)?;
        let udp = (|| {
            let domain = Domain::for_address(upstream);
            let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_nonblocking(true)?;
            if let Some(dev) = &device {
                sys::bind_device(&socket, dev, upstream.is_ipv6())?;
            }
            let ip = local.unwrap_or_else(|| unspecified(upstream.is_ipv6()));
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            let mut socket = UdpSocket::from_std(socket.into());
            ctx.registry
                .register(&mut socket, conn.token(Side::UdpOut(n)), Interest::READABLE)?;
            Ok::<_, io::Error>(socket)
        })();
        let socket = match udp {
            Ok(s) => s,
            Err(e) => {
                forget(ctx.registry, &mut control);
                return Err(e);
            }
        };
        Ok(Leg {
            control,
            ready: Ready::default(),
            connected: false,
            buf: vec![0; handshake.reply_buffer_len()],
            handshake: Some(handshake),
            started: ctx.now,
            upstream,
            socket,
            readable: true,
            relay: None,
            held: Vec::new(),
        })
    }

    fn forget(&mut self, ctx: &mut Ctx<'_>) {
        forget(ctx.registry, &mut self.control);
        let _ = ctx.registry.deregister(&mut self.socket);
    }

    /// Tells the link what the end of this leg says of it.
    fn ended(mut self, ctx: &mut Ctx<'_>, conn: Handle, link: usize, end: End) {
        self.forget(ctx);
        let label = ctx.links.get(link).label();
        let open = self.handshake.is_none();
        match end {
            End::Upstream(e) => {
                log::debug!("#{} UDP ASSOCIATE through {label}: {e}", conn.id);
                match e.udp_blame() {
                    UdpBlame::NoUdp => {
                        ctx.links.reached(link);
                        ctx.links.refuse_udp(link);
                    }
                    UdpBlame::Credentials => ctx.links.lock(link, &e, ctx.now),
                    UdpBlame::Link => ctx.links.broken(link, &e, ctx.now),
                }
            }
            End::Io(e) => {
                log::debug!("#{} UDP association through {label} ended: {e}", conn.id);
                ctx.links.broken(link, &e, ctx.now);
            }
        }
        if open {
            ctx.links.closed(link);
        }
    }

    /// Does what readiness allows on the control connection.
    fn advance(&mut self, ctx: &mut Ctx<'_>, link: usize) -> Result<(), End> {
        if !self.connected {
            if !(self.ready.writable || self.ready.readable || self.ready.error) {
                return Ok(());
            }
            match net::connect_result(&self.control) {
                Ok(true) => {
                    self.connected = true;
                    let rtt = ctx.now.saturating_duration_since(self.started);
                    ctx.links.observe_connect(link, rtt);
                }
                Ok(false) => {
                    self.ready = Ready::default();
                    return Ok(());
                }
                Err(e) => return Err(End::Io(e)),
            }
        }
        let Some(handshake) = self.handshake.as_mut() else {
            // Open: the upstream has nothing to say on it; its end is ours.
            return match drain_control(&mut self.control, &mut self.ready) {
                Control::Open => Ok(()),
                Control::Closed => Err(End::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the UDP association's control connection",
                ))),
                Control::Failed(e) => Err(End::Io(e)),
            };
        };
        loop {
            while self.ready.writable && !handshake.to_send().is_empty() {
                match sock::write(&mut self.control, handshake.to_send()) {
                    Outcome::Continue(n) => handshake.sent(n),
                    Outcome::WouldBlock => self.ready.writable = false,
                    Outcome::Closed => return Err(End::Io(closed())),
                    Outcome::Reset(e) | Outcome::Error(e) => return Err(End::Io(e)),
                }
            }
            if !handshake.to_send().is_empty() || !self.ready.readable {
                return Ok(());
            }
            // Nothing follows a reply on a control connection: read what
            // there is, and keep what a partial reply left.
            let seen = match sock::attempt(|| self.control.peek(&mut self.buf)) {
                // Closed at the request, after a good greeting: it does
                // not carry UDP (as `ssh -D` says so).
                Outcome::Continue(0) | Outcome::Closed | Outcome::Reset(_)
                    if handshake.awaits_reply() =>
                {
                    return Err(End::Upstream(UpstreamError::Socks(
                        Reply::CommandNotSupported,
                    )))
                }
                Outcome::Continue(0) | Outcome::Closed => return Err(End::Io(closed())),
                Outcome::Continue(n) => n,
                Outcome::WouldBlock => {
                    self.ready.readable = false;
                    return Ok(());
                }
                Outcome::Reset(e) | Outcome::Error(e) => return Err(End::Io(e)),
            };
            let (step, n) = match handshake.on_input(&self.buf[..seen]) {
                Ok(Status::Complete(step, n)) => (step, n),
                Ok(Status::Partial) => {
                    self.ready.readable = false;
                    return Ok(());
                }
                Err(e) => return Err(End::Upstream(e)),
            };
            consume(&mut self.control, &mut self.buf, n)?;
            if let Step::Established(bound) = step {
                let Some(relay) = upstream_proto::udp_relay_addr(bound, self.upstream) else {
                    return Err(End::Upstream(UpstreamError::Malformed(
                        "the UDP ASSOCIATE reply names no relay address",
                    )));
                };
                self.relay = Some(relay);
                self.handshake = None;
                self.buf = Vec::new();
                ctx.links.connected(link);
                for datagram in std::mem::take(&mut self.held) {
                    if let Outcome::Continue(_) = attempt(|| self.socket.send_to(&datagram, relay))
                    {
                        let payload = payload_len(&datagram);
                        ctx.links.datagram_up(link, payload as u64);
                    }
                }
                return Ok(());
            }
        }
    }
}

/// The payload bytes of a whole datagram (its header parsed before).
fn payload_len(datagram: &[u8]) -> usize {
    match socks::parse_udp_header(datagram) {
        Ok(Status::Complete(_, start)) => datagram.len() - start,
        _ => 0,
    }
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Reads the `n` bytes of a reply already peeked.
fn consume(control: &mut TcpStream, buf: &mut [u8], mut n: usize) -> Result<(), End> {
    while n > 0 {
        match sock::read(control, &mut buf[..n]) {
            Outcome::Continue(got) => n -= got,
            Outcome::Closed => return Err(End::Io(closed())),
            Outcome::WouldBlock => return Err(End::Io(io::ErrorKind::WouldBlock.into())),
            Outcome::Reset(e) | Outcome::Error(e) => return Err(End::Io(e)),
        }
    }
    Ok(())
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream proxy closed the connection during its handshake",
    )
}
