//! The properties the fuzz targets check, shared with the stable replay of the
//! committed corpus (`tests/fuzz_corpus.rs` includes this file as a module),
//! so `cargo test` checks exactly what `cargo fuzz` checks.
//!
//! Every check panics when a property fails; libFuzzer reports a panic as a
//! crash and saves the input.
//!
//! # Input layout for [`check_socks`]
//!
//! `data[0] % 8` is the number `k` of chunk-length bytes that follow; the
//! rest is the message. The message is fed to the parsers in chunks of those
//! lengths, repeated until it is all delivered, as reads from a socket would
//! deliver it (a length of 0 is a read that brought nothing new). So the
//! fuzzer mutates the chunking and the bytes together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dispatch::cli::{AddrSpec, WeightedAddr};
use dispatch::socks::{self, consts, Dest, ParseError, Protocol, Reply, Request, Status, Version};
use dispatch::upstream_proto::{self, Handshake, ProxyUrl, Step};
use dispatch::{auth, http};

/// Longest SOCKS4a request `Request::emit` writes: `VN CD PORT IP`, an empty
/// USERID and its NUL, a 255-byte name and its NUL. The fuzzer found that
/// `consts::MAX_REQUEST_LEN` was once 262, too short for this
/// (`fuzz/regressions/socks_parse/crash-socks4a-emit-265-bytes`); it now
/// covers it, which `check_round_trip` asserts.
pub const MAX_SOCKS4_EMIT: usize = 8 + 1 + consts::SOCKS4_MAX_FIELD + 1;

/// Splits a fuzz input into the chunk ends (offsets into the message, growing,
/// the last one the message length) and the message.
pub fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (vec![0], &[]);
    };
    let k = usize::from(first % 8).min(rest.len());
    let (lens, msg) = rest.split_at(k);
    let mut cuts = Vec::new();
    if lens.iter().all(|&l| l == 0) {
        // No lengths (or only empty reads): one chunk, the whole message.
        cuts.extend(lens.iter().map(|_| 0));
    } else {
        let mut at = 0;
        for &len in lens.iter().cycle() {
            at = (at + usize::from(len)).min(msg.len());
            cuts.push(at);
            if at == msg.len() {
                break;
            }
        }
    }
    cuts.push(msg.len());
    (cuts, msg)
}

/// Builds a fuzz input: `msg` delivered in chunks of the given lengths.
pub fn make_input(chunks: &[u8], msg: &[u8]) -> Vec<u8> {
    assert!(chunks.len() < 8);
    let mut v = vec![chunks.len() as u8];
    v.extend_from_slice(chunks);
    v.extend_from_slice(msg);
    v
}

/// A SOCKS request parser, for any input lifetime.
type RequestParser = for<'a> fn(&'a [u8]) -> Result<Status<Request<'a>>, ParseError>;

/// The properties every `httparse`-style parser of the project has.
fn check_parser<'a, T, E>(
    name: &str,
    msg: &'a [u8],
    cuts: &[usize],
    parse: fn(&'a [u8]) -> Result<Status<T>, E>,
) where
    T: PartialEq + std::fmt::Debug + 'a,
    E: PartialEq + std::fmt::Debug,
{
    let whole = parse(msg);
    // Consumed never exceeds the input, and a message is never empty.
    if let Ok(Status::Complete(_, n)) = &whole {
        assert!(
            *n > 0 && *n <= msg.len(),
            "{name}: consumed {n} of {} bytes",
            msg.len()
        );
        // The message ends exactly where it says: the same answer from its
        // own bytes alone, and one byte fewer is not yet a message.
        assert_eq!(parse(&msg[..*n]), whole, "{name}: message alone");
        assert_eq!(
            parse(&msg[..n - 1]),
            Ok(Status::Partial),
            "{name}: one byte short"
        );
    }
    // Growing prefixes, as reads deliver them: `Partial` until the first
    // final answer, which is the whole input's answer, and stays so.
    let mut final_at = None;
    for &cut in cuts {
        let r = parse(&msg[..cut]);
        if let Ok(Status::Complete(_, n)) = &r {
            assert!(*n <= cut, "{name}: consumed {n} of a {cut}-byte prefix");
        }
        match (&r, final_at) {
            (Ok(Status::Partial), None) => {}
            (Ok(Status::Partial), Some(at)) => {
                panic!("{name}: partial at {cut} bytes after a final answer at {at}")
            }
            _ => {
                assert_eq!(
                    r,
                    whole,
                    "{name}: {cut}-byte prefix vs the whole {} bytes",
                    msg.len()
                );
                final_at.get_or_insert(cut);
            }
        }
    }
}

