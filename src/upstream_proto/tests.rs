use super::*;

fn url(s: &str) -> ProxyUrl {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn urls_parse_with_and_without_credentials() {
    let u = url("socks5://127.0.0.1:1080");
    assert_eq!(
        (u.scheme, u.host.as_str(), u.port, u.credentials),
        (Scheme::Socks5, "127.0.0.1", 1080, None)
    );
    let u = url("socks5h://alice:s3cr%40t@proxy.example:9050");
    assert_eq!(u.scheme, Scheme::Socks5h);
    assert_eq!(u.host, "proxy.example");
    assert_eq!(u.credentials, Some(("alice".into(), "s3cr@t".into())));
    let u = url("http://bob:p@ss@[::1]:3128");
    assert_eq!(
        (u.scheme, u.host.as_str(), u.port),
        (Scheme::Http, "::1", 3128)
    );
    assert_eq!(u.credentials, Some(("bob".into(), "p@ss".into())));
    assert_eq!(url("SOCKS5://h:1").scheme, Scheme::Socks5);
}

#[test]
fn an_interface_may_follow_the_port() {
    let u = url("socks5h://al:p@w@10.0.0.9:1080@eth0");
    assert_eq!(u.iface.as_deref(), Some("eth0"));
    assert_eq!(u.credentials, Some(("al".into(), "p@w".into())));
    assert_eq!((u.host.as_str(), u.port), ("10.0.0.9", 1080));
    assert_eq!(u.to_string(), "socks5h://al:***@10.0.0.9:1080@eth0");
    let u = url("http://[::1]:3128@wlan0");
    assert_eq!(
        (u.host.as_str(), u.iface.as_deref()),
        ("::1", Some("wlan0"))
    );
    assert_eq!(url("socks5://h:1").iface, None);
    assert!("socks5://h:1@".parse::<ProxyUrl>().is_err());
    assert_eq!(
        redact_typed("socks5://al:pw@h:1@eth0/x"),
        "socks5://al:***@h:1@eth0/x"
    );
}

#[test]
fn bad_urls_say_how_to_write_one() {
    for s in [
        "socks4://h:1",
        "socks5://h",
        "socks5://h:0",
        "socks5://h:70000",
        "socks5://:1080",
        "socks5://user@h:1",
        "socks5://:pass@h:1",
        "socks5://u:%zz@h:1",
        "http://[::1:80",
        "http://h/x:80",
    ] {
        let e = s.parse::<ProxyUrl>().unwrap_err();
        assert!(e.0.contains("socks5://[user:pass@]host:port"), "{s}: {e}");
    }
}

#[test]
fn the_password_is_never_displayed() {
    let u = url("socks5://alice:hunter2@10.0.0.9:1080");
    assert_eq!(u.to_string(), "socks5://alice:***@10.0.0.9:1080");
    assert_eq!(
        format!("{u:?}"),
        "ProxyUrl(socks5://alice:***@10.0.0.9:1080)"
    );
    assert!(!format!("{u} {u:?}").contains("hunter2"));
    assert_eq!(url("http://[::1]:8080").to_string(), "http://[::1]:8080");
    // An unknown scheme is echoed, but not what follows it.
    let e = "ftp://alice:hunter2@h:1".parse::<ProxyUrl>().unwrap_err();
    assert!(!e.0.contains("hunter2"), "{e}");
}

#[test]
fn what_was_typed_is_echoed_without_its_password() {
    assert_eq!(
        redact_typed("socks5://al:pw@h:1/x"),
        "socks5://al:***@h:1/x"
    );
    assert_eq!(redact_typed("http://al:p@w@h:1"), "http://al:***@h:1");
    assert_eq!(redact_typed("http://h:1/x"), "http://h:1/x");
    assert_eq!(redact_typed("eth0/x"), "eth0/x");
}

#[test]
fn no_part_of_a_password_is_echoed_however_the_url_is_malformed() {
    for (typed, shown) in [
        // No port: the host is not taken for an interface.
        ("socks5://alice:s3cretpw@host", "socks5://alice:***@host"),
        // An '@' in the password, and no port.
        ("socks5://alice:s3cret@pw@host", "socks5://alice:***@host"),
        (
            "socks5://alice:s3c/retpw@host:1080",
            "socks5://alice:***@host:1080",
        ),
        ("socks5://s3cretpw@host:1", "socks5://***@host:1"),
        ("socks5://a@s3cret:pw@host:1", "socks5://***@host:1"),
        ("http://al:pw@h:1@eth0", "http://al:***@h:1@eth0"),
    ] {
        assert_eq!(redact_typed(typed), shown, "{typed}");
    }
}

/// Runs a handshake against scripted replies, fed in chunks of `chunk`
/// bytes; returns what was sent and how it ended.
fn run(
    url: &ProxyUrl,
    dest: Dest<'_>,
    replies: &[&[u8]],
    chunk: usize,
) -> (Vec<Vec<u8>>, Result<Option<SocketAddr>, UpstreamError>) {
    let mut hs = Handshake::new(url, dest);
    let mut sent = Vec::new();
    for reply in replies {
        sent.push(hs.to_send().to_vec());
        let n = hs.to_send().len();
        hs.sent(n);
        let mut have = 0;
        loop {
            have = (have + chunk).min(reply.len());
            match hs.on_input(&reply[..have]) {
                Ok(Status::Partial) => assert!(have < reply.len(), "a whole reply is partial"),
                Ok(Status::Complete(step, n)) => {
                    assert_eq!(n, reply.len(), "a reply takes all its bytes");
                    match step {
                        Step::Send => break,
                        Step::Established(bound) => return (sent, Ok(bound)),
                    }
                }
                Err(e) => return (sent, Err(e)),
            }
        }
    }
    panic!("the replies ran out")
}

#[test]
fn socks5h_passes_the_name_on() {
    for chunk in [1, 2, 100] {
        let (sent, end) = run(
            &url("socks5h://127.0.0.1:1080"),
            Dest::Name("example.com", 443),
            &[
                &[5, 0],                                // method: no auth
                &[5, 0, 0, 1, 10, 0, 0, 7, 0x1f, 0x90], // succeeded, bound 10.0.0.7:8080
            ],
            chunk,
        );
        assert_eq!(sent[0], [5, 1, 0]);
        let mut req = vec![5, 1, 0, 3, 11];
        req.extend_from_slice(b"example.com");
        req.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(sent[1], req);
        assert_eq!(end, Ok(Some(addr("10.0.0.7:8080"))));
    }
}

#[test]
fn socks5_with_credentials_authenticates_first() {
    let (sent, end) = run(
        &url("socks5://al:pw@127.0.0.1:1080"),
        Dest::Addr(addr("[2001:db8::1]:80")),
        &[&[5, 2], &[1, 0], &[5, 0, 0, 3, 1, b'x', 0, 80]],
        1,
    );
    assert_eq!(sent[0], [5, 2, 0, 2]);
    assert_eq!(sent[1], [1, 2, b'a', b'l', 2, b'p', b'w']);
    assert_eq!(&sent[2][..4], [5, 1, 0, 4]);
    assert_eq!(sent[2].len(), 4 + 16 + 2);
    assert_eq!(end, Ok(None), "a bound name is not an address");
}

#[test]
fn socks5_offered_credentials_may_go_unused() {
    let (sent, end) = run(
        &url("socks5://al:pw@127.0.0.1:1080"),
        Dest::Addr(addr("192.0.2.1:22")),
        &[&[5, 0], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]],
        3,
    );
    assert_eq!(sent[1], [5, 1, 0, 1, 192, 0, 2, 1, 0, 22]);
    assert_eq!(end, Ok(Some(addr("0.0.0.0:0"))));
}

