#!/usr/bin/env bash
# Python side of the build: a tools virtualenv (maturin, pytest, mypy from PyPI), the redis-ferry wheel, and the
# pytest run against a fresh virtualenv holding only that wheel (so a packaging mistake fails the tests).
#
#   scripts/python-env.sh wheel [--release]   build the abi3 wheel into target/wheels/
#   scripts/python-env.sh test                build the wheel, install it into a fresh venv, run bindings/python/tests
#
# PYTHON picks the interpreter (default python3, CPython 3.9+).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
tools=$root/target/python/tools
wheels=$root/target/wheels

tools_venv() {
  if [ ! -x "$tools/bin/maturin" ] || [ ! -x "$tools/bin/pytest" ]; then
    echo "python-env: creating the tools virtualenv in target/python/tools (maturin, pytest, mypy)" >&2
    rm -rf "$tools"
    "$PY" -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check "maturin>=1.9,<2" "pytest>=8" "mypy>=1.10" >&2
  fi
}

build_wheel() {
  tools_venv
  rm -f "$wheels"/redis_ferry-*.whl
  # --locked: the workspace's one Cargo.lock is the truth, as for cargo test.
  "$tools/bin/maturin" build --locked "$@" -m bindings/python/Cargo.toml -o "$wheels" --interpreter "$PY" >&2
  ls "$wheels"/redis_ferry-*.whl
}

case "${1:-}" in
  wheel)
    shift
    build_wheel "$@"
    ;;
  test)
    wheel=$(build_wheel)
    cargo build --locked -q -p ferry-testkit --bin ferry-testkit
    venv=$root/target/python/test-venv
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    # Only the wheel (no source tree on sys.path), plus the test tools and redis-py as an independent client.
    "$venv/bin/pip" install -q --disable-pip-version-check "$wheel" "pytest>=8" "mypy>=1.10" "redis>=5"
    set +e
    (cd bindings/python/tests && \
      FERRY_TESTKIT="$root/target/debug/ferry-testkit" FERRY_WHEEL="$wheel" FERRY_REPO="$root" \
      "$venv/bin/python" -m pytest -p no:cacheprovider -q ${PYTEST_ARGS:-.})
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "python-env: pytest collected no tests (exit 5): failing, a run that tests nothing must not pass" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  *)
    echo "usage: scripts/python-env.sh wheel [--release] | test" >&2
    exit 2
    ;;
esac
