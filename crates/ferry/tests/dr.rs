//! DrPair against real servers: the disaster-recovery walk-through with an application writing in every phase,
//! fencing of a job of the old direction, and recover when A has writes B never received.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry::{
    Deployment, DrConfig, DrEvent, DrPair, DrPhase, ErrorKind, RecoverChoice, RecoverOutcome, Side,
    SyncJob,
};
use ferry_testkit::{
    compare, fill, wait_until, Cluster, CompareOptions, FillOptions, SentinelGroup,
    SentinelOptions, Server, ServerOptions, Target as TkTarget, Version,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server with a replication backlog that holds every write of a test.
fn server() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb")).unwrap()
}

/// ferry's own keys (checkpoints, the state record) are not data.
fn data_opts() -> CompareOptions {
    CompareOptions::default()
        .ignore_prefix("ferry:checkpoint:")
        .ignore_prefix("ferry:state:")
        .ignore_prefix("ferry:lease:")
}

fn wait_equal(a: &TkTarget, b: &TkTarget) {
    let mut last = String::new();
    let r = wait_until(
        common::DEADLINE,
        "A and B to hold the same data",
        || match compare(a, b, &data_opts()) {
            Ok(r) if r.is_equal() => true,
            Ok(r) => {
                last = r.to_string();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        },
    );
    if let Err(e) = r {
        panic!("{e}: {last}");
    }
}

/// Where an application reaches a side: one server (a master) or a cluster's nodes.
#[derive(Debug, Clone)]
enum Addr {
    One(String),
    Cluster(Vec<String>),
}

/// Plain connections to a side's masters, each with a hash tag of a slot it owns ("" for one server). The
/// application writes with these, never through a client that resends a command after a broken connection.
struct Conns(Vec<(redis::Connection, String)>);

impl Conns {
    /// The reply of the master that owns `key` (the others answer MOVED).
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut last = None;
        for (c, _) in &mut self.0 {
            match cmd.query::<T>(c) {
                Err(e) if e.code() == Some("MOVED") => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no master"))))
    }
}

impl Addr {
    fn connect(&self) -> Option<Conns> {
        let t = Duration::from_secs(2);
        let open = |url: &str| {
            redis::Client::open(url)
                .ok()?
                .get_connection_with_timeout(t)
                .ok()
        };
        match self {
            Addr::One(url) => Some(Conns(vec![(open(url)?, String::new())])),
            Addr::Cluster(masters) => {
                let mut out = Vec::new();
                for url in masters {
                    let mut c = open(url)?;
                    let tag = (0..1000).map(|i| format!("{{t{i}}}:")).find(|tag| {
                        redis::cmd("EXISTS")
                            .arg(format!("{tag}probe"))
                            .query::<i64>(&mut c)
                            .is_ok()
                    })?;
                    out.push((c, tag));
                }
                Some(Conns(out))
            }
        }
    }
}

/// The side the newest record names as primary (what an application reads when it connects).
fn primary_of(a_url: &Addr, b_url: &Addr, name: &str) -> Option<Side> {
    let key = format!("ferry:state:{{dr-{name}}}");
    let read = |addr: &Addr| -> Option<(u64, String)> {
        let mut c = addr.connect()?;
        let v: Option<String> = c.query(redis::cmd("GET").arg(&key)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&v?).ok()?;
        Some((v["epoch"].as_u64()?, v["phase"].as_str()?.to_string()))
    };
    let newest = match (read(a_url), read(b_url)) {
        (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
        (a, b) => a.or(b),
    }?;
    Some(match newest.1.as_str() {
        "normal" => Side::A,
        _ => Side::B,
    })
}

/// An application writing all the time through whichever side is primary: `INCR`s of a few counters and
/// `SET`s of new keys. It counts what was acknowledged, per side; it re-reads the primary after (re)connecting,
/// before writing (docs/dr.md: how an application follows the primary).
struct App {
    stop: Arc<AtomicBool>,
    /// Set while A is "lost": the application cannot reach A.
    a_down: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, i64>>>,
    writes: [Arc<AtomicU64>; 2],
    thread: Option<JoinHandle<()>>,
}

impl App {
    fn start(a_url: &Addr, b_url: &Addr, name: &str) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let a_down = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let writes = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let (a_url, b_url, name) = (a_url.clone(), b_url.clone(), name.to_string());
        let thread = {
            let (stop, a_down, acked, writes) =
                (stop.clone(), a_down.clone(), acked.clone(), writes.clone());
            std::thread::spawn(move || {
                let mut conn: Option<(Side, Conns)> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if conn.is_none() {
                        let Some(side) = primary_of(&a_url, &b_url, &name) else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        if side == Side::A && a_down.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let addr = if side == Side::A { &a_url } else { &b_url };
                        let Some(c) = addr.connect() else {
                            continue;
                        };
                        // Connected: confirm the primary before the first write.
                        if primary_of(&a_url, &b_url, &name) != Some(side) {
                            continue;
                        }
                        conn = Some((side, c));
                    }
                    let Some((side, c)) = conn.as_mut() else {
                        continue;
                    };
                    if *side == Side::A && a_down.load(Ordering::SeqCst) {
                        conn = None;
                        continue;
                    }
                    n += 1;
                    let k = (n as usize) % c.0.len();
                    let (c, tag) = &mut c.0[k];
                    let counter = format!("counter:{tag}{}", n % 7);
                    let r: redis::RedisResult<i64> = redis::cmd("INCR").arg(&counter).query(c);
                    let set: redis::RedisResult<()> = if r.is_ok() {
                        redis::cmd("SET")
                            .arg(format!("key:{tag}{n}"))
                            .arg(n)
                            .query(c)
                    } else {
                        Ok(())
                    };
                    match (r, set) {
                        (Ok(_), Ok(())) => {
                            *acked.lock().unwrap().entry(counter).or_insert(0) += 1;
                            writes[if *side == Side::A { 0 } else { 1 }]
                                .fetch_add(1, Ordering::SeqCst);
                        }
                        (Ok(_), Err(_)) => {
                            *acked.lock().unwrap().entry(counter).or_insert(0) += 1;
                            conn = None;
                        }
                        _ => conn = None,
                    }
                }
            })
        };
        App {
            stop,
            a_down,
            acked,
            writes,
            thread: Some(thread),
        }
    }

    fn writes_on(&self, side: Side) -> u64 {
        self.writes[if side == Side::A { 0 } else { 1 }].load(Ordering::SeqCst)
    }

    /// Waits until `n` more writes were acknowledged by `side`.
    fn wait_writes(&self, side: Side, n: u64) {
        let from = self.writes_on(side);
        wait_until(common::DEADLINE, "the application to write", || {
            self.writes_on(side) >= from + n
        })
        .unwrap();
    }

    fn finish(mut self) -> HashMap<String, i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Every counter on the server at `url` equals the increments the application saw acknowledged.
fn assert_counters(addr: &Addr, acked: &HashMap<String, i64>) {
    let mut c = addr.connect().unwrap();
    for (key, n) in acked {
        let v: i64 = c.query(redis::cmd("GET").arg(key)).unwrap();
        assert_eq!(v, *n, "{key}: value {v}, acknowledged increments {n}");
    }
}

fn job_full_syncs(handle: &ferry::DrHandle) -> Option<u64> {
    handle.status().job.map(|j| j.full_syncs)
}

fn wait_job(handle: &ferry::DrHandle, direction: ferry::Direction, epoch: u64) {
    wait_until(common::DEADLINE, "the pair's job to run", || {
        let s = handle.status();
        s.direction == Some(direction)
            && s.epoch == epoch
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", handle.status()));
}

/// The walk-through with an application writing in every phase; `a_url` / `b_url` are where the application
/// writes (the masters).
fn walk_through(name: &str, a: Deployment, b: Deployment, a_url: &Addr, b_url: &Addr) {
    let pair = DrPair::new(DrConfig::new(name, a, b)).unwrap();
    let tk = |addr: &Addr| match addr {
        Addr::One(url) => TkTarget::Standalone(url.clone()),
        Addr::Cluster(nodes) => TkTarget::Cluster(nodes.clone()),
    };
    let (ta, tb) = (tk(a_url), tk(b_url));
    fill(&ta, &FillOptions::seed(5)).unwrap();
    runtime().block_on(async {
        let status = pair.init().await.unwrap();
        assert_eq!(
            (status.phase, status.epoch, status.primary),
            (DrPhase::Normal, 1, Side::A)
        );
        let run = pair.run().unwrap();
        let mut events = run.events();
        wait_job(&run, ferry::Direction::AToB, 1);
        assert!(
            job_full_syncs(&run) >= Some(1),
            "the first A -> B is a full copy"
        );

        // 1. Normal: A serves, A -> B runs.
        let app = App::start(a_url, b_url, name);
        app.wait_writes(Side::A, 300);

        // 2. A is lost for the application; failover.
        app.a_down.store(true, Ordering::SeqCst);
        let f = pair.failover().await.unwrap();
        assert!(f.changed && f.rpo.is_some(), "{f:?}");
        assert_eq!(f.lag_bytes, Some(0), "a planned failover drains: {f:?}");
        let again = pair.failover().await.unwrap();
        assert!(!again.changed, "a retry finds it done");
        assert_eq!(
            (again.rpo, again.b_position),
            (f.rpo.clone(), f.b_position.clone())
        );
        app.wait_writes(Side::B, 300);
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.primary, s.direction),
            (DrPhase::FailedOver, Side::B, None)
        );
        assert!(s.next.starts_with("recover"), "{}", s.next);

        // 3. A is back: recover incrementally while B keeps taking writes.
        app.a_down.store(false, Ordering::SeqCst);
        let r = pair.recover(RecoverChoice::None).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Incremental, "{r:?}");
        assert_eq!(r.extra_writes_on_a, Some(0));
        wait_job(&run, ferry::Direction::BToA, r.epoch);
        app.wait_writes(Side::B, 300);
        assert_eq!(job_full_syncs(&run), Some(0), "B -> A continues B's stream");

        // A stale A -> B job started by hand with the old epoch is refused.
        let mut stale =
            ferry::SyncConfig::new(pair.config().a.as_source(), pair.config().b.as_target());
        stale.checkpoint.tag = ferry::Direction::AToB.checkpoint_tag(name);
        stale.checkpoint.epoch = 1;
        let e = SyncJob::new(stale)
            .unwrap()
            .start()
            .unwrap()
            .wait()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");

        // 4. Switch back under writes.
        let sb = pair.switchback().await.unwrap();
        assert!(sb.changed);
        let pause = sb.write_pause_ms.unwrap();
        println!("switchback write pause: {pause} ms");
        wait_job(&run, ferry::Direction::AToB, sb.epoch);
        app.wait_writes(Side::A, 300);
        assert_eq!(
            job_full_syncs(&run),
            Some(0),
            "A -> B continues from A's seeded position"
        );
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.primary, s.a_epoch, s.b_epoch),
            (DrPhase::Normal, Side::A, Some(sb.epoch), Some(sb.epoch))
        );
        assert_eq!(s.state.unwrap().switchback_pause_ms, Some(pause));
        let again = pair.switchback().await.unwrap();
        assert!(!again.changed && again.a_position == sb.a_position);

        let acked = app.finish();
        wait_equal(&ta, &tb);
        assert_counters(a_url, &acked);
        assert_counters(b_url, &acked);
        run.stop().await.unwrap();
        let mut primaries = Vec::new();
        while let Some(e) = events.try_recv() {
            if let DrEvent::Primary { side, .. } = e {
                primaries.push(side);
            }
        }
        // The run polls the record: each epoch it saw is one event, in order.
        assert_eq!(primaries.first(), Some(&Side::A), "{primaries:?}");
        assert_eq!(primaries.last(), Some(&Side::A), "{primaries:?}");
        assert!(primaries.contains(&Side::B), "{primaries:?}");
    });
}

