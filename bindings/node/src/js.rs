//! Rust values to JavaScript values, built in one pass on the JS thread.
//!
//! Replies and RDB entries are made of many small byte strings; each becomes a Node `Buffer` copied into V8's
//! heap (`napi_create_buffer_copy`), which is much cheaper than one external buffer with a finalizer per
//! string. Integers are JS numbers when they are exact (|n| <= 2^53 - 1) and `BigInt`s otherwise; stream IDs
//! are the `ms-seq` strings Redis itself prints.
//!
//! napi's `ToNapiValue` has one required function, and it is `unsafe`: the two implementations here are the
//! only unsafe code of the crate; each only wraps the safe builders below.
#![allow(unsafe_code)]

use bytes::Bytes;
use ferry::rdb::{Entry, StreamId, Value};
use ferry_sentinel::Frame;
use napi::bindgen_prelude::{
    Array, BigInt, BufferSlice, Float64Array, Null, Object, ToNapiValue, TypeName, Unknown,
    ValueType,
};
use napi::{sys, Env, JsValue, Result};

/// Largest integer a JS number holds exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

fn null(env: &Env) -> Result<Unknown<'_>> {
    // SAFETY: `env` is the live environment of the current call and the value was just created in it.
    unsafe {
        let raw = Null::to_napi_value(env.raw(), Null)?;
        Ok(Unknown::from_raw_unchecked(env.raw(), raw))
    }
}

fn bigint(env: &Env, b: BigInt) -> Result<Unknown<'_>> {
    // SAFETY: as in `null`.
    unsafe {
        let raw = BigInt::to_napi_value(env.raw(), b)?;
        Ok(Unknown::from_raw_unchecked(env.raw(), raw))
    }
}

/// A copied `Buffer`.
fn buffer<'e>(env: &'e Env, b: &[u8]) -> Result<Unknown<'e>> {
    Ok(BufferSlice::copy_from(env, b)?.to_unknown())
}

/// A string (invalid UTF-8 replaced by U+FFFD, as `Buffer#toString` does).
fn string<'e>(env: &'e Env, b: &[u8]) -> Result<Unknown<'e>> {
    Ok(env.create_string(String::from_utf8_lossy(b))?.to_unknown())
}

fn float(env: &Env, x: f64) -> Result<Unknown<'_>> {
    Ok(env.create_double(x)?.to_unknown())
}

/// A number when exact, else a `BigInt`.
fn unsigned(env: &Env, n: u64) -> Result<Unknown<'_>> {
    if n <= MAX_SAFE {
        float(env, n as f64)
    } else {
        bigint(env, BigInt::from(n))
    }
}

/// A number when exact, else a `BigInt`.
fn signed(env: &Env, n: i64) -> Result<Unknown<'_>> {
    if n.unsigned_abs() <= MAX_SAFE {
        float(env, n as f64)
    } else {
        bigint(env, BigInt::from(n))
    }
}

fn opt_unsigned(env: &Env, n: Option<u64>) -> Result<Unknown<'_>> {
    n.map_or_else(|| null(env), |n| unsigned(env, n))
}

fn stream_id(env: &Env, id: StreamId) -> Result<Unknown<'_>> {
    Ok(env.create_string(id.to_string())?.to_unknown())
}

fn array<'e, T>(
    env: &'e Env,
    items: &[T],
    mut each: impl FnMut(&T) -> Result<Unknown<'e>>,
) -> Result<Unknown<'e>> {
    let mut arr: Array<'e> = env.create_array(items.len() as u32)?;
    for (i, item) in items.iter().enumerate() {
        arr.set(i as u32, each(item)?)?;
    }
    Ok(arr.to_unknown())
}

fn pair<'e>(env: &'e Env, a: &[u8], b: &[u8]) -> Result<Unknown<'e>> {
    let mut arr = env.create_array(2)?;
    arr.set(0, buffer(env, a)?)?;
    arr.set(1, buffer(env, b)?)?;
    Ok(arr.to_unknown())
}

