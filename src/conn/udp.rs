//! UDP ASSOCIATE (RFC 1928 §7): datagrams relayed for as long as the TCP
//! control connection lives, each destination pinned to one link.
//!
//! The client sends `RSV FRAG ATYP DST.ADDR DST.PORT DATA` to the relay
//! socket; only its own address may (the control connection's IP, and the
//! port it announced, else the first one seen), so the relay is no open
//! reflector. The first datagram to a destination picks a link with the
//! weighted selector, and the destination keeps it (a uTP flow must keep its
//! source address). Each link used gets one outgoing UDP socket, bound like
//! TCP connections are. Replies are accepted only from destinations the
//! client sent to, and come back with a header naming their source.
//!
//! Datagrams move through one buffer the reactor lends (with headroom for
//! the header in front of a reply): nothing is allocated per datagram, except
//! the few held while a destination's name resolves.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry};
use socket2::{Domain, Protocol, Socket, Type};

use super::ctx::Ctx;
use super::io::{attempt, read, Outcome, Ready};
use super::token::{Handle, Side};
use crate::dns::Job;
use crate::net;
use crate::socks::{self, Dest, Status};
use crate::sys;

/// Associations open at once, across clients.
pub const MAX_ASSOCIATIONS: usize = 4096;
/// Destinations one association may send to.
pub const MAX_DESTINATIONS: usize = 4096;
/// Datagrams held while their destination's name resolves.
const HELD_PER_NAME: usize = 4;
/// Bytes held across all names of one association.
const HELD_BYTES: usize = 256 * 1024;
/// Names of one association being resolved at once.
const LOOKUPS: usize = 16;
/// Datagrams handled per socket per turn, so one flood does not hold the loop.
const BURST: usize = 64;
/// Room in front of a received datagram for the header of its reply.
pub const HEADROOM: usize = 22;
/// The buffer the reactor lends: headroom plus the largest datagram.
pub const BUFFER: usize = HEADROOM + 65_535;

enum Name {
    /// Being resolved; datagrams for it wait here.
    Pending(Vec<Box<[u8]>>),
    /// The address used for the association's life (`None`: did not resolve).
    Resolved(Option<SocketAddr>),
}

pub struct Assoc {
    relay: UdpSocket,
    relay_readable: bool,
    client_ip: IpAddr,
    /// Announced in the request, or learnt from the first datagram.
    client_port: Option<u16>,
    /// Each destination's link.
    routes: HashMap<SocketAddr, usize>,
    /// Outgoing sockets by link index, made on first use, with readiness.
    outs: Vec<Option<(UdpSocket, bool, IpAddr)>>,
    names: HashMap<(Box<str>, u16), Name>,
    /// Bytes of datagrams held for names being resolved.
    held_bytes: usize,
    /// A limit was hit and logged (once per association).
    limited: bool,
}

impl Assoc {
    pub fn on_readable(&mut self, side: Side) {
        match side {
            Side::UdpRelay => self.relay_readable = true,
            Side::UdpOut(n) => {
                if let Some(Some((_, readable, _))) = self.outs.get_mut(n as usize) {
                    *readable = true;
                }
            }
            _ => {}
        }
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        self.client_port.map(|p| SocketAddr::new(self.client_ip, p))
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.relay);
        for (socket, _, _) in self.outs.iter_mut().flatten() {
            let _ = registry.deregister(socket);
        }
    }
}

/// What an association's control connection did.
#[derive(Debug)]
pub enum Control {
    Open,
    /// Its EOF: the association ends.
    Closed,
    Failed(io::Error),
}

/// The control connection carries nothing more; its end is the end. What
/// a client sends on it anyway is read and dropped, a little at a time
/// ([`BURST`] reads a turn), so it cannot hold the loop.
pub fn drain_control(client: &mut impl io::Read, ready: &mut Ready) -> Control {
    let mut sink = [0u8; 512];
    for _ in 0..BURST {
        if !ready.readable {
            break;
        }
        match read(client, &mut sink) {
            Outcome::Continue(_) => {}
            Outcome::Closed => return Control::Closed,
            Outcome::WouldBlock => ready.readable = false,
            Outcome::Reset(e) | Outcome::Error(e) => return Control::Failed(e),
        }
    }
    Control::Open
}