#[test]
fn walk_through_standalone_pair_with_live_writes_loses_no_acknowledged_write() {
    let a = server();
    let b = server();
    walk_through(
        "walk",
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
        &Addr::One(a.url()),
        &Addr::One(b.url()),
    );
}

#[test]
fn walk_through_standalone_a_and_sentinel_group_b_loses_no_acknowledged_write() {
    let a = server();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    group.wait_converged(common::DEADLINE).unwrap();
    let sentinels: Vec<String> = group.sentinels.iter().map(Server::url).collect();
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    let master = group.current_master().unwrap().url();
    walk_through(
        "walk-sentinel",
        Deployment::standalone(a.url()),
        Deployment::sentinel(&sentinels, group.master_name.clone()),
        &Addr::One(a.url()),
        &Addr::One(master),
    );
}

#[test]
fn walk_through_cluster_a_and_sentinel_group_b_loses_no_acknowledged_write() {
    let a = Cluster::start(Version::V7_0).unwrap();
    a.wait_ok(common::DEADLINE).unwrap();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    group.wait_converged(common::DEADLINE).unwrap();
    let sentinels: Vec<String> = group.sentinels.iter().map(Server::url).collect();
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    let master = group.current_master().unwrap().url();
    let nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    walk_through(
        "walk-cluster",
        Deployment::cluster(nodes[0].clone()),
        Deployment::sentinel(&sentinels, group.master_name.clone()),
        &Addr::Cluster(nodes),
        &Addr::One(master),
    );
}

