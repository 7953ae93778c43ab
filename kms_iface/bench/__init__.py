"""The side-by-side PKCS#11 benchmark behind ``kms-iface bench``.

kms_iface's core runs against a raw C loop (the ceiling, ``raw_loop.c``, compiled on demand),
python-pkcs11, PyKCS11 and the async façade ``Pkcs11Hsm`` with N concurrent asyncio tasks, on
the same token with the same cases. Every implementation runs in a long-lived worker process of
its own (``python -m kms_iface.bench.worker``, or the C loop) and imports its binding there only.
For each case, each round sends one short burst to every implementation in turn, rotating the
order by one each round; a ratio is the median over the rounds of (burst / the base's burst of
the same round), which cancels most of a shared machine's drift.

Modules: ``protocol`` (what workers and harness share), ``worker`` and ``impl_*`` (the worker
side), ``raw`` (building the C loop), ``catalog`` (the implementations and whether they can
run), ``harness`` (workers, interleaved rounds, statistics), ``schema`` (the JSON report as
msgspec Structs), ``report`` (report and table), ``plot`` (the PNG, imports matplotlib).
"""
