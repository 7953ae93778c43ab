"""The README's quick-start runs as written against the test token."""

from __future__ import annotations

import re
from pathlib import Path

from kms_iface.pkcs11 import Module
from kms_iface.pkcs11.softhsm import SoftHsmToken

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_quick_starts_run(module: Module, token: SoftHsmToken) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2, "the README lost a Python quick-start"
    assert any(token.label in block for block in blocks), "no quick-start uses the test token"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert not module.closed
