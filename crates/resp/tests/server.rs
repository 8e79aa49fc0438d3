//! `Connection` against a real Redis 7.0 server started by ferry-testkit.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_resp::{ConnectOptions, Connection, Error, Frame, Password, Protocol};
use ferry_testkit::{AclUser, Server, ServerOptions, Version};

fn start(opts: ServerOptions) -> Server {
    Server::start(opts).expect("start redis-server 7.0")
}

fn options(server: &Server, protocol: Protocol) -> ConnectOptions {
    let mut o = ConnectOptions::new(server.host(), server.port());
    o.protocol = protocol;
    o.read_timeout = Some(Duration::from_secs(30));
    o
}

async fn connect(server: &Server, protocol: Protocol) -> Connection {
    Connection::connect(&options(server, protocol))
        .await
        .expect("connect")
}

async fn debug_protocol(conn: &mut Connection, t: &str) -> Frame {
    conn.call(&["DEBUG", "PROTOCOL", t]).await.expect(t)
}

fn bulk(s: &str) -> Frame {
    Frame::bulk(s)
}

#[tokio::test]
async fn resp3_debug_protocol_returns_every_type() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut conn = connect(&server, Protocol::Resp3).await;
    assert_eq!(conn.protocol(), Protocol::Resp3);

    assert_eq!(
        debug_protocol(&mut conn, "string").await,
        bulk("Hello World")
    );
    assert_eq!(
        debug_protocol(&mut conn, "integer").await,
        Frame::Integer(12345)
    );
    assert_eq!(
        debug_protocol(&mut conn, "double").await,
        Frame::Double("3.141".parse().unwrap())
    );
    assert_eq!(
        debug_protocol(&mut conn, "bignum").await,
        Frame::BigNumber(Bytes::from_static(b"1234567999999999999999999999999999999"))
    );
    assert_eq!(debug_protocol(&mut conn, "null").await, Frame::Null);
    let ints = vec![Frame::Integer(0), Frame::Integer(1), Frame::Integer(2)];
    assert_eq!(
        debug_protocol(&mut conn, "array").await,
        Frame::Array(ints.clone())
    );
    assert_eq!(debug_protocol(&mut conn, "set").await, Frame::Set(ints));
    assert_eq!(
        debug_protocol(&mut conn, "map").await,
        Frame::Map(vec![
            (Frame::Integer(0), Frame::Boolean(false)),
            (Frame::Integer(1), Frame::Boolean(true)),
            (Frame::Integer(2), Frame::Boolean(false)),
        ])
    );
    assert_eq!(
        debug_protocol(&mut conn, "attrib").await,
        Frame::Attribute {
            attributes: vec![(
                bulk("key-popularity"),
                Frame::Array(vec![bulk("key:123"), Frame::Integer(90)])
            )],
            frame: Box::new(bulk("Some real reply following the attribute")),
        }
    );
    assert_eq!(
        debug_protocol(&mut conn, "verbatim").await,
        Frame::Verbatim {
            format: *b"txt",
            text: Bytes::from_static(b"This is a verbatim\nstring")
        }
    );
    assert_eq!(
        debug_protocol(&mut conn, "true").await,
        Frame::Boolean(true)
    );
    assert_eq!(
        debug_protocol(&mut conn, "false").await,
        Frame::Boolean(false)
    );
    // The push arrives before the real reply: call() returns the reply and sets the push aside.
    assert_eq!(
        debug_protocol(&mut conn, "push").await,
        bulk("Some real reply following the push reply")
    );
    assert_eq!(
        conn.take_pushes(),
        vec![Frame::Push(vec![
            bulk("server-cpu-usage"),
            Frame::Integer(42)
        ])]
    );
}

#[tokio::test]
async fn resp2_and_resp3_nulls_differ() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut two = connect(&server, Protocol::Resp2).await;
    let mut three = connect(&server, Protocol::Resp3).await;
    assert_eq!(
        two.call(&["GET", "missing"]).await.unwrap(),
        Frame::NullBulk
    );
    assert_eq!(three.call(&["GET", "missing"]).await.unwrap(), Frame::Null);
    assert_eq!(
        two.call(&["BLPOP", "missing", "0.01"]).await.unwrap(),
        Frame::NullArray
    );
    assert!(two.call(&["GET", "missing"]).await.unwrap().is_null());
}

