"""`kubitect ssh` and `kubitect export ssh-config` as a user meets them after `kubitect apply`.

The cluster is applied by the real engine with the TEST DOUBLE backends (no node answers), so
the config is checked by the real OpenSSH client (`ssh -G`, which parses without connecting) and
`kubitect ssh` runs against an `ssh` TEST DOUBLE on PATH that records its argv. The real
session through a real sshd is tests/lab/test_cli_access.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

CLUSTER = "kubitect-ha"
SHIM = """#!{python}
import json, os, sys
with open(os.environ["SSH_DOUBLE_LOG"], "w") as fh:
    json.dump(sys.argv[1:], fh)
sys.exit(7)
"""


@pytest.fixture
def applied(cli, fake_env):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    return fake_env / "home" / "clusters" / CLUSTER


def _ssh_g(config, host: str) -> dict[str, str]:
    """What OpenSSH itself makes of the config for `host` (ssh -G: no connection)."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client (apt openssh-client)")
def test_export_ssh_config_reaches_every_node_strictly_with_the_cluster_key(cli, applied, tmp_path):
    result = cli("export", "ssh-config", "--cluster", CLUSTER)
    assert result.exit_code == 0, result.output
    config = tmp_path / "exported"
    config.write_text(result.stdout)
    expected = {"kubitect-ha-lb-1": "10.10.13.201", "kubitect-ha-lb-2": "10.10.13.202",
                **{f"kubitect-ha-master-{i}": f"10.10.13.{9 + i}" for i in (1, 2, 3)},
                **{f"kubitect-ha-worker-{i}": f"10.10.13.{19 + i}" for i in (1, 2, 3)}}
    hosts = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("Host ")]
    assert hosts == [[name, ip] for name, ip in expected.items()], "every node, by name and address"
    for name, ip in expected.items():
        for alias in (name, ip):
            seen = _ssh_g(config, alias)
            assert seen["hostname"] == ip and seen["user"] == "k8s" and seen["port"] == "22"
            assert seen["stricthostkeychecking"] == "true"
            assert seen["userknownhostsfile"] == str(applied / "ssh" / "known_hosts")
            assert seen["identityfile"] == str(applied / "ssh" / "id_ed25519")
            assert seen["identitiesonly"] == "yes" and seen["passwordauthentication"] == "no"
    assert _ssh_g(config, "10.10.13.99")["stricthostkeychecking"] != "true", "no entry for a foreign address"

    as_json = cli("export", "ssh-config", "--cluster", CLUSTER, "-o", "json")
    doc = json.loads(as_json.stdout)
    assert (doc["v"], doc["kind"], doc["file"]) == (1, "ssh-config", str(applied / "ssh" / "config"))
    assert {i["name"]: i["hostname"] for i in doc["items"]} == expected
    assert doc["items"][0]["known_hosts"] == str(applied / "ssh" / "known_hosts")

    target = tmp_path / "kubitect-ha.sshconfig"
    assert cli("export", "ssh-config", "--cluster", CLUSTER, "--file", str(target)).exit_code == 0
    assert target.read_text() == result.stdout and stat.S_IMODE(target.stat().st_mode) == 0o600
    again = cli("export", "ssh-config", "--cluster", CLUSTER, "--file", str(target))
    assert again.exit_code == 2 and "does not overwrite" in again.stderr


