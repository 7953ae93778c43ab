"""The TOML configuration: default store, HSM instances and their slots.

``load_config(path)`` / ``parse_config(text)`` decode a file shaped like
``config-example.toml`` into frozen msgspec structs. Unknown keys, wrong types and inconsistent
values raise ``ConfigError`` (an ``InvalidRequestError``) naming the file and the TOML path of the
bad field, e.g. ``Invalid Request: kms.toml: hsm_instances[0].slots[1].id: expected an integer
>= 0``. Secrets never appear in a message or a repr.

Secrets: a slot password (literal ``password`` or ``password_env``, the name of an environment
variable read at load) becomes a ``SecretBytes``; ``"<NO_LOGIN>"`` (in the file or in the
variable) means "do not log in" and gives ``None``. A literal TOML string cannot be wiped: prefer
``password_env``, and call ``Config.zeroize()`` once the passwords have been handed over.

File permissions (``load_config`` only): a file writable by group or others always draws a
``ConfigPermissionWarning`` (whoever can write it chooses the PKCS#11 library that gets loaded);
a file readable by group or others draws one when it holds a literal secret (a slot password, or a
``dsn`` carrying a password).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from kms_iface.errors import InvalidRequestError
from kms_iface.pkcs11.profiles import (
    DEFAULT_CALL_TIMEOUT,
    MAX_CALL_TIMEOUT,
    PROFILES,
    check_call_timeout,
)
from kms_iface.secrets import SecretBytes

__all__ = [
    "HSM_MODELS",
    "NO_LOGIN",
    "STORE_KINDS",
    "Config",
    "ConfigError",
    "ConfigPermissionWarning",
    "HsmInstanceConfig",
    "SlotConfig",
    "StoreConfig",
    "StoreKind",
    "hsm_prefixes",
    "load_config",
    "parse_config",
]

StoreKind = Literal["lmdb", "postgres"]
STORE_KINDS: Final[tuple[str, ...]] = get_args(StoreKind)
HSM_MODELS: Final[tuple[str, ...]] = tuple(PROFILES)
"""The vendor profiles an instance may name (``kms_iface.pkcs11.profiles``)."""
NO_LOGIN: Final = "<NO_LOGIN>"
"""The password value that means: use the slot without logging in."""
MAX_UNWRAP_CACHE: Final = 1_000_000
"""The largest ``unwrap_cache_size`` accepted (each entry holds one key in memory)."""

_MAX_SLOT_ID: Final = 2**63 - 1  # TOML integers are signed 64-bit


class ConfigError(InvalidRequestError):
    """A configuration that cannot be used; ``path`` is the TOML path, ``source`` the file."""

    def __init__(self, reason: str, *, path: str = "", source: str = "<string>") -> None:
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + reason)
        self.reason: str = reason
        self.path: str = path
        self.source: str = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_config_error, (self.reason, self.path, self.source))


def _rebuild_config_error(reason: str, path: str, source: str) -> ConfigError:
    return ConfigError(reason, path=path, source=source)


class ConfigPermissionWarning(UserWarning):
    """The configuration file is more open than its content allows."""


# ---------------------------------------------------------------------------------------------
# The file's shape (decoded first, secrets still plain strings), then the resolved structs.
# ---------------------------------------------------------------------------------------------


class _RawSlot(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0, le=_MAX_SLOT_ID)]
    password: str | None = None
    password_env: str | None = None


class _RawHsmInstance(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    slots: list[_RawSlot]
    library: str | None = None
    admins: list[str] = []
    prefix: str | None = None
    call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    """Seconds; a TOML file cannot say ``None``, so 0 there means no bound."""


class _RawStore(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    path: str | None = None
    dsn: str | None = None
    dsn_env: str | None = None


class _RawConfig(msgspec.Struct, forbid_unknown_fields=True):
    default_store: _RawStore
    vendor_id: str = "cosmian"
    key_encryption_key: str | None = None
    unwrap_cache_size: int = 0
    hsm_instances: list[_RawHsmInstance] = []


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The default store: ``lmdb`` with a directory ``path``, or ``postgres`` with a DSN.

    ``dsn`` is the resolved DSN (from the file, or from the variable ``dsn_env``); it may carry a
    password, so the repr never shows it.
    """

    kind: StoreKind
    path: str | None = None
    dsn: str | None = None
    dsn_env: str | None = None

    def __repr__(self) -> str:
        if self.kind == "lmdb":
            return f"StoreConfig(kind='lmdb', path={self.path!r})"
        origin = f"dsn_env={self.dsn_env!r}" if self.dsn_env else "dsn=<hidden>"
        return f"StoreConfig(kind='postgres', {origin})"


class SlotConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A slot and its PIN (``password=None``: no login); ``password_env`` names its origin."""

    id: int
    password: SecretBytes | None
    password_env: str | None = None

    @property
    def login(self) -> bool:
        """Whether the slot is logged in (its password is not ``<NO_LOGIN>``)."""
        return self.password is not None

    def __repr__(self) -> str:
        if self.password is None:
            secret = "<NO_LOGIN>"
        elif self.password_env is not None:
            secret = f"<from ${self.password_env}>"
        else:
            secret = "<hidden>"
        return f"SlotConfig(id={self.id}, password={secret})"


class HsmInstanceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One PKCS#11 module: its vendor profile, optional library path, admins, prefix and slots.

    ``library=None`` leaves the choice to the vendor profile (its path or environment variable);
    ``prefix=None`` lets ``hsm_prefixes`` compute it.
    """

    model: str
    """A vendor profile name (one of ``HSM_MODELS``)."""
    slots: list[SlotConfig]
    library: str | None = None
    admins: list[str] = []
    prefix: str | None = None
    call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    """Seconds each HSM call may take (``None``: no bound); see ``Pkcs11Hsm``."""

    def passwords(self) -> dict[int, SecretBytes | None]:
        """Slot id -> PIN (``None``: no login), as an HSM constructor takes them."""
        return {slot.id: slot.password for slot in self.slots}


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A whole configuration; ``source`` is the file it came from (for messages).

    ``key_encryption_key``: the uid of a key (an HSM key, typically) that wraps every key created
    in the default store before it is stored; ``unwrap_cache_size``: how many unwrapped keys the
    router keeps in memory (0: none).
    """

    default_store: StoreConfig
    vendor_id: str = "cosmian"
    key_encryption_key: str | None = None
    unwrap_cache_size: int = 0
    hsm_instances: list[HsmInstanceConfig] = []
    source: str = "<string>"

    def zeroize(self) -> None:
        """Wipe every slot password held by this configuration."""
        for instance in self.hsm_instances:
            for slot in instance.slots:
                if slot.password is not None:
                    slot.password.zeroize()


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, decode and check the TOML file at ``path`` (permission warnings: module doc)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", source=source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the configuration is not valid UTF-8", source=source) from None
    config, has_literal_secret = _parse(text, source)
    _check_permissions(source, mode, has_literal_secret)
    return config


def parse_config(text: str, source: str = "<string>") -> Config:
    """Decode and check TOML ``text``; ``source`` names it in error messages."""
    return _parse(text, source)[0]


def hsm_prefixes(config: Config) -> list[str]:
    """The uid prefix of each HSM instance, in order.

    An explicit ``prefix`` wins. Otherwise a lone instance gets ``hsm``; with several, the n-th
    instance of a model (counted over all instances of that model, in file order) gets
    ``hsm::<model>`` for n = 0 and ``hsm::<model>_<n>`` after. Duplicates raise ``ConfigError``.
    """
    return _prefixes(config.hsm_instances, config.source)


def _parse(text: str, source: str) -> tuple[Config, bool]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, never the offending text.
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    try:
        raw = msgspec.convert(document, _RawConfig)
    except msgspec.ValidationError as exc:
        path, reason = _describe(str(exc))
        raise ConfigError(reason, path=path, source=source) from None
    return _resolve(raw, source)


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"field `(?P<name>[^`]*)`")


def _describe(message: str) -> tuple[str, str]:
    """msgspec's ``<what> - at `$.a[0].b``` -> (TOML path, reason in plain words)."""
    match = _AT.match(message)
    what = match.group("what") if match else message
    path = ((match.group("path") if match else None) or "").removeprefix(".")
    field = _FIELD.search(what)
    if what.startswith("Object contains unknown field") and field:
        return _join(path, field.group("name")), "unknown key"
    if what.startswith("Object missing required field") and field:
        return _join(path, field.group("name")), "required key is missing"
    if what.startswith("Expected `int` >= 0"):
        return path, "expected an integer >= 0"
    if what.startswith("Expected `int` <="):
        return path, f"expected an integer <= {_MAX_SLOT_ID}"
    if what.startswith("Expected `object`"):
        return path, "expected a table"
    if what.startswith("Expected `array`"):
        return path, "expected an array"
    if what.startswith("Expected `"):
        # "Expected `str | null`, got `int`": types only, never the value.
        return path, what[0].lower() + what[1:].replace(" | null", "")
    return path, what


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_Fail = Callable[[str, str], ConfigError]


