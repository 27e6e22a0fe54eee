//! The whole connection under a fuzzer: one [`Conn`], with its real sockets,
//! deadlines, DNS answers, rings and kernel pipes, driven the way the
//! reactor drives it, by a script of what its client and its target do.
//!
//! The relay and the HTTP forward exchange are fuzzed over in-memory streams
//! (`fuzzing.rs`, `fuzzing_forward/`); what they cannot see is the
//! connection around them: the handshake's chunking, the DNS answer, the
//! connect, the deadlines, the hand-over to the relay, the close. A [`Conn`]
//! owns mio sockets, so here it runs over real loopback sockets in this
//! process (a [`Rig`] stands for the reactor), with every address fixed by
//! the harness: nothing the fuzzer writes can name another host.
//!
//! The script: one of a fixed set of requests (SOCKS5, SOCKS4, SOCKS4a,
//! HTTP CONNECT, by address or by a `.localhost` name, an HTTP forward
//! request kept alive for more, or one the proxy must refuse), sent in
//! fuzzer-chosen pieces; then a run of peer actions: send (for HTTP
//! forwarding: another request, or bytes from the origin that are no
//! response), half-close, reset, stop or start reading, fire the
//! connection's deadline. Then both peers end. The properties:
//!
//! - no panic, and no hang: the connection closes once both peers ended;
//! - each direction delivers a prefix of what was sent, in order; all of
//!   it when no peer reset and no deadline acted, so a half-close one way
//!   never loses bytes the other way;
//! - a request the proxy must refuse gets an error reply and reaches no
//!   target; one it must serve gets a success reply;
//! - kept-alive HTTP forwarding with no fault: every request reaches the
//!   origin rewritten, over one connection, and the client gets every
//!   response exactly;
//! - once closed, nothing is left: no ring or pipe lent, no deadline
//!   armed, the link counts no open connection, the loop's epoll watches
//!   nothing but its waker (nothing left registered), and, alone in its
//!   process (the fuzz target), the process holds no more descriptors than
//!   before the session.
//!
//! `cargo fuzz run conn_whole` drives [`conn_session_alone`]; the committed seeds
//! are replayed by this module's tests.

use std::cell::RefCell;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::fuzz_input::{pattern, Input};
use super::rig::{Rig, WAKER};
use super::*;
use crate::splice::PipePool;

mod peer;
mod props;
use peer::{refused_port, small_client, Origin, Peer};
use props::open_descriptors;

/// The only name a request names: a `.localhost` name, which the
/// resolver answers itself with the loopback addresses (RFC 6761), no file
/// and no query involved; [`Session::settle`] checks every answer is
/// loopback all the same.
const NAME: &str = "conn.fuzz.localhost";
/// Longer than any settling can take unless the connection hangs.
const SETTLE_PATIENCE: Duration = Duration::from_secs(5);

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Request {
    Socks5Ip,
    Socks5Name,
    Socks4Ip,
    Socks4aName,
    HttpConnectIp,
    HttpConnectName,
    /// SOCKS5 to a port nothing listens on: refused, reported.
    Socks5Refused,
    /// SOCKS5 with an unknown command.
    Socks5BadCommand,
    /// SOCKS5 to the proxy's own address: a loop, refused.
    Socks5ToSelf,
    /// An HTTP head the parser rejects.
    HttpGarbage,
    /// An HTTP forward request (`GET http://…`) on a kept-alive
    /// connection: then the client's sends are further requests, and the
    /// origin answers each with a response of a script-chosen size.
    HttpForward,
}

const REQUESTS: [Request; 11] = [
    Request::Socks5Ip,
    Request::Socks5Name,
    Request::Socks4Ip,
    Request::Socks4aName,
    Request::HttpConnectIp,
    Request::HttpConnectName,
    Request::Socks5Refused,
    Request::Socks5BadCommand,
    Request::Socks5ToSelf,
    Request::HttpGarbage,
    Request::HttpForward,
];

/// The path every forward request asks for, as the origin should see it.
const PATH: &str = "/a";

