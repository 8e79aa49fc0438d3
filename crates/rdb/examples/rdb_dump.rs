//! Prints an RDB file as JSON Lines, one key per line, or `--stats`: keys and bytes per type and
//! db and the 20 biggest keys.
//!
//! `cargo run -p ferry-rdb --example rdb_dump -- [--stats] FILE`

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use ferry_rdb::{json, Item, ParserOptions, Reader, ValueMode};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stats = args.iter().any(|a| a == "--stats");
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: rdb_dump [--stats] FILE.rdb");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rdb_dump: cannot open {path}: {e}");
            std::process::exit(1);
        }
    };
    let opts = ParserOptions {
        mode: if stats {
            ValueMode::Raw
        } else {
            ValueMode::Decoded
        },
        ..Default::default()
    };
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    // (db, type) -> (keys, serialized bytes)
    let mut per: BTreeMap<(u64, &'static str), (u64, u64)> = BTreeMap::new();
    let mut biggest: Vec<(u64, u64, String, &'static str)> = Vec::new();
    for item in Reader::new(file, opts) {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                let _ = out.flush();
                eprintln!("rdb_dump: {e}");
                std::process::exit(1);
            }
        };
        if let Item::Entry(e) = item {
            if stats {
                let t = ferry_rdb::type_name_of(e.rdb_type);
                let s = per.entry((e.db, t)).or_default();
                s.0 += 1;
                s.1 += e.serialized_len;
                biggest.push((
                    e.serialized_len,
                    e.db,
                    String::from_utf8_lossy(&e.key).into_owned(),
                    t,
                ));
                if biggest.len() > 200 {
                    biggest.sort_by_key(|b| std::cmp::Reverse(b.0));
                    biggest.truncate(20);
                }
            } else {
                let _ = writeln!(out, "{}", json::entry_line(&e));
            }
        }
    }
    if stats {
        biggest.sort_by_key(|b| std::cmp::Reverse(b.0));
        biggest.truncate(20);
        for ((db, t), (keys, bytes)) in &per {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"db": db, "type": t, "keys": keys, "bytes": bytes})
            );
        }
        for (bytes, db, key, t) in &biggest {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"biggest": {"db": db, "key": key, "type": t, "bytes": bytes}})
            );
        }
    }
}
