//! HTTP helpers for the tests of the HTTP proxy and of authentication: an
//! HTTP/1.1 origin server that records requests and connections, a raw
//! HTTP/1.1 client that keeps the bytes behind a response, curl, clients
//! bound to a chosen source address, SOCKS5 username/password, and a raw TCP
//! client run inside a network namespace.
//!
//! Everything talks only to loopback or to addresses inside namespaces the
//! tests create.

use super::{client, scrub_env, Netns, Prng, Server, IO_TIMEOUT};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Hashing and Basic credentials
// ---------------------------------------------------------------------------

/// FNV-1a, 64 bits: enough to compare a body sent with a body received.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.update(data);
    h.0
}

/// Standard base64 with padding (for `Proxy-Authorization: Basic`).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// `Proxy-Authorization: Basic ...\r\n` for `user:pass`.
pub fn proxy_auth_header(user: &str, pass: &str) -> String {
    format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64(format!("{user}:{pass}").as_bytes())
    )
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Reads a head (start line and header lines up to the empty line). `None`
/// on EOF before the first byte.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("EOF inside a head: {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Tolerate empty lines before a start line.
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > 256 * 1024 {
            return Err(io::Error::new(ErrorKind::InvalidData, "head over 256 KiB"));
        }
    }
}

/// Start line and headers (names as sent) of a head.
pub fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.trim().to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    (start, headers)
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Header names and values, in order, names as sent.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    Empty,
}

fn framing_of(headers: &[(String, String)], until_close_default: bool) -> io::Result<Framing> {
    if find(headers, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Ok(Framing::Chunked);
    }
    if let Some(v) = find(headers, "content-length").first() {
        return v.parse().map(Framing::Length).map_err(|_| {
            io::Error::new(ErrorKind::InvalidData, format!("bad Content-Length {v:?}"))
        });
    }
    Ok(if until_close_default {
        Framing::UntilClose
    } else {
        Framing::Empty
    })
}

/// Reads a body with the given framing, passing it on in pieces as they come.
pub fn read_body<R: BufRead>(
    r: &mut R,
    framing: Framing,
    mut f: impl FnMut(&[u8]),
) -> io::Result<()> {
    fn copy<R: BufRead>(r: &mut R, mut n: u64, f: &mut impl FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF with {n} body bytes to go"),
                ));
            }
            let k = (buf.len() as u64).min(n) as usize;
            f(&buf[..k]);
            r.consume(k);
            n -= k as u64;
        }
        Ok(())
    }
    fn line<R: BufRead>(r: &mut R) -> io::Result<String> {
        let mut l = Vec::new();
        if r.read_until(b'\n', &mut l)? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "EOF in chunked framing",
            ));
        }
        Ok(String::from_utf8_lossy(&l).trim_end().to_string())
    }
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => copy(r, n, &mut f),
        Framing::UntilClose => loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let k = buf.len();
            f(buf);
            r.consume(k);
        },
        Framing::Chunked => loop {
            let l = line(r)?;
            let size = l.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(ErrorKind::InvalidData, format!("bad chunk size line {l:?}"))
            })?;
            if size == 0 {
                // Trailer section up to the empty line.
                loop {
                    if line(r)?.is_empty() {
                        return Ok(());
                    }
                }
            }
            copy(r, size, &mut f)?;
            let end = line(r)?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("chunk not followed by CRLF: {end:?}"),
                ));
            }
        },
    }
}

/// Chunked encoding of `data` in chunks of the given sizes (cycled; upper
/// case hex sizes), terminated by the last chunk.
pub fn chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < data.len() {
        let n = sizes[k % sizes.len()].min(data.len() - i).max(1);
        out.extend_from_slice(format!("{n:X}\r\n").as_bytes());
        out.extend_from_slice(&data[i..i + n]);
        out.extend_from_slice(b"\r\n");
        i += n;
        k += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------
// Origin server
// ---------------------------------------------------------------------------

/// One request as the origin server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Index of the connection it came on (accept order, from 0).
    pub conn: usize,
    pub peer: SocketAddr,
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: String,
    pub body_len: u64,
    pub body_hash: u64,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        find(&self.headers, name)
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    progress: AtomicU64,
    release: AtomicBool,
    conns: AtomicUsize,
}

