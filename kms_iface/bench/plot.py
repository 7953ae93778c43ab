"""The PNG plot of a report: throughput against payload size, one line per implementation.

One panel per AES operation and thread count; x is the payload size (bytes, log scale), y the
median throughput in MiB/s (log scale); the legend names each implementation with its package
and version, the title the module and the machine. Imports matplotlib (Agg, no pyplot).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from kms_iface.bench.catalog import FACADE, RAW
from kms_iface.bench.report import fmt_size
from kms_iface.bench.schema import Report

COLUMNS: Final = 2
DPI: Final = 100


def _style(name: str) -> dict[str, object]:
    if name == RAW:
        return {"color": "black", "linestyle": "-", "linewidth": 2.2, "marker": "s"}
    if name.startswith(FACADE):
        return {"linestyle": ":", "marker": "^"}
    if name.startswith("kms_iface"):
        return {"linestyle": "-", "marker": "o"}
    return {"linestyle": "--", "marker": "D"}


def plot(report: Report, path: str | Path) -> None:
    """Write the plot of ``report`` to ``path`` (PNG)."""
    figure_of(report).savefig(path, format="png")


def figure_of(report: Report) -> Figure:
    """The figure of ``report``: one panel per AES operation and thread count."""
    panels = list(
        dict.fromkeys(
            (case.threads, case.op, case.label)
            for case in report.cases
            if case.results and case.op.startswith(("gcm", "cbcpad"))
        )
    )
    rows = max(1, math.ceil(len(panels) / COLUMNS))
    figure = Figure(figsize=(6.2 * COLUMNS, 3.4 * rows + 2.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, COLUMNS, squeeze=False).flatten()
    palette = [f"C{index % 10}" for index in range(len(report.implementations))]
    handles = {}
    sizes = report.settings.sizes
    for ax, (threads, op, label) in zip(axes, panels, strict=False):
        for color, impl in zip(palette, report.implementations, strict=True):
            points = [
                (case.size, case.results[impl.name].median_mib_per_s)
                for case in report.cases
                if case.op == op and case.threads == threads and impl.name in case.results
            ]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = {"color": color, **_style(impl.name)}
            (line,) = ax.plot(xs, ys, label=impl.name, markersize=6, **style)
            handles[impl.name] = line
        ax.set_title(f"{label}, {threads} thread{'s' if threads > 1 else ''}", fontsize=11)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xticks(sizes, [fmt_size(size) for size in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("payload size (bytes, log scale)")
        ax.set_ylabel("throughput (MiB/s, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    module, machine = report.module, report.machine
    figure.suptitle(
        f"kms-iface bench: {module.manufacturer} {module.description} {module.version} "
        f"({module.path})\n{machine.cpu}, {machine.cores} cores, Python {machine.python}; "
        f"median of {report.settings.rounds} rounds of {report.settings.duration} s, "
        f"{report.created[:10]}",
        fontsize=12,
    )
    labels = {
        impl.name: f"{impl.name}: {impl.package} {impl.version}"
        for impl in report.implementations
        if impl.name in handles
    }
    figure.legend(
        [handles[name] for name in labels],
        list(labels.values()),
        loc="outside lower center",
        ncols=2,
        fontsize=9,
        title="implementation: package version\nPkcs11Hsm/N: the async façade with N asyncio "
        "tasks; +toppad: run with MALLOC_TOP_PAD_=64MiB",
    )
    return figure