/// A parsed request, written back out by the project's encoder, parses to
/// the same request; for SOCKS5 the encoding is the received bytes
/// themselves (RSV aside, which the parser ignores).
fn check_round_trip(req: Request<'_>, received: &[u8]) {
    // Exactly the size `emit` documents: a longer message would panic here.
    let mut out = [0u8; consts::MAX_REQUEST_LEN];
    let n = req.emit(&mut out);
    let (parsed, limit) = match req.version {
        Version::Socks5 => (socks::parse_request(&out[..n]), 5 + 255 + 2),
        Version::Socks4 => (socks::parse_socks4(&out[..n]), MAX_SOCKS4_EMIT),
    };
    assert!(n <= limit, "{req:?} emitted {n} bytes, more than {limit}");
    assert_eq!(
        parsed,
        Ok(Status::Complete(req, n)),
        "emitted {:02x?}",
        &out[..n]
    );
    if req.version == Version::Socks5 {
        let mut expect = received.to_vec();
        expect[2] = 0;
        assert_eq!(
            &out[..n],
            &expect[..],
            "SOCKS5 request re-encoded differently"
        );
    }
}

/// The reply a request (or its error) earns is well formed: the length the
/// version and address say, the code given, the bound address written back.
fn check_reply(version: Version, reply: Reply, bound: Option<SocketAddr>) {
    let mut out = [0u8; consts::MAX_REPLY_LEN];
    let n = socks::emit_reply(version, reply, bound, &mut out);
    let b = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    match version {
        Version::Socks5 => {
            assert_eq!(n, if b.is_ipv6() { 22 } else { 10 });
            assert_eq!(out[..3], [consts::SOCKS5_VERSION, reply as u8, 0]);
            // The address part is the request encoding of the same address.
            let req = Request {
                version,
                command: socks::Command::Connect,
                dest: Dest::Addr(b),
            };
            let mut enc = [0u8; consts::MAX_REQUEST_LEN];
            let m = req.emit(&mut enc);
            assert_eq!(out[3..n], enc[3..m]);
        }
        Version::Socks4 => {
            assert_eq!(n, 8);
            let granted = if reply == Reply::Succeeded {
                consts::SOCKS4_GRANTED
            } else {
                consts::SOCKS4_REJECTED
            };
            assert_eq!(out[..2], [0, granted]);
            assert_eq!(out[2..4], b.port().to_be_bytes());
        }
    }
}

/// One step of the handshake as the connection state machine takes it: the
/// first byte says the protocol, a SOCKS5 greeting is followed by a request,
/// or with authentication on, by an RFC 1929 username/password first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Greeting {
        methods: Vec<u8>,
        consumed: usize,
    },
    Request {
        version: Version,
        command: socks::Command,
        dest: String,
        consumed: usize,
    },
    UserPass {
        user: Vec<u8>,
        pass: Vec<u8>,
        consumed: usize,
    },
    Http,
    Invalid(ParseError),
}

