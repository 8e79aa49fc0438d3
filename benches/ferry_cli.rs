//! The `ferry` program, run as a user runs it, side by side with its floor in the same invocation:
//!
//! - `ferry sync --until-caught-up` (full copy of N small keys, to the exit) against a native Redis replica of the
//!   same source (`REPLICAOF`, to `master_link_status:up` with every key loaded); peak RSS of the ferry process.
//! - `ferry verify` of two equal servers of N keys against a pipelined read of both sides: `SCAN` each side and
//!   `DUMP` + `PEXPIRETIME` every key of it, 512 keys a round trip, both sides at once. That is the reading
//!   verify cannot avoid; verify also decodes and compares, and checks the target's keys against the source.
//!
//! ```text
//! cargo bench -p ferry-benches --bench ferry_cli                           # 5M keys sync, 1M keys verify
//! FERRY_CLI_SYNC_VALUE_SIZE=256 cargo bench -p ferry-benches --bench ferry_cli   # values of 256 bytes, not 16
//! FERRY_CLI_VERIFY_KEYS=0 cargo bench -p ferry-benches --bench ferry_cli        # the sync only
//! FERRY_CLI_SOURCE_RDB=/path/dump.rdb cargo bench -p ferry-benches --bench ferry_cli  # your own data (keys in db 0)
//! FERRY_CLI_SYNC_KEYS=1000000 FERRY_CLI_VERIFY_KEYS=200000 cargo bench -p ferry-benches --bench ferry_cli
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_benches::{dbsize, ferry_binary, link_up, populate, run_ferry, server, wait_timed};
use ferry_resp::{ConnectOptions, Connection, Frame};
use ferry_testkit::wait_until;

const DEADLINE: Duration = Duration::from_secs(3600);

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let ferry = ferry_binary();
    sync(
        &ferry,
        env("FERRY_CLI_SYNC_KEYS", 5_000_000),
        env("FERRY_CLI_SYNC_VALUE_SIZE", 16),
    );
    let verify_keys = env("FERRY_CLI_VERIFY_KEYS", 1_000_000);
    if verify_keys > 0 {
        verify(&ferry, verify_keys);
    }
}

fn sync(ferry: &std::path::Path, n: u64, value_size: u64) {
    let source = server(&[]);
    let rdb = std::env::var("FERRY_CLI_SOURCE_RDB").ok();
    let (n, shape) = match &rdb {
        // Your own data: the file becomes the source's dataset (its dump file, then `DEBUG RELOAD NOSAVE`).
        Some(path) => {
            let (_, name): (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg("dbfilename")
                .query(&mut source.client())
                .unwrap();
            std::fs::copy(path, source.dir().join(name)).expect("copy the RDB file");
            redis::cmd("DEBUG")
                .arg("RELOAD")
                .arg("NOSAVE")
                .exec(&mut source.client())
                .unwrap();
            (dbsize(&source), path.clone())
        }
        None => {
            populate(&source, n, "key", value_size);
            (n, format!("{value_size}-byte strings"))
        }
    };

    let replica = server(&[]);
    let started = Instant::now();
    redis::cmd("REPLICAOF")
        .arg(source.host())
        .arg(source.port())
        .exec(&mut replica.client())
        .unwrap();
    wait_timed("the native replica to load", || {
        link_up(&replica) && dbsize(&replica) == n
    });
    let native = started.elapsed();
    drop(replica);

    let target = server(&[]);
    let (took, rss, code) = run_ferry(
        ferry,
        &[
            "sync",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
            "--until-caught-up",
            "--checkpoint-db",
            "15",
        ],
    );
    assert_eq!(code, 0, "ferry sync failed");
    assert_eq!(dbsize(&target), n, "every key copied");
    println!(
        "| keys | data | native replica | ferry sync (to exit) | ferry / native | ferry peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {shape} | {:.2} s | {:.2} s | {:.2}x | {:.0} MiB |",
        native.as_secs_f64(),
        took.as_secs_f64(),
        took.as_secs_f64() / native.as_secs_f64(),
        rss
    );
}

fn verify(ferry: &std::path::Path, n: u64) {
    let source = server(&[]);
    populate(&source, n, "key", 16);
    redis::cmd("PEXPIREAT")
        .arg("key:1")
        .arg(4_102_444_800_000u64)
        .exec(&mut source.client())
        .unwrap();
    let target = server(&[]);
    redis::cmd("REPLICAOF")
        .arg(source.host())
        .arg(source.port())
        .exec(&mut target.client())
        .unwrap();
    wait_until(DEADLINE, "the copy to load", || {
        link_up(&target) && dbsize(&target) == n
    })
    .unwrap();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut target.client())
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (source_url, target_url) = (source.url(), target.url());
    let read = rt.block_on(async {
        let (a, b) = tokio::join!(read_side(&source_url), read_side(&target_url));
        a + b
    });
    let floor = started.elapsed();
    assert_eq!(read, 2 * n, "the floor read every key of both sides");

    let (took, rss, code) = run_ferry(
        ferry,
        &[
            "verify",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
        ],
    );
    assert_eq!(code, 0, "ferry verify found the copies different");
    println!();
    println!("| keys | pipelined DUMP read of both sides | ferry verify (to exit) | verify / floor | ferry peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.2} s | {:.2} s | {:.2}x | {:.0} MiB |",
        floor.as_secs_f64(),
        took.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64(),
        rss
    );
}

/// `SCAN` one server and `DUMP` + `PEXPIRETIME` every key, 512 keys a round trip; returns the keys read.
async fn read_side(url: &str) -> u64 {
    let opts = ConnectOptions::from_url(url).unwrap();
    let mut scan = Connection::connect(&opts).await.unwrap();
    let mut reads = Connection::connect(&opts).await.unwrap();
    let mut cursor = Bytes::from_static(b"0");
    let mut n = 0u64;
    loop {
        let reply = scan
            .call(&[&b"SCAN"[..], &cursor, b"COUNT", b"512"])
            .await
            .unwrap();
        let Frame::Array(parts) = reply else {
            panic!("SCAN reply")
        };
        let next = parts[0].as_bytes().map(Bytes::copy_from_slice).unwrap();
        let Frame::Array(keys) = &parts[1] else {
            panic!("SCAN keys")
        };
        let mut cmds: Vec<Vec<Bytes>> = Vec::with_capacity(keys.len() * 2);
        for k in keys {
            let k = k.as_bytes().map(Bytes::copy_from_slice).unwrap();
            cmds.push(vec![Bytes::from_static(b"DUMP"), k.clone()]);
            cmds.push(vec![Bytes::from_static(b"PEXPIRETIME"), k]);
        }
        if !cmds.is_empty() {
            let replies = reads.pipeline(&cmds).await.unwrap();
            n += replies
                .iter()
                .step_by(2)
                .filter(|f| matches!(f, Frame::Bulk(_)))
                .count() as u64;
        }
        if next.as_ref() == b"0" {
            return n;
        }
        cursor = next;
    }
}
