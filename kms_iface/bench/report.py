"""The run as a ``schema.Report`` (for ``--json`` and the plot), and as a Markdown table."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from kms_iface.bench import schema
from kms_iface.bench.catalog import KMS_IFACE, RAW
from kms_iface.bench.harness import Meta, Results, Settings, iqr_pct, range_pct
from kms_iface.bench.protocol import OP_LABELS, Case

MIB: Final = 1 << 20
CELL_WIDTH: Final = 16
SPREAD_COLUMN: Final = f"{KMS_IFACE} spread"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(load_before: float) -> schema.Machine:
    return schema.Machine(
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        platform=platform.platform(),
        python=platform.python_version(),
        load_average_before=round(load_before, 2),
    )


def module_info(settings: Settings, meta: Meta, throwaway: bool) -> schema.ModuleInfo:
    """The module as the kms_iface worker read it (``C_GetInfo``)."""
    return schema.ModuleInfo(
        path=settings.module,
        manufacturer=meta.get("module_manufacturer", ""),
        description=meta.get("module_description", ""),
        version=meta.get("module_version", ""),
        cryptoki=meta.get("cryptoki", ""),
        token=settings.token,
        throwaway_token=throwaway,
    )


def _result(results: Results, impl: str, case: Case) -> schema.Result:
    samples = results.samples[impl, case]
    rates = [sample.ops_per_s for sample in samples]
    base = {s.round: s.ops_per_s for s in results.samples.get((results.base, case), [])}
    ratios = results.round_ratios(impl, case)
    median = statistics.median(rates)
    return schema.Result(
        median_ops_per_s=round(median, 3),
        median_mib_per_s=round(median * case.size / MIB, 6),
        ratio=results.ratio(impl, case),
        ratio_iqr_pct=None if impl == results.base else iqr_pct(ratios),
        ratio_range_pct=None if impl == results.base else range_pct(ratios),
        rate_iqr_pct=iqr_pct(rates),
        bursts=[
            schema.BurstSample(
                round=s.round,
                position=s.position,
                started=s.started,
                ops=s.ops,
                seconds=s.seconds,
                ops_per_s=s.ops_per_s,
                ratio=s.ops_per_s / base[s.round] if s.round in base else None,
            )
            for s in samples
        ],
    )


def implementations(settings: Settings, metas: Mapping[str, Meta]) -> list[schema.Implementation]:
    """Each column with the package and version its worker reported."""
    return [
        schema.Implementation(
            name=impl.name,
            description=impl.description,
            package=metas[impl.name].get("package", impl.name),
            version=metas[impl.name].get("version", "unknown"),
        )
        for impl in settings.impls
    ]


def build(
    settings: Settings,
    results: Results,
    metas: Mapping[str, Meta],
    tasks: Sequence[int],
    skipped: Sequence[schema.Skipped],
    module: schema.ModuleInfo,
    host: schema.Machine,
) -> schema.Report:
    """Everything measured, with the machine, versions and settings."""
    cases = []
    for case in settings.cases():
        measured = [impl.name for impl in settings.impls if (impl.name, case) in results.samples]
        cases.append(
            schema.CaseResult(
                op=case.op,
                label=OP_LABELS[case.op],
                size=case.size,
                threads=case.threads,
                results={name: _result(results, name, case) for name in measured},
                unsupported=[
                    i.name for i in settings.impls if (i.name, case) in results.unsupported
                ],
            )
        )
    return schema.Report(
        schema=schema.SCHEMA,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=host,
        module=module,
        settings=schema.Settings(
            rounds=settings.rounds,
            duration=settings.duration,
            sizes=list(settings.sizes),
            threads=list(settings.threads),
            tasks=list(tasks),
            ratio_base=settings.base,
        ),
        implementations=implementations(settings, metas),
        skipped=list(skipped),
        cases=cases,
    )


def fmt_size(size: int) -> str:
    """64 B, 4 KiB, 1 MiB."""
    for unit, scale in (("MiB", MIB), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


class Table:
    """The Markdown table, one row per case, printed as each case completes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = [impl.name for impl in settings.impls]
        self.spread = settings.base == RAW and KMS_IFACE in self.names
        extra = [SPREAD_COLUMN] if self.spread else []
        self.header = ["op", "size", "threads", *self.names, *extra]
        self.widths = [29, 7, 7, *(max(CELL_WIDTH, len(n)) for n in self.header[3:])]

    def _row(self, cells: Sequence[str], left: int = 1) -> str:
        padded = [
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, self.widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    def head(self) -> str:
        align = ["-" * self.widths[0], *("-" * (w - 1) + ":" for w in self.widths[1:])]
        return self._row(self.header, left=len(self.header)) + "\n" + self._row(align)

    def row(self, results: Results, case: Case) -> str:
        cells = [OP_LABELS[case.op], fmt_size(case.size), str(case.threads)]
        for name in self.names:
            median = results.median_rate(name, case)
            ratio = results.ratio(name, case)
            if median is None:
                cells.append("n/a" if (name, case) in results.unsupported else "")
            elif name == results.base or ratio is None:
                cells.append(fmt_rate(median))
            else:
                cells.append(f"{fmt_rate(median)} ({ratio:.2f}x)")
        if self.spread:
            pct = iqr_pct(results.round_ratios(KMS_IFACE, case))
            cells.append("" if pct is None else f"{pct:.0f}%")
        return self._row(cells)


def preamble(
    settings: Settings,
    report_machine: schema.Machine,
    module: schema.ModuleInfo,
    impls: Sequence[schema.Implementation],
) -> str:
    """What the table's numbers mean, where they were measured, with what versions."""
    versions = dict.fromkeys(f"{impl.package} {impl.version}" for impl in impls)
    base = "the raw C loop" if settings.base == RAW else KMS_IFACE
    spread = (
        f"; {SPREAD_COLUMN} = interquartile range of its per-round ratios, in % of their median"
        if settings.base == RAW
        else ""
    )
    return (
        f"ops/s: median of {settings.rounds} interleaved burst(s) of {settings.duration} s per "
        f"case; (0.93x) = median over the rounds of (burst / the burst of {base} in the same "
        f"round){spread}.\n"
        f"{module.manufacturer} {module.description} {module.version} ({module.path}), token "
        f"{module.token!r}; {report_machine.cpu}, {report_machine.cores} cores, Python "
        f"{report_machine.python}, load average {report_machine.load_average_before} before "
        f"the run.\n"
        f"Versions: {', '.join(versions)}.\n"
    )
