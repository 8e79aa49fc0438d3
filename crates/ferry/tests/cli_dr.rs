//! `ferry dr` run as a process, as an operator runs it: calls SIGKILLed mid-way and called again (standalone,
//! cluster and sentinel-group sides), two switchbacks at once, and the guarded demote/promote of a
//! master/replica pair.

mod common;

use common::runtime;

use std::sync::atomic::Ordering;

use common::dr::{assert_counters, job_full_syncs, wait_job, Addr, App};
use common::Ferry;
use ferry::{Deployment, Direction, DrConfig, DrPair, DrPhase, RecoverChoice, Side};
use ferry_testkit::{
    fill, wait_until, Cluster, FillOptions, SentinelGroup, SentinelOptions, Server, ServerOptions,
    Target as TkTarget, Version,
};

fn server() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb")).unwrap()
}

fn pair_args(cmd: &str, name: &str, a: &Server, b: &Server) -> Vec<String> {
    ["dr", cmd, "--name", name, "--a", &a.url(), "--b", &b.url()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Waits until A and B hold the same data (ferry's own keys left out).
fn wait_equal(a: &Server, b: &Server) {
    common::wait_equal(&TkTarget::from(a), &TkTarget::from(b));
}

/// Sends SIGKILL to a `ferry` process and waits until it is gone.
fn sigkill(p: &mut Ferry) {
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(p.wait(), -1, "killed by a signal: {}", p.stderr());
}

/// Runs `ferry ARGS` until it reaches `step` (the test hook `FERRY_TEST_STOP_AT` stops it there), then SIGKILLs
/// it: the crash happens exactly at that step.
fn kill_at_step(args: Vec<String>, step: &str) {
    let mut p = Ferry::spawn_env(args, &[("FERRY_TEST_STOP_AT", step)]);
    p.wait_stderr(&format!("test hook: stopped at step {step}"));
    sigkill(&mut p);
}

/// `ferry ARGS` run to its end: its stdout (it must exit 0).
fn call(args: Vec<String>) -> String {
    let mut p = Ferry::spawn(args);
    assert_eq!(p.wait(), 0, "{}", p.stderr());
    p.stdout()
}

/// A pair brought to `recovering` with B -> A caught up, by the library; returns the pair and a running
/// handle.
async fn recovering_pair(name: &str, a: &Server, b: &Server) -> (DrPair, ferry::DrHandle) {
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    let mut ca = a.client();
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut ca)
            .unwrap();
    }
    pair.init().await.unwrap();
    let run = pair.run().unwrap();
    let live = |run: &ferry::DrHandle, d: Direction, epoch: u64| {
        let s = run.status();
        s.direction == Some(d)
            && s.epoch == epoch
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    };
    wait_until(common::DEADLINE, "A -> B live", || {
        live(&run, Direction::AToB, 1)
    })
    .unwrap();
    pair.failover().await.unwrap();
    let mut cb = b.client();
    for _ in 0..50 {
        redis::cmd("INCR").arg("n").exec(&mut cb).unwrap();
    }
    let r = pair.recover(RecoverChoice::None).await.unwrap();
    assert_eq!(r.outcome, ferry::RecoverOutcome::Incremental, "{r:?}");
    wait_until(common::DEADLINE, "B -> A live", || {
        live(&run, Direction::BToA, r.epoch)
    })
    .unwrap();
    wait_equal(b, a);
    (pair, run)
}

#[test]
fn switchback_sigkilled_while_b_is_paused_finishes_when_called_again() {
    let a = server();
    let b = server();
    let rt = runtime();
    let (pair, run) = rt.block_on(recovering_pair("killed", &a, &b));
    // The B -> A job stops: the switchback cannot drain and waits with B paused.
    rt.block_on(run.stop()).unwrap();
    let mut cb = b.client();
    for _ in 0..20 {
        redis::cmd("INCR").arg("n").exec(&mut cb).unwrap();
    }
    let mut first = Ferry::spawn(pair_args("switchback", "killed", &a, &b));
    first.wait_stderr("writes on B paused");
    sigkill(&mut first);
    let status = rt.block_on(pair.status()).unwrap();
    assert_eq!(
        status.phase,
        DrPhase::Recovering,
        "nothing moved: {status:?}"
    );
    // The pause ends by its timeout; B takes writes again.
    wait_until(common::DEADLINE, "B to take writes again", || {
        redis::cmd("INCR").arg("n").exec(&mut cb).is_ok()
    })
    .unwrap();
    // The operator starts the pair's job again and calls switchback again: it finishes.
    let _guard = rt.enter();
    let run = pair.run().unwrap();
    let mut second = Ferry::spawn(pair_args("switchback", "killed", &a, &b));
    assert_eq!(second.wait(), 0, "{}", second.stderr());
    assert!(
        second.stdout().contains("writes on B were paused"),
        "{}",
        second.stdout()
    );
    wait_until(common::DEADLINE, "A -> B runs", || {
        let s = run.status();
        s.direction == Some(Direction::AToB)
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    })
    .unwrap();
    let mut ca = a.client();
    redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
    let n: i64 = redis::cmd("GET").arg("n").query(&mut ca).unwrap();
    assert_eq!(n, 50 + 20 + 1 + 1, "every acknowledged INCR, once");
    wait_equal(&a, &b);
    let job = run.status().job.unwrap();
    assert_eq!(
        job.full_syncs, 0,
        "A -> B continued from the seeded position"
    );
    rt.block_on(run.stop()).unwrap();
}

/// The status of both sides: (phase, A's epoch, B's epoch).
fn epochs(
    rt: &tokio::runtime::Runtime,
    pair: &DrPair,
) -> (DrPhase, Option<u64>, Option<u64>, String) {
    let s = rt.block_on(pair.status()).unwrap();
    (s.phase, s.a_epoch, s.b_epoch, s.next)
}

/// The end of a walk-through whose switchback is SIGKILLed at `step`: the pair's run finishes the switch, a
/// second `switchback` (`again`) finds it done, A -> B continued without a full copy, and once the
/// application stops both sides hold every acknowledged write (`equal` waits until they hold the same data).
#[allow(clippy::too_many_arguments)]
fn switchback_killed_then_finished(
    rt: &tokio::runtime::Runtime,
    pair: &DrPair,
    run: ferry::DrHandle,
    app: App,
    (aa, ab): (&Addr, &Addr),
    step: &str,
    again: impl Fn() -> Vec<String>,
    equal: impl FnOnce(),
) {
    kill_at_step(again(), step);
    // The pair's run finishes it: B's clients disconnected, B's record and the A -> B seeds.
    wait_job(&run, Direction::AToB, 4);
    let (phase, ea, eb, _) = epochs(rt, pair);
    assert_eq!((phase, ea, eb), (DrPhase::Normal, Some(4), Some(4)));
    app.wait_writes(Side::A, 200);
    let out = call(again());
    assert!(out.contains("switched back already"), "{out}");
    assert_eq!(
        job_full_syncs(&run),
        Some(0),
        "A -> B continued from the seeds"
    );
    let acked = app.finish();
    equal();
    assert_counters(aa, &acked);
    assert_counters(ab, &acked);
    rt.block_on(run.stop()).unwrap();
}

#[test]
fn failover_and_recover_sigkilled_between_the_two_records_finish_when_called_again() {
    let a = server();
    let b = server();
    let name = "crash";
    fill(&TkTarget::from(&a), &FillOptions::seed(13)).unwrap();
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    let rt = runtime();
    let _guard = rt.enter();
    call(pair_args("init", name, &a, &b));
    let run = pair.run().unwrap();
    wait_job(&run, Direction::AToB, 1);
    let (aa, ab) = (Addr::One(a.url()), Addr::One(b.url()));
    let app = App::start(&aa, &ab, name);
    app.wait_writes(Side::A, 200);

    // failover, killed once B's record moved (A -> B fenced in the same script) and before A's record did.
    app.a_down.store(true, Ordering::SeqCst);
    kill_at_step(pair_args("failover", name, &a, &b), "failover_written_on_b");
    let (phase, ea, eb, next) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::FailedOver, Some(1), Some(2)));
    assert!(next.starts_with("failover again"), "{next}");
    // B serves already (the newest record names it), and the A -> B job is stopped by the fence.
    app.wait_writes(Side::B, 200);
    let out = call(pair_args("failover", name, &a, &b));
    assert!(out.contains("failed over (already)"), "{out}");
    let (phase, ea, eb, next) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::FailedOver, Some(2), Some(2)));
    assert!(next.starts_with("recover"), "{next}");

    // recover, killed once A's record moved (B -> A seeded in the same script) and before B's record did.
    app.a_down.store(false, Ordering::SeqCst);
    kill_at_step(pair_args("recover", name, &a, &b), "recover_written_on_a");
    let (phase, ea, eb, next) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::Recovering, Some(3), Some(2)));
    assert!(next.starts_with("recover again"), "{next}");
    // The B -> A job starts on A's record (it writes to A) while B keeps serving.
    wait_job(&run, Direction::BToA, 3);
    app.wait_writes(Side::B, 200);
    let out = call(pair_args("recover", name, &a, &b));
    assert!(
        out.contains("Incremental") && out.contains("recovering already"),
        "{out}"
    );
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::Recovering, Some(3), Some(3)));
    assert_eq!(
        job_full_syncs(&run),
        Some(0),
        "B -> A continued B's stream from the failover point"
    );

    // switchback and a last stretch of writes on A.
    let out = call(pair_args("switchback", name, &a, &b));
    assert!(out.contains("writes on B were paused"), "{out}");
    wait_job(&run, Direction::AToB, 4);
    app.wait_writes(Side::A, 200);
    assert_eq!(
        job_full_syncs(&run),
        Some(0),
        "A -> B continued from the seed"
    );
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::Normal, Some(4), Some(4)));
    let acked = app.finish();
    wait_equal(&a, &b);
    assert_counters(&aa, &acked);
    assert_counters(&ab, &acked);
    rt.block_on(run.stop()).unwrap();
}

