//! The event loop: one thread, one `mio::Poll`, every connection in a slab.
//!
//! One turn of the loop:
//! 1. poll, with a timeout that ends at the nearest deadline;
//! 2. route each event: the listener accepts until `WouldBlock`; the waker
//!    drains DNS answers (and notices a stop request); any other token names a
//!    connection's slab key, generation and side (see [`conn::Handle`]);
//! 3. give connections that yielded the loop another turn;
//! 4. fire the deadlines that passed.
//!
//! The reactor never looks inside a connection's state: it passes readiness,
//! DNS answers and deadlines in and acts on the [`Progress`] that comes back.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::auth::{Access, Credentials};
use crate::config::Config;
use crate::conn::{self, Conn, Ctx, Notices, Progress, Timeouts, Timers};
use crate::dns::Resolver;
use crate::iface::{self, Watcher};
use crate::links::Links;
use crate::metrics::{self, Counters, Limit};
use crate::ring::RingPool;
use crate::splice::PipePool;
use crate::sys;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Ring size: see README, "Choosing the ring size", for the measurement.
pub const RING_SIZE: usize = 128 * 1024;
/// Spare rings kept for reuse; the rest are freed when drained.
const SPARE_RINGS: usize = 64;
/// Kernel pipes the relays may splice through at once (Linux), at most one
/// per this many descriptors of the limit; each holds two descriptors, and
/// only while bytes are in flight.
const MAX_PIPES: usize = 1024;
const DESCRIPTORS_PER_PIPE: u64 = 16;
/// What a kernel pipe holds: see README, "Splice", for the measurement.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Spare pipes kept for reuse while used (see `PipePool::trim`).
const SPARE_PIPES: usize = 64;
/// How long accepting pauses when the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept free for the listener, DNS, logs and the like: accepting
/// pauses before a client could be accepted but not given its outgoing
/// socket (which would fail it rather than make it wait).
const FD_RESERVE: u64 = 32;
/// How often the interfaces are re-read, to follow address changes.
const IFACE_PERIOD: Duration = Duration::from_secs(2);
/// How often the per-link report callback runs.
const REPORT_PERIOD: Duration = Duration::from_secs(1);

/// How outgoing sockets are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// To the source address and, for targets with an interface, the device.
    Device,
    /// To the source address only: asked for with `--no-bind-device`.
    SourceOnly,
    /// To the source address only, because binding to a device was refused.
    SourceOnlyRefused(String),
}

/// The reactor runs.
const RUN: u8 = 0;
/// It accepts no more and lets transfers finish (up to the drain timeout).
const DRAIN: u8 = 1;
/// It stops now.
const STOP: u8 = 2;

/// Asks a running reactor to stop; cheap to clone, safe to call from a signal thread.
#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicU8>,
    waker: Arc<Waker>,
}

impl Shutdown {
    /// Stops now: open connections are cut.
    pub fn trigger(&self) {
        self.flag.store(STOP, Ordering::SeqCst);
        self.wake();
    }

    /// Stops gracefully: no new connections, transfers finish (up to the
    /// drain timeout). Asked again, stops now.
    pub fn drain(&self) {
        let _ = self
            .flag
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
                Some(if f == RUN { DRAIN } else { STOP })
            });
        self.wake();
    }

    /// Wakes the reactor without stopping it (to notice a reload request).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Totals reported when the reactor stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Connections still carrying a request when the reactor stopped.
    pub cut: u64,
}

