//! One client connection, from its first byte to its close: the state
//! machine. Each phase lives in a module of its own and says what comes
//! next; only this file and `steps/` (what the connection does in each
//! state: handshake, relaying, UDP ASSOCIATE and BIND) change state.
//!
//! ```text
//! Handshake ─► Resolving ─► Connecting ─► Relaying ─► closed
//!     │            │   └─► ViaProxy ─┤   or Forwarding (HTTP: back to Handshake)
//!     │            │             │       (a proxy that fails: the next route)
//!     │            └─────────────┴───────────┼──► Closing (final reply, linger) ─► closed
//!     ├─► Associated (UDP ASSOCIATE) ─► closed
//!     └─► Binding (BIND) ─► Relaying
//! ```
//!
//! | module      | phase or piece                                              |
//! |-------------|-------------------------------------------------------------|
//! | `steps`     | the connection in each state: the transitions                |
//! | `handshake` | sniff, SOCKS5/4/4a and HTTP heads, credentials               |
//! | `connect`   | link choice, failover across links and addresses             |
//! | `routing`   | the route when links are proxies: a proxy or the interfaces  |
//! | `via_proxy` | connecting through a proxy link: its handshake, its blame    |
//! | `relay`     | bytes both ways: half-close, back-pressure, resets           |
//! | `relaying`  | a relaying connection's upstream, activity and timeouts      |
//! | `closing`   | after a final reply: EOF, then linger for the client's       |
//! | `forward`   | HTTP forward proxying: one exchange at a time, keep-alive    |
//! | `udp`       | UDP ASSOCIATE (`udp/via`: placing on upstream proxies)       |
//! | `udp_upstream` | an association's own UDP ASSOCIATE with a SOCKS5 upstream |
//! | `bind`      | BIND                                                         |
//! | `reply`     | what the client is told, queued before any relayed byte      |
//! | `upstream`  | the connected outgoing socket and its link                   |
//! | `pipe`      | one direction of a relay: a lent ring between two streams    |
//! | `io`        | the one helper every socket call goes through                |
//! | `request`   | what a client asked for                                      |
//! | `token`     | tokens: connection, generation, socket                       |
//! | `ctx`       | what the loop lends a connection while calling it            |
//! | `notice`    | rate-limited log lines                                       |
//!
//! The connection never waits: the reactor tells it which socket became ready
//! ([`Conn::on_event`]), then lets it do all it can ([`Conn::drive`]).
//! `docs/connection-lifetime.md` follows one connection through these.

use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::Interest;

use crate::dns::{Answer, Job};
use crate::net;
use crate::socks::{Command, Reply, Version};

mod bind;
mod closing;
mod connect;
mod ctx;
mod forward;
mod handshake;
mod io;
mod notice;
mod pipe;
mod relay;
mod relaying;
mod reply;
mod request;
mod routing;
mod steps;
mod token;
mod udp;
mod udp_upstream;
mod upstream;
mod via_proxy;

#[cfg(any(test, feature = "fuzzing"))]
mod fuzz_input;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(all(any(test, feature = "fuzzing"), target_os = "linux"))]
pub mod fuzzing_conn;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing_forward;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))] // the fuzz target uses a part
mod rig;
#[cfg(any(test, feature = "fuzzing"))]
mod testio;
#[cfg(test)]
mod tests;

pub use ctx::{Ctx, Timeouts, Timers};
pub use notice::{Budget, Notices, RateLimit};
pub use token::{from_token, Handle, Side};
pub use udp::BUFFER as UDP_BUFFER;

use bind::Binding;
use closing::Linger;
use connect::Connecting;
use forward::Forward;
use handshake::Handshake;
use io::Ready;
use relay::Relay;
use relaying::{Mark, Relaying};
use reply::Outbox;
use request::{Client, HttpRequest, SocksRequest, Target};
use udp::Assoc;
use upstream::Upstream;
use via_proxy::ViaProxy;

