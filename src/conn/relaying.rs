//! A relaying connection's other half: its connected upstream, the relay
//! between the two, and the bookkeeping of its timeouts (when a byte last
//! moved, since when bytes wait that their receiver does not take).

use std::time::Instant;

use super::ctx::{Ctx, Timeouts};
use super::relay::Relay;
use super::upstream::Upstream;

/// A connected upstream and the bytes between it and the client.
pub struct Relaying {
    pub upstream: Upstream,
    pub relay: Relay,
    /// When a byte last moved either way.
    pub active: Instant,
    /// Since when bytes have waited that their receiver does not take.
    pub stalled: Option<Instant>,
}

/// What a relay had moved, to tell what one step did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    up: u64,
    down: u64,
    sent: u64,
}

impl Relaying {
    pub fn new(upstream: Upstream, relay: Relay, now: Instant) -> Relaying {
        Relaying {
            upstream,
            relay,
            active: now,
            stalled: None,
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            up: self.relay.up.bytes,
            down: self.relay.down.bytes,
            sent: self.relay.up.sent() + self.relay.down.sent(),
        }
    }

    /// When its next timeout falls: idle, stalled, or (HTTP, `waiting`
    /// for a response head since then) no response.
    pub fn deadline(&self, t: &Timeouts, waiting: Option<Instant>) -> Instant {
        let mut at = self.active + t.idle;
        if let Some(since) = self.stalled {
            at = at.min(since + t.stall);
        }
        if let Some(since) = waiting {
            at = at.min(since + t.response);
        }
        at
    }

    /// Which timeout has passed at `now`, if one has.
    pub fn expired(
        &self,
        t: &Timeouts,
        now: Instant,
        waiting: Option<Instant>,
    ) -> Option<&'static str> {
        if self.stalled.is_some_and(|since| now >= since + t.stall) {
            Some("stalled: the receiver took none of the bytes waiting for it")
        } else if waiting.is_some_and(|since| now >= since + t.response) {
            Some("no response head in time")
        } else if now >= self.active + t.idle {
            Some("idle")
        } else {
            None
        }
    }

    /// After a step that started at `before`: what moved up and down, and
    /// its activity noted (a byte moved) or its stall (bytes wait, none
    /// was written).
    pub fn step_done(&mut self, before: Mark, now: Instant) -> (u64, u64) {
        let after = self.mark();
        if after != before {
            self.active = now;
        }
        let pending = self.relay.up.pending() + self.relay.down.pending() > 0;
        if !pending || after.sent != before.sent {
            self.stalled = None;
        } else if self.stalled.is_none() {
            self.stalled = Some(now);
        }
        (after.up - before.up, after.down - before.down)
    }

    /// Gives the rings back, closes the upstream and tells its link.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        self.relay.release(ctx.pool);
        self.upstream.close(ctx);
    }
}
