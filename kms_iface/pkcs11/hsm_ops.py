"""The HSM interface's cryptographic operations as plain functions on a core ``Session``.

Each function takes a logged-in session and key handles; there is no policy, no key lookup and
no thread hopping here (the ``Pkcs11Hsm`` layer does those). The byte layouts are those of
Cosmian's HSM interface, so ciphertexts move freely between the two:

    AES_GCM          CKM_AES_GCM, 12-byte IV from os.urandom, 128-bit tag, optional AAD
                     encrypt -> EncryptedContent(ciphertext=ct, iv=<12 bytes>, tag=<16 bytes>)
                                with len(ct) == len(plaintext)
                     decrypt <- iv(12) ‖ ct ‖ tag(16)
    AES_CBC          CKM_AES_CBC (not CKM_AES_CBC_PAD), random 16-byte IV, PKCS#7 padding
                     done in software (a block-aligned plaintext gains a whole block)
                     encrypt -> EncryptedContent(ciphertext=ct, iv=<16 bytes>, tag=None)
                                with len(ct) == (len(plaintext) // 16 + 1) * 16
                     decrypt <- iv(16) ‖ ct
    RSA_PKCS_V15     CKM_RSA_PKCS
                     encrypt -> EncryptedContent(ciphertext=<raw, modulus length>)
                     decrypt <- raw ciphertext
    RSA_OAEP_SHA256  CKM_RSA_PKCS_OAEP, hash SHA-256, MGF1-SHA256, empty label
                     encrypt -> EncryptedContent(ciphertext=<raw>); decrypt <- raw ciphertext
    RSA_OAEP_SHA1    CKM_RSA_PKCS_OAEP, hash SHA-1, MGF1-SHA1, empty label
                     encrypt -> EncryptedContent(ciphertext=<raw>); decrypt <- raw ciphertext

The wrapped form that oracles and key wrapping use is ``iv ‖ ciphertext ‖ tag`` (GCM),
``iv ‖ ciphertext`` (CBC) or the raw RSA ciphertext: exactly what ``decrypt`` takes.

Input checks, all made before any C call and raising ``InvalidRequestError``: an AES-GCM input
shorter than 12 + 16 bytes (``Invalid AES GCM ciphertext``); an AES-CBC input whose body after
the IV is empty or not a multiple of 16 bytes; an RSA plaintext longer than the key allows
(``rsa_max_input``: ``k - 11`` for PKCS#1 v1.5, ``k - 2*hLen - 2`` for OAEP, with ``k`` the
modulus length in bytes, read from the key's ``CKA_MODULUS_BITS``); ``aad`` with anything but
AES-GCM. Encrypting 0 bytes is valid (GCM: empty ciphertext and a tag; CBC: one block of padding).

Authentication failures: a bad GCM tag, wrong IV or AAD, bad CBC padding, and every ``C_Decrypt``
failure that the core classes as a decryption failure raise the same ``DecryptionError`` with the
same message, whatever check failed. The PKCS#7 padding is checked in constant time (all 16 bytes
of the last block, with masks, no early exit) and the intermediate plaintext is wiped.

Vendor CBC size limit (``cbc_limit``, e.g. 1024 bytes for SmartCard-HSM): AES-CBC then runs in
several ``C_Encrypt``/``C_Decrypt`` rounds of at most ``cbc_limit`` bytes each, every round using
the last ciphertext block of the previous one as its IV, which is bit-identical to one pass. A
limit that is not a multiple of 16 is rounded *down* to one (1000 -> 992), so no round ever
exceeds the vendor's limit; a limit below 16 is an ``InvalidRequestError``. ``cbc_limit`` only
affects AES-CBC; other algorithms ignore it.

Signatures: ``RSA_PKCS_V15`` is ``CKM_RSA_PKCS`` over data the caller hashed (and DigestInfo
encoded); ``SHA*_WITH_RSA`` are ``CKM_SHA*_RSA_PKCS``; ``SHA*_WITH_RSA_PSS`` are
``CKM_SHA*_RSA_PKCS_PSS`` with MGF1 of the same hash and a salt as long as the hash.

MACs: ``HMACSHA1`` / ``HMACSHA224`` / ``HMACSHA256`` / ``HMACSHA384`` / ``HMACSHA512`` (KMIP's
``CryptographicAlgorithm``) are ``CKM_SHA_1_HMAC`` / ``CKM_SHA224_HMAC`` / ``CKM_SHA256_HMAC`` /
``CKM_SHA384_HMAC`` / ``CKM_SHA512_HMAC`` through ``C_Sign`` / ``C_Verify``, full-length MACs;
other algorithms raise ``NotSupportedError``.

Decrypted plaintexts come back as ``SecretBytes``; no message ever quotes data, only lengths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from kms_iface._pkcs11 import Mechanism, SecretBytes, Session
from kms_iface.errors import (
    ArgumentsBadError,
    DecryptionError,
    HsmError,
    InvalidRequestError,
    MechanismInvalidError,
    MechanismParamInvalidError,
    NotSupportedError,
)
from kms_iface.hsm import CryptoAlgorithm, EncryptedContent, SigningAlgorithm
from kms_iface.kmip.enums import CryptographicAlgorithm
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.templates import rsa_key_pair_templates

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "AES_BLOCK",
    "GCM_IV_LENGTH",
    "GCM_TAG_LENGTH",
    "algorithms_from_mechanisms",
    "decrypt",
    "encrypt",
    "gcm_decrypt_many",
    "gcm_encrypt_many",
    "hmac_mechanism",
    "mac",
    "mac_verify",
    "probe_oaep_hashes",
    "rsa_max_input",
    "sign",
    "verify",
]

AES_BLOCK: Final = 16
"""AES block size, also the AES-CBC IV length."""
GCM_IV_LENGTH: Final = 12
"""The AES-GCM IV length of the HSM interface."""
GCM_TAG_LENGTH: Final = 16
"""The AES-GCM tag length of the HSM interface (128 bits)."""

_RSA_ALGORITHMS: Final = frozenset(
    {CryptoAlgorithm.RSA_PKCS_V15, CryptoAlgorithm.RSA_OAEP_SHA1, CryptoAlgorithm.RSA_OAEP_SHA256}
)
# OAEP: (hash mechanism, MGF1 variant, hash length).
_OAEP: Final[dict[CryptoAlgorithm, tuple[int, int, int]]] = {
    CryptoAlgorithm.RSA_OAEP_SHA1: (ck.CKM_SHA_1, ck.CKG_MGF1_SHA1, 20),
    CryptoAlgorithm.RSA_OAEP_SHA256: (ck.CKM_SHA256, ck.CKG_MGF1_SHA256, 32),
}
_PKCS1_SIGN: Final[dict[SigningAlgorithm, int]] = {
    SigningAlgorithm.RSA_PKCS_V15: ck.CKM_RSA_PKCS,
    SigningAlgorithm.SHA1_WITH_RSA: ck.CKM_SHA1_RSA_PKCS,
    SigningAlgorithm.SHA256_WITH_RSA: ck.CKM_SHA256_RSA_PKCS,
    SigningAlgorithm.SHA384_WITH_RSA: ck.CKM_SHA384_RSA_PKCS,
    SigningAlgorithm.SHA512_WITH_RSA: ck.CKM_SHA512_RSA_PKCS,
}
# PSS: (signature mechanism, hash mechanism, MGF1 variant, salt length = hash length).
_PSS_SIGN: Final[dict[SigningAlgorithm, tuple[int, int, int, int]]] = {
    SigningAlgorithm.SHA256_WITH_RSA_PSS: (
        ck.CKM_SHA256_RSA_PKCS_PSS,
        ck.CKM_SHA256,
        ck.CKG_MGF1_SHA256,
        32,
    ),
    SigningAlgorithm.SHA384_WITH_RSA_PSS: (
        ck.CKM_SHA384_RSA_PKCS_PSS,
        ck.CKM_SHA384,
        ck.CKG_MGF1_SHA384,
        48,
    ),
    SigningAlgorithm.SHA512_WITH_RSA_PSS: (
        ck.CKM_SHA512_RSA_PKCS_PSS,
        ck.CKM_SHA512,
        ck.CKG_MGF1_SHA512,
        64,
    ),
}
_HMAC: Final[dict[CryptographicAlgorithm, int]] = {
    CryptographicAlgorithm.HMACSHA1: ck.CKM_SHA_1_HMAC,
    CryptographicAlgorithm.HMACSHA224: ck.CKM_SHA224_HMAC,
    CryptographicAlgorithm.HMACSHA256: ck.CKM_SHA256_HMAC,
    CryptographicAlgorithm.HMACSHA384: ck.CKM_SHA384_HMAC,
    CryptographicAlgorithm.HMACSHA512: ck.CKM_SHA512_HMAC,
}
# The codes with which a token refuses an OAEP hash (SoftHSM2 2.6: ARGUMENTS_BAD for SHA-256).
_OAEP_REFUSED: Final = (ArgumentsBadError, MechanismParamInvalidError, MechanismInvalidError)
_OAEP_PROBE_PLAINTEXT: Final = b"kms_iface OAEP probe"


# -- helpers ------------------------------------------------------------------------------------


def _byte_view(data: Buffer) -> memoryview:
    """A flat, one-byte-per-item view of ``data`` (no copy)."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _round_size(cbc_limit: int | None) -> int | None:
    """The bytes per CBC round: ``cbc_limit`` rounded down to whole blocks (None: one pass)."""
    if cbc_limit is None:
        return None
    if cbc_limit < AES_BLOCK:
        raise InvalidRequestError(
            f"the AES-CBC size limit must be at least {AES_BLOCK} bytes, got {cbc_limit}"
        )
    return cbc_limit - cbc_limit % AES_BLOCK


