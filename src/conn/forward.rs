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

    /// The client asked (or HTTP/1.0 implies) to close after this exchange.
    pub fn closes(&self) -> bool {
        self.close
    }

    fn exchange_done(&self) -> bool {
        self.head_sent == self.head.len()
            && self.request.is_done()
            && self.response == Some(Framing::Done)
            && self.response_head_left == 0
            && !self.interim
    }
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
        if let Some(ring) = unparsed.filter(|_| self.response.is_none()) {
            if ring.data().len() < ring.len() {
                ring.make_contiguous();
            }
            match http::parse_response(ring.data(), &self.method) {
                Ok(Status::Partial) => {}
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
