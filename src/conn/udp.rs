//! UDP ASSOCIATE (RFC 1928 §7): datagrams relayed for as long as the TCP
//! control connection lives, each destination pinned to one link.
//!
//! The client sends `RSV FRAG ATYP DST.ADDR DST.PORT DATA` to the relay
//! socket; only its own address may (the control connection's IP, and the
//! port it announced, else the first one seen), so the relay is no open
//! reflector. The first datagram to a destination picks a link with the
//! weighted selector, and the destination keeps it (a uTP flow must keep its
//! source address). Each link used gets one outgoing UDP socket, bound like
//! TCP connections are. Replies are accepted only from live destinations,
//! and come back with a header naming their source.
//!
//! Destinations and names live in a [`Table`]: a destination is live while
//! a datagram passes either way within the idle time (`--udp-idle-timeout`,
//! 2 minutes by default, as RFC 4787 asks of a NAT), then idle: replies
//! from it are dropped, but its link is remembered, so when the client
//! sends to it again it goes out the same way while that link is up. At
//! the cap (`--udp-max-destinations`) the least recently used idle one is
//! forgotten to make room; while all are live, a new destination is
//! refused (a live flow is never cut for a newcomer). An idle name is
//! resolved again.
//!
//! A destination may also be placed on a `socks5://` or `socks5h://` link:
//! its datagrams then go through a UDP ASSOCIATE of the association's own
//! with that upstream (see [`super::udp_upstream`]). A name the client
//! sends is then placed before it is resolved; when the pick is a
//! `socks5h://` link it goes on unresolved, otherwise it is resolved here
//! and its address placed as any address.
//!
//! Datagrams move through one buffer the reactor lends (with headroom for
//! the header in front of a reply): nothing is allocated per datagram, except
//! the few held while a destination's name resolves, and a new table entry.

mod via;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Registry};
use socket2::{Domain, Protocol, Socket, Type};

use super::ctx::Ctx;
use super::io::{attempt, read, Outcome, Ready};
use super::token::{Handle, Side};
use super::udp_upstream::Legs;
use crate::balance::Seen;
use crate::dns::{Job, Resolver};
use crate::evidence;
use crate::metrics::Limit;
use crate::net;
use crate::reach::Reach;
use crate::socks::{self, Dest, Status};
use crate::sys;
use crate::udp_table::Table;
use via::{from_upstream, place, place_name, send_whole, via_name};

/// Associations open at once, across clients.
pub const MAX_ASSOCIATIONS: usize = 4096;
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
/// A name key: the name's bytes (at most 255), then the port, big-endian.
const NAME_KEY: usize = 255 + 2;

enum Name {
    /// Being resolved; datagrams for it wait here.
    Pending(Vec<Box<[u8]>>),
    /// The address it resolved to.
    Resolved(SocketAddr),
    /// Placed on this `socks5h://` link: it goes on unresolved.
    Via(u8),
}

impl Default for Name {
    fn default() -> Name {
        Name::Pending(Vec::new())
    }
}

/// One link's outgoing socket.
struct Out {
    socket: UdpSocket,
    readable: bool,
    /// The link's address it is bound to.
    ip: IpAddr,
}

/// Where a destination's datagrams go: its link (index), and the period it
/// last answered in ([`Seen`]): a destination that answers counts on its
/// link as a busy connection does, so that learned balancing places new
/// ones by the live destinations a link carries, not by every address a
/// client tried (most of a BitTorrent client's never answer).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Route {
    pub link: u8,
    pub seen: Seen,
}

pub struct Assoc {
    relay: UdpSocket,
    relay_readable: bool,
    client_ip: IpAddr,
    /// Announced in the request, or learnt from the first datagram.
    client_port: Option<u16>,
    /// Each destination's link, and when it last answered.
    routes: Table<SocketAddr, Route>,
    /// Outgoing sockets by link index, made on first use.
    outs: Vec<Option<Out>>,
    /// UDP associations with the upstreams of proxy links, made on first use.
    legs: Legs,
    /// Links counted as carrying this association (a bit per link index).
    counted: u64,
    /// Names by [`name_key`].
    names: Table<Box<[u8]>, Name>,
    /// Names being resolved.
    lookups: usize,
    /// Bytes of datagrams held for names being resolved.
    held_bytes: usize,
    /// The destination cap was reached and logged (once per association).
    full: bool,
    /// A new destination was refused, every one being live; logged once.
    refused: bool,
    /// Too many names were resolving at once, logged once.
    limited: bool,
}