def _no_aad(algorithm: CryptoAlgorithm, aad: Buffer | None) -> None:
    if aad is not None:
        raise InvalidRequestError(
            f"additional authenticated data is only supported with AES_GCM, not {algorithm.name}"
        )


def _rsa_mechanism(algorithm: CryptoAlgorithm) -> Mechanism:
    if algorithm is CryptoAlgorithm.RSA_PKCS_V15:
        return Mechanism(ck.CKM_RSA_PKCS)
    hash_alg, mgf, _ = _OAEP[algorithm]
    return Mechanism.rsa_oaep(hash_alg, mgf)


def _modulus_bits(session: Session, key: int) -> int:
    """The key's modulus size from CKA_MODULUS_BITS (CKA_MODULUS for tokens that lack it)."""
    (bits,) = session.get_attributes(key, [ck.CKA_MODULUS_BITS])
    if isinstance(bits, int) and bits > 0:
        return bits
    (modulus,) = session.get_attributes(key, [ck.CKA_MODULUS])
    if isinstance(modulus, bytes) and modulus:
        return int.from_bytes(modulus, "big").bit_length()
    raise InvalidRequestError("the key has no RSA modulus: it is not an RSA key")


def _pkcs7_check(last_block: memoryview) -> tuple[int, int]:
    """``(bad, pad)`` for the last decrypted block, in constant time.

    Every one of the 16 bytes is examined whatever the padding says; ``bad`` is 1 when the
    padding is not valid PKCS#7 (pad byte 0 or above 16, or a padding byte that differs), else 0.
    Only integer arithmetic and masks: no branch depends on the plaintext.
    """
    pad = last_block[AES_BLOCK - 1]
    # pad == 0 -> (pad - 1) < 0; pad > 16 -> (16 - pad) < 0. ``x >> 8`` of -255..255 is -1 or 0.
    bad = ((pad - 1) >> 8) & 1
    bad |= ((AES_BLOCK - pad) >> 8) & 1
    for i in range(AES_BLOCK):
        in_padding = ((i - pad) >> 8) & 1  # 1 when i < pad
        differs = (((last_block[AES_BLOCK - 1 - i] ^ pad) + 0xFF) >> 8) & 1  # 1 when byte != pad
        bad |= in_padding & differs
    return bad, pad


