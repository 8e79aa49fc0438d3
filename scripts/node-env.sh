#!/usr/bin/env bash
# Node side of ferry (bindings/node, npm package redis-ferry). Called by the Makefile:
#   scripts/node-env.sh build   napi build --platform --release, then npm pack into target/node/
#   scripts/node-env.sh test    build if needed, install the tarball into a fresh temporary project, run
#                               node --test there against real servers (ferry-testkit)
# Installs Node 20 from Debian when node is missing, and the package's dev dependencies with `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PKG=$ROOT/bindings/node
OUT=$ROOT/target/node
CARGO=${CARGO:-cargo}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "node-env: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# Node 20.17+ (what package.json's engines says and what @napi-rs/cli 3 needs).
node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)'
}
if ! node_ok; then
  echo "node-env: installing nodejs and npm with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  node_ok || { echo "node-env: need Node >= 20.17, found $(node --version 2>/dev/null || echo none)" >&2; exit 1; }
fi

# Dev dependencies (@napi-rs/cli, typescript, @types/node, ioredis for the tests): exactly the lockfile.
if [ ! -d "$PKG/node_modules/@napi-rs/cli" ] || [ "$PKG/package-lock.json" -nt "$PKG/node_modules/.package-lock.json" ]; then
  (cd "$PKG" && npm ci --no-audit --no-fund --loglevel=error)
fi

build() {
  (cd "$PKG" && npx napi build --platform --release --js native.js --dts native.d.ts)
  # Debug info stays in target/ (profile.release keeps it for profiling); the packed addon goes without it.
  strip --strip-debug "$PKG"/ferry.*.node
  mkdir -p "$OUT"
  rm -f "$OUT"/redis-ferry-*.tgz
  (cd "$PKG" && npm pack --silent --pack-destination "$OUT" >/dev/null)
  echo "node-env: built $(ls "$OUT"/redis-ferry-*.tgz)"
}

# Fails when the definitions napi build generated differ from the checked-in ones.
check_generated() {
  if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 &&
    ! git -C "$ROOT" diff --quiet -- bindings/node/native.d.ts bindings/node/native.js; then
    git -C "$ROOT" --no-pager diff --stat -- bindings/node/native.d.ts bindings/node/native.js
    echo "node-env: native.d.ts / native.js differ from what napi build generates: commit the regenerated files" >&2
    exit 1
  fi
}

run_tests() {
  local tarball
  # No tarball yet on a fresh clone: ls fails, which must not end the script (set -e, pipefail).
  tarball=$(ls "$OUT"/redis-ferry-*.tgz 2>/dev/null | head -1 || true)
  if [ -z "$tarball" ] || [ -n "$(find "$PKG/src" "$PKG"/*.js "$PKG"/*.mjs "$PKG"/*.d.ts "$PKG/Cargo.toml" -newer "$tarball" 2>/dev/null | head -1)" ]; then
    build
    tarball=$(ls "$OUT"/redis-ferry-*.tgz | head -1)
  fi
  check_generated
  "$CARGO" build -q -p ferry-testkit --bin ferry-testkit
  local project
  project=$(mktemp -d "${TMPDIR:-/tmp}/ferry-node-project.XXXXXX")
  trap 'rm -rf "$project"' RETURN
  printf '{ "name": "ferry-node-tests", "private": true, "version": "0.0.0" }\n' >"$project/package.json"
  (cd "$project" && npm install --no-audit --no-fund --loglevel=error "$tarball")
  cp -r "$PKG/test" "$project/test"
  # The test runner's summary lines (ℹ pass N / ℹ fail N) are what .ci/run adds to its totals.
  (cd "$project" && FERRY_NODE_DEV="$PKG" FERRY_TESTKIT="$ROOT/target/debug/ferry-testkit" \
    node --test --test-reporter=spec --test-concurrency=1 test/*.test.mjs test/*.test.cjs)
}

case "${1:-}" in
  build) build ;;
  test) run_tests ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
