//! The relay: bytes both ways between the client and its target once the
//! request was answered, until both directions have ended.
//!
//! Its rules, each unit-tested below over in-memory streams:
//! - back-pressure: a direction reads only while its ring has room, so a
//!   slow reader slows its writer down instead of filling memory;
//! - half-close: EOF from one side is passed on (a FIN) once its ring has
//!   drained, and the other direction goes on until its own EOF;
//! - a target that resets, or stops taking data, ends the upload, but what it
//!   sent before still reaches the client; a reset is then passed on to the
//!   client as a reset, so a truncated download never looks complete;
//! - a client that resets: what it sent before still reaches the target,
//!   which then gets a reset too; nothing more goes to the client;
//! - the client failing otherwise ends the connection at once.

use std::io;

use super::io::{is_reset, Stream};
use super::pipe::{fill, fill_spliced, flush, flush_spliced, splices, Pipe, Side, MAX_ROUNDS};
use crate::ring::RingPool;

/// Both directions of a relay.
#[derive(Default)]
pub struct Relay {
    /// Client to target.
    pub up: Pipe,
    /// Target to client.
    pub down: Pipe,
    /// Why the target's side ended early, for the connection's log line.
    /// (Boxed: rare, and a relay lives in every relaying connection.)
    pub note: Option<Box<(&'static str, io::Error)>>,
}

/// What a call to [`Relay::run`] came to.
#[derive(Debug)]
pub enum Step {
    /// Nothing can move until new readiness.
    Idle,
    /// Work is left, but other connections get a turn first.
    Yield,
    /// Both directions ended.
    Done,
    /// The client failed: the connection ends now.
    Broken(&'static str, io::Error),
}

impl Relay {
    /// A relay whose upload starts with what the client pipelined.
    pub fn new(pipelined: &[u8], pool: &mut RingPool) -> Relay {
        Relay {
            up: Pipe::seeded(pipelined, pool),
            ..Relay::default()
        }
    }

    /// Moves what the sockets' readiness allows, in at most
    /// [`MAX_ROUNDS`] rounds.
    pub fn run<C: Stream, U: Stream>(
        &mut self,
        client: Side<'_, C>,
        upstream: Side<'_, U>,
        pool: &mut RingPool,
    ) -> Step {
        let (client, client_ready) = client;
        let (upstream, upstream_ready) = upstream;
        if let Some(step) = self.socket_errors((client, client_ready), (upstream, upstream_ready)) {
            return step;
        }
        for _ in 0..MAX_ROUNDS {
            let up = pump(
                (client, client_ready),
                (upstream, upstream_ready),
                &mut self.up,
                pool,
            );
            let down = pump(
                (upstream, upstream_ready),
                (client, client_ready),
                &mut self.down,
                pool,
            );
            let moved = match (up, down) {
                // The client reset (seen reading or writing): its last bytes
                // still go to the target, then a reset.
                (Err(Failed::Read(e)), _) if is_reset(&e) => self.client_reset(e, pool),
                (_, Err(Failed::Write(e))) if is_reset(&e) => self.client_gone(e, pool),
                (_, Err(Failed::Write(e))) => return Step::Broken("client write error", e),
                (Err(Failed::Read(e)), _) => return Step::Broken("client read error", e),
                // The target reset, or stopped taking data (it answered and
                // closed, say): the upload ends, but what the target sent
                // before still reaches the client, then the connection ends
                // (with a reset, if the target reset).
                (_, Err(Failed::Read(e))) => {
                    self.down.reset = is_reset(&e);
                    self.note = Some(Box::new(("upstream reset", e)));
                    self.up.end(pool);
                    self.down.eof = true;
                    true
                }
                (Err(Failed::Write(e)), Ok(_)) => {
                    self.note = Some(Box::new(("target stopped reading", e)));
                    self.up.end(pool);
                    true
                }
                (Ok(a), Ok(b)) => a || b,
            };
            if self.up.shut && self.down.shut {
                return Step::Done;
            }
            if !moved {
                return Step::Idle;
            }
        }
        Step::Yield
    }

    /// A write to the client failed with its reset: nothing more goes to
    /// it, but what it sent before the reset is still in the socket and
    /// goes on to the target (the reads return it, then EOF or the reset),
    /// followed by a reset.
    fn client_gone(&mut self, e: io::Error, pool: &mut RingPool) -> bool {
        self.note = Some(Box::new(("client reset", e)));
        self.up.reset = true;
        self.down.end(pool);
        true
    }

    fn client_reset(&mut self, e: io::Error, pool: &mut RingPool) -> bool {
        self.note = Some(Box::new(("client reset", e)));
        self.up.eof = true;
        self.up.reset = true;
        self.down.end(pool);
        true
    }

    /// A socket reported an error that no read will surface, because that
    /// side already sent EOF and is no longer read: ask the socket. A side
    /// still read is left to its next read, which returns what arrived
    /// before the error first.
    pub fn socket_errors<C: Stream, U: Stream>(
        &mut self,
        (client, client_ready): Side<'_, C>,
        (upstream, upstream_ready): Side<'_, U>,
    ) -> Option<Step> {
        if self.up.eof && std::mem::take(&mut client_ready.error) {
            if let Some(e) = client.take_error() {
                return Some(Step::Broken("client error", e));
            }
        }
        if self.down.eof && std::mem::take(&mut upstream_ready.error) {
            if let Some(e) = upstream.take_error() {
                return Some(Step::Broken("upstream error", e));
            }
        }
        None
    }

