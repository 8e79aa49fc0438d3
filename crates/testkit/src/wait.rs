//! Waiting for conditions with deadlines instead of sleeping.

use std::time::{Duration, Instant};

use crate::Error;

/// Polls `f` until it returns `true` or `deadline` has passed.
///
/// Polling starts every 5 ms and backs off to every 100 ms. On timeout the error names `what`,
/// so a failing test says which condition never held.
///
/// ```
/// use std::time::Duration;
/// let mut n = 0;
/// ferry_testkit::wait_until(Duration::from_secs(1), "n reaches 3", || { n += 1; n >= 3 }).unwrap();
/// ```
pub fn wait_until<F: FnMut() -> bool>(
    deadline: Duration,
    what: &str,
    mut f: F,
) -> Result<(), Error> {
    wait_for(deadline, what, || f().then_some(())).map(|_| ())
}

/// Polls `f` until it returns `Some(value)` or `deadline` has passed, and returns the value.
///
/// Like [`wait_until`], for conditions that produce something (an address, a node id).
pub fn wait_for<T, F: FnMut() -> Option<T>>(
    deadline: Duration,
    what: &str,
    mut f: F,
) -> Result<T, Error> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let waited = start.elapsed();
        if waited >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited,
            });
        }
        std::thread::sleep(pause.min(deadline - waited));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
