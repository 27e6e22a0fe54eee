//! Capacity-aware balancing: what each link carries while it is busy,
//! learned as the proxy runs, and the choice of the link with the most
//! capacity left for a new connection. Pure code driven by the caller's
//! clock and byte counts; no I/O.
//!
//! **Capacity.** Once a second ([`Balance::sample`]) each link's bytes (both
//! ways) over the elapsed time make a sample. A sample counts only when the
//! link was busy for the whole period: connections carried bytes through it
//! in the period before, in this one and in the next (so the slow start of a
//! burst and its tail are left out), and it carried at least
//! [`MIN_SAMPLE_BYTES`]. The estimate rises quickly towards a higher sample
//! ([`RISE`]) and falls more slowly towards a lower one ([`FALL`]): a link
//! whose throughput halves loses most of its extra share within about five
//! seconds. An idle link keeps its last estimate. (The kernel's own view,
//! Linux `TCP_INFO` delivery rate, measures what this end sends: for a
//! download, where the proxy receives, it says nothing of the link.)
//!
//! **Choice.** A new connection goes to the link with the lowest
//! `(load + 1) / capacity`, where load counts the open connections through
//! it that carried bytes in this period or the last one, plus those placed
//! in this period that have not carried any yet (a failed connect is taken
//! back at once). Idle connections (a BitTorrent client keeps hundreds) and
//! connects that never got an answer do not count beyond that. A link not learned yet counts as the best learned
//! one of its family, so it gets tried. Equal scores (nothing learned yet:
//! all capacities equal) fall to the smooth weighted round robin.

use std::time::{Duration, Instant};

/// How new connections are spread over the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// By learned capacity, towards the link with the most left.
    Learn,
    /// By the given weights alone (smooth weighted round robin).
    Weights,
}

/// A period carrying less than this says nothing of the link's capacity.
pub const MIN_SAMPLE_BYTES: u64 = 32 * 1024;
/// How far the estimate moves towards a higher sample.
pub const RISE: f64 = 0.5;
/// How far the estimate moves towards a lower sample.
pub const FALL: f64 = 1.0 / 3.0;

/// The estimate after one sample of `rate` bytes/s: `None` until the first.
pub fn update(estimate: Option<f64>, rate: f64) -> f64 {
    match estimate {
        None => rate,
        Some(e) if rate >= e => e + RISE * (rate - e),
        Some(e) => e + FALL * (rate - e),
    }
}

/// Tags a connection with the period it last carried bytes in (`0`: never),
/// so that each busy connection is counted once a period.
pub type Seen = u8;

/// One link's meter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meter {
    /// Learned capacity, bytes/s.
    capacity: Option<f64>,
    /// The link's byte count at the last sample.
    bytes_at: Option<u64>,
    /// Connections that carried bytes in this period, and in the last one.
    active: u32,
    active_before: u32,
    /// Placed in this period, not carrying bytes yet.
    placed: u32,
    /// The last period's rate, when the link was busy before it too:
    /// counted once the next period shows it busy still.
    pending: Option<f64>,
    /// The link's failed connects, as last seen.
    failures: u64,
}

impl Meter {
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Connections that count against the link now, of the `open` ones
    /// through it (a busy connection that closed since counts no more).
    pub fn load(&self, open: u64) -> u64 {
        let busy = u64::from(self.active.max(self.active_before));
        busy.min(open) + u64::from(self.placed)
    }

    /// A period ends: `total` is every byte the link carried so far.
    fn sample(&mut self, total: u64, elapsed: Duration) {
        let carried = self.bytes_at.map_or(0, |b| total.saturating_sub(b));
        self.bytes_at = Some(total);
        let busy = self.active > 0;
        if let Some(rate) = self.pending.take() {
            if busy {
                self.capacity = Some(update(self.capacity, rate));
            }
        }
        let secs = elapsed.as_secs_f64();
        if busy && self.active_before > 0 && carried >= MIN_SAMPLE_BYTES && secs > 0.0 {
            self.pending = Some(carried as f64 / secs);
        }
        self.active_before = self.active;
        self.active = 0;
        self.placed = 0;
    }
}

/// Every link's meter, by link index, and the period counter.
#[derive(Debug, Clone)]
pub struct Balance {
    pub strategy: Strategy,
    meters: Vec<Meter>,
    /// The current period, `1..=255` ([`Seen`] `0` is "never").
    period: Seen,
    /// When the current period began.
    since: Option<Instant>,
}

impl Balance {
    pub fn new(strategy: Strategy) -> Balance {
        Balance {
            strategy,
            meters: Vec::new(),
            period: 1,
            since: None,
        }
    }

    /// Room for `n` links (links are only ever added).
    pub fn resize(&mut self, n: usize) {
        if self.meters.len() < n {
            self.meters.resize(n, Meter::default());
        }
    }

    /// How many links it meters.
    pub fn len(&self) -> usize {
        self.meters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }

    pub fn meter(&self, i: usize) -> &Meter {
        &self.meters[i]
    }

