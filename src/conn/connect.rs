//! Connecting: each address of the target in turn, through a link that
//! can reach it ([`crate::reach`]; none for this machine) and that the
//! selector picks. Only when nothing is left is the client told, with the
//! reply the last failure maps to ([`net::reply_for`]).
//!
//! Whose fault a failure is follows [`crate::evidence`]: a link the system
//! cannot send through is down at once and the address is tried through
//! another; silence (a timeout, host unreachable) is tried through one
//! more link, and blames the first only if the second reaches the target.
//! A target silent through two links is dead: the client is answered then,
//! and no link is blamed. An attempt still unanswered after its link's
//! hedge delay (a few of its round trips, at least past a SYN
//! retransmission) is raced through another link beside it, so a dead link
//! costs a client about a second, not a connect timeout, and a dead peer
//! costs two SYN flows, not one per link.
//!
//! A name with several addresses is raced too (Happy Eyeballs, RFC 8305,
//! see [`crate::eyeballs`]): its addresses are tried with the families
//! interleaved, and while an attempt is in flight the next one starts after
//! the Connection Attempt Delay, at most [`RACING`] at once. The first to
//! connect wins; the others are closed at once and count as nothing
//! against their links (but for a slow attempt to the same address, which
//! was silent). An address literal is not raced across addresses, only
//! hedged across links.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use super::ctx::Ctx;
use super::io::{forget, Ready};
use super::token::{Handle, Side};
use super::upstream::Upstream;
use crate::evidence::{self, Evidence};
use crate::eyeballs;
use crate::net;
use crate::reach::Reach;
use crate::socks::Reply;

mod failure;

/// Attempts in flight at once for one connection.
pub const RACING: usize = 2;

/// The sockets attempts are registered as, by slot.
const SLOTS: [Side; RACING] = [Side::Upstream, Side::Racer];

/// A connect attempt in flight.
struct Attempt {
    stream: TcpStream,
    ready: Ready,
    /// The link it leaves by; `None` for a target on this machine.
    link: Option<usize>,
    /// Index of its address.
    addr: usize,
    started: Instant,
    /// When another link is raced beside it, if it has not connected.
    hedge_at: Option<Instant>,
    /// Its hedge delay passed unanswered: it is silent for now.
    slow: bool,
}

/// Boxed: a connection spends little time here, and the state enum is as
/// large as its largest variant.
pub struct Connecting(Box<Inner>);

struct Inner {
    /// In the order to try them.
    addrs: Vec<SocketAddr>,
    /// Which links can reach each address.
    reach: Vec<Reach>,
    /// What the attempts to each address have shown.
    evidence: Vec<Evidence>,
    /// The next address not tried yet.
    at: usize,
    /// Addresses to try through another link, at once.
    retry: Vec<usize>,
    attempts: [Option<Attempt>; RACING],
    /// Whether to race addresses (a name with several).
    race: bool,
    /// When the next address may start beside one in flight.
    next_start: Option<Instant>,
    /// What to tell the client if every address fails, and why.
    failure: Reply,
    error: Option<io::Error>,
    /// When the connect gives up as a whole, whatever is left to try
    /// ([`TOTAL_TIMEOUTS`] connect timeouts after it began).
    give_up_at: Instant,
}

/// A connect as a whole, over every address and link, takes at most this
/// many connect timeouts, so a name with many dead addresses is answered
/// in bounded time. Three leave room for what one address may take (its
/// try, then another link's after the hedge delay) and for a second one.
pub const TOTAL_TIMEOUTS: u32 = 3;

/// What connecting came to.
#[derive(Debug)]
pub enum Next {
    /// Attempts are in flight: wait for them or for [`Connecting::deadline`].
    Wait,
    Connected(Upstream),
    /// Every address failed.
    Failed(Reply, Option<io::Error>),
}

impl Connecting {
    /// Attempts in flight (a socket each).
    pub fn in_flight(&self) -> usize {
        self.0.attempts.iter().flatten().count()
    }

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
            reach: addrs.iter().map(|&a| ctx.links.reach(a)).collect(),
            evidence: vec![Evidence::default(); addrs.len()],
            addrs,
            at: 0,
            retry: Vec::new(),
            attempts: [None, None],
            race,
            next_start: None,
            failure: Reply::GeneralFailure,
            error: None,
            give_up_at: ctx.now + ctx.timeouts.connect * TOTAL_TIMEOUTS,
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
        self.0.settle(ctx);
    }
}

impl Inner {
    /// The readiness of the attempt registered as `side`.
    fn ready_mut(&mut self, side: Side) -> Option<&mut Ready> {
        let slot = SLOTS.iter().position(|&s| s == side)?;
        self.attempts[slot].as_mut().map(|a| &mut a.ready)
    }

    /// When [`Connecting::on_timer`] is due: the next racing attempt, a
    /// hedge, or the earliest attempt's connect timeout.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let attempts = self.attempts.iter().flatten();
        let timeouts = attempts.clone().map(|a| a.started + timeout);
        let hedges = attempts.filter_map(|a| a.hedge_at);
        // The next address's start is due only with a slot free for it:
        // otherwise a start time already passed would fire again at once,
        // and again, until an attempt ended.
        let free = self.attempts.iter().any(Option::is_none);
        let start = self.next_start.filter(|_| free);
        let soonest = timeouts.chain(hedges).chain(start).min()?;
        Some(soonest.min(self.give_up_at))
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

