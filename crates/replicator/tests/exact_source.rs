//! The source side of exactly-once, against real servers: the stream's database survives every kind of
//! resume, `REPLCONF ACK` reports only what the target holds, a slow target does not make the source drop
//! ferry, and errors a reconnect cannot fix stop the job.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{assert_same_data, master_offset, Job, ProcJob, DEADLINE};
use ferry_replicator::{Config, Error, Phase, Replicator};
use ferry_resp::ConnectOptions;
use ferry_testkit::{wait_until, Server, ServerOptions, Version};
use tokio_util::sync::CancellationToken;

fn servers() -> (Server, Server) {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    (source, target)
}

/// Writes mostly in database 2, with transactions that switch to database 1 inside `MULTI` and stay there
/// for a while (so the stream keeps database 1 selected after the `EXEC`, with no `SELECT` until the client
/// goes back to 2). Returns how many times each counter was incremented.
fn workload_db2(url: &str, rounds: u64, tag: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    let mut in_db1 = 0;
    for i in 0..rounds {
        redis::cmd("INCR")
            .arg(format!("ferry:counter:{tag}"))
            .exec(&mut c)
            .unwrap();
        redis::cmd("SET")
            .arg(format!("ferry:k:{tag}:{i}"))
            .arg(i)
            .arg("EX")
            .arg(100_000)
            .exec(&mut c)
            .unwrap();
        redis::cmd("HSET")
            .arg(format!("ferry:h:{tag}"))
            .arg(format!("f{}", i % 20))
            .arg(i)
            .exec(&mut c)
            .unwrap();
        if i % 4 == 0 {
            // MULTI; INCR (db 2); SELECT 1; INCR (db 1); EXEC: the connection is in db 1 afterwards.
            redis::pipe()
                .atomic()
                .cmd("INCR")
                .arg(format!("ferry:mtx:{tag}"))
                .cmd("SELECT")
                .arg(1)
                .cmd("INCR")
                .arg(format!("ferry:counter1:{tag}"))
                .exec(&mut c)
                .unwrap();
            in_db1 += 1;
            for j in 0..3 {
                redis::cmd("INCR")
                    .arg(format!("ferry:counter1:{tag}"))
                    .exec(&mut c)
                    .unwrap();
                redis::cmd("RPUSH")
                    .arg(format!("ferry:l1:{tag}"))
                    .arg(format!("{i}.{j}"))
                    .exec(&mut c)
                    .unwrap();
                in_db1 += 1;
            }
            redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
        }
    }
    (rounds, in_db1)
}

fn workload_db2_in_background(
    server: &Server,
    rounds: u64,
    tag: &str,
) -> std::thread::JoinHandle<(u64, u64)> {
    let (url, tag) = (server.url(), tag.to_string());
    std::thread::spawn(move || workload_db2(&url, rounds, &tag))
}

fn get_u64(server: &Server, db: i64, key: &str) -> u64 {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    let v: Option<u64> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    v.unwrap_or(0)
}

/// Every key in the right database, counters exact: the data databases compared key by key, database 0
/// (never written) empty on the target, each counter equal to the increments made.
fn assert_exact(source: &Server, target: &Server, tag: &str, counts: (u64, u64)) {
    assert_same_data(source, target, false);
    let mut c = target.client();
    let db0: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(db0, 0, "a write landed in database 0 of the target");
    assert_eq!(
        get_u64(target, 2, &format!("ferry:counter:{tag}")),
        counts.0
    );
    assert_eq!(
        get_u64(target, 1, &format!("ferry:counter1:{tag}")),
        counts.1
    );
}

fn kill_replica_links(source: &Server) -> u64 {
    let mut c = source.client();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut c)
        .unwrap()
}

/// Kills the replica link and waits until the job follows the stream again.
fn kill_link_and_wait(job: &Job, source: &Server) {
    let before = job.status.snapshot().reconnects;
    assert_eq!(kill_replica_links(source), 1);
    wait_until(DEADLINE, "the job to reconnect", || {
        let s = job.status.snapshot();
        s.reconnects > before && s.phase == Phase::Incremental
    })
    .unwrap();
}