#[test]
fn recover_counts_writes_a_has_beyond_b_and_refuses_until_b_wins() {
    let a = server();
    let b = server();
    fill(&TkTarget::from(&a), &FillOptions::seed(8)).unwrap();
    let name = "extra";
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    runtime().block_on(async {
        pair.init().await.unwrap();
        // A job of the pair's A -> B direction, run by hand (a process the failover does not know of).
        let mut config = ferry::SyncConfig::new(
            ferry::Source::standalone(a.url()),
            ferry::Target::standalone(b.url()),
        )
        .with_conflict(ferry::Conflict::Rewrite);
        config.checkpoint.tag = ferry::Direction::AToB.checkpoint_tag(name);
        config.checkpoint.epoch = 1;
        let job = SyncJob::new(config).unwrap().start().unwrap();
        wait_until(common::DEADLINE, "the A -> B job to go live", || {
            job.status().phase == ferry::Phase::Incremental
        })
        .unwrap();
        let mut ca = a.client();
        let mut cb = b.client();
        for _ in 0..5 {
            redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
        }
        wait_equal(&TkTarget::from(&a), &TkTarget::from(&b));
        pair.failover().await.unwrap();
        // A keeps taking writes after the failover (it "kept serving"); the old job is fenced at its next batch.
        for _ in 0..3 {
            redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
        }
        redis::cmd("SET")
            .arg("only-on-a")
            .arg("1")
            .exec(&mut ca)
            .unwrap();
        let e = job.wait().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        let n: i64 = redis::cmd("GET").arg("n").query(&mut cb).unwrap();
        assert_eq!(n, 5, "the fenced job wrote nothing after the failover");
        // B serves.
        for _ in 0..10 {
            redis::cmd("INCR").arg("n").exec(&mut cb).unwrap();
        }
        let r = pair.recover(RecoverChoice::None).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Refused, "{r:?}");
        assert_eq!(r.extra_writes_on_a, Some(4), "3 INCR and 1 SET: {r:?}");
        assert!(r.reason.contains("4 writes"), "{}", r.reason);
        assert_eq!(
            pair.status().await.unwrap().phase,
            DrPhase::FailedOver,
            "refused: nothing changed"
        );
        let r = pair.recover(RecoverChoice::Abort).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Aborted);
        let r = pair.recover(RecoverChoice::BWins).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::FullCopy, "{r:?}");
        let run = pair.run().unwrap();
        wait_job(&run, ferry::Direction::BToA, r.epoch);
        wait_equal(&TkTarget::from(&b), &TkTarget::from(&a));
        let n: i64 = redis::cmd("GET").arg("n").query(&mut ca).unwrap();
        assert_eq!(n, 15, "B's value: A's extra increments are gone");
        let gone: Option<String> = redis::cmd("GET").arg("only-on-a").query(&mut ca).unwrap();
        assert_eq!(gone, None);
        run.stop().await.unwrap();
    });
}

