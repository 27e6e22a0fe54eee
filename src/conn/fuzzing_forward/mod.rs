//! The HTTP forward proxy under a fuzzer: one kept-alive client connection
//! carrying one to three HTTP/1.1 exchanges with one origin, generated
//! well-formed from the fuzz input (methods, absolute-form URLs, hop-by-hop
//! and end-to-end headers, Content-Length, chunked or no request body,
//! `Connection: close`; interim `1xx` responses, `204`/`304`/`HEAD` without
//! a body, Content-Length, chunked or close-delimited response bodies),
//! then played by a script of what the client and the origin do (send,
//! read, window changes, spurious wake-ups, and in fault mode an EOF or a
//! reset of either, or an origin sending ahead), with readiness raised as
//! epoll raises it.
//!
//! The code driven is the connection's own: the request heads are read and
//! parsed by [`Handshake`] (the first one from `Handshake::new`, the next
//! from `Handshake::next_http` with what the client pipelined), the
//! exchange is [`Forward::run`] over the relay's pipes and a [`RingPool`]
//! sized as the reactor's smallest. The keep-alive glue between two
//! exchanges lives in `Conn` (`exchange_done`, `http_request`), which needs
//! sockets and a reactor; its decisions are shared
//! ([`Forward::wind_up`]), and the rest is reproduced here, step for step
//! (see [`Session::exchange_done`] and [`Session::request`]). A request that
//! needs a new upstream connection (the origin closed, reset or sent more
//! than its response) gets a new in-memory origin, as `Conn` connects anew.
//!
//! The properties:
//! - no panic;
//! - the origin gets each rewritten head and then exactly that request's
//!   body, in order, and never a byte of the next request early;
//! - the client gets each response (interim ones included) exactly as the
//!   origin sent it, in order, never a byte of the next one early, even
//!   when the origin sends it (or bytes past the last) ahead;
//! - each parsed head says what the request said (target, method, framing,
//!   close), and is rewritten as the origin should see it;
//! - `Done` comes only with both messages complete, and closes the
//!   connection exactly when the request or the response said so (a
//!   close-delimited body always does); `Failed`, `ClientLeft` and `Broken`
//!   only when the script did what explains them;
//! - without faults, every exchange is done;
//! - an idle kept-alive connection holds no ring, and none is lent after
//!   the end.
//!
//! `cargo fuzz run conn_forward` drives [`forward_session`]; the committed
//! seeds and regressions are replayed by this module's tests.

use std::mem;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::forward::{Forward, Next};
use super::fuzz_input::{pattern, Input};
use super::handshake::{self, Handshake};
use super::relay::{Relay, Step};
use super::reply::Outbox;
use super::request::{HttpRequest, Target};
use super::testio::MemPeer;
use crate::auth::Credentials;
use crate::http::{self, Body};
use crate::ring::RingPool;

mod plan;
use plan::{plan, Exchange, Plan};

/// The smallest ring the reactor accepts (one holds a whole request head).
const RING: usize = http::MAX_HEAD;
/// Runs without the session ending or moving before it is declared hung.
const SETTLE_ROUNDS: usize = 10_000;

/// One peer: how much of its stream it sent, and what it got.
type Peer = MemPeer<usize>;

impl Peer {
    /// Sends its stream up to `limit`, at most `n` bytes: readable edge.
    fn send(&mut self, stream: &[u8], limit: usize, n: usize) {
        let end = limit.min(self.sent.saturating_add(n));
        if end > self.sent && self.push(&stream[self.sent..end]) {
            self.sent = end;
        }
    }

    /// What reached it: read, or waiting to be.
    fn delivered(&self) -> usize {
        self.got.len() + self.mem.written.len()
    }