/// What the reactor should do with a connection after calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for readiness, a DNS answer or a deadline.
    Idle,
    /// Still has work but gave others a turn: call `drive` again soon.
    Yield,
    /// Done: call [`Conn::close`] and free the slot.
    Close,
}

/// A request on its way to an answer: who asked, the bytes the client sent
/// behind it, and for an HTTP forward request its exchange.
struct Pending {
    client: Client,
    pipelined: Vec<u8>,
    fwd: Option<Box<Forward>>,
    /// Through this proxy link once the name resolves (a `socks5://` link
    /// passes addresses), and the proxies tried before it.
    via: Option<(usize, crate::links::Tried)>,
    /// When a connect over routes that are proxies gives up as a whole,
    /// as one over interface links does (set at its first route).
    give_up_at: Option<Instant>,
}

/// What a finished HTTP forward exchange leaves for the next request: the
/// exchange (its origin) and, unless the origin misbehaved, its connection.
struct KeptAlive {
    fwd: Box<Forward>,
    open: Option<Relaying>,
}

enum State {
    /// Reading the request (the first, or the next on a kept-alive HTTP
    /// connection).
    Handshake(Handshake, Option<Box<KeptAlive>>),
    Resolving(Pending),
    Connecting(Connecting, Pending),
    /// Connecting through a link that is another proxy, and its handshake.
    ViaProxy(ViaProxy, Pending),
    Relaying(Relaying),
    /// An HTTP forward request's exchange with its origin.
    Forwarding(Relaying, Box<Forward>),
    /// UDP ASSOCIATE: relaying datagrams while the control connection lives.
    Associated(Box<Assoc>),
    /// BIND: listening for the one incoming connection.
    Binding(Binding, Pending),
    /// A final reply is going out; then the connection lingers until the
    /// client's EOF or [`closing::LINGER`].
    Closing(Linger),
    /// Between two states while a transition runs; never seen from outside.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Handshake(h, _) => h.phase().name(),
            State::Resolving(_) => "resolving",
            State::Connecting(..) => "connecting",
            State::ViaProxy(..) => "connecting via proxy",
            State::Relaying(_) => "relaying",
            State::Forwarding(..) => "forwarding",
            State::Associated(_) => "associated",
            State::Binding(..) => "binding",
            State::Closing(_) => "closing",
            State::Done => "done",
        }
    }
}

/// A step's result inside [`Conn::drive`]: either the state changed and the
/// new one should run, or the connection has nothing more to do for now.
enum Flow {
    Next,
    Stop(Progress),
}

/// The state to go on in, and whether to run it now.
type Step = (State, Flow);

pub struct Conn {
    handle: Handle,
    state: State,
    client: TcpStream,
    client_addr: SocketAddr,
    client_ready: Ready,
    /// Replies waiting to go out before anything relayed.
    outbox: Outbox,
    target: Option<Target>,
    /// The outgoing socket's local address once connected (or the relay's,
    /// or the BIND listener's), for the log.
    local: Option<SocketAddr>,
    deadline: Option<Instant>,
    started: Instant,
    /// Payload bytes relayed each way (handshakes excluded).
    bytes_up: u64,
    bytes_down: u64,
    /// The client was answered with an error.
    failed: bool,
    /// In the reactor's queue of connections that yielded.
    queued: bool,
    /// The balancing period it last carried bytes in (a busy connection
    /// counts against its link, an idle one does not).
    seen: crate::balance::Seen,
    /// Why the connection ended, for the log line.
    reason: &'static str,
    error: Option<std::io::Error>,
}

