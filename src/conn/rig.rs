//! The parts of a loop, built by hand around one connection: a poll, the
//! links, the ring pool, a resolver, the timers. The state × event tests
//! (`tests.rs`) and the whole-connection fuzz target (`fuzzing_conn.rs`)
//! drive a real [`Conn`] over real loopback sockets with it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream as StdStream};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::*;
use crate::auth::Credentials;
use crate::dns::Resolver;
use crate::links::{LinkSpec, Links};
use crate::ring::RingPool;

pub const WAKER: Token = Token(usize::MAX - 1);
pub const RING: usize = 4096;
/// Long enough that only a hang reaches it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The parts of a loop, and a listener standing for the proxy's.
pub struct Rig {
    pub poll: Poll,
    pub events: Events,
    pub links: Links,
    pub pool: RingPool,
    pub resolver: Resolver,
    pub timers: Timers,
    pub notices: Notices,
    pub counters: crate::metrics::Counters,
    pub auth: Credentials,
    pub udp_buf: Vec<u8>,
    pub associations: usize,
    pub client_associations: std::collections::HashMap<IpAddr, u32>,
    pub listener: TcpListener,
    pub listen: SocketAddr,
    pub next_id: u64,
    /// The clock never reads earlier than this (deadlines are fired by
    /// moving it on).
    pub clock: Instant,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_auth(Credentials::default())
    }

    pub fn with_auth(auth: Credentials) -> Rig {
        Rig::build(auth, &crate::sys::hosts_path())
    }

    /// Names are looked up in `hosts` (and then the system's resolver).
    pub fn with_hosts(hosts: &std::path::Path) -> Rig {
        Rig::build(Credentials::default(), hosts)
    }

    pub fn build(auth: Credentials, hosts: &std::path::Path) -> Rig {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = listener.local_addr().unwrap();
        let spec = LinkSpec {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            weight: NonZeroU32::MIN,
            iface: None,
            follow: false,
        };
        Rig {
            poll,
            events: Events::with_capacity(64),
            links: Links::new(vec![spec], &[], false),
            pool: RingPool::new(RING, 4),
            resolver: Resolver::with(1, hosts.to_path_buf(), waker).unwrap(),
            timers: Timers::new(),
            notices: Notices::default(),
            counters: Default::default(),
            auth,
            udp_buf: vec![0; UDP_BUFFER],
            associations: 0,
            client_associations: Default::default(),
            listener,
            listen,
            next_id: 0,
            clock: Instant::now(),
        }
    }

    pub fn ctx(&mut self) -> Ctx<'_> {
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
            max_client_associations: 64,
            listen: self.listen,
            local_ips: &[],
            timeouts: Timeouts {
                handshake: Duration::from_secs(30),
                connect: Duration::from_secs(30),
                bind: Duration::from_secs(120),
                idle: Duration::from_secs(600),
                stall: Duration::from_secs(60),
                response: Duration::from_secs(60),
                udp_idle: Duration::from_secs(120),
                udp_destinations: 4096,
            },
            now: Instant::now().max(self.clock),
        }
    }

    /// A client connected to the proxy, and its connection in `greeting`.
    pub fn accept(&mut self) -> (Conn, StdStream) {
        let client = StdStream::connect(self.listen).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let (accepted, addr) = self.listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        self.next_id += 1;
        let (key, id) = (self.next_id as usize, self.next_id);
        let stream = mio::net::TcpStream::from_std(accepted);
        let conn = Conn::accept(&mut self.ctx(), key, id, stream, addr).unwrap();
        (conn, client)
    }

    /// Delivers events (and DNS answers) to `conn` while `busy` says so and
    /// it does not ask to close; returns what it last said.
    pub fn run_while(&mut self, conn: &mut Conn, mut busy: impl FnMut(&Conn) -> bool) -> Progress {
        let start = Instant::now();
        let mut progress = conn.drive(&mut self.ctx());
        loop {
            if !busy(conn) || progress == Progress::Close {
                return progress;
            }
            while let Some(answer) = self.resolver.try_recv(Instant::now()) {
                progress = conn.on_resolved(&mut self.ctx(), answer);
                if !busy(conn) || progress == Progress::Close {
                    return progress;
                }
            }
            assert!(start.elapsed() < PATIENCE, "stuck in {}", conn.state.name());
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(20)))
                .unwrap();
            for e in self.events.iter() {
                if e.token() != WAKER && conn.owns(e.token()) {
                    conn.on_event(from_token(e.token()).1, e);
                }
            }
            progress = conn.drive(&mut self.ctx());
        }
    }

    /// Runs until the connection's state is `name`.
    pub fn run_until(&mut self, conn: &mut Conn, name: &str) -> Progress {
        let progress = self.run_while(conn, |c| c.state.name() != name);
        assert_eq!(conn.state.name(), name, "closed ({}) instead", conn.reason);
        progress
    }

    /// Runs until the connection asks to close; returns its reason.
    pub fn run_to_close(&mut self, conn: &mut Conn) -> &'static str {
        assert_eq!(self.run_while(conn, |_| true), Progress::Close);
        conn.reason
    }

    /// Runs until `done` (a peer's thread) has finished; returns its result.
    pub fn run_beside<T>(&mut self, conn: &mut Conn, done: std::thread::JoinHandle<T>) -> T {
        self.run_while(conn, |_| !done.is_finished());
        done.join().unwrap()
    }

    /// Fires the connection's deadline now.
    pub fn expire(&mut self, conn: &mut Conn) -> Progress {
        let at = conn.deadline().expect("no deadline armed");
        self.clock = self.clock.max(at);
        conn.on_deadline(&mut self.ctx())
    }

    /// Closes the connection as the reactor does, checking nothing is left
    /// lent.
    pub fn close(&mut self, conn: Conn) {
        conn.close(&mut self.ctx());
        assert_eq!(self.pool.lent(), 0, "a ring was not given back");
        assert_eq!(self.associations, 0);
        assert_eq!(self.links.get(0).stats.open, 0, "the link still counts it");
    }
}