#[test]
fn sentinel_group_b_calls_sigkilled_mid_way_finish_when_called_again() {
    // B is a sentinel group (its records live on the master the sentinels name): each call is killed between
    // its two records, and called again.
    let a = server();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    group.wait_converged(common::DEADLINE).unwrap();
    let b_master = group.current_master().unwrap();
    let sentinels: Vec<String> = group.sentinels.iter().map(Server::url).collect();
    let name = "crash-sentinel";
    let args = |cmd: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "dr",
            cmd,
            "--name",
            name,
            "--a",
            &a.url(),
            "--b-type",
            "sentinel",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        for s in &sentinels {
            v.extend(["--b".to_string(), s.clone()]);
        }
        v.extend(["--b-master".to_string(), group.master_name.clone()]);
        v
    };
    fill(&TkTarget::from(&a), &FillOptions::seed(17)).unwrap();
    let sentinel_refs: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::sentinel(&sentinel_refs, group.master_name.clone()),
    ))
    .unwrap();
    let rt = runtime();
    let _guard = rt.enter();
    call(args("init"));
    let run = pair.run().unwrap();
    wait_job(&run, Direction::AToB, 1);
    let (aa, ab) = (Addr::One(a.url()), Addr::One(b_master.url()));
    let app = App::start(&aa, &ab, name);
    app.wait_writes(Side::A, 200);

    app.a_down.store(true, Ordering::SeqCst);
    kill_at_step(args("failover"), "failover_written_on_b");
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::FailedOver, Some(1), Some(2)));
    app.wait_writes(Side::B, 200);
    let out = call(args("failover"));
    assert!(out.contains("failed over (already)"), "{out}");

    app.a_down.store(false, Ordering::SeqCst);
    kill_at_step(args("recover"), "recover_written_on_a");
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::Recovering, Some(3), Some(2)));
    wait_job(&run, Direction::BToA, 3);
    app.wait_writes(Side::B, 200);
    let out = call(args("recover"));
    assert!(out.contains("recovering already"), "{out}");
    assert_eq!(job_full_syncs(&run), Some(0), "B -> A continued B's stream");

    switchback_killed_then_finished(
        &rt,
        &pair,
        run,
        app,
        (&aa, &ab),
        "switchback_switched_on_a",
        || args("switchback"),
        || wait_equal(&a, b_master),
    );
}