    /// Gives both rings back.
    pub fn release(&mut self, pool: &mut RingPool) {
        self.up.release(pool);
        self.down.release(pool);
    }
}

/// Which end of a pipe failed.
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// One relay round for one direction: read what fits, write what is there,
/// and pass EOF on once the ring has drained.
fn pump<S: Stream, D: Stream>(
    src: Side<'_, S>,
    dst: Side<'_, D>,
    pipe: &mut Pipe,
    pool: &mut RingPool,
) -> Result<bool, Failed> {
    let fds = (src.0.splice_fd(), dst.0.splice_fd());
    let (read, wrote) = match fds {
        (Some(from), Some(to)) if splices(pipe, src.1, fds, pool) => {
            let read = fill_spliced(from, src.1, pipe).map_err(Failed::Read)?;
            let wrote = flush_spliced(to, dst.1, pipe, pool).map_err(Failed::Write)?;
            (read, wrote)
        }
        _ => {
            let read = fill(src.0, src.1, pipe, pool).map_err(Failed::Read)?;
            let wrote = flush(dst.0, dst.1, pipe, pool).map_err(Failed::Write)?;
            (read, wrote)
        }
    };
    let mut shut = false;
    if pipe.eof && !pipe.shut && pipe.pending() == 0 {
        pipe.shut = true;
        shut = true;
        if pipe.reset {
            dst.0.abort();
        } else {
            dst.0.shutdown_write();
        }
    }
    Ok(read || wrote || shut)
}

#[cfg(test)]
mod tests {
    use super::super::io::Ready;
    use super::super::testio::Mem;
    use super::*;

    const RING: usize = 64;

    struct Harness {
        client: Mem,
        upstream: Mem,
        client_ready: Ready,
        upstream_ready: Ready,
        relay: Relay,
        pool: RingPool,
    }

    impl Harness {
        fn new(room: usize) -> Harness {
            Harness {
                client: Mem::new(room),
                upstream: Mem::new(room),
                client_ready: Ready::BOTH,
                upstream_ready: Ready::BOTH,
                relay: Relay::default(),
                pool: RingPool::new(RING, 4),
            }
        }

        fn run(&mut self) -> Step {
            // In-memory streams never return short reads as "drained", so
            // readiness is what the test says it is.
            self.client_ready = Ready::BOTH;
            self.upstream_ready = Ready::BOTH;
            self.relay.run(
                (&mut self.client, &mut self.client_ready),
                (&mut self.upstream, &mut self.upstream_ready),
                &mut self.pool,
            )
        }

        /// Runs until nothing moves, the peers taking what is written.
        fn settle(&mut self) -> (Step, Vec<u8>, Vec<u8>) {
            let (mut to_target, mut to_client) = (Vec::new(), Vec::new());
            for _ in 0..1000 {
                let step = self.run();
                let wrote = !self.upstream.written.is_empty() || !self.client.written.is_empty();
                to_target.extend(self.upstream.drain_written());
                to_client.extend(self.client.drain_written());
                if !matches!(step, Step::Yield | Step::Idle)
                    || (matches!(step, Step::Idle) && !wrote)
                {
                    return (step, to_target, to_client);
                }
            }
            panic!("the relay never settled");
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn relaying_both_ways_delivers_every_byte_in_order() {
        let mut h = Harness::new(usize::MAX);
        let (up, down) = (bytes(1000), bytes(777));
        h.client.send(&up);
        h.upstream.send(&down);
        let (step, to_target, to_client) = h.settle();
        assert!(matches!(step, Step::Idle), "{step:?}");
        assert_eq!(to_target, up);
        assert_eq!(to_client, down);
        assert_eq!((h.relay.up.bytes, h.relay.down.bytes), (1000, 777));
        assert_eq!(h.pool.lent(), 0, "drained rings are given back");
    }

    #[test]
    fn back_pressure_reads_no_more_than_the_ring_holds() {
        let mut h = Harness::new(10);
        h.client.send(&bytes(1000));
        let step = h.run();
        assert!(matches!(step, Step::Idle), "{step:?}");
        assert_eq!(h.upstream.written.len(), 10, "the target took 10");
        assert_eq!(h.relay.up.pending(), RING, "then the ring filled");
        assert_eq!(
            h.client.incoming.len(),
            1000 - 10 - RING,
            "and reading stopped"
        );
        // The target reads: the rest flows.
        let (_, to_target, _) = h.settle();
        assert_eq!(to_target, bytes(1000));
    }

    #[test]
    fn client_eof_is_passed_on_after_its_bytes_and_the_download_goes_on() {
        let mut h = Harness::new(usize::MAX);
        h.client.send(b"request");
        h.client.eof = true;
        let (step, to_target, _) = h.settle();
        assert!(matches!(step, Step::Idle), "{step:?}");
        assert_eq!(to_target, b"request");
        assert!(h.upstream.shut, "the target got the FIN");
        assert!(!h.client.shut);
        // The half-closed connection still carries the answer.
        h.upstream.send(b"answer");
        h.upstream.eof = true;
        let (step, _, to_client) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_client, b"answer");
        assert!(h.client.shut);
    }

