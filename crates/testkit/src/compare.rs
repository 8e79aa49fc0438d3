//! Proving two deployments hold the same dataset, or naming how they differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use serde::Serialize;

use crate::error::RedisContext;
use crate::target::{Node, Target};
use crate::Error;

/// How [`compare`] checks values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ValueCheck {
    /// `DEBUG DIGEST-VALUE` when both sides answer it and run the same server family and version, else
    /// [`ValueCheck::Values`] (digests and `DUMP` payloads differ between Redis and Valkey and between RDB
    /// versions); where digests differ the decoded values decide (so digest quirks give no false difference).
    #[default]
    Auto,
    /// `DEBUG DIGEST-VALUE` (an error if a side does not allow `DEBUG`); differing digests are a difference even
    /// when the decoded values look equal.
    Digest,
    /// Read and compare decoded values (`GET`, `LRANGE`, `SMEMBERS`, `ZRANGE .. WITHSCORES`, `HGETALL`, `XRANGE`).
    /// Works across versions and without `DEBUG`; reads whole values.
    Values,
}

/// What [`compare`] checks. Defaults: every database, 20 differences listed, functions compared, automatic
/// expiry tolerance (exact where both sides have `PEXPIRETIME`, 2 s where a side only has `PTTL`, i.e. 6.2),
/// stream groups compared.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// How many differences the report lists (all are counted).
    pub max_differences: usize,
    /// Compare function libraries (`FUNCTION LIST WITHCODE`).
    pub functions: bool,
    /// Largest accepted gap between absolute expiry times. `None`: 0 when both sides answer `PEXPIRETIME`,
    /// 2 s when a side only has `PTTL` (its absolute time is estimated from the local clock). Set it when the
    /// sides were written independently with relative TTLs (two fills at different moments).
    pub expiry_tolerance: Option<Duration>,
    /// Only these databases (`None` = all that hold keys on either side).
    pub dbs: Option<Vec<u32>>,
    /// How values are compared.
    pub values: ValueCheck,
    /// Compare hash field expiries (`HPEXPIRETIME`) where both sides have field expiry (Redis 7.4+, Valkey 9).
    pub field_expiry: bool,
    /// Compare stream consumer groups, consumers and pending entries (digests do not cover them).
    pub stream_groups: bool,
    /// Keys starting with any of these are skipped on both sides (e.g. `ferry:checkpoint:` keys a sync adds to
    /// its target).
    pub ignore_prefixes: Vec<Vec<u8>>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            max_differences: 20,
            functions: true,
            expiry_tolerance: None,
            dbs: None,
            values: ValueCheck::Auto,
            field_expiry: true,
            stream_groups: true,
            ignore_prefixes: Vec::new(),
        }
    }
}

impl CompareOptions {
    /// Sets `values`.
    pub fn values(mut self, v: ValueCheck) -> Self {
        self.values = v;
        self
    }

    /// Sets `field_expiry`.
    pub fn field_expiry(mut self, on: bool) -> Self {
        self.field_expiry = on;
        self
    }

    /// Sets `functions`.
    pub fn functions(mut self, on: bool) -> Self {
        self.functions = on;
        self
    }

    /// Sets `max_differences`.
    pub fn max_differences(mut self, n: usize) -> Self {
        self.max_differences = n;
        self
    }

    /// Sets `expiry_tolerance`.
    pub fn expiry_tolerance(mut self, d: Duration) -> Self {
        self.expiry_tolerance = Some(d);
        self
    }

    /// Adds a key prefix to skip on both sides.
    pub fn ignore_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.ignore_prefixes.push(prefix.into());
        self
    }

    /// Sets `dbs`.
    pub fn dbs(mut self, dbs: impl Into<Vec<u32>>) -> Self {
        self.dbs = Some(dbs.into());
        self
    }
}

