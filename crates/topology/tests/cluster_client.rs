//! The cluster client against real 3+3 testkit clusters: a writer running through a slot migration,
//! a manual failover and a master killed with SIGKILL loses no acknowledged write; multi-key helpers
//! split by slot; errors name the command, slot and node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_resp::{ConnectOptions, Frame, Password};
use ferry_testkit::{wait_until, Cluster, ClusterOptions as TestClusterOptions, Server, Version};
use ferry_topology::{key_slot, ClusterClient, ClusterOptions, Error};

mod nodes;
use nodes::{node_id, replica_of, role};

const DEADLINE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn start_cluster(version: Version, password: Option<&str>) -> Cluster {
    let mut opts = TestClusterOptions::new(version);
    opts.node_timeout = Duration::from_millis(1000);
    opts.password = password.map(str::to_owned);
    Cluster::start_with(opts).expect("start cluster")
}

fn client_options(cluster: &Cluster, password: Option<&str>) -> ClusterOptions {
    let seed = &cluster.nodes[0];
    let mut connect = ConnectOptions::new(seed.host(), seed.port());
    connect.password = password.map(Password::new);
    let mut opts = ClusterOptions::new(connect);
    opts.max_retries = 40;
    opts.max_retry_delay = Duration::from_millis(500);
    opts
}

struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<(Vec<u64>, Vec<String>)>,
}

fn key_for(i: u64) -> String {
    // Every other key lands in the slot that is migrated; the rest spread over all slots.
    if i.is_multiple_of(2) {
        format!("{{mig}}:{i}")
    } else {
        format!("w:{i}")
    }
}

/// Writes `SET key_for(i) i` for i = 0, 1, 2... until stopped, each followed by WAIT for one replica,
/// and returns the acknowledged indexes and the failures.
fn start_writer(rt: &tokio::runtime::Runtime, client: ClusterClient) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let (stop2, acked2) = (stop.clone(), acked.clone());
    let handle = rt.spawn(async move {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut i = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            let key = key_for(i);
            let value = i.to_string();
            match client
                .call_and_wait(
                    &["SET", key.as_str(), value.as_str()],
                    1,
                    Duration::from_millis(500),
                )
                .await
            {
                Ok((Frame::Simple(s), _)) if &s[..] == b"OK" => {
                    ok.push(i);
                    acked2.fetch_add(1, Ordering::SeqCst);
                }
                Ok((other, _)) => failed.push(format!("{key}: unexpected reply {other:?}")),
                Err(e) => failed.push(format!("{key}: {e}")),
            }
            i += 1;
        }
        (ok, failed)
    });
    Writer {
        stop,
        acked,
        handle,
    }
}

impl Writer {
    fn wait_progress(&self, more: u64, what: &str) {
        let target = self.acked.load(Ordering::SeqCst) + more;
        wait_until(DEADLINE, what, || {
            self.acked.load(Ordering::SeqCst) >= target
        })
        .unwrap();
    }
}

/// Moves `slot` from `source` to `target` as redis-cli --cluster reshard does, waiting for the client
/// to be sent ASK while the slot is half-way.
fn migrate_slot(
    cluster: &Cluster,
    slot: u16,
    source: &Server,
    target: &Server,
    client: &ClusterClient,
) {
    let (source_id, target_id) = (node_id(source), node_id(target));
    let mut src = source.client();
    let mut dst = target.client();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&source_id)
        .exec(&mut dst)
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&target_id)
        .exec(&mut src)
        .unwrap();
    // New keys of the slot are now answered with ASK by the source.
    wait_until(DEADLINE, "the client to follow an ASK redirect", || {
        client.stats().ask >= 1
    })
    .unwrap();
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(50)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg(target.host())
            .arg(target.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for k in &keys {
            migrate.arg(k.as_slice());
        }
        migrate.exec(&mut src).unwrap();
    }
    assert_eq!(
        client.stats().moved,
        0,
        "no MOVED while the slot was only migrating"
    );
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("NODE")
        .arg(&target_id)
        .exec(&mut dst)
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("NODE")
        .arg(&target_id)
        .exec(&mut src)
        .unwrap();
    for other in cluster.masters() {
        if other.port() != source.port() && other.port() != target.port() {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&target_id)
                .exec(&mut other.client())
                .unwrap();
        }
    }
}

