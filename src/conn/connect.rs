//! Connecting: each address of the target in turn, through a link the
//! selector picks, failing over to another link when the failure is the
//! link's (see [`net::is_link_failure`]) and to the next address when it is
//! the target's. Only when nothing is left is the client told, with the
//! reply the last failure maps to ([`net::reply_for`]).
//!
//! A name with several addresses is raced (Happy Eyeballs, RFC 8305, see
//! [`crate::eyeballs`]): its addresses are tried with the families
//! interleaved, and while an attempt is in flight the next one starts after
//! the Connection Attempt Delay, at most [`RACING`] at once. The first to
//! connect wins; the others are closed at once and count as nothing
//! against their links. An address literal is not raced: BitTorrent's
//! thousands of dead peers must not double the SYNs sent.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use super::ctx::Ctx;
use super::io::{forget, Ready};
use super::token::{Handle, Side};
use super::upstream::Upstream;
use crate::eyeballs;
use crate::links::Tried;
use crate::net;
use crate::socks::Reply;

/// Attempts in flight at once for one connection.
pub const RACING: usize = 2;

/// The sockets attempts are registered as, by slot.
const SLOTS: [Side; RACING] = [Side::Upstream, Side::Racer];

/// A connect attempt in flight.
struct Attempt {
    stream: TcpStream,
    ready: Ready,
    link: usize,
    /// Index of its address.
    addr: usize,
    started: Instant,
}

/// Boxed: a connection spends little time here, and the state enum is as
/// large as its largest variant.
pub struct Connecting(Box<Inner>);

struct Inner {
    /// In the order to try them.
    addrs: Vec<SocketAddr>,
    /// Links already tried, per address.
    tried: Vec<Tried>,
    /// The next address not tried yet.
    at: usize,
    /// Addresses to try again through another link (their link failed).
    retry: Vec<usize>,
    attempts: [Option<Attempt>; RACING],
    /// Whether to race (a name with several addresses).
    race: bool,
    /// When the next attempt may start beside one in flight.
    next_start: Option<Instant>,
    /// What to tell the client if every address fails, and why.
    failure: Reply,
    error: Option<io::Error>,
}

/// What connecting came to.
#[derive(Debug)]
pub enum Next {
    /// Attempts are in flight: wait for them or for [`Connecting::deadline`].
    Wait,
    Connected(Upstream),
    /// Every address through every link failed.
    Failed(Reply, Option<io::Error>),
}

impl Connecting {
    /// Starts with the first address. `addrs` are in the resolver's order;
    /// with several (a name), they are raced, the family that recently
    /// worked first.
    pub fn start(ctx: &mut Ctx<'_>, conn: Handle, addrs: Vec<SocketAddr>) -> (Connecting, Next) {
        let race = addrs.len() > 1;
        let addrs = if race {
            let resolver_v6_first = addrs[0].is_ipv6();
            let mut v6 = ctx.links.families.v6_leads(resolver_v6_first, ctx.now);
            // A family whose every link is down does not go first.
            if !ctx.links.family_up(v6) && ctx.links.family_up(!v6) {
                v6 = !v6;
            }
            eyeballs::interleave(&addrs, v6)
        } else {
            addrs
        };
        let mut c = Connecting(Box::new(Inner {
            tried: vec![0; addrs.len()],
            addrs,
            at: 0,
            retry: Vec::new(),
            attempts: [None, None],
            race,
            next_start: None,
            failure: Reply::GeneralFailure,
            error: None,
        }));
        let next = c.0.fill(ctx, conn);
        (c, next)
    }

    /// The readiness of the attempt registered as `side`.
    pub fn ready_mut(&mut self, side: Side) -> Option<&mut Ready> {
        self.0.ready_mut(side)
    }

    /// When [`Connecting::on_timer`] is due: the next racing attempt, or
    /// the earliest attempt's connect timeout.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.0.deadline(timeout)
    }

    /// After readiness: whether an attempt connected or failed.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        self.0.poll(ctx, conn)
    }

    /// The deadline passed: start the next racing attempt, or time out the
    /// attempts that took too long.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, conn: Handle, timeout: Duration) -> Next {
        self.0.on_timer(ctx, conn, timeout)
    }

    /// The client left while connecting: the attempts say nothing of their
    /// links.
    pub fn abandon(mut self, ctx: &mut Ctx<'_>) {
        for a in self.0.attempts.iter_mut().filter_map(Option::take) {
            cancel(ctx, a);
        }
    }
}

impl Inner {
    /// The readiness of the attempt registered as `side`.
    fn ready_mut(&mut self, side: Side) -> Option<&mut Ready> {
        let slot = SLOTS.iter().position(|&s| s == side)?;
        self.attempts[slot].as_mut().map(|a| &mut a.ready)
    }