/// Feeds `msg` in the given chunks to a handshake driver that keeps what it
/// received and drops what each message consumed, as `conn.rs` does; returns
/// what it saw. With one chunk, that is parsing it all at once.
fn handshake(msg: &[u8], cuts: &[usize], auth: bool) -> Vec<Event> {
    let mut events = Vec::new();
    let mut start = 0; // bytes consumed by earlier messages
    let mut greeted = false;
    let mut authed = !auth;
    for &cut in cuts {
        loop {
            let buf = &msg[start..cut];
            let Some(&first) = buf.first() else { break };
            let event = if greeted && !authed {
                match socks::parse_user_pass(buf) {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete(up, n)) => {
                        authed = true;
                        Event::UserPass {
                            user: up.user.to_vec(),
                            pass: up.pass.to_vec(),
                            consumed: n,
                        }
                    }
                    Err(e) => Event::Invalid(e),
                }
            } else if greeted {
                match socks::parse_request(buf) {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete(r, n)) => request_event(r, n),
                    Err(e) => Event::Invalid(e),
                }
            } else {
                match socks::sniff(first) {
                    Protocol::Http => Event::Http,
                    Protocol::Socks4 => match socks::parse_socks4(buf) {
                        Ok(Status::Partial) => break,
                        Ok(Status::Complete(r, n)) => request_event(r, n),
                        Err(e) => Event::Invalid(e),
                    },
                    Protocol::Socks5 => match socks::parse_greeting(buf) {
                        Ok(Status::Partial) => break,
                        Ok(Status::Complete(g, n)) => {
                            greeted = true;
                            Event::Greeting {
                                methods: g.methods.to_vec(),
                                consumed: n,
                            }
                        }
                        Err(e) => Event::Invalid(e),
                    },
                }
            };
            match &event {
                Event::Greeting { consumed, .. } | Event::UserPass { consumed, .. } => {
                    start += consumed
                }
                _ => {
                    // A request, HTTP or an error ends the handshake.
                    events.push(event);
                    return events;
                }
            }
            events.push(event);
        }
    }
    events
}

fn request_event(r: Request<'_>, consumed: usize) -> Event {
    Event::Request {
        version: r.version,
        command: r.command,
        dest: r.dest.to_string(),
        consumed,
    }
}

/// The `socks_parse` target: every SOCKS parser, whole and in the chunks the
/// input asks for; see the module docs for the layout.
pub fn check_socks(data: &[u8]) {
    let (cuts, msg) = split_input(data);
    check_parser("greeting", msg, &cuts, socks::parse_greeting);
    check_parser("request", msg, &cuts, socks::parse_request);
    check_parser("socks4", msg, &cuts, socks::parse_socks4);
    check_parser("user/pass", msg, &cuts, socks::parse_user_pass);
    if let Ok(Status::Complete(up, n)) = socks::parse_user_pass(msg) {
        // RFC 1929 has one encoding: the project's encoder writes the bytes received.
        let mut out = [0u8; 3 + 255 + 255];
        let m = up.emit(&mut out);
        assert_eq!(&out[..m], &msg[..n], "user/pass re-encoded differently");
    }

    // The first byte's verdict agrees with the parsers'.
    if let Some(&first) = msg.first() {
        let sniffed = socks::sniff(first);
        let greeting_version_ok =
            !matches!(socks::parse_greeting(msg), Err(ParseError::BadVersion(_)));
        let socks4_version_ok = !matches!(socks::parse_socks4(msg), Err(ParseError::BadVersion(_)));
        assert_eq!(
            sniffed == Protocol::Socks5,
            greeting_version_ok,
            "sniff vs greeting"
        );
        assert_eq!(
            sniffed == Protocol::Socks4,
            socks4_version_ok,
            "sniff vs SOCKS4"
        );
    }

    for (version, parse) in [
        (Version::Socks5, socks::parse_request as RequestParser),
        (Version::Socks4, socks::parse_socks4 as RequestParser),
    ] {
        match parse(msg) {
            Ok(Status::Complete(req, n)) => {
                assert_eq!(req.version, version);
                check_round_trip(req, &msg[..n]);
                if let Dest::Addr(a) = req.dest {
                    check_reply(version, Reply::Succeeded, Some(a));
                }
            }
            Err(e) => check_reply(version, e.reply(), None),
            Ok(Status::Partial) => {}
        }
    }

    // The handshake as a whole, without and with authentication: chunked
    // the same as all at once, and each message in it satisfies the
    // properties above from where it starts.
    for auth in [false, true] {
        let at_once = handshake(msg, &[msg.len()], auth);
        assert_eq!(
            handshake(msg, &cuts, auth),
            at_once,
            "handshake (auth {auth}) in chunks vs at once"
        );
        let mut at = 0;
        for event in &at_once {
            let consumed = match event {
                Event::Greeting { consumed, .. } | Event::UserPass { consumed, .. } => *consumed,
                _ => break,
            };
            at += consumed;
            let rest = &msg[at..];
            let rest_cuts: Vec<usize> = cuts.iter().map(|c| c.saturating_sub(at)).collect();
            check_parser("request after", rest, &rest_cuts, socks::parse_request);
            check_parser("user/pass after", rest, &rest_cuts, socks::parse_user_pass);
            if let Ok(Status::Complete(req, n)) = socks::parse_request(rest) {
                check_round_trip(req, &rest[..n]);
            }
        }
    }
}

