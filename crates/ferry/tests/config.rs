//! The configuration: one meaning in TOML, JSON and RedisShake's files; secrets never shown; every key known.

mod common;

use ferry::{
    CheckpointConfig, ConfigFormat, Conflict, Endpoint, ErrorKind, FilterConfig, Limits, Source,
    SyncConfig, Target, TlsConfig,
};

fn full_config() -> SyncConfig {
    let mut filter = FilterConfig::default();
    filter.allow_dbs = vec![0, 1];
    filter.block_dbs = vec![15];
    filter.allow_keys = vec!["a".into()];
    filter.block_keys = vec!["b".into()];
    filter.allow_key_prefixes = vec!["app:".into()];
    filter.block_key_prefixes = vec!["tmp:".into()];
    filter.allow_key_suffixes = vec![":x".into()];
    filter.block_key_suffixes = vec![":y".into()];
    filter.allow_key_regexes = vec!["^a".into()];
    filter.block_key_regexes = vec!["z$".into()];
    filter.allow_commands = vec!["SET".into()];
    filter.block_commands = vec!["FLUSHALL".into()];
    let mut checkpoint = CheckpointConfig::default();
    checkpoint.tag = "job-1".into();
    checkpoint.db = 3;
    checkpoint.enabled = false;
    let mut limits = Limits::default();
    limits.window_commands = 10;
    limits.reply_timeout_ms = 7;
    let tls = TlsConfig::new()
        .with_ca_file("/ca.pem")
        .with_client_cert("/c.pem", "/k.pem")
        .with_insecure_skip_verify(true);
    let source = Endpoint::new("rediss://u:url-secret@127.0.0.1:1/1")
        .with_username("user")
        .with_password("source-secret")
        .with_password_env("SRC_PW")
        .with_tls(tls);
    let mut c = SyncConfig::new(
        Source::Standalone(source),
        Target::Cluster {
            seeds: vec![
                Endpoint::new("redis://127.0.0.1:2").with_password("target-secret"),
                Endpoint::new("redis://127.0.0.1:3"),
            ],
        },
    )
    .with_filter(filter)
    .with_checkpoint(checkpoint)
    .with_limits(limits)
    .with_conflict(Conflict::Skip)
    .with_db_map(1, 0)
    .with_until_caught_up(true);
    c.flush_target_on_resync = true;
    c.run.metrics_addr = Some("127.0.0.1:9".into());
    c.run.status_addr = Some("127.0.0.1:10".into());
    c.run.verify = true;
    c
}

#[test]
fn every_field_written_as_toml_is_read_back_the_same() {
    let config = full_config();
    let text = toml::to_string(&config).unwrap();
    let loaded = SyncConfig::load_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(loaded.format, ConfigFormat::Ferry);
    assert_eq!(loaded.config, config);
    // And every other source kind, so the schema knows their keys.
    for source in [
        r#"{"type":"cluster","seeds":["redis://127.0.0.1:1"],"shards":["127.0.0.1:1"],"prefer_replica":true}"#,
        r#"{"type":"sentinel","sentinels":["redis://127.0.0.1:1"],"master":"m","master_auth":{"username":"u","password":"p","password_env":"E","tls":{}}}"#,
        r#"{"type":"scan","endpoint":"redis://127.0.0.1:1","dbs":[0],"notifications":true,"cluster":true}"#,
        r#"{"type":"rdb_file","path":"/x.rdb"}"#,
    ] {
        let mut c = full_config();
        c.source = serde_json::from_str(source).unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(
            SyncConfig::load_toml(&text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .config,
            c
        );
    }
    let mut c = full_config();
    c.target = serde_json::from_str(
        r#"{"type":"sentinel","sentinels":["redis://127.0.0.1:1"],"master":"m"}"#,
    )
    .unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(SyncConfig::load_toml(&text).unwrap().config, c);
}

#[test]
fn json_and_toml_say_the_same_thing() {
    let toml_text = r#"
conflict = "rewrite"
[source]
type = "standalone"
url = "redis://127.0.0.1:6379"
[target]
type = "cluster"
seeds = ["redis://127.0.0.1:7000", { url = "redis://127.0.0.1:7001", password_env = "PW" }]
[filter]
block_key_prefixes = ["tmp:"]
[db_map]
"1" = 0
"#;
    let json_text = r#"{
        "conflict": "rewrite",
        "source": {"type": "standalone", "url": "redis://127.0.0.1:6379"},
        "target": {"type": "cluster", "seeds": ["redis://127.0.0.1:7000", {"url": "redis://127.0.0.1:7001", "password_env": "PW"}]},
        "filter": {"block_key_prefixes": ["tmp:"]},
        "db_map": {"1": 0}
    }"#;
    let a = SyncConfig::from_toml_str(toml_text).unwrap();
    let b = SyncConfig::from_json_str(json_text).unwrap();
    assert_eq!(a, b);
    let again = SyncConfig::from_json_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(again, a);
}