#[test]
fn writes_in_db2_stay_in_their_database_after_replica_link_kills() {
    let (source, target) = servers();
    let job = Job::start(&source, &target, |_| {});
    job.wait_incremental();
    let mut c = source.client();
    // The stream selects db 2, the job applies it, the link dies; after +CONTINUE the source sends no SELECT.
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    redis::cmd("INCR")
        .arg("ferry:counter:link")
        .exec(&mut c)
        .unwrap();
    job.wait_caught_up(&source);
    kill_link_and_wait(&job, &source);
    redis::cmd("INCR")
        .arg("ferry:counter:link")
        .exec(&mut c)
        .unwrap();
    // A transaction that ends in db 1: the stream stays in db 1 after its EXEC.
    redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("ferry:mtx:link")
        .cmd("SELECT")
        .arg(1)
        .cmd("INCR")
        .arg("ferry:counter1:link")
        .exec(&mut c)
        .unwrap();
    job.wait_caught_up(&source);
    kill_link_and_wait(&job, &source);
    redis::cmd("INCR")
        .arg("ferry:counter1:link")
        .exec(&mut c)
        .unwrap();
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    job.wait_caught_up(&source);
    // Then kills under a live workload.
    let writer = workload_db2_in_background(&source, 1500, "link");
    for _ in 0..3 {
        wait_until(DEADLINE, "the job to follow the stream", || {
            get_u64(&target, 2, "ferry:counter:link") > 2
        })
        .unwrap();
        kill_link_and_wait(&job, &source);
    }
    let counts = writer.join().unwrap();
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 1,
        "the links were continued with +CONTINUE: {status}"
    );
    assert_exact(&source, &target, "link", (counts.0 + 2, counts.1 + 2));
}

#[test]
fn writes_in_db2_stay_in_their_database_after_the_job_is_sigkilled() {
    let (source, target) = servers();
    let job = ProcJob::start(&source, &target);
    job.wait_caught_up(&source);
    let writer = workload_db2_in_background(&source, 2000, "kill");
    wait_until(DEADLINE, "some live writes applied", || {
        get_u64(&target, 2, "ferry:counter:kill") > 200
    })
    .unwrap();
    job.kill();
    let job = ProcJob::start(&source, &target);
    let counts = writer.join().unwrap();
    job.wait_caught_up(&source);
    assert_eq!(
        job.full_syncs(),
        0,
        "the restarted job must continue with PSYNC: {}",
        job.status_line()
    );
    assert_exact(&source, &target, "kill", counts);
}

#[test]
fn a_source_restarted_from_its_rdb_is_continued_with_psync_in_the_right_database() {
    let mut source =
        Server::start(ServerOptions::new(Version::V7_0).config("save", "3600 1")).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_incremental();
    let first = workload_db2(&source.url(), 401, "restart");
    job.wait_caught_up(&source);
    let before = job.status.snapshot();
    // SHUTDOWN SAVE writes the RDB with the replication id, offset and stream database (repl-stream-db).
    let mut c = source.client();
    let _ = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query::<redis::Value>(&mut c);
    source.restart().unwrap();
    let second = workload_db2(&source.url(), 300, "restart2");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(status.reconnects > before.reconnects, "{status}");
    assert_eq!(
        status.full_syncs, 1,
        "the restarted source must be continued with PSYNC: {status}"
    );
    assert_exact(&source, &target, "restart", first);
    assert_eq!(
        get_u64(&target, 2, "ferry:counter:restart2"),
        second.0,
        "{status}"
    );
    assert_eq!(get_u64(&target, 1, "ferry:counter1:restart2"), second.1);
}

#[test]
fn wait_on_the_source_returns_only_once_the_target_holds_the_write() {
    let (source, target) = servers();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let mut t = target.client();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600_000)
        .arg("WRITE")
        .exec(&mut t)
        .unwrap();
    // WAIT counts replicas that acknowledged the last write of its own connection: both on one connection.
    let waiter = {
        let (source_url, target_url) = (source.url(), target.url());
        std::thread::spawn(move || {
            let mut s = redis::Client::open(source_url)
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("SET")
                .arg("ferry:wait:key")
                .arg("v")
                .exec(&mut s)
                .unwrap();
            let acked: u64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut s).unwrap();
            let mut t = redis::Client::open(target_url)
                .unwrap()
                .get_connection()
                .unwrap();
            let held: Option<String> = redis::cmd("GET")
                .arg("ferry:wait:key")
                .query(&mut t)
                .unwrap();
            (acked, held)
        })
    };
    let mut s = source.client();
    wait_until(DEADLINE, "the write on the source", || {
        redis::cmd("EXISTS")
            .arg("ferry:wait:key")
            .query::<u64>(&mut s)
            .unwrap()
            == 1
    })
    .unwrap();
    let written = master_offset(&source);
    // ferry has received the write, and has acknowledged the source twice since.
    let received = ferry_testkit::wait_for(DEADLINE, "the job to receive the write", || {
        let s = job.status.snapshot();
        (s.source_offset >= written).then_some(s.acks_sent)
    })
    .unwrap();
    wait_until(DEADLINE, "two more REPLCONF ACKs", || {
        job.status.snapshot().acks_sent >= received + 2
    })
    .unwrap();
    let held: Option<String> = redis::cmd("GET")
        .arg("ferry:wait:key")
        .query(&mut t)
        .unwrap();
    assert_eq!(held, None, "the target is paused");
    if waiter.is_finished() {
        panic!(
            "WAIT returned while the target did not hold the write: {:?}; {}",
            waiter.join(),
            job.status.snapshot()
        );
    }
    let status = job.status.snapshot();
    assert!(status.acked_offset < written, "{status}");
    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut t).unwrap();
    let (acked, held) = waiter.join().unwrap();
    assert_eq!(acked, 1);
    assert_eq!(
        held.as_deref(),
        Some("v"),
        "WAIT returned before the target held the write"
    );
}

