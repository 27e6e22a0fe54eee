//! SOCKS5 CONNECT round trips per second through the real reactor to a local
//! server: TCP connect, greeting and method reply, CONNECT and its reply,
//! then the client's EOF and the server's one-byte answer to it, so each
//! iteration ends once the far end has really served the connection. One
//! client, each answer awaited. Beside it, the same exchange with the server
//! reached directly: the floor of loopback round trips.
//!
//! `cargo bench --bench handshake`

mod common;

use std::io::Read;
use std::net::Shutdown;
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
    for (subject, via) in [("direct", None), ("socks5-connect", Some(proxy.addr))] {
        group.bench_function(BenchmarkId::from_parameter(subject), |b| {
            b.iter(|| {
                let mut s = connect(via, target);
                s.shutdown(Shutdown::Write).unwrap();
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
