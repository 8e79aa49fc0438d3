//! Connection behaviour that needs no Redis: a local listener that misbehaves on purpose.

use std::time::Duration;

use ferry_resp::{ConnectOptions, Connection, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A listener on a free port of 127.0.0.1, and that port.
async fn local_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Reads from `sock` until the peer closes it (or it fails).
async fn drain(sock: &mut TcpStream) {
    let mut buf = [0u8; 256];
    while sock.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
}

/// A one-connection server on a free local port that answers the first command it reads with
/// `reply`, then holds the socket until the client closes it.
async fn server_replying(reply: &'static [u8]) -> (u16, JoinHandle<()>) {
    let (listener, port) = local_listener().await;
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = sock.read(&mut buf).await.unwrap();
        sock.write_all(reply).await.unwrap();
        drain(&mut sock).await;
    });
    (port, server)
}

#[tokio::test]
async fn handshake_against_a_silent_server_times_out() {
    let (listener, port) = local_listener().await;
    let accept = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        // Read the HELLO but never answer; hold the socket until the client gives up.
        drain(&mut sock).await;
    });
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.protocol = ferry_resp::Protocol::Resp3;
    o.connect_timeout = Duration::from_millis(200);
    let err = Connection::connect(&o).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(matches!(err, Error::Timeout("connect")), "{err:?}");
    accept.await.unwrap();
}

#[tokio::test]
async fn garbage_reply_is_a_protocol_error_and_poisons_the_connection() {
    let (port, server) = server_replying(b"@garbage\r\n").await;
    let mut conn = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    let err = conn.call(&["PING"]).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(err.is_connection_lost());
    assert!(matches!(
        conn.call(&["PING"]).await,
        Err(Error::Desynchronized(_))
    ));
    drop(conn);
    server.await.unwrap();
}

/// Another service on the port (here an HTTP server): the error names the peer and shows what it sent, so an
/// operator sees at once that the address is wrong; a server that answered before is not suspected of that.
#[tokio::test]
async fn a_peer_that_does_not_speak_resp_is_named_with_what_it_sent() {
    let (port, server) =
        server_replying(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let mut conn = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    let err = conn.call(&["PING"]).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "127.0.0.1:{port} does not answer as a Redis server (it sent \"HTTP/1.1 400 Bad Request...\")"
        )),
        "{text}"
    );
    drop(conn);
    server.await.unwrap();

    // A bad frame after a good one is the server's fault, not a wrong address.
    let (port, server) = server_replying(b"+PONG\r\n@garbage\r\n").await;
    let mut conn = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    conn.call(&["PING"]).await.unwrap();
    let err = conn.read_frame().await.unwrap_err().to_string();
    assert!(!err.contains("does not answer as a Redis server"), "{err}");
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn huge_bulk_from_server_is_a_limit_error_not_an_allocation() {
    let (port, server) = server_replying(b"$999999999999\r\n").await;
    let mut conn = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    let err = conn.call(&["GET", "k"]).await.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_an_io_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap_err();
    assert!(err.is_io(), "{err:?}");
}

#[tokio::test]
async fn read_command_survives_cancellation_mid_command() {
    let (listener, port) = local_listener().await;
    let (go_on, resume) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        // A replication stream: SELECT, then a SET cut in the middle of its value.
        sock.write_all(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva")
            .await
            .unwrap();
        resume.await.unwrap();
        sock.write_all(b"lue\r\n+OK\r\n").await.unwrap();
        drain(&mut sock).await;
    });
    let mut conn = Connection::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    let select = conn.read_command().await.unwrap();
    assert_eq!(select.args().collect::<Vec<_>>(), [&b"SELECT"[..], b"0"]);
    assert_eq!(select.len_on_wire(), 23);
    // The SET is incomplete until the server is told to go on: the read is cancelled half-way.
    let cancelled = tokio::time::timeout(Duration::from_millis(50), conn.read_command()).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    go_on.send(()).unwrap();
    let set = conn.read_command().await.unwrap();
    assert_eq!(
        set.args().collect::<Vec<_>>(),
        [&b"SET"[..], b"k", b"value"]
    );
    assert_eq!(
        &set.raw()[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"
    );
    let err = conn.read_command().await.unwrap_err();
    assert!(err.is_not_a_command(), "{err:?}");
    drop(conn);
    server.await.unwrap();
}
