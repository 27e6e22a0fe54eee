//! One client connection, from its first byte to its close:
//!
//! ```text
//! Greeting ─► Request ─► Resolving ─► Connecting ─► Relaying ─► closed
//!     │          │           │             │
//!     └──────────┴───────────┴─────────────┴──► Closing (final reply, linger) ─► closed
//! ```
//!
//! The connection never waits: the reactor tells it which socket became ready
//! ([`Conn::on_event`]), then lets it do all it can ([`Conn::drive`]). Readiness
//! is edge-triggered, so each socket's `readable`/`writable` flag stays set
//! until a call on it shows the socket drained (`WouldBlock`, or on Linux a
//! short read or write: see `SHORT_IO_DRAINS`).
//!
//! Bytes travel through two rings: `up` (client → target) and `down`
//! (target → client). The handshake is read into `up`, so bytes a client
//! pipelines after its request are already in place to be relayed, and
//! replies are queued in `down`, so they go out in order before any data.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::auth::Credentials;
use crate::dns::{Job, Resolver};
use crate::http;
use crate::links::{Links, Tried};
use crate::net;
use crate::ring::{Ring, RingPool};
use crate::socks::{self, consts, Command, Dest, ParseError, Protocol, Reply, Status, Version};

mod bind;
mod forward;
mod udp;
use forward::Forward;
use udp::Assoc;
pub use udp::BUFFER as UDP_BUFFER;

/// Which of a connection's sockets a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    /// The outgoing TCP socket (or a BIND listener).
    Upstream,
    /// The UDP socket a UDP ASSOCIATE client sends its datagrams to.
    UdpRelay,
    /// The outgoing UDP socket of an association through link `n`.
    UdpOut(u8),
}

/// Bits of a token that name the side; the rest is the slab key.
const SIDE_BITS: u32 = 8;

/// A connection's token: its slab key, with the side in the low byte.
pub fn token(key: usize, side: Side) -> Token {
    let code = match side {
        Side::Client => 0,
        Side::Upstream => 1,
        Side::UdpRelay => 2,
        Side::UdpOut(n) => 3 + n as usize,
    };
    Token((key << SIDE_BITS) | code)
}

/// The slab key and side a token names.
pub fn from_token(token: Token) -> (usize, Side) {
    let side = match token.0 & ((1 << SIDE_BITS) - 1) {
        0 => Side::Client,
        1 => Side::Upstream,
        2 => Side::UdpRelay,
        n => Side::UdpOut((n - 3) as u8),
    };
    (token.0 >> SIDE_BITS, side)
}

/// How long a connection that ended with an error reply keeps reading (and
/// discarding) what the client still sends, so closing does not turn into a
/// reset that destroys the reply before the client reads it.
const LINGER: Duration = Duration::from_secs(2);

/// At most this much is read and thrown away while lingering.
const LINGER_DISCARD_MAX: usize = 64 * 1024;

/// Relay rounds (one read and one write each way) before a busy connection
/// yields the loop to the others.
const MAX_ROUNDS: usize = 16;

/// Deadlines waiting to fire: `(when, slab key, connection id)`. Entries are
/// never removed early; one whose connection has moved on is skipped.
pub type Timers = BinaryHeap<Reverse<(Instant, usize, u64)>>;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    pub connect: Duration,
}

/// Lets a warning through at most once a minute, so a misconfigured client
/// retrying in a loop does not flood the log.
#[derive(Default)]
pub struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    pub fn allow(&mut self, now: Instant) -> bool {
        let ok = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if ok {
            self.last = Some(now);
        }
        ok
    }
}

/// Lets a few lines through per window and counts the rest, so a burst of
/// failures is visible in the log without flooding it.
#[derive(Default)]
pub struct Budget {
    window: Option<Instant>,
    used: u32,
    suppressed: u32,
}

impl Budget {
    const LINES: u32 = 5;
    const WINDOW: Duration = Duration::from_secs(10);