/// A TCP server on 127.0.0.1 that answers every connection like an HTTP server answers garbage.
fn http_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, thread)
}

/// Runs a job until it stops by itself; the deadline only bounds a failing test.
fn run_until_it_stops(config: Config) -> Result<(), Error> {
    let job = Replicator::new(config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(DEADLINE, job.run(CancellationToken::new()))
            .await
            .expect("the job must stop by itself")
    })
}

#[test]
fn a_peer_that_is_not_redis_stops_the_job_with_a_clear_error() {
    let (port, _http) = http_server();
    let http = ConnectOptions::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let redis = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let real = ConnectOptions::from_url(&redis.url()).unwrap();
    for (source, target, side) in [
        (http.clone(), real.clone(), "source"),
        (real, http, "target"),
    ] {
        let mut cfg = Config::new(source, target);
        cfg.reconnect_backoff = Duration::from_millis(50);
        let err = run_until_it_stops(cfg).expect_err(side);
        let Error::GaveUp { attempts, last } = &err else {
            panic!("{side}: expected the job to give up, got {err}")
        };
        assert_eq!(*attempts, 3, "{side}: {err}");
        assert!(last.is_not_redis(), "{side}: {err}");
        assert!(err.to_string().contains("protocol error"), "{side}: {err}");
        assert!(
            err.to_string().contains(&format!(
                "127.0.0.1:{port} does not answer as a Redis server (it sent \"HTTP/1.1 400 Bad Request...\")"
            )),
            "{side}: {err}"
        );
    }
}

#[test]
fn a_wrong_password_stops_the_job_with_a_clear_error() {
    let source = Server::start(ServerOptions::new(Version::V7_0).password("right-one")).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let wrong = ConnectOptions::from_url(&format!(
        "redis://:not-the-password@127.0.0.1:{}",
        source.port()
    ))
    .unwrap();
    let mut cfg = Config::new(wrong, ConnectOptions::from_url(&target.url()).unwrap());
    cfg.reconnect_backoff = Duration::from_millis(50);
    let err = run_until_it_stops(cfg).unwrap_err();
    let Error::GaveUp { last, .. } = &err else {
        panic!("expected the job to give up, got {err}")
    };
    assert!(last.is_auth(), "{err}");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
}