/// An HTTP/1.1 origin server with persistent connections. Routes (path
/// before `?`):
///
/// - `/echo` answers with the request body (`?chunked`: chunked response,
///   else Content-Length);
/// - `/sink` answers `"<length> <fnv64 hex>\n"` of the request body;
/// - `/download?len=N&seed=S[&chunked]` answers N bytes of `Prng(S)`;
/// - `/stall?len=N&first=M&seed=S` sends the head (Content-Length N) and M
///   bytes, then waits for [`HttpServer::release`] before the rest;
/// - `/close` answers without Content-Length or chunking and closes;
/// - `/nocontent` answers 204; `/notmodified` 304 with a Content-Length
///   and no body;
/// - `/bye` answers with Content-Length and `Connection: close`, and closes;
/// - `/trailers` answers `hello, world` chunked, with chunk extensions, a
///   zero-padded last chunk and trailer fields;
/// - `/overflow` answers `hello` (Content-Length 5) followed by a second,
///   unrequested response, then closes;
/// - `?pause=MS` on any path: wait that long before reading the body;
/// - anything else answers `"server <port> saw <METHOD> <target>\n"`.
///
/// HEAD gets the head of the GET answer. `Expect: 100-continue` gets an
/// interim 100 before the body is read. Every request is recorded with the
/// index of its connection; body bytes received are counted as they arrive.
pub struct HttpServer {
    pub addr: SocketAddr,
    server: Server,
    state: Arc<State>,
}

impl HttpServer {
    pub fn start(bind: &str) -> HttpServer {
        let state = Arc::new(State::default());
        let st = state.clone();
        let port = Arc::new(AtomicUsize::new(0));
        let port2 = port.clone();
        let server = Server::start(bind, move |s, peer| {
            serve(s, peer, &st, port2.load(Ordering::SeqCst) as u16)
        });
        port.store(server.addr.port() as usize, Ordering::SeqCst);
        HttpServer {
            addr: server.addr,
            server,
            state,
        }
    }

    /// Peer addresses of the accepted connections, in accept order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.server.peers()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Request body bytes received so far, over all connections.
    pub fn progress(&self) -> u64 {
        self.state.progress.load(Ordering::SeqCst)
    }

    /// Lets `/stall` answers finish.
    pub fn release(&self) {
        self.state.release.store(true, Ordering::SeqCst);
    }

    /// Waits until `progress()` reaches `n`; false after `within`.
    pub fn wait_progress(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.progress() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// `http://127.0.0.1:PORT` style base of this server with another host.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }
}

fn query<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if kv == key => Some(""),
        _ => None,
    })
}

