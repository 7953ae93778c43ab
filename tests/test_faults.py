"""Faults injected under the pool and the HSM façade by a PKCS#11 module wrapping SoftHSM2.

The fault module loads SoftHSM2 inside its process, so every scenario runs in a subprocess of
its own (``tests/fault_scenarios.py``), never beside this process's direct SoftHSM2 instance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kms_iface.pkcs11.softhsm import SoftHsmToken
from tests.fault_pkcs11.build import build_fault_module

SCENARIOS = Path(__file__).resolve().parent / "fault_scenarios.py"
ROOT = SCENARIOS.parent.parent


@pytest.fixture(scope="session")
def fault_library() -> Path:
    return build_fault_module()


def run_scenario(
    name: str,
    fault_library: Path,
    token: SoftHsmToken,
    tmp_path: Path,
    *,
    timeout: float = 300.0,
    extra: dict[str, str] | None = None,
) -> str:
    """Run one scenario in a fresh interpreter; its stdout (a failure fails the test)."""
    env = {
        **os.environ,
        **token.environ(),
        "FAULT_PKCS11_LIB": str(fault_library),
        "FAULT_PKCS11_TARGET": token.module,
        "FAULT_PKCS11_FILE": str(tmp_path / "faults"),
        "FAULT_TOKEN_LABEL": token.label,
        "FAULT_TOKEN_PIN": token.user_pin,
        "PYTHONPATH": str(ROOT),
        **(extra or {}),
    }
    env.pop("FAULT_PKCS11_SPEC", None)
    proc = subprocess.run(
        [sys.executable, str(SCENARIOS), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize(
    "scenario",
    [
        "error_codes",  # each code on C_Encrypt / C_Decrypt: dropped, re-logged, kept, retried
        "keygen_not_retried",  # a lost key-generation reply is never blindly repeated
        "reboot",  # pool: re-login after a device reboot, next call succeeds
        "hsm_reboot",  # the async façade across reboots
        "quirks",  # overlong attribute lengths, BUFFER_TOO_SMALL loops, scribbled GCM params
        "hsm_scribble",  # façade AES-GCM (single and batched) under a scribbling module
        "recovery_failure_keeps_count",  # regression: pool ran dry after a failed recovery
        "anchor_dropped",  # regression: a dropped anchor made the pool leak its live sessions
        "close_failure_retried",  # regression: a failed C_CloseSession left the session open
        "operation_active_closes_session",  # regression: a stuck operation poisoned a session
        "hsm_not_found_after_logout",  # regression: "Object not found" for a logged-out token
        "call_timeout",  # a hung C call: HsmTimeoutError, started or dropped; no session lost
    ],
)
def test_scenario(scenario: str, fault_library: Path, token: SoftHsmToken, tmp_path: Path) -> None:
    run_scenario(scenario, fault_library, token, tmp_path)


def test_random_faults(fault_library: Path, token: SoftHsmToken, tmp_path: Path) -> None:
    """5% of calls fail (every code, plus rare reboots) under 32 async tasks for
    $FAULT_SOAK_SECONDS (default 30): no wrong plaintext, only typed errors, no leak, no hang."""
    seconds = float(os.environ.get("FAULT_SOAK_SECONDS", "30"))
    out = run_scenario("random_faults", fault_library, token, tmp_path, timeout=seconds + 300)
    print(out)
