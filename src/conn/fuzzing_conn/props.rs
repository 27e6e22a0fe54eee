//! The properties a `conn_whole` session must hold once both peers ended
//! (see the module above for the list), and what they read off the
//! process: its descriptors and its epoll's watch list.

use super::*;

impl Session<'_> {
    pub(super) fn check(&mut self, request: Request) {
        let describe = |s: &Session| {
            format!(
                "{request:?}: {} ({:?}); client sent {} got {} (shut {} reset {}), \
                 target sent {} got {} (shut {} reset {}), deadline fired {}",
                s.state(),
                s.closed,
                s.client.sent.len(),
                s.client.got.len(),
                s.client.shut,
                s.client.reset,
                s.target.sent.len(),
                s.target.got.len(),
                s.target.shut,
                s.target.reset,
                s.deadline_fired
            )
        };
        // No hang: both peers ended, so the connection is gone.
        assert!(
            self.conn.is_none(),
            "open after both peers ended: {}",
            describe(self)
        );
        if let Some(http) = &self.http {
            return self.check_http(http, &describe(self));
        }
        let reply = request.reply(&self.client.got);
        if !request.served() {
            assert!(
                self.target.sock.is_none() && !self.target.reset,
                "a refused request reached the target: {}",
                describe(self)
            );
            match reply {
                Some((ok, _)) => assert!(
                    !ok,
                    "a refused request got a success reply: {}",
                    describe(self)
                ),
                // Unless a deadline or its own reset cut it short, the
                // client is told why.
                None => assert!(
                    self.deadline_fired || self.client.reset,
                    "a refused request got no reply: {}",
                    describe(self)
                ),
            }
            return;
        }
        let troubled = self.deadline_fired || self.client.reset || self.target.reset;
        let Some((ok, len)) = reply else {
            assert!(troubled, "no whole reply: {}", describe(self));
            return;
        };
        if !ok {
            // Refused (a deadline, a reset): what follows is the error's
            // body, and the target got nothing.
            assert!(troubled, "a served request failed: {}", describe(self));
            assert!(
                self.target.got.is_empty(),
                "bytes after a failure: {}",
                describe(self)
            );
            return;
        }
        let down = &self.client.got[len..];
        // In order, nothing made up: a prefix of what was sent.
        assert!(
            self.target.sent.starts_with(down),
            "the client got bytes the target did not send: {}",
            describe(self)
        );
        assert!(
            self.client.sent.starts_with(&self.target.got),
            "the target got bytes the client did not send: {}",
            describe(self)
        );
        if troubled {
            return;
        }
        // Nothing lost: with no reset and no deadline, each direction
        // carried everything (whatever the other did), and then its EOF.
        let (reason, both_ended) = self.closed.expect("closed");
        assert!(
            both_ended,
            "closed before both peers ended ({reason}): {}",
            describe(self)
        );
        assert_eq!(
            down.len(),
            self.target.sent.len(),
            "download lost: {}",
            describe(self)
        );
        assert_eq!(
            self.target.got.len(),
            self.client.sent.len(),
            "upload lost: {}",
            describe(self)
        );
        assert!(
            self.client.saw_eof && self.target.saw_eof,
            "an EOF was not passed on: {}",
            describe(self)
        );
    }

    /// A kept-alive forward session with no fault: every request reached
    /// the origin, rewritten, over one connection, and the client got every
    /// response, exactly, in order.
    pub(super) fn check_http(&self, http: &Http, describe: &str) {
        if let Some(head) = &http.bad_head {
            panic!("the origin got a head not rewritten as expected: {head:?}: {describe}");
        }
        let troubled = self.deadline_fired || self.client.reset || self.target.reset;
        if troubled || http.faulted {
            return;
        }
        assert_eq!(
            http.answered, http.requests,
            "requests lost on the way to the origin: {describe}"
        );
        assert!(
            !http.reconnected_while_open,
            "kept-alive requests on a new connection while the first was open: {describe}"
        );
        assert!(
            self.client.got == self.target.sent,
            "the client got other than the origin's responses ({} of {} bytes): {describe}",
            self.client.got.len(),
            self.target.sent.len()
        );
    }

    /// Nothing lent, armed, counted or open once the connection is gone.
    pub(super) fn finish(mut self, descriptors: Option<usize>) {
        let rig = &mut self.h.rig;
        assert_eq!(rig.pool.lent(), 0, "a ring is still lent");
        assert_eq!(rig.pool.pipes.lent(), 0, "a kernel pipe is still lent");
        assert!(
            rig.timers.iter().all(|t| t.1 != self.key),
            "a deadline is still armed: {:?} (key {}, closed {:?})",
            rig.timers,
            self.key,
            self.closed
        );
        assert_eq!(rig.links.get(0).stats.open, 0, "the link still counts it");
        assert_eq!(rig.associations, 0);
        // Nothing registered: the loop's epoll watches its waker only.
        let watched = epoll_watched(&self.h.rig.poll);
        assert_eq!(
            watched, 1,
            "{watched} descriptors still registered after the close"
        );
        drop(self.client.sock.take());
        drop(self.target.sock.take());
        drop(self.origin);
        // Nothing open: only where no other thread opens descriptors (the
        // fuzzer), since the count is the whole process's.
        if let Some(before) = descriptors {
            let now = open_descriptors() - self.h.rig.pool.pipes.descriptors();
            assert_eq!(now, before, "descriptors left open after the close");
        }
    }
}

/// The descriptors this process has open.
pub(super) fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// How many descriptors an epoll instance watches (a `tfd:` line each in
/// its fdinfo).
fn epoll_watched(poll: &mio::Poll) -> usize {
    use std::os::fd::AsRawFd;
    let info = format!("/proc/self/fdinfo/{}", poll.as_raw_fd());
    let text = std::fs::read_to_string(info).unwrap();
    text.lines().filter(|l| l.starts_with("tfd:")).count()
}
