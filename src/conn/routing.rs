//! Which route a request takes when some links are other proxies
//! ([`crate::links::Links::pick_route`]), and the failover from a proxy
//! that failed as a link to the next route, for the same request.
//!
//! A `socks5h://` or `http://` proxy gets the client's target as it came
//! (a name stays a name: no DNS query here); a `socks5://` proxy gets an
//! address, so a name is resolved here first, as for an interface link.

use std::net::SocketAddr;

use super::connect::TOTAL_TIMEOUTS;
use super::request::Target;
use super::via_proxy::{self, ViaProxy};
use super::{Conn, Ctx, Flow, Pending, Progress, State, Step};
use crate::dns::Job;
use crate::links::Tried;
use crate::net;
use crate::socks::{Dest, Reply};

/// The longest name a SOCKS5 request carries.
const MAX_NAME: usize = 255;

impl Conn {
    /// Picks the route for `target` among those not `tried`, and starts it.
    pub(super) fn route(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut pending: Pending,
        target: Target,
        tried: Tried,
    ) -> Step {
        let give_up_at = *pending
            .give_up_at
            .get_or_insert(ctx.now + ctx.timeouts.connect * TOTAL_TIMEOUTS);
        // Refused before a route is picked: a proxy's trial is never spent
        // on a request that makes no attempt.
        if let Target::Addr(addr) = &target {
            if !net::is_connectable(*addr) || ctx.is_self(*addr) {
                self.target = Some(target);
                let reason = "destination not allowed";
                return self.fail(ctx, pending.client, Reply::NotAllowed, reason, None);
            }
        }
        // An address of a family no interface link has goes to a proxy.
        let (interfaces, v6) = match &target {
            Target::Addr(addr) => (ctx.links.can_reach(addr.ip()), Some(addr.is_ipv6())),
            Target::Name(..) => (true, None),
        };
        let link = match ctx.links.pick_route(tried, interfaces, v6, ctx.now) {
            Some(None) => return self.connect_direct(ctx, pending, target),
            Some(Some(link)) => link,
            None => {
                // Every proxy failed and no interface is a link. The error
                // is the proxies' (refused, timed out), not the target's:
                // telling a SOCKS client "connection refused" would blame
                // the target, so it hears a server failure, and an HTTP
                // client one reason.
                let reason = "no upstream proxy could be reached";
                if let super::Client::HttpConnect | super::Client::HttpForward = pending.client {
                    self.failed = true;
                    self.reason = reason;
                    self.outbox.http_error(502, reason, "");
                    return (self.enter_closing(ctx), Flow::Next);
                }
                return self.fail(ctx, pending.client, Reply::GeneralFailure, reason, None);
            }
        };
        let passes_names = ctx
            .links
            .get(link)
            .as_proxy()
            .is_some_and(|p| p.url.scheme.passes_names());
        self.target = Some(target.clone());
        match &target {
            Target::Addr(addr) => self.start_via(ctx, pending, link, tried, Dest::Addr(*addr)),
            // No DNS name is this long (at most 253); SOCKS5 cannot carry it.
            Target::Name(host, _) if passes_names && host.len() > MAX_NAME => {
                ctx.links.abandoned(link, ctx.now);
                let reason = "name too long to pass on";
                self.fail(ctx, pending.client, Reply::HostUnreachable, reason, None)
            }
            Target::Name(host, port) if passes_names => {
                self.start_via(ctx, pending, link, tried, Dest::Name(host, *port))
            }
            Target::Name(host, port) => {
                pending.via = Some((link, tried));
                let job = Job {
                    key: self.handle.key,
                    id: self.handle.id,
                    host: host.to_string(),
                    port: *port,
                    client: self.client_addr.ip().to_canonical(),
                    deadline: (ctx.now + ctx.timeouts.connect).min(give_up_at),
                };
                ctx.resolver.submit(job, ctx.now);
                self.arm_at(ctx, (ctx.now + ctx.timeouts.connect).min(give_up_at));
                (State::Resolving(pending), Flow::Next)
            }
        }
    }