# -- AES-GCM ------------------------------------------------------------------------------------


def _gcm_encrypt(
    session: Session, key: int, view: memoryview, aad: Buffer | None
) -> EncryptedContent:
    iv = os.urandom(GCM_IV_LENGTH)
    out = session.encrypt(Mechanism.aes_gcm(iv, aad, GCM_TAG_LENGTH * 8), key, view)
    return _gcm_content(out, view.nbytes, iv)


def _gcm_content(out: bytes, n: int, iv: bytes) -> EncryptedContent:
    # The core returns ct ‖ tag in one bytes object of the exact size; the split copies ct once.
    return EncryptedContent(ciphertext=out[:n], iv=iv, tag=out[n:])


def _gcm_decrypt(session: Session, key: int, view: memoryview, aad: Buffer | None) -> SecretBytes:
    return session.decrypt(_gcm_decrypt_mechanism(view, aad), key, view[GCM_IV_LENGTH:])


def _gcm_decrypt_mechanism(view: memoryview, aad: Buffer | None) -> Mechanism:
    if view.nbytes < GCM_IV_LENGTH + GCM_TAG_LENGTH:
        raise InvalidRequestError("Invalid AES GCM ciphertext")
    return Mechanism.aes_gcm(view[:GCM_IV_LENGTH], aad, GCM_TAG_LENGTH * 8)


