"""The README's quick-start runs as written against the test token."""

from __future__ import annotations

import re
from pathlib import Path

from kms_iface.pkcs11 import Module
from kms_iface.pkcs11.softhsm import SoftHsmToken

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_quick_start_runs(module: Module, token: SoftHsmToken) -> None:
    blocks = python_blocks()
    assert blocks, "the README has no Python quick-start"
    for block in blocks:
        assert token.label in block
        exec(compile(block, str(README), "exec"), {})
    assert not module.closed
