//! SOCKS5 CONNECT round trips per second through the real reactor to a local
//! server: TCP connect, greeting and method reply, CONNECT and its reply,
//! close; one client, each answer awaited. Beside it, the same server
//! reached directly (TCP connect and close), the floor of the loopback
//! round trips.
//!
//! `cargo bench --bench handshake`

mod common;

use std::time::Duration;

use common::{connect, sink_server, start_proxy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn handshake(c: &mut Criterion) {
    let target = sink_server();
    let proxy = start_proxy(None);
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    for (subject, via) in [
        ("direct-connect", None),
        ("socks5-connect", Some(proxy.addr)),
    ] {
        group.bench_function(BenchmarkId::from_parameter(subject), |b| {
            b.iter(|| drop(connect(via, target)))
        });
    }
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
