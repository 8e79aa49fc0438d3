#!/usr/bin/env python3
"""Sentinel failover, side by side, for the language bindings: redis-ferry's Python pool beside redis-py, and
redis-ferry's Node pool beside ioredis, one after the other on the same testkit group, each client in its own
process (the writers of this directory).

The procedure and the columns are those of the Rust harness (crates/sentinel-client/examples/failover_bench.rs,
"## Sentinel failover" in docs/benchmarks.md): per round and client, wait until the group has converged, start the
writer, send SENTINEL FAILOVER after 200 acknowledged writes, wait until the sentinels name the new master and the
old one has been reconfigured as its replica, wait for 50 writes on the new master, stop the writer, and look every
acknowledged key up on the new master.

    FERRY_TESTKIT=target/debug/ferry-testkit python benches/failover/bindings_failover.py --rounds 2

Run it with an interpreter that has redis-py and the redis-ferry wheel (`make python`); the Node writers need
`make node` and `(cd benches/failover/node && npm install)` (ioredis). `--clients` picks among
ferry-python, redis-py, ferry-node, ioredis, ioredis+detector.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLIENTS = ["ferry-python", "redis-py", "ferry-node", "ioredis", "ioredis+detector"]


def wait_until(what: str, deadline_s: float, cond: Callable[[], bool]) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def fields(reply: Any) -> Dict[str, str]:
    """A SENTINEL MASTER / REPLICAS entry as text fields (redis-py gives a dict or a flat list by version)."""
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return {text(reply[i]): text(reply[i + 1]) for i in range(0, len(reply), 2)}


class Group:
    """A testkit sentinel group (1 master, 2 replicas, 3 sentinels, Redis 7.0)."""

    def __init__(self) -> None:
        testkit = os.environ.get("FERRY_TESTKIT", str(ROOT / "target" / "debug" / "ferry-testkit"))
        self.proc = subprocess.Popen([testkit, "start", "sentinel"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.name: str = info["master_name"]
        self.sentinels: List[str] = info["sentinels"]
        self.servers: List[str] = [info["master"], *info["replicas"]]

    @staticmethod
    def client(addr: str) -> "redis.Redis[bytes]":
        host, port = addr.rsplit(":", 1)
        return redis.Redis(host=host, port=int(port), socket_timeout=5)

    def master_of(self, sentinel: str) -> str:
        host, port = self.client(sentinel).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return f"{host.decode() if isinstance(host, bytes) else host}:{port.decode() if isinstance(port, bytes) else port}"

    def converged(self) -> bool:
        try:
            seen = set()
            for s in self.sentinels:
                c = self.client(s)
                state = fields(c.execute_command("SENTINEL", "MASTER", self.name))
                if (state["flags"] != "master" or state["num-slaves"] != "2"
                        or state["num-other-sentinels"] != str(len(self.sentinels) - 1)):
                    return False
                seen.add(f"{state['ip']}:{state['port']}")
                for r in c.execute_command("SENTINEL", "REPLICAS", self.name):
                    if fields(r)["flags"] != "slave":
                        return False
            return len(seen) == 1
        except (redis.RedisError, KeyError):
            return False

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


class Writer:
    def __init__(self, cmd: List[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.recs: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.recs.append(rec)

    def count(self, f: Callable[[Dict[str, Any]], bool]) -> int:
        with self.lock:
            return sum(1 for r in self.recs if f(r))

    def stop(self) -> List[Dict[str, Any]]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.1)
        with self.lock:
            return list(self.recs)


def writer_command(client: str, sentinels: str, name: str, prefix: str) -> List[str]:
    common = ["--sentinels", sentinels, "--name", name, "--prefix", prefix]
    if client == "ferry-python":
        return [sys.executable, str(HERE / "ferry_py_writer.py"), *common]
    if client == "redis-py":
        return [sys.executable, str(HERE / "redispy_writer.py"), *common]
    if client == "ferry-node":
        return ["node", str(HERE / "node" / "ferry_writer.js"), *common]
    if client in ("ioredis", "ioredis+detector"):
        extra = ["--failover-detector"] if client == "ioredis+detector" else []
        return ["node", str(HERE / "node" / "writer.js"), *common, *extra]
    raise ValueError(f"unknown client {client}")


def send_failover(g: Group) -> float:
    end = time.monotonic() + 60
    while True:
        t0 = time.time() * 1000.0
        try:
            g.client(g.sentinels[0]).execute_command("SENTINEL", "FAILOVER", g.name)
            return t0
        except redis.RedisError as e:
            if time.monotonic() > end:
                raise
            print(f"SENTINEL FAILOVER refused ({e}); retrying", file=sys.stderr)
            time.sleep(0.5)


def run_round(g: Group, client: str, rnd: int) -> Dict[str, Any]:
    wait_until("the group to converge", 120, g.converged)
    old = g.master_of(g.sentinels[0])
    old_port = int(old.rsplit(":", 1)[1])
    prefix = f"bench:{client}:{rnd}:"
    w = Writer(writer_command(client, ",".join(g.sentinels), g.name, prefix))
    wait_until("warm-up writes", 60, lambda: w.count(lambda r: r["ok"]) >= 200)
    t0 = send_failover(g)
    wait_until("the sentinels to name a new master", 120, lambda: g.master_of(g.sentinels[0]) != old)
    new = g.master_of(g.sentinels[0])
    new_port = int(new.rsplit(":", 1)[1])

    def old_is_replica() -> bool:
        try:
            text = g.client(old).info("replication")
        except redis.RedisError:
            return False
        return (text.get("role") == "slave" and int(text.get("master_port", 0)) == new_port
                and text.get("master_link_status") == "up")

    wait_until("the old master to become a replica of the new one", 120, old_is_replica)
    try:
        wait_until("writes on the new master", 60, lambda: w.count(lambda r: r["ok"] and r["port"] == new_port) >= 50)
    except TimeoutError:
        pass
    recs = w.stop()
    firsts = [r["t"] - t0 for r in recs if r["ok"] and r["port"] == new_port and r["t"] >= t0]
    acked = [r["n"] for r in recs if r["ok"]]
    master = g.client(new)
    lost = 0
    for i in range(0, len(acked), 1000):
        keys = [f"{prefix}{n}" for n in acked[i:i + 1000]]
        lost += sum(1 for v in master.mget(keys) if v is None)
    return {
        "client": client, "round": rnd,
        "first_write_ms": round(min(firsts)) if firsts else None,
        "failed": sum(1 for r in recs if not r["ok"] and r["t"] >= t0),
        "old_acks_after": sum(1 for r in recs if r["ok"] and r["port"] == old_port and r["t"] >= t0),
        "lost": lost, "acked": len(acked),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    a = ap.parse_args()
    clients = a.clients.split(",")
    for c in clients:
        if c not in CLIENTS:
            sys.exit(f"unknown client {c}; known: {', '.join(CLIENTS)}")
    print("starting the sentinel group (1 master, 2 replicas, 3 sentinels, Redis 7.0)", file=sys.stderr)
    g = Group()
    rows: List[Dict[str, Any]] = []
    try:
        for rnd in range(1, a.rounds + 1):
            for c in clients:
                print(f"round {rnd}: {c}", file=sys.stderr)
                row = run_round(g, c, rnd)
                print(f"  {json.dumps(row)}", file=sys.stderr)
                rows.append(row)
    finally:
        g.stop()
    print()
    print("| client | round | failover command -> first write on new master (ms) | failed writes "
          "| acked by old master after the command | acked writes lost / acked |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ms: Optional[int] = r["first_write_ms"]
        print(f"| {r['client']} | {r['round']} | {'never' if ms is None else ms} | {r['failed']} "
              f"| {r['old_acks_after']} | {r['lost']} / {r['acked']} |")


if __name__ == "__main__":
    main()
