//! The connection relaying: a tunnel's bytes both ways, an HTTP forward
//! exchange, and what follows the end of an exchange (close, or keep alive
//! for the next request).

use super::super::*;

impl Conn {
    pub(in crate::conn) fn relaying(&mut self, ctx: &mut Ctx<'_>, mut r: Relaying) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Relaying(r), "client write error", e);
        }
        // The reply goes before anything relayed, EOF included.
        if !self.outbox.is_empty() {
            return (State::Relaying(r), Flow::Stop(Progress::Idle));
        }
        let before = r.mark();
        let step = r.relay.run(
            (&mut self.client, &mut self.client_ready),
            (&mut r.upstream.stream, &mut r.upstream.ready),
            ctx.pool,
        );
        self.moved(ctx, &mut r, before, None);
        match step {
            relay::Step::Idle => (State::Relaying(r), Flow::Stop(Progress::Idle)),
            relay::Step::Yield => (State::Relaying(r), Flow::Stop(Progress::Yield)),
            relay::Step::Done => {
                if self.reason.is_empty() {
                    self.reason = "done";
                }
                (State::Relaying(r), Flow::Stop(Progress::Close))
            }
            relay::Step::Broken(what, e) => self.broken(State::Relaying(r), what, e),
        }
    }

    /// Counts what a relay moved since `before`, notes its activity (or
    /// that it stalled), takes its note of why the target's side ended,
    /// and brings its deadline forward if a timeout now falls earlier.
    pub(in crate::conn) fn moved(
        &mut self,
        ctx: &mut Ctx<'_>,
        r: &mut Relaying,
        before: Mark,
        waiting: Option<Instant>,
    ) {
        let (up, down) = r.step_done(before, ctx.now);
        self.count(ctx, r.upstream.link(), up, down);
        if let Some((reason, e)) = r.relay.note.take().map(|n| *n) {
            (self.reason, self.error) = (reason, Some(e));
        }
        // Later deadlines are not armed each time bytes move: the one armed
        // is checked when it fires, and moved on then.
        let at = r.deadline(&ctx.timeouts, waiting);
        if self.deadline.is_none_or(|d| at < d) {
            self.arm_at(ctx, at);
        }
    }

    /// Moves an HTTP forward exchange on, and acts on what it came to.
    pub(in crate::conn) fn forwarding(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut r: Relaying,
        mut fwd: Box<Forward>,
    ) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Forwarding(r, fwd), "client write error", e);
        }
        if !self.outbox.is_empty() {
            return (State::Forwarding(r, fwd), Flow::Stop(Progress::Idle));
        }
        let client = (&mut self.client, &mut self.client_ready);
        let upstream = (&mut r.upstream.stream, &mut r.upstream.ready);
        if let Some(relay::Step::Broken(what, e)) = r.relay.socket_errors(client, upstream) {
            return self.broken(State::Forwarding(r, fwd), what, e);
        }
        let before = r.mark();
        let next = fwd.run(
            (&mut self.client, &mut self.client_ready),
            (&mut r.upstream.stream, &mut r.upstream.ready),
            &mut r.relay.up,
            &mut r.relay.down,
            ctx.pool,
        );
        fwd.waiting = match fwd.waiting {
            _ if !fwd.awaiting_response() => None,
            Some(since) => Some(since),
            None => Some(ctx.now),
        };
        self.moved(ctx, &mut r, before, fwd.waiting);
        let (status, detail, reason) = match next {
            forward::Next::Idle => return (State::Forwarding(r, fwd), Flow::Stop(Progress::Idle)),
            forward::Next::Yield => {
                return (State::Forwarding(r, fwd), Flow::Stop(Progress::Yield))
            }
            forward::Next::Broken(what, e) => {
                return self.broken(State::Forwarding(r, fwd), what, e)
            }
            forward::Next::Done => return self.exchange_done(ctx, r, fwd),
            forward::Next::Failed(status, what) => (status, what, what),
            forward::Next::ClientLeft => (
                400,
                "the request body ended early",
                "client closed during its request body",
            ),
        };
        self.reason = reason;
        if fwd.answered() {
            return (State::Forwarding(r, fwd), Flow::Stop(Progress::Close));
        }
        // Nothing of the origin's reached the client: drop what it sent
        // and answer for it.
        r.close(ctx);
        self.outbox.http_error(status, detail, "");
        (self.enter_closing(ctx), Flow::Next)
    }

    /// A forward exchange ended: close, or wait for the next request.
    pub(in crate::conn) fn exchange_done(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut r: Relaying,
        fwd: Box<Forward>,
    ) -> Step {
        let end = fwd.wind_up(&mut r.relay, ctx.pool);
        let open = if end.upstream_clean {
            Some(r)
        } else {
            log::debug!(
                "#{} origin sent bytes after its response; dropping that upstream",
                self.handle.id
            );
            self.local = None;
            r.close(ctx);
            None
        };
        if end.closes {
            self.reason = "done";
            if let Some(open) = open {
                open.close(ctx);
            }
            return (self.enter_closing(ctx), Flow::Next);
        }
        // Kept alive: the next request may already be waiting.
        self.arm(ctx, forward::KEEPALIVE_IDLE);
        let hs = Handshake::next_http(end.leftover, end.client_eof);
        let kept = KeptAlive { fwd, open };
        (State::Handshake(hs, Some(Box::new(kept))), Flow::Next)
    }

    /// Adds relayed bytes to the connection's and its link's counts.
    pub(in crate::conn) fn count(
        &mut self,
        ctx: &mut Ctx<'_>,
        link: Option<usize>,
        up: u64,
        down: u64,
    ) {
        self.bytes_up += up;
        self.bytes_down += down;
        if let Some(l) = link {
            ctx.links.carried(l, up, down, &mut self.seen, ctx.now);
        }
    }
}
