"""The cases on kms_iface's core: a Module, a SessionPool, one pooled session per thread.

Two implementations: ``kms_iface`` (encrypt/decrypt return new objects) and ``kms_iface-into``
(``encrypt_into``/``decrypt_into`` write into a buffer preallocated per session and case; there
is no ``sign_into``, so that one has no RSA-sign case).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import urandom

from kms_iface import __version__
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
    output_capacity,
)
from kms_iface.pkcs11 import Mechanism, Module, Session, aes_key_template, rsa_key_pair_templates
from kms_iface.pkcs11.constants import (
    CKG_MGF1_SHA1,
    CKM_AES_KEY_GEN,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA_1,
)


@dataclass(frozen=True)
class Keys:
    """Session-key handles, made on one pooled session and valid in all its siblings."""

    aes: int
    rsa_public: int
    rsa_private: int

    @classmethod
    def generate(cls, session: Session) -> Keys:
        aes = session.generate_key(
            CKM_AES_KEY_GEN, aes_key_template(AES_KEY_BYTES * 8, token=False)
        )
        public, private = session.generate_key_pair(
            CKM_RSA_PKCS_KEY_PAIR_GEN, *rsa_key_pair_templates(RSA_BITS, token=False)
        )
        return cls(aes, public, private)


def _oaep() -> Mechanism:
    return Mechanism.rsa_oaep(CKM_SHA_1, CKG_MGF1_SHA1)


class Worker:
    """One thread's session; operations return new objects."""

    def __init__(self, session: Session, keys: Keys) -> None:
        self.session = session
        self.keys = keys

    def ciphertext(self, op: str, data: bytes) -> bytes:
        """The input of a decrypt case, made at setup with the fixed IV."""
        s, keys = self.session, self.keys
        match op:
            case "gcm_dec":
                return s.encrypt(Mechanism.aes_gcm(GCM_FIXED_IV), keys.aes, data)
            case "cbcpad_dec":
                return s.encrypt(Mechanism.aes_cbc(CBC_FIXED_IV, pad=True), keys.aes, data)
            case "rsa_oaep_dec":
                return s.encrypt(_oaep(), keys.rsa_public, data)
        raise BenchError(f"{op} is not a decrypt case")

    def make_op(self, op: str, data: bytes) -> Op | None:
        s, aes, private = self.session, self.keys.aes, self.keys.rsa_private
        match op:
            case "gcm_enc":
                return lambda: s.encrypt(Mechanism.aes_gcm(urandom(GCM_IV_LEN)), aes, data)
            case "gcm_dec":
                ct = self.ciphertext(op, data)
                return lambda: s.decrypt(Mechanism.aes_gcm(GCM_FIXED_IV), aes, ct)
            case "cbcpad_enc":
                return lambda: s.encrypt(
                    Mechanism.aes_cbc(urandom(CBC_IV_LEN), pad=True), aes, data
                )
            case "cbcpad_dec":
                ct = self.ciphertext(op, data)
                return lambda: s.decrypt(Mechanism.aes_cbc(CBC_FIXED_IV, pad=True), aes, ct)
            case "rsa_sign":
                sign = Mechanism(CKM_SHA256_RSA_PKCS)
                return lambda: s.sign(sign, private, data)
            case "rsa_oaep_dec":
                ct, oaep = self.ciphertext(op, data), _oaep()
                return lambda: s.decrypt(oaep, private, ct)
        return None


class IntoWorker(Worker):
    """One thread's session; operations write into a buffer preallocated for the case."""

    def make_op(self, op: str, data: bytes) -> Op | None:
        s, aes, private = self.session, self.keys.aes, self.keys.rsa_private
        out = bytearray(output_capacity(len(data)))
        match op:
            case "gcm_enc":
                return lambda: s.encrypt_into(
                    Mechanism.aes_gcm(urandom(GCM_IV_LEN)), aes, data, out
                )
            case "gcm_dec":
                ct = self.ciphertext(op, data)
                return lambda: s.decrypt_into(Mechanism.aes_gcm(GCM_FIXED_IV), aes, ct, out)
            case "cbcpad_enc":
                return lambda: s.encrypt_into(
                    Mechanism.aes_cbc(urandom(CBC_IV_LEN), pad=True), aes, data, out
                )
            case "cbcpad_dec":
                ct = self.ciphertext(op, data)
                return lambda: s.decrypt_into(
                    Mechanism.aes_cbc(CBC_FIXED_IV, pad=True), aes, ct, out
                )
            case "rsa_oaep_dec":
                ct, oaep = self.ciphertext(op, data), _oaep()
                return lambda: s.decrypt_into(oaep, private, ct, out)
        return None


def start(options: Options) -> ThreadedRunner:
    """One pooled session per thread on the labelled token (the pool logs in once)."""
    module = Module(options.module)
    info = module.info()
    pool = module.pool(module.find_slot(options.token), options.pin, size=options.sessions)
    sessions = [pool.acquire() for _ in range(options.sessions)]
    keys = Keys.generate(sessions[0])
    kind = IntoWorker if options.impl == "kms_iface-into" else Worker
    meta = {
        "package": "kms_iface",
        "version": __version__,
        "module_manufacturer": info.manufacturer_id.strip(),
        "module_description": info.description.strip(),
        "module_version": f"{info.library_version.major}.{info.library_version.minor}",
        "cryptoki": f"{info.cryptoki_version.major}.{info.cryptoki_version.minor}",
    }
    return ThreadedRunner([kind(session, keys) for session in sessions], meta)
