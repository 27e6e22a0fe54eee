//! The HTTP forward proxy: one request and its response at a time over a
//! kept-alive upstream connection. The request head has been rewritten to
//! origin form; bodies pass through unchanged, and [`Framing`] only tells
//! where each ends, so the next request can be checked (same origin, or a
//! new upstream) and the response's end found without buffering either.

use std::io;

use super::io::{self as sock, Outcome, Stream};
use super::pipe::{fill, send_framed, Pipe, Side, MAX_ROUNDS};
use super::request::{ForwardHead, Target};
use crate::http::{self, Framing, Status};
use crate::ring::RingPool;

/// How long a kept-alive client connection may sit between requests.
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Forward {
    /// Where the upstream connection goes.
    pub origin: Target,
    /// The rewritten request head, and how much of it has been sent.
    head: Vec<u8>,
    head_sent: usize,
    /// The request's method, which decides whether its response has a body.
    method: Box<str>,
    request: Framing,
    /// `None` until the response head has been read.
    response: Option<Framing>,
    /// Bytes of the response head still to pass on unchanged.
    response_head_left: usize,
    /// The response read is an interim one (`100 Continue`); another follows.
    interim: bool,
    /// Close the client connection after this exchange.
    close: bool,
    /// Some of the response has reached the client (an error can no longer
    /// be answered with a status of our own).
    answered: bool,
    /// Since when the request is out and its response head has not come
    /// (kept by the connection, for its response timeout).
    pub waiting: Option<std::time::Instant>,
}

impl Forward {
    pub fn new(origin: Target, head: ForwardHead) -> Forward {
        let mut f = Forward {
            origin,
            head: Vec::new(),
            head_sent: 0,
            method: "".into(),
            request: Framing::Done,
            response: None,
            response_head_left: 0,
            interim: false,
            close: false,
            answered: false,
            waiting: None,
        };
        f.next_exchange(head);
        f
    }

    /// Starts the next request on the same upstream connection.
    pub fn next_exchange(&mut self, head: ForwardHead) {
        self.head = head.head;
        self.head_sent = 0;
        self.method = head.method;
        self.request = Framing::new(head.body);
        self.response = None;
        self.response_head_left = 0;
        self.interim = false;
        self.close = head.close;
        self.answered = false;
    }

    /// Some of the response reached the client: an error can no longer be
    /// answered with a status of our own.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The request went out whole and no response head came back yet.
    pub fn awaiting_response(&self) -> bool {
        self.head_sent == self.head.len() && self.request.is_done() && self.response.is_none()
    }

    /// The client asked (or HTTP/1.0 implies) to close after this exchange.
    pub fn closes(&self) -> bool {
        self.close
    }

    /// The exchange ended ([`Next::Done`]): takes what the relay still
    /// holds of the client's bytes (the next request, perhaps) and gives
    /// its rings back, and says what comes next.
    pub fn wind_up(&self, relay: &mut super::relay::Relay, pool: &mut RingPool) -> WoundUp {
        let leftover = relay
            .up
            .ring
            .as_mut()
            .map(|ring| {
                ring.make_contiguous();
                ring.data().to_vec()
            })
            .unwrap_or_default();
        let client_eof = relay.up.eof;
        relay.up.release(pool);
        WoundUp {
            // An origin that sent more than its response cannot be trusted
            // with the next request.
            upstream_clean: relay.down.pending() == 0,
            closes: self.closes() || (client_eof && leftover.is_empty()),
            leftover,
            client_eof,
        }
    }

    fn exchange_done(&self) -> bool {
        self.head_sent == self.head.len()
            && self.request.is_done()
            && self.response == Some(Framing::Done)
            && self.response_head_left == 0
            && !self.interim
    }
}

/// What an ended exchange leaves, from [`Forward::wind_up`].
#[derive(Debug)]
pub struct WoundUp {
    /// What the client sent after its request.
    pub leftover: Vec<u8>,
    /// The client sent EOF.
    pub client_eof: bool,
    /// The origin sent nothing past its response: its connection may
    /// carry the next request.
    pub upstream_clean: bool,
    /// The connection ends here: asked to, or the client left with no
    /// request after this one.
    pub closes: bool,
}

