//! Rust values to Python objects: RESP replies as redis-py returns them, RDB values as plain Python types.

use ferry::rdb::{StreamId, Value};
use ferry_sentinel::Frame;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyTuple};
use pyo3::IntoPyObjectExt;

/// A reply as redis-py's parser gives it (before command callbacks): bulk and simple strings are `bytes`,
/// integers `int`, arrays `list`, nulls `None`, RESP3 maps `dict`, sets `set`, doubles `float`, booleans
/// `bool`. An error reply inside an array (a pipeline or EXEC result) becomes a `ResponseError` instance in place.
pub(crate) fn frame_to_py(py: Python<'_>, frame: &Frame) -> PyResult<Py<PyAny>> {
    Ok(match frame {
        Frame::Simple(b) | Frame::Bulk(b) => PyBytes::new(py, b).into_any().unbind(),
        Frame::Verbatim { text, .. } => PyBytes::new(py, text).into_any().unbind(),
        Frame::Error(b) => crate::errors::response_error(b).into_value(py).into_any(),
        Frame::Integer(i) => i.into_py_any(py)?,
        Frame::Null | Frame::NullBulk | Frame::NullArray => py.None(),
        Frame::Array(items) | Frame::Push(items) => {
            let list = PyList::empty(py);
            for f in items {
                list.append(frame_to_py(py, f)?)?;
            }
            list.into_any().unbind()
        }
        Frame::Set(items) => {
            let set = PySet::empty(py)?;
            for f in items {
                set.add(frame_to_py(py, f)?)?;
            }
            set.into_any().unbind()
        }
        Frame::Map(pairs) => {
            let dict = PyDict::new(py);
            for (k, v) in pairs {
                dict.set_item(frame_to_py(py, k)?, frame_to_py(py, v)?)?;
            }
            dict.into_any().unbind()
        }
        Frame::Double(d) => d.into_py_any(py)?,
        Frame::Boolean(b) => b.into_py_any(py)?,
        Frame::BigNumber(digits) => {
            let text = String::from_utf8_lossy(digits);
            py.get_type::<pyo3::types::PyInt>()
                .call1((text.as_ref(),))?
                .unbind()
        }
        Frame::Attribute { frame, .. } => frame_to_py(py, frame)?,
    })
}

/// Hash field names as shared Python `bytes`: the hashes of one kind of key repeat the same field names, so a
/// name seen recently is handed out again (one more reference) instead of built anew, as JSON decoders such as
/// orjson do for dict keys. A shared `bytes` also keeps its hash, which each dict insertion would compute again.
/// Direct-mapped: a name takes the slot its hash picks, replacing whatever was there; names longer than
/// [`FIELD_CACHE_MAX`] bytes are not cached. `bytes` are immutable, so sharing them changes nothing a caller sees
/// (but `is`).
pub(crate) struct FieldCache {
    slots: Vec<Option<CachedField>>,
}

/// One cached name: its bytes (for the comparison, without asking Python) and the Python object.
struct CachedField {
    len: usize,
    text: [u8; FIELD_CACHE_MAX],
    obj: Py<PyBytes>,
}

/// Longest field name cached.
const FIELD_CACHE_MAX: usize = 32;
/// Slots of the cache (a power of two).
const FIELD_CACHE_SLOTS: usize = 1024;

impl FieldCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        FieldCache {
            slots: (0..FIELD_CACHE_SLOTS).map(|_| None).collect(),
        }
    }

    /// `name` as a Python `bytes`, the cached one when the slot holds the same bytes.
    pub(crate) fn bytes<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyBytes> {
        if name.len() > FIELD_CACHE_MAX {
            return PyBytes::new(py, name);
        }
        // FNV-1a: short input, no allocation, good enough spread for a direct-mapped table.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let slot = &mut self.slots[(h as usize) & (FIELD_CACHE_SLOTS - 1)];
        if let Some(c) = slot {
            if &c.text[..c.len] == name {
                return c.obj.bind(py).clone();
            }
        }
        let obj = PyBytes::new(py, name);
        let mut text = [0u8; FIELD_CACHE_MAX];
        text[..name.len()].copy_from_slice(name);
        *slot = Some(CachedField {
            len: name.len(),
            text,
            obj: obj.clone().unbind(),
        });
        obj
    }
}

