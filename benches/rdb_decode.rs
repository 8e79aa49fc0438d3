//! RDB decoding, side by side with redis-check-rdb, redis-server's own load time, and (when
//! installed) rdbtools, on the same files:
//! - `small`: about 5M small keys (strings, small hashes/lists/sets/zsets as listpacks, some TTLs);
//! - `big`: big collections (quicklists, hashtables, skiplists, big sets, streams).
//!
//! `cargo bench -p ferry-benches --bench rdb_decode` (env `RDB_BENCH_KEYS` overrides 5000000,
//! `RDB_BENCH_DIR` the scratch directory). Prints one JSON line per measurement.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_benches::Rng;
use ferry_rdb::{
    HashField, Item, ParserOptions, Reader, Stream, StreamEntry, StreamId, Value, ValueMode, Writer,
};

fn gen_small(path: &Path, keys: u64, version: u32) {
    let mut w = Writer::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap()),
        version,
    )
    .unwrap();
    w.aux(b"redis-ver", b"7.0.0").unwrap();
    w.select_db(0).unwrap();
    w.resize_db(keys, keys / 10).unwrap();
    let mut rng = Rng(42);
    for i in 0..keys {
        let key = format!("user:{i:010}");
        let v = match i % 20 {
            0 => Value::Hash(
                (0..5)
                    .map(|j| HashField::new(format!("f{j}"), format!("v{}", rng.next_u64() % 1000)))
                    .collect(),
            ),
            1 => Value::List((0..5).map(|j| Bytes::from(format!("item-{j}"))).collect()),
            2 => Value::Set(
                (0..5)
                    .map(|j| Bytes::from(format!("{}", j * 7 + i % 100)))
                    .collect(),
            ),
            3 => Value::SortedSet(
                (0..5)
                    .map(|j| (Bytes::from(format!("m{j}")), j as f64 + 0.5))
                    .collect(),
            ),
            4..=9 => Value::String(Bytes::from((rng.next_u64() % 1_000_000).to_string())),
            _ => Value::String(Bytes::from(format!(
                "value-{:016x}-{:08x}",
                rng.next_u64(),
                i
            ))),
        };
        w.write_entry(
            key.as_bytes(),
            &v,
            (i % 10 == 0).then_some(4_102_444_800_000),
        )
        .unwrap();
    }
    w.finish().unwrap();
}

fn gen_big(path: &Path) {
    let mut w = Writer::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap()),
        10,
    )
    .unwrap();
    w.select_db(0).unwrap();
    let mut rng = Rng(7);
    for k in 0..40u64 {
        let n = 200_000u64;
        let v = match k % 5 {
            0 => Value::List(
                (0..n)
                    .map(|j| Bytes::from(format!("element-{j}-{}", rng.next_u64() % 1000)))
                    .collect(),
            ),
            1 => Value::Hash(
                (0..n)
                    .map(|j| HashField::new(format!("field:{j}"), format!("{}", rng.next_u64())))
                    .collect(),
            ),
            2 => Value::SortedSet(
                (0..n)
                    .map(|j| {
                        (
                            Bytes::from(format!("member:{j}")),
                            (rng.next_u64() % 1_000_000) as f64 / 7.0,
                        )
                    })
                    .collect(),
            ),
            3 => Value::Set(
                (0..n)
                    .map(|j| Bytes::from(format!("s:{j}:{}", rng.next_u64() % 10_000)))
                    .collect(),
            ),
            _ => Value::Stream(Box::new(Stream {
                entries: (0..n / 4)
                    .map(|j| StreamEntry {
                        id: StreamId::new(1_700_000_000_000 + j, 0),
                        fields: vec![
                            (
                                "temp".into(),
                                Bytes::from(format!("{}", rng.next_u64() % 100)),
                            ),
                            ("site".into(), "a".into()),
                        ],
                    })
                    .collect(),
                length: n / 4,
                last_id: StreamId::new(1_700_000_000_000 + n / 4 - 1, 0),
                entries_added: n / 4,
                ..Default::default()
            })),
        };
        w.write_entry(format!("big:{k}").as_bytes(), &v, None)
            .unwrap();
    }
    w.finish().unwrap();
}