pub struct Reactor {
    poll: Poll,
    /// `None` once draining: no new client is accepted.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    links: Links,
    binding: Binding,
    watcher: Watcher,
    /// Credentials in force (empty: no authentication).
    auth: Credentials,
    /// `--auth` ones, kept to merge with the file's on reload.
    auth_cli: Credentials,
    auth_file: Option<PathBuf>,
    reload: Arc<AtomicBool>,
    access: Access,
    /// When each refused client address was last logged.
    refused: HashMap<IpAddr, Instant>,
    /// What datagrams of UDP associations pass through.
    udp_buf: Box<[u8]>,
    associations: usize,
    /// UDP associations, and connections, open per client address.
    client_associations: HashMap<IpAddr, u32>,
    client_connections: HashMap<IpAddr, u32>,
    max_client_associations: u32,
    max_client_connections: u32,
    /// Every address of this machine, as the interface watcher last saw.
    local_ips: Vec<IpAddr>,
    /// The open-files limit, read at start.
    fd_limit: Option<u64>,
    /// Descriptors the connections hold, as the budget counts them: each
    /// at least two (a client is admitted with its upstream's counted),
    /// more for connect races, BIND and UDP associations.
    held: u64,
    /// What each connection counts for in `held`, by slab key.
    counted: Vec<u16>,
    /// Running short of descriptors is said once a minute, not per retry.
    fd_notice: conn::RateLimit,
    pool: RingPool,
    resolver: Resolver,
    timers: Timers,
    notices: Notices,
    timeouts: Timeouts,
    stop: Arc<AtomicU8>,
    /// How long a graceful stop lets transfers finish.
    drain_timeout: Duration,
    /// Draining until then.
    draining: Option<Instant>,
    waker: Arc<Waker>,
    /// Connections that yielded with work left.
    again: Vec<(usize, u64)>,
    accept_paused_until: Option<Instant>,
    next_id: u64,
    summary: Summary,
    /// What the metrics count beyond the links' counters.
    counters: Counters,
    /// The `--metrics` endpoint, when asked for.
    metrics: Option<metrics::serve::Endpoint>,
    started: SystemTime,
}

impl Reactor {
    /// Binds the listener (an `AddrInUse` error when the port is taken).
    pub fn new(config: Config) -> io::Result<Reactor> {
        Reactor::with_ring_size(config, RING_SIZE)
    }

    /// As [`Reactor::new`], with another ring size (for benchmarks).
    ///
    /// # Panics
    /// If `ring_size` cannot hold what a client may send behind its request
    /// in one handshake buffer (less than [`crate::http::MAX_HEAD`] + 1).
    pub fn with_ring_size(config: Config, ring_size: usize) -> io::Result<Reactor> {
        assert!(
            ring_size >= crate::http::MAX_HEAD,
            "a ring must hold what follows a request head"
        );
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        // Accepted sockets inherit these on Linux: set once here, not per client.
        #[cfg(target_os = "linux")]
        {
            let sock = socket2::SockRef::from(&listener);
            sock.set_tcp_nodelay(true)?;
            crate::net::set_keepalive(&sock);
        }
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let resolver = Resolver::new(Arc::clone(&waker))?;
        let auth = config.credentials()?;
        let ifaces = iface::discover().unwrap_or_default();
        let binding = binding(&config, &ifaces);
        let links = Links::new(config.targets.clone(), &ifaces, binding == Binding::Device)
            .following(config.follow.clone())
            .balancing(config.balance, config.learned.clone())
            .with_proxies(config.proxies.clone());
        let local_ips = all_addrs(&ifaces);
        let watcher = Watcher::spawn(ifaces, IFACE_PERIOD, Arc::clone(&waker))?;
        Ok(Reactor {
            poll,
            listener: Some(listener),
            local_addr,
            conns: Slab::new(),
            links,
            binding,
            watcher,
            auth,
            auth_cli: config.auth,
            auth_file: config.auth_file,
            reload: Arc::new(AtomicBool::new(false)),
            access: config.access,
            refused: HashMap::new(),
            udp_buf: vec![0; conn::UDP_BUFFER].into_boxed_slice(),
            associations: 0,
            client_associations: HashMap::new(),
            client_connections: HashMap::new(),
            max_client_associations: config.max_client_associations,
            max_client_connections: config.max_client_connections,
            local_ips,
            fd_limit: sys::nofile_limit(),
            held: 0,
            counted: Vec::new(),
            fd_notice: conn::RateLimit::default(),
            pool: RingPool::new(ring_size, SPARE_RINGS).with_pipes(pipe_pool(sys::nofile_limit())),
            resolver,
            timers: Timers::new(),
            notices: Notices::default(),
            timeouts: Timeouts {
                handshake: config.handshake_timeout,
                connect: config.connect_timeout,
                bind: config.bind_timeout,
                idle: config.idle_timeout,
                stall: config.stall_timeout,
                response: config.response_timeout,
                udp_idle: config.udp_idle_timeout,
                udp_destinations: config.udp_max_destinations,
            },
            stop: Arc::new(AtomicU8::new(RUN)),
            drain_timeout: config.drain_timeout,
            draining: None,
            waker,
            again: Vec::new(),
            accept_paused_until: None,
            next_id: 0,
            summary: Summary::default(),
            counters: Counters::default(),
            metrics: None,
            started: SystemTime::now(),
        })
    }