#[test]
fn socks5_reply_codes_come_back_as_the_same_code() {
    for code in 1..=8u8 {
        let (_, end) = run(
            &url("socks5://h:1"),
            Dest::Addr(addr("192.0.2.1:22")),
            &[&[5, 0], &[5, code, 0, 1, 0, 0, 0, 0, 0, 0]],
            100,
        );
        let e = end.unwrap_err();
        assert_eq!(e.reply() as u8, code);
        // 7 and 8: it cannot take the command or the address type.
        let blame = if code >= 7 {
            Blame::Link
        } else {
            Blame::Target
        };
        assert_eq!(e.blame(), blame, "{code}");
    }
    let (_, end) = run(
        &url("socks5://h:1"),
        Dest::Addr(addr("192.0.2.1:22")),
        &[&[5, 0], &[5, 9, 0, 1, 0, 0, 0, 0, 0, 0]],
        100,
    );
    assert_eq!(end.unwrap_err().blame(), Blame::Link);
}

#[test]
fn socks5_auth_failures_blame_the_credentials() {
    let dest = Dest::Addr(addr("192.0.2.1:22"));
    let cases: [(&str, &[&[u8]]); 3] = [
        ("socks5://al:pw@h:1", &[&[5, 2], &[1, 1]]),
        ("socks5://al:pw@h:1", &[&[5, 0xff]]),
        ("socks5://h:1", &[&[5, 0xff]]),
    ];
    for (u, replies) in cases {
        let (_, end) = run(&url(u), dest, replies, 1);
        let e = end.unwrap_err();
        assert_eq!(e.blame(), Blame::Credentials, "{u}: {e}");
    }
    // Choosing user/password when none were offered is asking for them.
    let (_, end) = run(&url("socks5://h:1"), dest, &[&[5, 2]], 1);
    assert_eq!(end.unwrap_err().blame(), Blame::Credentials);
}

