//! Unit tests of [`super`] (socks.rs).

use super::*;

fn complete<T: std::fmt::Debug>(r: Result<Status<T>, ParseError>) -> (T, usize) {
    match r {
        Ok(Status::Complete(m, n)) => (m, n),
        other => panic!("expected a complete message, got {other:?}"),
    }
}

/// The bytes a complete message took, `None` while partial.
fn consumed<T>(s: Status<T>) -> Option<usize> {
    match s {
        Status::Partial => None,
        Status::Complete(_, n) => Some(n),
    }
}

/// Every strict prefix of a valid message is `Partial`, the whole message
/// is `Complete` with its length, and trailing payload is not consumed.
fn check_every_split(msg: &[u8], parse: impl Fn(&[u8]) -> Result<Option<usize>, ParseError>) {
    for cut in 0..msg.len() {
        assert_eq!(parse(&msg[..cut]), Ok(None), "prefix of {cut} bytes");
    }
    assert_eq!(parse(msg), Ok(Some(msg.len())));
    let mut more = msg.to_vec();
    more.extend_from_slice(b"payload");
    assert_eq!(parse(&more), Ok(Some(msg.len())));
}

#[test]
fn greeting_no_auth() {
    let msg = [5, 2, 0x00, 0x02]; // VER, NMETHODS=2, no-auth, user/pass
    let (g, n) = complete(parse_greeting(&msg));
    assert_eq!(n, 4);
    assert!(g.offers(METHOD_NO_AUTH));
    check_every_split(&msg, |b| parse_greeting(b).map(consumed));
}

#[test]
fn greeting_without_no_auth() {
    let (g, _) = complete(parse_greeting(&[5, 1, 0x02]));
    assert!(!g.offers(METHOD_NO_AUTH));
}

#[test]
fn greeting_errors() {
    assert_eq!(parse_greeting(&[4]), Err(ParseError::BadVersion(4)));
    assert_eq!(parse_greeting(&[5, 0]), Err(ParseError::NoMethods));
}

#[test]
fn request_ipv4() {
    // VER CMD RSV ATYP=1 | 127.0.0.1 | port 8080
    let msg = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
    let (r, n) = complete(parse_request(&msg));
    assert_eq!(n, 10);
    assert_eq!(r.version, Version::Socks5);
    assert_eq!(r.command, Command::Connect);
    assert_eq!(r.dest, Dest::Addr("127.0.0.1:8080".parse().unwrap()));
    check_every_split(&msg, |b| parse_request(b).map(consumed));
}

#[test]
fn request_ipv6() {
    let mut msg = vec![5, 1, 0, 4];
    msg.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    msg.extend_from_slice(&[0, 80]);
    let (r, n) = complete(parse_request(&msg));
    assert_eq!(n, 22);
    assert_eq!(r.dest, Dest::Addr("[::1]:80".parse().unwrap()));
    check_every_split(&msg, |b| parse_request(b).map(consumed));
}

#[test]
fn request_domain() {
    let mut msg = vec![5, 1, 0, 3, 9];
    msg.extend_from_slice(b"localhost");
    msg.extend_from_slice(&[0x01, 0xbb]);
    let (r, _) = complete(parse_request(&msg));
    assert_eq!(r.dest, Dest::Name("localhost", 443));
    check_every_split(&msg, |b| parse_request(b).map(consumed));
}

#[test]
fn request_commands() {
    let cmd = |c| {
        parse_request(&[5, c, 0, 1, 1, 2, 3, 4, 0, 1]).map(|s| match s {
            Status::Complete(r, _) => r.command,
            Status::Partial => panic!("partial"),
        })
    };
    assert_eq!(cmd(1), Ok(Command::Connect));
    assert_eq!(cmd(2), Ok(Command::Bind));
    assert_eq!(cmd(3), Ok(Command::UdpAssociate));
    assert_eq!(cmd(9), Err(ParseError::UnknownCommand(9)));
}