def _resolve(raw: _RawConfig, source: str) -> tuple[Config, bool]:
    def fail(reason: str, path: str) -> ConfigError:
        return ConfigError(reason, path=path, source=source)

    literal_secret = False
    if not raw.vendor_id:
        raise fail("must not be empty", "vendor_id")
    if raw.key_encryption_key is not None and (
        not raw.key_encryption_key or not raw.key_encryption_key.isprintable()
    ):
        raise fail("must be a key uid (printable, not empty)", "key_encryption_key")
    if not 0 <= raw.unwrap_cache_size <= MAX_UNWRAP_CACHE:
        raise fail(f"must be between 0 and {MAX_UNWRAP_CACHE}", "unwrap_cache_size")
    store, literal_dsn = _resolve_store(raw.default_store, fail)
    literal_secret |= literal_dsn

    instances: list[HsmInstanceConfig] = []
    for i, inst in enumerate(raw.hsm_instances):
        where = f"hsm_instances[{i}]"
        if inst.model not in HSM_MODELS:
            raise fail(
                f"unknown model {inst.model!r} (one of: {', '.join(HSM_MODELS)})", f"{where}.model"
            )
        if inst.library is not None and not os.path.isabs(inst.library):
            raise fail("must be an absolute path", f"{where}.library")
        for a, admin in enumerate(inst.admins):
            if not admin:
                raise fail("an admin name must not be empty", f"{where}.admins[{a}]")
        if inst.prefix is not None:
            _check_prefix(inst.prefix, f"{where}.prefix", fail)
        call_timeout = inst.call_timeout or None
        try:
            check_call_timeout(call_timeout)
        except InvalidRequestError:
            raise fail(
                f"must be more than 0 and at most {MAX_CALL_TIMEOUT:g} seconds (0: no bound)",
                f"{where}.call_timeout",
            ) from None
        if not inst.slots:
            raise fail("at least one slot is required", f"{where}.slots")
        slots: list[SlotConfig] = []
        seen: set[int] = set()
        for s, raw_slot in enumerate(inst.slots):
            slot_where = f"{where}.slots[{s}]"
            if raw_slot.id in seen:
                raise fail(f"slot {raw_slot.id} is listed twice", f"{slot_where}.id")
            seen.add(raw_slot.id)
            slot, literal = _resolve_slot(raw_slot, slot_where, fail)
            literal_secret |= literal
            slots.append(slot)
        instances.append(
            HsmInstanceConfig(
                model=inst.model,
                slots=slots,
                library=inst.library,
                admins=list(inst.admins),
                prefix=inst.prefix,
                call_timeout=call_timeout,
            )
        )
    config = Config(
        default_store=store,
        vendor_id=raw.vendor_id,
        key_encryption_key=raw.key_encryption_key,
        unwrap_cache_size=raw.unwrap_cache_size,
        hsm_instances=instances,
        source=source,
    )
    hsm_prefixes(config)  # duplicates are a configuration error
    return config, literal_secret