#[test]
fn switchback_sigkilled_after_the_switch_on_a_is_finished_by_the_run_before_b_takes_a_write() {
    let a = server();
    let b = server();
    let name = "crash-switch";
    let rt = runtime();
    let (pair, run) = rt.block_on(recovering_pair(name, &a, &b));
    let _guard = rt.enter();
    let (aa, ab) = (Addr::One(a.url()), Addr::One(b.url()));
    let app = App::start(&aa, &ab, name);
    app.wait_writes(Side::B, 200);
    // Killed once A's record moved (A serves, B -> A fenced), with B paused and its clients still connected:
    // their paused writes must never run on B.
    switchback_killed_then_finished(
        &rt,
        &pair,
        run,
        app,
        (&aa, &ab),
        "switchback_switched_on_a",
        || pair_args("switchback", name, &a, &b),
        || wait_equal(&a, &b),
    );
}

#[test]
fn cluster_pair_calls_sigkilled_between_fences_seeds_and_records_finish_when_called_again() {
    let a = Cluster::start(Version::V7_0).unwrap();
    let b = Cluster::start(Version::V7_0).unwrap();
    a.wait_ok(common::DEADLINE).unwrap();
    b.wait_ok(common::DEADLINE).unwrap();
    let a_nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    let b_nodes: Vec<String> = b.masters().iter().map(|s| s.url()).collect();
    // A master's offset also moves by the PING it sends its replicas (every 10 s by default): after A -> B is
    // fenced nothing of A reaches B any more, so such a PING would show as lag in the failover's report below.
    for m in a.masters() {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-ping-replica-period")
            .arg("3600")
            .exec(&mut m.client())
            .unwrap();
    }
    let name = "crash-clusters";
    let args = |cmd: &str| -> Vec<String> {
        [
            "dr",
            cmd,
            "--name",
            name,
            "--a-type",
            "cluster",
            "--a",
            &a_nodes[0],
        ]
        .into_iter()
        .chain(["--b-type", "cluster", "--b", &b_nodes[0]])
        .map(str::to_string)
        .collect()
    };
    let (ta, tb) = (
        TkTarget::Cluster(a_nodes.clone()),
        TkTarget::Cluster(b_nodes.clone()),
    );
    fill(&ta, &FillOptions::seed(21)).unwrap();
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::cluster(a_nodes[0].clone()),
        Deployment::cluster(b_nodes[0].clone()),
    ))
    .unwrap();
    let rt = runtime();
    let _guard = rt.enter();
    call(args("init"));
    let run = pair.run().unwrap();
    wait_job(&run, Direction::AToB, 1);
    let (aa, ab) = (
        Addr::Cluster(a_nodes.clone()),
        Addr::Cluster(b_nodes.clone()),
    );
    let app = App::start(&aa, &ab, name);
    app.wait_writes(Side::A, 200);

    // failover, killed after A -> B is fenced on B's masters and before any record moved.
    app.a_down.store(true, Ordering::SeqCst);
    kill_at_step(args("failover"), "failover_fenced_cluster_b");
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::Normal, Some(1), Some(1)));
    let out = call([args("failover"), vec!["--json".into()]].concat());
    let f: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(f["changed"], true, "{out}");
    assert_eq!(f["lag_bytes"], 0, "the fences kept what B had: {out}");
    assert!(
        f["rpo"]["offset"].as_u64() > Some(0),
        "the RPO survived: {out}"
    );
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::FailedOver, Some(2), Some(2)));
    app.wait_writes(Side::B, 200);

    // recover, killed after A's masters were seeded and before A's record moved.
    app.a_down.store(false, Ordering::SeqCst);
    kill_at_step(args("recover"), "recover_prepared_cluster_a");
    let (phase, ea, eb, _) = epochs(&rt, &pair);
    assert_eq!((phase, ea, eb), (DrPhase::FailedOver, Some(2), Some(2)));
    app.wait_writes(Side::B, 200);
    let out = call(args("recover"));
    assert!(
        out.contains("Incremental"),
        "the seeds are not A's writes: {out}"
    );
    wait_job(&run, Direction::BToA, 3);
    assert_eq!(
        job_full_syncs(&run),
        Some(0),
        "B -> A continued B's streams"
    );
    app.wait_writes(Side::B, 200);

    // switchback, killed after A's record moved and before the B -> A fences on A's masters (B paused).
    switchback_killed_then_finished(
        &rt,
        &pair,
        run,
        app,
        (&aa, &ab),
        "switchback_record_on_cluster_a",
        || args("switchback"),
        || common::wait_equal(&ta, &tb),
    );
}

