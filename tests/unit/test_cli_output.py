"""Output conventions as a user and a script see them, for the commands that need no cluster.

`-o text|json|yaml` is validated and honoured; with `-o json` stdout holds nothing but JSON, an
error included (one `error` event); every JSON answer is versioned; errors look the same
whichever command reports them; off a terminal nothing is hard-wrapped; NO_COLOR, --no-color,
FORCE_COLOR and TERM=dumb do what they say (checked on a real pseudo-terminal).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kubitect_core.cli import app

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "examples" / "ha.yaml"
ESC = "\x1b["


def _run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", **(env or {})})


@pytest.fixture
def bad(tmp_path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(HA.read_text().replace("ip: 10.10.13.11", "ip: 10.99.13.11")
                    .replace("distro: ubuntu22", "distro: ubuntu18"))
    return path


def _commands_with_output_option(group=None, path=()):
    group = group or typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands_with_output_option(cmd, (*path, name))
        elif any("--output" in p.opts for p in cmd.params):
            yield (*path, name)


OUTPUT_COMMANDS = [" ".join(c) for c in _commands_with_output_option()]


def test_every_read_command_has_the_option():
    for expected in ("validate", "plan", "topology", "verify", "list clusters", "list presets", "list stages",
                     "list plugins", "export config", "export kubeconfig", "export preset", "export report",
                     "export logs", "apply", "run", "destroy"):
        assert expected in OUTPUT_COMMANDS, expected


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_output_is_validated_everywhere(command):
    result = _run(*command.split(), "-o", "xml")
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "'xml' is not one of 'text', 'json', 'yaml'" in text


def test_validate_as_json_and_yaml_is_the_summary_as_data():
    as_json = _run("validate", HA, "-o", "json")
    assert as_json.exit_code == 0 and as_json.stderr == ""
    data = json.loads(as_json.stdout)
    assert data["v"] == 1 and data["kind"] == "validation" and data["valid"] is True
    assert data["cluster"] == "kubitect-ha" and data["nodes"] == {"lb": 2, "master": 3, "worker": 3}
    assert data["vip"] == "10.10.13.200" and len(data["hosts"]) == 5
    assert any(w["path"] == "kubernetes.version" for w in data["warnings"])
    as_yaml = _run("validate", HA, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == {**data}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_an_invalid_config_under_json_or_yaml_is_one_error_event_on_stdout(bad, fmt):
    result = _run("validate", bad, "-o", fmt)
    assert result.exit_code == 1
    assert result.stderr == "", "nothing but the event, and nothing on stderr"
    event = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert event["v"] == 1 and event["event"] == "error" and event["kind"] == "config" and event["exit_code"] == 1
    paths = {p["path"]: p for p in event["problems"]}
    ip = paths["cluster.nodes.master.instances[1].ip"]
    assert ip["file"] == str(bad) and ip["line"] > 1 and ip["severity"] == "error" and "10.99.13.11" in ip["message"]


@pytest.mark.parametrize("args", [["validate"], ["validate", "-o", "json", "--bogus"],
                                  ["export", "preset", "--name", "nope", "-o", "json"],
                                  ["topology", "-ojson"], ["list", "presets", "--output=json", "extra"]])
def test_usage_errors_under_json_are_events_too(args):
    if "-o" not in args and not any(a.startswith(("-ojson", "--output=")) for a in args):
        args = [*args, "-o", "json"]
    proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    event = json.loads(proc.stdout)
    assert event["v"] == 1 and event["event"] == "error" and event["kind"] == "usage" and event["exit_code"] == 2
    assert proc.stderr == ""


def test_presets_list_and_export_as_data():
    listing = json.loads(_run("list", "presets", "-o", "json").stdout)
    assert listing["v"] == 1 and listing["kind"] == "preset-list"
    names = [i["name"] for i in listing["items"]]
    assert "minimal" in names
    exported = _run("export", "preset", "--name", "minimal", "-o", "json")
    assert json.loads(exported.stdout) == yaml.safe_load(_run("export", "preset", "--name", "minimal").stdout)
    assert _run("export", "preset", "--name", "minimal", "-o", "yaml").stdout == \
        _run("export", "preset", "--name", "minimal").stdout


def test_one_renderer_for_config_errors_from_validate_plan_apply_and_topology(bad, tmp_path):
    """The same config problem looks the same whichever command finds it."""
    def boxes(result):
        lines = result.stderr.splitlines()
        return [ln for ln in lines if ln.startswith(("╭", "│", "╰"))]

    home = ["--home", str(tmp_path / "home")]
    outputs = {cmd: _run(*cmd.split(), bad, *(home if cmd in ("plan", "apply") else [])) for cmd in
               ("validate", "plan", "apply", "topology")}
    for cmd, result in outputs.items():
        assert result.exit_code == 1, (cmd, result.output)
        assert f"invalid configuration file {bad}: 2 errors" in result.stderr, (cmd, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.output, (cmd, result.stdout)
    reference = boxes(outputs["validate"])
    assert reference and any("Error: cluster.nodes.master.instances[1].ip" in ln for ln in reference)
    for cmd in ("plan", "apply", "topology"):
        assert boxes(outputs[cmd]) == reference, cmd


def test_off_a_terminal_nothing_is_hard_wrapped(tmp_path):
    """COLUMNS=40 off a terminal: the long summary line and the error box stay one line each."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 3)
    deep.mkdir()
    cfg = deep / "cluster-config-with-a-long-name.yaml"
    cfg.write_text(HA.read_text())
    result = _run("validate", cfg, env={"COLUMNS": "40"})
    line = next(x for x in result.stdout.splitlines() if "is valid" in x)
    assert str(cfg) in line and line.endswith("over 5 hosts"), "the summary was wrapped"
    bad = deep / "bad.yaml"
    bad.write_text(HA.read_text().replace("ip: 10.10.13.11", "ip: 10.99.13.11"))
    err = _run("validate", bad, env={"COLUMNS": "40"}).stderr
    body = next(x for x in err.splitlines() if "is not inside cluster.network.cidr" in x or "inside" in x)
    assert len(body) > 80 and body.startswith("│") and body.rstrip().endswith("│")


