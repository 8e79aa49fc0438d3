//! A full copy redone over this job's own earlier writes leaves no key the source no longer has, by default,
//! when the job owns the target (its databases and filters held no key before its first copy); a key the job
//! never wrote (there before the first copy, or excluded by its filters) is never deleted.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_same_data, checkpoint_value, config, counter, expire_short_keys, master_offset, relay,
    workload, Job, ProcJob, CHECKPOINT_DB, DEADLINE,
};
use ferry_replicator::checkpoint;
use ferry_replicator::FilterConfig;
use ferry_replicator::ScanOptions;
use ferry_replicator::{Phase, SourceKind};
use ferry_resp::ConnectOptions;
use ferry_testkit::{
    compare, wait_until, Cluster, CompareOptions, Server, ServerOptions, Target, Version,
};

/// A source whose backlog (16 kB) a workload of a few hundred rounds overruns, and an empty target.
fn small_backlog_servers() -> (Server, Server) {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "16kb"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    (source, target)
}

/// Writes `n` string keys `<prefix>:<i>` in database `db`.
fn set_keys(server: &Server, db: i64, prefix: &str, n: u64) {
    set_sized_keys(server, db, prefix, n, 0);
}

/// Writes `n` string keys `<prefix>:<i>` of at least `len` bytes in database `db`.
fn set_sized_keys(server: &Server, db: i64, prefix: &str, n: u64, len: usize) {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    for i in 0..n {
        redis::cmd("SET")
            .arg(format!("{prefix}:{i}"))
            .arg(format!("v{i}{}", "x".repeat(len)))
            .exec(&mut c)
            .unwrap();
    }
}

/// Deletes the keys matching `pattern` in database `db`; returns how many.
fn del_matching(server: &Server, db: i64, pattern: &str) -> u64 {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
    for k in &keys {
        redis::cmd("DEL").arg(k).exec(&mut c).unwrap();
    }
    keys.len() as u64
}

fn exists(server: &Server, db: i64, key: &str) -> bool {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("EXISTS").arg(key).query::<i64>(&mut c).unwrap() == 1
}

fn dbsize(server: &Server, db: i64) -> u64 {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("DBSIZE").query(&mut c).unwrap()
}

/// The ownership record of the default job tag on a standalone target.
fn ownership(target: &Server) -> Option<String> {
    let mut c = target.client();
    redis::cmd("SELECT")
        .arg(CHECKPOINT_DB)
        .exec(&mut c)
        .unwrap();
    redis::cmd("GET")
        .arg("ferry:checkpoint:{ferry}:owner")
        .query(&mut c)
        .unwrap()
}

/// Changes the source while the job is away: deletes the `doomed` keys (db 0 and 1), rewrites the `kept` keys,
/// adds `fresh` keys, then runs a workload that overruns the backlog. Returns the workload's INCR count and the
/// deleted keys.
fn change_while_away(source: &Server, tag: &str) -> (u64, u64) {
    let deleted = del_matching(source, 0, "doomed:*") + del_matching(source, 1, "doomed:*");
    set_keys(source, 0, "kept", 50);
    let mut c = source.client();
    for i in 0..50 {
        redis::cmd("APPEND")
            .arg(format!("kept:{i}"))
            .arg("+changed")
            .exec(&mut c)
            .unwrap();
    }
    set_keys(source, 0, "fresh", 30);
    let before = master_offset(source);
    let rounds = workload(source, 500, tag);
    assert!(
        master_offset(source) - before > 64 * 1024,
        "the writes overran the backlog"
    );
    (rounds, deleted)
}

