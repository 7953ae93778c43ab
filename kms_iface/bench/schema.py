"""The ``kms-iface bench --json`` document, as msgspec Structs (schema ``kms-iface-bench/1``).

``load_report`` reads a file and validates it: types and required fields strictly (unknown
fields are rejected), then the cross references (the ratio base and every implementation a
case names are listed). ``json_schema()`` gives the same as a JSON Schema.

Rates are operations per second; ``mib_per_s`` is payload MiB per second (ops/s x size / 2^20).
A ratio is the median over the rounds of (this implementation's burst / the base's burst of the
same round); the base is ``settings.ratio_base`` (the raw C loop, else ``kms_iface``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import msgspec

SCHEMA: Final = "kms-iface-bench/1"


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every part of the report."""


class Machine(_Struct, frozen=True):
    """Where the run happened."""

    cpu: str
    cores: int
    platform: str
    python: str
    load_average_before: float


class ModuleInfo(_Struct, frozen=True):
    """The PKCS#11 module and token measured (``C_GetInfo`` through kms_iface)."""

    path: str
    manufacturer: str
    description: str
    version: str
    cryptoki: str
    token: str
    throwaway_token: bool


class Implementation(_Struct, frozen=True):
    """One column: its name in ``cases[].results``, what it is, the package and version."""

    name: str
    description: str
    package: str
    version: str


class Skipped(_Struct, frozen=True):
    """A comparison that did not run, and why (package not installed, no C compiler)."""

    name: str
    reason: str


class Settings(_Struct, frozen=True):
    """How the run was made."""

    rounds: int
    duration: float
    sizes: list[int]
    threads: list[int]
    tasks: list[int]
    ratio_base: str


class BurstSample(_Struct, frozen=True):
    """One timed burst: its round, place in the round, start (s since the run began), result."""

    round: int
    position: int
    started: float
    ops: int
    seconds: float
    ops_per_s: float
    ratio: float | None  # to the base's burst of the same round


class Result(_Struct, frozen=True):
    """One implementation in one case: medians, ratio and spreads over the rounds."""

    median_ops_per_s: float
    median_mib_per_s: float
    ratio: float | None
    ratio_iqr_pct: float | None  # interquartile range of the per-round ratios, % of median
    ratio_range_pct: float | None  # max - min of the per-round ratios, % of median
    rate_iqr_pct: float | None  # interquartile range of the bursts' ops/s, % of median
    bursts: list[BurstSample]


class CaseResult(_Struct, frozen=True):
    """One row: ``op`` over ``size`` bytes from ``threads`` threads."""

    op: str
    label: str
    size: int
    threads: int
    results: dict[str, Result]
    unsupported: list[str]


class Report(_Struct, frozen=True):
    """The whole document."""

    schema: Literal["kms-iface-bench/1"]
    created: str  # ISO 8601, UTC
    machine: Machine
    module: ModuleInfo
    settings: Settings
    implementations: list[Implementation]
    skipped: list[Skipped]
    cases: list[CaseResult]


def check(report: Report) -> Report:
    """``report`` if its cross references hold; else ``msgspec.ValidationError``."""
    names = {impl.name for impl in report.implementations}
    if report.settings.ratio_base not in names:
        raise msgspec.ValidationError(f"ratio_base {report.settings.ratio_base!r} is not listed")
    for case in report.cases:
        unknown = (set(case.results) | set(case.unsupported)) - names
        if unknown:
            raise msgspec.ValidationError(f"{case.op} {case.size}: unknown {sorted(unknown)}")
    return report


def load_report(path: str | Path) -> Report:
    """Read and validate a ``--json`` file."""
    return check(msgspec.json.decode(Path(path).read_bytes(), type=Report, strict=True))


def dump_report(report: Report, path: str | Path) -> None:
    """Write ``report`` as indented JSON."""
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(check(report)), indent=2))


def json_schema() -> dict[str, Any]:
    """The report's JSON Schema."""
    return msgspec.json.schema(Report)
