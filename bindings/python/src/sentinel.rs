//! `SentinelPool` for Python: the ferry-sentinel pool, driven on the process runtime, with a blocking and an
//! asyncio surface (the Python layer splits them into `SentinelPool` and `AsyncSentinelPool`).

use std::time::Duration;

use ferry::{SentinelPool, SentinelPoolOptions};
// The façade re-exports the pool and its options; the address, error and reply types come from the pool crate.
use ferry_sentinel::{Addr, Error, Frame};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::frame_to_py;
use crate::errors;
use crate::runtime;

/// The exception of a pool error. Errors of a connection are classified by the façade (`From<ferry_resp::Error>`);
/// the pool's own outcomes are classified here: bad options and an unmonitored name are configuration errors, a
/// closed pool is stopped, an error reply to a command is a `ResponseError`, and failing to reach a master is a
/// connection error (an authentication failure when the sentinels' last error says so).
fn to_py_err(e: Error) -> PyErr {
    let message = e.to_string();
    let kind = match e {
        Error::InvalidOptions(_) | Error::NotMonitored { .. } => ferry::ErrorKind::Config,
        Error::Closed => ferry::ErrorKind::Stopped,
        Error::Resp(source) => {
            // The server's error reply to the command itself (the façade says which replies are an
            // authentication refusal) is a `ResponseError` whose message is the reply as the server wrote it.
            let reply = source.server_error().map(|s| s.to_string());
            match (reply, ferry::Error::from(source).kind()) {
                (Some(text), ferry::ErrorKind::TargetRefused) => {
                    return errors::response_error(text.as_bytes())
                }
                (_, kind) => kind,
            }
        }
        Error::Connect { source, .. } => ferry::Error::from(source).kind(),
        Error::AllSentinelsDown {
            last_error: Some(text),
            ..
        } if text.contains("authentication failed") => ferry::ErrorKind::Auth,
        _ => ferry::ErrorKind::Connection,
    };
    errors::error(kind.as_str(), message)
}

/// A reply converted to Python when the result is handed over (under the GIL).
pub(crate) struct Reply(Frame);

impl<'py> IntoPyObject<'py> for Reply {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(frame_to_py(py, &self.0)?.into_bound(py))
    }
}

/// Several replies, as a list.
pub(crate) struct Replies(Vec<Frame>);

impl<'py> IntoPyObject<'py> for Replies {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for f in &self.0 {
            list.append(frame_to_py(py, f)?)?;
        }
        Ok(list.into_any())
    }
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        errors::error(
            "config",
            format!("{name} must be a non-negative number of seconds, got {s}"),
        )
    })
}

/// Options as the Python layer passes them (already validated for types there).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct PoolArgs {
    master_name: String,
    sentinels: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
    db: u32,
    max_total: usize,
    max_idle: usize,
    min_idle: usize,
    max_wait: Option<f64>,
    block_when_exhausted: bool,
    test_on_borrow: bool,
    sentinel_timeout: f64,
    resolve_timeout: f64,
    poll_interval: f64,
    listener_retry_base: f64,
}

impl PoolArgs {
    fn options(self) -> PyResult<SentinelPoolOptions> {
        let mut o = SentinelPoolOptions::new(
            self.master_name,
            self.sentinels.into_iter().map(|(h, p)| Addr::new(h, p)),
        )
        .max_total(self.max_total)
        .max_idle(self.max_idle)
        .min_idle(self.min_idle)
        .block_when_exhausted(self.block_when_exhausted)
        .test_on_borrow(self.test_on_borrow)
        .sentinel_timeout(seconds("sentinel_timeout", self.sentinel_timeout)?)
        .resolve_timeout(seconds("resolve_timeout", self.resolve_timeout)?)
        .poll_interval(seconds("poll_interval", self.poll_interval)?)
        .listener_retry_base(seconds("listener_retry_base", self.listener_retry_base)?);
        o = o.max_wait(match self.max_wait {
            Some(s) => Some(seconds("max_wait", s)?),
            None => None,
        });
        if let Some(p) = &self.password {
            o = o.data_auth(self.username.as_deref(), p);
        } else if self.username.is_some() {
            return Err(errors::error(
                "config",
                "username given without password".into(),
            ));
        }
        o.data_connect.db = i64::from(self.db);
        if let Some(p) = &self.sentinel_password {
            o = o.sentinel_auth(self.sentinel_username.as_deref(), p);
        } else if self.sentinel_username.is_some() {
            return Err(errors::error(
                "config",
                "sentinel_username given without sentinel_password".into(),
            ));
        }
        Ok(o)
    }
}

/// The pool plus the PID that created it: after a fork the child must build its own.
#[pyclass(module = "redis_ferry._native", name = "SentinelPool", frozen)]
pub(crate) struct NativeSentinelPool {
    pool: SentinelPool,
    pid: u32,
}

