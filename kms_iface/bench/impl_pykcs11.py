"""The benchmark cases with PyKCS11 (1.5.20), used the fastest idiomatic way.

PyKCS11 holds the GIL through every C call, so its threads are safe but take turns. Outputs
are kept as the `ckbytelist` PyKCS11 returns (no conversion to bytes inside the timed loop).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from os import urandom
from typing import Any

import PyKCS11
from PyKCS11 import (
    CK_FALSE,
    CK_TRUE,
    CKA_CLASS,
    CKA_DECRYPT,
    CKA_ENCRYPT,
    CKA_KEY_TYPE,
    CKA_MODULUS_BITS,
    CKA_PRIVATE,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_VALUE_LEN,
    CKA_VERIFY,
    CKF_RW_SESSION,
    CKF_SERIAL_SESSION,
    CKG_MGF1_SHA1,
    CKK_AES,
    CKM_AES_CBC_PAD,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA_1,
    CKO_SECRET_KEY,
)

from kms_iface.bench.protocol import (
    AES_KEY_BYTES,
    CBC_FIXED_IV,
    CBC_IV_LEN,
    GCM_FIXED_IV,
    GCM_IV_LEN,
    RSA_BITS,
    Op,
    Options,
    ThreadedRunner,
    find_slot,
)

AES_TEMPLATE = [
    (CKA_CLASS, CKO_SECRET_KEY),
    (CKA_KEY_TYPE, CKK_AES),
    (CKA_VALUE_LEN, AES_KEY_BYTES),
    (CKA_TOKEN, CK_FALSE),
    (CKA_ENCRYPT, CK_TRUE),
    (CKA_DECRYPT, CK_TRUE),
]
RSA_PUBLIC_TEMPLATE = [
    (CKA_TOKEN, CK_FALSE),
    (CKA_ENCRYPT, CK_TRUE),
    (CKA_VERIFY, CK_TRUE),
    (CKA_MODULUS_BITS, RSA_BITS),
    (CKA_PUBLIC_EXPONENT, (1, 0, 1)),
]
RSA_PRIVATE_TEMPLATE = [
    (CKA_TOKEN, CK_FALSE),
    (CKA_PRIVATE, CK_TRUE),
    (CKA_SENSITIVE, CK_TRUE),
    (CKA_DECRYPT, CK_TRUE),
    (CKA_SIGN, CK_TRUE),
]


class Keys:
    """The session keys, made once on the logged-in session (handles are valid in all), and
    the decrypt cases' ciphertexts, made once for all workers: `bytes()` of a 1 MiB
    `ckbytelist` takes about 0.6 s."""

    def __init__(self, session: Any) -> None:
        self.aes = session.generateKey(AES_TEMPLATE)
        self.public, self.private = session.generateKeyPair(
            RSA_PUBLIC_TEMPLATE, RSA_PRIVATE_TEMPLATE
        )
        self._ciphertexts: dict[tuple[str, int], bytes] = {}

    def ciphertext(self, op: str, data: bytes, encrypt: Callable[[], Any]) -> bytes:
        made = self._ciphertexts.get((op, len(data)))
        if made is None:
            made = self._ciphertexts[op, len(data)] = bytes(encrypt())
        return made


def _gcm(iv: bytes) -> Any:
    return PyKCS11.AES_GCM_Mechanism(iv, b"", 128)


def _cbc_pad(iv: bytes) -> Any:
    return PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv)


class Worker:
    """One thread's PyKCS11 session."""

    def __init__(self, session: Any, keys: Keys) -> None:
        self.session = session
        self.keys = keys

    def make_op(self, op: str, data: bytes) -> Op | None:
        s, aes, private = self.session, self.keys.aes, self.keys.private
        match op:
            case "gcm_enc":
                return lambda: s.encrypt(aes, data, _gcm(urandom(GCM_IV_LEN)))
            case "gcm_dec":
                ct = self.keys.ciphertext(
                    op, data, lambda: s.encrypt(aes, data, _gcm(GCM_FIXED_IV))
                )
                return lambda: s.decrypt(aes, ct, _gcm(GCM_FIXED_IV))
            case "cbcpad_enc":
                return lambda: s.encrypt(aes, data, _cbc_pad(urandom(CBC_IV_LEN)))
            case "cbcpad_dec":
                ct = self.keys.ciphertext(
                    op, data, lambda: s.encrypt(aes, data, _cbc_pad(CBC_FIXED_IV))
                )
                return lambda: s.decrypt(aes, ct, _cbc_pad(CBC_FIXED_IV))
            case "rsa_sign":
                sign = PyKCS11.Mechanism(CKM_SHA256_RSA_PKCS)
                return lambda: s.sign(private, data, sign)
            case "rsa_oaep_dec":
                oaep = PyKCS11.RSAOAEPMechanism(CKM_SHA_1, CKG_MGF1_SHA1)
                ct = self.keys.ciphertext(op, data, lambda: s.encrypt(self.keys.public, data, oaep))
                return lambda: s.decrypt(private, ct, oaep)
        return None


def start(options: Options) -> ThreadedRunner:
    """Sessions (the first one logs in), the session keys, one worker per thread."""
    lib = PyKCS11.PyKCS11Lib().load(options.module)
    slot = find_slot(
        lib.getSlotList(tokenPresent=True),
        lambda slot: str(lib.getTokenInfo(slot).label),
        options.token,
    )
    flags = CKF_SERIAL_SESSION | CKF_RW_SESSION
    sessions = [lib.openSession(slot, flags) for _ in range(options.sessions)]
    sessions[0].login(options.pin)
    keys = Keys(sessions[0])
    meta = {"package": "PyKCS11", "version": metadata.version("PyKCS11")}
    return ThreadedRunner([Worker(session, keys) for session in sessions], meta)
