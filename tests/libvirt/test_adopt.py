"""`kubitect adopt` (issue 12, existing Kubitect users): a cluster Kubitect (Go) made, taken over
from its Terraform state, on libvirt's test driver.

The cluster is planted as Kubitect's Terraform leaves it (tests/fixtures/kubitect_go_cluster.py):
its pool, `base_volume`, nat network with DHCP host entries, per node `<vm>-main-disk`, data disks
and `<vm>-cloud-init.iso`, domains with MACs libvirt picked, and the cluster directory with the
Terraform state, the applied config, admin.conf and the SSH key. Then, as the user would:
`kubitect adopt` (dry run first), a second adopt, `kubitect plan` with the same config (no change)
and with one worker more (only that worker), and `kubitect destroy` (nothing left, Kubitect's
`base_volume` included). A state that does not match the host is refused, naming what differs.

Every host maps to `test:///default`, whose state every connection in this process shares (the
test holds one open); the cluster name is unique and swept afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
import yaml

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from kubitect_go_cluster import plant, sweep  # noqa: E402
from libvirt_helpers import make_image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from kubitect_core.config import load_config_text  # noqa: E402

pytestmark = pytest.mark.libvirt
NS = "{https://kubitect.dev/xmlns/1}cluster"


def _user_config(name: str, image: Path, workers: int = 2) -> dict:
    """The config the user gave Kubitect (Go): nat, a master, a worker with a data disk, a DHCP worker;
    the image a local file (Kubitect takes a path as os.source too; no internet here)."""
    instances = [{"id": 1, "ip": "192.168.150.20", "dataDisks": [{"name": "rook", "pool": "main", "size": 8}]},
                 {"id": 2}]
    instances += [{"id": i, "ip": f"192.168.150.{30 + i}"} for i in range(3, workers + 1)]
    return {"hosts": [{"name": "localhost", "connection": {"type": "local"}}],
            "cluster": {"name": name, "network": {"mode": "nat", "cidr": "192.168.150.0/24"},
                        "nodeTemplate": {"user": "k8s", "os": {"distro": "ubuntu22", "source": str(image)}},
                        "nodes": {"master": {"default": {"mainDiskSize": 8},
                                             "instances": [{"id": 1, "ip": "192.168.150.10"}]},
                                  "worker": {"default": {"mainDiskSize": 8}, "instances": instances}}},
            "kubernetes": {"version": "v1.33.4", "manager": "kubespray"}}


def _applied(data: dict) -> dict:
    """The same config as Kubitect stores it after apply: its defaults filled in."""
    out = json.loads(json.dumps(data))
    host = out["hosts"][0]
    host.update(default=True, mainResourcePoolPath="/var/lib/libvirt/images/")
    tmpl = out["cluster"]["nodeTemplate"]
    tmpl["os"].update(networkInterface="ens3")
    tmpl.update(cpuMode="custom", updateOnBoot=True, ssh={"addToKnownHosts": False})
    for role in ("master", "worker"):
        out["cluster"]["nodes"][role]["default"] = {"cpu": 2, "ram": 4, "mainDiskSize": 8}
    out["kubernetes"]["networkPlugin"] = "calico"
    return out


@pytest.fixture
def kubitect_go(tmp_path, monkeypatch):
    """A home where Kubitect (Go) applied a cluster on `test:///default`; yields (name, planted, conn, cli)."""
    from kubitect_core.cli import app

    name = f"kbt-adopt-{secrets.token_hex(3)}"
    home = tmp_path / "home"
    monkeypatch.setenv("KUBITECT_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBITECT_LIBVIRT_URI_LOCALHOST", "test:///default")
    monkeypatch.setenv("COLUMNS", "200")
    conn = libvirt.open("test:///default")  # held open: the shared state lives while a connection does
    image = make_image(tmp_path / "image")
    user = _user_config(name, image)
    applied_text = yaml.safe_dump(_applied(user), sort_keys=False)
    loaded = load_config_text(applied_text, "kubitect-applied.yaml")
    planted = plant(conn, home, name, loaded, applied_text, yaml.safe_dump(user, sort_keys=False),
                    "/var/lib/libvirt/images", dhcp_leases={f"{name}-worker-2": "192.168.150.57"})
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(user, sort_keys=False))
    runner = CliRunner()

    def cli(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    try:
        yield name, planted, conn, cli, image
    finally:
        sweep(conn, name)
        conn.close()


def _tag(xml: str) -> dict | None:
    import xml.etree.ElementTree as ET

    el = ET.fromstring(xml).find(f"./metadata/{NS}")
    return dict(el.attrib) if el is not None else None


def _without_metadata(xml: str) -> str:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    for meta in root.findall("metadata"):
        root.remove(meta)
    return ET.tostring(root, encoding="unicode")


def _plan(cli, config: Path, *extra: str) -> dict:
    res = cli("plan", "--config", str(config), "-o", "json", *extra)
    assert res.exit_code == 0, res.output
    return next(e for e in map(json.loads, res.output.splitlines()) if e.get("event") == "plan")


def test_adopt_then_plan_shows_no_change_and_a_new_worker_plans_only_itself(kubitect_go, tmp_path):
    name, planted, conn, cli, image = kubitect_go
    doms = {n: conn.lookupByName(n) for n in planted.uuids}
    before = {n: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n, d in doms.items()}
    network_uuid = conn.networkLookupByName(f"{name}-network").UUIDString()

    # Before: a Kubitect (Go) directory, refused by plan/apply as before, adoptable.
    refused = cli("plan", "--config", str(tmp_path / "cluster.yaml"))
    assert refused.exit_code == 1 and f"kubitect adopt --cluster {name}" in refused.output

    dry = cli("adopt", "--cluster", name, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "can be adopted (dry run" in dry.output and f"tagged for cluster {name}" in dry.output
    events = [json.loads(x) for x in cli("adopt", "--cluster", name, "--dry-run", "-o", "json").output.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["command"] == "adopt" and events[-1]["dry_run"]
    assert {(c["action"], c["kind"]) for c in events[-1]["changes"]} == {
        ("keep", "pool"), ("keep", "volume"), ("change", "network"), ("change", "domain")}
    assert all(_tag(d.XMLDesc(0)) is None for d in doms.values())  # the dry run touched nothing
    assert not (planted.dir / "record.json").exists()

    res = cli("adopt", "--cluster", name)
    assert res.exit_code == 0, res.output
    assert f"Cluster '{name}' adopted from Kubitect (Go)" in res.output
    assert "kubernetes: Kubernetes v1.33.4 by kubespray, installed by Kubitect (Go), is held" in res.output

    # The VMs are the same VMs: same UUID, running, definition unchanged but for our tag.
    for n, dom in doms.items():
        assert dom.UUIDString() == planted.uuids[n] and dom.isActive()
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        tag = _tag(xml)
        assert tag["name"] == name and tag["adopted"] == "Kubitect (Go)" and tag["spec"]
        assert _without_metadata(xml) == _without_metadata(before[n])
    net = conn.networkLookupByName(f"{name}-network")
    assert net.isActive() and net.UUIDString() == network_uuid  # kept running, not recreated
    pool = conn.storagePoolLookupByName(f"{name}-main-resource-pool")
    assert "base_volume" in pool.listVolumes() and f"{name}-master-1-cloud-init.iso" in pool.listVolumes()

    # Key and kubeconfig in kubitect's layout, 0600; Kubitect's own files byte for byte as they were.
    ssh_key, kubeconfig = planted.dir / "ssh" / "id_ed25519", planted.dir / "kubeconfig"
    assert ssh_key.read_bytes() == (planted.dir / "config/.ssh/id_rsa").read_bytes()
    assert kubeconfig.read_bytes() == (planted.dir / "config/admin.conf").read_bytes()
    assert oct(ssh_key.stat().st_mode & 0o777) == "0o600" and oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert {p: p.read_bytes() for p in planted.files} == planted.files
    record = json.loads((planted.dir / "record.json").read_text())
    vms = record["stages"]["vms"]["data"]["libvirt"]
    assert vms["nodes"][f"{name}-worker-2"]["ip"] == "192.168.150.57"  # the DHCP node's lease, from the state
    assert vms["adopted"]["seeds"][f"{name}-worker-1"] == f"{name}-worker-1-cloud-init.iso"
    assert vms["nodes"][f"{name}-master-1"]["mac"] == planted.macs[f"{name}-master-1"]
    # The network is the cluster's by its recorded name (the test driver cannot show the tag adoption
    # adds to a running network's persistent definition; real libvirt can, and destroy finds it either way).
    network = record["stages"]["network"]["data"]["libvirt"]
    assert network["adopted"]["networks"] == {"localhost": f"{name}-network"}

    listed = cli("list", "clusters", "-o", "json")
    assert "adopted from Kubitect (Go)" in listed.output

    # Adopting again is a no-op.
    snapshot = (planted.dir / "record.json").read_bytes()
    again = cli("adopt", "--cluster", name)
    assert again.exit_code == 0 and "adopted already" in again.output
    assert (planted.dir / "record.json").read_bytes() == snapshot

    # The unchanged config: no change in any stage, and no config change since the last apply.
    plan = _plan(cli, tmp_path / "cluster.yaml")
    moving = [(s["stage"], c) for s in plan["stages"] for c in s["changes"] if c["action"] != "keep"]
    assert plan["pending"] == 0 and moving == [] and plan["config_changes"] == [], (moving, plan["config_changes"])
    kube = next(s for s in plan["stages"] if s["stage"] == "kubernetes")["changes"]
    assert [c["detail"].split(",")[0] for c in kube] == ["held: Kubernetes v1.33.4 by kubespray"]

    # One worker more: the plan creates that worker (volumes, seed, domain, DHCP reservation) and nothing else.
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(_user_config(name, image, workers=3), sort_keys=False))
    plan = _plan(cli, bigger, "--action", "scale")  # as in Kubitect, adding nodes is a scale
    moving = [c for s in plan["stages"] for c in s["changes"] if c["action"] != "keep"]
    new = f"{name}-worker-3"
    assert {(c["action"], c["kind"], c["name"]) for c in moving} == {
        ("create", "volume", f"{new}-main-disk"), ("create", "volume", f"{new}-cloudinit.iso"),
        ("create", "domain", new), ("change", "network", f"{name}-network")}, moving
    assert next(c for c in moving if c["kind"] == "network")["detail"] == "+1 reservations"
    assert [(e["path"], e["kind"]) for e in plan["config_changes"]] == [("cluster.nodes.worker.instances[3]", "create")]
    main_disk = next(c for c in moving if c["name"] == f"{new}-main-disk")
    assert main_disk["detail"].startswith(f"{name}-main-resource-pool, 8 GiB")

    # Applied (the machine stages; Kubernetes is held): the new worker is made, backed by Kubitect's
    # base_volume; the adopted VMs, their seeds and MACs stay exactly as they were.
    from kubitect_core.engine import Engine, Options, run_sync
    from kubitect_core.plugins import load_registry

    tagged = {n: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n, d in doms.items()}
    engine = Engine(planted.dir.parents[1], load_registry())
    run_sync(engine.run_stages(bigger, ["network", "storage", "vms"], Options(action="scale", auto_approve=True)))
    assert {n: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n, d in doms.items()} == tagged
    assert _tag(conn.lookupByName(new).XMLDesc(0))["name"] == name
    backing = conn.storagePoolLookupByName(f"{name}-main-resource-pool").storageVolLookupByName(
        f"{new}-main-disk").XMLDesc(0)
    assert f"/{name}-main-resource-pool/base_volume</path>" in backing
    vols = conn.storagePoolLookupByName(f"{name}-main-resource-pool").listVolumes()
    assert f"{name}-worker-1-cloud-init.iso" in vols and f"{name}-worker-1-cloudinit.iso" not in vols
    assert f"{new}-cloudinit.iso" in vols  # a node kubitect made has kubitect's names
    again = _plan(cli, bigger, "--action", "scale")
    assert [c for s in again["stages"] for c in s["changes"] if c["action"] != "keep"] == []

    # destroy leaves nothing behind: the adopted VMs, disks, seeds, Kubitect's base_volume, pool, network.
    gone = cli("destroy", "--cluster", name, "-y")
    assert gone.exit_code == 0, gone.output
    left = [d.name() for d in conn.listAllDomains(0) if d.name().startswith(name)]
    left += [n.name() for n in conn.listAllNetworks(0) if n.name().startswith(name)]
    left += [p.name() for p in conn.listAllStoragePools(0) if p.name().startswith(name)]
    assert left == [] and not planted.dir.exists()


def test_a_state_that_does_not_match_the_host_is_refused_naming_what_differs(kubitect_go):
    name, planted, conn, cli, _image = kubitect_go
    # Someone recreated worker-1 by hand (a new UUID) and deleted the master's seed volume.
    w1 = conn.lookupByName(f"{name}-worker-1")
    xml = w1.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    w1.destroy()
    w1.undefine()
    import re

    conn.defineXML(re.sub(r"<uuid>[^<]+</uuid>", "", xml))
    pool = conn.storagePoolLookupByName(f"{name}-main-resource-pool")
    pool.storageVolLookupByName(f"{name}-master-1-cloud-init.iso").delete(0)

    res = cli("adopt", "--cluster", name)
    assert res.exit_code == 1
    out = " ".join(res.output.split())
    assert f"cannot adopt cluster '{name}'" in out and "nothing was changed" in out
    assert f"domain {name}-worker-1 has UUID" in out
    assert f"the Terraform state says {planted.uuids[name + '-worker-1']}" in out
    assert f"the cloud-init volume of {name}-master-1 ({name}-master-1-cloud-init.iso) is not in pool" in out
    assert all(_tag(d.XMLDesc(0)) is None for d in conn.listAllDomains(0) if d.name().startswith(name))
    assert not (planted.dir / "adopted.json").exists() and not (planted.dir / "record.json").exists()
    assert cli("destroy", "--cluster", name, "-y").exit_code == 1  # still Kubitect's: refused as before


def test_adopt_refuses_what_is_not_kubitect_go(tmp_path, monkeypatch):
    from kubitect_core.cli import app

    monkeypatch.setenv("KUBITECT_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "clusters" / "plain").mkdir(parents=True)
    res = CliRunner().invoke(app, ["adopt", "--cluster", "plain"], catch_exceptions=False)
    assert res.exit_code == 1 and "was not made by Kubitect (Go): there is nothing to adopt" in " ".join(
        res.output.split())
    assert os.listdir(tmp_path / "home" / "clusters" / "plain") == []
