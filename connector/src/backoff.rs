//! Exponential backoff with jitter for reconnects: each failure doubles the
//! ceiling up to a maximum, each delay is drawn from the upper half of the
//! ceiling (so a fleet of connectors does not reconnect in lockstep), and a
//! connection that stayed up for a stable period resets it.

use std::time::Duration;

/// Backoff state of one connection slot.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `max`.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The ceiling for the current attempt: `base * 2^attempt`, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, in `[ceiling / 2, ceiling]`; raises the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.random() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the first delay, after a stable connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn random(&mut self) -> u64 {
        // xorshift64: jitter needs spread, not secrecy.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            base_ms in 1u64..5_000,
            max_ms in 1u64..120_000,
            seed in any::<u64>(),
            steps in 1usize..80,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms);
            let mut b = Backoff::new(base, max, seed);
            let mut last_ceiling = Duration::ZERO;
            for _ in 0..steps {
                let ceiling = b.ceiling();
                prop_assert!(ceiling >= last_ceiling, "ceiling never shrinks");
                prop_assert!(ceiling <= max.max(base));
                let d = b.next_delay();
                prop_assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
                last_ceiling = ceiling;
            }
            b.reset();
            prop_assert_eq!(b.ceiling(), base.min(max.max(base)));
        }
    }

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let ceilings: Vec<_> = (0..6)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay();
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
