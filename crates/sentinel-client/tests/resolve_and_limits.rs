//! Resolve errors, pool exhaustion, and the blocking API.

mod common;

use std::time::Duration;

use common::*;
use ferry_sentinel::{
    Addr, BlockingSentinelPool, Error, Event, Frame, SentinelPool, SentinelPoolOptions,
};
use ferry_testkit::{Server, ServerOptions, Version};

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn all_sentinels_down_at_start_gives_first_error() {
    let opts = SentinelPoolOptions::new(
        "mymaster",
        [
            Addr::new("127.0.0.1", closed_port()),
            Addr::new("127.0.0.1", closed_port()),
        ],
    );
    let err = SentinelPool::new(opts)
        .await
        .expect_err("no sentinel answers");
    assert!(matches!(err, Error::AllSentinelsDown { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "All sentinels down, cannot determine where is mymaster master is running..."
        ),
        "{err}"
    );
    assert!(err.is_resolve_error());
}

#[tokio::test]
async fn sentinel_that_does_not_monitor_the_name_gives_second_error() {
    let sentinel = Server::start(ServerOptions::new(Version::V7_0).sentinel())
        .expect("a sentinel monitoring nothing");
    let opts = SentinelPoolOptions::new(
        "othermaster",
        [Addr::new("127.0.0.1", closed_port()), addr_of(&sentinel)],
    );
    let err = SentinelPool::new(opts)
        .await
        .expect_err("name not monitored");
    assert!(matches!(err, Error::NotMonitored { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Can connect to sentinel, but othermaster seems to be not monitored..."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_blocks_up_to_max_wait_then_fails_clearly() {
    let group = small_group();
    let max_wait = Duration::from_millis(300);
    let pool = SentinelPool::new(pool_options(&group).max_total(2).max_wait(Some(max_wait)))
        .await
        .unwrap();
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    assert_eq!(pool.stats().active, 2);

    let err = pool
        .get()
        .await
        .expect_err("third borrow exceeds max_total");
    match &err {
        Error::PoolExhausted { waited, max_total } => {
            assert!(*waited >= max_wait, "gave up before max_wait: {waited:?}");
            assert_eq!(*max_total, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().starts_with("pool exhausted after "),
        "{err}"
    );
    assert!(err.to_string().contains(" ms"), "{err}");
    assert!(err.is_pool_exhausted() && err.is_timeout());

    // A waiting borrower gets the connection that comes back.
    let pool2 = pool.clone();
    let waiter = tokio::spawn(async move {
        pool2
            .get_timeout(Duration::from_secs(60))
            .await
            .map(|c| c.generation())
    });
    eventually(DEADLINE, "the waiter to be parked", || {
        !waiter.is_finished()
    })
    .await;
    drop(a);
    let got = waiter
        .await
        .unwrap()
        .expect("waiter gets the returned connection");
    assert_eq!(got, pool.generation());
    drop(b);
    assert_eq!(pool.stats().idle, 2);
    assert_eq!(pool.stats().created, 2, "connections were reused");

    // Without blocking, exhaustion is immediate.
    let nb = SentinelPool::new(
        pool_options(&group)
            .max_total(1)
            .block_when_exhausted(false),
    )
    .await
    .unwrap();
    let _only = nb.get().await.unwrap();
    let err = nb.get().await.expect_err("exhausted");
    assert!(
        matches!(err, Error::PoolExhausted { waited, .. } if waited.is_zero()),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_on_borrow_replaces_an_idle_connection_the_server_closed() {
    let group = small_group();
    let pool = SentinelPool::new(pool_options(&group).test_on_borrow(true))
        .await
        .unwrap();
    let mut c = pool.get().await.unwrap();
    c.call(&["CLIENT", "SETNAME", "doomed"]).await.unwrap();
    drop(c);
    assert_eq!(pool.stats().idle, 1);
    let mut admin = group.master.client();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    let mut c = pool
        .get()
        .await
        .expect("a fresh connection replaces the dead idle one");
    let reply = c.call(&["PING"]).await.unwrap();
    assert_eq!(reply, Frame::simple("PONG"));
    assert_eq!(pool.stats().destroyed_broken, 1);
}

#[test]
fn blocking_pool_serves_plain_threads_and_returns_connections_on_drop() {
    let group = small_group();
    let pool = BlockingSentinelPool::new(pool_options(&group).max_total(2)).expect("blocking pool");
    std::thread::scope(|s| {
        for t in 0..2 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..20 {
                    let mut c = pool.get_timeout(Duration::from_secs(30)).expect("borrow");
                    let key = format!("blocking:{t}:{i}");
                    c.call(&["SET", key.as_str(), "v"]).expect("SET");
                }
            });
        }
    });
    let stats = pool.stats();
    assert_eq!(stats.active, 0);
    assert!(stats.idle >= 1 && stats.idle <= 2);
    let reply = pool.call(&["GET", "blocking:1:19"]).unwrap();
    assert_eq!(reply.as_bytes(), Some(&b"v"[..]));
    assert_eq!(pool.master_addr(), Some(addr_of(&group.master)));
    let _held = pool.get().unwrap();
    let _held2 = pool.get().unwrap();
    let err = pool
        .get_timeout(Duration::from_millis(100))
        .expect_err("exhausted");
    assert!(err.is_pool_exhausted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_reply_demotes_the_master_and_the_pool_resolves_again() {
    let group = small_group();
    let master = addr_of(&group.master);
    let mut opts = pool_options(&group);
    opts.demoted_hold = Duration::from_millis(300);
    let pool = SentinelPool::new(opts).await.unwrap();
    let events = collect_events(&pool);
    let mut c = pool.get().await.unwrap();
    let generation = c.generation();

    // Turn the master into a replica behind the sentinels' back: writes now get READONLY.
    let upstream = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut admin = group.master.client();
    let _: () = redis::cmd("REPLICAOF")
        .arg(upstream.host())
        .arg(upstream.port())
        .query(&mut admin)
        .unwrap();
    let err = c
        .call(&["SET", "k", "v"])
        .await
        .expect_err("a replica refuses writes");
    assert_eq!(err.server_error().map(|e| e.code()), Some("READONLY"));
    assert!(err.is_safe_to_retry());
    assert!(
        pool.generation() > generation,
        "READONLY ended the generation"
    );
    assert!(!c.is_current());
    drop(c);
    eventually(DEADLINE, "the demotion event", || {
        events.lock().unwrap().iter().any(|e| matches!(e, Event::MasterDemoted { master: m, cause, .. } if *m == master && cause == "READONLY"))
    })
    .await;
    assert_eq!(pool.stats().discarded_on_return, 1);

    // Back to master: the next borrow resolves it again (sentinels + ROLE) and writes go through.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut admin)
        .unwrap();
    let mut c = pool
        .get_timeout(Duration::from_secs(30))
        .await
        .expect("resolved again");
    assert_eq!(c.addr(), &master);
    c.call(&["SET", "k", "v"])
        .await
        .expect("write after the master is back");
}

/// A loopback TCP forwarder standing in for a NAT: connections to the returned address reach `to`.
async fn forwarder(to: Addr) -> Addr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect((to.host.as_str(), to.port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Addr::new("127.0.0.1", local.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_map_sends_connections_to_the_reachable_address() {
    let group = small_group();
    let announced = addr_of(&group.master);
    let reachable = forwarder(announced.clone()).await;
    let pool =
        SentinelPool::new(pool_options(&group).map_address(announced.clone(), reachable.clone()))
            .await
            .unwrap();
    assert_eq!(pool.master_addr(), Some(reachable.clone()));
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.addr(), &reachable);
    c.call(&["SET", "through-nat", "1"]).await.unwrap();
    // The server sees the forwarder's connection, not one made to the announced address directly.
    let list = c.call(&["CLIENT", "LIST"]).await.unwrap();
    assert!(list.as_bytes().is_some());
    let mut admin = group.master.client();
    let v: Option<String> = redis::cmd("GET")
        .arg("through-nat")
        .query(&mut admin)
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_connections_are_kept_ready_and_max_idle_caps_returns() {
    let group = small_group();
    let pool = SentinelPool::new(pool_options(&group).min_idle(2).max_idle(3).max_total(5))
        .await
        .unwrap();
    eventually(
        DEADLINE,
        "min_idle connections opened in the background",
        || pool.stats().idle == 2,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(pool.get().await.unwrap());
    }
    assert_eq!(pool.stats().total, 5);
    drop(held);
    let s = pool.stats();
    assert_eq!(s.idle, 3, "max_idle caps the idle connections kept: {s:?}");
    assert_eq!(s.total, 3);
}

/// Written once against the trait; run below on a plain connection and on a pooled one.
async fn incr_twice<C: ferry_resp::ConnectionLike>(conn: &mut C, key: &str) -> Vec<i64> {
    let replies = conn
        .pipeline(&[vec!["INCR", key], vec!["INCR", key]])
        .await
        .unwrap_or_else(|e| panic!("pipeline: {e}"));
    replies.iter().filter_map(Frame::as_integer).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_like_code_runs_on_plain_and_pooled_connections_and_session_changes_are_not_pooled(
) {
    let group = small_group();
    let pool = SentinelPool::new(pool_options(&group).max_total(1))
        .await
        .unwrap();
    let mut plain = ferry_resp::Connection::connect(&ferry_resp::ConnectOptions::new(
        group.master.host(),
        group.master.port(),
    ))
    .await
    .unwrap();
    assert_eq!(incr_twice(&mut plain, "generic").await, vec![1, 2]);
    let mut pooled = pool.get().await.unwrap();
    assert_eq!(incr_twice(&mut pooled, "generic").await, vec![3, 4]);
    drop(pooled);
    assert_eq!(pool.stats().idle, 1, "a clean connection goes back");

    // SELECT changes the session: that connection is closed, the next borrower gets db 0.
    let mut c = pool.get().await.unwrap();
    c.call(&["SELECT", "1"]).await.unwrap();
    drop(c);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.total), (0, 0), "{stats:?}");
    let mut c = pool.get().await.unwrap();
    let v = c.call(&["GET", "generic"]).await.unwrap();
    assert_eq!(v.as_integer(), Some(4), "db 0 again");

    // An open MULTI is not handed to the next borrower either.
    c.call(&["MULTI"]).await.unwrap();
    drop(c);
    assert_eq!(pool.stats().total, 0);
    let mut c = pool.get().await.unwrap();
    let v = c.call(&["INCR", "generic"]).await.unwrap();
    assert_eq!(
        v.as_integer(),
        Some(5),
        "not QUEUED: no transaction is open"
    );
}
