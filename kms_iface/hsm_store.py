"""``HsmStore``: an ``HSM`` seen as an ``ObjectsStore`` and a ``CryptoOracle`` (Cosmian's HsmStore).

Uids are ``<prefix>::<slot>::<key_id>`` (``parse_hsm_uid``: a malformed uid raises
``InvalidRequestError`` with Cosmian's two texts). The oracle half is inherited from
``HsmEncryptionOracle``; the store half follows ``hsm-behaviour.md``:

- ``create`` makes an AES key (admins only: an exact name or ``"*"`` in ``hsm_admins``); RSA key
  pairs come only through ``atomic``; tags are ignored. Algorithm and length are read from the
  ``attributes`` argument, never from the object, whose key material is not used.
- ``retrieve`` builds the KMIP object from the exported key (AES: SymmetricKey, usage mask 2108,
  tag ``_kk``; RSA private: PrivateKey, Decrypt | UnwrapKey | Sign, ``_sk``; RSA public:
  PublicKey, Encrypt | WrapKey | Verify, ``_pk``; Transparent* key formats), owned by the first
  admin that is not ``"*"`` (else ``"admin"``), state Active. A sensitive key gives a stub with
  empty key material and ``Sensitive=True``. The attributes also carry the rotation name and
  generation that the key's label holds (``parse_label_metadata``).
- ``update_object`` is accepted and changes nothing; ``update_state`` is refused.

Decisions where the specification is silent:

- The configured slots are ``HSM.get_available_slot_list()`` (for ``Pkcs11Hsm``: the slots of
  its ``passwords`` mapping), never every slot of the device.
- Every method that takes a uid checks its form first (``update_state`` refuses every call), so a
  malformed uid never passes silently.
- ``delete`` of a key that does not exist is not an error (the ObjectsStore contract).
- ``atomic`` creates a key pair only for ``[Create RSA PrivateKey]`` or ``[Create RSA
  PrivateKey, Create PublicKey]``, the public uid being None or ``<private uid>_pk`` (the uid it
  gets); any other operation in the batch would be dropped silently, so it is refused.
- ``find`` also returns ``[]`` for a Comment, ContactInformation or ObjectGroupMember filter
  (Cosmian does too), honours KeyFormatType (the Transparent* formats ``retrieve`` returns), and
  returns for each key the attributes ``retrieve`` gives it. Empty Name or Link lists filter
  nothing, as in the default store. The model has no Digest attribute, so there is none to refuse.
- Ids that are not UTF-8 make no uid: ``find`` and ``find_by_rotate_name`` skip them.
- HSM failures propagate (Cosmian skips a failing slot): a partial answer would look complete.
  So does the HSM's error for an id naming two keys its lookup cannot tell apart: fix the token.
- ``find_wrapped_by`` and ``find_due_for_rotation`` return ``[]``: HSM keys are never stored
  wrapped and no rotation schedule can be stored on a token. ``find_by_rotate_name`` reads the
  lineage from the labels; both ``count_*`` methods count the keys ``HSM.find`` lists.
- The store owns its HSM: ``close`` closes it (``HSM.aclose``, idempotent), as a router that
  closes its stores expects; the store cannot be opened again. ``open`` does nothing (the HSM
  logs in lazily).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

import msgspec

from kms_iface.errors import InvalidRequestError, UnauthorizedError
from kms_iface.hsm import (
    HSM,
    AesKeyMaterial,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    HsmObjectFilter,
    KeyMetadata,
    KeyType,
    RsaPrivateKeyMaterial,
)
from kms_iface.hsm import KeyMaterial as HsmKeyMaterial
from kms_iface.hsm_oracle import HsmEncryptionOracle, hsm_uid
from kms_iface.kmip.attributes import Attributes, validate_tags
from kms_iface.kmip.enums import (
    CryptographicAlgorithm,
    CryptographicUsageMask,
    KeyFormatType,
    ObjectType,
    State,
)
from kms_iface.kmip.objects import (
    SYMMETRIC_KEY_DEFAULT_USAGE_MASK,
    KeyBlock,
    KeyMaterial,
    Object,
    PlainKeyValue,
    PrivateKey,
    PublicKey,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentRSAPublicKey,
    TransparentSymmetricKey,
)
from kms_iface.secrets import SecretBytes
from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    FoundObject,
    ObjectsStore,
    ObjectWithMetadata,
    UpdateObject,
)

__all__ = ["HsmStore"]

DEFAULT_RSA_BITS: Final = 2048
"""The modulus length of an RSA key pair created without a CryptographicLength."""


class _Kind(NamedTuple):
    """How a key type of the HSM looks in KMIP."""

    object_class: type[SymmetricKey] | type[PrivateKey] | type[PublicKey]
    object_type: ObjectType
    key_format_type: KeyFormatType
    algorithm: CryptographicAlgorithm
    usage_mask: int
    system_tag: str


_M = CryptographicUsageMask
_KINDS: Final = {
    KeyType.AES_KEY: _Kind(
        SymmetricKey,
        ObjectType.SymmetricKey,
        KeyFormatType.TransparentSymmetricKey,
        CryptographicAlgorithm.AES,
        SYMMETRIC_KEY_DEFAULT_USAGE_MASK,
        "_kk",
    ),
    KeyType.RSA_PRIVATE_KEY: _Kind(
        PrivateKey,
        ObjectType.PrivateKey,
        KeyFormatType.TransparentRSAPrivateKey,
        CryptographicAlgorithm.RSA,
        int(_M.Decrypt | _M.UnwrapKey | _M.Sign),
        "_sk",
    ),
    KeyType.RSA_PUBLIC_KEY: _Kind(
        PublicKey,
        ObjectType.PublicKey,
        KeyFormatType.TransparentRSAPublicKey,
        CryptographicAlgorithm.RSA,
        int(_M.Encrypt | _M.WrapKey | _M.Verify),
        "_pk",
    ),
}

# The key types each searched value admits (values no HSM key has admit none).
_BY_ALGORITHM: Final = {
    CryptographicAlgorithm.AES: frozenset({KeyType.AES_KEY}),
    CryptographicAlgorithm.RSA: frozenset({KeyType.RSA_PRIVATE_KEY, KeyType.RSA_PUBLIC_KEY}),
}
_BY_OBJECT_TYPE: Final = {kind.object_type: frozenset({t}) for t, kind in _KINDS.items()}
_BY_FORMAT: Final = {kind.key_format_type: frozenset({t}) for t, kind in _KINDS.items()}
_ALL_TYPES: Final = frozenset(KeyType)
# Every non-empty intersection of the sets above, as the HSM's own search filter.
_FILTERS: Final = {
    _ALL_TYPES: HsmObjectFilter.ANY,
    frozenset({KeyType.AES_KEY}): HsmObjectFilter.AES_KEY,
    frozenset({KeyType.RSA_PRIVATE_KEY, KeyType.RSA_PUBLIC_KEY}): HsmObjectFilter.RSA_KEY,
    frozenset({KeyType.RSA_PRIVATE_KEY}): HsmObjectFilter.RSA_PRIVATE_KEY,
    frozenset({KeyType.RSA_PUBLIC_KEY}): HsmObjectFilter.RSA_PUBLIC_KEY,
}
# Attributes no HSM key has: searching by one finds nothing (a Locate by name must not return
# every HSM key, the KEK included).
_UNSUPPORTED_FILTERS: Final = (
    "object_group",
    "object_group_member",
    "cryptographic_usage_mask",
    "description",
    "comment",
    "contact_information",
    "x509_certificate_identifier",
    "x509_certificate_issuer",
    "x509_certificate_subject",
    "application_specific_information",
)
_ATOMIC_UNSUPPORTED: Final = "HSM atomic operations only support RSA keypair creations for now"


class HsmStore(HsmEncryptionOracle, ObjectsStore):
    """The keys of ``hsm`` as an ObjectsStore and a CryptoOracle under the uid ``prefix``.

    ``hsm_admins`` may create keys and own every key (``"*"``: every user); ``vendor_id`` names
    the vendor attribute that carries the system tags of retrieved objects. The store owns
    ``hsm``: ``close`` closes it.
    """

    def __init__(self, hsm: HSM, hsm_admins: Iterable[str], vendor_id: str, prefix: str) -> None:
        if isinstance(hsm_admins, str):
            raise InvalidRequestError("hsm_admins must be a collection of user names, not a str")
        super().__init__(hsm, prefix)
        self._admins = tuple(hsm_admins)
        self._vendor_id = vendor_id
        self._owner = next((admin for admin in self._admins if admin != "*"), "admin")

    @property
    def owner(self) -> str:
        """The owner of every key: the first admin that is not ``"*"``, else ``"admin"``."""
        return self._owner

    def __repr__(self) -> str:
        return f"HsmStore({type(self._hsm).__name__}, prefix={self._prefix!r})"

    def is_admin(self, user: str) -> bool:
        """Whether ``user`` is an HSM admin (named, or every user through ``"*"``)."""
        return "*" in self._admins or user in self._admins

    # -- life cycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to open: the HSM logs in lazily."""

    async def close(self) -> None:
        """Close the HSM (idempotent): its sessions, its module, its PINs."""
        await self._hsm.aclose()

    # -- ObjectsStore ----------------------------------------------------------------------------

    async def create(
        self,
        uid: str | None,
        owner: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str],
    ) -> str:
        """Create the AES key ``uid`` (admins only); length and sensitivity from ``attributes``."""
        if not self.is_admin(owner):
            raise UnauthorizedError("Only the HSM Admin can create HSM objects")
        slot, key_id = self._required_uid(uid)
        if not isinstance(object, SymmetricKey):
            raise InvalidRequestError(
                "Only symmetric keys can be created on the HSM in this server"
            )
        if not isinstance(attributes, Attributes):
            raise InvalidRequestError("attributes must be Attributes")
        if attributes.cryptographic_algorithm is None:
            raise InvalidRequestError(
                "Create: HSM keys must have a cryptographic algorithm specified"
            )
        if attributes.cryptographic_algorithm != CryptographicAlgorithm.AES:
            raise InvalidRequestError(
                "Only AES symmetric keys can be created on the HSM in this server"
            )
        if attributes.cryptographic_length is None:
            raise InvalidRequestError("Symmetric key must have a cryptographic length specified")
        await self._hsm.create_key(
            slot,
            key_id,
            HsmKeyAlgorithm.AES,
            attributes.cryptographic_length,
            attributes.sensitive or False,
        )
        return hsm_uid(self._prefix, slot, key_id)

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        """The key as a KMIP object (a metadata-only stub when sensitive), or None."""
        slot, key_id = self.parse_uid(uid)
        metadata = await self._hsm.get_key_metadata(slot, key_id)
        if metadata is None:
            return None
        material: KeyMaterial
        if metadata.sensitive:
            material = _empty_material(metadata.key_type)
        else:
            exported = await self._hsm.export(slot, key_id)
            if exported is None:
                return None
            material = _kmip_material(exported.key_material)
        attributes = self._attributes(metadata)
        block = KeyBlock(
            key_format_type=_KINDS[metadata.key_type].key_format_type,
            key_value=PlainKeyValue(
                key_material=material, attributes=msgspec.structs.replace(attributes)
            ),
            cryptographic_algorithm=attributes.cryptographic_algorithm,
            cryptographic_length=attributes.cryptographic_length,
        )
        key = _KINDS[metadata.key_type].object_class(block=block)
        return ObjectWithMetadata(uid, key, self._owner, State.Active, attributes)

    async def retrieve_tags(self, uid: str) -> set[str]:
        """No tags: an HSM stores none."""
        self.parse_uid(uid)
        return set()

    async def update_object(
        self,
        uid: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Accepted, changes nothing: a token cannot store KMIP attributes."""
        self.parse_uid(uid)

    async def update_state(self, uid: str, state: State) -> None:
        """Refused: HSM keys are always Active."""
        raise InvalidRequestError("Update state is not supported for HSMs")

    async def delete(self, uid: str) -> None:
        """Destroy the key on the token (a key that does not exist is not an error)."""
        slot, key_id = self.parse_uid(uid)
        try:
            await self._hsm.delete(slot, key_id)
        except InvalidRequestError:
            if await self._hsm.get_key_type(slot, key_id) is not None:
                raise

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        """Create an RSA key pair (``[Create private]`` or ``[Create private, Create public]``,
        the public uid ``<private uid>_pk``), or accept a batch of UpdateObject as a no-op."""
        updates = [op for op in operations if isinstance(op, UpdateObject)]
        if len(updates) == len(operations):
            for update in updates:
                self.parse_uid(update.uid)
            return []
        private, *public = operations
        if not (
            isinstance(private, Create)
            and isinstance(private.object, PrivateKey)
            and private.attributes.cryptographic_algorithm == CryptographicAlgorithm.RSA
            and len(public) <= 1
            and all(isinstance(op, Create) and isinstance(op.object, PublicKey) for op in public)
        ):
            raise InvalidRequestError(_ATOMIC_UNSUPPORTED)
        if not self.is_admin(user):
            raise UnauthorizedError("Only the HSM Admin can create HSM keypairs")
        slot, sk_id = self._required_uid(private.uid)
        uids = [hsm_uid(self._prefix, slot, sk_id), hsm_uid(self._prefix, slot, sk_id + "_pk")]
        for op in public:
            if op.uid is not None and op.uid != uids[1]:
                raise InvalidRequestError(
                    f"The public key of the HSM key pair {uids[0]} must have the uid {uids[1]}, "
                    f"got: {op.uid}"
                )
        bits = private.attributes.cryptographic_length
        await self._hsm.create_keypair(
            slot,
            sk_id,
            sk_id + "_pk",
            HsmKeypairAlgorithm.RSA,
            DEFAULT_RSA_BITS if bits is None else bits,
            private.attributes.sensitive or False,
        )
        return uids

    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        """Whether ``owner`` is an HSM admin (admins own every key)."""
        self.parse_uid(uid)
        return self.is_admin(owner)

    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """None: an HSM stores no tags."""
        validate_tags(tags)
        return set()

    async def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[FoundObject]:
        """The keys of every configured slot matching the search, as ``(uid, Active, attrs)``.

        Nothing for a non-admin who must own the keys, a state other than Active, or a filter on
        an attribute HSM keys lack (Name, Link, tags, object group, usage mask, description,
        comment, contact information, X.509, application-specific information). Honoured:
        CryptographicAlgorithm, ObjectType, KeyFormatType, CryptographicLength, UniqueIdentifier.
        """
        if researched_attributes is not None and not isinstance(researched_attributes, Attributes):
            raise InvalidRequestError("researched_attributes must be Attributes or None")
        if state is not None and not isinstance(state, State):
            raise InvalidRequestError(f"expected a State, got {type(state).__name__}")
        search = researched_attributes or Attributes()
        if (
            (user_must_be_owner and not self.is_admin(user))
            or state not in (None, State.Active)
            or search.name
            or search.link
            or search.get_tags(vendor_id)
            or any(getattr(search, field) is not None for field in _UNSUPPORTED_FILTERS)
        ):
            return []
        wanted = _wanted_types(search)
        if not wanted:
            return []
        slots = await self._hsm.get_available_slot_list()
        wanted_uid = search.unique_identifier
        if wanted_uid is not None:
            try:
                wanted_slot, _ = self.parse_uid(wanted_uid)
            except InvalidRequestError:
                return []
            slots = [wanted_slot] if wanted_slot in slots else []
        length = search.cryptographic_length
        return [
            (uid, State.Active, self._attributes(metadata))
            for uid, metadata in await self._keys(slots, _FILTERS[wanted], wanted_uid)
            if metadata.key_type in wanted
            and (length is None or metadata.key_length_in_bits == length)
        ]

    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        """None: HSM keys are never stored wrapped."""
        return []

    async def find_due_for_rotation(self, now: object) -> list[str]:
        """None: a token stores no rotation schedule."""
        return []

    async def find_by_rotate_name(self, rotate_name: str) -> list[str]:
        """Uids of the keys whose label names the rotation lineage ``rotate_name``."""
        slots = await self._hsm.get_available_slot_list()
        return [
            uid
            for uid, metadata in await self._keys(slots, HsmObjectFilter.ANY)
            if metadata.rotate_name == rotate_name
        ]

    async def count_all_non_destroyed(self) -> int:
        """How many keys the configured slots hold (a destroyed key is gone from the token)."""
        return await self.count_non_destroyed_keys()

    async def count_non_destroyed_keys(self) -> int:
        """How many keys ``HSM.find`` lists over the configured slots."""
        slots = await self._hsm.get_available_slot_list()
        return sum([len(await self._hsm.find(slot, HsmObjectFilter.ANY)) for slot in slots])

    # -- helpers ---------------------------------------------------------------------------------

    def _required_uid(self, uid: str | None) -> tuple[int, str]:
        if uid is None:
            raise InvalidRequestError(
                f"An HSM key needs a uid in the form of '{self._prefix}::<slot_id>::<key_id>'"
            )
        return self.parse_uid(uid)

    def _attributes(self, metadata: KeyMetadata) -> Attributes:
        """What ``retrieve`` and ``find`` say of a key: its KMIP kind, length and system tag."""
        kind = _KINDS[metadata.key_type]
        attributes = Attributes(
            cryptographic_algorithm=kind.algorithm,
            cryptographic_length=metadata.key_length_in_bits,
            cryptographic_usage_mask=kind.usage_mask,
            key_format_type=kind.key_format_type,
            object_type=kind.object_type,
            rotate_generation=metadata.rotate_generation,
            rotate_name=metadata.rotate_name,
            sensitive=metadata.sensitive,
        )
        attributes.set_tags(self._vendor_id, {kind.system_tag})
        return attributes

    async def _keys(
        self, slots: Iterable[int], object_filter: HsmObjectFilter, wanted_uid: str | None = None
    ) -> list[tuple[str, KeyMetadata]]:
        """``(uid, metadata)`` of the keys ``HSM.find`` lists in ``slots``, each uid once."""
        found: dict[str, KeyMetadata] = {}
        for slot in slots:
            for raw_id in await self._hsm.find(slot, object_filter):
                try:
                    uid = hsm_uid(self._prefix, slot, raw_id.decode())
                except UnicodeDecodeError:
                    continue
                if uid in found or wanted_uid not in (None, uid):
                    continue
                metadata = await self._hsm.get_key_metadata(slot, raw_id)
                if metadata is not None:
                    found[uid] = metadata
        return list(found.items())


def _wanted_types(search: Attributes) -> frozenset[KeyType]:
    """The key types that the searched algorithm, object type and key format all admit."""
    wanted = _ALL_TYPES
    if search.cryptographic_algorithm is not None:
        wanted &= _BY_ALGORITHM.get(search.cryptographic_algorithm, frozenset())
    if search.object_type is not None:
        wanted &= _BY_OBJECT_TYPE.get(search.object_type, frozenset())
    if search.key_format_type is not None:
        wanted &= _BY_FORMAT.get(search.key_format_type, frozenset())
    return wanted


def _kmip_material(material: HsmKeyMaterial) -> KeyMaterial:
    """The KMIP form of exported key material (its secret buffers are moved, not copied)."""
    if isinstance(material, AesKeyMaterial):
        return TransparentSymmetricKey(key=material.key)
    if isinstance(material, RsaPrivateKeyMaterial):
        return TransparentRSAPrivateKey(
            modulus=material.modulus,
            private_exponent=material.private_exponent,
            public_exponent=material.public_exponent,
            p=material.prime_1,
            q=material.prime_2,
            prime_exponent_p=material.exponent_1,
            prime_exponent_q=material.exponent_2,
            crt_coefficient=material.coefficient,
        )
    return TransparentRSAPublicKey(
        modulus=material.modulus, public_exponent=material.public_exponent
    )


def _empty_material(key_type: KeyType) -> KeyMaterial:
    """The key material of a metadata-only stub: the right variant, no key bytes."""
    if key_type is KeyType.AES_KEY:
        return TransparentSymmetricKey(key=SecretBytes(b""))
    if key_type is KeyType.RSA_PRIVATE_KEY:
        return TransparentRSAPrivateKey(modulus=b"")
    return TransparentRSAPublicKey(modulus=b"", public_exponent=b"")
