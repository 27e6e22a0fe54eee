//! Capacity-aware balancing: what each link carries while it is busy,
//! learned as the proxy runs, and the choice of the link with the most
//! capacity left for a new connection. Pure code driven by the caller's
//! clock and byte counts; no I/O.
//!
//! **Capacity.** Once a second ([`Balance::sample`]) each link's bytes (both
//! ways) over the elapsed time make a sample. A sample counts only when the
//! link was busy for the whole period: connections were busy through it
//! (each carried [`BUSY_BYTES`], or just answered)
//! in the period before, in this one and in the next (so the slow start of a
//! burst and its tail are left out), and it carried at least
//! [`MIN_SAMPLE_BYTES`]. The estimate rises quickly towards a higher sample
//! ([`RISE`]) and falls more slowly towards a lower one ([`FALL`]): a link
//! whose throughput halves loses most of its extra share within about five
//! seconds. One connection alone goes as fast as its far end sends (a
//! rate-limited download, a slow server), which says what the link can
//! carry at least, not at most (a fast link that carried one slow transfer
//! was learned as slow, kept so in the state file, and never chosen again):
//! so a period in which fewer than [`MIN_FALL_CONNECTIONS`] connections
//! were busy (carried [`BUSY_BYTES`] in it: a keep-alive or a heartbeat is
//! not) gives no first estimate, and lowers one only from a
//! sample at least [`SOLO_FALL_FLOOR`] of it (the link's own noise, not a
//! far end's pace). An idle link keeps its last estimate. (The kernel's own view,
//! Linux `TCP_INFO` delivery rate, measures what this end sends: for a
//! download, where the proxy receives, it says nothing of the link.)
//!
//! **Choice.** A new connection goes to the link with the lowest
//! `(load + 1) / capacity`, where load counts the open connections (and UDP
//! destinations) through it that were busy in this period or the last
//! one, plus those placed on it lately that have not carried any yet: for
//! one to two *answer windows*, about four of the link's connect times (a
//! failed connect is taken back at once), and each weighed by the share of
//! recent placements that did come to carry ([`Balance::answering`]), but
//! never less than [`MIN_PLACED_WEIGHT`]. So a download manager's burst of
//! new connections, which all answer, is spread by capacity (still, if
//! less evenly, beside a swarm that drove the share near zero: the floor);
//! while a BitTorrent client's connects, most of them to peers that never
//! answer (hundreds, tried about thirty a second), weigh little, and a new
//! connection goes where the live ones are fewest. Idle connections (a
//! BitTorrent client keeps hundreds) weigh nothing. A link not learned yet
//! counts as the best learned one that may take the connection, so it gets tried. An idle
//! link (less than one connection's load) still wins with a score up to
//! [`IDLE_FAVOUR`] (10%) above the lowest: a connection there is likely to
//! add its whole capacity. A busy link slower than the best of those that
//! may take the connection scores up to [`SLOW_BUSY`] (10%) more: at the
//! end of a download, a connection there stays slow while the faster
//! link's share grows as its other connections end. Equal scores (nothing learned yet: all equal)
//! fall to the smooth weighted round robin.

use std::time::{Duration, Instant};

use crate::wrr::Selector;

/// How new connections are spread over the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// By learned capacity, towards the link with the most left.
    Learn,
    /// By the given weights alone (smooth weighted round robin).
    Weights,
}

impl Strategy {
    /// Its name, as `--balance` takes it and `/status` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Learn => "learn",
            Strategy::Weights => "weights",
        }
    }

    /// The one named so.
    pub fn from_name(name: &str) -> Option<Strategy> {
        [Strategy::Learn, Strategy::Weights]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// How it is said to people.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::Learn => "balancing by learned capacity",
            Strategy::Weights => "balancing by the weights given",
        }
    }
}