def gcm_encrypt_many(
    session: Session, keys: list[int], data: list[Buffer], aads: list[Buffer | None]
) -> list[EncryptedContent | None]:
    """AES-GCM ``encrypt`` of each input with its key, in one GIL-free pass of the core.

    An item is None when it was not done (it failed, or came after a failure): run it alone
    with ``encrypt`` for its outcome.
    """
    views = [_byte_view(item) for item in data]
    ivs = os.urandom(GCM_IV_LENGTH * len(views))
    nonces = [ivs[i : i + GCM_IV_LENGTH] for i in range(0, len(ivs), GCM_IV_LENGTH)]
    mechanisms = [
        Mechanism.aes_gcm(iv, aad, GCM_TAG_LENGTH * 8) for iv, aad in zip(nonces, aads, strict=True)
    ]
    outs = session.crypt_many(False, mechanisms, keys, views)  # type: ignore[arg-type]
    return [
        _gcm_content(out, view.nbytes, iv) if type(out) is bytes else None
        for out, view, iv in zip(outs, views, nonces, strict=True)
    ]


def gcm_decrypt_many(
    session: Session, keys: list[int], data: list[Buffer], aads: list[Buffer | None]
) -> list[SecretBytes | None]:
    """AES-GCM ``decrypt`` of each ``iv‖ct‖tag`` with its key, in one GIL-free pass.

    An item is None when it was not done (malformed, failed, or after a failure): run it alone
    with ``decrypt`` for its outcome (the error it raises).
    """
    results: list[SecretBytes | None] = [None] * len(data)
    positions: list[int] = []
    mechanisms: list[Mechanism] = []
    bodies: list[memoryview] = []
    handles: list[int] = []
    for position, (item, aad, key) in enumerate(zip(data, aads, keys, strict=True)):
        view = _byte_view(item)
        if view.nbytes < GCM_IV_LENGTH + GCM_TAG_LENGTH:
            continue
        positions.append(position)
        mechanisms.append(_gcm_decrypt_mechanism(view, aad))
        bodies.append(view[GCM_IV_LENGTH:])
        handles.append(key)
    outs = session.crypt_many(True, mechanisms, handles, bodies)  # type: ignore[arg-type]
    for position, out in zip(positions, outs, strict=True):
        if type(out) is SecretBytes:
            results[position] = out
    return results


# -- AES-CBC ------------------------------------------------------------------------------------


def _cbc_encrypt(
    session: Session, key: int, view: memoryview, round_size: int | None
) -> EncryptedContent:
    iv = os.urandom(AES_BLOCK)
    n = view.nbytes
    pad = AES_BLOCK - n % AES_BLOCK
    # The padded plaintext is a wipeable copy (one C call beats a split at the last block).
    with SecretBytes(n + pad) as padded, memoryview(padded) as body:
        body[:n] = view
        body[n:] = bytes((pad,)) * pad
        if round_size is None or n + pad <= round_size:
            ciphertext = session.encrypt(Mechanism.aes_cbc(iv), key, body)
        else:
            parts: list[bytes] = []
            chain = iv
            for start in range(0, n + pad, round_size):
                part = session.encrypt(
                    Mechanism.aes_cbc(chain), key, body[start : start + round_size]
                )
                parts.append(part)
                chain = part[-AES_BLOCK:]
            ciphertext = b"".join(parts)
    return EncryptedContent(ciphertext=ciphertext, iv=iv, tag=None)


def _cbc_decrypt(
    session: Session, key: int, view: memoryview, round_size: int | None
) -> SecretBytes:
    size = view.nbytes - AES_BLOCK
    if size <= 0 or size % AES_BLOCK:
        raise InvalidRequestError(
            "Invalid AES CBC ciphertext: a 16-byte IV followed by a non-empty multiple of "
            f"16 bytes is needed, got {view.nbytes} bytes"
        )
    body = view[AES_BLOCK:]
    if round_size is None or size <= round_size:
        padded = session.decrypt(Mechanism.aes_cbc(view[:AES_BLOCK]), key, body)
    else:
        padded = SecretBytes(size)
        try:
            with memoryview(padded) as out:
                for start in range(0, size, round_size):
                    # A round's IV: the ciphertext block just before it (the IV itself first).
                    chain = view[start : start + AES_BLOCK]
                    session.decrypt_into(
                        Mechanism.aes_cbc(chain),
                        key,
                        body[start : start + round_size],
                        out[start : start + round_size],
                    )
        except BaseException:
            padded.zeroize()
            raise
    with padded, memoryview(padded) as plain:
        bad, pad = _pkcs7_check(plain[size - AES_BLOCK :])
        if bad:
            raise DecryptionError(function="C_Decrypt")
        return SecretBytes(plain[: size - pad])