#[test]
fn request_errors_are_early() {
    assert_eq!(parse_request(&[4]), Err(ParseError::BadVersion(4)));
    assert_eq!(parse_request(&[5, 7]), Err(ParseError::UnknownCommand(7)));
    assert_eq!(
        parse_request(&[5, 1, 0, 9]),
        Err(ParseError::UnknownAddressType(9))
    );
    assert_eq!(parse_request(&[5, 1, 0, 3, 0]), Err(ParseError::BadDomain));
    // A control character in the name is refused before the port arrives.
    assert_eq!(
        parse_request(&[5, 1, 0, 3, 2, b'a', b'\n']),
        Err(ParseError::BadDomain)
    );
}

#[test]
fn error_replies() {
    assert_eq!(
        ParseError::UnknownCommand(9).reply(),
        Reply::CommandNotSupported
    );
    assert_eq!(
        ParseError::UnknownAddressType(9).reply(),
        Reply::AddressTypeNotSupported
    );
    assert_eq!(ParseError::BadDomain.reply(), Reply::GeneralFailure);
}

#[test]
fn socks4_connect() {
    // VN CD | port 80 | 10.1.2.3 | USERID "bob" NUL
    let msg = [4, 1, 0, 80, 10, 1, 2, 3, b'b', b'o', b'b', 0];
    let (r, n) = complete(parse_socks4(&msg));
    assert_eq!(n, msg.len());
    assert_eq!(r.version, Version::Socks4);
    assert_eq!(r.dest, Dest::Addr("10.1.2.3:80".parse().unwrap()));
    check_every_split(&msg, |b| parse_socks4(b).map(consumed));
}

#[test]
fn socks4a_domain() {
    // VN CD | port 80 | 0.0.0.1 | empty USERID NUL | "localhost" NUL
    let mut msg = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    msg.extend_from_slice(b"localhost\0");
    let (r, n) = complete(parse_socks4(&msg));
    assert_eq!(n, msg.len());
    assert_eq!(r.dest, Dest::Name("localhost", 80));
    check_every_split(&msg, |b| parse_socks4(b).map(consumed));
}

#[test]
fn socks4_errors() {
    assert_eq!(parse_socks4(&[4, 3]), Err(ParseError::UnknownCommand(3)));
    let mut long = vec![4, 1, 0, 80, 1, 2, 3, 4];
    long.extend(std::iter::repeat_n(b'x', SOCKS4_MAX_FIELD));
    assert_eq!(parse_socks4(&long), Ok(Status::Partial));
    long.push(b'x');
    assert_eq!(parse_socks4(&long), Err(ParseError::FieldTooLong));
    // SOCKS4a with an empty name.
    assert_eq!(
        parse_socks4(&[4, 1, 0, 80, 0, 0, 0, 1, 0, 0]),
        Err(ParseError::BadDomain)
    );
}

#[test]
fn user_pass_every_split_and_round_trip() {
    // VER | ULEN=3 "bob" | PLEN=2 "pw"
    let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
    check_every_split(&msg, |b| parse_user_pass(b).map(consumed));
    let up = UserPass {
        user: b"bob",
        pass: b"pw",
    };
    assert_eq!(parse_user_pass(&msg), Ok(Status::Complete(up, 8)));
    let mut out = [0u8; 3 + 255 + 255];
    let n = up.emit(&mut out);
    assert_eq!(&out[..n], &msg);
    // Empty user and password are well-formed (and then refused by auth).
    assert_eq!(consumed(parse_user_pass(&[1, 0, 0]).unwrap()), Some(3));
    assert_eq!(parse_user_pass(&[5]), Err(ParseError::BadVersion(5)));
    let n = emit_user_pass_status(false, &mut out);
    assert_eq!(&out[..n], &[1, 1]);
}