/// The `addr_spec` target: the command line's `ADDRESS[/WEIGHT]` parser.
/// Written back as `ADDRESS/WEIGHT`, a parsed spec parses to the same
/// address and weight, now written; without a `/` the weight is 1 (not
/// written) and the address is the whole argument.
pub fn check_addr_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let spec = match text.parse::<WeightedAddr>() {
        Ok(spec) => spec,
        Err(why) => return check_bad_addr_spec(&text, &why),
    };
    if let AddrSpec::Proxy(url) = &spec.addr {
        let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
        // A '/' with an '@' after it is in the credentials.
        let weighted = after_scheme
            .rsplit_once('/')
            .is_some_and(|(_, w)| !w.contains('@'));
        assert_eq!(spec.weighted, weighted, "{text:?}");
        return check_proxy_url(&text, url);
    }
    assert_eq!(spec.weighted, text.contains('/'), "{text:?}");
    let again = format!("{}/{}", spec.addr, spec.weight);
    assert_eq!(
        again.parse::<WeightedAddr>(),
        Ok(WeightedAddr {
            weighted: true,
            ..spec.clone()
        }),
        "{text:?} written as {again:?}"
    );
    if !text.contains('/') {
        assert_eq!(spec.weight.get(), 1);
        assert_eq!(
            spec.addr.to_string().parse::<IpAddr>().ok(),
            text.parse::<IpAddr>().ok()
        );
    }
}

/// A link that did not parse is echoed redacted
/// ([`dispatch::upstream_proto::redact_typed`]) beside why: neither shows
/// any piece of what the parser would take for its password (after the
/// first `:` of what comes before the host's `@`). A character found only
/// there must not show: in the echo at all (save `*`), in the reason if it
/// is not ASCII (the reason's own words are).
fn check_bad_addr_spec(text: &str, why: &str) {
    let Some((start, end)) = password_span(text) else {
        return;
    };
    let outside = format!("{}{}", &text[..start], &text[end..]);
    let secret = |c: &char| !outside.contains(*c);
    let shown = upstream_proto::redact_typed(text);
    for c in text[start..end].chars().filter(secret) {
        assert!(
            c == '*' || !shown.contains(c),
            "{text:?} echoed as {shown:?}"
        );
        assert!(
            c.is_ascii() || c == '…' || !why.contains(c),
            "{text:?}: {why:?}"
        );
    }
}

/// Where the password is in a link written as a URL, by the parser's
/// rules: a `/WEIGHT` (no `@` in it) and an `@iface` (no `:` in it) come
/// off the end, the credentials end at the last `@` left, and the
/// password starts after their first `:`.
fn password_span(text: &str) -> Option<(usize, usize)> {
    let rest = text.find("://")? + 3;
    let mut end = text.len();
    if let Some(slash) = text[rest..].rfind('/').map(|i| rest + i) {
        if !text[slash..].contains('@') {
            end = slash;
        }
    }
    if let Some(at) = text[rest..end].rfind('@').map(|i| rest + i) {
        if !text[at..end].contains(':') {
            end = at;
        }
    }
    let at = text[rest..end].rfind('@').map(|i| rest + i)?;
    let colon = text[rest..at].find(':').map(|i| rest + i + 1)?;
    Some((colon, at))
}

