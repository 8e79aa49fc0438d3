//! The shared fixture corpus (`../shared/rdb-fixtures`): every file decodes to EOF or fails as its
//! MANIFEST says, and decoded values match the expected outputs paired with the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_rdb::encoding::Elem;
use ferry_rdb::visit::{Shape, Visitor};
use ferry_rdb::{
    Entry, Error, HashField, Item, Parser, ParserOptions, Reader, Value, ValueMode, Writer,
};
use serde_json::Value as J;

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/rdb-fixtures"
    ))
}

fn all_rdb_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("fixture dir readable") {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rdb") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&corpus(), &mut v);
    v.sort();
    assert!(
        v.len() >= 170,
        "fixture corpus missing or incomplete: {} files",
        v.len()
    );
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(corpus())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Files the MANIFEST marks as invalid, with a predicate on the error.
fn expected_failure(rel: &str) -> Option<fn(&Error) -> bool> {
    match rel {
        "librdb/test/dumps/future_v19.rdb" => {
            Some(|e| e.is_unsupported() && e.to_string().contains("99"))
        }
        "librdb/test/dumps/invalid_chksum_v8.rdb" => Some(|e| e.is_checksum()),
        "redis/corrupt_ziplist.rdb" => {
            Some(|e| e.is_corrupt() && e.to_string().contains("ziplist"))
        }
        _ => None,
    }
}

fn read_all(bytes: &[u8], opts: ParserOptions) -> Result<Vec<Item>, Error> {
    Reader::new(bytes, opts).collect()
}

fn entries(items: &[Item]) -> Vec<&Entry> {
    items
        .iter()
        .filter_map(|i| {
            if let Item::Entry(e) = i {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn every_fixture_decodes_to_eof_or_fails_as_the_manifest_says() {
    let mut ok = 0;
    let mut failed_as_expected = 0;
    for path in all_rdb_files() {
        let r = rel(&path);
        let bytes = std::fs::read(&path).unwrap();
        let res = read_all(&bytes, ParserOptions::default());
        match (expected_failure(&r), res) {
            (None, Ok(items)) => {
                assert!(
                    matches!(items.last(), Some(Item::Eof { .. })),
                    "{r}: no EOF item"
                );
                ok += 1;
            }
            (None, Err(e)) => panic!("{r}: unexpected error: {e}"),
            (Some(check), Err(e)) => {
                assert!(check(&e), "{r}: wrong error: {e}");
                failed_as_expected += 1;
            }
            (Some(_), Ok(_)) => panic!("{r}: decoded but MANIFEST says it is invalid"),
        }
    }
    eprintln!("fixtures: {ok} decoded to EOF, {failed_as_expected} failed as expected");
    assert_eq!(failed_as_expected, 3);
}

#[test]
fn raw_mode_bytes_decode_to_the_same_values_as_decoded_mode() {
    for path in all_rdb_files() {
        let r = rel(&path);
        if expected_failure(&r).is_some() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let valkey = bytes.starts_with(b"VALKEY");
        let items = read_all(
            &bytes,
            ParserOptions {
                mode: ValueMode::DecodedAndRaw,
                ..Default::default()
            },
        )
        .unwrap();
        for e in entries(&items) {
            let raw = e.raw.as_ref().expect("raw kept");
            assert_eq!(raw.len() as u64, e.serialized_len, "{r}");
            let again = ferry_rdb::decode_value(raw, valkey).unwrap();
            assert_eq!(Some(&again), e.value.as_ref(), "{r}: key {:?}", e.key);
            // What a copy leaves out (Redis's loader skips these keys): the collections without an element,
            // told from the headers alone.
            let empty = !matches!(
                again,
                Value::String(_) | Value::Stream(_) | Value::Module(_)
            ) && again.is_empty();
            assert_eq!(
                ferry_rdb::is_empty_collection(raw),
                empty,
                "{r}: key {:?}",
                e.key
            );
        }
        // Raw mode alone (what a full sync reads) gives the same entries, whole (string keys read straight from
        // the input) or fed 7 bytes at a time (every key the general way), with or without a chunking limit
        // that no value of these files reaches.
        let expected: Vec<Entry> = entries(&items)
            .into_iter()
            .map(|e| Entry {
                value: None,
                ..e.clone()
            })
            .collect();
        for big_value_bytes in [None, Some(1 << 30)] {
            let opts = ParserOptions {
                mode: ValueMode::Raw,
                big_value_bytes,
                ..Default::default()
            };
            for piece in [bytes.len(), 7] {
                let mut p = Parser::new(opts.clone());
                let mut got = Vec::new();
                for chunk in bytes.chunks(piece) {
                    p.feed(chunk);
                    while let Some(it) = p.next_item().unwrap() {
                        if let Item::Entry(e) = it {
                            got.push(e);
                        }
                    }
                }
                p.finish().unwrap();
                assert_eq!(got, expected, "{r}: raw mode, fed {piece} bytes at a time");
            }
        }
    }
}

#[test]
fn feeding_one_byte_at_a_time_gives_the_same_items() {
    for path in all_rdb_files() {
        let r = rel(&path);
        if expected_failure(&r).is_some() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if bytes.len() > 40_000 {
            continue;
        }
        let whole = read_all(&bytes, ParserOptions::default()).unwrap();
        let mut p = Parser::new(ParserOptions::default());
        let mut got = Vec::new();
        for b in &bytes {
            p.feed(std::slice::from_ref(b));
            while let Some(it) = p.next_item().unwrap() {
                got.push(it);
            }
        }
        p.finish().unwrap();
        assert_eq!(got, whole, "{r}");
    }
}

// ---------- normalisation helpers for the expected outputs ----------

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// rdb-rs prints bytes sometimes as UTF-8, sometimes one char per byte: map our bytes to the
/// form the expected text uses.
fn rdbrs_form(b: &[u8], want: &str) -> String {
    let l = latin1(b);
    if l == want {
        l
    } else {
        s(b)
    }
}

fn json_str(j: &J) -> String {
    match j {
        J::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses `2022-12-25T18:11:12.573+08:00` to Unix ms.
fn parse_iso_ms(t: &str) -> i64 {
    let (date, rest) = t.split_once('T').unwrap();
    let dp: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (time, tz) = rest.split_at(rest.len() - 6);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let tp: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let frac_ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let tzh: i64 = tz[1..3].parse().unwrap();
    let tzm: i64 = tz[4..6].parse().unwrap();
    let secs = days_from_civil(dp[0], dp[1], dp[2]) * 86400 + tp[0] * 3600 + tp[1] * 60 + tp[2]
        - sign * (tzh * 3600 + tzm * 60);
    secs * 1000 + frac_ms
}

fn by_key(items: &[Item]) -> BTreeMap<(u64, Vec<u8>), Entry> {
    entries(items)
        .into_iter()
        .map(|e| ((e.db, e.key.to_vec()), e.clone()))
        .collect()
}

fn set_of(v: &[bytes::Bytes], f: fn(&[u8]) -> String) -> BTreeSet<String> {
    v.iter().map(|b| f(b)).collect()
}

/// Compares one decoded value with an hdt3213 JSON object.
fn check_hdt(e: &Entry, o: &J, file: &str) {
    let key = s(&e.key);
    let v = e.value.as_ref().unwrap();
    let ctx = format!("{file} key {key}");
    match v {
        Value::String(b) => assert_eq!(s(b), json_str(&o["value"]), "{ctx}"),
        Value::List(l) => {
            let want: Vec<String> = o["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(json_str)
                .collect();
            assert_eq!(l.iter().map(|b| s(b)).collect::<Vec<_>>(), want, "{ctx}");
        }
        Value::Set(m) => {
            let want: BTreeSet<String> = o["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(json_str)
                .collect();
            assert_eq!(set_of(m, s), want, "{ctx}");
        }
        Value::SortedSet(z) => {
            let want: BTreeMap<String, f64> = o["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (json_str(&x["member"]), x["score"].as_f64().unwrap()))
                .collect();
            assert_eq!(want.len(), z.len(), "{ctx}");
            for (m, sc) in z {
                assert!(close(want[&s(m)], *sc), "{ctx}: score of {}", s(m));
            }
        }
        Value::Hash(h) => {
            let want = o["hash"].as_object().unwrap();
            assert_eq!(want.len(), h.len(), "{ctx}");
            for f in h {
                assert_eq!(json_str(&want[&s(&f.field)]), s(&f.value), "{ctx}");
                if let Some(exp) = o.get("expire") {
                    let w = exp[&s(&f.field)].as_u64().unwrap();
                    assert_eq!(
                        f.expire_at_ms.unwrap_or(0),
                        w,
                        "{ctx}: ttl of {}",
                        s(&f.field)
                    );
                }
            }
        }
        Value::Stream(st) => {
            let mut want = Vec::new();
            for node in o["entries"].as_array().unwrap() {
                for m in node["msgs"].as_array().unwrap() {
                    if m["deleted"].as_bool() == Some(true) {
                        continue;
                    }
                    let fields: BTreeMap<String, String> = m["fields"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), json_str(v)))
                        .collect();
                    want.push((json_str(&m["id"]), fields));
                }
            }
            let got: Vec<(String, BTreeMap<String, String>)> = st
                .entries
                .iter()
                .map(|e| {
                    (
                        e.id.to_string(),
                        e.fields.iter().map(|(f, v)| (s(f), s(v))).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{ctx}");
            if let Some(l) = o.get("len") {
                assert_eq!(st.length, l.as_u64().unwrap(), "{ctx}");
            }
            if let Some(l) = o.get("lastId") {
                assert_eq!(st.last_id.to_string(), json_str(l), "{ctx}");
            }
        }
        Value::Module(_) => {}
    }
    if let Some(exp) = o.get("expiration") {
        assert_eq!(
            e.expire_at_ms,
            Some(parse_iso_ms(exp.as_str().unwrap())),
            "{ctx}: expiry"
        );
    } else {
        assert_eq!(e.expire_at_ms, None, "{ctx}: expiry");
    }
}

/// Compares with a librdb / rdb-rs style value (`zset` as member -> score string map).
fn check_plain(e: &Entry, want: &J, f: fn(&[u8]) -> String, ctx: &str) {
    let v = e.value.as_ref().unwrap();
    match v {
        Value::String(b) => assert_eq!(f(b), json_str(want), "{ctx}"),
        Value::List(l) => {
            let w: Vec<String> = want.as_array().unwrap().iter().map(json_str).collect();
            assert_eq!(l.iter().map(|b| f(b)).collect::<Vec<_>>(), w, "{ctx}");
        }
        Value::Set(m) => {
            let w: BTreeSet<String> = want.as_array().unwrap().iter().map(json_str).collect();
            assert_eq!(set_of(m, f), w, "{ctx}");
        }
        Value::SortedSet(z) => {
            let w = want.as_object().unwrap();
            assert_eq!(w.len(), z.len(), "{ctx}");
            for (m, sc) in z {
                let ws = json_str(&w[&f(m)]);
                let wf = ferry_rdb::encoding::parse_double(ws.as_bytes()).unwrap();
                assert!(
                    close(wf, *sc),
                    "{ctx}: score of {}: want {ws} got {sc}",
                    f(m)
                );
            }
        }
        Value::Hash(h) => {
            let w = want.as_object().unwrap();
            assert_eq!(w.len(), h.len(), "{ctx}");
            for fl in h {
                assert_eq!(json_str(&w[&f(&fl.field)]), f(&fl.value), "{ctx}");
            }
        }
        Value::Stream(st) => {
            let w = want["entries"].as_array().unwrap();
            assert_eq!(w.len(), st.entries.len(), "{ctx}");
            for (we, ge) in w.iter().zip(&st.entries) {
                assert_eq!(json_str(&we["id"]), ge.id.to_string(), "{ctx}");
                let wi: BTreeMap<String, String> = we["items"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), json_str(v)))
                    .collect();
                let gi: BTreeMap<String, String> =
                    ge.fields.iter().map(|(a, b)| (f(a), f(b))).collect();
                assert_eq!(wi, gi, "{ctx}");
            }
            if let Some(wid) = want.get("idmp") {
                let idmp = st.idmp.as_ref().expect("RDB 13 stream has IDMP state");
                assert_eq!(wid["duration"].as_u64(), Some(idmp.duration), "{ctx}");
                assert_eq!(wid["maxEntries"].as_u64(), Some(idmp.max_entries), "{ctx}");
                let wp = wid["producers"].as_array().unwrap();
                assert_eq!(wp.len(), idmp.producers.len(), "{ctx}");
                for (w, (pid, es)) in wp.iter().zip(&idmp.producers) {
                    assert_eq!(json_str(&w["pid"]), f(pid), "{ctx}");
                    let we: Vec<(String, String)> = w["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (json_str(&e["iid"]), json_str(&e["streamId"])))
                        .collect();
                    let ge: Vec<(String, String)> =
                        es.iter().map(|(i, id)| (f(i), id.to_string())).collect();
                    assert_eq!(we, ge, "{ctx}");
                }
            }
        }
        Value::Module(_) => {}
    }
}

fn check_rdbrs(e: &Entry, want: &J, ctx: &str) {
    let v = e.value.as_ref().unwrap();
    let eq = |b: &[u8], w: &J| {
        let w = json_str(w);
        assert_eq!(rdbrs_form(b, &w), w, "{ctx}");
    };
    let find = |o: &serde_json::Map<String, J>, b: &[u8]| -> J {
        o.iter()
            .find(|(k, _)| latin1(b) == **k || s(b) == **k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{ctx}: {:?} missing", s(b)))
    };
    match v {
        Value::String(b) => {
            if e.expire_at_ms.is_none() {
                eq(b, want)
            }
        }
        Value::List(l) => {
            let w = want.as_array().unwrap();
            assert_eq!(w.len(), l.len(), "{ctx}");
            for (b, wj) in l.iter().zip(w) {
                eq(b, wj);
            }
        }
        Value::Set(m) => {
            let w: BTreeSet<String> = want.as_array().unwrap().iter().map(json_str).collect();
            assert_eq!(w.len(), m.len(), "{ctx}");
            for b in m {
                assert!(w.contains(&latin1(b)) || w.contains(&s(b)), "{ctx}");
            }
        }
        Value::SortedSet(z) => {
            let w = want.as_object().unwrap();
            assert_eq!(w.len(), z.len(), "{ctx}");
            for (m, sc) in z {
                let ws = json_str(&find(w, m));
                assert!(
                    close(
                        ferry_rdb::encoding::parse_double(ws.as_bytes()).unwrap(),
                        *sc
                    ),
                    "{ctx}"
                );
            }
        }
        Value::Hash(h) => {
            let w = want.as_object().unwrap();
            assert_eq!(w.len(), h.len(), "{ctx}");
            for f in h {
                eq(&f.value, &find(w, &f.field));
            }
        }
        other => panic!("{ctx}: unexpected {other:?}"),
    }
}

#[test]
fn hdt3213_json_exports_match_decoded_values() {
    let dir = corpus().join("hdt3213/cases");
    let mut compared = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "rdb") {
            continue;
        }
        let jp = p.with_extension("json");
        if !jp.exists() {
            continue;
        }
        let want: J = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
        let items = read_all(&std::fs::read(&p).unwrap(), ParserOptions::default()).unwrap();
        let got = by_key(&items);
        let objs: Vec<&J> = want
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut keys = 0;
        for o in objs {
            let t = o["type"].as_str().unwrap();
            if t == "aux" {
                continue;
            }
            if t == "functions" {
                let code = json_str(&o["functionsLua"]);
                assert!(items
                    .iter()
                    .any(|i| matches!(i, Item::Function { code: c } if s(c) == code)));
                continue;
            }
            let db = o["db"].as_u64().unwrap();
            let key = json_str(&o["key"]);
            let e = got
                .get(&(db, key.clone().into_bytes()))
                .unwrap_or_else(|| panic!("{}: key {key} missing", p.display()));
            check_hdt(e, o, &rel(&p));
            keys += 1;
        }
        assert_eq!(keys, got.len(), "{}: key count", p.display());
        compared += 1;
    }
    eprintln!("hdt3213: {compared} files match their JSON exports");
    assert!(compared >= 35);
}

#[test]
fn rdb_rs_json_exports_match_decoded_values() {
    let dir = corpus().join("rdb-rs");
    let mut compared = 0;
    for e in std::fs::read_dir(dir.join("json")).unwrap() {
        let jp = e.unwrap().path();
        let p = dir.join(jp.file_stem().unwrap()).with_extension("rdb");
        let want: J = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
        let items = read_all(&std::fs::read(&p).unwrap(), ParserOptions::default()).unwrap();
        let got = entries(&items);
        // One JSON object per database, in file order.
        let mut dbs: Vec<u64> = got.iter().map(|e| e.db).collect();
        dbs.dedup();
        let objs = want.as_array().unwrap();
        let mut n = 0;
        for (i, o) in objs.iter().enumerate() {
            for (k, v) in o.as_object().unwrap() {
                let e = got
                    .iter()
                    .find(|e| e.db == dbs[i] && (latin1(&e.key) == *k || s(&e.key) == *k))
                    .unwrap_or_else(|| panic!("{}: key {k:?} missing", p.display()));
                check_rdbrs(e, v, &format!("{} key {k}", rel(&p)));
                n += 1;
            }
        }
        assert_eq!(n, got.len(), "{}", p.display());
        compared += 1;
    }
    eprintln!("rdb-rs: {compared} files match their JSON exports");
    assert!(compared >= 25);
}

#[test]
fn librdb_data_json_matches_decoded_values() {
    let pairs = [
        ("hash_data.json", "hash_v3.rdb"),
        ("hash_ex_v12_data.json", "hash_with_expire_v12.rdb"),
        ("hash_lp_ex_v12_data.json", "hash_lp_with_hexpire_v12.rdb"),
        ("hash_lp_v11_data.json", "hash_lp_v11.rdb"),
        ("hash_zl_v6_data.json", "hash_zl_v6.rdb"),
        ("hash_zm_v2_data.json", "hash_zm_v2.rdb"),
        ("module_data.json", "module.rdb"),
        (
            "multiple_lists_strings_data.json",
            "multiple_lists_strings.rdb",
        ),
        ("plain_list_v6_data.json", "plain_list_v6.rdb"),
        ("plain_set_v6_data.json", "plain_set_v6.rdb"),
        ("plain_zset_2_v11_data.json", "plain_zset_2_v11.rdb"),
        ("plain_zset_v6_data.json", "plain_zset_v6.rdb"),
        ("quicklist_data.json", "quicklist.rdb"),
        ("set_is_v11_data.json", "set_is_v11.rdb"),
        ("set_lp_v11_data.json", "set_lp_v11.rdb"),
        ("single_key_data.json", "single_key.rdb"),
        ("single_list_data.json", "quicklist2_v11.rdb"),
        ("stream_data.json", "stream_v11.rdb"),
        ("ziplist_data.json", "ziplist_v3.rdb"),
        ("zset_lp_v11_data.json", "zset_lp_v11.rdb"),
        ("zset_zl_v6_data.json", "zset_zl_v6.rdb"),
        ("string_int_encoded.json", "string_int_encoded.rdb"),
        ("mem_policy_lru.json", "mem_policy_lru.rdb"),
        ("mem_policy_lfu.json", "mem_policy_lfu.rdb"),
        ("set_not_expired.json", "set_not_expired_v11.rdb"),
        ("function2.json", "function2.rdb"),
        ("cluster_slot_info.json", "cluster_slot_info.rdb"),
        ("multiple_dbs_data.json", "multiple_dbs.rdb"),
        (
            "../dumps-pr-rdb-v13/stream_v13.json",
            "../dumps-pr-rdb-v13/stream_v13_idmp.rdb",
        ),
    ];
    let dir = corpus().join("librdb/test/dumps");
    for (j, r) in pairs {
        let text = std::fs::read_to_string(dir.join(j)).unwrap();
        let want: J = if text.trim_start().starts_with('[') {
            serde_json::from_str(&text).unwrap()
        } else {
            serde_json::from_str(&format!("{{{text}}}")).unwrap()
        };
        let items = read_all(
            &std::fs::read(dir.join(r)).unwrap(),
            ParserOptions::default(),
        )
        .unwrap();
        let got = entries(&items);
        let objs: Vec<J> = match want {
            J::Array(a) => a,
            o => vec![o],
        };
        let mut n = 0;
        for o in &objs {
            for (k, v) in o.as_object().unwrap() {
                if k.starts_with("__") {
                    if k == "__func__" {
                        for code in v.as_object().unwrap().values() {
                            let code = json_str(code);
                            assert!(
                                items.iter().any(
                                    |i| matches!(i, Item::Function { code: c } if s(c) == code)
                                ),
                                "{j}"
                            );
                        }
                    }
                    continue;
                }
                let e = got
                    .iter()
                    .find(|e| s(&e.key) == *k)
                    .unwrap_or_else(|| panic!("{j}: key {k} missing"));
                check_plain(e, v, s, &format!("{j} key {k}"));
                n += 1;
            }
        }
        assert_eq!(n, got.len(), "{j}: key count");
    }
}

#[test]
fn redis_encodings_rdb_matches_the_csvdump_in_redis_tests() {
    let items = read_all(
        &std::fs::read(corpus().join("redis/encodings.rdb")).unwrap(),
        ParserOptions::default(),
    )
    .unwrap();
    let got = by_key(&items);
    let get = |k: &str| got[&(0, k.as_bytes().to_vec())].value.clone().unwrap();
    let strs = |v: &[&str]| {
        v.iter()
            .map(|x| bytes::Bytes::copy_from_slice(x.as_bytes()))
            .collect::<Vec<_>>()
    };
    // EXPECTED.md says "a" x 130; the literal in redis's tests/integration/rdb.tcl has 137.
    assert_eq!(get("compressible"), Value::String("a".repeat(137).into()));
    assert_eq!(get("number"), Value::String("10".into()));
    assert_eq!(get("string"), Value::String("Hello World".into()));
    let l8 = ["1", "2", "3", "a", "b", "c", "100000", "6000000000"];
    assert_eq!(get("list_zipped"), Value::List(strs(&l8)));
    assert_eq!(get("list"), Value::List(strs(&[l8, l8, l8].concat())));
    let setof = |v: Value| match v {
        Value::Set(m) => m.iter().map(|b| s(b)).collect::<BTreeSet<_>>(),
        other => panic!("not a set: {other:?}"),
    };
    let want = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(setof(get("set")), want(&l8));
    assert_eq!(setof(get("set_zipped_1")), want(&["1", "2", "3", "4"]));
    assert_eq!(
        setof(get("set_zipped_2")),
        want(&["100000", "200000", "300000", "400000"])
    );
    assert_eq!(
        setof(get("set_zipped_3")),
        want(&[
            "1000000000",
            "2000000000",
            "3000000000",
            "4000000000",
            "5000000000",
            "6000000000"
        ])
    );
    let hash = |v: Value| match v {
        Value::Hash(h) => h
            .iter()
            .map(|f| (s(&f.field), s(&f.value)))
            .collect::<BTreeMap<_, _>>(),
        other => panic!("not a hash: {other:?}"),
    };
    let h = hash(get("hash"));
    assert_eq!(h.len(), 11);
    assert_eq!(h["eee"], "5000000000");
    assert_eq!(
        hash(get("hash_zipped")),
        [("a", "1"), ("b", "2"), ("c", "3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    );
    let zset = |v: Value| match v {
        Value::SortedSet(z) => z
            .iter()
            .map(|(m, sc)| (s(m), *sc))
            .collect::<BTreeMap<_, _>>(),
        other => panic!("not a zset: {other:?}"),
    };
    let z = zset(get("zset"));
    assert_eq!(z.len(), 12);
    assert_eq!(z["bbbb"], 5000000000.0);
    assert_eq!(z["cccc"], 123456789.0);
    assert_eq!(
        zset(get("zset_zipped")),
        [
            ("a".to_string(), 1.0),
            ("b".to_string(), 2.0),
            ("c".to_string(), 3.0)
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn small_redis_fixtures_hold_what_redis_tests_expect() {
    let load = |f: &str| {
        read_all(
            &std::fs::read(corpus().join(f)).unwrap(),
            ParserOptions::default(),
        )
        .unwrap()
    };
    for f in ["redis/hash-zipmap.rdb", "redis/hash-ziplist.rdb"] {
        let items = load(f);
        let e = entries(&items)[0].clone();
        assert_eq!(&e.key[..], b"hash");
        assert_eq!(
            e.value.unwrap(),
            Value::Hash(vec![
                ferry_rdb::HashField::new("f1", "v1"),
                ferry_rdb::HashField::new("f2", "v2")
            ])
        );
    }
    let items = load("redis/zset-ziplist.rdb");
    assert_eq!(
        entries(&items)[0].value.clone().unwrap(),
        Value::SortedSet(vec![("one".into(), 1.0), ("two".into(), 2.0)])
    );
    let items = load("redis/list-quicklist.rdb");
    let got = by_key(&items);
    assert_eq!(
        got[&(0, b"x".to_vec())].value,
        Some(Value::String("7".into()))
    );
    match &got[&(0, b"list".to_vec())].value {
        Some(Value::List(l)) => assert_eq!(&l[0][..], b"7"),
        other => panic!("{other:?}"),
    }
    let items = load("redis/scriptbackup.rdb");
    assert!(entries(&items).is_empty());
    assert!(items.iter().any(|i| matches!(i, Item::Aux { key, value } if &key[..] == b"lua" && &value[..] == b"return redis.call('set', 'foo', 'bar')")));
    let items = load("redis/corrupt_empty_keys.rdb");
    assert_eq!(entries(&items).len(), 9);
    assert!(entries(&items)
        .iter()
        .all(|e| e.value.as_ref().unwrap().is_empty()));
}

#[test]
fn rdb_preamble_of_an_aof_stops_at_eof_and_leaves_the_commands() {
    let bytes = std::fs::read(corpus().join("redis/rdb-preamble.aof")).unwrap();
    let mut p = Parser::new(ParserOptions::default());
    p.feed(&bytes);
    let mut last = None;
    while let Some(i) = p.next_item().unwrap() {
        last = Some(i);
    }
    assert!(matches!(
        last,
        Some(Item::Eof {
            checksum: ferry_rdb::Checksum::Verified(_)
        })
    ));
    assert!(
        p.remaining().starts_with(b"*"),
        "{:?}",
        String::from_utf8_lossy(&p.remaining()[..10])
    );
}

#[test]
fn module_values_decode_their_type_name_from_the_id() {
    let items = read_all(
        &std::fs::read(corpus().join("rdbtools/redis_40_with_module.rdb")).unwrap(),
        ParserOptions::default(),
    )
    .unwrap();
    let m = entries(&items)
        .into_iter()
        .find_map(|e| match &e.value {
            Some(Value::Module(m)) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.name, "ReJSON-RL");
    assert_eq!(m.payload.last(), Some(&0));
    assert!(matches!(
        items.last(),
        Some(Item::Eof {
            checksum: ferry_rdb::Checksum::Disabled
        })
    ));
}

#[test]
fn valkey_files_are_told_apart_by_their_magic() {
    let items = read_all(
        &std::fs::read(corpus().join("hdt3213/cases/valkey_hash2_with_hfe.rdb")).unwrap(),
        ParserOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        items[0],
        Item::Header {
            version: 80,
            flavor: ferry_rdb::Flavor::Valkey
        }
    ));
}

#[test]
fn restore_payloads_never_panic_and_valid_ones_decode() {
    let dir = corpus().join("redis/restore-payloads");
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let mut decoded = 0;
    let mut rejected = 0;
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let bytes = std::fs::read(dir.join(cols[0])).unwrap();
        let res = ferry_rdb::decode_dump(&bytes);
        if cols[4] == "bad" {
            assert!(
                res.as_ref().is_err_and(|e| e.is_checksum()),
                "{}: {res:?}",
                cols[0]
            );
        }
        // With the checksum ignored, decoding must still never panic.
        if bytes.len() > 10 {
            let _ = ferry_rdb::decode_value(&bytes[..bytes.len() - 10], false);
        }
        match res {
            Ok(_) => decoded += 1,
            Err(_) => rejected += 1,
        }
        if cols[0].starts_with("stream-cgroups-legacy") {
            let (v, _) = ferry_rdb::decode_dump(&bytes).unwrap();
            assert!(matches!(v, Value::Stream(_)));
        }
    }
    eprintln!("restore payloads: {decoded} decoded, {rejected} rejected");
}

/// A visitor that rebuilds each value as [`Value`] from what it is given, the way a binding builds its objects.
#[derive(Default)]
struct Rebuild {
    value: Option<Value>,
}

impl Visitor for Rebuild {
    fn string(&mut self, s: &[u8]) {
        self.value = Some(Value::String(Bytes::copy_from_slice(s)));
    }
    fn begin(&mut self, shape: Shape, _len_hint: usize) {
        self.value = Some(match shape {
            Shape::List => Value::List(Vec::new()),
            Shape::Set => Value::Set(Vec::new()),
            _ => Value::Hash(Vec::new()),
        });
    }
    fn element(&mut self, e: Elem<'_>) {
        match self.value.as_mut() {
            Some(Value::List(v) | Value::Set(v)) => v.push(e.to_bytes()),
            Some(Value::Hash(fields)) => match fields.last_mut() {
                Some(f) if f.value.is_empty() && f.expire_at_ms == Some(u64::MAX) => {
                    f.value = e.to_bytes();
                    f.expire_at_ms = None;
                }
                // A field waits for its value, marked by an expiry no hash can have.
                _ => fields.push(HashField {
                    field: e.to_bytes(),
                    value: Bytes::new(),
                    expire_at_ms: Some(u64::MAX),
                }),
            },
            other => panic!("an element outside a collection: {other:?}"),
        }
    }
    fn value(&mut self, v: Value) {
        self.value = Some(v);
    }
}

#[test]
fn visited_values_are_the_decoded_values_of_every_fixture() {
    let mut visited = 0;
    for path in all_rdb_files() {
        let r = rel(&path);
        if expected_failure(&r).is_some() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let decoded = read_all(&bytes, ParserOptions::default()).unwrap();
        let mut reader = Reader::new(&bytes[..], ParserOptions::default());
        let mut v = Rebuild::default();
        let mut rebuilt = Vec::new();
        while let Some(item) = reader.next_item_visit(&mut v).unwrap() {
            if let Item::Entry(mut e) = item {
                assert!(e.value.is_none(), "{r}: a visited entry carries its value");
                e.value = v.value.take();
                rebuilt.push(e);
            }
        }
        let want = entries(&decoded);
        assert_eq!(rebuilt.len(), want.len(), "{r}: key count");
        for (got, want) in rebuilt.iter().zip(&want) {
            assert_eq!(got, *want, "{r}: key {:?}", want.key);
            visited += 1;
        }
        // Fed in small pieces: a value that stops for more input part way (a collection split between two
        // feeds) resumes where it stopped, no element visited twice or missed.
        for piece in [7, 4096] {
            let got = visit_in_pieces(&bytes, piece).unwrap();
            assert_eq!(
                got.len(),
                want.len(),
                "{r}: key count, fed {piece} bytes at a time"
            );
            for (got, want) in got.iter().zip(&want) {
                assert_eq!(
                    got, *want,
                    "{r}: key {:?}, fed {piece} bytes at a time",
                    want.key
                );
            }
        }
    }
    assert!(visited > 500, "only {visited} keys visited");
}

/// Visits every item of `input` fed `piece` bytes at a time; the entries with their visited values, or the error.
fn visit_in_pieces(input: &[u8], piece: usize) -> Result<Vec<Entry>, Error> {
    let mut p = Parser::new(ParserOptions::default());
    let mut v = Rebuild::default();
    let mut out = Vec::new();
    for chunk in input.chunks(piece) {
        p.feed(chunk);
        while let Some(item) = p.next_item_visit(&mut v)? {
            if let Item::Entry(mut e) = item {
                e.value = v.value.take();
                out.push(e);
            }
        }
    }
    p.finish()?;
    Ok(out)
}

#[test]
fn visited_string_keys_split_across_feeds_or_corrupt_are_read_as_when_decoded() {
    let file = Writer::write_to_vec(9, |w| {
        w.select_db(0)?;
        w.write_entry(b"short", &Value::String("v".into()), None)?;
        w.write_entry(
            b"int",
            &Value::String("-12345".into()),
            Some(1_700_000_000_000),
        )?;
        w.write_entry(b"long", &Value::String("x".repeat(300).into()), None)?;
        w.write_entry(b"empty", &Value::String("".into()), Some(5))?;
        w.write_entry(b"list", &Value::List(vec!["a".into()]), None)?;
        w.write_entry(b"after", &Value::String("y".repeat(70).into()), None)
    })
    .unwrap();
    let decoded = read_all(&file, ParserOptions::default()).unwrap();
    let want: Vec<Entry> = entries(&decoded).into_iter().cloned().collect();
    assert_eq!(want.len(), 6);
    for piece in [1, 2, 3, 7, 64, file.len()] {
        assert_eq!(
            visit_in_pieces(&file, piece).unwrap(),
            want,
            "fed {piece} bytes at a time"
        );
    }

    // An LZF string whose compressed bytes end inside a literal run: the same error either way, naming the key.
    let mut bad = b"REDIS0009\xfe\x00".to_vec();
    bad.extend_from_slice(&[0x00, 0x01, b'k', 0xc3, 0x02, 0x0a, 0x01, b'a', 0xff]);
    bad.extend_from_slice(&[0; 8]);
    let want = read_all(&bad, ParserOptions::default()).unwrap_err();
    assert!(want.is_corrupt(), "{want}");
    let got = visit_in_pieces(&bad, bad.len()).unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
}
