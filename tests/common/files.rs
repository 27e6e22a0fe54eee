//! A static file server on loopback for the real clients of
//! tests/real_clients.rs (aria2c, Chromium, curl under proxychains4): GET
//! and HEAD of a fixed set of files, single byte ranges (RFC 9110 §14) for
//! download managers that split a file over several connections, persistent
//! connections, and a record of every request with the peer it came from.
//!
//! [`super::http::HttpServer`] answers a `Range` with the whole body; this
//! one honours it, and answers 404 for any path it does not hold.

use super::http::{parse_head, read_body, read_head, Framing};
use super::{Server, IO_TIMEOUT};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or one this server does not do (several ranges, another
    /// unit): the whole body, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// A range that starts past the end, 416.
    Unsatisfiable,
}

/// Reads `bytes=A-B`, `bytes=A-` and `bytes=-N` (RFC 9110 §14.1.2).
pub fn byte_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // Suffix: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeAnswer::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match parse(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeAnswer::Full,
                }
            };
            if start >= len {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (true, true) => RangeAnswer::Full,
    }
}

/// One request as the file server answered it.
#[derive(Clone, Debug)]
pub struct Served {
    /// Index of the connection it came on (accept order, from 0).
    pub conn: usize,
    pub peer: SocketAddr,
    pub method: String,
    /// The request target as sent (origin form: `/path`).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    pub status: u16,
    /// Length of the answer's body (0 for HEAD); a client may close
    /// before it has read it all (aria2c does, at the end of its part).
    pub body_len: u64,
}

struct File {
    content_type: &'static str,
    body: Vec<u8>,
}

#[derive(Default)]
struct Gate {
    /// GET requests received so far.
    requests: Mutex<usize>,
    arrived: Condvar,
}

struct FilesState {
    files: HashMap<String, File>,
    served: Mutex<Vec<Served>>,
    conns: AtomicUsize,
    /// Bodies wait until this many GET requests have arrived (0: never wait).
    hold_until: usize,
    gate: Gate,
}

/// Serves fixed files from memory on `bind` (port 0).
pub struct FileServer {
    pub addr: SocketAddr,
    server: Server,
    state: Arc<FilesState>,
}

impl FileServer {
    /// Serves `files` as `(path, content type, body)`.
    pub fn start(bind: &str, files: Vec<(&str, &'static str, Vec<u8>)>) -> FileServer {
        FileServer::start_holding(bind, files, 0)
    }

    /// Like [`FileServer::start`], but each answer's body (its head goes at
    /// once) waits until `n` GET requests have arrived, or [`IO_TIMEOUT`] has
    /// passed. A client that splits a download then has its parts
    /// requested side by side, however fast loopback would have let the
    /// first connection fetch everything alone.
    pub fn start_holding(
        bind: &str,
        files: Vec<(&str, &'static str, Vec<u8>)>,
        n: usize,
    ) -> FileServer {
        let state = Arc::new(FilesState {
            files: files
                .into_iter()
                .map(|(path, content_type, body)| (path.to_string(), File { content_type, body }))
                .collect(),
            served: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
            hold_until: n,
            gate: Gate::default(),
        });
        let st = state.clone();
        let server = Server::start(bind, move |s, peer| serve(s, peer, &st));
        FileServer {
            addr: server.addr,
            server,
            state,
        }
    }

    /// The requests answered so far, in the order they were answered.
    pub fn served(&self) -> Vec<Served> {
        self.state.served.lock().unwrap().clone()
    }

    /// Peer addresses of the accepted connections, in accept order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.server.peers()
    }

    /// `http://IP:PORT/path` of this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, st: &FilesState) {
    let conn = st.conns.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    while let Ok(Some(head)) = read_head(&mut r) {
        let (line, headers) = parse_head(&head);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("");
        // Clients of a file server send no bodies; skip one if they do.
        let body_len = header("content-length").and_then(|v| v.parse().ok());
        if read_body(&mut r, Framing::Length(body_len.unwrap_or(0)), |_| {}).is_err() {
            return;
        }
        let connection = header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let close = connection.contains("close")
            || (version == "HTTP/1.0" && !connection.contains("keep-alive"));
        let range = header("range");
        let path = target.split('?').next().unwrap_or("");
        let (status, head, body) = answer(st, &method, path, range.as_deref());
        let head_only = method == "HEAD";
        st.served.lock().unwrap().push(Served {
            conn,
            peer,
            method: method.clone(),
            target: target.clone(),
            range,
            status,
            body_len: if head_only { 0 } else { body.len() as u64 },
        });
        let head = format!(
            "{head}{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "GET" {
            arrived_and_wait(st);
        }
        if !head_only && w.write_all(body).is_err() {
            return;
        }
        if close {
            let _ = w.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// Counts a GET, then waits (bounded) until `hold_until` have come.
fn arrived_and_wait(st: &FilesState) {
    let mut n = st.gate.requests.lock().unwrap();
    *n += 1;
    st.gate.arrived.notify_all();
    let deadline = Instant::now() + IO_TIMEOUT;
    while *n < st.hold_until {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        n = st
            .gate
            .arrived
            .wait_timeout(n, left.min(Duration::from_millis(100)))
            .unwrap()
            .0;
    }
}

/// Status, head (without its final empty line) and body of the answer.
fn answer<'a>(
    st: &'a FilesState,
    method: &str,
    path: &str,
    range: Option<&str>,
) -> (u16, String, &'a [u8]) {
    let file = match st.files.get(path) {
        Some(f) if matches!(method, "GET" | "HEAD") => f,
        Some(_) => {
            return (
                405,
                "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n"
                    .to_string(),
                &[],
            )
        }
        None => {
            return (
                404,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".to_string(),
                &[],
            )
        }
    };
    let len = file.body.len() as u64;
    let ct = file.content_type;
    match byte_range(range, len) {
        RangeAnswer::Full => (
            200,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\n"
            ),
            &file.body,
        ),
        RangeAnswer::Partial { start, end } => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Type: {ct}\r\nAccept-Ranges: bytes\r\n\
                 Content-Range: bytes {start}-{end}/{len}\r\nContent-Length: {}\r\n",
                end - start + 1
            ),
            &file.body[start as usize..=end as usize],
        ),
        RangeAnswer::Unsatisfiable => (
            416,
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"
            ),
            &[],
        ),
    }
}
