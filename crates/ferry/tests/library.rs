//! The library API a binding wraps: a job's events, status, stop and wait, and its errors' kinds.

mod common;

use common::runtime;

use ferry::{ErrorKind, Event, Events, JobHandle, Phase, Source, SyncConfig, SyncJob, Target};
use ferry_testkit::{fill, FillOptions, Server, ServerOptions, Target as TkTarget, Version};

/// Starts a job from `source` into `target`, and returns it with its events up to its live phase and the
/// receiver of the rest.
async fn start_until_live(source: &Server, target: &Server) -> (JobHandle, Events, Vec<Event>) {
    let config = SyncConfig::new(
        Source::standalone(source.url()),
        Target::standalone(target.url()),
    );
    let job = SyncJob::new(config).unwrap().start().unwrap();
    let mut events = job.events();
    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        let live = event
            == Event::Phase {
                phase: Phase::Incremental,
            };
        seen.push(event);
        if live {
            break;
        }
    }
    (job, events, seen)
}

#[test]
fn a_job_reports_its_phases_and_stop_drains_and_returns_the_final_status() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(&TkTarget::from(&source), &FillOptions::seed(31)).unwrap();
    runtime().block_on(async {
        let (job, _, seen) = start_until_live(&source, &target).await;
        let phases = common::phases(&seen);
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
fn a_full_copy_shorter_than_a_status_sample_announces_every_phase_in_order() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut con = source.client();
    for i in 0..3 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    runtime().block_on(async {
        let (job, mut events, mut seen) = start_until_live(&source, &target).await;
        let status = job.stop().await.unwrap();
        assert_eq!(status.keys_copied, 3);
        while let Some(event) = events.recv().await {
            seen.push(event);
        }
        assert_eq!(
            common::phases(&seen),
            [
                Phase::Handshake,
                Phase::FullSync,
                Phase::Incremental,
                Phase::Stopped
            ],
            "{seen:?}"
        );
        let resync = seen
            .iter()
            .position(|e| matches!(e, Event::FullResync { shard: None, reason } if reason.contains("no checkpoint")))
            .unwrap_or_else(|| panic!("a full resync with its reason: {seen:?}"));
        let full_sync = seen
            .iter()
            .position(|e| *e == Event::Phase { phase: Phase::FullSync })
            .unwrap();
        assert_eq!(resync + 1, full_sync, "the reason comes with the copy: {seen:?}");
        let json = serde_json::to_value(&seen[resync]).unwrap();
        assert_eq!(json["type"], "full_resync", "{json}");
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Error { .. })),
            "{seen:?}"
        );
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
        let mut events = job.events();
        let e = job.wait().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
        let mut seen = Vec::new();
        while let Some(event) = events.recv().await {
            seen.push(event);
        }
        assert!(
            matches!(
                seen.last(),
                Some(Event::Error {
                    kind: ErrorKind::Auth,
                    ..
                })
            ),
            "the last event is the error that ended the job, of kind auth: {seen:?}"
        );
        for event in &seen {
            if let Event::Error { kind, message } = event {
                assert_eq!(*kind, ErrorKind::Auth, "{seen:?}");
                assert!(
                    !message.contains("wrong"),
                    "no password in events: {message}"
                );
            }
        }
        assert!(
            !e.to_string().contains("wrong"),
            "the password is not in the message: {e}"
        );
        assert!(job.status().last_error.is_some());
    });
}

#[test]
fn a_cluster_target_failover_is_announced_with_the_masters_written_to_now() {
    use ferry_testkit::Cluster;
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(
        &TkTarget::from(&source),
        &FillOptions::seed(33).dbs(vec![0]),
    )
    .unwrap();
    runtime().block_on(async {
        let config = SyncConfig::new(
            Source::standalone(source.url()),
            Target::cluster(cluster.masters()[0].url()),
        );
        let job = SyncJob::new(config).unwrap().start().unwrap();
        let mut events = job.events();
        while let Some(event) = events.recv().await {
            if event
                == (Event::Phase {
                    phase: Phase::Incremental,
                })
            {
                break;
            }
        }
        // A replica takes over its master; the next write to that master's slots meets a replica.
        let replica = cluster.replicas()[0];
        redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .exec(&mut replica.client())
            .unwrap();
        ferry_testkit::wait_until(common::DEADLINE, "the replica to become master", || {
            replica.info("replication").unwrap().contains("role:master")
        })
        .unwrap();
        let mut con = source.client();
        let mut pipe = redis::pipe();
        for i in 0..2_000 {
            pipe.cmd("INCR").arg(format!("after-failover:{i}")).ignore();
        }
        pipe.exec(&mut con).unwrap();
        let announced = tokio::time::timeout(common::DEADLINE, async {
            while let Some(event) = events.recv().await {
                if let Event::TargetTopologyChanged { shard, masters } = event {
                    return Some((shard, masters));
                }
            }
            None
        })
        .await
        .expect("a topology change announced within the deadline")
        .expect("the job's events go on");
        assert_eq!(announced.0, None, "a standalone source has no shard");
        assert!(
            announced.1.contains(&replica.addr()),
            "the promoted replica is written to: {announced:?}"
        );
        common::wait_equal(&TkTarget::from(&source), &TkTarget::from(&cluster));
        job.stop().await.unwrap();
    });
    common::assert_equal(&TkTarget::from(&source), &TkTarget::from(&cluster));
}
