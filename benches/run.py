"""Side-by-side PKCS#11 benchmark: the raw C loop, kms_iface, python-pkcs11 and PyKCS11.

Every implementation runs in its own subprocess (never two PKCS#11 bindings in one process),
one subprocess per (implementation, thread count) per round, printing one JSON line per case.
Rounds are interleaved: round r runs every implementation before round r + 1 starts (and the
order rotates by one each round), so drift on the machine hits all of them alike. The table
shows the median of the rounds per case and its ratio to the raw C loop's median. Progress goes
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import AES_OPS, OPS, Case, case_list

REPO = Path(__file__).resolve().parent.parent
BENCHES = REPO / "benches"
BUILD_DIR = REPO / "build" / "bench"
RAW_LOOP = BUILD_DIR / "raw_loop"
LARGE = 1 << 20
TOPPAD_ENV = {"MALLOC_TOP_PAD_": str(64 << 20)}
THROWAWAY_SO_PIN = "5678"
SPREAD_IMPL = "kms_iface"
BUSY_LOAD = 0.5
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


IMPLS = {
    impl.name: impl
    for impl in (
        Impl("raw", None),
        Impl("kms_iface", "impl_kms_iface.py"),
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

    def sizes_for(self, impl: Impl) -> tuple[int, ...]:
        if impl.large_aes_only:
            return tuple(size for size in self.sizes if size >= LARGE)
        return self.sizes

    def ops_for(self, impl: Impl) -> tuple[str, ...]:
        return AES_OPS if impl.large_aes_only else OPS

    def cases_for(self, impl: Impl, threads: int) -> list[Case]:
        return case_list(self.ops_for(impl), self.sizes_for(impl), threads)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item)


def _impls(text: str, sizes: Sequence[int]) -> tuple[Impl, ...]:
    """The named implementations; python-pkcs11 brings its MALLOC_TOP_PAD_ twin at >= 1 MiB."""
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in IMPLS]
    if unknown:
        raise HarnessError(f"unknown implementation(s) {unknown}; known: {list(IMPLS)}")
    twin = "python-pkcs11+toppad"
    large = max(sizes) >= LARGE
    if twin in names and not large:
        raise HarnessError(f"{twin} measures sizes >= 1 MiB only: add one to --sizes")
    if "python-pkcs11" in names and twin not in names and large:
        names.insert(names.index("python-pkcs11") + 1, twin)
    return tuple(IMPLS[name] for name in dict.fromkeys(names))


def parse_settings(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description="Side-by-side PKCS#11 benchmark.")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 0.1 s")
    parser.add_argument("--duration", type=float, help="seconds per measurement (0.4)")
    parser.add_argument("--rounds", type=int, help="rounds per case (5)")
    parser.add_argument("--threads", type=_ints, help="thread counts (1,2)")
    parser.add_argument("--sizes", type=_ints, help="AES payload sizes (64,4096,1048576)")
    parser.add_argument("--impls", default=DEFAULT_IMPLS, help=f"columns ({DEFAULT_IMPLS})")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--module", default="/usr/lib/softhsm/libsofthsm2.so")
    parser.add_argument("--token", default="kms-iface-test")
    parser.add_argument("--pin", default="1234")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ((64, 4096) if quick else (64, 4096, LARGE))
    return Settings(
        rounds=args.rounds or (1 if quick else 5),
        duration=args.duration or (0.1 if quick else 0.4),
        threads=args.threads or ((1,) if quick else (1, 2)),
        sizes=sizes,
        impls=_impls(args.impls, sizes),
        module=args.module,
        token=args.token,
        pin=args.pin,
        json_path=args.json,
    )


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


def command(settings: Settings, impl: Impl, threads: int, probe: bool) -> list[str]:
    if impl.script is None:
        head = [str(RAW_LOOP)]
    else:
        head = [sys.executable, str(BENCHES / impl.script), "--impl", impl.binding]
    sizes = settings.sizes_for(impl)
    return [
        *head,
        *("--module", settings.module, "--token", settings.token, "--pin", settings.pin),
        *("--threads", str(threads), "--duration", str(settings.duration)),
        *("--sizes", ",".join(map(str, sizes)), "--ops", ",".join(settings.ops_for(impl))),
        *(("--probe",) if probe else ()),
    ]


def environment(impl: Impl) -> dict[str, str]:
    """The harness's environment (SOFTHSM2_CONF...), the repo on PYTHONPATH, impl extras."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(impl.env)
    return env


def run_impl(settings: Settings, impl: Impl, threads: int, probe: bool = False) -> list[Record]:
    """Run one subprocess; its JSON lines, or HarnessError with its stderr."""
    what = f"{impl.name} ({threads} thread{'s' if threads > 1 else ''})"
    cases = settings.cases_for(impl, threads)
    try:
        proc = subprocess.run(
            command(settings, impl, threads, probe),
            env=environment(impl),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120 + 10 * len(cases) * settings.duration,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what} timed out after {exc.timeout:.0f} s") from exc
    if proc.returncode != 0:
        runner = "" if impl.script is None else f" under {sys.executable}"
        output = proc.stderr.strip() or proc.stdout
        raise HarnessError(f"{what} failed{runner} (exit code {proc.returncode}):\n{output}")
    try:
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{what} printed something that is not JSON: {exc}") from exc


