"""Plugins import kubitect only through its SDK, and never another plugin; the lint rule proves it.

Three checks, because a lint rule that silently stopped matching would look exactly like a clean
tree: every import in plugins/ and examples/plugins/ is read (AST) and judged here; the ruff
ban list is compared with the modules kubitect_core actually has (a new core module is banned
too, or this fails); and ruff is run on a copy of the tree with bad imports planted, and must
name each one.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIRS = (ROOT / "plugins", ROOT / "examples" / "plugins")
OURS = ("kubitect_core", "kubitect_plugins", "kubitect_stages", "kubitect_conformance")
SKIPPED_PARTS = {"build", "dist", "__pycache__"}


def plugin_files() -> list[Path]:
    files = []
    for base in PLUGIN_DIRS:
        files += [p for p in base.rglob("*.py")
                  if not SKIPPED_PARTS & set(p.relative_to(base).parts) and ".egg-info" not in str(p)]
    return sorted(files)


def _allowed(module: str) -> bool:
    return module == "kubitect_core.sdk" or module.startswith("kubitect_core.sdk.")


def import_problems(path: Path) -> list[str]:
    """Every import of kubitect outside the SDK in one file, with its line (also inside functions)."""
    problems = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in OURS and not _allowed(alias.name):
                    problems.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                problems.append(f"{path}:{node.lineno}: relative import out of the plugin ({'.' * node.level}"
                                f"{node.module or ''})")
            elif node.level == 0 and node.module and node.module.split(".")[0] in OURS:
                names = [a.name for a in node.names]
                if node.module == "kubitect_core":
                    bad = [n for n in names if n != "sdk"]
                    if bad:
                        problems.append(f"{path}:{node.lineno}: from kubitect_core import {', '.join(bad)}")
                elif not _allowed(node.module):
                    problems.append(f"{path}:{node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Call):  # importlib.import_module("kubitect_...") / __import__(...)
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                target = str(node.args[0].value)
                if target.split(".")[0] in OURS and not _allowed(target):
                    problems.append(f"{path}:{node.lineno}: {name}({target!r})")
    return problems


def test_the_scan_sees_every_plugin():
    names = {p.relative_to(base).parts[0] for p in plugin_files() for base in PLUGIN_DIRS if p.is_relative_to(base)}
    assert {"libvirt", "nspawn", "kubeadm", "k3s", "keepalived_haproxy", "kubitect-hello"} <= names


def test_plugins_import_kubitect_only_through_the_sdk():
    problems = [p for f in plugin_files() for p in import_problems(f)]
    assert problems == []


def test_the_scan_itself_catches_each_kind_of_bad_import(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("import kubitect_core.engine\n"
                       "from kubitect_core import paths\n"
                       "from kubitect_core.topology import Node\n"
                       "from kubitect_plugins.kubeadm import sources\n"
                       "from ..kubeadm import render\n"
                       "def f():\n"
                       "    import importlib\n"
                       "    return importlib.import_module('kubitect_plugins.libvirt.spec')\n"
                       "from kubitect_core.sdk import Change\n"
                       "from kubitect_core.sdk.kube import api_url\n"
                       "from . import spec\n")
    found = import_problems(planted)
    assert [int(p.split(":")[1]) for p in found] == [1, 2, 3, 4, 5, 8], found


def _banned() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"]


def test_the_ruff_ban_covers_every_core_module_but_the_sdk():
    """A core module added later is banned for plugins too, or this test names it."""
    core = ROOT / "kubitect_core"
    modules = {p.stem for p in core.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in core.iterdir() if (p / "__init__.py").is_file()}
    banned = set(_banned())
    assert "kubitect_core.sdk" not in banned and "kubitect_core" not in banned
    missing = sorted(f"kubitect_core.{m}" for m in modules - {"sdk"} if f"kubitect_core.{m}" not in banned)
    assert missing == [], "add these to [tool.ruff.lint.flake8-tidy-imports.banned-api] in pyproject.toml"
    assert {"kubitect_plugins", "kubitect_stages", "kubitect_conformance"} <= banned


def _ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def ruff_available():
    if _ruff("--version", cwd=ROOT).returncode != 0:
        pytest.skip("ruff is not installed in this environment (scripts/setup.sh installs the test extras)")


def test_ruff_finds_the_repository_clean_of_banned_imports(ruff_available):
    proc = _ruff("check", "--select", "TID", "--output-format", "json", *map(str, PLUGIN_DIRS), cwd=ROOT)
    assert json.loads(proc.stdout or "[]") == [], proc.stdout


def test_ruff_fails_on_bad_imports_planted_in_a_copy_of_the_tree(ruff_available, tmp_path):
    """The rule bites: in a copy of the repository's plugins and config, each planted import fails
    ruff with the banned name; the same import in core (stages/) passes, since core may use it."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(ROOT / "plugins", copy / "plugins", ignore=ignore)
    shutil.copytree(ROOT / "examples" / "plugins", copy / "examples" / "plugins", ignore=ignore)
    bad = ("from kubitect_core.engine import Engine\n"
           "from kubitect_plugins.kubeadm import sources\n"
           "from ..kubeadm import render\n"
           "import kubitect_core.config.resolve\n"
           "\n"
           "print(Engine, sources, render, kubitect_core.config.resolve)\n")
    targets = [copy / "plugins" / "k3s" / "planted.py",
               copy / "examples" / "plugins" / "kubitect-hello" / "kubitect_hello" / "planted.py"]
    for target in targets:
        target.write_text(bad)
    (copy / "stages").mkdir()
    (copy / "stages" / "planted.py").write_text("from kubitect_core.engine import Engine\n\nprint(Engine)\n")
    proc = _ruff("check", "--select", "TID", "--output-format", "json", "--no-cache", ".", cwd=copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = sorted((Path(d["filename"]).relative_to(copy).as_posix(), d["location"]["row"], d["code"])
                   for d in json.loads(proc.stdout))
    planted = ((1, "TID251"), (2, "TID251"), (3, "TID252"), (4, "TID251"), (6, "TID251"))  # 6: the use
    expected = sorted((t.relative_to(copy).as_posix(), row, code) for t in targets for row, code in planted)
    assert found == expected


def test_plugins_use_only_what_the_sdk_declares():
    """Every name a plugin imports from the SDK is in that module's __all__ (or is an SDK
    submodule), and the SDK's docstring describes every name it exports."""
    import importlib

    undeclared = []
    for path in plugin_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _allowed(node.module):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if alias.name not in getattr(module, "__all__", ()) and not _is_module(submodule):
                        undeclared.append(f"{path}:{node.lineno}: {node.module}.{alias.name}")
    assert undeclared == []
    sdk = importlib.import_module("kubitect_core.sdk")
    assert [n for n in sdk.__all__ if n not in sdk.__doc__] == []


def _is_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
