"""``kms-iface bench``: the side-by-side PKCS#11 benchmark (``kms_iface.bench``) from the CLI.

stdout gets a Markdown table, one row per case as it completes; stderr gets the notes and a
rich progress bar. ``--json`` writes the ``kms_iface.bench.schema.Report``, ``--plot`` a PNG
(matplotlib is imported only then).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kms_iface.bench import catalog, report, schema
from kms_iface.bench.harness import Meta, Results, Settings, measure, started_workers
from kms_iface.bench.protocol import OP_LABELS, BenchError, Case
from kms_iface.bench.raw import NoCompilerError, RawLoop, build_raw_loop
from kms_iface.cli.common import (
    UsageError,
    module_options,
    open_module,
    pin_options,
    read_pin,
    resolve_slot,
    slot_options,
)
from kms_iface.pkcs11.profiles import get_profile, resolve_library
from kms_iface.pkcs11.softhsm import create_token, find_softhsm2_module

__all__ = ["bench"]

MAX_THREADS: Final = 64  # raw_loop.c's limit
THROWAWAY_LABEL: Final = "kms-iface-bench"
INSTALL_HINT: Final = "pip install 'kms-iface[bench]'"

T = TypeVar("T")


Callback = Callable[[click.Context, click.Parameter, str], tuple[Any, ...]]


def int_list(low: int, high: int, allow_empty: bool = False) -> Callback:
    """A callback that parses comma-separated integers in [low, high] ('' is none if allowed)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
        try:
            numbers = tuple(dict.fromkeys(int(item) for item in value.split(",") if item.strip()))
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a comma-separated list of integers"
            ) from None
        if not numbers and not allow_empty:
            raise click.BadParameter("give at least one value")
        if any(not low <= number <= high for number in numbers):
            raise click.BadParameter(f"{value!r}: every value must be in {low}..{high}")
        return numbers

    return parse


def name_list(choices: Sequence[str]) -> Callback:
    """A callback that parses comma-separated names out of ``choices`` ('' is none)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise click.BadParameter(
                f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})"
            )
        return names

    return parse


@dataclass(frozen=True)
class Target:
    """The module and token the workers use, and the environment that finds the token."""

    module: str
    token: str
    pin: bytes
    throwaway: bool
    env: dict[str, str] = field(default_factory=dict)


def _in_existing_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An output file whose folder exists (checked before the run, not after it)."""
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"{value.parent} is not a directory")
    return value


@contextmanager
def _target(
    module_path: str | None,
    profile: str,
    slot_id: int | None,
    token_label: str | None,
    pin_env: str | None,
    pin_file: str | None,
) -> Iterator[Target]:
    """The token named by --slot/--token (PIN from --pin-env/--pin-file/prompt), or else a
    throwaway SoftHSM2 token in a temporary directory, removed afterwards."""
    if slot_id is not None or token_label is not None:
        with open_module(module_path, profile) as module:
            label = module.token_info(resolve_slot(module, slot_id, token_label)).label.rstrip()
            path = module.path
        with read_pin(pin_env, pin_file) as pin:
            yield Target(path, label, bytes(pin), throwaway=False)
        return
    if pin_env is not None or pin_file is not None:
        raise UsageError("--pin-env/--pin-file go with --slot or --token")
    if module_path is None and profile == "softhsm2":
        library = find_softhsm2_module()
    else:
        library = resolve_library(get_profile(profile), module_path)
        if "softhsm" not in os.path.basename(library):
            raise UsageError(
                f"{library} is not SoftHSM2, so no throwaway token: give --slot N or --token LABEL"
            )
    with tempfile.TemporaryDirectory(prefix="kms-iface-bench-") as directory:
        user_pin = secrets.token_hex(8)
        token = create_token(directory, label=THROWAWAY_LABEL, user_pin=user_pin)
        yield Target(library, token.label, user_pin.encode(), True, token.environ())


