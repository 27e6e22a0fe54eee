//! HTTP/1.1 proxy messages, without I/O: request heads (parsed with
//! `httparse`), where their bodies end, the rewrite of an absolute-form request
//! to origin form, and the proxy's own responses.
//!
//! Bodies are never buffered: [`Framing`] follows a body as its bytes pass
//! (Content-Length, chunked, or until close), only to tell where it ends.

use std::fmt;

pub use crate::socks::Status;

/// The longest request or response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines in a head.
pub const MAX_HEADERS: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP/1.x, or a head httparse rejects. 400.
    Malformed,
    /// A head over [`MAX_HEAD`] or [`MAX_HEADERS`]. 431.
    TooLarge,
    /// A request target that is neither `host:port` (CONNECT) nor
    /// `http://host/...`. 400.
    BadTarget,
    /// Conflicting or invalid Content-Length / Transfer-Encoding. 400.
    BadFraming,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::TooLarge => 431,
            _ => 400,
        }
    }
}

impl std::error::Error for HttpError {}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpError::Malformed => "malformed HTTP request",
            HttpError::TooLarge => "request head too large",
            HttpError::BadTarget => {
                "this is a proxy (SOCKS5, SOCKS4, SOCKS4a and HTTP), not a web server: \
                 send CONNECT host:port or an absolute http:// URL"
            }
            HttpError::BadFraming => "invalid Content-Length or Transfer-Encoding",
        })
    }
}

/// Where a proxied request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: &'a str, port: u16 },
    /// `GET http://host:port/path`: forwarded as `GET /path`.
    Forward {
        host: &'a str,
        port: u16,
        /// The URL's path and query as written, `/` when both are absent.
        /// A URL with an empty path and a query gives `?query`: not yet
        /// origin form, which [`write_forward_head`] makes `/?query`.
        path: &'a str,
    },
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub target: Target<'a>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl RequestHead<'_> {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Parses a request head. Partial until the blank line; an error once the
/// head cannot become valid (or passes [`MAX_HEAD`]).
pub fn parse_request(buf: &[u8]) -> Result<Status<RequestHead<'_>>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed);
    };
    let target = if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(target, None).ok_or(HttpError::BadTarget)?;
        Target::Connect { host, port }
    } else {
        parse_absolute(target).ok_or(HttpError::BadTarget)?
    };
    let headers = req.headers.iter().map(|h| (h.name, h.value)).collect();
    Ok(Status::Complete(
        RequestHead {
            method,
            target,
            minor,
            headers,
        },
        len,
    ))
}

/// `http://host[:port][/path]` to its parts.
fn parse_absolute(target: &str) -> Option<Target<'_>> {
    let scheme_end = target.find("://")?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    // `http://host?q` has an empty path before its query: the path is then
    // `?q`, and the `/` is added when the head is written.
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return None; // userinfo in a proxy request is refused, not forwarded
    }
    let (host, port) = split_authority(authority, Some(80))?;
    Some(Target::Forward { host, port, path })
}

/// `host:port`, `[v6]:port`, or with `default`, a bare `host` / `[v6]`.
fn split_authority(authority: &str, default: Option<u16>) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None, // an unbracketed IPv6 address
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
        None => default?,
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b));
    host_ok.then_some((host, port))
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// The body of a request with these headers (RFC 9112 §6.3).
pub fn request_body(headers: &[(&str, &[u8])]) -> Result<Body, HttpError> {
    framing(headers).map(|b| b.unwrap_or(Body::None))
}

/// The body of `head`'s request: as [`request_body`], and an HTTP/1.0
/// request with Transfer-Encoding is refused (RFC 9112 §6.1).
pub fn body_of(head: &RequestHead<'_>) -> Result<Body, HttpError> {
    let body = request_body(&head.headers)?;
    if head.minor == 0 && body == Body::Chunked {
        return Err(HttpError::BadFraming);
    }
    Ok(body)
}

/// The body of a response to `method` with `status` and these headers.
pub fn response_body(
    method: &str,
    status: u16,
    headers: &[(&str, &[u8])],
) -> Result<Body, HttpError> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Ok(Body::None);
    }
    framing(headers).map(|b| b.unwrap_or(Body::UntilClose))
}

fn framing(headers: &[(&str, &[u8])]) -> Result<Option<Body>, HttpError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding; anything else we cannot frame.
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .map(trim)
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::BadFraming);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(trim(value))
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::BadFraming)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadFraming);
            }
            length = Some(n);
        }
    }
    Ok(match (chunked, length) {
        // Both: a smuggling attempt or a broken client; refuse.
        (true, Some(_)) => return Err(HttpError::BadFraming),
        (true, None) => Some(Body::Chunked),
        (false, Some(n)) => Some(Body::Length(n)),
        (false, None) => None,
    })
}

