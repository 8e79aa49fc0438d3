//! Writing a deterministic dataset with every type and encoding the server has.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::RedisContext;
use crate::target::{Node, Target};
use crate::{key_slot, Error};

/// What [`fill`] writes. Defaults: seed 1, scale 1, databases 0, 1, 2, functions on, prefix `ferry`.
#[derive(Clone, Debug)]
pub struct FillOptions {
    /// Seed of every value; the same seed and scale give the same dataset.
    pub seed: u64,
    /// Size multiplier (1 writes a few hundred keys and about 1 MB; keys and big values grow with it).
    pub scale: u32,
    /// Databases to fill (a cluster has only 0: other numbers are ignored there).
    pub dbs: Vec<u32>,
    /// Load a Lua library with `FUNCTION LOAD` (7.0+ only; ignored on 6.2).
    pub functions: bool,
    /// Prefix of every key name.
    pub prefix: String,
    /// Also write big values: a list, set, sorted set, hash and stream of about `big_value_bytes` each
    /// (`0`, the default, writes none). Meant to pass a replicator's bound for one `RESTORE`.
    pub big_value_bytes: usize,
}

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            seed: 1,
            scale: 1,
            dbs: vec![0, 1, 2],
            functions: true,
            prefix: "ferry".into(),
            big_value_bytes: 0,
        }
    }
}

impl FillOptions {
    /// Default options with `seed`.
    pub fn seed(seed: u64) -> Self {
        FillOptions {
            seed,
            ..Default::default()
        }
    }

    /// Sets the scale.
    pub fn scale(mut self, scale: u32) -> Self {
        self.scale = scale;
        self
    }

    /// Sets the databases.
    pub fn dbs(mut self, dbs: impl Into<Vec<u32>>) -> Self {
        self.dbs = dbs.into();
        self
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets `big_value_bytes` (one big list, set, sorted set, hash and stream per database of about that size).
    pub fn big_values(mut self, bytes: usize) -> Self {
        self.big_value_bytes = bytes;
        self
    }
}

/// One key that is meant to have a given internal encoding (checked with `OBJECT ENCODING`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EncodingSample {
    /// Database.
    pub db: u32,
    /// Key name.
    pub key: Vec<u8>,
    /// Redis type (`TYPE`): string, list, set, zset, hash, stream.
    pub kind: String,
    /// What this key stands for ("intset of 64-bit values").
    pub what: String,
    /// `OBJECT ENCODING` the server of this version must report.
    pub encoding: String,
}

/// What [`fill`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FillReport {
    /// Keys written per database and type.
    pub keys: BTreeMap<u32, BTreeMap<String, u64>>,
    /// All keys written.
    pub total_keys: u64,
    /// Keys given an expiry (all far in the future).
    pub keys_with_expiry: u64,
    /// Function libraries loaded (empty on 6.2).
    pub function_libraries: Vec<String>,
    /// One key per intended encoding.
    pub samples: Vec<EncodingSample>,
    /// Hashes given field expiries (`HPEXPIREAT`, all far in the future; Redis 7.4+ and Valkey 9 only).
    pub hashes_with_field_expiry: Vec<(u32, Vec<u8>)>,
    /// Keys of a module type (vector sets on Redis 8), by database, with their `TYPE`.
    pub module_keys: Vec<(u32, Vec<u8>, String)>,
    /// Keys written as big values (see [`FillOptions::big_value_bytes`]).
    pub big_keys: Vec<(u32, Vec<u8>)>,
}

