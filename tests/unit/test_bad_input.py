"""Bad input through the real CLI: every case ends in exit 1 or 2, names the path or file, in
bounded time and memory, without a traceback, for `kubitect validate` and for `kubitect plan`.

Each input is written as a user (or an attacker) would hand it over: a file, a FIFO, a device, a
huge or hostile YAML document, or a config that looks fine but would fail late in apply. The
runs go through `bad_input_runner.py` (one forked process per run, see there), which measures
each run's wall time and peak RSS; `test_real_processes_agree` checks a few against genuinely
separate `kubitect` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEED = (REPO / "examples" / "ha.yaml").read_text()
MINIMAL = """\
hosts:
  - name: localhost
    connection:
      type: local
cluster:
  name: k8s-cluster
  network:
    mode: nat
    cidr: 192.168.113.0/24
  nodes:
    master:
      instances:
        - id: 1
          ip: 192.168.113.10
    worker:
      instances:
        - id: 1
          ip: 192.168.113.21
kubernetes:
  version: v1.34.2
"""
MAX_SECONDS = 2.0  # CPU time (user + system) of the run: what the input costs, whatever else the machine runs
MAX_WALL_SECONDS = 10.0  # wall time: no run blocks (a FIFO, a device); generous for a busy 2-core machine
MAX_RSS_MB = 300
MAX_OUTPUT_BYTES = 200_000  # an error never echoes an expanded alias or a huge value in full


def seed(old: str, new: str, text: str = SEED) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def minimal(old: str, new: str) -> str:
    return seed(old, new, MINIMAL)


def bomb(where: str) -> str:
    """The classic 'billion laughs' (9**9 values once expanded) at `where` ("" = top level)."""
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    if not where:
        return "\n".join(levels) + "\n"
    body = "\n".join("    " + line for line in levels)
    return MINIMAL + f"addons:\n  {where}:\n{body}\n"


def many_hosts(n: int) -> str:
    hosts = "".join("  - name: h\n    connection: {type: local}\n" for _ in range(n))
    return "hosts:\n" + hosts + MINIMAL.split("\n", 4)[4]


# (id, content: str | bytes | special, fragments the output must contain)
# Specials: "@missing", "@dir", "@fifo", "@dev/zero", "@dev/null", "@symlink-loop", "@big".
CASES: list[tuple[str, object, list[str]]] = [
    # --- the file itself
    ("missing-file", "@missing", ["does not exist", "{file}"]),
    ("directory", "@dir", ["is a directory", "{file}"]),
    ("fifo-without-writer", "@fifo", ["is not a regular file", "FIFO", "{file}"]),
    ("dev-zero", "@dev/zero", ["is not a regular file", "character device"]),
    ("dev-null", "@dev/null", ["is not a regular file", "character device"]),
    ("symlink-loop", "@symlink-loop", ["cannot open", "{file}"]),
    ("file-over-1-mib", "@big", ["more than the 1024 KiB", "{file}"]),
    ("empty-file", "", ["is empty", "{file}"]),
    ("only-comments", "# nothing here\n\n", ["is empty"]),
    ("invalid-utf8", b"hosts:\n  - name: caf\xe9\n", ["is not UTF-8 text", "line 2"]),
    ("nul-byte-in-file", b"hosts:\n  - name: a\x00b\n", ["control character (U+0000)", "{file}:2:"]),
    ("bell-in-file", "cluster:\n  name: a\x07\n", ["control character (U+0007)", "{file}:2:"]),
    ("binary-garbage", bytes(range(256)) * 4, ["is not UTF-8 text"]),
    ("bom-then-garbage", b"\xef\xbb\xbf[[[", ["not valid YAML", "{file}:1:"]),
    # --- YAML the parser must survive
    ("alias-bomb-top-level", bomb(""), ["alias bomb", "{file}:6:"]),
    ("alias-bomb-in-addons-kubespray", bomb("kubespray"), ["alias bomb", "{file}:", "addons.kubespray"]),
    ("cyclic-alias-in-addons-kubespray", MINIMAL + "addons:\n  kubespray: &k\n    self: *k\n",
     ["(a cycle)", "{file}:23:", "addons.kubespray"]),
    ("cyclic-alias-top-level", "a: &a [*a]\n", ["(a cycle)", "{file}:1:"]),
    ("cyclic-alias-in-hosts", "hosts: &h\n  - *h\n", ["(a cycle)", "{file}:2:"]),
    ("undefined-alias", seed("  name: kubitect-ha", "  name: *nothing"), ["refers to no anchor", "{file}:"]),
    ("deep-flow-nesting", "cluster: " + "[" * 100_000 + "]" * 100_000 + "\n", ["nested more than 64"]),
    ("deep-flow-nesting-unclosed", "a: " + "{a: " * 50_000, ["nested more than 64"]),
    ("deep-block-nesting", "- " * 300_000 + "x\n", ["nested more than 64"]),
    ("deep-mapping-nesting", "".join(" " * i + "a:\n" for i in range(300)), ["nested more than 64"]),
    ("deep-nesting-under-kubespray", MINIMAL + "addons:\n  kubespray:\n" + "".join(
        " " * (4 + 2 * i) + "k:\n" for i in range(70)), ["nested more than 64"]),
    ("many-anchors", "x:\n" + "".join(f"  k{i}: &a{i} v\n" for i in range(40_000)), ["unknown key `x`"]),
    ("two-documents", MINIMAL + "---\nhosts: []\n", ["more than one YAML document", "{file}:"]),
    ("top-level-list", "- a\n- b\n", ["must be a mapping"]),
    ("top-level-scalar", "just words\n", ["must be a mapping"]),
    ("python-object-tag", seed("  name: kubitect-ha", "  name: !!python/object/apply:os.system [ls]"),
     ["unsupported tag"]),
    ("binary-tag", seed("  name: kubitect-ha", "  name: !!binary a3ViaXRlY3Q="), ["unsupported tag !!binary"]),
    ("set-tag", seed("    bridge: br0", "    bridge: !!set {br0}"), ["unsupported tag !!set"]),
    ("complex-key", seed("  name: kubitect-ha", "  ? [a, b]\n  : x"), ["mapping key must be a plain value"]),
    ("merge-of-a-scalar", seed("  name: kubitect-ha", "  <<: 5"), ["merge key"]),
    ("duplicate-key", seed("  name: kubitect-ha\n", "  name: kubitect-ha\n  name: other\n"),
     ["duplicate key", "cluster.name"]),
    ("unclosed-quote", seed('        keyfile: "~/.ssh/id_rsa_ha"', '        keyfile: "~/.ssh/id_rsa_ha'),
     ["closing", "{file}:8:"]),
    ("tab-indentation", seed("    bridge: br0", "\tbridge: br0"), ["tab", "{file}:52:"]),
    ("bad-indentation", seed("    os:", "   os:"), ["indentation", "{file}:58:"]),
    ("missing-colon", seed("  name: kubitect-ha", "  name kubitect-ha"), ["no ':'", "{file}:48:"]),
    # --- scalars that used to crash
    ("invalid-date-as-ip", seed("      ip: 10.10.0.5", "      ip: 2024-13-45"), ["hosts[0].connection.ip"]),
    ("invalid-date-as-version", seed("  version: v1.28.6", "  version: 2024-02-30"), ["kubernetes.version"]),
    ("integer-of-5000-digits-as-cpu", seed("          host: host3\n", "          host: host3\n          cpu: "
                                          + "9" * 5000 + "\n"), ["cpu", "whole number"]),
    ("integer-of-5000-digits-as-version", seed("  version: v1.28.6", "  version: " + "1" * 5000),
     ["kubernetes.version"]),
    ("lone-surrogate", seed("  name: kubitect-ha", '  name: "kub\\ud800"'), ["{file}:48:"]),
    ("nul-escape", seed("  name: kubitect-ha", '  name: "kub\\0itect"'), ["control character (U+0000)"]),
    ("nan-cpu", seed("          host: host3\n", "          host: host3\n          cpu: .nan\n"), ["cpu"]),
    ("inf-port", seed("        keyfile", "        port: .inf\n        keyfile"), ["ssh.port"]),
    ("huge-value-900k", minimal("  name: k8s-cluster", "  name: k8s-" + "x" * 900_000), ["cluster"]),
    ("huge-key-900k", minimal("  name: k8s-cluster", "  name: k8s-cluster\n  " + "k" * 900_000 + ": 1"),
     ["longer than the 1024 characters", "{file}:7:"]),
    ("twenty-thousand-hosts", many_hosts(20_000), ["more than 100000 values"]),
    ("ten-thousand-duplicate-hosts", many_hosts(10_000), ["host name 'h' is already used", "more", "not shown"]),
    # --- rich markup in values
    ("markup-in-a-bad-value", seed("  name: kubitect-ha", '  name: "[/x] [bold]oops"'), ["[/x] [bold]oops"]),
    ("markup-in-an-unknown-key", seed("  name: kubitect-ha", '  name: kubitect-ha\n  "[/red]": 1'),
     ["[/red]"]),
    ("markup-in-a-bridge-name", seed("    bridge: br0", '    bridge: "[/x]"'), ["cluster.network.bridge"]),
    # --- accepted but wrong: must fail at validate, not late in apply
    ("k3s-label-with-newline", minimal("    worker:\n      instances:\n        - id: 1\n",
                                       '    worker:\n      instances:\n        - id: 1\n          labels:\n'
                                       '            tier: "gold\\n"\n').replace("v1.34.2", "v1.34.2\n  manager: k3s"),
     ["labels.tier", "not a valid Kubernetes label value"]),
    ("taint-with-newline", minimal("        - id: 1\n          ip: 192.168.113.21",
                                   "        - id: 1\n          ip: 192.168.113.21\n"
                                   '          taints: ["a:NoSchedule\\n"]'),
     ["taints[0]"]),
    ("version-v1-28-100", seed("  version: v1.28.6", "  version: v1.28.100"),
     ["kubernetes.version", "not a released Kubernetes version", "v1.28.15"]),
    ("version-v1-34-99", minimal("  version: v1.34.2", "  version: v1.34.99"), ["v1.34.2", "not a released"]),
    ("rook-enabled", MINIMAL + "addons:\n  rook:\n    enabled: true\n",
     ["addons.rook.enabled", "Rook needs at least one node"]),
    ("label-key-invalid", minimal("          ip: 192.168.113.21", "          ip: 192.168.113.21\n          labels:\n"
                                  "            'bad key!': x"), ["not a valid Kubernetes label key"]),
    ("label-value-with-spaces", minimal("          ip: 192.168.113.21", "          ip: 192.168.113.21\n"
                                        "          labels:\n            team: a b"),
     ["not a valid Kubernetes label value"]),
    ("relative-main-pool-path", minimal("      type: local", "      type: local\n    mainResourcePoolPath: pools"),
     ["hosts[0].mainResourcePoolPath", "absolute"]),
    ("tilde-data-pool-path", seed("        path: /mnt/libvirt/pools/", "        path: ~/pools"),
     ["dataResourcePools[0].path", "absolute"]),
    ("quoted-port-with-newline", seed("        keyfile", '        port: "22\\n"\n        keyfile'),
     ["ssh.port", "not text"]),
    ("octal-looking-cpu", seed("          host: host3\n", "          host: host3\n          cpu: 010\n"),
     ["cpu", "ambiguous"]),
    ("even-masters", minimal("        - id: 1\n          ip: 192.168.113.10",
                             "        - id: 1\n          ip: 192.168.113.10\n"
                             "        - id: 2\n          ip: 192.168.113.11"),
     ["must be odd"]),
    ("unknown-key", seed("  nodeTemplate:", "  nodeTemplat:"), ["did you mean `nodeTemplate`"]),
    ("bool-maybe", seed("    updateOnBoot: true", "    updateOnBoot: maybe"), ["updateOnBoot"]),
    ("ip-outside-cidr", seed("          ip: 10.10.13.10", "          ip: 10.99.13.10"), ["instances[0].ip"]),
    ("path-with-newline", seed('        keyfile: "~/.ssh/id_rsa_ha"', '        keyfile: "~/.ssh/id\\nrsa"'),
     ["hosts[0].connection.ssh.keyfile", "one line"]),
    ("hosts-empty", seed(SEED.split("cluster:")[0], "hosts: []\n\n"), ["at least one host"]),
    # --- the command line itself
    ("no-config-given", "@noarg", ["--config"]),
]


def _materialise(tmp: Path, case_id: str, content) -> str:
    path = tmp / f"{case_id}.yaml"
    if content == "@missing":
        return str(path)
    if content == "@dir":
        path.mkdir()
    elif content == "@fifo":
        os.mkfifo(path)
    elif content in ("@dev/zero", "@dev/null"):
        return content[1:] if content.startswith("@/") else "/" + content[1:]
    elif content == "@symlink-loop":
        path.symlink_to(path)
    elif content == "@big":
        path.write_text(MINIMAL + "# " + "x" * (2 * 1024 * 1024) + "\n")
    elif content == "@noarg":
        return ""
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content), encoding="utf-8")
    return str(path)


COMMANDS = ("validate", "plan")
RUNS = [(cmd, case) for case in CASES for cmd in COMMANDS]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs every case through both commands once (a single fork server), keyed by (command, id)."""
    tmp = tmp_path_factory.mktemp("bad-input")
    home = tmp / "home"
    runs = []
    for cmd, (case_id, content, _fragments) in RUNS:
        file = _materialise(tmp, f"{cmd}-{case_id}", content)
        args = [cmd] + (["--config", file] if file else [])
        if cmd == "plan":
            args += ["--home", str(home)]
        runs.append({"id": f"{cmd}:{case_id}", "argv": args, "cwd": str(tmp), "file": file})
    (tmp / "cases.json").write_text(json.dumps(runs))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    subprocess.run([sys.executable, str(Path(__file__).with_name("bad_input_runner.py")), str(tmp / "cases.json"),
                    str(tmp / "results.json")], check=True, env=env, timeout=600)
    out = {r["id"]: r for r in json.loads((tmp / "results.json").read_text())}
    assert not home.exists() or not any(home.rglob("*.json")), "a refused config left state behind"
    return out


