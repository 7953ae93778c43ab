"""Plugin discovery: the ``kms_iface.plugins`` entry-point group and the plugin API version.

A distribution declares a plugin in its metadata::

    [project.entry-points."kms_iface.plugins"]
    my_hsm = "my_package.plugin:plugin"

The entry point names an object (a ``Plugin`` instance, a module or any object with the same
attributes) that has an ``api_version`` and provides at least one of: ``hsm`` (an ``HSM``
subclass), ``objects_store`` (an ``ObjectsStore`` subclass), ``permissions_store`` (a
``PermissionsStore`` subclass), ``oracle`` (an ``EncryptionOracle`` subclass).

Versions are ``"major.minor"``: a plugin is compatible when its major equals ``API_VERSION``'s and
its minor is not greater (it uses nothing newer than this kms_iface offers). An int ``n`` means
``"n.0"``. ``list_plugins()`` imports nothing; ``load_plugin(name)`` imports and checks.
"""

from __future__ import annotations

import re
import types
from importlib import metadata
from typing import Any, Final

import msgspec

from kms_iface.errors import InterfaceError
from kms_iface.hsm import HSM
from kms_iface.oracle import EncryptionOracle
from kms_iface.stores.base import ObjectsStore, PermissionsStore

__all__ = [
    "API_VERSION",
    "ENTRY_POINT_GROUP",
    "Plugin",
    "PluginError",
    "PluginInfo",
    "check_api_version",
    "list_plugins",
    "load_plugin",
    "parse_api_version",
]

API_VERSION: Final = "1.0"
"""The plugin API this kms_iface offers."""

ENTRY_POINT_GROUP: Final = "kms_iface.plugins"

_PROVIDES: Final[dict[str, type]] = {
    "hsm": HSM,
    "objects_store": ObjectsStore,
    "permissions_store": PermissionsStore,
    "oracle": EncryptionOracle,
}


class PluginError(InterfaceError):
    """A plugin that is missing, ambiguous, fails to import, or has an incompatible API version."""


class Plugin(msgspec.Struct, frozen=True, kw_only=True):
    """What a plugin provides: classes implementing the kms_iface contracts."""

    api_version: str | int
    hsm: type[HSM] | None = None
    objects_store: type[ObjectsStore] | None = None
    permissions_store: type[PermissionsStore] | None = None
    oracle: type[EncryptionOracle] | None = None
    name: str = ""
    """The entry-point name (filled in by ``load_plugin``)."""


class PluginInfo(msgspec.Struct, frozen=True):
    """A declared plugin, not imported: entry-point name and target, and its distribution."""

    name: str
    value: str
    distribution: str | None
    version: str | None


_VERSION = re.compile(r"^(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?$")


def parse_api_version(version: object) -> tuple[int, int]:
    """``"M.m"``, ``"M"`` or an int -> ``(major, minor)``; anything else raises ``PluginError``."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        return version, 0
    if isinstance(version, str):
        match = _VERSION.match(version)
        if match:
            return int(match.group(1)), int(match.group(2) or 0)
    raise PluginError(f"invalid plugin api_version {version!r}: expected 'major.minor'")


def check_api_version(version: object, *, name: str = "plugin") -> None:
    """Raise ``PluginError`` naming both versions unless ``version`` works with ``API_VERSION``."""
    try:
        major, minor = parse_api_version(version)
    except PluginError as exc:
        raise PluginError(f"{name}: {exc.message}") from None
    our_major, our_minor = parse_api_version(API_VERSION)
    if major != our_major or minor > our_minor:
        raise PluginError(
            f"{name} needs kms_iface plugin API {major}.{minor}, but this kms_iface provides "
            f"{API_VERSION} (the major must match and the minor be at most {our_minor})"
        )


def list_plugins() -> list[PluginInfo]:
    """Every plugin declared by an installed distribution, sorted by name (nothing imported)."""
    return sorted(
        (_info(ep) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)),
        key=lambda info: (info.name, info.distribution or ""),
    )


def load_plugin(name: str) -> Plugin:
    """Import the plugin ``name``, check its API version and what it provides."""
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(
            sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
        )
        raise PluginError(f"no plugin named {name!r} (installed: {known or 'none'})")
    if len(found) > 1:
        dists = ", ".join(sorted(str(_info(ep).distribution) for ep in found))
        raise PluginError(f"plugin name {name!r} is declared by several distributions: {dists}")
    entry = found[0]
    label = f"plugin {name!r} ({entry.value})"
    try:
        target = entry.load()
    except Exception as exc:
        raise PluginError(f"{label} failed to import: {type(exc).__name__}: {exc}") from exc
    return _validate(target, name, label)


def _info(ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(
        ep.name, ep.value, dist.name if dist else None, dist.version if dist else None
    )


def _validate(target: Any, name: str, label: str) -> Plugin:
    if not hasattr(target, "api_version"):
        raise PluginError(f"{label} has no api_version")
    check_api_version(target.api_version, name=label)
    provided: dict[str, type] = {}
    for attribute, contract in _PROVIDES.items():
        value = getattr(target, attribute, None)
        if value is None:
            continue
        if not (isinstance(value, type) and issubclass(value, contract)):
            raise PluginError(
                f"{label}: {attribute} must be a subclass of {contract.__module__}."
                f"{contract.__qualname__}, got {_describe(value)}"
            )
        provided[attribute] = value
    if not provided:
        raise PluginError(f"{label} provides nothing (no {', '.join(_PROVIDES)})")
    return Plugin(api_version=target.api_version, name=name, **provided)


def _describe(value: object) -> str:
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    return f"a {type(value).__name__}"
