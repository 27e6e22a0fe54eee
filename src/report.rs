//! What the links have carried, as text: the live table shown on a terminal,
//! and the per-link summary lines logged every minute and printed at exit.
//! Pure formatting; the caller decides where it goes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::balance::Strategy;
use crate::links::{Links, Stats};

/// One link's summary: `link eth0 10.0.0.2: up, 41 connections, 0 failures, up 1200 B, down 34000 B`
/// (UDP associations count as connections, and their bytes are in), then
/// once its capacity is learned, `link eth0 10.0.0.2 learned: 1.20 MB/s`,
/// and for a link that carried datagrams (the destinations it carried, not
/// only those pinned now):
/// `link eth0 10.0.0.2 udp: 3 destinations, up 10 datagrams 12000 B, down 8 datagrams 9600 B`.
pub fn summary_lines(links: &Links) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, l) in links.iter().enumerate() {
        let s = l.stats;
        lines.push(format!(
            "link {}: {}, {}, {}, up {} B, down {} B",
            l.label(),
            l.state(),
            count(s.total, "connection"),
            count(s.failures, "failure"),
            s.bytes_up,
            s.bytes_down
        ));
        if let Some(c) = links.learned(i) {
            lines.push(format!("link {} learned: {}", l.label(), capacity(Some(c))));
        }
        if s.udp_up + s.udp_down + s.udp_destinations > 0 {
            lines.push(format!(
                "link {} udp: {}, up {} {} B, down {} {} B",
                l.label(),
                count(s.udp_destinations, "destination"),
                count(s.udp_up, "datagram"),
                s.udp_bytes_up,
                count(s.udp_down, "datagram"),
                s.udp_bytes_down
            ));
        }
    }
    lines
}

/// `1 connection`, `2 connections`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A byte rate for people: `0 B/s`, `12.3 kB/s`, `1.20 MB/s`, `2.50 GB/s`
/// (units as [`bytes`]).
pub fn rate(bytes: u64, over: Duration) -> String {
    let per_s = bytes as f64 / over.as_secs_f64().max(1e-9);
    format!("{}/s", amount(per_s))
}

/// Bytes for people: `0 B`, `12.3 kB`, `1.20 MB`, `3.40 GB`; the next unit
/// where the rounded figure would reach 1000 (999,992 B is `1.00 MB`, not
/// `1000.0 kB`).
pub fn bytes(n: u64) -> String {
    amount(n as f64)
}