def _resolve_store(raw: _RawStore, fail: _Fail) -> tuple[StoreConfig, bool]:
    where = "default_store"
    if raw.kind not in STORE_KINDS:
        raise fail(f"unknown kind {raw.kind!r} (one of: {', '.join(STORE_KINDS)})", f"{where}.kind")
    if raw.kind == "lmdb":
        for key in ("dsn", "dsn_env"):
            if getattr(raw, key) is not None:
                raise fail("not allowed for kind 'lmdb'", f"{where}.{key}")
        if not raw.path:
            raise fail("required for kind 'lmdb' (a directory)", f"{where}.path")
        return StoreConfig(kind="lmdb", path=raw.path), False
    if raw.path is not None:
        raise fail("not allowed for kind 'postgres' (use dsn or dsn_env)", f"{where}.path")
    if raw.dsn is not None and raw.dsn_env is not None:
        raise fail("give dsn or dsn_env, not both", f"{where}.dsn_env")
    if raw.dsn_env is not None:
        dsn = _from_environment(raw.dsn_env, f"{where}.dsn_env", fail)
        return StoreConfig(kind="postgres", dsn=dsn, dsn_env=raw.dsn_env), False
    if not raw.dsn:
        raise fail("kind 'postgres' needs dsn or dsn_env", f"{where}.dsn")
    return StoreConfig(kind="postgres", dsn=raw.dsn), _dsn_has_password(raw.dsn)


def _resolve_slot(raw: _RawSlot, where: str, fail: _Fail) -> tuple[SlotConfig, bool]:
    if raw.password is not None and raw.password_env is not None:
        raise fail("give password or password_env, not both", f"{where}.password_env")
    if raw.password_env is not None:
        value = _from_environment(raw.password_env, f"{where}.password_env", fail)
        secret = None if value == NO_LOGIN else SecretBytes(value.encode())
        return SlotConfig(id=raw.id, password=secret, password_env=raw.password_env), False
    if raw.password is None:
        raise fail(
            f"a slot needs password, password_env or password = {NO_LOGIN!r}", f"{where}.password"
        )
    if raw.password == NO_LOGIN:
        return SlotConfig(id=raw.id, password=None), False
    return SlotConfig(id=raw.id, password=SecretBytes(raw.password.encode())), True


def _from_environment(name: str, path: str, fail: _Fail) -> str:
    if not name:
        raise fail("must name an environment variable", path)
    value = os.environ.get(name)
    if value is None:
        raise fail(f"environment variable {name} is not set", path)
    return value


def _dsn_has_password(dsn: str) -> bool:
    """Whether a libpq DSN (URI or key=value form) carries a password."""
    if re.search(r"(?i)(^|\s)password\s*=", dsn):
        return True
    return re.match(r"(?i)^postgres(?:ql)?://[^/@?#]*:[^/@?#]*@", dsn) is not None


def _check_prefix(prefix: str, path: str, fail: _Fail) -> None:
    if not prefix or any(not part for part in prefix.split("::")):
        raise fail("a prefix is non-empty words joined by '::' (e.g. 'hsm::utimaco')", path)
    if not prefix.isprintable() or any(c.isspace() for c in prefix):
        raise fail("a prefix must not contain white space or control characters", path)


def _prefixes(instances: list[HsmInstanceConfig], source: str) -> list[str]:
    seen_per_model: dict[str, int] = {}
    result: list[str] = []
    owner: dict[str, int] = {}
    for i, inst in enumerate(instances):
        n = seen_per_model.get(inst.model, 0)
        seen_per_model[inst.model] = n + 1
        if inst.prefix is not None:
            prefix = inst.prefix
        elif len(instances) == 1:
            prefix = "hsm"
        else:
            prefix = f"hsm::{inst.model}" if n == 0 else f"hsm::{inst.model}_{n}"
        if prefix in owner:
            raise ConfigError(
                f"prefix {prefix!r} is already used by hsm_instances[{owner[prefix]}]",
                path=f"hsm_instances[{i}].prefix",
                source=source,
            )
        owner[prefix] = i
        result.append(prefix)
    return result


def _check_permissions(source: str, mode: int, has_literal_secret: bool) -> None:
    problems: list[str] = []
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(
            "is writable by group or others (whoever can write it chooses the PKCS#11 library "
            "that gets loaded)"
        )
    if has_literal_secret and mode & (stat.S_IRGRP | stat.S_IROTH):
        problems.append(
            "is readable by group or others and contains a literal secret (use password_env / "
            "dsn_env)"
        )
    if problems:
        warnings.warn(
            f"{source} (mode {stat.S_IMODE(mode):04o}) {' and '.join(problems)}: chmod 600 it",
            ConfigPermissionWarning,
            stacklevel=3,
        )
