//! The open-loop timetable of one sending connection.
//!
//! Owns: when each message is *due*. Message `seq` is due at `first + seq * period`, fixed
//! before the run starts, whatever the server or the loader does later. A message sent late
//! still carries its due time as its stamp (wrk2's correction for coordinated omission): if
//! the server stalls for 100 ms, the messages that should have gone out meanwhile are sent in
//! a burst and each shows the stall in its latency, instead of silently not being sent.
//! Must never: derive a due time from the time the previous message actually went out.

/// One connection's fixed timetable.
#[derive(Debug, Clone)]
pub struct Timetable {
    first_ns: u64,
    period_ns: u64,
    /// Nothing is due at or after this instant (the end of the send phase).
    end_ns: u64,
    next_seq: u64,
}

impl Timetable {
    /// A timetable starting at `start_ns + phase_ns`, one message per `period_ns`.
    /// `phase_ns` (in `0..period_ns`, drawn at random by the caller) spreads connections
    /// over one period so that they do not all fire at the same instant.
    pub fn new(start_ns: u64, period_ns: u64, phase_ns: u64, end_ns: u64) -> Timetable {
        Timetable {
            first_ns: start_ns + phase_ns,
            period_ns: period_ns.max(1),
            end_ns,
            next_seq: 0,
        }
    }

    /// When message 0 is due (start plus phase).
    pub fn first_ns(&self) -> u64 {
        self.first_ns
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// The due time of message `seq`.
    pub fn due_at(&self, seq: u64) -> u64 {
        self.first_ns
            .saturating_add(seq.saturating_mul(self.period_ns))
    }

    /// When the next message is due, or `None` once the send phase is over.
    pub fn next_due(&self) -> Option<u64> {
        let due = self.due_at(self.next_seq);
        (due < self.end_ns).then_some(due)
    }

    /// The next message if it is due at `now_ns`: `(seq, due time)`. Call until `None` to
    /// catch up after a stall; each late message keeps its own due time.
    pub fn take_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        let due = self.next_due()?;
        if due > now_ns {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, due))
    }

    /// How many messages have been taken: sequence numbers `0..sent()`.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }
}

/// Period of connection `id` in an open-loop run of `rate` messages/s over `conns`
/// connections. With `hot_every` = K > 0, every K-th connection (id % K == 0) is *hot* and
/// sends `hot_weight` times as often as the others; the total rate stays `rate`. With K = 0
/// every connection sends `rate / conns` per second.
pub fn skewed_period_ns(
    rate: f64,
    conns: usize,
    id: usize,
    hot_every: usize,
    hot_weight: f64,
) -> u64 {
    let (hot, weight_sum) = if hot_every == 0 {
        (false, conns as f64)
    } else {
        let hot_count = conns.div_ceil(hot_every);
        let cold = (conns - hot_count) as f64;
        (id % hot_every == 0, cold + hot_count as f64 * hot_weight)
    };
    let weight = if hot { hot_weight } else { 1.0 };
    // This connection's share of the rate is weight / weight_sum.
    ((weight_sum / (rate * weight)) * 1e9).max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_skew_is_rate_over_conns() {
        assert_eq!(skewed_period_ns(1000.0, 100, 7, 0, 10.0), 100_000_000);
    }

    #[test]
    fn hot_connections_send_weight_times_more_and_the_total_rate_holds() {
        // 10 conns, every 5th hot (ids 0 and 5) with weight 9: weights 8*1 + 2*9 = 26.
        let rate = 2600.0;
        let hot = skewed_period_ns(rate, 10, 5, 5, 9.0);
        let cold = skewed_period_ns(rate, 10, 3, 5, 9.0);
        assert_eq!(hot, 1_111_111); // 26 / (2600 * 9) s
        assert_eq!(cold, 10_000_000); // 26 / 2600 s
        let total: f64 = (0..10)
            .map(|id| 1e9 / skewed_period_ns(rate, 10, id, 5, 9.0) as f64)
            .sum();
        assert!((total - rate).abs() < 1.0, "{total}");
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let mut t = Timetable::new(1_000, 100, 30, 10_000);
        assert_eq!(t.next_due(), Some(1_030));
        assert_eq!(t.take_due(1_029), None);
        assert_eq!(t.take_due(1_030), Some((0, 1_030)));
        assert_eq!(t.take_due(1_129), None);
    }

    #[test]
    fn a_late_send_keeps_its_scheduled_stamp() {
        // The loop wakes 350 ns late: the four overdue messages go out now, each stamped with
        // the time it was due, not the time it left.
        let mut t = Timetable::new(0, 100, 0, 10_000);
        let burst: Vec<_> = std::iter::from_fn(|| t.take_due(350)).collect();
        assert_eq!(burst, vec![(0, 0), (1, 100), (2, 200), (3, 300)]);
        assert_eq!(t.next_due(), Some(400));
        assert_eq!(t.sent(), 4);
    }

    #[test]
    fn the_schedule_ends_at_the_end_of_the_send_phase() {
        let mut t = Timetable::new(0, 100, 50, 300);
        let all: Vec<_> = std::iter::from_fn(|| t.take_due(u64::MAX)).collect();
        assert_eq!(all, vec![(0, 50), (1, 150), (2, 250)]);
        assert_eq!(t.next_due(), None);
    }
}
