"""Iterate an RDB file into Python objects: redis_ferry.rdb.open against rdbtools and rdb-cli, on the same file,
same run.

    python bindings/python/benches/rdb_open.py make FILE [--keys N]   # needs FERRY_TESTKIT and redis (redis-py)
    python bindings/python/benches/rdb_open.py ferry FILE              # in a venv with the redis-ferry wheel
    python bindings/python/benches/rdb_open.py rdbtools FILE           # in a venv with `pip install rdbtools`
    python bindings/python/benches/rdb_open.py rdb-cli FILE            # in a venv with `pip install rdb-cli`

rdb-cli (PyPI) is a fork of rdbtools with partial RDB 10 support; it installs the same `rdbtools` module, so both
run the same callback, each in its own virtualenv. Every reader keeps the last key and value it built (as
``(key, value)``), so each builds and touches the same objects.

`make` starts a Redis 6.2 server (RDB v9, which rdbtools reads) through ferry-testkit, writes N keys (70%
strings, 10% each lists, hashes and sets, small enough for the compact encodings), SAVEs and copies the file.
The readers print one JSON line: keys, wall and CPU seconds (best of --repeat), keys/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List


def make(path: str, keys: int) -> None:
    import redis

    proc = subprocess.Popen([os.environ["FERRY_TESTKIT"], "start", "standalone", "--version", "6.2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        addr = json.loads(proc.stdout.readline())["addr"]
        host, port = addr.rsplit(":", 1)
        r = redis.Redis(host=host, port=int(port), socket_timeout=600)
        pipe = r.pipeline(transaction=False)
        for i in range(keys):
            kind = i % 10
            if kind < 7:
                pipe.set(f"string:{i}", f"value-{i}-" + "x" * (i % 40))
            elif kind == 7:
                pipe.rpush(f"list:{i}", *[f"e{j}" for j in range(8)])
            elif kind == 8:
                pipe.hset(f"hash:{i}", mapping={f"f{j}": f"v{i}-{j}" for j in range(6)})
            else:
                pipe.sadd(f"set:{i}", *[f"m{j}" for j in range(6)])
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
        r.save()
        d = r.config_get("dir")["dir"]
        name = r.config_get("dbfilename")["dbfilename"]
        shutil.copyfile(os.path.join(d, name), path)
        print(json.dumps({"file": path, "keys": r.dbsize(), "bytes": os.path.getsize(path)}))
    finally:
        proc.stdin.close()
        proc.wait()


def read_ferry(path: str) -> int:
    from redis_ferry import rdb

    n = 0
    last: Any = None
    for e in rdb.open(path):
        n += 1
        last = (e.key, e.value)
    assert last is not None or n == 0
    return n


def read_rdbtools(path: str) -> int:
    from rdbtools import RdbCallback, RdbParser

    class Collect(RdbCallback):  # type: ignore[misc]
        """Builds each key's value as a Python object, as rdb.open does."""

        def __init__(self) -> None:
            super().__init__(string_escape=None)
            self.n = 0
            self.value: Any = None

        def set(self, key: bytes, value: bytes, expiry: Any, info: Dict[str, Any]) -> None:
            self.n += 1
            self.value = (key, value)

        def start_list(self, key: bytes, expiry: Any, info: Dict[str, Any]) -> None:
            self.value = (key, [])

        def rpush(self, key: bytes, value: bytes) -> None:
            self.value[1].append(value)

        def end_list(self, key: bytes, info: Dict[str, Any]) -> None:
            self.n += 1

        def start_hash(self, key: bytes, length: int, expiry: Any, info: Dict[str, Any]) -> None:
            self.value = (key, {})

        def hset(self, key: bytes, field: bytes, value: bytes) -> None:
            self.value[1][field] = value

        def end_hash(self, key: bytes) -> None:
            self.n += 1

        def start_set(self, key: bytes, cardinality: int, expiry: Any, info: Dict[str, Any]) -> None:
            self.value = (key, set())

        def sadd(self, key: bytes, member: bytes) -> None:
            self.value[1].add(member)

        def end_set(self, key: bytes) -> None:
            self.n += 1

    cb = Collect()
    RdbParser(cb).parse(path)
    return cb.n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["make", "ferry", "rdbtools", "rdb-cli"])
    ap.add_argument("file")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.what == "make":
        make(a.file, a.keys)
        return
    reader: Callable[[str], int] = read_ferry if a.what == "ferry" else read_rdbtools
    times: List[float] = []
    cpu: List[float] = []
    main_cpu: List[float] = []
    n = 0
    for _ in range(a.repeat):
        t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
        n = reader(a.file)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        main_cpu.append(time.thread_time() - m)
    best = min(times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU seconds are reported beside wall seconds: on a shared machine they move far less.
    from importlib.metadata import version

    package = {"ferry": "redis-ferry", "rdbtools": "rdbtools", "rdb-cli": "rdb-cli"}[a.what]
    print(json.dumps({"reader": a.what, "version": version(package), "keys": n, "seconds": round(best, 3), "cpu_seconds": round(min(cpu), 3),
                      # The Python thread's share of the best CPU run; the rest is redis-ferry's reading thread.
                      "python_thread_cpu_seconds": round(main_cpu[cpu.index(min(cpu))], 3),
                      "keys_per_s": round(n / best), "keys_per_cpu_s": round(n / min(cpu)),
                      "peak_rss_mb": round(rss_mb, 1), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
