//! A cluster target whose topology changes under live writes: slots migrated (`CLUSTER SETSLOT` / `MIGRATE`), a
//! `CLUSTER FAILOVER`, a master SIGKILLed and replaced by its replica. The job follows without a restart by
//! hand; the datasets end equal and the INCR counters exact. Also: `PUBLISH` reaches the cluster once.

mod common;

use common::{config, expire_short_keys, workload_in_background, Job, DEADLINE};
use ferry_replicator::checkpoint;
use ferry_testkit::{
    compare, fill, key_slot, wait_until, Cluster, CompareOptions, FillOptions, Server,
    ServerOptions, Target, Version,
};

/// A source whose backlog outlasts a target failover on a loaded machine (the default 1 MB may not, and the
/// job would then fall back to a full sync).
fn source() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "256mb")).unwrap()
}

fn cluster_counter(cluster: &Cluster, tag: &str) -> u64 {
    let mut c = cluster.cluster_client().unwrap();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("ferry:counter:{tag}"))
        .query(&mut c)
        .unwrap();
    v.unwrap_or(0)
}

fn start_job(source: &Server, cluster: &Cluster) -> Job {
    // RUST_LOG=ferry_replicator=debug shows what the job does around a topology change.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let entry = cluster.masters()[0];
    let mut cfg = config(source, entry);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    // The workload also writes in database 1, which a cluster does not have.
    cfg.filter.block_dbs = vec![1];
    cfg.reconnect_backoff = std::time::Duration::from_millis(100);
    Job::start_with(cfg)
}

fn assert_equal(source: &Server, cluster: &Cluster) {
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(source), &cluster.target(), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
}

fn node_id(server: &Server) -> String {
    let mut c = server.client();
    redis::cmd("CLUSTER").arg("MYID").query(&mut c).unwrap()
}

/// Moves `slot` to `to` the way `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE` of its keys
/// in batches, then `SETSLOT NODE` on both ends and every other master.
fn migrate_slot(cluster: &Cluster, slot: u16, to: &Server) {
    let from = cluster.node_for_slot(slot).unwrap();
    if from.port() == to.port() {
        return;
    }
    let (from_id, to_id) = (node_id(from), node_id(to));
    let setslot = |server: &Server, args: &[&str]| {
        let mut c = server.client();
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(args)
            .exec(&mut c)
            .unwrap();
    };
    setslot(to, &["IMPORTING", &from_id]);
    setslot(from, &["MIGRATING", &to_id]);
    let mut f = from.client();
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(50)
            .query(&mut f)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        redis::cmd("MIGRATE")
            .arg(to.host())
            .arg(to.port())
            .arg("")
            .arg(0)
            .arg(10_000)
            .arg("KEYS")
            .arg(keys)
            .exec(&mut f)
            .unwrap();
    }
    setslot(to, &["NODE", &to_id]);
    setslot(from, &["NODE", &to_id]);
    for master in cluster.masters() {
        if master.port() != from.port() && master.port() != to.port() {
            setslot(master, &["NODE", &to_id]);
        }
    }
}

fn writes_applied(job: &Job, cluster: &Cluster, tag: &str, n: u64) {
    wait_until(DEADLINE, "some live writes applied", || {
        cluster_counter(cluster, tag) > n
    })
    .unwrap_or_else(|e| panic!("{e}; status: {}", job.status.snapshot()));
}

fn cluster_state_ok(server: &Server) -> bool {
    let Ok(mut c) = server.try_client() else {
        return false;
    };
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut c)
        .is_ok_and(|i| i.contains("cluster_state:ok"))
}

#[test]
fn cluster_target_resharded_under_live_writes_ends_equal_with_exact_counters() {
    let source = source();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(41).dbs(vec![0])).unwrap();
    let job = start_job(&source, &cluster);
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "reshard");
    writes_applied(&job, &cluster, "reshard", 100);
    let masters: Vec<&Server> = cluster.masters();
    // The slots of keys the workload writes all the time, and of a checkpoint key, move to another master.
    let mut slots: Vec<u16> = [
        "ferry:counter:reshard",
        "ferry:log:reshard",
        "ferry:txn:reshard:a",
    ]
    .iter()
    .map(|k| key_slot(k.as_bytes()))
    .collect();
    let mut t = masters[1].client();
    let checkpoint_keys: Vec<String> = redis::cmd("KEYS")
        .arg("ferry:checkpoint:*")
        .query(&mut t)
        .unwrap();
    slots.extend(checkpoint_keys.iter().map(|k| key_slot(k.as_bytes())));
    for slot in slots {
        let owner = cluster.node_for_slot(slot).unwrap().port();
        let to = masters.iter().find(|m| m.port() != owner).unwrap();
        migrate_slot(&cluster, slot, to);
        // The job follows the move before the next one (the writes may be over by now).
        job.wait_caught_up(&source);
    }
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "reshard");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 1,
        "followed the resharding with PSYNC: {status}"
    );
    assert_equal(&source, &cluster);
    assert_eq!(cluster_counter(&cluster, "reshard"), rounds);
}

