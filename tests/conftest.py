"""Fixtures: one throwaway SoftHSM2 token per test run, found by its label.

The token is created before anything loads the module (SoftHSM2 reads SOFTHSM2_CONF once).
A missing SoftHSM2 or softhsm2-util fails the run: `make test` installs them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kms_iface.pkcs11 import Module, Session, SessionPool
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken, create_token

_TMP = tempfile.TemporaryDirectory(prefix="kms-iface-test-")
TOKEN: SoftHsmToken = create_token(Path(_TMP.name) / "softhsm")
# A second token that no fixture keeps logged in, for login failures (C_Login on a token that
# is already logged in answers USER_ALREADY_LOGGED_IN whatever the PIN).
SPARE: SoftHsmToken = create_token(Path(_TMP.name) / "softhsm", label="kms-iface-spare")
os.environ.update(TOKEN.environ())


@pytest.fixture(scope="session")
def token() -> SoftHsmToken:
    return TOKEN


@pytest.fixture(scope="session")
def spare_token() -> SoftHsmToken:
    """Same module and configuration as ``token``; never left logged in by a fixture."""
    return SPARE


@pytest.fixture(scope="session")
def module(token: SoftHsmToken) -> Iterator[Module]:
    mod = Module(token.module)
    yield mod
    mod.close()


@pytest.fixture(scope="session")
def slot(module: Module, token: SoftHsmToken) -> int:
    return module.find_slot(token.label)


@pytest.fixture
def pool(module: Module, slot: int, token: SoftHsmToken) -> Iterator[SessionPool]:
    p = module.pool(slot, token.user_pin, size=4, timeout=10.0)
    yield p
    p.close()


@pytest.fixture
def session(pool: SessionPool) -> Iterator[Session]:
    with pool.session() as s:
        yield s


def count_objects(module: Module, slot: int, pin: str) -> int:
    """Objects visible to a logged-in user, through a session of its own (token unchanged?)."""
    s = module.open_session(slot)
    try:
        s.login(ck.CKU_USER, pin.encode())
        return len(s.find_objects([]))
    finally:
        s.close()