fn serve(stream: TcpStream, peer: SocketAddr, st: &State, port: u16) {
    let conn = st.conns.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let head = match read_head(&mut r) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let (line, headers) = parse_head(&head);
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let conn_hdr = find(&headers, "connection").join(",").to_ascii_lowercase();
        let close = conn_hdr.contains("close")
            || (version == "HTTP/1.0" && !conn_hdr.contains("keep-alive"));
        if find(&headers, "expect")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("100-continue"))
            && w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let (path, q) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let framing = match framing_of(&headers, false) {
            Ok(f) => f,
            Err(_) => return,
        };
        if let Some(ms) = query(q, "pause").and_then(|v| v.parse().ok()) {
            // Read nothing of the body for a while (back-pressure tests).
            thread::sleep(Duration::from_millis(ms));
        }
        let keep = path == "/echo";
        let mut body = Vec::new();
        let mut h = Fnv::default();
        let mut len = 0u64;
        if read_body(&mut r, framing, |b| {
            h.update(b);
            len += b.len() as u64;
            st.progress.fetch_add(b.len() as u64, Ordering::SeqCst);
            if keep {
                body.extend_from_slice(b);
            }
        })
        .is_err()
        {
            return;
        }
        st.requests.lock().unwrap().push(Recorded {
            conn,
            peer,
            request_line: line.clone(),
            headers: headers.clone(),
            raw_head: String::from_utf8_lossy(&head).into_owned(),
            body_len: len,
            body_hash: h.0,
        });
        let head_only = method == "HEAD";
        let ok = match path {
            "/echo" => respond(&mut w, 200, &body, query(q, "chunked").is_some(), head_only),
            "/sink" => respond(
                &mut w,
                200,
                format!("{len} {:016x}\n", h.0).as_bytes(),
                false,
                head_only,
            ),
            "/download" => download(
                &mut w,
                query(q, "len").and_then(|v| v.parse().ok()).unwrap_or(0),
                query(q, "seed").and_then(|v| v.parse().ok()).unwrap_or(1),
                query(q, "chunked").is_some(),
                head_only,
            ),
            "/stall" => stall(
                &mut w,
                st,
                query(q, "len").and_then(|v| v.parse().ok()).unwrap_or(0),
                query(q, "first").and_then(|v| v.parse().ok()).unwrap_or(0),
                query(q, "seed").and_then(|v| v.parse().ok()).unwrap_or(1),
            ),
            "/close" => {
                let body = format!("server {port} closes after this body\n");
                let _ = w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{}",
                        if head_only { "" } else { &body }
                    )
                    .as_bytes(),
                );
                let _ = w.shutdown(Shutdown::Write);
                drain_until_eof(&mut r);
                return;
            }
            "/bye" => {
                // A complete answer, then the origin closes its side.
                let body = format!("server {port} says bye\n");
                let _ = w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = w.shutdown(Shutdown::Write);
                drain_until_eof(&mut r);
                return;
            }
            "/trailers" => w
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                      5;name=value\r\nhello\r\n\
                      0007; q=\"x;y\"\r\n, world\r\n\
                      000\r\nX-Sum: 12\r\nX-More: yes\r\n\r\n",
                )
                .is_ok(),
            "/notmodified" => w
                .write_all(
                    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n",
                )
                .is_ok(),
            "/overflow" => {
                // More than the announced response: the extra bytes are not
                // part of any answer.
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle",
                );
                let _ = w.shutdown(Shutdown::Write);
                drain_until_eof(&mut r);
                return;
            }
            "/nocontent" => w
                .write_all(b"HTTP/1.1 204 No Content\r\nX-Server: test\r\n\r\n")
                .is_ok(),
            _ => respond(
                &mut w,
                200,
                format!("server {port} saw {method} {target}\n").as_bytes(),
                false,
                head_only,
            ),
        };
        if !ok {
            return;
        }
        if close {
            let _ = w.shutdown(Shutdown::Write);
            drain_until_eof(&mut r);
            return;
        }
    }
}

fn drain_until_eof<R: Read>(r: &mut R) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn respond(
    w: &mut TcpStream,
    status: u16,
    body: &[u8],
    chunked_resp: bool,
    head_only: bool,
) -> bool {
    let reason = if status == 200 { "OK" } else { "Other" };
    let framing = if chunked_resp {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    )
    .into_bytes();
    if !head_only {
        if chunked_resp {
            out.extend_from_slice(&chunked(body, &[1, 7, 300, 4096, 65536]));
        } else {
            out.extend_from_slice(body);
        }
    }
    w.write_all(&out).is_ok()
}

