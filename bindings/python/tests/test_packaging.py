"""The wheel as users get it: abi3, typed (py.typed + stubs that match the built module), README examples that
type-check under mypy --strict, and `pip install ./bindings/python` from a fresh virtualenv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path
from typing import List

import redis_ferry
from conftest import REPO

WHEEL = Path(os.environ.get("FERRY_WHEEL", ""))
PACKAGE_DIR = Path(redis_ferry.__file__).parent


def test_the_wheel_is_abi3_for_cpython_39_and_later() -> None:
    assert WHEEL.is_file(), "FERRY_WHEEL names the wheel under test"
    assert "-cp39-abi3-" in WHEEL.name
    with zipfile.ZipFile(WHEEL) as z:
        names = set(z.namelist())
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        assert "Tag: cp39-abi3-" in z.read(wheel_meta).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: redis-ferry" in metadata and "Requires-Python: >=3.9" in metadata
    assert {"redis_ferry/py.typed", "redis_ferry/_native.pyi", "redis_ferry/__init__.py"} <= names
    assert any(re.fullmatch(r"redis_ferry/_native\.abi3\.so", n) for n in names)


def test_the_installed_package_is_the_wheel_and_is_typed() -> None:
    site = Path(sysconfig.get_paths()["platlib"])
    assert PACKAGE_DIR.parent == site
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert (PACKAGE_DIR / "_native.pyi").is_file()
    assert redis_ferry._native.__file__.endswith(".abi3.so")


def run(*args: str, cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_stubs_match_the_built_module_by_stubtest() -> None:
    out = run(sys.executable, "-m", "mypy.stubtest", "redis_ferry._native", "--ignore-missing-stub")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_itself_passes_mypy_strict() -> None:
    out = run(sys.executable, "-m", "mypy", "--strict", "-p", "redis_ferry")
    assert out.returncode == 0, out.stdout + out.stderr


def readme_examples() -> List[str]:
    text = (REPO / "bindings" / "python" / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    examples = readme_examples()
    assert len(examples) >= 6
    files = []
    for i, code in enumerate(examples):
        f = tmp_path / f"example_{i}.py"
        f.write_text(code)
        files.append(str(f))
    out = run(sys.executable, "-m", "mypy", "--strict", *files, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pip_install_of_the_source_directory_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # The README's command. The dev profile only lets this build reuse the test wheel's compiled crates.
    env = dict(os.environ, MATURIN_PEP517_ARGS="--profile dev")
    out = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO / "bindings" / "python")],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check = run(str(py), "-c", "import redis_ferry, sys; print(redis_ferry.__file__); "
                "print(issubclass(redis_ferry.ConfigError, redis_ferry.FerryError))")
    assert check.returncode == 0, check.stderr
    where, ok = check.stdout.split()
    assert where.startswith(str(env_dir)) and ok == "True"
