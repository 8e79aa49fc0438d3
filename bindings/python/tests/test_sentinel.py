"""SentinelPool and AsyncSentinelPool against a real sentinel group: replies as redis-py returns them, pipelines,
and a SENTINEL FAILOVER under writes with no acknowledged, replicated write lost."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Iterator, List, Set

import pytest

import redis_ferry
from redis_ferry import AsyncSentinelPool, SentinelPool
from conftest import client, topology, wait_until


@pytest.fixture
def group() -> Iterator[Dict[str, Any]]:
    with topology("sentinel") as g:
        yield g


def sentinel_failover(g: Dict[str, Any]) -> None:
    """Ask a sentinel to fail over (as an operator would)."""
    r = client(g["sentinels"][0])
    r.execute_command("SENTINEL", "FAILOVER", g["master_name"])


def test_replies_are_what_redis_py_returns(group: Dict[str, Any]) -> None:
    with SentinelPool(group["sentinels"], group["master_name"]) as pool:
        assert pool.master_addr == group["master"]
        assert pool.execute_command("SET", "k", "v") == b"OK"
        assert pool.execute_command("GET", "k") == b"v"
        assert pool.execute_command("GET", "missing") is None
        assert pool.execute_command("INCR", "n") == 1
        assert pool.execute_command("INCRBY", b"n", 2) == 3
        assert pool.execute_command("RPUSH", "l", "a", b"b", 3) == 3
        assert pool.execute_command("LRANGE", "l", 0, -1) == [b"a", b"b", b"3"]
        assert pool.execute_command("SET", "f", 1.5) == b"OK"
        assert pool.execute_command("GET", "f") == b"1.5"
        assert pool.execute_command("HGETALL", "none") == []
        with pytest.raises(redis_ferry.ResponseError, match="WRONGTYPE"):
            pool.execute_command("LPUSH", "k", "x")
        with pytest.raises(TypeError):
            pool.execute_command("SET", "k", object())  # type: ignore[arg-type]


def test_pipelines_with_and_without_transaction(group: Dict[str, Any]) -> None:
    with SentinelPool(group["sentinels"], group["master_name"]) as pool:
        pipe = pool.pipeline(transaction=False)
        pipe.execute_command("SET", "a", 1).execute_command("INCR", "a").execute_command("GET", "a")
        assert len(pipe) == 3
        assert pipe.execute() == [b"OK", 2, b"2"]
        assert len(pipe) == 0

        tx = pool.pipeline()
        tx.execute_command("INCR", "a").execute_command("LPUSH", "a", "x").execute_command("INCR", "a")
        replies = tx.execute(raise_on_error=False)
        assert replies[0] == 3 and replies[2] == 4
        assert isinstance(replies[1], redis_ferry.ResponseError)
        tx.execute_command("SET", "b", "1").execute_command("LPUSH", "b", "x")
        with pytest.raises(redis_ferry.TargetRefused, match="WRONGTYPE"):
            tx.execute()


class Confirmed:
    """Writes acknowledged by the master AND confirmed by WAIT on every replica: those survive any failover."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.confirmed: List[int] = []
        self.acked = 0
        self.failed = 0
        self.masters: Set[str] = set()
        self.lock = threading.Lock()

    def record(self, n: int, replies: List[Any], master: Any) -> None:
        with self.lock:
            self.acked += 1
            if master:
                self.masters.add(master)
            if replies[1] == self.replicas:
                self.confirmed.append(n)


def check_no_confirmed_write_lost(new_master: str, log: Confirmed) -> None:
    r = client(new_master)
    lost = [n for n in log.confirmed if r.get(f"w:{n}") != str(n).encode()]
    assert lost == [], f"{len(lost)} acknowledged writes lost of {len(log.confirmed)}"


def test_failover_under_writes_loses_no_acknowledged_write(group: Dict[str, Any]) -> None:
    old = group["master"]
    log = Confirmed(replicas=len(group["replicas"]))
    stop = threading.Event()
    counter = iter(range(1, 10**9))
    counter_lock = threading.Lock()

    with SentinelPool(group["sentinels"], group["master_name"], max_total=8) as pool:

        def writer() -> None:
            while not stop.is_set():
                with counter_lock:
                    n = next(counter)
                try:
                    replies = pool.pipeline(transaction=False).execute_command("SET", f"w:{n}", n) \
                        .execute_command("WAIT", log.replicas, 100).execute()
                except redis_ferry.FerryError:
                    log.failed += 1
                    continue
                log.record(n, replies, pool.master_addr)

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(log.confirmed) >= 50, "confirmed writes before the failover")
        before = len(log.confirmed)
        generation = pool.generation
        sentinel_failover(group)
        new = wait_until(lambda: pool.master_addr not in (None, old) and pool.master_addr, "the pool to follow",
                         timeout=120)
        assert pool.generation > generation
        wait_until(lambda: len(log.confirmed) >= before + 50, "confirmed writes on the new master", timeout=120)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert new in group["replicas"]
    assert log.masters <= {old, new}
    check_no_confirmed_write_lost(new, log)


