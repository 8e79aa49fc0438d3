//! An append-only file as the source (`Source::AofFile`, `ferry sync --source-type aof`, RedisShake's
//! `[aof_reader]`): the files real servers wrote (7.0's multi-part AOF after a rewrite, 6.2's single file with an
//! RDB preamble) replayed into another server end equal to the server that wrote them; a torn tail and an open
//! `MULTI` are dropped as Redis drops them; a recovery timestamp stops at its `#TS:` annotation.

mod common;

use std::path::Path;

use common::*;
use ferry::{Source, SyncConfig, SyncJob, Target};
use ferry_testkit::{
    fill, wait_until, FillOptions, Server, ServerOptions, Target as TkTarget, Version,
};

fn server() -> Server {
    Server::start(ServerOptions::new(Version::V7_0)).unwrap()
}

fn replay(path: &Path, timestamp: Option<i64>, target: &Server) -> ferry::Status {
    let source = Source::AofFile {
        path: path.to_path_buf(),
        timestamp,
    };
    let config = SyncConfig::new(source, Target::standalone(target.url()));
    runtime()
        .block_on(async { SyncJob::new(config)?.start()?.wait().await })
        .unwrap()
}

/// A server that appends every write and syncs it at once (the file is complete when the write returns).
fn aof_server(version: Version) -> Server {
    Server::start(
        ServerOptions::new(version)
            .config("appendonly", "yes")
            .config("appendfsync", "always")
            .config("aof-use-rdb-preamble", "yes"),
    )
    .unwrap()
}

/// Writes of every kind the live stream carries: counters, a transaction, expiries, deletes, another db.
fn writes(server: &Server, round: i64) {
    let mut c = server.client();
    for i in 0..50 {
        redis::cmd("INCR").arg("counter").exec(&mut c).unwrap();
        redis::cmd("HSET")
            .arg(format!("h:{}", i % 7))
            .arg(format!("f{round}"))
            .arg(i)
            .exec(&mut c)
            .unwrap();
    }
    redis::pipe()
        .atomic()
        .cmd("LPUSH")
        .arg("list")
        .arg(round)
        .cmd("SADD")
        .arg("set")
        .arg(round)
        .exec(&mut c)
        .unwrap();
    redis::cmd("SET")
        .arg(format!("ttl:{round}"))
        .arg("v")
        .arg("EX")
        .arg(3600)
        .exec(&mut c)
        .unwrap();
    redis::cmd("DEL").arg("h:3").exec(&mut c).unwrap();
    redis::cmd("SELECT").arg(3).exec(&mut c).unwrap();
    redis::cmd("SET")
        .arg(format!("db3:{round}"))
        .arg(round)
        .exec(&mut c)
        .unwrap();
}

fn rewrite_aof(server: &Server) {
    let mut c = server.client();
    redis::cmd("BGREWRITEAOF").exec(&mut c).unwrap();
    wait_until(DEADLINE, "the AOF rewrite ends", || {
        server
            .info_field("persistence", "aof_rewrite_in_progress")
            .ok()
            .flatten()
            .as_deref()
            == Some("0")
            && server
                .info_field("persistence", "aof_rewrite_scheduled")
                .ok()
                .flatten()
                .as_deref()
                == Some("0")
    })
    .unwrap();
}

#[test]
fn a_multi_part_aof_of_redis_7_replays_into_an_equal_server() {
    let source = aof_server(Version::V7_0);
    fill(&TkTarget::from(&source), &FillOptions::seed(21).dbs([0, 1])).unwrap();
    writes(&source, 1);
    // The rewrite makes an RDB base file; the writes after it go to a new incremental file.
    rewrite_aof(&source);
    writes(&source, 2);
    let dir = source.dir().join("appendonlydir");
    assert!(dir.is_dir(), "7.0 writes a multi-part AOF");
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let status = replay(&dir, None, &target);
    assert!(status.commands_applied > 100, "{status:?}");
    assert_equal(&TkTarget::from(&source), &TkTarget::from(&target));
    // The manifest itself names the same files.
    let manifest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))
        .unwrap();
    let again = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    replay(&manifest, None, &again);
    assert_equal(&TkTarget::from(&source), &TkTarget::from(&again));
}