fn download(w: &mut TcpStream, len: u64, seed: u64, chunked_resp: bool, head_only: bool) -> bool {
    let framing = if chunked_resp {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    if w.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n")
            .as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    if head_only {
        return true;
    }
    let mut prng = Prng::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    // Vary chunk sizes so that chunk boundaries fall anywhere.
    let sizes = [65536usize, 1, 4093, 30000, 17];
    let mut k = 0;
    while left > 0 {
        let n = (sizes[k % sizes.len()] as u64).min(left) as usize;
        k += 1;
        prng.fill(&mut buf[..n]);
        let ok = if chunked_resp {
            w.write_all(format!("{n:x}\r\n").as_bytes()).is_ok()
                && w.write_all(&buf[..n]).is_ok()
                && w.write_all(b"\r\n").is_ok()
        } else {
            w.write_all(&buf[..n]).is_ok()
        };
        if !ok {
            return false;
        }
        left -= n as u64;
    }
    if chunked_resp {
        return w.write_all(b"0\r\n\r\n").is_ok();
    }
    true
}

fn stall(w: &mut TcpStream, st: &State, len: u64, first: u64, seed: u64) -> bool {
    if w
        .write_all(
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n")
                .as_bytes(),
        )
        .is_err()
    {
        return false;
    }
    let mut prng = Prng::new(seed);
    let mut buf = vec![0u8; first as usize];
    prng.fill(&mut buf);
    if w.write_all(&buf).is_err() {
        return false;
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while !st.release.load(Ordering::SeqCst) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut rest = vec![0u8; (len - first) as usize];
    prng.fill(&mut rest);
    w.write_all(&rest).is_ok()
}

// ---------------------------------------------------------------------------
// Raw HTTP client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        find(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection (to the proxy) whose reader keeps what follows a
/// response, for persistent connections and tunnels.
pub struct HttpConn {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl HttpConn {
    pub fn connect(proxy: SocketAddr) -> HttpConn {
        HttpConn::from_stream(client(proxy))
    }

    pub fn from_stream(s: TcpStream) -> HttpConn {
        let w = s.try_clone().expect("clone stream");
        HttpConn {
            r: BufReader::with_capacity(64 * 1024, s),
            w,
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("send to proxy");
    }

    /// Reads one final response (1xx skipped); `head_request` for HEAD.
    pub fn try_response(&mut self, head_request: bool) -> io::Result<Resp> {
        loop {
            let head = read_head(&mut self.r)?.ok_or_else(|| {
                io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                )
            })?;
            let (line, headers) = parse_head(&head);
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("no status in {:?}", String::from_utf8_lossy(&head)),
                    )
                })?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let framing = if head_request || status == 204 || status == 304 {
                Framing::Empty
            } else {
                framing_of(&headers, true)?
            };
            let mut body = Vec::new();
            read_body(&mut self.r, framing, |b| body.extend_from_slice(b))?;
            return Ok(Resp {
                status,
                status_line: line,
                headers,
                raw_head: String::from_utf8_lossy(&head).into_owned(),
                body,
            });
        }
    }

    pub fn response(&mut self) -> Resp {
        self.try_response(false)
            .unwrap_or_else(|e| panic!("reading a response through the proxy: {e}"))
    }

    /// Reads only a head (for CONNECT): the tunnel bytes stay in `r`.
    pub fn head(&mut self) -> (String, Vec<(String, String)>, String) {
        let head = read_head(&mut self.r)
            .unwrap_or_else(|e| panic!("reading a response head: {e}"))
            .unwrap_or_else(|| panic!("connection closed before a response head"));
        let (line, headers) = parse_head(&head);
        (line, headers, String::from_utf8_lossy(&head).into_owned())
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.r
            .read_exact(&mut v)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        v
    }

    /// Everything until EOF (or reset), failing after `within`.
    pub fn until_closed(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + within;
        let mut got = self.r.buffer().to_vec();
        let n = got.len();
        self.r.consume(n);
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "still open after {within:?}, received {:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
            self.r.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.r.get_mut().read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!(
                        "still open after {within:?}, received {:?}",
                        String::from_utf8_lossy(&got)
                    ))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(got),
            }
        }
    }
}

/// Parses a complete response held in memory (status, headers, body after
/// the head).
pub fn parse_response(bytes: &[u8]) -> Option<(u16, Headers, Vec<u8>)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (line, headers) = parse_head(&bytes[..end + 4]);
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, headers, bytes[end + 4..].to_vec()))
}

// ---------------------------------------------------------------------------
// Clients from chosen source addresses
// ---------------------------------------------------------------------------

