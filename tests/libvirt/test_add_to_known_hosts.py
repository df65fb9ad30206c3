"""`ssh.addToKnownHosts: true` (the seed sets it), through the CLI as a user runs it, against
libvirt's test driver: the nodes' pinned keys land in the user's known_hosts, hashed as OpenSSH's
HashKnownHosts says; a re-run adds nothing; scale-down and destroy remove exactly kubitect's
lines. The user's ssh dir is the test's private KUBITECT_SSH_DIR (see tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
import yaml
from libvirt_helpers import EXAMPLES, HOST_BR0, make_image

from kubitect_core import known_hosts as kh

pytestmark = pytest.mark.libvirt

CLUSTER = "kubitect-ha"
OLD = asyncssh.generate_private_key("ssh-ed25519")
FOREIGN = ("# written by the user\n"
           f"{kh.key_line('10.10.13.10', OLD)} from-an-older-machine\n"
           f"{kh.key_line('github.example', OLD)}\n")


def _kubitect(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"KUBITECT_LIBVIRT_URI_HOST{i}": HOST_BR0 for i in range(1, 6)}}
    return subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=180)


def _ours(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[1]: line for line in text.splitlines() if " kubitect:" in line}


def test_nodes_keys_follow_the_cluster_in_the_users_known_hosts(tmp_path, private_user_ssh_dir):
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("openssh-client is not installed")
    key = tmp_path / "host-key"
    key.write_text("unused\n")
    data = yaml.safe_load((EXAMPLES / "ha.yaml").read_text())
    for host in data["hosts"]:
        host["connection"]["ssh"]["keyfile"] = str(key)
    data["cluster"]["nodeTemplate"]["os"]["source"] = str(make_image(tmp_path / "img"))
    assert data["cluster"]["nodeTemplate"]["ssh"]["addToKnownHosts"] is True
    cfg = tmp_path / "ha.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    user_kh = private_user_ssh_dir / "known_hosts"
    user_kh.write_text(FOREIGN)
    (private_user_ssh_dir / "config").write_text("Host 10.10.13.201\n  HashKnownHosts no\n"
                                                 "Host *\n  HashKnownHosts yes\n")
    home = tmp_path / "home"
    stages = ("run", "--stage", "network", "--stage", "storage", "--stage", "vms", "--auto-approve")

    run = _kubitect(home, *stages, str(cfg))
    assert run.returncode == 0, run.stdout + run.stderr
    pinned = home / "clusters" / CLUSTER / "ssh" / "known_hosts"
    nodes = {f"{CLUSTER}-{role}-{i}": ip for role, i, ip in (
        ("lb", 1, "10.10.13.201"), ("lb", 2, "10.10.13.202"), ("master", 1, "10.10.13.10"),
        ("master", 2, "10.10.13.11"), ("master", 3, "10.10.13.12"), ("worker", 1, "10.10.13.20"),
        ("worker", 2, "10.10.13.21"), ("worker", 3, "10.10.13.22"))}
    text = user_kh.read_text()
    assert text.startswith(FOREIGN)
    ours = _ours(text)
    assert set(ours) == {f"kubitect:{CLUSTER}/{n}" for n in nodes}
    for node, ip in nodes.items():
        line = ours[f"kubitect:{CLUSTER}/{node}"]
        assert line.startswith(ip + " ") if ip == "10.10.13.201" else line.startswith("|1|"), line
        found = subprocess.run(["ssh-keygen", "-F", ip, "-f", str(user_kh)], capture_output=True, text=True)
        assert found.returncode == 0, ip  # OpenSSH finds it
        ours_key = kh.line_key(line).public_data
        assert [k.public_data for k in kh.keys_for(pinned, ip)] == [ours_key]  # the pinned key
    assert "also holds another key for 10.10.13.10" in " ".join(run.stdout.split())  # said, not removed

    again = _kubitect(home, *stages, str(cfg))
    assert again.returncode == 0 and user_kh.read_text() == text  # nothing added twice

    data["cluster"]["nodes"]["worker"]["instances"].pop()
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    smaller = _kubitect(home, *stages, str(cfg))
    assert smaller.returncode == 0, smaller.stdout + smaller.stderr
    after = user_kh.read_text()
    gone = ours.pop(f"kubitect:{CLUSTER}/{CLUSTER}-worker-3")
    assert gone not in after and _ours(after) == ours

    destroy = _kubitect(home, "destroy", "--cluster", CLUSTER, "--auto-approve")
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert user_kh.read_text() == FOREIGN