    /// A name for a `socks5://` proxy resolved: its first connectable
    /// address goes to the proxy.
    pub(super) fn resolved_via(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut pending: Pending,
        result: std::io::Result<Vec<SocketAddr>>,
    ) -> Step {
        let (link, tried) = pending.via.take().expect("resolving for a proxy");
        let client = pending.client;
        let (reply, reason, e) = match result {
            Err(e) => (Reply::HostUnreachable, "name not resolved", Some(e)),
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.into_iter().map(net::canonical).collect();
                if addrs.iter().any(|&a| ctx.is_self(a)) {
                    (Reply::NotAllowed, "the name is the proxy itself", None)
                } else if let Some(addr) = addrs.into_iter().find(|&a| net::is_connectable(a)) {
                    return self.start_via(ctx, pending, link, tried, Dest::Addr(addr));
                } else {
                    let reason = "name has no address to connect to";
                    (Reply::HostUnreachable, reason, None)
                }
            }
        };
        // No attempt through the link: its trial, if this was one, is the
        // next request's.
        ctx.links.abandoned(link, ctx.now);
        self.fail(ctx, client, reply, reason, e)
    }

    /// The request ends while its name resolves for a proxy link (timeout,
    /// client gone): the link learnt nothing, and a trial it was on is the
    /// next request's.
    pub(super) fn unresolved_via(ctx: &mut Ctx<'_>, pending: &Pending) {
        if let Some((link, _)) = pending.via {
            ctx.links.abandoned(link, ctx.now);
        }
    }

    fn start_via(
        &mut self,
        ctx: &mut Ctx<'_>,
        pending: Pending,
        link: usize,
        tried: Tried,
        dest: Dest<'_>,
    ) -> Step {
        match ViaProxy::start(ctx, self.handle, link, tried, dest) {
            Ok(v) => {
                let give_up_at = pending.give_up_at.expect("set by route");
                self.arm_at(ctx, v.deadline(ctx.timeouts.connect).min(give_up_at));
                self.via_proxy(ctx, v, pending)
            }
            Err((tried, e)) => {
                self.error = Some(e);
                self.failover(ctx, pending, tried)
            }
        }
    }

    /// Drives a connection through a proxy.
    pub(super) fn via_proxy(&mut self, ctx: &mut Ctx<'_>, v: ViaProxy, pending: Pending) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::ViaProxy(v, pending), "client write error", e);
        }
        let (v, next) = v.poll(ctx, self.handle);
        self.via_step(ctx, v, pending, next)
    }

    pub(super) fn via_step(
        &mut self,
        ctx: &mut Ctx<'_>,
        v: Option<ViaProxy>,
        pending: Pending,
        next: via_proxy::Next,
    ) -> Step {
        match (v, next) {
            (Some(v), via_proxy::Next::Wait) => {
                (State::ViaProxy(v, pending), Flow::Stop(Progress::Idle))
            }
            (_, via_proxy::Next::Established(upstream, bound)) => {
                self.local = upstream.stream.local_addr().ok();
                self.error = None;
                self.relay_with(ctx, pending, upstream, bound)
            }
            (_, via_proxy::Next::Failed(reply, e)) => self.fail(
                ctx,
                pending.client,
                reply,
                "the upstream proxy could not reach the target",
                Some(e),
            ),
            (_, via_proxy::Next::Failover(tried, e)) => {
                self.error = Some(e);
                self.failover(ctx, pending, tried)
            }
            (None, via_proxy::Next::Wait) => unreachable!("waiting without an attempt"),
        }
    }

    /// The deadline armed for a connect through a proxy passed: the
    /// proxy's own timeout (a link failure: the next route), or the
    /// connect's as a whole (the request fails; the proxy, cut short, is
    /// not blamed).
    pub(super) fn via_timer(&mut self, ctx: &mut Ctx<'_>, v: ViaProxy, pending: Pending) -> Step {
        if pending.give_up_at.is_some_and(|at| ctx.now >= at) {
            v.abandon(ctx);
            return self.give_up(ctx, pending);
        }
        let next = v.on_timer(ctx, self.handle);
        self.via_step(ctx, None, pending, next)
    }

    fn give_up(&mut self, ctx: &mut Ctx<'_>, pending: Pending) -> Step {
        log::debug!(
            "#{} connect given up after {TOTAL_TIMEOUTS} connect timeouts",
            self.handle.id
        );
        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let reason = "connect given up";
        self.fail(ctx, pending.client, Reply::TtlExpired, reason, Some(e))
    }

    /// The proxy failed as a link: the same request takes another route,
    /// unless the connect's time as a whole is up.
    fn failover(&mut self, ctx: &mut Ctx<'_>, pending: Pending, tried: Tried) -> Step {
        self.disarm(ctx);
        if pending.give_up_at.is_some_and(|at| ctx.now >= at) {
            return self.give_up(ctx, pending);
        }
        let target = self.target.clone().expect("a request has a target");
        self.route(ctx, pending, target, tried)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::num::NonZeroU32;

    use super::super::rig::Rig;
    use super::super::Conn;
    use crate::links::{Links, ProxySpec, State, FIRST_BACKOFF};

    /// A rig whose one link is a `socks5://` proxy (names are resolved
    /// here for it), down and due its trial; a connection in the middle of
    /// resolving a name for it, the link on trial.
    fn resolving_on_trial() -> (Rig, Conn, std::net::TcpStream) {
        let mut rig = Rig::new();
        let spec = ProxySpec {
            url: "socks5://127.0.0.1:9".parse().unwrap(),
            addr: "127.0.0.1:9".parse().unwrap(),
            weight: NonZeroU32::MIN,
        };
        rig.links = Links::new(vec![], &[], false).with_proxies(vec![spec]);
        rig.links.broken(0, &"refused", rig.clock);
        rig.clock += FIRST_BACKOFF;
        let (mut conn, mut client) = rig.accept();
        client.write_all(&[5, 1, 0]).unwrap();
        rig.run_until(&mut conn, "request");
        let mut method = [0; 2];
        client.read_exact(&mut method).unwrap();
        let mut req = vec![5, 1, 0, 3, 9];
        req.extend_from_slice(b"localhost");
        req.extend_from_slice(&80u16.to_be_bytes());
        client.write_all(&req).unwrap();
        rig.run_until(&mut conn, "resolving");
        assert!(matches!(rig.links.get(0).state(), State::Trial { .. }));
        (rig, conn, client)
    }

    /// The next request gets the trial: the link is down, due at once.
    fn trial_given_back(rig: &Rig) {
        match rig.links.get(0).state() {
            State::Down { retry_at, .. } => assert!(retry_at <= rig.clock),
            other => panic!("the link stayed {other}"),
        }
    }

    #[test]
    fn a_resolve_that_times_out_gives_the_trial_back() {
        let (mut rig, mut conn, _client) = resolving_on_trial();
        rig.expire(&mut conn);
        assert_eq!(conn.reason, "name resolution timed out");
        trial_given_back(&rig);
        rig.close(conn);
    }

    #[test]
    fn a_client_that_leaves_while_resolving_gives_the_trial_back() {
        let (mut rig, conn, client) = resolving_on_trial();
        drop(client);
        rig.close(conn);
        trial_given_back(&rig);
    }
}