    /// When [`Connecting::on_timer`] is due: the next racing attempt, or
    /// the earliest attempt's connect timeout.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let timeouts = self.attempts.iter().flatten().map(|a| a.started + timeout);
        timeouts.chain(self.next_start).min()
    }

    /// After readiness: whether an attempt connected or failed.
    fn poll(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        for slot in 0..RACING {
            let Some(mut attempt) =
                self.attempts[slot].take_if(|a| a.ready.writable || a.ready.readable)
            else {
                continue;
            };
            match net::connect_result(&attempt.stream) {
                Ok(true) => return self.won(ctx, conn, slot, attempt),
                Ok(false) => {
                    attempt.ready = Ready::default();
                    self.attempts[slot] = Some(attempt);
                }
                Err(e) => self.attempt_failed(ctx, conn, attempt, e),
            }
        }
        self.fill(ctx, conn)
    }

    /// The deadline passed: start the next racing attempt, or time out the
    /// attempts that took too long.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, conn: Handle, timeout: Duration) -> Next {
        for slot in 0..RACING {
            if let Some(a) = self.attempts[slot].take_if(|a| a.started + timeout <= ctx.now) {
                self.attempt_failed(ctx, conn, a, io::ErrorKind::TimedOut.into());
            }
        }
        self.fill(ctx, conn)
    }

    /// `attempt` connected: the others are closed, and it becomes the upstream.
    fn won(&mut self, ctx: &mut Ctx<'_>, conn: Handle, slot: usize, a: Attempt) -> Next {
        let v6 = self.addrs[a.addr].is_ipv6();
        for other in self.attempts.iter_mut().filter_map(Option::take) {
            // It lost a race it started first: its family answers slower.
            if self.addrs[other.addr].is_ipv6() != v6 && other.started < a.started {
                ctx.links.families.demote(!v6, ctx.now);
            }
            cancel(ctx, other);
        }
        ctx.links.families.succeeded(v6);
        ctx.links
            .observe_connect(a.link, ctx.now.saturating_duration_since(a.started));
        ctx.links.connected(a.link);
        let Attempt {
            mut stream,
            ready,
            link,
            ..
        } = a;
        if SLOTS[slot] != Side::Upstream {
            // The relay knows one upstream socket; a racer that won is it now.
            let token = conn.token(Side::Upstream);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = ctx.registry.reregister(&mut stream, token, interest) {
                forget(ctx.registry, &mut stream);
                ctx.links.closed(link);
                return Next::Failed(Reply::GeneralFailure, Some(e));
            }
        }
        Next::Connected(Upstream {
            stream,
            ready,
            link,
        })
    }

    /// An attempt failed: blame the link or the target.
    fn attempt_failed(&mut self, ctx: &mut Ctx<'_>, conn: Handle, mut a: Attempt, e: io::Error) {
        forget(ctx.registry, &mut a.stream);
        let remote = self.addrs[a.addr];
        log::debug!(
            "#{} connect to {remote} through link {} failed: {e}",
            conn.id,
            ctx.links.get(a.link).label()
        );
        self.failure = net::reply_for(&e);
        if net::is_link_failure(&e) {
            ctx.links.failed(a.link, &e, ctx.now);
            if self.race {
                ctx.links.families.demote(remote.is_ipv6(), ctx.now);
            }
            self.retry.push(a.addr);
        } else {
            // The target answered: the link works, another would get the same.
            ctx.links.reached(a.link);
        }
        self.error = Some(e);
        // The next attempt starts at once (RFC 8305 §5).
        self.next_start = None;
    }

    /// Starts attempts while the racing rules allow: one when none is in
    /// flight, another beside it once its delay has passed.
    fn fill(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        loop {
            let in_flight = self.attempts.iter().flatten().count();
            let due = match in_flight {
                0 => true,
                n if n < RACING && self.race => self.next_start.is_none_or(|t| t <= ctx.now),
                _ => false,
            };
            if !due {
                break;
            }
            let Some(slot) = self.attempts.iter().position(Option::is_none) else {
                break;
            };
            if !self.start_one(ctx, conn, slot) {
                break;
            }
        }
        if self.attempts.iter().all(Option::is_none) {
            return Next::Failed(self.failure, self.error.take());
        }
        Next::Wait
    }

    /// Starts the next attempt in `slot`: an address whose link failed
    /// through another link, else the next address. False when none is left.
    fn start_one(&mut self, ctx: &mut Ctx<'_>, conn: Handle, slot: usize) -> bool {
        loop {
            let i = match self.retry.pop() {
                Some(i) => i,
                None if self.at < self.addrs.len() => {
                    self.at += 1;
                    self.at - 1
                }
                None => {
                    self.next_start = None;
                    return false;
                }
            };
            let remote = self.addrs[i];
            let Some(l) = ctx.links.pick(remote.ip(), self.tried[i], ctx.now) else {
                continue;
            };
            self.tried[i] |= 1 << l;
            let through = ctx.links.get(l);
            let Some(local) = through.ip() else {
                continue; // (the selector picks only links with an address)
            };
            let delay = eyeballs::attempt_delay(through.srtt());
            let attempt =
                net::connect_from(local, through.device(), remote).and_then(|mut stream| {
                    ctx.registry
                        .register(
                            &mut stream,
                            conn.token(SLOTS[slot]),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map(|()| stream)
                });
            match attempt {
                Ok(stream) => {
                    self.attempts[slot] = Some(Attempt {
                        stream,
                        ready: Ready::default(),
                        link: l,
                        addr: i,
                        started: ctx.now,
                    });
                    self.next_start = self.race.then(|| ctx.now + delay);
                    return true;
                }
                Err(e) => {
                    log::debug!("#{} connect to {remote} from {local} failed: {e}", conn.id);
                    self.failure = net::reply_for(&e);
                    if net::is_link_failure(&e) {
                        ctx.links.failed(l, &e, ctx.now);
                        self.retry.push(i);
                    } else {
                        // Says nothing of the link: a trial stays undecided.
                        ctx.links.abandoned(l, ctx.now);
                    }
                    self.error = Some(e);
                }
            }
        }
    }
}

/// Closes an attempt that is no longer wanted; its link is not blamed.
fn cancel(ctx: &mut Ctx<'_>, mut a: Attempt) {
    forget(ctx.registry, &mut a.stream);
    ctx.links.abandoned(a.link, ctx.now);
}
