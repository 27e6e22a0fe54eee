//! The relay under a fuzzer: a script of what two in-memory peers do (send,
//! read, EOF, reset, shrink or grow their windows, spurious wake-ups), with
//! readiness raised the way epoll raises it (an edge on each change), played
//! against one [`Relay`], then the properties every session must hold:
//!
//! - no panic (an in-memory peer panics on a write after its shutdown);
//! - bytes arrive in order, and all of them unless a peer reset: a side
//!   that only sent EOF (a half-close) loses nothing in either direction;
//! - an EOF is passed on as an EOF, a reset as a reset;
//! - once both directions ended and the relay is released, no ring is lent.
//!
//! `cargo fuzz run conn_relay` drives [`relay_session`]; the committed
//! corpus is replayed by this module's tests, so `cargo test` checks it.

use super::relay::{Relay, Step};
use super::testio::{Mem, MemPeer};
use crate::ring::RingPool;

/// Small rings, so that wrap-around and back-pressure happen in short
/// scripts.
const RING: usize = 64;
/// Runs of the relay without progress before the session is declared hung.
const SETTLE_ROUNDS: usize = 10_000;

/// One peer of the session: everything it sent (a counter sequence, so
/// order is checkable) and what it read of what the relay wrote to it.
type Peer = MemPeer<Vec<u8>>;

impl Peer {
    /// Sends `n` more bytes of its sequence (nothing once it has ended).
    fn send(&mut self, n: usize) {
        let start = self.sent.len();
        let bytes: Vec<u8> = (start..start + n).map(|i| (i % 251) as u8).collect();
        if self.push(&bytes) {
            self.sent.extend_from_slice(&bytes);
        }
    }
}