impl Assoc {
    pub fn on_event(&mut self, side: Side, event: &Event) {
        if self.legs.on_event(side, event) {
            return;
        }
        match side {
            Side::UdpRelay => self.relay_readable = true,
            Side::UdpOut(n) => {
                if let Some(Some(out)) = self.outs.get_mut(n as usize) {
                    out.readable = true;
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
        for out in self.outs.iter_mut().flatten() {
            let _ = registry.deregister(&mut out.socket);
        }
    }

    /// When a live destination or name next goes idle, unless used first,
    /// or a leg's handshake (given `connect`, the timeout) times out: the
    /// association should look again then ([`Assoc::run`] does).
    pub fn next_expiry(&self, connect: Duration) -> Option<Instant> {
        [
            self.routes.next_expiry(),
            self.names.next_expiry(),
            self.legs.next_deadline(connect),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Destinations and names unused for the idle time go idle; amortized
    /// O(1) per datagram (each entry moves once per time it was used).
    fn expire(&mut self, ctx: &mut Ctx<'_>, conn: Handle) {
        let links = &mut *ctx.links;
        self.routes
            .expire(ctx.now, |dest, &mut Route { link, .. }| {
                links.pin(usize::from(link), false);
                log::debug!(
                    "#{} UDP {dest} idle: forgotten (remembered on link {})",
                    conn.id,
                    links.get(usize::from(link)).label()
                );
            });
        // A name idle while it resolves waits for its answer as it is; a
        // resolved one will be resolved again.
        self.names.expire(ctx.now, |key, _| {
            let (name, port) = key.split_at(key.len() - 2);
            log::debug!(
                "#{} UDP name {}:{} idle: forgotten",
                conn.id,
                String::from_utf8_lossy(name),
                u16::from_be_bytes([port[0], port[1]])
            );
        });
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
    /// This client has its `--max-client-associations` open.
    ClientFull,
    Relay(io::Error),
}

impl Assoc {
    /// Its sockets: the relay socket, and one per link it sent out by.
    pub fn sockets(&self) -> usize {
        1 + self.outs.iter().flatten().count() + self.legs.sockets()
    }

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
            ctx.counters.limit(Limit::Associations);
            if ctx.notices.associations_full.allow(ctx.now) {
                log::warn!(
                    "#{} {client}: UDP ASSOCIATE refused: {MAX_ASSOCIATIONS} associations are open",
                    conn.id,
                );
            }
            return Err(Refusal::Full);
        }
        let client_ip = client.ip().to_canonical();
        let mine = ctx
            .client_associations
            .get(&client_ip)
            .copied()
            .unwrap_or(0);
        if mine >= ctx.max_client_associations {
            ctx.counters.limit(Limit::ClientAssociations);
            if ctx.notices.client_associations.allow(ctx.now) {
                log::warn!(
                    "#{} {client}: UDP ASSOCIATE refused: this client has {} open \
                     (--max-client-associations)",
                    conn.id,
                    ctx.max_client_associations
                );
            }
            return Err(Refusal::ClientFull);
        }
        // On a dual-stack listener an IPv4 client reached `::ffff:a.b.c.d`:
        // its relay is an IPv4 socket on `a.b.c.d`, which it can name.
        let mut relay = UdpSocket::bind(SocketAddr::new(local.ip().to_canonical(), 0))
            .map_err(Refusal::Relay)?;
        ctx.registry
            .register(&mut relay, conn.token(Side::UdpRelay), Interest::READABLE)
            .map_err(Refusal::Relay)?;
        *ctx.client_associations.entry(client_ip).or_default() += 1;
        *ctx.associations += 1;
        let (cap, idle) = (ctx.timeouts.udp_destinations, ctx.timeouts.udp_idle);
        Ok(Assoc {
            relay,
            relay_readable: true,
            client_ip: client.ip().to_canonical(),
            client_port,
            routes: Table::new(cap, idle),
            outs: (0..ctx.links.iter().count()).map(|_| None).collect(),
            legs: Legs::default(),
            counted: 0,
            names: Table::new(cap, idle),
            lookups: 0,
            held_bytes: 0,
            full: false,
            refused: false,
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
        self.expire(ctx, conn);
        let (mut up, mut down) = (0u64, 0u64);
        let mut orphans = Vec::new();
        let ended = self.legs.drive(ctx, conn, &mut orphans);
        if ended != 0 {
            self.forget_links(ctx, conn, ended);
            // Datagrams held for a leg refused: placed again, as
            // if the client sent them now.
            if let Some(client) = self.client_addr() {
                for d in orphans {
                    ctx.udp_buf[..d.len()].copy_from_slice(&d);
                    up += from_client(self, ctx, conn, d.len(), client) as u64;
                }
            }
        }
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
                let Some(Some(out)) = self.outs.get_mut(link) else {
                    break;
                };
                if !out.readable {
                    break;
                }
                match attempt(|| out.socket.recv_from(&mut ctx.udp_buf[HEADROOM..])) {
                    Outcome::Continue((n, from)) => {
                        down += to_client(self, ctx, link, n, net::canonical(from)) as u64;
                    }
                    Outcome::WouldBlock => out.readable = false,
                    _ => {}
                }
            }
            busy |= matches!(self.outs.get(link), Some(Some(out)) if out.readable);
        }
        let mut legs = self.legs.readable();
        while legs != 0 {
            let link = legs.trailing_zeros() as usize;
            legs &= legs - 1;
            for _ in 0..BURST {
                match self.legs.recv(link, &mut ctx.udp_buf[..]) {
                    None => break,
                    Some((0, _)) => {}
                    Some((n, start)) => down += from_upstream(self, ctx, link, n, start) as u64,
                }
            }
        }
        busy |= self.legs.readable() != 0;
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
        let mut key = [0u8; NAME_KEY];
        let Some(key) = name_key(&mut key, &host, port) else {
            return 0;
        };
        // A name that did not resolve is forgotten, so a later datagram
        // asks again (a passing DNS failure does not stick). One evicted
        // while it resolved is kept again.
        let before = match (addr, self.names.touch(key, ctx.now)) {
            (Some(a), Some(t)) => Some(std::mem::replace(t.value, Name::Resolved(a))),
            (Some(a), None) => {
                if let Ok(gone) = self.names.insert(key.into(), Name::Resolved(a), ctx.now) {
                    self.forget_name(gone.map(|g| g.value));
                }
                None
            }
            (None, _) => self.names.remove(key).map(|(v, _)| v),
        };
        let Some(Name::Pending(held)) = before else {
            return 0;
        };
        self.lookups -= 1;
        self.held_bytes -= held.iter().map(|d| d.len()).sum::<usize>();
        let mut up = 0;
        if let Some(dest) = addr {
            for datagram in held {
                up += send(self, ctx, conn, dest, &datagram) as u64;
            }
        }
        up
    }

    /// Accounts for a name that left the table while it was resolving.
    fn forget_name(&mut self, name: Option<Name>) {
        if let Some(Name::Pending(held)) = name {
            self.lookups -= 1;
            self.held_bytes -= held.iter().map(|d| d.len()).sum::<usize>();
        }
    }

    /// Closes the association's sockets; its links count it no more.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        self.deregister(ctx.registry);
        self.legs.close(ctx);
        for gone in self.routes.drain() {
            if gone.was_live {
                ctx.links.pin(usize::from(gone.value.link), false);
            }
        }
        for link in 0..self.outs.len() {
            if self.counted & (1 << link) != 0 {
                ctx.links.closed(link);
            }
        }
        *ctx.associations = ctx.associations.saturating_sub(1);
        if let Some(mine) = ctx.client_associations.get_mut(&self.client_ip) {
            *mine -= 1;
            if *mine == 0 {
                ctx.client_associations.remove(&self.client_ip);
            }
        }
    }
}

/// The table key of a name: its bytes, then the port. `None` for a name
/// longer than SOCKS allows (255 bytes).
fn name_key<'k>(buf: &'k mut [u8; NAME_KEY], name: &str, port: u16) -> Option<&'k [u8]> {
    let len = name.len();
    if len > NAME_KEY - 2 {
        return None;
    }
    buf[..len].copy_from_slice(name.as_bytes());
    buf[len..len + 2].copy_from_slice(&port.to_be_bytes());
    Some(&buf[..len + 2])
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
            let mut key = [0u8; NAME_KEY];
            let Some(key) = name_key(&mut key, name, port) else {
                return 0;
            };
            let payload = &datagram[start..];
            match assoc.names.touch(key, ctx.now) {
                Some(t) => match t.value {
                    Name::Via(link) => {
                        let link = usize::from(*link);
                        return send_whole(assoc, ctx, link, n, start);
                    }
                    // An idle name is resolved again, as if new (unless
                    // too many are: then it goes where it went).
                    Name::Resolved(a) if t.was_live || assoc.lookups >= LOOKUPS => *a,
                    Name::Resolved(_) => {
                        *t.value = Name::Pending(Vec::new());
                        let when = (ctx.now, ctx.timeouts.connect);
                        return look_up(
                            assoc,
                            ctx.resolver,
                            when,
                            conn,
                            key,
                            (name, port),
                            payload,
                        );
                    }
                    Name::Pending(_) => return hold(assoc, key, payload),
                },
                None => {
                    if let Some(link) = place_name(ctx.links, ctx.now) {
                        return via_name(assoc, ctx, conn, key, link, (n, start));
                    }
                    if assoc.lookups >= LOOKUPS {
                        limit(assoc, "names resolving at once", LOOKUPS);
                        return 0;
                    }
                    let Ok(gone) = assoc.names.insert(key.into(), Name::default(), ctx.now) else {
                        ctx.counters.limit(Limit::UdpDestinations);
                        refuse(assoc, conn, ctx.timeouts.udp_destinations, "names");
                        return 0;
                    };
                    assoc.forget_name(gone.map(|g| g.value));
                    let when = (ctx.now, ctx.timeouts.connect);
                    return look_up(assoc, ctx.resolver, when, conn, key, (name, port), payload);
                }
            }
        }
    };
    // The payload stays in the shared buffer; `ctx` is needed mutably to route.
    send_range(assoc, ctx, conn, dest, start..n)
}

