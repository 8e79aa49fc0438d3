//! The cluster client over TLS against a real 3+3 Redis 7.0 cluster whose nodes serve TLS (`tls-cluster yes`,
//! so the bus and replication run over TLS too): the slot map points at the TLS ports and reads and writes
//! reach every slot range.

use std::collections::HashSet;
use std::time::Duration;

use ferry_resp::{ConnectOptions, Frame, TlsOptions};
use ferry_testkit::{Cluster, ClusterOptions as TestClusterOptions, Version};
use ferry_topology::{key_slot, ClusterClient, ClusterOptions};

const KEYS: usize = 1000;

fn tls_client_options(cluster: &Cluster) -> ClusterOptions {
    let seed = &cluster.nodes[0];
    let mut connect = ConnectOptions::new(seed.host(), seed.tls_port().expect("seed TLS port"));
    connect.tls = Some(TlsOptions {
        ca_file: Some(seed.tls_ca_path().expect("CA file")),
        ..TlsOptions::default()
    });
    connect.read_timeout = Some(Duration::from_secs(30));
    ClusterOptions::new(connect)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_over_tls_uses_tls_ports_and_reads_back_writes_in_every_slot_range() {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start_with(TestClusterOptions::new(Version::V7_0).tls(true))
    })
    .expect("start a TLS cluster");
    let client = ClusterClient::connect(tls_client_options(&cluster))
        .await
        .expect("connect over TLS");

    // Every node in the map is reached on its TLS port (CLUSTER SHARDS lists `port` and `tls-port`).
    let tls_ports: HashSet<u16> = cluster.nodes.iter().filter_map(|n| n.tls_port()).collect();
    let map = client.slot_map();
    assert_eq!(map.shards().len(), 3);
    for shard in map.shards() {
        for node in std::iter::once(&shard.master).chain(shard.replicas.iter()) {
            assert!(
                tls_ports.contains(&node.addr.port),
                "{:?} is not a TLS port of the cluster ({tls_ports:?})",
                node.addr
            );
        }
    }

    let key = |i: usize| format!("tls:{i}");
    let value = |i: usize| format!("value-{i}");
    for i in 0..KEYS {
        let reply = client
            .call(&["SET", key(i).as_str(), value(i).as_str()])
            .await
            .unwrap_or_else(|e| panic!("SET {} over TLS: {e}", key(i)));
        assert_eq!(reply, Frame::simple("OK"));
    }
    for i in 0..KEYS {
        let reply = client
            .call(&["GET", key(i).as_str()])
            .await
            .unwrap_or_else(|e| panic!("GET {} over TLS: {e}", key(i)));
        assert_eq!(reply.as_bytes(), Some(value(i).as_bytes()), "{}", key(i));
    }

    // The keys landed on all three masters, and an independent client (plain ports) reads the same values.
    let masters: HashSet<u16> = (0..KEYS)
        .map(|i| {
            tokio::task::block_in_place(|| cluster.node_for_slot(key_slot(key(i).as_bytes())))
                .expect("slot owner")
                .port()
        })
        .collect();
    assert_eq!(masters.len(), 3);
    let mut plain = tokio::task::block_in_place(|| cluster.cluster_client()).expect("plain client");
    for i in (0..KEYS).step_by(7) {
        let got: String = redis::cmd("GET")
            .arg(key(i))
            .query(&mut plain)
            .expect("GET through the plain port");
        assert_eq!(got, value(i));
    }
}

fn shards_node(port: i64, tls_port: Option<i64>, role: &str) -> Frame {
    let mut fields = vec![
        Frame::bulk("id"),
        Frame::bulk(format!("{port:0>40}")),
        Frame::bulk("port"),
        Frame::Integer(port),
    ];
    if let Some(t) = tls_port {
        fields.extend([Frame::bulk("tls-port"), Frame::Integer(t)]);
    }
    fields.extend([
        Frame::bulk("ip"),
        Frame::bulk("127.0.0.1"),
        Frame::bulk("endpoint"),
        Frame::bulk("127.0.0.1"),
        Frame::bulk("role"),
        Frame::bulk(role),
        Frame::bulk("health"),
        Frame::bulk("online"),
    ]);
    Frame::Array(fields)
}

#[test]
fn use_tls_ports_swaps_in_the_tls_port_only_where_shards_lists_one() {
    let shard = |first: i64, last: i64, nodes: Vec<Frame>| {
        Frame::Array(vec![
            Frame::bulk("slots"),
            Frame::Array(vec![Frame::Integer(first), Frame::Integer(last)]),
            Frame::bulk("nodes"),
            Frame::Array(nodes),
        ])
    };
    let reply = Frame::Array(vec![
        shard(
            0,
            8191,
            vec![
                shards_node(7000, Some(7100), "master"),
                shards_node(7001, Some(7101), "replica"),
            ],
        ),
        shard(8192, 16383, vec![shards_node(7002, None, "master")]),
    ]);
    let mut map = ferry_topology::SlotMap::from_cluster_shards(&reply).expect("parse");
    let port_of_slot =
        |map: &ferry_topology::SlotMap, slot| map.master_for_slot(slot).expect("owner").addr.port;
    assert_eq!(port_of_slot(&map, 0), 7000);
    map.use_tls_ports();
    assert_eq!(port_of_slot(&map, 0), 7100);
    assert_eq!(port_of_slot(&map, 16383), 7002);
    let replica_ports: Vec<u16> = map
        .shards()
        .iter()
        .flat_map(|s| s.replicas.iter().map(|r| r.addr.port))
        .collect();
    assert_eq!(replica_ports, vec![7101]);
}