impl Request {
    fn served(self) -> bool {
        matches!(
            self,
            Request::Socks5Ip
                | Request::Socks5Name
                | Request::Socks4Ip
                | Request::Socks4aName
                | Request::HttpConnectIp
                | Request::HttpConnectName
                | Request::HttpForward
        )
    }

    /// The bytes the client sends for it.
    fn bytes(self, target: SocketAddr, refused: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
        let socks5 = |cmd: u8, to: SocketAddr| {
            let SocketAddr::V4(a) = to else {
                unreachable!("the harness listens on IPv4")
            };
            let mut b = vec![5, 1, 0, 5, cmd, 0, 1];
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.port().to_be_bytes());
            b
        };
        let port = target.port().to_be_bytes();
        match self {
            Request::Socks5Ip => socks5(1, target),
            Request::Socks5Name => {
                let mut b = vec![5, 1, 0, 5, 1, 0, 3, NAME.len() as u8];
                b.extend_from_slice(NAME.as_bytes());
                b.extend_from_slice(&port);
                b
            }
            Request::Socks4Ip => {
                let mut b = vec![4, 1, port[0], port[1], 127, 0, 0, 1];
                b.extend_from_slice(b"fuzz\0");
                b
            }
            Request::Socks4aName => {
                let mut b = vec![4, 1, port[0], port[1], 0, 0, 0, 1];
                b.extend_from_slice(b"fuzz\0");
                b.extend_from_slice(NAME.as_bytes());
                b.push(0);
                b
            }
            Request::HttpConnectIp => {
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
            }
            Request::HttpConnectName => {
                let to = format!("{NAME}:{}", target.port());
                format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").into_bytes()
            }
            Request::Socks5Refused => socks5(1, refused),
            Request::Socks5BadCommand => socks5(9, target),
            Request::Socks5ToSelf => socks5(1, proxy),
            Request::HttpGarbage => b"GET\x01 / HTTP/1.1\r\n\r\n".to_vec(),
            Request::HttpForward => forward_request(target),
        }
    }

    /// Splits what the client read into the reply and what followed it;
    /// `None` while the reply is not whole.
    fn reply(self, got: &[u8]) -> Option<(bool, usize)> {
        match self {
            Request::Socks4Ip | Request::Socks4aName => (got.len() >= 8).then(|| (got[1] == 90, 8)),
            Request::HttpConnectIp | Request::HttpConnectName | Request::HttpGarbage => {
                let end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
                Some((got.starts_with(b"HTTP/1.1 200"), end))
            }
            // The method choice (2 bytes), then the reply (10, an IPv4 one).
            _ => (got.len() >= 12).then(|| (got[3] == 0, 12)),
        }
    }
}