#[test]
fn a_single_aof_with_an_rdb_preamble_of_redis_6_2_replays_into_an_equal_server() {
    let source = aof_server(Version::V6_2);
    fill(&TkTarget::from(&source), &FillOptions::seed(22)).unwrap();
    rewrite_aof(&source);
    writes(&source, 1);
    let file = source.dir().join("appendonly.aof");
    let head = std::fs::read(&file).unwrap();
    assert!(
        head.starts_with(b"REDIS"),
        "the rewrite wrote an RDB preamble"
    );
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    replay(&file, None, &target);
    assert_equal(&TkTarget::from(&source), &TkTarget::from(&target));
}

fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

#[test]
fn a_torn_tail_and_an_open_multi_are_dropped_and_a_timestamp_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appendonly.aof");
    let mut text = String::new();
    text.push_str("#TS:1000\r\n");
    text.push_str(&resp(&["SELECT", "0"]));
    text.push_str(&resp(&["SET", "a", "1"]));
    text.push_str(&resp(&["MULTI"]));
    text.push_str(&resp(&["INCR", "n"]));
    text.push_str(&resp(&["INCR", "n"]));
    text.push_str(&resp(&["EXEC"]));
    text.push_str("#TS:2000\r\n");
    text.push_str(&resp(&["SET", "b", "2"]));
    text.push_str(&resp(&["MULTI"]));
    text.push_str(&resp(&["SET", "never", "x"]));
    // A crash in the middle of appending a command.
    text.push_str("*3\r\n$3\r\nSET\r\n$1\r\nc");
    std::fs::write(&file, &text).unwrap();

    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    replay(&file, None, &target);
    let mut t = target.client();
    let keys: Vec<String> = {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut t).unwrap();
        k.sort();
        k
    };
    assert_eq!(
        keys,
        ["a", "b", "n"],
        "the open MULTI and the torn SET are not applied"
    );
    let n: i64 = redis::cmd("GET").arg("n").query(&mut t).unwrap();
    assert_eq!(n, 2);

    // Up to 1500: the first annotation later than it (2000) ends the replay.
    let until = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    replay(&file, Some(1500), &until);
    let mut u = until.client();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut u).unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "n"]);
}

#[test]
fn a_file_that_is_not_an_aof_fails_with_a_data_error_naming_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appendonly.aof");
    std::fs::write(&file, format!("{}GARBAGE\r\n", resp(&["SET", "a", "1"]))).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let config = SyncConfig::new(
        Source::AofFile {
            path: file.clone(),
            timestamp: None,
        },
        Target::standalone(target.url()),
    );
    let err = runtime()
        .block_on(async { SyncJob::new(config)?.start()?.wait().await })
        .unwrap_err();
    assert_eq!(err.kind(), ferry::ErrorKind::Data, "{err}");
    assert!(err.to_string().contains("appendonly.aof"), "{err}");
}