    /// Whether a line may be logged now; a new window first reports how many
    /// were left out of the last one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|t| now.duration_since(t) >= Self::WINDOW)
        {
            if self.suppressed > 0 {
                log::info!(
                    "... and {} more failed connections not shown",
                    self.suppressed
                );
            }
            *self = Budget {
                window: Some(now),
                ..Budget::default()
            };
        }
        if self.used < Self::LINES {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[derive(Default)]
pub struct Notices {
    pub missing_family: RateLimit,
    /// Failed connections are logged at info level, a few at a time.
    pub failures: Budget,
}

/// What a connection needs from the loop that owns it.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub links: &'a mut Links,
    pub pool: &'a mut RingPool,
    pub resolver: &'a Resolver,
    pub timers: &'a mut Timers,
    pub notices: &'a mut Notices,
    pub auth: &'a Credentials,
    /// The buffer datagrams pass through ([`UDP_BUFFER`] bytes).
    pub udp_buf: &'a mut [u8],
    /// UDP associations open across connections.
    pub associations: &'a mut usize,
    /// The proxy's own listening address, which no request may target.
    pub listen: SocketAddr,
    /// Every address of this machine (for [`Ctx::is_self`] with a wildcard listener).
    pub local_ips: &'a [std::net::IpAddr],
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

#[derive(Debug, Default, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was reported: read until EOF.
    read_closed: bool,
    /// An error was reported: see [`Conn::socket_errors`].
    error: bool,
}

/// On Linux, a read that returns less than asked means the socket's receive
/// queue was empty at that moment; new data, a FIN or an error each raise a
/// new edge-triggered event. So the read that would only say `WouldBlock` can
/// be skipped, one syscall in three on the relay path. (A FIN that arrived
/// before the short read raised no new edge, which is why `read_closed` is
/// tracked.) Elsewhere readiness is only re-armed by `WouldBlock` (mio on
/// Windows), so the drain continues to it.
const SHORT_IO_DRAINS: bool = cfg!(target_os = "linux");

/// One direction of the relay.
#[derive(Default)]
struct Pipe {
    ring: Option<Ring>,
    /// The source sent EOF.
    eof: bool,
    /// EOF was passed on: the destination's write side is shut down.
    shut: bool,
    /// Payload bytes relayed (handshake excluded).
    bytes: u64,
}

impl Pipe {
    fn pending(&self) -> usize {
        self.ring.as_ref().map_or(0, Ring::len)
    }
}

/// The destination, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
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
enum Client {
    Socks(Version),
    /// `CONNECT host:port`: answered `200 Connection established`, then a tunnel.
    HttpConnect,
    /// `GET http://...`: the rewritten request is the first thing sent on.
    HttpForward,
}

enum State {
    /// Waiting for the first message: SOCKS5 greeting, SOCKS4 request or HTTP.
    Greeting,
    /// SOCKS5 username/password method chosen; waiting for the credentials.
    Auth,
    /// SOCKS5 method chosen; waiting for the request.
    Request,
    /// Waiting for an HTTP proxy request head (the first, or the next one
    /// on a kept-alive connection).
    HttpHead,
    Resolving {
        client: Client,
    },
    Connecting {
        client: Client,
        addrs: Vec<SocketAddr>,
        /// Index of the address being tried.
        at: usize,
        /// Links already tried for that address.
        tried: Tried,
        /// The link of the attempt in flight.
        link: Option<usize>,
        /// What to tell the client if every address fails.
        failure: Reply,
    },
    Relaying,
    /// UDP ASSOCIATE: relaying datagrams while the control connection lives.
    Associated(Box<Assoc>),
    /// BIND: listening for the one incoming connection.
    Binding {
        client: Client,
        listener: mio::net::TcpListener,
        link: usize,
    },
    /// A final reply is going out; then what the client still sends is read
    /// and discarded until its EOF or [`LINGER`].
    Closing,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Greeting => "greeting",
            State::Auth => "auth",
            State::Request => "request",
            State::HttpHead => "http request",
            State::Resolving { .. } => "resolving",
            State::Connecting { .. } => "connecting",
            State::Relaying => "relaying",
            State::Associated(_) => "associated",
            State::Binding { .. } => "binding",
            State::Closing => "closing",
        }
    }
}

pub struct Conn {
    key: usize,
    id: u64,
    state: State,
    client: TcpStream,
    client_addr: SocketAddr,
    client_ready: Ready,
    upstream: Option<TcpStream>,
    upstream_ready: Ready,
    /// The outgoing socket's local address once connected.
    local: Option<SocketAddr>,
    /// The link it went out by, once connected.
    link: Option<usize>,
    target: Option<Target>,
    up: Pipe,
    down: Pipe,
    deadline: Option<Instant>,
    started: Instant,
    /// The HTTP forward-proxy exchange, for clients using one.
    fwd: Option<Box<Forward>>,
    /// Bytes thrown away while lingering in `Closing`.
    discarded: usize,
    /// The client was answered with an error.
    failed: bool,
    /// In the reactor's queue of connections that yielded.
    queued: bool,
    /// Why the connection ended, for the log line.
    reason: &'static str,
    error: Option<io::Error>,
}

/// A step's result inside [`Conn::drive`]: either the state changed and the
/// new one should run, or the connection has nothing more to do for now.
enum Flow {
    Next,
    Stop(Progress),
}

