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
    Array, BigInt, BufferSlice, Null, Object, ToNapiValue, TypeName, Unknown, ValueType,
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
/// `ReplyError`.
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
    err.set("code", "FERRY_TARGET_REFUSED")?;
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
                    o.set("entriesRead", opt_unsigned(env, g.entries_read)?)?;
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
