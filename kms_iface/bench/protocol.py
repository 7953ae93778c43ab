"""What the harness and workers share: the cases, payloads, checks, the timed loop, the protocol.

The protocol (``raw_loop.c`` speaks it too). A worker is started with ``--module PATH --token
LABEL --sessions N`` and reads the user PIN as the first line of its stdin (never a command-line
argument). It sets up, prints one JSON line ``{"meta": {...}}`` (versions; it means "ready"),
then reads commands, one per line: ``OP SIZE THREADS SECONDS`` (e.g. ``gcm_enc 64 2 0.07``) runs
one burst with the first THREADS sessions and answers one JSON line ``{"impl", "op", "size",
"threads", "ops", "seconds", "ops_per_s"}``, or ``{"impl", "op", "size", "threads",
"unsupported": true}``; ``quit`` or the end of stdin ends the worker. A bad command or a failed
check ends it with a non-zero status and the reason on stderr.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Final, Protocol, SupportsBytes

from kms_iface.errors import InterfaceError

AES_OPS: Final = ("gcm_enc", "gcm_dec", "cbcpad_enc", "cbcpad_dec")
RSA_OPS: Final = ("rsa_sign", "rsa_oaep_dec")
OPS: Final = AES_OPS + RSA_OPS
OP_LABELS: Final = {
    "gcm_enc": "AES-GCM encrypt",
    "gcm_dec": "AES-GCM decrypt",
    "cbcpad_enc": "AES-CBC-PAD encrypt",
    "cbcpad_dec": "AES-CBC-PAD decrypt",
    "rsa_sign": "RSA-2048 sign SHA256-RSA-PKCS",
    "rsa_oaep_dec": "RSA-2048 OAEP(SHA-1) decrypt",
}
DECRYPT_OPS: Final = frozenset({"gcm_dec", "cbcpad_dec", "rsa_oaep_dec"})
RSA_PAYLOAD_SIZE: Final = 32
RSA_BITS: Final = 2048
AES_KEY_BYTES: Final = 32
GCM_IV_LEN: Final = 12
CBC_IV_LEN: Final = 16
GCM_FIXED_IV: Final = b"\x42" * GCM_IV_LEN
CBC_FIXED_IV: Final = b"\x42" * CBC_IV_LEN
OUT_SLACK: Final = 512
WARMUP_CALLS: Final = 2
CONTENT_CHECK_LIMIT: Final = 65536
QUIT: Final = "quit"

Op = Callable[[], object]
"""One operation, ready to run: returns its output (a bytes-like object, or a length)."""

Timing = tuple[int, float]
"""A burst's calls and seconds."""


class BenchError(InterfaceError):
    """The benchmark could not run or an implementation produced a wrong result."""


@dataclass(frozen=True)
class Options:
    """A worker's settings: its implementation, the token and how many sessions to open."""

    impl: str
    module: str
    token: str
    pin: str
    sessions: int
    tasks: int


@dataclass(frozen=True)
class Case:
    """One row of the table: an operation over a payload size with a number of threads."""

    op: str
    size: int
    threads: int


@dataclass(frozen=True)
class Burst:
    """One command of the protocol: run ``case`` for ``duration`` seconds."""

    case: Case
    duration: float

    def line(self) -> str:
        case = self.case
        return f"{case.op} {case.size} {case.threads} {self.duration}\n"

    @classmethod
    def parse(cls, line: str) -> Burst | None:
        """The burst a command line asks for; None for ``quit``."""
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


def case_list(sizes: Iterable[int], threads: int) -> list[Case]:
    """AES ops at every size, RSA ops at the fixed RSA payload size."""
    sizes = tuple(sizes)
    return [
        Case(op, size, threads)
        for op in OPS
        for size in (sizes if op in AES_OPS else (RSA_PAYLOAD_SIZE,))
    ]