/// Keys in database 1 of `s` (only the filled data lives there).
fn keys_in_db1(s: &Server) -> u64 {
    let mut c = s.client();
    redis::cmd("SELECT").arg(1).exec(&mut c).unwrap();
    redis::cmd("DBSIZE").query(&mut c).unwrap()
}

#[test]
fn dr_run_sigkilled_while_switching_and_in_the_b_to_a_full_copy_redoes_the_copy_when_restarted() {
    let a = server();
    let b = server();
    let name = "crash-copy";
    let report = fill(
        &TkTarget::from(&a),
        &FillOptions::seed(34).dbs([1]).scale(40),
    )
    .unwrap();
    let total = report.keys_in(1);
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    let rt = runtime();
    call(pair_args("init", name, &a, &b));
    // The first run dies while it switches direction (the A -> B job stopped for the failover's epoch).
    let mut run = Ferry::spawn_env(
        pair_args("run", name, &a, &b),
        &[("FERRY_TEST_STOP_AT", "run_old_job_stopped")],
    );
    run.wait_stderr("DR job started");
    wait_equal(&a, &b);
    let (aa, ab) = (Addr::One(a.url()), Addr::One(b.url()));
    let app = App::start(&aa, &ab, name);
    app.wait_writes(Side::A, 200);
    app.a_down.store(true, Ordering::SeqCst);
    rt.block_on(pair.failover()).unwrap();
    run.wait_stderr("test hook: stopped at step run_old_job_stopped");
    sigkill(&mut run);
    app.wait_writes(Side::B, 200);
    let mut run = Ferry::spawn(pair_args("run", name, &a, &b));
    // A took a write B never got: only `b_wins` recovers, with a full copy B -> A.
    let mut ca = a.client();
    redis::cmd("SET")
        .arg("only-on-a")
        .arg(1)
        .exec(&mut ca)
        .unwrap();
    app.a_down.store(false, Ordering::SeqCst);
    let mut args = pair_args("recover", name, &a, &b);
    args.extend(["--choice".into(), "b_wins".into()]);
    let out = call(args);
    assert!(out.contains("FullCopy"), "{out}");
    let fence: String = redis::cmd("GET")
        .arg(format!("ferry:checkpoint:{{dr-{name}-ab}}"))
        .query(&mut b.client())
        .unwrap();
    assert!(
        fence.starts_with("fenced"),
        "the old direction is fenced: {fence}"
    );
    // The run copies B to A; frozen (SIGSTOP) once A holds part of the data, then SIGKILLed there.
    wait_until(
        common::DEADLINE,
        "the B -> A full copy to write to A",
        || keys_in_db1(&a) > 0,
    )
    .unwrap();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &run.pid().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let copied = keys_in_db1(&a);
    assert!(
        copied > 0 && copied < total,
        "frozen in the middle of the copy: {copied} of {total} keys"
    );
    println!("run frozen and killed with {copied} of {total} keys copied to A");
    sigkill(&mut run);
    app.wait_writes(Side::B, 200);
    // Restarted: the copy is redone from an emptied A (never applied twice), then B's stream continues.
    let mut run = Ferry::spawn(pair_args("run", name, &a, &b));
    run.wait_stderr("DR job started");
    let _guard = rt.enter();
    let sb = rt.block_on(pair.switchback()).unwrap();
    assert!(sb.changed, "{sb:?}");
    app.wait_writes(Side::A, 200);
    let acked = app.finish();
    wait_equal(&a, &b);
    assert_eq!(keys_in_db1(&a), total);
    let gone: Option<String> = redis::cmd("GET").arg("only-on-a").query(&mut ca).unwrap();
    assert_eq!(gone, None, "B won");
    assert_counters(&aa, &acked);
    assert_counters(&ab, &acked);
    assert!(
        run.stderr().contains("full resync"),
        "the restarted run copied again: {}",
        run.stderr()
    );
    run.terminate();
    assert_eq!(run.wait(), 0, "{}", run.stderr());
}