/// A period carrying less than this says nothing of the link's capacity.
pub const MIN_SAMPLE_BYTES: u64 = 32 * 1024;
/// A connection (or UDP destination) is busy in a period once it carried
/// this much in it (both ways), or in the period it first answered: more
/// than a keep-alive, a heartbeat or a DHT reply, which say nothing of the
/// link's capacity and take none of it. A transfer carries this many times
/// over, even one of fifty peers on a 400 kB/s link.
pub const BUSY_BYTES: u32 = 2048;
/// How far the estimate moves towards a higher sample.
pub const RISE: f64 = 0.5;
/// How far the estimate moves towards a lower sample.
pub const FALL: f64 = 1.0 / 3.0;
/// A period in which this many connections (or UDP destinations) were
/// busy through the link ([`BUSY_BYTES`]) gives a first estimate, or a lower one, whatever
/// its rate; with fewer, see [`SOLO_FALL_FLOOR`].
pub const MIN_FALL_CONNECTIONS: u32 = 2;
/// With fewer than [`MIN_FALL_CONNECTIONS`] busy, a lower sample counts
/// only from this fraction of the estimate up.
pub const SOLO_FALL_FLOOR: f64 = 0.5;
/// The answer window of a link whose connect time is not known yet, and
/// the least any link's is.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(250);
/// The most a link's answer window is.
pub const MAX_WINDOW: Duration = Duration::from_secs(2);

/// The answer window of a link whose smoothed connect time is `srtt`: a
/// new connection's first bytes come a connect and a request after it is
/// placed, and behind a full link's queue, so four connect times, within
/// [`DEFAULT_WINDOW`] and [`MAX_WINDOW`]. (With two, chunked downloads
/// over tbf links put a sixth 1 MB chunk of 36 on the 400 kB/s link:
/// placements lapsed before their connections carried.)
pub fn answer_window(srtt: Option<Duration>) -> Duration {
    srtt.map_or(DEFAULT_WINDOW, |rtt| {
        (rtt * 4).clamp(DEFAULT_WINDOW, MAX_WINDOW)
    })
}
/// How far each placement's outcome (it carried, or it failed or went
/// unanswered for two windows) moves [`Balance::answering`].
pub const ANSWER_GAIN: f64 = 1.0 / 16.0;
/// The least a placement weighs, however few answer lately: the share is
/// one for all the proxy's clients, and a download manager's burst must
/// still be spread by capacity beside a BitTorrent client's dead connects
/// (see `a_burst_after_a_swarm_is_still_spread`: never 9 of 12 to one).
pub const MIN_PLACED_WEIGHT: f64 = 0.25;

/// An idle link's score counts this fraction less: it wins against others
/// up to about the estimates' noise lower. See [`Balance::pick`].
pub const IDLE_FAVOUR: f64 = 0.1;

/// A busy link's score counts up to this fraction more, in proportion to
/// how much slower it is than the best of the links that may take the
/// connection (none for the best, all for one of no capacity). See
/// [`Balance::score`].
pub const SLOW_BUSY: f64 = 0.1;

/// The estimate after one sample of `rate` bytes/s: `None` until the first.
pub fn update(estimate: Option<f64>, rate: f64) -> f64 {
    match estimate {
        None => rate,
        Some(e) if rate >= e => e + RISE * (rate - e),
        Some(e) => e + FALL * (rate - e),
    }
}

/// What one connection (or UDP destination) carried lately, for its link's
/// meter: the period it last carried bytes in (`0`: never) and how many in
/// it, so that it counts as busy once a period, once past [`BUSY_BYTES`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    period: u32,
    bytes: u32,
}

/// One link's meter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meter {
    /// Learned capacity, bytes/s.
    capacity: Option<f64>,
    /// The link's byte count at the last sample.
    bytes_at: Option<u64>,
    /// Connections busy in this period, and in the last one.
    active: u32,
    active_before: u32,
    /// Placed and not carrying bytes yet: in the current answer window
    /// (`[0]`) and in the one before (`[1]`).
    placed: [u32; 2],
    /// Placements that went unanswered through both windows, already
    /// counted so: their later failure (a connect timeout) or late answer
    /// is theirs, not a fresh placement's.
    lapsed: u32,
    /// When the current answer window began (`None`: nothing placed yet).
    window_at: Option<Instant>,
    /// How long a placement counts before it carries, one to two of these:
    /// about the time a live connection through the link takes to answer
    /// (`None`: [`DEFAULT_WINDOW`]).
    window: Option<Duration>,
    /// The last period's rate, when the link was busy before it too, and
    /// how many connections were busy in it: counted once the next
    /// period shows it busy still.
    pending: Option<(f64, u32)>,
    /// The link's failed connects, as last seen.
    failures: u64,
}