/// Why an association could not start.
#[derive(Debug)]
pub enum Refusal {
    /// [`MAX_ASSOCIATIONS`] are open.
    Full,
    Relay(io::Error),
}

impl Assoc {
    /// Opens the relay socket on `local`, the address the client reached
    /// the proxy on; `client` is the control connection's peer, and
    /// `client_port` the port it said it will send from, if it knows it.
    pub fn open(
        ctx: &mut Ctx<'_>,
        conn: Handle,
        local: SocketAddr,
        client: SocketAddr,
        client_port: Option<u16>,
    ) -> Result<Assoc, Refusal> {
        if *ctx.associations >= MAX_ASSOCIATIONS {
            log::warn!(
                "#{} {client}: UDP ASSOCIATE refused: {MAX_ASSOCIATIONS} associations are open",
                conn.id,
            );
            return Err(Refusal::Full);
        }
        // On a dual-stack listener an IPv4 client reached `::ffff:a.b.c.d`:
        // its relay is an IPv4 socket on `a.b.c.d`, which it can name.
        let mut relay = UdpSocket::bind(SocketAddr::new(local.ip().to_canonical(), 0))
            .map_err(Refusal::Relay)?;
        ctx.registry
            .register(&mut relay, conn.token(Side::UdpRelay), Interest::READABLE)
            .map_err(Refusal::Relay)?;
        *ctx.associations += 1;
        Ok(Assoc {
            relay,
            relay_readable: true,
            client_ip: client.ip().to_canonical(),
            client_port,
            routes: HashMap::new(),
            outs: (0..ctx.links.iter().count()).map(|_| None).collect(),
            names: HashMap::new(),
            held_bytes: 0,
            limited: false,
        })
    }

    /// The address of the relay socket, which the client is told.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.local_addr().ok()
    }

    /// Relays what the sockets have: returns whether work is left, and the
    /// payload bytes sent each way.
    pub fn run(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> (bool, u64, u64) {
        let (mut up, mut down) = (0u64, 0u64);
        for _ in 0..BURST {
            if !self.relay_readable {
                break;
            }
            match attempt(|| self.relay.recv_from(&mut ctx.udp_buf[..])) {
                Outcome::Continue((n, from)) => {
                    up += from_client(self, ctx, conn, n, from) as u64;
                }
                Outcome::WouldBlock => self.relay_readable = false,
                // ICMP errors from earlier sends surface here; nothing to do.
                _ => {}
            }
        }
        let mut busy = self.relay_readable;
        for link in 0..self.outs.len() {
            for _ in 0..BURST {
                let Some(Some((socket, readable, _))) = self.outs.get_mut(link) else {
                    break;
                };
                if !*readable {
                    break;
                }
                match attempt(|| socket.recv_from(&mut ctx.udp_buf[HEADROOM..])) {
                    Outcome::Continue((n, from)) => {
                        let sent = to_client(self, ctx, link, n, net::canonical(from));
                        down += sent as u64;
                        ctx.links.add_bytes(link, 0, sent as u64);
                    }
                    Outcome::WouldBlock => *readable = false,
                    _ => {}
                }
            }
            busy |= matches!(self.outs.get(link), Some(Some((_, true, _))));
        }
        (busy, up, down)
    }

    /// A name this association asked for resolved: send what waited for
    /// it. Returns the payload bytes sent.
    pub fn name_resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: Handle,
        host: String,
        port: u16,
        result: io::Result<Vec<SocketAddr>>,
    ) -> u64 {
        let addr = result.ok().and_then(|addrs| {
            addrs
                .into_iter()
                .map(net::canonical)
                .find(|&a| ctx.links.can_reach(a.ip()) && net::is_connectable(a) && !ctx.is_self(a))
        });
        let key = (host.into_boxed_str(), port);
        // A name that did not resolve is forgotten, so a later datagram
        // asks again (a passing DNS failure does not stick).
        let previous = match addr {
            Some(_) => self.names.insert(key, Name::Resolved(addr)),
            None => self.names.remove(&key),
        };
        let held = match previous {
            Some(Name::Pending(held)) => held,
            _ => Vec::new(),
        };
        self.held_bytes -= held.iter().map(|d| d.len()).sum::<usize>();
        let mut up = 0;
        if let Some(dest) = addr {
            for datagram in held {
                up += send(self, ctx, conn, dest, &datagram) as u64;
            }
        }
        up
    }

    /// Closes the association's sockets.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        self.deregister(ctx.registry);
        *ctx.associations = ctx.associations.saturating_sub(1);
    }
}

