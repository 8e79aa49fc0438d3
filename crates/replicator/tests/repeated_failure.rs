//! A source that fails the same way at the same point every time (a Valkey 9 source that cannot write the RDB a
//! replica asked for closes the link after `+FULLRESYNC`; a source that breaks the RDB at the same byte) stops
//! the job after a few sessions with the source's last error and the count, instead of being retried forever.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{Job, DEADLINE};
use ferry_replicator::{Error, Phase};
use ferry_resp::ConnectOptions;
use ferry_testkit::{wait_until, Server, ServerOptions, Version};

/// What the fake source does after `+FULLRESYNC`.
#[derive(Clone, Copy)]
enum AfterFullResync {
    /// Closes the link at once, without an RDB.
    Close,
    /// Announces an RDB of 1000 bytes, sends its first 9 (the magic and version), then closes the link.
    CloseInsideTheRdb,
}

/// A fake source answering like Valkey 9.1 on every connection; counts the `PSYNC`s it answered.
fn fake_source(after: AfterFullResync) -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let psyncs = Arc::new(AtomicU32::new(0));
    let seen = psyncs.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let seen = seen.clone();
            std::thread::spawn(move || serve(stream, after, &seen));
        }
    });
    (port, psyncs)
}

/// Serves one connection: one RESP array of bulk strings per command.
fn serve(stream: TcpStream, after: AfterFullResync, psyncs: &AtomicU32) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = line.trim_start_matches('*').trim().parse::<usize>() else {
            return;
        };
        let mut argv = Vec::new();
        for _ in 0..n {
            let mut len = String::new();
            let mut arg = String::new();
            if reader.read_line(&mut len).unwrap_or(0) == 0
                || reader.read_line(&mut arg).unwrap_or(0) == 0
            {
                return;
            }
            argv.push(arg.trim_end().to_string());
        }
        let reply = match argv[0].to_ascii_uppercase().as_str() {
            "PING" => "+PONG\r\n".to_string(),
            "INFO" => {
                let text =
                    "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n";
                format!("${}\r\n{text}\r\n", text.len())
            }
            "REPLCONF" | "AUTH" => "+OK\r\n".to_string(),
            "PSYNC" => {
                psyncs.fetch_add(1, Ordering::SeqCst);
                let mut reply =
                    "+FULLRESYNC 8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb 0\r\n".to_string();
                if let AfterFullResync::CloseInsideTheRdb = after {
                    reply.push_str("$1000\r\nREDIS0011");
                }
                let _ = out.write_all(reply.as_bytes());
                return;
            }
            name => format!("-ERR unknown command '{name}'\r\n"),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Runs a job from the fake source into a real target until it stops; returns its error and the `PSYNC`s.
fn job_against(after: AfterFullResync) -> (Error, u32) {
    let (port, psyncs) = fake_source(after);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut cfg = common::config(&target, &target);
    cfg.source.connect = ConnectOptions::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let job = Job::start_with(cfg);
    wait_until(DEADLINE, "the job to give up", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap_or_else(|e| panic!("{e}; status: {}", job.status.snapshot()));
    let err = job.stop().expect_err("the job stopped with an error");
    (err, psyncs.load(Ordering::SeqCst))
}

#[test]
fn a_source_closing_the_link_after_fullresync_every_time_stops_the_job_after_three_sessions() {
    let (err, psyncs) = job_against(AfterFullResync::Close);
    assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("giving up after 3 attempts: "), "{text}");
    assert!(
        text.contains("valkey 9.1.2 closed the link after +FULLRESYNC without sending an RDB"),
        "{text}"
    );
    assert_eq!(psyncs, 3);
}

#[test]
fn a_source_breaking_the_rdb_at_the_same_byte_every_time_stops_the_job_after_three_sessions() {
    let (err, psyncs) = job_against(AfterFullResync::CloseInsideTheRdb);
    assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err:?}");
    let Error::GaveUp { last, .. } = &err else {
        unreachable!()
    };
    assert!(last.is_connection(), "{last:?}");
    assert_eq!(psyncs, 3);
}
