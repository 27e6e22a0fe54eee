//! The `--metrics` endpoint's sockets, served by the event loop: a tiny
//! HTTP/1.x responder that a hostile client cannot stall or swell.
//!
//! - at most [`MAX_CLIENTS`] connections at once; more wait in the
//!   listener's backlog until one ends;
//! - a request head of at most [`MAX_HEAD`] bytes (else 431), complete
//!   within [`HEAD_TIMEOUT`] (else 408); anything malformed gets 400;
//! - `GET /metrics` and `GET /status`; other paths 404, other methods 405;
//! - one response a connection (`Connection: close`), written as the client
//!   takes it, within [`WRITE_TIMEOUT`]; then the write side is shut and
//!   what the client still sends is read and dropped for a moment, so the
//!   close does not reset the response away.
//!
//! What a request gets is [`respond`]'s (pure); this module moves bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::render;
use super::Snapshot;

/// Metric connections open at once.
pub const MAX_CLIENTS: usize = 8;
/// Descriptors the endpoint may hold: its listener and its clients.
pub const DESCRIPTORS: u64 = 1 + MAX_CLIENTS as u64;
/// The longest request head read.
pub const MAX_HEAD: usize = 4096;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it has to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long what it sends after the response is read and dropped.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is read and dropped after the response.
const LINGER_BYTES: usize = 64 * 1024;

/// The listener's token; the clients' are the [`MAX_CLIENTS`] below it.
/// Far above any connection's token (see [`crate::conn::Handle::token`]).
pub const LISTENER: Token = Token(usize::MAX - 2);

fn client_token(slot: usize) -> Token {
    Token(LISTENER.0 - 1 - slot)
}

/// Whether an event with this token is the endpoint's.
pub fn owns(token: Token) -> bool {
    token.0 <= LISTENER.0 && token.0 >= LISTENER.0 - MAX_CLIENTS
}

/// Binds the endpoint's listener, at start (before the loop runs).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

enum Phase {
    /// Reading the request head: `len` bytes of it so far.
    Head { buf: Box<[u8]>, len: usize },
    /// Writing the response: `sent` bytes of it so far.
    Writing { out: Vec<u8>, sent: usize },
    /// Response sent and write side shut: dropping what comes in.
    Linger { dropped: usize },
}

struct Client {
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
}

pub struct Endpoint {
    listener: TcpListener,
    clients: [Option<Client>; MAX_CLIENTS],
}

impl Endpoint {
    /// Serves on `listener` (from [`bind`]), registered with `registry`.
    pub fn new(listener: std::net::TcpListener, registry: &Registry) -> io::Result<Endpoint> {
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Endpoint {
            listener,
            clients: Default::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The soonest deadline of a client, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(|c| c.deadline).min()
    }

    /// An event for `token` (one of [`owns`]).
    pub fn on_event(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
        snapshot: &dyn Fn() -> Snapshot,
    ) {
        if token == LISTENER {
            self.accept(registry, now, snapshot);
            return;
        }
        let slot = LISTENER.0 - 1 - token.0;
        self.pump(registry, slot, now, snapshot);
        // A slot freed: take a client that waits in the backlog.
        self.accept(registry, now, snapshot);
    }

    /// Answers heads that took too long (408), and closes clients that
    /// take their response too slowly.
    pub fn expire(&mut self, registry: &Registry, now: Instant, snapshot: &dyn Fn() -> Snapshot) {
        for slot in 0..MAX_CLIENTS {
            let Some(client) = self.clients[slot].as_mut().filter(|c| c.deadline <= now) else {
                continue;
            };
            match client.phase {
                Phase::Head { .. } => {
                    client.phase = Phase::Writing {
                        out: response(408, "text/plain", b"request head timed out\n"),
                        sent: 0,
                    };
                    client.deadline = now + WRITE_TIMEOUT;
                    self.pump(registry, slot, now, snapshot);
                }
                _ => self.close(registry, slot),
            }
        }
        self.accept(registry, now, snapshot);
    }

    /// Accepts while a slot is free (a client done at once frees its slot
    /// again, in this loop: no recursion however long the backlog).
    fn accept(&mut self, registry: &Registry, now: Instant, snapshot: &dyn Fn() -> Snapshot) {
        // Full: the rest wait in the backlog until a slot frees.
        while let Some(slot) = self.clients.iter().position(Option::is_none) {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("metrics: accept failed: {e}");
                    return;
                }
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, client_token(slot), interest) {
                log::debug!("metrics: cannot register a client: {e}");
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                phase: Phase::Head {
                    buf: vec![0; MAX_HEAD].into_boxed_slice(),
                    len: 0,
                },
                deadline: now + HEAD_TIMEOUT,
            });
            self.pump(registry, slot, now, snapshot);
        }
    }

    /// Moves client `slot` on as far as its socket allows.
    fn pump(
        &mut self,
        registry: &Registry,
        slot: usize,
        now: Instant,
        snapshot: &dyn Fn() -> Snapshot,
    ) {
        let Some(client) = self.clients[slot].as_mut() else {
            return;
        };
        let done = match step(client, now, snapshot) {
            Ok(done) => done,
            Err(e) => {
                log::debug!("metrics: client dropped: {e}");
                true
            }
        };
        if done {
            self.close(registry, slot);
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut client) = self.clients[slot].take() {
            let _ = registry.deregister(&mut client.stream);
        }
    }
}