/// A datagram from the client is in `ctx.udp_buf[..n]`: check its source
/// and header, then send its data on. Returns the payload bytes sent.
fn from_client(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    n: usize,
    from: SocketAddr,
) -> usize {
    let from = net::canonical(from);
    if from.ip() != assoc.client_ip {
        return 0; // not our client: never a reflector
    }
    match assoc.client_port {
        Some(p) if p != from.port() => return 0,
        Some(_) => {}
        None => assoc.client_port = Some(from.port()),
    }
    let datagram = &ctx.udp_buf[..n];
    let (header, start) = match socks::parse_udp_header(datagram) {
        Ok(Status::Complete(h, start)) if h.frag == 0 => (h, start),
        // Fragments are not supported (as in most servers); malformed: dropped.
        _ => return 0,
    };
    let dest = match header.dest {
        Dest::Addr(a) => net::canonical(a),
        Dest::Name(name, port) => {
            let key_name = (Box::<str>::from(name), port);
            match assoc.names.get_mut(&key_name) {
                Some(Name::Resolved(Some(a))) => *a,
                Some(Name::Resolved(None)) => return 0,
                Some(Name::Pending(held)) => {
                    let payload = &datagram[start..];
                    if held.len() < HELD_PER_NAME && assoc.held_bytes + payload.len() <= HELD_BYTES
                    {
                        held.push(payload.into());
                        assoc.held_bytes += payload.len();
                    }
                    return 0;
                }
                None => {
                    let pending = assoc
                        .names
                        .values()
                        .filter(|n| matches!(n, Name::Pending(_)))
                        .count();
                    if assoc.names.len() >= MAX_DESTINATIONS || pending >= LOOKUPS {
                        limit(assoc, "names");
                        return 0;
                    }
                    let payload = &datagram[start..];
                    let held: Vec<Box<[u8]>> = if assoc.held_bytes + payload.len() <= HELD_BYTES {
                        assoc.held_bytes += payload.len();
                        vec![payload.into()]
                    } else {
                        Vec::new()
                    };
                    assoc.names.insert(key_name, Name::Pending(held));
                    let job = Job {
                        key: conn.key,
                        id: conn.id,
                        host: name.to_string(),
                        port,
                        client: assoc.client_ip,
                        deadline: ctx.now + ctx.timeouts.connect,
                    };
                    ctx.resolver.submit(job, ctx.now);
                    return 0;
                }
            }
        }
    };
    // The payload stays in the shared buffer; `ctx` is needed mutably to route.
    send_range(assoc, ctx, conn, dest, start..n)
}

fn send_range(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    dest: SocketAddr,
    range: std::ops::Range<usize>,
) -> usize {
    let Some((link, socket)) = route(assoc, ctx, conn, dest) else {
        return 0;
    };
    let payload = &ctx.udp_buf[range];
    match attempt(|| socket.send_to(payload, dest)) {
        Outcome::Continue(sent) => {
            ctx.links.add_bytes(link, sent as u64, 0);
            sent
        }
        // A full send buffer or an ICMP error: UDP may drop.
        _ => 0,
    }
}