impl Conn {
    /// Registers an accepted client socket and arms the handshake deadline.
    pub fn accept(
        ctx: &mut Ctx<'_>,
        key: usize,
        id: u64,
        mut client: TcpStream,
        client_addr: SocketAddr,
    ) -> std::io::Result<Conn> {
        // Relayed bytes go out as they come; Nagle would only add latency.
        // On Linux an accepted socket inherits both from the listener.
        #[cfg(not(target_os = "linux"))]
        {
            let _ = client.set_nodelay(true);
            net::set_keepalive(&socket2::SockRef::from(&client));
        }
        let handle = Handle { key, id };
        ctx.registry.register(
            &mut client,
            handle.token(Side::Client),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut conn = Conn {
            handle,
            state: State::Handshake(Handshake::new(), None),
            client,
            client_addr,
            client_ready: Ready::default(),
            outbox: Outbox::default(),
            target: None,
            local: None,
            deadline: None,
            started: ctx.now,
            bytes_up: 0,
            bytes_down: 0,
            failed: false,
            queued: false,
            seen: crate::balance::Seen::default(),
            reason: "",
            error: None,
        };
        conn.arm(ctx, ctx.timeouts.handshake);
        Ok(conn)
    }

    /// The error reply queued since the last call, if any (for the metrics).
    pub fn take_error_reply(&mut self) -> Option<crate::metrics::ErrorReply> {
        self.outbox.take_said()
    }

    pub fn id(&self) -> u64 {
        self.handle.id
    }

    /// The client's address (an IPv4-mapped one as the IPv4 it is).
    pub fn client_ip(&self) -> std::net::IpAddr {
        self.client_addr.ip().to_canonical()
    }

    /// Whether an event with this token is for this connection, and not
    /// for an earlier one whose slab key it reuses.
    pub fn owns(&self, token: mio::Token) -> bool {
        self.handle.owns(token)
    }

    /// Marks the connection as waiting for another turn; false if it
    /// already was.
    pub fn mark_queued(&mut self) -> bool {
        !mem::replace(&mut self.queued, true)
    }

    /// Its turn came.
    pub fn unqueue(&mut self) {
        self.queued = false;
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The descriptors it holds now: its client's socket, and what its
    /// state has open (an upstream, connect attempts, a BIND listener, a
    /// UDP association's sockets). The reactor's descriptor budget adds
    /// these up.
    pub fn descriptors(&self) -> usize {
        1 + match &self.state {
            State::Handshake(_, kept) => {
                usize::from(kept.as_ref().is_some_and(|k| k.open.is_some()))
            }
            State::Connecting(c, _) => c.in_flight(),
            State::Relaying(_) | State::Forwarding(..) | State::Binding(..) => 1,
            State::ViaProxy(..) => 1,
            State::Associated(assoc) => assoc.sockets(),
            State::Resolving(_) | State::Closing(_) | State::Done => 0,
        }
    }

    /// Whether it carries a request a graceful stop should let finish: not
    /// a client still to send one (or between two on a kept-alive HTTP
    /// connection), nor one being closed.
    pub fn in_flight(&self) -> bool {
        !matches!(
            self.state,
            State::Handshake(..) | State::Closing(_) | State::Done
        )
    }

    /// Records the readiness an event reports for one of its sockets.
    pub fn on_event(&mut self, side: Side, event: &Event) {
        let ready = match (side, &mut self.state) {
            (Side::Client, _) => &mut self.client_ready,
            (Side::Upstream | Side::Racer, State::Connecting(c, _)) => match c.ready_mut(side) {
                Some(ready) => ready,
                None => return,
            },
            (Side::Upstream, State::Relaying(r) | State::Forwarding(r, _)) => &mut r.upstream.ready,
            (Side::Upstream, State::Binding(b, _)) => b.ready_mut(),
            (Side::Upstream, State::ViaProxy(v, _)) => v.ready_mut(),
            (Side::Upstream, State::Handshake(_, Some(kept))) => match &mut kept.open {
                Some(r) => &mut r.upstream.ready,
                None => return,
            },
            (Side::UdpRelay | Side::UdpOut(_) | Side::UdpControl(_), State::Associated(assoc)) => {
                return assoc.on_event(side, event);
            }
            _ => return, // a socket this state no longer has
        };
        ready.record(event);
    }

    /// Does all the work the sockets' readiness allows.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        loop {
            let state = mem::replace(&mut self.state, State::Done);
            let (next, flow) = match state {
                State::Handshake(hs, kept) => self.handshake(ctx, hs, kept),
                State::Resolving(pending) => self.waiting(State::Resolving(pending)),
                State::Connecting(c, pending) => self.connecting(ctx, c, pending),
                State::ViaProxy(v, pending) => self.via_proxy(ctx, v, pending),
                State::Relaying(r) => self.relaying(ctx, r),
                State::Forwarding(r, fwd) => self.forwarding(ctx, r, fwd),
                State::Associated(assoc) => self.associated(ctx, assoc),
                State::Binding(b, pending) => self.binding(ctx, b, pending),
                State::Closing(linger) => self.closing(linger),
                State::Done => (State::Done, Flow::Stop(Progress::Close)),
            };
            self.set_state(next);
            match flow {
                Flow::Next => continue,
                Flow::Stop(p) => return p,
            }
        }
    }

