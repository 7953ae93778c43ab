"""The base of every KMIP struct: KMIP's PascalCase field names, optional fields omitted."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = ["Int32", "Int64", "KmipStruct", "UInt32", "kmip_name"]

# Names that plain PascalCase of the Python field name gets wrong (acronyms, digits).
_NAME_FIXES: Final[dict[str, str]] = {
    "crt_coefficient": "CRTCoefficient",
    "iv_counter_nonce": "IVCounterNonce",
    "pgp_key_version": "PGPKeyVersion",
    "mac_signature": "MACSignature",
    "mac_signature_key_information": "MACSignatureKeyInformation",
    "random_iv": "RandomIV",
    "iv_length": "IVLength",
    "p_source": "PSource",
    "x509_certificate_identifier": "X509CertificateIdentifier",
    "x509_certificate_issuer": "X509CertificateIssuer",
    "x509_certificate_subject": "X509CertificateSubject",
    "q_string": "QString",
    "vendor_attributes": "Attribute",
    "block": "KeyBlock",
}


# KMIP integer kinds, as field annotations: both codecs refuse values outside the range.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
"""A KMIP Integer (signed 32-bit): lengths, counts, generations."""
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
"""An unsigned 32-bit integer: bit masks (CryptographicUsageMask)."""
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A KMIP Long Integer (signed 64-bit)."""


def kmip_name(field: str) -> str:
    """The KMIP (and Cosmian JSON) name of a snake_case field name."""
    fixed = _NAME_FIXES.get(field)
    if fixed is not None:
        return fixed
    return "".join(part[:1].upper() + part[1:] for part in field.split("_"))


class KmipStruct(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    forbid_unknown_fields=True,
    repr_omit_defaults=True,
    rename=kmip_name,
):
    """Base of the KMIP structs: keyword construction, absent optionals never written."""
