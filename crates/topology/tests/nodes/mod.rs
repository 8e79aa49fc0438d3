//! Who is who in a testkit cluster, read from the servers themselves (shared by the cluster client tests).

use ferry_testkit::{Cluster, Server};
use ferry_topology::parse_cluster_nodes;

/// The node's cluster id (`CLUSTER MYID`).
pub fn node_id(server: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut server.client())
        .expect("CLUSTER MYID")
}

/// `master` or `slave`, as `INFO replication` says (empty while the node does not answer).
pub fn role(server: &Server) -> String {
    server
        .info_field("replication", "role")
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The replica of `master` (by CLUSTER NODES as `master` sees it).
pub fn replica_of<'a>(cluster: &'a Cluster, master: &Server) -> &'a Server {
    let id = node_id(master);
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut master.client())
        .expect("CLUSTER NODES");
    let infos = parse_cluster_nodes(text.as_bytes()).expect("parse CLUSTER NODES");
    let replica = infos
        .iter()
        .find(|i| i.master_id.as_deref() == Some(id.as_str()))
        .expect("a replica");
    let port = replica.addr.as_ref().expect("replica address").port;
    cluster
        .nodes
        .iter()
        .find(|n| n.port() == port)
        .expect("replica among the nodes")
}