    /// What reached it is `expected`'s start, and no more than `limit` of it.
    fn check(&self, expected: &[u8], limit: usize, checked: &mut usize, who: &str) {
        assert!(
            self.delivered() <= limit,
            "the {who} got {} bytes, past the {limit} of this exchange",
            self.delivered()
        );
        let got = &self.got[*checked..];
        assert_eq!(
            got,
            &expected[*checked..self.got.len()],
            "the {who} got other bytes than sent, at {}",
            *checked
        );
        *checked = self.got.len();
        let queued = &self.mem.written;
        assert_eq!(
            &queued[..],
            &expected[self.got.len()..self.delivered()],
            "the {who} is sent other bytes than expected, at {}",
            self.got.len()
        );
    }
}

/// How the session ended.
#[derive(Debug)]
enum End {
    /// After an exchange that closes, or a client that closed during one.
    Closed,
    /// The client closed its kept-alive connection between requests.
    ClientClosed,
    ClientLeft,
    /// The origin closed before its response was complete.
    Failed,
    Broken,
}

enum Phase {
    /// Reading a request head: the first (no exchange yet), or the next
    /// one on the kept-alive connection.
    Head(Handshake, Option<Box<Forward>>),
    Forwarding(Box<Forward>),
    Ended(End),
}

struct Session {
    plan: Plan,
    faults: bool,
    client: Peer,
    origin: Peer,
    relay: Relay,
    /// The upstream connection may carry the next request.
    open: bool,
    /// Where the current upstream connection started in the stream the
    /// origin should get (its peer counts from there), and how many
    /// there were before it.
    origin_base: usize,
    reconnects: usize,
    pool: RingPool,
    phase: Phase,
    /// Exchanges done.
    done: usize,
    /// How far each peer's delivered bytes were checked.
    client_checked: usize,
    origin_checked: usize,
    trace: bool,
}

impl Session {
    /// The exchange in progress, or the last one.
    fn current(&self) -> &Exchange {
        &self.plan.exchanges[self.done.min(self.plan.served - 1)]
    }

    fn client_send(&mut self, n: usize) {
        let limit = self.plan.requests.len();
        self.client.send(&self.plan.requests, limit, n);
    }

    /// The origin answers what reached it: an exchange's interim responses
    /// once its head arrived, the final one once the whole request did (or
    /// the head, for an early answer); then, if its response said so, it
    /// closes once it sent all of it and read the whole request.
    fn origin_send(&mut self, n: usize) {
        let got = self.origin_base + self.origin.got.len();
        let mut limit = 0;
        for x in &self.plan.exchanges[..self.plan.served] {
            if got >= x.forwarded_end || (x.early && got >= x.head_end) {
                limit = x.response_end;
            } else if got >= x.head_end {
                limit = x.interim_end;
            }
            if limit < x.response_end {
                break;
            }
        }
        self.origin.send(&self.plan.responses, limit, n);
        self.origin_closes();
    }

    /// A fault: the origin sends what it would send next, the next
    /// response or bytes past the last, before it was asked. (Not during
    /// a close-delimited response, whose body they would become.)
    fn origin_sends_ahead(&mut self, n: usize) {
        if !self.current().until_close {
            let limit = self.plan.responses.len();
            self.origin.send(&self.plan.responses, limit, n);
        }
    }

    fn origin_closes(&mut self) {
        let got = self.origin_base + self.origin.got.len();
        let sent = self.origin.sent;
        let closing = self.plan.exchanges[..self.plan.served].iter().any(|x| {
            x.closes && x.closes_after && sent == x.response_end && got >= x.forwarded_end
        });
        if closing {
            self.origin.send_eof();
        }
    }

