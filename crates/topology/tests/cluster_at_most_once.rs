//! The cluster client's sending rules against real 3+3 clusters: INCRs through connection kills, read
//! timeouts and a manual failover never count more than acknowledged plus unknown outcomes; a BLPOP
//! left outstanding does not hold up other callers on the same node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_resp::{ConnectOptions, ConnectionLike, Frame};
use ferry_testkit::{wait_until, Cluster, ClusterOptions as TestClusterOptions, Version};
use ferry_topology::{key_slot, ClusterClient, ClusterOptions, Error};

mod nodes;
use nodes::{replica_of, role};

const DEADLINE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn start_cluster() -> Cluster {
    let mut opts = TestClusterOptions::new(Version::V7_0);
    opts.node_timeout = Duration::from_millis(2000);
    Cluster::start_with(opts).expect("start cluster")
}

fn client_options(cluster: &Cluster, read_timeout: Duration) -> ClusterOptions {
    let seed = &cluster.nodes[0];
    let mut connect = ConnectOptions::new(seed.host(), seed.port());
    connect.read_timeout = Some(read_timeout);
    let mut opts = ClusterOptions::new(connect);
    opts.max_retries = 60;
    opts.max_retry_delay = Duration::from_millis(200);
    opts
}

#[derive(Default)]
struct Tally {
    acked: HashMap<String, i64>,
    unknown: HashMap<String, i64>,
    /// Errors that say the command did not run.
    not_run: u64,
}