/// What differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum DifferenceKind {
    /// The key exists only on side a.
    OnlyInA,
    /// The key exists only on side b.
    OnlyInB,
    /// Different `TYPE`.
    Type,
    /// Same type, different value.
    Value,
    /// Different absolute expiry (or one side has none).
    Expiry,
    /// Different stream groups, consumers or pending entries, or last id.
    StreamState,
    /// Different function libraries.
    Functions,
}

impl fmt::Display for DifferenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DifferenceKind::OnlyInA => "only in a",
            DifferenceKind::OnlyInB => "only in b",
            DifferenceKind::Type => "type differs",
            DifferenceKind::Value => "value differs",
            DifferenceKind::Expiry => "expiry differs",
            DifferenceKind::StreamState => "stream groups differ",
            DifferenceKind::Functions => "functions differ",
        })
    }
}

/// One difference between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Database (`None` for functions).
    pub db: Option<u32>,
    /// Key (`None` for functions).
    pub key: Option<Vec<u8>>,
    /// What differs.
    pub kind: DifferenceKind,
    /// Readable detail (both sides' values, shortened).
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.db {
            write!(f, "db {db} ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "key {} ", show(k))?;
        }
        write!(f, "{}", self.kind)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The result of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CompareReport {
    /// Databases looked at.
    pub dbs: Vec<u32>,
    /// Keys on side a, all databases.
    pub keys_a: u64,
    /// Keys on side b, all databases.
    pub keys_b: u64,
    /// Keys present on both sides and compared.
    pub keys_compared: u64,
    /// The first differences (at most `max_differences`).
    pub differences: Vec<Difference>,
    /// All differences found.
    pub total_differences: u64,
    /// How values were compared ("digest" or "values").
    pub value_check: String,
}

impl CompareReport {
    /// True when nothing differs.
    pub fn is_equal(&self) -> bool {
        self.total_differences == 0
    }

    fn push(&mut self, max: usize, d: Difference) {
        self.total_differences += 1;
        if self.differences.len() < max {
            self.differences.push(d);
        }
    }
}

impl fmt::Display for CompareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_equal() {
            return write!(
                f,
                "datasets are equal: {} keys in dbs {:?} ({} values compared by {})",
                self.keys_compared, self.dbs, self.keys_compared, self.value_check
            );
        }
        writeln!(
            f,
            "datasets differ: {} difference(s); a has {} keys, b has {} keys, {} keys on both (values by {})",
            self.total_differences, self.keys_a, self.keys_b, self.keys_compared, self.value_check
        )?;
        for d in &self.differences {
            writeln!(f, "  - {d}")?;
        }
        if self.total_differences > self.differences.len() as u64 {
            writeln!(
                f,
                "  ... and {} more",
                self.total_differences - self.differences.len() as u64
            )?;
        }
        Ok(())
    }
}

