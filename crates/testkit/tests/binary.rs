//! The `ferry-testkit` binary prints addresses as JSON and stops everything on stdin EOF or SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_testkit::wait_until;

fn launch(args: &[&str]) -> (Child, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-testkit"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
    (child, json)
}

fn ping(addr: &str, password: Option<&str>) -> bool {
    let url = match password {
        Some(p) => format!("redis://:{p}@{addr}"),
        None => format!("redis://{addr}"),
    };
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut con).is_ok()
}

fn addrs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn wait_exit(child: &mut Child) {
    wait_until(Duration::from_secs(30), "ferry-testkit to exit", || {
        matches!(child.try_wait(), Ok(Some(_)))
    })
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn sentinel_group_json_and_stop_on_stdin_eof() {
    let (mut child, json) = launch(&["start", "sentinel", "--version", "6.2", "--password", "pw"]);
    assert_eq!(json["kind"], "sentinel");
    assert_eq!(json["master_name"], "mymaster");
    assert_eq!(json["version"], "6.2");
    let master = json["master"].as_str().unwrap().to_string();
    let replicas = addrs(&json["replicas"]);
    let sentinels = addrs(&json["sentinels"]);
    assert_eq!((replicas.len(), sentinels.len()), (2, 3));
    assert!(master.starts_with("127.0.0.1:"));
    assert!(ping(&master, Some("pw")));
    assert!(sentinels.iter().all(|s| ping(s, None)));

    drop(child.stdin.take());
    wait_exit(&mut child);
    assert!(!ping(&master, Some("pw")), "master still up after exit");
    assert!(
        sentinels.iter().all(|s| !ping(s, None)),
        "a sentinel is still up after exit"
    );
}

#[test]
fn cluster_json_and_stop_on_sigterm() {
    let (mut child, json) = launch(&["start", "cluster", "--no-stdin"]);
    assert_eq!(json["kind"], "cluster");
    let nodes = addrs(&json["nodes"]);
    assert_eq!(nodes.len(), 6);
    assert_eq!(addrs(&json["masters"]).len(), 3);
    assert!(nodes.iter().all(|n| ping(n, None)));

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    wait_exit(&mut child);
    assert!(
        nodes.iter().all(|n| !ping(n, None)),
        "a cluster node is still up after SIGTERM"
    );
}

#[test]
fn standalone_and_replicas_json() {
    let (mut child, json) = launch(&["start", "standalone", "--version", "7.0"]);
    assert_eq!(json["kind"], "standalone");
    let addr = json["addr"].as_str().unwrap().to_string();
    assert!(ping(&addr, None));
    drop(child.stdin.take());
    wait_exit(&mut child);

    let (mut child, json) = launch(&["start", "replicas", "--replicas", "1"]);
    assert_eq!(json["kind"], "replicas");
    assert_eq!(addrs(&json["replicas"]).len(), 1);
    assert!(ping(json["master"].as_str().unwrap(), None));
    drop(child.stdin.take());
    wait_exit(&mut child);
}

#[test]
fn servers_die_when_the_launcher_is_killed_without_cleanup() {
    let (mut child, json) = launch(&["start", "replicas", "--replicas", "1", "--no-stdin"]);
    let master = json["master"].as_str().unwrap().to_string();
    let replica = addrs(&json["replicas"]).remove(0);
    assert!(ping(&master, None) && ping(&replica, None));
    child.kill().unwrap(); // SIGKILL: no destructor runs in the launcher
    child.wait().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the watchdog to kill the orphaned servers",
        || !ping(&master, None) && !ping(&replica, None),
    )
    .unwrap();
}