#[test]
fn switchback_killed_after_the_switch_leaves_b_refusing_writes_until_it_is_finished() {
    let a = server();
    let b = server();
    let name = "late-finish";
    let rt = runtime();
    let (pair, run) = rt.block_on(recovering_pair(name, &a, &b));
    // The B -> A job runs in a process this test can freeze.
    rt.block_on(run.stop()).unwrap();
    let mut dr_run = Ferry::spawn(pair_args("run", name, &a, &b));
    dr_run.wait_stderr("DR job started");
    // A client of B that connected while B was the primary.
    let mut stale = b.client();
    redis::cmd("INCR").arg("stale").exec(&mut stale).unwrap();
    let mut first = Ferry::spawn_env(
        pair_args("switchback", name, &a, &b),
        &[("FERRY_TEST_STOP_AT", "switchback_switched_on_a")],
    );
    first.wait_stderr("test hook: stopped at step switchback_switched_on_a");
    // Nothing finishes the switch in time: the run is frozen, the call killed after A took over.
    let frozen = std::process::Command::new("kill")
        .args(["-STOP", &dr_run.pid().to_string()])
        .status()
        .unwrap();
    assert!(frozen.success());
    sigkill(&mut first);
    // B's pause runs out, and B still refuses the client's writes (the first one waited for the end of the
    // pause): none is acknowledged, none is lost.
    for _ in 0..7 {
        let refused = redis::cmd("INCR").arg("stale").exec(&mut stale);
        let e = refused.expect_err("B refuses writes after the switch");
        assert!(e.to_string().contains("NOREPLICAS"), "{e}");
    }
    let mut second =
        Ferry::spawn([pair_args("switchback", name, &a, &b), vec!["--json".into()]].concat());
    assert_eq!(second.wait(), 0, "{}", second.stderr());
    let r: serde_json::Value = serde_json::from_str(second.stdout().trim()).unwrap();
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(r["writes_on_b_after_switch"], 0, "{r}");
    assert!(
        redis::cmd("INCR").arg("stale").exec(&mut stale).is_err(),
        "the connection taken before the switch was cut"
    );
    let s = rt.block_on(pair.status()).unwrap();
    assert_eq!(
        (s.phase, s.a_epoch, s.b_epoch),
        (DrPhase::Normal, Some(4), Some(4))
    );
    // The fence is lifted: B takes writes again, with its setting as it was.
    let setting: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-to-write")
        .query(&mut b.client())
        .unwrap();
    assert_eq!(setting[1], "0");
    for side in [&a, &b] {
        let n: i64 = redis::cmd("GET")
            .arg("stale")
            .query(&mut side.client())
            .unwrap();
        assert_eq!(n, 1, "only the write made before the switch");
    }
    sigkill(&mut dr_run);
}

