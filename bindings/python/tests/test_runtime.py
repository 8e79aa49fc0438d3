"""The runtime bridge: Ctrl-C during a blocking wait, fork after use, exit with work still pending."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

import redis_ferry
from redis_ferry import SyncJob, rdb, verify
from conftest import client, topology, wait_until


@pytest.fixture
def pair() -> Iterator[Tuple[str, str]]:
    with topology("standalone") as s, topology("standalone") as t:
        yield f"redis://{s['addr']}", f"redis://{t['addr']}"


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    from redis_ferry import SyncJob
    # Python leaves SIGINT alone when it starts with SIGINT ignored (a parent started in the background by a
    # shell without job control passes that on): install the handler an interactive run has.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with SyncJob(source=sys.argv[1], target=sys.argv[2]) as job:
        while job.status().phase != "incremental":
            time.sleep(0.01)
        print("waiting", flush=True)
        try:
            job.wait()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """
)


def test_ctrl_c_during_wait_raises_keyboard_interrupt_and_the_with_block_stops_and_commits(
    pair: Tuple[str, str], tmp_path: Path
) -> None:
    source, target = pair
    script = tmp_path / "wait.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), source, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"waiting\n"
    client(source.split("//")[1]).set("before-ctrl-c", "1")
    wait_until(lambda: client(target.split("//")[1]).get("before-ctrl-c") == b"1", "the live stream")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    # Never hang the suite: the answer must come within a minute (it is expected within 100 ms).
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("no answer to SIGINT within 60 s: " + err.decode())
    line = proc.stdout.readline()
    answered_ms = (time.monotonic() - sent) * 1000
    _, err = proc.communicate(timeout=60)
    assert line == b"interrupted\n", err.decode()
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    print(f"Ctrl-C answered after {answered_ms:.1f} ms")
    # Leaving the with block stopped the job and committed its checkpoint.
    cp = client(target.split("//")[1]).get("ferry:checkpoint:{ferry}")
    assert cp is not None and cp != b"fullsync"


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import redis_ferry
    from redis_ferry import SentinelPool, rdb, verify
    source, target, rdb_path, sentinel, name = sys.argv[1:6]
    pool = SentinelPool([sentinel], name)
    assert pool.execute_command("SET", "parent", "1") == b"OK"
    assert verify(source, target).equal
    keys = sum(1 for _ in rdb.open(rdb_path))
    early = rdb.open(rdb_path)  # its reading thread stays in the parent
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            try:
                pool.execute_command("PING")
                code = 10  # the parent's pool must refuse in the child
            except redis_ferry.Stopped:
                pass
            try:
                next(early)
                code = 12  # the parent's reader must refuse in the child
            except redis_ferry.Stopped:
                pass
            child_pool = SentinelPool([sentinel], name)
            assert child_pool.execute_command("SET", "child", "1") == b"OK"
            assert verify(source, target).equal
            assert sum(1 for _ in rdb.open(rdb_path)) == keys
            child_pool.close()
        except BaseException as e:
            print("child failed:", repr(e), flush=True)
            code = 11
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert sum(1 for _ in early) == keys
    assert pool.execute_command("GET", "child") == b"1"
    assert verify(source, target).equal
    print("child exit", os.waitstatus_to_exitcode(status), flush=True)
    """
)


def test_fork_after_use_gives_the_child_a_working_runtime(pair: Tuple[str, str], tmp_path: Path) -> None:
    source, target = pair
    r = client(source.split("//")[1])
    r.set("k", "v")
    r.save()
    rdb_path = Path(r.config_get("dir")["dir"]) / r.config_get("dbfilename")["dbfilename"]
    client(target.split("//")[1]).set("k", "v")
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    with topology("sentinel") as g:
        out = subprocess.run(
            [sys.executable, str(script), source, target, str(rdb_path), g["sentinels"][0], g["master_name"]],
            capture_output=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip().splitlines()[-1] == "child exit 0", out.stdout.decode()


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading
    from redis_ferry import SyncJob
    job = SyncJob(source=sys.argv[1], target=sys.argv[2]).start()
    threading.Thread(target=job.wait, daemon=True).start()

    async def main():
        asyncio.ensure_future(job.wait_async())  # still pending when the loop closes
        await asyncio.sleep(0.05)

    asyncio.run(main())
    job.request_stop()  # the job ends while the interpreter exits; its completions must not touch it
    print("exiting", flush=True)
    """
)


def test_exit_with_a_thread_blocked_in_wait_and_pending_awaitables_is_clean(
    pair: Tuple[str, str], tmp_path: Path
) -> None:
    source, target = pair
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    for _ in range(3):
        out = subprocess.run([sys.executable, str(script), source, target], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout == b"exiting\n"
        assert b"Fatal" not in out.stderr and b"panicked" not in out.stderr, out.stderr.decode()


def test_blocking_calls_release_the_gil(pair: Tuple[str, str]) -> None:
    import threading

    source, target = pair
    with SyncJob(source=source, target=target) as job:
        ticks = 0
        stop = threading.Event()

        def count() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                time.sleep(0.001)

        t = threading.Thread(target=count)
        t.start()
        with pytest.raises(TimeoutError):
            job.wait(timeout=0.5)  # blocks this thread only
        stop.set()
        t.join()
    assert ticks > 10, "another Python thread ran while wait() blocked"