/// Keeps a copy of `payload` for the name `key` being resolved, if the
/// association holds little enough. Returns 0 (nothing sent yet).
fn hold(assoc: &mut Assoc, key: &[u8], payload: &[u8]) -> usize {
    if assoc.held_bytes + payload.len() > HELD_BYTES {
        return 0;
    }
    if let Some(Name::Pending(held)) = assoc.names.get_mut(key) {
        if held.len() < HELD_PER_NAME {
            held.push(payload.into());
            assoc.held_bytes += payload.len();
        }
    }
    0
}

/// Starts resolving a name of the association (new, or idle again),
/// holding the datagram that asked for it; returns what `hold` says. `name`
/// borrows the datagram buffer, so the resolver is passed apart from the
/// rest of the context.
fn look_up(
    assoc: &mut Assoc,
    resolver: &mut Resolver,
    (now, timeout): (Instant, Duration),
    conn: Handle,
    key: &[u8],
    (name, port): (&str, u16),
    payload: &[u8],
) -> usize {
    assoc.lookups += 1;
    let held = hold(assoc, key, payload);
    log::debug!("#{} UDP resolving {name}:{port}", conn.id);
    let job = Job {
        key: conn.key,
        id: conn.id,
        host: name.to_string(),
        port,
        client: assoc.client_ip,
        deadline: now + timeout,
    };
    resolver.submit(job, now);
    held
}

