//! Malformed CLUSTER NODES / SLOTS / SHARDS / COMMAND input gives clear errors, never a panic.

use bytes::Bytes;
use ferry_resp::Frame;
use ferry_topology::{parse_cluster_nodes, CommandTable, Error, Health, SlotMap};
use proptest::prelude::*;

const GOOD: &str = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10923->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail? 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave,fail 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 disconnected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa :0@0 master,noaddr - 1426238316232 1426238316232 7 disconnected
";

#[test]
fn documented_cluster_nodes_example_parses_with_all_flags_and_markers() {
    let infos = parse_cluster_nodes(GOOD.as_bytes()).unwrap();
    assert_eq!(infos.len(), 7);
    assert_eq!(infos[0].hostname.as_deref(), Some("host-a"));
    assert!(infos[0].flags.replica);
    assert!(infos[3].flags.pfail && !infos[3].flags.fail);
    assert!(infos[4].flags.fail && !infos[4].connected);
    assert!(infos[5].flags.myself && infos[5].flags.master);
    assert_eq!(
        infos[2].migrating,
        vec![(
            10923,
            "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".to_string()
        )]
    );
    assert_eq!(
        infos[5].importing,
        vec![(5461, "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".to_string())]
    );
    assert!(infos[6].flags.noaddr && infos[6].addr.is_none());

    let map = SlotMap::from_node_infos(&infos).unwrap();
    assert!(map.is_complete());
    assert_eq!(map.shards().len(), 3, "the noaddr master is left out");
    let shard = map.shard_for_slot(6000).unwrap();
    assert_eq!(shard.master.addr.port, 30002);
    assert_eq!(shard.replicas[0].health, Health::Suspected);
    assert_eq!(
        map.shard_for_slot(16000).unwrap().replicas[0].health,
        Health::Failed
    );
}

#[test]
fn ipv6_addresses_keep_their_colons() {
    let line = b"e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca ::1:30001@31001 myself,master - 0 0 1 connected 0-16383\n";
    let infos = parse_cluster_nodes(line).unwrap();
    let addr = infos[0].addr.clone().unwrap();
    assert_eq!((addr.host.as_str(), addr.port), ("::1", 30001));
    assert_eq!(addr.to_string(), "[::1]:30001");
}