fn ours(path: &Path, mode: ValueMode) -> (u64, Duration) {
    let start = Instant::now();
    let mut keys = 0;
    let opts = ParserOptions {
        mode,
        ..Default::default()
    };
    for it in Reader::new(std::fs::File::open(path).unwrap(), opts) {
        if let Item::Entry(_) = it.unwrap() {
            keys += 1;
        }
    }
    (keys, start.elapsed())
}

fn redis_check_rdb(path: &Path) -> Option<Duration> {
    let start = Instant::now();
    let out = Command::new("/usr/bin/redis-check-rdb")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    out.success().then(|| start.elapsed())
}

/// Starts redis-server 7.0 on the file and reads "DB loaded from disk: X seconds" from its log.
fn redis_server_load(path: &Path) -> Option<f64> {
    let dir = path.parent()?;
    let log = dir.join("bench-redis.log");
    let _ = std::fs::remove_file(&log);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = Command::new("/usr/bin/redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--dbfilename")
        .arg(path.file_name()?)
        .arg("--logfile")
        .arg(&log)
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut secs = None;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("DB loaded from disk:")) {
            secs = l
                .split("DB loaded from disk:")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse().ok());
            break;
        }
        if text.contains("Fatal error") || text.contains("Short read") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    secs
}

fn rdbtools(path: &Path) -> Option<Duration> {
    let start = Instant::now();
    let st = Command::new("rdb")
        .args(["--command", "justkeys"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    st.success().then(|| start.elapsed())
}

fn report(file: &str, what: &str, bytes: u64, keys: u64, secs: f64) {
    println!(
        "{{\"file\":\"{file}\",\"tool\":\"{what}\",\"bytes\":{bytes},\"keys\":{keys},\"seconds\":{secs:.3},\"mb_per_s\":{:.1},\"keys_per_s\":{:.0}}}",
        bytes as f64 / 1e6 / secs,
        keys as f64 / secs
    );
}

fn main() {
    let dir = std::env::var("RDB_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("ferry-rdb-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let keys: u64 = std::env::var("RDB_BENCH_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5_000_000);
    let small = dir.join(format!("small-{keys}.rdb"));
    if !small.exists() {
        gen_small(&small, keys, 10);
    }
    let big = dir.join("big.rdb");
    if !big.exists() {
        gen_big(&big);
    }
    // rdbtools reads RDB up to version 9 (Redis 5/6.0), so this one is written for 6.2.
    let tiny = dir.join("small-200000-v9.rdb");
    if !tiny.exists() {
        gen_small(&tiny, 200_000, 9);
    }
    for (name, path) in [("small", &small), ("big", &big)] {
        let bytes = std::fs::metadata(path).unwrap().len();
        let (k, t) = ours(path, ValueMode::Decoded);
        report(name, "ferry-rdb decoded", bytes, k, t.as_secs_f64());
        let (k, t) = ours(path, ValueMode::Raw);
        report(name, "ferry-rdb raw", bytes, k, t.as_secs_f64());
        if let Some(t) = redis_check_rdb(path) {
            report(name, "redis-check-rdb 7.0", bytes, k, t.as_secs_f64());
        }
        if let Some(s) = redis_server_load(path) {
            report(name, "redis-server 7.0 load", bytes, k, s);
        }
    }
    let bytes = std::fs::metadata(&tiny).unwrap().len();
    let (k, t) = ours(&tiny, ValueMode::Decoded);
    report("small-200k", "ferry-rdb decoded", bytes, k, t.as_secs_f64());
    if let Some(t) = redis_check_rdb(&tiny) {
        report(
            "small-200k",
            "redis-check-rdb 7.0",
            bytes,
            k,
            t.as_secs_f64(),
        );
    }
    if let Some(t) = rdbtools(&tiny) {
        report(
            "small-200k",
            "rdbtools 0.1.15 --command justkeys",
            bytes,
            k,
            t.as_secs_f64(),
        );
    } else {
        println!("{{\"file\":\"small-200k\",\"tool\":\"rdbtools\",\"error\":\"`rdb` not installed (pip install rdbtools python-lzf)\"}}");
    }
}