/// A client socket bound to `src` (port 0) before connecting to `to`.
pub fn client_from(src: &str, to: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let ip: std::net::IpAddr = src.parse().expect("source IP");
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    sock.connect_timeout(&to.into(), IO_TIMEOUT)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

// ---------------------------------------------------------------------------
// SOCKS5 username/password (RFC 1929)
// ---------------------------------------------------------------------------

/// RFC 1929 subnegotiation request.
pub fn rfc1929(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![0x01, user.len() as u8];
    v.extend_from_slice(user.as_bytes());
    v.push(pass.len() as u8);
    v.extend_from_slice(pass.as_bytes());
    v
}

/// Greets offering method 0x02 only, expects it chosen, authenticates;
/// returns the 2-byte status reply (or an error text).
pub fn socks5_login(s: &mut TcpStream, user: &str, pass: &str) -> Result<[u8; 2], String> {
    s.write_all(&[0x05, 0x01, 0x02])
        .map_err(|e| format!("send greeting: {e}"))?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)
        .map_err(|e| format!("read method selection: {e}"))?;
    if m != [0x05, 0x02] {
        return Err(format!("method selection {m:02x?}, expected [05, 02]"));
    }
    s.write_all(&rfc1929(user, pass))
        .map_err(|e| format!("send credentials: {e}"))?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r)
        .map_err(|e| format!("read auth status: {e}"))?;
    Ok(r)
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct CurlOut {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CurlOut {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// `curl -q -sS --max-time 20 ARGS` with every proxy variable removed.
pub fn curl(args: &[&str]) -> CurlOut {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--max-time", "20"]).args(args);
    scrub_env(&mut cmd);
    cmd.env_remove("CURL_HOME");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"));
    CurlOut {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl that must succeed; returns stdout.
pub fn curl_ok(args: &[&str]) -> Vec<u8> {
    let out = curl(args);
    assert_eq!(
        out.code,
        Some(0),
        "curl {args:?} failed: {}\n{}",
        out.stderr,
        out.text()
    );
    out.stdout
}

/// Sends SIGHUP to `pid`.
pub fn sighup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP {pid} failed");
}

// ---------------------------------------------------------------------------
// A raw TCP client inside a namespace
// ---------------------------------------------------------------------------

/// Connects from SRC ("-": any) to DST PORT, sends HEX, then reads until
/// it has WANT bytes (0: until close), the peer closes, or WAIT seconds.
/// Prints `OK <hex|-> CLOSED <0|1> FIRST <secs|-> SECS <secs>` or
/// `CONNERR <text>`.
const PY_RAW: &str = r#"
import socket, sys, time
src, dst, port, data, want, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
try:
    if src != "-":
        s.bind((src, 0))
    s.settimeout(5)
    s.connect((dst, port))
except Exception as e:
    print("CONNERR %r" % (e,)); sys.exit(0)
t = time.monotonic()
first = None
got = b""
closed = 0
try:
    if data != "-":
        s.sendall(bytes.fromhex(data))
    while want == 0 or len(got) < want:
        left = t + wait - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        c = s.recv(65536)
        if not c:
            closed = 1
            break
        if first is None:
            first = time.monotonic() - t
        got += c
except socket.timeout:
    pass
except (ConnectionResetError, BrokenPipeError):
    closed = 1
print("OK %s CLOSED %d FIRST %s SECS %.3f" % (got.hex() or "-", closed, "-" if first is None else "%.3f" % first, time.monotonic() - t))
"#;

#[derive(Debug)]
pub struct NsRaw {
    pub received: Vec<u8>,
    pub closed: bool,
    /// Seconds from sending to the first byte received.
    pub first: Option<f64>,
    pub secs: f64,
}

/// Runs [`PY_RAW`] in `ns`. `src` None: no bind. Panics if it cannot connect.
pub fn ns_raw(
    ns: &Netns,
    src: Option<&str>,
    dst: SocketAddr,
    send: &[u8],
    want: usize,
    wait_secs: f64,
) -> NsRaw {
    let hex: String = if send.is_empty() {
        "-".to_string()
    } else {
        send.iter().map(|b| format!("{b:02x}")).collect()
    };
    let out = ns.exec(
        "python3",
        &[
            "-c",
            PY_RAW,
            src.unwrap_or("-"),
            &dst.ip().to_string(),
            &dst.port().to_string(),
            &hex,
            &want.to_string(),
            &wait_secs.to_string(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("OK "),
        "python raw client in {} from {src:?} to {dst} failed ({}): {}{}",
        ns.name,
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let received = if f[1] == "-" {
        Vec::new()
    } else {
        (0..f[1].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&f[1][i..i + 2], 16).unwrap())
            .collect()
    };
    NsRaw {
        received,
        closed: f[3] == "1",
        first: f[5].parse().ok(),
        secs: f[7].parse().unwrap(),
    }
}