def _say(console: Console, text: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _comparisons(
    compare: Sequence[str], explicit: bool, console: Console
) -> tuple[list[str], RawLoop | None, list[schema.Skipped]]:
    """The comparisons that can run here; asked for explicitly, a missing one is exit 2."""
    usable, raw_loop, skipped = [], None, []
    for name in compare:
        reason = None
        if name == catalog.RAW:
            try:
                raw_loop = build_raw_loop()
            except NoCompilerError as exc:
                if explicit:
                    raise UsageError(f"--compare raw: {exc}") from exc
                reason = str(exc)
            except BenchError as exc:
                if explicit:
                    raise
                reason = str(exc)
        else:
            missing = catalog.missing_package(name)
            if missing is not None:
                if explicit:
                    raise UsageError(
                        f"--compare {name}: {missing} is not installed: {INSTALL_HINT}"
                    )
                reason = f"{missing} is not installed ({INSTALL_HINT})"
        if reason is None:
            usable.append(name)
        else:
            _say(console, f"note: {name} skipped: {reason}")
            skipped.append(schema.Skipped(name=name, reason=reason))
    return usable, raw_loop, skipped


def _metas(workers_meta: dict[str, Meta], raw_loop: RawLoop | None) -> dict[str, Meta]:
    if raw_loop is not None and catalog.RAW in workers_meta:
        workers_meta[catalog.RAW] |= {"package": "raw C loop", "version": raw_loop.compiler}
    return workers_meta


def _same_terminal() -> bool:
    """Whether stdout and stderr are one terminal (rows then go above the progress bar)."""
    try:
        return sys.stdout.isatty() and os.ttyname(1) == os.ttyname(2)
    except OSError:
        return False


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is not ParameterSource.DEFAULT


def _or_quick(ctx: click.Context, quick: bool, name: str, value: T, short: T) -> T:
    """``value``, or ``short`` under --quick when the option was not given."""
    return short if quick and not _given(ctx, name) else value


@click.command()
@module_options
@slot_options
@pin_options
@click.option(
    "--sizes",
    metavar="N,N,...",
    callback=int_list(1, 1 << 30),
    default="64,4096,1048576",
    show_default=True,
    help="AES payload sizes in bytes (the RSA cases use 32 bytes).",
)
@click.option(
    "--threads",
    metavar="N,N,...",
    callback=int_list(1, MAX_THREADS),
    default="1,2",
    show_default=True,
    help="Thread counts, one session per thread.",
)
@click.option(
    "--tasks",
    metavar="N,N,...",
    callback=int_list(1, 4096, allow_empty=True),
    default="1,8,32",
    show_default=True,
    help="Concurrent asyncio tasks for the Pkcs11Hsm rows (AES-GCM, 1 thread); '' for none.",
)
@click.option(
    "--compare",
    metavar="NAME,...",
    callback=name_list(catalog.COMPARE),
    default=",".join(catalog.COMPARE),
    show_default=True,
    help="What to compare with; '' for none. Named explicitly, one that cannot run is an error"
    " (exit 2); by default it is skipped with a note.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Interleaved rounds per case.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=0.07,
    show_default=True,
    metavar="SECONDS",
    help="Length of one burst (one measurement) per implementation and round.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Short run (tests): 3 rounds of 0.05 s, sizes 64,4096, threads 1, tasks 1,8, unless"
    " given.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_in_existing_dir,
    default=None,
    help="Write the report (schema kms-iface-bench/1) to this file.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_in_existing_dir,
    default=None,
    help="Write a PNG plot of throughput against payload size to this file.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    module_path: str | None,
    profile: str,
    slot_id: int | None,
    token_label: str | None,
    pin_env: str | None,
    pin_file: str | None,
    sizes: tuple[int, ...],
    threads: tuple[int, ...],
    tasks: tuple[int, ...],
    compare: tuple[str, ...],
    rounds: int,
    duration: float,
    quick: bool,
    json_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Benchmark kms_iface against a raw C loop, python-pkcs11 and PyKCS11 on one token.

    Without --slot/--token it makes and uses a throwaway SoftHSM2 token. Each implementation
    runs in a worker process of its own; for each case, rounds of one short burst per
    implementation (order rotated) give medians and ratios to the raw C loop's burst of the
    same round.
    """
    sizes = _or_quick(ctx, quick, "sizes", sizes, (64, 4096))
    threads = _or_quick(ctx, quick, "threads", threads, (1,))
    tasks = _or_quick(ctx, quick, "tasks", tasks, (1, 8))
    rounds = _or_quick(ctx, quick, "rounds", rounds, 3)
    duration = _or_quick(ctx, quick, "duration", duration, 0.05)
    if tasks and 1 not in threads:
        raise UsageError("the Pkcs11Hsm rows (--tasks) run at 1 thread: add 1 to --threads")
    console = Console(stderr=True)
    load_before = os.getloadavg()[0]
    usable, raw_loop, skipped = _comparisons(compare, _given(ctx, "compare"), console)
    chosen = _target(module_path, profile, slot_id, token_label, pin_env, pin_file)
    with chosen as target:
        settings = Settings(
            module=target.module,
            token=target.token,
            pin=target.pin,
            env=target.env,
            impls=tuple(catalog.plan(usable, tasks, sizes)),
            sizes=sizes,
            threads=threads,
            rounds=rounds,
            duration=duration,
            raw_loop=None if raw_loop is None else raw_loop.path,
        )
        document = _run(settings, target, raw_loop, tasks, skipped, load_before, console)
    try:
        if json_path is not None:
            schema.dump_report(document, json_path)
            _say(console, f"wrote {json_path}")
        if plot_path is not None:
            from kms_iface.bench.plot import plot

            plot(document, plot_path)
            _say(console, f"wrote {plot_path}")
    except OSError as exc:
        raise click.FileError(str(exc.filename), exc.strerror) from exc


def _run(
    settings: Settings,
    target: Target,
    raw_loop: RawLoop | None,
    tasks: Sequence[int],
    skipped: Sequence[schema.Skipped],
    load_before: float,
    console: Console,
) -> schema.Report:
    """Start the workers, print the preamble and the table's rows as the cases complete."""
    cases = settings.cases()
    results = Results(base=settings.base)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    same_terminal = _same_terminal()

    def out(text: str) -> None:
        if same_terminal:
            _say(progress.console, text)
        else:
            click.echo(text)

    setup = progress.add_task("starting workers", total=len(settings.impls))
    with progress, started_workers(settings, lambda impl: progress.advance(setup)) as workers:
        progress.remove_task(setup)
        metas = _metas({name: worker.meta for name, worker in workers.items()}, raw_loop)
        module = report.module_info(settings, metas[catalog.KMS_IFACE], target.throwaway)
        host = report.machine(load_before)
        out(report.preamble(settings, host, module, report.implementations(settings, metas)))
        table = report.Table(settings)
        out(table.head())
        bursts = progress.add_task("measuring", total=len(cases) * settings.rounds)

        def on_round(case: Case) -> None:
            label = f"{OP_LABELS[case.op]} {report.fmt_size(case.size)} x{case.threads}"
            progress.update(bursts, advance=1, description=label)

        measure(settings, workers, results, on_round, lambda case: out(table.row(results, case)))
    return report.build(settings, results, metas, tasks, skipped, module, host)
