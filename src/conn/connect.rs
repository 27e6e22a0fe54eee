//! Connecting: each address of the target in turn, through a link the
//! selector picks, failing over to another link when the failure is the
//! link's (see [`net::is_link_failure`]) and to the next address when it is
//! the target's. Only when nothing is left is the client told, with the
//! reply the last failure maps to ([`net::reply_for`]).

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Interest;

use super::ctx::Ctx;
use super::io::{forget, Ready};
use super::token::{Handle, Side};
use super::upstream::Upstream;
use crate::links::Tried;
use crate::net;
use crate::socks::Reply;

/// A connect attempt in flight.
struct Attempt {
    stream: TcpStream,
    ready: Ready,
    link: usize,
}

pub struct Connecting {
    addrs: Vec<SocketAddr>,
    /// Index of the address being tried.
    at: usize,
    /// Links already tried for that address.
    tried: Tried,
    attempt: Option<Attempt>,
    /// What to tell the client if every address fails, and why.
    failure: Reply,
    error: Option<io::Error>,
}

/// What connecting came to.
#[derive(Debug)]
pub enum Next {
    /// Still waiting for the attempt in flight.
    Wait,
    /// A new attempt started: its deadline should be armed.
    Started,
    Connected(Upstream),
    /// Every address through every link failed.
    Failed(Reply, Option<io::Error>),
}

impl Connecting {
    /// Starts with the first address.
    pub fn start(ctx: &mut Ctx<'_>, conn: Handle, addrs: Vec<SocketAddr>) -> (Connecting, Next) {
        let mut c = Connecting {
            addrs,
            at: 0,
            tried: 0,
            attempt: None,
            failure: Reply::GeneralFailure,
            error: None,
        };
        let next = c.next(ctx, conn);
        (c, next)
    }

    /// The readiness of the attempt in flight.
    pub fn ready_mut(&mut self) -> Option<&mut Ready> {
        self.attempt.as_mut().map(|a| &mut a.ready)
    }

    /// After readiness: whether the attempt in flight connected or failed.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        let Some(mut attempt) = self
            .attempt
            .take_if(|a| a.ready.writable || a.ready.readable)
        else {
            return Next::Wait;
        };
        match net::connect_result(&attempt.stream) {
            Ok(true) => {
                ctx.links.connected(attempt.link);
                Next::Connected(Upstream {
                    stream: attempt.stream,
                    ready: attempt.ready,
                    link: attempt.link,
                })
            }
            Ok(false) => {
                attempt.ready = Ready::default();
                self.attempt = Some(attempt);
                Next::Wait
            }
            Err(e) => self.attempt_failed(ctx, conn, attempt, e),
        }
    }

    /// The attempt in flight took too long.
    pub fn timed_out(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        match self.attempt.take() {
            Some(a) => self.attempt_failed(ctx, conn, a, io::ErrorKind::TimedOut.into()),
            None => self.next(ctx, conn),
        }
    }

    /// The client left while connecting: the attempt says nothing of its link.
    pub fn abandon(mut self, ctx: &mut Ctx<'_>) {
        if let Some(mut a) = self.attempt.take() {
            forget(ctx.registry, &mut a.stream);
            ctx.links.abandoned(a.link, ctx.now);
        }
    }

    /// An attempt failed: blame the link or the target, then go on.
    fn attempt_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: Handle,
        mut a: Attempt,
        e: io::Error,
    ) -> Next {
        forget(ctx.registry, &mut a.stream);
        let remote = self.addrs[self.at];
        log::debug!(
            "#{} connect to {remote} through link {} failed: {e}",
            conn.id,
            ctx.links.get(a.link).label()
        );
        self.failure = net::reply_for(&e);
        if net::is_link_failure(&e) {
            ctx.links.failed(a.link, &e, ctx.now);
        } else {
            // The target answered: the link works, another would get the same.
            ctx.links.reached(a.link);
            self.at += 1;
            self.tried = 0;
        }
        self.error = Some(e);
        self.next(ctx, conn)
    }

    /// Starts the next attempt: the current address through a link not yet
    /// tried for it, else the next address.
    fn next(&mut self, ctx: &mut Ctx<'_>, conn: Handle) -> Next {
        loop {
            let Some(&remote) = self.addrs.get(self.at) else {
                return Next::Failed(self.failure, self.error.take());
            };
            let Some(l) = ctx.links.pick(remote.ip(), self.tried, ctx.now) else {
                self.at += 1;
                self.tried = 0;
                continue;
            };
            self.tried |= 1 << l;
            let through = ctx.links.get(l);
            let Some(local) = through.ip() else {
                continue; // (the selector picks only links with an address)
            };
            let attempt =
                net::connect_from(local, through.device(), remote).and_then(|mut stream| {
                    ctx.registry
                        .register(
                            &mut stream,
                            conn.token(Side::Upstream),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map(|()| stream)
                });
            match attempt {
                Ok(stream) => {
                    self.attempt = Some(Attempt {
                        stream,
                        ready: Ready::default(),
                        link: l,
                    });
                    return Next::Started;
                }
                Err(e) => {
                    log::debug!("#{} connect to {remote} from {local} failed: {e}", conn.id);
                    self.failure = net::reply_for(&e);
                    if net::is_link_failure(&e) {
                        ctx.links.failed(l, &e, ctx.now);
                    } else {
                        // Says nothing of the link: a trial stays undecided.
                        ctx.links.abandoned(l, ctx.now);
                        self.at += 1;
                        self.tried = 0;
                    }
                    self.error = Some(e);
                }
            }
        }
    }
}