# -- public API ---------------------------------------------------------------------------------


def encrypt(
    session: Session,
    key: int,
    algorithm: CryptoAlgorithm,
    data: Buffer,
    *,
    aad: Buffer | None = None,
    cbc_limit: int | None = None,
) -> EncryptedContent:
    """Encrypt ``data`` with ``key`` (an AES key, or an RSA public key) by ``algorithm``.

    Returns the layout of the module docstring; ``aad`` only with AES_GCM; ``cbc_limit`` splits
    AES-CBC into rounds of at most that many bytes (rounded down to whole blocks).
    """
    view = _byte_view(data)
    if algorithm is CryptoAlgorithm.AES_GCM:
        return _gcm_encrypt(session, key, view, aad)
    _no_aad(algorithm, aad)
    if algorithm is CryptoAlgorithm.AES_CBC:
        return _cbc_encrypt(session, key, view, _round_size(cbc_limit))
    if algorithm in _RSA_ALGORITHMS:
        bits = _modulus_bits(session, key)
        limit = rsa_max_input(algorithm, bits)
        if view.nbytes > limit:
            raise InvalidRequestError(
                f"{algorithm.name} with a {bits}-bit RSA key encrypts at most {limit} bytes, "
                f"got {view.nbytes}; use an AES key for longer data"
            )
        return EncryptedContent(ciphertext=session.encrypt(_rsa_mechanism(algorithm), key, view))
    raise InvalidRequestError(f"unsupported encryption algorithm: {algorithm!r}")


def decrypt(
    session: Session,
    key: int,
    algorithm: CryptoAlgorithm,
    data: Buffer,
    *,
    aad: Buffer | None = None,
    cbc_limit: int | None = None,
) -> SecretBytes:
    """Decrypt ``data`` (the layout ``decrypt`` takes in the module docstring) with ``key``.

    Every authentication or padding failure raises the one ``DecryptionError``.
    """
    view = _byte_view(data)
    if algorithm is CryptoAlgorithm.AES_GCM:
        return _gcm_decrypt(session, key, view, aad)
    _no_aad(algorithm, aad)
    if algorithm is CryptoAlgorithm.AES_CBC:
        return _cbc_decrypt(session, key, view, _round_size(cbc_limit))
    if algorithm in _RSA_ALGORITHMS:
        if view.nbytes == 0:
            raise InvalidRequestError(f"Invalid {algorithm.name} ciphertext: it is empty")
        return session.decrypt(_rsa_mechanism(algorithm), key, view)
    raise InvalidRequestError(f"unsupported encryption algorithm: {algorithm!r}")


def _signing_mechanism(algorithm: SigningAlgorithm) -> Mechanism:
    mechanism = _PKCS1_SIGN.get(algorithm)
    if mechanism is not None:
        return Mechanism(mechanism)
    pss = _PSS_SIGN.get(algorithm)
    if pss is None:
        raise InvalidRequestError(f"unsupported signature algorithm: {algorithm!r}")
    sign_mechanism, hash_alg, mgf, salt = pss
    return Mechanism.rsa_pss(hash_alg, mgf, salt, sign_mechanism)


def sign(session: Session, key: int, algorithm: SigningAlgorithm, data: Buffer) -> bytes:
    """Sign ``data`` with the RSA private ``key`` (``RSA_PKCS_V15``: data is the caller's
    DigestInfo-encoded hash; the others hash ``data`` on the token)."""
    return session.sign(_signing_mechanism(algorithm), key, _byte_view(data))


def verify(
    session: Session, key: int, algorithm: SigningAlgorithm, data: Buffer, signature: Buffer
) -> bool:
    """True if ``signature`` is valid for ``data`` under the RSA public ``key``; False for an
    invalid signature (CKR_SIGNATURE_INVALID or CKR_SIGNATURE_LEN_RANGE); other errors raise."""
    return session.verify(
        _signing_mechanism(algorithm), key, _byte_view(data), _byte_view(signature)
    )


