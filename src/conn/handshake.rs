//! The handshake: from the client's first byte to a complete request.
//!
//! The first byte tells SOCKS (4 or 5) from HTTP. SOCKS5 goes greeting →
//! (RFC 1929 credentials) → request, the method choice and the credentials'
//! status queued in the [`Outbox`] on the way; SOCKS4/4a and HTTP send their
//! request at once. The bytes are read into a small buffer sized to the
//! protocol ([`SOCKS_MAX`], or an HTTP head up to [`http::MAX_HEAD`]) and
//! to what arrived: a client that sent nothing costs nothing, one that sent
//! a byte a few bytes, and no relay ring is lent before the request is
//! answered. Bytes the
//! client sent behind its request are handed on with it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use super::io::{self as sock, Outcome, Ready, SHORT_IO_DRAINS};
use super::reply::Outbox;
use super::request::{ForwardHead, HttpRequest, SocksRequest, Target};
use crate::auth::Credentials;
use crate::http;
use crate::net;
use crate::socks::{self, consts, Dest, ParseError, Protocol, Reply, Status, Version};

/// The longest SOCKS handshake message: a SOCKS4a request with a user ID
/// and a host name of 255 bytes each, 520 bytes (8 + 2 × 256). RFC 1929
/// credentials (513), greetings (257) and SOCKS5 requests (262) are shorter.
pub const SOCKS_MAX: usize = 8 + 2 * (consts::SOCKS4_MAX_FIELD + 1);

/// The HTTP head buffer: one byte past [`http::MAX_HEAD`], so a head that
/// is too long is seen to be (431).
const HTTP_MAX: usize = http::MAX_HEAD + 1;

/// One read asks for at most this much.
const READ_CHUNK: usize = 1024;

/// HTTP heads up to this long are parsed at every read.
const EAGER_PARSE: usize = 512;

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first message: SOCKS5 greeting, SOCKS4 request or HTTP.
    Greeting,
    /// SOCKS5 username/password method chosen; waiting for the credentials.
    Auth,
    /// SOCKS5 method chosen; waiting for the request.
    Request,
    /// Waiting for an HTTP proxy request head (the first, or the next one
    /// on a kept-alive connection).
    HttpHead,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Greeting => "greeting",
            Phase::Auth => "auth",
            Phase::Request => "request",
            Phase::HttpHead => "http request",
        }
    }
}

/// What the handshake came to.
#[derive(Debug)]
pub enum Next {
    /// More bytes are needed.
    Wait,
    /// The client sent EOF before a complete request.
    ClientClosed,
    /// No valid handshake is this long.
    TooLong,
    /// Refused: the answer is in the outbox; close after it.
    Refused(&'static str),
    /// A SOCKS request, and the bytes the client sent behind it.
    Socks(SocksRequest, Vec<u8>),
    /// An HTTP proxy request, and the bytes the client sent behind it.
    Http(HttpRequest, Vec<u8>),
}

pub struct Handshake {
    phase: Phase,
    /// Bytes received and not yet parsed; no allocation before the first.
    buf: Vec<u8>,
    /// HTTP: how much of `buf` is known to hold no line end, so each read
    /// scans only what it added.
    scanned: usize,
    /// The client sent EOF.
    eof: bool,
}

impl Handshake {
    pub fn new() -> Handshake {
        Handshake {
            phase: Phase::Greeting,
            buf: Vec::new(),
            scanned: 0,
            eof: false,
        }
    }

