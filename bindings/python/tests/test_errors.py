"""Each exception class is raised where it should be, keeps its kind and message, and is a FerryError."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Iterator, Tuple, Type

import pytest

import redis_ferry
from redis_ferry import AsyncSentinelPool, SentinelPool, SyncJob, rdb, verify
from conftest import client, topology

KINDS = {
    redis_ferry.ConfigError: "config",
    redis_ferry.AuthError: "auth",
    redis_ferry.ConnectionError: "connection",
    redis_ferry.TargetRefused: "target_refused",
    redis_ferry.ResponseError: "target_refused",
    redis_ferry.SourceRefused: "source_refused",
    redis_ferry.DataError: "data",
    redis_ferry.Fenced: "fenced",
    redis_ferry.Stopped: "stopped",
}


@pytest.mark.parametrize("cls,kind", sorted(KINDS.items(), key=lambda kv: kv[1]))
def test_every_error_class_is_a_ferry_error_with_its_kind(cls: Type[redis_ferry.FerryError], kind: str) -> None:
    assert issubclass(cls, redis_ferry.FerryError) and issubclass(cls, Exception)
    assert cls.kind == kind
    assert cls.__module__ == "redis_ferry"


@pytest.fixture
def pair() -> Iterator[Tuple[str, str]]:
    with topology("standalone") as s, topology("standalone") as t:
        yield s["addr"], t["addr"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config_error_for_an_unknown_option_names_it() -> None:
    with pytest.raises(redis_ferry.ConfigError) as err:
        SyncJob(source="redis://127.0.0.1:1", target="redis://127.0.0.1:2", until_caught_upp=True)
    assert "until_caught_upp" in str(err.value)
    with pytest.raises(redis_ferry.ConfigError):
        SyncJob()
    with pytest.raises(redis_ferry.ConfigError, match="verify options"):
        verify("redis://127.0.0.1:1", "redis://127.0.0.1:2", no_such_option=1)


def test_connection_error_when_nothing_listens() -> None:
    with pytest.raises(redis_ferry.ConnectionError) as err:
        verify(f"redis://127.0.0.1:{closed_port()}", f"redis://127.0.0.1:{closed_port()}")
    assert err.value.kind == "connection"
    with pytest.raises(redis_ferry.ConnectionError, match="All sentinels down"):
        SentinelPool([("127.0.0.1", closed_port())], "mymaster", resolve_timeout=1.0)


def test_auth_error_for_a_wrong_password() -> None:
    with topology("standalone", "--password", "right-secret") as s:
        with pytest.raises(redis_ferry.AuthError) as err:
            verify(f"redis://:wrong-secret@{s['addr']}", f"redis://:right-secret@{s['addr']}")
        assert "wrong-secret" not in str(err.value) and "right-secret" not in str(err.value)


def test_target_refused_when_a_key_already_exists_under_policy_panic(pair: Tuple[str, str]) -> None:
    source, target = pair
    client(source).set("clash", "from-source")
    client(target).set("clash", "already-here")
    job = SyncJob(source=f"redis://{source}", target=f"redis://{target}").start()
    with pytest.raises(redis_ferry.TargetRefused) as err:
        job.wait(timeout=120)
    assert "clash" in str(err.value)
    assert client(target).get("clash") == b"already-here"


def test_response_error_for_a_servers_error_reply_with_its_code() -> None:
    with topology("sentinel") as g:
        master = client(g["master"])
        master.execute_command("ACL", "SETUSER", "noget", "on", ">pw", "~*", "&*", "+@all", "-get")
        with SentinelPool(g["sentinels"], g["master_name"]) as pool:
            pool.execute_command("SET", "s", "v")
            with pytest.raises(redis_ferry.ResponseError) as err:
                pool.execute_command("LPUSH", "s", "x")
            e = err.value
            assert isinstance(e, redis_ferry.TargetRefused) and isinstance(e, redis_ferry.FerryError)
            assert e.code == "WRONGTYPE" and e.kind == "target_refused"
            assert str(e).startswith("WRONGTYPE Operation against a key holding the wrong kind of value")
            with pytest.raises(redis_ferry.ResponseError) as err:
                pool.execute_command("NO-SUCH-COMMAND")
            assert err.value.code == "ERR" and "unknown command" in str(err.value)
            # In a pipeline the reply stays in place as a ResponseError instance.
            replies = pool.pipeline(transaction=False).execute_command("INCR", "s").execute_command("GET", "s").execute(
                raise_on_error=False
            )
            assert isinstance(replies[0], redis_ferry.ResponseError) and replies[0].code == "ERR"
            assert replies[1] == b"v"
        # A refusal of the credentials' permissions is not a reply error of the command: AuthError.
        with SentinelPool(g["sentinels"], g["master_name"], username="noget", password="pw") as pool:
            with pytest.raises(redis_ferry.AuthError) as auth:
                pool.execute_command("GET", "s")
            assert not isinstance(auth.value, redis_ferry.ResponseError)
            assert "NOPERM" in str(auth.value)

        async def run() -> None:
            async with AsyncSentinelPool(g["sentinels"], g["master_name"]) as apool:
                with pytest.raises(redis_ferry.ResponseError) as err:
                    await apool.execute_command("HSET", "s", "f", "v")
                assert err.value.code == "WRONGTYPE"

        asyncio.run(run())


def test_source_refused_when_the_source_will_not_replicate(pair: Tuple[str, str]) -> None:
    source, target = pair
    client(source).execute_command("ACL", "SETUSER", "nosync", "on", ">pw", "~*", "&*", "+@all", "-psync", "-sync")
    job = SyncJob(source=f"redis://nosync:pw@{source}", target=f"redis://{target}").start()
    with pytest.raises(redis_ferry.SourceRefused) as err:
        job.wait(timeout=120)
    assert "PSYNC" in str(err.value)
    assert "pw@" not in str(err.value)


def test_fenced_when_the_target_checkpoint_does_not_continue(pair: Tuple[str, str]) -> None:
    source, target = pair
    client(target).set("ferry:checkpoint:{ferry}", "not a checkpoint")
    job = SyncJob(source=f"redis://{source}", target=f"redis://{target}").start()
    with pytest.raises(redis_ferry.Fenced, match="checkpoint"):
        job.wait(timeout=120)


def test_data_error_for_a_file_that_is_not_rdb(tmp_path: Path) -> None:
    p = tmp_path / "x.rdb"
    p.write_bytes(b"REDIS0011" + b"\xfe" * 3)
    with pytest.raises(redis_ferry.DataError):
        list(rdb.open(p))
    with pytest.raises(redis_ferry.DataError):
        rdb.stats(p)


def test_stopped_for_a_job_not_started_and_a_closed_pool() -> None:
    job = SyncJob(source="redis://127.0.0.1:1", target="redis://127.0.0.1:2")
    with pytest.raises(redis_ferry.Stopped):
        job.status()
    with topology("sentinel") as g:
        pool = SentinelPool(g["sentinels"], g["master_name"])
        assert pool.execute_command("PING") == b"PONG"
        pool.close()
        with pytest.raises(redis_ferry.Stopped):
            pool.execute_command("PING")