fn stream_id(py: Python<'_>, id: StreamId) -> Bound<'_, PyBytes> {
    PyBytes::new(py, id.to_string().as_bytes())
}

fn bytes_list<'py>(py: Python<'py>, items: &[bytes::Bytes]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, items.iter().map(|b| PyBytes::new(py, b)))
}

/// An RDB value as Python types: `string` -> `bytes`, `list` -> `list[bytes]`, `set` -> `set[bytes]`,
/// `zset` -> `list[tuple[bytes, float]]` (`ZRANGE` order), `hash` -> `dict[bytes, bytes]`, `stream` -> `dict` (entries
/// as `(id, {field: value})` like XRANGE, plus metadata and groups), `module` -> `dict` (id, name, encver, raw
/// payload). Hash and stream field names come from `fields` (see [`FieldCache`]).
pub(crate) fn value_to_py(
    py: Python<'_>,
    value: &Value,
    fields: &mut FieldCache,
) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::String(b) => PyBytes::new(py, b).into_any().unbind(),
        Value::List(items) => bytes_list(py, items)?.into_any().unbind(),
        Value::Set(items) => PySet::new(py, items.iter().map(|b| PyBytes::new(py, b)))?
            .into_any()
            .unbind(),
        Value::SortedSet(pairs) => PyList::new(
            py,
            pairs
                .iter()
                .map(|(m, s)| {
                    PyTuple::new(
                        py,
                        [
                            PyBytes::new(py, m).into_any(),
                            s.into_pyobject(py)?.into_any(),
                        ],
                    )
                })
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any()
        .unbind(),
        Value::Hash(hash) => {
            let dict = PyDict::new(py);
            for f in hash {
                dict.set_item(fields.bytes(py, &f.field), PyBytes::new(py, &f.value))?;
            }
            dict.into_any().unbind()
        }
        Value::Stream(s) => {
            let entries = PyList::empty(py);
            for e in &s.entries {
                let entry = PyDict::new(py);
                for (f, v) in &e.fields {
                    entry.set_item(fields.bytes(py, f), PyBytes::new(py, v))?;
                }
                entries.append((stream_id(py, e.id), entry))?;
            }
            let groups = PyList::empty(py);
            for g in &s.groups {
                let group = PyDict::new(py);
                group.set_item("name", PyBytes::new(py, &g.name))?;
                group.set_item("last_delivered_id", stream_id(py, g.last_id))?;
                group.set_item("entries_read", g.entries_read_known())?;
                let pending = PyList::empty(py);
                for p in &g.pending {
                    pending.append((stream_id(py, p.id), p.delivery_time_ms, p.delivery_count))?;
                }
                group.set_item("pending", pending)?;
                let consumers = PyList::empty(py);
                for c in &g.consumers {
                    let consumer = PyDict::new(py);
                    consumer.set_item("name", PyBytes::new(py, &c.name))?;
                    consumer.set_item("seen_time_ms", c.seen_time_ms)?;
                    consumer.set_item("active_time_ms", c.active_time_ms)?;
                    consumer.set_item(
                        "pending",
                        PyList::new(py, c.pending.iter().map(|id| stream_id(py, *id)))?,
                    )?;
                    consumers.append(consumer)?;
                }
                group.set_item("consumers", consumers)?;
                groups.append(group)?;
            }
            let dict = PyDict::new(py);
            dict.set_item("entries", entries)?;
            dict.set_item("length", s.length)?;
            dict.set_item("last_id", stream_id(py, s.last_id))?;
            dict.set_item("first_id", stream_id(py, s.first_id))?;
            dict.set_item("max_deleted_id", stream_id(py, s.max_deleted_id))?;
            dict.set_item("entries_added", s.entries_added)?;
            dict.set_item("groups", groups)?;
            dict.into_any().unbind()
        }
        Value::Module(m) => {
            let dict = PyDict::new(py);
            dict.set_item("module_id", m.module_id)?;
            dict.set_item("name", &m.name)?;
            dict.set_item("encver", m.encver)?;
            dict.set_item("payload", PyBytes::new(py, &m.payload))?;
            dict.into_any().unbind()
        }
    })
}

/// A façade report or status as JSON text, which the Python layer turns into its dataclass.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value)
        .map_err(|e| crate::errors::error("data", format!("cannot serialize the result: {e}")))
}
