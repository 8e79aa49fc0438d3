//! The one backoff of the crate: exponential, capped, with jitter, for every retry (reconnects of the job, a
//! source answering `-LOADING`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delays that double from `base` up to `cap`; each one is drawn at random between half of it and all of it,
/// so many jobs restarted together do not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `base` (at least 1 ms), never above `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        let base = base.max(Duration::from_millis(1));
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            base,
            cap: cap.max(base),
            next: base,
            rng: seed | 1,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(self.cap);
        // xorshift64: enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = full / 2;
        let extra = self.rng % (half.as_micros() as u64 + 1);
        half + Duration::from_micros(extra)
    }

    /// Starts again from `base` (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut full = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} not within [{:?}, {full:?}]",
                full / 2
            );
            full = (full * 2).min(Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