fn send_range(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    dest: SocketAddr,
    range: Range<usize>,
) -> usize {
    let Some(link) = route(assoc, ctx, conn, dest) else {
        return 0;
    };
    let sent = if assoc.legs.has(link) {
        // Through an upstream: the header goes in front, where the
        // client's was (as long, or longer for an IPv4-mapped address).
        let at = range.start - socks::udp_header_len(dest);
        socks::emit_udp_header(dest, &mut ctx.udp_buf[at..range.start]);
        assoc.legs.send(ctx, link, at..range.end, range.len())
    } else {
        let Some(Some(out)) = assoc.outs.get(link) else {
            return 0;
        };
        let payload = &ctx.udp_buf[range];
        match attempt(|| out.socket.send_to(payload, dest)) {
            Outcome::Continue(sent) => {
                ctx.links.datagram_up(link, sent as u64);
                sent
            }
            // A full send buffer or an ICMP error: UDP may drop.
            _ => 0,
        }
    };
    // What goes to a destination that answered makes it busy too (a peer
    // we upload to answers with small acknowledgements).
    if sent > 0 {
        if let Some(route) = assoc.routes.get_mut(&dest) {
            ctx.links.sent(link, &mut route.seen, sent as u64);
        }
    }
    sent
}

/// Sends `payload` (not in the shared buffer, which is free then) to
/// `dest`: it is copied there, behind room for a header.
fn send(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    dest: SocketAddr,
    payload: &[u8],
) -> usize {
    let range = HEADROOM..HEADROOM + payload.len();
    ctx.udp_buf[range.clone()].copy_from_slice(payload);
    send_range(assoc, ctx, conn, dest, range)
}