    /// Runs the connection as the reactor would after an event.
    fn run(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            let again = match mem::replace(&mut self.phase, Phase::Ended(End::Closed)) {
                Phase::Ended(end) => {
                    self.phase = Phase::Ended(end);
                    false
                }
                Phase::Head(hs, fwd) => self.head(hs, fwd),
                Phase::Forwarding(fwd) => self.forwarding(fwd),
            };
            if !again {
                return;
            }
        }
        panic!("the connection yields forever");
    }

    /// As `Conn::handshake`, for an HTTP client.
    fn head(&mut self, mut hs: Handshake, fwd: Option<Box<Forward>>) -> bool {
        if self.client.ready.readable {
            if let Err(e) = hs.read(&mut self.client.mem, &mut self.client.ready) {
                assert!(self.client.reset, "client read error {e} without a reset");
                return self.end(End::Broken);
            }
        }
        let who = (0, SocketAddr::from(([127, 0, 0, 1], 1)));
        let next = hs.parse(&Credentials::default(), &mut Outbox::default(), who);
        match next {
            handshake::Next::Wait => {
                let again = self.client.ready.readable && !hs.eof();
                self.phase = Phase::Head(hs, fwd);
                again
            }
            handshake::Next::ClientClosed => {
                assert!(self.client.eof, "the head ended without the client's EOF");
                self.end(End::ClientClosed)
            }
            handshake::Next::Http(request, pipelined) => self.request(request, pipelined, fwd),
            other => panic!("a well-formed request came to {other:?}"),
        }
    }

    /// A request head was parsed: check it, then start its exchange as
    /// `Conn::http_request` does (over the kept-alive upstream when it can
    /// take it) or `Conn::http_request_anew` then `Conn::relay_with` do.
    fn request(
        &mut self,
        request: HttpRequest,
        pipelined: Vec<u8>,
        kept: Option<Box<Forward>>,
    ) -> bool {
        assert!(
            self.done < self.plan.served,
            "a request past the end was parsed"
        );
        let x = &self.plan.exchanges[self.done];
        assert_eq!(
            request.target, self.plan.target,
            "target of request {}",
            self.done
        );
        assert!(request.authorized);
        let head = request.forward.expect("a forward request");
        assert_eq!(
            String::from_utf8_lossy(&head.head),
            String::from_utf8_lossy(&self.plan.forwarded[x.head_start..x.head_end]),
            "rewritten head of request {}",
            self.done
        );
        assert_eq!(&*head.method, x.method);
        assert_eq!(head.body, x.body, "body of request {}", self.done);
        assert_eq!(head.close, x.close, "close of request {}", self.done);
        let response_start = match self.done {
            0 => 0,
            i => self.plan.exchanges[i - 1].response_end,
        };
        let head_start = x.head_start;
        let Some(mut fwd) = kept else {
            // `Conn::http_request_anew`, then `Conn::relay_with` once
            // connected: the pipelined bytes seed the upload.
            self.relay = Relay::new(&pipelined, &mut self.pool);
            let fwd = Forward::new(request.target, head);
            self.phase = Phase::Forwarding(Box::new(fwd));
            return true;
        };
        assert_eq!(fwd.origin, request.target);
        let reusable = self.open
            && !self.origin.ready.read_closed
            && !self.origin.ready.error
            && !self.relay.down.eof;
        if !reusable {
            // The upstream is closed and a new one connected: a new origin
            // peer, answering from this exchange on.
            self.relay.release(&mut self.pool);
            let mut origin = Peer::new(self.origin.mem.room);
            origin.sent = response_start;
            self.origin = origin;
            (self.origin_base, self.origin_checked) = (head_start, 0);
            self.open = true;
            self.reconnects += 1;
            self.relay = Relay::new(&pipelined, &mut self.pool);
            let fwd = Forward::new(request.target, head);
            self.phase = Phase::Forwarding(Box::new(fwd));
            return true;
        }
        fwd.next_exchange(head);
        if !pipelined.is_empty() {
            let ring = self.relay.up.ring.get_or_insert_with(|| self.pool.take());
            let kept = ring.push(&pipelined);
            assert_eq!(kept, pipelined.len(), "rings hold a whole head");
            self.relay.up.bytes += kept as u64;
        }
        self.phase = Phase::Forwarding(fwd);
        true
    }

    /// As `Conn::forwarding`.
    fn forwarding(&mut self, mut fwd: Box<Forward>) -> bool {
        let client = (&mut self.client.mem, &mut self.client.ready);
        let origin = (&mut self.origin.mem, &mut self.origin.ready);
        if let Some(Step::Broken(what, _)) = self.relay.socket_errors(client, origin) {
            return self.broken(what);
        }
        let next = fwd.run(
            (&mut self.client.mem, &mut self.client.ready),
            (&mut self.origin.mem, &mut self.origin.ready),
            &mut self.relay.up,
            &mut self.relay.down,
            &mut self.pool,
        );
        let x = self.current();
        match next {
            Next::Idle => {
                self.phase = Phase::Forwarding(fwd);
                false
            }
            Next::Yield => {
                self.phase = Phase::Forwarding(fwd);
                true
            }
            Next::Done => self.exchange_done(fwd),
            Next::Failed(502, "the server closed before its response was complete") => {
                assert!(
                    self.origin.eof && self.origin.sent < x.response_end,
                    "exchange {} failed, but the origin sent its whole response ({} of {} bytes, EOF {})",
                    self.done,
                    self.origin.sent,
                    x.response_end,
                    self.origin.eof
                );
                self.end(End::Failed)
            }
            Next::Failed(status, what) => panic!("well-formed messages failed: {status} {what}"),
            Next::ClientLeft => {
                assert!(
                    self.client.eof && self.client.sent < x.request_end,
                    "client left exchange {} after sending its whole request",
                    self.done
                );
                self.end(End::ClientLeft)
            }
            Next::Broken(what, _) => self.broken(what),
        }
    }

    fn broken(&mut self, what: &'static str) -> bool {
        // In-memory peers only fail by resetting.
        assert!(
            self.client.reset || self.origin.reset,
            "broken ({what}) without a reset"
        );
        self.end(End::Broken)
    }

    /// An exchange is done: both messages went through whole. Then what
    /// `Conn::exchange_done` does: keep what the client sent after its
    /// request for the next head, drop an upstream that sent more than its
    /// response, and close or wait for the next request.
    fn exchange_done(&mut self, fwd: Box<Forward>) -> bool {
        let i = self.done;
        let x = &self.plan.exchanges[i];
        // A close-delimited response the origin ended before it read the
        // whole request (it answered early) ends the exchange: the rest
        // of the request has no one to go to.
        let early_end = x.until_close && self.origin.eof;
        let delivered = self.origin_base + self.origin.delivered();
        assert!(
            delivered == x.forwarded_end || (early_end && delivered >= x.head_end),
            "exchange {i} done before the origin got its whole request ({delivered} of {})",
            x.forwarded_end
        );
        let response_end = if x.until_close {
            assert!(
                self.origin.eof,
                "close-delimited exchange {i} done before the EOF"
            );
            self.origin.sent
        } else {
            x.response_end
        };
        assert_eq!(
            self.client.delivered(),
            response_end,
            "exchange {i} done before the client got its whole response"
        );
        assert_eq!(
            fwd.closes(),
            x.closes,
            "exchange {i}: whether the connection closes"
        );
        // An origin that answers only what reached it sends nothing more.
        if self.origin.sent <= x.response_end {
            assert_eq!(self.relay.down.pending(), 0, "bytes after response {i}");
        }
        self.done += 1;

        let end = fwd.wind_up(&mut self.relay, &mut self.pool);
        self.open = end.upstream_clean;
        if !self.open {
            // It sent more than its response: the upstream is dropped.
            self.relay.release(&mut self.pool);
        }
        if end.closes {
            return self.end(End::Closed);
        }
        assert_eq!(self.pool.lent(), 0, "a kept-alive connection holds a ring");
        self.phase = Phase::Head(
            Handshake::next_http(end.leftover, end.client_eof),
            Some(fwd),
        );
        true
    }

    /// The connection closes: its rings go back (as `Relaying::close`).
    fn end(&mut self, end: End) -> bool {
        if self.trace {
            eprintln!("end: {end:?}");
        }
        self.relay.release(&mut self.pool);
        self.phase = Phase::Ended(end);
        false
    }

    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// What reached each peer so far is what should have.
    fn check_delivered(&mut self) {
        let (forwarded_end, response_end) = {
            let x = self.current();
            (x.forwarded_end, x.response_end)
        };
        self.origin.check(
            &self.plan.forwarded[self.origin_base..],
            forwarded_end - self.origin_base,
            &mut self.origin_checked,
            "origin",
        );
        self.client.check(
            &self.plan.responses,
            response_end,
            &mut self.client_checked,
            "client",
        );
    }

    fn describe(&self) -> String {
        let phase = match &self.phase {
            Phase::Head(..) => "head".to_string(),
            Phase::Forwarding(_) => "forwarding".to_string(),
            Phase::Ended(e) => format!("{e:?}"),
        };
        format!(
            "{phase}, {} done, {} reconnects; client sent {} of {} got {} eof {} reset {}; origin sent {} of {} got {} eof {} reset {}; up pending {} eof {}, down pending {} eof {}",
            self.done,
            self.reconnects,
            self.client.sent,
            self.plan.requests.len(),
            self.client.delivered(),
            self.client.eof,
            self.client.reset,
            self.origin.sent,
            self.plan.responses.len(),
            self.origin.delivered(),
            self.origin.eof,
            self.origin.reset,
            self.relay.up.pending(),
            self.relay.up.eof,
            self.relay.down.pending(),
            self.relay.down.eof,
        )
    }
}

