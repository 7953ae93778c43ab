"""Key templates (generation and import) and key lookup.

``session.generate_key(CKM_AES_KEY_GEN, aes_key_template(256))`` makes a key;
``session.create_object(aes_key_template(256, value=key_bytes))`` imports one.

Defaults are the safe ones (sensitive, not extractable, private token objects); every attribute
can be overridden through ``extra``, whose entries replace defaults of the same type. Cosmian's
own templates are built on these by the HSM layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from kms_iface._pkcs11 import Session
from kms_iface.errors import InvalidRequestError
from kms_iface.pkcs11 import constants as ck

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from kms_iface._pkcs11 import TemplateValue

    Template = list[tuple[int, TemplateValue]]

__all__ = [
    "AES_KEY_BITS",
    "RSA_KEY_BITS",
    "RSA_PUBLIC_EXPONENT",
    "aes_key_template",
    "find_keys",
    "merge",
    "rsa_key_pair_templates",
]

AES_KEY_BITS: Final = (128, 192, 256)
RSA_KEY_BITS: Final = (1024, 2048, 3072, 4096)
RSA_PUBLIC_EXPONENT: Final = b"\x01\x00\x01"


def merge(
    defaults: Iterable[tuple[int, TemplateValue]], extra: Iterable[tuple[int, TemplateValue]]
) -> Template:
    """``defaults`` with every attribute type present in ``extra`` replaced by ``extra``'s."""
    merged = dict(defaults)
    merged.update(extra)
    return list(merged.items())


def _naming(label: str | None, key_id: str | bytes | None) -> Template:
    naming: Template = []
    if label is not None:
        naming.append((ck.CKA_LABEL, label))
    if key_id is not None:
        naming.append((ck.CKA_ID, key_id))
    return naming


def aes_key_template(
    bits: int,
    *,
    token: bool = True,
    label: str | None = None,
    key_id: str | bytes | None = None,
    sensitive: bool = True,
    extractable: bool = False,
    value: Buffer | None = None,
    extra: Sequence[tuple[int, TemplateValue]] = (),
) -> Template:
    """A template for a 128, 192 or 256-bit AES key: CKM_AES_KEY_GEN, or with ``value`` a
    C_CreateObject import (the core wipes its packed copy of the value after the call)."""
    if bits not in AES_KEY_BITS:
        raise InvalidRequestError(f"AES key length must be 128, 192 or 256 bits, got {bits}")
    if value is not None and len(memoryview(value)) * 8 != bits:
        raise InvalidRequestError(
            f"AES key value is {len(memoryview(value))} bytes, a {bits}-bit key needs {bits // 8}"
        )
    size: tuple[int, TemplateValue] = (
        (ck.CKA_VALUE_LEN, bits // 8) if value is None else (ck.CKA_VALUE, value)
    )
    defaults: Template = [
        (ck.CKA_CLASS, ck.CKO_SECRET_KEY),
        (ck.CKA_KEY_TYPE, ck.CKK_AES),
        size,
        (ck.CKA_TOKEN, token),
        (ck.CKA_PRIVATE, True),
        (ck.CKA_ENCRYPT, True),
        (ck.CKA_DECRYPT, True),
        (ck.CKA_WRAP, True),
        (ck.CKA_UNWRAP, True),
        (ck.CKA_SENSITIVE, sensitive),
        (ck.CKA_EXTRACTABLE, extractable),
        *_naming(label, key_id),
    ]
    return merge(defaults, extra)


def rsa_key_pair_templates(
    bits: int,
    *,
    token: bool = True,
    label: str | None = None,
    key_id: str | bytes | None = None,
    public_label: str | None = None,
    public_key_id: str | bytes | None = None,
    sensitive: bool = True,
    extractable: bool = False,
    extra_public: Sequence[tuple[int, TemplateValue]] = (),
    extra_private: Sequence[tuple[int, TemplateValue]] = (),
) -> tuple[Template, Template]:
    """Public and private CKM_RSA_PKCS_KEY_PAIR_GEN templates (e = 65537)."""
    if bits not in RSA_KEY_BITS:
        raise InvalidRequestError(
            f"RSA key length must be 1024, 2048, 3072 or 4096 bits, got {bits}"
        )
    public: Template = [
        (ck.CKA_CLASS, ck.CKO_PUBLIC_KEY),
        (ck.CKA_KEY_TYPE, ck.CKK_RSA),
        (ck.CKA_TOKEN, token),
        (ck.CKA_MODULUS_BITS, bits),
        (ck.CKA_PUBLIC_EXPONENT, RSA_PUBLIC_EXPONENT),
        (ck.CKA_ENCRYPT, True),
        (ck.CKA_VERIFY, True),
        (ck.CKA_WRAP, True),
        *_naming(public_label, public_key_id),
    ]
    private: Template = [
        (ck.CKA_CLASS, ck.CKO_PRIVATE_KEY),
        (ck.CKA_KEY_TYPE, ck.CKK_RSA),
        (ck.CKA_TOKEN, token),
        (ck.CKA_PRIVATE, True),
        (ck.CKA_DECRYPT, True),
        (ck.CKA_SIGN, True),
        (ck.CKA_UNWRAP, True),
        (ck.CKA_SENSITIVE, sensitive),
        (ck.CKA_EXTRACTABLE, extractable),
        *_naming(label, key_id),
    ]
    return merge(public, extra_public), merge(private, extra_private)


def find_keys(
    session: Session,
    *,
    label: str | None = None,
    key_id: str | bytes | None = None,
    object_class: int | None = None,
    key_type: int | None = None,
    batch: int = 32,
) -> list[int]:
    """Handles of the objects matching every given criterion (none: every visible object)."""
    template: Template = _naming(label, key_id)
    if object_class is not None:
        template.append((ck.CKA_CLASS, object_class))
    if key_type is not None:
        template.append((ck.CKA_KEY_TYPE, key_type))
    return session.find_objects(template, batch)
