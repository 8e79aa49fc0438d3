//! Replica sets, Sentinel groups and clusters start and behave on both versions.

use std::time::Duration;

use ferry_testkit::{
    key_slot, AclUser, Cluster, ClusterOptions, ReplicaSet, SentinelGroup, SentinelOptions,
    ServerOptions, Version,
};

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn replica_set_replicates_writes_on_both_versions() {
    for v in Version::all() {
        let set = ReplicaSet::start_with(ServerOptions::new(v).password("pw"), 2).unwrap();
        let mut m = set.master.client();
        redis::cmd("SET").arg("k").arg("v1").exec(&mut m).unwrap();
        set.wait_synced(DEADLINE).unwrap();
        for r in &set.replicas {
            let mut c = r.client();
            let got: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
            assert_eq!(got, "v1", "replica {} of {v}", r.addr());
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).unwrap();
            assert_eq!(role[0], redis::Value::BulkString(b"slave".to_vec()));
        }
    }
}

fn sentinel_failover_is_observed(opts: SentinelOptions) -> SentinelGroup {
    let group = SentinelGroup::start(opts.clone()).unwrap();
    assert_eq!(group.sentinels.len(), 3);
    if let Some(u) = &opts.sentinel_user {
        let mut c = group.sentinels[0].client();
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut c).unwrap();
        assert_eq!(&who, &u.name);
        assert!(group.sentinels[0]
            .url()
            .starts_with(&format!("redis://{}:", u.name)));
    }
    if let Some(u) = &opts.master_user {
        let mut c = group.master.client();
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut c).unwrap();
        assert_eq!(&who, &u.name);
    }
    assert_eq!(group.replicas.len(), 2);
    assert_eq!(group.current_master_addr().unwrap(), group.master.addr());
    let state = group.sentinel_master_state(&group.sentinels[0]).unwrap();
    assert_eq!(state["quorum"], "2");
    assert_eq!(state["num-other-sentinels"], "2");

    let mut m = group.master.client();
    redis::cmd("SET")
        .arg("before-failover")
        .arg("1")
        .exec(&mut m)
        .unwrap();
    let new = group.failover().unwrap();
    assert_ne!(new, group.master.addr());
    let new_master = group.current_master().unwrap();
    let mut c = new_master.client();
    let got: String = redis::cmd("GET")
        .arg("before-failover")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, "1");
    redis::cmd("SET")
        .arg("after-failover")
        .arg("2")
        .exec(&mut c)
        .unwrap();
    group
}

#[test]
fn sentinel_group_fails_over_on_7_0_with_master_acl_user_and_separate_sentinel_acl_user() {
    let opts = SentinelOptions::new(Version::V7_0)
        .master_user(AclUser::new("app", "app-pass"))
        .master_password("default-pass")
        .sentinel_password("sentinel-default-pass")
        .sentinel_user(AclUser::new("sentinel-admin", "sentinel-pass"));
    let mut group = sentinel_failover_is_observed(opts);

    // A real failover needs the Sentinels to vote with each other, authenticated as the sentinel user.
    // First let Sentinel turn the demoted master into a replica: otherwise it could be promoted without the
    // writes made after the first failover.
    group.wait_all_replicating(Duration::from_secs(60)).unwrap();
    let current = group.current_master_addr().unwrap();
    let idx = group
        .replicas
        .iter()
        .position(|r| r.addr() == current)
        .expect("the new master is a former replica");
    group.replicas[idx].kill();
    let newer = group
        .wait_master_changed(&current, Duration::from_secs(60))
        .unwrap();
    assert_ne!(newer, current);
    let mut c = group.current_master().unwrap().client();
    let got: String = redis::cmd("GET")
        .arg("after-failover")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, "2");
}

#[test]
fn sentinel_group_fails_over_on_6_2_and_demotes_the_old_master() {
    let group = sentinel_failover_is_observed(SentinelOptions::new(Version::V6_2));
    group.wait_all_replicating(Duration::from_secs(60)).unwrap();
    let info = group.master.info("replication").unwrap();
    assert!(info.contains("role:slave"), "{info}");
}

#[test]
fn sentinel_password_is_required_by_sentinels() {
    let group = SentinelGroup::start(
        SentinelOptions::new(Version::V6_2)
            .sentinel_password("s3cret")
            .master_password("m4ster"),
    )
    .unwrap();
    let anon = redis::Client::open(format!("redis://{}", group.sentinels[0].addr())).unwrap();
    let mut anon = anon.get_connection().unwrap();
    let err = redis::cmd("SENTINEL")
        .arg("MASTERS")
        .query::<redis::Value>(&mut anon)
        .unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    let url = group.sentinels[0].url();
    assert!(
        url.contains(":s3cret@"),
        "sentinel url should carry its own password"
    );
    assert!(group.master.url().contains(":m4ster@"));
}

fn cluster_serves_keys(v: Version, password: Option<&str>) {
    let mut opts = ClusterOptions::new(v);
    if let Some(p) = password {
        opts = opts.password(p);
    }
    let cluster = Cluster::start_with(opts).unwrap();
    assert_eq!(cluster.nodes.len(), 6);
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    assert!(cluster.replica_counts().unwrap().values().all(|&n| n == 1));

    let mut con = cluster.cluster_client().unwrap();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    for i in 0..50 {
        let key = format!("key:{i}");
        let owner = cluster.node_for_key(key.as_bytes()).unwrap();
        let mut direct = owner.client();
        let got: i64 = redis::cmd("GET").arg(&key).query(&mut direct).unwrap();
        assert_eq!(
            got,
            i,
            "{key} (slot {}) on {}",
            key_slot(key.as_bytes()),
            owner.addr()
        );
    }
}

#[test]
fn cluster_reaches_state_ok_and_serves_keys_on_7_0() {
    cluster_serves_keys(Version::V7_0, None);
}

#[test]
fn cluster_reaches_state_ok_and_serves_keys_on_6_2_with_password() {
    cluster_serves_keys(Version::V6_2, Some("cluster-pass"));
}

#[test]
fn replica_set_replicates_writes_on_8_2_and_valkey_9_1() {
    for v in [Version::V8_2, Version::V9_1] {
        let set = ReplicaSet::start(v, 1).unwrap();
        let mut m = set.master.client();
        redis::cmd("SET").arg("k").arg("v1").exec(&mut m).unwrap();
        set.wait_synced(DEADLINE).unwrap();
        let mut c = set.replicas[0].client();
        let got: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
        assert_eq!(got, "v1", "replica of {v}");
    }
}

#[test]
fn sentinel_group_fails_over_on_valkey_9_1_with_valkey_sentinels() {
    let group = sentinel_failover_is_observed(SentinelOptions::new(Version::V9_1));
    assert!(group.sentinels[0].describe().starts_with("valkey-sentinel"));
    let info = group.sentinels[0].info("server").unwrap();
    assert!(info.contains("valkey_version:9.1"), "{info}");
    group.wait_all_replicating(Duration::from_secs(60)).unwrap();
}

#[test]
fn cluster_reaches_state_ok_and_serves_keys_on_8_2_and_valkey_9_1() {
    cluster_serves_keys(Version::V8_2, None);
    cluster_serves_keys(Version::V9_1, Some("cluster-pass"));
}
