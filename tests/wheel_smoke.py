"""Smoke test of an installed kms_iface wheel: it imports, loads SoftHSM2 and round-trips an
AES-GCM encryption on a throwaway token (softhsm2-util, private SOFTHSM2_CONF).

In an environment where the wheel is installed (cibuildwheel's test-command)::

    python tests/wheel_smoke.py

Given a wheel and a folder of the runtime dependencies' wheels, it makes a fresh venv, installs
both without the network (``pip --no-index --find-links``) and runs itself there with no C
compiler on PATH and CC unset (``make wheel`` and tests/test_wheel.py)::

    python tests/wheel_smoke.py --wheel dist/kms_iface-*.whl --find-links build/wheelhouse
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMPILERS = ("cc", "gcc", "c++", "g++", "clang")
MESSAGE = b"kms_iface wheel smoke test"


def smoke(*, no_compiler: bool) -> str:
    """Run the checks in this interpreter; return a one-line report, raise on failure."""
    if no_compiler:
        found = [c for c in COMPILERS if shutil.which(c)]
        if "CC" in os.environ:
            found.append("$CC")
        if found:
            raise SystemExit(f"a compiler is reachable: {', '.join(found)}")
    # Imported here so that --wheel mode never imports the source tree.
    import kms_iface
    from kms_iface import Mechanism, Module
    from kms_iface.pkcs11 import aes_key_template
    from kms_iface.pkcs11 import constants as ck
    from kms_iface.pkcs11.softhsm import create_token

    location = Path(kms_iface.__file__).resolve().parent
    if not location.is_relative_to(Path(sys.prefix).resolve()):
        raise SystemExit(f"kms_iface was imported from {location}, not from the installed wheel")
    with tempfile.TemporaryDirectory(prefix="kms-iface-smoke-") as tmp:
        token = create_token(tmp, label="wheel-smoke")
        os.environ.update(token.environ())  # before the first Module of this process
        with (
            Module(token.module) as module,
            module.pool(module.find_slot(token.label), token.user_pin) as pool,
            pool.session() as session,
        ):
            key = session.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False))
            iv = os.urandom(12)
            sealed = session.encrypt(Mechanism.aes_gcm(iv), key, MESSAGE)
            with session.decrypt(Mechanism.aes_gcm(iv), key, sealed) as plain:
                if plain != MESSAGE:
                    raise SystemExit("AES-GCM round trip returned different bytes")
    return f"round trip ok: kms_iface from {location}, {token.module}"


def check_wheel(wheel: Path, find_links: Path) -> str:
    """Install ``wheel`` into a fresh venv from ``find_links`` only and run :func:`smoke` there
    with PATH reduced to the venv and softhsm2-util; return its report."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise SystemExit("softhsm2-util is missing: install Debian's softhsm2 package")
    with tempfile.TemporaryDirectory(prefix="kms-iface-wheel-") as tmp:
        venv, tools = Path(tmp, "venv"), Path(tmp, "tools")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        tools.mkdir()
        (tools / "softhsm2-util").symlink_to(util)
        # No pip configuration or PIP_* variables: only find_links may provide packages.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PIP_") and k not in ("CC", "CXX")
        }
        env |= {"PATH": f"{venv / 'bin'}:{tools}", "PIP_CONFIG_FILE": os.devnull}
        python = str(venv / "bin" / "python")
        install = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links"]
        subprocess.run([*install, find_links.resolve(), wheel.resolve()], env=env, check=True)
        done = subprocess.run(
            [python, Path(__file__).resolve(), "--no-compiler"],
            env=env,
            cwd=tmp,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="Smoke test of an installed kms_iface wheel.")
    parser.add_argument("--wheel", type=Path, help="install this wheel into a fresh venv first")
    parser.add_argument("--find-links", type=Path, help="with --wheel: the dependencies' wheels")
    parser.add_argument("--no-compiler", action="store_true", help="fail if a compiler is found")
    args = parser.parse_args()
    if args.wheel is None:
        print(smoke(no_compiler=args.no_compiler))
    elif args.find_links is None:
        parser.error("--wheel needs --find-links")
    else:
        print(check_wheel(args.wheel, args.find_links))


if __name__ == "__main__":
    main()