#[test]
fn a_job_stopped_during_the_rdb_copy_of_an_owned_target_leaves_no_key_the_source_deleted() {
    // Each key of the RDB takes 5 ms, and 4 kB values reach the target as the copy goes: the copy is stopped
    // while it is half-way.
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("rdb-key-save-delay", "5000"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    set_sized_keys(&source, 0, "doomed", 600, 4096);
    set_keys(&source, 1, "doomed", 50);
    set_keys(&source, 0, "kept", 50);
    let job = Job::start(&source, &target, |_| {});
    wait_until(DEADLINE, "the full copy to be half-way", || {
        checkpoint_value(&target).as_deref() == Some("fullsync") && dbsize(&target, 0) >= 128
    })
    .unwrap();
    job.stop().unwrap();
    assert_eq!(checkpoint_value(&target).as_deref(), Some("fullsync"));
    assert_eq!(ownership(&target).as_deref(), Some("owned"));
    // Keys the stopped copy wrote and the source deletes now.
    let mut t = target.client();
    let written: Vec<String> = redis::cmd("KEYS").arg("doomed:*").query(&mut t).unwrap();
    assert!(!written.is_empty());
    let mut c = source.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("0")
        .exec(&mut c)
        .unwrap();
    let (rounds, _) = change_while_away(&source, "rdbstop");

    let job = Job::start(&source, &target, |_| {});
    expire_short_keys(&source, rounds, "rdbstop");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    assert!(
        status.keys_swept >= written.len() as u64,
        "the sweep deleted the {} keys the stopped copy wrote: {status}",
        written.len()
    );
    assert_eq!(status.redo_unswept, 0);
    assert!(written.iter().all(|k| !exists(&target, 0, k)));
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "rdbstop"), rounds);
}

#[test]
fn a_backlog_lost_full_resync_after_a_restart_deletes_what_the_source_deleted_meanwhile() {
    let (source, target) = small_backlog_servers();
    set_keys(&source, 0, "doomed", 200);
    set_keys(&source, 1, "doomed", 20);
    set_keys(&source, 0, "kept", 50);
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    job.stop().unwrap();
    assert_eq!(dbsize(&target, 0), 250);

    let (rounds, deleted) = change_while_away(&source, "overrun");
    assert_eq!(deleted, 220);
    let job = Job::start(&source, &target, |_| {});
    expire_short_keys(&source, rounds, "overrun");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "a full resync: {status}");
    assert!(status.keys_swept >= deleted, "{status}");
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "overrun"), rounds);
}

/// A TCP relay in front of the source whose links the test can cut and hold cut (new connections are closed
/// at once), so a job stays away from the source while the source overruns its backlog.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn start(real_port: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (o, d, l) = (open.clone(), done.clone(), links.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling accept, so the thread ends with the test.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                client.set_nonblocking(false).unwrap();
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", real_port)) else {
                    continue;
                };
                {
                    let mut held = l.lock().unwrap();
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                }
                relay(client, server);
            }
        });
        Gate {
            port,
            open,
            done,
            links,
        }
    }

    /// Cuts every link and refuses new ones until [`Gate::open`].
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.links.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.close();
    }
}

#[test]
fn a_link_drop_answered_by_fullresync_sweeps_within_the_same_process_with_exact_counters() {
    let (source, target) = small_backlog_servers();
    set_keys(&source, 0, "doomed", 200);
    set_keys(&source, 1, "doomed", 20);
    let gate = Gate::start(source.port());
    let mut cfg = config(&source, &target);
    cfg.source.connect =
        ConnectOptions::from_url(&format!("redis://127.0.0.1:{}", gate.port)).unwrap();
    let job = Job::start_with(cfg);
    job.wait_caught_up(&source);
    let reconnects = job.status.snapshot().reconnects;
    gate.close();
    wait_until(DEADLINE, "the job to lose the source", || {
        let s = job.status.snapshot();
        s.reconnects > reconnects && s.phase != Phase::Incremental
    })
    .unwrap();
    let (rounds, deleted) = change_while_away(&source, "linkdrop");
    gate.open();
    expire_short_keys(&source, rounds, "linkdrop");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 2,
        "the reconnect got +FULLRESYNC: {status}"
    );
    assert!(status.keys_swept >= deleted, "{status}");
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "linkdrop"), rounds);
}

#[test]
fn a_key_on_the_target_before_the_first_copy_survives_a_redo_that_deletes_nothing() {
    let (source, target) = small_backlog_servers();
    set_keys(&target, 0, "foreign", 1);
    set_keys(&source, 0, "doomed", 20);
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    job.stop().unwrap();
    assert_eq!(ownership(&target).as_deref(), Some("shared"));

    let (rounds, _) = change_while_away(&source, "shared");
    let job = Job::start(&source, &target, |_| {});
    expire_short_keys(&source, rounds, "shared");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    // The warning's path: nothing swept, counted as a redo that may leave stale keys.
    assert_eq!((status.keys_swept, status.redo_unswept), (0, 1), "{status}");
    assert!(
        exists(&target, 0, "foreign:0"),
        "a key the job never wrote is never deleted"
    );
    assert!(
        exists(&target, 0, "doomed:0"),
        "without ownership the keys the source deleted stay, as documented"
    );
    // Everything else is exact.
    let opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .ignore_prefix("foreign:")
        .ignore_prefix("doomed:");
    let report = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    assert!(report.is_equal(), "{report:?}");
    assert_eq!(counter(&target, "shared"), rounds);
}

