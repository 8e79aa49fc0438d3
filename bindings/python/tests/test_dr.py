"""DrPair against a real standalone/standalone pair (ferry-testkit): init, the run with writes in every phase,
failover, recover, switchback, and at the end both sides equal with exact counters; the same calls through
asyncio; configuration errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict

import pytest

import redis_ferry
from redis_ferry import DrPair, DrRun
from conftest import client, compare, fill, topology, wait_until

IGNORE = ["ferry:checkpoint:", "ferry:state:"]


def wait_job(run: DrRun, direction: str, epoch: int) -> None:
    def running() -> bool:
        s = run.status()
        return s.direction == direction and s.epoch == epoch and s.job is not None and s.job.phase == "incremental"

    wait_until(running, f"the {direction} job of epoch {epoch} to stream")


def wait_equal(a: str, b: str) -> None:
    last: Dict[str, Any] = {}

    def equal() -> bool:
        last.update(compare(a, b, IGNORE))
        return bool(last["equal"])

    try:
        wait_until(equal, "A and B to hold the same data")
    except AssertionError as e:
        raise AssertionError(f"{e}: {last}") from None


class Writer:
    """Sequential INCRs of one counter and SETs of new keys on whichever side is primary; counts the acked."""

    def __init__(self, a: str, b: str) -> None:
        self.clients = {"a": client(a), "b": client(b)}
        self.acked = 0

    def write(self, side: str, n: int) -> None:
        r = self.clients[side]
        for _ in range(n):
            r.incr("dr:counter")
            self.acked += 1
            r.set(f"dr:key:{self.acked}", self.acked)


def test_walk_through_standalone_pair_ends_equal_with_exact_counter() -> None:
    with topology("standalone") as a, topology("standalone") as b:
        fill(a["addr"], seed=3)
        pair = DrPair(name="py-walk", a=f"redis://{a['addr']}", b=f"redis://{b['addr']}")
        status = pair.init()
        assert (status.phase, status.epoch, status.primary) == ("normal", 1, "a")
        app = Writer(a["addr"], b["addr"])
        with pair.run() as run:
            wait_job(run, "a_to_b", 1)
            app.write("a", 200)

            failover = pair.failover()
            assert failover.changed and failover.rpo is not None and failover.lag_bytes == 0, failover
            assert not pair.failover().changed, "a retry finds the failover done"
            status = pair.status()
            assert (status.phase, status.primary, status.direction) == ("failed_over", "b", None)
            app.write("b", 200)

            recover = pair.recover()
            assert recover.outcome == "incremental" and recover.extra_writes_on_a == 0, recover
            wait_job(run, "b_to_a", recover.epoch)
            app.write("b", 100)

            back = pair.switchback()
            assert back.changed and back.write_pause_ms is not None, back
            wait_job(run, "a_to_b", back.epoch)
            app.write("a", 100)
            status = pair.status()
            assert (status.phase, status.primary, status.a_epoch, status.b_epoch) == (
                "normal", "a", back.epoch, back.epoch)
            wait_equal(a["addr"], b["addr"])
            assert run.status().job is not None and run.status().job.full_syncs == 0  # type: ignore[union-attr]
        for side in ("a", "b"):
            assert int(app.clients[side].get("dr:counter")) == app.acked == 600


def test_the_calls_through_asyncio_and_the_run_events() -> None:
    async def walk(a: str, b: str) -> None:
        pair = DrPair({"name": "py-async", "a": f"redis://{a}", "b": {"type": "standalone", "url": f"redis://{b}"}})
        assert (await pair.init_async()).phase == "normal"
        run = pair.run()
        events = run.events()
        async with run:
            wait_job(run, "a_to_b", 1)
            client(a).set("async:k", "1")
            wait_until(lambda: client(b).get("async:k") == b"1", "the key on B")
            assert (await pair.failover_async()).changed
            client(b).set("async:k", "2")
            recover = await pair.recover_async()
            assert recover.outcome == "incremental"
            wait_until(lambda: client(a).get("async:k") == b"2", "B's change on A")
            back = await pair.switchback_async()
            assert back.changed
            assert (await pair.status_async()).primary == "a"
            wait_job(run, "a_to_b", back.epoch)
        primaries = [e.data["side"] async for e in events if e.type == "primary"]
        assert primaries[-1] == "a" and "b" in primaries, primaries

    with topology("standalone") as a, topology("standalone") as b:
        asyncio.run(walk(a["addr"], b["addr"]))
        wait_equal(a["addr"], b["addr"])


def test_configuration_errors_and_a_toml_file(tmp_path: Path) -> None:
    with pytest.raises(redis_ferry.ConfigError, match="same deployment"):
        DrPair(name="x", a="redis://127.0.0.1:1", b="redis://127.0.0.1:1")
    with pytest.raises(redis_ferry.ConfigError, match="name"):
        DrPair(name="bad name", a="redis://127.0.0.1:1", b="redis://127.0.0.1:2")
    toml = tmp_path / "dr.toml"
    toml.write_text('name = "filed"\n[a]\ntype = "standalone"\nurl = "redis://127.0.0.1:1"\n'
                    '[b]\ntype = "standalone"\nurl = "redis://127.0.0.1:2"\n')
    pair = DrPair(toml)
    with pytest.raises(redis_ferry.ConnectionError, match="neither side"):
        pair.status()
