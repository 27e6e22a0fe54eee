//! The HTTP forward proxy: one request and its response at a time over a
//! kept-alive upstream connection. The request head has been rewritten to
//! origin form; bodies pass through unchanged, and [`Framing`] only tells
//! where each ends, so the next request can be checked (same origin, or a
//! new upstream) and the response's end found without buffering either.

use std::io::{self, Write};

use super::{fill, send_framed, Conn, Ctx, Flow, ForwardHead, Progress, State, Target, MAX_ROUNDS};
use crate::http::{self, Framing, Status};

/// How long a kept-alive client connection may sit between requests.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) struct Forward {
    /// Where the upstream connection goes.
    pub(super) origin: Target,
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
    pub(super) fn new(origin: Target, head: ForwardHead) -> Forward {
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
    pub(super) fn next_exchange(&mut self, head: ForwardHead) {
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

    fn exchange_done(&self) -> bool {
        self.head_sent == self.head.len()
            && self.request.is_done()
            && self.response == Some(Framing::Done)
            && self.response_head_left == 0
            && !self.interim
    }
}

/// Why a forward exchange cannot go on.
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

impl Conn {
    pub(super) fn relay_forward(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        for _ in 0..MAX_ROUNDS {
            let moved = match self.forward_round(ctx) {
                Ok(moved) => moved,
                Err(Broken::Io(what, e)) => return self.broken(what, e),
                Err(Broken::Protocol(status, what)) => {
                    let fwd = self.fwd.as_ref().expect("forwarding");
                    if !fwd.answered {
                        // Nothing of the origin's reached the client: drop
                        // what it sent and answer for it.
                        if let Some(ring) = self.down.ring.take() {
                            ctx.pool.give(ring);
                        }
                        let response = http::error_response(status, what, "");
                        self.queue(ctx, &response);
                        self.drop_upstream(ctx);
                        self.reason = what;
                        self.enter_closing(ctx);
                        return Flow::Next;
                    }
                    self.reason = what;
                    return Flow::Stop(Progress::Close);
                }
            };
            let fwd = self.fwd.as_mut().expect("forwarding");
            if fwd.exchange_done() {
                if self.down.pending() > 0 {
                    // The origin sent more than its response: it cannot be
                    // trusted with the next request.
                    log::debug!(
                        "#{} origin sent bytes after its response; dropping that upstream",
                        self.id
                    );
                    self.end_upstream(ctx);
                }
                let fwd = self.fwd.as_mut().expect("forwarding");
                if fwd.close || (self.up.eof && self.up.pending() == 0) {
                    self.reason = "done";
                    self.enter_closing(ctx);
                    return Flow::Next;
                }
                // Kept alive: the next request may already be waiting.
                self.state = State::HttpHead;
                self.arm(ctx, KEEPALIVE_IDLE);
                return Flow::Next;
            }
            // The client left in the middle of its request body.
            let fwd = self.fwd.as_ref().expect("forwarding");
            if self.up.eof && self.up.pending() == 0 && !fwd.request.is_done() {
                if !fwd.answered {
                    let response = http::error_response(400, "the request body ended early", "");
                    self.queue(ctx, &response);
                    self.drop_upstream(ctx);
                    self.reason = "client closed during its request body";
                    self.enter_closing(ctx);
                    return Flow::Next;
                }
                self.reason = "client closed during its request body";
                return Flow::Stop(Progress::Close);
            }
            if !moved {
                return Flow::Stop(Progress::Idle);
            }
        }
        Flow::Stop(Progress::Yield)
    }

    /// One round each way; whether anything moved.
    fn forward_round(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, Broken> {
        let fwd = self.fwd.as_mut().expect("forwarding");
        let upstream = self.upstream.as_mut().expect("forwarding has an upstream");
        let mut moved = false;

        // Client to upstream: the rewritten head, then the body as framed.
        // Bytes after the body (the next request) stay in the ring.
        let before = self.up.pending();
        moved |= fill(
            &mut self.client,
            &mut self.client_ready,
            &mut self.up,
            ctx.pool,
        )
        .map_err(|e| ("client read error", e))?;
        self.up.bytes += (self.up.pending().saturating_sub(before)) as u64;
        while fwd.head_sent < fwd.head.len() && self.upstream_ready.writable {
            match upstream.write(&fwd.head[fwd.head_sent..]) {
                Ok(n) => {
                    fwd.head_sent += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.upstream_ready.writable = false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Io("upstream write error", e)),
            }
        }
        if fwd.head_sent == fwd.head.len() {
            let mut none = 0;
            moved |= send_framed(
                upstream,
                &mut self.upstream_ready,
                &mut self.up,
                &mut none,
                &mut fwd.request,
                ctx.pool,
            )
            .map_err(|e| frame_error("upstream write error", 400, "bad request body framing", e))?;
        }

        // Upstream to client: the response head, read whole, then its body.
        let before = self.down.pending();
        moved |= fill(upstream, &mut self.upstream_ready, &mut self.down, ctx.pool)
            .map_err(|e| ("upstream read error", e))?;
        self.down.bytes += (self.down.pending().saturating_sub(before)) as u64;
        if fwd.response.is_none() && self.down.pending() > 0 {
            let ring = self.down.ring.as_mut().expect("has data");
            if ring.data().len() < ring.len() {
                ring.make_contiguous();
            }
            match http::parse_response(ring.data(), &fwd.method) {
                Ok(Status::Partial) => {}
                Ok(Status::Complete(head, len)) => {
                    let interim = (100..200).contains(&head.status) && head.status != 101;
                    fwd.interim = interim;
                    fwd.response = Some(Framing::new(if interim {
                        http::Body::None
                    } else {
                        head.body
                    }));
                    fwd.response_head_left = len;
                    fwd.close |= head.close || head.status == 101;
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
        if let Some(framing) = fwd.response.as_mut() {
            let sent = send_framed(
                &mut self.client,
                &mut self.client_ready,
                &mut self.down,
                &mut fwd.response_head_left,
                framing,
                ctx.pool,
            )
            .map_err(|e| frame_error("client write error", 502, "bad response body framing", e))?;
            fwd.answered |= sent;
            moved |= sent;
            if fwd.interim && fwd.response_head_left == 0 {
                // `100 Continue` went out; the real response follows.
                fwd.interim = false;
                fwd.response = None;
                moved = true;
            }
        }
        if self.down.eof {
            match fwd.response {
                // Close-delimited: the body ends here.
                Some(Framing::UntilClose) if self.down.pending() == 0 => {
                    fwd.response = Some(Framing::Done);
                    fwd.close = true;
                    fwd.request = Framing::Done;
                    fwd.head_sent = fwd.head.len();
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