/// Fills `server` with about `mb` megabytes of strings in database 0.
fn fill_mb(server: &Server, mb: usize) {
    let mut c = server.client();
    let value = "x".repeat(1000);
    for batch in 0..mb {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET")
                .arg(format!("ferry:big:{batch}:{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.exec(&mut c).unwrap();
    }
}

#[test]
fn a_full_copy_into_a_slow_target_under_a_small_output_buffer_limit_finishes_with_one_full_sync() {
    let source = Server::start(
        ServerOptions::new(Version::V7_0)
            .config("client-output-buffer-limit", "replica 8mb 4mb 10"),
    )
    .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill_mb(&source, 20);
    // The target is slowed down: it sleeps most of the time until the full copy is over.
    let stop_slowing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slower = {
        let (url, stop) = (target.url(), stop_slowing.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.2")
                    .exec(&mut c)
                    .unwrap();
            }
        })
    };
    let job = Job::start(&source, &target, |c| {
        c.sink.window_commands = 64;
        c.sink.window_bytes = 256 * 1024;
        // 1 MB in memory: the rest of what the target has not taken yet goes to the spool file.
        c.source.spool.memory_bytes = 1024 * 1024;
    });
    wait_until(DEADLINE, "the full copy to start", || {
        job.status.snapshot().phase == Phase::FullSync
    })
    .unwrap();
    // Live writes spread over the whole full copy (paced by its progress), 12 MB in all: half again the
    // source's hard limit. Without the spool they would wait in the source's output buffer until the target
    // had applied the RDB.
    let writer = {
        let (url, status) = (source.url(), job.status.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let value = "y".repeat(4000);
            let mut most_spooled = 0;
            for step in 0..40u64 {
                wait_until(DEADLINE, "the full copy to progress", || {
                    let s = status.snapshot();
                    most_spooled = most_spooled.max(s.spooled_bytes);
                    s.keys_done >= step * 500 || s.phase != Phase::FullSync
                })
                .unwrap();
                for i in step * 75..(step + 1) * 75 {
                    redis::cmd("SET")
                        .arg(format!("ferry:live:{}", i % 1500))
                        .arg(format!("{i}{value}"))
                        .exec(&mut c)
                        .unwrap();
                    redis::cmd("INCR")
                        .arg("ferry:live:counter")
                        .exec(&mut c)
                        .unwrap();
                }
            }
            most_spooled
        })
    };
    wait_until(DEADLINE, "the full copy to end", || {
        let s = job.status.snapshot();
        assert!(s.phase != Phase::Stopped, "the job stopped: {s}");
        s.phase == Phase::Incremental
    })
    .unwrap();
    let most_spooled = writer.join().unwrap();
    stop_slowing.store(true, std::sync::atomic::Ordering::Relaxed);
    slower.join().unwrap();
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "{status}");
    assert_eq!(status.reconnects, 0, "{status}");
    assert_same_data(&source, &target, false);
    assert_eq!(get_u64(&target, 0, "ferry:live:counter"), 3000);
    assert!(
        most_spooled > 2 * 1024 * 1024,
        "the spool file was used (at most {most_spooled} bytes were spooled)"
    );
}

#[test]
fn ferrys_own_keys_on_a_source_are_never_copied() {
    let (source, target) = servers();
    let mut s = source.client();
    redis::cmd("SET")
        .arg("ferry:checkpoint:{other}")
        .arg("from the other direction")
        .exec(&mut s)
        .unwrap();
    redis::cmd("SET")
        .arg("ferry:data:a")
        .arg(1)
        .exec(&mut s)
        .unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("ferry:state:pair")
        .arg("epoch 3")
        .cmd("INCR")
        .arg("ferry:data:b")
        .cmd("SET")
        .arg("ferry:checkpoint:{other}")
        .arg("newer")
        .exec(&mut s)
        .unwrap();
    job.wait_caught_up(&source);
    let mut t = target.client();
    for key in ["ferry:checkpoint:{other}", "ferry:state:pair"] {
        let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut t).unwrap();
        assert_eq!(exists, 0, "{key} was copied");
    }
    assert_eq!(get_u64(&target, 0, "ferry:data:a"), 1);
    assert_eq!(get_u64(&target, 0, "ferry:data:b"), 1);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn relative_ttls_of_a_6_2_source_are_not_extended_by_a_lagging_target() {
    let source = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let mut t = target.client();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600_000)
        .arg("WRITE")
        .exec(&mut t)
        .unwrap();
    let mut s = source.client();
    let ttl_ms = 600_000i64;
    redis::cmd("SETEX")
        .arg("ferry:ttl:setex")
        .arg(600)
        .arg("v")
        .exec(&mut s)
        .unwrap();
    redis::cmd("SET")
        .arg("ferry:ttl:set")
        .arg("v")
        .arg("PX")
        .arg(ttl_ms)
        .exec(&mut s)
        .unwrap();
    redis::cmd("SET")
        .arg("ferry:ttl:expire")
        .arg("v")
        .exec(&mut s)
        .unwrap();
    redis::cmd("EXPIRE")
        .arg("ferry:ttl:expire")
        .arg(600)
        .exec(&mut s)
        .unwrap();
    let written_by = now_ms();
    let written = master_offset(&source);
    // The target lags: ferry has the writes and acknowledges the source several times (seconds pass) before
    // the target applies anything.
    let received = ferry_testkit::wait_for(DEADLINE, "the job to receive the writes", || {
        let s = job.status.snapshot();
        (s.source_offset >= written).then_some(s.acks_sent)
    })
    .unwrap();
    wait_until(DEADLINE, "three more REPLCONF ACKs", || {
        job.status.snapshot().acks_sent >= received + 3
    })
    .unwrap();
    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut t).unwrap();
    job.wait_caught_up(&source);
    for key in ["ferry:ttl:setex", "ferry:ttl:set", "ferry:ttl:expire"] {
        let at: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut t).unwrap();
        assert!(at > 0, "{key} has no expiry on the target");
        // The source's own expiry is at most `written_by + ttl_ms`; ferry's receipt may follow the client's
        // reply by a moment, far less than the seconds the target lagged.
        assert!(
            at <= written_by + ttl_ms + 500,
            "{key} expires at {at}, later than the source's {}: the lag extended the TTL",
            written_by + ttl_ms
        );
    }
}

