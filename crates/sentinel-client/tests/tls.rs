//! The pool over TLS: Sentinels and data servers of a Redis 7.0 group serve TLS (Sentinel -> server,
//! Sentinel -> Sentinel and replication links too); the pool talks TLS to both, resolves the master's TLS
//! address, writes through it, and follows a `SENTINEL FAILOVER` to the new master's TLS address.

mod common;

use std::time::Duration;

use common::*;
use ferry_sentinel::{Addr, Frame, SentinelPool, SentinelPoolOptions, TlsOptions};
use ferry_testkit::{SentinelGroup, SentinelOptions, Server, Version};

fn tls_addr_of(s: &Server) -> Addr {
    Addr::new(s.host(), s.tls_port().expect("a TLS port"))
}

fn tls_pool_options(group: &SentinelGroup) -> SentinelPoolOptions {
    let tls = TlsOptions {
        ca_file: Some(group.master.tls_ca_path().expect("CA file")),
        ..TlsOptions::default()
    };
    let mut o = SentinelPoolOptions::new(
        group.master_name.clone(),
        group.sentinels.iter().map(tls_addr_of),
    )
    .poll_interval(Duration::from_millis(500))
    .listener_retry_base(Duration::from_millis(200))
    .resolve_timeout(Duration::from_secs(30))
    .sentinel_tls(tls.clone())
    .data_tls(tls);
    o.listener_retry_max = Duration::from_secs(1);
    o
}

/// `SET key value` through a pooled connection; returns the address that acknowledged it.
async fn set(pool: &SentinelPool, key: &str, value: &str) -> Addr {
    let mut c = pool.get().await.expect("borrow a TLS connection");
    assert!(c.is_tls(), "pooled connection is not TLS");
    let reply = c.call(&["SET", key, value]).await.expect("SET over TLS");
    assert_eq!(reply, Frame::simple("OK"));
    c.addr().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pool_resolves_master_writes_and_follows_a_failover() {
    let mut opts = SentinelOptions::new(Version::V7_0).tls(true);
    opts.replicas = 1;
    let group = tokio::task::block_in_place(|| start_group(opts));
    let pool = SentinelPool::new(tls_pool_options(&group))
        .await
        .expect("pool resolves the master over TLS");
    let old = tls_addr_of(&group.master);
    assert_eq!(pool.master_addr(), Some(old.clone()));

    for i in 0..100 {
        assert_eq!(set(&pool, &format!("before:{i}"), "v").await, old);
    }
    let mut plain = group.master.client();
    let n: i64 = redis::cmd("DBSIZE").query(&mut plain).unwrap();
    assert_eq!(n, 100);

    let new_addr = tokio::task::block_in_place(|| group.failover()).expect("SENTINEL FAILOVER");
    let new = new_addr.parse::<Addr>().unwrap();
    assert_ne!(new, old);
    assert_eq!(new, tls_addr_of(&group.replicas[0]));
    eventually(DEADLINE, "the pool to follow the new master", || {
        pool.master_addr().as_ref() == Some(&new)
    })
    .await;

    for i in 0..100 {
        assert_eq!(set(&pool, &format!("after:{i}"), "v").await, new);
    }
    let mut plain_new = group.replicas[0].client();
    let got: String = redis::cmd("GET")
        .arg("after:99")
        .query(&mut plain_new)
        .unwrap();
    assert_eq!(got, "v");
    let before: String = redis::cmd("GET")
        .arg("before:99")
        .query(&mut plain_new)
        .unwrap();
    assert_eq!(before, "v");
}
