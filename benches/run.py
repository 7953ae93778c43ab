"""Side-by-side PKCS#11 benchmark: the raw C loop, kms_iface, python-pkcs11 and PyKCS11.

Every implementation runs in its own long-lived worker process (never two PKCS#11 bindings in
one process): it sets up once, then runs short timed bursts on command (the protocol is in
benches/common.py). For each case, each round sends one burst to every implementation in turn,
rotating the order by one each round, so the raw C loop's burst and each binding's burst of the
same round run a fraction of a second apart. The ratio to raw is the median over the rounds of
(burst / raw burst of the same round), which cancels most of the machine's drift. Progress goes
to stderr; stdout gets the Markdown table only.

    python benches/run.py [--quick] [--duration S] [--rounds N] [--threads 1,2]
                          [--sizes 64,4096,1048576] [--impls raw,kms_iface,...]
                          [--json FILE] [--module PATH] [--token LABEL] [--pin PIN]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from common import AES_OPS, OPS, QUIT, Burst, Case, case_list

REPO = Path(__file__).resolve().parent.parent
BENCHES = REPO / "benches"
BUILD_DIR = REPO / "build" / "bench"
RAW_LOOP = BUILD_DIR / "raw_loop"
LARGE = 1 << 20
TOPPAD_ENV = {"MALLOC_TOP_PAD_": str(64 << 20)}
THROWAWAY_SO_PIN = "5678"
RAW = "raw"
SPREAD_IMPL = "kms_iface"
BUSY_LOAD = 0.5
READY_TIMEOUT = 120.0  # seconds for a worker's setup (login, RSA key generation)
BURST_MARGIN = 60.0  # seconds beyond the burst's duration before a worker counts as hung
QUIT_TIMEOUT = 10.0
OP_LABELS = {
    "gcm_enc": "AES-GCM encrypt",
    "gcm_dec": "AES-GCM decrypt",
    "cbcpad_enc": "AES-CBC-PAD encrypt",
    "cbcpad_dec": "AES-CBC-PAD decrypt",
    "rsa_sign": "RSA-2048 sign SHA256-RSA-PKCS",
    "rsa_oaep_dec": "RSA-2048 OAEP(SHA-1) decrypt",
}

Record = dict[str, object]


class HarnessError(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class Impl:
    """One column of the table and how to run it."""

    name: str
    script: str | None  # an impl_*.py in benches/; None for the raw C loop
    env: Mapping[str, str] = field(default_factory=dict)
    large_aes_only: bool = False  # only the AES cases at sizes >= 1 MiB

    @property
    def binding(self) -> str:
        """The --impl name the script knows."""
        return self.name.split("+")[0]

    def measures(self, case: Case) -> bool:
        return not self.large_aes_only or (case.op in AES_OPS and case.size >= LARGE)


IMPLS = {
    impl.name: impl
    for impl in (
        Impl(RAW, None),
        Impl("kms_iface", "impl_kms_iface.py"),
        Impl("kms_iface+toppad", "impl_kms_iface.py", TOPPAD_ENV, large_aes_only=True),
        Impl("kms_iface-into", "impl_kms_iface.py"),
        Impl("python-pkcs11", "impl_python_pkcs11.py"),
        Impl("python-pkcs11+toppad", "impl_python_pkcs11.py", TOPPAD_ENV, large_aes_only=True),
        Impl("pykcs11", "impl_pykcs11.py"),
    )
}
DEFAULT_IMPLS = "raw,kms_iface,kms_iface-into,python-pkcs11,pykcs11"


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float
    threads: tuple[int, ...]
    sizes: tuple[int, ...]
    impls: tuple[Impl, ...]
    module: str
    token: str
    pin: str
    json_path: Path | None

    def cases(self) -> list[Case]:
        """Every case, in the table's order."""
        return [case for threads in self.threads for case in case_list(OPS, self.sizes, threads)]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item)


