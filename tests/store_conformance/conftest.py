"""Fixtures of the store conformance suite.

``store``: a fresh, empty, open store of each registered backend (ids = backend names), closed after
the test. ``anyio_backend``: every async test runs under asyncio and under trio.
``store_case``: the backend and descriptor behind ``store`` (to reopen it, or to hand it to another
process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.store_conformance.backends import BACKENDS, Backend, Store


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(params=BACKENDS, ids=[backend.name for backend in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    param: Backend = request.param
    return param


@dataclass(frozen=True)
class StoreCase:
    """Where the test's store lives: its backend and its descriptor."""

    backend: Backend
    descriptor: str

    def make_store(self) -> Store:
        """Another (unopened) store object on the same store."""
        return self.backend.make_store(self.descriptor)


@pytest.fixture
async def store_case(
    backend: Backend, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[StoreCase]:
    descriptor = await backend.new_descriptor(tmp_path)
    yield StoreCase(backend, descriptor)
    await backend.discard(descriptor)


@pytest.fixture
async def store(store_case: StoreCase, anyio_backend: str) -> AsyncIterator[Store]:
    opened = store_case.make_store()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
