//! A peer that accepts the TCP connection and never answers (a hung server, a black-holing proxy) ends the
//! session by a deadline, and the job tries again with backoff instead of waiting forever; once the peer
//! answers again the job finishes exactly.
//!
//! The hung peer is a local listener on 127.0.0.1 in front of a real server: it holds the first connections
//! open without reading or answering, then forwards the later ones to the server.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_same_data, config, counter, expire_short_keys, workload, Job, DEADLINE};
use ferry_resp::ConnectOptions;
use ferry_testkit::{wait_until, Server, ServerOptions, Version};

/// A listener that hangs its first `hang` connections (accepted, never answered) and forwards the others to
/// a real server.
struct HangingPeer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    /// The hung connections, kept open until the peer is dropped.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangingPeer {
    fn start(real_port: u16, hang: usize) -> HangingPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, d, h) = (accepted.clone(), done.clone(), held.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling accept, so the thread ends with the test.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                stream.set_nonblocking(false).unwrap();
                if a.fetch_add(1, Ordering::SeqCst) < hang {
                    h.lock().unwrap().push(stream);
                } else {
                    forward(stream, real_port);
                }
            }
        });
        HangingPeer {
            port,
            accepted,
            done,
            held,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HangingPeer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Relays `client` to the server on `port`.
fn forward(client: TcpStream, port: u16) {
    if let Ok(server) = TcpStream::connect(("127.0.0.1", port)) {
        common::relay(client, server);
    }
}

const HUNG: usize = 3;

#[test]
fn a_target_that_never_answers_ends_each_session_by_the_reply_deadline_and_the_job_retries() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let rounds = workload(&source, 300, "hung");
    let peer = HangingPeer::start(target.port(), HUNG);
    let mut cfg = config(&source, &target);
    cfg.target = ConnectOptions::from_url(&peer.url()).unwrap();
    cfg.target.connect_timeout = Duration::from_secs(1);
    cfg.sink.reply_timeout = Duration::from_secs(1);
    cfg.reconnect_backoff = Duration::from_millis(100);
    cfg.reconnect_backoff_max = Duration::from_millis(400);
    let job = Job::start_with(cfg);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(
        peer.accepted() > HUNG,
        "the job came back after the hung connections"
    );
    assert!(
        status.reconnects >= 1,
        "each hung connection ended a session: {status}"
    );
    let more = workload(&source, 100, "hung");
    // The workload's 5 ms keys expire on the source now, so its deletions are in the stream before the compare.
    expire_short_keys(&source, rounds, "hung");
    job.wait_caught_up(&source);
    assert_same_data(&source, &target, false);
    assert_eq!(counter(&target, "hung"), rounds + more);
    job.stop().unwrap();
}

#[test]
fn a_source_that_never_answers_ends_each_session_by_the_handshake_deadline_and_the_job_retries() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let rounds = workload(&source, 300, "hung");
    let peer = HangingPeer::start(source.port(), HUNG);
    let mut cfg = config(&source, &target);
    cfg.source.connect = ConnectOptions::from_url(&peer.url()).unwrap();
    cfg.source.connect.connect_timeout = Duration::from_secs(1);
    cfg.source.handshake.line_timeout = Duration::from_secs(1);
    cfg.reconnect_backoff = Duration::from_millis(100);
    cfg.reconnect_backoff_max = Duration::from_millis(400);
    let job = Job::start_with(cfg);
    wait_until(DEADLINE, "the job to pass the hung connections", || {
        peer.accepted() > HUNG
    })
    .unwrap();
    let more = workload(&source, 100, "hung");
    // The workload's 5 ms keys expire on the source now, so its deletions are in the stream before the compare.
    expire_short_keys(&source, rounds, "hung");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(
        status.reconnects >= HUNG as u64,
        "each hung connection ended a session: {status}"
    );
    assert_same_data(&source, &target, false);
    assert_eq!(counter(&target, "hung"), rounds + more);
    job.stop().unwrap();
}