#[test]
fn incr_writer_through_client_kills_read_timeouts_and_manual_failover_counts_at_most_acknowledged_plus_unknown(
) {
    let rt = runtime();
    let cluster = start_cluster();
    let client = rt
        .block_on(ClusterClient::connect(client_options(
            &cluster,
            Duration::from_millis(200),
        )))
        .expect("connect");
    let keys: Vec<String> = (0..12).map(|i| format!("counter:{i}")).collect();
    let masters_of_keys: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.node_for_key(k.as_bytes()).unwrap().port())
        .collect();
    assert_eq!(
        masters_of_keys.len(),
        3,
        "the counters live on every master"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop, acked, tally, keys) = (
                client.clone(),
                stop.clone(),
                acked_total.clone(),
                tally.clone(),
                keys.clone(),
            );
            rt.spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let key = &keys[i % keys.len()];
                    i += 1;
                    match client.call(&["INCR", key.as_str()]).await {
                        Ok(Frame::Integer(_)) => {
                            *tally.lock().unwrap().acked.entry(key.clone()).or_default() += 1;
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(other) => panic!("INCR answered {other:?}"),
                        Err(e) if e.is_unknown_outcome() => {
                            *tally
                                .lock()
                                .unwrap()
                                .unknown
                                .entry(key.clone())
                                .or_default() += 1;
                        }
                        Err(e) => {
                            assert!(
                                matches!(
                                    e,
                                    Error::RetriesExhausted { .. } | Error::SlotNotCovered { .. }
                                ),
                                "{e}"
                            );
                            tally.lock().unwrap().not_run += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let progress = |more: u64, what: &str| {
        let target = acked_total.load(Ordering::SeqCst) + more;
        wait_until(DEADLINE, what, || {
            acked_total.load(Ordering::SeqCst) >= target
        })
        .unwrap();
    };
    progress(500, "INCRs before the faults");

    // 1. The masters close the client's connections, three times.
    for round in 0..3 {
        for master in cluster.masters() {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .query(&mut master.client())
                .expect("CLIENT KILL");
        }
        progress(300, &format!("INCRs after CLIENT KILL round {round}"));
    }

    // 2. Each master stalls for longer than the read timeout (DEBUG SLEEP): requests in flight end
    //    with an unknown outcome, and the stalled master then runs what it had already received.
    for master in cluster.masters() {
        let before = client.stats().unknown_outcomes;
        let mut con = master.client();
        let sleeper = std::thread::spawn(move || {
            let _: redis::Value = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("0.8")
                .query(&mut con)
                .expect("DEBUG SLEEP");
        });
        sleeper.join().unwrap();
        progress(300, "INCRs after a stalled master");
        eprintln!(
            "unknown outcomes after stalling {}: {} -> {}",
            master.addr(),
            before,
            client.stats().unknown_outcomes
        );
    }

    // 3. A manual failover: a replica takes over its master's slots.
    let slot = key_slot(keys[0].as_bytes());
    let master_port = cluster.node_for_slot(slot).unwrap().port();
    let replica = replica_of(
        &cluster,
        cluster
            .nodes
            .iter()
            .find(|n| n.port() == master_port)
            .unwrap(),
    );
    redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .exec(&mut replica.client())
        .expect("CLUSTER FAILOVER");
    wait_until(DEADLINE, "the replica to take over", || {
        role(replica) == "master"
            && cluster
                .node_for_slot(slot)
                .is_ok_and(|n| n.port() == replica.port())
    })
    .unwrap();
    progress(500, "INCRs after the manual failover");

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        rt.block_on(w).expect("writer");
    }
    let stats = client.stats();
    let tally = tally.lock().unwrap();
    let mut check = cluster.cluster_client().expect("redis-rs cluster client");
    let mut unknown_that_ran = 0;
    for key in &keys {
        let value: i64 = redis::cmd("GET")
            .arg(key)
            .query::<Option<i64>>(&mut check)
            .expect("GET")
            .unwrap_or(0);
        let acked = tally.acked.get(key).copied().unwrap_or(0);
        let unknown = tally.unknown.get(key).copied().unwrap_or(0);
        assert!(
            value >= acked,
            "{key}: {value} < {acked} acknowledged INCRs (one was lost)"
        );
        assert!(
            value <= acked + unknown,
            "{key}: {value} > {acked} acknowledged + {unknown} unknown (an INCR ran twice)"
        );
        unknown_that_ran += value - acked;
    }
    let unknown: i64 = tally.unknown.values().sum();
    eprintln!(
        "acknowledged: {}, unknown outcome: {unknown} (of which ran: {unknown_that_ran}), not run: {}; {stats:?}",
        tally.acked.values().sum::<i64>(),
        tally.not_run
    );
    assert!(
        unknown > 0,
        "the faults left some INCRs with an unknown outcome"
    );
    assert_eq!(stats.unknown_outcomes as i64, unknown);
    assert_eq!(stats.resent, 0, "no INCR was sent twice");
}

#[test]
fn blpop_outstanding_does_not_hold_up_32_tasks_on_the_same_node() {
    let rt = runtime();
    let cluster = start_cluster();
    rt.block_on(async {
        let client = ClusterClient::connect(client_options(&cluster, Duration::from_secs(2)))
            .await
            .expect("connect");
        let node = cluster.node_for_key(b"{q}").unwrap();
        let blocked = || -> i64 {
            node.info_field("clients", "blocked_clients")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        assert_eq!(blocked(), 0);

        // BLPOP with no timeout, on the node every task below uses.
        let blpop = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&["BLPOP", "{q}:list", "0"]).await })
        };
        tokio::task::block_in_place(|| {
            wait_until(DEADLINE, "the BLPOP to block on the server", || {
                blocked() == 1
            })
        })
        .unwrap();

        // 32 tasks, each 100 INCRs and a transaction on the same slot, through the same client.
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let n = ConnectionLike::call(&mut client, &["INCR", "{q}:n"]).await?;
                        assert!(n.as_integer().is_some_and(|n| n > 0));
                    }
                    let replies = client
                        .transaction(&[vec!["INCR", "{q}:tx"], vec!["INCR", "{q}:tx"]])
                        .await?;
                    let (a, b) = (replies[0].as_integer(), replies[1].as_integer());
                    assert_eq!(b, a.map(|a| a + 1), "one transaction's INCRs are adjacent");
                    Ok::<(), Error>(())
                })
            })
            .collect();
        // A deadline only against a hang: with the BLPOP on the shared connection none would end.
        for t in tasks {
            tokio::time::timeout(DEADLINE, t)
                .await
                .expect("a task finished while the BLPOP was outstanding")
                .expect("task")
                .expect("commands");
        }
        assert!(!blpop.is_finished(), "the BLPOP is still waiting");
        assert_eq!(tokio::task::block_in_place(blocked), 1);

        // Session commands are refused on the shared path, not sent.
        let err = client.call(&["MULTI"]).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");

        client
            .call(&["RPUSH", "{q}:list", "released"])
            .await
            .expect("RPUSH");
        let popped = tokio::time::timeout(DEADLINE, blpop)
            .await
            .expect("BLPOP returns once the list has an element")
            .expect("task")
            .expect("BLPOP");
        assert_eq!(
            popped,
            Frame::Array(vec![Frame::bulk("{q}:list"), Frame::bulk("released")])
        );
        let n = client.call(&["GET", "{q}:n"]).await.unwrap();
        assert_eq!(n.as_integer(), Some(3200));
        let tx = client.call(&["GET", "{q}:tx"]).await.unwrap();
        assert_eq!(tx.as_integer(), Some(64));
    });
}