#[test]
fn non_socks_upstreams_fail_the_link_at_the_first_byte() {
    let mut hs = Handshake::new(&url("socks5://h:1"), Dest::Addr(addr("192.0.2.1:22")));
    let e = hs.on_input(b"H").unwrap_err();
    assert_eq!(e.blame(), Blame::Link);
    assert_eq!(
        hs.on_input(&[5, 7]).unwrap_err().blame(),
        Blame::Link,
        "a method not offered"
    );
}

#[test]
fn http_connect_with_basic_credentials() {
    for chunk in [1, 7, 1000] {
        let (sent, end) = run(
            &url("http://al:pw@127.0.0.1:3128"),
            Dest::Name("example.com", 443),
            &[b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n"],
            chunk,
        );
        let head = String::from_utf8(sent[0].clone()).unwrap();
        assert_eq!(
            head,
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
             Proxy-Authorization: Basic YWw6cHc=\r\n\r\n"
        );
        assert_eq!(end, Ok(None));
    }
}

#[test]
fn http_connect_to_an_ipv6_address_brackets_it() {
    let (sent, _) = run(
        &url("http://h:1"),
        Dest::Addr(addr("[::1]:22")),
        &[b"HTTP/1.0 200 OK\r\n\r\n"],
        100,
    );
    assert!(sent[0].starts_with(b"CONNECT [::1]:22 HTTP/1.1\r\n"));
}

#[test]
fn http_statuses_map_to_replies() {
    for (status, reply, blame) in [
        (403, Reply::NotAllowed, Blame::Target),
        (502, Reply::HostUnreachable, Blame::Target),
        (504, Reply::TtlExpired, Blame::Target),
        (500, Reply::GeneralFailure, Blame::Target),
        (407, Reply::GeneralFailure, Blame::Credentials),
    ] {
        let resp = format!("HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n");
        let (_, end) = run(
            &url("http://h:1"),
            Dest::Name("x", 1),
            &[resp.as_bytes()],
            100,
        );
        let e = end.unwrap_err();
        assert_eq!((e.reply(), e.blame()), (reply, blame), "{status}");
    }
    let (_, end) = run(
        &url("http://h:1"),
        Dest::Name("x", 1),
        &[b"SSH-2.0-x\r\n\r\n"],
        100,
    );
    assert_eq!(end.unwrap_err().blame(), Blame::Link);
}

#[test]
fn bytes_after_the_reply_are_left_for_the_relay() {
    let mut hs = Handshake::new(&url("http://h:1"), Dest::Name("x", 1));
    let n = hs.to_send().len();
    hs.sent(n);
    let got = hs
        .on_input(b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-server\r\n")
        .unwrap();
    assert_eq!(got, Status::Complete(Step::Established(None), 19));
    assert!(hs.is_done());
    assert!(hs.on_input(b"more").is_err());
}

#[test]
fn a_socks5_failure_counts_whatever_its_bound_address() {
    let dest = Dest::Addr(addr("192.0.2.1:22"));
    for reply in [
        &[5, 4, 0, 0][..],                  // ATYP 0: the reply ends there
        &[5, 5, 0, 3, 0, 0, 0],             // an empty name
        &[5, 4, 0, 3, 2, 0x01, 0xff, 0, 0], // a name of control bytes
        &[5, 5, 0, 9],                      // an unknown ATYP
    ] {
        for chunk in [1, 100] {
            let (_, end) = run(&url("socks5://h:1"), dest, &[&[5, 0], reply], chunk);
            let e = end.unwrap_err();
            assert_eq!(e.blame(), Blame::Target, "{reply:?}: {e}");
            assert_eq!(e.reply() as u8, reply[1]);
        }
    }
    // A success may name anything; its address type must still be known.
    let reply = &[5, 0, 0, 3, 3, 0, 0xff, b' ', 0, 80];
    let (_, end) = run(&url("socks5://h:1"), dest, &[&[5, 0], reply], 1);
    assert_eq!(end, Ok(None));
    let (_, end) = run(&url("socks5://h:1"), dest, &[&[5, 0], &[5, 0, 0, 0]], 1);
    assert_eq!(end.unwrap_err().blame(), Blame::Link);
}

#[test]
fn a_2xx_to_connect_ignores_framing_headers() {
    for head in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        for chunk in [1, 1000] {
            let (_, end) = run(
                &url("http://h:1"),
                Dest::Name("x", 1),
                &[head.as_bytes()],
                chunk,
            );
            assert_eq!(end, Ok(None), "{head:?}");
        }
    }
}

#[test]
fn interim_responses_to_connect_are_passed_over() {
    let replies: [&[u8]; 3] = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ];
    for chunk in [1, 1000] {
        let (sent, end) = run(&url("http://h:1"), Dest::Name("x", 1), &replies, chunk);
        assert_eq!(end, Ok(None));
        assert!(sent[1..].iter().all(Vec::is_empty), "nothing more is sent");
    }
    let (_, end) = run(
        &url("http://h:1"),
        Dest::Name("x", 1),
        &[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"],
        100,
    );
    assert_eq!(end.unwrap_err().blame(), Blame::Link);
}

#[test]
fn an_upstream_that_cannot_tunnel_is_the_links_fault() {
    for status in [400, 405, 501] {
        let resp = format!("HTTP/1.1 {status} No\r\n\r\n");
        let (_, end) = run(
            &url("http://h:1"),
            Dest::Name("x", 1),
            &[resp.as_bytes()],
            100,
        );
        assert_eq!(end.unwrap_err().blame(), Blame::Link, "{status}");
    }
}

#[test]
fn a_handshake_debugs_without_its_credentials() {
    for u in ["socks5://al:hunter2@h:1", "http://al:hunter2@h:1"] {
        let mut hs = Handshake::new(&url(u), Dest::Name("x", 1));
        if u.starts_with("socks5") {
            hs.sent(4);
            hs.on_input(&[5, 2]).unwrap();
        }
        let shown = format!("{hs:?}");
        // base64("al:hunter2") = YWw6aHVudGVyMg==
        assert!(
            !shown.contains("hunter2") && !shown.contains("aHVudGVy"),
            "{shown}"
        );
        assert!(
            !shown.contains("104, 117"),
            "bytes of the password: {shown}"
        );
    }
}

#[test]
fn percent_escapes_take_two_hex_digits() {
    assert!("socks5://u:%+1@h:1".parse::<ProxyUrl>().is_err());
    assert!("socks5://u:%1@h:1".parse::<ProxyUrl>().is_err());
    assert_eq!(url("socks5://u:%2b@h:1").credentials.unwrap().1, "+");
}

#[test]
fn an_http_links_user_holds_no_colon() {
    assert!("http://a%3Ab:p@h:1".parse::<ProxyUrl>().is_err());
    assert_eq!(url("socks5://a%3Ab:p@h:1").credentials.unwrap().0, "a:b");
}

#[test]
fn an_ipv6_literal_as_a_name_is_bracketed_in_connect() {
    let (sent, _) = run(
        &url("http://h:1"),
        Dest::Name("::1", 443),
        &[b"HTTP/1.1 200 OK\r\n\r\n"],
        100,
    );
    assert!(sent[0].starts_with(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"));
}

/// Runs a UDP ASSOCIATE handshake against whole scripted replies.
fn run_udp(
    url: &ProxyUrl,
    replies: &[&[u8]],
) -> (Vec<Vec<u8>>, Result<Option<SocketAddr>, UpstreamError>) {
    let mut hs = Handshake::udp_associate(url, addr("0.0.0.0:0"));
    let mut sent = Vec::new();
    for reply in replies {
        sent.push(hs.to_send().to_vec());
        let n = hs.to_send().len();
        hs.sent(n);
        match hs.on_input(reply) {
            Ok(Status::Complete(Step::Send, _)) => {}
            Ok(Status::Complete(Step::Established(bound), _)) => return (sent, Ok(bound)),
            Ok(Status::Partial) => panic!("a whole reply is partial"),
            Err(e) => return (sent, Err(e)),
        }
    }
    panic!("the replies ran out")
}

#[test]
fn udp_associate_asks_with_cmd_3_after_the_credentials() {
    let (sent, end) = run_udp(
        &url("socks5h://al:pw@127.0.0.1:1080"),
        &[
            &[5, 2],                                 // method: user/password
            &[1, 0],                                 // credentials passed
            &[5, 0, 0, 1, 127, 0, 0, 3, 0x30, 0x39], // relay at 127.0.0.3:12345
        ],
    );
    assert_eq!(sent[0], [5, 2, 0, 2]);
    assert_eq!(sent[1], [1, 2, b'a', b'l', 2, b'p', b'w']);
    // VER CMD=UDP ASSOCIATE RSV ATYP=IPv4 0.0.0.0 port 0
    assert_eq!(sent[2], [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(end, Ok(Some(addr("127.0.0.3:12345"))));
}

#[test]
fn a_handshake_awaits_the_reply_only_once_the_request_is_out() {
    let mut hs = Handshake::udp_associate(&url("socks5://127.0.0.1:1080"), addr("0.0.0.0:0"));
    assert!(!hs.awaits_reply(), "the greeting is not out");
    hs.sent(3);
    assert!(!hs.awaits_reply(), "the method choice is awaited");
    assert_eq!(hs.on_input(&[5, 0]), Ok(Status::Complete(Step::Send, 2)));
    assert!(!hs.awaits_reply(), "the request is not out");
    hs.sent(4);
    assert!(!hs.awaits_reply(), "the request is half out");
    hs.sent(6);
    assert!(hs.awaits_reply());
}

#[test]
fn udp_associate_refused_as_unsupported_is_no_udp_not_a_link_failure() {
    let (_, end) = run_udp(
        &url("socks5://127.0.0.1:1080"),
        &[&[5, 0], &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]],
    );
    assert_eq!(end.unwrap_err().udp_blame(), UdpBlame::NoUdp);
    let (_, end) = run_udp(
        &url("socks5://127.0.0.1:1080"),
        &[&[5, 0], &[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]],
    );
    assert_eq!(end.unwrap_err().udp_blame(), UdpBlame::Link);
    let (_, end) = run_udp(&url("socks5://a:b@127.0.0.1:1080"), &[&[5, 2], &[1, 1]]);
    assert_eq!(end.unwrap_err().udp_blame(), UdpBlame::Credentials);
}

#[test]
#[should_panic(expected = "UDP needs a SOCKS5 upstream")]
fn udp_associate_is_never_asked_of_an_http_upstream() {
    Handshake::udp_associate(&url("http://127.0.0.1:3128"), addr("0.0.0.0:0"));
}

#[test]
fn an_unspecified_relay_address_means_the_upstreams_own() {
    let upstream = addr("127.0.0.2:1080");
    let relay = |b: &str| udp_relay_addr(Some(addr(b)), upstream);
    assert_eq!(relay("0.0.0.0:4000"), Some(addr("127.0.0.2:4000")));
    assert_eq!(relay("[::]:4000"), Some(addr("127.0.0.2:4000")));
    assert_eq!(relay("127.0.0.9:4000"), Some(addr("127.0.0.9:4000")));
    assert_eq!(relay("127.0.0.9:0"), None, "port 0 is nowhere");
    assert_eq!(udp_relay_addr(None, upstream), None, "a name is no relay");
}
