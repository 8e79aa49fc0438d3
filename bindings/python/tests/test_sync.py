"""SyncJob and verify against real servers: live writes, status and events, stop and resume, planted
differences; the blocking API and the asyncio one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import redis_ferry
from redis_ferry import Event, SyncJob, verify, verify_async
from conftest import client, compare, fill, topology, wait_until

CHECKPOINT = "ferry:checkpoint"


@pytest.fixture
def pair() -> Iterator[Tuple[str, str]]:
    """A source and a target server, as host:port."""
    with topology("standalone") as s, topology("standalone") as t:
        yield s["addr"], t["addr"]


def url(addr: str) -> str:
    return f"redis://{addr}"


class Writer:
    """Writes to the source in a thread: INCR counter and SET w:<n>; counts what the server acknowledged."""

    def __init__(self, addr: str) -> None:
        self.r = client(addr)
        self.acked = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            n = self.r.incr("counter")
            self.r.set(f"w:{n}", n)
            self.acked = n

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=60)


def assert_equal(source: str, target: str) -> None:
    report = compare(source, target, [CHECKPOINT])
    assert report["equal"], report


def target_counter(addr: str) -> int:
    v = client(addr).get("counter")
    return int(v) if v is not None else 0


def test_sync_with_live_writes_ends_equal_with_status_and_events_while_running(pair: Tuple[str, str]) -> None:
    source, target = pair
    filled = fill(source, seed=11)
    events: List[Event] = []
    with Writer(source) as writer:
        wait_until(lambda: writer.acked >= 50, "writes before the job starts")
        with SyncJob(source=url(source), target=url(target)) as job:
            reader = threading.Thread(target=lambda: events.extend(job.events()), daemon=True)
            reader.start()
            status = wait_until(
                lambda: (s := job.status()).phase == "incremental" and s, "the live stream", timeout=120
            )
            assert status.keys_copied >= filled["total_keys"]
            assert status.full_syncs == 1 and status.last_error is None
            assert status.shards[0].source == source
            seen = writer.acked
            wait_until(lambda: writer.acked >= seen + 200, "live writes during the stream")
            wait_until(lambda: job.status().commands_applied > 0, "commands applied by the stream")
            writer.__exit__()
            final = writer.acked
            wait_until(lambda: target_counter(target) == final, "the target to catch up")
            # Writes stopped and applied: RedisShake's cut-over test holds.
            assert wait_until(lambda: job.status().consistent, "the status to say consistent") is True
            stopped = job.stop()
        reader.join(timeout=60)
    assert stopped.phase in ("stopped", "caught_up")
    assert target_counter(target) == final
    assert_equal(source, target)
    phases = [e.data["phase"] for e in events if e.type == "phase"]
    # A job stopped after catching up ends in caught_up (the façade's final phase), otherwise in stopped.
    assert "incremental" in phases and phases[-1] in ("stopped", "caught_up"), phases
    assert phases[:3] == ["handshake", "full_sync", "incremental"], phases
    # The copy's reason comes as an event of its own (a type the first versions did not have).
    resyncs = [e.data for e in events if e.type == "full_resync"]
    assert len(resyncs) == 1 and resyncs[0]["shard"] is None, resyncs
    assert "no checkpoint" in resyncs[0]["reason"], resyncs
    assert not reader.is_alive(), "the events iterator ends when the job ends"


def test_stop_and_resume_applies_every_increment_exactly_once(pair: Tuple[str, str]) -> None:
    source, target = pair
    r = client(source)
    config: Dict[str, Any] = {"source": url(source), "target": url(target)}
    with SyncJob(config) as job:
        wait_until(lambda: job.status().phase == "incremental", "the live stream", timeout=120)
        for _ in range(300):
            r.incr("counter")
        wait_until(lambda: target_counter(target) == 300, "the first 300 increments")
    # No job runs: these are only in the source's backlog, after the committed checkpoint.
    for _ in range(500):
        r.incr("counter")
    with Writer(source) as writer:
        with SyncJob(config) as job:
            wait_until(lambda: job.status().phase == "incremental", "the resumed stream", timeout=120)
            resumed = job.status()
            wait_until(lambda: writer.acked >= 1000, "writes while resumed")
            writer.__exit__()
            wait_until(lambda: target_counter(target) == writer.acked, "the target to catch up")
    assert resumed.full_syncs == 0, "resumed with PSYNC from the checkpoint, no new full copy"
    assert target_counter(target) == writer.acked == int(r.get("counter"))
    assert_equal(source, target)


def test_verify_finds_each_planted_difference(pair: Tuple[str, str]) -> None:
    source, target = pair
    fill(source, seed=5, dbs="0")
    s = client(source)
    for i in range(20):
        s.set(f"plain:{i}", i)
    s.set("ttl-key", "v", px=3_600_000)
    s.set("type-key", "v")
    job = SyncJob(source=url(source), target=url(target), until_caught_up=True)
    job.start()
    done = job.wait(timeout=300)
    assert done.phase == "caught_up"
    assert verify(url(source), url(target)).equal

    t = client(target)
    t.delete("plain:1")  # missing
    t.set("plain:2", "changed")  # value
    t.set("only-on-target", "x")  # extra
    t.pexpire("ttl-key", 100_000_000)  # ttl
    t.delete("type-key")
    t.rpush("type-key", "v")  # type
    report = verify(url(source), url(target), max_differences=100)
    assert not report.equal
    assert (report.missing, report.extra_keys, report.value_mismatch, report.ttl_mismatch, report.type_mismatch) == (
        1, 1, 1, 1, 1
    ), report
    # Keys are shown quoted and escaped (binary-safe), as the façade reports them.
    kinds = {(d.kind, d.key.strip('"')) for d in report.differences}
    assert kinds == {
        ("missing", "plain:1"),
        ("extra", "only-on-target"),
        ("value", "plain:2"),
        ("ttl", "ttl-key"),
        ("type", "type-key"),
    }, kinds


def test_verify_compares_what_a_filtered_and_mapped_job_copies(pair: Tuple[str, str]) -> None:
    source, target = pair
    client(source, db=0).set("app:1", "a")
    client(source, db=0).set("tmp:1", "left out")
    client(source, db=2).set("app:2", "b")
    job = SyncJob(
        source=url(source),
        target=url(target),
        filter={"allow_key_prefixes": ["app:"]},
        db_map={"2": 5},
        until_caught_up=True,
    )
    job.start()
    assert job.wait(timeout=300).phase == "caught_up"
    assert client(target, db=5).get("app:2") == b"b"
    assert not verify(url(source), url(target)).equal
    report = verify(url(source), url(target), filter={"allow_key_prefixes": ["app:"]}, db_map={"2": 5})
    assert report.equal and report.keys_checked == 2, report

    # Databases named in the URLs: source database 2 against target database 5.
    client(target, db=5).set("app:2", "changed")
    report = verify(f"{url(source)}/2", f"{url(target)}/5")
    assert (report.equal, report.value_mismatch, report.dbs) == (False, 1, [2]), report
    assert (report.differences[0].db, report.differences[0].target_db) == (2, 5), report


def test_asyncio_sync_until_caught_up_with_async_events_then_verify_async() -> None:
    async def run(source: str, target: str) -> None:
        phases: List[str] = []
        async with SyncJob(source=url(source), target=url(target), until_caught_up=True) as job:

            async def read() -> None:
                async for e in job.events():
                    if e.type == "phase":
                        phases.append(e.data["phase"])

            reader = asyncio.ensure_future(read())
            status = await job.wait_async(timeout=300)
            await asyncio.wait_for(reader, 60)
        assert status.phase == "caught_up"
        assert phases and phases[-1] in ("caught_up", "stopped"), phases
        report = await verify_async(url(source), url(target))
        assert report.equal, report

    with topology("standalone") as s, topology("standalone") as t:
        fill(s["addr"], seed=21)
        asyncio.run(run(s["addr"], t["addr"]))
        assert_equal(s["addr"], t["addr"])


def test_asyncio_stop_and_resume_is_exact() -> None:
    async def run(source: str, target: str) -> int:
        r = client(source)
        config = {"source": url(source), "target": url(target)}
        job = SyncJob(config).start()
        while job.status().phase != "incremental":
            await asyncio.sleep(0.02)
        for _ in range(200):
            r.incr("counter")
        while target_counter(target) != 200:
            await asyncio.sleep(0.02)
        stopped = await job.stop_async()
        assert stopped.phase in ("stopped", "caught_up")
        for _ in range(300):
            r.incr("counter")
        async with SyncJob(config) as again:
            while target_counter(target) != 500:
                await asyncio.sleep(0.02)
            assert again.status().full_syncs == 0
        return target_counter(target)

    with topology("standalone") as s, topology("standalone") as t:
        got = asyncio.run(asyncio.wait_for(run(s["addr"], t["addr"]), 300))
        assert got == 500
        assert_equal(s["addr"], t["addr"])


def test_wait_with_a_timeout_raises_timeout_error_and_the_job_goes_on(pair: Tuple[str, str]) -> None:
    source, target = pair
    with SyncJob(source=url(source), target=url(target)) as job:
        with pytest.raises(TimeoutError):
            job.wait(timeout=0.2)
        assert not job.is_finished()
        client(source).set("after-timeout", "1")
        wait_until(lambda: client(target).get("after-timeout") == b"1", "the job still running")


def test_a_toml_file_configures_a_job(pair: Tuple[str, str], tmp_path: Any) -> None:
    source, target = pair
    client(source).set("from-toml", "yes")
    path = tmp_path / "sync.toml"
    path.write_text(
        f'until_caught_up = true\n[source]\ntype = "standalone"\nurl = "{url(source)}"\n'
        f'[target]\ntype = "standalone"\nurl = "{url(target)}"\n'
    )
    job = SyncJob(path)
    assert job.config["until_caught_up"] is True
    assert job.start().wait(timeout=300).phase == "caught_up"
    assert client(target).get("from-toml") == b"yes"
    assert isinstance(job.status(), redis_ferry.Status)


def test_a_redisshake_v4_file_is_read_as_the_cli_reads_it(pair: Tuple[str, str], tmp_path: Any) -> None:
    source, target = pair
    s = client(source)
    s.set("keep", "1")
    s.set("tmp:skip", "1")
    path = tmp_path / "shake.toml"
    path.write_text(
        f'[sync_reader]\ncluster = false\naddress = "{source}"\n\n'
        f'[redis_writer]\ncluster = false\naddress = "{target}"\n\n'
        '[filter]\nblock_key_prefix = ["tmp:"]\n'
    )
    with SyncJob(str(path)) as job:
        assert job.config["filter"]["block_key_prefixes"] == ["tmp:"]
        wait_until(lambda: client(target).get("keep") == b"1", "the copy")
        s.set("tmp:live", "1")
        s.set("keep-live", "1")
        wait_until(lambda: client(target).get("keep-live") == b"1", "the live stream")
    t = client(target)
    assert t.exists("tmp:skip") == 0 and t.exists("tmp:live") == 0


def test_the_status_reads_the_target_policy_report() -> None:
    from redis_ferry.sync import Status

    text = (
        '{"phase":"stopped","keys_copied":1,"keys_done":1,"keys_expected":null,"keys_skipped":0,'
        '"commands_applied":0,"commands_filtered":0,"bytes_read":0,"bytes_written":0,"ops_per_sec":0.0,'
        '"lag_bytes":0,"lag_ms":0,"full_syncs":1,"reconnects":0,"errors":0,"shards":[],"last_error":null,'
        '"policy":{"keys_skipped":1,"keys_converted":0,"commands_skipped":2,"commands_converted":0,'
        '"skipped":[{"db":0,"key":"\\"h\\"","loss":"hash field expiries (2 field(s))"}],'
        '"converted":[]},"keys_swept":0}'
    )
    status = Status._from_json(text)
    assert status.policy.keys_skipped == 1 and status.policy.commands_skipped == 2
    assert [(k.db, k.key) for k in status.policy.skipped] == [(0, '"h"')]
    assert status.extra == {"keys_swept": 0}
    # A status without the report (an older façade) reads as an empty one.
    older = Status._from_json(text.split(',"policy"')[0] + "}")
    assert older.policy.keys_skipped == 0 and older.policy.skipped == []
