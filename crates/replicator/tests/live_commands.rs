//! Commands that need a plan of their own in the live stream: `FUNCTION`/`SCRIPT` (cannot run in a script),
//! `FLUSHALL`/`FLUSHDB` (would erase the checkpoint), `SWAPDB` (moves it), commands too long for one script
//! (split, or applied alone). Each keeps the checkpoint exact: a restart after them repeats nothing.

mod common;

use common::{assert_same_data, checkpoint_value, Job, CHECKPOINT_DB, DEADLINE};
use ferry_replicator::{Phase, TargetPolicy};
use ferry_testkit::{Server, ServerOptions, Version};

fn incr(c: &mut redis::Connection) {
    redis::cmd("INCR")
        .arg("ferry:counter:cmds")
        .exec(c)
        .unwrap();
}

fn get_counter(server: &Server) -> u64 {
    let mut c = server.client();
    redis::cmd("GET")
        .arg("ferry:counter:cmds")
        .query::<Option<u64>>(&mut c)
        .unwrap()
        .unwrap_or(0)
}

/// The source's writes of each kind, with an INCR between each; returns the INCR count.
fn special_writes(source: &Server, round: u32) -> u64 {
    let mut c = source.client();
    if round == 1 {
        // FLUSHALL erases every database of the target, the checkpoint's included (the script stores it after).
        redis::cmd("FLUSHALL").exec(&mut c).unwrap();
    }
    let mut n = 0;
    let mut step = |c: &mut redis::Connection, cmd: &mut redis::Cmd| {
        cmd.exec(c).unwrap();
        incr(c);
        n += 1;
    };
    let lib = format!(
        "#!lua name=ferrylib{round}\nredis.register_function('f{round}', function() return {round} end)"
    );
    step(&mut c, redis::cmd("FUNCTION").arg("LOAD").arg(&lib));
    step(&mut c, redis::cmd("SCRIPT").arg("FLUSH"));
    // A list push and a hash set longer than a script can unpack: split into parts.
    let mut big = redis::cmd("RPUSH");
    big.arg(format!("ferry:big:list:{round}"));
    for i in 0..9000 {
        big.arg(i);
    }
    step(&mut c, &mut big);
    let mut hset = redis::cmd("HSET");
    hset.arg(format!("ferry:big:hash:{round}"));
    for i in 0..4000 {
        hset.arg(format!("f{i}")).arg(i);
    }
    step(&mut c, &mut hset);
    // A stream entry with more fields than a script can unpack and no split of the same meaning: alone.
    let mut xadd = redis::cmd("XADD");
    xadd.arg(format!("ferry:big:stream:{round}")).arg("*");
    for i in 0..4000 {
        xadd.arg(format!("f{i}")).arg(i);
    }
    step(&mut c, &mut xadd);
    // A transaction with a command that cannot run in a script in the middle.
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("INCR")
        .arg("ferry:counter:cmds")
        .cmd("FUNCTION")
        .arg("DELETE")
        .arg(format!("ferrylib{round}"))
        .cmd("INCR")
        .arg("ferry:counter:cmds");
    pipe.exec(&mut c).unwrap();
    // SWAPDB with the checkpoint's database and back, FLUSHDB of another database, FLUSHALL.
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    redis::cmd("SET")
        .arg("ferry:db2:x")
        .arg(round)
        .exec(&mut c)
        .unwrap();
    redis::cmd("SELECT").arg(0).exec(&mut c).unwrap();
    step(&mut c, redis::cmd("SWAPDB").arg(1).arg(CHECKPOINT_DB));
    step(&mut c, redis::cmd("SWAPDB").arg(1).arg(CHECKPOINT_DB));
    redis::cmd("SELECT").arg(2).exec(&mut c).unwrap();
    redis::cmd("FLUSHDB").exec(&mut c).unwrap();
    redis::cmd("SELECT").arg(0).exec(&mut c).unwrap();
    incr(&mut c);
    n + 3
}

#[test]
fn special_commands_keep_the_checkpoint_exact_across_restarts() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let mut total = special_writes(&source, 1);
    job.wait_caught_up(&source);
    assert_same_data(&source, &target, true);
    assert_eq!(get_counter(&target), total);
    let stored = checkpoint_value(&target).expect("a checkpoint in its database");
    assert!(stored.starts_with("v2 "), "{stored}");
    job.stop().unwrap();
    // Resumed after the special commands: nothing of them is applied again.
    let job = Job::start(&source, &target, |_| {});
    total += special_writes(&source, 2);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 0, "resumed with PSYNC: {status}");
    assert_same_data(&source, &target, true);
    assert_eq!(get_counter(&target), total);
    assert_eq!(get_counter(&source), total);
}

#[test]
fn version_1_checkpoint_of_an_older_ferry_resumes_with_psync_in_db_0() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    let mut c = source.client();
    incr(&mut c);
    job.wait_caught_up(&source);
    job.stop().unwrap();
    // What the version before the stream's database was recorded wrote: "<replid> <offset>".
    let v2 = checkpoint_value(&target).unwrap();
    let fields: Vec<&str> = v2.split(' ').collect();
    assert_eq!(fields[0], "v2", "{v2}");
    let v1 = format!("{} {}", fields[1], fields[2]);
    let mut t = target.client();
    redis::cmd("SELECT")
        .arg(CHECKPOINT_DB)
        .exec(&mut t)
        .unwrap();
    redis::cmd("SET")
        .arg("ferry:checkpoint:{ferry}")
        .arg(&v1)
        .exec(&mut t)
        .unwrap();
    for _ in 0..9 {
        incr(&mut c);
    }
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 0, "resumed with PSYNC: {status}");
    assert_eq!(get_counter(&target), 10);
    assert_same_data(&source, &target, true);
    assert!(checkpoint_value(&target).unwrap().starts_with("v2 "));
}

