//! Nanoseconds per parsed message: each SOCKS request kind, and the greeting;
//! and per credential check with 10 and 10,000 users (RFC 1929 and HTTP
//! Basic, a right and a wrong password), which runs on the reactor thread.
//!
//! `cargo bench --bench parse`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dispatch::auth::{base64, Credentials};
use dispatch::socks::{parse_greeting, parse_request, parse_socks4, Status};

fn parse(c: &mut Criterion) {
    let mut ipv6 = vec![5, 1, 0, 4];
    ipv6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    ipv6.extend_from_slice(&443u16.to_be_bytes());
    let mut domain = vec![5, 1, 0, 3, 15];
    domain.extend_from_slice(b"www.example.org");
    domain.extend_from_slice(&443u16.to_be_bytes());
    let mut socks4a = vec![4, 1, 0, 80, 0, 0, 0, 1];
    socks4a.extend_from_slice(b"user\0www.example.org\0");
    type Parser = fn(&[u8]) -> bool;
    let cases: [(&str, Vec<u8>, Parser); 6] = [
        ("greeting", vec![5, 2, 0, 2], |b| {
            matches!(parse_greeting(b), Ok(Status::Complete(..)))
        }),
        ("socks5-ipv4", vec![5, 1, 0, 1, 127, 0, 0, 1, 1, 187], |b| {
            matches!(parse_request(b), Ok(Status::Complete(..)))
        }),
        ("socks5-ipv6", ipv6, |b| {
            matches!(parse_request(b), Ok(Status::Complete(..)))
        }),
        ("socks5-domain", domain, |b| {
            matches!(parse_request(b), Ok(Status::Complete(..)))
        }),
        (
            "socks4",
            b"\x04\x01\x00\x50\x7f\x00\x00\x01user\0".to_vec(),
            |b| matches!(parse_socks4(b), Ok(Status::Complete(..))),
        ),
        ("socks4a", socks4a, |b| {
            matches!(parse_socks4(b), Ok(Status::Complete(..)))
        }),
    ];
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(300));
    for (name, bytes, parse) in cases {
        assert!(parse(&bytes), "{name} must parse");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| parse(black_box(&bytes)))
        });
    }
    group.finish();
}

fn auth(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(300));
    for users in [10usize, 10_000] {
        let mut creds = Credentials::default();
        for i in 0..users {
            creds.add(&format!("user{i}:password-of-user-{i}")).unwrap();
        }
        let who = format!("user{}", users / 2);
        let right = format!("password-of-user-{}", users / 2);
        let basic = format!("Basic {}", base64(format!("{who}:{right}").as_bytes()));
        assert!(creds.check(who.as_bytes(), right.as_bytes()));
        assert!(creds.check_basic(basic.as_bytes()));
        group.bench_function(BenchmarkId::new("rfc1929-right", users), |b| {
            b.iter(|| creds.check(black_box(who.as_bytes()), black_box(right.as_bytes())))
        });
        group.bench_function(BenchmarkId::new("rfc1929-wrong", users), |b| {
            b.iter(|| creds.check(black_box(who.as_bytes()), black_box(b"wrong")))
        });
        group.bench_function(BenchmarkId::new("basic-right", users), |b| {
            b.iter(|| creds.check_basic(black_box(basic.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, auth);
criterion_main!(benches);
