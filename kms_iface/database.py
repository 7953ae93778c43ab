"""The uid router: one ``Database`` in front of the default store, extra stores and oracles.

``Database(objects_store, permissions_store)`` is itself an ``ObjectsStore`` and a
``PermissionsStore`` (so the store conformance suite runs against it). Routing rules:

- a uid without ``::`` goes to the default objects store;
- otherwise the longest registered prefix ``p`` with ``uid.startswith(p + "::")`` wins;
- an unrouted uid starting with ``hsm::`` raises ``InvalidRequestError`` (an HSM key must never
  land in the default store); any other unrouted uid goes to the default store, as in Cosmian
  (a default store may hold uids such as ``a::b``);
- ``create`` with ``uid=None`` goes to the default store;
- ``atomic`` goes to the store of its uids (a Create without uid goes with them, as the public
  half of an HSM key pair does; the default store when no operation names a uid), and a batch
  whose uids are routed to different stores is refused (Cosmian silently sends it all to the
  first one);
- ``list_uids_for_tags``, ``find``, ``find_wrapped_by`` and the optional extras ask every store at
  once and merge the answers (default store first, then by prefix); a failing default store
  raises, a failing registered store is logged (logger ``kms_iface.database``) and left out;
- every permissions method goes to the permissions store, whatever the uid. ``delete`` (also in
  ``atomic``) of an object held elsewhere than in the permissions store then drops its grants
  there, so that the store contract's "delete removes the permissions" holds through the router.

Ownership: the ``Database`` owns every store it holds when ``open()`` or ``close()`` runs: the
default store, the permissions store and every registered objects store are opened by ``open()``
and closed by ``close()``. Registration does no I/O: a store registered while the ``Database`` is
open must already be open; ``unregister_objects_store`` hands the store back without closing it.
Oracles have no life cycle in their contract and are not managed.

Registrations are synchronous and thread-safe; lookups take no lock (each registration publishes
a new, immutable routing table).

Keys wrapped by a key-encryption key (KEK), an HSM key reached through its oracle
(``kms_iface.key_wrapping``): ``wrap_key`` stores a key of the default store wrapped, so that
``find_wrapped_by(kek)`` lists it; ``unwrap_key`` returns its material (the HSM decrypts, so a
sensitive KEK works). Both need the key's owner, who must also own the KEK (an HSM admin does)
or hold an Encrypt (wrap) or Decrypt (unwrap) grant on it: a stored object names its KEK, so
without that check anyone could make the HSM decrypt anything.

With ``key_encryption_key`` set (protection at rest), every key written to the default store
(``create``, ``update_object``, and ``Create``/``Upsert``/``UpdateObject`` in ``atomic``) is
wrapped by that KEK first, and ``retrieve``/``retrieve_objects`` return it unwrapped: the
store's files never hold plaintext key material. The KEK must be an AES key; the wrapping is
bound to the key's uid (AES-GCM AAD), so wrapped bytes copied from the files into another object
do not unwrap. Public keys, certificates and metadata-only keys are stored as they are; a secret
object the KEK cannot wrap (SecretData, an EC key, a key whose wrapping data leaves its value in
the clear, ...) is refused with ``NotSupportedError`` rather than stored in the clear. Deleting
a key held outside the default store (a KEK, perhaps) empties the unwrap cache. ``wrap_key`` and
the updates are read-modify-write: concurrent writers of one key race (the last write wins).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Final, Generic, TypeVar

import anyio
import msgspec

from kms_iface.config import Config, hsm_prefixes
from kms_iface.errors import (
    InterfaceError,
    InvalidRequestError,
    NotSupportedError,
    UnauthorizedError,
)
from kms_iface.hsm import KeyType
from kms_iface.hsm_store import HsmStore
from kms_iface.key_wrapping import unwrap_key_material, wrap_object
from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import KmipOperation, State, WrappingMethod
from kms_iface.kmip.objects import Certificate, CertificateRequest, KeyBlock, Object, PublicKey
from kms_iface.kmip.wrapping import UnwrappedKeyCache, unwrapped_object, wrapped_fingerprint
from kms_iface.oracle import EncryptionOracle
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from kms_iface.secrets import SecretBytes
from kms_iface.stores._uids import new_uid
from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    Delete,
    FoundObject,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    UpdateObject,
    UpdateState,
    Upsert,
)
from kms_iface.stores.lmdb import LmdbStore

__all__ = ["Database"]

_log: Final = logging.getLogger(__name__)

_OPERATIONS: Final = (Create, Upsert, UpdateObject, UpdateState, Delete)
# Objects without secret material: protection at rest stores them as they are.
_PUBLIC: Final = (PublicKey, Certificate, CertificateRequest)

_T = TypeVar("_T")
_R = TypeVar("_R")


def _no_hsm(uid: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"No HSM is configured for UID '{uid}'. "
        "Start the server with an HSM plugin to create HSM keys."
    )


def _check_prefix(prefix: str) -> None:
    words = prefix.split("::")
    if not all(words) or not prefix.isprintable() or any(c.isspace() for c in prefix):
        raise InvalidRequestError(
            f"Invalid uid prefix {prefix!r}: a prefix is non-empty words joined by '::' "
            "(e.g. 'hsm::utimaco'), without white space or control characters"
        )


class _Routes(Generic[_T]):
    """Values registered under uid prefixes; the longest matching prefix wins."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._by_prefix: Mapping[str, _T] = MappingProxyType({})
        self._longest_first: tuple[tuple[str, _T], ...] = ()

    def _publish(self, by_prefix: dict[str, _T]) -> None:
        ordered = sorted(by_prefix.items(), key=lambda item: (-len(item[0]), item[0]))
        self._longest_first = tuple((prefix + "::", value) for prefix, value in ordered)
        self._by_prefix = MappingProxyType(by_prefix)

    def add(self, prefix: str, value: _T) -> None:
        _check_prefix(prefix)
        with self._lock:
            if prefix in self._by_prefix:
                raise InvalidRequestError(
                    f"An {self._what} is already registered under the prefix {prefix!r}"
                )
            self._publish({**self._by_prefix, prefix: value})

    def remove(self, prefix: str) -> _T:
        with self._lock:
            remaining = dict(self._by_prefix)
            if prefix not in remaining:
                raise InvalidRequestError(
                    f"No {self._what} is registered under the prefix {prefix!r}"
                )
            value = remaining.pop(prefix)
            self._publish(remaining)
            return value

    def match(self, uid: str) -> _T | None:
        for head, value in self._longest_first:
            if uid.startswith(head):
                return value
        return None

    @property
    def by_prefix(self) -> Mapping[str, _T]:
        return self._by_prefix