/// A server reply as ioredis gives it: bulk and simple strings as strings (or Buffers with `buffers`),
/// integers as numbers, nil as `null`, arrays as arrays, error replies inside arrays as `Error`s named
/// `ReplyError` with code `FERRY_REPLY` (the JS layer makes those of a pipeline `ReplyError` instances).
pub struct Reply {
    pub(crate) frame: Frame,
    pub(crate) buffers: bool,
}

/// Several replies (a pipeline), each an `[error, result]` pair as ioredis's `exec()` gives them.
pub struct PipelineReplies {
    pub(crate) frames: Vec<Frame>,
    pub(crate) buffers: bool,
}

fn reply_error<'e>(env: &'e Env, message: &[u8]) -> Result<Unknown<'e>> {
    let mut err = env.create_error(napi::Error::from_reason(
        String::from_utf8_lossy(message).into_owned(),
    ))?;
    err.set("name", "ReplyError")?;
    err.set("code", crate::error::Code::Reply.as_str())?;
    Ok(err.to_unknown())
}

fn frame<'e>(env: &'e Env, f: &Frame, buffers: bool) -> Result<Unknown<'e>> {
    let text = |b: &[u8]| {
        if buffers {
            buffer(env, b)
        } else {
            string(env, b)
        }
    };
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::BigNumber(b) => text(b),
        Frame::Verbatim { text: t, .. } => text(t),
        Frame::Error(b) => reply_error(env, b),
        Frame::Integer(n) => signed(env, *n),
        Frame::Double(x) => text(x.to_string().as_bytes()),
        Frame::Boolean(b) => float(env, if *b { 1.0 } else { 0.0 }),
        Frame::Null | Frame::NullBulk | Frame::NullArray => null(env),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            array(env, v, |f| frame(env, f, buffers))
        }
        Frame::Map(pairs) => {
            let flat: Vec<&Frame> = pairs.iter().flat_map(|(k, v)| [k, v]).collect();
            array(env, &flat, |f| frame(env, f, buffers))
        }
        Frame::Attribute { frame: inner, .. } => frame(env, inner, buffers),
    }
}

impl TypeName for Reply {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ToNapiValue for Reply {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let env = Env::from_raw(env);
        Ok(frame(&env, &val.frame, val.buffers)?.raw())
    }
}

impl TypeName for PipelineReplies {
    fn type_name() -> &'static str {
        "Array<[Error | null, unknown]>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for PipelineReplies {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let env = Env::from_raw(env);
        let out = array(&env, &val.frames, |f| {
            let mut pair = env.create_array(2)?;
            if let Frame::Error(b) = f {
                pair.set(0, reply_error(&env, b)?)?;
                pair.set(1, null(&env)?)?;
            } else {
                pair.set(0, null(&env)?)?;
                pair.set(1, frame(&env, f, val.buffers)?)?;
            }
            Ok(pair.to_unknown())
        })?;
        Ok(out.raw())
    }
}

/// A batch of RDB entries; see `RdbEntry` in `index.d.ts` for the shape.
pub struct Entries(pub(crate) Vec<Entry>);

