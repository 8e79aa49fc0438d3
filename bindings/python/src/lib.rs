//! `redis_ferry._native`: the extension module under the `redis_ferry` Python package.
//!
//! A thin layer over the ferry crates: it converts arguments and results, maps errors to one exception class
//! per error kind, and bridges tokio to blocking Python calls (GIL released, Ctrl-C heard) and to asyncio.
//! Nothing here decides how Redis data moves; the crates below do.

mod convert;
mod dr;
mod errors;
mod rdb;
mod runtime;
mod sentinel;
mod sync;

use pyo3::prelude::*;

/// Called by the package's `atexit` hook: background completions stop touching the interpreter.
#[pyfunction]
fn _shutdown() {
    runtime::mark_exiting();
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<rdb::Entry>()?;
    m.add_class::<rdb::RdbReader>()?;
    m.add_class::<sentinel::NativeSentinelPool>()?;
    m.add_class::<dr::NativeDrPair>()?;
    m.add_class::<dr::NativeDrRun>()?;
    m.add_class::<dr::NativeDrEvents>()?;
    m.add_class::<sync::NativeJob>()?;
    m.add_class::<sync::NativeEvents>()?;
    m.add_function(wrap_pyfunction!(sync::check_config, m)?)?;
    m.add_function(wrap_pyfunction!(sync::verify_json, m)?)?;
    m.add_function(wrap_pyfunction!(sync::verify_json_async, m)?)?;
    m.add_function(wrap_pyfunction!(rdb::rdb_stats_json, m)?)?;
    m.add_function(wrap_pyfunction!(rdb::rdb_restore_json, m)?)?;
    m.add_function(wrap_pyfunction!(rdb::rdb_restore_json_async, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