impl Conn {
    /// Registers an accepted client socket and arms the handshake deadline.
    pub fn accept(
        ctx: &mut Ctx<'_>,
        key: usize,
        id: u64,
        mut client: TcpStream,
        client_addr: SocketAddr,
    ) -> io::Result<Conn> {
        // Relayed bytes go out as they come; Nagle would only add latency.
        // On Linux an accepted socket inherits both from the listener.
        #[cfg(not(target_os = "linux"))]
        {
            let _ = client.set_nodelay(true);
            net::set_keepalive(&socket2::SockRef::from(&client));
        }
        ctx.registry.register(
            &mut client,
            token(key, Side::Client),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut conn = Conn {
            key,
            id,
            state: State::Greeting,
            client,
            client_addr,
            client_ready: Ready::default(),
            upstream: None,
            upstream_ready: Ready::default(),
            local: None,
            link: None,
            target: None,
            up: Pipe::default(),
            down: Pipe::default(),
            deadline: None,
            started: ctx.now,
            fwd: None,
            discarded: 0,
            failed: false,
            queued: false,
            reason: "",
            error: None,
        };
        conn.arm(ctx, ctx.timeouts.handshake);
        Ok(conn)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Marks the connection as waiting for another turn; false if it
    /// already was.
    pub fn mark_queued(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Its turn came.
    pub fn unqueue(&mut self) {
        self.queued = false;
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Records the readiness an event reports. Errors and hang-ups count as
    /// both readable and writable: the next call on the socket reports them.
    pub fn on_event(&mut self, side: Side, event: &Event) {
        let ready = match side {
            Side::Client => &mut self.client_ready,
            Side::Upstream => &mut self.upstream_ready,
            Side::UdpRelay | Side::UdpOut(_) => {
                if let State::Associated(assoc) = &mut self.state {
                    assoc.on_readable(side);
                }
                return;
            }
        };
        let broken = event.is_error();
        ready.error |= broken;
        ready.read_closed |= event.is_read_closed() || broken;
        ready.readable |= event.is_readable() || ready.read_closed;
        ready.writable |= event.is_writable() || event.is_write_closed() || broken;
    }

    /// Does all the work the sockets' readiness allows.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        loop {
            let flow = match self.state {
                State::Greeting | State::Auth | State::Request | State::HttpHead => {
                    self.handshake(ctx)
                }
                State::Resolving { .. } => self.flush_replies(ctx),
                State::Connecting { .. } => self.connecting(ctx),
                State::Relaying => self.relay(ctx),
                State::Associated(_) => self.associated(ctx),
                State::Binding { .. } => self.binding(ctx),
                State::Closing => self.closing(ctx),
            };
            match flow {
                Flow::Next => continue,
                Flow::Stop(p) => return p,
            }
        }
    }

    /// A DNS answer for this connection arrived.
    pub fn on_resolved(&mut self, ctx: &mut Ctx<'_>, answer: crate::dns::Answer) -> Progress {
        let result = answer.result;
        if let State::Associated(_) = self.state {
            self.name_resolved(ctx, answer.host, answer.port, result);
            return self.drive(ctx);
        }
        let State::Resolving { client } = self.state else {
            return Progress::Idle; // answered too late: the deadline already replied
        };
        let addrs = match result {
            Ok(addrs) => addrs,
            Err(e) => {
                log::debug!(
                    "#{} {}: name did not resolve: {e}",
                    self.id,
                    self.target_text()
                );
                self.fail(
                    ctx,
                    client,
                    Reply::HostUnreachable,
                    "name not resolved",
                    Some(e),
                );
                return self.drive(ctx);
            }
        };
        let resolved: Vec<SocketAddr> = addrs.into_iter().map(net::canonical).collect();
        if resolved.iter().any(|&a| ctx.is_self(a)) {
            let reason = "the name is the proxy itself";
            self.fail(ctx, client, Reply::NotAllowed, reason, None);
            return self.drive(ctx);
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
                self.missing_family(ctx, client);
            } else {
                let reason = "name has no address to connect to";
                self.fail(ctx, client, Reply::HostUnreachable, reason, None);
            }
            return self.drive(ctx);
        }
        self.start_connecting(ctx, client, addrs);
        self.drive(ctx)
    }

    /// The deadline armed last has passed (the reactor checked it is current).
    pub fn on_deadline(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        self.deadline = None;
        match &mut self.state {
            State::HttpHead if self.fwd.is_some() => {
                self.reason = "done (idle keep-alive)";
                Progress::Close
            }
            State::Greeting | State::Auth | State::Request | State::HttpHead => {
                self.reason = "handshake timed out";
                Progress::Close
            }
            State::Resolving { client } => {
                let client = *client;
                self.fail(
                    ctx,
                    client,
                    Reply::HostUnreachable,
                    "name resolution timed out",
                    None,
                );
                self.drive(ctx)
            }
            State::Connecting { .. } => {
                self.attempt_failed(ctx, io::ErrorKind::TimedOut.into());
                self.drive(ctx)
            }
            State::Relaying | State::Associated(_) => Progress::Idle,
            State::Binding { client, .. } => {
                let client = *client;
                self.fail(
                    ctx,
                    client,
                    Reply::TtlExpired,
                    "no connection came to BIND",
                    None,
                );
                self.drive(ctx)
            }
            State::Closing => Progress::Close,
        }
    }

    /// Deregisters both sockets, returns the rings, logs the connection's
    /// summary, and gives `(bytes up, bytes down)` for the totals.
    pub fn close(mut self, ctx: &mut Ctx<'_>) -> (u64, u64) {
        forget(ctx.registry, &mut self.client);
        if let Some(l) = self.link {
            ctx.links.closed(l);
        }
        if let State::Connecting { link: Some(l), .. } = self.state {
            ctx.links.abandoned(l, ctx.now);
        }
        if let State::Associated(assoc) = &mut self.state {
            Conn::end_associate(assoc, ctx);
        }
        if let State::Binding { listener, .. } = &mut self.state {
            let _ = ctx.registry.deregister(listener);
        }
        self.drop_upstream(ctx);
        for pipe in [&mut self.up, &mut self.down] {
            if let Some(ring) = pipe.ring.take() {
                ctx.pool.give(ring);
            }
        }
        let local = self
            .local
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let reason = if self.reason.is_empty() {
            self.state.name()
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
            self.id,
            self.client_addr,
            self.target_text(),
            local,
            self.up.bytes,
            self.down.bytes,
            ctx.now.duration_since(self.started).as_secs_f64(),
            reason,
            error,
        );
        (self.up.bytes, self.down.bytes)
    }

    fn target_text(&self) -> String {
        self.target
            .as_ref()
            .map_or_else(|| "-".to_string(), Target::to_string)
    }

    fn arm(&mut self, ctx: &mut Ctx<'_>, after: Duration) {
        let at = ctx.now + after;
        self.deadline = Some(at);
        ctx.timers.push(Reverse((at, self.key, self.id)));
    }

    // --- handshake -------------------------------------------------------

    fn handshake(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if let Err(e) = self.flush_client(ctx) {
            return self.broken("client write error", e);
        }
        if self.client_ready.readable {
            let read = fill(
                &mut self.client,
                &mut self.client_ready,
                &mut self.up,
                ctx.pool,
            );
            if let Err(e) = read {
                return self.broken("client read error", e);
            }
        }
        let flow = self.parse_handshake(ctx);
        // Replies the parse queued (method, auth status) go out now.
        if let Err(e) = self.flush_client(ctx) {
            return self.broken("client write error", e);
        }
        // A handshake waiting for more, or for its connect, holds no ring
        // unless the client already sent payload.
        ctx.pool.give_if_empty(&mut self.up.ring);
        flow
    }

    /// Parses what the client sent so far; a client that sent EOF (possibly
    /// right behind a complete request and its payload, which still go
    /// through) is only closed when its bytes do not make a request.
    fn parse_handshake(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        let need_more = |conn: &mut Conn| {
            if conn.up.eof {
                conn.reason = if conn.fwd.is_some() {
                    "done (client closed its kept-alive connection)"
                } else {
                    "client closed during handshake"
                };
                Flow::Stop(Progress::Close)
            } else {
                Flow::Stop(Progress::Idle)
            }
        };
        loop {
            let Some(ring) = self.up.ring.as_mut() else {
                return need_more(self);
            };
            if ring.data().len() < ring.len() {
                ring.make_contiguous();
            }
            match parse_step(&self.state, ring.data(), ctx.auth) {
                Parsed::NeedMore => {
                    if ring.is_full() {
                        // No valid handshake is this long.
                        self.reason = "handshake too long";
                        return Flow::Stop(Progress::Close);
                    }
                    return need_more(self);
                }
                Parsed::Greeting { consumed, method } => {
                    ring.consume(consumed);
                    self.queue_method(ctx, method);
                    self.state = match method {
                        consts::METHOD_NO_AUTH => State::Request,
                        consts::METHOD_USER_PASS => State::Auth,
                        _ => {
                            self.reason = "client offered no acceptable auth method";
                            self.enter_closing(ctx);
                            return Flow::Next;
                        }
                    };
                }
                Parsed::UserPass { consumed, user, ok } => {
                    ring.consume(consumed);
                    let mut buf = [0u8; 2];
                    let n = socks::emit_user_pass_status(ok, &mut buf);
                    self.queue(ctx, &buf[..n]);
                    if !ok {
                        // A user name may be a password typed in the wrong
                        // field: only known names are written down.
                        let who = if ctx.auth.knows(user.as_bytes()) {
                            format!("user {user:?}")
                        } else {
                            "an unknown user".to_string()
                        };
                        log::info!(
                            "#{} {}: wrong SOCKS5 credentials for {who}",
                            self.id,
                            self.client_addr
                        );
                        self.reason = "wrong credentials";
                        self.enter_closing(ctx);
                        return Flow::Next;
                    }
                    self.state = State::Request;
                }
                Parsed::Request {
                    consumed,
                    version,
                    command,
                    target,
                } => {
                    ring.consume(consumed);
                    self.target = Some(target);
                    if version == Version::Socks4 && ctx.auth.required() {
                        // SOCKS4 carries no password.
                        let reason = "SOCKS4 refused: authentication is required";
                        self.fail(ctx, Client::Socks(version), Reply::NotAllowed, reason, None);
                        return Flow::Next;
                    }
                    self.start_request(ctx, Client::Socks(version), command);
                    return Flow::Next;
                }
                Parsed::Http => {
                    self.state = State::HttpHead;
                }
                Parsed::HttpRequest { consumed, request } => {
                    ring.consume(consumed);
                    return self.start_http(ctx, request);
                }
                Parsed::Invalid { answer, error } => {
                    log::debug!("#{} {}: bad handshake: {error}", self.id, self.client_addr);
                    self.reason = "bad handshake";
                    match answer {
                        Answer::Reply(v, reply) => {
                            self.queue_reply(ctx, Client::Socks(v), reply, None)
                        }
                        Answer::NoMethod => self.queue_method(ctx, consts::METHOD_NONE_ACCEPTABLE),
                        Answer::Http(status) => {
                            self.queue(ctx, &http::error_response(status, &error.to_string(), ""))
                        }
                    }
                    self.enter_closing(ctx);
                    return Flow::Next;
                }
            }
        }
    }

    /// Acts on an HTTP proxy request: a CONNECT becomes a tunnel, a forward
    /// request goes to its origin, over the kept-alive upstream connection
    /// when it is the same origin as the previous request.
    fn start_http(&mut self, ctx: &mut Ctx<'_>, request: HttpRequest) -> Flow {
        if !request.authorized {
            let response = http::error_response(
                407,
                "this proxy needs a user name and password",
                http::PROXY_AUTHENTICATE,
            );
            self.queue(ctx, &response);
            self.reason = "HTTP proxy authentication required";
            self.enter_closing(ctx);
            return Flow::Next;
        }
        let Some(head) = request.forward else {
            self.end_upstream(ctx);
            self.fwd = None;
            self.target = Some(request.target);
            self.start_request(ctx, Client::HttpConnect, Command::Connect);
            return Flow::Next;
        };
        let reuse = self.upstream.is_some()
            && !self.upstream_ready.read_closed
            && !self.upstream_ready.error
            && !self.down.eof
            && self
                .fwd
                .as_ref()
                .is_some_and(|f| f.origin == request.target);
        if reuse {
            self.fwd.as_mut().expect("checked").next_exchange(head);
            self.deadline = None;
            self.state = State::Relaying;
            return Flow::Next;
        }
        self.end_upstream(ctx);
        self.fwd = Some(Box::new(Forward::new(request.target.clone(), head)));
        self.target = Some(request.target);
        self.start_request(ctx, Client::HttpForward, Command::Connect);
        Flow::Next
    }

    /// Closes the upstream connection of a finished exchange, so the next
    /// request can go elsewhere.
    fn end_upstream(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(l) = self.link.take() {
            ctx.links.closed(l);
        }
        self.drop_upstream(ctx);
        self.local = None;
        if let Some(ring) = self.down.ring.take() {
            ctx.pool.give(ring);
        }
        self.down.eof = false;
        self.down.shut = false;
        self.up.shut = false;
    }

    fn start_request(&mut self, ctx: &mut Ctx<'_>, client: Client, command: Command) {
        match (command, client) {
            (Command::UdpAssociate, Client::Socks(Version::Socks5)) => {
                return self.start_associate(ctx, client);
            }
            (Command::Bind, Client::Socks(_)) => return self.start_bind(ctx, client),
            _ => {}
        }
        if command != Command::Connect {
            log::debug!(
                "#{} {}: {command:?} is not supported",
                self.id,
                self.client_addr
            );
            self.fail(
                ctx,
                client,
                Reply::CommandNotSupported,
                "command not supported",
                None,
            );
            return;
        }
        match self.target.as_ref().expect("set by the caller") {
            Target::Addr(addr) => {
                let addr = *addr;
                if !net::is_connectable(addr) || ctx.is_self(addr) {
                    self.fail(
                        ctx,
                        client,
                        Reply::NotAllowed,
                        "destination not allowed",
                        None,
                    );
                } else if ctx.links.can_reach(addr.ip()) {
                    self.start_connecting(ctx, client, vec![addr]);
                } else {
                    self.missing_family(ctx, client);
                }
            }
            Target::Name(host, port) => {
                ctx.resolver.submit(Job {
                    key: self.key,
                    id: self.id,
                    host: host.to_string(),
                    port: *port,
                    deadline: ctx.now + ctx.timeouts.connect,
                });
                self.state = State::Resolving { client };
                self.arm(ctx, ctx.timeouts.connect);
            }
        }
    }

    fn missing_family(&mut self, ctx: &mut Ctx<'_>, client: Client) {
        let family = match &self.target {
            Some(Target::Addr(a)) if a.is_ipv6() => "IPv6",
            Some(Target::Addr(_)) => "IPv4",
            _ => "the resolved addresses'",
        };
        let msg = format!(
            "#{} {}: no local {family} address to dispatch {} through; add one to the start arguments",
            self.id,
            self.client_addr,
            self.target_text()
        );
        if ctx.notices.missing_family.allow(ctx.now) {
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
        self.fail(
            ctx,
            client,
            Reply::NetworkUnreachable,
            "no local address of that family",
            None,
        );
    }

    // --- connecting ------------------------------------------------------

    fn start_connecting(&mut self, ctx: &mut Ctx<'_>, client: Client, addrs: Vec<SocketAddr>) {
        self.state = State::Connecting {
            client,
            addrs,
            at: 0,
            tried: 0,
            link: None,
            failure: Reply::GeneralFailure,
        };
        self.connect_next(ctx);
    }

    /// Starts the next connect attempt: the current address through a link
    /// not yet tried for it, else the next address. With nothing left,
    /// answers the client with the last failure.
    fn connect_next(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let State::Connecting {
                client,
                addrs,
                at,
                tried,
                link,
                failure,
            } = &mut self.state
            else {
                return;
            };
            let Some(&remote) = addrs.get(*at) else {
                let (client, failure) = (*client, *failure);
                self.fail(ctx, client, failure, "connect failed", None);
                return;
            };
            let Some(l) = ctx.links.pick(remote.ip(), *tried, ctx.now) else {
                *at += 1;
                *tried = 0;
                continue;
            };
            *tried |= 1 << l;
            let through = ctx.links.get(l);
            let local = through.ip().expect("picked links have an address");
            let attempt =
                net::connect_from(local, through.device(), remote).and_then(|mut stream| {
                    ctx.registry
                        .register(
                            &mut stream,
                            token(self.key, Side::Upstream),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map(|()| stream)
                });
            match attempt {
                Ok(stream) => {
                    *link = Some(l);
                    self.upstream = Some(stream);
                    self.upstream_ready = Ready::default();
                    self.arm(ctx, ctx.timeouts.connect);
                    return;
                }
                Err(e) => {
                    log::debug!("#{} connect to {remote} from {local} failed: {e}", self.id);
                    *failure = net::reply_for(&e);
                    if net::is_link_failure(&e) {
                        ctx.links.failed(l, &e, ctx.now);
                    } else {
                        // Says nothing of the link: a trial stays undecided.
                        ctx.links.abandoned(l, ctx.now);
                        *at += 1;
                        *tried = 0;
                    }
                    self.error = Some(e);
                }
            }
        }
    }

    /// The attempt in flight failed: blame the link or the target, then go on.
    fn attempt_failed(&mut self, ctx: &mut Ctx<'_>, e: io::Error) {
        self.drop_upstream(ctx);
        if let State::Connecting {
            addrs,
            at,
            tried,
            link,
            failure,
            ..
        } = &mut self.state
        {
            let remote = addrs[*at];
            let l = link.take().expect("an attempt was in flight");
            log::debug!(
                "#{} connect to {remote} through link {} failed: {e}",
                self.id,
                ctx.links.get(l).label()
            );
            *failure = net::reply_for(&e);
            if net::is_link_failure(&e) {
                ctx.links.failed(l, &e, ctx.now);
            } else {
                // The target answered: the link works, another would get the same.
                ctx.links.reached(l);
                *at += 1;
                *tried = 0;
            }
        }
        self.error = Some(e);
        self.connect_next(ctx);
    }

    fn connecting(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if let Err(e) = self.flush_client(ctx) {
            return self.broken("client write error", e);
        }
        let ready = self.upstream_ready;
        let Some(stream) = self.upstream.as_ref() else {
            return Flow::Stop(Progress::Idle);
        };
        if !(ready.writable || ready.readable) {
            return Flow::Stop(Progress::Idle);
        }
        match net::connect_result(stream) {
            Ok(true) => {
                let State::Connecting { client, link, .. } = self.state else {
                    unreachable!("checked by drive")
                };
                let l = link.expect("an attempt was in flight");
                ctx.links.connected(l);
                self.link = Some(l);
                self.local = stream.local_addr().ok();
                self.queue_reply(ctx, client, Reply::Succeeded, self.local);
                self.error = None;
                self.deadline = None;
                // Payload the client pipelined behind its request counts as relayed.
                let pipelined = self.up.pending() as u64;
                self.up.bytes += pipelined;
                ctx.links.add_bytes(l, pipelined, 0);
                self.state = State::Relaying;
                Flow::Next
            }
            Ok(false) => {
                self.upstream_ready = Ready::default();
                Flow::Stop(Progress::Idle)
            }
            Err(e) => {
                self.attempt_failed(ctx, e);
                Flow::Next
            }
        }
    }

    fn drop_upstream(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(mut stream) = self.upstream.take() {
            forget(ctx.registry, &mut stream);
        }
        self.upstream_ready = Ready::default();
    }

    // --- relaying --------------------------------------------------------

    fn relay(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if let Some(flow) = self.socket_errors() {
            return flow;
        }
        let (up_before, down_before) = (self.up.bytes, self.down.bytes);
        let flow = if self.fwd.is_some() {
            self.relay_forward(ctx)
        } else {
            self.relay_rounds(ctx)
        };
        // A forward exchange may have let its upstream (and link) go.
        if let Some(link) = self.link {
            let (up, down) = (self.up.bytes - up_before, self.down.bytes - down_before);
            ctx.links.add_bytes(link, up, down);
        }
        flow
    }

    fn relay_rounds(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        let upstream = self.upstream.as_mut().expect("relaying has an upstream");
        for _ in 0..MAX_ROUNDS {
            let up = pump(
                (&mut self.client, &mut self.client_ready),
                (upstream, &mut self.upstream_ready),
                &mut self.up,
                ctx.pool,
            );
            let down = pump(
                (upstream, &mut self.upstream_ready),
                (&mut self.client, &mut self.client_ready),
                &mut self.down,
                ctx.pool,
            );
            let moved = match (up, down) {
                (_, Err(Failed::Write(e))) => return self.broken("client write error", e),
                (Err(Failed::Read(e)), _) => return self.broken("client read error", e),
                // The target reset, or stopped taking data (it answered and
                // closed, say): the upload ends, but what the target sent
                // before still reaches the client, then the connection ends.
                (_, Err(Failed::Read(e))) => {
                    (self.reason, self.error) = ("upstream reset", Some(e));
                    end_upload(&mut self.up, ctx.pool);
                    self.down.eof = true;
                    true
                }
                (Err(Failed::Write(e)), Ok(_)) => {
                    (self.reason, self.error) = ("target stopped reading", Some(e));
                    end_upload(&mut self.up, ctx.pool);
                    true
                }
                (Ok(a), Ok(b)) => a || b,
            };
            if self.up.shut && self.down.shut {
                if self.reason.is_empty() {
                    self.reason = "done";
                }
                return Flow::Stop(Progress::Close);
            }
            if !moved {
                return Flow::Stop(Progress::Idle);
            }
        }
        Flow::Stop(Progress::Yield)
    }

    /// A socket reported an error that no read will surface, because that
    /// side already sent EOF and is no longer read: ask the socket. A side
    /// still read is left to its next read, which returns what arrived
    /// before the error first.
    fn socket_errors(&mut self) -> Option<Flow> {
        let mut found = None;
        if self.up.eof && std::mem::take(&mut self.client_ready.error) {
            found = pending_error(Some(&self.client)).map(|e| ("client error", e));
        }
        if found.is_none() && self.down.eof && std::mem::take(&mut self.upstream_ready.error) {
            found = pending_error(self.upstream.as_ref()).map(|e| ("upstream error", e));
        }
        found.map(|(reason, e)| self.broken(reason, e))
    }

    // --- replies and closing ---------------------------------------------

    /// Answers the request with an error and starts closing.
    fn fail(
        &mut self,
        ctx: &mut Ctx<'_>,
        client: Client,
        reply: Reply,
        reason: &'static str,
        error: Option<io::Error>,
    ) {
        self.drop_upstream(ctx);
        if error.is_some() {
            self.error = error;
        }
        self.failed = true;
        self.queue_reply(ctx, client, reply, None);
        self.reason = reason;
        self.enter_closing(ctx);
    }

    fn enter_closing(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Closing;
        self.arm(ctx, LINGER);
    }

    fn closing(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if let Err(e) = self.flush_client(ctx) {
            return self.broken("client write error", e);
        }
        if self.down.pending() > 0 {
            return Flow::Stop(Progress::Idle);
        }
        if !self.down.shut {
            self.down.shut = true;
            let _ = self.client.shutdown(Shutdown::Write);
        }
        // Discard what the client still sends, until it closes too, but not
        // without end: a client that keeps sending is cut off.
        let mut sink = [0u8; 4096];
        while self.client_ready.readable {
            if self.discarded >= LINGER_DISCARD_MAX {
                self.reason = "client kept sending after the final reply";
                return Flow::Stop(Progress::Close);
            }
            match self.client.read(&mut sink) {
                Ok(0) => return Flow::Stop(Progress::Close),
                Ok(n) => self.discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.client_ready.readable = false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Stop(Progress::Close),
            }
        }
        Flow::Stop(Progress::Idle)
    }

    /// Writes queued replies, in any state before relaying.
    fn flush_replies(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        match self.flush_client(ctx) {
            Ok(()) => Flow::Stop(Progress::Idle),
            Err(e) => self.broken("client write error", e),
        }
    }

    fn flush_client(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        flush(
            &mut self.client,
            &mut self.client_ready,
            &mut self.down,
            ctx.pool,
        )?;
        Ok(())
    }

    fn queue(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8]) {
        let ring = self.down.ring.get_or_insert_with(|| ctx.pool.take());
        // Replies are queued before any payload, into a ring far larger.
        let n = ring.push(bytes);
        debug_assert_eq!(n, bytes.len());
    }

    fn queue_method(&mut self, ctx: &mut Ctx<'_>, method: u8) {
        let mut buf = [0u8; 2];
        let n = socks::emit_method(method, &mut buf);
        self.queue(ctx, &buf[..n]);
    }

    fn queue_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        client: Client,
        reply: Reply,
        bound: Option<SocketAddr>,
    ) {
        let version = match (client, reply) {
            (Client::Socks(version), _) => version,
            (Client::HttpConnect, Reply::Succeeded) => {
                return self.queue(ctx, http::CONNECT_ESTABLISHED);
            }
            // The request itself is what goes out first.
            (Client::HttpForward, Reply::Succeeded) => return,
            (Client::HttpConnect | Client::HttpForward, _) => {
                let status = match reply {
                    Reply::NotAllowed => 403,
                    Reply::TtlExpired => 504,
                    _ => 502,
                };
                let detail = match &self.error {
                    Some(e) => format!("{reply} ({e})"),
                    None => reply.to_string(),
                };
                return self.queue(ctx, &http::error_response(status, &detail, ""));
            }
        };
        let mut buf = [0u8; consts::MAX_REPLY_LEN];
        let n = socks::emit_reply(version, reply, bound, &mut buf);
        self.queue(ctx, &buf[..n]);
    }

