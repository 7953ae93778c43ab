"""The write stream and the read check shared by the concurrency and durability tests.

A writer creates ``<writer_id>-<n>`` uids (version 0) and, in ``mixed`` mode, also rewrites earlier
uids of its own with ``update_object`` (version 1, 2, ...). Every write it acknowledges (its call
returned) is reported to ``on_ack(uid, version)``. What a uid holds at a version is
``model.record(uid, version)``, so any process can check a read.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio

from tests.store_conformance.backends import Store
from tests.store_conformance.model import OWNER, record, record_version

__all__ = ["WRITER_OWNER", "check_read", "write_stream"]

WRITER_OWNER = OWNER


async def write_stream(
    store: Store,
    writer_id: str,
    on_ack: Callable[[str, int], None],
    *,
    seconds: float | None,
    mixed: bool,
    seed: int = 0,
) -> int:
    """Write until ``seconds`` have passed (forever if None); the number of writes acknowledged."""
    rng = random.Random(seed)
    deadline = None if seconds is None else anyio.current_time() + seconds
    versions: dict[str, int] = {}
    uids: list[str] = []
    writes = 0
    while deadline is None or anyio.current_time() < deadline:
        uid = f"{writer_id}-{len(uids)}"
        obj, attributes, tags = record(uid, 0)
        created = await store.create(uid, WRITER_OWNER, obj, attributes, tags)
        if created != uid:
            raise AssertionError(f"create({uid!r}) returned {created!r}")
        uids.append(uid)
        versions[uid] = 0
        on_ack(uid, 0)
        writes += 1
        if mixed and len(uids) > 1 and rng.random() < 0.5:
            target = rng.choice(uids)
            version = versions[target] + 1
            obj, attributes, _ = record(target, version)
            await store.update_object(target, obj, attributes)
            versions[target] = version
            on_ack(target, version)
            writes += 1
    return writes


async def check_read(store: Store, uid: str, min_version: int) -> str | None:
    """None if ``uid`` reads back whole at ``min_version`` or later, else what is wrong."""
    got = await store.retrieve(uid)
    if got is None:
        return f"{uid}: acknowledged (version {min_version}) but not retrievable"
    try:
        version = record_version(got.attributes)
    except AssertionError as exc:
        return f"{uid}: {exc}"
    if version < min_version:
        return f"{uid}: version {version} read after version {min_version} was acknowledged"
    obj, attributes, tags = record(uid, version)
    problems = []
    if got.id != uid:
        problems.append(f"id {got.id!r}")
    if got.owner != WRITER_OWNER:
        problems.append(f"owner {got.owner!r}")
    if got.object != obj:
        problems.append("object differs from the record of its attributes' version (torn read)")
    if got.attributes != attributes:
        problems.append("attributes differ from their record")
    if problems:
        return f"{uid} at version {version}: " + "; ".join(problems)
    read_tags = await store.retrieve_tags(uid)
    if read_tags != tags:
        return f"{uid}: tags {read_tags!r}, expected {tags!r}"
    return None
