"""The TOML configuration: shape, every error path, secrets and file permissions."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest

from kms_iface import InvalidRequestError, SecretBytes
from kms_iface.config import (
    Config,
    ConfigError,
    ConfigPermissionWarning,
    hsm_prefixes,
    load_config,
    parse_config,
)
from kms_iface.pkcs11.profiles import DEFAULT_CALL_TIMEOUT

# A copy of the specification's config-example.toml (the spec pack is not shipped with the tests).
EXAMPLE = """\
# An example kms_iface configuration. Unknown keys are errors; every secret may come from the
# environment instead of the file (`*_env` keys name the variable).

vendor_id = "cosmian"                 # vendor id of the tag attribute

[default_store]
kind = "lmdb"                         # "lmdb" or "postgres"
path = "/var/lib/kms/store"           # lmdb: a directory
# dsn_env = "KMS_PG_DSN"              # postgres: the DSN, from the environment

[[hsm_instances]]
model = "softhsm2"
library = "/usr/lib/softhsm/libsofthsm2.so"   # optional
admins = ["admin@example.org"]        # exact user names, or "*"
prefix = "hsm"                        # optional: computed when absent

[[hsm_instances.slots]]
id = 0
password_env = "KMS_HSM_SLOT0_PIN"    # or password = "..." or password = "<NO_LOGIN>"