def test_the_suite_has_at_least_60_inputs():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("run", RUNS, ids=[f"{cmd}:{case[0]}" for cmd, case in RUNS])
def test_bad_input_is_refused_cleanly(run, results):
    cmd, (case_id, _content, fragments) = run
    r = results[f"{cmd}:{case_id}"]
    output = r["stdout"] + r["stderr"]
    assert not r["killed"], f"still running after the kill timeout: {r['seconds']} s"
    assert "Traceback" not in output, output[-3000:]
    assert r["exit"] in (1, 2), (r["exit"], output[-3000:])
    assert r["cpu_seconds"] <= MAX_SECONDS, f"took {r['cpu_seconds']} s of CPU ({r['seconds']} s wall)"
    assert r["seconds"] <= MAX_WALL_SECONDS, f"took {r['seconds']} s wall"
    assert r["maxrss_mb"] <= MAX_RSS_MB, f"peak RSS {r['maxrss_mb']} MB"
    assert r["output_bytes"] <= MAX_OUTPUT_BYTES, f"{r['output_bytes']} bytes of output"
    flat = " ".join(output.split())  # rich wraps long lines
    for fragment in fragments:
        fragment = fragment.replace("{file}", r["file"])
        assert fragment in flat or fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
    if r["file"]:
        assert r["file"] in flat or os.path.basename(r["file"]) in flat or any(
            "." in f or "[" in f for f in fragments), "neither the file nor a config path is named"