/// A forward request for [`PATH`] on the origin at `target`, kept alive.
fn forward_request(target: SocketAddr) -> Vec<u8> {
    format!("GET http://{target}{PATH} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
}

/// A response with a body of `n` bytes that tell which response they are.
fn response(n: usize, seq: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    r.extend(pattern(n, 7 + seq));
    r
}

/// An HTTP forward session's bookkeeping: the origin answers each request
/// head as it arrives.
#[derive(Default)]
struct Http {
    /// The body size of the response to each request not yet answered.
    sizes: std::collections::VecDeque<usize>,
    /// Requests the client sent.
    requests: usize,
    /// Request heads the origin got (and answered), and where in what it
    /// got the last one ended.
    answered: usize,
    parsed: usize,
    /// A head the origin got that is not the request rewritten.
    bad_head: Option<String>,
    /// Connections the origin accepted.
    origins: usize,
    /// The proxy opened another while the last was open and clean.
    reconnected_while_open: bool,
    /// The origin sent bytes that are no response (or closed early).
    faulted: bool,
}

/// What stays from one session to the next: the loop's parts and the
/// listeners. Built once: a rig starts a DNS thread.
struct Harness {
    rig: Rig,
    /// A port that refuses connections, held for the harness's life.
    refused: (socket2::Socket, SocketAddr),
    /// Whether to compare the process's open descriptors before and after
    /// each session: only where nothing else runs (the fuzz target), not
    /// beside other tests.
    count_descriptors: bool,
}

impl Harness {
    fn new() -> Harness {
        // No hosts file (an empty one): only literals and `.localhost`.
        let mut rig = Rig::with_hosts(std::path::Path::new("/dev/null"));
        rig.pool = crate::ring::RingPool::new(super::rig::RING, 4).with_pipes(PipePool::new(
            4,
            2,
            16 * 1024,
        ));
        Harness {
            rig,
            refused: refused_port(),
            count_descriptors: false,
        }
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// What a session carried, for tests that must know it did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes the target got from the client.
    pub up: usize,
    /// Bytes the client got from the target (after the reply).
    pub down: usize,
    /// Why the connection closed.
    pub reason: &'static str,
}

/// One session, as the fuzz target runs it: alone in its process, so it
/// also checks that the process's descriptors are as before.
pub fn conn_session_alone(data: &[u8]) -> Outcome {
    with_harness(|h| {
        h.count_descriptors = true;
        Session::play(h, data, false)
    })
}

/// One session, beside other threads.
pub fn conn_session(data: &[u8]) -> Outcome {
    with_harness(|h| Session::play(h, data, false))
}

/// The same, printing each step (for a crash's input).
pub fn conn_session_traced(data: &[u8]) -> Outcome {
    with_harness(|h| Session::play(h, data, true))
}

fn with_harness(f: impl FnOnce(&mut Harness) -> Outcome) -> Outcome {
    HARNESS.with(|h| f(h.borrow_mut().get_or_insert_with(Harness::new)))
}

struct Session<'h> {
    h: &'h mut Harness,
    conn: Option<Conn>,
    key: usize,
    /// Where the requests go: a listener of this session's own.
    origin: Origin,
    client: Peer,
    target: Peer,
    /// Why the connection closed, and whether both peers had ended then.
    closed: Option<(&'static str, bool)>,
    deadline_fired: bool,
    /// Set for [`Request::HttpForward`].
    http: Option<Http>,
    trace: bool,
}

impl Session<'_> {
    fn play(h: &mut Harness, data: &[u8], trace: bool) -> Outcome {
        let descriptors = h
            .count_descriptors
            .then(|| open_descriptors() - h.rig.pool.pipes.descriptors());
        let begun = Instant::now();
        let mut inp = Input::new(data);
        let request = inp.pick(&REQUESTS);
        let origin = Origin::new();
        let target_addr = origin.addr();
        let bytes = request.bytes(target_addr, h.refused.1, h.rig.listen);

        let mut s = Session {
            key: 0,
            origin,
            conn: None,
            client: Peer::default(),
            target: Peer::default(),
            closed: None,
            deadline_fired: false,
            http: (request == Request::HttpForward).then(Http::default),
            trace,
            h,
        };
        if let Some(http) = s.http.as_mut() {
            http.requests = 1;
            http.sizes.push_back(inp.size());
        }
        s.accept();
        if trace {
            eprintln!("{request:?}: {} bytes", bytes.len());
        }

        // The request, in pieces, with perhaps its deadline fired between.
        let mut at = 0;
        while at < bytes.len() {
            let n = (usize::from(inp.byte() % 16) + 1).min(bytes.len() - at);
            s.client.send_raw(&bytes[at..at + n]);
            at += n;
            s.settle();
            if inp.one_in(32) {
                s.fire_deadline();
            }
        }

        // The peers' actions.
        for _ in 0..256 {
            if inp.done() {
                break;
            }
            let op = inp.byte();
            if trace {
                eprintln!("op {} in {} at {:?}", op % 12, s.state(), begun.elapsed());
            }
            match (op % 12, s.http.as_mut()) {
                // Another request (pipelined, if the last is unanswered).
                (0 | 1, Some(http)) if !s.client.ended() => {
                    http.requests += 1;
                    http.sizes.push_back(inp.size());
                    s.client.queue(&forward_request(target_addr));
                }
                (0 | 1, None) => {
                    let n = inp.size();
                    s.client.send(n, 1);
                }
                (2 | 3, Some(http)) => {
                    // Bytes that are no response.
                    http.faulted = true;
                    let n = inp.size();
                    s.target.queue(&pattern(n, 3));
                }
                (2 | 3, None) => {
                    let n = inp.size();
                    s.target.send(n, 2);
                }
                (4, _) => s.client.shut(),
                (5, http) => {
                    if let Some(http) = http {
                        http.faulted = true; // the next request needs a new one
                    }
                    s.target.shut();
                }
                (6, _) if inp.one_in(4) => s.client.reset(),
                (7, _) if inp.one_in(4) => s.target.reset(),
                (8, _) => s.client.paused = !s.client.paused,
                (9, _) => s.target.paused = !s.target.paused,
                (10, _) if inp.one_in(4) => s.fire_deadline(),
                _ => {}
            }
            s.settle();
        }

        if trace {
            eprintln!("ending in {} at {:?}", s.state(), begun.elapsed());
        }
        // Both peers end, and read what is left.
        s.client.paused = false;
        s.target.paused = false;
        s.settle();
        s.client.shut();
        s.target.shut();
        s.run(|s| s.all_ended());
        s.check(request);
        let outcome = Outcome {
            up: s.target.got.len(),
            down: match request.reply(&s.client.got) {
                _ if s.http.is_some() => s.client.got.len(),
                Some((_, len)) if request.served() => s.client.got.len() - len,
                _ => 0,
            },
            reason: s.closed.map_or("", |c| c.0),
        };
        s.finish(descriptors);
        outcome
    }

    fn state(&self) -> &'static str {
        self.conn.as_ref().map_or("closed", |c| c.state.name())
    }

    fn accept(&mut self) {
        let rig = &mut self.h.rig;
        let client = small_client(rig.listen);
        let (accepted, addr) = loop {
            match rig.listener.accept() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.unwrap(),
            }
        };
        accepted.set_nonblocking(true).unwrap();
        rig.next_id += 1;
        self.key = (rig.next_id % 1024) as usize;
        let stream = mio::net::TcpStream::from_std(accepted);
        let id = rig.next_id;
        let conn = Conn::accept(&mut rig.ctx(), self.key, id, stream, addr).unwrap();
        self.conn = Some(conn);
        self.client.attach(client);
    }

    /// Takes the proxy's connection to the target: the first, or (HTTP) a
    /// new one to the origin in place of one it dropped.
    fn accept_origin(&mut self) -> bool {
        // A tunnel has one target connection; an origin may see a new one
        // for each request, after it closed or reset the last.
        let more = match self.http {
            Some(_) => true,
            None => self.target.sock.is_none() && !self.target.reset,
        };
        if !more {
            return false;
        }
        let Some(sock) = self.origin.accept() else {
            return false;
        };
        if let Some(http) = self.http.as_mut() {
            http.origins += 1;
            // A new origin connection is owed only to one that ended (the
            // origin closed it: requests after that need a new one).
            http.reconnected_while_open |= http.origins > 1 && !self.target.ended();
        }
        self.target.replace(sock);
        true
    }

    /// The origin answers each request head it got whole.
    fn respond(&mut self) -> bool {
        let Some(http) = self.http.as_mut() else {
            return false;
        };
        let mut moved = false;
        while let Some(end) = find_head_end(&self.target.got[http.parsed..]) {
            let head = &self.target.got[http.parsed..http.parsed + end];
            let first = format!("GET {PATH} HTTP/1.1\r\n");
            if !head.starts_with(first.as_bytes()) && http.bad_head.is_none() {
                http.bad_head = Some(String::from_utf8_lossy(head).into_owned());
            }
            http.parsed += end;
            let n = http.sizes.pop_front().unwrap_or(0);
            self.target.queue(&response(n, http.answered));
            http.answered += 1;
            moved = true;
        }
        moved
    }

    /// Fires the connection's deadline, as the reactor's clock would.
    fn fire_deadline(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(at) = conn.deadline() else {
            return;
        };
        let before = conn.state.name();
        let rig = &mut self.h.rig;
        rig.clock = rig.clock.max(at);
        // The reactor takes the entry off before it calls the connection.
        assert!(
            rig.timers.remove(&(at, self.key, conn.id())),
            "the deadline was not on the loop's timers"
        );
        let p = conn.on_deadline(&mut rig.ctx());
        // A deadline that found nothing due (a relay's idle timer re-armed
        // by later traffic) changes nothing, and excuses nothing.
        self.deadline_fired |= p == Progress::Close || conn.state.name() != before;
        self.after(p);
    }

    /// Acts on what the connection said; true if it has more to do now.
    fn after(&mut self, progress: Progress) -> bool {
        match progress {
            Progress::Idle => false,
            Progress::Yield => true,
            Progress::Close => {
                let conn = self.conn.take().unwrap();
                let reason = conn.reason;
                if self.trace {
                    eprintln!("closed in {}: {reason}", conn.state.name());
                }
                conn.close(&mut self.h.rig.ctx());
                let both = self.client.ended() && self.target.ended();
                self.closed = Some((reason, both));
                true
            }
        }
    }

    /// Runs the connection, as the reactor would, until nothing moves.
    fn settle(&mut self) {
        self.run(|_| true);
    }

    /// Runs until nothing moves and `done` says so, waiting for the kernel
    /// (a FIN or bytes in flight) meanwhile; gives up after
    /// [`SETTLE_PATIENCE`], and fails if things still moved then.
    fn run(&mut self, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        let mut events = mio::Events::with_capacity(16);
        let mut quiet = 0;
        let mut again = false;
        loop {
            let finished = quiet >= 3 && done(self);
            if finished || (quiet >= 3 && start.elapsed() > SETTLE_PATIENCE) {
                return;
            }
            assert!(
                start.elapsed() < SETTLE_PATIENCE,
                "stuck in {} (client ended {}, target ended {})",
                self.state(),
                self.client.ended(),
                self.target.ended()
            );
            let mut busy = self.accept_origin();
            busy |= self.client.flush() | self.target.flush();
            busy |= self.client.pull();
            busy |= self.target.pull();
            busy |= self.respond();
            let Some(conn) = self.conn.as_mut() else {
                quiet = if busy { 0 } else { quiet + 1 };
                continue;
            };
            // Waiting on a DNS thread, a connect or the kernel: poll a while.
            let waiting = matches!(conn.state, State::Resolving(_) | State::Connecting(..));
            let wait = if waiting || quiet >= 3 { 1 } else { 0 };
            let rig = &mut self.h.rig;
            let mut progress = None;
            if let Some(answer) = rig.resolver.try_recv(Instant::now()) {
                if let Ok(addrs) = &answer.result {
                    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
                    assert!(loopback, "a lookup left loopback: {addrs:?}");
                }
                progress = Some(conn.on_resolved(&mut rig.ctx(), answer));
            } else {
                match rig
                    .poll
                    .poll(&mut events, Some(Duration::from_millis(wait)))
                {
                    // A signal: no events this round.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => events.clear(),
                    other => other.unwrap(),
                }
                let mut mine = false;
                for e in events.iter() {
                    if e.token() != WAKER && conn.owns(e.token()) {
                        conn.on_event(from_token(e.token()).1, e);
                        mine = true;
                    }
                }
                // As the reactor: only on an event, or when it yielded.
                if mine || std::mem::take(&mut again) {
                    progress = Some(conn.drive(&mut rig.ctx()));
                }
            }
            if let Some(p) = progress {
                busy = true;
                again = self.after(p);
            }
            busy |= waiting;
            quiet = if busy { 0 } else { quiet + 1 };
        }
    }

    /// Both peers ended and the connection is gone: each peer still
    /// attached has seen the end of what the proxy sent it.
    fn all_ended(&self) -> bool {
        let seen = |p: &Peer| p.sock.is_none() || p.saw_eof || p.saw_error;
        self.conn.is_none() && seen(&self.client) && seen(&self.target)
    }
}