impl FillReport {
    /// Keys written in `db`.
    pub fn keys_in(&self, db: u32) -> u64 {
        self.keys.get(&db).map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Keys of `kind` written in `db`.
    pub fn count(&self, db: u32, kind: &str) -> u64 {
        self.keys
            .get(&db)
            .and_then(|m| m.get(kind))
            .copied()
            .unwrap_or(0)
    }
}

/// Far-future absolute expiry base (2100-01-01T00:00:00Z in ms): never reached during a test.
pub const FAR_FUTURE_MS: u64 = 4_102_444_800_000;
/// Relative expiry used by [`fill`] (10 days).
pub const RELATIVE_TTL_SECS: u64 = 864_000;

/// Writes a dataset with every type and encoding of the target's version: see [`FillOptions`].
///
/// - strings: int, embstr, raw, large incompressible, long compressible (so RDB LZF applies), binary
///   (non-UTF-8), empty, `i64::MIN`/`MAX`, binary key names;
/// - lists: short, long (many quicklist nodes), one with a 10 KB element (a PLAIN quicklist node on 7.0 when
///   `DEBUG` is allowed);
/// - sets: intsets of 16-, 32- and 64-bit values, small and large hashtables;
/// - sorted sets: small (listpack / ziplist) and large or long-member (skiplist), with `inf`, `-inf` and
///   fractional scores;
/// - hashes: small (listpack / ziplist) and large or long-value (hashtable);
/// - streams: plain; with consumer groups, consumers (one without pending entries), pending (unacknowledged)
///   entries, acknowledged and deleted entries; one emptied by `XDEL` with a group;
/// - expiry: relative (`SET .. EX`, 10 days and more) and absolute (`PEXPIREAT` after 2100), on every type;
/// - hash field expiry where the server has it (Redis 7.4+/8.x, Valkey 9): small and large hashes with some
///   fields given `HPEXPIREAT` after 2100 ([`FillReport::hashes_with_field_expiry`]);
/// - a vector set (`VADD`, with attributes) on Redis 8 ([`FillReport::module_keys`]);
/// - big values when [`FillOptions::big_value_bytes`] is set ([`FillReport::big_keys`]);
/// - every database in `opts.dbs`, and a function library (`FUNCTION LOAD`) on 7.0 and later.
///
/// On Redis 7.2+ and Valkey, small lists and small sets of strings are listpacks, and the samples say so.
///
/// On a cluster, keys go to the master owning their slot and the library is loaded on every master.
/// [`FillReport::samples`] names one key per intended encoding, to check with `OBJECT ENCODING`.
pub fn fill(target: &Target, opts: &FillOptions) -> Result<FillReport, Error> {
    let nodes = target.masters()?;
    let v7 = nodes.iter().all(Node::is_7);
    let v72 = nodes.iter().all(Node::is_7_2);
    let field_expiry = nodes.iter().all(Node::field_expiry);
    let vector_sets = nodes.iter().all(|n| !n.valkey && n.version.0 >= 8);
    let mut w = Writer::new(nodes, target.is_cluster());
    let dbs: Vec<u32> = if target.is_cluster() {
        vec![0]
    } else {
        opts.dbs.clone()
    };
    let mut report = FillReport::default();
    for &db in &dbs {
        let mut g = Gen {
            w: &mut w,
            rng: Rng::new(opts.seed ^ (u64::from(db) << 48) ^ 0x9E37_79B9_7F4A_7C15),
            db,
            report: &mut report,
            prefix: &opts.prefix,
            v7,
            v72,
            scale: opts.scale.max(1) as usize,
        };
        g.strings()?;
        g.lists()?;
        g.sets()?;
        g.zsets()?;
        g.hashes()?;
        g.streams()?;
        g.expiries()?;
        if field_expiry {
            g.field_expiries()?;
        }
        if vector_sets {
            g.vector_sets()?;
        }
        if opts.big_value_bytes > 0 {
            g.big_values(opts.big_value_bytes)?;
        }
    }
    w.flush()?;
    if opts.functions && v7 {
        let name = format!(
            "{}_lib_{}",
            opts.prefix
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            opts.seed
        );
        let code = format!(
            "#!lua name={name}\n\
             redis.register_function('{name}_echo', function(keys, args) return args[1] end)\n\
             redis.register_function{{function_name='{name}_get', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={{'no-writes'}}}}\n"
        );
        for node in &mut w.nodes {
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(&code)
                .exec(&mut node.con)
                .ctx(|| format!("FUNCTION LOAD on {}", node.addr))?;
        }
        report.function_libraries.push(name);
    }
    Ok(report)
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo.wrapping_add(self.below(hi.wrapping_sub(lo) as u64 + 1) as i64)
    }
    fn alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len)
            .map(|_| A[self.below(A.len() as u64) as usize] as char)
            .collect()
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Pipelines commands to the node owning each key, selecting databases as needed.
struct Writer {
    nodes: Vec<Node>,
    cluster: bool,
    /// Every node allows `DEBUG` (`enable-debug-command`; always on 6.2).
    debug_allowed: bool,
    pipes: Vec<(redis::Pipeline, usize)>,
    dbs: Vec<Option<u32>>,
}

