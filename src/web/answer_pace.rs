//! The answer to a signup takes as long whether or not the address was known.
//!
//! A signup that queues a confirmation email writes more (the cooldown, the outbox row) than one
//! for an address that is confirmed already or in its cooldown, so its answer came later, which
//! told a stranger whether an address was on the list (measured: BENCHMARKS.md, "Measurements behind the code"). So every
//! answer that queued nothing waits until the typical time of one that did.
//! Answers that queue an email (nearly all signups, and all of the signup benchmark) wait for
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A running estimate of the median time a signup that queued a confirmation took to answer.
/// A median, not a mean: a few slow answers (a checkpoint, a busy moment) would lift a mean
/// above what most answers take, and the known addresses would then be the slow ones.
#[derive(Debug, Default)]
pub struct AnswerPace {
    /// Microseconds; 0 until the first answer that queued an email.
    queued_micros: AtomicU64,
}

/// Each answer moves the estimate by 1/32 of itself towards its side (a "frugal" streaming
/// median: it settles where as many answers are above as below).
const STEP_SHIFT: u32 = 5;

/// tokio's timer wakes on whole milliseconds, after the deadline: a sleep lasts half a
/// millisecond longer than asked, on average. The wait is shortened by that much.
const TIMER_LATENESS: Duration = Duration::from_micros(1_000);

/// No answer is held back longer than this, whatever the average says (a slow moment of the
/// database must not make every later answer slow).
const MAX_WAIT: Duration = Duration::from_millis(250);

impl AnswerPace {
    /// Notes an answer that took `elapsed`; returns how much longer it should wait before it is
    /// sent: nothing when it queued an email, else the rest of the average time of those that
    /// did.
    pub fn wait_for(&self, queued_email: bool, elapsed: Duration) -> Duration {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if queued_email {
            let _ =
                self.queued_micros
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |median| {
                        let step = (median >> STEP_SHIFT).max(1);
                        Some(if median == 0 {
                            micros
                        } else if micros > median {
                            median + step
                        } else if micros < median {
                            median - step
                        } else {
                            median
                        })
                    });
            return Duration::ZERO;
        }
        let typical = Duration::from_micros(self.queued_micros.load(Ordering::Relaxed));
        typical
            .saturating_sub(elapsed)
            .saturating_sub(TIMER_LATENESS)
            .min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_answer_that_queued_nothing_waits_for_the_typical_time_of_one_that_did() {
        let pace = AnswerPace::default();
        // Before any email was queued there is nothing to match.
        assert_eq!(pace.wait_for(false, ms(1)), Duration::ZERO);
        assert_eq!(pace.wait_for(true, ms(2)), Duration::ZERO);
        // The rest of the typical time, less the timer's lateness.
        assert_eq!(
            pace.wait_for(false, Duration::from_micros(400)),
            Duration::from_micros(600)
        );
        // The estimate settles at the median of the answers that queued an email: a few
        // very slow ones do not lift it.
        for i in 0..2_000 {
            let took = if i % 10 == 0 {
                ms(100)
            } else {
                ms(10 + (i % 3))
            };
            pace.wait_for(true, took);
        }
        let wait = pace.wait_for(false, ms(1));
        assert!(wait >= ms(8) && wait <= ms(10), "{wait:?}");
        // An answer slower than the typical one waits for nothing; none waits past the ceiling.
        assert_eq!(pace.wait_for(false, ms(20)), Duration::ZERO);
        for _ in 0..2_000 {
            pace.wait_for(true, Duration::from_secs(5));
        }
        assert_eq!(pace.wait_for(false, ms(1)), MAX_WAIT);
    }
}