#[test]
fn writer_loses_no_write_through_migration_manual_failover_and_master_kill() {
    let rt = runtime();
    let mut cluster = start_cluster(Version::V7_0, None);
    let mut opts = client_options(&cluster, None);
    // SET is idempotent: a write whose connection died with its master may be sent again.
    opts.resend_after_connection_loss = true;
    let client = rt.block_on(ClusterClient::connect(opts)).expect("connect");
    let writer = start_writer(&rt, client.clone());
    writer.wait_progress(300, "the writer to get going");

    // 1. Migrate the slot of {mig} to another master: ASK while migrating, then MOVED.
    let slot = key_slot(b"{mig}");
    let source_port = cluster.node_for_slot(slot).unwrap().port();
    {
        let source = cluster
            .nodes
            .iter()
            .find(|n| n.port() == source_port)
            .unwrap();
        let target = cluster
            .masters()
            .into_iter()
            .find(|n| n.port() != source_port)
            .unwrap();
        migrate_slot(&cluster, slot, source, target, &client);
    }
    wait_until(DEADLINE, "the client to follow a MOVED redirect", || {
        client.stats().moved >= 1
    })
    .unwrap();
    writer.wait_progress(300, "the writer to go on after the migration");
    assert_ne!(
        cluster.node_for_slot(slot).unwrap().port(),
        source_port,
        "the slot moved"
    );

    // 2. Manual failover: a replica takes over its master's slots.
    let master_port = cluster.node_for_slot(0).unwrap().port();
    let replica_port = {
        let master = cluster
            .nodes
            .iter()
            .find(|n| n.port() == master_port)
            .unwrap();
        let replica = replica_of(&cluster, master);
        redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .exec(&mut replica.client())
            .unwrap();
        replica.port()
    };
    wait_until(
        DEADLINE,
        "the replica to become master after CLUSTER FAILOVER",
        || {
            cluster
                .node_for_slot(0)
                .is_ok_and(|n| n.port() == replica_port)
        },
    )
    .unwrap();
    writer.wait_progress(300, "the writer to go on after the manual failover");

    // 3. kill -9 of a master: its replica is promoted automatically.
    let victim_port = cluster.node_for_slot(16383).unwrap().port();
    let victim_index = cluster
        .nodes
        .iter()
        .position(|n| n.port() == victim_port)
        .unwrap();
    let heir_port = replica_of(&cluster, &cluster.nodes[victim_index]).port();
    cluster.nodes[victim_index].kill();
    let heir = cluster
        .nodes
        .iter()
        .find(|n| n.port() == heir_port)
        .unwrap();
    wait_until(
        DEADLINE,
        "the replica of the killed master to be promoted",
        || role(heir) == "master",
    )
    .unwrap();
    writer.wait_progress(100, "the writer to go on after the master was killed");
    // The killed node comes back as a replica of the promoted one.
    cluster.nodes[victim_index].restart().unwrap();
    wait_until(
        DEADLINE,
        "the restarted node to rejoin as a replica",
        || role(&cluster.nodes[victim_index]) == "slave",
    )
    .unwrap();
    writer.wait_progress(300, "the writer to go on after the old master rejoined");

    writer.stop.store(true, Ordering::SeqCst);
    let (acked, failed) = rt.block_on(writer.handle).expect("writer task");
    let stats = client.stats();

    // Read every acknowledged key back through an independent client.
    let mut check = cluster.cluster_client().expect("redis-rs cluster client");
    let mut lost = Vec::new();
    for &i in &acked {
        let value: Option<String> = redis::cmd("GET")
            .arg(key_for(i))
            .query(&mut check)
            .expect("GET");
        if value.as_deref() != Some(i.to_string().as_str()) {
            lost.push(format!("{} = {value:?}", key_for(i)));
        }
    }
    eprintln!(
        "writes acknowledged: {}, failed: {}, lost: {}; client stats: {stats:?}",
        acked.len(),
        failed.len(),
        lost.len()
    );
    assert!(failed.is_empty(), "writes that failed: {failed:?}");
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(stats.ask >= 1 && stats.moved >= 1, "{stats:?}");
    assert!(
        stats.connection_errors >= 1,
        "the kill was noticed: {stats:?}"
    );
}