fn value<'e>(env: &'e Env, v: &Value) -> Result<Unknown<'e>> {
    match v {
        Value::String(b) => buffer(env, b),
        Value::List(items) | Value::Set(items) => array(env, items, |b: &Bytes| buffer(env, b)),
        Value::SortedSet(items) => array(env, items, |(member, score)| {
            let mut o = Object::new(env)?;
            o.set("member", buffer(env, member)?)?;
            o.set("score", *score)?;
            Ok(o.to_unknown())
        }),
        Value::Hash(fields) => array(env, fields, |f| {
            let mut o = Object::new(env)?;
            o.set("field", buffer(env, &f.field)?)?;
            o.set("value", buffer(env, &f.value)?)?;
            o.set("expireAt", opt_unsigned(env, f.expire_at_ms)?)?;
            Ok(o.to_unknown())
        }),
        Value::Stream(s) => {
            let mut o = Object::new(env)?;
            o.set("length", unsigned(env, s.length)?)?;
            o.set("lastId", stream_id(env, s.last_id)?)?;
            o.set("firstId", stream_id(env, s.first_id)?)?;
            o.set("maxDeletedId", stream_id(env, s.max_deleted_id)?)?;
            o.set("entriesAdded", unsigned(env, s.entries_added)?)?;
            o.set(
                "entries",
                array(env, &s.entries, |e| {
                    let mut o = Object::new(env)?;
                    o.set("id", stream_id(env, e.id)?)?;
                    o.set("fields", array(env, &e.fields, |(f, v)| pair(env, f, v))?)?;
                    Ok(o.to_unknown())
                })?,
            )?;
            o.set(
                "groups",
                array(env, &s.groups, |g| {
                    let mut o = Object::new(env)?;
                    o.set("name", buffer(env, &g.name)?)?;
                    o.set("lastId", stream_id(env, g.last_id)?)?;
                    o.set("entriesRead", opt_unsigned(env, g.entries_read_known())?)?;
                    o.set(
                        "pending",
                        array(env, &g.pending, |p| {
                            let mut o = Object::new(env)?;
                            o.set("id", stream_id(env, p.id)?)?;
                            o.set("deliveryTime", unsigned(env, p.delivery_time_ms)?)?;
                            o.set("deliveryCount", unsigned(env, p.delivery_count)?)?;
                            Ok(o.to_unknown())
                        })?,
                    )?;
                    o.set(
                        "consumers",
                        array(env, &g.consumers, |c| {
                            let mut o = Object::new(env)?;
                            o.set("name", buffer(env, &c.name)?)?;
                            o.set("seenTime", unsigned(env, c.seen_time_ms)?)?;
                            o.set("activeTime", opt_unsigned(env, c.active_time_ms)?)?;
                            o.set("pending", array(env, &c.pending, |id| stream_id(env, *id))?)?;
                            Ok(o.to_unknown())
                        })?,
                    )?;
                    Ok(o.to_unknown())
                })?,
            )?;
            Ok(o.to_unknown())
        }
        Value::Module(m) => {
            let mut o = Object::new(env)?;
            o.set("moduleId", bigint(env, BigInt::from(m.module_id))?)?;
            o.set("name", m.name.as_str())?;
            o.set("encver", m.encver as u32)?;
            o.set("payload", buffer(env, &m.payload)?)?;
            Ok(o.to_unknown())
        }
    }
}

fn entry<'e>(env: &'e Env, e: &Entry) -> Result<Unknown<'e>> {
    let mut o = Object::new(env)?;
    o.set("db", unsigned(env, e.db)?)?;
    o.set("key", buffer(env, &e.key)?)?;
    o.set("type", ferry::rdb::type_name_of(e.rdb_type))?;
    o.set(
        "expireAt",
        e.expire_at_ms
            .map_or_else(|| null(env), |t| signed(env, t))?,
    )?;
    o.set("idle", opt_unsigned(env, e.idle_secs)?)?;
    o.set(
        "freq",
        e.freq
            .map_or_else(|| null(env), |f| float(env, f64::from(f)))?,
    )?;
    o.set(
        "value",
        e.value
            .as_ref()
            .map_or_else(|| null(env), |v| value(env, v))?,
    )?;
    Ok(o.to_unknown())
}

impl TypeName for Entries {
    fn type_name() -> &'static str {
        "Array<Record<string, unknown>>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Entries {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let env = Env::from_raw(env);
        Ok(array(&env, &val.0, |e| entry(&env, e))?.raw())
    }
}