#[test]
fn a_failover_interrupted_before_a_got_the_record_is_finished_by_calling_it_again() {
    let a = server();
    let b = server();
    let name = "retry";
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    runtime().block_on(async {
        pair.init().await.unwrap();
        let key = format!("ferry:state:{{dr-{name}}}");
        let mut ca = a.client();
        let before: String = redis::cmd("GET").arg(&key).query(&mut ca).unwrap();
        let f = pair.failover().await.unwrap();
        // The state a crash right after B's script leaves: B moved, A still holds the old record.
        redis::cmd("SET")
            .arg(&key)
            .arg(&before)
            .exec(&mut ca)
            .unwrap();
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.a_epoch, s.b_epoch),
            (DrPhase::FailedOver, Some(1), Some(2))
        );
        assert!(
            s.next
                .starts_with("failover again: the record on A is behind"),
            "{}",
            s.next
        );
        let again = pair.failover().await.unwrap();
        assert!(!again.changed);
        assert_eq!(
            (again.rpo, again.b_position, again.epoch),
            (f.rpo, f.b_position, f.epoch)
        );
        let s = pair.status().await.unwrap();
        assert_eq!((s.a_epoch, s.b_epoch), (Some(2), Some(2)));
        assert!(s.next.starts_with("recover"), "{}", s.next);
    });
}

#[test]
fn walk_through_cluster_a_and_cluster_b_loses_no_acknowledged_write() {
    let a = Cluster::start(Version::V7_0).unwrap();
    let b = Cluster::start(Version::V7_0).unwrap();
    a.wait_ok(common::DEADLINE).unwrap();
    b.wait_ok(common::DEADLINE).unwrap();
    let a_nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    let b_nodes: Vec<String> = b.masters().iter().map(|s| s.url()).collect();
    walk_through(
        "walk-clusters",
        Deployment::cluster(a_nodes[0].clone()),
        Deployment::cluster(b_nodes[0].clone()),
        &Addr::Cluster(a_nodes),
        &Addr::Cluster(b_nodes),
    );
}