/// Runs a client's phases until its socket would block; `true` once it is
/// done with.
fn step(client: &mut Client, now: Instant, snapshot: &dyn Fn() -> Snapshot) -> io::Result<bool> {
    loop {
        match &mut client.phase {
            Phase::Head { buf, len } => {
                match client.stream.read(&mut buf[*len..]) {
                    Ok(0) => return Ok(true),
                    Ok(n) => *len += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                let full = *len == buf.len();
                if let Some(out) = respond(&buf[..*len], full, snapshot) {
                    client.phase = Phase::Writing { out, sent: 0 };
                    client.deadline = now + WRITE_TIMEOUT;
                }
            }
            Phase::Writing { out, sent } => match client.stream.write(&out[*sent..]) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    *sent += n;
                    if *sent == out.len() {
                        client.stream.shutdown(Shutdown::Write)?;
                        client.phase = Phase::Linger { dropped: 0 };
                        client.deadline = now + LINGER;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            },
            Phase::Linger { dropped } => {
                let mut sink = [0u8; 1024];
                match client.stream.read(&mut sink) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        *dropped += n;
                        if *dropped > LINGER_BYTES {
                            return Ok(true);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// What a request head gets, once there is enough of it to say: `None`
/// while it may still be coming. `full`: the buffer is full, so no more
/// will come.
pub fn respond(head: &[u8], full: bool, snapshot: &dyn Fn() -> Snapshot) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let text = |s: &str| s.as_bytes().to_vec();
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if !full => return None,
        Ok(httparse::Status::Partial) => {
            let body = text("request head too large\n");
            return Some(response(431, "text/plain", &body));
        }
        Err(httparse::Error::TooManyHeaders) => {
            let body = text("too many header fields\n");
            return Some(response(431, "text/plain", &body));
        }
        Err(e) => {
            return Some(response(400, "text/plain", format!("{e}\n").as_bytes()));
        }
    }
    if req.method != Some("GET") {
        let body = text("only GET is served here\n");
        return Some(response(405, "text/plain", &body));
    }
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(match path {
        "/metrics" => response(
            200,
            render::PROMETHEUS_TYPE,
            render::prometheus(&snapshot()).as_bytes(),
        ),
        "/status" => response(200, render::JSON_TYPE, render::json(&snapshot()).as_bytes()),
        _ => response(
            404,
            "text/plain",
            b"not found: try /metrics (Prometheus) or /status (JSON)\n",
        ),
    })
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Request Header Fields Too Large",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counters, Snapshot};
    use std::time::SystemTime;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "0.1.0",
            listen: "127.0.0.1:1080".parse().unwrap(),
            started: SystemTime::now(),
            uptime: Duration::ZERO,
            balance: crate::balance::Strategy::Learn,
            links: Vec::new(),
            connections_open: 0,
            connections_total: 0,
            associations_open: 0,
            counters: Counters::default(),
            dns: crate::dns::Stats::default(),
        }
    }

    fn status(head: &[u8], full: bool) -> Option<(u16, String)> {
        let out = respond(head, full, &snapshot)?;
        let text = String::from_utf8(out).unwrap();
        let code = text[9..12].parse().unwrap();
        Some((code, text))
    }

    #[test]
    fn metrics_and_status_are_served_with_their_types() {
        let (code, text) = status(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false).unwrap();
        assert_eq!(code, 200);
        assert!(
            text.contains("Content-Type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.contains("# TYPE dispatch_info gauge"), "{text}");
        let (code, text) = status(b"GET /status?x=1 HTTP/1.0\r\n\r\n", false).unwrap();
        assert_eq!(code, 200);
        assert!(text.contains("Content-Type: application/json"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
    }

    #[test]
    fn a_partial_head_waits_unless_the_buffer_is_full() {
        assert!(status(b"GET /metrics HTTP/1.1\r\nHost:", false).is_none());
        assert_eq!(
            status(b"GET /metrics HTTP/1.1\r\nHost:", true).unwrap().0,
            431
        );
        assert!(status(b"", false).is_none());
    }

    #[test]
    fn hostile_or_other_requests_get_their_status() {
        assert_eq!(
            status(b"POST /metrics HTTP/1.1\r\n\r\n", false).unwrap().0,
            405
        );
        assert!(status(b"HEAD /metrics HTTP/1.1\r\n\r\n", false)
            .unwrap()
            .1
            .contains("Allow: GET"));
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n", false).unwrap().0, 404);
        assert_eq!(
            status(b"GET /metricsx HTTP/1.1\r\n\r\n", false).unwrap().0,
            404
        );
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01", false).unwrap().0, 400);
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(head.as_bytes(), false).unwrap().0, 431);
    }

    #[test]
    fn tokens_do_not_overlap_the_loops() {
        assert!(owns(LISTENER));
        assert!(owns(client_token(MAX_CLIENTS - 1)));
        assert!(!owns(Token(usize::MAX)));
        assert!(!owns(Token(usize::MAX - 1)));
        assert!(!owns(Token(LISTENER.0 - MAX_CLIENTS - 1)));
        assert!(!owns(Token(0)));
    }
}