#[test]
fn secrets_are_masked_in_debug_and_redacted_output() {
    let config = full_config();
    let debug = format!("{config:?}");
    let redacted = config.to_redacted_json().to_string();
    let toml_text = config.to_redacted_toml();
    for shown in [&debug, &redacted, &toml_text] {
        for secret in ["source-secret", "target-secret", "url-secret"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
    }
    assert!(
        redacted.contains("rediss://u:***@127.0.0.1:1/1"),
        "{redacted}"
    );
    assert!(redacted.contains(r#""password":"***""#), "{redacted}");
}

#[test]
fn unknown_json_fields_are_config_errors() {
    let e = SyncConfig::from_json_str(r#"{"source":{"type":"standalone","url":"redis://a"},"target":{"type":"standalone","url":"redis://b"},"conflcit":"skip"}"#)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("conflcit"), "{e}");
}

#[test]
fn the_redisshake_v3_fixture_becomes_a_cluster_target_config() {
    let loaded =
        SyncConfig::load_path(common::shared_dir().join("fixtures/redisshake-v3-sync.toml"))
            .unwrap();
    assert_eq!(loaded.format, ConfigFormat::RedisShakeV3);
    let c = loaded.config;
    let Source::Standalone(src) = &c.source else {
        panic!("{:?}", c.source)
    };
    assert_eq!(src.url, "redis://10.233.109.145:6379");
    assert_eq!(
        src.password.as_ref().map(|p| p.expose()),
        Some("3wPxzWffdn")
    );
    let Target::Cluster { seeds } = &c.target else {
        panic!("{:?}", c.target)
    };
    assert_eq!(seeds[0].url, "redis://10.233.103.2:6379");
    assert_eq!(c.conflict, Conflict::Rewrite);
    assert_eq!(c.limits.window_commands, 1024);
    assert_eq!(c.limits.max_restore_bytes, 16 * 1024 * 1024);
    // One RedisShake process per source master into one target: each job's checkpoints under its own tag.
    assert_eq!(c.checkpoint.tag, "shake:10.233.109.145:6379");
    for key in [
        "advanced.ncpu",
        "advanced.pprof_port",
        "source.version",
        "advanced.log_file",
    ] {
        assert!(
            loaded.notes.iter().any(|n| n.contains(&format!("`{key}`"))),
            "no note for {key}: {:?}",
            loaded.notes
        );
    }
}

#[test]
fn the_redisshake_v4_fixture_becomes_a_filtered_config() {
    let loaded =
        SyncConfig::load_path(common::shared_dir().join("fixtures/redisshake-v4-shake.toml"))
            .unwrap();
    assert_eq!(loaded.format, ConfigFormat::RedisShakeV4);
    let c = loaded.config;
    assert!(
        matches!(&c.source, Source::Cluster { seeds, prefer_replica: false, .. } if seeds[0].url == "redis://127.0.0.1:30001")
    );
    assert!(
        matches!(&c.target, Target::Standalone(e) if e.url == "redis://127.0.0.1:6380" && e.password.is_none())
    );
    assert_eq!(c.filter.block_key_prefixes, vec!["tmp:".to_string()]);
    assert_eq!(c.filter.block_dbs, vec![15]);
    assert_eq!(
        c.filter.block_commands,
        vec!["FLUSHALL".to_string(), "FLUSHDB".to_string()]
    );
    assert_eq!(c.conflict, Conflict::Panic);
    // A cluster reader is one job for every shard: the default tag.
    assert_eq!(c.checkpoint.tag, "ferry");
    assert!(loaded
        .notes
        .iter()
        .any(|n| n.contains("`module.target_mbbloom_version`")));
}

#[test]
fn redisshake_empty_db_before_sync_empties_the_target_before_each_copy_except_for_a_cluster_reader()
{
    let text = "[sync_reader]\naddress = \"127.0.0.1:1\"\n[redis_writer]\naddress = \"127.0.0.1:2\"\n[advanced]\nempty_db_before_sync = true\n";
    let loaded = SyncConfig::load_toml(text).unwrap();
    assert!(loaded.config.flush_target_before_copy);
    assert!(!loaded.config.flush_target_on_resync);
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("`advanced.empty_db_before_sync` (line 6)")),
        "{:?}",
        loaded.notes
    );
    let text = "[sync_reader]\ncluster = true\naddress = \"127.0.0.1:1\"\n[redis_writer]\naddress = \"127.0.0.1:2\"\n[advanced]\nempty_db_before_sync = true\n";
    let e = SyncConfig::from_toml_str(text).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string().contains(
            "line 7: `advanced.empty_db_before_sync` must be false with a cluster reader"
        ),
        "{e}"
    );
    // ferry's own schema: the same option, refused with a cluster source by the check every job runs.
    let text = "flush_target_before_copy = true\n[source]\ntype = \"cluster\"\nseeds = [\"redis://127.0.0.1:1\"]\n[target]\ntype = \"standalone\"\nurl = \"redis://127.0.0.1:2\"\n";
    let e = SyncConfig::from_toml_str(text)
        .and_then(|c| c.validate().map(|_| c))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("flush_target_before_copy: not with a cluster source"),
        "{e}"
    );
}