/// Plays the session `data` describes and checks the properties. Panics
/// when one fails.
pub fn forward_session(data: &[u8]) {
    play(data, false);
}

/// Plays `data` as [`forward_session`] does, printing each step to stderr:
/// for reading what a crash found.
pub fn forward_session_traced(data: &[u8]) {
    play(data, true);
}

fn play(data: &[u8], trace: bool) {
    let mut inp = Input::new(data);
    let faults = inp.one_in(2);
    let client = Peer::new(usize::from(inp.byte()));
    let origin = Peer::new(usize::from(inp.byte()));
    let plan = plan(&mut inp);
    if trace {
        eprintln!(
            "faults {faults}; {} exchanges, {} served\nrequests: {:?}\nresponses: {:?}",
            plan.exchanges.len(),
            plan.served,
            String::from_utf8_lossy(&plan.requests),
            String::from_utf8_lossy(&plan.responses),
        );
    }
    let mut s = Session {
        plan,
        faults,
        client,
        origin,
        relay: Relay::default(),
        open: true,
        origin_base: 0,
        reconnects: 0,
        pool: RingPool::new(RING, 2),
        phase: Phase::Head(Handshake::new(), None),
        done: 0,
        client_checked: 0,
        origin_checked: 0,
        trace,
    };
    while !inp.done() {
        let op = inp.byte();
        let arg = usize::from(inp.byte());
        match op % 12 {
            0 => s.client_send(arg + 1),
            1 => s.origin_send(arg + 1),
            2 => s.client.read(arg),
            3 => {
                s.origin.read(arg);
                s.origin_closes();
            }
            4 => s.client.set_room(arg),
            5 => s.origin.set_room(arg),
            6 => s.client_send(arg * 256 + 1),
            7 => s.origin_send(arg * 256 + 1),
            8 if s.faults && arg % 2 == 0 => s.client.send_eof(),
            8 if s.faults => s.client.send_reset(),
            9 if s.faults && arg % 2 == 0 => s.origin.send_eof(),
            9 if s.faults => s.origin.send_reset(),
            11 if s.faults => s.origin_sends_ahead(arg + 1),
            10 => {
                for p in [&mut s.client, &mut s.origin] {
                    p.ready.readable = true;
                    p.ready.writable = true;
                }
            }
            _ => {}
        }
        s.run();
        s.check_delivered();
        if trace {
            eprintln!("op {} {arg}: {}", op % 12, s.describe());
        }
    }
    settle(&mut s);
    check(&s);
}

