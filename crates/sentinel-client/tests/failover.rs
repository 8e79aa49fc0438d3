//! Failover with writers running: by `SENTINEL FAILOVER` and by SIGKILL of the master.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use ferry_sentinel::{Error, Event, SentinelPool};
use ferry_testkit::SentinelOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_writers_never_acknowledges_on_demoted_master_and_loses_no_replicated_write(
) {
    let group = start_group(SentinelOptions::default());
    let old = addr_of(&group.master);
    let pool = SentinelPool::new(pool_options(&group))
        .await
        .expect("pool resolves the master");
    assert_eq!(pool.master_addr(), Some(old.clone()));
    let events = collect_events(&pool);

    // Six connections exist; at most four writers plus one held connection are borrowed at once, so
    // at least one is idle when the master switches.
    let warm: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(pool.get().await.expect("borrow"));
        }
        v
    };
    drop(warm);
    assert_eq!(pool.stats().idle, 6);
    let mut held = pool
        .get()
        .await
        .expect("borrow the connection held across the failover");
    held.call(&["PING"]).await.expect("PING before failover");
    let before = pool.stats();

    let mut roles = RoleHistory::start(&group);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(WriteLog::default()));
    // The old master's writes reach the promoted replica asynchronously; WAIT after each write tells which
    // writes every replica had (those survive any choice of replica).
    let confirm = Confirm::every_replica(&group);
    let writers = spawn_writers(&pool, 4, stop.clone(), log.clone(), Some(confirm));
    eventually(DEADLINE, "writes before the failover", || {
        log.lock().unwrap().acks.len() >= 50
    })
    .await;

    let new_addr =
        tokio::task::block_in_place(|| group.failover()).expect("SENTINEL FAILOVER completes");
    let new = new_addr.parse::<ferry_sentinel::Addr>().unwrap();
    assert_ne!(new, old);
    eventually(DEADLINE, "the pool to follow the new master", || {
        pool.master_addr().as_ref() == Some(&new)
    })
    .await;
    let acked_on_new = |l: &WriteLog| l.acks.iter().filter(|a| a.addr == new).count();
    eventually(DEADLINE, "writes on the new master", || {
        acked_on_new(&log.lock().unwrap()) >= 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let history = roles.stop();

    // The held connection belongs to the old generation: it refuses to send, and is discarded on return.
    let err = held
        .call(&["SET", "must-not-land", "1"])
        .await
        .expect_err("stale connection refuses to send");
    assert!(matches!(err, Error::MasterSwitched { .. }), "{err}");
    assert!(err.is_safe_to_retry());
    drop(held);
    let after = pool.stats();
    assert!(
        after.closed_on_switch > before.closed_on_switch,
        "idle connections to the old master were closed: {after:?}"
    );
    assert!(
        after.discarded_on_return > before.discarded_on_return,
        "the borrowed one was discarded: {after:?}"
    );
    assert!(after.generation > before.generation);

    // The events: the old master was demoted, then the switch to the new one.
    let evs = events.lock().unwrap().clone();
    // Fenced by the sentinel leader's failover messages (before the promotion), not by a READONLY reply.
    assert!(
        evs.iter().any(|e| matches!(e, Event::MasterDemoted { master, cause, .. } if *master == old && cause.starts_with('+'))),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::MasterSwitched { new: n, .. } if *n == new)),
        "{evs:?}"
    );

    // ROLE history: when was the new master first seen as master?
    let promoted_at = history
        .iter()
        .find(|(_, a, r)| *a == new && r == "master")
        .map(|(t, _, _)| *t)
        .unwrap_or_else(|| panic!("the new master was seen promoted: {history:?}"));
    let demoted_at = history
        .iter()
        .find(|(_, a, r)| *a == old && r != "master")
        .map(|(t, _, _)| *t);
    let log = log.lock().unwrap();
    let late: Vec<_> = log
        .acks
        .iter()
        .filter(|a| a.addr == old && a.at >= promoted_at)
        .collect();
    assert!(
        late.is_empty(),
        "acknowledged by the old master after the new one was promoted: {late:?}"
    );
    if let Some(d) = demoted_at {
        assert!(log.acks.iter().all(|a| a.addr != old || a.at < d));
    }
    assert!(log.acks.iter().all(|a| a.addr == old || a.addr == new));
    let final_master = group
        .server_by_addr(&new_addr)
        .expect("new master is a group server");
    assert!(
        log.acks
            .iter()
            .any(|a| a.addr == old && confirm.confirmed(a)),
        "some writes on the old master were confirmed on every replica before the failover"
    );
    assert_acknowledged_writes_present(final_master, &log, |a| {
        a.addr == new || confirm.confirmed(a)
    });
    assert!(pool.master_addr() == Some(new));
    // SET must-not-land never reached any server.
    let mut con = final_master.client();
    let v: Option<String> = redis::cmd("GET")
        .arg("must-not-land")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_master_with_writers_resumes_on_new_master_and_loses_no_replicated_write() {
    let mut group = start_group(SentinelOptions::default());
    let old = addr_of(&group.master);
    let pool = SentinelPool::new(pool_options(&group))
        .await
        .expect("pool resolves the master");
    let events = collect_events(&pool);
    // One idle connection exists when the master dies.
    drop(pool.get().await.expect("borrow"));
    let mut held = pool
        .get()
        .await
        .expect("borrow the connection held across the failover");
    let before = pool.stats();

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(WriteLog::default()));
    // Replication is asynchronous: what the master acknowledged but no replica had yet dies with it, whatever
    // the client. WAIT after each write tells which writes every replica had.
    let confirm = Confirm::every_replica(&group);
    let writers = spawn_writers(&pool, 4, stop.clone(), log.clone(), Some(confirm));
    eventually(DEADLINE, "writes before the kill", || {
        log.lock().unwrap().acks.len() >= 50
    })
    .await;

    let killed_at = Instant::now();
    group.master.kill();
    let new_addr =
        tokio::task::block_in_place(|| group.wait_master_changed(&old.to_string(), DEADLINE))
            .expect("sentinels promote a replica");
    let new = new_addr.parse::<ferry_sentinel::Addr>().unwrap();
    eventually(DEADLINE, "the pool to follow the new master", || {
        pool.master_addr().as_ref() == Some(&new)
    })
    .await;
    eventually(DEADLINE, "writes on the new master", || {
        log.lock()
            .unwrap()
            .acks
            .iter()
            .filter(|a| a.addr == new)
            .count()
            >= 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let err = held
        .call(&["PING"])
        .await
        .expect_err("stale connection refuses to send");
    assert!(matches!(err, Error::MasterSwitched { .. }), "{err}");
    drop(held);
    let after = pool.stats();
    assert!(
        after.discarded_on_return > before.discarded_on_return,
        "{after:?}"
    );
    assert!(after.generation > before.generation);
    let evs = events.lock().unwrap().clone();
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::MasterSwitched { new: n, .. } if *n == new)),
        "{evs:?}"
    );

    let log = log.lock().unwrap();
    assert!(log.acks.iter().all(|a| a.addr == old || a.addr == new));
    assert!(
        log.acks.iter().any(|a| a.addr == old && a.at < killed_at),
        "writes landed before the kill"
    );
    assert!(
        log.acks
            .iter()
            .any(|a| a.addr == old && confirm.confirmed(a)),
        "some writes on the old master were confirmed on every replica before the kill"
    );
    let final_master = group
        .server_by_addr(&new_addr)
        .expect("new master is a group server");
    // Every write the new master acknowledged, and every write the old one acknowledged once all replicas
    // had it, is on the new master.
    assert_acknowledged_writes_present(final_master, &log, |a| {
        a.addr == new || confirm.confirmed(a)
    });
}