/// A request head in a form that compares (`RequestHead` has no `PartialEq`).
fn http_request(buf: &[u8]) -> Result<Status<String>, http::HttpError> {
    http::parse_request(buf).map(|s| match s {
        Status::Complete(head, n) => Status::Complete(format!("{head:?}"), n),
        Status::Partial => Status::Partial,
    })
}

fn http_response_get(buf: &[u8]) -> Result<Status<http::ResponseHead>, http::HttpError> {
    http::parse_response(buf, "GET")
}

fn http_response_head(buf: &[u8]) -> Result<Status<http::ResponseHead>, http::HttpError> {
    http::parse_response(buf, "HEAD")
}

/// What following a body through `chunks` of `msg` comes to: the bytes that
/// belong to it, whether it ended, or the error.
fn follow_body(
    body: http::Body,
    msg: &[u8],
    cuts: &[usize],
) -> Result<(usize, bool), http::HttpError> {
    let mut framing = http::Framing::new(body);
    let mut taken = 0;
    let mut prev = 0;
    for &cut in cuts {
        let chunk = &msg[prev..cut];
        prev = cut;
        let was_done = framing.is_done();
        let n = framing.advance(chunk)?;
        assert!(n <= chunk.len(), "body took {n} of {} bytes", chunk.len());
        if was_done {
            assert_eq!(n, 0, "a finished body took more bytes");
        } else if n < chunk.len() {
            assert!(
                framing.is_done(),
                "body stopped short of the chunk without ending"
            );
        }
        taken += n;
        if framing.is_done() {
            break;
        }
    }
    Ok((taken, framing.is_done()))
}

/// The `http_parse` target: the HTTP proxy's request and response heads
/// and body framing, with the same chunked-input layout as [`check_socks`].
/// A forward request written back out by the proxy's rewrite is a complete
/// origin-form request with the same method, path and version, and without
/// hop-by-hop headers.
pub fn check_http(data: &[u8]) {
    let (cuts, msg) = split_input(data);
    check_parser("http request", msg, &cuts, http_request);
    check_parser("http response to GET", msg, &cuts, http_response_get);
    check_parser("http response to HEAD", msg, &cuts, http_response_head);

    for body in [
        http::Body::Chunked,
        http::Body::UntilClose,
        http::Body::Length(u64::from(msg.first().copied().unwrap_or(0))),
    ] {
        let at_once = follow_body(body, msg, &[msg.len()]);
        assert_eq!(
            follow_body(body, msg, &cuts),
            at_once,
            "{body:?} body in chunks vs at once"
        );
    }

    if let Ok(Status::Complete(head, n)) = http::parse_request(msg) {
        let _ = http::request_body(&head.headers);
        let _ = http::wants_close(&head);
        // The body after the head: framed the same in chunks as at once.
        if let Ok(body) = http::request_body(&head.headers) {
            let rest = &msg[n..];
            let rest_cuts: Vec<usize> = cuts.iter().map(|c| c.saturating_sub(n)).collect();
            assert_eq!(
                follow_body(body, rest, &rest_cuts),
                follow_body(body, rest, &[rest.len()])
            );
        }
        if let http::Target::Forward { path, .. } = head.target {
            let mut out = Vec::new();
            http::write_forward_head(&head, &mut out);
            let mut storage = [httparse::EMPTY_HEADER; http::MAX_HEADERS + 1];
            let mut again = httparse::Request::new(&mut storage);
            let parsed = again.parse(&out);
            assert_eq!(
                parsed,
                Ok(httparse::Status::Complete(out.len())),
                "rewritten head {out:?}"
            );
            assert_eq!(again.method, Some(head.method));
            // `path` is the URL's path and query as written; a URL with an
            // empty path and a query is sent with its `/` (RFC 9112 §3.2.1).
            let origin_form = if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_string()
            };
            assert_eq!(again.path, Some(origin_form.as_str()));
            assert_eq!(again.version, Some(head.minor));
            assert!(again
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("host")));
            for h in again.headers.iter() {
                assert!(
                    ![
                        "connection",
                        "proxy-connection",
                        "proxy-authorization",
                        "keep-alive"
                    ]
                    .iter()
                    .any(|hop| h.name.eq_ignore_ascii_case(hop)),
                    "hop-by-hop header {} forwarded",
                    h.name
                );
            }
        }
    }
}