def test_async_pool_replies_pipeline_and_failover_lose_no_acknowledged_write(group: Dict[str, Any]) -> None:
    old = group["master"]
    log = Confirmed(replicas=len(group["replicas"]))

    async def run() -> str:
        async with AsyncSentinelPool(group["sentinels"], group["master_name"]) as pool:
            assert pool.master_addr == old
            assert await pool.execute_command("SET", "ak", "v") == b"OK"
            assert await pool.execute_command("GET", "ak") == b"v"
            assert await pool.execute_command("GET", "nope") is None
            assert await pool.pipeline().execute_command("INCR", "ac").execute_command("INCR", "ac").execute() == [1, 2]
            with pytest.raises(redis_ferry.TargetRefused):
                await pool.execute_command("HSET", "ak", "f", "v")

            stop = asyncio.Event()
            counter = iter(range(1, 10**9))

            async def writer() -> None:
                while not stop.is_set():
                    n = next(counter)
                    try:
                        replies = await pool.pipeline(transaction=False).execute_command("SET", f"w:{n}", n) \
                            .execute_command("WAIT", log.replicas, 100).execute()
                    except redis_ferry.FerryError:
                        log.failed += 1
                        continue
                    log.record(n, replies, pool.master_addr)

            async def until(cond: Any, what: str) -> None:
                loop = asyncio.get_running_loop()
                end = loop.time() + 120
                while not cond():
                    assert loop.time() < end, f"timed out waiting for {what}"
                    await asyncio.sleep(0.02)

            tasks = [asyncio.ensure_future(writer()) for _ in range(4)]
            await until(lambda: len(log.confirmed) >= 50, "confirmed writes before the failover")
            before = len(log.confirmed)
            await asyncio.get_running_loop().run_in_executor(None, sentinel_failover, group)
            await until(lambda: pool.master_addr not in (None, old), "the pool to follow")
            await until(lambda: len(log.confirmed) >= before + 50, "confirmed writes on the new master")
            stop.set()
            await asyncio.gather(*tasks)
            assert pool.master_addr is not None
            return pool.master_addr

    new = asyncio.run(run())
    assert new != old and new in group["replicas"]
    check_no_confirmed_write_lost(new, log)


def test_pool_errors_config_and_auth() -> None:
    with topology("sentinel", "--password", "data-secret") as g:
        with pytest.raises(redis_ferry.ConfigError, match="not monitored"):
            SentinelPool(g["sentinels"], "no-such-master", resolve_timeout=1.0)
        with pytest.raises(redis_ferry.AuthError) as err:
            SentinelPool(g["sentinels"], g["master_name"], password="wrong", resolve_timeout=1.0)
        assert "wrong" not in str(err.value)
        with SentinelPool(g["sentinels"], g["master_name"], password="data-secret") as pool:
            assert pool.execute_command("PING") == b"PONG"
    with pytest.raises(redis_ferry.ConfigError):
        SentinelPool("127.0.0.1:26379", "m")  # a string, not a list
    with pytest.raises(redis_ferry.ConfigError, match="db must be"):
        SentinelPool(["127.0.0.1:26379"], "m", db=-1)
    # A master that needs a password and was given none: the refusal itself, not a fallback's.
    with topology("sentinel", "--password", "data-secret") as g:
        with pytest.raises(redis_ferry.AuthError, match="NOAUTH Authentication required"):
            SentinelPool(g["sentinels"], g["master_name"], resolve_timeout=1.0)


def test_the_pool_uses_its_database_and_async_too(group: Dict[str, Any]) -> None:
    with SentinelPool(group["sentinels"], group["master_name"], db=3) as pool:
        assert pool.execute_command("SET", "in-db-3", "v") == b"OK"
        pipe = pool.pipeline()
        pipe.execute_command("INCR", "n3").execute_command("INCR", "n3")
        assert pipe.execute() == [1, 2]
    assert client(group["master"], db=3).get("in-db-3") == b"v"
    assert client(group["master"], db=3).get("n3") == b"2"
    assert client(group["master"], db=0).get("in-db-3") is None

    async def use_async() -> None:
        async with AsyncSentinelPool(group["sentinels"], group["master_name"], db=4) as pool:
            assert await pool.execute_command("SET", "in-db-4", "v") == b"OK"

    asyncio.run(use_async())
    assert client(group["master"], db=4).get("in-db-4") == b"v"


def test_an_application_user_without_role_or_info(group: Dict[str, Any]) -> None:
    """A user without @dangerous (no ROLE, no INFO), as applications are often given: the pool learns the
    master's role from HELLO and writes."""
    for addr in [group["master"], *group["replicas"]]:
        client(addr).execute_command("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-@dangerous")
    with SentinelPool(group["sentinels"], group["master_name"], username="app", password="app-secret") as pool:
        with pytest.raises(redis_ferry.FerryError, match="NOPERM"):
            pool.execute_command("ROLE")
        assert pool.execute_command("SET", "app:k", "v") == b"OK"
        assert pool.execute_command("GET", "app:k") == b"v"