#[tokio::test]
async fn error_replies_become_server_errors_with_code() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut conn = connect(&server, Protocol::Resp3).await;
    let err = conn.call(&["NOSUCHCOMMAND", "x"]).await.unwrap_err();
    let server_err = err.server_error().expect("a server error");
    assert_eq!(server_err.code(), "ERR");
    assert!(
        server_err.message().contains("unknown command"),
        "{server_err}"
    );

    conn.call(&["RPUSH", "list", "a"]).await.unwrap();
    let err = conn.call(&["GET", "list"]).await.unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("WRONGTYPE"));
    // The connection is still in step after error replies.
    assert_eq!(conn.call(&["PING"]).await.unwrap(), Frame::simple("PONG"));
}

#[tokio::test]
async fn pipeline_of_10k_sets_then_gets_returns_every_reply_in_order() {
    let server = start(ServerOptions::new(Version::V7_0));
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut conn = connect(&server, protocol).await;
        let sets: Vec<Vec<String>> = (0..10_000)
            .map(|i| {
                vec![
                    "SET".into(),
                    format!("key:{i}"),
                    format!("value:{i}:{}", "x".repeat(i % 50)),
                ]
            })
            .collect();
        let replies = conn.pipeline(&sets).await.unwrap();
        assert_eq!(replies.len(), 10_000);
        assert!(replies.iter().all(|r| *r == Frame::simple("OK")));

        let mut gets: Vec<Vec<String>> = (0..10_000)
            .map(|i| vec!["GET".into(), format!("key:{i}")])
            .collect();
        gets.insert(5000, vec!["INCR".into(), "key:1".into()]); // an error in the middle
        let replies = conn.pipeline(&gets).await.unwrap();
        assert_eq!(replies.len(), 10_001);
        for (i, reply) in replies.iter().enumerate() {
            if i == 5000 {
                assert!(reply.is_error(), "{reply:?}");
                continue;
            }
            let k = if i > 5000 { i - 1 } else { i };
            let want = format!("value:{k}:{}", "x".repeat(k % 50));
            assert_eq!(reply.as_bytes(), Some(want.as_bytes()), "reply {i}");
        }
    }
}

#[tokio::test]
async fn acl_user_authenticates_with_resp2_and_resp3() {
    let server = start(
        ServerOptions::new(Version::V7_0)
            .password("default-secret")
            .acl_user(AclUser::new("app", "app-secret")),
    );
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut o = options(&server, protocol);
        o.username = Some("app".into());
        o.password = Some(Password::new("app-secret"));
        o.client_name = Some("ferry-test".into());
        o.db = 3;
        let mut conn = Connection::connect(&o).await.unwrap();
        assert_eq!(
            conn.call(&["ACL", "WHOAMI"]).await.unwrap().as_bytes(),
            Some(&b"app"[..])
        );
        assert_eq!(
            conn.call(&["CLIENT", "GETNAME"]).await.unwrap().as_bytes(),
            Some(&b"ferry-test"[..])
        );
        let info = conn.call(&["CLIENT", "INFO"]).await.unwrap();
        let info = String::from_utf8_lossy(info.as_bytes().unwrap()).into_owned();
        let fields: Vec<&str> = info.split_whitespace().collect();
        assert!(fields.contains(&"db=3"), "{info}");
        let resp = if protocol == Protocol::Resp3 {
            "resp=3"
        } else {
            "resp=2"
        };
        assert!(fields.contains(&resp), "{info}");
    }
    // The default user with requirepass, through a URL.
    let url = format!("redis://:default-secret@{}/0?protocol=resp3", server.addr());
    let mut conn = Connection::connect(&ConnectOptions::from_url(&url).unwrap())
        .await
        .unwrap();
    assert_eq!(
        conn.call(&["ACL", "WHOAMI"]).await.unwrap().as_bytes(),
        Some(&b"default"[..])
    );
}