/// Sends `payload` (not in the shared buffer) to `dest`.
fn send(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    dest: SocketAddr,
    payload: &[u8],
) -> usize {
    let Some((link, socket)) = route(assoc, ctx, conn, dest) else {
        return 0;
    };
    match attempt(|| socket.send_to(payload, dest)) {
        Outcome::Continue(sent) => {
            ctx.links.add_bytes(link, sent as u64, 0);
            sent
        }
        _ => 0,
    }
}

/// The link and outgoing socket for `dest`: its pinned link, or a new pick.
fn route<'a>(
    assoc: &'a mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    dest: SocketAddr,
) -> Option<(usize, &'a UdpSocket)> {
    if !net::is_connectable(dest) || ctx.is_self(dest) {
        return None;
    }
    let pinned = assoc.routes.get(&dest).copied();
    let link = match pinned {
        Some(link) => link,
        None => {
            if assoc.routes.len() >= MAX_DESTINATIONS {
                limit(assoc, "destinations");
                return None;
            }
            // Pinned below, once its socket is open.
            ctx.links.pick_for_datagrams(dest.ip())?
        }
    };
    // A link that joined after the association started has no slot yet.
    if link >= assoc.outs.len() {
        assoc.outs.resize_with(link + 1, || None);
    }
    // A link whose address changed (DHCP renew, roaming) needs a socket
    // bound to the new one; the old one could only fail.
    let bound = assoc.outs[link].as_ref().map(|(_, _, ip)| *ip);
    if bound.is_some_and(|ip| Some(ip) != ctx.links.get(link).ip()) {
        if let Some((mut stale, _, _)) = assoc.outs[link].take() {
            let _ = ctx.registry.deregister(&mut stale);
        }
    }
    if assoc.outs[link].is_none() {
        match open_out(ctx, conn, link, dest.is_ipv6()) {
            Ok((socket, ip)) => assoc.outs[link] = Some((socket, true, ip)),
            Err(e) => {
                log::debug!(
                    "cannot open a UDP socket on link {}: {e}",
                    ctx.links.get(link).label()
                );
                return None;
            }
        }
    }
    if pinned.is_none() {
        assoc.routes.insert(dest, link);
    }
    assoc.outs[link].as_ref().map(|(s, _, _)| (link, s))
}

/// An outgoing UDP socket bound to the link's address (and interface).
fn open_out(
    ctx: &mut Ctx<'_>,
    conn: Handle,
    link: usize,
    ipv6: bool,
) -> io::Result<(UdpSocket, IpAddr)> {
    let through = ctx.links.get(link);
    let ip = through
        .ip()
        .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    if let Some(dev) = through.device() {
        sys::bind_device(&socket, dev, ipv6)?;
    }
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    let mut socket = UdpSocket::from_std(socket.into());
    let n = u8::try_from(link).expect("at most 64 links");
    ctx.registry
        .register(&mut socket, conn.token(Side::UdpOut(n)), Interest::READABLE)?;
    Ok((socket, ip))
}

/// A reply from `from` is in `ctx.udp_buf[HEADROOM..HEADROOM + n]`: put the
/// header in front and send it to the client. Returns the payload bytes.
fn to_client(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    link: usize,
    n: usize,
    from: SocketAddr,
) -> usize {
    // Only destinations the client sent to may answer, on their own link.
    if assoc.routes.get(&from) != Some(&link) {
        return 0;
    }
    let Some(client) = assoc.client_addr() else {
        return 0;
    };
    let start = HEADROOM - socks::udp_header_len(from);
    socks::emit_udp_header(from, &mut ctx.udp_buf[start..HEADROOM]);
    let datagram = &ctx.udp_buf[start..HEADROOM + n];
    match attempt(|| assoc.relay.send_to(datagram, client)) {
        Outcome::Continue(_) => n,
        _ => 0,
    }
}

fn limit(assoc: &mut Assoc, what: &str) {
    if !std::mem::replace(&mut assoc.limited, true) {
        log::warn!(
            "a UDP association reached its limit of {what} (at most {MAX_DESTINATIONS}, \
             {LOOKUPS} resolving at once); datagrams beyond it are dropped"
        );
    }
}
