//! TLS against a real Redis 7.0 built with TLS (Debian's is), certificates made with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_resp::{ConnectOptions, Connection, Error, Frame, Protocol, TlsOptions};
use ferry_testkit::{Server, ServerOptions, Version};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A CA and a server certificate for `localhost` / `127.0.0.1`, written as PEM files.
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = make_ca("ferry test CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (other, _) = make_ca("some other CA");
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        other_ca: write("other-ca.pem", other.pem()),
        _dir: dir,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A server with its plain port (for the testkit's readiness check) and a TLS port.
fn start_tls_server(certs: &Certs) -> (Server, u16) {
    let tls_port = free_port();
    let server = Server::start(
        ServerOptions::new(Version::V7_0)
            .config("tls-port", tls_port.to_string())
            .config("tls-cert-file", path(&certs.cert))
            .config("tls-key-file", path(&certs.key))
            .config("tls-ca-cert-file", path(&certs.ca))
            .config("tls-auth-clients", "no"),
    )
    .expect("start redis-server 7.0 with TLS");
    (server, tls_port)
}

fn tls_options(port: u16, tls: TlsOptions) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.tls = Some(tls);
    o.protocol = Protocol::Resp3;
    o.read_timeout = Some(Duration::from_secs(30));
    o
}

#[tokio::test]
async fn tls_connection_verified_by_ca_file_works() {
    let certs = make_certs();
    let (_server, port) = start_tls_server(&certs);
    let tls = TlsOptions {
        ca_file: Some(certs.ca.clone()),
        ..TlsOptions::default()
    };
    let mut conn = Connection::connect(&tls_options(port, tls)).await.unwrap();
    assert!(conn.is_tls());
    assert_eq!(conn.call(&["PING"]).await.unwrap(), Frame::simple("PONG"));
    let cmds: Vec<Vec<String>> = (0..2000)
        .map(|i| vec!["SET".into(), format!("k{i}"), "v".repeat(100)])
        .collect();
    let replies = conn.pipeline(&cmds).await.unwrap();
    assert!(replies.iter().all(|r| *r == Frame::simple("OK")));
    assert_eq!(conn.call(&["DBSIZE"]).await.unwrap(), Frame::Integer(2000));
}

#[tokio::test]
async fn tls_sni_name_is_checked_against_the_certificate() {
    let certs = make_certs();
    let (_server, port) = start_tls_server(&certs);
    let ok = TlsOptions {
        ca_file: Some(certs.ca.clone()),
        server_name: Some("localhost".into()),
        ..TlsOptions::default()
    };
    let mut conn = Connection::connect(&tls_options(port, ok)).await.unwrap();
    assert_eq!(conn.call(&["PING"]).await.unwrap(), Frame::simple("PONG"));

    let wrong = TlsOptions {
        ca_file: Some(certs.ca.clone()),
        server_name: Some("not-this-host.example".into()),
        ..TlsOptions::default()
    };
    let err = Connection::connect(&tls_options(port, wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn tls_with_unknown_ca_fails_unless_verification_is_skipped() {
    let certs = make_certs();
    let (_server, port) = start_tls_server(&certs);
    let untrusted = TlsOptions {
        ca_file: Some(certs.other_ca.clone()),
        ..TlsOptions::default()
    };
    let err = Connection::connect(&tls_options(port, untrusted))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("handshake"), "{err}");

    let url = format!("rediss://127.0.0.1:{port}?insecure=true");
    let mut conn = Connection::connect(&ConnectOptions::from_url(&url).unwrap())
        .await
        .unwrap();
    assert_eq!(conn.call(&["PING"]).await.unwrap(), Frame::simple("PONG"));
}

#[tokio::test]
async fn tls_missing_ca_file_is_a_tls_error() {
    let tls = TlsOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = Connection::connect(&tls_options(port, tls))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
}