@functools.cache
def payload(size: int) -> bytes:
    """The deterministic payload every implementation encrypts or signs (as raw_loop.c)."""
    period = bytes((i * 131 + 7) & 0xFF for i in range(256))
    return (period * (size // 256 + 1))[:size]


def expected_len(op: str, size: int) -> int:
    """The output length of ``op`` over ``size`` bytes (RSA-2048, 16-byte GCM tag)."""
    if op == "gcm_enc":
        return size + 16
    if op == "cbcpad_enc":
        return (size // 16 + 1) * 16
    if op == "rsa_sign":
        return RSA_BITS // 8
    return size


def output_capacity(size: int) -> int:
    """A big-enough output buffer for any case over ``size`` bytes (as raw_loop.c)."""
    return size + OUT_SLACK


def find_slot(slots: Iterable[int], label_of: Callable[[int], str], label: str) -> int:
    """The first slot whose token label (blank padding stripped) is ``label``."""
    for slot in slots:
        if label_of(slot).rstrip() == label:
            return slot
    raise BenchError(f"no token labelled {label!r}")


def _output_bytes(result: object) -> bytes:
    if isinstance(result, bytes | bytearray | memoryview | SupportsBytes | Iterable):
        return bytes(result)
    raise BenchError(f"unexpected output type {type(result).__name__}")


def check_output(op: str, data: bytes, result: object) -> None:
    """Raise BenchError unless ``result`` has the right length and, for decryption, content.

    The content is compared up to CONTENT_CHECK_LIMIT bytes of payload: enough to prove the keys
    and parameters are wired right, without PyKCS11's slow list-of-ints conversion of 1 MiB.
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
    """Run ``op`` a few times outside the timed window, checking its first output."""
    check_output(op_name, data, op())
    for _ in range(WARMUP_CALLS - 1):
        op()


def timed_run(ops: Sequence[Op], duration: float) -> Timing:
    """Run each op in its own thread for ``duration`` seconds; (total calls, elapsed seconds).

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


class Worker(Protocol):
    """One session with the shared keys, as a threaded implementation set it up."""

    def make_op(self, op: str, data: bytes) -> Op | None:
        """The timed closure for ``op`` over ``data``, or None if the implementation lacks it.

        Setup work (a ciphertext for the decrypt cases, preallocated buffers) happens here,
        outside the timed loop; the closure is made once and reused by every burst.
        """
        ...


class Runner(Protocol):
    """What a worker process serves bursts with."""

    meta: Mapping[str, str]
    """Versions and module details for the ready line."""

    def run(self, case: Case, duration: float) -> Timing | None:
        """Warm up, then time one burst of ``case``; None if the implementation lacks it."""
        ...

    def close(self) -> None:
        """Release sessions and keys."""
        ...


class ThreadedRunner:
    """Bursts on one session per thread; each session's closures are made on first use."""

    def __init__(self, workers: Sequence[Worker], meta: Mapping[str, str]) -> None:
        self.workers = workers
        self.meta = meta
        self._made: dict[tuple[int, str, int], Op | None] = {}

    def _ops(self, case: Case) -> list[Op] | None:
        if case.threads > len(self.workers):
            raise BenchError(f"{case.threads} threads asked, {len(self.workers)} sessions open")
        ops = []
        for index in range(case.threads):
            key = (index, case.op, case.size)
            if key not in self._made:
                self._made[key] = self.workers[index].make_op(case.op, payload(case.size))
            op = self._made[key]
            if op is None:
                return None
            ops.append(op)
        return ops

    def run(self, case: Case, duration: float) -> Timing | None:
        ops = self._ops(case)
        if ops is None:
            return None
        for op in ops:
            warm_up(case.op, payload(case.size), op)
        return timed_run(ops, duration)

    def close(self) -> None:
        """Nothing to release: the worker process exits."""


def emit(record: Mapping[str, object]) -> None:
    """One JSON line on stdout, flushed (the worker's side of the protocol)."""
    print(json.dumps(record), flush=True)


def serve(impl: str, runner: Runner, commands: Iterable[str]) -> None:
    """Answer each burst command with its result line, until ``quit`` or the end of input."""
    for line in commands:
        burst = Burst.parse(line)
        if burst is None:
            return
        case = burst.case
        head = {"impl": impl, "op": case.op, "size": case.size, "threads": case.threads}
        timing = runner.run(case, burst.duration)
        if timing is None:
            emit({**head, "unsupported": True})
            continue
        calls, seconds = timing
        rate = round(calls / seconds, 3)
        emit({**head, "ops": calls, "seconds": round(seconds, 6), "ops_per_s": rate})