/// A live command the target does not know (7.0's `FUNCTION LOAD` for a 6.2 target) follows the target policy
/// before it is sent: `stop` ends the job naming the command (and no key: it has none), `skip` leaves it out and
/// goes on. Its first argument is not a key: a key of that name is neither deleted nor listed.
#[test]
fn a_keyless_command_the_target_does_not_know_follows_the_policy_and_touches_no_key() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let mut c = source.client();
    redis::cmd("SET")
        .arg("LOAD")
        .arg("keep-me")
        .exec(&mut c)
        .unwrap();
    let job = Job::start(&source, &target, |c| c.target_policy = TargetPolicy::Stop);
    job.wait_caught_up(&source);
    let lib = "#!lua name=ferrylib\nredis.register_function('setter', \
               function(keys, args) return redis.call('SET', keys[1], args[1]) end)";
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .exec(&mut c)
        .unwrap();
    incr(&mut c);
    ferry_testkit::wait_until(DEADLINE, "the job to stop on FUNCTION", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap();
    let err = job.stop().expect_err("policy stop").to_string();
    assert!(err.contains("does not know `function`"), "{err}");
    assert!(!err.contains("key"), "FUNCTION LOAD has no key: {err}");
    // Resumed under `skip`: FUNCTION LOAD is left out; what the function writes reaches the target as the
    // effects the source propagates.
    let job = Job::start(&source, &target, |c| c.target_policy = TargetPolicy::Skip);
    redis::cmd("FCALL")
        .arg("setter")
        .arg(1)
        .arg("ferry:by-function")
        .arg("v")
        .exec(&mut c)
        .unwrap();
    incr(&mut c);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 0, "{status}");
    assert!(status.policy_commands_skipped >= 1, "{status}");
    assert_eq!(status.policy_keys_skipped, 0, "{status}");
    assert_same_data(&source, &target, false);
    assert_eq!(get_counter(&target), 2);
    let mut t = target.client();
    let kept: Option<String> = redis::cmd("GET").arg("LOAD").query(&mut t).unwrap();
    assert_eq!(kept.as_deref(), Some("keep-me"));
    job.stop().unwrap();
}

/// A source propagates an approximate trim with `LIMIT` (`XADD s MAXLEN ~ 100 LIMIT 150 ...`) as the exact trim
/// it did, keeping the `LIMIT`, which any client but a replica's master link is refused ("LIMIT cannot be used
/// without the special ~ option"): the job stopped at the first such write. It now sends the exact trim without
/// the `LIMIT`, and the streams end equal.
#[test]
fn approximate_trims_with_a_limit_reach_the_target_as_the_exact_trims_they_were() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let mut c = source.client();
    for round in 0..20 {
        for i in 0..200 {
            redis::cmd("XADD")
                .arg("st")
                .arg("*")
                .arg("f")
                .arg(i)
                .exec(&mut c)
                .unwrap();
        }
        redis::cmd("XADD")
            .arg("st")
            .arg("MAXLEN")
            .arg("~")
            .arg(150 + round)
            .arg("LIMIT")
            .arg(150)
            .arg("*")
            .arg("f")
            .arg("trimmed")
            .exec(&mut c)
            .unwrap();
        let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("st")
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(120)
            .query(&mut c)
            .unwrap();
        redis::cmd("XTRIM")
            .arg("st")
            .arg("MINID")
            .arg("~")
            .arg(&first.last().unwrap().0)
            .arg("LIMIT")
            .arg(50)
            .exec(&mut c)
            .unwrap();
        incr(&mut c);
    }
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.phase, Phase::Incremental, "{status}");
    assert_same_data(&source, &target, false);
    assert_eq!(get_counter(&target), 20);
    job.stop().unwrap();
}

/// A standalone 7.0 source propagates `SPUBLISH` (shard channels). A 6.2 target has no shard channels, so no
/// subscriber to give it to: it is left out under every policy (under `stop` it stopped the job as an unknown
/// command), and a key named like the channel stays.
#[test]
fn a_shard_channel_message_for_a_target_without_shard_channels_is_left_out_and_deletes_nothing() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let mut c = source.client();
    redis::cmd("SET")
        .arg("news")
        .arg("kept")
        .exec(&mut c)
        .unwrap();
    for policy in [TargetPolicy::Stop, TargetPolicy::Skip] {
        let job = Job::start(&source, &target, |cfg| cfg.target_policy = policy);
        job.wait_caught_up(&source);
        redis::cmd("SPUBLISH")
            .arg("news")
            .arg("hello")
            .exec(&mut c)
            .unwrap();
        incr(&mut c);
        job.wait_caught_up(&source);
        let status = job.status.snapshot();
        assert_eq!(status.phase, Phase::Incremental, "{policy:?}: {status}");
        assert!(status.policy_skipped.is_empty(), "{policy:?}: {status}");
        job.stop().unwrap();
    }
    assert_same_data(&source, &target, false);
    assert_eq!(get_counter(&target), 2);
}
