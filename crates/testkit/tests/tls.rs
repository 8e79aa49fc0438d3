//! The opt-in TLS mode: servers, clusters and Sentinel groups serve TLS on extra ports with a test CA, while
//! the testkit keeps using the plain ports.

use std::path::Path;
use std::process::Command;

use ferry_testkit::{
    Cluster, ClusterOptions, SentinelGroup, SentinelOptions, Server, ServerOptions, Version,
};

/// Runs `redis-cli --tls` (Debian's, built with TLS) against `port`, verifying the server with `ca`.
fn tls_cli(port: u16, ca: &Path, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--tls",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .output()
        .expect("run /usr/bin/redis-cli");
    assert!(
        out.status.success(),
        "redis-cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tls_server_answers_on_its_tls_port_and_keeps_the_plain_port() {
    let server = Server::start(ServerOptions::new(Version::V7_0).tls(true)).unwrap();
    let tls_port = server.tls_port().expect("a TLS port");
    assert_ne!(tls_port, server.port());
    assert_eq!(server.tls_addr(), Some(format!("127.0.0.1:{tls_port}")));
    let ca = server.tls_ca_path().expect("a CA file");
    assert!(ca.is_file());
    redis::cmd("SET")
        .arg("k")
        .arg("plain")
        .exec(&mut server.client())
        .unwrap();
    assert_eq!(tls_cli(tls_port, &ca, &["GET", "k"]), "plain");
}

#[test]
fn plain_server_has_no_tls_port() {
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    assert_eq!(server.tls_port(), None);
    assert_eq!(server.tls_ca_path(), None);
}

#[test]
fn tls_on_6_2_is_a_clear_error() {
    let err = Server::start(ServerOptions::new(Version::V6_2).tls(true)).unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(err.to_string().contains("6.2"), "{err}");
}

#[test]
fn tls_cluster_reports_tls_ports_in_cluster_shards() {
    let cluster = Cluster::start_with(ClusterOptions::new(Version::V7_0).tls(true)).unwrap();
    let node = &cluster.nodes[0];
    let ca = node.tls_ca_path().unwrap();
    let shards = tls_cli(node.tls_port().unwrap(), &ca, &["CLUSTER", "SHARDS"]);
    for n in &cluster.nodes {
        let tls_port = n.tls_port().unwrap().to_string();
        assert!(
            shards.lines().any(|l| l == tls_port),
            "{tls_port} not in CLUSTER SHARDS:\n{shards}"
        );
    }
    assert_eq!(cluster.replicas().len(), 3);
}

#[test]
fn tls_sentinel_group_reports_the_master_tls_address() {
    let mut opts = SentinelOptions::new(Version::V7_0).tls(true);
    opts.replicas = 1;
    let group = SentinelGroup::start(opts).unwrap();
    let addr = group.current_master_addr().unwrap();
    assert_eq!(Some(addr.clone()), group.master.tls_addr());
    assert_eq!(
        group.server_by_addr(&addr).unwrap().port(),
        group.master.port()
    );
    let s = &group.sentinels[0];
    let reply = tls_cli(
        s.tls_port().unwrap(),
        &s.tls_ca_path().unwrap(),
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
    );
    assert!(
        reply.ends_with(&group.master.tls_port().unwrap().to_string()),
        "{reply}"
    );
}
