"""Run the workers and the interleaved rounds; keep every burst; the medians, ratios and spreads.

Every implementation's worker is started once (one after the other) and stays up for the whole
run. For each case, round r sends one burst to every implementation in turn, and round r + 1
does it again with the order rotated by one. Per round, ratio = the burst / the base's burst of
the same round (the base is the raw C loop, else ``kms_iface``); a ratio reported is the median
of those per-round ratios. A worker that dies, hangs or answers something unexpected stops the
run with a ``BenchError`` naming it and the last line of its stderr.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import kms_iface
from kms_iface.bench.catalog import KMS_IFACE, RAW, Impl
from kms_iface.bench.protocol import QUIT, BenchError, Burst, Case, case_list

READY_TIMEOUT: Final = 120.0  # seconds for a worker's setup (login, RSA key generation)
BURST_MARGIN: Final = 60.0  # seconds beyond a burst's duration before a worker counts as hung
QUIT_TIMEOUT: Final = 10.0

Meta = dict[str, str]


@dataclass(frozen=True)
class Settings:
    """What to run, where: the token, the columns, the cases' sizes and threads, the rounds."""

    module: str
    token: str
    pin: bytes
    env: Mapping[str, str]  # added to every worker's environment (SOFTHSM2_CONF...)
    impls: tuple[Impl, ...]
    sizes: tuple[int, ...]
    threads: tuple[int, ...]
    rounds: int
    duration: float
    raw_loop: Path | None = None

    @property
    def base(self) -> str:
        """The column every ratio is taken to: the raw C loop when it runs, else kms_iface."""
        return RAW if any(impl.name == RAW for impl in self.impls) else KMS_IFACE

    def cases(self) -> list[Case]:
        """Every case, in the table's order."""
        return [case for threads in self.threads for case in case_list(self.sizes, threads)]


@dataclass(frozen=True)
class Sample:
    """One burst's answer, and when it ran."""

    round: int
    position: int  # its place in the round's order of implementations
    started: float  # seconds since the measurement began
    ops: int
    seconds: float
    ops_per_s: float


def _command(settings: Settings, impl: Impl) -> list[str]:
    if impl.worker == RAW:
        if settings.raw_loop is None:
            raise BenchError("the raw C loop was not built")
        head = [str(settings.raw_loop)]
    else:
        head = [sys.executable, "-m", "kms_iface.bench.worker", "--impl", impl.worker]
        head += ["--tasks", str(impl.tasks)]
    sessions = str(max(settings.threads))
    return [*head, "--module", settings.module, "--token", settings.token, "--sessions", sessions]