    /// Learned elsewhere (the state file): used until the link's own
    /// samples replace it.
    pub fn seed(&mut self, i: usize, capacity: f64) {
        if capacity.is_finite() && capacity > 0.0 {
            self.meters[i].capacity = Some(capacity);
        }
    }

    /// A new connection was placed on link `i`.
    pub fn placed(&mut self, i: usize) {
        let meter = &mut self.meters[i];
        meter.placed = meter.placed.saturating_add(1);
    }

    /// Link `i` has had `failures` failed connects so far: each new one is
    /// a placed connection that will never carry anything, so it stops
    /// counting (a link that fails keeps its turns, and is found out).
    pub fn failures(&mut self, i: usize, failures: u64) {
        let meter = &mut self.meters[i];
        let new = failures.saturating_sub(meter.failures);
        meter.failures = failures;
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        meter.placed = meter.placed.saturating_sub(new);
    }

    /// A connection tagged `seen` carried bytes through link `i`.
    pub fn carried(&mut self, i: usize, seen: &mut Seen) {
        if *seen == self.period {
            return;
        }
        let meter = &mut self.meters[i];
        if *seen == 0 {
            meter.placed = meter.placed.saturating_sub(1);
        }
        meter.active = meter.active.saturating_add(1);
        *seen = self.period;
    }

    /// The period ends `now` (call about once a second); `totals` gives
    /// each link's bytes so far, in link order.
    pub fn sample(&mut self, totals: impl Iterator<Item = u64>, now: Instant) {
        let elapsed = self
            .since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.since = Some(now);
        for (meter, total) in self.meters.iter_mut().zip(totals) {
            meter.sample(total, elapsed);
        }
        self.period = self.period.checked_add(1).unwrap_or(1);
    }

    /// What link `i`, with `open` connections, scores for a new one (lower
    /// is better), where `unknown` stands for a capacity not learned yet.
    pub fn score(&self, i: usize, open: u64, unknown: f64) -> f64 {
        let m = &self.meters[i];
        (m.load(open) + 1) as f64 / m.capacity.unwrap_or(unknown)
    }

