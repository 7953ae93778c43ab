"""The implementations a run can measure, how each worker starts, and whether it can run here.

Columns: ``raw`` (the C loop), ``kms_iface`` (results as new objects), ``kms_iface-into``
(into a caller buffer), ``Pkcs11Hsm/N`` (the async façade with N tasks, AES-GCM cases at one
thread), ``python-pkcs11`` and ``pykcs11``. ``kms_iface+toppad`` and ``python-pkcs11+toppad``
run the same worker with ``MALLOC_TOP_PAD_=64MiB`` and measure the AES cases of 1 MiB and more
only; they join whenever a size of 1 MiB or more is asked for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from kms_iface.bench.protocol import AES_OPS, Case

RAW: Final = "raw"
KMS_IFACE: Final = "kms_iface"
FACADE: Final = "Pkcs11Hsm"
LARGE: Final = 1 << 20
TOPPAD_ENV: Final = {"MALLOC_TOP_PAD_": str(64 << 20)}
FACADE_OPS: Final = frozenset({"gcm_enc", "gcm_dec"})

COMPARE: Final = ("python-pkcs11", "pykcs11", RAW)
"""What ``--compare`` may name."""

# --compare name -> (distribution to install, top-level module it provides)
PACKAGES: Final = {"python-pkcs11": ("python-pkcs11", "pkcs11"), "pykcs11": ("PyKCS11", "PyKCS11")}


@dataclass(frozen=True)
class Impl:
    """One column of the table: which worker runs it, with what environment, on which cases."""

    name: str
    worker: str  # the worker's --impl name; RAW for the C loop
    description: str
    env: Mapping[str, str] = field(default_factory=dict)
    large_aes_only: bool = False
    tasks: int = 1

    def measures(self, case: Case) -> bool:
        """Whether this column has a cell in ``case``'s row."""
        if self.worker == FACADE:
            return case.threads == 1 and case.op in FACADE_OPS
        return not self.large_aes_only or (case.op in AES_OPS and case.size >= LARGE)


def missing_package(name: str) -> str | None:
    """The distribution ``--compare name`` needs when it is not installed (None: installed).

    Only looks the module up: bindings are imported in their worker process alone.
    """
    distribution, module = PACKAGES[name]
    return None if importlib.util.find_spec(module) is not None else distribution


def plan(compare: Sequence[str], tasks: Sequence[int], sizes: Sequence[int]) -> list[Impl]:
    """The columns of a run, in table order; ``compare`` is already checked for availability."""
    large = max(sizes) >= LARGE
    toppad = "the same with MALLOC_TOP_PAD_=64MiB (sizes of 1 MiB and more)"
    impls = []
    if RAW in compare:
        impls.append(Impl(RAW, RAW, "raw C loop over the module: the ceiling"))
    impls.append(Impl(KMS_IFACE, KMS_IFACE, "kms_iface core, results as new objects"))
    if large:
        impls.append(Impl(f"{KMS_IFACE}+toppad", KMS_IFACE, toppad, TOPPAD_ENV, True))
    impls.append(Impl("kms_iface-into", "kms_iface-into", "kms_iface core into a caller buffer"))
    impls += [
        Impl(
            f"{FACADE}/{n}",
            FACADE,
            f"kms_iface Pkcs11Hsm, {n} asyncio task{'s' * (n > 1)}",
            tasks=n,
        )
        for n in tasks
    ]
    if "python-pkcs11" in compare:
        impls.append(Impl("python-pkcs11", "python-pkcs11", "python-pkcs11, idiomatic calls"))
        if large:
            impls.append(Impl("python-pkcs11+toppad", "python-pkcs11", toppad, TOPPAD_ENV, True))
    if "pykcs11" in compare:
        impls.append(Impl("pykcs11", "pykcs11", "PyKCS11, idiomatic calls"))
    return impls