#[test]
fn udp_headers() {
    // RSV RSV FRAG | ATYP=1 127.0.0.1 | port 53 | data
    let dgram = [0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'h', b'i'];
    let (h, n) = complete(parse_udp_header(&dgram));
    assert_eq!((h.frag, n), (0, 10));
    assert_eq!(h.dest, Dest::Addr("127.0.0.1:53".parse().unwrap()));
    assert_eq!(&dgram[n..], b"hi");
    // A name, fragment 1.
    let mut named = vec![0, 0, 1, 3, 9];
    named.extend_from_slice(b"localhost");
    named.extend_from_slice(&[0x1f, 0x90]);
    let (h, n) = complete(parse_udp_header(&named));
    assert_eq!((h.frag, n), (1, named.len()));
    assert_eq!(h.dest, Dest::Name("localhost", 8080));
    for cut in 0..10 {
        assert_eq!(
            parse_udp_header(&dgram[..cut]),
            Ok(Status::Partial),
            "cut {cut}"
        );
    }
    assert_eq!(
        parse_udp_header(&[0, 0, 0, 9, 1, 2]),
        Err(ParseError::UnknownAddressType(9))
    );
    // What we emit parses back.
    let mut out = [0u8; 22];
    for src in ["10.1.2.3:4000", "[2001:db8::1]:53"] {
        let src: SocketAddr = src.parse().unwrap();
        let n = emit_udp_header(src, &mut out);
        assert_eq!(n, udp_header_len(src));
        let (h, m) = complete(parse_udp_header(&out[..n]));
        assert_eq!((h.frag, h.dest, m), (0, Dest::Addr(src), n));
    }
}

#[test]
fn sniff_first_byte() {
    assert_eq!(sniff(5), Protocol::Socks5);
    assert_eq!(sniff(4), Protocol::Socks4);
    assert_eq!(sniff(b'G'), Protocol::Http);
    assert_eq!(sniff(b'C'), Protocol::Http);
    assert_eq!(sniff(0x16), Protocol::Http); // a TLS ClientHello: answered 400
}

#[test]
fn requests_round_trip_through_emit() {
    let requests = [
        Request {
            version: Version::Socks5,
            command: Command::Connect,
            dest: Dest::Addr("1.2.3.4:5".parse().unwrap()),
        },
        Request {
            version: Version::Socks5,
            command: Command::Bind,
            dest: Dest::Addr("[::1]:80".parse().unwrap()),
        },
        Request {
            version: Version::Socks5,
            command: Command::UdpAssociate,
            dest: Dest::Name("example.org", 53),
        },
        Request {
            version: Version::Socks4,
            command: Command::Connect,
            dest: Dest::Addr("1.2.3.4:5".parse().unwrap()),
        },
        Request {
            version: Version::Socks4,
            command: Command::Connect,
            dest: Dest::Name("example.org", 80),
        },
    ];
    for req in requests {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let n = req.emit(&mut out);
        let parsed = match req.version {
            Version::Socks5 => parse_request(&out[..n]),
            Version::Socks4 => parse_socks4(&out[..n]),
        };
        assert_eq!(parsed, Ok(Status::Complete(req, n)));
    }
}

