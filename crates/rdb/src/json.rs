//! JSON rendering of entries, one key per line (used by the `rdb_dump` example and the CLI).
//!
//! `{"db":0,"key":K,"type":"string|list|set|zset|hash|stream|module","expire_at_ms":N|null,"value":V}`:
//! a byte string is a JSON string when it is valid UTF-8 and `{"base64":"..."}` otherwise; lists
//! and sets are arrays, a sorted set is an array of `[member, score]` (score a number, or
//! `"inf"`/`"-inf"`), a hash is an object (or an array of `[field, value, expire_at_ms|null]`
//! when any field has a TTL), a stream is `{"entries":[[id,{f:v}]...],"groups":[...]}` and a
//! module is `{"module":name,"encver":n,"payload":{"base64":..}}`.

use base64::Engine;
use serde_json::{json, Map, Value as J};

use crate::parser::Entry;
use crate::value::{Stream, Value};

/// A byte string as JSON.
pub fn bytes(b: &[u8]) -> J {
    match std::str::from_utf8(b) {
        Ok(s) => J::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A score as JSON.
pub fn score(s: f64) -> J {
    if s == f64::INFINITY {
        J::String("inf".into())
    } else if s == f64::NEG_INFINITY {
        J::String("-inf".into())
    } else if s.is_nan() {
        J::String("nan".into())
    } else if s == s.trunc() && s.abs() < 9.007_199_254_740_992e15 {
        J::from(s as i64)
    } else {
        J::from(s)
    }
}

fn stream(s: &Stream) -> J {
    let entries: Vec<J> = s
        .entries
        .iter()
        .map(|e| {
            let mut m = Map::new();
            for (f, v) in &e.fields {
                m.insert(String::from_utf8_lossy(f).into_owned(), bytes(v));
            }
            json!([e.id.to_string(), m])
        })
        .collect();
    let groups: Vec<J> = s
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": bytes(&g.name),
                "last_id": g.last_id.to_string(),
                "entries_read": g.entries_read_known(),
                "pending": g.pending.iter().map(|p| json!([p.id.to_string(), p.delivery_time_ms, p.delivery_count])).collect::<Vec<_>>(),
                "consumers": g.consumers.iter().map(|c| json!({
                    "name": bytes(&c.name),
                    "seen_time_ms": c.seen_time_ms,
                    "active_time_ms": c.active_time_ms,
                    "pending": c.pending.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let idmp = s.idmp.as_ref().map(|i| {
        json!({
            "duration": i.duration,
            "max_entries": i.max_entries,
            "producers": i.producers.iter().map(|(pid, es)| json!({
                "pid": bytes(pid),
                "entries": es.iter().map(|(iid, id)| json!([bytes(iid), id.to_string()])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "iids_added": i.iids_added,
            "iids_duplicates": i.iids_duplicates,
        })
    });
    json!({
        "entries": entries,
        "groups": groups,
        "idmp": idmp,
        "length": s.length,
        "last_id": s.last_id.to_string(),
        "first_id": s.first_id.to_string(),
        "max_deleted_id": s.max_deleted_id.to_string(),
        "entries_added": s.entries_added,
    })
}

/// A value as JSON.
pub fn value(v: &Value) -> J {
    match v {
        Value::String(s) => bytes(s),
        Value::List(items) | Value::Set(items) => {
            J::Array(items.iter().map(|b| bytes(b)).collect())
        }
        Value::SortedSet(items) => J::Array(
            items
                .iter()
                .map(|(m, s)| json!([bytes(m), score(*s)]))
                .collect(),
        ),
        Value::Hash(fields) => {
            if fields.iter().any(|f| f.expire_at_ms.is_some()) {
                J::Array(
                    fields
                        .iter()
                        .map(|f| json!([bytes(&f.field), bytes(&f.value), f.expire_at_ms]))
                        .collect(),
                )
            } else {
                let mut m = Map::new();
                for f in fields {
                    let k = match std::str::from_utf8(&f.field) {
                        Ok(s) => s.to_owned(),
                        Err(_) => format!(
                            "base64:{}",
                            base64::engine::general_purpose::STANDARD.encode(&f.field)
                        ),
                    };
                    m.insert(k, bytes(&f.value));
                }
                J::Object(m)
            }
        }
        Value::Stream(s) => stream(s),
        Value::Module(m) => json!({
            "module": m.name,
            "encver": m.encver,
            "payload": { "base64": base64::engine::general_purpose::STANDARD.encode(&m.payload) },
        }),
    }
}

/// One entry as a JSON object (`value` is null when the entry carries no decoded value).
pub fn entry(e: &Entry) -> J {
    json!({
        "db": e.db,
        "key": bytes(&e.key),
        "type": e.value.as_ref().map(|v| v.type_name()).unwrap_or_else(|| crate::type_name_of(e.rdb_type)),
        "expire_at_ms": e.expire_at_ms,
        "value": e.value.as_ref().map(value).unwrap_or(J::Null),
    })
}

/// One entry as a JSON line (no trailing newline), fields in the documented order.
pub fn entry_line(e: &Entry) -> String {
    let t = e
        .value
        .as_ref()
        .map(|v| v.type_name())
        .unwrap_or_else(|| crate::type_name_of(e.rdb_type));
    format!(
        "{{\"db\":{},\"key\":{},\"type\":\"{}\",\"expire_at_ms\":{},\"value\":{}}}",
        e.db,
        bytes(&e.key),
        t,
        e.expire_at_ms
            .map(|x| x.to_string())
            .unwrap_or_else(|| "null".into()),
        e.value.as_ref().map(value).unwrap_or(J::Null)
    )
}
