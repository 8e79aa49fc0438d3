//! Sentinels killed while the pool runs: it keeps serving the known master, the listeners log and
//! retry, and they resubscribe when the sentinels come back (proved by following a failover).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use ferry_sentinel::{Event, SentinelPool, SentinelPoolOptions};
use ferry_testkit::SentinelOptions;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sentinels_are_retried_and_resubscribed_while_the_known_master_keeps_serving() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut group = start_group(SentinelOptions::default());
    // Seed with one sentinel only: the other two are learned from SENTINEL sentinels.
    let mut opts: SentinelPoolOptions = pool_options(&group);
    opts.sentinels.truncate(1);
    let seed = opts.sentinels[0].clone();
    let pool = SentinelPool::new(opts).await.expect("pool");
    let events = collect_events(&pool);
    eventually(
        DEADLINE,
        "all three sentinels learned and subscribed",
        || {
            let s = pool.stats();
            s.sentinels.len() == 3 && s.listeners_up == 3
        },
    )
    .await;
    assert_eq!(pool.sentinels().len(), 3);
    // The events reach the collector's task after the pool's state changed: wait for them.
    let added = || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::SentinelAdded { .. }))
            .count()
    };
    eventually(DEADLINE, "an event for each sentinel learned", || {
        added() >= 2
    })
    .await;
    assert_eq!(added(), 2);

    for s in group.sentinels.iter_mut() {
        s.kill();
    }
    let all: Vec<_> = group.sentinels.iter().map(addr_of).collect();
    eventually(
        DEADLINE,
        "every listener to report its sentinel lost",
        || {
            let evs = events.lock().unwrap();
            all.iter().all(|a| {
                evs.iter()
                    .any(|e| matches!(e, Event::SentinelLost { sentinel, .. } if sentinel == a))
            })
        },
    )
    .await;
    eventually(DEADLINE, "the retry log lines", || {
        let text = logs.text();
        all.iter().all(|a| {
            text.contains(&format!(
                "Lost connection to Sentinel at {}:{}. Sleeping ",
                a.host, a.port
            )) && text.contains("ms and retrying.")
        })
    })
    .await;
    assert_eq!(pool.stats().listeners_up, 0);

    // The known master keeps serving, including new connections, while no sentinel answers.
    let master = addr_of(&group.master);
    let mut conns = Vec::new();
    for i in 0..3 {
        let mut c = pool.get().await.expect("borrow with all sentinels down");
        assert_eq!(c.addr(), &master);
        let key = format!("while-down:{i}");
        c.call(&["SET", key.as_str(), "1"])
            .await
            .expect("write with all sentinels down");
        conns.push(c);
    }
    drop(conns);
    eventually(DEADLINE, "the poll to report the failed resolve", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::ResolveFailed { .. }))
    })
    .await;
    assert_eq!(pool.master_addr(), Some(master.clone()));
    assert!(
        pool.sentinels().contains(&seed),
        "the seed is never dropped"
    );

    for s in group.sentinels.iter_mut() {
        s.restart().expect("sentinel restarts on its port");
    }
    eventually(DEADLINE, "every listener to resubscribe", || {
        let evs = events.lock().unwrap();
        pool.stats().listeners_up == 3
            && all.iter().all(|a| {
                evs.iter()
                    .any(|e| matches!(e, Event::SentinelBack { sentinel } if sentinel == a))
            })
    })
    .await;

    // The resubscribed listeners follow a failover.
    tokio::task::block_in_place(|| group.wait_converged(DEADLINE)).expect("sentinels agree again");
    let new = tokio::task::block_in_place(|| group.failover())
        .expect("failover after the sentinels returned");
    let new = new.parse::<ferry_sentinel::Addr>().unwrap();
    eventually(DEADLINE, "the pool to follow the failover", || {
        pool.master_addr().as_ref() == Some(&new)
    })
    .await;
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.addr(), &new);
    c.call(&["SET", "after-failover", "1"])
        .await
        .expect("write on the new master");
}