#[test]
fn redisshake_sync_aof_false_is_a_one_time_copy() {
    let text = "[sync_reader]\naddress = \"127.0.0.1:1\"\nsync_aof = false\n[redis_writer]\naddress = \"127.0.0.1:2\"\n";
    let loaded = SyncConfig::load_toml(text).unwrap();
    assert!(loaded.config.until_caught_up);
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("`sync_reader.sync_aof = false` (line 3): a one-time copy")),
        "{:?}",
        loaded.notes
    );
    let live = text.replace("sync_aof = false", "sync_aof = true");
    assert!(!SyncConfig::load_toml(&live).unwrap().config.until_caught_up);
}

#[test]
fn redisshake_aws_psync_names_psync_per_source_node() {
    // RedisShake's own example: the first item of an address wins.
    let text = "[sync_reader]\naddress = \"10.0.0.1:6379\"\n[redis_writer]\naddress = \"127.0.0.1:2\"\n[advanced]\n\
                aws_psync = \"10.0.0.1:6379@nmfu2sl5osync,10.0.0.1:6379@xhma21xfkssync, 10.0.0.2:6379@other\"\n";
    let c = SyncConfig::from_toml_str(text).unwrap();
    assert_eq!(c.psync_commands.len(), 2);
    assert_eq!(c.psync_commands["10.0.0.1:6379"], "nmfu2sl5osync");
    assert_eq!(c.psync_commands["10.0.0.2:6379"], "other");
    let text = "[sync_reader]\naddress = \"10.0.0.1:6379\"\n[redis_writer]\naddress = \"127.0.0.1:2\"\n[advanced]\naws_psync = \"nmfu2sl5osync\"\n";
    let e = SyncConfig::from_toml_str(text).unwrap_err();
    assert!(
        e.to_string().contains(
            "line 6: `advanced.aws_psync` must be a list of `ip:port@command` separated by commas"
        ),
        "{e}"
    );
    // ferry's own schema: a map from `host:port` to the name.
    let text = "[source]\ntype = \"standalone\"\nurl = \"redis://127.0.0.1:1\"\n[target]\ntype = \"standalone\"\n\
                url = \"redis://127.0.0.1:2\"\n[psync_commands]\n\"127.0.0.1:1\" = \"shakesync\"\n";
    let c = SyncConfig::from_toml_str(text).unwrap();
    assert_eq!(c.psync_commands["127.0.0.1:1"], "shakesync");
    let bad = text.replace("\"127.0.0.1:1\" =", "\"127.0.0.1\" =");
    let e = SyncConfig::from_toml_str(&bad)
        .and_then(|c| c.validate().map(|_| c))
        .unwrap_err();
    assert!(e.to_string().contains("is not a source node's"), "{e}");
}