#[test]
fn cluster_failover_on_the_target_is_followed_with_exact_counters() {
    let source = source();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(42).dbs(vec![0])).unwrap();
    let job = start_job(&source, &cluster);
    let mut events = job.status.subscribe();
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "failover");
    writes_applied(&job, &cluster, "failover", 100);
    // The replica of the master that owns the counter takes over.
    let old = cluster.node_for_key(b"ferry:counter:failover").unwrap();
    let old_id = node_id(old);
    let replica = cluster
        .replicas()
        .into_iter()
        .find(|r| {
            let mut c = r.client();
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
            nodes
                .lines()
                .any(|l| l.contains("myself") && l.contains(&old_id))
        })
        .expect("a replica of the counter's master");
    let mut r = replica.client();
    redis::cmd("CLUSTER").arg("FAILOVER").exec(&mut r).unwrap();
    wait_until(DEADLINE, "the replica to become master", || {
        replica.info("replication").unwrap().contains("role:master")
    })
    .unwrap();
    writes_applied(
        &job,
        &cluster,
        "failover",
        cluster_counter(&cluster, "failover") + 50,
    );
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "failover");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 1,
        "followed the failover with PSYNC: {status}"
    );
    assert_equal(&source, &cluster);
    assert_eq!(cluster_counter(&cluster, "failover"), rounds);
    // The session after the failover announced the masters it writes to: the promoted replica, not the old one.
    let changes: Vec<Vec<String>> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e.kind {
            ferry_replicator::JobEventKind::TargetTopologyChanged { masters } => Some(masters),
            _ => None,
        })
        .collect();
    let last = changes.last().expect("a target topology change announced");
    assert!(last.contains(&replica.addr()), "{changes:?}");
    assert!(!last.contains(&old.addr()), "{changes:?}");
}

#[test]
fn target_master_sigkilled_and_replaced_is_followed_with_exact_counters() {
    let source = source();
    let mut cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(43).dbs(vec![0])).unwrap();
    let job = start_job(&source, &cluster);
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "sigkill");
    writes_applied(&job, &cluster, "sigkill", 100);
    // Not the master the job was given as its entry point.
    let entry = cluster.masters()[0].port();
    let victim = cluster
        .node_for_key(b"ferry:counter:sigkill")
        .unwrap()
        .port();
    let victim = if victim == entry {
        cluster.masters()[1].port()
    } else {
        victim
    };
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.port() == victim)
        .unwrap();
    cluster.nodes[index].kill();
    wait_until(DEADLINE, "a replica to take over", || {
        let survivors: Vec<&Server> = cluster
            .nodes
            .iter()
            .filter(|n| n.port() != victim)
            .collect();
        survivors.iter().all(|n| cluster_state_ok(n))
            && survivors
                .iter()
                .filter(|n| {
                    n.info("replication")
                        .is_ok_and(|i| i.contains("role:master"))
                })
                .count()
                == 3
    })
    .unwrap();
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "sigkill");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(status.reconnects >= 1, "{status}");
    assert_eq!(
        status.full_syncs, 1,
        "followed the failover with PSYNC: {status}"
    );
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let live: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.port() != victim)
        .map(Server::url)
        .collect();
    let report = compare(&Target::from(&source), &Target::Cluster(live), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    // The counter as its master (among the survivors) answers; the others redirect.
    let counter = cluster
        .nodes
        .iter()
        .filter(|n| n.port() != victim)
        .find_map(|n| {
            let mut c = n.client();
            redis::cmd("GET")
                .arg("ferry:counter:sigkill")
                .query::<u64>(&mut c)
                .ok()
        })
        .expect("the counter's master answers");
    assert_eq!(counter, rounds);
}

#[test]
fn the_configured_target_node_sigkilled_is_followed_through_the_nodes_the_job_learned() {
    let source = source();
    let mut cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(44).dbs(vec![0])).unwrap();
    let job = start_job(&source, &cluster);
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "entry");
    writes_applied(&job, &cluster, "entry", 100);
    // The only node the job was given.
    let victim = cluster.masters()[0].port();
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.port() == victim)
        .unwrap();
    cluster.nodes[index].kill();
    let survivors = || cluster.nodes.iter().filter(|n| n.port() != victim);
    wait_until(DEADLINE, "a replica to take over", || {
        survivors().all(cluster_state_ok)
            && survivors()
                .filter(|n| {
                    n.info("replication")
                        .is_ok_and(|i| i.contains("role:master"))
                })
                .count()
                == 3
    })
    .unwrap();
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "entry");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(status.reconnects >= 1, "{status}");
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let live: Vec<String> = survivors().map(Server::url).collect();
    let report = compare(&Target::from(&source), &Target::Cluster(live), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    let counter = survivors()
        .find_map(|n| {
            let mut c = n.client();
            redis::cmd("GET")
                .arg("ferry:counter:entry")
                .query::<u64>(&mut c)
                .ok()
        })
        .expect("the counter's master answers");
    assert_eq!(counter, rounds);
}

#[test]
fn publish_reaches_a_cluster_target_once() {
    let source = source();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let job = start_job(&source, &cluster);
    job.wait_caught_up(&source);
    let mut subscriber = cluster.masters()[2].client();
    subscriber.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("news").unwrap();
    let mut s = source.client();
    for i in 0..20 {
        redis::cmd("PUBLISH")
            .arg("news")
            .arg(i)
            .exec(&mut s)
            .unwrap();
    }
    redis::cmd("PUBLISH")
        .arg("news")
        .arg("end")
        .exec(&mut s)
        .unwrap();
    let mut received = Vec::new();
    loop {
        let msg = pubsub.get_message().unwrap();
        let payload: String = msg.get_payload().unwrap();
        if payload == "end" {
            break;
        }
        received.push(payload);
    }
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(received, expected, "each message once, in order");
}
