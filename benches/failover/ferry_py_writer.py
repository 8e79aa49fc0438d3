#!/usr/bin/env python3
"""redis-ferry's Python SentinelPool writer for the side-by-side failover measurement (bindings_failover.py).

Same protocol as redispy_writer.py: writes MULTI / SET <prefix><n> <n> / CONFIG GET port / EXEC in a loop through
``redis_ferry.SentinelPool`` (default options) and prints one JSON line per attempt:
{"t": epoch_ms, "ok": true, "port": <acknowledging server's port>, "n": n} or {"t": ..., "ok": false, "err": "..."}.
Stops when stdin closes. Needs the redis-ferry wheel in the interpreter that runs it.
"""
import argparse
import json
import sys
import threading
import time

from redis_ferry import SentinelPool


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
    pool = SentinelPool(args.sentinels.split(","), args.name)
    out = sys.stdout
    n = 0
    while not stop.is_set():
        n += 1
        try:
            pipe = pool.pipeline(transaction=True)
            pipe.execute_command("SET", f"{args.prefix}{n}", n).execute_command("CONFIG", "GET", "port")
            res = pipe.execute()
            port = int(res[1][1])
            out.write(json.dumps({"t": time.time() * 1000.0, "ok": True, "port": port, "n": n}) + "\n")
        except Exception as e:  # every failure counts as a failed write
            out.write(json.dumps({"t": time.time() * 1000.0, "ok": False, "err": f"{type(e).__name__}: {e}"[:200]}) + "\n")
            time.sleep(args.retry_ms / 1000.0)
        out.flush()
    pool.close()


if __name__ == "__main__":
    main()