#[test]
fn redisshake_options_ferry_cannot_honour_yet_are_errors_not_silence() {
    let text = "[sync_reader]\naddress = \"127.0.0.1:1\"\n[redis_writer]\naddress = \"127.0.0.1:2\"\n[filter]\nfunction = \"return\"\n";
    let e = SyncConfig::from_toml_str(text).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("not supported yet: Lua `function` filters"),
        "{e}"
    );
    let text = "type = \"sync\"\n[source]\naddress = \"127.0.0.1:1\"\n[target]\ntype = \"cluster\"\naddress = \"127.0.0.1:2\"\n[advanced]\npipeline_count_limit = \"many\"\n";
    let e = SyncConfig::from_toml_str(text).unwrap_err();
    assert!(
        e.to_string()
            .contains("line 8: `advanced.pipeline_count_limit` must be an integer"),
        "{e}"
    );
}

#[test]
fn what_is_not_supported_is_a_config_error_naming_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A file has no keyspace to compare against.
        let e = ferry::verify(
            &Source::rdb_file("/backups/dump.rdb"),
            &Target::standalone("redis://127.0.0.1:2"),
            Default::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string()
                .starts_with("not supported yet: verify of an RDB file"),
            "{e}"
        );
    });
}

#[test]
fn a_missing_password_variable_is_named() {
    let e = Endpoint::new("redis://127.0.0.1:1")
        .with_password_env("FERRY_TEST_NO_SUCH_VARIABLE")
        .connect_options()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("\"FERRY_TEST_NO_SUCH_VARIABLE\", which is not set"),
        "{e}"
    );
}

#[test]
fn error_kinds_have_stable_names() {
    let names: Vec<&str> = [
        ErrorKind::Config,
        ErrorKind::Auth,
        ErrorKind::Connection,
        ErrorKind::TargetRefused,
        ErrorKind::SourceRefused,
        ErrorKind::Data,
        ErrorKind::Fenced,
        ErrorKind::Stopped,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "config",
            "auth",
            "connection",
            "target_refused",
            "source_refused",
            "data",
            "fenced",
            "stopped"
        ]
    );
    assert_eq!(
        serde_json::to_string(&ErrorKind::TargetRefused).unwrap(),
        "\"target_refused\""
    );
}

#[test]
fn the_redisshake_3_0_layout_with_the_mode_in_source_is_read_and_rewrites_by_default() {
    // RedisShake 3.0.x named the mode in [source]; 3.x restores with `rewrite` unless told otherwise.
    let restore = "[source]\ntype = \"restore\"\nrdb_file_path = \"/backups/dump.rdb\"\n\n\
                   [target]\ntype = \"standalone\"\naddress = \"127.0.0.1:6380\"\n";
    let loaded = SyncConfig::load_toml(restore).unwrap();
    assert_eq!(loaded.format, ConfigFormat::RedisShakeV3);
    assert_eq!(loaded.config.source, Source::rdb_file("/backups/dump.rdb"));
    assert_eq!(loaded.config.conflict, Conflict::Rewrite);
    let sync = "[source]\ntype = \"sync\"\naddress = \"127.0.0.1:6379\"\n\n\
                [target]\ntype = \"cluster\"\naddress = \"127.0.0.1:7000\"\n";
    let loaded = SyncConfig::load_toml(sync).unwrap();
    assert_eq!(
        loaded.config.source,
        Source::standalone("redis://127.0.0.1:6379")
    );
    let both = format!("type = \"scan\"\n{sync}");
    let e = SyncConfig::load_toml(&both).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("source.type"), "{e}");
}