    /// A DNS answer for this connection arrived.
    pub fn on_resolved(&mut self, ctx: &mut Ctx<'_>, answer: Answer) -> Progress {
        match mem::replace(&mut self.state, State::Done) {
            State::Associated(mut assoc) => {
                let handle = self.handle;
                let up = assoc.name_resolved(ctx, handle, answer.host, answer.port, answer.result);
                self.bytes_up += up;
                self.state = State::Associated(assoc);
            }
            State::Resolving(pending) => {
                let (next, _) = self.resolved(ctx, pending, answer.result);
                self.set_state(next);
            }
            other => {
                self.state = other; // answered too late: the deadline already replied
                return Progress::Idle;
            }
        }
        self.drive(ctx)
    }

    /// The deadline armed last has passed (the reactor checked it is current).
    pub fn on_deadline(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        // (The reactor took the entry off its timers.)
        self.deadline = None;
        let (next, flow) = match mem::replace(&mut self.state, State::Done) {
            // Half an HTTP head is answered (RFC 9110 §15.5.9), not
            // just dropped: the client learns why.
            State::Handshake(hs, kept) if hs.half_http_head() => {
                self.reason = "HTTP request head timed out";
                if let Some(kept) = kept {
                    close_kept(ctx, *kept);
                }
                let detail = "the request head did not arrive in time";
                self.outbox.http_error(408, detail, "");
                (self.enter_closing(ctx), Flow::Next)
            }
            State::Handshake(hs, kept) => {
                self.reason = if kept.is_some() {
                    "done (idle keep-alive)"
                } else {
                    "handshake timed out"
                };
                (State::Handshake(hs, kept), Flow::Stop(Progress::Close))
            }
            State::Resolving(pending) => {
                Conn::unresolved_via(ctx, &pending);
                self.fail(
                    ctx,
                    pending.client,
                    Reply::HostUnreachable,
                    "name resolution timed out",
                    None,
                )
            }
            State::Connecting(mut c, pending) => {
                let next = c.on_timer(ctx, self.handle, ctx.timeouts.connect);
                self.connect_step(ctx, c, pending, next)
            }
            State::ViaProxy(v, pending) => self.via_timer(ctx, v, pending),
            State::Binding(b, pending) => {
                b.close(ctx);
                let reason = "no connection came to BIND";
                self.fail(ctx, pending.client, Reply::TtlExpired, reason, None)
            }
            State::Relaying(r) => match r.expired(&ctx.timeouts, ctx.now, None) {
                Some(reason) => {
                    self.reason = reason;
                    (State::Relaying(r), Flow::Stop(Progress::Close))
                }
                None => {
                    self.arm_at(ctx, r.deadline(&ctx.timeouts, None));
                    (State::Relaying(r), Flow::Stop(Progress::Idle))
                }
            },
            State::Forwarding(r, fwd) => match r.expired(&ctx.timeouts, ctx.now, fwd.waiting) {
                Some(reason) if !fwd.answered() && fwd.waiting.is_some() => {
                    self.reason = reason;
                    r.close(ctx);
                    self.outbox
                        .http_error(504, "the server sent no response in time", "");
                    (self.enter_closing(ctx), Flow::Next)
                }
                Some(reason) => {
                    self.reason = reason;
                    (State::Forwarding(r, fwd), Flow::Stop(Progress::Close))
                }
                None => {
                    self.arm_at(ctx, r.deadline(&ctx.timeouts, fwd.waiting));
                    (State::Forwarding(r, fwd), Flow::Stop(Progress::Idle))
                }
            },
            // Destinations went idle: the association forgets them as it runs.
            state @ State::Associated(_) => (state, Flow::Next),
            state @ (State::Closing(_) | State::Done) => (state, Flow::Stop(Progress::Close)),
        };
        self.set_state(next);
        match flow {
            Flow::Next => self.drive(ctx),
            Flow::Stop(p) => p,
        }
    }

