//! What the batch chain costs the target: the same live-phase commands (SET/INCR/LPUSH/HSET on random keys)
//! applied in batches of 512, 8 batches in flight, from the same client: plain pipelined commands (the floor);
//! `MULTI`, the commands, the checkpoint `SET`, `EXEC` (the sink before the chain); `WATCH` + a check script +
//! `MULTI`/`EXEC` (chained, but a command failing inside `EXEC` does not stop the ones after it, so not exact:
//! the floor of any chain built on `MULTI`); the chained batch script of commit 338d5f9; and the chained batch
//! script the sink sends now. Each mode runs in turn for `FERRY_CHAIN_ROUNDS` rounds; each row keeps its best
//! rate and its lowest target CPU time per command (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), the
//! steadier figure on a shared machine, where the client and other processes compete for the same cores.
//!
//! ```text
//! cargo bench -p ferry-benches --bench chain          # 1M commands
//! FERRY_CHAIN_COMMANDS=200000 FERRY_CHAIN_ROUNDS=3 cargo bench -p ferry-benches --bench chain
//! ```

use std::time::Instant;

use ferry_benches::Rng;
use ferry_replicator::bench::script_text;
use ferry_replicator::checkpoint::{Checkpoint, Position};
use ferry_testkit::{Server, ServerOptions, Version};

const BATCH: usize = 512;
const IN_FLIGHT: usize = 8;
const REPLID: &str = "8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb";
const KEY: &str = "ferry:checkpoint:{bench}";

fn main() {
    let n: usize = std::env::var("FERRY_CHAIN_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let commands = workload(n);
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut c = server.client();
    println!(
        "| {n} commands, batches of {BATCH}, {IN_FLIGHT} in flight | ops/s | vs MULTI | target CPU us/command | vs MULTI |"
    );
    println!("|---|---:|---:|---:|---:|");
    // Rounds of every mode in turn; each row keeps its best rate and its lowest CPU per command.
    let rounds: usize = std::env::var("FERRY_CHAIN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let modes = [
        Mode::Plain,
        Mode::Multi,
        Mode::Guarded,
        Mode::Previous,
        Mode::Walk,
        Mode::Chain,
    ];
    let mut best = [(0.0f64, f64::MAX); 6];
    for _ in 0..rounds.max(1) {
        for (i, mode) in modes.iter().enumerate() {
            let (rate, cpu) = run(&mut c, &commands, *mode);
            best[i] = (best[i].0.max(rate), best[i].1.min(cpu));
        }
    }
    let [plain, multi, guarded, previous, walk, chain] = best;
    for (name, (rate, cpu)) in [
        ("plain pipeline (no transaction, no checkpoint)", plain),
        ("MULTI/EXEC batches with the checkpoint SET (before)", multi),
        (
            "WATCH + check script + MULTI/EXEC (chained, but not stopping at a failed command)",
            guarded,
        ),
        (
            "chained batch scripts, previous layout (commit 338d5f9)",
            previous,
        ),
        (
            "the current script's arguments walked, no command run (applies nothing)",
            walk,
        ),
        ("chained batch scripts (now)", chain),
    ] {
        println!(
            "| {name} | {rate:.0} | {:+.1} % | {cpu:.2} | {:+.1} % |",
            (rate / multi.0 - 1.0) * 100.0,
            (cpu / multi.1 - 1.0) * 100.0
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Multi,
    Guarded,
    Previous,
    Walk,
    Chain,
}

/// `Mode::Walk`: the current layout's arguments, walked without running a command (what the target spends
/// on the `EVALSHA` arguments and the script's loop alone; it applies nothing).
const WALK: &str = "local ops, i, byte = ARGV[10], 11, string.byte \
    for j = 1, #ops do i = i + byte(ops, j) end \
    redis.call('SET', KEYS[1], ARGV[3]) return {#ops, ''}";

/// The batch script before the per-command work was cut (commit 338d5f9), with its argument layout.
const PREVIOUS: &str = include_str!("chain_previous.lua");

/// The chain check of `Mode::Guarded`: touch the checkpoint (same value) unless it is the expected one, so the
/// `EXEC` under `WATCH` that follows refuses.
const GUARD: &str = "local s = redis.call('GET', KEYS[1]) or '' \
    if s ~= ARGV[1] then redis.call('SET', KEYS[1], s) return 0 end return 1";

fn workload(n: usize) -> Vec<Vec<String>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let k = rng.below(100_000);
            match rng.below(4) {
                0 => vec!["SET".into(), format!("key:{k}"), "xxx".into()],
                1 => vec!["INCR".into(), format!("counter:{k}")],
                2 => vec!["LPUSH".into(), format!("list:{}", k % 1000), "xxx".into()],
                _ => vec![
                    "HSET".into(),
                    format!("hash:{}", k % 1000),
                    format!("f{k}"),
                    "xxx".into(),
                ],
            }
        })
        .collect()
}

/// The target's CPU seconds so far (user + system).
fn server_cpu(c: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query(c).unwrap();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_user" || *k == "used_cpu_sys")
        .map(|(_, v)| v.trim().parse::<f64>().unwrap())
        .sum()
}