    fn broken(&mut self, reason: &'static str, e: io::Error) -> Flow {
        self.reason = reason;
        self.error = Some(e);
        Flow::Stop(Progress::Close)
    }
}

/// What the bytes received so far amount to, in the current handshake state.
enum Parsed {
    NeedMore,
    /// A SOCKS5 greeting, and the method chosen for it.
    Greeting {
        consumed: usize,
        method: u8,
    },
    /// RFC 1929 credentials, and whether they are accepted.
    UserPass {
        consumed: usize,
        user: String,
        ok: bool,
    },
    Request {
        consumed: usize,
        version: Version,
        command: Command,
        target: Target,
    },
    /// The first byte says HTTP: parse a request head next.
    Http,
    HttpRequest {
        consumed: usize,
        request: HttpRequest,
    },
    Invalid {
        answer: Answer,
        error: Box<dyn std::error::Error>,
    },
}

/// What a client whose handshake is invalid is told before the close.
enum Answer {
    /// A SOCKS reply in this version's format.
    Reply(Version, Reply),
    /// A SOCKS5 method selection of "no acceptable method".
    NoMethod,
    /// An HTTP error response with this status.
    Http(u16),
}

/// An HTTP proxy request, owned, once its head has been parsed.
struct HttpRequest {
    target: Target,
    /// The rewritten head to send on (forward requests), or `None` (CONNECT).
    forward: Option<ForwardHead>,
    /// Whether its `Proxy-Authorization` is accepted (or none is needed).
    authorized: bool,
}