#[test]
fn the_first_redisshake_3_beta_lists_target_addresses() {
    // RedisShake 3.0.0-beta: `[target] addresses = [...]`, and no mode anywhere (sync).
    let text = |kind: &str, addresses: &str| {
        format!(
            "[source]\naddress = \"127.0.0.1:6379\"\npassword = \"\"\ntls = false\n\n\
             [target]\ntype = \"{kind}\"\naddresses = {addresses}\npassword = \"\"\ntls = false\n\n\
             [advanced]\ndir = \"data\"\nncpu = 3\nrdb_restore_command_behavior = \"rewrite\"\n"
        )
    };
    let loaded = SyncConfig::load_toml(&text("standalone", "[\"127.0.0.1:6380\"]")).unwrap();
    assert_eq!(loaded.format, ConfigFormat::RedisShakeV3);
    assert_eq!(
        loaded.config.target,
        Target::standalone("redis://127.0.0.1:6380")
    );
    let loaded = SyncConfig::load_toml(&text(
        "cluster",
        "[\"127.0.0.1:7000\", \"127.0.0.1:7001\", \"127.0.0.1:7002\"]",
    ))
    .unwrap();
    match &loaded.config.target {
        Target::Cluster { seeds } => assert_eq!(
            seeds.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(),
            [
                "redis://127.0.0.1:7000",
                "redis://127.0.0.1:7001",
                "redis://127.0.0.1:7002"
            ]
        ),
        other => panic!("{other:?}"),
    }
    for (kind, addresses, says) in [
        (
            "standalone",
            "[\"127.0.0.1:6380\", \"127.0.0.1:6381\"]",
            "one address",
        ),
        ("cluster", "[]", "non-empty list"),
        ("cluster", "\"127.0.0.1:7000\"", "list of strings"),
    ] {
        let e = SyncConfig::load_toml(&text(kind, addresses)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let e = e.to_string();
        assert!(
            e.contains("line 8") && e.contains("target.addresses") && e.contains(says),
            "{e}"
        );
    }
    let both = text("cluster", "[\"127.0.0.1:7000\"]")
        .replace("[advanced]", "address = \"127.0.0.1:7000\"\n[advanced]");
    let e = SyncConfig::load_toml(&both).unwrap_err().to_string();
    assert!(
        e.contains("target.addresses") && e.contains("one or the other"),
        "{e}"
    );
}

#[test]
fn redisshake_v4_command_groups_become_command_lists() {
    let text = |filter: &str| {
        format!(
            "[sync_reader]\naddress = \"127.0.0.1:6379\"\n\n[redis_writer]\naddress = \"127.0.0.1:6380\"\n\n\
             [filter]\n{filter}\n"
        )
    };
    let f = SyncConfig::load_toml(&text("allow_command_group = [\"STRING\", \"sorted-set\"]"))
        .unwrap()
        .config
        .filter;
    for c in ["set", "incr", "append", "zadd", "zincrby"] {
        assert!(
            f.allow_commands.iter().any(|a| a == c),
            "{c}: {:?}",
            f.allow_commands
        );
    }
    assert!(!f.allow_commands.iter().any(|a| a == "hset" || a == "del"));
    let f = SyncConfig::load_toml(&text(
        "block_command = [\"FLUSHALL\"]\nblock_command_group = [\"SCRIPTING\", \"PUBSUB\"]",
    ))
    .unwrap()
    .config
    .filter;
    for c in ["FLUSHALL", "eval", "function", "script", "publish"] {
        assert!(
            f.block_commands.iter().any(|b| b == c),
            "{c}: {:?}",
            f.block_commands
        );
    }
    assert!(f.allow_commands.is_empty());
    // Both lists: a command must be in each.
    let f = SyncConfig::load_toml(&text(
        "allow_command = [\"SET\", \"HSET\"]\nallow_command_group = [\"STRING\"]",
    ))
    .unwrap()
    .config
    .filter;
    assert_eq!(f.allow_commands, ["SET"]);
    for (filter, says) in [
        (
            "allow_command = [\"HSET\"]\nallow_command_group = [\"STRING\"]",
            "no live command passes both",
        ),
        (
            "block_command_group = [\"SORTEDSET\"]",
            "did you mean \"SORTED_SET\"",
        ),
    ] {
        let e = SyncConfig::load_toml(&text(filter)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let e = e.to_string();
        assert!(
            e.contains("line ") && e.contains("command_group") && e.contains(says),
            "{e}"
        );
    }
}

#[test]
fn a_redisshake_v4_sentinel_writer_gives_its_credentials_to_the_sentinel_and_the_master() {
    // RedisShake asks the sentinel for the master's address, then connects to the master with the same
    // username, password and TLS.
    let text = "[sync_reader]\naddress = \"127.0.0.1:6379\"\n\n[redis_writer]\nsentinel = true\n\
                master = \"mymaster\"\naddress = \"127.0.0.1:26379\"\nusername = \"app\"\n\
                password = \"writer-secret\"\ntls = true\n";
    let c = SyncConfig::load_toml(text).unwrap().config;
    let Target::Sentinel {
        sentinels,
        master,
        master_auth,
    } = &c.target
    else {
        panic!("{:?}", c.target)
    };
    assert_eq!(master, "mymaster");
    assert_eq!(sentinels.len(), 1);
    assert_eq!(sentinels[0].url, "rediss://127.0.0.1:26379");
    assert_eq!(sentinels[0].username.as_deref(), Some("app"));
    assert_eq!(master_auth.username.as_deref(), Some("app"));
    assert_eq!(
        master_auth.password.as_ref().map(|p| p.expose()),
        Some("writer-secret")
    );
    // RedisShake dials TLS without checking certificates; so does a RedisShake file here, with a note.
    assert!(master_auth
        .tls
        .as_ref()
        .is_some_and(|t| t.insecure_skip_verify));
    assert!(sentinels[0]
        .tls
        .as_ref()
        .is_some_and(|t| t.insecure_skip_verify));
    assert!(!format!("{c:?}").contains("writer-secret"));
    let notes = SyncConfig::load_toml(text).unwrap().notes;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("`redis_writer.tls` (line 10): TLS without checking")),
        "{notes:?}"
    );
    // Without the name the sentinels monitor there is no master to ask for.
    let e = SyncConfig::load_toml(&text.replace("master = \"mymaster\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`redis_writer.master`"), "{e}");
}

