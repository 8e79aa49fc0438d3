//! Helpers of the DR tests: an application writing the whole time through whichever side of a pair is primary
//! (docs/dr.md: how an application follows the primary), counting the increments each side acknowledged, and
//! waits on a pair's running job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry::Side;
use ferry_testkit::wait_until;

/// Where an application reaches a side: one server (a master) or a cluster's nodes.
#[derive(Debug, Clone)]
pub enum Addr {
    One(String),
    Cluster(Vec<String>),
}

/// Plain connections to a side's masters, each with a hash tag of a slot it owns ("" for one server). The
/// application writes with these, never through a client that resends a command after a broken connection.
pub struct Conns(Vec<(redis::Connection, String)>);

impl Conns {
    /// The reply of the master that owns `key` (the others answer MOVED).
    pub fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut last = None;
        for (c, _) in &mut self.0 {
            match cmd.query::<T>(c) {
                Err(e) if e.code() == Some("MOVED") => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no master"))))
    }
}

impl Addr {
    pub fn connect(&self) -> Option<Conns> {
        let t = Duration::from_secs(2);
        let open = |url: &str| {
            redis::Client::open(url)
                .ok()?
                .get_connection_with_timeout(t)
                .ok()
        };
        match self {
            Addr::One(url) => Some(Conns(vec![(open(url)?, String::new())])),
            Addr::Cluster(masters) => {
                let mut out = Vec::new();
                for url in masters {
                    let mut c = open(url)?;
                    let tag = (0..1000).map(|i| format!("{{t{i}}}:")).find(|tag| {
                        redis::cmd("EXISTS")
                            .arg(format!("{tag}probe"))
                            .query::<i64>(&mut c)
                            .is_ok()
                    })?;
                    out.push((c, tag));
                }
                Some(Conns(out))
            }
        }
    }
}

/// The side the newest record names as primary (what an application reads when it connects).
pub fn primary_of(a_url: &Addr, b_url: &Addr, name: &str) -> Option<Side> {
    let key = format!("ferry:state:{{dr-{name}}}");
    let read = |addr: &Addr| -> Option<(u64, String)> {
        let mut c = addr.connect()?;
        let v: Option<String> = c.query(redis::cmd("GET").arg(&key)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&v?).ok()?;
        Some((v["epoch"].as_u64()?, v["phase"].as_str()?.to_string()))
    };
    let newest = match (read(a_url), read(b_url)) {
        (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
        (a, b) => a.or(b),
    }?;
    Some(match newest.1.as_str() {
        "normal" => Side::A,
        _ => Side::B,
    })
}

/// An application writing all the time through whichever side is primary: `INCR`s of a few counters and
/// `SET`s of new keys. It counts what was acknowledged, per side; it re-reads the primary after (re)connecting,
/// before writing (docs/dr.md: how an application follows the primary).
pub struct App {
    stop: Arc<AtomicBool>,
    /// Set while A is "lost": the application cannot reach A.
    pub a_down: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, i64>>>,
    writes: [Arc<AtomicU64>; 2],
    thread: Option<JoinHandle<()>>,
}

impl App {
    pub fn start(a_url: &Addr, b_url: &Addr, name: &str) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let a_down = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let writes = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let (a_url, b_url, name) = (a_url.clone(), b_url.clone(), name.to_string());
        let thread = {
            let (stop, a_down, acked, writes) =
                (stop.clone(), a_down.clone(), acked.clone(), writes.clone());
            std::thread::spawn(move || {
                let mut conn: Option<(Side, Conns)> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if conn.is_none() {
                        let Some(side) = primary_of(&a_url, &b_url, &name) else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        if side == Side::A && a_down.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let addr = if side == Side::A { &a_url } else { &b_url };
                        let Some(c) = addr.connect() else {
                            continue;
                        };
                        // Connected: confirm the primary before the first write.
                        if primary_of(&a_url, &b_url, &name) != Some(side) {
                            continue;
                        }
                        conn = Some((side, c));
                    }
                    let Some((side, c)) = conn.as_mut() else {
                        continue;
                    };
                    if *side == Side::A && a_down.load(Ordering::SeqCst) {
                        conn = None;
                        continue;
                    }
                    n += 1;
                    let k = (n as usize) % c.0.len();
                    let (c, tag) = &mut c.0[k];
                    let counter = format!("counter:{tag}{}", n % 7);
                    let r: redis::RedisResult<i64> = redis::cmd("INCR").arg(&counter).query(c);
                    let set: redis::RedisResult<()> = if r.is_ok() {
                        redis::cmd("SET")
                            .arg(format!("key:{tag}{n}"))
                            .arg(n)
                            .query(c)
                    } else {
                        Ok(())
                    };
                    match (r, set) {
                        (Ok(_), Ok(())) => {
                            *acked.lock().unwrap().entry(counter).or_insert(0) += 1;
                            writes[if *side == Side::A { 0 } else { 1 }]
                                .fetch_add(1, Ordering::SeqCst);
                        }
                        (Ok(_), Err(_)) => {
                            *acked.lock().unwrap().entry(counter).or_insert(0) += 1;
                            conn = None;
                        }
                        _ => conn = None,
                    }
                }
            })
        };
        App {
            stop,
            a_down,
            acked,
            writes,
            thread: Some(thread),
        }
    }

    pub fn writes_on(&self, side: Side) -> u64 {
        self.writes[if side == Side::A { 0 } else { 1 }].load(Ordering::SeqCst)
    }

    /// Waits until `n` more writes were acknowledged by `side`.
    pub fn wait_writes(&self, side: Side, n: u64) {
        let from = self.writes_on(side);
        wait_until(super::DEADLINE, "the application to write", || {
            self.writes_on(side) >= from + n
        })
        .unwrap();
    }

    pub fn finish(mut self) -> HashMap<String, i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Every counter on the server at `url` equals the increments the application saw acknowledged.
pub fn assert_counters(addr: &Addr, acked: &HashMap<String, i64>) {
    let mut c = addr.connect().unwrap();
    for (key, n) in acked {
        let v: i64 = c.query(redis::cmd("GET").arg(key)).unwrap();
        assert_eq!(v, *n, "{key}: value {v}, acknowledged increments {n}");
    }
}

/// The full copies of the pair's running job.
pub fn job_full_syncs(handle: &ferry::DrHandle) -> Option<u64> {
    handle.status().job.map(|j| j.full_syncs)
}

/// Waits until the pair runs the live stream of `direction` at `epoch`.
pub fn wait_job(handle: &ferry::DrHandle, direction: ferry::Direction, epoch: u64) {
    wait_until(super::DEADLINE, "the pair's job to run", || {
        let s = handle.status();
        s.direction == Some(direction)
            && s.epoch == epoch
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", handle.status()));
}