/// What a call to [`Forward::run`] came to.
#[derive(Debug)]
pub enum Next {
    Idle,
    Yield,
    /// The response was passed on whole.
    Done,
    /// The exchange cannot go on: answer with this status if nothing of
    /// the origin's reached the client yet (see [`Forward::answered`]),
    /// then close.
    Failed(u16, &'static str),
    /// The client sent EOF in the middle of its request body.
    ClientLeft,
    /// A socket failed: close now.
    Broken(&'static str, io::Error),
}

/// Why a forward round cannot go on.
enum Broken {
    Io(&'static str, io::Error),
    /// The HTTP status to answer with (400: the client's fault, 502: the
    /// origin's), and why.
    Protocol(u16, &'static str),
}

impl From<(&'static str, io::Error)> for Broken {
    fn from((what, e): (&'static str, io::Error)) -> Broken {
        Broken::Io(what, e)
    }
}

impl Forward {
    /// Moves the exchange on, in at most [`MAX_ROUNDS`] rounds.
    pub fn run<C: Stream, U: Stream>(
        &mut self,
        client: Side<'_, C>,
        upstream: Side<'_, U>,
        up: &mut Pipe,
        down: &mut Pipe,
        pool: &mut RingPool,
    ) -> Next {
        let (client, client_ready) = client;
        let (upstream, upstream_ready) = upstream;
        for _ in 0..MAX_ROUNDS {
            let moved = match self.round(
                (client, client_ready),
                (upstream, upstream_ready),
                up,
                down,
                pool,
            ) {
                Ok(moved) => moved,
                Err(Broken::Io(what, e)) => return Next::Broken(what, e),
                Err(Broken::Protocol(status, what)) => return Next::Failed(status, what),
            };
            if self.exchange_done() {
                return Next::Done;
            }
            // The client left in the middle of its request body.
            if up.eof && up.pending() == 0 && !self.request.is_done() {
                return Next::ClientLeft;
            }
            if !moved {
                return Next::Idle;
            }
        }
        Next::Yield
    }

    /// One round each way; whether anything moved.
    fn round<C: Stream, U: Stream>(
        &mut self,
        (client, client_ready): Side<'_, C>,
        (upstream, upstream_ready): Side<'_, U>,
        up: &mut Pipe,
        down: &mut Pipe,
        pool: &mut RingPool,
    ) -> Result<bool, Broken> {
        let mut moved = false;

        // Client to upstream: the rewritten head, then the body as framed.
        // Bytes after the body (the next request) stay in the ring.
        moved |= fill(client, client_ready, up, pool).map_err(|e| ("client read error", e))?;
        while self.head_sent < self.head.len() && upstream_ready.writable {
            match sock::write(upstream, &self.head[self.head_sent..]) {
                Outcome::Continue(n) => {
                    self.head_sent += n;
                    // The head is the request's first bytes up, as the
                    // body after it: the link's counters include it.
                    up.bytes += n as u64;
                    moved = true;
                }
                Outcome::WouldBlock => upstream_ready.writable = false,
                Outcome::Closed => {
                    return Err(Broken::Io(
                        "upstream write error",
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Outcome::Reset(e) | Outcome::Error(e) => {
                    return Err(Broken::Io("upstream write error", e))
                }
            }
        }
        if self.head_sent == self.head.len() {
            let mut none = 0;
            moved |= send_framed(
                upstream,
                upstream_ready,
                up,
                &mut none,
                &mut self.request,
                pool,
            )
            .map_err(|e| frame_error("upstream write error", 400, "bad request body framing", e))?;
        }

        // Upstream to client: the response head, read whole, then its body.
        moved |=
            fill(upstream, upstream_ready, down, pool).map_err(|e| ("upstream read error", e))?;
        let unparsed = down.ring.as_mut().filter(|r| !r.is_empty());
        let mut partial = false;
        if let Some(ring) = unparsed.filter(|_| self.response.is_none()) {
            if ring.data().len() < ring.len() {
                ring.make_contiguous();
            }
            match http::parse_response(ring.data(), &self.method) {
                Ok(Status::Partial) => partial = true,
                Ok(Status::Complete(head, len)) => {
                    let interim = (100..200).contains(&head.status) && head.status != 101;
                    self.interim = interim;
                    self.response = Some(Framing::new(if interim {
                        http::Body::None
                    } else {
                        head.body
                    }));
                    self.response_head_left = len;
                    self.close |= head.close || head.status == 101;
                    moved = true;
                }
                Err(_) => {
                    return Err(Broken::Protocol(
                        502,
                        "the server sent a malformed response",
                    ))
                }
            }
        }
        if let Some(framing) = self.response.as_mut() {
            let sent = send_framed(
                client,
                client_ready,
                down,
                &mut self.response_head_left,
                framing,
                pool,
            )
            .map_err(|e| frame_error("client write error", 502, "bad response body framing", e))?;
            self.answered |= sent;
            moved |= sent;
            if self.interim && self.response_head_left == 0 {
                // `100 Continue` went out; the real response follows.
                self.interim = false;
                self.response = None;
                moved = true;
            }
        }
        if down.eof {
            match self.response {
                // Close-delimited: the body ends here.
                Some(Framing::UntilClose) if down.pending() == 0 => {
                    self.response = Some(Framing::Done);
                    self.close = true;
                    self.request = Framing::Done;
                    self.head_sent = self.head.len();
                }
                Some(Framing::UntilClose) => {}
                Some(Framing::Done) => {}
                // What the ring still holds may complete the response (the
                // client has not taken it yet, or a final head follows an
                // interim one): it goes out first. Only a partial head
                // can never complete.
                _ if down.pending() > 0 && !partial => {}
                _ => {
                    return Err(Broken::Protocol(
                        502,
                        "the server closed before its response was complete",
                    ))
                }
            }
        }
        Ok(moved)
    }
}

fn frame_error(
    io_what: &'static str,
    status: u16,
    frame_what: &'static str,
    e: io::Error,
) -> Broken {
    if e.kind() == io::ErrorKind::InvalidData {
        Broken::Protocol(status, frame_what)
    } else {
        Broken::Io(io_what, e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::Ready;
    use super::super::testio::Mem;
    use super::*;

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: o\r\n\r\n";

    struct Exchange {
        fwd: Forward,
        client: Mem,
        origin: Mem,
        up: Pipe,
        down: Pipe,
        pool: RingPool,
    }

    impl Exchange {
        fn new(method: &str, body: http::Body) -> Exchange {
            let head = ForwardHead {
                head: HEAD.to_vec(),
                method: method.into(),
                body,
                close: false,
            };
            Exchange {
                fwd: Forward::new(Target::Name("o".into(), 80), head),
                client: Mem::new(usize::MAX),
                origin: Mem::new(usize::MAX),
                up: Pipe::default(),
                down: Pipe::default(),
                pool: RingPool::new(256, 4),
            }
        }

        fn run(&mut self) -> Next {
            // The origin's FIN is reported with its last bytes, as epoll does.
            let (mut cr, mut or) = (
                Ready::BOTH,
                Ready {
                    read_closed: self.origin.eof,
                    ..Ready::BOTH
                },
            );
            self.fwd.run(
                (&mut self.client, &mut cr),
                (&mut self.origin, &mut or),
                &mut self.up,
                &mut self.down,
                &mut self.pool,
            )
        }

        /// Runs until it stops moving; what reached the origin and the client.
        fn settle(&mut self) -> (Next, Vec<u8>, Vec<u8>) {
            let (mut to_origin, mut to_client) = (Vec::new(), Vec::new());
            loop {
                let next = self.run();
                let moved = !self.origin.written.is_empty() || !self.client.written.is_empty();
                to_origin.extend(self.origin.drain_written());
                to_client.extend(self.client.drain_written());
                if !matches!(next, Next::Idle | Next::Yield) || !moved {
                    return (next, to_origin, to_client);
                }
            }
        }
    }

    #[test]
    fn request_head_then_sized_response_ends_the_exchange() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin
            .send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let (next, to_origin, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert_eq!(to_origin, HEAD);
        assert!(to_client.ends_with(b"\r\n\r\nhello"));
        assert!(x.fwd.answered());
        assert!(!x.fwd.closes());
    }

    #[test]
    fn request_body_is_framed_and_the_next_request_stays_behind() {
        let mut x = Exchange::new("POST", http::Body::Length(4));
        x.client.send(b"bodyGET /next");
        x.origin.send(b"HTTP/1.1 204 No Content\r\n\r\n");
        let (next, to_origin, _) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert_eq!(&to_origin[HEAD.len()..], b"body");
        assert_eq!(x.up.pending(), 9, "the next request waits in the ring");
    }

    #[test]
    fn chunked_response_ends_at_its_last_chunk() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin
            .send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert!(to_client.ends_with(b"0\r\n\r\n"));
    }

    #[test]
    fn close_delimited_response_ends_at_the_origins_eof_and_closes() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin.send(b"HTTP/1.1 200 OK\r\n\r\nuntil close");
        x.origin.eof = true;
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert!(to_client.ends_with(b"until close"));
        assert!(x.fwd.closes());
    }

    #[test]
    fn interim_100_continue_is_passed_on_before_the_real_response() {
        let mut x = Exchange::new("POST", http::Body::Length(2));
        x.origin
            .send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        x.client.send(b"hi");
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        let text = String::from_utf8(to_client).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{text}"
        );
    }

    #[test]
    fn malformed_response_fails_with_502_before_anything_reached_the_client() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin.send(b"NOT HTTP AT ALL\r\n\r\n");
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Failed(502, _)), "{next:?}");
        assert!(to_client.is_empty());
        assert!(!x.fwd.answered());
    }

    #[test]
    fn origin_closing_mid_response_fails_with_502() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin
            .send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
        x.origin.eof = true;
        let (next, _, _) = x.settle();
        assert!(matches!(next, Next::Failed(502, _)), "{next:?}");
        assert!(x.fwd.answered(), "part of the response went out");
    }

    #[test]
    fn origin_closing_after_a_whole_response_a_slow_client_has_not_taken_is_done() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.client = Mem::new(8);
        x.origin
            .send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        x.origin.eof = true;
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert!(to_client.ends_with(b"\r\n\r\nhello"));
        assert!(x.fwd.closes());
    }

    #[test]
    fn origin_closing_after_an_interim_and_a_whole_response_is_done() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin
            .send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        x.origin.eof = true;
        let (next, _, to_client) = x.settle();
        assert!(matches!(next, Next::Done), "{next:?}");
        assert!(to_client.ends_with(b"\r\n\r\nhi"));
    }

    #[test]
    fn origin_closing_in_a_response_head_after_an_interim_fails_with_502() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin
            .send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le");
        x.origin.eof = true;
        let (next, _, _) = x.settle();
        assert!(matches!(next, Next::Failed(502, _)), "{next:?}");
    }