#[tokio::test]
async fn wrong_password_gives_clear_error() {
    let server = start(
        ServerOptions::new(Version::V7_0)
            .password("right")
            .acl_user(AclUser::new("app", "right2")),
    );
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        for user in [None, Some("app")] {
            let mut o = options(&server, protocol);
            o.username = user.map(str::to_owned);
            o.password = Some(Password::new("wrong-pass-xyz"));
            let err = Connection::connect(&o).await.unwrap_err();
            assert!(matches!(err, Error::Auth(_)), "{err:?}");
            let msg = err.to_string();
            assert!(msg.starts_with("authentication failed"), "{msg}");
            assert!(msg.contains("WRONGPASS"), "{msg}");
            assert!(
                !msg.contains("wrong-pass-xyz") && !format!("{err:?}").contains("wrong-pass-xyz")
            );
        }
    }
    // No password at all against a server that needs one.
    let err = Connection::connect(&{
        let mut o = options(&server, Protocol::Resp3);
        o.password = None;
        o
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn read_timeout_fires_and_poisons_the_connection() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut o = options(&server, Protocol::Resp2);
    o.read_timeout = Some(Duration::from_millis(200));
    let mut conn = Connection::connect(&o).await.unwrap();
    let err = conn.call(&["BLPOP", "nokey", "0"]).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(!conn.is_usable());
    let err = conn.call(&["PING"]).await.unwrap_err();
    assert!(matches!(err, Error::Desynchronized(_)), "{err:?}");
}

#[tokio::test]
async fn read_frame_after_timeout_keeps_partial_frames() {
    // A read timeout in read_frame loses nothing: the reply arrives on the next call.
    let server = start(ServerOptions::new(Version::V7_0));
    let mut o = options(&server, Protocol::Resp2);
    o.read_timeout = Some(Duration::from_millis(100));
    let mut conn = Connection::connect(&o).await.unwrap();
    conn.write_command(&["BLPOP", "q", "0"]);
    conn.flush().await.unwrap();
    assert!(conn.read_frame().await.unwrap_err().is_timeout());
    let mut other = server.client();
    redis::cmd("RPUSH")
        .arg("q")
        .arg("item")
        .exec(&mut other)
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)));
    assert_eq!(
        conn.read_frame().await.unwrap(),
        Frame::Array(vec![bulk("q"), bulk("item")])
    );
}

#[tokio::test]
async fn read_raw_after_read_line_streams_a_full_resync_rdb() {
    let server = start(ServerOptions::new(Version::V7_0).config("repl-diskless-sync", "no"));
    let mut conn = connect(&server, Protocol::Resp2).await;
    conn.call(&["SET", "some", "data"]).await.unwrap();
    conn.call(&["REPLCONF", "listening-port", "1"])
        .await
        .unwrap();
    conn.write_command(&["PSYNC", "?", "-1"]);
    conn.flush().await.unwrap();
    // The master may send bare "\n" keep-alives before each line.
    let mut line = conn.read_line().await.unwrap();
    while line.is_empty() {
        line = conn.read_line().await.unwrap();
    }
    assert!(line.starts_with(b"+FULLRESYNC "), "{line:?}");
    let mut header = conn.read_line().await.unwrap();
    while header.is_empty() {
        header = conn.read_line().await.unwrap();
    }
    assert_eq!(header[0], b'$', "{header:?}");
    let len: usize = std::str::from_utf8(&header[1..]).unwrap().parse().unwrap();
    let mut rdb = BytesMut::new();
    while rdb.len() < len {
        let chunk = conn.read_raw(len - rdb.len()).await.unwrap();
        assert!(!chunk.is_empty(), "EOF inside the RDB");
        rdb.extend_from_slice(&chunk);
    }
    assert_eq!(rdb.len(), len);
    assert!(rdb.starts_with(b"REDIS"), "{:?}", &rdb[..9]);
    assert!(rdb.windows(4).any(|w| w == b"some"));
}

#[tokio::test]
async fn read_raw_returns_buffered_bytes_first() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut conn = connect(&server, Protocol::Resp2).await;
    // Two replies in one write: after read_line takes the first, the second is already buffered.
    conn.write_command(&["PING"]);
    conn.write_command(&["ECHO", "hello"]);
    conn.flush().await.unwrap();
    assert_eq!(
        conn.read_line().await.unwrap(),
        Bytes::from_static(b"+PONG")
    );
    let mut rest = BytesMut::new();
    while rest.len() < 11 {
        let chunk = conn.read_raw(3).await.unwrap();
        assert!(chunk.len() <= 3);
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(&rest[..], b"$5\r\nhello\r\n");
}

