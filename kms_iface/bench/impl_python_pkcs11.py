"""The benchmark cases with python-pkcs11 (0.10.1), used the fastest idiomatic way.

python-pkcs11 calls C_Initialize(NULL), after which SoftHSM2 switches its internal locking off,
and threads with their own sessions then crash (docs: pkcs11-pitfalls.md). `lib.initialize` is a
Cython cpdef method, so a Python subclass overriding it replaces the call made from
`lib.__init__`: the override initialises the same module (same dlopen handle) through ctypes
with CKF_OS_LOCKING_OK. Everything after that is stock python-pkcs11.
"""

from __future__ import annotations

import ctypes
from importlib import metadata
from os import urandom
from typing import TypeVar

from pkcs11 import MGF, GCMParams, Key, KeyType, Mechanism, ObjectClass, Session
from pkcs11._pkcs11 import lib as Pkcs11Lib
from pkcs11.types import DecryptMixin, EncryptMixin, SignMixin

from kms_iface.bench.protocol import (
    AES_KEY_BYTES,
    CBC_FIXED_IV,
    CBC_IV_LEN,
    GCM_FIXED_IV,
    GCM_IV_LEN,
    RSA_BITS,
    BenchError,
    Op,
    Options,
    ThreadedRunner,
)

CKR_OK = 0
CKF_OS_LOCKING_OK = 0x2
AES_LABEL = "bench-aes"
RSA_LABEL = "bench-rsa"
OAEP_PARAM = (Mechanism.SHA_1, MGF.SHA1, None)
Capability = TypeVar("Capability", EncryptMixin, DecryptMixin, SignMixin)


class _InitArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS."""

    _fields_ = [
        ("create_mutex", ctypes.c_void_p),
        ("destroy_mutex", ctypes.c_void_p),
        ("lock_mutex", ctypes.c_void_p),
        ("unlock_mutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("reserved", ctypes.c_void_p),
    ]


class _FunctionListHead(ctypes.Structure):
    """The start of CK_FUNCTION_LIST: the version, then C_Initialize."""

    _fields_ = [
        ("major", ctypes.c_ubyte),
        ("minor", ctypes.c_ubyte),
        ("C_Initialize", ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.POINTER(_InitArgs))),
    ]


def initialize_with_os_locking(path: str) -> None:
    """C_Initialize(CKF_OS_LOCKING_OK) on the module at `path` (already dlopened: same handle)."""
    module = ctypes.CDLL(path)
    functions = ctypes.POINTER(_FunctionListHead)()
    rv = module.C_GetFunctionList(ctypes.byref(functions))
    if rv != CKR_OK:
        raise BenchError(f"C_GetFunctionList failed: CK_RV {rv:#x}")
    rv = functions.contents.C_Initialize(ctypes.byref(_InitArgs(flags=CKF_OS_LOCKING_OK)))
    if rv != CKR_OK:
        raise BenchError(f"C_Initialize(CKF_OS_LOCKING_OK) failed: CK_RV {rv:#x}")


class OsLockingLib(Pkcs11Lib):
    """python-pkcs11's library object, its module initialised with CKF_OS_LOCKING_OK."""

    def initialize(self) -> None:
        initialize_with_os_locking(self.so)


def _capable(key: Key, kind: type[Capability]) -> Capability:
    if not isinstance(key, kind):
        raise BenchError(f"{key!r} lacks {kind.__name__}")
    return key


class Worker:
    """One thread's python-pkcs11 session and its view of the shared session keys."""

    def __init__(self, session: Session) -> None:
        aes = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=AES_LABEL)
        public = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.RSA, label=RSA_LABEL)
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA, label=RSA_LABEL)
        self.aes_encrypt = _capable(aes, EncryptMixin)
        self.aes_decrypt = _capable(aes, DecryptMixin)
        self.rsa_encrypt = _capable(public, EncryptMixin)
        self.rsa_decrypt = _capable(private, DecryptMixin)
        self.rsa_sign = _capable(private, SignMixin)

    def make_op(self, op: str, data: bytes) -> Op | None:
        enc, dec = self.aes_encrypt, self.aes_decrypt
        match op:
            case "gcm_enc":
                return lambda: enc.encrypt(
                    data,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(urandom(GCM_IV_LEN)),
                )
            case "gcm_dec":
                ct = enc.encrypt(
                    data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(GCM_FIXED_IV)
                )
                return lambda: dec.decrypt(
                    ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(GCM_FIXED_IV)
                )
            case "cbcpad_enc":
                return lambda: enc.encrypt(
                    data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=urandom(CBC_IV_LEN)
                )
            case "cbcpad_dec":
                ct = enc.encrypt(
                    data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=CBC_FIXED_IV
                )
                return lambda: dec.decrypt(
                    ct, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=CBC_FIXED_IV
                )
            case "rsa_sign":
                signer = self.rsa_sign
                return lambda: signer.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)
            case "rsa_oaep_dec":
                rsa_dec = self.rsa_decrypt
                ct = self.rsa_encrypt.encrypt(
                    data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=OAEP_PARAM
                )
                return lambda: rsa_dec.decrypt(
                    ct, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=OAEP_PARAM
                )
        return None


def start(options: Options) -> ThreadedRunner:
    """Sessions (the first one logs in), the session keys, one worker per thread."""
    token = OsLockingLib(options.module).get_token(token_label=options.token)
    first = token.open(rw=True, user_pin=options.pin)
    sessions = [first] + [token.open(rw=True) for _ in range(options.sessions - 1)]
    first.generate_key(KeyType.AES, AES_KEY_BYTES * 8, label=AES_LABEL, store=False)
    first.generate_keypair(KeyType.RSA, RSA_BITS, label=RSA_LABEL, store=False)
    meta = {"package": "python-pkcs11", "version": metadata.version("python-pkcs11")}
    return ThreadedRunner([Worker(session) for session in sessions], meta)
