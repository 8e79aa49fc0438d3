//! `ferry dr` run as a process, as an operator runs it: a switchback SIGKILLed while B is paused and called
//! again, two switchbacks at once, and the guarded demote/promote of a master/replica pair.

mod common;

use common::Ferry;
use ferry::{Deployment, Direction, DrConfig, DrPair, DrPhase, RecoverChoice};
use ferry_testkit::{
    compare, wait_until, CompareOptions, Server, ServerOptions, Target as TkTarget, Version,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn server() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb")).unwrap()
}

fn pair_args(cmd: &str, name: &str, a: &Server, b: &Server) -> Vec<String> {
    ["dr", cmd, "--name", name, "--a", &a.url(), "--b", &b.url()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn wait_equal(a: &Server, b: &Server) {
    let opts = CompareOptions::default()
        .ignore_prefix("ferry:checkpoint:")
        .ignore_prefix("ferry:state:")
        .ignore_prefix("ferry:lease:");
    let mut last = String::new();
    let r = wait_until(common::DEADLINE, "A and B equal", || {
        match compare(&TkTarget::from(a), &TkTarget::from(b), &opts) {
            Ok(r) if r.is_equal() => true,
            Ok(r) => {
                last = r.to_string();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    if let Err(e) = r {
        panic!("{e}: {last}");
    }
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
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(first.wait(), -1, "killed by a signal");
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
