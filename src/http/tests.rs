//! Unit tests of [`super`] (http.rs).

use super::*;

fn head(text: &str) -> RequestHead<'_> {
    match parse_request(text.as_bytes()) {
        Ok(Status::Complete(h, n)) => {
            assert_eq!(n, text.len());
            h
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_targets() {
    let h = head("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Connect {
            host: "example.org",
            port: 443
        }
    );
    let h = head("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Connect {
            host: "::1",
            port: 8443
        }
    );
    let h = head("CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Connect {
            host: "10.0.0.1",
            port: 22
        }
    );
    for bad in ["example.org", "::1:443", "host:0", "host:99999", ":80"] {
        let text = format!("CONNECT {bad} HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse_request(text.as_bytes()).unwrap_err(),
            HttpError::BadTarget,
            "{bad}"
        );
    }
}

#[test]
fn absolute_form_targets() {
    let h = head("GET http://example.org/a/b?c=d HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Forward {
            host: "example.org",
            port: 80,
            path: "/a/b?c=d"
        }
    );
    let h = head("POST HTTP://[::1]:8080 HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Forward {
            host: "::1",
            port: 8080,
            path: "/"
        }
    );
    for bad in [
        "/index.html",
        "https://example.org/",
        "http://user:pw@host/",
        "ftp://host/",
    ] {
        let text = format!("GET {bad} HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse_request(text.as_bytes()).unwrap_err(),
            HttpError::BadTarget,
            "{bad}"
        );
    }
}

