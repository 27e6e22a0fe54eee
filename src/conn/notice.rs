//! Log lines that a misbehaving client could repeat without end, let
//! through a few at a time.

use std::time::{Duration, Instant};

/// Lets a warning through at most once a minute, so a misconfigured client
/// retrying in a loop does not flood the log.
#[derive(Default)]
pub struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    pub fn allow(&mut self, now: Instant) -> bool {
        let ok = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if ok {
            self.last = Some(now);
        }
        ok
    }
}

/// Lets a few lines through per window and counts the rest, so a burst of
/// failures is visible in the log without flooding it.
#[derive(Default)]
pub struct Budget {
    window: Option<Instant>,
    used: u32,
    suppressed: u32,
}

impl Budget {
    const LINES: u32 = 5;
    const WINDOW: Duration = Duration::from_secs(10);

    /// Whether a line may be logged now; a new window first reports how many
    /// were left out of the last one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|t| now.duration_since(t) >= Self::WINDOW)
        {
            if self.suppressed > 0 {
                log::info!(
                    "... and {} more failed connections not shown",
                    self.suppressed
                );
            }
            *self = Budget {
                window: Some(now),
                ..Budget::default()
            };
        }
        if self.used < Self::LINES {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[derive(Default)]
pub struct Notices {
    pub missing_family: RateLimit,
    /// Failed connections are logged at info level, a few at a time.
    pub failures: Budget,
    /// A client refused an association over its limit.
    pub client_associations: RateLimit,
    /// An association refused: all of them are open.
    pub associations_full: RateLimit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_few_lines_per_window() {
        let mut b = Budget::default();
        let t = Instant::now();
        let allowed = (0..8).filter(|_| b.allow(t)).count();
        assert_eq!(allowed, 5);
        assert_eq!(b.suppressed, 3);
        assert!(b.allow(t + Budget::WINDOW));
        assert_eq!(b.suppressed, 0);
    }

    #[test]
    fn rate_limit_allows_once_a_minute() {
        let mut r = RateLimit::default();
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(!r.allow(t + Duration::from_secs(59)));
        assert!(r.allow(t + Duration::from_secs(60)));
    }
}