struct ForwardHead {
    head: Vec<u8>,
    method: Box<str>,
    body: http::Body,
    close: bool,
}

fn parse_step(state: &State, data: &[u8], auth: &Credentials) -> Parsed {
    let invalid = |answer, error: ParseError| Parsed::Invalid {
        answer,
        error: Box::new(error),
    };
    let request = |r: Result<Status<socks::Request<'_>>, ParseError>, version| match r {
        Ok(Status::Partial) => Parsed::NeedMore,
        Ok(Status::Complete(req, consumed)) => Parsed::Request {
            consumed,
            version: req.version,
            command: req.command,
            target: match req.dest {
                Dest::Addr(a) => Target::Addr(net::canonical(a)),
                Dest::Name(n, p) => Target::Name(n.into(), p),
            },
        },
        Err(error) => invalid(Answer::Reply(version, error.reply()), error),
    };
    match state {
        State::Request => return request(socks::parse_request(data), Version::Socks5),
        State::Auth => {
            return match socks::parse_user_pass(data) {
                Ok(Status::Partial) => Parsed::NeedMore,
                Ok(Status::Complete(up, consumed)) => Parsed::UserPass {
                    consumed,
                    user: String::from_utf8_lossy(up.user).into_owned(),
                    ok: auth.check(up.user, up.pass),
                },
                Err(error) => invalid(Answer::NoMethod, error),
            }
        }
        State::HttpHead => return parse_http(data, auth),
        _ => {}
    }
    let Some(&first) = data.first() else {
        return Parsed::NeedMore;
    };
    match socks::sniff(first) {
        Protocol::Http => Parsed::Http,
        Protocol::Socks4 => request(socks::parse_socks4(data), Version::Socks4),
        Protocol::Socks5 => match socks::parse_greeting(data) {
            Ok(Status::Partial) => Parsed::NeedMore,
            Ok(Status::Complete(g, consumed)) => {
                let wanted = if !auth.required() {
                    consts::METHOD_NO_AUTH
                } else {
                    consts::METHOD_USER_PASS
                };
                let method = if g.offers(wanted) {
                    wanted
                } else {
                    consts::METHOD_NONE_ACCEPTABLE
                };
                Parsed::Greeting { consumed, method }
            }
            Err(error) => invalid(Answer::NoMethod, error),
        },
    }
}