fn amount(n: f64) -> String {
    if n < 999.5 {
        format!("{n:.0} B")
    } else if n < 999_950.0 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 999_995_000.0 {
        format!("{:.2} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

/// A learned capacity for people, `-` while there is none.
pub fn capacity(bytes_per_s: Option<f64>) -> String {
    match bytes_per_s {
        Some(c) => rate(c.max(0.0) as u64, Duration::from_secs(1)),
        None => "-".to_string(),
    }
}

/// Said once at start: how connections are spread, and from what.
/// `balancing by learned capacity (learned before: l1 10.1.0.2 1.20 MB/s)`.
pub fn balancing_line(links: &Links) -> String {
    let mut line = links.strategy().describe().to_string();
    if links.strategy() == Strategy::Weights {
        return line;
    }
    let known: Vec<String> = links
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            Some(format!(
                "{} {}",
                l.label(),
                capacity(Some(links.learned(i)?))
            ))
        })
        .collect();
    if known.is_empty() {
        line.push_str(" (nothing learned yet)");
    } else {
        let _ = write!(line, " (learned before: {})", known.join(", "));
    }
    line
}

/// A count per second for people: `0/s`, `850/s`, `12.3k/s`, `1.20M/s`
/// (the next unit where the rounded figure would reach 1000).
pub fn per_second(n: u64, over: Duration) -> String {
    let per_s = n as f64 / over.as_secs_f64().max(1e-9);
    if per_s < 999.5 {
        format!("{per_s:.0}/s")
    } else if per_s < 999_950.0 {
        format!("{:.1}k/s", per_s / 1e3)
    } else {
        format!("{:.2}M/s", per_s / 1e6)
    }
}

/// The last few snapshots of the links' counters, so the live table shows
/// rates averaged over a few seconds, not jumps between 0 and a burst.
pub struct RateWindow {
    snaps: std::collections::VecDeque<(std::time::Instant, Vec<Stats>)>,
    seconds: usize,
}

impl RateWindow {
    /// Rates over the last `seconds` snapshots (one a second).
    pub fn new(seconds: usize) -> RateWindow {
        RateWindow {
            snaps: std::collections::VecDeque::new(),
            seconds: seconds.max(1),
        }
    }

    /// Adds the counters seen at `now`; gives the oldest snapshot kept and
    /// how long ago it was, to rate against (none before the first).
    pub fn push(&mut self, now: std::time::Instant, stats: Vec<Stats>) -> (Vec<Stats>, Duration) {
        let (since, base) = match self.snaps.front() {
            Some((at, base)) => (now.saturating_duration_since(*at), base.clone()),
            None => (Duration::from_secs(1), Vec::new()),
        };
        self.snaps.push_back((now, stats));
        while self.snaps.len() > self.seconds {
            self.snaps.pop_front();
        }
        (base, since.max(Duration::from_millis(1)))
    }
}

/// The live table: one row a link with its throughput since `before` (the
/// stats `over` ago, in link order).
pub fn table(links: &Links, before: &[Stats], over: Duration) -> String {
    let rows: Vec<[String; 11]> = links
        .iter()
        .enumerate()
        .zip(
            before
                .iter()
                .copied()
                .chain(std::iter::repeat(Stats::default())),
        )
        .map(|((i, l), b)| {
            let s = l.stats;
            [
                l.label(),
                l.state().to_string(),
                s.open.to_string(),
                s.total.to_string(),
                s.failures.to_string(),
                rate(s.bytes_up.saturating_sub(b.bytes_up), over),
                rate(s.bytes_down.saturating_sub(b.bytes_down), over),
                capacity(links.learned(i)),
                s.udp_pinned.to_string(),
                per_second(s.udp_up.saturating_sub(b.udp_up), over),
                per_second(s.udp_down.saturating_sub(b.udp_down), over),
            ]
        })
        .collect();
    let header = [
        "LINK",
        "STATE",
        "OPEN",
        "TOTAL",
        "FAILED",
        "UP",
        "DOWN",
        "LEARNED",
        "UDP DEST",
        "DGRAM UP",
        "DGRAM DOWN",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Text left-aligned, numbers right-aligned.
            let _ = match i {
                0 | 1 => write!(out, "{cell:<w$}  "),
                _ => write!(out, "{cell:>w$}  "),
            };
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

/// Snapshot of every link's counters, in link order.
pub fn stats(links: &Links) -> Vec<Stats> {
    links.iter().map(|l| l.stats).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkSpec;
    use std::num::NonZeroU32;

    fn links() -> Links {
        let t = |ip: &str, iface: Option<&str>| LinkSpec {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::MIN,
            iface: iface.map(String::from),
            follow: false,
        };
        let mut l = Links::new(
            vec![t("10.1.0.2", Some("l1")), t("10.2.0.2", None)],
            &[],
            false,
        );
        l.connected(0);
        l.add_bytes(0, 2_000, 3_000_000);
        l.associated(1);
        l.pin(1, true);
        for _ in 0..3 {
            l.datagram_up(1, 1_200);
        }
        l.datagram_down(1, 100);
        l
    }

    #[test]
    fn rates_are_averaged_over_the_window() {
        let t0 = std::time::Instant::now();
        let mut w = RateWindow::new(4);
        let at = |bytes: u64| {
            vec![Stats {
                bytes_down: bytes,
                ..Stats::default()
            }]
        };
        // A client that moves 4 MB in one burst every 4 s.
        let mut total = 0;
        let mut shown = Vec::new();
        for sec in 0..12u64 {
            if sec % 4 == 0 {
                total += 4_000_000;
            }
            let (base, over) = w.push(t0 + Duration::from_secs(sec), at(total));
            if sec >= 4 {
                let moved = total - base[0].bytes_down;
                shown.push(moved as f64 / over.as_secs_f64());
            }
        }
        // Every second shows about 1 MB/s (4 MB over 4 s, or 3 s right
        // after a burst), never 0 and never the 4 MB/s of the burst.
        assert!(
            shown.iter().all(|&r| (0.9e6..=1.4e6).contains(&r)),
            "{shown:?}"
        );
    }

    #[test]
    fn rates_read_naturally() {
        let s = Duration::from_secs(1);
        assert_eq!(rate(0, s), "0 B/s");
        assert_eq!(rate(12_300, s), "12.3 kB/s");
        assert_eq!(rate(1_200_000, s), "1.20 MB/s");
        assert_eq!(rate(999, s), "999 B/s");
        assert_eq!(rate(1_000, s), "1.0 kB/s");
        assert_eq!(rate(999_949, s), "999.9 kB/s");
        assert_eq!(rate(999_992, s), "1.00 MB/s");
        assert_eq!(rate(999_994_999, s), "999.99 MB/s");
        assert_eq!(rate(5_000_000_000, s), "5.00 GB/s");
        assert_eq!(per_second(999, s), "999/s");
        assert_eq!(per_second(1_000, s), "1.0k/s");
        assert_eq!(per_second(999_990, s), "1.00M/s");
        assert_eq!(rate(2_400_000, 2 * s), "1.20 MB/s");
    }

    #[test]
    fn summary_has_a_line_per_link() {
        assert_eq!(
            summary_lines(&links()),
            [
                "link l1 10.1.0.2: up, 1 connection, 0 failures, up 2000 B, down 3000000 B",
                "link 10.2.0.2: up, 1 connection, 0 failures, up 3600 B, down 100 B",
                "link 10.2.0.2 udp: 1 destination, up 3 datagrams 3600 B, down 1 datagram 100 B",
            ]
        );
    }

    #[test]
    fn learned_capacities_are_shown() {
        let t = |ip: &str| LinkSpec {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::MIN,
            iface: None,
            follow: false,
        };
        let seeds = vec![crate::learned::Entry {
            label: "10.2.0.2".into(),
            capacity: 1_200_000.0,
        }];
        let l = Links::new(vec![t("10.1.0.2"), t("10.2.0.2")], &[], false)
            .balancing(Strategy::Learn, seeds);
        assert_eq!(
            balancing_line(&l),
            "balancing by learned capacity (learned before: 10.2.0.2 1.20 MB/s)"
        );
        assert!(summary_lines(&l).contains(&"link 10.2.0.2 learned: 1.20 MB/s".to_string()));
        let table = table(&l, &[], Duration::from_secs(1));
        let row = table.lines().find(|r| r.starts_with("10.2.0.2")).unwrap();
        assert!(row.contains("1.20 MB/s"), "{table}");
        // By weights, what is learned does not place: not said.
        assert_eq!(balancing_line(&links()), "balancing by the weights given");
    }

    #[test]
    fn table_aligns_columns_and_shows_rates() {
        let l = links();
        let text = table(&l, &[], Duration::from_secs(1));
        assert_eq!(
            text,
            "LINK         STATE  OPEN  TOTAL  FAILED        UP       DOWN  LEARNED  UDP DEST  DGRAM UP  DGRAM DOWN\n\
             l1 10.1.0.2  up        1      1       0  2.0 kB/s  3.00 MB/s        -         0       0/s         0/s\n\
             10.2.0.2     up        1      1       0  3.6 kB/s    100 B/s        -         1       3/s         1/s\n"
        );
        // Against a snapshot taken now, nothing moved.
        let still = table(&l, &stats(&l), Duration::from_secs(1));
        assert!(
            !still.contains("kB/s") && !still.contains("MB/s") && !still.contains(" 3/s"),
            "{still}"
        );
    }
}