#[test]
fn multi_key_helpers_split_by_slot_and_merge_replies() {
    let rt = runtime();
    let cluster = start_cluster(Version::V7_0, None);
    rt.block_on(async {
        let client = ClusterClient::connect(client_options(&cluster, None))
            .await
            .expect("connect");
        let keys: Vec<String> = (0..40).map(|i| format!("split:{i}")).collect();
        let slots: std::collections::HashSet<u16> =
            keys.iter().map(|k| key_slot(k.as_bytes())).collect();
        assert!(slots.len() > 3, "keys spread over slots");

        // A plain call refuses keys in different slots, naming the command.
        let err = client
            .call(&["MSET", "a", "1", "b", "2"])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CrossSlot { .. }), "{err}");
        assert!(err.to_string().contains("mset"), "{err}");

        let pairs: Vec<(String, String)> =
            keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
        client.mset(&pairs).await.expect("MSET");
        let mut with_missing = keys.clone();
        with_missing.insert(5, "split:missing".into());
        let values = client.mget(&with_missing).await.expect("MGET");
        assert_eq!(values.len(), with_missing.len());
        for (key, value) in with_missing.iter().zip(&values) {
            if key == "split:missing" {
                assert!(value.is_null(), "{value:?}");
            } else {
                assert_eq!(
                    value.as_bytes(),
                    Some(format!("v-{key}").as_bytes()),
                    "{key}"
                );
            }
        }
        assert_eq!(client.exists(&with_missing).await.unwrap(), 40);
        assert_eq!(client.touch(&keys[..10]).await.unwrap(), 10);
        assert_eq!(client.del(&keys[..20]).await.unwrap(), 20);
        assert_eq!(client.unlink(&with_missing).await.unwrap(), 20);
        assert_eq!(client.exists(&keys).await.unwrap(), 0);

        // A pipeline spread over every node keeps the order of its replies.
        let cmds: Vec<Vec<String>> = (0..60)
            .map(|i| vec!["INCRBY".to_string(), format!("pipe:{i}"), i.to_string()])
            .collect();
        let replies = client.pipeline(&cmds).await;
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.expect("INCRBY").as_integer(), Some(i as i64));
        }
    });
}

#[test]
fn final_failure_names_the_command_slot_and_node() {
    let rt = runtime();
    let mut cluster = start_cluster(Version::V7_0, None);
    rt.block_on(async {
        let mut opts = client_options(&cluster, None);
        opts.max_retries = 3;
        opts.retry_delay = Duration::from_millis(5);
        let client = ClusterClient::connect(opts).await.expect("connect");

        // A final error reply (not retryable) names command, slot and node.
        client.call(&["SET", "typed", "x"]).await.unwrap();
        let err = client.call(&["LPUSH", "typed", "y"]).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.server_code(), Some("WRONGTYPE"), "{text}");
        assert!(
            text.contains("LPUSH") && text.contains(&key_slot(b"typed").to_string()),
            "{text}"
        );
        assert!(!err.is_redirect() && !err.is_timeout());

        // The shard of a slot loses master and replica: bounded retries, then an error naming it all.
        let slot = key_slot(b"doomed");
        let master_port = cluster.node_for_slot(slot).unwrap().port();
        let replica_port = replica_of(
            &cluster,
            cluster
                .nodes
                .iter()
                .find(|n| n.port() == master_port)
                .unwrap(),
        )
        .port();
        for node in cluster
            .nodes
            .iter_mut()
            .filter(|n| n.port() == master_port || n.port() == replica_port)
        {
            node.kill();
        }
        let err = client.call(&["SET", "doomed", "1"]).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::RetriesExhausted { .. }), "{text}");
        assert!(
            text.contains("SET")
                && text.contains(&slot.to_string())
                && text.contains(&master_port.to_string()),
            "{text}"
        );
    });
}

#[test]
fn password_and_cluster_slots_fallback_work_on_6_2() {
    let rt = runtime();
    let cluster = start_cluster(Version::V6_2, Some("s3cret"));
    rt.block_on(async {
        // Without the password every node refuses.
        assert!(ClusterClient::connect(client_options(&cluster, None))
            .await
            .is_err());
        let client = ClusterClient::connect(client_options(&cluster, Some("s3cret")))
            .await
            .expect("connect with password");
        assert!(client.slot_map().is_complete());
        assert_eq!(client.slot_map().shards().len(), 3);
        let cmds: Vec<Vec<String>> = (0..300)
            .map(|i| vec!["SET".to_string(), format!("k62:{i}"), i.to_string()])
            .collect();
        for reply in client.pipeline(&cmds).await {
            assert_eq!(reply.expect("SET").as_bytes(), Some(&b"OK"[..]));
        }
        // EVAL's keys come from the 6.2 command table's movable-key rules.
        let got = client
            .call(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "k62:7"])
            .await
            .unwrap();
        assert_eq!(got.as_bytes(), Some(&b"7"[..]));
    });
    let mut check = cluster.cluster_client().expect("redis-rs cluster client");
    for i in 0..300 {
        let v: String = redis::cmd("GET")
            .arg(format!("k62:{i}"))
            .query(&mut check)
            .unwrap();
        assert_eq!(v, i.to_string());
    }
}