#[test]
fn two_switchbacks_at_once_make_one_switch() {
    let a = server();
    let b = server();
    let rt = runtime();
    let (pair, run) = rt.block_on(recovering_pair("twice", &a, &b));
    let mut one = Ferry::spawn(pair_args("switchback", "twice", &a, &b));
    let mut two = Ferry::spawn(pair_args("switchback", "twice", &a, &b));
    assert_eq!(one.wait(), 0, "{}", one.stderr());
    assert_eq!(two.wait(), 0, "{}", two.stderr());
    let outs = [one.stdout(), two.stdout()];
    let switched = outs
        .iter()
        .filter(|o| o.contains("writes on B were paused"))
        .count();
    let already = outs
        .iter()
        .filter(|o| o.contains("switched back already"))
        .count();
    assert_eq!((switched, already), (1, 1), "{outs:?}");
    let status = rt.block_on(pair.status()).unwrap();
    assert_eq!(
        (status.phase, status.a_epoch, status.b_epoch),
        (DrPhase::Normal, Some(4), Some(4)),
        "one switch, one epoch: {status:?}"
    );
    wait_until(common::DEADLINE, "A -> B runs", || {
        let s = run.status();
        s.direction == Some(Direction::AToB)
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    })
    .unwrap();
    let mut ca = a.client();
    redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
    wait_equal(&a, &b);
    assert_eq!(run.status().job.unwrap().full_syncs, 0);
    rt.block_on(run.stop()).unwrap();
}

