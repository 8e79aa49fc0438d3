//! CLUSTER NODES / SLOTS / SHARDS parsing, on output captured from real testkit clusters (7.0 and 6.2)
//! and on malformed input.

mod common;

use std::time::Duration;

use ferry_resp::Frame;
use ferry_testkit::{wait_until, Cluster, ClusterOptions, Server, Version};
use ferry_topology::{parse_cluster_nodes, Health, NodeAddr, Role, SlotMap, SLOT_COUNT};

fn nodes_text(server: &Server) -> Vec<u8> {
    match common::query(&mut server.client(), &[b"CLUSTER", b"NODES"]) {
        Frame::Bulk(b) => b.to_vec(),
        other => panic!("CLUSTER NODES gave {other:?}"),
    }
}

fn resp3_client(server: &Server) -> redis::Connection {
    let url = format!("redis://{}/?protocol=resp3", server.addr());
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("RESP3 connection")
}

/// Every slot has the same master (address and id) in `a` and `b`, and each shard the same replicas.
fn assert_same_routing(a: &SlotMap, b: &SlotMap, what: &str) {
    for slot in 0..SLOT_COUNT {
        let (ma, mb) = (
            a.master_for_slot(slot).expect("slot covered"),
            b.master_for_slot(slot).expect("slot covered"),
        );
        assert_eq!(
            (&ma.addr, &ma.id),
            (&mb.addr, &mb.id),
            "{what}: slot {slot}"
        );
        let replicas = |m: &SlotMap| {
            let mut r: Vec<(NodeAddr, Option<String>)> = m
                .shard_for_slot(slot)
                .unwrap()
                .replicas
                .iter()
                .map(|n| (n.addr.clone(), n.id.clone()))
                .collect();
            r.sort();
            r
        };
        assert_eq!(replicas(a), replicas(b), "{what}: replicas of slot {slot}");
    }
}

/// The map agrees with the cluster itself: 3 shards of one master and one replica, and the master of
/// each slot is the node testkit finds for it.
fn assert_matches_cluster(map: &SlotMap, cluster: &Cluster) {
    assert!(
        map.is_complete(),
        "uncovered slots: {}",
        map.uncovered_slots()
    );
    assert_eq!(map.shards().len(), 3);
    for shard in map.shards() {
        assert_eq!(shard.master.role, Role::Master);
        assert_eq!(shard.replicas.len(), 1, "{shard:?}");
        assert_eq!(shard.replicas[0].role, Role::Replica);
        assert_eq!(shard.master.id.as_ref().map(String::len), Some(40));
    }
    for slot in [0, 5460, 5461, 10922, 10923, 16383] {
        let expected = cluster.node_for_slot(slot).expect("testkit owner");
        assert_eq!(
            map.master_for_slot(slot).unwrap().addr,
            NodeAddr::new("127.0.0.1", expected.port()),
            "slot {slot}"
        );
    }
}

/// CLUSTER SLOTS leaves out replicas whose replication offset is still 0 (nothing replicated yet), and
/// CLUSTER SHARDS calls them `loading`: write to every shard, then wait until `node` lists them all.
fn wait_for_replicas_listed(cluster: &Cluster, node: &Server) {
    let mut con = cluster.cluster_client().expect("redis-rs cluster client");
    for i in 0..30 {
        redis::cmd("SET")
            .arg(format!("warm-up-{i}"))
            .arg(i)
            .exec(&mut con)
            .expect("SET");
    }
    wait_until(
        Duration::from_secs(30),
        "CLUSTER SLOTS to list every replica",
        || {
            let slots = common::query(&mut node.client(), &[b"CLUSTER", b"SLOTS"]);
            SlotMap::from_cluster_slots(&slots)
                .is_ok_and(|m| m.shards().iter().all(|s| s.replicas.len() == 1))
        },
    )
    .unwrap();
}

fn small_timeout_cluster(version: Version) -> Cluster {
    let mut opts = ClusterOptions::new(version);
    opts.node_timeout = Duration::from_millis(500);
    Cluster::start_with(opts).expect("start cluster")
}