#[test]
fn a_redo_deletes_nothing_once_another_job_writes_into_the_same_target() {
    // One job per source master into one target, as RedisShake deployments run: the first job owns the target
    // (it was empty), then a second job with its own tag copies another source into it. The first job's redo
    // must not delete the second job's keys, which its source never had.
    let (source, target) = small_backlog_servers();
    let neighbour = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    set_keys(&source, 0, "doomed", 20);
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    job.stop().unwrap();
    assert_eq!(ownership(&target).as_deref(), Some("owned"));
    set_keys(&neighbour, 0, "neighbour", 10);
    let job = Job::start(&neighbour, &target, |c| {
        c.sink.checkpoint_tag = "neighbour".into()
    });
    job.wait_caught_up(&neighbour);
    job.stop().unwrap();

    let (rounds, _) = change_while_away(&source, "neighbours");
    let job = Job::start(&source, &target, |_| {});
    expire_short_keys(&source, rounds, "neighbours");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    assert_eq!((status.keys_swept, status.redo_unswept), (0, 1), "{status}");
    for i in 0..10 {
        assert!(
            exists(&target, 0, &format!("neighbour:{i}")),
            "the other job's keys stay"
        );
    }
    let opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .ignore_prefix("neighbour:")
        .ignore_prefix("doomed:");
    let report = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    assert!(report.is_equal(), "{report:?}");
    assert_eq!(counter(&target, "neighbours"), rounds);
}

#[test]
fn a_key_the_filters_exclude_survives_the_sweep_of_an_owned_target() {
    let (source, target) = small_backlog_servers();
    // On the target before the first copy, but outside what the job may write: the target is still owned.
    set_keys(&target, 0, "local", 3);
    set_keys(&source, 0, "local", 5);
    set_keys(&source, 0, "doomed", 100);
    let tweak = |c: &mut ferry_replicator::Config| {
        c.filter = FilterConfig {
            block_key_prefixes: vec![b"local:".to_vec()],
            ..FilterConfig::default()
        }
    };
    let job = Job::start(&source, &target, tweak);
    job.wait_caught_up(&source);
    job.stop().unwrap();
    assert_eq!(ownership(&target).as_deref(), Some("owned"));
    // Written on the target after the first copy, outside the job's filters.
    set_keys(&target, 1, "local", 2);

    let (rounds, deleted) = change_while_away(&source, "filtered");
    let job = Job::start(&source, &target, tweak);
    expire_short_keys(&source, rounds, "filtered");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    assert!(status.keys_swept >= deleted, "{status}");
    assert_eq!(
        count_matching(&target, 0, "local:*"),
        3,
        "the target's own keys of db 0 stay"
    );
    assert_eq!(
        count_matching(&target, 1, "local:*"),
        2,
        "and those of db 1"
    );
    let opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .ignore_prefix("local:");
    let report = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    assert!(report.is_equal(), "{report:?}");
    assert_eq!(counter(&target, "filtered"), rounds);
}

/// Keys matching `pattern` in database `db`.
fn count_matching(server: &Server, db: i64, pattern: &str) -> u64 {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
    keys.len() as u64
}

