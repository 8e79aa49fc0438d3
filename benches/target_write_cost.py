"""The target's own CPU per key for the write forms a full sync can send for small strings.

Starts a Redis 7.0 server (/usr/bin/redis-server) on a free port of 127.0.0.1, sends N small strings as
MSETNX / MSET batches (8 batches in flight) from one connection, and prints the server's used_cpu_user +
used_cpu_sys per key (best of 2). Needs redis-py.

    N=300000 python3 benches/target_write_cost.py
"""

import os
import socket
import subprocess
import time

import redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    n = int(os.environ.get("N", "300000"))
    port = free_port()
    server = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        deadline = time.time() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        conn = r.connection_pool.get_connection()
        keys = [(b"key:%d" % i, b"value:%010d" % i) for i in range(n)]

        def cpu():
            info = r.info("cpu")
            return info["used_cpu_user"] + info["used_cpu_sys"]

        def run(command, per, in_flight=8):
            r.flushall()
            batches = []
            for start in range(0, n, per):
                argv = [command]
                for k, v in keys[start:start + per]:
                    argv += [k, v]
                batches.append(argv)
            before = cpu()
            for i in range(0, len(batches), in_flight):
                group = batches[i:i + in_flight]
                conn.send_packed_command(conn.pack_commands(group))
                for _ in group:
                    conn.read_response()
            return (cpu() - before) * 1e6 / n

        print("| what the target runs | target CPU per key |")
        print("|---|---:|")
        for command, per in [("MSETNX", 128), ("MSETNX", 512), ("MSET", 128), ("MSET", 1024)]:
            best = min(run(command, per) for _ in range(2))
            print(f"| `{command}` of {per} keys | {best:.2f} µs |")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
