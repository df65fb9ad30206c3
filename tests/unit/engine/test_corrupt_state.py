"""Damaged state files: every command ends with a clear message naming the file, never a
traceback or a hang, and one damaged cluster never hides the others.

Each case starts from a home where two clusters were applied (with the TEST DOUBLE backends),
damages one file of one of them, and runs a user's commands: list clusters, plan, apply,
destroy, export config|kubeconfig|report. Before the fix, 33 of 55 such corruptions gave a
traceback, and one bad record broke `list clusters` for every cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

CLUSTER, OTHER = "kubitect-ha", "other-ha"
REPORT = {"cluster": CLUSTER, "passed": 1, "failed": 0, "skipped": 0,
          "cases": [{"name": "test_nodes", "outcome": "passed", "seconds": 0.1}], "failover": []}
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n"


def _write(text: str | bytes):
    def damage(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "nowhere" / "record.json")


RECORD_CORRUPTIONS = {
    "empty": _write(""),
    "whitespace": _write("  \n\n"),
    "truncated": _truncate,
    "binary": _write(bytes(range(256)) * 4),
    "nul-bytes": _write(b"\0" * 512),
    "top-level-list": _write("[]"),
    "top-level-null": _write("null"),
    "top-level-string": _write('"stages"'),
    "stages-is-a-list": _write('{"stages": []}'),
    "stage-entry-is-a-string": _write('{"stages": {"vms": "completed"}}'),
    "stage-data-is-a-list": _write('{"stages": {"vms": {"status": "completed", "data": []}}}'),
    "unknown-status": _write('{"stages": {"vms": {"status": 7, "data": {}}}}'),
    "nested-too-deep": _write("[" * 200000 + "]" * 200000),
    "huge-integer": _write('{"stages": {}, "n": ' + "9" * 5000 + "}"),
    "directory": _directory,
    "fifo": _fifo,
    "symlink-to-dev-zero": _dev_zero,
    "dangling-symlink": _dangling,
}
CONFIG_READERS = {"plan", "apply"}  # compare with the applied config
OTHER_CORRUPTIONS = {  # file(s) relative to the cluster dir, damage, commands that must fail naming it
    "applied-binary": ("applied.yaml", _write(b"\xff\xfe\x00kubitect\x80"), CONFIG_READERS | {"export-config"}),
    "applied-not-yaml": ("applied.yaml", _write("hosts: [\n  - name: 'x\n"), CONFIG_READERS),
    "applied-a-list": ("applied.yaml", _write("- 1\n- 2\n"), CONFIG_READERS),
    "both-configs-binary": ("config.yaml+applied.yaml", _write(b"\x00\x01\x02\xff"),
                            CONFIG_READERS | {"export-config"}),
    "kubeconfig-binary": ("kubeconfig", _write(b"\x89PNG\r\n\x1a\n\x00\x00"), {"export-kubeconfig"}),
    "kubeconfig-fifo": ("kubeconfig", _fifo, {"export-kubeconfig"}),
    "report-truncated": ("reports/conformance.json", _truncate, {"export-report"}),
    "report-wrong-shape": ("reports/conformance.json", _write('{"cases": [{"name": 1}]}'), {"export-report"}),
    "report-a-list": ("reports/conformance.json", _write("[1, 2]"), {"export-report"}),
}
COMMANDS = {
    "list": lambda cfg: ["list", "clusters"],
    "plan": lambda cfg: ["plan", cfg],
    "apply": lambda cfg: ["apply", cfg],
    "destroy": lambda cfg: ["destroy", "--cluster", CLUSTER, "-y"],
    "export-config": lambda cfg: ["export", "config", "--cluster", CLUSTER],
    "export-kubeconfig": lambda cfg: ["export", "kubeconfig", "--cluster", CLUSTER],
    "export-report": lambda cfg: ["export", "report", "--cluster", CLUSTER],
}
RECORD_READERS = {"plan", "apply", "list"}


_TEMPLATE: dict[str, Path] = {}


def _template(fake_env: Path, factory) -> Path:
    """A home with two applied clusters, a kubeconfig and a report; built once per session (in
    the first test's fake environment, redirected), then copied for every case."""
    if "dir" in _TEMPLATE:
        return _TEMPLATE["dir"]
    from typer.testing import CliRunner

    from kubitect_core.cli import app

    base = factory.mktemp("template")
    (base / ".ssh").mkdir()
    (base / ".ssh" / "id_rsa_ha").write_text("not a real key\n")
    seed = (fake_env / "ha.yaml").read_text()
    (base / "ha.yaml").write_text(seed)
    other = yaml.safe_load(seed)
    other["cluster"]["name"] = OTHER
    (base / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"KUBITECT_HOME": base / "home", "KUBITECT_FAKE_DIR": base / "fake", "HOME": base}.items():
            mp.setenv(key, str(value))
        for cfg in ("ha.yaml", "other.yaml"):
            result = CliRunner().invoke(app, ["run", str(base / cfg), "--stage", "network", "--stage", "storage",
                                              "--stage", "vms", "--stage", "loadbalancers", "--stage", "kubernetes"],
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.output
    for name in (CLUSTER, OTHER):
        d = base / "home" / "clusters" / name
        shutil.copy(d / "config.yaml", d / "applied.yaml")  # as a full apply leaves it
        (d / "kubeconfig").write_text(KUBECONFIG)
        (d / "reports").mkdir()
        (d / "reports" / "conformance.json").write_text(json.dumps(REPORT))
    _TEMPLATE["dir"] = base
    return base


@pytest.fixture
def home(fake_env, tmp_path_factory):
    """The template copied into this test's fake environment."""
    template = _template(fake_env, tmp_path_factory)
    for part in ("home", "fake"):
        shutil.rmtree(fake_env / part, ignore_errors=True)
        shutil.copytree(template / part, fake_env / part, symlinks=True)
    return fake_env


@pytest.fixture
def deadline():
    """A hang (a FIFO read, /dev/zero) fails the test instead of stalling the suite."""
    def boom(*_):
        raise TimeoutError("the command hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def _check(cli, home, fakes, command: str, damaged: str, expect_named: bool):
    cluster_dir = home / "home" / "clusters" / CLUSTER
    result = cli(*COMMANDS[command](str(home / "ha.yaml")))
    out = _flat(result.output)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    names = damaged.split("+")
    if expect_named:
        assert any(Path(n).name in out for n in names), f"the damaged file is not named:\n{result.output}"
    if command == "list":
        assert result.exit_code == 0
        assert OTHER in out and "applied" in out, "the healthy cluster is not listed as applied"
        if expect_named:
            assert "damaged" in out
    elif command == "destroy":
        assert result.exit_code == 0, result.output
        assert not cluster_dir.exists()
        machines = [k for k in fakes.objects() if k.split("/", 1)[1].startswith(CLUSTER)
                    and k.split("/")[0] in ("network", "pool", "volume", "domain")]
        assert machines == [], "destroy left machines behind"
        assert any(k.split("/", 1)[1].startswith(OTHER) for k in fakes.objects()), "destroy touched the other"
    elif expect_named:
        assert result.exit_code == 1, result.output
    else:
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("corruption", list(RECORD_CORRUPTIONS))
def test_damaged_record(cli, home, fakes, deadline, corruption, command):
    RECORD_CORRUPTIONS[corruption](home / "home" / "clusters" / CLUSTER / "record.json")
    _check(cli, home, fakes, command, "record.json", command in RECORD_READERS)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("corruption", list(OTHER_CORRUPTIONS))
def test_damaged_config_kubeconfig_or_report(cli, home, fakes, deadline, corruption, command):
    files, damage, failing = OTHER_CORRUPTIONS[corruption]
    for rel in files.split("+"):
        damage(home / "home" / "clusters" / CLUSTER / rel)
    _check(cli, home, fakes, command, files, command in failing)


def test_list_names_the_damage_and_still_lists_the_rest(cli, home):
    (home / "home" / "clusters" / CLUSTER / "record.json").write_text('{"stages": []}')
    rows = {r["name"]: r for r in json.loads(cli("list", "clusters", "-o", "json").output)["items"]}
    assert rows[CLUSTER]["damaged"] is True
    assert rows[CLUSTER]["status"] == "damaged: record.json is not a kubitect record: `stages` input should be " \
                                      "a valid dictionary (found a list)"
    assert rows[OTHER] == {"name": OTHER, "made_by": "kubitect", "status": "applied", "damaged": False,
                           "dir": str(home / "home" / "clusters" / OTHER), "local": False}


def test_destroy_with_a_damaged_record_says_it_sweeps_by_tag(cli, home):
    (home / "home" / "clusters" / CLUSTER / "record.json").write_bytes(b"\xffgarbage")
    result = cli("destroy", "--cluster", CLUSTER, "-y")
    assert result.exit_code == 0
    flat = _flat(result.output)
    assert "record.json: is not UTF-8 text" in flat and "ownership tags" in flat
