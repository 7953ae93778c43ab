"""Plugin discovery through real entry points: tiny dist-info directories on sys.path."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kms_iface import InterfaceError
from kms_iface.hsm_oracle import HsmEncryptionOracle
from kms_iface.plugins import (
    API_VERSION,
    ENTRY_POINT_GROUP,
    Plugin,
    PluginError,
    check_api_version,
    list_plugins,
    load_plugin,
    parse_api_version,
)

Install = Callable[..., str]

PLUGIN_MODULE = """\
from kms_iface.hsm import HSM
from kms_iface.hsm_oracle import HsmEncryptionOracle
from kms_iface.plugins import Plugin


class DemoHsm(HSM):  # abstract: only the class is checked
    pass


plugin = Plugin(api_version={version!r}, hsm=DemoHsm, oracle=HsmEncryptionOracle)
"""


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(entry_points={name: "module:attr"}, modules={module: source})`` -> dist name.

    Writes ``<dist>-1.2.3.dist-info`` (METADATA and entry_points.txt) and the modules into a
    directory on sys.path; importlib.metadata discovers it like an installed distribution.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    imported: list[str] = []

    def _install(
        *,
        entry_points: dict[str, str],
        modules: dict[str, str] | None = None,
        version: str = "1.2.3",
    ) -> str:
        dist = f"kms_iface_test_plugin_{uuid.uuid4().hex[:8]}"
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = [f"{name} = {value}" for name, value in entry_points.items()]
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            imported.append(module)
        importlib.invalidate_caches()
        return dist

    yield _install
    for module in imported:
        sys.modules.pop(module, None)


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def test_compatible_plugin_is_listed_and_loads(install: Install) -> None:
    name, module = unique("demo"), unique("kms_demo_plugin")
    dist = install(
        entry_points={name: f"{module}:plugin"},
        modules={module: PLUGIN_MODULE.format(version=API_VERSION)},
    )
    [info] = [p for p in list_plugins() if p.name == name]
    assert (info.value, info.distribution, info.version) == (f"{module}:plugin", dist, "1.2.3")
    assert module not in sys.modules  # listing imports nothing

    plugin = load_plugin(name)
    assert isinstance(plugin, Plugin)
    assert plugin.name == name
    assert plugin.api_version == API_VERSION
    assert plugin.hsm is not None and plugin.hsm.__name__ == "DemoHsm"
    assert plugin.oracle is HsmEncryptionOracle
    assert plugin.objects_store is None and plugin.permissions_store is None


def test_a_module_can_be_the_plugin(install: Install) -> None:
    name, module = unique("modplug"), unique("kms_module_plugin")
    major = parse_api_version(API_VERSION)[0]
    source = f"""\
        from kms_iface.hsm_oracle import HsmEncryptionOracle
        api_version = {major}
        oracle = HsmEncryptionOracle
    """
    install(entry_points={name: module}, modules={module: source})
    plugin = load_plugin(name)
    assert plugin.api_version == major
    assert plugin.oracle is HsmEncryptionOracle


@pytest.mark.parametrize("theirs", ["2.0", "0.9", "1.1", "1.10", 2])
def test_incompatible_api_version_is_refused_naming_both(install: Install, theirs: str) -> None:
    name, module = unique("future"), unique("kms_future_plugin")
    install(
        entry_points={name: f"{module}:plugin"},
        modules={module: PLUGIN_MODULE.format(version=theirs)},
    )
    with pytest.raises(PluginError) as info:
        load_plugin(name)
    message = str(info.value)
    shown = f"{theirs}.0" if isinstance(theirs, int) else theirs
    assert f"plugin API {shown}" in message
    assert f"provides {API_VERSION}" in message
    assert repr(name) in message
    assert isinstance(info.value, InterfaceError)


@pytest.mark.parametrize("bad", ["one", "1.0.0", "v1", "", "-1", "01.0"])
def test_malformed_api_version(install: Install, bad: str) -> None:
    name, module = unique("badver"), unique("kms_badver_plugin")
    install(
        entry_points={name: f"{module}:plugin"},
        modules={module: PLUGIN_MODULE.format(version=bad)},
    )
    with pytest.raises(PluginError, match=f"invalid plugin api_version {bad!r}"):
        load_plugin(name)


def test_import_failure_names_the_plugin(install: Install) -> None:
    name, module = unique("broken"), unique("kms_broken_plugin")
    install(
        entry_points={name: f"{module}:plugin"},
        modules={module: "import kms_iface_no_such_module_xyz\n"},
    )
    with pytest.raises(PluginError) as info:
        load_plugin(name)
    message = str(info.value)
    assert f"plugin {name!r} ({module}:plugin) failed to import" in message
    assert "ModuleNotFoundError" in message and "kms_iface_no_such_module_xyz" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_error_raised_while_importing_is_wrapped(install: Install) -> None:
    name, module = unique("raises"), unique("kms_raising_plugin")
    install(entry_points={name: f"{module}:plugin"}, modules={module: "1 / 0\n"})
    with pytest.raises(PluginError, match="failed to import: ZeroDivisionError"):
        load_plugin(name)


def test_missing_module_and_missing_attribute(install: Install) -> None:
    gone, missing_attr, module = unique("gone"), unique("noattr"), unique("kms_empty_plugin")
    install(
        entry_points={gone: f"{unique('nowhere')}:plugin", missing_attr: f"{module}:plugin"},
        modules={module: "x = 1\n"},
    )
    with pytest.raises(PluginError, match=f"plugin {gone!r}.*failed to import"):
        load_plugin(gone)
    with pytest.raises(PluginError, match=f"plugin {missing_attr!r}.*AttributeError"):
        load_plugin(missing_attr)


def test_plugin_without_api_version_or_without_anything(install: Install) -> None:
    no_version, nothing, module = unique("nov"), unique("nothing"), unique("kms_half_plugin")
    source = """\
        class NoVersion:
            oracle = None

        class Nothing:
            api_version = "1.0"
    """
    install(
        entry_points={no_version: f"{module}:NoVersion", nothing: f"{module}:Nothing"},
        modules={module: source},
    )
    with pytest.raises(PluginError, match="has no api_version"):
        load_plugin(no_version)
    with pytest.raises(PluginError, match="provides nothing"):
        load_plugin(nothing)


def test_provided_object_of_the_wrong_kind(install: Install) -> None:
    name, module = unique("wrong"), unique("kms_wrong_plugin")
    source = """\
        from kms_iface.hsm_oracle import HsmEncryptionOracle

        api_version = "1.0"
        hsm = HsmEncryptionOracle  # an oracle is not an HSM
    """
    install(entry_points={name: module}, modules={module: source})
    with pytest.raises(PluginError) as info:
        load_plugin(name)
    assert "hsm must be a subclass of kms_iface.hsm.HSM" in str(info.value)
    assert "class kms_iface.hsm_oracle.HsmEncryptionOracle" in str(info.value)


def test_unknown_plugin_name(install: Install) -> None:
    name, module = unique("known"), unique("kms_known_plugin")
    install(
        entry_points={name: f"{module}:plugin"},
        modules={module: PLUGIN_MODULE.format(version=API_VERSION)},
    )
    with pytest.raises(PluginError, match=r"no plugin named 'nope' \(installed: .*" + name):
        load_plugin("nope")


def test_same_name_in_two_distributions_is_ambiguous(install: Install) -> None:
    name, module = unique("twice"), unique("kms_twice_plugin")
    first = install(
        entry_points={name: f"{module}:plugin"},
        modules={module: PLUGIN_MODULE.format(version=API_VERSION)},
    )
    second = install(entry_points={name: f"{module}:plugin"})
    assert len([p for p in list_plugins() if p.name == name]) == 2
    with pytest.raises(PluginError, match="several distributions") as info:
        load_plugin(name)
    assert first in str(info.value) and second in str(info.value)


def test_version_helpers() -> None:
    assert parse_api_version("1.0") == (1, 0)
    assert parse_api_version("3") == (3, 0)
    assert parse_api_version(2) == (2, 0)
    for bad in (True, -1, 1.0, None, "1.x"):
        with pytest.raises(PluginError):
            parse_api_version(bad)
    check_api_version(API_VERSION)
    major, minor = parse_api_version(API_VERSION)
    check_api_version(f"{major}.{minor}")
    check_api_version(major)
    with pytest.raises(PluginError, match=f"my-plugin needs kms_iface plugin API {major + 1}.0"):
        check_api_version(major + 1, name="my-plugin")
