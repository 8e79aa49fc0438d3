//! A single server: start, talk, kill, restart, stop, on both versions.

use std::time::Duration;

use ferry_testkit::{wait_until, AclUser, Server, ServerOptions, Version};

fn set_get_roundtrip(server: &Server) {
    let mut con = server.client();
    redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .exec(&mut con)
        .unwrap();
    let v: String = redis::cmd("GET").arg("greeting").query(&mut con).unwrap();
    assert_eq!(v, "hello");
}

fn reports_version(server: &Server, v: Version) {
    let reported = server
        .info_field("server", "redis_version")
        .unwrap()
        .unwrap();
    assert_eq!(
        Version::parse(&reported),
        Some(v),
        "{} reported {reported}",
        server.describe()
    );
}

#[test]
fn standalone_starts_answers_and_restarts_on_both_versions() {
    for v in Version::all() {
        let mut server = Server::start(ServerOptions::new(v)).unwrap();
        assert_eq!(server.host(), "127.0.0.1");
        assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port()));
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        reports_version(&server, v);
        set_get_roundtrip(&server);
        assert!(
            server.log().contains("Ready to accept connections"),
            "log: {}",
            server.log()
        );

        let old_pid = server.pid().unwrap();
        server.kill();
        assert_eq!(server.pid(), None);
        assert!(server.try_client().is_err(), "killed server still answers");
        server.restart().unwrap();
        assert_ne!(server.pid(), Some(old_pid));
        set_get_roundtrip(&server);

        server.stop();
        assert!(!server.is_running());
        assert!(server.try_client().is_err(), "stopped server still answers");
    }
}

#[test]
fn debug_command_is_enabled_on_both_versions() {
    for v in Version::all() {
        let server = Server::start(ServerOptions::new(v)).unwrap();
        let mut con = server.client();
        redis::cmd("SET").arg("k").arg("v").exec(&mut con).unwrap();
        let digest: String = redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg("k")
            .query::<Vec<String>>(&mut con)
            .unwrap()
            .remove(0);
        assert_eq!(digest.len(), 40, "digest {digest}");
    }
}

#[test]
fn password_and_acl_user_are_required_and_used_by_client() {
    for v in Version::all() {
        let opts = ServerOptions::new(v)
            .password("default pass \"quoted\"")
            .acl_user(AclUser::new("ferry", "user-pass"))
            .client_user("ferry");
        let server = Server::start(opts.clone()).unwrap();
        assert_eq!(
            server.url(),
            format!("redis://ferry:user-pass@127.0.0.1:{}", server.port())
        );
        let mut con = server.client();
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
        assert_eq!(who, "ferry");

        let anon = redis::Client::open(format!("redis://127.0.0.1:{}", server.port())).unwrap();
        let mut anon = anon.get_connection().unwrap();
        let err = redis::cmd("GET")
            .arg("x")
            .query::<Option<String>>(&mut anon)
            .unwrap_err();
        assert!(
            err.to_string().contains("NOAUTH"),
            "unexpected error: {err}"
        );

        let default = redis::Client::open(format!(
            "redis://:{}@127.0.0.1:{}",
            "default%20pass%20%22quoted%22",
            server.port()
        ))
        .unwrap();
        let mut default = default.get_connection().unwrap();
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut default).unwrap();
        assert_eq!(who, "default");
        assert!(
            !format!("{opts:?}").contains("user-pass"),
            "Debug shows a password: {opts:?}"
        );
    }
}

#[test]
fn servers_get_distinct_ports_and_drop_kills_the_process() {
    let a = Server::start(ServerOptions::default()).unwrap();
    let b = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    assert_ne!(a.port(), b.port());
    let pid = a.pid().unwrap();
    let dir = a.dir().to_path_buf();
    drop(a);
    wait_until(
        Duration::from_secs(5),
        "the dropped server's process to disappear",
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .unwrap();
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn bad_config_gives_start_error_with_log() {
    let err = Server::start(ServerOptions::default().config("no-such-directive", "1")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("failed to start"), "{text}");
    assert!(
        text.contains("no-such-directive"),
        "log tail missing from: {text}"
    );
}

#[test]
fn port_taken_by_another_process_is_detected_not_waited_out() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    // Forcing the port (a later `port` line wins) makes every retry hit the squatter.
    let err = Server::start(ServerOptions::default().config("port", port.to_string())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("taken by another process"), "{text}");
    assert!(
        text.contains("Address already in use"),
        "log tail missing: {text}"
    );
}
