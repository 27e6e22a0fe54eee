//! Smooth weighted round robin, as nginx balances upstreams
//! (`ngx_http_upstream_get_peer`): every pick adds each entry's weight to its
//! running score, takes the highest score, and lowers the winner by the total.
//! Over any window of `total` picks each entry is chosen exactly `weight`
//! times, and the picks are spread out: weights 5 and 1 give `AAABAA`, not
//! `AAAAAB`.

use std::num::NonZeroU32;

struct Entry<T> {
    item: T,
    weight: i64,
    current: i64,
}

/// A weighted round-robin over items of one kind. Deterministic, no I/O.
///
/// ```
/// use std::num::NonZeroU32;
/// use dispatch::wrr::Selector;
///
/// let w = |n| NonZeroU32::new(n).unwrap();
/// let mut links = Selector::new([("eth0", w(2)), ("wlan0", w(1))]);
/// let picks: Vec<_> = (0..6).map(|_| links.next().unwrap()).collect();
/// assert_eq!(picks, ["eth0", "wlan0", "eth0", "eth0", "wlan0", "eth0"]);
/// ```
pub struct Selector<T> {
    entries: Vec<Entry<T>>,
}

impl<T: Copy> Selector<T> {
    pub fn new(items: impl IntoIterator<Item = (T, NonZeroU32)>) -> Selector<T> {
        let entries: Vec<Entry<T>> = items
            .into_iter()
            .map(|(item, w)| Entry {
                item,
                weight: i64::from(w.get()),
                current: 0,
            })
            .collect();
        Selector { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next item, `None` when there are none.
    #[allow(clippy::should_implement_trait)] // never ends: not an Iterator
    pub fn next(&mut self) -> Option<T> {
        self.next_where(|_| true)
    }

    /// The next item among those `eligible` accepts. The others sit the
    /// round out, unchanged, so the eligible ones keep their proportions
    /// (nginx skips down peers the same way).
    pub fn next_where(&mut self, mut eligible: impl FnMut(&T) -> bool) -> Option<T> {
        let mut best: Option<(usize, i64)> = None;
        let mut total = 0;
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !eligible(&e.item) {
                continue;
            }
            e.current += e.weight;
            total += e.weight;
            // Ties go to the earlier entry, as in nginx.
            if best.is_none_or(|(_, score)| e.current > score) {
                best = Some((i, e.current));
            }
        }
        let (i, _) = best?;
        let winner = &mut self.entries[i];
        winner.current -= total;
        Some(winner.item)
    }

    /// The eligible item with the lowest `rank`; among equal ranks, the one
    /// [`Selector::next_where`] would pick. Every pick is a round of the
    /// round robin, whoever wins it: the eligible items gain their weight
    /// and the winner pays the total, so when the ranks tie again the
    /// rotation carries on where it was. With one rank for all this is
    /// exactly `next_where`.
    pub fn next_lowest<R: PartialOrd>(
        &mut self,
        mut eligible: impl FnMut(&T) -> bool,
        mut rank: impl FnMut(&T) -> R,
    ) -> Option<T> {
        let mut best: Option<(usize, R, i64)> = None;
        let mut total = 0;
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !eligible(&e.item) {
                continue;
            }
            e.current += e.weight;
            total += e.weight;
            let r = rank(&e.item);
            let better = match &best {
                None => true,
                Some((_, best_rank, score)) => {
                    r < *best_rank || (r == *best_rank && e.current > *score)
                }
            };
            if better {
                best = Some((i, r, e.current));
            }
        }
        let (i, _, _) = best?;
        let winner = &mut self.entries[i];
        winner.current -= total;
        Some(winner.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn sequence(weights: &[(char, u32)], picks: usize) -> String {
        let mut s = Selector::new(weights.iter().map(|&(c, n)| (c, w(n))));
        (0..picks).map(|_| s.next().unwrap()).collect()
    }

    #[test]
    fn weights_7_3_interleave() {
        let one_round = sequence(&[('A', 7), ('B', 3)], 10);
        assert_eq!(one_round, "ABAAABAABA");
        // Every round of 10 is the same: exactly 7 and 3, never a run of 7.
        assert_eq!(sequence(&[('A', 7), ('B', 3)], 30), one_round.repeat(3));
    }

    #[test]
    fn weights_5_1() {
        assert_eq!(sequence(&[('A', 5), ('B', 1)], 12), "AAABAAAAABAA");
    }

    #[test]
    fn weights_3_1() {
        assert_eq!(sequence(&[('A', 3), ('B', 1)], 8), "AABAAABA");
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(sequence(&[('A', 1), ('B', 1), ('C', 1)], 7), "ABCABCA");
    }

    #[test]
    fn weights_2_1() {
        assert_eq!(sequence(&[('A', 2), ('B', 1)], 6), "ABAABA");
    }

    #[test]
    fn single_item_always_wins() {
        assert_eq!(sequence(&[('A', 4)], 5), "AAAAA");
    }

    #[test]
    fn empty_selector_gives_none() {
        let mut s: Selector<char> = Selector::new([]);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn skipped_items_leave_the_others_in_proportion() {
        let mut s = Selector::new([('A', w(2)), ('B', w(1)), ('C', w(1))]);
        let no_b: String = (0..6)
            .map(|_| s.next_where(|&c| c != 'B').unwrap())
            .collect();
        assert_eq!(no_b, "ACAACA");
        // Back in, B gets its share again.
        let all: String = (0..8).map(|_| s.next().unwrap()).collect();
        assert_eq!(all.matches('B').count(), 2);
        assert_eq!(s.next_where(|_| false), None);
    }

    #[test]
    fn lowest_rank_wins_and_ties_keep_the_rotation() {
        let mut s = Selector::new([('A', w(1)), ('B', w(1))]);
        let tie: String = (0..4)
            .map(|_| s.next_lowest(|_| true, |_| 0).unwrap())
            .collect();
        assert_eq!(tie, "ABAB", "one rank for all: plain round robin");
        // B ranks lower twice; when they tie again, A catches up on the
        // turns it missed before the rotation resumes.
        assert_eq!(s.next_lowest(|_| true, |&c| u8::from(c == 'A')), Some('B'));
        assert_eq!(s.next_lowest(|_| true, |&c| u8::from(c == 'A')), Some('B'));
        let after: String = (0..6)
            .map(|_| s.next_lowest(|_| true, |_| 0).unwrap())
            .collect();
        assert_eq!(after, "AAABAB");
        assert_eq!(s.next_lowest(|&c| c == 'B', |_| 0), Some('B'));
        assert_eq!(s.next_lowest(|_| false, |_| 0), None);
    }

    #[test]
    fn one_rank_for_all_is_the_weighted_sequence() {
        let mut s = Selector::new([('A', w(7)), ('B', w(3))]);
        let got: String = (0..10)
            .map(|_| s.next_lowest(|_| true, |_| 1.0).unwrap())
            .collect();
        assert_eq!(got, sequence(&[('A', 7), ('B', 3)], 10));
    }

    #[test]
    fn is_empty_only_without_items() {
        let none: Selector<char> = Selector::new([]);
        assert!(none.is_empty());
        assert!(!Selector::new([('A', w(1))]).is_empty());
    }
}