#[test]
fn a_backlog_lost_full_resync_into_a_cluster_target_sweeps_every_master() {
    let (source, _) = small_backlog_servers();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    // Keys on every master (their slots spread over the three).
    set_keys(&source, 0, "doomed", 300);
    let make = || {
        let mut cfg = config(&source, cluster.masters()[0]);
        cfg.target_cluster = true;
        cfg.sink.checkpoint_db = 0;
        // The workload also writes in database 1, which a cluster does not have.
        cfg.filter.block_dbs = vec![1];
        cfg
    };
    let job = Job::start_with(make());
    job.wait_caught_up(&source);
    job.stop().unwrap();
    for m in cluster.masters() {
        assert!(
            count_matching(m, 0, "doomed:*") > 0,
            "every master holds some keys"
        );
    }

    let (rounds, _) = change_while_away(&source, "cluster");
    let job = Job::start_with(make());
    expire_short_keys(&source, rounds, "cluster");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    assert!(status.keys_swept >= 300, "{status}");
    for m in cluster.masters() {
        assert_eq!(count_matching(m, 0, "doomed:*"), 0);
    }
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "{report:?}");
    let mut c = cluster.cluster_client().unwrap();
    let counted: u64 = redis::cmd("GET")
        .arg("ferry:counter:cluster")
        .query(&mut c)
        .unwrap();
    assert_eq!(counted, rounds);
}

#[test]
fn a_scan_done_again_in_the_same_process_deletes_what_the_source_deleted_unheard() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    set_keys(&source, 0, "doomed", 100);
    set_keys(&source, 1, "doomed", 10);
    set_keys(&source, 0, "kept", 20);
    let mut cfg = config(&source, &target);
    cfg.source_kind = SourceKind::Scan(ScanOptions::default());
    let job = Job::start_with(cfg);
    wait_until(DEADLINE, "the scan's live phase", || {
        job.status.snapshot().phase == Phase::Incremental
    })
    .unwrap();
    assert_eq!(dbsize(&target, 0), 120);
    // Deleted while the source publishes no notification: the job cannot hear it.
    let set_events = |v: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(v)
            .exec(&mut source.client())
            .unwrap();
    };
    let events: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut source.client())
        .unwrap();
    set_events("");
    let deleted = del_matching(&source, 0, "doomed:*") + del_matching(&source, 1, "doomed:*");
    set_events(&events[1]);
    // The subscriber dropped: the job scans again.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut source.client())
        .unwrap();
    assert_eq!(killed, 1);
    wait_until(DEADLINE, "a second scan, then the live phase", || {
        let s = job.status.snapshot();
        s.full_syncs == 2 && s.phase == Phase::Incremental
    })
    .unwrap();
    let status = job.status.snapshot();
    assert!(status.keys_swept >= deleted, "{status}");
    assert_same_data(&source, &target, false);
}

#[test]
fn a_job_sigkilled_during_the_sweep_sweeps_again_when_restarted_and_ends_exact() {
    // 150,000 keys of a first copy that the source then drops: the sweep of the redone copy deletes them one
    // by one, long enough to be killed half-way.
    const DOOMED: u64 = 150_000;
    let (source, target) = small_backlog_servers();
    let mut c = source.client();
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(DOOMED)
        .arg("doomed")
        .arg(16)
        .exec(&mut c)
        .unwrap();
    set_keys(&source, 0, "kept", 50);
    let checkpoint_db = CHECKPOINT_DB.to_string();
    let args = ["--checkpoint-db", checkpoint_db.as_str()];
    let job = ProcJob::start_args(&source, &target, &args);
    job.wait_caught_up(&source);
    job.kill();
    assert_eq!(dbsize(&target, 2), DOOMED);

    // Away: the source drops database 2 and overruns its backlog, so the restart copies again.
    redis::cmd("FLUSHDB").exec(&mut c).unwrap();
    let (rounds, _) = change_while_away(&source, "sweepkill");
    let job = ProcJob::start_args(&source, &target, &args);
    wait_until(DEADLINE, "the sweep to be under way", || {
        dbsize(&target, 2) < DOOMED - 5_000
    })
    .unwrap_or_else(|e| panic!("{e}; status: {}", job.status_line()));
    job.kill();
    let left = dbsize(&target, 2);
    assert!(left > 0, "the job was killed before its sweep ended");
    assert_eq!(
        checkpoint_value(&target).as_deref(),
        Some("fullsync"),
        "a copy whose sweep did not end has not committed"
    );

    let job = ProcJob::start_args(&source, &target, &args);
    expire_short_keys(&source, rounds, "sweepkill");
    job.wait_caught_up(&source);
    assert_eq!(job.full_syncs(), 1, "{}", job.status_line());
    assert_eq!(dbsize(&target, 2), 0, "the second sweep deleted the rest");
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "sweepkill"), rounds);
    assert_eq!(ownership(&target).as_deref(), Some("owned"));
}
