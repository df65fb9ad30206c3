"""Loading plugins: the registry loads the built-ins like third parties, as often as a process asks."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

from kubitect_core.plugins import load_registry

ROOT = Path(__file__).resolve().parents[2]


def _builtin_entry_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    modules = config["project"]["entry-points"]["kubitect"].values()
    return sorted(m for m in modules if m.startswith("kubitect_plugins."))


@pytest.mark.parametrize("module_name", _builtin_entry_modules())
def test_an_entry_module_names_nothing_public_after_its_own_submodules(module_name):
    """A package attribute named like a submodule is replaced by that submodule once it is imported
    (the libvirt entry module's `provider()` function was, and a second registry load then called
    a module). Entry modules keep such names private."""
    package = importlib.import_module(module_name)
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    clashes = sorted(n for n in vars(package) if not n.startswith("_") and n in submodules
                     and not isinstance(getattr(package, n), type(package)))
    assert clashes == []


def test_the_registry_loads_twice_in_one_process_after_the_libvirt_provider_module_was_imported(monkeypatch):
    monkeypatch.delenv("KUBITECT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("KUBITECT_PLUGINS", raising=False)
    first = load_registry()
    importlib.import_module("kubitect_plugins.libvirt.provider")  # what the first run's stages did
    second = load_registry()
    assert [p.name for p in second.load_errors] == [] and [p.name for p in first.load_errors] == []
    assert second.providers["libvirt"] is first.providers["libvirt"]  # one provider (and connections) per process
    assert {"network", "storage", "vms"} <= set(vars(second.providers["libvirt"]))


def test_a_load_balancers_own_checks_come_and_go_with_it(monkeypatch):
    """keepalived-haproxy contributes its daemon and config checks itself; the generic suite checks
    only what any load balancer must do, so disabling the implementation takes its checks along."""
    monkeypatch.delenv("KUBITECT_PLUGINS", raising=False)
    monkeypatch.delenv("KUBITECT_DISABLE_PLUGINS", raising=False)
    own = [m for m in load_registry().conformance_modules() if Path(m).parent.name == "keepalived_haproxy"]
    assert [Path(m).name for m in own] == ["conformance_checks.py", "conformance_failover.py"]
    assert all(Path(m).is_file() for m in own)
    checks = Path(own[0]).read_text()
    assert "def test_load_balancer_services_are_active_and_enabled" in checks

    monkeypatch.setenv("KUBITECT_DISABLE_PLUGINS", "keepalived-haproxy")
    left = load_registry().conformance_modules()
    assert not [m for m in left if Path(m).parent.name == "keepalived_haproxy"]
    generic = next(Path(m) for m in left if Path(m).name == "test_loadbalancers.py").read_text()
    assert [w for w in ("haproxy -c", "keepalived -t", "systemctl") if w in generic] == []