#[test]
fn cancelled_blpop_closes_its_dedicated_connection_and_takes_no_element() {
    let rt = runtime();
    let cluster = start_cluster();
    rt.block_on(async {
        let client = ClusterClient::connect(client_options(&cluster, Duration::from_secs(2)))
            .await
            .expect("connect");
        let node = cluster.node_for_key(b"{c}").unwrap();
        let blocked = || -> i64 {
            node.info_field("clients", "blocked_clients")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&["BLPOP", "{c}:list", "0"]).await })
        };
        tokio::task::block_in_place(|| {
            wait_until(DEADLINE, "the BLPOP to block on the server", || {
                blocked() == 1
            })
        })
        .unwrap();
        // The caller gives up: its connection is closed, not kept for the next blocking command.
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        tokio::task::block_in_place(|| {
            wait_until(
                DEADLINE,
                "the cancelled BLPOP's connection to close",
                || blocked() == 0,
            )
        })
        .unwrap();
        client.call(&["RPUSH", "{c}:list", "a"]).await.unwrap();
        let popped = client.call(&["BLPOP", "{c}:list", "0"]).await.unwrap();
        assert_eq!(
            popped,
            Frame::Array(vec![Frame::bulk("{c}:list"), Frame::bulk("a")]),
            "the element went to the live BLPOP"
        );
        // The dedicated connection of a completed BLPOP is reused and in step.
        client.call(&["RPUSH", "{c}:list", "b"]).await.unwrap();
        let popped = client.call(&["BLPOP", "{c}:list", "0"]).await.unwrap();
        assert_eq!(
            popped,
            Frame::Array(vec![Frame::bulk("{c}:list"), Frame::bulk("b")])
        );
    });
}

#[test]
fn dead_shard_is_remembered_so_32_callers_do_not_each_connect_and_nothing_is_reported_as_maybe_run()
{
    let rt = runtime();
    let mut cluster = start_cluster();
    let mut opts = client_options(&cluster, Duration::from_secs(2));
    opts.failed_node_ttl = Duration::from_secs(600);
    opts.max_retries = 3;
    opts.retry_delay = Duration::from_millis(5);
    let client = rt.block_on(ClusterClient::connect(opts)).expect("connect");
    rt.block_on(client.call(&["SET", "{dead}:a", "1"]))
        .expect("the shard serves before the kill");
    let master_port = cluster.node_for_key(b"{dead}").unwrap().port();
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
    let before = client.stats().connection_errors;
    let errors: Vec<Error> = rt.block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .call(&["SET", format!("{{dead}}:{i}").as_str(), "x"])
                        .await
                        .expect_err("the shard is gone")
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    let attempts = client.stats().connection_errors - before;
    eprintln!("connection errors for 32 callers x 4 attempts: {attempts}");
    for e in &errors {
        assert!(matches!(e, Error::RetriesExhausted { .. }), "{e}");
        assert!(
            !e.is_unknown_outcome(),
            "never sent, so known not to have run: {e}"
        );
    }
    assert!(
        attempts <= 4,
        "a node that refused a connection is not dialled again by every caller: {attempts}"
    );
}
