"""redis_ferry.rdb.open against RDB files written by a real server filled with every type and encoding."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import redis_ferry
from redis_ferry import rdb
from conftest import client, fill


def save_rdb(addr: str, dest: Path) -> Path:
    """SAVE on the server and copy its RDB file to `dest`."""
    r = client(addr)
    r.save()
    d = r.config_get("dir")["dir"]
    name = r.config_get("dbfilename")["dbfilename"]
    shutil.copyfile(Path(d) / name, dest)
    return dest


def server_value(r: Any, key: bytes, kind: str) -> Any:
    if kind == "string":
        return r.get(key)
    if kind == "list":
        return r.lrange(key, 0, -1)
    if kind == "set":
        return set(r.smembers(key))
    if kind == "zset":
        # (member, score) pairs in ZRANGE order: rdb.open gives them so, whatever the file's order.
        return [tuple(p) for p in r.zrange(key, 0, -1, withscores=True)]
    if kind == "hash":
        return r.hgetall(key)
    if kind == "stream":
        return r.xrange(key, "-", "+")
    raise AssertionError(f"unexpected type {kind}")


def entry_value(e: rdb.Entry) -> Any:
    if e.type == "stream":
        return [(i, f) for i, f in e.value["entries"]]
    return e.value


def check_stream_metadata(r: Any, e: rdb.Entry) -> None:
    info = r.xinfo_stream(e.key)
    v = e.value
    assert v["length"] == info["length"]
    assert v["last_id"] == info["last-generated-id"]
    assert v["entries_added"] == info["entries-added"]
    assert v["max_deleted_id"] == info["max-deleted-entry-id"]
    groups = {g["name"]: g for g in r.xinfo_groups(e.key)}
    assert {g["name"] for g in v["groups"]} == set(groups)
    for g in v["groups"]:
        sg = groups[g["name"]]
        assert g["last_delivered_id"] == sg["last-delivered-id"]
        assert len(g["pending"]) == sg["pending"]
        consumers = {c["name"]: c for c in r.xinfo_consumers(e.key, g["name"])}
        assert {c["name"] for c in g["consumers"]} == set(consumers)
        for c in g["consumers"]:
            assert len(c["pending"]) == consumers[c["name"]]["pending"]


def test_open_yields_every_key_of_a_filled_server_with_the_servers_values(
    standalone: Dict[str, Any], tmp_path: Path
) -> None:
    addr = standalone["addr"]
    report = fill(addr, seed=7)
    client(addr).config_set("maxmemory-policy", "allkeys-lfu")
    path = save_rdb(addr, tmp_path / "dump.rdb")

    seen: Dict[int, Dict[str, int]] = {}
    checked = 0
    conns = {db: client(addr, db=db) for db in (0, 1, 2)}
    with rdb.open(path) as entries:
        for e in entries:
            assert isinstance(e.key, bytes)
            r = conns[e.db]
            assert r.type(e.key).decode() == e.type, e
            assert entry_value(e) == server_value(r, e.key, e.type), e
            if e.type == "stream":
                check_stream_metadata(r, e)
            pexpire = r.pexpiretime(e.key)
            assert e.expire_at_ms == (None if pexpire == -1 else pexpire), e
            assert isinstance(e.freq, int) and e.idle is None, e
            seen.setdefault(e.db, {}).setdefault(e.type, 0)
            seen[e.db][e.type] += 1
            checked += 1

    assert checked == report["total_keys"] == sum(conns[db].dbsize() for db in conns)
    assert {str(db): kinds for db, kinds in seen.items()} == report["keys"]
    assert {"string", "list", "set", "zset", "hash", "stream"} <= set(seen[0])


def test_open_streams_entries_before_reaching_a_truncation(standalone: Dict[str, Any], tmp_path: Path) -> None:
    addr = standalone["addr"]
    fill(addr, seed=3, scale=2, dbs="0")
    path = save_rdb(addr, tmp_path / "dump.rdb")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size * 2 // 3)
    got: List[bytes] = []
    with pytest.raises(redis_ferry.DataError) as err:
        for e in rdb.open(path):
            got.append(e.key)
    assert got, "keys before the truncation were yielded first"
    assert "truncated" in str(err.value)
    assert err.value.kind == "data"


def test_open_of_a_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(redis_ferry.DataError, match="cannot open"):
        rdb.open(tmp_path / "missing.rdb")


def test_open_of_a_file_that_is_not_rdb_raises_data_error(tmp_path: Path) -> None:
    p = tmp_path / "not.rdb"
    p.write_bytes(b"hello, this is not an RDB file at all\n" * 4)
    with pytest.raises(redis_ferry.FerryError) as err:
        list(rdb.open(os.fspath(p)))
    assert isinstance(err.value, redis_ferry.DataError)
    assert "not an RDB file" in str(err.value)


def test_entry_values_are_plain_python_types(standalone: Dict[str, Any], tmp_path: Path) -> None:
    addr = standalone["addr"]
    r = client(addr)
    r.set("s", b"\x00\xffbin")
    r.rpush("l", "a", "b")
    r.sadd("st", "x")
    r.zadd("z", {"m": 1.5})
    r.hset("h", mapping={"f": "v"})
    r.xadd("x", {"a": "1"}, id="1-1")
    r.pexpireat("s", 4102444800000)
    path = save_rdb(addr, tmp_path / "d.rdb")
    by_key: Dict[bytes, Tuple[str, Any, Any]] = {e.key: (e.type, e.value, e.expire_at_ms) for e in rdb.open(path)}
    assert by_key[b"s"] == ("string", b"\x00\xffbin", 4102444800000)
    assert by_key[b"l"] == ("list", [b"a", b"b"], None)
    assert by_key[b"st"] == ("set", {b"x"}, None)
    assert by_key[b"z"] == ("zset", [(b"m", 1.5)], None)
    assert by_key[b"h"] == ("hash", {b"f": b"v"}, None)
    kind, stream, _ = by_key[b"x"]
    assert kind == "stream" and stream["entries"] == [(b"1-1", {b"a": b"1"})]


def test_restore_writes_the_file_into_another_server_blocking_and_async(standalone: Dict[str, Any],
                                                                        tmp_path: Path) -> None:
    from conftest import compare, topology

    filled = fill(standalone["addr"], seed=31)
    path = save_rdb(standalone["addr"], tmp_path / "dump.rdb")
    with topology("standalone") as target:
        report = rdb.restore(path, f"redis://{target['addr']}")
        assert isinstance(report, rdb.RestoreReport)
        assert report.keys_restored == filled["total_keys"]
        assert report.policy.keys_skipped == 0 and report.policy.skipped == []
        assert compare(standalone["addr"], target["addr"])["equal"]
        # Again: every key exists now, and the default conflict policy refuses them.
        with pytest.raises(redis_ferry.FerryError, match="already exists"):
            rdb.restore(path, f"redis://{target['addr']}")
    with topology("standalone") as target:
        import asyncio

        report = asyncio.run(rdb.restore_async(path, f"redis://{target['addr']}", conflict="rewrite"))
        assert report.keys_restored == filled["total_keys"]
        assert compare(standalone["addr"], target["addr"])["equal"]


def test_restore_follows_the_target_policy_for_what_the_target_cannot_hold(tmp_path: Path) -> None:
    from conftest import topology

    with topology("standalone", "--version", "8.2") as source:
        r = client(source["addr"])
        r.hset("h", mapping={"plain": "1", "expiring": "2"})
        r.execute_command("HPEXPIREAT", "h", 4_102_444_800_000, "FIELDS", 1, "expiring")
        r.set("s", "x")
        path = save_rdb(source["addr"], tmp_path / "hfe.rdb")
    with topology("standalone", "--version", "7.0") as target:
        url = f"redis://{target['addr']}"
        with pytest.raises(redis_ferry.TargetRefused, match='"h"'):
            rdb.restore(path, url)
        client(target["addr"]).flushall()
        report = rdb.restore(path, url, target_policy="skip")
        assert report.policy.keys_skipped == 1
        assert [(k.db, k.key) for k in report.policy.skipped] == [(0, '"h"')]
        t = client(target["addr"])
        assert t.exists("h") == 0 and t.get("s") == b"x"
        t.flushall()
        report = rdb.restore(path, url, target_policy="convert")
        assert report.policy.keys_converted == 1
        assert t.hgetall("h") == {b"plain": b"1", b"expiring": b"2"}
        with pytest.raises(redis_ferry.ConfigError):
            rdb.restore(path, url, target_policy="maybe")
