//! Whose fault a failed connect is: the link's, the target's, or nobody's
//! yet. Pure: no sockets, time passed in.
//!
//! A timeout says that nothing came back, not why. In a BitTorrent swarm
//! most peers never answer, and a link that carries their SYNs is as
//! healthy as any. So silence alone blames nobody; it only becomes evidence
//! against a link when another link reaches the same target (a connect or
//! a refusal through it). A target silent through [`TRIES`] links is taken
//! for dead: the client is answered and neither link is blamed.
//!
//! An attempt need not time out to be silent: one that has not connected
//! after [`hedge_delay`] (well past the link's usual connect time) is raced
//! by an attempt to the same address through another link, and if that one
//! wins, the slow one counts as silent.
//!
//! A failure the system reports at once, before any packet left (no route
//! through the link's device, its address or device gone), is the link's
//! own: it is marked down at once.

use std::io;
use std::time::Duration;

use crate::links::Tried;

/// Links one target address is tried through before it is taken for dead.
pub const TRIES: u8 = 2;
/// The least time an attempt may take before another link is raced
/// beside it: past the first SYN retransmission (1 s on Linux), so one lost
/// SYN does not cost a link a mark.
pub const MIN_HEDGE: Duration = Duration::from_millis(1250);
/// The most: a link slower than this to connect is no use to a client.
pub const MAX_HEDGE: Duration = Duration::from_secs(4);
/// Round trips an attempt may take before it is raced.
const HEDGE_RTTS: u32 = 4;

/// What a failed connect says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The link cannot send at all: the system said so at once.
    Link,
    /// Nothing (or an ICMP error) came back: the target or the link.
    Silence,
    /// The target answered (a refusal): the link works.
    Target,
}

/// What `err` says of whose fault it is. `at_once`: the system refused the
/// connect call itself, before anything was sent (no route through the
/// device, no such address or device); a later error came back from the
/// network, and even "network unreachable" then is a router's word about
/// one target.
pub fn cause(err: &io::Error, at_once: bool) -> Cause {
    use io::ErrorKind::*;
    let local = matches!(
        err.kind(),
        NetworkUnreachable | NetworkDown | AddrNotAvailable
    ) || is_device_gone(err);
    match err.kind() {
        _ if local && at_once => Cause::Link,
        _ if local => Cause::Silence,
        TimedOut | HostUnreachable => Cause::Silence,
        _ => Cause::Target,
    }
}

/// The bound interface vanished.
fn is_device_gone(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(err.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO))
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

/// How long an attempt through a link whose smoothed connect time is
/// `srtt` may go unanswered before another link is raced beside it.
pub fn hedge_delay(srtt: Option<Duration>) -> Duration {
    srtt.map_or(MIN_HEDGE, |rtt| {
        (rtt * HEDGE_RTTS).clamp(MIN_HEDGE, MAX_HEDGE)
    })
}

/// What the attempts to one target address have shown so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// Links tried, whatever came of it: none is tried twice.
    tried: Tried,
    /// Links the target stayed silent through.
    silent: Tried,
    /// Attempts that tested the target (not failed by their link at once).
    tries: u8,
    /// Attempts made, a direct one (through no link) included.
    started: u8,
}

impl Evidence {
    pub fn tried(&self) -> Tried {
        self.tried
    }

    /// Whether any attempt was made.
    pub fn any_started(&self) -> bool {
        self.started > 0
    }

    /// An attempt through `link` (or directly, `None`) started.
    pub fn start(&mut self, link: Option<usize>) {
        if let Some(l) = link {
            self.tried |= 1 << l;
        }
        self.tries = self.tries.saturating_add(1);
        self.started = self.started.saturating_add(1);
    }

    /// The attempt through `link` failed by the link's own fault: it did
    /// not test the target, so another link may take its place.
    pub fn link_failed(&mut self) {
        self.tries = self.tries.saturating_sub(1);
    }

    /// The target stayed silent through `link`.
    pub fn silent(&mut self, link: usize) {
        self.silent |= 1 << link;
    }

    /// Whether the target may be tried through another link: it has been
    /// tested through fewer than [`TRIES`].
    pub fn may_try_another(&self) -> bool {
        self.tries < TRIES
    }

    /// The target was reached through `link`: the links it stayed silent
    /// through are to blame (each once).
    pub fn take_blame(&mut self, reached_by: usize) -> Tried {
        std::mem::take(&mut self.silent) & !(1 << reached_by)
    }

