//! What a failed or lost attempt says, and to whom: the link (down at
//! once, or a mark against it once another link reached the target), the
//! target (it answered), or for now nobody (see [`crate::evidence`]).

use std::io;

use super::{cancel, Attempt, Inner, RACING};
use crate::conn::ctx::Ctx;
use crate::conn::io::forget;
use crate::conn::token::Handle;
use crate::evidence::{self, Cause};
use crate::net;

impl Inner {
    /// Closes a slow attempt to an address another link reached: its link
    /// was silent, and is left for [`Inner::blame`] to judge (a trial it
    /// was fails, rather than being made again).
    pub(super) fn drop_silent(&mut self, ctx: &mut Ctx<'_>, mut a: Attempt) {
        forget(ctx.registry, &mut a.stream);
        if let Some(l) = a.link {
            self.evidence[a.addr].silent(l);
        }
    }

    /// Address `i` was reached through link `by`: the links it stayed
    /// silent through are to blame.
    pub(super) fn blame(&mut self, ctx: &mut Ctx<'_>, conn: Handle, i: usize, by: usize) {
        let silent = self.evidence[i].take_blame(by);
        for l in evidence::members(silent) {
            let why = format!(
                "no answer from {}, which {} reached",
                self.addrs[i],
                ctx.links.get(by).label()
            );
            log::debug!(
                "#{} {why} (against link {})",
                conn.id,
                ctx.links.get(l).label()
            );
            ctx.links.failed(l, &why, ctx.now);
        }
    }

    /// Connecting is over: links the targets were silent through and
    /// nobody blamed are left undecided (a trial is made again).
    pub(super) fn settle(&mut self, ctx: &mut Ctx<'_>) {
        for e in &mut self.evidence {
            for l in evidence::members(e.take_silent()) {
                ctx.links.abandoned(l, ctx.now);
            }
        }
    }

    /// An attempt failed: blame the link, the target, or for now nobody.
    pub(super) fn attempt_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: Handle,
        mut a: Attempt,
        e: io::Error,
    ) {
        forget(ctx.registry, &mut a.stream);
        let i = a.addr;
        let remote = self.addrs[i];
        match a.link {
            Some(l) => log::debug!(
                "#{} connect to {remote} through link {} failed: {e}",
                conn.id,
                ctx.links.get(l).label()
            ),
            None => log::debug!("#{} connect to {remote} (no link) failed: {e}", conn.id),
        }
        self.failure = net::reply_for(&e);
        let cause = evidence::cause(&e, false);
        self.error = Some(e);
        // The next attempt starts at once (RFC 8305 §5).
        self.next_start = None;
        let Some(l) = a.link else {
            return;
        };
        match cause {
            // Not at once: the system never says it later (see `cause`).
            Cause::Link | Cause::Silence => {
                self.evidence[i].silent(l);
                if self.race {
                    ctx.links.families.demote(remote.is_ipv6(), ctx.now);
                }
                let pending = self.attempts.iter().flatten().any(|o| o.addr == i);
                if !pending && self.evidence[i].may_try_another() && !self.retry.contains(&i) {
                    self.retry.push(i);
                }
            }
            Cause::Target => {
                // The target answered: the link works, another would get the
                // same. Attempts to it through other links are pointless,
                // and the slow ones were silent where this one was not.
                ctx.links.reached(l);
                for slot in 0..RACING {
                    match self.attempts[slot].take_if(|o| o.addr == i) {
                        Some(o) if o.slow => self.drop_silent(ctx, o),
                        Some(o) => cancel(ctx, o),
                        None => {}
                    }
                }
                self.retry.retain(|&r| r != i);
                self.blame(ctx, conn, i, l);
            }
        }
    }

    /// Starting an attempt to address `i` through `link` failed at once.
    pub(super) fn failed_at_once(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: Handle,
        i: usize,
        link: Option<usize>,
        e: io::Error,
    ) {
        let remote = self.addrs[i];
        let from = link.and_then(|l| ctx.links.get(l).ip());
        match from {
            Some(local) => log::debug!("#{} connect to {remote} from {local} failed: {e}", conn.id),
            None => log::debug!("#{} connect to {remote} (no link) failed: {e}", conn.id),
        }
        self.failure = net::reply_for(&e);
        if let Some(l) = link {
            match evidence::cause(&e, true) {
                Cause::Link => {
                    ctx.links.broken(l, &e, ctx.now);
                    self.evidence[i].link_failed();
                    self.retry.push(i);
                }
                Cause::Silence => {
                    self.evidence[i].silent(l);
                    if self.evidence[i].may_try_another() {
                        self.retry.push(i);
                    }
                }
                // Says nothing of the link: a trial stays undecided.
                Cause::Target => ctx.links.abandoned(l, ctx.now),
            }
        }
        self.error = Some(e);
    }
}