    /// Closes its sockets, returns the rings, logs the connection's
    /// summary, and gives `(bytes up, bytes down)` for the totals.
    pub fn close(mut self, ctx: &mut Ctx<'_>) -> (u64, u64) {
        self.disarm(ctx);
        io::forget(ctx.registry, &mut self.client);
        let name = self.state.name();
        match mem::replace(&mut self.state, State::Done) {
            State::Handshake(_, Some(kept)) => close_kept(ctx, *kept),
            State::Connecting(c, _) => c.abandon(ctx),
            State::ViaProxy(v, _) => v.abandon(ctx),
            State::Resolving(pending) => Conn::unresolved_via(ctx, &pending),
            State::Relaying(r) | State::Forwarding(r, _) => r.close(ctx),
            State::Associated(assoc) => assoc.close(ctx),
            State::Binding(b, _) => b.close(ctx),
            _ => {}
        }
        let local = self
            .local
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let reason = if self.reason.is_empty() {
            name
        } else {
            self.reason
        };
        let error = self
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        // Connections the client was refused are worth a line without -d.
        let level = if self.failed && ctx.notices.failures.allow(ctx.now) {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "#{} {} -> {} via {}: up {} B, down {} B, {:.3} s, {}{}",
            self.handle.id,
            self.client_addr,
            self.target_text(),
            local,
            self.bytes_up,
            self.bytes_down,
            ctx.now.duration_since(self.started).as_secs_f64(),
            reason,
            error,
        );
        (self.bytes_up, self.bytes_down)
    }

    fn set_state(&mut self, next: State) {
        let (from, to) = (self.state.name(), next.name());
        if from != to && from != "done" {
            log::debug!("#{} state {from} => {to}", self.handle.id);
        }
        self.state = next;
    }

    fn target_text(&self) -> String {
        self.target
            .as_ref()
            .map_or_else(|| "-".to_string(), Target::to_string)
    }

    fn arm(&mut self, ctx: &mut Ctx<'_>, after: Duration) {
        self.arm_at(ctx, ctx.now + after);
    }

    /// Sets the deadline to `at`, unless it already is.
    fn arm_at(&mut self, ctx: &mut Ctx<'_>, at: Instant) {
        if self.deadline != Some(at) {
            self.disarm(ctx);
            self.deadline = Some(at);
            ctx.timers.insert((at, self.handle.key, self.handle.id));
        }
    }

    /// No deadline: the one armed is taken off the loop's timers.
    fn disarm(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(at) = self.deadline.take() {
            ctx.timers.remove(&(at, self.handle.key, self.handle.id));
        }
    }

    // --- connecting ------------------------------------------------------

    /// A CONNECT: through a proxy link or the interfaces (see `routing`).
    fn connect(&mut self, ctx: &mut Ctx<'_>, pending: Pending, target: Target) -> Step {
        if ctx.links.has_proxies() {
            return self.route(ctx, pending, target, 0);
        }
        self.connect_direct(ctx, pending, target)
    }