    /// The links it was silent through, once it is given up: they are
    /// blamed for nothing (a link on trial stays undecided).
    pub fn take_silent(&mut self) -> Tried {
        std::mem::take(&mut self.silent)
    }
}

/// The link indices in `set`, lowest first.
pub fn members(set: Tried) -> impl Iterator<Item = usize> {
    (0..Tried::BITS as usize).filter(move |&i| set & (1 << i) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(k: io::ErrorKind) -> io::Error {
        io::Error::from(k)
    }

    #[test]
    fn a_failure_at_once_for_want_of_a_route_or_address_is_the_links() {
        for k in [
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::NetworkDown,
            io::ErrorKind::AddrNotAvailable,
        ] {
            assert_eq!(cause(&err(k), true), Cause::Link, "{k:?}");
            assert_eq!(cause(&err(k), false), Cause::Silence, "{k:?} from a router");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_vanished_device_is_the_links() {
        for errno in [libc::ENODEV, libc::ENXIO] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(cause(&e, true), Cause::Link);
        }
    }

    #[test]
    fn timeouts_and_host_unreachable_are_silence_whenever_they_come() {
        for k in [io::ErrorKind::TimedOut, io::ErrorKind::HostUnreachable] {
            assert_eq!(cause(&err(k), false), Cause::Silence, "{k:?}");
            assert_eq!(cause(&err(k), true), Cause::Silence, "{k:?}");
        }
    }

    #[test]
    fn a_refusal_or_reset_is_the_targets_answer() {
        for k in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::PermissionDenied,
        ] {
            assert_eq!(cause(&err(k), false), Cause::Target, "{k:?}");
        }
    }

    #[test]
    fn hedge_waits_past_a_syn_retransmission_and_follows_slow_links() {
        let ms = Duration::from_millis;
        assert_eq!(hedge_delay(None), MIN_HEDGE);
        assert_eq!(hedge_delay(Some(ms(20))), MIN_HEDGE, "a fast link");
        assert_eq!(hedge_delay(Some(ms(600))), ms(2400), "satellite");
        assert_eq!(hedge_delay(Some(ms(5000))), MAX_HEDGE);
        assert!(
            MIN_HEDGE > Duration::from_secs(1),
            "Linux resends a SYN at 1 s"
        );
    }

    #[test]
    fn silence_through_one_link_blames_it_once_another_reaches_the_target() {
        let mut e = Evidence::default();
        e.start(Some(2));
        e.silent(2);
        assert!(e.may_try_another());
        e.start(Some(0));
        assert_eq!(e.tried(), 0b101);
        assert_eq!(e.take_blame(0), 1 << 2);
        assert_eq!(e.take_blame(0), 0, "blamed once");
    }

    #[test]
    fn a_target_silent_through_two_links_is_dead_and_blames_neither() {
        let mut e = Evidence::default();
        e.start(Some(0));
        e.silent(0);
        e.start(Some(1));
        e.silent(1);
        assert!(!e.may_try_another(), "not a third link");
        assert_eq!(e.take_silent(), 0b11, "left undecided, not blamed");
        assert_eq!(e.take_silent(), 0);
    }

    #[test]
    fn a_link_failing_at_once_does_not_use_up_a_try() {
        let mut e = Evidence::default();
        e.start(Some(0));
        e.link_failed();
        e.start(Some(1));
        e.silent(1);
        assert!(e.may_try_another(), "link 0 never tested the target");
        e.start(Some(2));
        assert!(!e.may_try_another());
        assert_eq!(e.tried(), 0b111);
    }

    #[test]
    fn the_link_that_reached_the_target_is_not_blamed() {
        let mut e = Evidence::default();
        e.start(Some(3));
        e.silent(3);
        assert_eq!(e.take_blame(3), 0, "silent then reached: a slow answer");
        assert_eq!(Evidence::default().take_blame(0), 0, "nothing silent");
    }

    #[test]
    fn a_direct_attempt_counts_as_started() {
        let mut e = Evidence::default();
        assert!(!e.any_started());
        e.start(None);
        assert!(e.any_started());
        assert_eq!(e.tried(), 0);
    }

    #[test]
    fn members_lists_a_set() {
        assert_eq!(members(0b1010).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(members(1 << 63).collect::<Vec<_>>(), [63]);
        assert_eq!(members(0).count(), 0);
    }
}