/// The link for `dest`, its socket (or leg) open: its pinned link; for
/// one that comes back after idling, the link it had while that is up (or
/// its leg open); else a new pick. The destination becomes the most
/// recently used.
fn route(assoc: &mut Assoc, ctx: &mut Ctx<'_>, conn: Handle, dest: SocketAddr) -> Option<usize> {
    if !net::is_connectable(dest) || ctx.is_self(dest) {
        return None;
    }
    // (link, newly pinned, already in the table)
    let (link, pinned, known) = match assoc.routes.touch(&dest, ctx.now) {
        Some(t) if t.was_live => (usize::from(t.value.link), false, true),
        Some(t) => {
            let before = usize::from(t.value.link);
            // Back on its link as it was, or placed anew: then not
            // counted as answering until it does.
            let route = if ctx.links.is_usable(before) || assoc.legs.has(before) {
                Some(*t.value)
            } else {
                place(ctx, dest).map(|link| Route {
                    link: link as u8,
                    seen: Seen::default(),
                })
            };
            match route {
                Some(route) => {
                    *t.value = route;
                    (usize::from(route.link), true, true)
                }
                None => {
                    assoc.routes.remove(&dest);
                    return None;
                }
            }
        }
        // Put in the table below, once its socket is open.
        None => {
            if !assoc.routes.has_room() {
                ctx.counters.limit(Limit::UdpDestinations);
                refuse(assoc, conn, ctx.timeouts.udp_destinations, "destinations");
                return None;
            }
            (place(ctx, dest)?, true, false)
        }
    };
    let opened = match ctx.links.get(link).as_proxy() {
        Some(_) => assoc.legs.ensure(ctx, conn, link),
        None => ensure_out(assoc, ctx, conn, link, dest.is_ipv6()),
    };
    if let Err(e) = opened {
        log::debug!(
            "cannot open a UDP socket on link {}: {e}",
            ctx.links.get(link).label()
        );
        // Forgotten: a live one stops counting on its link.
        if known && !pinned {
            ctx.links.pin(link, false);
        }
        if known {
            assoc.routes.remove(&dest);
        }
        return None;
    }
    if pinned {
        ctx.links.pin(link, true);
    }
    if !known {
        let link_index = u8::try_from(link).expect("at most 64 links");
        // Room was checked above: an idle one at most gives way.
        let route = Route {
            link: link_index,
            seen: Seen::default(),
        };
        if let Ok(Some(gone)) = assoc.routes.insert(dest, route, ctx.now) {
            if gone.was_live {
                ctx.links.pin(usize::from(gone.value.link), false);
            }
            if !std::mem::replace(&mut assoc.full, true) {
                log::info!(
                    "#{} a UDP association reached {} destinations: from now on the \
                     least recently used idle ones are forgotten to make room",
                    conn.id,
                    ctx.timeouts.udp_destinations
                );
            }
        }
    }
    Some(link)
}