impl Meter {
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Connections busy now, of the `open` ones through the link (a busy
    /// connection that closed since counts no more).
    pub fn busy(&self, open: u64) -> u64 {
        u64::from(self.active.max(self.active_before)).min(open)
    }

    fn window(&self) -> Duration {
        self.window.unwrap_or(DEFAULT_WINDOW)
    }

    /// Placements not carrying yet that still count `now`.
    pub fn placed_at(&self, now: Instant) -> u32 {
        let Some(at) = self.window_at else { return 0 };
        let age = now.saturating_duration_since(at);
        if age >= 2 * self.window() {
            0
        } else if age >= self.window() {
            self.placed[0]
        } else {
            self.placed[0] + self.placed[1]
        }
    }

    /// Moves the answer windows on to `now`; returns the placements that
    /// went unanswered through both windows.
    fn roll(&mut self, now: Instant) -> u32 {
        let w = self.window();
        match self.window_at {
            Some(at) if now.saturating_duration_since(at) < w => 0,
            Some(at) if now.saturating_duration_since(at) < 2 * w => {
                let expired = self.placed[1];
                self.placed = [0, self.placed[0]];
                self.window_at = Some(at + w);
                self.lapsed = self.lapsed.saturating_add(expired);
                expired
            }
            _ => {
                let expired = self.placed[0] + self.placed[1];
                self.placed = [0, 0];
                self.window_at = Some(now);
                self.lapsed = self.lapsed.saturating_add(expired);
                expired
            }
        }
    }

    /// `n` lapsed placements are accounted for; returns how many of `n`
    /// were not among them.
    fn unlapse(&mut self, n: u32) -> u32 {
        let old = n.min(self.lapsed);
        self.lapsed -= old;
        n - old
    }

    /// `n` placements carry now, or failed: the oldest stop counting.
    /// Returns how many were still counting.
    fn unplace(&mut self, n: u32) -> u32 {
        let old = n.min(self.placed[1]);
        self.placed[1] -= old;
        let new = (n - old).min(self.placed[0]);
        self.placed[0] -= new;
        old + new
    }

    /// A period ends: `total` is every byte the link carried so far.
    fn sample(&mut self, total: u64, elapsed: Duration) {
        let carried = self.bytes_at.map_or(0, |b| total.saturating_sub(b));
        self.bytes_at = Some(total);
        let busy = self.active > 0;
        if let Some((rate, connections)) = self.pending.take() {
            let counts = connections >= MIN_FALL_CONNECTIONS
                || self.capacity.is_some_and(|c| rate >= SOLO_FALL_FLOOR * c);
            if busy && counts {
                self.capacity = Some(update(self.capacity, rate));
            }
        }
        let secs = elapsed.as_secs_f64();
        if busy && self.active_before > 0 && carried >= MIN_SAMPLE_BYTES && secs > 0.0 {
            self.pending = Some((carried as f64 / secs, self.active));
        }
        self.active_before = self.active;
        self.active = 0;
    }
}

/// Every link's meter, by link index, and the period counter.
#[derive(Debug, Clone)]
pub struct Balance {
    pub strategy: Strategy,
    meters: Vec<Meter>,
    /// The current period, from 1 (a [`Seen`] of period 0 never carried);
    /// at one a second it does not wrap in 136 years.
    period: u32,
    /// When the current period began.
    since: Option<Instant>,
    /// The share of recent placements that came to carry bytes (1: all,
    /// as a download manager's; near 0: a BitTorrent client's, most of
    /// whose peers never answer), moved by [`ANSWER_GAIN`] per outcome. A
    /// placement weighs this much until it carries.
    answering: f64,
}

impl Balance {
    pub fn new(strategy: Strategy) -> Balance {
        Balance {
            strategy,
            meters: Vec::new(),
            period: 1,
            since: None,
            answering: 1.0,
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

    /// A new connection was placed on link `i` at `now`.
    pub fn placed(&mut self, i: usize, now: Instant) {
        let meter = &mut self.meters[i];
        let unanswered = meter.roll(now);
        meter.placed[0] = meter.placed[0].saturating_add(1);
        self.outcomes(0, unanswered);
    }

    /// The share of recent placements that came to carry bytes.
    pub fn answering(&self) -> f64 {
        self.answering
    }

    /// `carried` placements came to carry bytes, `not` did not.
    fn outcomes(&mut self, carried: u32, not: u32) {
        let keep = |n: u32| (1.0 - ANSWER_GAIN).powi(n.min(1 << 16) as i32);
        if carried > 0 {
            self.answering = 1.0 - (1.0 - self.answering) * keep(carried);
        }
        if not > 0 {
            self.answering *= keep(not);
        }
    }

    /// Live connections through link `i` answer in about `window` (twice
    /// its smoothed connect time): placements count that long, or twice.
    pub fn answer_window(&mut self, i: usize, window: Duration) {
        self.meters[i].window = Some(window);
    }

    /// Link `i` has had `failures` failed connects so far, `now`: each new
    /// one is a placed connection that will never carry anything, so it
    /// stops counting (a link that fails keeps its turns, and is found
    /// out). A failure after a timeout is mostly a placement that lapsed
    /// already.
    pub fn failures(&mut self, i: usize, failures: u64, now: Instant) {
        let meter = &mut self.meters[i];
        let new = failures.saturating_sub(meter.failures);
        meter.failures = failures;
        let lapsed = meter.roll(now);
        let new = meter.unlapse(u32::try_from(new).unwrap_or(u32::MAX));
        let failed = meter.unplace(new);
        self.outcomes(0, lapsed + failed);
    }

    /// A connection tagged `seen` carried `bytes` through link `i`, `now`
    /// (none: it connected, or an event moved nothing). The first call
    /// makes it answered, and busy for that period (its transfer is about
    /// to begin: a fresh connection, no longer counted as placed, must
    /// still weigh on its link); later it is busy in a period once it
    /// carried [`BUSY_BYTES`] in it.
    pub fn carried(&mut self, i: usize, seen: &mut Seen, bytes: u64, now: Instant) {
        let meter = &mut self.meters[i];
        if seen.period == 0 {
            // Its own placement, the oldest still counting, or one that
            // lapsed (a late answer, counted unanswered then: live after
            // all). None on a link no placement reached (a proxy link's
            // connections are placed by weight alone): no outcome.
            let lapsed = meter.roll(now);
            let mut carried = meter.unplace(1);
            if carried == 0 {
                carried = 1 - meter.unlapse(1);
            }
            self.outcomes(carried, lapsed);
            let meter = &mut self.meters[i];
            meter.active = meter.active.saturating_add(1);
            *seen = Seen {
                period: self.period,
                bytes: BUSY_BYTES,
            };
        }
        self.add(i, seen, bytes);
    }

    /// `bytes` went out to a UDP destination tagged `seen` on link `i`:
    /// they count towards its being busy once it has answered.
    pub fn sent(&mut self, i: usize, seen: &mut Seen, bytes: u64) {
        if seen.period != 0 {
            self.add(i, seen, bytes);
        }
    }

    /// Adds `bytes` to what `seen` carried this period through link `i`;
    /// past [`BUSY_BYTES`] it is busy.
    fn add(&mut self, i: usize, seen: &mut Seen, bytes: u64) {
        if seen.period != self.period {
            *seen = Seen {
                period: self.period,
                bytes: 0,
            };
        }
        let before = seen.bytes;
        seen.bytes = before.saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        if before < BUSY_BYTES && seen.bytes >= BUSY_BYTES {
            let meter = &mut self.meters[i];
            meter.active = meter.active.saturating_add(1);
        }
    }

    /// The period ends `now` (call about once a second); `totals` gives
    /// each link's bytes so far, in link order.
    pub fn sample(&mut self, totals: impl Iterator<Item = u64>, now: Instant) {
        let elapsed = self
            .since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.since = Some(now);
        let mut unanswered = 0u32;
        for (meter, total) in self.meters.iter_mut().zip(totals) {
            meter.sample(total, elapsed);
            unanswered = unanswered.saturating_add(meter.roll(now));
        }
        self.outcomes(0, unanswered);
        self.period = self.period.checked_add(1).unwrap_or(1);
    }

    /// What counts against link `i`, with `open` connections, `now`: its
    /// busy connections, and its placements not carrying yet, each
    /// weighed by the share that comes to carry (at least
    /// [`MIN_PLACED_WEIGHT`]).
    pub fn load(&self, i: usize, open: u64, now: Instant) -> f64 {
        let m = &self.meters[i];
        let weight = self.answering.max(MIN_PLACED_WEIGHT);
        m.busy(open) as f64 + weight * f64::from(m.placed_at(now))
    }

    /// What link `i`, with `open` connections, scores `now` for a new one
    /// (lower is better), where `best` is the best learned capacity of
    /// the links that may take it and stands for a capacity not learned
    /// yet: `(load + 1) /
    /// capacity`; an idle link's (less than one connection's load) divided
    /// by 1 + [`IDLE_FAVOUR`], a busy one's multiplied by 1 +
    /// [`SLOW_BUSY`] × (1 − capacity / best).
    ///
    /// The second: the score is the share a new connection gets now, and
    /// equal shares are not equal in the end. A download manager's last
    /// chunks, each placed where its share is largest, finish when their
    /// link lets them: on a fast link, as its other connections end and
    /// are not replaced, the last one speeds up to the whole link; on a
    /// slow one, never beyond the slow link. (12 workers pulling 1 MB
    /// chunks over links learned as 1.2, 1.2 and 0.4 MB/s run 5/5/1, where
    /// the slow link's 2/0.4 ties a fast one's 6/1.2 within the
    /// estimates' noise; when the slow link took that second connection
    /// late, it finished a sixth chunk of 36 after the rest: 0.82 of the
    /// sum instead of 0.92, in about half the runs.) An idle slow link
    /// still wins its first connection, so it is used.
    pub fn score(&self, i: usize, open: u64, best: f64, now: Instant) -> f64 {
        let capacity = self.meters[i].capacity.unwrap_or(best);
        let load = self.load(i, open, now);
        let score = (load + 1.0) / capacity;
        if load < 1.0 {
            score / (1.0 + IDLE_FAVOUR)
        } else {
            score * (1.0 + SLOW_BUSY * (1.0 - capacity / best).clamp(0.0, 1.0))
        }
    }

    /// The link for a new connection among those of `selector` that
    /// `eligible` accepts, where `open(i)` connections are open through
    /// link `i`, `now`: the lowest [`Balance::score`] (`best`: the best
    /// learned capacity of the links that may take it, [`Balance::unknown`]). An idle link
    /// still wins with a score up to 10% above the lowest: a connection
    /// there is likely to add the link's whole capacity, where one more on
    /// a busy link only shares it, and a difference within the estimates'
    /// noise should not leave it idle. (Six seeders at once over links
    /// learned as 1.2, 1.2 and 0.38 MB/s went 3/3/0, the slow link idle for
    /// the whole download; now 3/2/1.) Equal scores (nothing learned yet:
    /// all) fall to the round robin. Not counted as placed: the caller does
    /// that.
    pub fn pick(
        &self,
        selector: &mut Selector<usize>,
        eligible: impl Fn(usize) -> bool,
        open: impl Fn(usize) -> u64,
        best: f64,
        now: Instant,
    ) -> Option<usize> {
        selector.next_lowest(|&i| eligible(i), |&i| self.score(i, open(i), best, now))
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
mod tests;
