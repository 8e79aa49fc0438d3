//! What deciding a live command for the target costs ferry's own process (`fit_command`, run on every command
//! of the live stream): a mix of `SET`, `INCR`, `HSET` and `HPEXPIRE` on random keys, judged for a Redis 8.2
//! target (every command known: forwarded as it is) and for a Redis 7.0 target under the `convert` policy (the
//! field expiry commands dropped and counted). No server is involved: it is the CPU cost per command in the
//! sync process. Each case runs `FERRY_FIT_ROUNDS` rounds and keeps the best.
//!
//! ```text
//! cargo bench -p ferry-benches --bench fit_command
//! FERRY_FIT_COMMANDS=200000 cargo bench -p ferry-benches --bench fit_command
//! ```

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use ferry_benches::Rng;
use ferry_replicator::{bench::fit_command, PolicyReport, TargetFormat, TargetPolicy};

fn main() {
    let n: usize = std::env::var("FERRY_FIT_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("FERRY_FIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let commands = workload(n);
    println!("| {n} live commands | ns/command |");
    println!("|---|---:|");
    for (name, target, policy) in [
        (
            "Redis 8.2 target (all forwarded)",
            TargetFormat::from_info("redis_version:8.2.3"),
            TargetPolicy::Stop,
        ),
        (
            "Redis 7.0 target, convert (HPEXPIRE dropped)",
            TargetFormat::from_info("redis_version:7.0.15"),
            TargetPolicy::Convert,
        ),
    ] {
        let mut best = f64::MAX;
        for _ in 0..rounds.max(1) {
            let mut report = PolicyReport::new(0);
            let start = Instant::now();
            for argv in &commands {
                black_box(fit_command(0, argv, &target, policy, &mut report).unwrap());
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("| {name} | {best:.1} |");
    }
}

/// `n` commands: a quarter each of SET, INCR, HSET and HPEXPIRE over 10,000 keys.
fn workload(n: usize) -> Vec<Vec<Bytes>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let key = Bytes::from(format!("key:{}", rng.below(10_000)));
            let argv: Vec<&[u8]> = match i % 4 {
                0 => vec![b"SET", &key, b"value"],
                1 => vec![b"INCR", &key],
                2 => vec![b"HSET", &key, b"field", b"value"],
                _ => vec![b"HPEXPIRE", &key, b"60000", b"FIELDS", b"1", b"field"],
            };
            argv.into_iter().map(Bytes::copy_from_slice).collect()
        })
        .collect()
}
