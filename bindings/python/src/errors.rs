//! One Python exception class per error kind of the façade, all derived from `FerryError`.
//!
//! The classes are created here (so an error can be built without holding the GIL, e.g. inside an asyncio
//! task) and re-exported by the `redis_ferry` package. Each class has a `kind` attribute: the façade's
//! `ErrorKind::as_str()` (`"config"`, `"auth"`, ...). The message is the Rust error's full text.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::PyErr;

create_exception!(
    redis_ferry,
    FerryError,
    PyException,
    "Base class of every error redis-ferry raises."
);
create_exception!(
    redis_ferry,
    ConfigError,
    FerryError,
    "The configuration or options are invalid (kind \"config\")."
);
create_exception!(
    redis_ferry,
    AuthError,
    FerryError,
    "A server refused the credentials (kind \"auth\")."
);
create_exception!(
    redis_ferry,
    ConnectionError,
    FerryError,
    "A server could not be reached or the connection failed (kind \"connection\")."
);
create_exception!(
    redis_ferry,
    TargetRefused,
    FerryError,
    "The target refused a write or a command (kind \"target_refused\")."
);
create_exception!(
    redis_ferry,
    ResponseError,
    TargetRefused,
    "A Redis server answered a command with an error reply, as redis-py's `ResponseError` (kind \"target_refused\"); `code` is the reply's first word (`ERR`, `WRONGTYPE`, ...)."
);
create_exception!(
    redis_ferry,
    SourceRefused,
    FerryError,
    "The source refused replication (kind \"source_refused\")."
);
create_exception!(
    redis_ferry,
    DataError,
    FerryError,
    "Data could not be read or converted, e.g. a corrupt RDB file (kind \"data\")."
);
create_exception!(
    redis_ferry,
    Fenced,
    FerryError,
    "A newer epoch owns the target: this job was fenced off (kind \"fenced\")."
);
create_exception!(
    redis_ferry,
    Stopped,
    FerryError,
    "The job or pool was stopped or closed (kind \"stopped\")."
);

/// The exception for a façade error kind (its `as_str()`); an unknown kind becomes the base class.
pub(crate) fn error(kind: &str, message: String) -> PyErr {
    match kind {
        "config" => ConfigError::new_err(message),
        "auth" => AuthError::new_err(message),
        "connection" => ConnectionError::new_err(message),
        "target_refused" => TargetRefused::new_err(message),
        "source_refused" => SourceRefused::new_err(message),
        "data" => DataError::new_err(message),
        "fenced" => Fenced::new_err(message),
        "stopped" => Stopped::new_err(message),
        _ => FerryError::new_err(message),
    }
}

/// A server's error reply (`WRONGTYPE Operation against a key ...`) as a `ResponseError`.
pub(crate) fn response_error(text: &[u8]) -> PyErr {
    ResponseError::new_err(String::from_utf8_lossy(text).into_owned())
}

/// `ResponseError.code`: the first word of the error reply, which is the exception's message.
#[pyfunction]
fn response_error_code(exc: &Bound<'_, PyAny>) -> PyResult<String> {
    let text = exc.str()?.to_string();
    Ok(text.split(' ').next().unwrap_or_default().to_owned())
}

/// Adds the classes to the module, each with its `kind`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes: [(&str, Bound<'_, pyo3::types::PyType>, Option<&str>); 10] = [
        ("FerryError", py.get_type::<FerryError>(), None),
        ("ConfigError", py.get_type::<ConfigError>(), Some("config")),
        ("AuthError", py.get_type::<AuthError>(), Some("auth")),
        (
            "ConnectionError",
            py.get_type::<ConnectionError>(),
            Some("connection"),
        ),
        (
            "TargetRefused",
            py.get_type::<TargetRefused>(),
            Some("target_refused"),
        ),
        (
            "ResponseError",
            py.get_type::<ResponseError>(),
            Some("target_refused"),
        ),
        (
            "SourceRefused",
            py.get_type::<SourceRefused>(),
            Some("source_refused"),
        ),
        ("DataError", py.get_type::<DataError>(), Some("data")),
        ("Fenced", py.get_type::<Fenced>(), Some("fenced")),
        ("Stopped", py.get_type::<Stopped>(), Some("stopped")),
    ];
    for (name, class, kind) in classes {
        class.setattr("kind", kind)?;
        m.add(name, class)?;
    }
    let code = py
        .import("builtins")?
        .getattr("property")?
        .call1((wrap_pyfunction!(response_error_code, m)?,))?;
    py.get_type::<ResponseError>().setattr("code", code)?;
    Ok(())
}

/// A façade error as its exception: the class of its kind, its full message.
pub(crate) fn ferry_error(e: ferry::Error) -> PyErr {
    error(e.kind().as_str(), e.to_string())
}
