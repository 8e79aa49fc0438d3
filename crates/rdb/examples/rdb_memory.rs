//! Memory check: generate an RDB file of 1 GB or more with the writer, then decode it and report
//! the peak resident set size (VmHWM from /proc/self/status).
//!
//! ```text
//! cargo run --release -p ferry-rdb --example rdb_memory -- generate /tmp/big.rdb 1.0
//! cargo run --release -p ferry-rdb --example rdb_memory -- decode /tmp/big.rdb [--raw] [--chunk BYTES]
//! ```
//! Generation and decoding run in separate processes so the figure is the decoder's alone.

use std::io::{BufWriter, Read};
use std::time::Instant;

use bytes::Bytes;
use ferry_rdb::{HashField, Item, ParserOptions, Reader, Value, ValueMode, Writer};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Bytes {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    }
}

fn vm_hwm_kb() -> u64 {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open("/proc/self/status") {
        let _ = f.read_to_string(&mut s);
    }
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn generate(path: &str, gb: f64) -> Result<(), ferry_rdb::Error> {
    let target = (gb * (1u64 << 30) as f64) as u64;
    let f = std::fs::File::create(path)?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, f), 10)?;
    w.aux(b"redis-ver", b"7.0.0")?;
    w.select_db(0)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let mut i = 0u64;
    while written < target {
        // Every 10000th key is a big collection (~4-5 MB serialized), the rest 500-byte strings.
        if i.is_multiple_of(10_000) {
            let n = 100_000;
            let v = match (i / 10_000) % 4 {
                0 => Value::List((0..n).map(|_| rng.bytes(40)).collect()),
                1 => Value::Hash(
                    (0..n / 2)
                        .map(|j| HashField::new(format!("field:{j}"), rng.bytes(60)))
                        .collect(),
                ),
                2 => Value::SortedSet(
                    (0..n / 2)
                        .map(|j| (Bytes::from(format!("member:{j}")), j as f64 * 0.5))
                        .collect(),
                ),
                _ => Value::Set(
                    (0..n / 2)
                        .map(|j| Bytes::from(format!("m:{j}:{}", rng.next())))
                        .collect(),
                ),
            };
            written += v.payload_bytes() as u64;
            w.write_entry(format!("big:{i}").as_bytes(), &v, None)?;
        } else {
            let v = Value::String(rng.bytes(500));
            written += 520;
            w.write_entry(
                format!("key:{i:012}").as_bytes(),
                &v,
                if i.is_multiple_of(3) {
                    Some(4_102_444_800_000)
                } else {
                    None
                },
            )?;
        }
        i += 1;
    }
    w.finish()?;
    eprintln!(
        "wrote {} keys, {} bytes to {path}",
        i,
        std::fs::metadata(path)?.len()
    );
    Ok(())
}

fn decode(path: &str, raw: bool, chunk: Option<usize>) -> Result<(), ferry_rdb::Error> {
    let size = std::fs::metadata(path)?.len();
    let before = vm_hwm_kb();
    let start = Instant::now();
    let opts = ParserOptions {
        mode: if raw {
            ValueMode::Raw
        } else {
            ValueMode::Decoded
        },
        big_value_bytes: chunk,
        ..Default::default()
    };
    let (mut keys, mut chunks) = (0u64, 0u64);
    for item in Reader::new(std::fs::File::open(path)?, opts) {
        match item? {
            Item::Entry(_) => keys += 1,
            Item::EntryStart(_) => keys += 1,
            Item::ValueChunk(_) => chunks += 1,
            _ => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = vm_hwm_kb();
    println!(
        "{{\"file_bytes\":{size},\"keys\":{keys},\"chunks\":{chunks},\"seconds\":{secs:.2},\"mb_per_s\":{:.0},\"vm_hwm_kb_before\":{before},\"vm_hwm_kb\":{hwm},\"mode\":\"{}\",\"chunk\":{}}}",
        size as f64 / 1e6 / secs,
        if raw { "raw" } else { "decoded" },
        chunk.map(|c| c.to_string()).unwrap_or_else(|| "null".into()),
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("generate") if args.len() >= 2 => generate(
            &args[1],
            args.get(2).and_then(|g| g.parse().ok()).unwrap_or(1.0),
        ),
        Some("decode") if args.len() >= 2 => {
            let raw = args.iter().any(|a| a == "--raw");
            let chunk = args
                .iter()
                .position(|a| a == "--chunk")
                .and_then(|i| args.get(i + 1))
                .and_then(|c| c.parse().ok());
            decode(&args[1], raw, chunk)
        }
        _ => {
            eprintln!("usage: rdb_memory generate PATH [GB] | decode PATH [--raw] [--chunk BYTES]");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("rdb_memory: {e}");
        std::process::exit(1);
    }
}