fn parse_http(data: &[u8], auth: &Credentials) -> Parsed {
    let head = match http::parse_request(data) {
        Ok(Status::Partial) => return Parsed::NeedMore,
        Ok(Status::Complete(head, consumed)) => (head, consumed),
        Err(error) => {
            return Parsed::Invalid {
                answer: Answer::Http(error.status()),
                error: Box::new(error),
            }
        }
    };
    let (head, consumed) = head;
    let authorized = !auth.required()
        || head
            .header("proxy-authorization")
            .is_some_and(|v| auth.check_basic(v));
    let (host, port) = match head.target {
        http::Target::Connect { host, port } | http::Target::Forward { host, port, .. } => {
            (host, port)
        }
    };
    let target = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Target::Addr(net::canonical(SocketAddr::new(ip, port))),
        Err(_) => Target::Name(host.into(), port),
    };
    let forward = match head.target {
        http::Target::Connect { .. } => None,
        http::Target::Forward { .. } => {
            let body = match http::body_of(&head) {
                Ok(body) => body,
                Err(error) => {
                    return Parsed::Invalid {
                        answer: Answer::Http(error.status()),
                        error: Box::new(error),
                    }
                }
            };
            let mut out = Vec::with_capacity(consumed);
            http::write_forward_head(&head, &mut out);
            Some(ForwardHead {
                head: out,
                method: head.method.into(),
                body,
                // An HTTP/1.0 client keeps the connection only if the
                // response says keep-alive, which the origin's need not:
                // close after each of its exchanges.
                close: http::wants_close(&head) || head.minor == 0,
            })
        }
    };
    Parsed::HttpRequest {
        consumed,
        request: HttpRequest {
            target,
            forward,
            authorized,
        },
    }
}

