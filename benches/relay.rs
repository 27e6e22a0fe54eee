//! Relay throughput through the real reactor on loopback, each way, over one
//! connection and eight at once, beside a direct loopback connection measured
//! in the same group, so the report shows the proxy/direct ratio.
//! `dispatch` is the default (splice on Linux), `rings` the same relaying
//! through its rings only. The ring sizes compared on the way up (rings
//! only) are how `reactor::RING_SIZE` was chosen (README, "Choosing the ring
//! size"), and the pipe sizes how `reactor::PIPE_SIZE` was.
//!
//! `cargo bench --bench relay`

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

use common::{connect, sink_server, source_server, start_proxy, start_proxy_with, Proxy, CHUNK};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dispatch::reactor::Reactor;

const PAYLOAD: usize = 64 << 20;

/// How a subject's reactor differs from the default.
type Tune = fn(Reactor) -> Reactor;

/// Pushes `bytes` up through each of `streams` connections at once and waits
/// for each server's acknowledgement.
fn up(proxy: Option<SocketAddr>, target: SocketAddr, streams: usize, bytes: usize) {
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(proxy, target);
                let chunk = vec![0x5au8; CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(CHUNK);
                    s.write_all(&chunk[..n]).unwrap();
                    left -= n;
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Asks the server for `bytes` down each of `streams` connections at once and
/// reads them to EOF, checking the count.
fn down(proxy: Option<SocketAddr>, target: SocketAddr, streams: usize, bytes: usize) {
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(proxy, target);
                s.write_all(&(bytes as u64).to_be_bytes()).unwrap();
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0;
                loop {
                    match s.read(&mut buf).unwrap() {
                        0 => break,
                        n => got += n,
                    }
                }
                assert_eq!(got, bytes);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

fn relay(c: &mut Criterion) {
    let sink = sink_server();
    let source = source_server();
    let dispatch = start_proxy(None);
    let through_rings = start_proxy_with(None, Reactor::relay_through_rings);
    let rings: Vec<(usize, Proxy)> = [16usize, 64, 256]
        .into_iter()
        .map(|kib| {
            (
                kib,
                start_proxy_with(Some(kib << 10), Reactor::relay_through_rings),
            )
        })
        .collect();
    let pipes: Vec<(usize, Proxy)> = if cfg!(target_os = "linux") {
        let tunes: [(usize, Tune); 3] = [
            (64, |r| r.with_pipe_size(64 << 10)),
            (256, |r| r.with_pipe_size(256 << 10)),
            (1024, |r| r.with_pipe_size(1 << 20)),
        ];
        tunes
            .into_iter()
            .map(|(kib, tune)| (kib, start_proxy_with(None, tune)))
            .collect()
    } else {
        Vec::new()
    };
    type Direction = fn(Option<SocketAddr>, SocketAddr, usize, usize);
    for (way, run, target) in [("up", up as Direction, sink), ("down", down, source)] {
        for streams in [1usize, 8] {
            let name = format!(
                "relay/{way}-{streams}-stream{}",
                if streams > 1 { "s" } else { "" }
            );
            let mut group = c.benchmark_group(name);
            group.throughput(Throughput::Bytes(PAYLOAD as u64));
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(3));
            group.warm_up_time(Duration::from_millis(500));
            let mut subjects = vec![
                ("direct".to_string(), None),
                ("dispatch".to_string(), Some(dispatch.addr)),
                ("rings".to_string(), Some(through_rings.addr)),
            ];
            if way == "up" {
                subjects.extend(
                    rings
                        .iter()
                        .map(|(kib, p)| (format!("ring-{kib}KiB"), Some(p.addr))),
                );
                subjects.extend(
                    pipes
                        .iter()
                        .map(|(kib, p)| (format!("pipe-{kib}KiB"), Some(p.addr))),
                );
            }
            for (subject, proxy) in subjects {
                group.bench_function(BenchmarkId::from_parameter(subject), |b| {
                    b.iter(|| run(proxy, target, streams, PAYLOAD / streams))
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, relay);
criterion_main!(benches);