# --------------------------------------------------------------------------- a real terminal


def _on_terminal(args: list[str], env: dict[str, str], columns: int = 200, stdout_tty: bool = True) -> str:
    """Runs kubitect with stdout (and stderr) on a pseudo-terminal of `columns` columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "TERM")}
    full_env.update(env)
    stdout = slave if stdout_tty else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "kubitect_core.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=slave, env=full_env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        piped = proc.stdout.read() if proc.stdout else b""
        proc.wait(timeout=10)
        return (out + piped).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


COLOUR = (f"{ESC}32m", f"{ESC}31m", f"{ESC}33m")  # green tick, red, yellow warning


def test_colour_on_a_terminal_and_none_with_no_color():
    coloured = _on_terminal(["validate", str(HA)], {"TERM": "xterm-256color"})
    assert any(c in coloured for c in COLOUR), coloured
    for env, args in (({"TERM": "xterm-256color", "NO_COLOR": "1"}, []),
                      ({"TERM": "xterm-256color"}, ["--no-color"])):
        plain = _on_terminal([*args, "validate", str(HA)], env)
        assert "is valid" in plain and not any(c in plain for c in COLOUR), (env, args, plain)


def test_term_dumb_gets_no_escape_sequences_at_all():
    text = _on_terminal(["validate", str(HA)], {"TERM": "dumb"})
    assert "is valid" in text and ESC not in text


def test_force_color_colours_a_pipe_without_wrapping_it():
    piped = _on_terminal(["validate", str(HA)], {"TERM": "xterm-256color", "FORCE_COLOR": "1"}, stdout_tty=False)
    assert any(c in piped for c in COLOUR)
    plain = _on_terminal(["validate", str(HA)], {"TERM": "xterm-256color"}, stdout_tty=False)
    assert ESC not in plain.split("kubitect-ha")[0], "a pipe gets no colour by default"


def test_a_terminal_wraps_at_its_width():
    text = _on_terminal(["validate", str(HA)], {"TERM": "xterm-256color", "NO_COLOR": "1"}, columns=50)
    visible = re.sub(r"\x1b\[[0-9;]*m", "", text)  # NO_COLOR keeps bold, which is not colour
    assert max(len(line.rstrip("\r")) for line in visible.splitlines()) <= 50
    lines = [line.rstrip("\r").strip() for line in visible.splitlines()]
    # Wrapped at word boundaries (where depends on the checkout's path length): no word is cut.
    assert "3 workers over 5 hosts" in " ".join(lines) and "3 workers over 5 hosts" not in lines[0]