class Database(ObjectsStore, PermissionsStore):
    """Routes every store call by uid prefix (see the module docstring for the rules).

    ``key_encryption_key``: protection at rest (module docstring); ``unwrap_cache_size``: how
    many unwrapped keys stay in memory (0: none), wiped when evicted or when their stored object
    changes.
    """

    def __init__(
        self,
        objects_store: ObjectsStore,
        permissions_store: PermissionsStore,
        *,
        key_encryption_key: str | None = None,
        unwrap_cache_size: int = 0,
    ) -> None:
        self._default = objects_store
        self._permissions = permissions_store
        self._stores: _Routes[ObjectsStore] = _Routes("objects store")
        self._oracles: _Routes[EncryptionOracle] = _Routes("encryption oracle")
        if key_encryption_key is not None and (
            type(key_encryption_key) is not str or not key_encryption_key
        ):
            raise InvalidRequestError("key_encryption_key must be a non-empty key uid")
        self._kek = key_encryption_key
        self._unwrapped = UnwrappedKeyCache(unwrap_cache_size)

    @classmethod
    def from_config(cls, config: Config) -> Database:
        """The router a configuration describes: its default store, and one ``HsmStore`` (store
        and oracle) per HSM instance under the instance's prefix. Only loads the PKCS#11
        modules; ``open()`` opens the store, each HSM logs in on first use."""
        if not isinstance(config, Config):
            raise InvalidRequestError(f"expected a Config, got {type(config).__name__}")
        default = config.default_store
        if default.kind == "postgres" and default.dsn is not None:
            try:
                from kms_iface.stores.postgres import PostgresStore
            except ImportError:  # psycopg is the optional "postgres" extra
                raise NotSupportedError(
                    "default_store kind 'postgres' needs psycopg: pip install 'kms-iface[postgres]'"
                ) from None
            store: LmdbStore | PostgresStore = PostgresStore(default.dsn)
        elif default.kind == "lmdb" and default.path is not None:
            store = LmdbStore(default.path)
        else:
            raise NotSupportedError(f"default_store kind {default.kind!r} is not available")
        database = cls(
            store,
            store,
            key_encryption_key=config.key_encryption_key,
            unwrap_cache_size=config.unwrap_cache_size,
        )
        built: list[Pkcs11Hsm] = []
        try:
            for instance, prefix in zip(config.hsm_instances, hsm_prefixes(config), strict=True):
                if instance.library is None:
                    hsm = Pkcs11Hsm.from_profile(
                        instance.model, instance.passwords(), call_timeout=instance.call_timeout
                    )
                else:
                    hsm = Pkcs11Hsm(
                        instance.library,
                        instance.passwords(),
                        profile=instance.model,
                        call_timeout=instance.call_timeout,
                    )
                built.append(hsm)
                hsm_store = HsmStore(hsm, list(instance.admins), config.vendor_id, prefix)
                database.register_objects_store(prefix, hsm_store)
                database.register_encryption_oracle(prefix, hsm_store)
        except BaseException:
            for hsm in built:
                hsm.close()  # unload the module and wipe the PINs of what was built
            raise
        return database

    def __repr__(self) -> str:
        return (
            f"Database(default={self._default!r}, permissions={self._permissions!r}, "
            f"stores={sorted(self._stores.by_prefix)}, oracles={sorted(self._oracles.by_prefix)})"
        )

    # -- registries ----------------------------------------------------------------------------

    @property
    def default_store(self) -> ObjectsStore:
        """The objects store of uids no prefix routes elsewhere."""
        return self._default

    @property
    def permissions_store(self) -> PermissionsStore:
        """Where every grant lives."""
        return self._permissions

    @property
    def objects_stores(self) -> Mapping[str, ObjectsStore]:
        """The registered objects stores by prefix (a read-only snapshot)."""
        return self._stores.by_prefix

    @property
    def encryption_oracles(self) -> Mapping[str, EncryptionOracle]:
        """The registered encryption oracles by prefix (a read-only snapshot)."""
        return self._oracles.by_prefix

    def register_objects_store(self, prefix: str, store: ObjectsStore) -> None:
        """Route uids ``<prefix>::...`` to ``store``; a taken or malformed prefix raises."""
        self._stores.add(prefix, store)

    def unregister_objects_store(self, prefix: str) -> ObjectsStore:
        """Stop routing to the store of ``prefix`` and hand it back (not closed)."""
        return self._stores.remove(prefix)

    def register_encryption_oracle(self, prefix: str, oracle: EncryptionOracle) -> None:
        """Answer ``encryption_oracle(uid)`` for uids ``<prefix>::...`` with ``oracle``."""
        self._oracles.add(prefix, oracle)

    def unregister_encryption_oracle(self, prefix: str) -> EncryptionOracle:
        """Forget the oracle of ``prefix`` and hand it back."""
        return self._oracles.remove(prefix)

    def objects_store_for(self, uid: str) -> ObjectsStore:
        """The store holding ``uid``; an unrouted ``hsm::`` uid raises ``InvalidRequestError``."""
        if "::" not in uid:
            return self._default
        store = self._stores.match(uid)
        if store is not None:
            return store
        if uid.startswith("hsm::"):
            raise _no_hsm(uid)
        return self._default

    def encryption_oracle(self, uid: str) -> EncryptionOracle | None:
        """The oracle registered for ``uid``'s longest prefix, or None (use the stored object)."""
        return self._oracles.match(uid) if "::" in uid else None

    def _all_stores(self) -> list[tuple[str, ObjectsStore]]:
        """Every distinct objects store, the default first (prefix ``""``), then by prefix."""
        stores = [("", self._default)]
        for prefix, store in sorted(self._stores.by_prefix.items()):
            if all(store is not seen for _, seen in stores):
                stores.append((prefix, store))
        return stores

    # -- life cycle ----------------------------------------------------------------------------

    def _owned(self) -> list[ObjectsStore | PermissionsStore]:
        owned: list[ObjectsStore | PermissionsStore] = [store for _, store in self._all_stores()]
        if all(self._permissions is not store for store in owned):
            owned.insert(1, self._permissions)
        return owned

    async def open(self) -> None:
        """Open the default, permissions and registered stores (each idempotently)."""
        opened: list[ObjectsStore | PermissionsStore] = []
        try:
            for store in self._owned():
                await store.open()
                opened.append(store)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for store in reversed(opened):
                    try:
                        await store.close()
                    except Exception as exc:
                        _log.warning("closing %r after a failed open failed: %s", store, _say(exc))
            raise

    async def close(self) -> None:
        """Close every store ``open`` opens, the registered ones first; the first error raises."""
        failure: Exception | None = None
        with anyio.CancelScope(shield=True):
            for store in reversed(self._owned()):
                try:
                    await store.close()
                except Exception as exc:
                    if failure is None:
                        failure = exc
                    else:
                        _log.warning("closing %r failed too: %s", store, _say(exc))
        if failure is not None:
            raise failure

    # -- fan-out -------------------------------------------------------------------------------

    async def _ask_all(
        self, operation: str, query: Callable[[ObjectsStore], Awaitable[_R]]
    ) -> list[_R]:
        """``query`` on every store at once: the answers, default store first.

        A failing default store raises its error; a failing registered store is logged and its
        answer left out.
        """
        stores = self._all_stores()
        if len(stores) == 1:
            return [await query(self._default)]
        answers: dict[int, _R] = {}
        errors: dict[int, Exception] = {}

        async def ask(index: int, store: ObjectsStore) -> None:
            try:
                answers[index] = await query(store)
            except Exception as exc:
                errors[index] = exc

        async with anyio.create_task_group() as group:
            for index, (_, store) in enumerate(stores):
                group.start_soon(ask, index, store)
        if 0 in errors:
            raise errors[0]
        for index, exc in sorted(errors.items()):
            _log.warning(
                "the objects store of prefix %r failed in %s and is left out of the answer: %s",
                stores[index][0],
                operation,
                _say(exc),
            )
        return [answers[index] for index in sorted(answers)]

    # -- ObjectsStore --------------------------------------------------------------------------

    async def create(
        self,
        uid: str | None,
        owner: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str],
    ) -> str:
        """Create in the store of ``uid`` (the default store for ``uid=None``)."""
        store = self._default if uid is None else self.objects_store_for(uid)
        if store is self._default and self._kek is not None:
            uid = new_uid() if uid is None else uid  # protection binds the wrapping to the uid
            object = await self._protect(object, uid)
        return await store.create(uid, owner, object, attributes, tags)

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        """The object of ``uid``; with protection at rest, a key comes back unwrapped."""
        store = self.objects_store_for(uid)
        found = await store.retrieve(uid)
        if (
            found is None
            or self._kek is None
            or store is not self._default
            or found.object.wrapping_key_uid() != self._kek
            or not _holds_wrapped_bytes(found.object)
        ):
            return found
        with await self._key_material(uid, found.object) as material:
            plain = unwrapped_object(found.object, material, found.attributes)
        return msgspec.structs.replace(found, object=plain)

    async def retrieve_objects(self, uid_or_tags: str) -> dict[str, ObjectWithMetadata]:
        """``{uid: object}`` for one uid, or for a JSON array of tags (``'["a","b"]'``).

        A string starting with ``[`` is a tag list, resolved over every store; anything else is a
        uid. Uids that no store holds are left out.
        """
        if uid_or_tags.startswith("["):
            try:
                tags = msgspec.json.decode(uid_or_tags, type=list[str])
            except msgspec.MsgspecError as exc:
                raise InvalidRequestError(
                    f"The tags must be a JSON array of strings: {exc}"
                ) from None
            uids: Iterable[str] = sorted(await self.list_uids_for_tags(tags))
        else:
            uids = [uid_or_tags]
        found: dict[str, ObjectWithMetadata] = {}
        for uid in uids:
            owm = await self.retrieve(uid)
            if owm is not None:
                found[uid] = owm
        return found

    async def retrieve_tags(self, uid: str) -> set[str]:
        return await self.objects_store_for(uid).retrieve_tags(uid)

    async def update_object(
        self,
        uid: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str] | None = None,
    ) -> None:
        store = self.objects_store_for(uid)
        if store is self._default:
            object = await self._protect(object, uid)
        self._unwrapped.invalidate(uid)
        try:
            await store.update_object(uid, object, attributes, tags)
        finally:
            self._unwrapped.invalidate(uid)  # a retrieve may have cached the old key meanwhile

    async def update_state(self, uid: str, state: State) -> None:
        await self.objects_store_for(uid).update_state(uid, state)

    async def delete(self, uid: str) -> None:
        """Delete from the store of ``uid``, then drop its grants if they live elsewhere."""
        store = self.objects_store_for(uid)
        self._forget_unwrapped(store, [uid])
        try:
            await store.delete(uid)
        finally:
            self._forget_unwrapped(store, [uid])
        await self._forget_grants(store, [uid])

    def _forget_unwrapped(self, store: ObjectsStore, uids: Iterable[str]) -> None:
        """Drop cached key material the write of ``uids`` in ``store`` makes stale.

        A key deleted outside the default store may be a KEK: every cached key goes, so that no
        key wrapped by a destroyed KEK is unwrapped again.
        """
        if store is not self._default:
            self._unwrapped.clear()
            return
        for uid in uids:
            self._unwrapped.invalidate(uid)

    async def _forget_grants(
        self, store: ObjectsStore | PermissionsStore, uids: Iterable[str]
    ) -> None:
        if store is self._permissions:
            return  # the store dropped them with the object
        for uid in uids:
            granted = await self._permissions.list_object_operations_granted(uid)
            for user, operations in granted.items():
                await self._permissions.remove_operations(uid, user, operations)

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        """Run the batch in the store of its uids (a Create without uid goes with them; the
        default store when no operation names a uid); a batch over two stores raises."""
        if not operations:
            return []
        for op in operations:
            if not isinstance(op, _OPERATIONS):
                raise InvalidRequestError(f"{type(op).__name__} is not an atomic operation")
        named = [
            (op.uid, self.objects_store_for(op.uid)) for op in operations if op.uid is not None
        ]
        first_uid, store = named[0] if named else (None, self._default)
        for uid, other in named[1:]:
            if other is not store:
                raise InvalidRequestError(
                    "An atomic batch cannot span several stores: "
                    f"'{first_uid}' and '{uid}' are in different stores"
                )
        if store is self._default and self._kek is not None:
            operations = [await self._protect_operation(op) for op in operations]
        touched = [op.uid for op in operations if op.uid is not None]
        self._forget_unwrapped(store, touched)
        try:
            uids = await store.atomic(user, operations)
        finally:
            self._forget_unwrapped(store, touched)
        await self._forget_grants(store, [op.uid for op in operations if isinstance(op, Delete)])
        return uids

    # -- keys wrapped by a key-encryption key --------------------------------------------------

    async def wrap_key(self, key_uid: str, kek_uid: str, user: str) -> None:
        """Store the key ``key_uid`` of the default store wrapped by the KEK ``kek_uid``.

        ``user`` must own the key and may use the KEK (own it, as an HSM admin does, or hold an
        Encrypt grant on it). An AES KEK wraps with AES-GCM, an RSA KEK (its private key's uid)
        with RSA-OAEP SHA-1; ``find_wrapped_by(kek_uid)`` lists the key afterwards.
        """
        found = await self._owned_key(key_uid, user)
        oracle = self._kek_oracle(kek_uid)
        await self._check_kek_use(kek_uid, user, KmipOperation.Encrypt)
        obj = found.object
        kek = obj.wrapping_key_uid()
        if kek is not None and kek == self._kek and _holds_wrapped_bytes(obj):
            with await self._key_material(key_uid, obj) as material:
                obj = unwrapped_object(obj, material, found.attributes)
        elif kek is not None:
            raise InvalidRequestError(f"The key {key_uid} is already wrapped by {kek}")
        wrapped = await wrap_object(oracle, kek_uid, obj, self._binding(kek_uid, key_uid))
        self._unwrapped.invalidate(key_uid)
        try:
            await self._default.update_object(key_uid, wrapped, found.attributes)
        finally:
            self._unwrapped.invalidate(key_uid)

    async def unwrap_key(self, key_uid: str, user: str) -> SecretBytes:
        """The key material of the wrapped key ``key_uid``.

        ``user`` must own the key and may decrypt with its KEK (own it, or hold a Decrypt grant
        on it): the KEK and its parameters come from the stored object, so without that check
        anyone could make the HSM decrypt anything. Raw bytes for a symmetric key, PKCS#1 DER for
        an RSA private key, in a buffer the caller owns (wipe it after use). A sensitive HSM KEK
        works: the HSM decrypts.
        """
        found = await self._owned_key(key_uid, user)
        kek = found.object.wrapping_key_uid()
        if kek is None or not _holds_wrapped_bytes(found.object):
            raise InvalidRequestError(f"The key {key_uid} is not wrapped")
        oracle = self._kek_oracle(kek)
        try:
            await self._check_kek_use(kek, user, KmipOperation.Decrypt)
        except UnauthorizedError:
            # The owner of the key already knows its KEK's uid: say when that KEK is gone.
            if await oracle.get_key_type(kek) is None:
                raise InvalidRequestError(
                    f"Cannot unwrap {key_uid}: its key-encryption key {kek} does not exist"
                ) from None
            raise
        return await self._key_material(key_uid, found.object)

    async def _owned_key(self, key_uid: str, user: str) -> ObjectWithMetadata:
        """The stored (possibly wrapped) object of a key of the default store owned by ``user``."""
        if type(key_uid) is not str or type(user) is not str:
            raise InvalidRequestError("the key uid and the user must be strings")
        if self.objects_store_for(key_uid) is not self._default:
            raise InvalidRequestError(
                f"Only keys of the default store can be wrapped or unwrapped: {key_uid} is not"
            )
        found = await self._default.retrieve(key_uid)
        if found is None:
            raise InvalidRequestError(f"The key {key_uid} does not exist")
        if found.owner != user:
            raise UnauthorizedError(f"The key {key_uid} is not owned by {user}")
        return found

    async def _check_kek_use(self, kek_uid: str, user: str, operation: KmipOperation) -> None:
        """``user`` owns the KEK (an HSM admin does) or holds ``operation`` on it."""
        store = self._stores.match(kek_uid) if "::" in kek_uid else None
        if store is not None and await store.is_object_owned_by(kek_uid, user):
            return
        granted = await self._permissions.list_user_operations_on_object(kek_uid, user, False)
        if operation not in granted:
            raise UnauthorizedError(
                f"{user} may not use the key-encryption key {kek_uid} "
                f"(an owner or a {operation.name} grant is needed)"
            )

    def _kek_oracle(self, kek_uid: str) -> EncryptionOracle:
        if type(kek_uid) is not str or not kek_uid:
            raise InvalidRequestError("the key-encryption key uid must be a non-empty string")
        oracle = self.encryption_oracle(kek_uid)
        if oracle is None:
            self.objects_store_for(kek_uid)  # an unrouted hsm:: uid: the router's own error
            raise InvalidRequestError(
                f"No encryption oracle holds the key-encryption key {kek_uid}: a KEK is a key "
                "of a registered HSM ('<prefix>::<slot>::<key id>')"
            )
        return oracle

    def _binding(self, kek_uid: str, uid: str) -> bytes | None:
        """The AAD of a wrapping: the key's uid for the protection-at-rest KEK, else none.

        Binding the uid stops wrapped bytes copied from the store's files into another object
        from being unwrapped by ``retrieve``; ``wrap_key`` with any other KEK keeps Cosmian's
        form (no AAD) and relies on the KEK permission check instead.
        """
        return uid.encode() if kek_uid == self._kek else None

    async def _key_material(self, uid: str, stored: Object) -> SecretBytes:
        """The unwrapped material of ``stored``, from the cache when the object is unchanged."""
        fingerprint = wrapped_fingerprint(stored)
        cached = self._unwrapped.get(uid, fingerprint)
        if cached is not None:
            return cached
        kek = stored.wrapping_key_uid()
        assert kek is not None
        material = await unwrap_key_material(
            self._kek_oracle(kek), uid, stored, self._binding(kek, uid)
        )
        self._unwrapped.put(uid, fingerprint, material)
        return material

    async def _protect(self, obj: Object, uid: str) -> Object:
        """``obj`` as protection at rest stores it: wrapped by the KEK when it holds secrets."""
        if self._kek is None or isinstance(obj, _PUBLIC) or _metadata_only(obj):
            return obj
        if obj.is_wrapped():
            if _holds_wrapped_bytes(obj):
                return obj  # already ciphertext (and bound to its uid if it names our KEK)
            raise NotSupportedError(
                "Protection at rest (key_encryption_key) cannot store a key whose key wrapping "
                "data leaves its key value in the clear"
            )
        oracle = self._kek_oracle(self._kek)
        if await oracle.get_key_type(self._kek) is not KeyType.AES_KEY:
            raise NotSupportedError(
                f"Protection at rest needs an AES key-encryption key: {self._kek} is not one"
            )
        try:
            return await wrap_object(oracle, self._kek, obj, uid.encode())
        except NotSupportedError as exc:
            raise NotSupportedError(
                f"Protection at rest (key_encryption_key) cannot wrap this object, so it is not "
                f"stored: {exc}"
            ) from None

    async def _protect_operation(self, op: AtomicOperation) -> AtomicOperation:
        if isinstance(op, Create) and op.uid is None:
            op = msgspec.structs.replace(op, uid=new_uid())
        if isinstance(op, (Create, Upsert, UpdateObject)):
            assert op.uid is not None
            return msgspec.structs.replace(op, object=await self._protect(op.object, op.uid))
        return op

    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        return await self.objects_store_for(uid).is_object_owned_by(uid, owner)

    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """The uids having every tag, from every store."""
        if isinstance(tags, str):
            raise InvalidRequestError("tags must be an iterable of tags, not one str")
        wanted = set(tags)
        found: set[str] = set()
        for uids in await self._ask_all(
            "list_uids_for_tags", lambda store: store.list_uids_for_tags(wanted)
        ):
            found |= uids
        return found

    async def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[FoundObject]:
        """Matching objects of every store, the default store's first."""
        answers = await self._ask_all(
            "find",
            lambda store: store.find(
                researched_attributes, state, user, user_must_be_owner, vendor_id
            ),
        )
        return [found for answer in answers for found in answer]

    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        """Objects wrapped by ``wrapping_key_uid`` in every store."""
        answers = await self._ask_all(
            "find_wrapped_by", lambda store: store.find_wrapped_by(wrapping_key_uid, user)
        )
        return [found for answer in answers for found in answer]

    async def find_due_for_rotation(self, now: object) -> list[str]:
        answers = await self._ask_all(
            "find_due_for_rotation", lambda store: store.find_due_for_rotation(now)
        )
        return [uid for answer in answers for uid in answer]

    async def find_by_rotate_name(self, rotate_name: str) -> list[str]:
        answers = await self._ask_all(
            "find_by_rotate_name", lambda store: store.find_by_rotate_name(rotate_name)
        )
        return [uid for answer in answers for uid in answer]

    async def count_all_non_destroyed(self) -> int:
        """The sum over every store (a store that cannot count adds 0)."""
        return sum(
            await self._ask_all(
                "count_all_non_destroyed", lambda store: store.count_all_non_destroyed()
            )
        )

    async def count_non_destroyed_keys(self) -> int:
        """The sum over every store (a store that cannot count adds 0)."""
        return sum(
            await self._ask_all(
                "count_non_destroyed_keys", lambda store: store.count_non_destroyed_keys()
            )
        )

    # -- PermissionsStore: every uid goes to the permissions store -----------------------------

    async def list_user_operations_granted(
        self, user: str
    ) -> dict[str, tuple[str, State, set[KmipOperation]]]:
        return await self._permissions.list_user_operations_granted(user)

    async def list_object_operations_granted(self, uid: str) -> dict[str, set[KmipOperation]]:
        return await self._permissions.list_object_operations_granted(uid)

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        await self._permissions.grant_operations(uid, user, operations)

    async def remove_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        await self._permissions.remove_operations(uid, user, operations)

    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]:
        return await self._permissions.list_user_operations_on_object(
            uid, user, no_inherited_access
        )


def _metadata_only(obj: Object) -> bool:
    """A key block without key value (a destroyed key's metadata): nothing secret in it."""
    block = getattr(obj, "block", None)
    return isinstance(block, KeyBlock) and block.key_value is None


def _holds_wrapped_bytes(obj: Object) -> bool:
    """Wrapped for real: KeyWrappingData says Encrypt with a key, and the value is ciphertext."""
    block = obj.key_block()
    data = block.key_wrapping_data
    return (
        data is not None
        and data.wrapping_method == WrappingMethod.Encrypt
        and data.encryption_key_information is not None
        and isinstance(block.key_value, bytes)
    )


def _say(exc: Exception) -> str:
    """How a failure is logged: an ``InterfaceError``'s text (never secret), else its class."""
    if isinstance(exc, InterfaceError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