/// A link for a new destination: the selector's pick, unless only some
/// links reach it (see [`crate::reach`]: a LAN, or links on loopback for
/// this machine) and the pick is not one of them; then the first of those
/// that is up, else the first with an address. (A destination on this
/// machine with no link on loopback still takes a link: datagrams have no
/// socket outside the links yet.)
fn pick_link(ctx: &mut Ctx<'_>, dest: SocketAddr) -> Option<usize> {
    let picked = ctx.links.pick_for_datagrams(dest.ip(), ctx.now);
    let Reach::Only(set) = ctx.links.reach(dest) else {
        return picked;
    };
    if picked.is_some_and(|l| set & (1 << l) != 0) {
        return picked;
    }
    let links = &*ctx.links;
    let reaching = || evidence::members(set).filter(|&l| l < links.iter().count());
    reaching()
        .find(|&l| links.is_usable(l))
        .or_else(|| reaching().find(|&l| links.get(l).ip().is_some()))
}

/// Makes sure link `link` has an outgoing socket bound to its current
/// address. A link whose address changed (DHCP renew, roaming) needs a new
/// one; the old one could only fail.
fn ensure_out(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    link: usize,
    ipv6: bool,
) -> io::Result<()> {
    // A link that joined after the association started has no slot yet.
    if link >= assoc.outs.len() {
        assoc.outs.resize_with(link + 1, || None);
    }
    let current = ctx.links.get(link).ip();
    if let Some(out) = &assoc.outs[link] {
        if Some(out.ip) == current {
            return Ok(());
        }
    }
    if let Some(mut stale) = assoc.outs[link].take() {
        let _ = ctx.registry.deregister(&mut stale.socket);
    }
    let (socket, ip) = open_out(ctx, conn, link, ipv6)?;
    assoc.outs[link] = Some(Out {
        socket,
        readable: true,
        ip,
    });
    if assoc.counted & (1 << link) == 0 {
        assoc.counted |= 1 << link;
        ctx.links.associated(link);
    }
    Ok(())
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
    // Only live destinations may answer, on their own link; an answer keeps
    // them live.
    match assoc.routes.touch_live(&from, ctx.now) {
        Some(route) if usize::from(route.link) == link => {
            ctx.links.answered(link, &mut route.seen, n, ctx.now);
        }
        _ => return 0,
    }
    let Some(client) = assoc.client_addr() else {
        return 0;
    };
    let start = HEADROOM - socks::udp_header_len(from);
    socks::emit_udp_header(from, &mut ctx.udp_buf[start..HEADROOM]);
    let datagram = &ctx.udp_buf[start..HEADROOM + n];
    match attempt(|| assoc.relay.send_to(datagram, client)) {
        Outcome::Continue(_) => {
            ctx.links.datagram_down(link, n as u64);
            n
        }
        _ => 0,
    }
}

/// Every one of `cap` destinations (or names) is live: a new one is
/// dropped. Logged once per association.
fn refuse(assoc: &mut Assoc, conn: Handle, cap: usize, what: &str) {
    if !std::mem::replace(&mut assoc.refused, true) {
        log::warn!(
            "#{} a UDP association has {cap} live {what}, its cap: datagrams to new ones \
             are dropped until some go idle (--udp-max-destinations, --udp-idle-timeout)",
            conn.id
        );
    }
}

fn limit(assoc: &mut Assoc, what: &str, most: usize) {
    if !std::mem::replace(&mut assoc.limited, true) {
        log::warn!(
            "a UDP association reached its limit of {what} ({most}); \
             datagrams beyond it are dropped"
        );
    }
}