const PIPELINE_DEPTH: usize = 200;

impl Writer {
    fn new(mut nodes: Vec<Node>, cluster: bool) -> Self {
        let n = nodes.len();
        let debug_allowed = nodes.iter_mut().all(|n| {
            redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg("ferry-testkit:probe")
                .query::<redis::Value>(&mut n.con)
                .is_ok()
        });
        Writer {
            nodes,
            cluster,
            debug_allowed,
            pipes: (0..n).map(|_| (redis::pipe(), 0)).collect(),
            dbs: vec![None; n],
        }
    }

    fn node_for(&self, key: &[u8]) -> Result<usize, Error> {
        if !self.cluster {
            return Ok(0);
        }
        let slot = key_slot(key);
        self.nodes
            .iter()
            .position(|n| n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .ok_or_else(|| {
                Error::unexpected("routing a key", format!("no master owns slot {slot}"))
            })
    }

    fn send(&mut self, db: u32, key: &[u8], cmd: redis::Cmd) -> Result<(), Error> {
        let i = self.node_for(key)?;
        if !self.cluster && self.dbs[i] != Some(db) {
            let mut select = redis::cmd("SELECT");
            select.arg(db);
            self.pipes[i].0.add_command(select).ignore();
            self.pipes[i].1 += 1;
            self.dbs[i] = Some(db);
        }
        self.pipes[i].0.add_command(cmd).ignore();
        self.pipes[i].1 += 1;
        if self.pipes[i].1 >= PIPELINE_DEPTH {
            self.flush_one(i)?;
        }
        Ok(())
    }

    fn flush_one(&mut self, i: usize) -> Result<(), Error> {
        if self.pipes[i].1 == 0 {
            return Ok(());
        }
        let (pipe, _) = std::mem::replace(&mut self.pipes[i], (redis::pipe(), 0));
        let node = &mut self.nodes[i];
        pipe.exec(&mut node.con)
            .ctx(|| format!("writing fill data to {}", node.addr))
    }

    fn flush(&mut self) -> Result<(), Error> {
        for i in 0..self.nodes.len() {
            self.flush_one(i)?;
        }
        Ok(())
    }
}

struct Gen<'a> {
    w: &'a mut Writer,
    rng: Rng,
    db: u32,
    report: &'a mut FillReport,
    prefix: &'a str,
    v7: bool,
    /// Redis 7.2+ or Valkey: small lists and string sets are listpacks.
    v72: bool,
    scale: usize,
}