impl NativeSentinelPool {
    fn pool(&self) -> PyResult<SentinelPool> {
        if self.pid != std::process::id() {
            return Err(errors::error(
                "stopped",
                format!(
                    "this SentinelPool was created in process {} before a fork; create a new one in process {}",
                    self.pid,
                    std::process::id()
                ),
            ));
        }
        Ok(self.pool.clone())
    }
}

/// Sends `cmds` on one borrowed connection; `transaction` wraps them in MULTI/EXEC and returns EXEC's replies.
async fn run_pipeline(
    pool: SentinelPool,
    cmds: Vec<Vec<Vec<u8>>>,
    transaction: bool,
) -> Result<Vec<Frame>, Error> {
    let mut conn = pool.get().await?;
    if !transaction {
        return conn.pipeline(&cmds).await;
    }
    let n = cmds.len();
    let mut all = Vec::with_capacity(n + 2);
    all.push(vec![b"MULTI".to_vec()]);
    all.extend(cmds);
    all.push(vec![b"EXEC".to_vec()]);
    let mut replies = conn.pipeline(&all).await?;
    match replies.pop() {
        Some(Frame::Array(items)) => Ok(items),
        Some(Frame::Null) | Some(Frame::NullArray) => Ok(Vec::new()),
        Some(Frame::Error(e)) => {
            // EXECABORT: name the first command that was refused when queued.
            let first = replies.iter().find_map(|f| match f {
                Frame::Error(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            });
            let text = String::from_utf8_lossy(&e).into_owned();
            Ok(vec![Frame::Error(match first {
                Some(f) => format!("{text} ({f})").into(),
                None => text.into(),
            })])
        }
        other => Err(Error::InvalidOptions(format!(
            "unexpected EXEC reply: {other:?}"
        ))),
    }
}

#[pymethods]
impl NativeSentinelPool {
    /// Resolves the master and starts following it (blocking; Ctrl-C aborts).
    #[staticmethod]
    fn connect(py: Python<'_>, args: PoolArgs) -> PyResult<Self> {
        let opts = args.options()?;
        let pool = runtime::block_on(py, SentinelPool::new(opts))?.map_err(to_py_err)?;
        Ok(NativeSentinelPool {
            pool,
            pid: std::process::id(),
        })
    }

    /// The same as an awaitable.
    #[staticmethod]
    fn connect_async(py: Python<'_>, args: PoolArgs) -> PyResult<Bound<'_, PyAny>> {
        let opts = args.options()?;
        runtime::into_awaitable(py, async move {
            let pool = SentinelPool::new(opts).await.map_err(to_py_err)?;
            Ok(NativeSentinelPool {
                pool,
                pid: std::process::id(),
            })
        })
    }

    /// Runs one command on the current master; an error reply raises.
    fn call(&self, py: Python<'_>, args: Vec<Vec<u8>>) -> PyResult<Py<PyAny>> {
        let pool = self.pool()?;
        let frame =
            runtime::block_on(py, async move { pool.call(&args).await })?.map_err(to_py_err)?;
        frame_to_py(py, &frame)
    }

    /// The same as an awaitable.
    fn call_async<'py>(&self, py: Python<'py>, args: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyAny>> {
        let pool = self.pool()?;
        runtime::into_awaitable(py, async move {
            pool.call(&args).await.map(Reply).map_err(to_py_err)
        })
    }

    /// Sends several commands on one connection and returns every reply (error replies as exception
    /// instances in place).
    fn pipeline(
        &self,
        py: Python<'_>,
        cmds: Vec<Vec<Vec<u8>>>,
        transaction: bool,
    ) -> PyResult<Py<PyAny>> {
        let pool = self.pool()?;
        let frames =
            runtime::block_on(py, run_pipeline(pool, cmds, transaction))?.map_err(to_py_err)?;
        Ok(Replies(frames).into_pyobject(py)?.unbind())
    }

    /// The same as an awaitable.
    fn pipeline_async<'py>(
        &self,
        py: Python<'py>,
        cmds: Vec<Vec<Vec<u8>>>,
        transaction: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pool = self.pool()?;
        runtime::into_awaitable(py, async move {
            run_pipeline(pool, cmds, transaction)
                .await
                .map(Replies)
                .map_err(to_py_err)
        })
    }

    /// `host:port` of the master the pool writes to now, or None while it is being resolved.
    fn master_addr(&self) -> Option<String> {
        self.pool.master_addr().map(|a| a.to_string())
    }

    /// The master generation (grows by one per switch).
    fn generation(&self) -> u64 {
        self.pool.generation()
    }

    /// Stops following the master and closes the idle connections; later calls raise `Stopped`.
    fn close(&self) {
        if self.pid == std::process::id() {
            self.pool.close();
        }
    }
}
