//! Nanoseconds per selection: the smooth weighted round robin alone, over
//! 2, 4 and 16 weighted entries, and `Links::pick`, what the reactor calls
//! for each outgoing connection (family, tried set and link state included).
//!
//! `cargo bench --bench select`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dispatch::links::LinkSpec;
use dispatch::links::Links;
use dispatch::wrr::Selector;

fn weight(i: usize) -> NonZeroU32 {
    NonZeroU32::new(1 + (i as u32 * 7) % 5).unwrap()
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(300));
    for n in [2usize, 4, 16] {
        let mut selector = Selector::new((0..n).map(|i| (i, weight(i))));
        group.bench_function(BenchmarkId::new("wrr", n), |b| {
            b.iter(|| black_box(selector.next()))
        });
    }
    let targets = (0..3u8)
        .map(|i| LinkSpec {
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)),
            weight: weight(usize::from(i)),
            iface: None,
            follow: false,
        })
        .collect();
    let mut links = Links::new(targets, &[], false);
    let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let now = Instant::now();
    group.bench_function(BenchmarkId::new("links-pick", 3), |b| {
        b.iter(|| black_box(links.pick(black_box(remote), 0, now)))
    });
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
