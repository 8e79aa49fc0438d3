//! Shared helpers for the integration tests: a sentinel group, pool options with short timeouts,
//! and a recorder of acknowledged writes and of every data server's ROLE over time.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_sentinel::{Addr, Error, Frame, SentinelPool, SentinelPoolOptions};
use ferry_testkit::{SentinelGroup, SentinelOptions, Server};

/// Generous deadline for conditions on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn addr_of(s: &Server) -> Addr {
    Addr::new(s.host(), s.port())
}

pub fn start_group(opts: SentinelOptions) -> SentinelGroup {
    SentinelGroup::start(opts).expect("sentinel group starts")
}

/// One master, no replicas, one sentinel: enough for pool mechanics.
#[allow(clippy::field_reassign_with_default)] // SentinelOptions is #[non_exhaustive]
pub fn small_group() -> SentinelGroup {
    let mut o = SentinelOptions::default();
    o.replicas = 0;
    o.sentinels = 1;
    o.quorum = 1;
    start_group(o)
}

/// Pool options for `group` with test-friendly timings (fast listener retry and poll).
pub fn pool_options(group: &SentinelGroup) -> SentinelPoolOptions {
    let mut o = SentinelPoolOptions::new(
        group.master_name.clone(),
        group.sentinels.iter().map(addr_of),
    )
    .poll_interval(Duration::from_millis(500))
    .listener_retry_base(Duration::from_millis(200))
    .resolve_timeout(Duration::from_secs(30));
    o.listener_retry_max = Duration::from_secs(1);
    o
}

/// Waits (polling) until `f` holds, panicking with `what` after `deadline`.
pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, what: &str, mut f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One acknowledged write: `INCR counter` + `SET key:<n> <n>`, acknowledged by `addr` at `at`; with
/// [`Confirm`], `replicated_to` is what the `WAIT` after it answered (how many replicas have the write).
#[derive(Clone, Debug)]
pub struct Ack {
    pub n: u64,
    pub addr: Addr,
    pub at: Instant,
    pub replicated_to: Option<i64>,
}

/// Ask the master to confirm replication after each write: `WAIT replicas timeout_ms` in the same pipeline.
/// Replication is asynchronous, so a write acknowledged by a master that is then SIGKILLed survives only if
/// a replica had it; `WAIT` tells which writes had reached every replica.
#[derive(Clone, Copy, Debug)]
pub struct Confirm {
    pub replicas: i64,
    pub timeout_ms: u64,
}

impl Confirm {
    /// Wait (up to 100 ms) for every replica of `group`.
    pub fn every_replica(group: &SentinelGroup) -> Confirm {
        Confirm {
            replicas: group.replicas.len() as i64,
            timeout_ms: 100,
        }
    }

    /// Whether `ack` was confirmed on every replica this asked for.
    pub fn confirmed(&self, ack: &Ack) -> bool {
        ack.replicated_to == Some(self.replicas)
    }
}

#[derive(Default)]
pub struct WriteLog {
    pub acks: Vec<Ack>,
    pub failures: u64,
    pub unsure: Vec<u64>,
}

