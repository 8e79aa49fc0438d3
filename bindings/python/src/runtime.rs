//! The bridge between Python and tokio: one runtime per process, blocking calls that release the GIL and hear
//! Ctrl-C, and awaitables for asyncio.
//!
//! - A tokio runtime does not survive `fork()` (its worker threads stay in the parent). The runtime is kept with
//!   the PID that built it; a call from another PID (a forked child) builds a new one and leaks the old one
//!   (dropping it in the child would wait for threads that do not exist there).
//! - [`block_on`] spawns the future on the runtime and waits for it in short slices with the GIL released,
//!   calling `check_signals()` between slices: Ctrl-C raises `KeyboardInterrupt` within one slice and aborts the
//!   Rust task (cancelled at its next await point).
//! - [`into_awaitable`] hands a future to asyncio through pyo3-async-runtimes' generic bridge, over
//!   [`FerryRuntime`]. Its completion callbacks run only while the interpreter is alive: an `atexit` hook
//!   ([`mark_exiting`]) turns them into no-ops before the interpreter starts finalizing.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;
use tokio::runtime::Handle;

/// How long one GIL-free wait lasts before signals are checked again (Ctrl-C answers within this).
const SIGNAL_SLICE: Duration = Duration::from_millis(20);

/// Set by the `atexit` hook: from then on no background task attaches to the interpreter.
static EXITING: AtomicBool = AtomicBool::new(false);

struct ProcessRuntime {
    pid: u32,
    runtime: tokio::runtime::Runtime,
}

static RUNTIME: Mutex<Option<Arc<ProcessRuntime>>> = Mutex::new(None);

/// The runtime of this process, built on first use and rebuilt after a fork.
pub(crate) fn handle() -> PyResult<Handle> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = slot.as_ref() {
        if rt.pid == pid {
            return Ok(rt.runtime.handle().clone());
        }
    }
    if let Some(stale) = slot.take() {
        // Built by the parent before a fork: its threads are not in this process, so it cannot be shut down.
        std::mem::forget(stale);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("redis-ferry")
        .enable_all()
        .build()
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!(
                "cannot start the tokio runtime: {e}"
            ))
        })?;
    let handle = runtime.handle().clone();
    *slot = Some(Arc::new(ProcessRuntime { pid, runtime }));
    Ok(handle)
}

/// Called from an `atexit` hook: background completions stop touching Python.
pub(crate) fn mark_exiting() {
    EXITING.store(true, Ordering::SeqCst);
}

/// Whether background tasks may still attach to the interpreter.
pub(crate) fn python_alive() -> bool {
    !EXITING.load(Ordering::SeqCst)
}

/// Runs `fut` on the process runtime and waits for it with the GIL released. Ctrl-C (or any signal handler
/// that raises) aborts the task and propagates the exception. `timeout` bounds the wait: `Ok(None)` when it
/// passed (the task is aborted then too).
pub(crate) fn block_on_timeout<F, T>(
    py: Python<'_>,
    timeout: Option<Duration>,
    fut: F,
) -> PyResult<Option<T>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = handle()?;
    let slot: Arc<Slot<T>> = Arc::new(Slot::default());
    let task = {
        let slot = slot.clone();
        handle.spawn(async move {
            let value = fut.await;
            slot.put(value);
        })
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    task.abort();
                    return Ok(None);
                }
                left.min(SIGNAL_SLICE)
            }
            None => SIGNAL_SLICE,
        };
        let got = py.detach(|| {
            let v = slot.take_within(slice);
            if v.is_none() && !python_alive() {
                // The interpreter is exiting (a daemon thread still waiting): never attach to it again; the
                // process ends around this parked thread.
                loop {
                    std::thread::park();
                }
            }
            v
        });
        if let Some(v) = got {
            return Ok(Some(v));
        }
        if task.is_finished() {
            if let Some(v) = slot.take_within(Duration::ZERO) {
                return Ok(Some(v));
            }
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the operation ended without a result (its task panicked)",
            ));
        }
        if let Err(e) = py.check_signals() {
            task.abort();
            return Err(e);
        }
    }
}

/// Where a spawned task leaves its result for the blocked caller.
struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: Mutex::new(None),
            ready: Condvar::new(),
        }
    }
}

impl<T> Slot<T> {
    fn put(&self, v: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.ready.notify_all();
    }

    /// The value, waiting at most `wait` for it.
    fn take_within(&self, wait: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .ready
            .wait_timeout_while(guard, wait, |v| v.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.take()
    }
}

/// [`block_on_timeout`] without a deadline.
pub(crate) fn block_on<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match block_on_timeout(py, None, fut)? {
        Some(v) => Ok(v),
        None => unreachable!("no deadline was set"),
    }
}

/// An asyncio awaitable for `fut`, which runs on the process runtime. Cancelling the awaitable drops `fut`.
pub(crate) fn into_awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    handle()?; // build (or rebuild after fork) before the bridge spawns
    pyo3_async_runtimes::generic::future_into_py::<FerryRuntime, _, T>(py, fut)
}

/// pyo3-async-runtimes' view of the process runtime.
pub(crate) struct FerryRuntime;

/// The join error of a [`FerryRuntime`] task.
pub(crate) struct FerryJoinError(tokio::task::JoinError);

impl JoinError for FerryJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// A join handle whose error type is [`FerryJoinError`].
pub(crate) struct FerryJoinHandle(tokio::task::JoinHandle<()>);

impl Future for FerryJoinHandle {
    type Output = Result<(), FerryJoinError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(FerryJoinError)
    }
}

fn current_handle() -> Handle {
    match handle() {
        Ok(h) => h,
        // Building a runtime failed after it had worked once in this process: nothing can run.
        Err(e) => panic!("redis-ferry: no tokio runtime: {e}"),
    }
}

impl Runtime for FerryRuntime {
    type JoinError = FerryJoinError;
    type JoinHandle = FerryJoinHandle;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        FerryJoinHandle(current_handle().spawn(fut))
    }

    /// The bridge uses this to attach to Python and complete the asyncio future; after the `atexit` hook ran
    /// the closure is dropped unrun, so nothing attaches to a finalizing interpreter.
    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        FerryJoinHandle(current_handle().spawn_blocking(move || {
            if python_alive() {
                f()
            }
        }))
    }
}

impl ContextExt for FerryRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}