#[test]
fn partial_then_limits() {
    assert!(matches!(
        parse_request(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n"),
        Ok(Status::Partial)
    ));
    let mut big = b"GET http://h/ HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
    assert_eq!(parse_request(&big).unwrap_err(), HttpError::TooLarge);
    assert_eq!(HttpError::TooLarge.status(), 431);
    assert_eq!(
        parse_request(b"\x01\x02 nonsense\r\n\r\n").unwrap_err(),
        HttpError::Malformed
    );
}

#[test]
fn forward_head_is_rewritten_without_hop_by_hop_headers() {
    let h = head(
        "GET http://example.org:8080/x HTTP/1.1\r\nHost: example.org:8080\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic abc\r\n\
         Connection: keep-alive, X-Trace\r\nX-Trace: 1\r\nAccept: */*\r\n\r\n",
    );
    let mut out = Vec::new();
    write_forward_head(&h, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /x HTTP/1.1\r\nAccept: */*\r\nHost: example.org:8080\r\n\r\n"
    );
}

#[test]
fn forward_head_keeps_framing_and_replaces_host() {
    let h = head(
        "POST http://a/ HTTP/1.1\r\nHost: internal\r\nHost: other\r\n\
         Connection: content-length, transfer-encoding\r\nContent-Length: 3\r\n\r\n",
    );
    let mut out = Vec::new();
    write_forward_head(&h, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nHost: a\r\n\r\n"
    );
    let old = head("POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(body_of(&old), Err(HttpError::BadFraming));
}

#[test]
fn empty_path_with_a_query_keeps_the_query() {
    let h = head("GET http://h?q=1 HTTP/1.1\r\n\r\n");
    let mut out = Vec::new();
    write_forward_head(&h, &mut out);
    assert!(
        out.starts_with(b"GET /?q=1 HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn forward_head_gets_a_host_when_missing() {
    let mut out = Vec::new();
    write_forward_head(&head("GET http://[::1]:81/ HTTP/1.0\r\n\r\n"), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.0\r\nHost: [::1]:81\r\n\r\n"
    );
}

#[test]
fn request_framing() {
    let body = |text: &str| request_body(&head(text).headers);
    assert_eq!(
        body("POST http://h/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
        Ok(Body::Length(12))
    );
    assert_eq!(
        body("POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        Ok(Body::Chunked)
    );
    assert_eq!(body("GET http://h/ HTTP/1.1\r\n\r\n"), Ok(Body::None));
    assert_eq!(
        body("POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
        Err(HttpError::BadFraming)
    );
    assert_eq!(
        body("POST http://h/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        Err(HttpError::BadFraming)
    );
    assert_eq!(
        body("POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        Err(HttpError::BadFraming)
    );
}

#[test]
fn response_framing() {
    let parse = |text: &str, method| match parse_response(text.as_bytes(), method) {
        Ok(Status::Complete(h, n)) => {
            assert_eq!(n, text.len());
            h
        }
        other => panic!("{other:?}"),
    };
    let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET");
    assert_eq!((r.status, r.body, r.close), (200, Body::Length(5), false));
    assert_eq!(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD").body,
        Body::None
    );
    assert_eq!(
        parse("HTTP/1.1 304 Not Modified\r\n\r\n", "GET").body,
        Body::None
    );
    let r = parse("HTTP/1.1 200 OK\r\n\r\n", "GET");
    assert_eq!((r.body, r.close), (Body::UntilClose, true));
    assert!(
        parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            "GET"
        )
        .close
    );
    assert!(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET").close);
    assert_eq!(
        parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET"
        )
        .body,
        Body::Chunked
    );
}

#[test]
fn close_requested() {
    assert!(wants_close(&head(
        "GET http://h/ HTTP/1.1\r\nConnection: close\r\n\r\n"
    )));
    assert!(wants_close(&head("GET http://h/ HTTP/1.0\r\n\r\n")));
    assert!(!wants_close(&head(
        "GET http://h/ HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n"
    )));
    assert!(!wants_close(&head("GET http://h/ HTTP/1.1\r\n\r\n")));
}

/// Feeds `body` in every possible two-piece split; the end is found at
/// `end` every time.
fn check_framing(body: Body, data: &[u8], end: usize) {
    for cut in 0..=data.len() {
        let mut f = Framing::new(body);
        let a = f.advance(&data[..cut]).unwrap();
        let b = f.advance(&data[a..]).unwrap();
        assert_eq!(a + b, end, "split at {cut}");
        assert!(f.is_done(), "split at {cut}");
    }
}

#[test]
fn content_length_framing() {
    check_framing(Body::Length(5), b"hello", 5);
    check_framing(Body::Length(5), b"helloGET next", 5);
    assert!(Framing::new(Body::Length(0)).is_done());
}

#[test]
fn chunked_framing() {
    let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    check_framing(Body::Chunked, body, body.len());
    let mut more = body.to_vec();
    more.extend_from_slice(b"GET http://next/ HTTP/1.1\r\n");
    check_framing(Body::Chunked, &more, body.len());
    let trailers = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
    check_framing(Body::Chunked, trailers, trailers.len());
}

#[test]
fn bad_chunks_are_refused() {
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX",
        b"\r\n",
        b"ffffffffffffffff\r\n",
    ] {
        let mut f = Framing::new(Body::Chunked);
        assert_eq!(
            f.advance(bad),
            Err(HttpError::BadFraming),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn error_responses_are_complete() {
    let r = String::from_utf8(error_response(
        407,
        "credentials needed",
        PROXY_AUTHENTICATE,
    ))
    .unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
    assert!(head.contains("Proxy-Authenticate: Basic realm=\"dispatch\""));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
}

#[test]
fn errors_say_what_went_wrong() {
    assert_eq!(HttpError::Malformed.to_string(), "malformed HTTP request");
    assert_eq!(HttpError::TooLarge.to_string(), "request head too large");
    assert!(HttpError::BadTarget
        .to_string()
        .contains("not a web server"));
    assert_eq!(
        HttpError::BadFraming.to_string(),
        "invalid Content-Length or Transfer-Encoding"
    );
    assert_eq!(HttpError::BadFraming.status(), 400);
}

#[test]
fn header_lookup_ignores_case() {
    let h = head("GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic x\r\nX-A: 1\r\n\r\n");
    assert_eq!(h.header("proxy-authorization"), Some(&b"Basic x"[..]));
    assert_eq!(h.header("X-A"), Some(&b"1"[..]));
    assert_eq!(h.header("x-b"), None);
}

/// A complete request head of exactly `len` bytes.
fn request_of_len(len: usize) -> Vec<u8> {
    let start = b"GET http://h/ HTTP/1.1\r\nX: ";
    let mut text = start.to_vec();
    text.extend(std::iter::repeat_n(b'a', len - start.len() - 4));
    text.extend_from_slice(b"\r\n\r\n");
    assert_eq!(text.len(), len);
    text
}

/// A complete response head of exactly `len` bytes.
fn response_of_len(len: usize) -> Vec<u8> {
    let start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
    let mut text = start.to_vec();
    text.extend(std::iter::repeat_n(b'a', len - start.len() - 4));
    text.extend_from_slice(b"\r\n\r\n");
    assert_eq!(text.len(), len);
    text
}

#[test]
fn request_head_of_16_kib_is_the_largest_accepted() {
    let max = request_of_len(16 * 1024);
    assert!(matches!(parse_request(&max), Ok(Status::Complete(_, n)) if n == max.len()));
    // Complete in one read, one byte over: too large all the same.
    let over = request_of_len(16 * 1024 + 1);
    assert_eq!(parse_request(&over).unwrap_err(), HttpError::TooLarge);
    // Still partial: refused once it passes MAX_HEAD, not before.
    let partial = request_of_len(16 * 1024 + 10);
    assert!(matches!(
        parse_request(&partial[..MAX_HEAD]),
        Ok(Status::Partial)
    ));
    assert_eq!(
        parse_request(&partial[..MAX_HEAD + 1]).unwrap_err(),
        HttpError::TooLarge
    );
}

#[test]
fn response_head_limits_match_the_request_ones() {
    let max = response_of_len(16 * 1024);
    assert!(matches!(
        parse_response(&max, "GET"),
        Ok(Status::Complete(_, n)) if n == max.len()
    ));
    let over = response_of_len(16 * 1024 + 1);
    assert_eq!(
        parse_response(&over, "GET").unwrap_err(),
        HttpError::TooLarge
    );
    let partial = response_of_len(16 * 1024 + 10);
    assert_eq!(parse_response(&partial[..10], "GET"), Ok(Status::Partial));
    assert_eq!(
        parse_response(&partial[..MAX_HEAD], "GET"),
        Ok(Status::Partial)
    );
    assert_eq!(
        parse_response(&partial[..MAX_HEAD + 1], "GET").unwrap_err(),
        HttpError::TooLarge
    );
}

#[test]
fn http_1_0_request_may_have_a_length_but_not_chunks() {
    let old = head("POST http://a/ HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(body_of(&old), Ok(Body::Length(3)));
    let new = head("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(body_of(&new), Ok(Body::Chunked));
}

#[test]
fn responses_without_a_body_by_status() {
    let length = [("Content-Length", &b"5"[..])];
    for status in [100, 101, 199, 204, 304] {
        assert_eq!(
            response_body("GET", status, &length),
            Ok(Body::None),
            "{status}"
        );
    }
    for status in [200, 205, 404] {
        assert_eq!(
            response_body("GET", status, &length),
            Ok(Body::Length(5)),
            "{status}"
        );
    }
}

#[test]
fn content_length_is_digits_only_and_repeats_must_agree() {
    let body = |headers: &[(&str, &[u8])]| request_body(headers);
    for bad in [&b"+5"[..], b"", b" ", b"5 5", b"0x5"] {
        assert_eq!(
            body(&[("Content-Length", bad)]),
            Err(HttpError::BadFraming),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        body(&[("Content-Length", b"5"), ("content-length", b" 5 ")]),
        Ok(Body::Length(5))
    );
    assert_eq!(
        body(&[("Content-Length", b"5"), ("Content-Length", b"6")]),
        Err(HttpError::BadFraming)
    );
}

#[test]
fn response_close_needs_the_close_token_in_connection() {
    let close = |text: &str| match parse_response(text.as_bytes(), "GET") {
        Ok(Status::Complete(h, _)) => h.close,
        other => panic!("{other:?}"),
    };
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
    assert!(!close(&format!("{ok}Connection: keep-alive\r\n\r\n")));
    assert!(!close(&format!("{ok}X-Note: close\r\n\r\n")));
    assert!(close(&format!("{ok}Connection: upgrade, Close\r\n\r\n")));
}

#[test]
fn framing_is_not_done_before_the_body_ends() {
    let mut f = Framing::new(Body::Length(5));
    assert!(!f.is_done());
    assert_eq!(f.advance(b"hel"), Ok(3));
    assert!(!f.is_done());
    assert!(!Framing::new(Body::Chunked).is_done());
    assert!(!Framing::new(Body::UntilClose).is_done());
    let mut c = Framing::new(Body::Chunked);
    assert_eq!(c.advance(b"0\r\n"), Ok(3));
    assert!(!c.is_done(), "the final empty line is still to come");
}

#[test]
fn chunk_data_cut_short_takes_only_the_bytes_given() {
    let mut f = Framing::new(Body::Chunked);
    assert_eq!(f.advance(b"5\r\nhe"), Ok(5));
    assert_eq!(f, Framing::Chunked(Chunk::Data(3)));
    assert_eq!(f.advance(b"l"), Ok(1));
    assert_eq!(f, Framing::Chunked(Chunk::Data(2)));
}

#[test]
fn chunk_size_line_without_digits_or_with_a_bare_lf_is_refused() {
    for bad in [&b";"[..], b" ", b"\t", b"5;ext\nhello", b"5 \n"] {
        let mut f = Framing::new(Body::Chunked);
        assert_eq!(
            f.advance(bad),
            Err(HttpError::BadFraming),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn own_responses_have_their_reason_phrases() {
    for (status, reason) in [
        (200, "Connection established"),
        (400, "Bad Request"),
        (403, "Forbidden"),
        (407, "Proxy Authentication Required"),
        (431, "Request Header Fields Too Large"),
        (502, "Bad Gateway"),
        (504, "Gateway Timeout"),
        (500, "Error"),
    ] {
        let r = error_response(status, "why", "");
        let line = format!("HTTP/1.1 {status} {reason}\r\n");
        assert!(r.starts_with(line.as_bytes()), "{status}");
        let body = format!("\r\n\r\n{status} {reason}: why\n");
        assert!(r.ends_with(body.as_bytes()), "{status}");
    }
}
