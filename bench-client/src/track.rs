//! Delivery accounting at a receiver: per sender, which sequence numbers arrived, which are
//! still missing, which came out of order and which twice.
//!
//! Owns: the classification of one arrival. Memory is bounded by the number of *gaps*, not
//! their length (missing sequence numbers are kept as ranges), so a burst of losses cannot
//! blow up the loader. Must never: count a duplicate as a delivery.

use std::collections::BTreeMap;

/// What one arrival was, relative to what this receiver had seen from the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence number: the normal case.
    InOrder,
    /// Ahead of the next expected one; `skipped` numbers are now missing (lost or late).
    AfterGap { skipped: u64 },
    /// A number that had been skipped earlier: delivered, but out of order.
    Late,
    /// Already delivered: not counted again.
    Duplicate,
}

impl Arrival {
    #[cfg(test)]
    pub fn is_delivery(self) -> bool {
        self != Arrival::Duplicate
    }
}

/// Per-(receiver, sender) sequence state.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// The lowest sequence number never seen in order: everything below it either arrived
    /// or is in `missing`.
    next: u64,
    /// Missing ranges below `next`, `start -> end` (end exclusive), disjoint.
    missing: BTreeMap<u64, u64>,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.missing.insert(self.next, seq);
            self.next = seq + 1;
            return Arrival::AfterGap { skipped };
        }
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else {
            return Arrival::Duplicate;
        };
        if seq >= end {
            return Arrival::Duplicate;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq);
        }
        if seq + 1 < end {
            self.missing.insert(seq + 1, end);
        }
        Arrival::Late
    }

    /// The sequence numbers in `lo..hi` this receiver never got, as ranges (end exclusive):
    /// the holes, and the tail from the highest number seen on.
    pub fn unseen(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .missing
            .iter()
            .map(|(&s, &e)| (s.max(lo), e.min(hi)))
            .filter(|(s, e)| s < e)
            .collect();
        let tail = self.next.max(lo);
        if tail < hi {
            out.push((tail, hi));
        }
        out
    }

    /// Sequence numbers skipped and not (yet) delivered late.
    pub fn missing(&self) -> u64 {
        self.missing.iter().map(|(s, e)| e - s).sum()
    }

    /// Highest sequence number seen plus one.
    #[cfg(test)]
    pub fn seen_up_to(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = SeqTracker::default();
        for seq in 0..100 {
            assert_eq!(t.observe(seq), Arrival::InOrder);
        }
        assert_eq!((t.missing(), t.seen_up_to()), (0, 100));
    }

    #[test]
    fn gap_then_late_fill_is_out_of_order_not_lost() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::AfterGap { skipped: 3 });
        assert_eq!(t.missing(), 3);
        assert_eq!(t.observe(2), Arrival::Late);
        assert_eq!(t.observe(1), Arrival::Late);
        assert_eq!(t.observe(3), Arrival::Late);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.observe(5), Arrival::InOrder);
    }

    #[test]
    fn duplicates_are_detected_everywhere() {
        let mut t = SeqTracker::default();
        t.observe(0);
        t.observe(1);
        t.observe(5); // 2..5 missing
        t.observe(3); // 2, 4 missing
        for dup in [0, 1, 3, 5] {
            assert_eq!(t.observe(dup), Arrival::Duplicate, "seq {dup}");
        }
        assert!(!Arrival::Duplicate.is_delivery());
        assert_eq!(t.missing(), 2);
        assert_eq!(t.observe(4), Arrival::Late);
        assert_eq!(t.observe(4), Arrival::Duplicate);
        assert_eq!(t.observe(2), Arrival::Late);
        assert_eq!(t.missing(), 0);
    }

    #[test]
    fn unseen_is_holes_and_tail_within_the_range() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 4, 5, 8] {
            t.observe(seq);
        }
        assert_eq!(t.unseen(0, 12), vec![(2, 4), (6, 8), (9, 12)]);
        assert_eq!(t.unseen(3, 7), vec![(3, 4), (6, 7)]);
        assert_eq!(t.unseen(0, 2), vec![]);
        assert_eq!(SeqTracker::default().unseen(5, 7), vec![(5, 7)]);
    }

    #[test]
    fn huge_gaps_cost_one_range() {
        let mut t = SeqTracker::default();
        t.observe(1_000_000_000);
        assert_eq!(t.missing(), 1_000_000_000);
        assert_eq!(t.observe(500_000_000), Arrival::Late);
        assert_eq!(t.missing.len(), 2);
    }
}