    /// The next request head on a kept-alive HTTP connection, starting with
    /// what the client already sent (`eof`: and then closed).
    pub fn next_http(sent: Vec<u8>, eof: bool) -> Handshake {
        Handshake {
            phase: Phase::HttpHead,
            buf: sent,
            scanned: 0,
            eof,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Part of an HTTP request head arrived, not all of it. (Empty lines
    /// before a request are not a head: RFC 9112 §2.2 says to ignore them,
    /// and clients send a stray CRLF after a body.)
    pub fn half_http_head(&self) -> bool {
        self.phase == Phase::HttpHead && self.buf.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// The client sent EOF.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Reads what the client sent, as far as the buffer's limit. Each read
    /// lands on the stack and is copied into a buffer sized to what came,
    /// so a client that sent a few bytes holds a few bytes.
    pub fn read(&mut self, client: &mut impl Read, ready: &mut Ready) -> std::io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        while ready.readable && !self.eof {
            let room = self.limit().saturating_sub(self.buf.len());
            if room == 0 {
                break;
            }
            let want = room.min(READ_CHUNK);
            match sock::read(client, &mut chunk[..want]) {
                Outcome::Continue(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if n < want && SHORT_IO_DRAINS && !ready.read_closed {
                        ready.readable = false;
                    }
                }
                Outcome::Closed => self.eof = true,
                Outcome::WouldBlock => ready.readable = false,
                Outcome::Reset(e) | Outcome::Error(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn limit(&self) -> usize {
        let http = self.phase == Phase::HttpHead
            || (self.phase == Phase::Greeting
                && self
                    .buf
                    .first()
                    .is_some_and(|&b| socks::sniff(b) == Protocol::Http));
        if http {
            HTTP_MAX
        } else {
            SOCKS_MAX
        }
    }

    /// Parses what arrived: answers the steps of a SOCKS5 handshake into
    /// `out`, and stops at a complete request or a refusal.
    pub fn parse(&mut self, auth: &Credentials, out: &mut Outbox, who: (u64, SocketAddr)) -> Next {
        loop {
            let parsed = match self.phase {
                Phase::Greeting => greeting(&self.buf, auth),
                Phase::Auth => user_pass(&self.buf, auth),
                Phase::Request => socks_request(&self.buf, Version::Socks5),
                Phase::HttpHead => {
                    if !self.head_may_be_complete() {
                        Parsed::NeedMore
                    } else {
                        http_request(&self.buf, auth)
                    }
                }
            };
            match parsed {
                Parsed::NeedMore => {
                    return if self.buf.len() >= self.limit() {
                        Next::TooLong
                    } else if self.eof {
                        Next::ClientClosed
                    } else {
                        Next::Wait
                    };
                }
                Parsed::Http => self.phase = Phase::HttpHead,
                Parsed::Greeting { consumed, method } => {
                    self.buf.drain(..consumed);
                    out.method(method);
                    self.phase = match method {
                        consts::METHOD_NO_AUTH => Phase::Request,
                        consts::METHOD_USER_PASS => Phase::Auth,
                        _ => return Next::Refused("client offered no acceptable auth method"),
                    };
                }
                Parsed::UserPass { consumed, user, ok } => {
                    out.user_pass_status(ok);
                    if !ok {
                        // A user name may be a password typed in the wrong
                        // field: only known names are written down.
                        let who_is = if auth.knows(user.as_bytes()) {
                            format!("user {user:?}")
                        } else {
                            "an unknown user".to_string()
                        };
                        log::info!(
                            "#{} {}: wrong SOCKS5 credentials for {who_is}",
                            who.0,
                            who.1
                        );
                        return Next::Refused("wrong credentials");
                    }
                    self.buf.drain(..consumed);
                    self.phase = Phase::Request;
                }
                Parsed::Request { consumed, request } => {
                    return Next::Socks(request, self.rest(consumed));
                }
                Parsed::HttpRequest { consumed, request } => {
                    return Next::Http(request, self.rest(consumed));
                }
                Parsed::Invalid { answer, error } => {
                    log::debug!("#{} {}: bad handshake: {error}", who.0, who.1);
                    match answer {
                        Answer::Reply(v, reply) => {
                            out.reply(super::request::Client::Socks(v), reply, None, None)
                        }
                        Answer::NoMethod => out.method(consts::METHOD_NONE_ACCEPTABLE),
                        Answer::AuthFailure => out.user_pass_status(false),
                        Answer::Http(status) => out.http_error(status, &error.to_string(), ""),
                    }
                    return Next::Refused("bad handshake");
                }
            }
        }
    }

    /// An HTTP head ends with an empty line, and httparse rejects a bad one
    /// at a line's end at the latest. Short heads are parsed at each read,
    /// so garbage is answered at once, and once more as they pass
    /// [`EAGER_PARSE`] bytes; after that, only once a line end arrived (or
    /// the head is too long), so a long head sent a byte at a time costs
    /// one parse per line, not per byte.
    fn head_may_be_complete(&mut self) -> bool {
        let eager = self.buf.len() <= EAGER_PARSE || self.scanned <= EAGER_PARSE;
        if eager || self.buf.len() > http::MAX_HEAD || self.eof {
            self.scanned = self.buf.len();
            return true;
        }
        let fresh = self.buf[self.scanned..].contains(&b'\n');
        self.scanned = self.buf.len();
        fresh
    }

    /// What follows the first `consumed` bytes.
    fn rest(&mut self, consumed: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.drain(..consumed);
        buf
    }
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake::new()
    }
}

/// What the bytes received so far amount to, in the current phase.
enum Parsed {
    NeedMore,
    /// The first byte says HTTP: parse a request head next.
    Http,
    /// A SOCKS5 greeting, and the method chosen for it.
    Greeting {
        consumed: usize,
        method: u8,
    },
    /// RFC 1929 credentials, and whether they are accepted.
    UserPass {
        consumed: usize,
        user: String,
        ok: bool,
    },
    Request {
        consumed: usize,
        request: SocksRequest,
    },
    HttpRequest {
        consumed: usize,
        request: HttpRequest,
    },
    Invalid {
        answer: Answer,
        error: Box<dyn std::error::Error>,
    },
}

/// What a client whose handshake is invalid is told before the close.
enum Answer {
    /// A SOCKS reply in this version's format.
    Reply(Version, Reply),
    /// A SOCKS5 method selection of "no acceptable method".
    NoMethod,
    /// An RFC 1929 status of failure (`01 01`).
    AuthFailure,
    /// An HTTP error response with this status.
    Http(u16),
}

fn invalid(answer: Answer, error: impl std::error::Error + 'static) -> Parsed {
    Parsed::Invalid {
        answer,
        error: Box::new(error),
    }
}

fn greeting(data: &[u8], auth: &Credentials) -> Parsed {
    let Some(&first) = data.first() else {
        return Parsed::NeedMore;
    };
    match socks::sniff(first) {
        Protocol::Http => Parsed::Http,
        Protocol::Socks4 => socks_request(data, Version::Socks4),
        Protocol::Socks5 => match socks::parse_greeting(data) {
            Ok(Status::Partial) => Parsed::NeedMore,
            Ok(Status::Complete(g, consumed)) => {
                let wanted = if !auth.required() {
                    consts::METHOD_NO_AUTH
                } else {
                    consts::METHOD_USER_PASS
                };
                let method = if g.offers(wanted) {
                    wanted
                } else {
                    consts::METHOD_NONE_ACCEPTABLE
                };
                Parsed::Greeting { consumed, method }
            }
            Err(error) => invalid(Answer::NoMethod, error),
        },
    }
}

fn user_pass(data: &[u8], auth: &Credentials) -> Parsed {
    match socks::parse_user_pass(data) {
        Ok(Status::Partial) => Parsed::NeedMore,
        Ok(Status::Complete(up, consumed)) => Parsed::UserPass {
            consumed,
            user: String::from_utf8_lossy(up.user).into_owned(),
            ok: auth.check(up.user, up.pass),
        },
        // RFC 1929 answers its own version: a bad message is a failure
        // status, not a method selection.
        Err(error) => invalid(Answer::AuthFailure, error),
    }
}

fn socks_request(data: &[u8], version: Version) -> Parsed {
    let parsed = match version {
        Version::Socks4 => socks::parse_socks4(data),
        Version::Socks5 => socks::parse_request(data),
    };
    match parsed {
        Ok(Status::Partial) => Parsed::NeedMore,
        Ok(Status::Complete(req, consumed)) => Parsed::Request {
            consumed,
            request: SocksRequest {
                version: req.version,
                command: req.command,
                target: match req.dest {
                    Dest::Addr(a) => Target::Addr(net::canonical(a)),
                    Dest::Name(n, p) => Target::Name(n.into(), p),
                },
            },
        },
        Err(error) => invalid_request(version, error),
    }
}

fn invalid_request(version: Version, error: ParseError) -> Parsed {
    invalid(Answer::Reply(version, error.reply()), error)
}

fn http_request(data: &[u8], auth: &Credentials) -> Parsed {
    let (head, consumed) = match http::parse_request(data) {
        Ok(Status::Partial) => return Parsed::NeedMore,
        Ok(Status::Complete(head, consumed)) => (head, consumed),
        Err(error) => return invalid(Answer::Http(error.status()), error),
    };
    let offered = head.header("proxy-authorization");
    let authorized = !auth.required() || offered.is_some_and(|v| auth.check_basic(v));
    let (host, port) = match head.target {
        http::Target::Connect { host, port } | http::Target::Forward { host, port, .. } => {
            (host, port)
        }
    };
    let target = match host.parse::<IpAddr>() {
        Ok(ip) => Target::Addr(net::canonical(SocketAddr::new(ip, port))),
        Err(_) => Target::Name(host.into(), port),
    };
    let forward = match head.target {
        http::Target::Connect { .. } => None,
        http::Target::Forward { .. } => {
            let body = match http::body_of(&head) {
                Ok(body) => body,
                Err(error) => return invalid(Answer::Http(error.status()), error),
            };
            let mut out = Vec::with_capacity(consumed);
            http::write_forward_head(&head, &mut out);
            Some(ForwardHead {
                head: out,
                method: head.method.into(),
                body,
                // An HTTP/1.0 client keeps the connection only if the
                // response says keep-alive, which the origin's need not:
                // close after each of its exchanges.
                close: http::wants_close(&head) || head.minor == 0,
            })
        }
    };
    Parsed::HttpRequest {
        consumed,
        request: HttpRequest {
            target,
            forward,
            authorized,
            refused_credentials: !authorized && offered.is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_started_head_is_half_a_head() {
        assert!(!Handshake::next_http(Vec::new(), false).half_http_head());
        // Empty lines before a request are ignored (RFC 9112 §2.2).
        assert!(!Handshake::next_http(b"\r\n".to_vec(), false).half_http_head());
        assert!(Handshake::next_http(b"\r\nGET http://a/ HT".to_vec(), false).half_http_head());
        let (hs, _, next) = handshake_of(b"GET http://a/ HTTP/1.1\r\nHo");
        assert!(matches!(next, Next::Wait) && hs.half_http_head());
        let (hs, _, _) = handshake_of(&[0x05, 0x01]);
        assert!(!hs.half_http_head(), "SOCKS is not HTTP");
    }

    fn handshake_of(bytes: &[u8]) -> (Handshake, Outbox, Next) {
        let mut hs = Handshake::new();
        let mut out = Outbox::default();
        let mut ready = Ready::BOTH;
        let who = (1, "127.0.0.1:1".parse().unwrap());
        let mut src = bytes;
        let next = loop {
            hs.read(&mut src, &mut ready).unwrap();
            match hs.parse(&Credentials::default(), &mut out, who) {
                Next::Wait if !src.is_empty() => ready = Ready::BOTH,
                next => break next,
            }
        };
        (hs, out, next)
    }

    #[test]
    fn longest_socks4a_request_fits() {
        let mut req = vec![4, 1, 0, 80, 0, 0, 0, 1];
        req.extend([b'u'; 255]);
        req.push(0);
        req.extend([b'h'; 255]);
        req.push(0);
        assert_eq!(req.len(), SOCKS_MAX);
        let (_, _, next) = handshake_of(&req);
        assert!(matches!(next, Next::Socks(..)), "{next:?}");
    }

    #[test]
    fn pipelined_greeting_and_request_longer_than_the_buffer_are_read_in_turn() {
        let mut burst = vec![5, 255];
        burst.extend(0..=254u8);
        burst.extend([5, 1, 0, 3, 255]);
        burst.extend([b'h'; 255]);
        burst.extend([0, 80]);
        burst.extend(b"payload");
        assert!(burst.len() > SOCKS_MAX);
        let (_, out, next) = handshake_of(&burst);
        let Next::Socks(req, pipelined) = next else {
            panic!("{next:?}")
        };
        assert!(matches!(req.target, Target::Name(ref n, 80) if n.len() == 255));
        // What did not fit stays in the socket, for the relay to read.
        assert!(b"payload".starts_with(&pipelined), "{pipelined:?}");
        assert!(!out.is_empty(), "the method choice is queued");
    }

    #[test]
    fn garbage_past_the_eager_limit_is_answered_when_it_crosses_it() {
        let mut hs = Handshake::new();
        let mut out = Outbox::default();
        let who = (1, "127.0.0.1:1".parse().unwrap());
        let mut ready = Ready::BOTH;
        // A valid start, then a bad byte, with no line end.
        let mut head = b"GET http://a/".to_vec();
        head.extend([b'a'; EAGER_PARSE]);
        head.push(0);
        let mut src = &head[..];
        hs.read(&mut src, &mut ready).unwrap();
        let next = hs.parse(&Credentials::default(), &mut out, who);
        assert!(matches!(next, Next::Refused("bad handshake")), "{next:?}");
    }
}