    /// The deadline passed: time out the attempts that took too long, race
    /// another link beside those past their hedge delay, start the next
    /// racing address.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, conn: Handle, timeout: Duration) -> Next {
        if ctx.now >= self.give_up_at {
            log::debug!(
                "#{} connect given up after {} connect timeouts",
                conn.id,
                TOTAL_TIMEOUTS
            );
            // What is still in flight says nothing of its links yet.
            for a in self.attempts.iter_mut().filter_map(Option::take) {
                cancel(ctx, a);
            }
            self.settle(ctx);
            let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            return Next::Failed(Reply::TtlExpired, Some(e));
        }
        for slot in 0..RACING {
            if let Some(a) = self.attempts[slot].take_if(|a| a.started + timeout <= ctx.now) {
                self.attempt_failed(ctx, conn, a, io::ErrorKind::TimedOut.into());
            }
        }
        for slot in 0..RACING {
            let Some(a) = self.attempts[slot]
                .as_mut()
                .filter(|a| a.hedge_at.is_some_and(|t| t <= ctx.now))
            else {
                continue;
            };
            (a.hedge_at, a.slow) = (None, true);
            let (i, link) = (a.addr, a.link);
            if self.evidence[i].may_try_another() && !self.retry.contains(&i) {
                if let Some(l) = link {
                    log::debug!(
                        "#{} connect to {} through link {} unanswered after {:.3} s: racing another link",
                        conn.id,
                        self.addrs[i],
                        ctx.links.get(l).label(),
                        ctx.now.saturating_duration_since(a.started).as_secs_f64()
                    );
                }
                self.retry.push(i);
            }
        }
        self.fill(ctx, conn)
    }

    /// `attempt` connected: the others are closed, and it becomes the upstream.
    fn won(&mut self, ctx: &mut Ctx<'_>, conn: Handle, slot: usize, a: Attempt) -> Next {
        let v6 = self.addrs[a.addr].is_ipv6();
        for other_slot in 0..RACING {
            let Some(other) = self.attempts[other_slot].take() else {
                continue;
            };
            // It lost a race it started first: its family answers slower.
            if self.addrs[other.addr].is_ipv6() != v6 && other.started < a.started {
                ctx.links.families.demote(!v6, ctx.now);
            }
            if other.addr == a.addr && other.slow {
                self.drop_silent(ctx, other);
            } else {
                cancel(ctx, other);
            }
        }
        ctx.links.families.succeeded(v6);
        if let Some(l) = a.link {
            self.blame(ctx, conn, a.addr, l);
            ctx.links
                .observe_connect(l, ctx.now.saturating_duration_since(a.started));
            ctx.links.connected(l);
        }
        self.settle(ctx);
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
                if let Some(l) = link {
                    ctx.links.closed(l);
                }
                return Next::Failed(Reply::GeneralFailure, Some(e));
            }
        }
        Next::Connected(Upstream::new(stream, ready, link))
    }

    /// Starts attempts while the rules allow: one when none is in flight, a
    /// retry or hedge through another link at once, another address beside
    /// one in flight once its delay has passed.
    fn fill(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        loop {
            let in_flight = self.attempts.iter().flatten().count();
            let due = match in_flight {
                0 => true,
                n if n < RACING => {
                    !self.retry.is_empty()
                        || (self.race && self.next_start.is_none_or(|t| t <= ctx.now))
                }
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
            self.settle(ctx);
            return Next::Failed(self.failure, self.error.take());
        }
        Next::Wait
    }

    /// The next address to try: one to retry through another link, else
    /// the next not tried yet.
    fn next_addr(&mut self) -> Option<usize> {
        self.retry.pop().or_else(|| {
            (self.at < self.addrs.len()).then(|| {
                self.at += 1;
                self.at - 1
            })
        })
    }

    /// Starts the next attempt in `slot`. False when none is left.
    fn start_one(&mut self, ctx: &mut Ctx<'_>, conn: Handle, slot: usize) -> bool {
        loop {
            let Some(i) = self.next_addr() else {
                self.next_start = None;
                return false;
            };
            let remote = self.addrs[i];
            let ev = self.evidence[i];
            let link = match self.reach[i] {
                Reach::Direct if ev.any_started() => continue,
                Reach::Direct => None,
                _ if !ev.may_try_another() => continue,
                Reach::Only(set) => match ctx.links.pick(remote.ip(), ev.tried() | !set, ctx.now) {
                    Some(l) => Some(l),
                    None => continue,
                },
                Reach::Any => match ctx.links.pick(remote.ip(), ev.tried(), ctx.now) {
                    Some(l) => Some(l),
                    None => continue,
                },
            };
            let through = link.map(|l| ctx.links.get(l));
            let local = match through.map(|t| t.ip()) {
                Some(Some(ip)) => Some(ip),
                Some(None) => continue, // (the selector picks only links with an address)
                None => None,
            };
            let srtt = through.and_then(|t| t.srtt());
            self.evidence[i].start(link);
            let device = through.and_then(|t| t.device());
            let attempt = net::connect_from(local, device, remote).and_then(|mut stream| {
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
                        link,
                        addr: i,
                        started: ctx.now,
                        hedge_at: link.map(|_| ctx.now + evidence::hedge_delay(srtt)),
                        slow: false,
                    });
                    let delay = eyeballs::attempt_delay(srtt);
                    self.next_start = self.race.then(|| ctx.now + delay);
                    return true;
                }
                Err(e) => self.failed_at_once(ctx, conn, i, link, e),
            }
        }
    }
}

/// Closes an attempt that is no longer wanted; its link is not blamed.
fn cancel(ctx: &mut Ctx<'_>, mut a: Attempt) {
    forget(ctx.registry, &mut a.stream);
    if let Some(l) = a.link {
        ctx.links.abandoned(l, ctx.now);
    }
}