def _environment(settings: Settings, impl: Impl) -> dict[str, str]:
    """This process's environment, the run's and the column's; this kms_iface on PYTHONPATH."""
    env = dict(os.environ)
    source = str(Path(kms_iface.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    env.update(settings.env)
    env.update(impl.env)
    return env


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise BenchError("a worker's pipe is missing")
    return stream


class WorkerProcess:
    """One implementation's worker: started, given the PIN, then asked for one burst at a time."""

    def __init__(self, settings: Settings, impl: Impl, stderr: IO[bytes]) -> None:
        self.impl = impl
        self._stderr = stderr
        self._proc = subprocess.Popen(
            _command(settings, impl),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_environment(settings, impl),
        )
        self._stdin = _pipe(self._proc.stdin)
        self._stdout = _pipe(self._proc.stdout)
        self._pending = b""
        self.meta: Meta = {}
        self._send(settings.pin + b"\n", "the PIN")

    def wait_ready(self) -> None:
        """Wait for the ready line; keep the meta record it carries (versions)."""
        line = self._read_line(READY_TIMEOUT, "setup")
        meta = self._decode(line, "setup").get("meta")
        if not isinstance(meta, dict):
            raise self._failure(f"printed {line!r} instead of its ready line")
        self.meta = {str(key): str(value) for key, value in meta.items()}

    def burst(self, case: Case, duration: float) -> tuple[int, float, float] | None:
        """Run one burst: (ops, seconds, ops/s), or None if the implementation lacks the case."""
        request = Burst(case, duration).line()
        what = f"the burst {request.strip()!r}"
        self._send(request.encode(), what)
        line = self._read_line(duration + BURST_MARGIN, what)
        record = self._decode(line, what)
        if (record.get("op"), record.get("size"), record.get("threads")) != (
            case.op,
            case.size,
            case.threads,
        ):
            raise self._failure(f"answered {what} with {line!r}")
        if record.get("unsupported") is True:
            return None
        ops, seconds, rate = record.get("ops"), record.get("seconds"), record.get("ops_per_s")
        if not (
            isinstance(ops, int)
            and isinstance(seconds, int | float)
            and isinstance(rate, int | float)
            and ops > 0
            and seconds > 0
            and rate > 0
        ):
            raise self._failure(f"answered {what} with {line!r}")
        return ops, float(seconds), float(rate)

    def close(self) -> None:
        """Ask the worker to quit (killing it if it does not)."""
        running = self._proc.poll() is None
        if running:
            with suppress(OSError):
                self._stdin.write(f"{QUIT}\n".encode())
        with suppress(OSError):
            self._stdin.close()
        if running:
            try:
                self._proc.wait(QUIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stdout.close()

    def _send(self, data: bytes, what: str) -> None:
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except OSError as exc:
            raise self._failure(f"could not be sent {what} ({exc})") from exc

    def _read_line(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        fd = self._stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"gave no answer to {what} within {timeout:.0f} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._failure(f"exited during {what}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")

    def _decode(self, line: str, what: str) -> dict[str, object]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise self._failure(f"answered {what} with {line!r}, not a JSON object")
        return record

    def _failure(self, problem: str) -> BenchError:
        if self._proc.poll() is None:
            self._proc.kill()
        code = self._proc.wait()
        status = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else "nothing on stderr"
        return BenchError(f"worker {self.impl.name} {problem} ({status}): {last}")


@contextmanager
def started_workers(
    settings: Settings, on_ready: Callable[[Impl], None]
) -> Iterator[dict[str, WorkerProcess]]:
    """Every implementation's worker, set up and ready; closed on the way out.

    One after the other: SoftHSM2 processes that log in while another one loads the token can
    miss it ("no token labelled ...").
    """
    with ExitStack() as stack:
        workers = {}
        for impl in settings.impls:
            stderr = stack.enter_context(tempfile.TemporaryFile())
            worker = WorkerProcess(settings, impl, stderr)
            stack.callback(worker.close)
            worker.wait_ready()
            workers[impl.name] = worker
            on_ready(impl)
        yield workers


@dataclass
class Results:
    """Every burst per (implementation name, case), in round order, and the ratios' base."""

    base: str
    samples: dict[tuple[str, Case], list[Sample]] = field(default_factory=dict)
    unsupported: set[tuple[str, Case]] = field(default_factory=set)

    def rates(self, impl: str, case: Case) -> list[float]:
        return [sample.ops_per_s for sample in self.samples.get((impl, case), [])]

    def median_rate(self, impl: str, case: Case) -> float | None:
        rates = self.rates(impl, case)
        return statistics.median(rates) if rates else None

    def round_ratios(self, impl: str, case: Case) -> list[float]:
        """Per round: the implementation's burst / the base's burst of that round."""
        mine = {s.round: s.ops_per_s for s in self.samples.get((impl, case), [])}
        base = {s.round: s.ops_per_s for s in self.samples.get((self.base, case), [])}
        return [rate / base[index] for index, rate in mine.items() if index in base]

    def ratio(self, impl: str, case: Case) -> float | None:
        """The median of the per-round ratios to the base."""
        ratios = self.round_ratios(impl, case)
        return statistics.median(ratios) if ratios else None


def iqr_pct(values: Sequence[float]) -> float | None:
    """The interquartile range of ``values`` in % of their median (None below two values)."""
    if len(values) < 2:
        return None
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return 100 * (high - low) / statistics.median(values)


def range_pct(values: Sequence[float]) -> float | None:
    """(max - min) of ``values`` in % of their median (None below two values)."""
    if len(values) < 2:
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def measure(
    settings: Settings,
    workers: Mapping[str, WorkerProcess],
    results: Results,
    on_round: Callable[[Case], None],
    on_case: Callable[[Case], None],
) -> None:
    """For each case, ``rounds`` rounds of one burst per implementation, the order rotating by
    one each round; an implementation that lacks the case is asked once."""
    began = time.monotonic()
    for case in settings.cases():
        for round_index in range(settings.rounds):
            names = [
                impl.name
                for impl in settings.impls
                if impl.measures(case) and (impl.name, case) not in results.unsupported
            ]
            shift = round_index % max(len(names), 1)
            for position, name in enumerate(names[shift:] + names[:shift]):
                started = round(time.monotonic() - began, 3)
                answer = workers[name].burst(case, settings.duration)
                if answer is None:
                    results.unsupported.add((name, case))
                    continue
                sample = Sample(round_index, position, started, *answer)
                results.samples.setdefault((name, case), []).append(sample)
            on_round(case)
        on_case(case)
