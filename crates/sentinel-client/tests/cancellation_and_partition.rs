//! Borrows cancelled at random points during a failover, and an old master (with a sentinel of its
//! side) frozen across a failover and answering as master again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_sentinel::{Addr, Error, Event, SentinelPool};
use ferry_testkit::{Frozen, SentinelGroup, SentinelOptions, Server};
use rand::{Rng, SeedableRng};

/// Whether an error says the connection handed out was out of step with its replies.
fn is_desynchronized(e: &Error) -> bool {
    matches!(e, Error::Resp(ferry_resp::Error::Desynchronized(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrows_cancelled_at_random_points_during_a_failover_free_every_slot_and_never_hand_out_a_desynchronized_connection(
) {
    let group = start_group(SentinelOptions::default());
    let old = addr_of(&group.master);
    let max_total = 4;
    let pool = SentinelPool::new(
        pool_options(&group)
            .max_total(max_total)
            .test_on_borrow(true)
            .max_wait(Some(Duration::from_secs(20))),
    )
    .await
    .expect("pool resolves the master");

    let failover_done = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let desynchronized: Arc<Mutex<Vec<String>>> = Arc::default();

    // Six tasks borrow in a loop; every borrow runs get -> INCR -> (hold for ever) inside a timeout
    // drawn at random from 0 to 3 ms, so it is cancelled while waiting for a slot, while connecting or
    // resolving, during test_on_borrow's PING, during the INCR, or while holding the connection.
    // Every fourth borrow is a plain one that is never cancelled and checks what it was given.
    let mut tasks = Vec::new();
    for worker in 0..6u64 {
        let pool = pool.clone();
        let (done, cancelled, completed) =
            (failover_done.clone(), cancelled.clone(), completed.clone());
        let (errors, desync) = (errors.clone(), desynchronized.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
            let mut n = 0u64;
            loop {
                let total = cancelled.load(Ordering::SeqCst);
                if done.load(Ordering::SeqCst) && total >= 1000 {
                    return;
                }
                n += 1;
                if n.is_multiple_of(4) {
                    let result = async {
                        let mut c = pool.get().await?;
                        c.call(&["INCR", "plain"]).await?;
                        c.call(&["PING"]).await
                    }
                    .await;
                    match result {
                        Ok(f) => assert_eq!(f.as_bytes(), Some(&b"PONG"[..])),
                        Err(e) if is_desynchronized(&e) => {
                            desync.lock().unwrap().push(e.to_string())
                        }
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                    completed.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let limit = Duration::from_micros(rng.gen_range(0..3000));
                let borrow = async {
                    let mut c = pool.get().await?;
                    c.call(&["INCR", "cancelled"]).await?;
                    std::future::pending::<()>().await;
                    Ok::<(), Error>(())
                };
                match tokio::time::timeout(limit, borrow).await {
                    Err(_) => {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(e)) if is_desynchronized(&e) => {
                        desync.lock().unwrap().push(e.to_string())
                    }
                    Ok(Err(e)) => {
                        errors.lock().unwrap().push(e.to_string());
                        // A failing borrow (the failover) is retried after a short pause.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(Ok(())) => unreachable!("the borrow never ends by itself"),
                }
            }
        }));
    }

    eventually(DEADLINE, "borrows before the failover", || {
        cancelled.load(Ordering::SeqCst) >= 100
    })
    .await;
    let before = cancelled.load(Ordering::SeqCst);
    let new_addr =
        tokio::task::block_in_place(|| group.failover()).expect("SENTINEL FAILOVER completes");
    let new = new_addr.parse::<Addr>().unwrap();
    eventually(DEADLINE, "the pool to follow the new master", || {
        pool.master_addr().as_ref() == Some(&new)
    })
    .await;
    let during = cancelled.load(Ordering::SeqCst) - before;
    failover_done.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("borrowing task");
    }

    let total_cancelled = cancelled.load(Ordering::SeqCst);
    let stats = pool.stats();
    eprintln!(
        "cancelled borrows: {total_cancelled} ({during} during the failover), plain borrows: {}, \
         errors: {}, stats: {stats:?}",
        completed.load(Ordering::SeqCst),
        errors.lock().unwrap().len()
    );
    assert!(total_cancelled >= 1000, "{total_cancelled}");
    assert!(
        during > 0,
        "some borrows were cancelled while the master changed"
    );
    assert!(
        desynchronized.lock().unwrap().is_empty(),
        "borrowers got desynchronized connections: {:?}",
        desynchronized.lock().unwrap()
    );
    // Every slot is free: nothing borrowed, nothing reserved, and max_total borrows succeed at once.
    assert_eq!(stats.active, 0, "{stats:?}");
    assert!(stats.total <= max_total, "{stats:?}");
    assert!(
        stats.destroyed_broken > 0,
        "connections cancelled mid-call were closed, not returned: {stats:?}"
    );
    let mut held = Vec::new();
    for _ in 0..max_total {
        let mut c = pool
            .get_timeout(Duration::from_secs(5))
            .await
            .expect("every slot can be borrowed");
        let pong = c.call(&["PING"]).await.expect("a usable connection");
        assert_eq!(pong.as_bytes(), Some(&b"PONG"[..]));
        assert_eq!(c.addr(), &new);
        held.push(c);
    }
    assert_eq!(pool.stats().active, max_total);
    drop(held);
    assert_eq!(pool.stats().active, 0);
    assert_ne!(old, new);
}

fn named_by(group: &SentinelGroup, sentinel: &Server) -> Option<Addr> {
    let mut con = sentinel.try_client().ok()?;
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&group.master_name)
        .query(&mut con)
        .ok()?;
    Some(Addr::new(host, port))
}

fn role(server: &Server) -> Option<String> {
    server.info_field("replication", "role").ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_master_frozen_across_a_failover_acknowledges_no_write_after_it_resumes() {
    let group = start_group(SentinelOptions::default());
    let old = addr_of(&group.master);
    let stale = &group.sentinels[2];
    // The sentinel that will be frozen with the old master is first in the list, and the demoted hold
    // (the older protection) is off, so what keeps the pool from going back is the config epochs.
    let mut seeds = vec![addr_of(stale)];
    seeds.extend(group.sentinels[..2].iter().map(addr_of));
    let mut opts = pool_options(&group)
        .demoted_hold(Duration::from_millis(1))
        .data_read_timeout(Some(Duration::from_millis(500)))
        .poll_interval(Duration::from_millis(100))
        .sentinel_timeout(Duration::from_millis(300));
    opts.sentinels = seeds;
    let pool = SentinelPool::new(opts).await.expect("pool resolves");
    assert_eq!(pool.master_addr(), Some(old.clone()));
    let events = collect_events(&pool);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let writers = spawn_writers(&pool, 4, stop.clone(), log.clone(), None);
    eventually(DEADLINE, "writes before the freeze", || {
        log.lock().unwrap().acks.len() >= 50
    })
    .await;

    let frozen = Frozen::freeze(&[&group.master, stale]);
    // The two other sentinels (a majority, and the quorum) fail the master over.
    let new = tokio::task::block_in_place(|| {
        ferry_testkit::wait_for(DEADLINE, "the live sentinels to name a new master", || {
            let a = named_by(&group, &group.sentinels[0])?;
            let b = named_by(&group, &group.sentinels[1])?;
            (a == b && a != old).then_some(a)
        })
    })
    .expect("failover by the live sentinels");
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

    // The old master and its sentinel come back. The old master still says it is one until the other
    // sentinels reconfigure it (the resumed sentinel usually catches up within milliseconds, from the
    // hello messages buffered on its connections, so its stale view is not waited for).
    frozen.resume();
    let resumed_at = Instant::now();
    let old_said_master = tokio::task::block_in_place(|| role(&group.master));
    let stale_named = tokio::task::block_in_place(|| named_by(&group, stale));
    eprintln!("after resuming: the old master says {old_said_master:?}; the resumed sentinel names {stale_named:?}");
    assert_eq!(
        old_said_master.as_deref(),
        Some("master"),
        "the old master answers as master after it resumed"
    );
    let polls = pool.stats().polls;
    eventually(DEADLINE, "three polls after the old master resumed", || {
        pool.stats().polls >= polls + 3
    })
    .await;
    // Keep asking the sentinels (as the poll does) until the old master is a replica and the stale
    // sentinel names the new master; the writers run all along.
    tokio::task::block_in_place(|| {
        ferry_testkit::wait_until(DEADLINE, "the old side to be reconfigured", || {
            pool.refresh();
            role(&group.master).as_deref() == Some("slave")
                && named_by(&group, stale).as_ref() == Some(&new)
        })
    })
    .expect("sentinels reconfigure the old master and the stale sentinel");
    let n = log.lock().unwrap().acks.len();
    eventually(DEADLINE, "more writes after the reconfiguration", || {
        log.lock().unwrap().acks.len() >= n + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    let log = log.lock().unwrap();
    let late: Vec<_> = log
        .acks
        .iter()
        .filter(|a| a.addr == old && a.at >= resumed_at)
        .collect();
    assert!(
        late.is_empty(),
        "writes acknowledged by the old master after the switch: {late:?}"
    );
    assert_eq!(pool.master_addr(), Some(new.clone()));
    let evs = events.lock().unwrap().clone();
    let switched_to_new = evs
        .iter()
        .position(|e| matches!(e, Event::MasterSwitched { new: n, .. } if *n == new))
        .expect("a switch to the new master");
    let back = evs[switched_to_new..]
        .iter()
        .find(|e| matches!(e, Event::MasterSwitched { new: n, .. } if *n == old));
    assert!(
        back.is_none(),
        "the pool went back to the old master: {back:?}"
    );
    assert!(
        log.acks.iter().any(|a| a.addr == old),
        "writes before the freeze"
    );
}