/// Runs `writers` tasks until `stop` is set; each write is a pipeline `INCR counter`, `SET key:<n> <n>`.
pub fn spawn_writers(
    pool: &SentinelPool,
    writers: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WriteLog>>,
    confirm: Option<Confirm>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    (0..writers)
        .map(|_| {
            let pool = pool.clone();
            let stop = stop.clone();
            let log = log.clone();
            let next = next.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let key = format!("key:{n}");
                    let val = n.to_string();
                    let mut conn = match pool.get().await {
                        Ok(c) => c,
                        Err(_) => {
                            log.lock().unwrap().failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let mut cmds = vec![
                        vec!["INCR".to_string(), "counter".to_string()],
                        vec!["SET".to_string(), key.clone(), val.clone()],
                    ];
                    if let Some(c) = confirm {
                        cmds.push(vec![
                            "WAIT".to_string(),
                            c.replicas.to_string(),
                            c.timeout_ms.to_string(),
                        ]);
                    }
                    match conn.pipeline(&cmds).await {
                        Ok(frames) if frames.iter().all(|f| !matches!(f, Frame::Error(_))) => {
                            let addr = conn.addr().clone();
                            let replicated_to = confirm.and_then(|_| frames[2].as_integer());
                            log.lock().unwrap().acks.push(Ack {
                                n,
                                addr,
                                at: Instant::now(),
                                replicated_to,
                            });
                        }
                        Ok(_) => log.lock().unwrap().failures += 1,
                        Err(e) => {
                            {
                                let mut l = log.lock().unwrap();
                                l.failures += 1;
                                if !matches!(e, Error::MasterSwitched { .. }) {
                                    l.unsure.push(n);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Collects every pool event in the background (a lagging receiver skips, never stops).
pub fn collect_events(pool: &SentinelPool) -> Arc<Mutex<Vec<ferry_sentinel::Event>>> {
    let mut rx = pool.subscribe();
    let out = Arc::new(Mutex::new(Vec::new()));
    let out2 = out.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => out2.lock().unwrap().push(e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    out
}

/// Polls ROLE of every data server every few ms and records each change with its time.
pub struct RoleHistory {
    stop: Arc<AtomicBool>,
    pub changes: Arc<Mutex<Vec<(Instant, Addr, String)>>>,
    handle: Option<JoinHandle<()>>,
}

fn role_of(c: &mut redis::Connection) -> Option<String> {
    let v: redis::Value = redis::cmd("ROLE").query(c).ok()?;
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl RoleHistory {
    pub fn start(group: &SentinelGroup) -> RoleHistory {
        // Sentinels kill normal clients on the servers they reconfigure: reconnect when that happens.
        let servers: Vec<(Addr, redis::ConnectionInfo, Option<redis::Connection>)> =
            std::iter::once(&group.master)
                .chain(group.replicas.iter())
                .map(|s| (addr_of(s), s.connection_info(), None))
                .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (stop2, changes2) = (stop.clone(), changes.clone());
        let handle = std::thread::spawn(move || {
            let mut servers = servers;
            let mut last: HashMap<Addr, String> = HashMap::new();
            while !stop2.load(Ordering::Relaxed) {
                for (addr, info, con) in servers.iter_mut() {
                    if con.is_none() {
                        *con = redis::Client::open(info.clone()).ok().and_then(|c| {
                            c.get_connection_with_timeout(Duration::from_millis(200))
                                .ok()
                        });
                    }
                    let role = con.as_mut().and_then(role_of);
                    if role.is_none() {
                        *con = None;
                        continue;
                    }
                    let role = role.unwrap_or_default();
                    if last.get(addr) != Some(&role) {
                        last.insert(addr.clone(), role.clone());
                        changes2
                            .lock()
                            .unwrap()
                            .push((Instant::now(), addr.clone(), role));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        RoleHistory {
            stop,
            changes,
            handle: Some(handle),
        }
    }

    pub fn stop(&mut self) -> Vec<(Instant, Addr, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.changes.lock().unwrap().clone()
    }
}

impl Drop for RoleHistory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Checks that the key of every acknowledged write that `durable` selects is on `master`.
pub fn assert_acknowledged_writes_present(
    master: &Server,
    log: &WriteLog,
    durable: impl Fn(&Ack) -> bool,
) {
    let mut con = master.client();
    let keys: Vec<String> = log
        .acks
        .iter()
        .filter(|a| durable(a))
        .map(|a| format!("key:{}", a.n))
        .collect();
    for chunk in keys.chunks(500) {
        let vals: Vec<Option<String>> =
            redis::cmd("MGET").arg(chunk).query(&mut con).expect("MGET");
        for (k, v) in chunk.iter().zip(vals) {
            assert!(
                v.is_some(),
                "acknowledged {k} is missing on the final master {}",
                master.addr()
            );
        }
    }
}