    /// Relays through rings only, never splicing (for comparison).
    pub fn relay_through_rings(mut self) -> Reactor {
        self.pool.pipes = PipePool::none();
        self
    }

    /// Splices through pipes of `bytes` (as the system allows) instead of
    /// [`PIPE_SIZE`] (for measuring the choice).
    pub fn with_pipe_size(mut self, bytes: usize) -> Reactor {
        let mut pool = pipe_pool(sys::nofile_limit());
        if pool.max() > 0 {
            pool = PipePool::new(pool.max(), SPARE_PIPES.min(pool.max()), bytes);
        }
        self.pool.pipes = pool;
        self
    }

    /// Serves `/metrics` and `/status` on `listener` (from
    /// [`metrics::serve::bind`]); gives its address.
    pub fn serve_metrics(&mut self, listener: std::net::TcpListener) -> io::Result<SocketAddr> {
        let endpoint = metrics::serve::Endpoint::new(listener, self.poll.registry())?;
        let addr = endpoint.local_addr()?;
        self.metrics = Some(endpoint);
        Ok(addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Set it (from a SIGHUP handler) to have the auth file re-read.
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reload)
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown {
            flag: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs until [`Shutdown::trigger`]; returns the totals.
    pub fn run(&mut self) -> io::Result<Summary> {
        self.run_reporting(|_| {})
    }

    /// As [`Reactor::run`], calling `report` with the links about once a second.
    pub fn run_reporting(&mut self, mut report: impl FnMut(&Links)) -> io::Result<Summary> {
        let mut events = Events::with_capacity(1024);
        let mut next_report = Instant::now() + REPORT_PERIOD;
        loop {
            match self.stop.load(Ordering::SeqCst) {
                RUN => {}
                DRAIN => {
                    let now = Instant::now();
                    let until = *self.draining.get_or_insert(now + self.drain_timeout);
                    self.drain(now);
                    if self.conns.is_empty() || now >= until {
                        break;
                    }
                }
                _ => break,
            }
            let timeout = self
                .poll_timeout(Instant::now())
                .map_or(REPORT_PERIOD, |t| t.min(REPORT_PERIOD));
            let timeout = Some(timeout);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.budget_pipes();
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        self.accept(now);
                        self.budget_pipes();
                    }
                    WAKER => {
                        self.dns_answers(now);
                        if let Some(ifaces) = self.watcher.latest() {
                            self.links.apply_interfaces(&ifaces, now);
                            self.local_ips = all_addrs(&ifaces);
                        }
                    }
                    token if metrics::serve::owns(token) => self.serve_scrapes(Some(token), now),
                    token => {
                        let (key, side) = conn::from_token(token);
                        // An event for a connection closed earlier in this
                        // batch is dropped, even where a new connection
                        // already took its key.
                        if let Some(conn) = self.conns.get_mut(key).filter(|c| c.owns(token)) {
                            conn.on_event(side, event);
                            self.drive(key, now);
                        }
                    }
                }
            }
            self.run_again(now);
            // Names answered without the pool (a literal, a hosts-file name)
            // come back here, in the same turn, with no wake-up.
            self.dns_answers(now);
            self.expire(now);
            let scrape_deadline = self.metrics.as_ref().and_then(|m| m.deadline());
            if scrape_deadline.is_some_and(|t| t <= now) {
                self.serve_scrapes(None, now);
            }
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if self.reload.swap(false, Ordering::SeqCst) {
                self.reload_auth();
            }
            if self.links.take_refresh_request() {
                self.watcher.poke();
            }
            if now >= next_report {
                next_report = now + REPORT_PERIOD;
                self.links.sample(now);
                self.pool.pipes.trim(now);
                report(&self.links);
            }
        }
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.summary.cut += u64::from(self.conns[key].in_flight());
            self.close(key, now);
        }
        debug_assert_eq!(self.pool.lent(), 0, "a ring was not given back");
        debug_assert_eq!(self.pool.pipes.lent(), 0, "a pipe was not given back");
        debug_assert_eq!(self.held, 0, "descriptors still counted as held");
        Ok(self.summary)
    }

    /// While draining: the listener is closed (clients are refused, not
    /// left in its backlog), and connections with no request in flight are
    /// closed; the others finish.
    fn drain(&mut self, now: Instant) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            // Closed before the log line says so: a client that reads the
            // line and connects must be refused, not queued in a backlog.
            drop(listener);
            let busy = self.conns.iter().filter(|(_, c)| c.in_flight()).count();
            match busy {
                0 => log::info!("stopping: no new connections, and none carrying a request"),
                _ => log::info!(
                    "stopping: no new connections; {busy} still carrying a request have up to \
                     {} s to finish (signal again to stop at once)",
                    self.drain_timeout.as_secs()
                ),
            }
        }
        let quiet: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.in_flight())
            .map(|(k, _)| k)
            .collect();
        for key in quiet {
            self.close(key, now);
        }
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.resolver.has_ready() {
            return Some(Duration::ZERO);
        }
        let mut next = self.timers.first().map(|t| t.0);
        let scrapes = self.metrics.as_ref().and_then(|m| m.deadline());
        for t in [self.accept_paused_until, self.draining, scrapes]
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        // Round up: waking a hair early would only poll again.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn ctx(&mut self, now: Instant) -> (Ctx<'_>, &mut Slab<Conn>) {
        (
            Ctx {
                registry: self.poll.registry(),
                links: &mut self.links,
                pool: &mut self.pool,
                resolver: &mut self.resolver,
                timers: &mut self.timers,
                notices: &mut self.notices,
                counters: &mut self.counters,
                auth: &self.auth,
                udp_buf: &mut self.udp_buf,
                associations: &mut self.associations,
                client_associations: &mut self.client_associations,
                max_client_associations: self.max_client_associations,
                listen: self.local_addr,
                local_ips: &self.local_ips,
                timeouts: self.timeouts,
                now,
            },
            &mut self.conns,
        )
    }

    /// Descriptors beside the connections' and pipes': DNS lookups', and
    /// the metrics endpoint's (as many as it may hold).
    fn helpers(&self) -> u64 {
        let scrapes = self
            .metrics
            .as_ref()
            .map_or(0, |_| metrics::serve::DESCRIPTORS);
        self.resolver.descriptors() as u64 + scrapes
    }

    /// Pipes for splicing get the descriptors that connections, each
    /// admitted with two, and the reserve leave.
    fn budget_pipes(&mut self) {
        if let Some(limit) = self.fd_limit {
            let spare = limit.saturating_sub(self.held + self.helpers() + FD_RESERVE);
            self.pool
                .pipes
                .set_budget(usize::try_from(spare).unwrap_or(usize::MAX));
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            // What connections, pipes and DNS lookups hold, and two for
            // the next client: stop while one is left.
            let needed =
                self.held + 2 + self.pool.pipes.descriptors() as u64 + self.helpers() + FD_RESERVE;
            if self.fd_limit.is_some_and(|limit| needed >= limit) {
                self.counters.limit(Limit::Descriptors);
                if !self.fd_notice.allow(now) {
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                log::warn!(
                    "{} connections open, near the limit of {} open files; \
                     new clients wait until some close (raise the limit with ulimit -n)",
                    self.conns.len(),
                    self.fd_limit.unwrap_or_default()
                );
                self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if !self.access.allows(addr.ip()) {
                        self.counters.limit(Limit::Allow);
                        self.refuse(addr.ip(), now, "not in the allowed address ranges");
                        drop(stream);
                        continue;
                    }
                    let ip = addr.ip().to_canonical();
                    let open = self.client_connections.entry(ip).or_default();
                    if *open >= self.max_client_connections {
                        self.counters.limit(Limit::ClientConnections);
                        let why = format!(
                            "it has {} open (--max-client-connections)",
                            crate::report::count(
                                u64::from(self.max_client_connections),
                                "connection"
                            )
                        );
                        self.refuse(ip, now, &why);
                        drop(stream);
                        continue;
                    }
                    *open += 1;
                    self.next_id += 1;
                    let id = self.next_id;
                    let (mut ctx, conns) = self.ctx(now);
                    let entry = conns.vacant_entry();
                    let key = entry.key();
                    let accepted = match Conn::accept(&mut ctx, key, id, stream, addr) {
                        Ok(conn) => {
                            entry.insert(conn);
                            if self.counted.len() <= key {
                                self.counted.resize(key + 1, 0);
                            }
                            self.counted[key] = 2;
                            self.held += 2;
                            true
                        }
                        Err(e) => {
                            log::warn!("#{id} {addr}: could not register: {e}");
                            false
                        }
                    };
                    if accepted {
                        self.summary.connections += 1;
                    } else if let Some(open) = self.client_connections.get_mut(&ip) {
                        *open -= 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if sys::is_out_of_fds(&e) => {
                    // The pending connections wait in the backlog; retrying at
                    // once would spin, so pause until some descriptors free.
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    self.counters.limit(Limit::Descriptors);
                    if !self.fd_notice.allow(now) {
                        return;
                    }
                    log::warn!(
                        "out of file descriptors with {} connections open; pausing accept for {} ms",
                        self.conns.len(),
                        ACCEPT_BACKOFF.as_millis()
                    );
                    return;
                }
                // A client that gave up before we accepted it, and the like.
                Err(e) => log::debug!("accept failed: {e}"),
            }
        }
    }

    /// A client outside the allowed ranges: closed at once, logged once a
    /// minute per address.
    fn refuse(&mut self, ip: IpAddr, now: Instant, why: &str) {
        const EVERY: Duration = Duration::from_secs(60);
        if self.refused.len() > 4096 {
            self.refused.retain(|_, t| now.duration_since(*t) < EVERY);
            if self.refused.len() > 4096 {
                // Refused from everywhere at once: stop remembering each.
                self.refused.clear();
            }
        }
        let last = self.refused.get(&ip);
        if last.is_none_or(|t| now.duration_since(*t) >= EVERY) {
            self.refused.insert(ip, now);
            log::warn!("refused a client from {ip}: {why}");
        }
    }

    fn reload_auth(&mut self) {
        self.links.unlock_proxies(Instant::now());
        let Some(path) = &self.auth_file else {
            log::info!("SIGHUP: no --auth-file to re-read");
            return;
        };
        match Credentials::load_file(path) {
            Ok(file) => {
                let mut all = self.auth_cli.clone();
                all.extend(file);
                if self.auth.required() {
                    // Emptying the file refuses everyone; it never turns
                    // authentication off, which would open the proxy.
                    all.require();
                }
                log::info!(
                    "re-read {}: {} credentials in force",
                    path.display(),
                    all.len()
                );
                self.auth = all;
            }
            Err(e) => log::warn!(
                "cannot re-read {}: {e}; keeping the credentials in force",
                path.display()
            ),
        }
    }

    fn dns_answers(&mut self, now: Instant) {
        while let Some(answer) = self.resolver.try_recv(now) {
            let (mut ctx, conns) = self.ctx(now);
            let Some(conn) = conns.get_mut(answer.key).filter(|c| c.id() == answer.id) else {
                continue; // the connection is gone; its slot may hold a newer one
            };
            let key = answer.key;
            let progress = conn.on_resolved(&mut ctx, answer);
            self.after(key, progress, now);
        }
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let (mut ctx, conns) = self.ctx(now);
        let progress = conns[key].drive(&mut ctx);
        self.after(key, progress, now);
    }

    fn after(&mut self, key: usize, progress: Progress, now: Instant) {
        self.recount(key);
        if let Some(said) = self.conns.get_mut(key).and_then(Conn::take_error_reply) {
            self.counters.error_reply(said);
        }
        match progress {
            Progress::Idle => {}
            Progress::Yield => {
                // Several events in one batch must not queue it several times.
                let conn = &mut self.conns[key];
                if conn.mark_queued() {
                    self.again.push((key, conn.id()));
                }
            }
            Progress::Close => self.close(key, now),
        }
    }

    fn run_again(&mut self, now: Instant) {
        let again = std::mem::take(&mut self.again);
        for (key, id) in again {
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.id() == id) {
                conn.unqueue();
                self.drive(key, now);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let (mut ctx, conns) = self.ctx(now);
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.id() != id || conn.deadline() != Some(at) {
                continue; // superseded by a later deadline, or another connection
            }
            let progress = conn.on_deadline(&mut ctx);
            self.after(key, progress, now);
        }
    }

    /// An event for the metrics endpoint (`token`), or its deadlines (`None`).
    fn serve_scrapes(&mut self, token: Option<Token>, now: Instant) {
        let Some(endpoint) = self.metrics.as_mut() else {
            return;
        };
        let view = metrics::View {
            links: &self.links,
            counters: &self.counters,
            dns: self.resolver.stats(),
            listen: self.local_addr,
            started: self.started,
            connections_open: self.conns.len(),
            connections_total: self.summary.connections,
            associations_open: self.associations,
        };
        let snapshot = || metrics::Snapshot::take(&view);
        let registry = self.poll.registry();
        match token {
            Some(token) => endpoint.on_event(registry, token, now, &snapshot),
            None => endpoint.expire(registry, now, &snapshot),
        }
    }

    /// Brings `held` up to date with what connection `key` holds now.
    fn recount(&mut self, key: usize) {
        let (Some(conn), Some(counted)) = (self.conns.get(key), self.counted.get_mut(key)) else {
            return;
        };
        let now = u16::try_from(conn.descriptors().max(2)).unwrap_or(u16::MAX);
        self.held = self.held - u64::from(*counted) + u64::from(now);
        *counted = now;
    }

    fn close(&mut self, key: usize, now: Instant) {
        if let Some(counted) = self.counted.get_mut(key) {
            self.held -= u64::from(std::mem::take(counted));
        }
        let conn = self.conns.remove(key);
        let ip = conn.client_ip();
        if let Some(open) = self.client_connections.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.client_connections.remove(&ip);
            }
        }
        let (mut ctx, _) = self.ctx(now);
        let (up, down) = conn.close(&mut ctx);
        self.summary.bytes_up += up;
        self.summary.bytes_down += down;
    }
}

