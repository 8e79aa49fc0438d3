//! Sentinel auth separate from the data nodes' ACL user; replica reads.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ferry_sentinel::{Error, SentinelPool};
use ferry_testkit::{AclUser, SentinelOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_password_differs_from_master_acl_user_and_replica_reads_work() {
    let group = start_group(
        SentinelOptions::default()
            .sentinel_password("sentinel-secret")
            .master_password("default-secret")
            .master_user(AclUser::new("app", "app-secret")),
    );
    let opts = pool_options(&group)
        .sentinel_auth(None, "sentinel-secret")
        .data_auth(Some("app"), "app-secret");
    let shown = format!("{opts:?}");
    for secret in ["sentinel-secret", "app-secret"] {
        assert!(!shown.contains(secret), "Debug leaks a password: {shown}");
    }

    // Credentials swapped: the sentinels refuse us, and the error says so.
    let wrong = pool_options(&group).sentinel_auth(Some("app"), "app-secret");
    let err = SentinelPool::new(wrong)
        .await
        .expect_err("sentinels refuse the data user");
    assert!(matches!(err, Error::AllSentinelsDown { .. }), "{err:?}");
    assert!(!err.to_string().contains("app-secret"));

    let pool = SentinelPool::new(opts).await.expect("pool with split auth");
    pool.call(&["SET", "split-auth", "ok"])
        .await
        .expect("write as the ACL user");
    let mut c = pool.get().await.unwrap();
    let who = c.call(&["ACL", "WHOAMI"]).await.unwrap();
    assert_eq!(who.as_bytes(), Some(&b"app"[..]));
    drop(c);

    // Replica reads: round robin over both replicas, each ROLE-checked, data replicated.
    let replicas: HashSet<_> = group.replicas.iter().map(addr_of).collect();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let mut r = pool.replica().await.expect("a replica connection");
        assert!(!r.is_master());
        assert!(replicas.contains(r.addr()), "{} is not a replica", r.addr());
        seen.insert(r.addr().clone());
        let start = std::time::Instant::now();
        loop {
            let v = r
                .call(&["GET", "split-auth"])
                .await
                .expect("read on replica");
            if v.as_bytes() == Some(&b"ok"[..]) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "replica never got the write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = r
            .call(&["SET", "x", "1"])
            .await
            .expect_err("replicas are read-only");
        assert_eq!(err.server_error().map(|e| e.code()), Some("READONLY"));
    }
    assert_eq!(seen, replicas, "round robin reaches every replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_request_falls_back_to_master_only_when_allowed() {
    let group = small_group();
    let pool = SentinelPool::new(pool_options(&group)).await.unwrap();
    let err = pool.replica().await.expect_err("no replicas");
    assert!(matches!(err, Error::NoReplica { tried: 0, .. }), "{err:?}");
    let pool = SentinelPool::new(pool_options(&group).replica_fallback_to_master(true))
        .await
        .unwrap();
    let r = pool.replica().await.expect("fallback to master");
    assert!(r.is_master());
    assert_eq!(r.addr(), &addr_of(&group.master));
}

/// An application user without `@dangerous` (no `ROLE`, no `INFO`), as many deployments give their clients:
/// the pool learns the master's role from `HELLO`, writes, and follows a `SENTINEL FAILOVER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_user_without_role_or_info_writes_and_follows_a_failover() {
    let group = start_group(SentinelOptions::default());
    for node in std::iter::once(&group.master).chain(&group.replicas) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg("on")
            .arg(">app-secret")
            .arg(&["~*", "&*", "+@all", "-@dangerous"])
            .exec(&mut node.client())
            .unwrap();
    }
    let pool = SentinelPool::new(pool_options(&group).data_auth(Some("app"), "app-secret"))
        .await
        .expect("a pool for the application user");
    let refused = pool
        .call(&["ROLE"])
        .await
        .expect_err("ROLE is refused to app");
    assert!(refused.to_string().contains("NOPERM"), "{refused}");
    pool.call(&["SET", "app:before", "1"])
        .await
        .expect("write as the application user");

    let old = group.master.addr();
    tokio::task::block_in_place(|| group.failover()).expect("SENTINEL FAILOVER completes");
    let new =
        tokio::task::block_in_place(|| group.wait_master_changed(&old, Duration::from_secs(60)))
            .expect("a new master");
    let start = std::time::Instant::now();
    while let Err(e) = pool.call(&["SET", "app:after", "2"]).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no write on the new master: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pool.master_addr().map(|a| a.to_string()),
        Some(new.clone()),
        "the pool follows the new master"
    );
}