/// `b` without ASCII whitespace at either end.
pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Headers that concern one hop only and are not forwarded (RFC 9110 §7.6.1),
/// plus the proxy's own. `Transfer-Encoding` is hop-by-hop too, but the body
/// is forwarded exactly as it came, so its framing header goes with it.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Writes `head` as the origin server should get it: origin-form target,
/// hop-by-hop headers (and those `Connection` lists) removed, `Host` kept or
/// added. `Transfer-Encoding` stays: the body is forwarded as it came.
pub fn write_forward_head(head: &RequestHead<'_>, out: &mut Vec<u8>) {
    let Target::Forward { host, port, path } = head.target else {
        panic!("only forward requests are rewritten");
    };
    // Headers the framing rests on are kept even when `Connection` lists
    // them: dropping one would make the origin see another body than ours.
    let listed: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(trim)
        .filter(|t| {
            !(t.eq_ignore_ascii_case(b"content-length")
                || t.eq_ignore_ascii_case(b"transfer-encoding"))
        })
        .collect();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    if path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &head.headers {
        // RFC 9112 §3.2.2: the Host of an absolute-form request is the URL's.
        let dropped = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.eq_ignore_ascii_case("host")
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()));
        if dropped {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Host: ");
    if host.contains(':') {
        out.extend_from_slice(format!("[{host}]").as_bytes());
    } else {
        out.extend_from_slice(host.as_bytes());
    }
    if port != 80 {
        out.extend_from_slice(format!(":{port}").as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Whether the client asked to close after this request.
pub fn wants_close(head: &RequestHead<'_>) -> bool {
    let tokens = |name| {
        head.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .map(trim)
    };
    let has = |token: &[u8]| {
        tokens("connection").any(|t| t.eq_ignore_ascii_case(token))
            || tokens("proxy-connection").any(|t| t.eq_ignore_ascii_case(token))
    };
    has(b"close") || (head.minor == 0 && !has(b"keep-alive"))
}

/// A parsed response head: status and how its body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: Body,
    /// The server will close after this response.
    pub close: bool,
}

/// Parses a response head to a request with `method`.
pub fn parse_response(buf: &[u8], method: &str) -> Result<Status<ResponseHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let status = resp.code.ok_or(HttpError::Malformed)?;
    let headers: Vec<(&str, &[u8])> = resp.headers.iter().map(|h| (h.name, h.value)).collect();
    let body = response_body(method, status, &headers)?;
    let close = body == Body::UntilClose
        || resp.version == Some(0)
        || headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(|&b| b == b',')
                    .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
        });
    Ok(Status::Complete(
        ResponseHead {
            status,
            body,
            close,
        },
        len,
    ))
}

/// Follows a body as its bytes pass, to tell where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's parser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the hex size; `ext` once past it (extensions, spaces).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    FinalLf,
}

impl Framing {
    pub fn new(body: Body) -> Framing {
        match body {
            Body::None | Body::Length(0) => Framing::Done,
            Body::Length(n) => Framing::Length(n),
            Body::Chunked => Framing::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
            }),
            Body::UntilClose => Framing::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Framing::Done
    }

    /// Takes bytes of the body from `data`: returns how many belong to it
    /// (fewer than `data.len()` only when the body ends inside `data`).
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        match self {
            Framing::Done => Ok(0),
            Framing::UntilClose => Ok(data.len()),
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = Framing::Done;
                }
                Ok(n as usize)
            }
            Framing::Chunked(state) => {
                let mut i = 0;
                while i < data.len() {
                    if let Chunk::Data(left) = state {
                        let n = (*left).min((data.len() - i) as u64);
                        *left -= n;
                        i += n as usize;
                        if *left == 0 {
                            *state = Chunk::DataCr;
                        }
                        continue;
                    }
                    let b = data[i];
                    i += 1;
                    *state = match (*state, b) {
                        (
                            Chunk::Size {
                                size,
                                digits,
                                ext: false,
                            },
                            _,
                        ) if b.is_ascii_hexdigit() => {
                            if digits >= 15 {
                                return Err(HttpError::BadFraming);
                            }
                            let d = (b as char).to_digit(16).expect("hex digit") as u64;
                            Chunk::Size {
                                size: size * 16 + d,
                                digits: digits + 1,
                                ext: false,
                            }
                        }
                        (Chunk::Size { size, digits, .. }, b'\r') if digits > 0 => {
                            Chunk::SizeLf { size }
                        }
                        (Chunk::Size { size, digits, .. }, b';' | b' ' | b'\t') if digits > 0 => {
                            Chunk::Size {
                                size,
                                digits,
                                ext: true,
                            }
                        }
                        (s @ Chunk::Size { ext: true, .. }, _) if b != b'\n' => s,
                        (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
                        (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
                        (Chunk::DataCr, b'\r') => Chunk::DataLf,
                        (Chunk::DataLf, b'\n') => Chunk::Size {
                            size: 0,
                            digits: 0,
                            ext: false,
                        },
                        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
                        (Chunk::TrailerStart, b'\n') | (Chunk::FinalLf, b'\n') => {
                            *self = Framing::Done;
                            return Ok(i);
                        }
                        (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
                        (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                        _ => return Err(HttpError::BadFraming),
                    };
                }
                Ok(i)
            }
        }
    }
}

/// A complete response of the proxy's own, with a short text body.
pub fn error_response(status: u16, detail: &str, extra_headers: &str) -> Vec<u8> {
    let reason = match status {
        200 => "Connection established",
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{status} {reason}: {detail}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a CONNECT that succeeded.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// What `407` carries so clients know to send credentials.
pub const PROXY_AUTHENTICATE: &str = "Proxy-Authenticate: Basic realm=\"dispatch\"\r\n";

#[cfg(test)]
mod tests;
