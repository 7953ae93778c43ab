"""KMIP 2.1 object model: enumerations, structs, and their two codecs.

MessagePack (``*_msgpack``) is the storage format; Cosmian's JSON (``*_json``) is for interchange;
``wrapping`` turns a key into its form wrapped by a key-encryption key and back.
The public names are those of the submodules' ``__all__`` (less the enum name helpers and the raw
MessagePack encoder/decoder factories, which stay in their modules).
"""

from kms_iface.kmip import attributes, enums, json, msgpack, objects, wrapping
from kms_iface.kmip.attributes import *  # noqa: F403
from kms_iface.kmip.enums import *  # noqa: F403
from kms_iface.kmip.json import *  # noqa: F403
from kms_iface.kmip.msgpack import *  # noqa: F403
from kms_iface.kmip.objects import *  # noqa: F403
from kms_iface.kmip.wrapping import *  # noqa: F403

_NOT_EXPORTED = frozenset({"from_name", "to_name", "encoder", "decoder"})

__all__ = [
    name
    for module in (enums, attributes, objects, msgpack, json, wrapping)
    for name in module.__all__
    if name not in _NOT_EXPORTED
]