// --- socket <-> ring ----------------------------------------------------

/// Reads from `src` into the pipe's ring until `WouldBlock`, EOF, or the ring
/// is full. Returns whether anything happened.
fn fill(
    src: &mut TcpStream,
    ready: &mut Ready,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> io::Result<bool> {
    let mut moved = false;
    while ready.readable && !pipe.eof {
        let ring = pipe.ring.get_or_insert_with(|| pool.take());
        let free = ring.free_slice();
        if free.is_empty() {
            break;
        }
        match src.read(free) {
            Ok(0) => {
                pipe.eof = true;
                moved = true;
            }
            Ok(n) => {
                let short = n < free.len();
                ring.commit(n);
                moved = true;
                if short && SHORT_IO_DRAINS && !ready.read_closed {
                    ready.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    pool.give_if_empty(&mut pipe.ring);
    Ok(moved)
}

/// Writes the pipe's ring to `dst` until `WouldBlock` or empty. Returns
/// whether anything was written.
fn flush(
    dst: &mut TcpStream,
    ready: &mut Ready,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> io::Result<bool> {
    send_framed(
        dst,
        ready,
        pipe,
        &mut 0,
        &mut http::Framing::UntilClose,
        pool,
    )
}

/// Writes from the pipe's ring to `dst` until `WouldBlock` or empty: first
/// `verbatim` bytes as they are, then what `framing` says belongs to the
/// current message, and no more (a plain relay frames "until close": all of
/// it). A framing error comes back as `InvalidData`.
fn send_framed(
    dst: &mut TcpStream,
    ready: &mut Ready,
    pipe: &mut Pipe,
    verbatim: &mut usize,
    framing: &mut http::Framing,
    pool: &mut RingPool,
) -> io::Result<bool> {
    let invalid = |e: http::HttpError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut moved = false;
    while ready.writable {
        let Some(ring) = pipe.ring.as_mut().filter(|r| !r.is_empty()) else {
            break;
        };
        let data = ring.data();
        let allowed = if *verbatim > 0 {
            (*verbatim).min(data.len())
        } else {
            // Ask a copy where the message ends, so nothing past it is written.
            let mut probe = *framing;
            probe.advance(data).map_err(invalid)?
        };
        if allowed == 0 {
            break;
        }
        match dst.write(&data[..allowed]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if *verbatim > 0 {
                    *verbatim -= n;
                } else {
                    framing.advance(&data[..n]).map_err(invalid)?;
                }
                ring.consume(n);
                moved = true;
                // Likewise a short write means the send buffer is full.
                if n < allowed && SHORT_IO_DRAINS {
                    ready.writable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    pool.give_if_empty(&mut pipe.ring);
    Ok(moved)
}

/// Forgets a socket about to be dropped. On Linux closing the descriptor
/// takes it out of epoll, so the system call is saved; elsewhere mio wants
/// the deregistration.
fn forget(registry: &Registry, source: &mut impl mio::event::Source) {
    if !cfg!(target_os = "linux") {
        let _ = registry.deregister(source);
    }
}

/// The error a socket holds, if any (`SO_ERROR`).
fn pending_error(socket: Option<&TcpStream>) -> Option<io::Error> {
    match socket?.take_error() {
        Ok(e) => e,
        Err(e) => Some(e),
    }
}

/// The target will take no more: the rest of the upload is dropped.
fn end_upload(up: &mut Pipe, pool: &mut RingPool) {
    up.eof = true;
    up.shut = true;
    if let Some(ring) = up.ring.take() {
        pool.give(ring);
    }
}

/// Which end of a pipe failed.
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// One relay round for one direction: read what fits, write what is there,
/// and pass EOF on once the ring has drained.
fn pump(
    src: (&mut TcpStream, &mut Ready),
    dst: (&mut TcpStream, &mut Ready),
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> Result<bool, Failed> {
    let before = pipe.pending();
    let read = fill(src.0, src.1, pipe, pool).map_err(Failed::Read)?;
    pipe.bytes += (pipe.pending() - before) as u64;
    let wrote = flush(dst.0, dst.1, pipe, pool).map_err(Failed::Write)?;
    let mut shut = false;
    if pipe.eof && !pipe.shut && pipe.pending() == 0 {
        pipe.shut = true;
        shut = true;
        // The peer may already be gone; the other direction reports that.
        let _ = dst.0.shutdown(Shutdown::Write);
    }
    Ok(read || wrote || shut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for key in [0usize, 1, 2, 12345] {
            for side in [
                Side::Client,
                Side::Upstream,
                Side::UdpRelay,
                Side::UdpOut(0),
                Side::UdpOut(63),
            ] {
                assert_eq!(from_token(token(key, side)), (key, side));
            }
        }
    }

    #[test]
    fn budget_allows_a_few_lines_per_window() {
        let mut b = Budget::default();
        let t = Instant::now();
        let allowed = (0..8).filter(|_| b.allow(t)).count();
        assert_eq!(allowed, 5);
        assert_eq!(b.suppressed, 3);
        assert!(b.allow(t + Budget::WINDOW));
        assert_eq!(b.suppressed, 0);
    }

    #[test]
    fn rate_limit_allows_once_a_minute() {
        let mut r = RateLimit::default();
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(!r.allow(t + Duration::from_secs(59)));
        assert!(r.allow(t + Duration::from_secs(60)));
    }
}