/// The peers take everything and send all they have until nothing moves;
/// then the client closes, then the origin: the session must end.
fn settle(s: &mut Session) {
    s.client.set_room(usize::MAX);
    s.origin.set_room(usize::MAX);
    let mut stage = 0;
    for _ in 0..SETTLE_ROUNDS {
        let before = (
            s.client.sent,
            s.origin.sent,
            s.client.delivered(),
            s.origin_base + s.origin.delivered(),
            s.origin_base + s.origin.got.len(),
            s.done,
        );
        s.client_send(usize::MAX);
        s.origin_send(usize::MAX);
        s.run();
        s.client.read(usize::MAX);
        s.origin.read(usize::MAX);
        s.origin_closes();
        s.run();
        s.check_delivered();
        if s.trace {
            eprintln!("settle {stage}: {}", s.describe());
        }
        if s.ended() {
            return;
        }
        let after = (
            s.client.sent,
            s.origin.sent,
            s.client.delivered(),
            s.origin_base + s.origin.delivered(),
            s.origin_base + s.origin.got.len(),
            s.done,
        );
        if before == after {
            match stage {
                0 => s.client.send_eof(),
                1 => s.origin.send_eof(),
                _ => panic!("the connection hangs: {}", s.describe()),
            }
            stage += 1;
        }
    }
    panic!("the connection never ended: {}", s.describe());
}