    /// Through the interfaces: to an address at once, or to a name once it
    /// resolves.
    fn connect_direct(&mut self, ctx: &mut Ctx<'_>, pending: Pending, target: Target) -> Step {
        let client = pending.client;
        let lookup = match &target {
            Target::Addr(addr) => Err(*addr),
            Target::Name(host, port) => Ok((host.to_string(), *port)),
        };
        self.target = Some(target);
        match lookup {
            Err(addr) if !net::is_connectable(addr) || ctx.is_self(addr) => {
                let reason = "destination not allowed";
                self.fail(ctx, client, Reply::NotAllowed, reason, None)
            }
            Err(addr) if ctx.links.can_reach(addr.ip()) => {
                self.start_connecting(ctx, pending, vec![addr])
            }
            Err(_) => self.missing_family(ctx, client),
            Ok((host, port)) => {
                let job = Job {
                    key: self.handle.key,
                    id: self.handle.id,
                    host,
                    port,
                    client: self.client_addr.ip().to_canonical(),
                    deadline: ctx.now + ctx.timeouts.connect,
                };
                ctx.resolver.submit(job, ctx.now);
                self.arm(ctx, ctx.timeouts.connect);
                (State::Resolving(pending), Flow::Next)
            }
        }
    }

    /// A name resolved (or did not): connect to what it gave.
    fn resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        pending: Pending,
        result: std::io::Result<Vec<SocketAddr>>,
    ) -> Step {
        if pending.via.is_some() {
            return self.resolved_via(ctx, pending, result);
        }
        let client = pending.client;
        let addrs = match result {
            Ok(addrs) => addrs,
            Err(e) => {
                log::debug!(
                    "#{} {}: name did not resolve: {e}",
                    self.handle.id,
                    self.target_text()
                );
                let reason = "name not resolved";
                return self.fail(ctx, client, Reply::HostUnreachable, reason, Some(e));
            }
        };
        let resolved: Vec<SocketAddr> = addrs.into_iter().map(net::canonical).collect();
        if resolved.iter().any(|&a| ctx.is_self(a)) {
            let reason = "the name is the proxy itself";
            return self.fail(ctx, client, Reply::NotAllowed, reason, None);
        }
        let addrs: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|&a| net::is_connectable(a))
            .collect();
        let connectable = addrs.len();
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| ctx.links.can_reach(a.ip()))
            .collect();
        if addrs.is_empty() {
            if connectable > 0 {
                return self.missing_family(ctx, client);
            }
            let reason = "name has no address to connect to";
            return self.fail(ctx, client, Reply::HostUnreachable, reason, None);
        }
        self.start_connecting(ctx, pending, addrs)
    }

    fn start_connecting(
        &mut self,
        ctx: &mut Ctx<'_>,
        pending: Pending,
        addrs: Vec<SocketAddr>,
    ) -> Step {
        let (c, next) = Connecting::start(ctx, self.handle, addrs);
        self.connect_step(ctx, c, pending, next)
    }

    fn connecting(&mut self, ctx: &mut Ctx<'_>, mut c: Connecting, pending: Pending) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Connecting(c, pending), "client write error", e);
        }
        let next = c.poll(ctx, self.handle);
        self.connect_step(ctx, c, pending, next)
    }

    fn connect_step(
        &mut self,
        ctx: &mut Ctx<'_>,
        c: Connecting,
        pending: Pending,
        next: connect::Next,
    ) -> Step {
        match next {
            connect::Next::Wait => {
                if let Some(at) = c.deadline(ctx.timeouts.connect) {
                    self.arm_at(ctx, at);
                }
                (State::Connecting(c, pending), Flow::Stop(Progress::Idle))
            }
            connect::Next::Connected(upstream) => {
                self.local = upstream.stream.local_addr().ok();
                self.error = None;
                self.relay_with(ctx, pending, upstream, self.local)
            }
            connect::Next::Failed(reply, e) => {
                self.fail(ctx, pending.client, reply, "connect failed", e)
            }
        }
    }

    /// The request succeeded: answer it, naming `bound`, and relay.
    fn relay_with(
        &mut self,
        ctx: &mut Ctx<'_>,
        pending: Pending,
        upstream: Upstream,
        bound: Option<SocketAddr>,
    ) -> Step {
        self.outbox
            .reply(pending.client, Reply::Succeeded, bound, None);
        self.disarm(ctx);
        // Payload the client pipelined behind its request counts as relayed.
        let relay = Relay::new(&pending.pipelined, ctx.pool);
        self.count(ctx, upstream.link(), pending.pipelined.len() as u64, 0);
        let r = Relaying::new(upstream, relay, ctx.now);
        match pending.fwd {
            None => (State::Relaying(r), Flow::Next),
            Some(fwd) => (State::Forwarding(r, fwd), Flow::Next),
        }
    }

    fn missing_family(&mut self, ctx: &mut Ctx<'_>, client: Client) -> Step {
        let family = match &self.target {
            Some(Target::Addr(a)) if a.is_ipv6() => "IPv6",
            Some(Target::Addr(_)) => "IPv4",
            _ => "the resolved addresses'",
        };
        let msg = format!(
            "#{} {}: no local {family} address to dispatch {} through; add one to the start arguments",
            self.handle.id,
            self.client_addr,
            self.target_text()
        );
        if ctx.notices.missing_family.allow(ctx.now) {
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
        let reason = "no local address of that family";
        self.fail(ctx, client, Reply::NetworkUnreachable, reason, None)
    }

    // --- replies and closing ---------------------------------------------

    /// Answers the request with an error and starts closing.
    fn fail(
        &mut self,
        ctx: &mut Ctx<'_>,
        client: Client,
        reply: Reply,
        reason: &'static str,
        error: Option<std::io::Error>,
    ) -> Step {
        if error.is_some() {
            self.error = error;
        }
        self.failed = true;
        self.outbox.reply(client, reply, None, self.error.as_ref());
        self.reason = reason;
        (self.enter_closing(ctx), Flow::Next)
    }

    fn enter_closing(&mut self, ctx: &mut Ctx<'_>) -> State {
        self.arm(ctx, closing::LINGER);
        State::Closing(Linger::default())
    }

    /// Sends the final reply, then lingers (see `closing.rs`).
    fn closing(&mut self, mut linger: Linger) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Closing(linger), "client write error", e);
        }
        if !self.outbox.is_empty() {
            return (State::Closing(linger), Flow::Stop(Progress::Idle));
        }
        match linger.run(&mut self.client, &mut self.client_ready) {
            closing::Next::Wait => (State::Closing(linger), Flow::Stop(Progress::Idle)),
            closing::Next::Done => (State::Closing(linger), Flow::Stop(Progress::Close)),
            closing::Next::Flooded => {
                self.reason = "client kept sending after the final reply";
                (State::Closing(linger), Flow::Stop(Progress::Close))
            }
        }
    }

    /// A state that only waits (for a DNS answer), flushing replies.
    fn waiting(&mut self, state: State) -> Step {
        match self.flush_outbox() {
            Ok(()) => (state, Flow::Stop(Progress::Idle)),
            Err(e) => self.broken(state, "client write error", e),
        }
    }

    fn flush_outbox(&mut self) -> std::io::Result<()> {
        self.outbox.flush(&mut self.client, &mut self.client_ready)
    }

    /// Ends the connection now, keeping `state` for [`Conn::close`] to
    /// release.
    fn broken(&mut self, state: State, reason: &'static str, e: std::io::Error) -> Step {
        self.reason = reason;
        self.error = Some(e);
        (state, Flow::Stop(Progress::Close))
    }
}

/// Closes a kept-alive HTTP connection's upstream, if it has one.
fn close_kept(ctx: &mut Ctx<'_>, kept: KeptAlive) {
    if let Some(open) = kept.open {
        open.close(ctx);
    }
}