def test_ssh_execs_openssh_with_the_cluster_config_and_its_exit_status(applied, fake_env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(SHIM.format(python=sys.executable))
    (bin_dir / "ssh").chmod(0o755)
    log = tmp_path / "argv.json"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SSH_DOUBLE_LOG": str(log)}

    def kubitect_ssh(*args: str) -> tuple[subprocess.CompletedProcess, list[str] | None]:
        log.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", "ssh", *args], capture_output=True,
                              text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
        return proc, (json.loads(log.read_text()) if log.exists() else None)

    config = str(applied / "ssh" / "config")
    for node in ("kubitect-ha-master-1", "master-1", "10.10.13.10"):
        proc, argv = kubitect_ssh("--cluster", CLUSTER, node, "--", "sudo", "crictl", "ps", "-a")
        assert proc.returncode == 7, proc.stderr  # the remote command's status, as ssh gives it
        assert argv == ["-F", config, "kubitect-ha-master-1", "--", "sudo", "crictl", "ps", "-a"]
    proc, argv = kubitect_ssh("lb-2", "--cluster", CLUSTER)
    assert argv == ["-F", config, "kubitect-ha-lb-2"], "no command: a login shell"
    assert stat.S_IMODE((applied / "ssh" / "config").stat().st_mode) == 0o600

    proc, argv = kubitect_ssh("--cluster", CLUSTER, "mastr-1", "--", "true")
    assert argv is None and proc.returncode == 1
    assert "has no node 'mastr-1'. Did you mean 'master-1'?" in proc.stderr
    assert "kubitect-ha-worker-1" in proc.stderr, "the error lists the nodes there are"
    proc, argv = kubitect_ssh("--cluster", "nosuch", "master-1")
    assert argv is None and proc.returncode == 1 and "cluster 'nosuch' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ssh_status_and_ssh_config_need_an_existing_cluster(cli, fake_env):
    for args in (["ssh", "--cluster", CLUSTER, "master-1"], ["export", "ssh-config", "--cluster", CLUSTER]):
        result = cli(*args)
        assert result.exit_code == 1 and f"cluster '{CLUSTER}' does not exist" in result.stderr
    for args in (["status", "--cluster", CLUSTER, "-o", "json"], ["export", "ssh-config", "--cluster", CLUSTER,
                                                                 "-o", "json"]):
        result = cli(*args)
        (event,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert result.exit_code == 1 and result.stderr == "", "-o json: the error is an event on stdout"
        assert (event["event"], event["kind"]) == ("error", "state") and "does not exist" in event["message"]
    as_path = cli("export", "ssh-config", "--cluster", "../etc")
    assert as_path.exit_code == 2, "a cluster name is never a path"


def test_status_contacts_no_node_without_a_pinned_key_and_reports_the_last_verify(cli, applied):
    """The doubles pin no host key, so status must not connect (a read command never trusts on first
    use): every node is 'not pinned'. The verify the doubles ran shows with its counts and age."""
    before = (applied / "ssh" / "known_hosts").read_text()
    assert cli("verify", "--cluster", CLUSTER).exit_code == 0
    result = cli("status", "--cluster", CLUSTER, "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["v"] == 1 and doc["kind"] == "cluster-status" and doc["cluster"] == CLUSTER
    assert doc["vip"] == "10.10.13.200" and doc["vip_holders"] == []
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert len(nodes) == 8 and {n["state"] for n in nodes.values()} == {"not pinned"}
    assert nodes["kubitect-ha-lb-1"] | {"detail": None} == {
        "name": "kubitect-ha-lb-1", "role": "lb", "host": "host1", "address": "10.10.13.201", "dhcp": False,
        "state": "not pinned", "detail": None, "holds_vip": None}
    assert doc["kubernetes"]["installed"] and doc["kubernetes"]["error"] == "no master answered"
    last = doc["last_verify"]
    assert last["failed"] == 0 and last["passed"] >= 0 and 0 <= last["age_seconds"] < 300
    assert doc["stages"]["verify"] == "completed"
    assert (applied / "ssh" / "known_hosts").read_text() == before, "status pinned nothing"

    text = cli("status", "--cluster", CLUSTER)
    assert text.exit_code == 0
    assert "VIP 10.10.13.200: held by nobody" in text.stdout
    assert "Kubernetes: unknown (no master answered)" in text.stdout
    assert re.search(r"Last verify: \d+ passed, 0 failed, \d+ skipped, \d+ s ago", text.stdout)
    assert "kubitect-ha-worker-3" in text.stdout and "not pinned" in text.stdout


def test_node_readiness_from_kubectl_json():
    from kubitect_core.status import age, node_readiness

    nodes = {"items": [
        {"metadata": {"name": "m1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "w1"}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}},
        {"metadata": {"name": "w2"}, "status": {"conditions": []}}]}
    assert node_readiness(json.dumps(nodes)) == {"m1": "Ready", "w1": "NotReady (KubeletNotReady)", "w2": "Unknown"}
    assert [age(s) for s in (None, 5, 61, 7200, 90000)] == ["unknown time", "5 s", "1 min", "2 h", "1 d"]


def test_ssh_completes_the_nodes_of_the_cluster_given(applied):
    from kubitect_core.cli.access_cmds import _node_names

    class Ctx:
        def __init__(self, params):
            self.params = params

    names = [n for n, _ in _node_names(Ctx({"cluster": CLUSTER}), "kubitect-ha-m")]
    assert names == [f"kubitect-ha-master-{i}" for i in (1, 2, 3)]
    assert dict(_node_names(Ctx({"cluster": CLUSTER}), ""))["kubitect-ha-lb-2"] == "lb on host2, 10.10.13.202"
    assert _node_names(Ctx({}), "") == [] and _node_names(Ctx({"cluster": "nosuch"}), "") == []