[[hsm_instances.slots]]
id = 1
password = "<NO_LOGIN>"
"""
SECRET = "s3cr3t-PIN-9f2a"
STORE = '[default_store]\nkind = "lmdb"\npath = "/var/lib/kms"\n'


def hsm(body: str = "", *, model: str = "softhsm2", slots: str | None = None) -> str:
    """One [[hsm_instances]] table with one slot (unless ``slots`` is given)."""
    slot_tables = (
        slots if slots is not None else f'[[hsm_instances.slots]]\nid = 0\npassword = "{SECRET}"\n'
    )
    return f'[[hsm_instances]]\nmodel = "{model}"\n{body}\n{slot_tables}'


def error_of(text: str, source: str = "kms.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    error = info.value
    assert isinstance(error, InvalidRequestError)
    assert SECRET not in str(error)
    assert str(error).startswith(f"Invalid Request: {source}: ")
    return error


# --------------------------------------------------------------------------------------------
# The example file and the resolved values
# --------------------------------------------------------------------------------------------


def test_example_file_parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KMS_HSM_SLOT0_PIN", SECRET)
    copy = tmp_path / "kms.toml"
    copy.write_text(EXAMPLE)
    copy.chmod(0o644)  # no literal secret: world-readable is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigPermissionWarning)
        config = load_config(copy)
    assert config.vendor_id == "cosmian"
    assert config.source == str(copy)
    assert config.default_store.kind == "lmdb"
    assert config.default_store.path == "/var/lib/kms/store"
    [instance] = config.hsm_instances
    assert instance.model == "softhsm2"
    assert instance.library == "/usr/lib/softhsm/libsofthsm2.so"
    assert instance.admins == ["admin@example.org"]
    assert instance.prefix == "hsm"
    slot0, slot1 = instance.slots
    assert slot0.id == 0 and slot0.login and slot0.password_env == "KMS_HSM_SLOT0_PIN"
    assert isinstance(slot0.password, SecretBytes)
    assert bytes(slot0.password) == SECRET.encode()
    assert slot1.id == 1 and not slot1.login and slot1.password is None
    assert instance.passwords() == {0: slot0.password, 1: None}
    assert hsm_prefixes(config) == ["hsm"]
    assert SECRET not in repr(config)


def test_defaults() -> None:
    config = parse_config(STORE)
    assert config == Config(default_store=config.default_store, source="<string>")
    assert config.vendor_id == "cosmian"
    assert config.hsm_instances == []
    assert hsm_prefixes(config) == []
    assert config.key_encryption_key is None
    assert config.unwrap_cache_size == 0


def test_key_encryption_key_and_cache() -> None:
    config = parse_config('key_encryption_key = "hsm::0::kek"\nunwrap_cache_size = 64\n' + STORE)
    assert config.key_encryption_key == "hsm::0::kek"
    assert config.unwrap_cache_size == 64


def test_instance_defaults() -> None:
    [instance] = parse_config(STORE + hsm()).hsm_instances
    assert instance.library is None
    assert instance.admins == []
    assert instance.prefix is None
    assert instance.call_timeout == DEFAULT_CALL_TIMEOUT


@pytest.mark.parametrize(("value", "expected"), [("2.5", 2.5), ("600", 600.0), ("0", None)])
def test_call_timeout(value: str, expected: float | None) -> None:
    [instance] = parse_config(STORE + hsm(f"call_timeout = {value}")).hsm_instances
    assert instance.call_timeout == expected


def test_literal_password_is_wipeable_and_hidden() -> None:
    config = parse_config(STORE + hsm())
    slot = config.hsm_instances[0].slots[0]
    assert slot.password is not None
    assert bytes(slot.password) == SECRET.encode()
    assert slot.password_env is None
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert "password=<hidden>" in repr(slot)
    config.zeroize()
    assert slot.password.zeroized


def test_no_login_in_file_and_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIN_VAR", "<NO_LOGIN>")
    slots = (
        '[[hsm_instances.slots]]\nid = 3\npassword = "<NO_LOGIN>"\n'
        '[[hsm_instances.slots]]\nid = 4\npassword_env = "PIN_VAR"\n'
    )
    [instance] = parse_config(STORE + hsm(slots=slots)).hsm_instances
    assert instance.passwords() == {3: None, 4: None}
    assert "password=<NO_LOGIN>" in repr(instance.slots[0])


def test_postgres_store(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = f"postgresql://kms:{SECRET}@db/kms"
    config = parse_config(f'[default_store]\nkind = "postgres"\ndsn = "{dsn}"\n')
    assert config.default_store.dsn == dsn
    assert SECRET not in repr(config)
    monkeypatch.setenv("KMS_PG_DSN", dsn)
    config = parse_config('[default_store]\nkind = "postgres"\ndsn_env = "KMS_PG_DSN"\n')
    assert config.default_store.dsn == dsn
    assert config.default_store.dsn_env == "KMS_PG_DSN"
    assert SECRET not in repr(config)


# --------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("colour = 1\n" + STORE, "colour"),
        (STORE + "extra = 1\n", "default_store.extra"),
        (STORE + hsm("vendor = 'x'"), "hsm_instances[0].vendor"),
        (
            STORE + hsm(slots=f'[[hsm_instances.slots]]\nid = 0\npassword = "{SECRET}"\npin = 1\n'),
            "hsm_instances[0].slots[0].pin",
        ),
    ],
)
def test_unknown_key_at_each_level(text: str, path: str) -> None:
    error = error_of(text)
    assert error.path == path
    assert error.reason == "unknown key"
    assert str(error) == f"Invalid Request: kms.toml: {path}: unknown key"


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("", "default_store", "required key is missing"),
        ('[default_store]\npath = "/x"\n', "default_store.kind", "required key is missing"),
        ('[default_store]\nkind = "mysql"\n', "default_store.kind", "unknown kind 'mysql'"),
        ('[default_store]\nkind = "lmdb"\n', "default_store.path", "required for kind 'lmdb'"),
        ('[default_store]\nkind = "lmdb"\npath = ""\n', "default_store.path", "required"),
        (
            '[default_store]\nkind = "lmdb"\npath = "/x"\ndsn = "postgresql://db"\n',
            "default_store.dsn",
            "not allowed for kind 'lmdb'",
        ),
        ('[default_store]\nkind = "postgres"\n', "default_store.dsn", "needs dsn or dsn_env"),
        (
            '[default_store]\nkind = "postgres"\npath = "/x"\n',
            "default_store.path",
            "not allowed for kind 'postgres'",
        ),
        (
            '[default_store]\nkind = "postgres"\ndsn = "postgresql://db"\ndsn_env = "X"\n',
            "default_store.dsn_env",
            "not both",
        ),
        ("default_store = 3\n", "default_store", "expected a table"),
        ('vendor_id = ""\n' + STORE, "vendor_id", "must not be empty"),
        ("vendor_id = 7\n" + STORE, "vendor_id", "expected `str`, got `int`"),
        ("hsm_instances = 1\n" + STORE, "hsm_instances", "expected an array"),
        (STORE + hsm(model="thales"), "hsm_instances[0].model", "unknown model 'thales'"),
        (STORE + hsm('library = "libsofthsm2.so"'), "hsm_instances[0].library", "absolute path"),
        (STORE + hsm('admins = [""]'), "hsm_instances[0].admins[0]", "must not be empty"),
        (STORE + hsm(slots=""), "hsm_instances[0].slots", "required key is missing"),
        (STORE + hsm("slots = []", slots=""), "hsm_instances[0].slots", "at least one slot"),
        (STORE + hsm('prefix = ""'), "hsm_instances[0].prefix", "non-empty words"),
        (STORE + hsm('prefix = "hsm::"'), "hsm_instances[0].prefix", "non-empty words"),
        (STORE + hsm('prefix = "my hsm"'), "hsm_instances[0].prefix", "white space"),
        (STORE + hsm('prefix = "hsm\\u0000x"'), "hsm_instances[0].prefix", "control characters"),
        ('key_encryption_key = ""\n' + STORE, "key_encryption_key", "not empty"),
        ('key_encryption_key = "a\\tb"\n' + STORE, "key_encryption_key", "printable"),
        ("unwrap_cache_size = -1\n" + STORE, "unwrap_cache_size", "between 0 and 1000000"),
        ("unwrap_cache_size = 1000001\n" + STORE, "unwrap_cache_size", "between 0 and"),
        (STORE + hsm("call_timeout = -1"), "hsm_instances[0].call_timeout", "more than 0"),
        (STORE + hsm("call_timeout = 1e9"), "hsm_instances[0].call_timeout", "at most 86400"),
        (STORE + hsm("call_timeout = nan"), "hsm_instances[0].call_timeout", "more than 0"),
        (STORE + hsm('call_timeout = "5"'), "hsm_instances[0].call_timeout", "got `str`"),
    ],
)
def test_bad_values(text: str, path: str, reason: str) -> None:
    error = error_of(text)
    assert error.path == path
    assert reason in error.reason
    assert f"kms.toml: {path}: " in str(error)


@pytest.mark.parametrize(
    ("slot", "reason"),
    [
        ("id = -1", "expected an integer >= 0"),
        ('id = "0"', "expected `int`, got `str`"),
        ("id = 1.5", "expected `int`, got `float`"),
        ("id = true", "expected `int`, got `bool`"),
    ],
)
def test_bad_slot_id(slot: str, reason: str) -> None:
    text = STORE + hsm(slots=f'[[hsm_instances.slots]]\n{slot}\npassword = "{SECRET}"\n')
    error = error_of(text)
    assert error.path == "hsm_instances[0].slots[0].id"
    assert error.reason == reason


def test_missing_slot_id() -> None:
    error = error_of(STORE + hsm(slots=f'[[hsm_instances.slots]]\npassword = "{SECRET}"\n'))
    assert error.path == "hsm_instances[0].slots[0].id"


def test_duplicate_slot_id() -> None:
    slots = (
        f'[[hsm_instances.slots]]\nid = 2\npassword = "{SECRET}"\n'
        '[[hsm_instances.slots]]\nid = 2\npassword = "<NO_LOGIN>"\n'
    )
    error = error_of(STORE + hsm(slots=slots))
    assert error.path == "hsm_instances[0].slots[1].id"
    assert "slot 2 is listed twice" in error.reason


def test_password_and_password_env_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIN_VAR", SECRET)
    slots = f'[[hsm_instances.slots]]\nid = 0\npassword = "{SECRET}"\npassword_env = "PIN_VAR"\n'
    error = error_of(STORE + hsm(slots=slots))
    assert error.path == "hsm_instances[0].slots[0].password_env"
    assert "not both" in error.reason


def test_slot_without_any_password() -> None:
    error = error_of(STORE + hsm(slots="[[hsm_instances.slots]]\nid = 0\n"))
    assert error.path == "hsm_instances[0].slots[0].password"
    assert "<NO_LOGIN>" in error.reason


def test_password_of_wrong_type_does_not_echo_it() -> None:
    error = error_of(STORE + hsm(slots="[[hsm_instances.slots]]\nid = 0\npassword = 12345678\n"))
    assert error.path == "hsm_instances[0].slots[0].password"
    assert error.reason == "expected `str`, got `int`"
    assert "12345678" not in str(error)


def test_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMS_TEST_UNSET_PIN", raising=False)
    slots = '[[hsm_instances.slots]]\nid = 0\npassword_env = "KMS_TEST_UNSET_PIN"\n'
    error = error_of(STORE + hsm(slots=slots))
    assert error.path == "hsm_instances[0].slots[0].password_env"
    assert error.reason == "environment variable KMS_TEST_UNSET_PIN is not set"
    monkeypatch.delenv("KMS_TEST_UNSET_DSN", raising=False)
    error = error_of('[default_store]\nkind = "postgres"\ndsn_env = "KMS_TEST_UNSET_DSN"\n')
    assert error.path == "default_store.dsn_env"
    assert "KMS_TEST_UNSET_DSN" in error.reason


def test_environment_value_never_in_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIN_VAR", SECRET)
    slots = '[[hsm_instances.slots]]\nid = 0\npassword_env = "PIN_VAR"\n'
    error = error_of(STORE + hsm(model="nope", slots=slots))
    assert "PIN_VAR" not in str(error)
    config = parse_config(STORE + hsm(slots=slots))
    assert "password=<from $PIN_VAR>" in repr(config)
    assert SECRET not in repr(config)


def test_invalid_toml_names_the_file_not_the_content() -> None:
    error = error_of(f'{STORE}[[hsm_instances]]\npassword = "{SECRET}\n')
    assert error.path == ""
    assert error.reason.startswith("invalid TOML: ")
    assert "line 5" in error.reason


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the configuration"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"vendor_id = '\xff'\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(bad)


def test_config_error_pickles() -> None:
    error = error_of(STORE + "extra = 1\n")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, ConfigError)
    assert (again.reason, again.path, again.source) == (error.reason, error.path, error.source)
    assert str(again) == str(error)


# --------------------------------------------------------------------------------------------
# Prefixes
# --------------------------------------------------------------------------------------------


def prefixes_of(*instances: str) -> list[str]:
    return hsm_prefixes(parse_config(STORE + "".join(instances)))


def test_single_instance_is_hsm() -> None:
    assert prefixes_of(hsm(model="utimaco")) == ["hsm"]


def test_several_instances_by_model() -> None:
    assert prefixes_of(
        hsm(model="utimaco"), hsm(model="softhsm2"), hsm(model="utimaco"), hsm(model="utimaco")
    ) == ["hsm::utimaco", "hsm::softhsm2", "hsm::utimaco_1", "hsm::utimaco_2"]


def test_explicit_prefix_wins() -> None:
    assert prefixes_of(hsm('prefix = "vault"'), hsm(model="utimaco")) == [
        "vault",
        "hsm::utimaco",
    ]
    assert prefixes_of(hsm('prefix = "hsm::main::eu"', model="proteccio")) == ["hsm::main::eu"]
    # Explicit prefixes still count in the numbering of their model.
    assert prefixes_of(hsm('prefix = "a"'), hsm()) == ["a", "hsm::softhsm2_1"]


@pytest.mark.parametrize(
    ("instances", "path", "taken_by"),
    [
        ((hsm('prefix = "x"'), hsm('prefix = "x"')), "hsm_instances[1].prefix", 0),
        ((hsm(model="utimaco"), hsm('prefix = "hsm::utimaco"')), "hsm_instances[1].prefix", 0),
        ((hsm('prefix = "hsm::softhsm2_1"'), hsm()), "hsm_instances[1].prefix", 0),
    ],
)
def test_duplicate_prefixes(instances: tuple[str, ...], path: str, taken_by: int) -> None:
    error = error_of(STORE + "".join(instances))
    assert error.path == path
    assert f"already used by hsm_instances[{taken_by}]" in error.reason


# --------------------------------------------------------------------------------------------
# File permissions
# --------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "kms.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def permission_warnings(path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(path)
    found = [w for w in caught if issubclass(w.category, ConfigPermissionWarning)]
    for w in found:
        assert w.filename == __file__  # points at the caller of load_config
    return [str(w.message) for w in found]


def test_world_readable_file_with_a_password_warns(tmp_path: Path) -> None:
    path = write(tmp_path, STORE + hsm(), 0o644)
    [message] = permission_warnings(path)
    assert "mode 0644" in message and "readable by group or others" in message
    assert "literal secret" in message and str(path) in message
    assert SECRET not in message


def test_private_file_with_a_password_does_not_warn(tmp_path: Path) -> None:
    assert permission_warnings(write(tmp_path, STORE + hsm(), 0o600)) == []


def test_world_readable_file_without_a_secret_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIN_VAR", SECRET)
    slots = '[[hsm_instances.slots]]\nid = 0\npassword_env = "PIN_VAR"\n'
    assert permission_warnings(write(tmp_path, STORE + hsm(slots=slots), 0o644)) == []
    no_login = '[[hsm_instances.slots]]\nid = 0\npassword = "<NO_LOGIN>"\n'
    assert permission_warnings(write(tmp_path, STORE + hsm(slots=no_login), 0o644)) == []


def test_group_writable_file_always_warns(tmp_path: Path) -> None:
    [message] = permission_warnings(write(tmp_path, STORE, 0o664))
    assert "writable by group or others" in message and "mode 0664" in message


def test_dsn_with_a_password_counts_as_a_secret(tmp_path: Path) -> None:
    with_password = (
        f'[default_store]\nkind = "postgres"\ndsn = "postgresql://kms:{SECRET}@db/kms"\n'
    )
    [message] = permission_warnings(write(tmp_path, with_password, 0o640))
    assert SECRET not in message
    key_value = f'[default_store]\nkind = "postgres"\ndsn = "host=db password={SECRET}"\n'
    assert len(permission_warnings(write(tmp_path, key_value, 0o604))) == 1
    without = '[default_store]\nkind = "postgres"\ndsn = "postgresql://kms@db/kms"\n'
    assert permission_warnings(write(tmp_path, without, 0o644)) == []


def test_warning_can_be_made_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, STORE + hsm(), 0o644)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigPermissionWarning)
        with pytest.raises(ConfigPermissionWarning):
            load_config(path)