#[test]
fn redisshake_v4_reader_keys_belong_to_their_reader() {
    let writer = "\n[redis_writer]\naddress = \"127.0.0.1:6380\"\n";
    // A scan reader's keys in the sync reader are a typo, not a silent no-op.
    let e = SyncConfig::load_toml(&format!(
        "[sync_reader]\naddress = \"127.0.0.1:6379\"\nksn = true\n{writer}"
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string().contains("line 3") && e.to_string().contains("ksn"),
        "{e}"
    );
    // `scan = false` (notifications only, no copy) is refused by name.
    let e = SyncConfig::load_toml(&format!(
        "[scan_reader]\naddress = \"127.0.0.1:6379\"\nscan = false\nksn = true\n{writer}"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("`scan_reader.scan = false`"), "{e}");
    // `prefer_replica` on a scan reader is accepted with a note.
    let loaded = SyncConfig::load_toml(&format!(
        "[scan_reader]\naddress = \"127.0.0.1:6379\"\nprefer_replica = true\ncount = 100\n{writer}"
    ))
    .unwrap();
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("`scan_reader.prefer_replica`")),
        "{:?}",
        loaded.notes
    );
}

#[test]
fn a_redisshake_v4_filter_with_several_kinds_of_allow_rules_lets_any_one_match_through() {
    let text = |filter: &str| {
        format!(
            "[sync_reader]\naddress = \"127.0.0.1:6379\"\n\n[redis_writer]\naddress = \"127.0.0.1:6380\"\n\n\
             [filter]\n{filter}\n"
        )
    };
    // One kind: kept as it is.
    let loaded = SyncConfig::load_toml(&text("allow_key_prefix = [\"user:\", \"a.b\"]")).unwrap();
    assert_eq!(loaded.config.filter.allow_key_prefixes, ["user:", "a.b"]);
    assert!(loaded.config.filter.allow_key_regexes.is_empty());
    // Prefixes and suffixes: RedisShake lets a key through on either, so both become one list of regexes.
    let loaded = SyncConfig::load_toml(&text(
        "allow_key_prefix = [\"user:\", \"a.b\"]\nallow_key_suffix = [\":active\"]",
    ))
    .unwrap();
    let f = &loaded.config.filter;
    assert!(f.allow_key_prefixes.is_empty() && f.allow_key_suffixes.is_empty());
    assert_eq!(f.allow_key_regexes, ["^user:", "^a\\.b", ":active$"]);
    assert!(
        loaded.notes.iter().any(|n| n.contains(
            "`filter.allow_key_prefix`, `filter.allow_key_suffix`: a key passes when it matches any one"
        )),
        "{:?}",
        loaded.notes
    );
}