/// Applies `commands` in `mode`: commands per second, and the target's CPU microseconds per command.
fn run(c: &mut redis::Connection, commands: &[Vec<String>], mode: Mode) -> (f64, f64) {
    redis::cmd("FLUSHALL").exec(c).unwrap();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script_text(false))
        .query(c)
        .unwrap();
    let previous: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(PREVIOUS)
        .query(c)
        .unwrap();
    let walk: String = redis::cmd("SCRIPT").arg("LOAD").arg(WALK).query(c).unwrap();
    let guard: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(GUARD)
        .query(c)
        .unwrap();
    let base = Position::new(REPLID, 0, 0);
    let template = base.template();
    let stored = |offset: u64| Checkpoint::Committed(Position::new(REPLID, offset, 0)).encode();
    let mut expected = String::new();
    let cpu = server_cpu(c);
    let started = Instant::now();
    let mut offset = 0u64;
    for group in commands.chunks(BATCH * IN_FLIGHT) {
        let mut pipe = redis::pipe();
        for batch in group.chunks(BATCH) {
            match mode {
                Mode::Plain => {
                    for cmd in batch {
                        pipe.cmd(&cmd[0]).arg(&cmd[1..]);
                    }
                }
                Mode::Multi => {
                    pipe.cmd("MULTI");
                    for cmd in batch {
                        pipe.cmd(&cmd[0]).arg(&cmd[1..]);
                    }
                    offset += batch.len() as u64 * 40;
                    pipe.cmd("SET").arg(KEY).arg(stored(offset));
                    pipe.cmd("EXEC");
                }
                Mode::Guarded => {
                    // WATCH the checkpoint, a script that touches it when it is not the expected one (so EXEC
                    // refuses), then MULTI/EXEC: the chain holds, but a command failing inside EXEC does not
                    // stop the ones after it. The floor of any chain built on MULTI, not an exact writer.
                    pipe.cmd("WATCH").arg(KEY);
                    pipe.cmd("EVALSHA")
                        .arg(&guard)
                        .arg(1)
                        .arg(KEY)
                        .arg(&expected);
                    pipe.cmd("MULTI");
                    for cmd in batch {
                        pipe.cmd(&cmd[0]).arg(&cmd[1..]);
                    }
                    offset += batch.len() as u64 * 40;
                    expected = stored(offset);
                    pipe.cmd("SET").arg(KEY).arg(&expected);
                    pipe.cmd("EXEC");
                }
                Mode::Previous => {
                    let start = offset;
                    let eval = pipe
                        .cmd("EVALSHA")
                        .arg(&previous)
                        .arg(1)
                        .arg(KEY)
                        .arg(0)
                        .arg(&expected)
                        .arg(&template)
                        .arg(0)
                        .arg(start)
                        .arg(0)
                        .arg(0);
                    for cmd in batch {
                        offset += 40;
                        eval.arg(cmd.len()).arg(cmd).arg(0).arg(offset);
                    }
                    eval.arg(0).arg(offset);
                    expected = stored(offset);
                }
                Mode::Chain | Mode::Walk => {
                    // The arguments the sink's ChainWriter builds (see sink/chain.rs BATCH_SCRIPT): one
                    // operation byte per command (its argument count), then the commands' arguments.
                    let start = offset;
                    let mut units = String::new();
                    let mut ops = Vec::with_capacity(batch.len());
                    for cmd in batch {
                        offset += 40;
                        units.push_str(&format!("1 {offset} 0 "));
                        ops.push(u8::try_from(cmd.len()).unwrap());
                    }
                    let end = stored(offset);
                    let eval = pipe
                        .cmd("EVALSHA")
                        .arg(if mode == Mode::Walk { &walk } else { &sha })
                        .arg(1)
                        .arg(KEY)
                        .arg(0)
                        .arg(&expected)
                        .arg(&end)
                        .arg(0)
                        .arg(&template)
                        .arg(start)
                        .arg(0)
                        .arg(0)
                        .arg(units)
                        .arg(ops);
                    for cmd in batch {
                        eval.arg(cmd);
                    }
                    expected = end;
                }
            }
        }
        let replies: Vec<redis::Value> = pipe.query(c).unwrap();
        if mode == Mode::Guarded {
            assert!(
                replies.iter().all(|r| !matches!(r, redis::Value::Nil)),
                "a guarded batch was refused"
            );
        }
        if matches!(mode, Mode::Chain | Mode::Previous | Mode::Walk) {
            for r in replies {
                let redis::Value::Array(items) = r else {
                    panic!("batch script answered {r:?}");
                };
                assert!(
                    matches!(items.get(1), Some(redis::Value::BulkString(e)) if e.is_empty()),
                    "batch failed: {items:?}"
                );
            }
        }
    }
    let rate = commands.len() as f64 / started.elapsed().as_secs_f64();
    let cpu_us = (server_cpu(c) - cpu) * 1e6 / commands.len() as f64;
    (rate, cpu_us)
}