impl Gen<'_> {
    fn key(&self, parts: &str) -> Vec<u8> {
        format!("{}:{parts}", self.prefix).into_bytes()
    }

    fn cmd(
        &mut self,
        key: &[u8],
        name: &str,
        args: impl FnOnce(&mut redis::Cmd),
    ) -> Result<(), Error> {
        let mut c = redis::cmd(name);
        c.arg(key);
        args(&mut c);
        self.w.send(self.db, key, c)
    }

    fn counted(&mut self, kind: &str) {
        *self
            .report
            .keys
            .entry(self.db)
            .or_default()
            .entry(kind.to_string())
            .or_insert(0) += 1;
        self.report.total_keys += 1;
    }

    fn sample(&mut self, key: &[u8], kind: &str, what: &str, encoding: &str) {
        self.report.samples.push(EncodingSample {
            db: self.db,
            key: key.to_vec(),
            kind: kind.into(),
            what: what.into(),
            encoding: encoding.into(),
        });
    }

    /// Sends `DEBUG <args>` to the node that holds `key`, in order with the key's other commands.
    fn debug_on_key_node(
        &mut self,
        key: &[u8],
        args: impl FnOnce(&mut redis::Cmd),
    ) -> Result<(), Error> {
        let mut c = redis::cmd("DEBUG");
        args(&mut c);
        self.w.send(self.db, key, c)
    }

    /// "listpack" on 7.0, "ziplist" on 6.2.
    fn compact(&self) -> &'static str {
        if self.v7 {
            "listpack"
        } else {
            "ziplist"
        }
    }

    fn set_string(&mut self, key: &[u8], value: impl redis::ToRedisArgs) -> Result<(), Error> {
        self.cmd(key, "SET", |c| {
            c.arg(value);
        })?;
        self.counted("string");
        Ok(())
    }

    fn strings(&mut self) -> Result<(), Error> {
        let n = 5 * self.scale;
        for i in 0..n {
            let k = self.key(&format!("str:int:{i}"));
            let v = self.rng.range(-1_000_000_000, 1_000_000_000);
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "integer string", "int");
            }
            let k = self.key(&format!("str:short:{i}"));
            let len = 1 + self.rng.below(40) as usize;
            // Redis 8 embeds the key in the object too: the sample stays well inside embstr on every version.
            let len = if i == 0 { len.min(16) } else { len };
            let v = self.rng.alnum(len);
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "short string", "embstr");
            }
            let k = self.key(&format!("str:raw:{i}"));
            let len = 45 + self.rng.below(200) as usize;
            // Valkey 9 embeds strings up to a larger size: the sample is past every version's embstr bound.
            let len = if i == 0 { len.max(200) } else { len };
            let v = self.rng.alnum(len);
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "medium string", "raw");
            }
            let k = self.key(&format!("str:binary:{i}"));
            let mut v = vec![0u8, 0xff, 0xfe, 0xc3, 0x28, b'\r', b'\n'];
            let len = 40 + self.rng.below(100) as usize;
            let len = if i == 0 { len.max(200) } else { len };
            v.extend(self.rng.bytes(len));
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "binary (non-UTF-8) string", "raw");
            }
        }
        for (name, v) in [("max", i64::MAX), ("min", i64::MIN)] {
            let k = self.key(&format!("str:int:{name}"));
            self.set_string(&k, v)?;
        }
        let k = self.key("str:empty");
        self.set_string(&k, "")?;
        for i in 0..self.scale {
            let k = self.key(&format!("str:large:{i}"));
            let v = self.rng.bytes(64 * 1024);
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "large incompressible string", "raw");
            }
            let k = self.key(&format!("str:compressible:{i}"));
            let v = format!("ferry-{i}-").repeat(2500);
            self.set_string(&k, v)?;
            if i == 0 {
                self.sample(&k, "string", "long compressible string", "raw");
            }
        }
        // Binary key names: NUL, 0xff, invalid UTF-8, spaces.
        for i in 0..3u8 {
            let mut k = self.key("str:binkey:");
            k.extend([0u8, 0xff, 0xc3, 0x28, b' ', b'0' + i]);
            let v = self.rng.alnum(8);
            self.set_string(&k, v)?;
        }
        Ok(())
    }

    fn lists(&mut self) -> Result<(), Error> {
        for i in 0..5 * self.scale {
            let k = self.key(&format!("list:small:{i}"));
            let len = 1 + self.rng.below(20);
            let items: Vec<Vec<u8>> = (0..len)
                .map(|j| {
                    if j % 3 == 0 {
                        self.rng.range(-100_000, 100_000).to_string().into_bytes()
                    } else {
                        self.rng.alnum(12).into_bytes()
                    }
                })
                .collect();
            self.cmd(&k, "RPUSH", |c| {
                c.arg(items);
            })?;
            self.counted("list");
            if i == 0 {
                let enc = if self.v72 { "listpack" } else { "quicklist" };
                self.sample(&k, "list", "short list", enc);
            }
        }
        for i in 0..self.scale {
            let k = self.key(&format!("list:long:{i}"));
            for _ in 0..10 {
                let items: Vec<String> = (0..200).map(|_| self.rng.alnum(20)).collect();
                self.cmd(&k, "RPUSH", |c| {
                    c.arg(items);
                })?;
            }
            self.counted("list");
            if i == 0 {
                self.sample(&k, "list", "long list (many quicklist nodes)", "quicklist");
            }
        }
        let k = self.key("list:bigelem");
        let big = self.rng.alnum(10 * 1024);
        let a = self.rng.alnum(10);
        // 7.0 stores an element as a PLAIN quicklist node only above `packed_threshold` (1 GB by default):
        // lower it to 8 KB around this one push, where DEBUG is allowed.
        let plain = self.v7 && self.w.debug_allowed;
        if plain {
            self.debug_on_key_node(&k, |c| {
                c.arg("QUICKLIST-PACKED-THRESHOLD").arg("8K");
            })?;
        }
        self.cmd(&k, "RPUSH", |c| {
            c.arg(&a).arg(&big).arg("tail");
        })?;
        if plain {
            self.debug_on_key_node(&k, |c| {
                c.arg("QUICKLIST-PACKED-THRESHOLD").arg("0");
            })?;
        }
        self.counted("list");
        self.sample(
            &k,
            "list",
            "list with a 10 KB element (a PLAIN quicklist node on 7.0)",
            "quicklist",
        );
        Ok(())
    }

    fn sets(&mut self) -> Result<(), Error> {
        let ranges: [(&str, i64, i64); 3] = [
            ("int16", -32_000, 32_000),
            ("int32", 40_000, 2_000_000_000),
            ("int64", 5_000_000_000, i64::MAX - 1),
        ];
        for (name, lo, hi) in ranges {
            for i in 0..2 * self.scale {
                let k = self.key(&format!("set:{name}:{i}"));
                let members: Vec<i64> = (0..50).map(|_| self.rng.range(lo, hi)).collect();
                self.cmd(&k, "SADD", |c| {
                    c.arg(members);
                })?;
                if name == "int64" {
                    self.cmd(&k, "SADD", |c| {
                        c.arg(i64::MIN).arg(i64::MAX);
                    })?;
                }
                self.counted("set");
                if i == 0 {
                    self.sample(&k, "set", &format!("intset of {name} values"), "intset");
                }
            }
        }
        for i in 0..3 * self.scale {
            let k = self.key(&format!("set:small:{i}"));
            let members: Vec<String> = (0..10).map(|_| self.rng.alnum(10)).collect();
            self.cmd(&k, "SADD", |c| {
                c.arg(members);
            })?;
            self.counted("set");
            if i == 0 {
                // 7.2+ and Valkey use a listpack; 7.0 and 6.2 have none for sets.
                let enc = if self.v72 { "listpack" } else { "hashtable" };
                self.sample(&k, "set", "small set of strings", enc);
            }
        }
        let k = self.key("set:large:ints");
        let members: Vec<i64> = (0..(600 * self.scale) as i64)
            .map(|j| j * 7 + self.rng.range(0, 6))
            .collect();
        self.cmd(&k, "SADD", |c| {
            c.arg(members);
        })?;
        self.counted("set");
        self.sample(
            &k,
            "set",
            "large set of integers (over set-max-intset-entries)",
            "hashtable",
        );
        let k = self.key("set:large:strings");
        let members: Vec<String> = (0..600 * self.scale)
            .map(|j| format!("m{j}-{}", self.rng.alnum(6)))
            .collect();
        self.cmd(&k, "SADD", |c| {
            c.arg(members);
        })?;
        self.counted("set");
        self.sample(&k, "set", "large set of strings", "hashtable");
        Ok(())
    }

    fn score(&mut self, j: u64) -> String {
        match j % 7 {
            0 => "inf".into(),
            1 => "-inf".into(),
            2 => format!("{}.5", self.rng.range(-1000, 1000)),
            3 => "0.1".into(),
            4 => format!(
                "{}",
                (self.rng.range(-1_000_000, 1_000_000) as f64) / 1024.0
            ),
            5 => "-0.000001".into(),
            _ => self.rng.range(-1_000_000, 1_000_000).to_string(),
        }
    }

    fn zsets(&mut self) -> Result<(), Error> {
        for i in 0..5 * self.scale {
            let k = self.key(&format!("zset:small:{i}"));
            let mut args = Vec::new();
            for j in 0..10u64 {
                args.push(self.score(j));
                args.push(format!("member-{j}-{}", self.rng.alnum(5)));
            }
            self.cmd(&k, "ZADD", |c| {
                c.arg(args);
            })?;
            self.counted("zset");
            if i == 0 {
                let enc = self.compact();
                self.sample(
                    &k,
                    "zset",
                    "small sorted set with inf/-inf/fractional scores",
                    enc,
                );
            }
        }
        let k = self.key("zset:large");
        for chunk in 0..3 * self.scale as u64 {
            let mut args = Vec::new();
            for j in 0..100u64 {
                args.push(self.score(j));
                args.push(format!("m{chunk}-{j}-{}", self.rng.alnum(8)));
            }
            self.cmd(&k, "ZADD", |c| {
                c.arg(args);
            })?;
        }
        self.counted("zset");
        self.sample(&k, "zset", "large sorted set", "skiplist");
        let k = self.key("zset:longmember");
        let long = self.rng.alnum(100);
        self.cmd(&k, "ZADD", |c| {
            c.arg(1.5).arg(long).arg("-inf").arg("short");
        })?;
        self.counted("zset");
        self.sample(
            &k,
            "zset",
            "sorted set with a member over 64 bytes",
            "skiplist",
        );
        Ok(())
    }

    fn hashes(&mut self) -> Result<(), Error> {
        for i in 0..5 * self.scale {
            let k = self.key(&format!("hash:small:{i}"));
            let mut args = Vec::new();
            for j in 0..10 {
                args.push(format!("field{j}"));
                args.push(if j % 2 == 0 {
                    self.rng.range(-5000, 5000).to_string()
                } else {
                    self.rng.alnum(16)
                });
            }
            self.cmd(&k, "HSET", |c| {
                c.arg(args);
            })?;
            self.counted("hash");
            if i == 0 {
                let enc = self.compact();
                self.sample(&k, "hash", "small hash", enc);
            }
        }
        let k = self.key("hash:large");
        for chunk in 0..(10 * self.scale) {
            let mut args = Vec::new();
            for j in 0..100 {
                args.push(format!("f{chunk}-{j}"));
                args.push(self.rng.alnum(24));
            }
            self.cmd(&k, "HSET", |c| {
                c.arg(args);
            })?;
        }
        self.counted("hash");
        self.sample(&k, "hash", "large hash", "hashtable");
        let k = self.key("hash:longvalue");
        let long = self.rng.bytes(200);
        self.cmd(&k, "HSET", |c| {
            c.arg("small").arg("1").arg("long").arg(long);
        })?;
        self.counted("hash");
        self.sample(&k, "hash", "hash with a value over 64 bytes", "hashtable");
        Ok(())
    }

    fn streams(&mut self) -> Result<(), Error> {
        let base = 1_600_000_000_000u64 + self.rng.below(100_000_000_000);
        for i in 0..2 * self.scale {
            let k = self.key(&format!("stream:plain:{i}"));
            for j in 0..20u64 {
                let id = format!("{}-{}", base + j * 10, j % 3);
                let v = self.rng.alnum(10);
                self.cmd(&k, "XADD", |c| {
                    c.arg(id).arg("field").arg(v).arg("n").arg(j);
                })?;
            }
            self.counted("stream");
            if i == 0 {
                self.sample(&k, "stream", "stream without groups", "stream");
            }
        }
        // Groups, consumers, pending entries, acknowledged entries, deleted entries.
        let k = self.key("stream:groups");
        let mut ids = Vec::new();
        for j in 0..(60 * self.scale) as u64 {
            let id = format!("{}-{}", base + j, j % 2);
            let v = self.rng.alnum(12);
            self.cmd(&k, "XADD", |c| {
                c.arg(&id).arg("a").arg(v).arg("b").arg(j);
            })?;
            ids.push(id);
        }
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE").arg(&k).arg("g1").arg("0");
        self.w.send(self.db, &k, c)?;
        // XGROUP's key is its second argument: these are built by hand.
        let mid = ids[ids.len() / 2].clone();
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE").arg(&k).arg("g2").arg(&mid);
        self.w.send(self.db, &k, c)?;
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATECONSUMER")
            .arg(&k)
            .arg("g2")
            .arg("idle-consumer");
        self.w.send(self.db, &k, c)?;
        for (consumer, count) in [("alice", 10), ("bob", 5)] {
            let mut c = redis::cmd("XREADGROUP");
            c.arg("GROUP")
                .arg("g1")
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&k)
                .arg(">");
            self.w.send(self.db, &k, c)?;
        }
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP")
            .arg("g2")
            .arg("carol")
            .arg("COUNT")
            .arg(3)
            .arg("STREAMS")
            .arg(&k)
            .arg(">");
        self.w.send(self.db, &k, c)?;
        // alice acknowledges some of hers; the rest stay pending.
        let acked: Vec<String> = ids[0..4].to_vec();
        let mut c = redis::cmd("XACK");
        c.arg(&k).arg("g1").arg(acked);
        self.w.send(self.db, &k, c)?;
        let deleted: Vec<String> = ids.iter().step_by(7).cloned().collect();
        self.cmd(&k, "XDEL", |c| {
            c.arg(deleted);
        })?;
        self.counted("stream");
        self.sample(
            &k,
            "stream",
            "stream with groups, consumers, pending and deleted entries",
            "stream",
        );
        // A stream whose entries were all deleted: empty, but with a last id and a group.
        let k = self.key("stream:emptied");
        let id1 = format!("{base}-1");
        let id2 = format!("{base}-2");
        self.cmd(&k, "XADD", |c| {
            c.arg(&id1).arg("x").arg("1");
        })?;
        self.cmd(&k, "XADD", |c| {
            c.arg(&id2).arg("x").arg("2");
        })?;
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE").arg(&k).arg("g").arg("$");
        self.w.send(self.db, &k, c)?;
        self.cmd(&k, "XDEL", |c| {
            c.arg(&id1).arg(&id2);
        })?;
        self.counted("stream");
        Ok(())
    }

    fn expiries(&mut self) -> Result<(), Error> {
        for i in 0..5 * self.scale {
            let k = self.key(&format!("ttl:rel:{i}"));
            let v = self.rng.alnum(10);
            self.cmd(&k, "SET", |c| {
                c.arg(v).arg("EX").arg(RELATIVE_TTL_SECS + i as u64);
            })?;
            self.counted("string");
            self.report.keys_with_expiry += 1;
            let k = self.key(&format!("ttl:abs:{i}"));
            let v = self.rng.alnum(10);
            let at = FAR_FUTURE_MS + self.rng.below(1_000_000_000);
            self.cmd(&k, "SET", |c| {
                c.arg(v);
            })?;
            self.cmd(&k, "PEXPIREAT", |c| {
                c.arg(at);
            })?;
            self.counted("string");
            self.report.keys_with_expiry += 1;
        }
        // Expiry on non-string types too.
        for name in [
            "hash:small:0",
            "list:small:0",
            "set:small:0",
            "zset:small:0",
            "stream:plain:0",
        ] {
            let k = self.key(name);
            let at = FAR_FUTURE_MS + self.rng.below(1_000_000_000);
            self.cmd(&k, "PEXPIREAT", |c| {
                c.arg(at);
            })?;
            self.report.keys_with_expiry += 1;
        }
        Ok(())
    }
    /// Hashes with field expiries: small (a listpack with TTLs on Redis) and large (a hashtable), some fields
    /// expiring after 2100 and some not.
    fn field_expiries(&mut self) -> Result<(), Error> {
        for i in 0..3 * self.scale {
            let k = self.key(&format!("hash:fieldttl:small:{i}"));
            let mut args = Vec::new();
            for j in 0..8 {
                args.push(format!("field{j}"));
                args.push(self.rng.alnum(12));
            }
            self.cmd(&k, "HSET", |c| {
                c.arg(args);
            })?;
            for j in [0, 3, 5] {
                let at = FAR_FUTURE_MS + self.rng.below(1_000_000_000);
                self.cmd(&k, "HPEXPIREAT", |c| {
                    c.arg(at).arg("FIELDS").arg(1).arg(format!("field{j}"));
                })?;
            }
            self.counted("hash");
            self.report
                .hashes_with_field_expiry
                .push((self.db, k.clone()));
        }
        let k = self.key("hash:fieldttl:large");
        for chunk in 0..(7 * self.scale) {
            let mut args = Vec::new();
            for j in 0..100 {
                args.push(format!("f{chunk}-{j}"));
                args.push(self.rng.alnum(20));
            }
            self.cmd(&k, "HSET", |c| {
                c.arg(args);
            })?;
        }
        let at = FAR_FUTURE_MS + self.rng.below(1_000_000_000);
        self.cmd(&k, "HPEXPIREAT", |c| {
            c.arg(at)
                .arg("FIELDS")
                .arg(3)
                .arg("f0-0")
                .arg("f0-1")
                .arg("f0-99");
        })?;
        self.counted("hash");
        self.report
            .hashes_with_field_expiry
            .push((self.db, k.clone()));
        self.sample(&k, "hash", "large hash with field expiries", "hashtable");
        Ok(())
    }

    /// A vector set (Redis 8's built-in `vectorset` module type) with attributes on some elements.
    fn vector_sets(&mut self) -> Result<(), Error> {
        let k = self.key("vset:0");
        for j in 0..(20 * self.scale) {
            let v: Vec<String> = (0..4)
                .map(|_| format!("{:.3}", self.rng.below(2000) as f64 / 1000.0 - 1.0))
                .collect();
            self.cmd(&k, "VADD", |c| {
                c.arg("VALUES").arg(4).arg(v).arg(format!("elem-{j}"));
                if j % 3 == 0 {
                    c.arg("SETATTR").arg(format!("{{\"n\":{j}}}"));
                }
            })?;
        }
        self.counted("vectorset");
        self.report
            .module_keys
            .push((self.db, k, "vectorset".to_string()));
        Ok(())
    }

    /// One list, set, sorted set, hash and stream of about `bytes` each.
    fn big_values(&mut self, bytes: usize) -> Result<(), Error> {
        const ELEM: usize = 100;
        let n = (bytes / ELEM).max(1);
        let batch = 500;
        let kinds: [(&str, &str); 5] = [
            ("list", "RPUSH"),
            ("set", "SADD"),
            ("zset", "ZADD"),
            ("hash", "HSET"),
            ("stream", "XADD"),
        ];
        for (kind, cmd) in kinds {
            let k = self.key(&format!("big:{kind}"));
            let mut j = 0;
            while j < n {
                let end = (j + batch).min(n);
                if kind == "stream" {
                    for e in j..end {
                        let v = self.rng.alnum(ELEM);
                        self.cmd(&k, cmd, |c| {
                            c.arg(format!("{}-1", e + 1)).arg("f").arg(v);
                        })?;
                    }
                } else {
                    let mut args: Vec<String> = Vec::new();
                    for e in j..end {
                        match kind {
                            "zset" => {
                                args.push(format!("{}", e as f64 / 7.0));
                                args.push(format!("m{e}-{}", self.rng.alnum(ELEM - 8)));
                            }
                            "hash" => {
                                args.push(format!("f{e}"));
                                args.push(self.rng.alnum(ELEM - 8));
                            }
                            _ => args.push(format!("e{e}-{}", self.rng.alnum(ELEM - 8))),
                        }
                    }
                    self.cmd(&k, cmd, |c| {
                        c.arg(args);
                    })?;
                }
                j = end;
            }
            if kind == "stream" {
                // Two groups: one that has read (a known entries-read counter), one created at the end (`$`),
                // whose counter Redis 7+ does not know (-1): element commands must leave it out.
                for (group, at) in [("big-g1", "0"), ("big-g2", "$")] {
                    let mut c = redis::cmd("XGROUP");
                    c.arg("CREATE").arg(&k).arg(group).arg(at);
                    self.w.send(self.db, &k, c)?;
                }
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP")
                    .arg("big-g1")
                    .arg("reader")
                    .arg("COUNT")
                    .arg(2)
                    .arg("STREAMS")
                    .arg(&k)
                    .arg(">");
                self.w.send(self.db, &k, c)?;
            }
            self.counted(kind);
            self.report.big_keys.push((self.db, k));
        }
        Ok(())
    }
}