def test_figures(results, capsys):
    """Prints the measured figures for the report (slowest run, largest peak RSS)."""
    slowest = max(results.values(), key=lambda r: r["cpu_seconds"])
    largest = max(results.values(), key=lambda r: r["maxrss_mb"])
    clean = sum(1 for r in results.values() if r["exit"] in (1, 2) and "Traceback" not in r["stdout"] + r["stderr"])
    with capsys.disabled():
        print(f"\nbad inputs: {len(CASES)} x {len(COMMANDS)} commands = {len(results)} runs, {clean} refused cleanly; "
              f"slowest {slowest['id']} {slowest['cpu_seconds']} s CPU ({slowest['seconds']} s wall); "
              f"largest peak RSS {largest['id']} "
              f"{largest['maxrss_mb']} MB")
    assert clean == len(results)


@pytest.mark.parametrize("case_id", ["fifo-without-writer", "alias-bomb-in-addons-kubespray", "version-v1-28-100"])
def test_real_processes_agree(case_id, tmp_path, results):
    """The fork server is faithful: a separate `kubitect validate` process gives the same exit and message."""
    content, fragments = next((c[1], c[2]) for c in CASES if c[0] == case_id)
    file = _materialise(tmp_path, case_id, content)
    kubitect = Path(sys.executable).with_name("kubitect")
    proc = subprocess.run([str(kubitect), "validate", "--config", file], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert proc.returncode == results[f"validate:{case_id}"]["exit"]
    flat = " ".join((proc.stdout + proc.stderr).split())
    assert all(f.replace("{file}", file) in flat for f in fragments)
