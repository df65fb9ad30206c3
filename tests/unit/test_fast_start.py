"""Fast start: the quick commands import neither the heavy backends nor, where no config is read,
the config models.

`kubitect --version` and `kubitect validate` load every plugin's entry module (the registry
checks what each offers against the contract and `check_pending()` catches a misspelt hook), but
neither talks to a node or a hypervisor: asyncssh, libvirt, pycdlib, jinja2 and cryptography load
when a command first uses them (kubitect_core.sdk.lazy). These tests ask a fresh interpreter which
modules a command really imported; the timing itself is bench/cli_start_bench.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("asyncssh", "libvirt", "pycdlib", "jinja2", "cryptography")

# Runs the CLI in-process as the console script does, then reports what got imported.
_PROBE = """
import json, sys
sys.argv = ["kubitect", *json.loads(sys.argv[1])]
from kubitect_core.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("\\n@@MODULES@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _imported(*args: str, env: dict | None = None) -> tuple[int, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)
    out, _, tail = proc.stdout.rpartition("\n@@MODULES@@")
    assert tail, proc.stderr[-2000:]
    data = json.loads(tail)
    return data["code"], set(data["modules"]), out


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_version_imports_no_backend_and_no_config_models():
    code, modules, out = _imported("--version")
    assert code == 0 and "kubitect" in out
    assert _heavy(modules) == []
    assert not any(m.startswith("kubitect_core.config") for m in modules), "config models loaded for --version"
    assert "pydantic" not in modules


def test_help_imports_no_backend():
    code, modules, _ = _imported("--help")
    assert code == 0
    assert _heavy(modules) == []
    assert "kubitect_core.config.models" not in modules


def test_validate_loads_every_plugin_but_no_backend():
    code, modules, out = _imported("validate", str(REPO / "examples" / "ha.yaml"))
    assert code == 0, out
    assert "is valid" in out
    # The registry did load the plugins (their offers are checked), just not their backends.
    for plugin in ("kubitect_plugins.libvirt", "kubitect_plugins.kubeadm", "kubitect_plugins.keepalived_haproxy"):
        assert plugin in modules
    assert _heavy(modules) == []
    # Nor what only a run needs: the lab harness (nspawn reaches only its netns helpers),
    # kubeadm's API models (built when a kubeadm document is first checked), PyYAML (kubeconfigs
    # and Rook's manifests; the config itself is read by ruamel) and the topology picture's renderer.
    assert "kubitect_core.lab.harness" not in modules and "kubitect_plugins.kubeadm.api" not in modules
    assert "yaml" not in modules, "PyYAML imported by validate"
    assert not any(m.startswith("kubitect_core.topology_view") for m in modules)


def test_validate_loads_the_plugins_once():
    """The summary's API port reads the context validate already built, not a second registry."""
    probe = ("import sys\n"
             "from kubitect_core import plugins\n"
             "calls = []\n"
             "real = plugins.load_registry\n"
             "plugins.load_registry = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
             "sys.argv = ['kubitect', 'validate', sys.argv[1]]\n"
             "from kubitect_core.cli import main\n"
             "try:\n"
             "    main()\n"
             "except SystemExit as exc:\n"
             "    assert not exc.code, exc.code\n"
             "print('LOADS', len(calls))\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(REPO / "examples" / "ha.yaml")], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "endpoint: 10.10.13.200:6443" in proc.stdout
    assert proc.stdout.rstrip().endswith("LOADS 1")


def test_not_printable_is_yaml_c_printable_complement():
    """The fast-compiling class in yamlscalars equals the spec's negated c-printable set everywhere."""
    import re

    from kubitect_core.config.yamlscalars import NOT_PRINTABLE

    spec = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    text = "".join(map(chr, range(0x110000)))
    assert [m.start() for m in NOT_PRINTABLE.finditer(text)] == [m.start() for m in spec.finditer(text)]


def test_a_command_that_needs_a_backend_still_gets_it():
    """The lazy modules are real modules on first use: rendering a template loads jinja2."""
    probe = ("import sys\n"
             "from kubitect_core.sdk import templates\n"
             "assert 'jinja2' not in sys.modules\n"
             "env = templates(sys.argv[1])\n"
             "assert 'jinja2' in sys.modules and type(env).__name__ == 'Environment'\n"
             "from kubitect_core import remote\n"
             "assert 'asyncssh' not in sys.modules\n"
             "assert issubclass(remote._pinning_client(), __import__('asyncssh').SSHClient)\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(REPO / "plugins" / "libvirt")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_lazy_module_reads_and_patches_the_real_module(monkeypatch):
    from kubitect_core.sdk.lazy import lazy_import

    lazy_json = lazy_import("json")
    assert "not loaded yet" in repr(lazy_json)
    assert lazy_json.dumps([1]) == "[1]"
    monkeypatch.setattr(lazy_json, "dumps", lambda obj: "patched")
    assert json.dumps([1]) == "patched"  # the real module saw the patch


def test_missing_module_fails_at_first_use_not_at_import():
    from kubitect_core.sdk.lazy import lazy_import

    missing = lazy_import("kubitect_no_such_module")
    with pytest.raises(ModuleNotFoundError):
        missing.anything  # noqa: B018


def test_lab_prefix_default_matches_the_harness():
    from kubitect_core.cli import lab_cmds
    from kubitect_core.lab import harness

    assert lab_cmds.DEFAULT_PREFIX == harness.DEFAULT_PREFIX



# Runs the CLI as the console script does (main) or with the whole tree (app), and reports which
# commands typer built into click commands.
_BUILT = """
import json, sys
import typer.main
built = []
real = typer.main.get_command_from_info
typer.main.get_command_from_info = lambda command_info, **kw: built.append(command_info.name) or real(
    command_info, **kw)
whole = sys.argv[1] == "whole"
sys.argv = ["kubitect", *json.loads(sys.argv[2])]
import kubitect_core.cli as cli
code = 0
try:
    if whole:
        cli.reset_session()
        cli.app()
    else:
        cli.main()
except SystemExit as exc:
    code = exc.code or 0
print("@@" + json.dumps({"code": code, "built": built, "left": len(cli.app.registered_commands)}))
"""


def _built(args: list[str], whole: bool = False) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", _BUILT, "whole" if whole else "main", json.dumps(args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "COLUMNS": "100"})
    out, _, tail = proc.stdout.rpartition("@@")
    assert tail, proc.stderr[-2000:]
    return out + proc.stderr, json.loads(tail)


@pytest.mark.parametrize(("args", "built"), [(["validate", "--help"], ["validate"]), (["--version"], []),
                                             (["list", "presets"], None)])
def test_a_call_naming_one_command_builds_only_that_one(args, built):
    out, data = _built(args)
    assert data["code"] == 0, out
    if built is not None:
        assert data["built"] == built
    else:  # a group: its own commands only
        assert 0 < len(data["built"]) < 10 and "validate" not in data["built"], data["built"]
    assert data["left"] == _built(["--version"], whole=True)[1]["left"]  # main() gave the whole tree back


@pytest.mark.parametrize("args", [["validate", "--help"], ["validate", "-o", "xml", "x.yaml"], ["list", "bogus"],
                                  ["valdate"], ["help", "validate"]])
def test_the_narrowed_tree_answers_as_the_whole_one(args):
    """Same text and exit code with one command built as with all of them (help, usage errors,
    suggestions); `help` and an unknown word get the whole tree."""
    narrowed, a = _built(args)
    whole, b = _built(args, whole=True)
    assert (narrowed, a["code"]) == (whole, b["code"])
    assert len(b["built"]) > 20


def test_the_collector_is_off_during_start_up_and_back_after():
    """main() turns cyclic GC off for start-up only: it is back on its own, and a process that had
    it off on purpose keeps it off."""
    probe = ("import gc, sys, time\n"
             "import kubitect_core.cli as cli\n"
             "cli.GC_OFF_FOR_S = 0.2\n"
             "sys.argv = ['kubitect', '--version']\n"
             "def run():\n"
             "    try:\n"
             "        cli.main()\n"
             "    except SystemExit:\n"
             "        pass\n"
             "run()\n"
             "during = gc.isenabled()\n"
             "time.sleep(1.0)\n"
             "after = gc.isenabled()\n"
             "gc.disable()\n"
             "run()\n"
             "time.sleep(1.0)\n"
             "print('RESULT', during, after, gc.isenabled())\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("RESULT False True False")