fn check(s: &Session) {
    assert_eq!(s.pool.lent(), 0, "a ring is still lent after the end");
    if !s.faults {
        assert_eq!(
            s.done,
            s.plan.served,
            "without faults every exchange is done: {}",
            s.describe()
        );
        assert!(
            matches!(s.phase, Phase::Ended(End::Closed | End::ClientClosed)),
            "without faults the connection ends cleanly: {}",
            s.describe()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds and every crash found, replayed.
    #[test]
    fn committed_corpus_holds_the_properties() {
        super::super::fuzz_input::replay_committed("conn_forward", 5, |data| {
            forward_session(data);
        });
    }

    #[test]
    fn empty_and_short_inputs_end_cleanly() {
        forward_session(&[]);
        forward_session(&[0]);
        forward_session(&[0, 255, 255, 0, 0, 2]);
    }

    /// The delivery check catches a lost, a changed or an early byte.
    #[test]
    fn a_wrong_delivery_is_caught() {
        let expected = pattern(20, 0);
        let caught = |got: &[u8], queued: &[u8], limit: usize| {
            let mut peer = Peer::new(255);
            peer.got = got.to_vec();
            peer.mem.written = queued.to_vec();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                peer.check(&expected, limit, &mut 0, "client")
            }));
            run.is_err()
        };
        assert!(!caught(&expected[..5], &expected[5..8], 10));
        assert!(caught(&expected[1..6], &[], 10), "a lost byte");
        let mut changed = expected[..5].to_vec();
        changed[3] ^= 1;
        assert!(caught(&changed, &[], 10), "a changed byte");
        assert!(
            caught(&expected[..5], &expected[5..12], 10),
            "past the exchange"
        );
    }

    /// `CONN_FORWARD_INPUT=path cargo test --lib conn_forward_input -- --ignored
    /// --nocapture` plays one input (a crash, say) step by step.
    #[test]
    #[ignore]
    fn conn_forward_input_traced() {
        let path = std::env::var("CONN_FORWARD_INPUT").expect("CONN_FORWARD_INPUT=path");
        forward_session_traced(&std::fs::read(path).unwrap());
    }
}