    #[test]
    fn target_eof_is_passed_on_and_the_upload_goes_on() {
        let mut h = Harness::new(usize::MAX);
        h.upstream.send(b"banner");
        h.upstream.eof = true;
        let (_, _, to_client) = h.settle();
        assert_eq!(to_client, b"banner");
        assert!(h.client.shut);
        h.client.send(b"late upload");
        h.client.eof = true;
        let (step, to_target, _) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_target, b"late upload");
    }

    #[test]
    fn eof_waits_for_the_ring_to_drain() {
        let mut h = Harness::new(5);
        h.client.send(b"0123456789");
        h.client.eof = true;
        h.run();
        assert!(!h.upstream.shut, "5 bytes are still in the ring");
        let (_, to_target, _) = h.settle();
        assert_eq!(to_target, b"0123456789");
        assert!(h.upstream.shut);
    }

    #[test]
    fn target_reset_still_delivers_what_it_sent_then_ends() {
        let mut h = Harness::new(usize::MAX);
        h.upstream.send(b"partial body");
        h.upstream.reset = true;
        h.client.send(b"more upload");
        let (step, _, to_client) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_client, b"partial body");
        assert_eq!(h.relay.note.as_ref().map(|n| n.0), Some("upstream reset"));
        assert!(h.client.aborted && !h.client.shut, "the reset is passed on");
        assert_eq!(h.pool.lent(), 0);
    }

    #[test]
    fn client_reset_delivers_what_it_sent_then_resets_the_target() {
        let mut h = Harness::new(5);
        h.client.send(b"last words");
        h.client.reset = true;
        h.client.gone = true;
        h.upstream.send(b"never delivered");
        let (step, to_target, to_client) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_target, b"last words");
        assert!(
            h.upstream.aborted && !h.upstream.shut,
            "the reset is passed on"
        );
        assert!(
            to_client.is_empty(),
            "nothing to a client that reset: {to_client:?}"
        );
        assert_eq!(h.relay.note.as_ref().map(|n| n.0), Some("client reset"));
        assert_eq!(h.pool.lent(), 0);
    }

    /// Found by the conn_relay fuzz target: the reset seen first on a
    /// write to the client must not drop what the client sent before it.
    #[test]
    fn client_reset_seen_writing_still_delivers_what_it_sent() {
        let mut h = Harness::new(usize::MAX);
        h.upstream.send(b"download");
        h.client.gone = true;
        h.client.reset = true;
        // More than a ring: most of it is still in the client's socket
        // when the write fails.
        let upload = bytes(5 * RING);
        h.client.send(&upload);
        let (step, to_target, _) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_target, upload);
        assert!(h.upstream.aborted, "the reset is passed on");
        assert_eq!(h.pool.lent(), 0);
    }

    #[test]
    fn target_that_stops_reading_ends_the_upload_only() {
        let mut h = Harness::new(usize::MAX);
        h.upstream.gone = true;
        h.client.send(b"upload");
        h.upstream.send(b"answer");
        h.upstream.eof = true;
        let (step, _, to_client) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert_eq!(to_client, b"answer");
        assert_eq!(
            h.relay.note.as_ref().map(|n| n.0),
            Some("target stopped reading")
        );
    }

    #[test]
    fn client_read_error_other_than_a_reset_breaks_the_connection_at_once() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::InvalidInput.into())
            }
        }
        let mut up = Pipe::default();
        let mut pool = RingPool::new(RING, 4);
        let mut ready = Ready::BOTH;
        let err = fill(&mut Failing, &mut ready, &mut up, &mut pool).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn client_that_is_gone_is_a_reset_passed_on_to_the_target() {
        let mut h = Harness::new(usize::MAX);
        h.client.gone = true;
        h.client.reset = true;
        h.upstream.send(b"data");
        let (step, _, _) = h.settle();
        assert!(matches!(step, Step::Done), "{step:?}");
        assert!(h.upstream.aborted);
    }

    #[test]
    fn pipelined_bytes_go_first_and_count_as_relayed() {
        let mut pool = RingPool::new(RING, 4);
        let mut h = Harness::new(usize::MAX);
        h.relay = Relay::new(b"early ", &mut pool);
        h.pool = pool;
        h.client.send(b"late");
        let (_, to_target, _) = h.settle();
        assert_eq!(to_target, b"early late");
        assert_eq!(h.relay.up.bytes, 10);
    }

    #[test]
    fn a_busy_relay_yields_after_its_rounds() {
        let mut h = Harness::new(usize::MAX);
        h.client.send(&bytes(RING * (MAX_ROUNDS + 2)));
        assert!(matches!(h.run(), Step::Yield));
        assert_eq!(h.upstream.written.len(), RING * MAX_ROUNDS);
    }
}