/// The `auth_parse` target: the auth file, `user:pass` pairs, HTTP Basic
/// and address ranges. Every credential a file accepts passes both the
/// RFC 1929 check and the Basic check of its own encoding; an address range
/// written back parses to itself and contains its own address.
pub fn check_auth(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(creds) = auth::Credentials::parse_file(&text) {
        let mut n = 0;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (user, pass) = line.split_once(':').expect("accepted lines are user:pass");
            assert!(
                creds.check(user.as_bytes(), pass.as_bytes()),
                "{line:?} accepted, then refused"
            );
            let basic = format!("Basic {}", auth::base64(line.as_bytes()));
            assert!(
                creds.check_basic(basic.as_bytes()),
                "{line:?}: Basic refused"
            );
            n += 1;
        }
        assert_eq!(creds.len(), n);
    }
    let encoded = auth::base64(data);
    assert_eq!(encoded.len(), data.len().div_ceil(3) * 4);
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    for word in text.split_whitespace() {
        if let Ok(cidr) = word.parse::<auth::Cidr>() {
            let again = cidr.to_string();
            assert_eq!(
                again.parse::<auth::Cidr>(),
                Ok(cidr),
                "{word:?} written as {again:?}"
            );
            let addr: IpAddr = word.split('/').next().unwrap().parse().unwrap();
            // (An IPv4-mapped range once matched no one:
            // fuzz/regressions/auth_parse/crash-cidr-v4-mapped.)
            assert!(
                cidr.contains(addr),
                "{word:?} does not contain its own address"
            );
        }
    }
}

/// The `udp_parse` target: the header of a UDP ASSOCIATE datagram. A header
/// never claims more than the datagram; every shorter prefix of a complete
/// header is `Partial` (a datagram cut short), every longer one gives the
/// same header (the rest is data); and a source address written back by
/// `emit_udp_header` parses to itself.
pub fn check_udp(data: &[u8]) {
    let whole = socks::parse_udp_header(data);
    if let Ok(Status::Complete(header, n)) = whole {
        assert!(n <= data.len(), "claimed {n} of {} bytes", data.len());
        for cut in 0..n {
            assert_eq!(
                socks::parse_udp_header(&data[..cut]),
                Ok(Status::Partial),
                "prefix of {cut} bytes"
            );
        }
        assert_eq!(
            socks::parse_udp_header(&data[..n]),
            Ok(Status::Complete(header, n))
        );
        if let Dest::Addr(addr) = header.dest {
            let mut out = [0u8; 22];
            let len = socks::emit_udp_header(addr, &mut out);
            assert_eq!(len, socks::udp_header_len(addr));
            match socks::parse_udp_header(&out[..len]) {
                Ok(Status::Complete(again, m)) => {
                    assert_eq!((again.frag, again.dest, m), (0, Dest::Addr(addr), len));
                }
                other => panic!("emitted header {:?} parsed as {other:?}", &out[..len]),
            }
        }
    }
}

/// A proxy link as written: shown, it never holds its password, and the
/// redacted form names the same proxy.
fn check_proxy_url(text: &str, url: &ProxyUrl) {
    let shown = url.to_string();
    if let Some((user, pass)) = &url.credentials {
        assert!(shown.contains(":***@"), "{shown:?}");
        // Shown the same whatever the password: nothing of it shows.
        let other = ProxyUrl {
            credentials: Some((user.clone(), format!("{pass}x"))),
            ..url.clone()
        };
        assert_eq!(shown, other.to_string(), "{text:?}");
        assert_eq!(format!("{url:?}"), format!("{other:?}"), "{text:?}");
    }
    let again: ProxyUrl = shown.parse().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
    assert_eq!(
        (again.scheme, &again.host, again.port),
        (url.scheme, &url.host, url.port),
        "{text:?} shown as {shown:?}"
    );
}

