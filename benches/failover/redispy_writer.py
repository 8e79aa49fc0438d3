#!/usr/bin/env python3
"""redis-py Sentinel writer for the side-by-side failover measurement (driven by failover_bench).

Writes MULTI / SET bench:<client>:<n> <n> / CONFIG GET port / EXEC in a loop through
redis.sentinel.Sentinel(...).master_for(name) and prints one JSON line per attempt:
{"t": epoch_ms, "ok": true, "port": <acknowledging server's port>, "n": n} or {"t": ..., "ok": false, "err": "..."}.
Stops when stdin closes.
"""
import argparse
import json
import sys
import threading
import time

from redis.sentinel import Sentinel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentinels", required=True, help="host:port,host:port,...")
    ap.add_argument("--name", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--retry-ms", type=float, default=20.0)
    args = ap.parse_args()

    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sentinels = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in args.sentinels.split(","))]
    # Defaults as a user would write them, with a short socket timeout so a dead master is noticed.
    sentinel = Sentinel(sentinels, socket_timeout=0.5)
    master = sentinel.master_for(args.name, socket_timeout=0.5)
    out = sys.stdout
    n = 0
    while not stop.is_set():
        n += 1
        try:
            pipe = master.pipeline(transaction=True)
            pipe.set(f"{args.prefix}{n}", n)
            pipe.config_get("port")
            res = pipe.execute()
            port = int(res[1]["port"])
            out.write(json.dumps({"t": time.time() * 1000.0, "ok": True, "port": port, "n": n}) + "\n")
        except Exception as e:  # every failure counts as a failed write
            out.write(json.dumps({"t": time.time() * 1000.0, "ok": False, "err": f"{type(e).__name__}: {e}"[:200]}) + "\n")
            time.sleep(args.retry_ms / 1000.0)
        out.flush()


if __name__ == "__main__":
    main()