#[test]
fn an_output_buffer_disconnect_is_reported_with_the_sources_limit_and_recovered() {
    let source = Server::start(
        ServerOptions::new(Version::V7_0)
            .config("client-output-buffer-limit", "replica 8mb 4mb 10"),
    )
    .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    // A spool too small to absorb anything: the source's output buffer takes the backlog.
    let job = Job::start(&source, &target, |c| {
        c.source.spool.memory_bytes = 64 * 1024;
        c.source.spool.file_bytes = 0;
        c.flush_target_on_resync = true;
    });
    job.wait_caught_up(&source);
    let mut t = target.client();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600_000)
        .arg("WRITE")
        .exec(&mut t)
        .unwrap();
    let mut s = source.client();
    let value = "z".repeat(4000);
    let mut written = 0u64;
    // Write until the source drops ferry's link (its buffer passed 8 MB).
    wait_until(DEADLINE, "the source to drop the replica link", || {
        for i in 0..100u64 {
            redis::cmd("SET")
                .arg(format!("ferry:obl:{}", (written + i) % 500))
                .arg(&value)
                .exec(&mut s)
                .unwrap();
            redis::cmd("INCR")
                .arg("ferry:obl:counter")
                .exec(&mut s)
                .unwrap();
        }
        written += 100;
        source
            .info("replication")
            .unwrap()
            .contains("connected_slaves:0")
    })
    .unwrap();
    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut t).unwrap();
    wait_until(DEADLINE, "the job to report why the link closed", || {
        job.status
            .snapshot()
            .last_error
            .is_some_and(|e| e.contains("closed the replication link"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", job.status.snapshot()));
    let error = job.status.snapshot().last_error.unwrap();
    assert!(
        error.contains("client-output-buffer-limit replica"),
        "{error}"
    );
    assert!(error.contains("8388608 4194304 10"), "{error}");
    assert!(error.contains("spool was full"), "{error}");
    job.wait_caught_up(&source);
    assert_same_data(&source, &target, false);
    assert_eq!(get_u64(&target, 0, "ferry:obl:counter"), written);
}

/// Once `job` is live, writes an `HSET` on `source` and waits for the job to stop on it.
fn hset_until_the_job_stops(source: &Server, job: &Job) {
    job.wait_incremental();
    let mut s = source.client();
    redis::cmd("HSET")
        .arg("ferry:h")
        .arg("f")
        .arg("v")
        .exec(&mut s)
        .unwrap();
    wait_until(DEADLINE, "the job to stop", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap();
}

/// A target whose `COMMAND` table ferry can read: a live command missing from it follows the target policy
/// before it is sent (`stop`, the default: the job stops at once, naming the command and its key).
#[test]
fn a_command_missing_from_the_targets_command_table_stops_the_job_at_once() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target =
        Server::start(ServerOptions::new(Version::V7_0).config("rename-command", "HSET \"\""))
            .unwrap();
    let job = Job::start(&source, &target, |_| {});
    hset_until_the_job_stops(&source, &job);
    let reconnects = job.status.snapshot().reconnects;
    let err = job.stop().unwrap_err();
    assert!(matches!(err, Error::Target { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not know `hset`") && text.contains("\"ferry:h\""),
        "{text}"
    );
    assert_eq!(reconnects, 0, "no attempt repeated");
}

/// A target that hides its `COMMAND` table too: the command is sent, refused as unknown, and the job gives up
/// after a few attempts instead of looping.
#[test]
fn a_command_the_target_does_not_know_stops_the_job_after_a_few_attempts() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(
        ServerOptions::new(Version::V7_0)
            .config("rename-command", "HSET \"\"")
            .config("rename-command", "COMMAND \"\""),
    )
    .unwrap();
    let mut config = common::config(&source, &target);
    config.reconnect_backoff = Duration::from_millis(50);
    let job = Job::start_with(config);
    hset_until_the_job_stops(&source, &job);
    let err = job.stop().unwrap_err();
    let Error::GaveUp { attempts, last } = &err else {
        panic!("expected the job to give up, got {err}")
    };
    assert_eq!(*attempts, 3, "{err}");
    assert!(last.is_unknown_command(), "{err}");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("unknown redis command"),
        "{err}"
    );
}