#[test]
fn socks5_replies() {
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = emit_reply(
        Version::Socks5,
        Reply::Succeeded,
        Some("127.0.0.2:4660".parse().unwrap()),
        &mut out,
    );
    assert_eq!(&out[..n], &[5, 0, 0, 1, 127, 0, 0, 2, 0x12, 0x34]);
    let n = emit_reply(Version::Socks5, Reply::ConnectionRefused, None, &mut out);
    assert_eq!(&out[..n], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    let n = emit_reply(
        Version::Socks5,
        Reply::Succeeded,
        Some("[::1]:1".parse().unwrap()),
        &mut out,
    );
    assert_eq!(n, 22);
    assert_eq!(out[3], ATYP_IPV6);
}

#[test]
fn socks4_replies() {
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = emit_reply(
        Version::Socks4,
        Reply::Succeeded,
        Some("127.0.0.2:80".parse().unwrap()),
        &mut out,
    );
    assert_eq!(&out[..n], &[0, 0x5A, 0, 80, 127, 0, 0, 2]);
    let n = emit_reply(Version::Socks4, Reply::HostUnreachable, None, &mut out);
    assert_eq!(&out[..n], &[0, 0x5B, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn greeting_takes_exactly_its_methods() {
    let msg = [5, 3, 0x00, 0x02, 0x80, b'x'];
    let (g, n) = complete(parse_greeting(&msg));
    assert_eq!((g.methods, n), (&[0x00, 0x02, 0x80][..], 5));
    assert!(g.offers(0x80) && !g.offers(0x01));
}

#[test]
fn socks4_address_is_4a_only_for_0_0_0_x() {
    for ip in [
        [0, 1, 0, 1],
        [1, 0, 0, 1],
        [1, 1, 0, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
    ] {
        let msg = [4, 1, 0, 80, ip[0], ip[1], ip[2], ip[3], 0];
        let (r, n) = complete(parse_socks4(&msg));
        let addr = SocketAddr::new(IpAddr::from(ip), 80);
        assert_eq!((r.dest, n), (Dest::Addr(addr), msg.len()), "{ip:?}");
    }
}

#[test]
fn longest_messages_fill_the_max_lengths_exactly() {
    let name = "n".repeat(255);
    let mut out = [0u8; 1024];
    let reply = emit_reply(
        Version::Socks5,
        Reply::Succeeded,
        Some("[2001:db8::1]:1".parse().unwrap()),
        &mut out,
    );
    assert_eq!(reply, MAX_REPLY_LEN);
    assert_eq!(MAX_REPLY_LEN, 22);
    let socks4a = Request {
        version: Version::Socks4,
        command: Command::Connect,
        dest: Dest::Name(&name, 80),
    };
    assert_eq!(socks4a.emit(&mut out), MAX_REQUEST_LEN);
    assert_eq!(MAX_REQUEST_LEN, 265);
    let socks5 = Request {
        version: Version::Socks5,
        ..socks4a
    };
    assert_eq!(socks5.emit(&mut out), 262);
    let mut dgram = vec![0, 0, 0, ATYP_DOMAIN, 255];
    dgram.extend_from_slice(name.as_bytes());
    dgram.extend_from_slice(&[0, 53]);
    let (_, n) = complete(parse_udp_header(&dgram));
    assert_eq!(n, MAX_UDP_HEADER_LEN);
    assert_eq!(MAX_UDP_HEADER_LEN, 262);
}

#[test]
fn errors_destinations_and_replies_display_as_text() {
    for (err, text) in [
        (ParseError::BadVersion(6), "unsupported SOCKS version 0x06"),
        (
            ParseError::NoMethods,
            "greeting offers no authentication method",
        ),
        (ParseError::UnknownCommand(9), "unknown command 0x09"),
        (
            ParseError::UnknownAddressType(7),
            "unknown address type 0x07",
        ),
        (ParseError::BadDomain, "empty or malformed domain name"),
        (
            ParseError::FieldTooLong,
            "SOCKS4 user id or domain too long",
        ),
    ] {
        assert_eq!(err.to_string(), text);
    }
    assert_eq!(
        Dest::Name("example.org", 443).to_string(),
        "example.org:443"
    );
    assert_eq!(
        Dest::Addr("[::1]:80".parse().unwrap()).to_string(),
        "[::1]:80"
    );
    for (reply, text) in [
        (Reply::Succeeded, "succeeded"),
        (Reply::GeneralFailure, "general failure"),
        (Reply::NotAllowed, "not allowed"),
        (Reply::NetworkUnreachable, "network unreachable"),
        (Reply::HostUnreachable, "host unreachable"),
        (Reply::ConnectionRefused, "connection refused"),
        (Reply::TtlExpired, "timed out"),
        (Reply::CommandNotSupported, "command not supported"),
        (Reply::AddressTypeNotSupported, "address type not supported"),
    ] {
        assert_eq!(reply.to_string(), text);
    }
}

#[test]
fn method_reply_is_version_and_method() {
    let mut out = [0u8; 2];
    assert_eq!(emit_method(METHOD_USER_PASS, &mut out), 2);
    assert_eq!(out, [5, 2]);
    emit_method(METHOD_NONE_ACCEPTABLE, &mut out);
    assert_eq!(out, [5, 0xFF]);
}
