//! Relay throughput through the real reactor on loopback, beside a direct
//! loopback connection measured in the same group, so the report shows the
//! proxy/direct ratio. The ring sizes compared here are how
//! `reactor::RING_SIZE` was chosen (README, "Choosing the ring size").
//!
//! `cargo bench --bench relay`

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dispatch::config::{Config, Target};
use dispatch::reactor::{Reactor, Shutdown as Stop};

const PAYLOAD: usize = 64 << 20;
const CHUNK: usize = 256 << 10;

/// A server that reads everything each client sends and answers with one
/// byte at EOF, so the client knows the last byte arrived.
fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let mut s = stream.unwrap();
            thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                let _ = s.write_all(b"!");
            });
        }
    });
    addr
}

fn start_proxy(ring_size: usize) -> (SocketAddr, Stop, thread::JoinHandle<()>) {
    let config = Config {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        targets: vec![Target {
            ip: Ipv4Addr::LOCALHOST.into(),
            weight: NonZeroU32::MIN,
            iface: None,
            follow: false,
        }],
        handshake_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        bind_device: false,
    };
    let mut reactor = Reactor::with_ring_size(config, ring_size).unwrap();
    let addr = reactor.local_addr();
    let stop = reactor.shutdown_handle();
    let handle = thread::spawn(move || {
        reactor.run().unwrap();
    });
    (addr, stop, handle)
}

/// Opens a connection to `target`, through the proxy when there is one.
fn connect(proxy: Option<SocketAddr>, target: SocketAddr) -> TcpStream {
    let Some(proxy) = proxy else {
        return TcpStream::connect(target).unwrap();
    };
    let mut s = TcpStream::connect(proxy).unwrap();
    let SocketAddr::V4(t) = target else {
        unreachable!()
    };
    let mut hello = vec![5, 1, 0, 5, 1, 0, 1];
    hello.extend_from_slice(&t.ip().octets());
    hello.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&hello).unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [5, 0]);
    assert_eq!(reply[3], 0, "CONNECT refused");
    s
}

/// Pushes `bytes` up through `streams` connections at once and waits for each
/// server's acknowledgement.
fn push(proxy: Option<SocketAddr>, target: SocketAddr, streams: usize, bytes: usize) {
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

/// What a group measures: the direct path, or a proxy with one ring size.
struct Subject {
    name: String,
    proxy: Option<SocketAddr>,
    running: Option<(Stop, thread::JoinHandle<()>)>,
}

fn relay(c: &mut Criterion) {
    let target = sink_server();
    let mut subjects = vec![Subject {
        name: "direct".into(),
        proxy: None,
        running: None,
    }];
    for kib in [16usize, 64, 128, 256] {
        let (addr, stop, handle) = start_proxy(kib << 10);
        subjects.push(Subject {
            name: format!("ring-{kib}KiB"),
            proxy: Some(addr),
            running: Some((stop, handle)),
        });
    }
    for streams in [1usize, 8] {
        let mut group = c.benchmark_group(format!("relay/{streams}-stream"));
        group.throughput(Throughput::Bytes(PAYLOAD as u64));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        group.warm_up_time(Duration::from_millis(500));
        for subject in &subjects {
            let proxy = subject.proxy;
            group.bench_function(BenchmarkId::from_parameter(&subject.name), |b| {
                b.iter(|| push(proxy, target, streams, PAYLOAD / streams))
            });
        }
        group.finish();
    }
    for subject in subjects {
        if let Some((stop, handle)) = subject.running {
            stop.trigger();
            handle.join().unwrap();
        }
    }
}

criterion_group!(benches, relay);
criterion_main!(benches);