def _impls(text: str, sizes: Sequence[int]) -> tuple[Impl, ...]:
    """The named implementations; each with a MALLOC_TOP_PAD_ twin brings it at >= 1 MiB."""
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in IMPLS]
    if unknown:
        raise HarnessError(f"unknown implementation(s) {unknown}; known: {list(IMPLS)}")
    large = max(sizes) >= LARGE
    for name in list(names):
        twin = f"{name}+toppad"
        if twin in names and not large:
            raise HarnessError(f"{twin} measures sizes >= 1 MiB only: add one to --sizes")
        if twin in IMPLS and twin not in names and large:
            names.insert(names.index(name) + 1, twin)
    return tuple(IMPLS[name] for name in dict.fromkeys(names))


def parse_settings(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description="Side-by-side PKCS#11 benchmark.")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 rounds of 0.1 s")
    parser.add_argument("--duration", type=float, help="seconds per burst (0.07)")
    parser.add_argument("--rounds", type=int, help="bursts per case and implementation (25)")
    parser.add_argument("--threads", type=_ints, help="thread counts (1,2)")
    parser.add_argument("--sizes", type=_ints, help="AES payload sizes (64,4096,1048576)")
    parser.add_argument("--impls", default=DEFAULT_IMPLS, help=f"columns ({DEFAULT_IMPLS})")
    parser.add_argument("--json", type=Path, help="also write every burst to this file")
    parser.add_argument("--module", default="/usr/lib/softhsm/libsofthsm2.so")
    parser.add_argument("--token", default="kms-iface-test")
    parser.add_argument("--pin", default="1234")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ((64, 4096) if quick else (64, 4096, LARGE))
    settings = Settings(
        rounds=args.rounds or (3 if quick else 25),
        duration=args.duration or (0.1 if quick else 0.07),
        threads=args.threads or ((1,) if quick else (1, 2)),
        sizes=sizes,
        impls=_impls(args.impls, sizes),
        module=args.module,
        token=args.token,
        pin=args.pin,
        json_path=args.json,
    )
    if settings.rounds < 1 or settings.duration <= 0 or min(settings.threads) < 1:
        raise HarnessError("--rounds, --duration and --threads must be positive")
    return settings


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_raw_loop() -> None:
    """cc the raw C loop into build/bench/ (build/ is git-ignored)."""
    cc = shutil.which("cc")
    if cc is None:
        raise HarnessError("no C compiler: `cc` is not on PATH (needed for the raw C loop)")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    command = [cc, "-O2", "-I", "include", "benches/raw_loop.c", "-o", str(RAW_LOOP)]
    proc = subprocess.run(
        [*command, "-ldl", "-lpthread"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise HarnessError(f"building raw_loop failed:\n{proc.stderr}")


@contextmanager
def throwaway_token(settings: Settings) -> Iterator[None]:
    """With a SoftHSM2 module and no SOFTHSM2_CONF set: a private token for this run only."""
    if "SOFTHSM2_CONF" in os.environ or "softhsm" not in Path(settings.module).name:
        yield
        return
    util = shutil.which("softhsm2-util")
    if util is None:
        raise HarnessError("SOFTHSM2_CONF is not set and softhsm2-util is missing")
    with tempfile.TemporaryDirectory(prefix="kms-iface-bench-") as directory:
        config = Path(directory) / "softhsm2.conf"
        (Path(directory) / "tokens").mkdir()
        config.write_text(
            f"directories.tokendir = {directory}/tokens\nobjectstore.backend = file\n"
            "log.level = ERROR\n"
        )
        init = [util, "--init-token", "--free", "--label", settings.token]
        init += ["--so-pin", THROWAWAY_SO_PIN, "--pin", settings.pin]
        env = {**os.environ, "SOFTHSM2_CONF": str(config)}
        proc = subprocess.run(init, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"creating a throwaway token failed:\n{proc.stderr}")
        log(f"SOFTHSM2_CONF not set: using a throwaway token in {directory}")
        os.environ["SOFTHSM2_CONF"] = str(config)
        try:
            yield
        finally:
            del os.environ["SOFTHSM2_CONF"]


def command(settings: Settings, impl: Impl) -> list[str]:
    if impl.script is None:
        head = [str(RAW_LOOP)]
    else:
        head = [sys.executable, str(BENCHES / impl.script), "--impl", impl.binding]
    return [
        *head,
        *("--module", settings.module, "--token", settings.token, "--pin", settings.pin),
        *("--sessions", str(max(settings.threads))),
    ]


def environment(impl: Impl) -> dict[str, str]:
    """The harness's environment (SOFTHSM2_CONF...), the repo on PYTHONPATH, impl extras."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(impl.env)
    return env


Timing = tuple[int, float, float]
"""A burst's answer: calls made, seconds taken, calls per second."""


@dataclass(frozen=True)
class Sample:
    """One burst's answer, and when it ran."""

    round: int
    position: int  # its place in the round's order of implementations
    started: float  # seconds since the measurement began
    ops: int
    seconds: float
    ops_per_s: float


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise HarnessError("a worker's pipe is missing")
    return stream


def _exit_status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class WorkerProcess:
    """One implementation's worker: started once, then asked for one burst at a time.

    A worker that dies, hangs or answers something unexpected stops the run with its stderr.
    """

    def __init__(self, settings: Settings, impl: Impl, stderr: IO[bytes]) -> None:
        self.impl = impl
        self._stderr = stderr
        self._proc = subprocess.Popen(
            command(settings, impl),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environment(impl),
            cwd=REPO,
        )
        self._stdin = _pipe(self._proc.stdin)
        self._stdout = _pipe(self._proc.stdout)
        self._pending = b""
        self.meta: Record = {}

    def wait_ready(self) -> None:
        """Wait for the ready line; keep the meta record it carries (versions)."""
        line = self._read_line(READY_TIMEOUT, "setup")
        meta = self._decode(line, "setup").get("meta")
        if not isinstance(meta, dict):
            raise self._failure(f"printed {line!r} instead of its ready line")
        self.meta = {str(key): value for key, value in meta.items()}

    def burst(self, case: Case, duration: float) -> Timing | None:
        """Run one burst: (ops, seconds, ops/s), or None if the implementation lacks the case."""
        request = Burst(case, duration).line()
        what = f"the burst {request.strip()!r}"
        try:
            self._stdin.write(request.encode())
            self._stdin.flush()
        except OSError as exc:
            raise self._failure(f"could not be sent {what} ({exc})") from exc
        line = self._read_line(duration + BURST_MARGIN, what)
        record = self._decode(line, what)
        echoed = (record.get("op"), record.get("size"), record.get("threads"))
        if echoed != (case.op, case.size, case.threads):
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
        """Ask the worker to quit (killing it if it does not); report a failed exit."""
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
            if self._proc.wait() != 0:
                log(f"{self.impl.name} ended badly: {self._status()}")
        self._stdout.close()

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

    def _decode(self, line: str, what: str) -> Record:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise self._failure(f"answered {what} with {line!r}, not a JSON object")
        return record

    def _failure(self, problem: str) -> HarnessError:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        runner = "" if self.impl.script is None else f" (under {sys.executable})"
        return HarnessError(f"worker {self.impl.name}{runner} {problem}; {self._status()}")

    def _status(self) -> str:
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace").strip() or "(nothing)"
        return f"{_exit_status(self._proc.wait())}, stderr:\n{stderr}"


@contextmanager
def started_workers(settings: Settings) -> Iterator[dict[str, WorkerProcess]]:
    """Every implementation's worker, set up (one after the other) and ready; closed after."""
    with ExitStack() as stack:
        workers = {}
        for impl in settings.impls:
            started = time.monotonic()
            stderr = stack.enter_context(tempfile.TemporaryFile())
            worker = WorkerProcess(settings, impl, stderr)
            stack.callback(worker.close)
            worker.wait_ready()
            workers[impl.name] = worker
            log(f"{impl.name} ready in {time.monotonic() - started:.1f} s")
        yield workers


@dataclass
class Results:
    """Every burst per (implementation name, case), in round order, and what ran where."""

    samples: dict[tuple[str, Case], list[Sample]] = field(default_factory=dict)
    unsupported: set[tuple[str, Case]] = field(default_factory=set)
    meta: dict[str, Record] = field(default_factory=dict)

    def rates(self, impl: str, case: Case) -> list[float]:
        return [sample.ops_per_s for sample in self.samples.get((impl, case), [])]

    def median_rate(self, impl: str, case: Case) -> float | None:
        rates = self.rates(impl, case)
        return statistics.median(rates) if rates else None

    def round_ratios(self, impl: str, case: Case) -> list[float]:
        """Per round: the implementation's burst / the raw C loop's burst of that round."""
        rates, raws = self.rates(impl, case), self.rates(RAW, case)
        if not rates or not raws:
            return []
        return [rate / raw for rate, raw in zip(rates, raws, strict=True)]

    def ratio(self, impl: str, case: Case) -> float | None:
        """The median of the per-round ratios to the raw C loop."""
        ratios = self.round_ratios(impl, case)
        return statistics.median(ratios) if ratios else None

    def range_pct(self, impl: str, case: Case) -> float | None:
        """(max - min) of the per-round ratios, in % of their median (None below two rounds)."""
        ratios = self.round_ratios(impl, case)
        if len(ratios) < 2:
            return None
        return 100 * (max(ratios) - min(ratios)) / statistics.median(ratios)

    def iqr_pct(self, impl: str, case: Case) -> float | None:
        """The interquartile range of the per-round ratios, in % of their median (the table's
        spread column; None below two rounds)."""
        ratios = self.round_ratios(impl, case)
        if len(ratios) < 2:
            return None
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return 100 * (high - low) / statistics.median(ratios)


def measure(settings: Settings, workers: Mapping[str, WorkerProcess], results: Results) -> None:
    """For each case, `rounds` rounds of one burst per implementation, the order rotating by one
    each round; an implementation that lacks the case is asked once."""
    began = time.monotonic()
    cases = settings.cases()
    for number, case in enumerate(cases, 1):
        for round_index in range(settings.rounds):
            names = [
                impl.name
                for impl in settings.impls
                if impl.measures(case) and (impl.name, case) not in results.unsupported
            ]
            if not names:
                break
            shift = round_index % len(names)
            for position, name in enumerate(names[shift:] + names[:shift]):
                started = time.monotonic() - began
                answer = workers[name].burst(case, settings.duration)
                if answer is None:
                    results.unsupported.add((name, case))
                    continue
                sample = Sample(round_index, position, round(started, 3), *answer)
                results.samples.setdefault((name, case), []).append(sample)
        log(f"[{number}/{len(cases)}, {time.monotonic() - began:.0f} s] {progress(results, case)}")


def progress(results: Results, case: Case) -> str:
    what = f"{OP_LABELS[case.op]} {fmt_size(case.size)}, {case.threads} thread(s)"
    ratio = results.ratio(SPREAD_IMPL, case)
    spread = results.iqr_pct(SPREAD_IMPL, case)
    if ratio is None:
        return what
    return f"{what}: {SPREAD_IMPL} {ratio:.2f}x" + (
        "" if spread is None else f", IQR {spread:.0f}%"
    )


def fmt_size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def cell(results: Results, impl: str, case: Case) -> str:
    median = results.median_rate(impl, case)
    if median is None:
        return "n/a" if (impl, case) in results.unsupported else ""
    ratio = results.ratio(impl, case)
    if impl == RAW or ratio is None:
        return fmt_rate(median)
    return f"{fmt_rate(median)} ({ratio:.2f}x)"


def table(settings: Settings, results: Results) -> str:
    names = [impl.name for impl in settings.impls]
    spread = SPREAD_IMPL in names and RAW in names
    header = ["op", "size", "threads", *names, *([f"{SPREAD_IMPL} spread"] if spread else [])]
    align = ["---", "---:", "---:", *["---:"] * (len(header) - 3)]
    lines = [_row(header), _row(align)]
    for case in settings.cases():
        row = [OP_LABELS[case.op], fmt_size(case.size), str(case.threads)]
        row += [cell(results, name, case) for name in names]
        if spread:
            pct = results.iqr_pct(SPREAD_IMPL, case)
            row.append("" if pct is None else f"{pct:.0f}%")
        lines.append(_row(row))
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def softhsm_version() -> str | None:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        return None
    proc = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def machine_info(load_before: float) -> Record:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "softhsm2_util": softhsm_version(),
        "load_average_before": round(load_before, 2),
    }


def preamble(settings: Settings, machine: Record, meta: Mapping[str, Record]) -> str:
    versions = {
        key: value
        for record in meta.values()
        for key, value in record.items()
        if key not in {"impl", "python"}
    }
    listed = ", ".join(f"{key} {value}" for key, value in versions.items())
    return (
        f"Ops/s: median of {settings.rounds} interleaved burst(s) of {settings.duration} s per "
        f"case; (0.93x) = median over the rounds of (burst / the raw C loop's burst of the same "
        f"round); {SPREAD_IMPL} spread = interquartile range of its per-round ratios, in % of "
        f"their median.\n"
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"softhsm2-util {machine['softhsm2_util']}, load average {machine['load_average_before']}"
        f" before the run; {listed}.\n"
    )


def report(settings: Settings, results: Results, machine: Record) -> Record:
    """Everything measured, for --json."""
    cases = []
    for case in settings.cases():
        per_impl: Record = {}
        for impl in settings.impls:
            name = impl.name
            if (name, case) in results.unsupported:
                per_impl[name] = {"unsupported": True}
            elif (name, case) in results.samples:
                samples = results.samples[name, case]
                ratios: Sequence[float | None] = results.round_ratios(name, case)
                per_impl[name] = {
                    "median_ops_per_s": results.median_rate(name, case),
                    "ratio_to_raw": results.ratio(name, case),
                    "bursts": [
                        {**asdict(sample), "ratio_to_raw": ratio}
                        for sample, ratio in zip(
                            samples, ratios or [None] * len(samples), strict=True
                        )
                    ],
                }
        cases.append(
            {
                "op": case.op,
                "size": case.size,
                "threads": case.threads,
                "results": per_impl,
                f"{SPREAD_IMPL}_ratio_range_pct": results.range_pct(SPREAD_IMPL, case),
                f"{SPREAD_IMPL}_ratio_iqr_pct": results.iqr_pct(SPREAD_IMPL, case),
            }
        )
    return {
        "machine": machine,
        "versions": results.meta,
        "settings": {
            "rounds": settings.rounds,
            "duration": settings.duration,
            "threads": settings.threads,
            "sizes": settings.sizes,
            "impls": [impl.name for impl in settings.impls],
            "module": settings.module,
            "token": settings.token,
        },
        "cases": cases,
    }


def main(argv: Sequence[str]) -> int:
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOAD:
        log(f"load average {load_before:.2f}: other work on the machine will widen the spread")
    try:
        settings = parse_settings(argv)
        if any(impl.script is None for impl in settings.impls):
            build_raw_loop()
        results = Results()
        with throwaway_token(settings), started_workers(settings) as workers:
            results.meta = {name: worker.meta for name, worker in workers.items()}
            measure(settings, workers, results)
    except HarnessError as exc:
        log(f"run.py: error: {exc}")
        return 1
    machine = machine_info(load_before)
    print(preamble(settings, machine, results.meta))
    print(table(settings, results))
    if settings.json_path is not None:
        document = report(settings, results, machine)
        settings.json_path.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {settings.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