#[tokio::test]
async fn subscribe_in_resp3_delivers_messages_as_pushes() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut sub = connect(&server, Protocol::Resp3).await;
    let confirm = sub.call(&["SUBSCRIBE", "news"]).await.unwrap();
    assert_eq!(
        confirm,
        Frame::Push(vec![bulk("subscribe"), bulk("news"), Frame::Integer(1)])
    );
    let mut publisher = connect(&server, Protocol::Resp3).await;
    assert_eq!(
        publisher.call(&["PUBLISH", "news", "hi"]).await.unwrap(),
        Frame::Integer(1)
    );
    assert_eq!(
        sub.read_frame().await.unwrap(),
        Frame::Push(vec![bulk("message"), bulk("news"), bulk("hi")])
    );
}

#[tokio::test]
async fn closed_connection_gives_closed_error() {
    let server = start(ServerOptions::new(Version::V7_0));
    let mut conn = connect(&server, Protocol::Resp2).await;
    conn.write_command(&["QUIT"]);
    conn.flush().await.unwrap();
    assert_eq!(conn.read_frame().await.unwrap(), Frame::simple("OK"));
    let err = conn.read_frame().await.unwrap_err();
    assert!(err.is_closed() || err.is_io(), "{err:?}");
}

#[tokio::test]
async fn read_command_follows_a_replication_stream_and_its_offset() {
    let server = start(ServerOptions::new(Version::V7_0).config("repl-diskless-sync", "no"));
    let mut repl = connect(&server, Protocol::Resp2).await;
    repl.call(&["REPLCONF", "listening-port", "1"])
        .await
        .unwrap();
    repl.write_command(&["PSYNC", "?", "-1"]);
    repl.flush().await.unwrap();
    let mut line = repl.read_line().await.unwrap();
    while line.is_empty() {
        line = repl.read_line().await.unwrap();
    }
    let text = std::str::from_utf8(&line).unwrap();
    let mut offset: u64 = text.rsplit(' ').next().unwrap().parse().unwrap();
    let mut header = repl.read_line().await.unwrap();
    while header.is_empty() {
        header = repl.read_line().await.unwrap();
    }
    let mut left: usize = std::str::from_utf8(&header[1..]).unwrap().parse().unwrap();
    while left > 0 {
        let chunk = repl.read_raw(left).await.unwrap();
        assert!(!chunk.is_empty(), "EOF inside the RDB");
        left -= chunk.len();
    }

    let mut client = connect(&server, Protocol::Resp2).await;
    let big = "v".repeat(100_000);
    client.call(&["SET", "k", "v1"]).await.unwrap();
    client
        .call(&["HSET", "h", "f1", "a", "f2", "b", "f3", "c", "f4", "d"])
        .await
        .unwrap();
    client.call(&["SET", "big", &big]).await.unwrap();
    client.call(&["INCR", "n"]).await.unwrap();
    let info = client.call(&["INFO", "replication"]).await.unwrap();
    let info = String::from_utf8(info.as_bytes().unwrap().to_vec()).unwrap();
    let master_offset: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Commands end exactly on the master's offset, whatever keep-alive PINGs come in between.
    let mut seen = Vec::new();
    while offset < master_offset {
        let cmd = repl.read_command().await.unwrap();
        offset += cmd.len_on_wire() as u64;
        seen.push(cmd);
    }
    assert_eq!(offset, master_offset);
    let argv = |c: &ferry_resp::Command| -> Vec<Vec<u8>> { c.args().map(<[u8]>::to_vec).collect() };
    let writes: Vec<Vec<Vec<u8>>> = seen
        .iter()
        .filter(|c| !c.name().eq_ignore_ascii_case(b"PING"))
        .map(argv)
        .collect();
    let expected: Vec<Vec<&[u8]>> = vec![
        vec![b"SELECT", b"0"],
        vec![b"SET", b"k", b"v1"],
        vec![
            b"HSET", b"h", b"f1", b"a", b"f2", b"b", b"f3", b"c", b"f4", b"d",
        ],
        vec![b"SET", b"big", big.as_bytes()],
        vec![b"INCR", b"n"],
    ];
    assert_eq!(writes.len(), expected.len(), "{seen:?}");
    for (got, want) in writes.iter().zip(&expected) {
        assert!(
            got.iter().map(Vec::as_slice).eq(want.iter().copied()),
            "{seen:?}"
        );
    }
}