/// What the relay came to.
enum End {
    Open,
    Done,
    Broken(&'static str),
}

struct Session {
    client: Peer,
    target: Peer,
    relay: Relay,
    pool: RingPool,
    end: End,
}

impl Session {
    /// Runs the relay as the reactor would after an event: again while it
    /// yields.
    fn run(&mut self) {
        if !matches!(self.end, End::Open) {
            return;
        }
        for _ in 0..SETTLE_ROUNDS {
            let step = self.relay.run(
                (&mut self.client.mem, &mut self.client.ready),
                (&mut self.target.mem, &mut self.target.ready),
                &mut self.pool,
            );
            match step {
                Step::Yield => continue,
                Step::Idle => return,
                Step::Done => self.end = End::Done,
                Step::Broken(why, _) => self.end = End::Broken(why),
            }
            self.relay.release(&mut self.pool);
            return;
        }
        panic!("the relay yields forever");
    }
}

impl Session {
    fn describe(&self) -> String {
        let (up, down) = (&self.relay.up, &self.relay.down);
        format!(
            "up read {} pending {} eof {} shut {}; down read {} pending {} eof {} shut {}; \
             client {:?} queued {} room {}; target {:?} queued {} room {}",
            up.bytes,
            up.pending(),
            up.eof,
            up.shut,
            down.bytes,
            down.pending(),
            down.eof,
            down.shut,
            self.client.ready,
            self.client.mem.written.len(),
            self.client.mem.room,
            self.target.ready,
            self.target.mem.written.len(),
            self.target.mem.room,
        )
    }
}

/// Plays the script `data` against one relay and checks the properties.
/// Panics when one fails.
pub fn relay_session(data: &[u8]) {
    play(data, false);
}

/// Plays `data` as [`relay_session`] does, printing each step to stderr:
/// for reading what a crash found.
pub fn relay_session_traced(data: &[u8]) {
    play(data, true);
}

fn play(data: &[u8], trace: bool) {
    let mut pool = RingPool::new(RING, 2);
    let mut bytes = data.iter().copied();
    // What the client pipelined behind its request goes first.
    let pipelined = usize::from(bytes.next().unwrap_or(0) % 32);
    let mut client = Peer::new(usize::from(bytes.next().unwrap_or(255)));
    let target = Peer::new(usize::from(bytes.next().unwrap_or(255)));
    let seed: Vec<u8> = (0..pipelined).map(|i| (i % 251) as u8).collect();
    client.sent.extend_from_slice(&seed);
    let relay = Relay::new(&seed, &mut pool);
    let mut s = Session {
        client,
        target,
        relay,
        pool,
        end: End::Open,
    };
    while let Some(op) = bytes.next() {
        let arg = usize::from(bytes.next().unwrap_or(1));
        match op % 12 {
            0 => s.client.send(arg + 1),
            1 => s.target.send(arg + 1),
            2 => s.client.send_eof(),
            3 => s.target.send_eof(),
            4 => s.client.send_reset(),
            5 => s.target.send_reset(),
            6 => s.client.read(arg),
            7 => s.target.read(arg),
            8 => s.client.set_room(arg),
            9 => s.target.set_room(arg),
            10 => {}
            _ => {
                // A spurious wake-up: the relay must cope with readiness
                // that says more than is there. (Flags only add up, as
                // `Ready::record` does: a reported EOF stays reported.)
                for p in [&mut s.client, &mut s.target] {
                    p.ready.readable = true;
                    p.ready.writable = true;
                }
            }
        }
        s.run();
        if trace {
            eprintln!("op {} {arg}: {}", op % 12, s.describe());
        }
    }
    settle(&mut s);
    check(&s);
}

/// The peers read everything, then end (unless they reset): the relay must
/// come to its end.
fn settle(s: &mut Session) {
    s.client.set_room(usize::MAX);
    s.target.set_room(usize::MAX);
    s.client.send_eof();
    s.target.send_eof();
    for _ in 0..SETTLE_ROUNDS {
        s.run();
        s.client.read(usize::MAX);
        s.target.read(usize::MAX);
        if !matches!(s.end, End::Open) {
            return;
        }
    }
    panic!(
        "the relay never ended: up {} of {} read, down {} of {}",
        s.relay.up.bytes,
        s.client.sent.len(),
        s.relay.down.bytes,
        s.target.sent.len()
    );
}

fn check(s: &Session) {
    if let End::Broken(why) = s.end {
        // In-memory peers only fail by resetting, which is not breakage.
        panic!("the relay broke: {why}");
    }
    assert_eq!(s.pool.lent(), 0, "a ring is still lent after the end");
    assert_eq!(s.pool.pipes.lent(), 0, "a pipe is still lent after the end");
    let (c, t) = (&s.client, &s.target);
    // In order, always; complete unless the receiving side reset (what a
    // peer sent before its own reset is still delivered).
    assert!(t.sent.starts_with(&c.got), "download out of order");
    assert!(c.sent.starts_with(&t.got), "upload out of order");
    if !t.reset {
        assert_eq!(t.got.len(), c.sent.len(), "upload bytes lost");
    }
    if !c.reset {
        assert_eq!(c.got.len(), t.sent.len(), "download bytes lost");
    }
    // The counters count what was read, which is at least what arrived.
    let (up, down) = (s.relay.up.bytes as usize, s.relay.down.bytes as usize);
    assert!(
        t.got.len() <= up && up <= c.sent.len(),
        "upload counted {up}"
    );
    assert!(
        c.got.len() <= down && down <= t.sent.len(),
        "download counted {down}"
    );
    // How each end was passed on.
    if !t.reset {
        passed_on(c, &t.mem, "client", "target");
    }
    if !c.reset {
        passed_on(t, &c.mem, "target", "client");
    }
}

/// `from`'s end reached `to` as an EOF or a reset, as it was sent. A peer
/// that sent EOF and reset later (it closed with unread data) ended its
/// direction cleanly first: either may be passed on.
fn passed_on(from: &Peer, to: &Mem, a: &str, b: &str) {
    match (from.eof, from.reset) {
        (true, true) => assert!(to.shut || to.aborted, "the {a}'s end reaches the {b}"),
        (_, true) => assert!(to.aborted, "the {a}'s reset reaches the {b}"),
        _ => assert!(to.shut && !to.aborted, "the {a}'s EOF reaches the {b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds and every crash found, replayed.
    #[test]
    fn committed_corpus_holds_the_properties() {
        super::super::fuzz_input::replay_committed("conn_relay", 5, |data| {
            relay_session(data);
        });
    }

    #[test]
    fn empty_and_short_scripts_end_cleanly() {
        relay_session(&[]);
        relay_session(&[3]);
        relay_session(&[0, 0, 0, 0, 200]);
    }

    #[test]
    fn half_close_then_a_long_download_loses_nothing() {
        // Client sends 100, EOFs; target sends 250 ×4 through a 10-byte
        // window read 7 at a time.
        let mut script = vec![0, 10, 255, 0, 99, 2, 0, 8, 10];
        for _ in 0..4 {
            script.extend_from_slice(&[1, 249, 6, 7, 6, 7]);
        }
        relay_session(&script);
    }

    #[test]
    fn resets_both_ways_mid_transfer() {
        relay_session(&[5, 20, 20, 0, 50, 1, 50, 4, 0, 1, 10, 10, 0]);
        relay_session(&[5, 20, 20, 0, 50, 1, 50, 5, 0, 0, 10, 11, 0]);
    }

    /// The property checks catch a relay that loses bytes: a session whose
    /// delivered bytes are tampered with fails.
    #[test]
    fn a_lost_byte_is_caught() {
        let mut pool = RingPool::new(RING, 2);
        let relay = Relay::new(&[], &mut pool);
        let mut s = Session {
            client: Peer::new(255),
            target: Peer::new(255),
            relay,
            pool,
            end: End::Open,
        };
        s.client.send(10);
        s.run();
        settle(&mut s);
        s.target.got.pop();
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&s))).is_err());
    }
}
