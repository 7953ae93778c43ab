"""KMIP 2.1 object model: the enumerations for now; the structs and their codecs come next."""

from kms_iface.kmip import enums
from kms_iface.kmip.enums import *  # noqa: F403  (the public names are the enums' own list)

__all__ = [name for name in enums.__all__ if name not in ("from_name", "to_name")]
