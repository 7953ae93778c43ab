"""What the Python implementations share: the cases, the serve loop, the timed threaded loop.

An implementation module (impl_*.py) only supplies a setup function: it loads its binding,
opens one session per thread of the largest burst, logs in once, creates the session keys and
returns one `Worker` per session. A worker turns a case into a zero-argument closure (`Op`)
bound to its session; everything else (payloads, checking the output, warm-up, threads, timing,
the protocol with the harness) is here.

The protocol (benches/raw_loop.c speaks it too): the worker prints one JSON line
`{"meta": {...}}` once it is set up (its ready line), then reads commands from stdin, one per
line: `OP SIZE THREADS SECONDS` (e.g. `gcm_enc 64 2 0.07`) runs one burst with the first
THREADS sessions and answers one JSON line (`{"impl", "op", "size", "threads", "ops",
"seconds", "ops_per_s"}`, or `{"impl", "op", "size", "threads", "unsupported": true}`); `quit`
or the end of stdin ends the worker.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol, SupportsBytes

AES_OPS = ("gcm_enc", "gcm_dec", "cbcpad_enc", "cbcpad_dec")
RSA_OPS = ("rsa_sign", "rsa_oaep_dec")
OPS = AES_OPS + RSA_OPS
DECRYPT_OPS = frozenset({"gcm_dec", "cbcpad_dec", "rsa_oaep_dec"})
RSA_PAYLOAD_SIZE = 32
RSA_BITS = 2048
RSA_EXPONENT = b"\x01\x00\x01"
AES_KEY_BYTES = 32
GCM_IV_LEN = 12
CBC_IV_LEN = 16
GCM_FIXED_IV = b"\x42" * GCM_IV_LEN
CBC_FIXED_IV = b"\x42" * CBC_IV_LEN
OUT_SLACK = 512
WARMUP_CALLS = 2
CONTENT_CHECK_LIMIT = 65536
QUIT = "quit"

Op = Callable[[], object]
"""One operation, ready to run: returns its output (a bytes-like object, or a length)."""


class BenchError(Exception):
    """A benchmark could not run or produced a wrong result."""


class Worker(Protocol):
    """One session with the shared keys, as an implementation set it up."""

    def make_op(self, op: str, data: bytes) -> Op | None:
        """The timed closure for `op` over `data`, or None if the implementation lacks it.

        Setup work (a ciphertext for the decrypt cases, preallocated buffers) happens here,
        outside the timed loop; the closure is made once and reused by every burst.
        """
        ...


@dataclass(frozen=True)
class Options:
    """The command line shared by every implementation (and raw_loop.c)."""

    impl: str
    module: str
    token: str
    pin: str
    sessions: int


Setup = Callable[[Options], Sequence[Worker]]


@dataclass(frozen=True)
class Case:
    op: str
    size: int
    threads: int


@dataclass(frozen=True)
class Burst:
    """One command of the protocol: run `case` for `duration` seconds."""

    case: Case
    duration: float

    def line(self) -> str:
        case = self.case
        return f"{case.op} {case.size} {case.threads} {self.duration}\n"

    @classmethod
    def parse(cls, line: str) -> Burst | None:
        """The burst a command line asks for; None for `quit`."""
        words = line.split()
        if words == [QUIT]:
            return None
        try:
            op, size, threads, duration = words
            burst = cls(Case(op, int(size), int(threads)), float(duration))
        except ValueError as exc:
            raise BenchError(f"bad command {line!r}: expected OP SIZE THREADS SECONDS") from exc
        if op not in OPS or burst.case.size < 1 or burst.case.threads < 1 or burst.duration <= 0:
            raise BenchError(f"bad command {line!r}")
        return burst


def case_list(ops: Iterable[str], sizes: Iterable[int], threads: int) -> list[Case]:
    """AES ops at every size, RSA ops at the fixed RSA payload size, in the order given."""
    sizes = tuple(sizes)
    return [
        Case(op, size, threads)
        for op in ops
        for size in (sizes if op in AES_OPS else (RSA_PAYLOAD_SIZE,))
    ]


@functools.cache
def payload(size: int) -> bytes:
    """The deterministic payload every implementation encrypts or signs (as raw_loop.c)."""
    period = bytes((i * 131 + 7) & 0xFF for i in range(256))
    return (period * (size // 256 + 1))[:size]


def expected_len(op: str, size: int) -> int:
    """The output length of `op` over `size` bytes (RSA-2048, 16-byte GCM tag)."""
    if op == "gcm_enc":
        return size + 16
    if op == "cbcpad_enc":
        return (size // 16 + 1) * 16
    if op == "rsa_sign":
        return RSA_BITS // 8
    return size


def output_capacity(size: int) -> int:
    """A big-enough output buffer for any case over `size` bytes (as raw_loop.c)."""
    return size + OUT_SLACK


def find_slot(slots: Iterable[int], label_of: Callable[[int], str], label: str) -> int:
    """The first slot whose token label (blank padding stripped) is `label`."""
    for slot in slots:
        if label_of(slot).rstrip() == label:
            return slot
    raise BenchError(f"no token labelled {label!r}")


def dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed (source tree)"


def _output_bytes(result: object) -> bytes:
    if isinstance(result, bytes | bytearray | memoryview | SupportsBytes | Iterable):
        return bytes(result)
    raise BenchError(f"unexpected output type {type(result).__name__}")


def check_output(op: str, data: bytes, result: object) -> None:
    """Raise BenchError unless `result` has the right length and, for decryption, content.

    The content is compared up to CONTENT_CHECK_LIMIT bytes of payload: enough to prove the
    keys and parameters are wired right, without PyKCS11's slow list-of-ints conversion of
    1 MiB outputs adding seconds to every run.
    """
    if isinstance(result, int):
        got = result
    elif isinstance(result, Sized):
        got = len(result)
    else:
        raise BenchError(f"{op}: unexpected output type {type(result).__name__}")
    want = expected_len(op, len(data))
    if got != want:
        raise BenchError(f"{op} over {len(data)} bytes: {got} bytes out, expected {want}")
    if isinstance(result, int) or op not in DECRYPT_OPS or len(data) > CONTENT_CHECK_LIMIT:
        return
    if _output_bytes(result) != data:
        raise BenchError(f"{op}: decryption did not give back the payload")


def warm_up(op_name: str, data: bytes, op: Op) -> None:
    """Run `op` a few times outside the timed window, checking its first output."""
    check_output(op_name, data, op())
    for _ in range(WARMUP_CALLS - 1):
        op()


def timed_run(ops: Sequence[Op], duration: float) -> tuple[int, float]:
    """Run each op in its own thread for `duration` seconds; (total calls, elapsed seconds).

    All threads start together (the barrier's action starts the clock); each runs until the
    deadline; the elapsed time ends with the last thread to finish.
    """
    counts = [0] * len(ops)
    ends = [0.0] * len(ops)
    failures: list[BaseException] = []
    window = [0.0, 0.0]

    def start_clock() -> None:
        window[0] = time.perf_counter()
        window[1] = window[0] + duration

    barrier = threading.Barrier(len(ops), action=start_clock)

    def work(index: int) -> None:
        op, clock, calls = ops[index], time.perf_counter, 0
        try:
            barrier.wait()
            deadline = window[1]
            while clock() < deadline:
                op()
                calls += 1
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        counts[index], ends[index] = calls, clock()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ops))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(counts), max(ends) - window[0]


def emit(record: Mapping[str, object]) -> None:
    print(json.dumps(record), flush=True)


class OpCache:
    """Each session's closure per (op, size), made the first time a burst needs it."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = workers
        self.made: dict[tuple[int, str, int], Op | None] = {}

    def ops(self, case: Case) -> list[Op] | None:
        """The closures of the first `case.threads` sessions; None if the case is unsupported."""
        if case.threads > len(self.workers):
            raise BenchError(f"{case.threads} threads asked, {len(self.workers)} sessions open")
        ops = []
        for index in range(case.threads):
            key = (index, case.op, case.size)
            if key not in self.made:
                self.made[key] = self.workers[index].make_op(case.op, payload(case.size))
            op = self.made[key]
            if op is None:
                return None
            ops.append(op)
        return ops


def run_burst(impl: str, cache: OpCache, burst: Burst) -> dict[str, object]:
    """Warm up and time one burst with one thread per session; its answer line."""
    case = burst.case
    head: dict[str, object] = {
        "impl": impl,
        "op": case.op,
        "size": case.size,
        "threads": case.threads,
    }
    ops = cache.ops(case)
    if ops is None:
        return {**head, "unsupported": True}
    data = payload(case.size)
    for op in ops:
        warm_up(case.op, data, op)
    calls, seconds = timed_run(ops, burst.duration)
    rate = round(calls / seconds, 3)
    return {**head, "ops": calls, "seconds": round(seconds, 6), "ops_per_s": rate}


def serve(impl: str, workers: Sequence[Worker], commands: Iterable[str]) -> None:
    """Answer each burst command with its result line, until `quit` or the end of input."""
    cache = OpCache(workers)
    for line in commands:
        burst = Burst.parse(line)
        if burst is None:
            return
        emit(run_burst(impl, cache, burst))


def parse_options(impls: Iterable[str], argv: Sequence[str]) -> Options:
    names = list(impls)
    parser = argparse.ArgumentParser(description="One implementation's benchmark worker.")
    parser.add_argument("--impl", choices=names, default=names[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--pin", required=True)
    parser.add_argument("--sessions", type=int, default=1, help="the most threads a burst uses")
    args = parser.parse_args(argv)
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    return Options(
        impl=args.impl,
        module=args.module,
        token=args.token,
        pin=args.pin,
        sessions=args.sessions,
    )


def main(setups: Mapping[str, Setup], versions: Mapping[str, str]) -> None:
    """Entry point of an impl_*.py: `setups` maps each implementation name it offers."""
    options = parse_options(setups, sys.argv[1:])
    workers = setups[options.impl](options)
    emit({"meta": {"impl": options.impl, "python": platform.python_version(), **versions}})
    serve(options.impl, workers, sys.stdin)
