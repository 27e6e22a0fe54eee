//! What a `conn_forward` session is made of before the script plays it:
//! one to three well-formed HTTP/1.1 exchanges generated from the fuzz
//! input, each with the bytes each side sends, what the other side should
//! get, and where each message ends in each stream.

use super::*;

/// A chunked body with fuzz-chosen chunk sizes, extensions and trailer.
fn chunked(inp: &mut Input<'_>, seed: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in 0..inp.byte() % 4 {
        let size = inp.size().max(1);
        let hex = if inp.one_in(2) {
            format!("{size:X}")
        } else {
            format!("{size:x}")
        };
        out.extend_from_slice(hex.as_bytes());
        if inp.one_in(3) {
            out.extend_from_slice(b";ext=1");
        }
        out.extend_from_slice(b"\r\n");
        out.extend(pattern(size, seed + usize::from(c)));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if inp.one_in(3) {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Request headers the generator picks from: name, value, and whether the
/// origin gets it (hop-by-hop headers, `Host` and what `Connection` lists
/// are dropped).
const REQUEST_HEADERS: [&[(&str, &str, bool)]; 9] = [
    &[("Host", "elsewhere.test", false)],
    &[("User-Agent", "fuzz/1.0", true)],
    &[("accept", "*/*", true)],
    &[("Proxy-Connection", "keep-alive", false)],
    &[("Keep-Alive", "timeout=5", false)],
    &[("TE", "trailers", false)],
    &[("Proxy-Authorization", "Basic Zm9vOmJhcg==", false)],
    &[
        ("Connection", "keep-alive, X-Drop", false),
        ("X-Drop", "1", false),
    ],
    &[("X-Seq", "42", true)],
];

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"];

/// URL paths as the client writes them, and as the origin should get them.
const PATHS: [(&str, &str); 6] = [
    ("", "/"),
    ("/", "/"),
    ("/index.html", "/index.html"),
    ("/a/b?c=d&e", "/a/b?c=d&e"),
    ("?q=1", "/?q=1"),
    ("/%7Euser/", "/%7Euser/"),
];

/// One exchange: what each side sends, and where it ends in each stream.
pub(super) struct Exchange {
    pub(super) method: &'static str,
    pub(super) body: Body,
    /// The request says `Connection: close`.
    pub(super) close: bool,
    /// The exchange ends the connection (its request or response says so).
    pub(super) closes: bool,
    /// The response's body is close-delimited.
    pub(super) until_close: bool,
    /// The origin answers once the head arrived (not the whole request).
    pub(super) early: bool,
    /// The origin closes after the response (when it says it will).
    pub(super) closes_after: bool,
    /// Ends in the client's stream of requests.
    pub(super) request_end: usize,
    /// Starts and ends in the stream the origin should get.
    pub(super) head_start: usize,
    pub(super) head_end: usize,
    pub(super) forwarded_end: usize,
    /// Ends in the origin's stream of responses: the interim ones, all.
    pub(super) interim_end: usize,
    pub(super) response_end: usize,
}

/// What the session is made of, before the script plays it.
pub(super) struct Plan {
    pub(super) target: Target,
    pub(super) exchanges: Vec<Exchange>,
    /// The exchanges the proxy serves: up to the first that closes.
    pub(super) served: usize,
    /// What the client sends, in order (pipelined as the script says).
    pub(super) requests: Vec<u8>,
    /// What the origin should get.
    pub(super) forwarded: Vec<u8>,
    /// What the origin sends, and the client should get (then, for a
    /// fault, bytes past the last response).
    pub(super) responses: Vec<u8>,
}

pub(super) fn plan(inp: &mut Input<'_>) -> Plan {
    let (host, ip): (&str, Option<IpAddr>) = inp.pick(&[
        ("origin.test", None),
        ("127.0.0.1", Some(IpAddr::from([127, 0, 0, 1]))),
        ("[::1]", Some(IpAddr::V6(Ipv6Addr::LOCALHOST))),
    ]);
    let port: Option<u16> = inp.pick(&[None, Some(80), Some(8080)]);
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let port = port.unwrap_or(80);
    let host_header = if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let target = match ip {
        Some(ip) => Target::Addr(SocketAddr::new(ip, port)),
        None => Target::Name(host.into(), port),
    };
    let mut p = Plan {
        target,
        exchanges: Vec::new(),
        served: 0,
        requests: Vec::new(),
        forwarded: Vec::new(),
        responses: Vec::new(),
    };
    let n = 1 + inp.byte() % 3;
    for i in 0..usize::from(n) {
        let x = exchange(inp, &mut p, i, &authority, &host_header);
        let (close, closes) = (x.close, x.closes);
        p.exchanges.push(x);
        if closes && p.served == 0 {
            p.served = i + 1;
        }
        if close {
            break; // a client that said close sends no more
        }
    }
    if p.served == 0 {
        p.served = p.exchanges.len();
    }
    // Past the last response the proxy serves, a response nobody asked
    // for: only an origin that sends ahead (a fault) sends it.
    p.responses
        .extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsmug");
    p
}

/// Generates exchange `i` and appends it to the plan's streams.
fn exchange(
    inp: &mut Input<'_>,
    p: &mut Plan,
    i: usize,
    authority: &str,
    host_header: &str,
) -> Exchange {
    // The request.
    let method = inp.pick(&METHODS);
    let (path, origin_path) = inp.pick(&PATHS);
    let (body, body_bytes) = match inp.byte() % 3 {
        0 => (Body::None, Vec::new()),
        1 => {
            let n = inp.size();
            (Body::Length(n as u64), pattern(n, 2 * i))
        }
        _ => (Body::Chunked, chunked(inp, 2 * i)),
    };
    let mut headers: Vec<(&str, String, bool)> = Vec::new();
    for _ in 0..inp.byte() % 5 {
        for &(name, value, kept) in inp.pick(&REQUEST_HEADERS) {
            headers.push((name, value.to_string(), kept));
        }
    }
    let framing = match body {
        Body::Length(n) => Some((
            inp.pick(&["Content-Length", "content-length"]),
            n.to_string(),
        )),
        Body::Chunked => Some((
            inp.pick(&["Transfer-Encoding", "transfer-encoding"]),
            "chunked".to_string(),
        )),
        _ => None,
    };
    if let Some((name, value)) = framing {
        let at = usize::from(inp.byte()) % (headers.len() + 1);
        headers.insert(at, (name, value, true));
    }
    let close = inp.one_in(4);
    if close {
        headers.push(("Connection", "close".to_string(), false));
    }
    let early = inp.one_in(2);

    let mut request = format!("{method} http://{authority}{path} HTTP/1.1\r\n");
    let mut forwarded = format!("{method} {origin_path} HTTP/1.1\r\n");
    for (name, value, kept) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
        if *kept {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    forwarded.push_str(&format!("Host: {host_header}\r\n\r\n"));
    p.requests.extend_from_slice(request.as_bytes());
    p.requests.extend_from_slice(&body_bytes);
    let head_start = p.forwarded.len();
    p.forwarded.extend_from_slice(forwarded.as_bytes());
    let head_end = p.forwarded.len();
    p.forwarded.extend_from_slice(&body_bytes);

    // The response: interim ones, then the final one.
    for _ in 0..inp.byte() % 3 {
        let interims: [&[u8]; 3] = [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 102 Processing\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
        ];
        let interim = inp.pick(&interims);
        p.responses.extend_from_slice(interim);
    }
    let interim_end = p.responses.len();
    let status: u16 = inp.pick(&[200, 201, 204, 206, 304, 404, 500]);
    let http10 = inp.one_in(8);
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let mut kind = inp.byte() % 3;
    if http10 && kind == 1 {
        kind = 0; // chunked is HTTP/1.1's
    }
    let size = inp.size();
    let says_close = inp.one_in(4);
    let mut head = format!(
        "HTTP/1.{} {status} Status\r\nServer: origin\r\n",
        if http10 { 0 } else { 1 }
    );
    let payload = match kind {
        0 => {
            if status != 204 {
                head.push_str(&format!("Content-Length: {size}\r\n"));
            }
            pattern(size, 2 * i + 1)
        }
        1 => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            chunked(inp, 2 * i + 1)
        }
        _ => pattern(size, 2 * i + 1),
    };
    if says_close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    p.responses.extend_from_slice(head.as_bytes());
    if !no_body {
        p.responses.extend_from_slice(&payload);
    }
    let until_close = !no_body && kind == 2;
    let closes_after = until_close || inp.one_in(2);
    Exchange {
        method,
        body,
        close,
        closes: close || until_close || http10 || says_close,
        until_close,
        early,
        closes_after,
        request_end: p.requests.len(),
        head_start,
        head_end,
        forwarded_end: p.forwarded.len(),
        interim_end,
        response_end: p.responses.len(),
    }
}