/// A batch of RDB entries packed for the JS layer, which builds the entry objects itself (one Node-API call per
/// batch instead of about ten per entry): `data` holds every key and value byte of the batch back to back, `meta`
/// the numbers, read in order by `unpack` in index.js, and `extras` the entries that do not fit this shape (streams,
/// modules, numbers beyond 2^53), as objects built here.
///
/// `meta`, per entry: `rdbType, db, expireAt, idle, freq, keyEnd, valueKind, ...` (NaN for an absent number; every
/// `...End` is the end offset in `data` of a byte string that starts where the previous one ended), then by
/// `valueKind`: 0 no value; 1 a string: `end`; 2 a list or set: `n, end × n`; 3 a zset: `n, (memberEnd, score) × n`;
/// 4 a hash: `n, (fieldEnd, valueEnd, expireAt) × n`. An entry in `extras` is marked by a single `-1`.
pub struct Packed {
    data: Vec<u8>,
    meta: Vec<f64>,
    extras: Vec<Entry>,
}

/// An optional count as an exact f64 (NaN when absent), or None when it is beyond 2^53.
fn exact(n: Option<u64>) -> Option<f64> {
    match n {
        None => Some(f64::NAN),
        Some(n) if n <= MAX_SAFE => Some(n as f64),
        Some(_) => None,
    }
}

impl Packed {
    /// Packs `entries` (see the type's docs).
    pub(crate) fn pack(entries: Vec<Entry>) -> Packed {
        let mut p = Packed {
            data: Vec::with_capacity(entries.len() * 64),
            meta: Vec::with_capacity(entries.len() * 10),
            extras: Vec::new(),
        };
        for e in entries {
            if !p.push(&e) {
                p.meta.push(-1.0);
                p.extras.push(e);
            }
        }
        p
    }

    fn bytes(&mut self, b: &[u8]) {
        self.data.extend_from_slice(b);
        self.meta.push(self.data.len() as f64);
    }

    /// Appends `e`; false (and nothing appended) when it needs the object path.
    fn push(&mut self, e: &Entry) -> bool {
        let mark = (self.meta.len(), self.data.len());
        if !self.try_push(e) {
            self.meta.truncate(mark.0);
            self.data.truncate(mark.1);
            return false;
        }
        true
    }

    fn try_push(&mut self, e: &Entry) -> bool {
        let expire = match e.expire_at_ms {
            None => f64::NAN,
            Some(t) if t.unsigned_abs() <= MAX_SAFE => t as f64,
            Some(_) => return false,
        };
        let (Some(db), Some(idle)) = (exact(Some(e.db)), exact(e.idle_secs)) else {
            return false;
        };
        let freq = e.freq.map_or(f64::NAN, f64::from);
        self.meta
            .extend_from_slice(&[f64::from(e.rdb_type), db, expire, idle, freq]);
        self.bytes(&e.key);
        match &e.value {
            None => self.meta.push(0.0),
            Some(Value::String(b)) => {
                self.meta.push(1.0);
                self.bytes(b);
            }
            Some(Value::List(items) | Value::Set(items)) => {
                self.meta.extend_from_slice(&[2.0, items.len() as f64]);
                for b in items {
                    self.bytes(b);
                }
            }
            Some(Value::SortedSet(pairs)) => {
                self.meta.extend_from_slice(&[3.0, pairs.len() as f64]);
                for (member, score) in pairs {
                    self.bytes(member);
                    self.meta.push(*score);
                }
            }
            Some(Value::Hash(fields)) => {
                self.meta.extend_from_slice(&[4.0, fields.len() as f64]);
                for f in fields {
                    let Some(expire) = exact(f.expire_at_ms) else {
                        return false;
                    };
                    self.bytes(&f.field);
                    self.bytes(&f.value);
                    self.meta.push(expire);
                }
            }
            // Streams and module values: built as objects.
            Some(_) => return false,
        }
        true
    }
}

impl TypeName for Packed {
    fn type_name() -> &'static str {
        "[Buffer, Float64Array, Array<Record<string, unknown>>]"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Packed {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let env = Env::from_raw(env);
        let mut out = env.create_array(3)?;
        out.set(0, BufferSlice::copy_from(&env, &val.data)?.to_unknown())?;
        out.set(1, Float64Array::new(val.meta))?;
        out.set(2, array(&env, &val.extras, |e| entry(&env, e))?)?;
        Ok(out.raw())
    }
}