#[test]
fn a_redisshake_v4_aof_reader_becomes_an_aof_source_and_panics_on_conflicts_by_default() {
    let text = "[aof_reader]\nfilepath = \"/data/appendonlydir/appendonly.aof.manifest\"\n\
                timestamp = 1700000000\n\n[redis_writer]\naddress = \"127.0.0.1:6380\"\n";
    let loaded = SyncConfig::load_toml(text).unwrap();
    assert_eq!(loaded.format, ConfigFormat::RedisShakeV4);
    assert_eq!(
        loaded.config.source,
        Source::AofFile {
            path: "/data/appendonlydir/appendonly.aof.manifest".into(),
            timestamp: Some(1_700_000_000),
        }
    );
    assert_eq!(loaded.config.conflict, Conflict::Panic);
    // RedisShake's default timestamp 0 replays everything.
    let all = text.replace("1700000000", "0");
    match SyncConfig::load_toml(&all).unwrap().config.source {
        Source::AofFile { timestamp, .. } => assert_eq!(timestamp, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_relative_redisshake_file_path_is_read_from_advanced_dir_as_redisshake_reads_it() {
    // RedisShake changes into `advanced.dir` before it opens `rdb_file_path` / `filepath`.
    let dir = std::env::temp_dir().join(format!("ferry-shake-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dump.rdb"), b"").unwrap();
    let dir_toml = dir.display().to_string();
    let v3 = format!(
        "type = \"restore\"\n[source]\nrdb_file_path = \"dump.rdb\"\n\n\
         [target]\ntype = \"standalone\"\naddress = \"127.0.0.1:6380\"\n\n[advanced]\ndir = \"{dir_toml}\"\n"
    );
    let v4 = format!(
        "[rdb_reader]\nfilepath = \"dump.rdb\"\n\n[redis_writer]\naddress = \"127.0.0.1:6380\"\n\n\
         [advanced]\ndir = \"{dir_toml}\"\n"
    );
    for text in [&v3, &v4] {
        let loaded = SyncConfig::load_toml(text).unwrap();
        assert_eq!(loaded.config.source, Source::rdb_file(dir.join("dump.rdb")));
        assert!(
            loaded.notes.iter().any(|n| n.contains("advanced.dir")),
            "{:?}",
            loaded.notes
        );
        // Not there: the path as written (relative to where ferry runs), with a note saying what RedisShake
        // would have read.
        let other = text.replace("dump.rdb", "other.rdb");
        let loaded = SyncConfig::load_toml(&other).unwrap();
        assert_eq!(loaded.config.source, Source::rdb_file("other.rdb"));
        assert!(
            loaded
                .notes
                .iter()
                .any(|n| n.contains("RedisShake would read")),
            "{:?}",
            loaded.notes
        );
    }
    // An absolute path is the file, and `dir` is then not used.
    let absolute = v3.replace("\"dump.rdb\"", "\"/backups/dump.rdb\"");
    let loaded = SyncConfig::load_toml(&absolute).unwrap();
    assert_eq!(loaded.config.source, Source::rdb_file("/backups/dump.rdb"));
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("`advanced.dir` (line 10) is accepted and not used")),
        "{:?}",
        loaded.notes
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ```toml blocks of the README and docs/: (file, block).
fn documented_toml() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "bindings/python", "bindings/node"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    let mut blocks = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("a closed block");
            blocks.push((f.display().to_string(), body[..end].to_string()));
            rest = &body[end..];
        }
    }
    blocks
}

#[test]
fn every_toml_example_in_the_docs_is_accepted() {
    let blocks = documented_toml();
    assert!(blocks.len() >= 4, "{blocks:?}");
    for (file, text) in blocks {
        if text.contains("\n[a]") {
            // A DR pair (docs/dr.md).
            ferry::DrConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"));
            continue;
        }
        // A fragment shows one side: the other is added.
        let mut whole = text.clone();
        if !whole.contains("[source]") {
            whole.push_str("\n[source]\nurl = \"redis://127.0.0.1:6379\"\n");
        }
        if !whole.contains("[target]") {
            whole.push_str("\n[target]\nurl = \"redis://127.0.0.1:6380\"\n");
        }
        SyncConfig::load_toml(&whole).unwrap_or_else(|e| panic!("{file}: {e}\n{whole}"));
    }
}

#[test]
fn an_aof_source_takes_its_timestamp_from_a_ferry_file() {
    let text =
        "[source]\ntype = \"aof_file\"\npath = \"/data/appendonly.aof\"\ntimestamp = 1700000000\n\
                [target]\nurl = \"redis://127.0.0.1:6380\"\n";
    let config = SyncConfig::from_toml_str(text).unwrap();
    assert_eq!(
        config.source,
        Source::AofFile {
            path: "/data/appendonly.aof".into(),
            timestamp: Some(1_700_000_000),
        }
    );
}

#[test]
fn a_source_or_target_without_type_has_the_one_its_keys_imply_in_toml_and_json() {
    let toml = "[source]\nurl = \"redis://127.0.0.1:6379\"\n\
                [target]\nseeds = [\"redis://127.0.0.1:7000\"]\n";
    let c = SyncConfig::from_toml_str(toml).unwrap();
    assert!(matches!(&c.source, Source::Standalone(e) if e.url == "redis://127.0.0.1:6379"));
    assert!(matches!(&c.target, Target::Cluster { seeds } if seeds.len() == 1));
    let json = r#"{"source": {"sentinels": ["redis://127.0.0.1:26379"], "master": "mymaster"},
                   "target": {"url": "redis://127.0.0.1:6380"}}"#;
    let c = SyncConfig::from_json_str(json).unwrap();
    assert!(
        matches!(&c.source, Source::Sentinel { .. }),
        "{:?}",
        c.source
    );
    assert!(matches!(&c.target, Target::Standalone(e) if e.url == "redis://127.0.0.1:6380"));
    // A file source must say which file it is; an error in a table whose type is implied names its line.
    let err = SyncConfig::from_toml_str(
        "[source]\npath = \"dump.rdb\"\n[target]\nurl = \"redis://127.0.0.1:6380\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("`type`"), "{err}");
    let err = SyncConfig::from_toml_str(
        "[source]\nurl = \"redis://127.0.0.1:6379\"\n\n[target]\nurl = 6380\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("line 4"),
        "the [target] table: {err}"
    );
    // An explicit type is kept.
    let c = SyncConfig::from_toml_str(
        "[source]\ntype = \"scan\"\nendpoint = \"redis://127.0.0.1:6379\"\n[target]\nurl = \"redis://127.0.0.1:6380\"\n",
    )
    .unwrap();
    assert!(matches!(&c.source, Source::Scan { .. }), "{:?}", c.source);
}

#[test]
fn a_dr_pair_side_without_type_has_the_one_its_keys_imply() {
    let c = ferry::DrConfig::from_toml_str(
        "name = \"orders\"\n[a]\nurl = \"redis://127.0.0.1:6379\"\n\
         [b]\nsentinels = [\"redis://127.0.0.1:26379\"]\nmaster = \"orders\"\n",
    )
    .unwrap();
    assert_eq!(c.a, ferry::Deployment::standalone("redis://127.0.0.1:6379"));
    assert_eq!(
        c.b,
        ferry::Deployment::sentinel(&["redis://127.0.0.1:26379"], "orders")
    );
    let json = r#"{"name": "orders", "a": {"url": "redis://127.0.0.1:6379"},
                   "b": {"sentinels": ["redis://127.0.0.1:26379"], "master": "orders"}}"#;
    assert_eq!(ferry::DrConfig::from_json_str(json).unwrap(), c);
    // A syntax error keeps its line.
    let err = ferry::DrConfig::from_toml_str("name = \"orders\"\n[a]\nurl = \n").unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
}