@dataclass
class Results:
    """Every round's ops/s per (implementation name, case), and what ran where."""

    samples: dict[tuple[str, Case], list[float]] = field(default_factory=dict)
    unsupported: set[tuple[str, Case]] = field(default_factory=set)
    meta: dict[str, Record] = field(default_factory=dict)

    def add(self, impl: Impl, expected: Sequence[Case], records: Sequence[Record]) -> None:
        seen: set[Case] = set()
        for record in records:
            if "meta" in record:
                continue
            case = Case(str(record["op"]), _int(record["size"]), _int(record["threads"]))
            seen.add(case)
            if record.get("unsupported"):
                self.unsupported.add((impl.name, case))
            else:
                self.samples.setdefault((impl.name, case), []).append(_float(record["ops_per_s"]))
        missing = [case for case in expected if case not in seen]
        if missing:
            raise HarnessError(f"{impl.name} reported no result for {missing}")

    def median(self, impl: str, case: Case) -> float | None:
        samples = self.samples.get((impl, case))
        return statistics.median(samples) if samples else None

    def spread_pct(self, impl: str, case: Case) -> float | None:
        """(max - min) of the rounds, in % of their median (None below two rounds)."""
        samples = self.samples.get((impl, case))
        if samples is None or len(samples) < 2:
            return None
        return 100 * (max(samples) - min(samples)) / statistics.median(samples)


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise HarnessError(f"expected an integer in a result line, got {value!r}")
    return value


def _float(value: object) -> float:
    if not isinstance(value, int | float):
        raise HarnessError(f"expected a number in a result line, got {value!r}")
    return float(value)


def probe_all(settings: Settings, results: Results) -> None:
    """Set every implementation up once before measuring: fail early, collect versions."""
    for impl in settings.impls:
        log(f"probing {impl.name}")
        records = run_impl(settings, impl, 1, probe=True)
        results.meta[impl.name] = next((_as_record(r["meta"]) for r in records if "meta" in r), {})


def _as_record(value: object) -> Record:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def measure(settings: Settings, results: Results) -> None:
    impls = list(settings.impls)
    for round_index in range(settings.rounds):
        shift = round_index % len(impls)
        for threads in settings.threads:
            for impl in impls[shift:] + impls[:shift]:
                started = time.monotonic()
                records = run_impl(settings, impl, threads)
                results.add(impl, settings.cases_for(impl, threads), records)
                log(
                    f"round {round_index + 1}/{settings.rounds}, {threads} thread(s), "
                    f"{impl.name}: {time.monotonic() - started:.1f} s"
                )


def all_cases(settings: Settings) -> list[Case]:
    return [
        case for threads in settings.threads for case in case_list(OPS, settings.sizes, threads)
    ]


def fmt_size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def cell(results: Results, impl: str, case: Case) -> str:
    median = results.median(impl, case)
    if median is None:
        return "n/a" if (impl, case) in results.unsupported else ""
    raw = results.median("raw", case)
    if impl == "raw" or not raw:
        return fmt_rate(median)
    return f"{fmt_rate(median)} ({median / raw:.2f}x)"


def table(settings: Settings, results: Results) -> str:
    names = [impl.name for impl in settings.impls]
    spread = SPREAD_IMPL in names
    header = ["op", "size", "threads", *names, *([f"{SPREAD_IMPL} spread"] if spread else [])]
    align = ["---", "---:", "---:", *["---:"] * (len(header) - 3)]
    lines = [_row(header), _row(align)]
    for case in all_cases(settings):
        row = [OP_LABELS[case.op], fmt_size(case.size), str(case.threads)]
        row += [cell(results, name, case) for name in names]
        if spread:
            pct = results.spread_pct(SPREAD_IMPL, case)
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
        f"Ops/s, median of {settings.rounds} round(s) of {settings.duration} s per case; "
        f"(0.93x) = ratio to the raw C loop's median in the same run.\n"
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"softhsm2-util {machine['softhsm2_util']}, load average {machine['load_average_before']}"
        f" before the run; {listed}.\n"
    )


def report(settings: Settings, results: Results, machine: Record) -> Record:
    """Everything measured, for --json."""
    cases = []
    for case in all_cases(settings):
        per_impl: Record = {}
        for impl in settings.impls:
            median = results.median(impl.name, case)
            raw = results.median("raw", case)
            if (impl.name, case) in results.unsupported:
                per_impl[impl.name] = {"unsupported": True}
            elif median is not None:
                per_impl[impl.name] = {
                    "median": median,
                    "rounds": results.samples[impl.name, case],
                    "ratio_to_raw": median / raw if raw else None,
                }
        cases.append(
            {
                "op": case.op,
                "size": case.size,
                "threads": case.threads,
                "results": per_impl,
                f"{SPREAD_IMPL}_spread_pct": results.spread_pct(SPREAD_IMPL, case),
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
        with throwaway_token(settings):
            probe_all(settings, results)
            measure(settings, results)
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