/// Where the first HTTP head in `bytes` ends, if one is whole.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds and every crash found, replayed.
    #[test]
    fn committed_corpus_holds_the_properties() {
        super::super::fuzz_input::replay_committed("conn_whole", 10, |data| {
            conn_session(data);
        });
    }

    /// Each request, with nothing else: served ones close cleanly at the
    /// peers' EOFs, refused ones are answered and reach no target.
    #[test]
    fn each_request_alone() {
        for (i, r) in REQUESTS.iter().enumerate() {
            let out = conn_session(&[i as u8]);
            // A forward request is answered (an empty body); a tunnel
            // carries nothing.
            let down = match r {
                Request::HttpForward => response(0, 0).len(),
                _ => 0,
            };
            assert_eq!(out.down, down, "{r:?}: {out:?}");
            assert_eq!(out.up == 0, *r != Request::HttpForward, "{r:?}: {out:?}");
            assert!(!out.reason.is_empty() || r.served(), "{r:?}: {out:?}");
        }
    }

    /// The script for: request `i` in one piece, then `ops`.
    fn script(i: u8, ops: &[u8]) -> Vec<u8> {
        let mut s = vec![i];
        s.extend([15, 0].repeat(6)); // pieces of 16 bytes, no deadline
        s.extend_from_slice(ops);
        s
    }

    /// The client half-closes its upload; then, paused, it gets a long
    /// download under back-pressure, and takes all of it once it reads.
    #[test]
    fn half_close_then_a_paused_download() {
        for i in 0..6u8 {
            let mut ops = vec![0, 100, 4, 8];
            for _ in 0..3 {
                ops.extend([2, 240, 0]); // ~40 KiB each
            }
            ops.push(8);
            let out = conn_session(&script(i, &ops));
            assert_eq!(out.up, 100, "{:?}: {out:?}", REQUESTS[usize::from(i)]);
            assert!(
                out.down > 64 * 1024,
                "{:?}: {out:?}",
                REQUESTS[usize::from(i)]
            );
        }
    }

    /// A reset by either peer mid-transfer, and a deadline in the middle of
    /// the request: the connection still closes with nothing left behind.
    #[test]
    fn resets_and_deadlines_leave_nothing() {
        for i in 0..REQUESTS.len() as u8 {
            conn_session(&script(i, &[0, 50, 3, 220, 0, 6, 3]));
            conn_session(&script(i, &[2, 230, 0, 7, 3]));
            conn_session(&[i, 0, 31, 0, 31]);
            conn_session(&script(i, &[0, 10, 10, 3]));
        }
    }

    /// Kept-alive HTTP forwarding through the whole connection: three
    /// requests, two of them pipelined, with bodies past a ring and the
    /// client paused for a while; then a half-close with one unanswered.
    #[test]
    fn kept_alive_forward_requests_all_answered() {
        let fwd = REQUESTS.len() as u8 - 1;
        // Request 1: a 5-byte body; pieces of 16; then requests of ~10 KiB
        // and ~45 KiB pipelined while paused, then resume.
        let mut script = vec![fwd, 5];
        script.extend([15, 0].repeat(6));
        script.extend([8, 0, 210, 0, 1, 245, 0, 8]);
        let out = conn_session(&script);
        let expect: usize = [5usize, 10 * 1024, 45 * 1024]
            .iter()
            .enumerate()
            .map(|(i, &n)| response(n, i).len())
            .sum();
        assert_eq!(out.down, expect, "{out:?}");
        // Then the client half-closes right after a last request.
        script.extend([0, 100, 4]);
        let out = conn_session(&script);
        assert_eq!(out.down, expect + response(100, 3).len(), "{out:?}");
    }
}

#[cfg(test)]
#[test]
#[ignore]
fn trace_input() {
    let path = std::env::var("CONN_WHOLE_INPUT").unwrap();
    conn_session_traced(&std::fs::read(path).unwrap());
}