def hmac_mechanism(algorithm: CryptographicAlgorithm) -> int:
    """The CKM_*_HMAC mechanism of a KMIP HMAC algorithm; others raise ``NotSupportedError``."""
    mechanism = _HMAC.get(algorithm)
    if mechanism is None:
        name = algorithm.name if isinstance(algorithm, CryptographicAlgorithm) else repr(algorithm)
        raise NotSupportedError(f"MAC algorithm {name} is not supported")
    return mechanism


def mac(session: Session, key: int, algorithm: CryptographicAlgorithm, data: Buffer) -> bytes:
    """The HMAC of ``data`` under the secret ``key`` (``C_Sign``; the full-length MAC)."""
    return session.sign(hmac_mechanism(algorithm), key, _byte_view(data))


def mac_verify(
    session: Session, key: int, algorithm: CryptographicAlgorithm, data: Buffer, mac: Buffer
) -> bool:
    """True if ``mac`` is the HMAC of ``data`` under ``key`` (``C_Verify``); False for a wrong
    or wrong-length MAC (CKR_SIGNATURE_INVALID or CKR_SIGNATURE_LEN_RANGE); other errors raise."""
    return session.verify(hmac_mechanism(algorithm), key, _byte_view(data), _byte_view(mac))


def rsa_max_input(algorithm: CryptoAlgorithm, modulus_bits: int) -> int:
    """The longest plaintext an RSA key of ``modulus_bits`` encrypts with ``algorithm``:
    ``k - 11`` for PKCS#1 v1.5 and ``k - 2*hLen - 2`` for OAEP (``k`` = modulus bytes); 0 when
    the key is too small for the scheme at all."""
    k = (modulus_bits + 7) // 8
    if algorithm is CryptoAlgorithm.RSA_PKCS_V15:
        return max(k - 11, 0)
    oaep = _OAEP.get(algorithm)
    if oaep is None:
        raise InvalidRequestError(f"{algorithm.name} is not an RSA encryption algorithm")
    return max(k - 2 * oaep[2] - 2, 0)


def algorithms_from_mechanisms(mechanisms: Iterable[int]) -> set[CryptoAlgorithm]:
    """The encryption algorithms a slot's mechanism list allows, before the OAEP probe.

    ``CKM_RSA_PKCS_OAEP`` yields both OAEP candidates; ``probe_oaep_hashes`` narrows them.
    """
    available = set(mechanisms)
    found: set[CryptoAlgorithm] = set()
    if ck.CKM_AES_GCM in available:
        found.add(CryptoAlgorithm.AES_GCM)
    if ck.CKM_AES_CBC in available:
        found.add(CryptoAlgorithm.AES_CBC)
    if ck.CKM_RSA_PKCS in available:
        found.add(CryptoAlgorithm.RSA_PKCS_V15)
    if ck.CKM_RSA_PKCS_OAEP in available:
        found.update(_OAEP)
    return found


def probe_oaep_hashes(session: Session) -> set[CryptoAlgorithm]:
    """Which of RSA_OAEP_SHA1 and RSA_OAEP_SHA256 the token really accepts.

    A temporary session RSA-2048 key pair (CKA_TOKEN false, destroyed afterwards) encrypts and
    decrypts a short message with each hash; ``CKR_MECHANISM_PARAM_INVALID``,
    ``CKR_ARGUMENTS_BAD`` or ``CKR_MECHANISM_INVALID`` from either side, a ``DecryptionError`` or
    a round trip that does not give the message back mean "not supported". Other failures raise.
    A real key is needed: SoftHSM2 checks the key before the OAEP parameters.
    """
    public_template, private_template = rsa_key_pair_templates(2048, token=False)
    public, private = session.generate_key_pair(
        ck.CKM_RSA_PKCS_KEY_PAIR_GEN, public_template, private_template
    )
    supported: set[CryptoAlgorithm] = set()
    try:
        for algorithm in _OAEP:
            mechanism = _rsa_mechanism(algorithm)
            try:
                ciphertext = session.encrypt(mechanism, public, _OAEP_PROBE_PLAINTEXT)
                with session.decrypt(mechanism, private, ciphertext) as plain:
                    if plain == _OAEP_PROBE_PLAINTEXT:
                        supported.add(algorithm)
            except (*_OAEP_REFUSED, DecryptionError):
                continue
    finally:
        _destroy_all(session, (private, public))
    return supported


def _destroy_all(session: Session, handles: Iterable[int]) -> None:
    """Destroy every handle, raising the first failure after trying them all."""
    failure: HsmError | None = None
    for handle in handles:
        try:
            session.destroy_object(handle)
        except HsmError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