#[test]
fn real_cluster_nodes_slots_and_shards_of_7_0_give_the_same_map() {
    let cluster = small_timeout_cluster(Version::V7_0);
    let node = &cluster.nodes[0];
    wait_for_replicas_listed(&cluster, node);
    let from_nodes = SlotMap::from_cluster_nodes(&nodes_text(node)).expect("CLUSTER NODES");
    let slots = common::query(&mut node.client(), &[b"CLUSTER", b"SLOTS"]);
    let from_slots = SlotMap::from_cluster_slots(&slots).expect("CLUSTER SLOTS");
    let shards = common::query(&mut node.client(), &[b"CLUSTER", b"SHARDS"]);
    let from_shards = SlotMap::from_cluster_shards(&shards).expect("CLUSTER SHARDS (RESP2)");
    let shards3: redis::Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query(&mut resp3_client(node))
        .expect("RESP3 SHARDS");
    let shards3 = common::to_frame(&shards3);
    assert!(
        matches!(shards3, Frame::Array(ref s) if matches!(s.first(), Some(Frame::Map(_)))),
        "{shards3:?}"
    );
    let from_shards3 = SlotMap::from_cluster_shards(&shards3).expect("CLUSTER SHARDS (RESP3)");
    for map in [&from_nodes, &from_slots, &from_shards, &from_shards3] {
        assert_matches_cluster(map, &cluster);
    }
    assert_same_routing(&from_nodes, &from_slots, "NODES vs SLOTS");
    assert_same_routing(&from_nodes, &from_shards, "NODES vs SHARDS");
    assert_same_routing(&from_shards, &from_shards3, "SHARDS RESP2 vs RESP3");
    assert!(from_shards.nodes().all(|n| n.health == Health::Online));

    // The node that answered is flagged myself.
    let infos = parse_cluster_nodes(&nodes_text(node)).unwrap();
    let me = infos
        .iter()
        .find(|i| i.flags.myself)
        .expect("a myself line");
    assert_eq!(me.addr, Some(NodeAddr::new("127.0.0.1", node.port())));
    assert_eq!(me.cluster_port, Some(node.port() + 10000));
}

#[test]
fn real_cluster_nodes_and_slots_of_6_2_give_the_same_map() {
    let cluster = small_timeout_cluster(Version::V6_2);
    let node = &cluster.nodes[1];
    wait_for_replicas_listed(&cluster, node);
    let from_nodes = SlotMap::from_cluster_nodes(&nodes_text(node)).expect("CLUSTER NODES");
    let slots = common::query(&mut node.client(), &[b"CLUSTER", b"SLOTS"]);
    let from_slots = SlotMap::from_cluster_slots(&slots).expect("CLUSTER SLOTS");
    assert_matches_cluster(&from_nodes, &cluster);
    assert_matches_cluster(&from_slots, &cluster);
    assert_same_routing(&from_nodes, &from_slots, "NODES vs SLOTS");
    // 6.2 has no CLUSTER SHARDS.
    let shards: redis::RedisResult<redis::Value> = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query(&mut node.client());
    assert!(shards.is_err(), "6.2 answered CLUSTER SHARDS: {shards:?}");
}

fn migration_markers_and_failed_node_are_parsed(version: Version) {
    let mut cluster = small_timeout_cluster(version);
    let ids: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut n.client())
                .expect("MYID")
        })
        .collect();
    // Slot 100 belongs to the first master: mark it migrating there and importing on the second.
    let slot = 100;
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&ids[0])
        .exec(&mut cluster.nodes[1].client())
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&ids[1])
        .exec(&mut cluster.nodes[0].client())
        .unwrap();
    let source = parse_cluster_nodes(&nodes_text(&cluster.nodes[0])).unwrap();
    let me = source.iter().find(|i| i.flags.myself).unwrap();
    assert_eq!(me.migrating, vec![(slot, ids[1].clone())]);
    let target = parse_cluster_nodes(&nodes_text(&cluster.nodes[1])).unwrap();
    let me = target.iter().find(|i| i.flags.myself).unwrap();
    assert_eq!(me.importing, vec![(slot, ids[0].clone())]);
    // The markers do not change who serves the slot.
    let map = SlotMap::from_cluster_nodes(&nodes_text(&cluster.nodes[0])).unwrap();
    assert_eq!(
        map.master_for_slot(slot).unwrap().id.as_deref(),
        Some(ids[0].as_str())
    );

    // Kill a replica (index 5): the others flag it fail? and then fail.
    let dead = ids[5].clone();
    cluster.nodes[5].kill();
    let observer = &cluster.nodes[0];
    wait_until(
        Duration::from_secs(30),
        "the killed replica to be flagged fail",
        || {
            parse_cluster_nodes(&nodes_text(observer))
                .is_ok_and(|infos| infos.iter().any(|i| i.id == dead && i.flags.fail))
        },
    )
    .unwrap();
    let map = SlotMap::from_cluster_nodes(&nodes_text(observer)).unwrap();
    let failed = map
        .nodes()
        .find(|n| n.id.as_deref() == Some(dead.as_str()))
        .expect("failed replica listed");
    assert_eq!(failed.health, Health::Failed);
    assert!(map.is_complete());
    if version == Version::V7_0 {
        let shards = common::query(&mut observer.client(), &[b"CLUSTER", b"SHARDS"]);
        let map = SlotMap::from_cluster_shards(&shards).unwrap();
        let failed = map
            .nodes()
            .find(|n| n.id.as_deref() == Some(dead.as_str()))
            .expect("failed replica listed");
        assert_eq!(failed.health, Health::Failed);
    }
}

#[test]
fn migration_markers_and_failed_node_are_parsed_on_7_0() {
    migration_markers_and_failed_node_are_parsed(Version::V7_0);
}

#[test]
fn migration_markers_and_failed_node_are_parsed_on_6_2() {
    migration_markers_and_failed_node_are_parsed(Version::V6_2);
}