#[test]
fn ferry_sync_replays_the_aof_of_a_redisshake_aof_reader_file() {
    let source = aof_server(Version::V7_0);
    fill(&TkTarget::from(&source), &FillOptions::seed(23)).unwrap();
    writes(&source, 1);
    let target = server();
    let manifest = std::fs::read_dir(source.dir().join("appendonlydir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))
        .unwrap();
    let text = format!(
        "[aof_reader]\nfilepath = \"{}\"\ntimestamp = 0\n\n[redis_writer]\naddress = \"{}\"\n",
        manifest.display(),
        target.addr()
    );
    let (_dir, path) = write_file("aof.toml", &text);
    let mut ferry = Ferry::spawn(["sync", path.to_str().unwrap()]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert_equal(&TkTarget::from(&source), &TkTarget::from(&target));
    // The same with flags.
    let other = server();
    let mut ferry = Ferry::spawn([
        "sync",
        "--source-type",
        "aof",
        "--source-path",
        source.dir().join("appendonlydir").to_str().unwrap(),
        "--target",
        &other.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert_equal(&TkTarget::from(&source), &TkTarget::from(&other));
}

#[test]
fn an_aof_replays_into_a_cluster_target() {
    let source = aof_server(Version::V7_0);
    // One database: a cluster has only db 0.
    fill(&TkTarget::from(&source), &FillOptions::seed(24).dbs([0])).unwrap();
    rewrite_aof(&source);
    let mut c = source.client();
    for i in 0..200 {
        redis::cmd("INCR")
            .arg(format!("counter:{}", i % 20))
            .exec(&mut c)
            .unwrap();
    }
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("tx:{a}")
        .arg(1)
        .cmd("SET")
        .arg("tx:{b}")
        .arg(2)
        .exec(&mut c)
        .unwrap();
    let cluster = ferry_testkit::Cluster::start(Version::V7_0).unwrap();
    let config = SyncConfig::new(
        Source::AofFile {
            path: source.dir().join("appendonlydir"),
            timestamp: None,
        },
        Target::cluster(format!("redis://{}", cluster.masters()[0].addr())),
    );
    runtime()
        .block_on(async { SyncJob::new(config)?.start()?.wait().await })
        .unwrap();
    assert_equal(&TkTarget::from(&source), &cluster.target());
    // None of ferry's own keys is left on the masters (their per-master checkpoints of the replay are deleted).
    for m in cluster.masters() {
        let left: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("ferry:*")
            .query(&mut m.client())
            .unwrap();
        let left: Vec<String> = left
            .iter()
            .filter(|k| ferry_replicator::is_reserved_key(k))
            .map(|k| k.escape_ascii().to_string())
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", m.addr());
    }
}

/// One command in the AOF's RESP form, arguments as bytes.
fn resp_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A `FUNCTION DUMP` payload as Redis 7.0 RC1/RC2 wrote it: one library under opcode 246 (name, engine, a
/// description, the body without its `#!` line).
fn pre_ga_function_payload(name: &str, body: &str) -> Vec<u8> {
    use ferry_rdb::encode::{put_len, put_string};
    let mut lib = vec![246u8];
    put_string(&mut lib, name.as_bytes());
    put_string(&mut lib, b"LUA");
    put_len(&mut lib, 1);
    put_string(&mut lib, b"a library of the release candidate");
    put_string(&mut lib, body.as_bytes());
    ferry_rdb::build_dump(&lib, 10)
}

#[test]
fn function_commands_of_a_redis_7_0_release_candidate_replay_into_7_0_and_8_2() {
    // Redis 7.0 RC1/RC2 loaded libraries with `FUNCTION LOAD <engine> <name> [REPLACE] [DESCRIPTION d] <body>`
    // and dumped them under RDB opcode 246; GA servers refuse both. Their AOFs still hold them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appendonly.aof");
    let mut aof = resp_bytes(&[b"SELECT", b"0"]);
    aof.extend(resp_bytes(&[
        b"FUNCTION",
        b"LOAD",
        b"Lua",
        b"lib1",
        b"DESCRIPTION",
        b"first",
        b"redis.register_function('f1', function(keys, args) return 1 end)",
    ]));
    aof.extend(resp_bytes(&[
        b"FUNCTION",
        b"LOAD",
        b"Lua",
        b"lib1",
        b"REPLACE",
        b"redis.register_function('f1', function(keys, args) return 11 end)",
    ]));
    let payload = pre_ga_function_payload(
        "lib2",
        "redis.register_function('f2', function(keys, args) return 2 end)",
    );
    aof.extend(resp_bytes(&[b"FUNCTION", b"RESTORE", &payload]));
    aof.extend(resp_bytes(&[b"SET", b"after", b"x"]));
    std::fs::write(&file, &aof).unwrap();

    for version in [Version::V7_0, Version::V8_2] {
        let target = Server::start(ServerOptions::new(version)).unwrap();
        replay(&file, None, &target);
        let mut t = target.client();
        let f1: i64 = redis::cmd("FCALL").arg("f1").arg(0).query(&mut t).unwrap();
        let f2: i64 = redis::cmd("FCALL").arg("f2").arg(0).query(&mut t).unwrap();
        let after: String = redis::cmd("GET").arg("after").query(&mut t).unwrap();
        assert_eq!((f1, f2, after.as_str()), (11, 2, "x"), "{version:?}");
    }
}