/// A key or value for humans: printable ASCII kept, other bytes as `\xNN`, long ones shortened.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 48;
    let mut s = String::from("\"");
    for &b in bytes.iter().take(MAX) {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    if bytes.len() > MAX {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

/// Proves `a` and `b` hold the same dataset: same databases and key sets, per key the same type, value
/// (digest or decoded, see [`ValueCheck`]), absolute expiry (`PEXPIRETIME` where both sides have it, else
/// `PTTL` within `expiry_tolerance`), stream group state, and function libraries.
///
/// Either side may be a cluster (keys are gathered from every master; only database 0). The report lists the
/// first differences readably; `Err` only when a server cannot be read.
pub fn compare(a: &Target, b: &Target, opts: &CompareOptions) -> Result<CompareReport, Error> {
    let mut side_a = Side::open(a)?;
    let mut side_b = Side::open(b)?;
    let digest = match opts.values {
        ValueCheck::Values => false,
        ValueCheck::Auto => {
            side_a.same_format(&side_b) && side_a.digest_supported() && side_b.digest_supported()
        }
        ValueCheck::Digest => {
            if !side_a.digest_supported() || !side_b.digest_supported() {
                return Err(Error::InvalidArgument(
                    "ValueCheck::Digest: a side does not allow DEBUG DIGEST-VALUE".into(),
                ));
            }
            true
        }
    };
    let mut report = CompareReport {
        value_check: if digest { "digest" } else { "values" }.into(),
        ..Default::default()
    };
    let mut dbs: BTreeSet<u32> = side_a.dbs()?.into_iter().chain(side_b.dbs()?).collect();
    if let Some(only) = &opts.dbs {
        dbs.retain(|d| only.contains(d));
    }
    let max = opts.max_differences;
    for db in dbs {
        report.dbs.push(db);
        let ignored = |k: &Vec<u8>| opts.ignore_prefixes.iter().any(|p| k.starts_with(p));
        let mut keys_a = side_a.keys(db)?;
        let mut keys_b = side_b.keys(db)?;
        keys_a.retain(|k, _| !ignored(k));
        keys_b.retain(|k, _| !ignored(k));
        report.keys_a += keys_a.len() as u64;
        report.keys_b += keys_b.len() as u64;
        let mut common = Vec::new();
        for (k, &na) in &keys_a {
            match keys_b.get(k) {
                Some(&nb) => common.push((k.clone(), na, nb)),
                None => report.push(
                    max,
                    Difference {
                        db: Some(db),
                        key: Some(k.clone()),
                        kind: DifferenceKind::OnlyInA,
                        detail: String::new(),
                    },
                ),
            }
        }
        for k in keys_b.keys().filter(|k| !keys_a.contains_key(*k)) {
            report.push(
                max,
                Difference {
                    db: Some(db),
                    key: Some(k.clone()),
                    kind: DifferenceKind::OnlyInB,
                    detail: String::new(),
                },
            );
        }
        for chunk in common.chunks(256) {
            let ka: Vec<(&[u8], usize)> =
                chunk.iter().map(|(k, na, _)| (k.as_slice(), *na)).collect();
            let kb: Vec<(&[u8], usize)> =
                chunk.iter().map(|(k, _, nb)| (k.as_slice(), *nb)).collect();
            let ma = side_a.meta(db, &ka, digest)?;
            let mb = side_b.meta(db, &kb, digest)?;
            for (i, (key, na, nb)) in chunk.iter().enumerate() {
                report.keys_compared += 1;
                compare_key(
                    &mut report,
                    opts,
                    db,
                    key,
                    (&mut side_a, *na, &ma[i]),
                    (&mut side_b, *nb, &mb[i]),
                    digest,
                )?;
            }
        }
    }
    if opts.functions {
        let fa = side_a.functions()?;
        let fb = side_b.functions()?;
        for (name, code) in &fa {
            match fb.get(name) {
                None => report.push(
                    max,
                    Difference {
                        db: None,
                        key: None,
                        kind: DifferenceKind::Functions,
                        detail: format!("library {name} only in a"),
                    },
                ),
                Some(c) if c != code => report.push(
                    max,
                    Difference {
                        db: None,
                        key: None,
                        kind: DifferenceKind::Functions,
                        detail: format!("library {name} has different code"),
                    },
                ),
                Some(_) => {}
            }
        }
        for name in fb.keys().filter(|n| !fa.contains_key(*n)) {
            report.push(
                max,
                Difference {
                    db: None,
                    key: None,
                    kind: DifferenceKind::Functions,
                    detail: format!("library {name} only in b"),
                },
            );
        }
    }
    Ok(report)
}

fn compare_key(
    report: &mut CompareReport,
    opts: &CompareOptions,
    db: u32,
    key: &[u8],
    (side_a, na, ma): (&mut Side, usize, &Meta),
    (side_b, nb, mb): (&mut Side, usize, &Meta),
    digest: bool,
) -> Result<(), Error> {
    let max = opts.max_differences;
    let diff = |kind, detail| Difference {
        db: Some(db),
        key: Some(key.to_vec()),
        kind,
        detail,
    };
    if ma.kind != mb.kind {
        if ma.kind == "none" || mb.kind == "none" {
            // Expired or deleted between SCAN and TYPE: report as missing.
            let kind = if ma.kind == "none" {
                DifferenceKind::OnlyInB
            } else {
                DifferenceKind::OnlyInA
            };
            report.push(max, diff(kind, "(disappeared while comparing)".into()));
        } else {
            report.push(
                max,
                diff(
                    DifferenceKind::Type,
                    format!("a is {}, b is {}", ma.kind, mb.kind),
                ),
            );
        }
        return Ok(());
    }
    let field_ttl = opts.field_expiry
        && ma.kind == "hash"
        && side_a.field_expiry(na)
        && side_b.field_expiry(nb);
    let values_differ = if field_ttl {
        // Digests need not cover field expiries: hashes are read with them on both sides.
        let va = side_a.value(db, key, na, &ma.kind)?;
        let vb = side_b.value(db, key, nb, &mb.kind)?;
        let va = side_a.with_field_expiries(db, key, na, va)?;
        let vb = side_b.with_field_expiries(db, key, nb, vb)?;
        first_value_difference(&va, &vb)
    } else if digest {
        if ma.digest != mb.digest {
            let va = side_a.value(db, key, na, &ma.kind)?;
            let vb = side_b.value(db, key, nb, &mb.kind)?;
            match first_value_difference(&va, &vb) {
                Some(d) => Some(d),
                // The digest mixes in whether the key has an expiry; that difference is reported below.
                None if ma.expire_at.is_some() != mb.expire_at.is_some() => None,
                // Auto: decoded values decide (digests of different versions need not agree).
                None if opts.values == ValueCheck::Auto => None,
                None => Some(format!(
                    "digests {} vs {} (decoded values look equal)",
                    ma.digest.as_deref().unwrap_or("?"),
                    mb.digest.as_deref().unwrap_or("?")
                )),
            }
        } else {
            None
        }
    } else {
        let va = side_a.value(db, key, na, &ma.kind)?;
        let vb = side_b.value(db, key, nb, &mb.kind)?;
        first_value_difference(&va, &vb)
    };
    if let Some(detail) = values_differ {
        report.push(max, diff(DifferenceKind::Value, detail));
    }
    let tolerance = match opts.expiry_tolerance {
        Some(d) => d.as_millis() as i64,
        None if ma.exact_expiry && mb.exact_expiry => 0,
        None => 2000,
    };
    match (ma.expire_at, mb.expire_at) {
        (None, None) => {}
        (Some(x), Some(y)) if (x - y).abs() <= tolerance => {}
        (x, y) => report.push(
            max,
            diff(
                DifferenceKind::Expiry,
                format!("a {}, b {}", show_expiry(x), show_expiry(y)),
            ),
        ),
    }
    if opts.stream_groups && ma.kind == "stream" {
        let ga = side_a.stream_state(db, key, na)?;
        let gb = side_b.stream_state(db, key, nb)?;
        if let Some(d) = first_line_difference(&ga, &gb) {
            report.push(max, diff(DifferenceKind::StreamState, d));
        }
    }
    Ok(())
}

fn show_expiry(at: Option<i64>) -> String {
    match at {
        None => "no expiry".into(),
        Some(ms) => format!("expires at {ms} ms"),
    }
}

/// Per-key facts fetched in batches.
struct Meta {
    kind: String,
    digest: Option<String>,
    /// Absolute expiry in Unix ms.
    expire_at: Option<i64>,
    /// True when `expire_at` came from `PEXPIRETIME` (exact), false when from `PTTL` + local clock.
    exact_expiry: bool,
}

/// One side of the comparison: its masters, and which database each has selected.
struct Side {
    nodes: Vec<Node>,
    cluster: bool,
    selected: Vec<Option<u32>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).unwrap_or_default().into_bytes(),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

impl Side {
    fn open(t: &Target) -> Result<Side, Error> {
        let nodes = t.masters()?;
        let n = nodes.len();
        Ok(Side {
            nodes,
            cluster: t.is_cluster(),
            selected: vec![None; n],
        })
    }

    /// True when every node of both sides runs the same family and version (so digests can be compared).
    fn same_format(&self, other: &Side) -> bool {
        let first = self.nodes.first().map(|n| (n.valkey, n.version));
        self.nodes
            .iter()
            .chain(&other.nodes)
            .all(|n| Some((n.valkey, n.version)) == first)
    }

    /// Node `i` has hash field expiry.
    fn field_expiry(&self, i: usize) -> bool {
        self.nodes[i].field_expiry()
    }

    /// Adds each field's absolute expiry (`HPEXPIRETIME`, -1 for none) to a decoded hash.
    fn with_field_expiries(
        &mut self,
        db: u32,
        key: &[u8],
        i: usize,
        v: Decoded,
    ) -> Result<Decoded, Error> {
        let Decoded::Hash(fields) = v else {
            return Ok(v);
        };
        self.select(i, db)?;
        let node = &mut self.nodes[i];
        let names: Vec<&Vec<u8>> = fields.keys().collect();
        let mut times: Vec<i64> = Vec::with_capacity(names.len());
        for chunk in names.chunks(512) {
            let t: Vec<i64> = redis::cmd("HPEXPIRETIME")
                .arg(key)
                .arg("FIELDS")
                .arg(chunk.len())
                .arg(chunk)
                .query(&mut node.con)
                .ctx(|| format!("HPEXPIRETIME {} on {}", show(key), node.addr))?;
            times.extend(t);
        }
        let expiries = fields
            .keys()
            .cloned()
            .zip(times)
            .filter(|(_, t)| *t >= 0)
            .collect();
        Ok(Decoded::HashWithFieldExpiries(fields, expiries))
    }

    fn digest_supported(&mut self) -> bool {
        self.nodes.iter_mut().all(|n| {
            redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg("ferry-testkit:probe")
                .query::<Value>(&mut n.con)
                .is_ok()
        })
    }

    fn dbs(&mut self) -> Result<Vec<u32>, Error> {
        if self.cluster {
            return Ok(vec![0]);
        }
        let node = &mut self.nodes[0];
        let text: String = redis::cmd("INFO")
            .arg("keyspace")
            .query(&mut node.con)
            .ctx(|| format!("INFO keyspace on {}", node.addr))?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
            .collect())
    }

    fn select(&mut self, i: usize, db: u32) -> Result<(), Error> {
        if self.cluster || self.selected[i] == Some(db) {
            return Ok(());
        }
        let node = &mut self.nodes[i];
        redis::cmd("SELECT")
            .arg(db)
            .exec(&mut node.con)
            .ctx(|| format!("SELECT {db} on {}", node.addr))?;
        self.selected[i] = Some(db);
        Ok(())
    }

    /// Every key of `db`, with the index of the node holding it.
    fn keys(&mut self, db: u32) -> Result<BTreeMap<Vec<u8>, usize>, Error> {
        let mut out = BTreeMap::new();
        if self.cluster && db != 0 {
            return Ok(out); // a cluster has only database 0
        }
        for i in 0..self.nodes.len() {
            self.select(i, db)?;
            let node = &mut self.nodes[i];
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut node.con)
                    .ctx(|| format!("SCAN db {db} on {}", node.addr))?;
                for k in keys {
                    out.insert(k, i);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// TYPE, expiry and (optionally) digest of each key, pipelined per node.
    fn meta(&mut self, db: u32, keys: &[(&[u8], usize)], digest: bool) -> Result<Vec<Meta>, Error> {
        let mut out: Vec<Option<Meta>> = (0..keys.len()).map(|_| None).collect();
        for i in 0..self.nodes.len() {
            let mine: Vec<usize> = (0..keys.len()).filter(|&j| keys[j].1 == i).collect();
            if mine.is_empty() {
                continue;
            }
            self.select(i, db)?;
            let node = &mut self.nodes[i];
            let exact = node.is_7();
            let mut pipe = redis::pipe();
            for &j in &mine {
                let k = keys[j].0;
                pipe.cmd("TYPE").arg(k);
                pipe.cmd(if exact { "PEXPIRETIME" } else { "PTTL" }).arg(k);
                if digest {
                    pipe.cmd("DEBUG").arg("DIGEST-VALUE").arg(k);
                }
            }
            let before = now_ms();
            let replies: Vec<Value> = pipe
                .query(&mut node.con)
                .ctx(|| format!("reading key metadata on {}", node.addr))?;
            let per = if digest { 3 } else { 2 };
            if replies.len() != mine.len() * per {
                return Err(Error::unexpected(
                    format!("reading key metadata on {}", node.addr),
                    format!(
                        "{} replies for {} commands",
                        replies.len(),
                        mine.len() * per
                    ),
                ));
            }
            for (n, &j) in mine.iter().enumerate() {
                let r = &replies[n * per..n * per + per];
                let kind = text(&r[0]).unwrap_or_default();
                let t = match &r[1] {
                    Value::Int(t) => *t,
                    _ => -1,
                };
                let expire_at = (t >= 0).then(|| if exact { t } else { before + t });
                let digest = if digest {
                    items(r[2].clone()).first().and_then(text)
                } else {
                    None
                };
                out[j] = Some(Meta {
                    kind,
                    digest,
                    expire_at,
                    exact_expiry: exact,
                });
            }
        }
        out.into_iter()
            .map(|m| {
                m.ok_or_else(|| Error::unexpected("reading key metadata", "a key had no reply"))
            })
            .collect()
    }

    fn value(&mut self, db: u32, key: &[u8], i: usize, kind: &str) -> Result<Decoded, Error> {
        self.select(i, db)?;
        let node = &mut self.nodes[i];
        let ctx = || format!("reading {} on {}", show(key), node.addr);
        Ok(match kind {
            "string" => Decoded::Str(
                redis::cmd("GET")
                    .arg(key)
                    .query::<Option<Vec<u8>>>(&mut node.con)
                    .ctx(ctx)?
                    .unwrap_or_default(),
            ),
            "list" => Decoded::List(
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query(&mut node.con)
                    .ctx(ctx)?,
            ),
            "set" => Decoded::Set(
                redis::cmd("SMEMBERS")
                    .arg(key)
                    .query::<Vec<Vec<u8>>>(&mut node.con)
                    .ctx(ctx)?
                    .into_iter()
                    .collect(),
            ),
            "zset" => {
                let v: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut node.con)
                    .ctx(ctx)?;
                Decoded::ZSet(v.into_iter().map(|(m, s)| (m, parse_score(&s))).collect())
            }
            "hash" => Decoded::Hash(
                redis::cmd("HGETALL")
                    .arg(key)
                    .query::<Vec<(Vec<u8>, Vec<u8>)>>(&mut node.con)
                    .ctx(ctx)?
                    .into_iter()
                    .collect(),
            ),
            "stream" => {
                let v: Value = redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query(&mut node.con)
                    .ctx(ctx)?;
                Decoded::Stream(
                    items(v)
                        .into_iter()
                        .map(|e| {
                            let mut parts = items(e).into_iter();
                            let id = parts.next().and_then(|v| text(&v)).unwrap_or_default();
                            let fields = parts
                                .next()
                                .map(|f| items(f).iter().map(bytes).collect())
                                .unwrap_or_default();
                            (id, fields)
                        })
                        .collect(),
                )
            }
            other => {
                let v: Value = redis::cmd("DUMP").arg(key).query(&mut node.con).ctx(ctx)?;
                Decoded::Other(other.to_string(), bytes(&v))
            }
        })
    }

    /// Stream state digests do not cover, as sorted lines: last id, groups, consumers, pending entries.
    fn stream_state(&mut self, db: u32, key: &[u8], i: usize) -> Result<Vec<String>, Error> {
        self.select(i, db)?;
        let node = &mut self.nodes[i];
        let ctx = || format!("reading stream groups of {} on {}", show(key), node.addr);
        let mut lines = Vec::new();
        let info = fields(
            redis::cmd("XINFO")
                .arg("STREAM")
                .arg(key)
                .query(&mut node.con)
                .ctx(ctx)?,
        );
        lines.push(format!(
            "last-generated-id {}",
            info.get("last-generated-id").cloned().unwrap_or_default()
        ));
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query(&mut node.con)
            .ctx(ctx)?;
        for g in items(groups) {
            let g = fields(g);
            let name = g.get("name").cloned().unwrap_or_default();
            lines.push(format!(
                "group {name} last-delivered-id {} pending {}",
                g.get("last-delivered-id").cloned().unwrap_or_default(),
                g.get("pending").cloned().unwrap_or_default()
            ));
            let consumers: Value = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(key)
                .arg(&name)
                .query(&mut node.con)
                .ctx(ctx)?;
            for c in items(consumers) {
                let c = fields(c);
                lines.push(format!(
                    "group {name} consumer {} pending {}",
                    c.get("name").cloned().unwrap_or_default(),
                    c.get("pending").cloned().unwrap_or_default()
                ));
            }
            let pending: Value = redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(1_000_000)
                .query(&mut node.con)
                .ctx(ctx)?;
            for p in items(pending) {
                let p: Vec<String> = items(p).iter().filter_map(text).collect();
                if p.len() >= 2 {
                    lines.push(format!(
                        "group {name} pending entry {} owned by {}",
                        p[0], p[1]
                    ));
                }
            }
        }
        lines.sort();
        Ok(lines)
    }

    /// Library name -> code, from every master (a cluster's masters should agree; all are merged).
    fn functions(&mut self) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        for node in &mut self.nodes {
            if !node.is_7() {
                continue;
            }
            let v: Value = redis::cmd("FUNCTION")
                .arg("LIST")
                .arg("WITHCODE")
                .query(&mut node.con)
                .ctx(|| format!("FUNCTION LIST on {}", node.addr))?;
            for lib in items(v) {
                let f = fields(lib);
                if let Some(name) = f.get("library_name") {
                    out.insert(
                        name.clone(),
                        f.get("library_code").cloned().unwrap_or_default(),
                    );
                }
            }
        }
        Ok(out)
    }
}

/// A flat `[name, value, ...]` reply (or a RESP3 map) as name -> text value (nested values skipped).
fn fields(v: Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = items(v).into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Some(k), Some(v)) = (text(&k), text(&v)) {
            out.insert(k, v);
        }
    }
    out
}

