"""`kubitect plan` before the first apply: every preset and every example, on an empty home.

A user's first command is often `plan`. It must not need anything apply would create: it used
to crash at the vms stage (FileNotFoundError on the cluster's public key). Here every host is
mapped to libvirt's test driver, and every TCP connection to anything but loopback is refused
and recorded, so no remote host is contacted; the test asserts no libvirt host was even tried.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubitect_core.config import list_presets, preset_text

pytestmark = pytest.mark.libvirt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = [(f"preset-{name}", preset_text(name)) for name in list_presets()] + \
        [(f"example-{p.stem}", p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]


def env_key(host: str) -> str:
    """The suffix of the libvirt plugin's per-host URI override, KUBITECT_LIBVIRT_URI_<HOST>."""
    return re.sub(r"[^A-Za-z0-9]", "_", host).upper()


# Run as `python -c BLOCKER ...`: a fresh process (the libvirt plugin keeps one provider per
# process), with every TCP connection that is not to loopback refused and written to a file.
BLOCKER = """
import faulthandler; faulthandler.dump_traceback_later(60, exit=True)  # a hang shows its threads
import json, socket, sys
log = sys.argv.pop(1)
real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
def remote(sock, address):
    return sock.family != socket.AF_UNIX and not (address[0].startswith("127.") or address[0] in ("::1", "localhost"))
def note(address):
    with open(log, "a") as fh:
        fh.write(json.dumps(list(address)[:2]) + "\\n")
def connect(sock, address):
    if remote(sock, address):
        note(address)
        raise ConnectionRefusedError("test: no remote contact")
    return real_connect(sock, address)
def connect_ex(sock, address):
    if remote(sock, address):
        note(address)
        return 111
    return real_connect_ex(sock, address)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
from kubitect_core.cli import main
sys.argv[0] = "kubitect"
main()
"""


def _plan_on_test_driver(cfg: Path, data: dict, home: Path, log: Path, columns: int = 200):
    """`kubitect plan CFG` in a fresh process, every host on the test driver, remote TCP refused."""
    env = {**os.environ, "KUBITECT_HOME": str(home), "HOME": str(home.parent), "COLUMNS": str(columns)}
    for host in data["hosts"]:
        env[f"KUBITECT_LIBVIRT_URI_{env_key(host['name'])}"] = "test:///default"
    return subprocess.run([sys.executable, "-c", BLOCKER, str(log), "plan", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("name", "text"), CASES, ids=[n for n, _ in CASES])
def test_plan_before_the_first_apply(name, text, tmp_path):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text)
    data = yaml.safe_load(text)
    home, log = tmp_path / "home", tmp_path / "connections.jsonl"
    proc = _plan_on_test_driver(cfg, data, home, log)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert proc.returncode == 0, out
    assert "create ssh key pair" in out and "Plan: " in out
    if name == "preset-minimal":  # a master without an IP (nat): the plan says where its address comes from
        assert "address assigned by DHCP" in out
    assert not (home / "clusters" / data["cluster"]["name"]).exists(), "plan wrote state"
    attempts = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    host_ips = {h.get("connection", {}).get("ip") for h in data["hosts"]} - {None}
    assert not [a for a in attempts if a[0] in host_ips], f"a libvirt host was contacted: {attempts}"


def test_plan_names_each_unreachable_host_once_in_words(tmp_path):
    """Host errors used to come as one long line ("host1: host host1: ..."), prefixed with Python
    class names (`LibvirtError:`), printed twice. Now: one line per host, said once."""
    cfg = tmp_path / "ha.yaml"
    cfg.write_text((EXAMPLES / "ha.yaml").read_text())
    hosts = [h["name"] for h in yaml.safe_load(cfg.read_text())["hosts"]]
    env = {**os.environ, "KUBITECT_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "COLUMNS": "300"}
    for h in hosts:  # a test-driver URI whose host file does not exist: the host cannot be opened
        env[f"KUBITECT_LIBVIRT_URI_{env_key(h)}"] = f"test://{tmp_path}/gone-{h}.xml"
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(tmp_path / "c.jsonl"), "plan", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=120)
    # libxml2 (inside libvirt's test driver) prints its own "I/O warning" lines to stderr, from
    # several threads at once; they are not kubitect's output
    ours = [line for line in proc.stderr.splitlines() if "failed to load external entity" not in line]
    out = proc.stdout + "\n".join(ours)
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "Error:" not in out.replace("Error\n", "")
    assert "LibvirtError" not in out and "ConnectionError" not in out
    for h in hosts:
        lines = [line for line in out.splitlines() if f"gone-{h}.xml" in line]
        assert len(lines) == 1, f"{h} is named on {len(lines)} lines:\n{out}"
        assert lines[0].strip().startswith(f"{h}: cannot open libvirt at") and f"host {h}" not in lines[0]
    assert "stage 'network' failed during plan (the cause is shown above)" in out


def test_plan_of_the_seed_with_rook_shows_the_addon_and_downloads_nothing(tmp_path):
    """addons.rook.enabled on the seed: the plan lists the pinned manifests and the counts the
    CephCluster gets, before anything exists, without contacting anything (not even GitHub)."""
    data = yaml.safe_load((EXAMPLES / "ha.yaml").read_text())
    data["addons"] = {"rook": {"enabled": True}}
    cfg = tmp_path / "ha.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _plan_on_test_driver(cfg, data, tmp_path / "home", tmp_path / "connections.jsonl", columns=250)
    log = tmp_path / "connections.jsonl"
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out
    for name in ("crds.yaml", "common.yaml", "operator.yaml", "toolbox.yaml", "cephcluster.yaml", "blockpool.yaml"):
        assert re.search(rf"create\s+manifest\s+{re.escape(name)}", out), (name, out[-3000:])
    assert "mon 3, mgr 2, 3 OSD(s) on kubitect-ha-worker-1, kubitect-ha-worker-2, kubitect-ha-worker-3" in out
    assert "pool replicas 3, default StorageClass ceph-block" in out
    attempts = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    assert not [a for a in attempts if a[1] != 22], f"plan tried to download something: {attempts}"