/// Decides how outgoing sockets are bound: to devices unless turned off, or
/// refused (on Linux, without `CAP_NET_RAW` on older kernels), which is
/// tried once here rather than failing on every connection.
fn binding(config: &Config, ifaces: &[iface::Interface]) -> Binding {
    if !config.bind_device {
        return Binding::SourceOnly;
    }
    let probe = config.targets.iter().find_map(|t| {
        let name = t.iface.as_ref()?;
        let dev = ifaces.iter().find(|i| &i.name == name)?;
        let dev = sys::Device {
            name: dev.name.clone(),
            index: dev.index,
        };
        Some(sys::can_bind_device(&dev, t.ip.is_ipv6()))
    });
    match probe {
        Some(Err(e)) => Binding::SourceOnlyRefused(e.to_string()),
        _ => Binding::Device,
    }
}

/// Every address of every interface.
fn all_addrs(ifaces: &[iface::Interface]) -> Vec<IpAddr> {
    ifaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .collect()
}

/// The pipes relays may splice through: a bounded share of the descriptor
/// limit, or none when `DISPATCH_SPLICE=0` (relaying through rings only,
/// for comparison).
fn pipe_pool(fd_limit: Option<u64>) -> PipePool {
    if std::env::var_os("DISPATCH_SPLICE").is_some_and(|v| v == "0") {
        log::info!("splice off (DISPATCH_SPLICE=0): relaying through buffers");
        return PipePool::none();
    }
    let share = fd_limit.map_or(MAX_PIPES as u64, |l| l / DESCRIPTORS_PER_PIPE);
    let mut max = usize::try_from(share).unwrap_or(MAX_PIPES).min(MAX_PIPES);
    // An unprivileged user's pipes share a quota of pages (with its other
    // processes): take at most half, so pipes keep their full size.
    if let Some(quota) = crate::splice::user_pipe_quota(PIPE_SIZE) {
        max = max.min(quota / 2);
    }
    PipePool::new(max, SPARE_PIPES.min(max / 4), PIPE_SIZE)
}
