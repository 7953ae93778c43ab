"""``kms-iface bench`` as a subprocess: a quick run's table, JSON report and PNG; bad flags.

One quick run on a throwaway token (every implementation, two sizes, two task counts) is shared
by the tests that read its outputs; one more short run uses the session's token through
--module/--token with comparisons that cannot run. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import msgspec
import pytest

from kms_iface.bench.plot import figure_of
from kms_iface.bench.schema import Report, json_schema, load_report
from kms_iface.pkcs11 import Module
from kms_iface.pkcs11.softhsm import SoftHsmToken

from .conftest import count_objects

SIZES = (64, 1024)
TASKS = (1, 4)
IMPLS = {"raw", "kms_iface", "kms_iface-into", "Pkcs11Hsm/1", "Pkcs11Hsm/4"}
COMPARED = {"python-pkcs11", "pykcs11"}
AES_OPS = ("gcm_enc", "gcm_dec", "cbcpad_enc", "cbcpad_dec")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Runs the command line with PyKCS11 looking uninstalled (find_spec answers None).
WITHOUT_PYKCS11 = (
    "import sys; sys.modules['PyKCS11'] = None; from kms_iface.cli import main; main()"
)


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, *, hide_pykcs11: bool = False
) -> subprocess.CompletedProcess[str]:
    head = ["-c", WITHOUT_PYKCS11] if hide_pykcs11 else ["-m", "kms_iface"]
    return subprocess.run(
        [sys.executable, *head, "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@dataclass(frozen=True)
class QuickRun:
    done: subprocess.CompletedProcess[str]
    json_path: Path
    png_path: Path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    tmp = tmp_path_factory.mktemp("bench")
    json_path, png_path = tmp / "bench.json", tmp / "bench.png"
    args = ["--quick", "--sizes", ",".join(map(str, SIZES)), "--tasks", "1,4"]
    args += ["--compare", "python-pkcs11,pykcs11,raw", "--json", str(json_path)]
    args += ["--plot", str(png_path)]
    done = run_cli(args, {"XDG_CACHE_HOME": str(tmp / "cache")})
    return QuickRun(done, json_path, png_path)


def test_quick_run_succeeds_and_prints_a_row_per_case(quick_run: QuickRun) -> None:
    done = quick_run.done
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert set(header) >= IMPLS | COMPARED
    # 4 AES ops x 2 sizes + 2 RSA ops, one thread; header and alignment rows first
    assert len(rows) == 2 + len(AES_OPS) * len(SIZES) + 2
    assert any(line.startswith("| AES-GCM encrypt") and "1 KiB" in line for line in rows)


def test_json_report_validates_and_has_every_implementation_and_size(quick_run: QuickRun) -> None:
    assert quick_run.done.returncode == 0, quick_run.done.stderr[-3000:]
    report = load_report(quick_run.json_path)
    names = {impl.name for impl in report.implementations}
    assert names == IMPLS | COMPARED
    versions = {impl.name: impl.version for impl in report.implementations}
    assert versions["python-pkcs11"] == metadata.version("python-pkcs11")
    assert versions["pykcs11"] == metadata.version("PyKCS11")
    assert report.settings.ratio_base == "raw"
    assert report.settings.sizes == list(SIZES)
    assert report.settings.tasks == list(TASKS)
    assert report.module.throwaway_token
    assert report.skipped == []
    for op in AES_OPS:
        cases = [case for case in report.cases if case.op == op]
        assert sorted(case.size for case in cases) == list(SIZES)
        for case in cases:
            facade = {"Pkcs11Hsm/1", "Pkcs11Hsm/4"} if op.startswith("gcm") else set()
            assert set(case.results) == names - {"Pkcs11Hsm/1", "Pkcs11Hsm/4"} | facade
            raw = case.results["raw"]
            assert raw.ratio == 1.0
            for result in case.results.values():
                assert len(result.bursts) == report.settings.rounds
                assert result.median_ops_per_s > 0
                expected_mib = result.median_ops_per_s * case.size / (1 << 20)
                assert result.median_mib_per_s == pytest.approx(expected_mib, rel=1e-3)
    sign = next(case for case in report.cases if case.op == "rsa_sign")
    assert sign.unsupported == ["kms_iface-into"]


def test_json_report_rejects_unknown_and_missing_fields(
    quick_run: QuickRun, tmp_path: Path
) -> None:
    document = json.loads(quick_run.json_path.read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**document, "extra": 1}))
    with pytest.raises(msgspec.ValidationError):
        load_report(broken)
    del document["machine"]
    broken.write_text(json.dumps(document))
    with pytest.raises(msgspec.ValidationError):
        load_report(broken)
    assert json_schema()["$ref"].endswith(Report.__name__)


def test_plot_is_a_real_png_of_sensible_size(quick_run: QuickRun) -> None:
    assert quick_run.done.returncode == 0, quick_run.done.stderr[-3000:]
    data = quick_run.png_path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert (length, chunk) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    assert 800 <= width <= 4000
    assert 600 <= height <= 4000


def test_plot_says_what_it_shows(quick_run: QuickRun) -> None:
    """Title: module and machine; axes: quantity and unit; legend: implementation and version."""
    assert quick_run.done.returncode == 0, quick_run.done.stderr[-3000:]
    report = load_report(quick_run.json_path)
    figure = figure_of(report)
    title = figure.get_suptitle()
    assert report.module.path in title and report.machine.cpu in title
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert panels
    for ax in panels:
        assert ax.get_xlabel() == "payload size (bytes, log scale)"
        assert ax.get_ylabel() == "throughput (MiB/s, log scale)"
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    [legend] = figure.legends
    entries = {text.get_text() for text in legend.get_texts()}
    for impl in report.implementations:
        assert f"{impl.name}: {impl.package} {impl.version}" in entries


def test_existing_token_and_comparisons_that_cannot_run(
    token: SoftHsmToken, module: Module, slot: int, tmp_path: Path
) -> None:
    """By default a missing package or compiler is a note; the façade's token key is removed."""
    before = count_objects(module, slot, token.user_pin)
    json_path = tmp_path / "bench.json"
    args = ["--module", token.module, "--token", token.label, "--pin-env", "BENCH_TEST_PIN"]
    args += ["--sizes", "64", "--threads", "1", "--tasks", "2", "--rounds", "1"]
    args += ["--duration", "0.02", "--json", str(json_path)]
    env = {"BENCH_TEST_PIN": token.user_pin, "CC": "/nonexistent/cc"}
    done = run_cli(args, env, hide_pykcs11=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "note: raw skipped" in done.stderr
    assert "note: pykcs11 skipped: PyKCS11 is not installed" in done.stderr
    report = load_report(json_path)
    assert {skipped.name for skipped in report.skipped} == {"raw", "pykcs11"}
    assert report.settings.ratio_base == "kms_iface"
    assert not report.module.throwaway_token
    assert report.module.token == token.label
    assert {impl.name for impl in report.implementations} == {
        "kms_iface",
        "kms_iface-into",
        "Pkcs11Hsm/2",
        "python-pkcs11",
    }
    assert count_objects(module, slot, token.user_pin) == before


@pytest.mark.parametrize(
    "args",
    [
        ["--sizes", "x"],
        ["--sizes", ""],
        ["--threads", "0"],
        ["--compare", "nosuch"],
        ["--duration", "0"],
        ["--tasks", "4", "--threads", "2"],
        ["--pin-env", "SOME_PIN"],
        ["--json", "/nonexistent/dir/report.json"],
    ],
)
def test_bad_flags_exit_2(args: list[str]) -> None:
    done = run_cli(args)
    assert done.returncode == 2, done.stderr
    assert "Error" in done.stderr
    assert "Traceback" not in done.stderr


def test_compare_names_a_missing_package_and_exits_2() -> None:
    done = run_cli(["--compare", "pykcs11"], hide_pykcs11=True)
    assert done.returncode == 2, done.stderr
    assert "PyKCS11 is not installed" in done.stderr


def test_compare_raw_without_a_compiler_exits_2() -> None:
    done = run_cli(["--compare", "raw"], {"CC": "/nonexistent/cc"})
    assert done.returncode == 2, done.stderr
    assert "no C compiler" in done.stderr


def test_help_does_not_import_matplotlib() -> None:
    code = (
        "import sys\nfrom kms_iface.cli import main\nsys.argv = ['kms-iface', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('matplotlib', 'pkcs11', 'PyKCS11') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "bench" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"