    #[test]
    fn client_leaving_mid_body_is_told_apart() {
        let mut x = Exchange::new("POST", http::Body::Length(10));
        x.client.send(b"part");
        x.client.eof = true;
        let (next, _, _) = x.settle();
        assert!(matches!(next, Next::ClientLeft), "{next:?}");
    }

    #[test]
    fn origin_reset_is_a_broken_exchange() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.origin.reset = true;
        let (next, _, _) = x.settle();
        assert!(
            matches!(next, Next::Broken("upstream read error", _)),
            "{next:?}"
        );
    }
    /// Issue 11's short downloads (`curl: (18) transfer closed with 37379
    /// bytes remaining`): the origin sent its whole sized response and
    /// closed while the client was not taking bytes; the rest of the body
    /// waited in the ring, and the EOF was taken for a response cut short,
    /// which closed the client's connection with the ring unflushed.
    #[test]
    fn origin_closing_behind_a_whole_response_the_client_has_not_taken_is_no_failure() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        ] {
            let mut x = Exchange::new("GET", http::Body::None);
            // The client takes 20 bytes (less than the head), then none.
            x.client.room = 20;
            x.origin.send(response);
            x.origin.eof = true;
            // The first run's short read ends it; the next ones read the EOF.
            for _ in 0..3 {
                let next = x.run();
                assert!(matches!(next, Next::Idle), "client not reading: {next:?}");
            }
            let mut to_client = x.client.drain_written();
            x.client.room = usize::MAX;
            let (next, _, rest) = x.settle();
            to_client.extend(rest);
            assert!(matches!(next, Next::Done), "{next:?}");
            assert_eq!(to_client, response);
        }
    }

    /// An origin that closes mid-body while the client is slow: what it
    /// sent still goes out (the client learns the cut from the framing),
    /// then the exchange fails.
    #[test]
    fn origin_closing_mid_body_while_the_client_is_slow_still_fails() {
        let mut x = Exchange::new("GET", http::Body::None);
        x.client.room = 20;
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        x.origin.send(response);
        x.origin.eof = true;
        assert!(matches!(x.run(), Next::Idle), "waits for the slow client");
        let mut got = std::mem::take(&mut x.client.written);
        x.client.room = usize::MAX;
        let mut next = x.run();
        for _ in 0..3 {
            if !matches!(next, Next::Idle) {
                break;
            }
            next = x.run();
        }
        got.extend_from_slice(&x.client.written);
        assert_eq!(got, response, "what the origin sent went out");
        assert!(matches!(next, Next::Failed(502, _)), "{next:?}");
    }
}