#[test]
fn cli_walks_the_pair_through_status_failover_recover_with_a_refusal() {
    let a = server();
    let b = server();
    let mut ca = a.client();
    redis::cmd("SET").arg("x").arg("1").exec(&mut ca).unwrap();
    let mut init = Ferry::spawn(pair_args("init", "cli", &a, &b));
    assert_eq!(init.wait(), 0, "{}", init.stderr());
    let mut run = Ferry::spawn(pair_args("run", "cli", &a, &b));
    run.wait_stderr("DR job started");
    wait_equal(&a, &b);
    let mut failover = Ferry::spawn(pair_args("failover", "cli", &a, &b));
    assert_eq!(failover.wait(), 0, "{}", failover.stderr());
    assert!(
        failover.stdout().contains("B serves"),
        "{}",
        failover.stdout()
    );
    // A takes a write B never gets: recover refuses and says how many.
    redis::cmd("SET")
        .arg("lost")
        .arg("1")
        .exec(&mut ca)
        .unwrap();
    let mut recover = Ferry::spawn(pair_args("recover", "cli", &a, &b));
    assert_eq!(recover.wait(), 1, "{}", recover.stderr());
    assert!(
        recover.stdout().contains("extra writes on A: 1"),
        "{}",
        recover.stdout()
    );
    let mut status =
        Ferry::spawn([pair_args("status", "cli", &a, &b), vec!["--json".into()]].concat());
    assert_eq!(status.wait(), 0);
    let v: serde_json::Value = serde_json::from_str(status.stdout().trim()).unwrap();
    assert_eq!(v["phase"], "failed_over");
    assert_eq!(v["primary"], "b");
    let mut args = pair_args("recover", "cli", &a, &b);
    args.extend(["--choice".into(), "b_wins".into()]);
    let mut recover = Ferry::spawn(args);
    assert_eq!(recover.wait(), 0, "{}", recover.stderr());
    run.wait_stderr("\"direction\":\"b_to_a\"");
    wait_equal(&b, &a);
    let lost: Option<String> = redis::cmd("GET").arg("lost").query(&mut ca).unwrap();
    assert_eq!(lost, None, "B won");
    run.terminate();
    assert_eq!(run.wait(), 0, "{}", run.stderr());
}

