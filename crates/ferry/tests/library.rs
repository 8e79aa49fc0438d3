//! The library API a binding wraps: a job's events, status, stop and wait, and its errors' kinds.

mod common;

use common::runtime;

use ferry::{ErrorKind, Event, Phase, Source, SyncConfig, SyncJob, Target};
use ferry_testkit::{fill, FillOptions, Server, ServerOptions, Target as TkTarget, Version};

#[test]
fn a_job_reports_its_phases_and_stop_drains_and_returns_the_final_status() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(&TkTarget::from(&source), &FillOptions::seed(31)).unwrap();
    runtime().block_on(async {
        let config = SyncConfig::new(
            Source::standalone(source.url()),
            Target::standalone(target.url()),
        );
        let job = SyncJob::new(config).unwrap().start().unwrap();
        let mut events = job.events();
        let mut phases = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::Phase { phase } = event {
                phases.push(phase);
                if phase == Phase::Incremental {
                    break;
                }
            }
        }
        assert!(phases.contains(&Phase::FullSync), "{phases:?}");
        let mut con = source.client();
        redis::cmd("SET")
            .arg("after-copy")
            .arg("1")
            .exec(&mut con)
            .unwrap();
        let offset: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut con)
            .unwrap();
        let offset: u64 = offset
            .lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        ferry_testkit::wait_until(common::DEADLINE, "the write applied", || {
            job.status().shards[0].applied_offset >= offset
        })
        .unwrap();
        let status = job.stop().await.unwrap();
        assert_eq!(status.phase, Phase::Stopped);
        assert_eq!(status.keys_copied, filled.total_keys);
        assert_eq!(status.full_syncs, 1);
        assert!(job.is_finished());
        assert_eq!(
            job.wait().await.unwrap(),
            status,
            "wait after stop returns how it ended"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "stopped");
    });
    common::assert_equal(&TkTarget::from(&source), &TkTarget::from(&target));
}

#[test]
fn a_wrong_password_ends_the_job_with_an_auth_error() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0).password("right")).unwrap();
    runtime().block_on(async {
        let target =
            ferry::Endpoint::new(format!("redis://{}", target.addr())).with_password("wrong");
        let config = SyncConfig::new(Source::standalone(source.url()), Target::Standalone(target));
        let job = SyncJob::new(config).unwrap().start().unwrap();
        let e = job.wait().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
        assert!(
            !e.to_string().contains("wrong"),
            "the password is not in the message: {e}"
        );
        assert!(job.status().last_error.is_some());
    });
}
