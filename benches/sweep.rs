//! What the sweep of a redone full copy costs: the `ferry` program's time and peak RSS for a copy into an empty
//! target (no sweep) against the same copy redone over the job's own earlier copy, where the source deleted
//! half of its keys meanwhile (the copy records a 128-bit hash per key it reads, then `SCAN`s the target and
//! deletes what it did not read).
//!
//! - The source holds N keys (`DEBUG POPULATE N key 16`, default 2,000,000); `ferry sync --until-caught-up`
//!   copies them into an empty target, and the process exits (its checkpoint stays in the target).
//! - **Without sweep**: the source's second half (`key:N/2` .. `key:N-1`) is copied into another empty target,
//!   timed to exit, with the process's peak RSS: a first copy of N/2 keys.
//! - **Redo with sweep**: the source deletes its first half (scripts of 10,000 `DEL`s: far more than its 1 MiB
//!   backlog, so the job cannot continue), then `ferry sync --until-caught-up` runs again on the first target:
//!   a full copy of the same N/2 keys, then the sweep deletes the N/2 keys the source no longer has. Timed to
//!   exit, with its peak RSS; the target then holds exactly the N/2 keys.
//!
//! ```text
//! cargo bench -p ferry-benches --bench sweep
//! FERRY_SWEEP_KEYS=200000 cargo bench -p ferry-benches --bench sweep
//! ```

use ferry_benches::{data_keys, ferry_binary, populate, run_ferry, server};
use ferry_testkit::Server;

fn main() {
    let n: u64 = std::env::var("FERRY_SWEEP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let half = n / 2;
    let ferry = ferry_binary();
    let source = server(&[("repl-backlog-size", "1mb")]);
    populate(&source, n, "key", 16);
    let sync = |target: &Server| {
        let (s, t) = (source.url(), target.url());
        let (took, rss, code) = run_ferry(
            &ferry,
            &["sync", "--source", &s, "--target", &t, "--until-caught-up"],
        );
        assert_eq!(code, 0, "ferry sync failed");
        (took, rss)
    };
    let delete = |from: u64, to: u64| {
        let mut c = source.client();
        let mut i = from;
        while i < to {
            let end = (i + 10_000).min(to);
            redis::cmd("EVAL")
                .arg("for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do redis.call('DEL', 'key:' .. i) end")
                .arg(0)
                .arg(i)
                .arg(end)
                .exec(&mut c)
                .unwrap();
            i = end;
        }
    };

    // The first copy, over which the redo runs.
    let redone = server(&[]);
    let (first, first_rss) = sync(&redone);
    assert_eq!(data_keys(&[&redone]), n);
    eprintln!(
        "first copy of {n} keys: {:.2} s, {first_rss:.0} MiB",
        first.as_secs_f64()
    );

    // A first copy of the second half alone (the first half deleted on a replica of the source would cost a
    // second source; deleting it here and copying into a fresh target measures the same N/2 keys).
    delete(0, half);
    let fresh = server(&[]);
    let (plain, plain_rss) = sync(&fresh);
    assert_eq!(data_keys(&[&fresh]), n - half);

    // The redo over the first copy: the source's offset moved by far more than its backlog.
    let (redo, redo_rss) = sync(&redone);
    assert_eq!(
        data_keys(&[&redone]),
        n - half,
        "the sweep left exactly the source's keys"
    );

    println!("| copy of {} keys | time | ferry peak RSS |", n - half);
    println!("|---|---:|---:|");
    println!(
        "| first copy into an empty target (no sweep) | {:.2} s | {plain_rss:.0} MiB |",
        plain.as_secs_f64()
    );
    println!(
        "| redone over an earlier copy of {n} keys, sweep deleting {half} | {:.2} s | {redo_rss:.0} MiB |",
        redo.as_secs_f64()
    );
}