    /// What an unlearned link among `links` counts as: the best learned
    /// capacity among them (so it is tried), or 1 when none is learned.
    pub fn unknown(&self, links: impl Iterator<Item = usize>) -> f64 {
        links
            .filter_map(|i| self.meters[i].capacity)
            .fold(None, |best: Option<f64>, c| {
                Some(best.map_or(c, |b| b.max(c)))
            })
            .unwrap_or(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrr::Selector;
    use std::num::NonZeroU32;

    const SEC: Duration = Duration::from_secs(1);

    /// Two links; `rates` says what each carries per second while busy
    /// (0: idle); every busy link has one connection carrying bytes.
    struct Sim {
        b: Balance,
        now: Instant,
        totals: Vec<u64>,
        seen: Vec<Seen>,
    }

    impl Sim {
        fn new(n: usize) -> Sim {
            let mut b = Balance::new(Strategy::Learn);
            b.resize(n);
            let now = Instant::now();
            b.sample(std::iter::repeat_n(0, n), now);
            Sim {
                b,
                now,
                totals: vec![0; n],
                seen: vec![0; n],
            }
        }

        fn second(&mut self, rates: &[u64]) {
            for (i, &r) in rates.iter().enumerate() {
                if r > 0 {
                    self.totals[i] += r;
                    self.b.carried(i, &mut self.seen[i]);
                }
            }
            self.now += SEC;
            self.b.sample(self.totals.clone().into_iter(), self.now);
        }

        fn capacity(&self, i: usize) -> f64 {
            self.b.meter(i).capacity().unwrap_or(0.0)
        }

        /// Of `n` connections placed at once, how many go to each link.
        fn place(&self, n: usize) -> Vec<usize> {
            let mut b = self.b.clone();
            let links = self.totals.len();
            let unknown = b.unknown(0..links);
            let mut rr = Selector::new((0..links).map(|i| (i, NonZeroU32::MIN)));
            let mut got = vec![0; links];
            for _ in 0..n {
                let best = rr
                    .next_lowest(|_| true, |&i| b.score(i, u64::MAX, unknown))
                    .unwrap();
                b.placed(best);
                got[best] += 1;
            }
            got
        }
    }

    #[test]
    fn estimate_rises_fast_and_falls_slower() {
        assert_eq!(update(None, 1000.0), 1000.0);
        assert_eq!(update(Some(1000.0), 2000.0), 1500.0);
        assert_eq!(update(Some(900.0), 600.0), 800.0);
    }

    #[test]
    fn a_busy_link_is_learned_once_busy_on_both_sides_of_a_period() {
        let mut s = Sim::new(1);
        s.second(&[1_200_000]);
        s.second(&[1_200_000]);
        assert_eq!(
            s.b.meter(0).capacity(),
            None,
            "the first periods are ramp-up"
        );
        s.second(&[1_200_000]);
        assert_eq!(s.capacity(0), 1_200_000.0);
    }

    #[test]
    fn the_tail_of_a_burst_is_not_a_sample() {
        let mut s = Sim::new(1);
        for _ in 0..4 {
            s.second(&[1_000_000]);
        }
        s.second(&[100_000]); // the last bytes, then nothing
        s.second(&[0]);
        s.second(&[0]);
        assert_eq!(s.capacity(0), 1_000_000.0);
    }

    #[test]
    fn trickles_say_nothing_of_capacity() {
        let mut s = Sim::new(1);
        for _ in 0..10 {
            s.second(&[2_000]);
        }
        assert_eq!(s.b.meter(0).capacity(), None);
    }

    #[test]
    fn an_idle_link_keeps_its_last_estimate() {
        let mut s = Sim::new(2);
        for _ in 0..5 {
            s.second(&[1_200_000, 400_000]);
        }
        let before = s.capacity(1);
        for _ in 0..300 {
            s.second(&[1_200_000, 0]);
        }
        assert_eq!(s.capacity(1), before);
        assert_eq!(s.b.meter(1).load(u64::MAX), 0);
    }

    #[test]
    fn a_link_whose_throughput_halves_loses_share_within_seconds() {
        let mut s = Sim::new(2);
        for _ in 0..10 {
            s.second(&[1_000_000, 1_000_000]);
        }
        assert_eq!(s.place(12), [6, 6]);
        for _ in 0..5 {
            s.second(&[1_000_000, 500_000]);
        }
        assert!(s.capacity(1) < 700_000.0, "{}", s.capacity(1));
        let [fast, slow] = s.place(12)[..] else {
            unreachable!()
        };
        assert!(slow <= 5 && fast >= 7, "{fast}/{slow}");
        for _ in 0..10 {
            s.second(&[1_000_000, 500_000]);
        }
        assert_eq!(s.place(12), [8, 4], "settled at 2:1");
    }

    #[test]
    fn a_link_that_recovers_regains_its_share() {
        let mut s = Sim::new(2);
        for _ in 0..20 {
            s.second(&[1_000_000, 250_000]);
        }
        assert_eq!(s.place(10), [9, 1]);
        for _ in 0..4 {
            s.second(&[1_000_000, 1_000_000]);
        }
        assert!(s.capacity(1) > 900_000.0, "{}", s.capacity(1));
        assert_eq!(s.place(10), [5, 5]);
    }

    #[test]
    fn least_load_places_by_capacity() {
        let mut s = Sim::new(3);
        for _ in 0..10 {
            s.second(&[1_200_000, 1_200_000, 400_000]);
        }
        s.second(&[0, 0, 0]);
        s.second(&[0, 0, 0]);
        // 12 ranges at once: 5/5/2, as 3/3/1 weights would.
        assert_eq!(s.place(12), [5, 5, 2]);
        assert_eq!(s.place(7), [3, 3, 1]);
    }

    #[test]
    fn busy_connections_count_idle_ones_do_not() {
        let mut b = Balance::new(Strategy::Learn);
        b.resize(1);
        let mut seen = [0 as Seen; 3];
        for _ in 0..3 {
            b.placed(0);
        }
        assert_eq!(b.meter(0).load(0), 3, "placed, not carrying yet");
        b.carried(0, &mut seen[0]);
        b.carried(0, &mut seen[0]);
        b.carried(0, &mut seen[1]);
        assert_eq!(b.meter(0).load(3), 3, "two carry, one still to");
        let t = Instant::now();
        b.sample([0].into_iter(), t);
        assert_eq!(b.meter(0).load(3), 2, "the last period's busy ones");
        assert_eq!(b.meter(0).load(1), 1, "one of them closed since");
        b.carried(0, &mut seen[0]);
        b.sample([0].into_iter(), t + SEC);
        assert_eq!(b.meter(0).load(3), 1);
        b.sample([0].into_iter(), t + 2 * SEC);
        assert_eq!(b.meter(0).load(3), 0, "idle connections weigh nothing");
    }

    #[test]
    fn a_failed_connect_stops_counting() {
        let mut b = Balance::new(Strategy::Learn);
        b.resize(1);
        b.placed(0);
        b.placed(0);
        b.failures(0, 1);
        assert_eq!(b.meter(0).load(0), 1);
        b.failures(0, 1);
        assert_eq!(b.meter(0).load(0), 1, "each failure once");
        b.failures(0, 5);
        assert_eq!(b.meter(0).load(0), 0);
    }

    #[test]
    fn unlearned_links_count_as_the_best_learned_one() {
        let mut b = Balance::new(Strategy::Learn);
        b.resize(3);
        assert_eq!(b.unknown(0..3), 1.0);
        b.seed(0, 300.0);
        b.seed(1, 900.0);
        b.seed(2, f64::NAN);
        assert_eq!(b.unknown(0..3), 900.0);
        assert_eq!(b.unknown(0..1), 300.0);
        assert_eq!(b.meter(2).capacity(), None, "a bad seed is ignored");
    }

    #[test]
    fn the_period_tag_wraps_past_never() {
        let mut b = Balance::new(Strategy::Learn);
        b.resize(1);
        let t = Instant::now();
        for n in 0..600 {
            b.sample([0].into_iter(), t + n * SEC);
            assert_ne!(b.period, 0);
        }
    }
}