fn parse_error(text: &str) -> String {
    match parse_cluster_nodes(text.as_bytes()) {
        Err(Error::Parse { detail, .. }) => detail,
        other => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

#[test]
fn malformed_cluster_nodes_lines_give_errors_naming_the_line_and_field() {
    let id = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca";
    let cases = [
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1"),
            "line 1: 7 fields",
        ),
        (
            format!("{id} 127.0.0.1 master - 0 0 1 connected"),
            "not host:port",
        ),
        (
            format!("{id} 127.0.0.1:99999@1 master - 0 0 1 connected"),
            "not host:port",
        ),
        (
            format!("{id} 127.0.0.1:1@x master - 0 0 1 connected"),
            "cluster port",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - zero 0 1 connected"),
            "ping-sent 'zero'",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1 maybe"),
            "link-state 'maybe'",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1 connected 16384"),
            "slot '16384'",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1 connected 10-5"),
            "10-5",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1 connected [5->-abc"),
            "closing ']'",
        ),
        (
            format!("{id} 127.0.0.1:1@2 master - 0 0 1 connected [5=abc]"),
            "neither",
        ),
        (
            format!("\n\n{id} 127.0.0.1:1@2 master - 0 0 1 connected a-b"),
            "line 3",
        ),
    ];
    for (text, expected) in cases {
        let detail = parse_error(&text);
        assert!(
            detail.contains(expected),
            "{text:?}: error {detail:?} should mention {expected:?}"
        );
    }
    assert!(matches!(
        parse_cluster_nodes(b"\xff\xfe"),
        Err(Error::Parse { .. })
    ));
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn malformed_cluster_slots_replies_give_clear_errors() {
    let node = Frame::Array(vec![bulk("127.0.0.1"), Frame::Integer(7000), bulk("id")]);
    let cases = [
        (Frame::Integer(3), "expected an array"),
        (
            Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(5),
            ])]),
            "at least 3",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(20000),
                node.clone(),
            ])]),
            "0-16383",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(9),
                Frame::Integer(3),
                node.clone(),
            ])]),
            "9-3",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(1),
                Frame::Array(vec![bulk("h")]),
            ])]),
            "at least 2",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(1),
                Frame::Array(vec![bulk("h"), Frame::Integer(70000)]),
            ])]),
            "port",
        ),
    ];
    for (frame, expected) in cases {
        match SlotMap::from_cluster_slots(&frame) {
            Err(e @ Error::Parse { .. }) => assert!(
                e.to_string().contains(expected),
                "{e} should mention {expected:?}"
            ),
            other => panic!("{frame:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn malformed_cluster_shards_replies_give_clear_errors() {
    let node = |role: &str| {
        Frame::Array(vec![
            bulk("id"),
            bulk("x"),
            bulk("port"),
            Frame::Integer(7000),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
        ])
    };
    let shard = |slots: Vec<Frame>, nodes: Vec<Frame>| {
        Frame::Array(vec![
            bulk("slots"),
            Frame::Array(slots),
            bulk("nodes"),
            Frame::Array(nodes),
        ])
    };
    let cases = [
        (
            Frame::Array(vec![Frame::Array(vec![bulk("slots")])]),
            "odd length",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                bulk("nodes"),
                Frame::Array(vec![]),
            ])]),
            "no 'slots'",
        ),
        (
            Frame::Array(vec![shard(vec![Frame::Integer(1)], vec![node("master")])]),
            "odd number of slot bounds",
        ),
        (
            Frame::Array(vec![shard(
                vec![Frame::Integer(0), Frame::Integer(1)],
                vec![node("boss")],
            )]),
            "unknown role 'boss'",
        ),
        (
            Frame::Array(vec![shard(
                vec![Frame::Integer(0), Frame::Integer(1)],
                vec![Frame::Array(vec![bulk("role"), bulk("master")])],
            )]),
            "neither 'port' nor 'tls-port'",
        ),
    ];
    for (frame, expected) in cases {
        match SlotMap::from_cluster_shards(&frame) {
            Err(e @ Error::Parse { .. }) => assert!(
                e.to_string().contains(expected),
                "{e} should mention {expected:?}"
            ),
            other => panic!("{frame:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn malformed_command_replies_give_clear_errors() {
    let cases = [
        (Frame::Integer(1), "expected an array"),
        (
            Frame::Array(vec![Frame::Array(vec![bulk("get"), Frame::Integer(2)])]),
            "at least 6",
        ),
        (
            Frame::Array(vec![Frame::Array(vec![
                bulk("get"),
                bulk("two"),
                Frame::Array(vec![]),
                Frame::Integer(1),
                Frame::Integer(1),
                Frame::Integer(1),
            ])]),
            "'get': arity",
        ),
    ];
    for (frame, expected) in cases {
        match CommandTable::from_command_reply(&frame) {
            Err(e @ Error::Parse { .. }) => assert!(
                e.to_string().contains(expected),
                "{e} should mention {expected:?}"
            ),
            other => panic!("{frame:?}: expected a parse error, got {other:?}"),
        }
    }
}

/// Random frames: nested arrays and maps of strings and integers drawn from the words these replies use.
fn arb_frame() -> impl Strategy<Value = Frame> {
    let words = prop::sample::select(vec![
        "slots",
        "nodes",
        "id",
        "port",
        "tls-port",
        "ip",
        "endpoint",
        "role",
        "master",
        "replica",
        "health",
        "online",
        "failed",
        "begin_search",
        "find_keys",
        "type",
        "spec",
        "index",
        "keyword",
        "range",
        "keynum",
        "lastkey",
        "keystep",
        "limit",
        "keynumidx",
        "firstkey",
        "flags",
        "not_key",
        "incomplete",
        "",
        "127.0.0.1",
        "get",
    ]);
    let leaf = prop_oneof![
        words.prop_map(bulk),
        any::<i64>().prop_map(Frame::Integer),
        (-3i64..20000).prop_map(Frame::Integer),
        Just(Frame::NullBulk),
        Just(Frame::Null),
        any::<f64>().prop_map(Frame::Double),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
            prop::collection::vec((inner.clone(), inner.clone()), 0..5).prop_map(Frame::Map),
            prop::collection::vec(inner, 0..5).prop_map(Frame::Set),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_the_cluster_nodes_parser(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_cluster_nodes(&data);
        let _ = SlotMap::from_cluster_nodes(&data);
    }

    #[test]
    fn random_node_lines_never_panic_the_parser(
        fields in prop::collection::vec(
            prop::sample::select(vec![
                "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca", "127.0.0.1:7000@17000", ":0@0", "::1:7000@17000,h",
                "myself,master", "slave", "fail?", "noaddr", "-", "0", "1", "connected", "disconnected", "0-16383",
                "5-3", "16384", "[5->-abc]", "[5-<-abc]", "[x->-]", "[", "]", "-1", "99999999999999999999",
            ]),
            0..14,
        ),
        lines in 1usize..4,
    ) {
        let line = fields.join(" ");
        let text = vec![line; lines].join("\n");
        let _ = parse_cluster_nodes(text.as_bytes());
        let _ = SlotMap::from_cluster_nodes(text.as_bytes());
    }

    #[test]
    fn random_frames_never_panic_the_reply_parsers(frame in arb_frame()) {
        let _ = SlotMap::from_cluster_slots(&frame);
        let _ = SlotMap::from_cluster_shards(&frame);
        if let Ok(table) = CommandTable::from_command_reply(&frame) {
            let _ = table.keys(&["get", "k", "2", "x", "y"]);
        }
    }
}