fn parse_score(s: &str) -> f64 {
    match s {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// A value read back with type-specific commands, in a canonical (ordered) form.
enum Decoded {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    ZSet(BTreeMap<Vec<u8>, f64>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// A hash and the absolute expiry (Unix ms) of each field that has one.
    HashWithFieldExpiries(BTreeMap<Vec<u8>, Vec<u8>>, BTreeMap<Vec<u8>, i64>),
    Stream(Vec<(String, Vec<Vec<u8>>)>),
    Other(String, Vec<u8>),
}

/// The first difference between two decoded values, in words, or `None` if equal.
fn first_value_difference(a: &Decoded, b: &Decoded) -> Option<String> {
    match (a, b) {
        (Decoded::Str(x), Decoded::Str(y)) => (x != y).then(|| {
            let at = x
                .iter()
                .zip(y)
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            format!(
                "a {} ({} bytes) vs b {} ({} bytes), first difference at byte {at}",
                show(x),
                x.len(),
                show(y),
                y.len()
            )
        }),
        (Decoded::List(x), Decoded::List(y)) => {
            if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
                Some(format!(
                    "element {i}: a {} vs b {}",
                    show(&x[i]),
                    show(&y[i])
                ))
            } else {
                (x.len() != y.len())
                    .then(|| format!("a has {} elements, b has {}", x.len(), y.len()))
            }
        }
        (Decoded::Set(x), Decoded::Set(y)) => {
            let only_a: Vec<String> = x.difference(y).take(3).map(|m| show(m)).collect();
            let only_b: Vec<String> = y.difference(x).take(3).map(|m| show(m)).collect();
            (!only_a.is_empty() || !only_b.is_empty()).then(|| {
                format!(
                    "members only in a: [{}], only in b: [{}] (sizes {} and {})",
                    only_a.join(", "),
                    only_b.join(", "),
                    x.len(),
                    y.len()
                )
            })
        }
        (Decoded::ZSet(x), Decoded::ZSet(y)) => {
            for (m, s) in x {
                match y.get(m) {
                    None => return Some(format!("member {} (score {s}) only in a", show(m))),
                    Some(t) if t != s && !(t.is_nan() && s.is_nan()) => {
                        return Some(format!("member {} score a {s} vs b {t}", show(m)))
                    }
                    _ => {}
                }
            }
            y.keys()
                .find(|m| !x.contains_key(*m))
                .map(|m| format!("member {} only in b", show(m)))
        }
        (Decoded::Hash(x), Decoded::Hash(y)) => {
            for (f, v) in x {
                match y.get(f) {
                    None => return Some(format!("field {} only in a", show(f))),
                    Some(w) if w != v => {
                        return Some(format!("field {}: a {} vs b {}", show(f), show(v), show(w)))
                    }
                    _ => {}
                }
            }
            y.keys()
                .find(|f| !x.contains_key(*f))
                .map(|f| format!("field {} only in b", show(f)))
        }
        (Decoded::HashWithFieldExpiries(x, ex), Decoded::HashWithFieldExpiries(y, ey)) => {
            first_value_difference(&Decoded::Hash(x.clone()), &Decoded::Hash(y.clone())).or_else(
                || {
                    let f = ex
                        .keys()
                        .chain(ey.keys())
                        .find(|f| ex.get(*f) != ey.get(*f))?;
                    let at = |m: &BTreeMap<Vec<u8>, i64>| {
                        m.get(f)
                            .map(|t| format!("field expires at {t} ms"))
                            .unwrap_or_else(|| "no field expiry".into())
                    };
                    Some(format!("field {}: a {}, b {}", show(f), at(ex), at(ey)))
                },
            )
        }
        (Decoded::Stream(x), Decoded::Stream(y)) => {
            if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
                let (ia, fa) = &x[i];
                let (ib, fb) = &y[i];
                if ia != ib {
                    Some(format!("entry {i}: id a {ia} vs b {ib}"))
                } else {
                    Some(format!(
                        "entry {ia}: fields differ ({} vs {})",
                        fa.len(),
                        fb.len()
                    ))
                }
            } else {
                (x.len() != y.len())
                    .then(|| format!("a has {} entries, b has {}", x.len(), y.len()))
            }
        }
        (Decoded::Other(t, x), Decoded::Other(_, y)) => {
            (x != y).then(|| format!("{t} DUMP payloads differ"))
        }
        _ => Some("decoded as different types".into()),
    }
}

fn first_line_difference(a: &[String], b: &[String]) -> Option<String> {
    let sa: BTreeSet<&String> = a.iter().collect();
    let sb: BTreeSet<&String> = b.iter().collect();
    if let Some(l) = sa.difference(&sb).next() {
        return Some(format!(
            "a has \"{l}\"{}",
            sb.iter()
                .find(|x| same_subject(x, l))
                .map(|x| format!(", b has \"{x}\""))
                .unwrap_or_default()
        ));
    }
    sb.difference(&sa)
        .next()
        .map(|l| format!("b has \"{l}\", a does not"))
}

/// Two state lines about the same thing (same words up to the last value).
fn same_subject(a: &str, b: &str) -> bool {
    a.rsplit_once(' ').map(|x| x.0) == b.rsplit_once(' ').map(|x| x.0)
}