/// # Input layout for [`check_upstream`]
///
/// `data[0]` picks the proxy: bits 0-1 the scheme (socks5, socks5h, http,
/// http), bit 2 credentials, bit 3 a name as the target, bit 4 a UDP
/// ASSOCIATE instead of a CONNECT (for the SOCKS5 schemes); `data[1]` is the
/// length of each read (0 counts as 1). The rest is what the upstream
/// sends, delivered in reads of that length.
///
/// Properties: nothing panics; a complete reply takes at least one byte and
/// no more than there are, and every shorter prefix of it is partial (a
/// reply is never read past its end, nor cut early); an error shows no
/// credential.
pub fn check_upstream(data: &[u8]) {
    let (Some(&pick), Some(&step)) = (data.first(), data.get(1)) else {
        return;
    };
    let stream = &data[2..];
    let scheme = ["socks5", "socks5h", "http", "http"][usize::from(pick & 3)];
    let creds = if pick & 4 != 0 { "al:fuzz-secret@" } else { "" };
    let url: ProxyUrl = format!("{scheme}://{creds}127.0.0.1:1080").parse().unwrap();
    let dest = if pick & 8 != 0 {
        Dest::Name("example.com", 443)
    } else {
        Dest::Addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80))
    };
    let udp = pick & 16 != 0 && pick & 2 == 0;
    let mut hs = if udp {
        Handshake::udp_associate(&url, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    } else {
        Handshake::new(&url, dest)
    };
    let step = usize::from(step).max(1);
    let (mut start, mut have) = (0, 0);
    loop {
        let sent = hs.to_send().len();
        hs.sent(sent);
        have = (have + step).min(stream.len());
        let before = hs.clone();
        match hs.on_input(&stream[start..have]) {
            Ok(Status::Partial) if have == stream.len() => return,
            Ok(Status::Partial) => {}
            Ok(Status::Complete(got, n)) => {
                assert!(n > 0 && start + n <= have, "took {n} of {}", have - start);
                for cut in 0..n {
                    let mut again = before.clone();
                    assert_eq!(
                        again.on_input(&stream[start..start + cut]),
                        Ok(Status::Partial),
                        "prefix of {cut} of a {n}-byte reply"
                    );
                }
                start += n;
                have = start;
                if let Step::Established(_) = got {
                    assert!(hs.is_done());
                    return;
                }
            }
            Err(e) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("fuzz-secret"), "{shown}");
                let _ = (e.blame(), e.reply(), e.udp_blame());
                return;
            }
        }
        if have == stream.len() && start == have {
            return;
        }
    }
}

/// The pure reply parsers alone: a complete message is never longer than
/// the input, and its prefixes are partial.
pub fn check_upstream_parsers(data: &[u8]) {
    if let Ok(Status::Complete(_, n)) = upstream_proto::parse_socks5_reply(data) {
        assert!(n <= data.len());
        for cut in 0..n {
            assert_eq!(
                upstream_proto::parse_socks5_reply(&data[..cut]),
                Ok(Status::Partial)
            );
        }
    }
    if let Ok(Status::Complete((_, bound), _)) = upstream_proto::parse_socks5_reply(data) {
        // A UDP ASSOCIATE reply: its relay is an address with a port, the
        // upstream's own when the reply leaves it unspecified.
        let upstream = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 1080);
        if let Some(relay) = upstream_proto::udp_relay_addr(bound, upstream) {
            assert!(relay.port() != 0 && !relay.ip().is_unspecified());
        }
    }
    if let Ok(Status::Complete(_, n)) = upstream_proto::parse_connect_response(data) {
        assert!(n <= data.len());
    }
}
