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

use dispatch::cli::WeightedAddr;
use dispatch::socks::{self, consts, Dest, ParseError, Protocol, Reply, Request, Status, Version};

/// Longest SOCKS4a request `Request::emit` writes: `VN CD PORT IP`, an empty
/// USERID and its NUL, a 255-byte name and its NUL. This is more than
/// `consts::MAX_REQUEST_LEN` (262), which `emit`'s docs say is enough: see
/// `fuzz/regressions/socks_parse/crash-socks4a-emit-265-bytes` (reported, not fixed
/// here: `src/` belongs to the core work).
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
fn check_parser<'a, T: PartialEq + std::fmt::Debug + 'a>(
    name: &str,
    msg: &'a [u8],
    cuts: &[usize],
    parse: fn(&'a [u8]) -> Result<Status<T>, ParseError>,
) {
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
    let mut out = [0u8; MAX_SOCKS4_EMIT + 16];
    let n = req.emit(&mut out);
    let (parsed, limit) = match req.version {
        Version::Socks5 => (socks::parse_request(&out[..n]), consts::MAX_REQUEST_LEN),
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
/// first byte says the protocol, a SOCKS5 greeting is followed by a request.
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
    Http,
    Invalid(ParseError),
}

/// Feeds `msg` in the given chunks to a handshake driver that keeps what it
/// received and drops what each message consumed, as `conn.rs` does; returns
/// what it saw. With one chunk, that is parsing it all at once.
fn handshake(msg: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut start = 0; // bytes consumed by earlier messages
    let mut greeted = false;
    for &cut in cuts {
        loop {
            let buf = &msg[start..cut];
            let Some(&first) = buf.first() else { break };
            let event = if greeted {
                match socks::parse_request(buf) {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete(r, n)) => request_event(r, n),
                    Err(e) => Event::Invalid(e),
                }
            } else {
                match socks::sniff(first) {
                    Ok(Protocol::Http) => Event::Http,
                    Ok(Protocol::Socks4) => match socks::parse_socks4(buf) {
                        Ok(Status::Partial) => break,
                        Ok(Status::Complete(r, n)) => request_event(r, n),
                        Err(e) => Event::Invalid(e),
                    },
                    Ok(Protocol::Socks5) => match socks::parse_greeting(buf) {
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
                    Err(e) => Event::Invalid(e),
                }
            };
            match &event {
                Event::Greeting { consumed, .. } => start += consumed,
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

    // The first byte's verdict agrees with the parsers'.
    if let Some(&first) = msg.first() {
        let sniffed = socks::sniff(first);
        let greeting_version_ok =
            !matches!(socks::parse_greeting(msg), Err(ParseError::BadVersion(_)));
        let socks4_version_ok = !matches!(socks::parse_socks4(msg), Err(ParseError::BadVersion(_)));
        assert_eq!(
            sniffed == Ok(Protocol::Socks5),
            greeting_version_ok,
            "sniff vs greeting"
        );
        assert_eq!(
            sniffed == Ok(Protocol::Socks4),
            socks4_version_ok,
            "sniff vs SOCKS4"
        );
        if let Err(e) = sniffed {
            assert_eq!(e, ParseError::BadVersion(first));
        }
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

    // The handshake as a whole: chunked the same as all at once, and each
    // message in it satisfies the properties above from where it starts.
    let at_once = handshake(msg, &[msg.len()]);
    assert_eq!(
        handshake(msg, &cuts),
        at_once,
        "handshake in chunks vs at once"
    );
    if let Some(Event::Greeting { consumed, .. }) = at_once.first() {
        let rest = &msg[*consumed..];
        let rest_cuts: Vec<usize> = cuts.iter().map(|c| c.saturating_sub(*consumed)).collect();
        check_parser(
            "request after greeting",
            rest,
            &rest_cuts,
            socks::parse_request,
        );
        if let Ok(Status::Complete(req, n)) = socks::parse_request(rest) {
            check_round_trip(req, &rest[..n]);
        }
    }
}

/// The `addr_spec` target: the command line's `ADDRESS[/WEIGHT]` parser.
/// Written back as `ADDRESS/WEIGHT`, a parsed spec parses to itself; without
/// a `/` the weight is 1 and the address is the whole argument.
pub fn check_addr_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = text.parse::<WeightedAddr>() else {
        return;
    };
    let again = format!("{}/{}", spec.addr, spec.weight);
    assert_eq!(
        again.parse::<WeightedAddr>(),
        Ok(spec.clone()),
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
