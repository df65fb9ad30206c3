"""A home shared with Kubitect (the Go original): its cluster directories are recognised, listed
as Kubitect's, exported from its own files, and never destroyed or applied over.

The directory is built the way Kubitect leaves one after `kubitect apply` (reference/kubitect.md
§3.1): config/{kubitect.yaml, kubitect-applied.yaml, admin.conf, infrastructure.yaml, nodes.yaml,
.ssh/id_rsa, terraform/terraform.tfstate}, terraform/ and ansible/ trees, plus the home-level
cache/ and share/. Before the fix, `list` showed it as "empty", the exports said there was
nothing, and `destroy -y` deleted it with the Terraform state, orphaning its VMs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

NAME = "old-ha"
ADMIN_CONF = """apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority-data: R08tQ0E=, server: 'https://192.168.113.200:6443'}
  name: old-ha
contexts:
- context: {cluster: old-ha, user: old-ha}
  name: old-ha
current-context: old-ha
users:
- name: old-ha
  user: {client-certificate-data: R08tQ0VSVA==, client-key-data: R08tS0VZ}
"""


def _tfstate(domains: list[str]) -> str:
    resources = [{"module": "module.host_localhost", "mode": "managed", "type": "libvirt_network",
                  "name": "network", "provider": 'provider["registry.terraform.io/dmacvicar/libvirt"]',
                  "instances": [{"attributes": {"name": f"{NAME}-network"}}]}]
    resources += [{"module": f"module.host_localhost.module.vm[\"{d}\"]", "mode": "managed",
                   "type": "libvirt_domain", "name": "vm_domain",
                   "provider": 'provider["registry.terraform.io/dmacvicar/libvirt"]',
                   "instances": [{"attributes": {"name": d, "id": f"uuid-{d}"}}]} for d in domains]
    return json.dumps({"version": 4, "terraform_version": "1.5.2", "serial": 12, "lineage": "x",
                       "outputs": {}, "resources": resources}, indent=2)


@pytest.fixture
def kubitect_go_home(fake_env):
    """A home where Kubitect (Go) applied cluster `old-ha` (three VMs)."""
    home = fake_env / "home"
    seed = yaml.safe_load((fake_env / "ha.yaml").read_text())
    seed["cluster"]["name"] = NAME
    config = yaml.safe_dump(seed, sort_keys=False)
    d = home / "clusters" / NAME
    files = {
        d / "config" / "kubitect.yaml": config,
        d / "config" / "kubitect-applied.yaml": config,
        d / "config" / "admin.conf": ADMIN_CONF,
        d / "config" / "infrastructure.yaml": "nodes:\n  master:\n    instances: []\n",
        d / "config" / "nodes.yaml": "all:\n  hosts: {}\n",
        d / "config" / ".ssh" / "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n",
        d / "config" / ".ssh" / "id_rsa.pub": "ssh-rsa AAAA old-ha\n",
        d / "config" / "terraform" / "terraform.tfstate": _tfstate([f"{NAME}-lb-1", f"{NAME}-master-1",
                                                                   f"{NAME}-worker-1"]),
        d / "terraform" / "main.tf": "module \"host_localhost\" {}\n",
        d / "terraform" / "variables.yaml": config,
        d / "ansible" / "kubitect" / "ansible.cfg": "[defaults]\n",
        home / "cache" / NAME / "facts": "{}\n",
        home / "share" / "terraform" / "1.5.2" / "terraform": "#!/bin/sh\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return home, files


def _snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_list_shows_the_cluster_as_made_by_kubitect_go(cli, kubitect_go_home):
    rows = json.loads(cli("list", "clusters", "-o", "json").output)["items"]
    assert rows == [{"name": NAME, "made_by": "Kubitect (Go)", "damaged": False,
                     "status": "active, 3 VM(s) in its Terraform state; kubitect leaves it alone",
                     "dir": str(kubitect_go_home[0] / "clusters" / NAME), "local": False}]
    text = cli("list", "clusters").output
    assert "Kubitect (Go)" in text and "empty" not in text


def test_exports_read_kubitects_own_files(cli, kubitect_go_home):
    home, files = kubitect_go_home
    config = cli("export", "config", "--cluster", NAME)
    assert config.exit_code == 0, config.output
    assert config.output == files[home / "clusters" / NAME / "config" / "kubitect-applied.yaml"]
    kubeconfig = cli("export", "kubeconfig", "--cluster", NAME)
    assert kubeconfig.exit_code == 0, kubeconfig.output
    assert kubeconfig.output == ADMIN_CONF


@pytest.mark.parametrize("args", [["destroy", "--cluster", NAME, "-y"],
                                  ["destroy", "--cluster", NAME, "-y", "--force"],
                                  ["verify", "--cluster", NAME]], ids=["destroy", "destroy-force", "verify"])
def test_destroy_and_verify_refuse_and_every_file_survives(cli, kubitect_go_home, fakes, args):
    home, _ = kubitect_go_home
    before = _snapshot(home)
    result = cli(*args)
    assert result.exit_code == 1, result.output
    out = _flat(result.output)
    assert f"cluster '{NAME}'" in out and "was made by Kubitect (Go)" in out
    if args[0] == "destroy":
        assert "orphan its VMs" in out and "terraform.tfstate" in out
    assert _snapshot(home) == before
    assert [c for c in fakes.calls() if c["op"] == "call"] == []


@pytest.mark.parametrize("command", [["apply"], ["apply", "--reconcile", "-y"], ["plan"],
                                     ["run", "--stage", "network"]], ids=lambda c: "-".join(c))
def test_apply_plan_and_run_refuse_a_config_naming_that_cluster(cli, kubitect_go_home, fakes, command):
    home, files = kubitect_go_home
    cfg = home / "clusters" / NAME / "config" / "kubitect-applied.yaml"
    copy = home.parent / "same-name.yaml"
    copy.write_text(cfg.read_text())
    before = _snapshot(home)
    result = cli(command[0], str(copy), *command[1:])
    assert result.exit_code == 1, result.output
    assert "was made by Kubitect (Go)" in _flat(result.output)
    assert _snapshot(home) == before
    assert [c for c in fakes.calls() if c["op"] == "call"] == []


def test_kubitect_clusters_beside_it_still_work(cli, kubitect_go_home, fake_env, fakes):
    home, _ = kubitect_go_home
    stages = [a for s in ("network", "storage", "vms") for a in ("--stage", s)]
    assert cli("run", str(fake_env / "ha.yaml"), *stages).exit_code == 0
    names = {r["name"]: r["made_by"] for r in json.loads(cli("list", "clusters", "-o", "json").output)["items"]}
    assert names == {NAME: "Kubitect (Go)", "kubitect-ha": "kubitect"}
    before = _snapshot(home / "clusters" / NAME)
    assert cli("destroy", "--cluster", "kubitect-ha", "-y").exit_code == 0
    assert _snapshot(home / "clusters" / NAME) == before


def test_an_inactive_kubitect_go_directory_is_still_refused(cli, kubitect_go_home):
    home, _ = kubitect_go_home
    (home / "clusters" / NAME / "config" / "terraform" / "terraform.tfstate").unlink()
    rows = json.loads(cli("list", "clusters", "-o", "json").output)["items"]
    assert rows[0]["status"] == "not active (no Terraform state); kubitect leaves it alone"
    assert cli("destroy", "--cluster", NAME, "-y").exit_code == 1
    assert (home / "clusters" / NAME / "config" / "admin.conf").exists()