#[test]
fn demote_of_a_full_node_under_an_empty_peer_is_refused_and_proceeds_with_force() {
    let full = server();
    let empty = server();
    let mut c = full.client();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut c)
            .unwrap();
    }
    let mut refused = Ferry::spawn(["dr", "demote", &full.url(), "--to", &empty.url()]);
    assert_ne!(refused.wait(), 0);
    assert!(
        refused.stderr().contains("demote refused"),
        "{}",
        refused.stderr()
    );
    assert!(
        refused.stderr().contains("is empty"),
        "{}",
        refused.stderr()
    );
    let role: String = full.info_field("replication", "role").unwrap().unwrap();
    assert_eq!(role, "master", "nothing changed");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 50);

    let mut forced = Ferry::spawn(["dr", "demote", &full.url(), "--to", &empty.url(), "--force"]);
    assert_eq!(forced.wait(), 0, "{}", forced.stderr());
    wait_until(
        common::DEADLINE,
        "the node to replicate the empty peer",
        || {
            full.info_field("replication", "master_link_status")
                .ok()
                .flatten()
                .as_deref()
                == Some("up")
        },
    )
    .unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0, "forced: the peer's (empty) data replaced the node's");

    let mut promote = Ferry::spawn(["dr", "promote", &full.url()]);
    assert_eq!(promote.wait(), 0, "{}", promote.stderr());
    assert_eq!(
        full.info_field("replication", "role").unwrap().unwrap(),
        "master"
    );
}

#[test]
fn watch_promotes_the_replica_after_failed_health_checks_of_the_master() {
    let mut set = ferry_testkit::ReplicaSet::start(Version::V7_0, 1).unwrap();
    set.wait_linked(common::DEADLINE).unwrap();
    let mut c = set.master.client();
    redis::cmd("SET").arg("k").arg("v").exec(&mut c).unwrap();
    set.wait_synced(common::DEADLINE).unwrap();
    let replica = set.replicas[0].url();
    let mut watch = Ferry::spawn([
        "dr",
        "watch",
        "--master",
        &set.master.url(),
        "--replica",
        &replica,
        "--interval-ms",
        "100",
        "--fall",
        "3",
    ]);
    // Healthy checks for a while: nothing happens.
    redis::cmd("SET").arg("k2").arg("v").exec(&mut c).unwrap();
    set.wait_synced(common::DEADLINE).unwrap();
    assert_eq!(
        set.replicas[0]
            .info_field("replication", "role")
            .unwrap()
            .unwrap(),
        "slave"
    );
    set.master.kill();
    assert_eq!(watch.wait(), 0, "{}", watch.stderr());
    assert!(
        watch.stdout().contains("promoted after 3 failed checks"),
        "{}",
        watch.stdout()
    );
    assert!(
        watch.stderr().contains("health check failed"),
        "{}",
        watch.stderr()
    );
    assert_eq!(
        set.replicas[0]
            .info_field("replication", "role")
            .unwrap()
            .unwrap(),
        "master"
    );
    let mut r = set.replicas[0].client();
    let v: String = redis::cmd("GET").arg("k2").query(&mut r).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn promote_of_a_replica_whose_link_was_down_too_long_is_refused_and_proceeds_with_force() {
    let mut set = ferry_testkit::ReplicaSet::start(Version::V7_0, 1).unwrap();
    set.wait_linked(common::DEADLINE).unwrap();
    set.master.kill();
    let replica = &set.replicas[0];
    wait_until(
        common::DEADLINE,
        "the replica's link to be down for over 1 s",
        || {
            replica
                .info_field("replication", "master_link_down_since_seconds")
                .ok()
                .flatten()
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|s| s > 1)
        },
    )
    .unwrap();
    let url = replica.url();
    let mut refused = Ferry::spawn(["dr", "promote", &url, "--max-link-down-secs", "1"]);
    assert_ne!(refused.wait(), 0);
    assert!(
        refused.stderr().contains("promote refused"),
        "{}",
        refused.stderr()
    );
    assert!(
        refused.stderr().contains("was down for"),
        "{}",
        refused.stderr()
    );
    assert_eq!(
        replica.info_field("replication", "role").unwrap().unwrap(),
        "slave"
    );
    let mut forced = Ferry::spawn([
        "dr",
        "promote",
        &url,
        "--max-link-down-secs",
        "1",
        "--force",
    ]);
    assert_eq!(forced.wait(), 0, "{}", forced.stderr());
    assert!(forced.stderr().contains("warning"), "{}", forced.stderr());
    assert_eq!(
        replica.info_field("replication", "role").unwrap().unwrap(),
        "master"
    );
}
