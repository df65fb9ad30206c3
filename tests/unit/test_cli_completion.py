"""Shell completion as a user gets it: `kubitect completion bash|zsh|fish`, sourced by a real shell.

The callbacks are checked directly (the right candidates for each option), then the scripts:
valid syntax in their shell, and a real completion run (bash with COMP_WORDS set, fish with its
own `complete -C`, zsh through the protocol its script uses) against a home with clusters in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from kubitect_core.cli import app
from kubitect_core.cli import completion_values as values

VENV_BIN = Path(sys.executable).parent


class _Ctx:
    """What typer hands a completion callback: the parameters parsed so far, and the root."""

    def __init__(self, params=None):
        self.params = params or {}

    def find_root(self):
        class Root:
            command = typer.main.get_command(app)
        return Root()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """A kubitect home with two clusters, a stray file, and a project with a local cluster."""
    home = tmp_path / "home"
    for name in ("prod-ha", "lab-1"):
        (home / "clusters" / name).mkdir(parents=True)
    (home / "clusters" / "notes.txt").write_text("not a cluster")
    project = tmp_path / "project"
    (project / ".kubitect" / "clusters" / "local-dev").mkdir(parents=True)
    monkeypatch.setenv("KUBITECT_HOME", str(home))
    monkeypatch.chdir(project)
    return home, project


def test_cluster_names_come_from_the_home_and_the_project(homes):
    home, _ = homes
    assert [n for n, _ in values.clusters(_Ctx(), "")] == ["lab-1", "local-dev", "prod-ha"]
    assert [n for n, _ in values.clusters(_Ctx(), "pr")] == ["prod-ha"]
    other = home.parent / "other"
    (other / "clusters" / "x1").mkdir(parents=True)
    assert [n for n, _ in values.clusters(_Ctx({"home": str(other)}), "")] == ["x1"], "--home given: only there"
    assert values.clusters(_Ctx({"home": str(home.parent / "missing")}), "") == []


def test_presets_stages_actions_and_help_topics():
    from kubitect_core.config import list_presets

    assert [n for n, _ in values.presets(_Ctx(), "")] == list_presets()
    assert [n for n, _ in values.presets(_Ctx(), "ex")] == [n for n in list_presets() if n.startswith("ex")]
    from kubitect_core.plugins import load_registry

    stages = [n for n, _ in values.stages(_Ctx(), "")]
    assert stages == [s.name for s in load_registry().stages], "what `kubitect list stages` lists, in order"
    pipeline = ["validate", "network", "storage", "vms", "loadbalancers", "kubernetes", "verify"]
    assert [n for n in stages if n in pipeline] == pipeline, "addon stages (e.g. rook) come in between"
    assert [n for n, _ in values.stages(_Ctx({"stage": ["vms"]}), "v")] == ["validate", "verify"], \
        "a stage already given is not offered again"
    assert [n for n, _ in values.actions(_Ctx(), "")] == ["create", "upgrade", "scale"]
    assert [n for n, _ in values.actions(_Ctx(), "s")] == ["scale"]
    top = [n for n, _ in values.commands(_Ctx(), "")]
    assert "apply" in top and "ls" not in top
    assert [n for n, _ in values.commands(_Ctx({"command": ["export"]}), "")] == \
        ["config", "kubeconfig", "logs", "preset", "report", "ssh-config"]


def _env(homes) -> dict[str, str]:
    home, _ = homes
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "KUBITECT_HOME": str(home)}


SYNTAX_CHECK = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}


def _checked_script(shell: str, env, path: Path) -> Path:
    """`kubitect completion SHELL` written to `path`, after the shell itself found it well-formed."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (scripts/apt-packages.txt installs it)")
    proc = subprocess.run(["kubitect", "completion", shell], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path.write_text(proc.stdout)
    check = subprocess.run([*SYNTAX_CHECK[shell], str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return path


def _bash_complete(script: Path, words: str, env, cwd) -> list[str]:
    """Runs the completion function exactly as bash does on TAB, for the words typed so far."""
    code = (f"source {script}\n"
            f"COMP_WORDS=({words})\n"
            "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
            "_kubitect_completion kubitect\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_script_is_valid_and_completes_for_real(homes, tmp_path):
    env = _env(homes)
    script = _checked_script("bash", env, tmp_path / "kubitect.bash")
    assert "complete -o default -F _kubitect_completion kubitect" in script.read_text()
    cwd = homes[1]
    (cwd / "cluster.yaml").write_text("{}")
    assert _bash_complete(script, 'kubitect destroy --cluster ""', env, cwd) == ["lab-1", "local-dev", "prod-ha"]
    assert _bash_complete(script, "kubitect destroy --cluster pr", env, cwd) == ["prod-ha"]
    assert _bash_complete(script, "kubitect export preset --name min", env, cwd) == ["minimal"]
    assert _bash_complete(script, "kubitect run --stage v", env, cwd) == ["validate", "vms", "verify"]
    assert _bash_complete(script, 'kubitect apply --action ""', env, cwd) == ["create", "upgrade", "scale"]
    assert _bash_complete(script, "kubitect plan -o y", env, cwd) == ["yaml"]
    assert _bash_complete(script, "kubitect ex", env, cwd) == ["export"]
    assert sorted(_bash_complete(script, 'kubitect export ""', env, cwd)) == ["config", "kubeconfig", "logs",
                                                                              "preset", "report", "ssh-config"]
    assert _bash_complete(script, "kubitect help exp", env, cwd) == ["export"]
    assert _bash_complete(script, "kubitect completion z", env, cwd) == ["zsh"]
    assert _bash_complete(script, "kubitect apply --auto", env, cwd) == ["--auto-approve"]
    # a config file name: nothing from kubitect, so `-o default` lets bash list the files
    assert _bash_complete(script, "kubitect apply clu", env, cwd) == []


def test_fish_script_completes_for_real(homes, tmp_path):
    env = _env(homes)
    script = _checked_script("fish", env, tmp_path / "kubitect.fish")

    def complete(line: str) -> list[str]:
        proc = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                              capture_output=True, text=True, env=env, cwd=homes[1], timeout=120)
        assert proc.returncode == 0, proc.stderr
        return [x.split("\t")[0] for x in proc.stdout.splitlines()]

    assert complete("kubitect destroy --cluster ") == ["lab-1", "local-dev", "prod-ha"]
    assert complete("kubitect run --stage ve") == ["verify"]


def test_zsh_script_is_valid_and_its_protocol_answers(homes, tmp_path):
    env = _env(homes)
    script = _checked_script("zsh", env, tmp_path / "_kubitect")
    assert script.read_text().startswith("#compdef kubitect")
    # what the script's function evaluates on TAB, asked the way the script asks it
    proc = subprocess.run(["zsh", "-f", "-c", 'words=(kubitect destroy --cluster ""); CURRENT=4; '
                           'env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _KUBITECT_COMPLETE=complete_zsh kubitect'],
                          capture_output=True, text=True, env=env, cwd=homes[1], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("_arguments") and all(n in proc.stdout for n in ("lab-1", "local-dev", "prod-ha"))


def test_an_unknown_shell_is_a_usage_error():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["completion", "powershell"], env={"NO_COLOR": "1"})
    assert result.exit_code == 2 and "'powershell' is not one of 'bash', 'zsh', 'fish'" in result.output
