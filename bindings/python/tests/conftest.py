"""Shared fixtures: real servers through `ferry-testkit start ...`, fill/compare through the same binary.

The tests run in a fresh virtualenv that holds the built wheel (scripts/python-env.sh test); the first check
below refuses to run them against a source tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import redis_ferry

TESTKIT = os.environ.get("FERRY_TESTKIT", "")
REPO = Path(os.environ.get("FERRY_REPO", Path(__file__).resolve().parents[3]))
DEADLINE = 60.0


def _installed_from_venv() -> None:
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    where = Path(redis_ferry.__file__).resolve()
    if sys.prefix == sys.base_prefix or site not in where.parents:
        raise RuntimeError(
            f"redis_ferry was imported from {where}, not from a virtualenv's site-packages ({site}); "
            "run the tests with scripts/python-env.sh test"
        )


_installed_from_venv()


def wait_until(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` when the deadline passes."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def testkit_bin() -> str:
    if not TESTKIT or not os.access(TESTKIT, os.X_OK):
        raise RuntimeError("FERRY_TESTKIT must name the ferry-testkit binary (scripts/python-env.sh sets it)")
    return TESTKIT


@contextlib.contextmanager
def topology(kind: str, *args: str) -> Iterator[Dict[str, Any]]:
    """Start `ferry-testkit start KIND ARGS...`, yield its addresses, stop it (stdin closed) at the end."""
    proc = subprocess.Popen(
        [testkit_bin(), "start", kind, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else b""
        if not line:
            err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"ferry-testkit start {kind} gave no addresses: {err}")
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_json(*args: str) -> Dict[str, Any]:
    out = subprocess.run([testkit_bin(), *args], capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"ferry-testkit {args[0]} failed: {out.stderr.decode()}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def fill(addr: str, seed: int = 1, scale: int = 1, dbs: str = "0,1,2", prefix: str = "ferry") -> Dict[str, Any]:
    """Write the testkit dataset (every type and encoding) into the server at host:port."""
    return _run_json("fill", f"redis://{addr}", "--seed", str(seed), "--scale", str(scale), "--dbs", dbs,
                     "--prefix", prefix)


def compare(a: str, b: str, ignore_prefixes: Optional[List[str]] = None) -> Dict[str, Any]:
    """Key-by-key comparison of two servers (types, values, expiry, stream groups, functions)."""
    args = ["compare", f"redis://{a}", f"redis://{b}"]
    for p in ignore_prefixes or []:
        args += ["--ignore-prefix", p]
    return _run_json(*args)


def client(addr: str, db: int = 0, password: Optional[str] = None) -> Any:
    """A redis-py client: an oracle independent of ferry."""
    import redis

    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), db=db, password=password, socket_timeout=30)


@pytest.fixture
def standalone() -> Iterator[Dict[str, Any]]:
    with topology("standalone") as t:
        yield t


@pytest.fixture
def sentinel_group() -> Iterator[Dict[str, Any]]:
    with topology("sentinel") as t:
        yield t
