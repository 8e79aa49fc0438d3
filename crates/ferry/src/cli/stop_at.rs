//! A test-only hook of the `ferry` program: with `FERRY_TEST_STOP_AT=<step>` in the environment, the process
//! stops itself (SIGSTOP) when the library logs an event whose `step` field is `<step>` (the named crash points
//! of the DR calls, such as `failover_fenced_on_b`). A test waits for the line this prints on stderr, then
//! SIGKILLs the process exactly there. The step events are at level info: a `RUST_LOG` that filters them out
//! disables the hook. Without the variable the layer is not installed.

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The environment variable naming the step.
pub const ENV: &str = "FERRY_TEST_STOP_AT";

/// The layer: stops the process at the named step.
#[derive(Debug)]
pub struct StopAt {
    step: String,
}

impl StopAt {
    /// The layer when `FERRY_TEST_STOP_AT` is set to a non-empty step name.
    pub fn from_env() -> Option<StopAt> {
        std::env::var(ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .map(|step| StopAt { step })
    }
}

/// Finds the `step` field of an event.
struct StepField(Option<String>);

impl Visit for StepField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "step" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "step" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S: Subscriber> Layer<S> for StopAt {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut found = StepField(None);
        event.record(&mut found);
        if found.0.as_deref() != Some(self.step.as_str()) {
            return;
        }
        eprintln!("ferry: test hook: stopped at step {}", self.step);
        // The whole process stops (every thread), so nothing after the step runs; SIGCONT would resume it.
        let pid = std::process::id().to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", pid.as_str()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // No `kill` program: at least this thread (the call's) never goes on.
            loop {
                std::thread::park();
            }
        }
    }
}
