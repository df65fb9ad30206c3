"""Real VMs with DHCP addresses (issue 12): a nat-mode cluster whose nodes have no IP in the config.

A load balancer, a master and a worker, none with an `ip`, on the `local` host: libvirtd + QEMU
(TCG) run inside a lab namespace (prefix `kbtdh-`), the cluster network is libvirt's own nat
network with its dnsmasq, inside that namespace. The real CLI runs there too:

1. `kubitect run --stage network --stage storage --stage vms --stage loadbalancers`: every node
   gets a lease, the vms stage records it and pins it with a DHCP reservation (MAC -> IP);
   HAProxy on the load balancer (read from /etc/haproxy/haproxy.cfg on the VM) has the master's
   and the worker's leases as backends.
2. `kubitect verify`: the report names every node with its leased address; nothing fails. The
   kubernetes stage is not run: Kubernetes binaries cannot be installed here (no registry ships
   them to this machine), so the Kubernetes checks are skipped with that reason.
3. The same `kubitect run` again: every stage reports only "keep".
4. A lease that moves: the worker's reservation is changed by hand and the worker reset, so
   dnsmasq gives it another address. `kubitect run --stage vms` refuses, naming both addresses,
   restores the reservation and keeps the recorded address.
5. `kubitect destroy`: no domain, network, pool or volume of the cluster is left.

The three VMs boot once and serve every step.
"""

from __future__ import annotations

import ipaddress
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import vm_lab
import yaml

pytestmark = pytest.mark.e2e

PREFIX = "kbtdh-"
CLUSTER = "kbtdh"
CIDR = ipaddress.IPv4Network("10.161.0.0/24")
NETWORK = f"{CLUSTER}-network"
LB, MASTER, WORKER = f"{CLUSTER}-lb-1", f"{CLUSTER}-master-1", f"{CLUSTER}-worker-1"
STAGES = ("network", "storage", "vms", "loadbalancers")
HTTP_PORT = 8080  # a forward port to the workers, so the worker's lease is a HAProxy backend too
MOVED_TO = "10.161.0.240"


@pytest.fixture(scope="module")
def image():
    vm_lab.require()
    return vm_lab.lb_image()


@pytest.fixture
def lab(image):
    """A lab namespace with libvirtd and no bridge: the nat network brings its own."""
    vm_lab.skip_if_libvirtd_runs()
    with vm_lab.bridge_lab("dhcp", PREFIX) as lab:
        yield lab


def _config(tmp: Path, image_path: Path) -> Path:
    size = {"cpu": 1, "ram": 1, "mainDiskSize": 4}
    cfg = {
        "hosts": [{"name": "lab", "connection": {"type": "local"}, "mainResourcePoolPath": str(tmp / "pools")}],
        "cluster": {
            "name": CLUSTER,
            "network": {"mode": "nat", "cidr": str(CIDR)},
            "nodeTemplate": {"user": "k8s", "updateOnBoot": False,
                             "os": {"distro": "debian12", "source": str(image_path)}},
            "nodes": {
                "loadBalancer": {"forwardPorts": [{"name": "http", "port": HTTP_PORT, "target": "workers"}],
                                 "instances": [{"id": "1", **size}]},
                "master": {"instances": [{"id": "1", **size}]},
                "worker": {"instances": [{"id": "1", **size}]},
            },
        },
    }
    path = tmp / "dhcp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _tail(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"


def _recorded(home: Path) -> dict:
    record = json.loads((home / "clusters" / CLUSTER / "record.json").read_text())
    return record["stages"]["vms"]["data"]["libvirt"]["nodes"]


def _reservations(lab) -> dict[str, tuple[str, str]]:
    """MAC -> (name, ip) of the DHCP host reservations in the cluster network."""
    root = ET.fromstring(vm_lab.virsh(lab, "net-dumpxml", NETWORK))
    return {h.get("mac"): (h.get("name"), h.get("ip")) for h in root.findall("./ip/dhcp/host")}


def _leases(lab) -> dict[str, str]:
    """MAC -> IPv4 of the leases dnsmasq holds now (virsh's own view, not kubitect's)."""
    out = vm_lab.virsh(lab, "net-dhcp-leases", NETWORK)
    found = {}
    for line in out.splitlines():  # expiry date, expiry time, MAC, protocol, IP/prefix, hostname, id
        parts = line.split()
        if len(parts) >= 5 and parts[3] == "ipv4":
            found[parts[2]] = parts[4].split("/")[0]
    return found


def _ssh(lab, cluster_dir: Path, node: str, command: str):
    """ssh through the config `kubitect verify` exported (cluster key, pinned host keys), without
    the shared connections of the verify run (their directory is gone with it)."""
    return lab.run(["ssh", "-F", str(cluster_dir / "conformance" / "ssh_config"), "-o", "ConnectTimeout=10",
                    "-o", "ControlMaster=no", "-o", "ControlPath=none", node, command],
                   capture_output=True, text=True, timeout=60)


def _run(lab, home: Path, cfg: Path, *stages: str, timeout: float = 900):
    args = [a for s in stages for a in ("--stage", s)]
    return vm_lab.kubitect(lab, home, "run", *args, "--auto-approve", "--output", "json", str(cfg),
                           timeout=timeout)


def _finished(run) -> list[dict]:
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return [e for e in events if e["event"] == "stage_finished"]


def _changes(run) -> dict[str, list[dict]]:
    return {e["stage"]: e["changes"] for e in _finished(run)}


def _stage_seconds(run) -> dict[str, float]:
    return {e["stage"]: round(e["seconds"], 1) for e in _finished(run)}


def _boot_timeline(run) -> dict[str, dict[str, float]]:
    """Per node, seconds from "starting" to the lease and to "ready" (SSH + cloud-init done)."""
    from datetime import datetime

    seen: dict[str, dict[str, datetime]] = {}
    for line in run.stdout.splitlines():
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e["event"] != "progress" or e.get("stage") != "vms":
            continue
        key = "start" if e["message"] == "starting" else "lease" if e["message"].startswith("leased ") else \
            "ready" if e["message"] == "ready" else None
        if key:
            seen.setdefault(e["subject"], {})[key] = datetime.fromisoformat(e["time"])
    return {node: {k: round((t - marks["start"]).total_seconds(), 1) for k, t in marks.items() if k != "start"}
            for node, marks in seen.items() if "start" in marks}


def _haproxy_servers(cfg_text: str) -> set[tuple[str, str]]:
    """(name, ip:port) of every `server` line."""
    out = set()
    for line in cfg_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "server":
            out.add((parts[1], parts[2]))
    return out


def _wait_lease(lab, mac: str, ip: str, timeout: float = 240) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if _leases(lab).get(mac) == ip:
            return round(time.monotonic() - t0, 1)
        time.sleep(2)
    raise AssertionError(f"{mac} never got {ip}; leases now: {_leases(lab)}")


def test_nat_nodes_without_ips_get_leases_used_by_every_stage(lab, image, tmp_path):
    home = tmp_path / "home"
    cfg = _config(tmp_path, image.qcow2)
    cluster_dir = home / "clusters" / CLUSTER
    measured: dict = {}
    t_all = time.monotonic()
    try:
        # 1. build: leases recorded and pinned, HAProxy pointed at them
        measured["run_seconds"], run = vm_lab.timed(_run, lab, home, cfg, *STAGES)
        measured["stage_seconds"], measured["boot"] = _stage_seconds(run), _boot_timeline(run)
        assert run.returncode == 0, f"kubitect run failed: {_tail(run)}"
        nodes = _recorded(home)
        leases = {name: nodes[name]["ip"] for name in (LB, MASTER, WORKER)}
        measured["leases"] = leases
        assert all(ip and ipaddress.IPv4Address(ip) in CIDR for ip in leases.values()), leases
        assert len(set(leases.values())) == 3, leases
        assert all(nodes[n]["dhcp"] and nodes[n]["ready"] and nodes[n]["domain"] == n for n in leases), nodes
        held = _leases(lab)
        assert {n: held.get(nodes[n]["mac"]) for n in leases} == leases, held  # what dnsmasq says
        assert {mac: r for mac, r in _reservations(lab).items()} == \
            {nodes[n]["mac"]: (n, ip) for n, ip in leases.items()}
        lb_record = json.loads((cluster_dir / "record.json").read_text())["stages"]["loadbalancers"]["data"]
        assert lb_record["endpoint"] == leases[LB] and lb_record["nodes"][LB]["ip"] == leases[LB]

        # 2. verify: the report names the leased addresses
        measured["verify_seconds"], verify = vm_lab.timed(
            vm_lab.kubitect, lab, home, "verify", "--cluster", CLUSTER, timeout=900)
        report = json.loads((cluster_dir / "reports" / "conformance.json").read_text())
        print("\n" + verify.stdout[-3000:])
        assert verify.returncode == 0, f"kubitect verify failed: {_tail(verify)}"
        assert report["failed"] == 0, [c for c in report["cases"] if c["outcome"] == "failed"]
        assert {n["name"]: (n["ip"], n["address"]) for n in report["nodes"]} == \
            {n: (ip, "dhcp") for n, ip in leases.items()}
        identity = [c for c in report["cases"] if c["name"].startswith("test_node_identity_is_as_configured")]
        assert len(identity) == 3 and {c["outcome"] for c in identity} == {"passed"}, identity
        assert all(ip in verify.stdout for ip in leases.values()), "the printed report misses a lease"
        k8s = [c for c in report["cases"] if c["module"].endswith("test_kubernetes")]
        assert k8s and {c["outcome"] for c in k8s} == {"skipped"}, k8s

        # HAProxy's backends are the leases (the file on the VM, not kubitect's record of it)
        cfg_text = _ssh(lab, cluster_dir, LB, "cat /etc/haproxy/haproxy.cfg")
        assert cfg_text.returncode == 0, cfg_text.stderr
        servers = _haproxy_servers(cfg_text.stdout)
        assert (MASTER, f"{leases[MASTER]}:6443") in servers, cfg_text.stdout
        assert (WORKER, f"{leases[WORKER]}:{HTTP_PORT}") in servers, cfg_text.stdout

        # 3. the same run again changes nothing
        measured["rerun_seconds"], again = vm_lab.timed(_run, lab, home, cfg, *STAGES, timeout=600)
        assert again.returncode == 0, _tail(again)
        changed = {s: [c for c in ch if c["action"] != "keep"] for s, ch in _changes(again).items()}
        assert set(changed) == {"validate", *STAGES} and not any(changed.values()), changed
        assert {n: _recorded(home)[n]["ip"] for n in leases} == leases

        # 4. a lease that moves is noticed: reservation changed by hand, worker reset
        mac = nodes[WORKER]["mac"]
        vm_lab.virsh(lab, "net-update", NETWORK, "modify", "ip-dhcp-host",
                     f"<host mac='{mac}' name='{WORKER}' ip='{MOVED_TO}'/>", "--live", "--config")
        vm_lab.virsh(lab, "reset", WORKER)
        measured["moved_lease_seconds"] = _wait_lease(lab, mac, MOVED_TO)
        measured["refused_seconds"], moved = vm_lab.timed(_run, lab, home, cfg, "vms", timeout=300)
        assert moved.returncode != 0, f"a moved lease was accepted: {_tail(moved)}"
        text = " ".join((moved.stdout + moved.stderr).split())
        assert f"node {WORKER}" in text and f"set up at {leases[WORKER]}" in text and MOVED_TO in text, text
        assert _recorded(home)[WORKER]["ip"] == leases[WORKER]  # never silently the new address
        assert _reservations(lab)[mac] == (WORKER, leases[WORKER])  # pinned back
    finally:
        measured["destroy_seconds"], gone = vm_lab.timed(vm_lab.kubitect, lab, home, "destroy", "--cluster",
                                                         CLUSTER, "--auto-approve", timeout=300)
        measured["total_seconds"] = round(time.monotonic() - t_all, 1)
        print("measured:", json.dumps(measured))

    # 5. destroy leaves nothing of the cluster in libvirt, nor its pool directories
    assert gone.returncode == 0, f"kubitect destroy failed: {_tail(gone)}"
    assert vm_lab.leftovers(lab, CLUSTER) == {}, "libvirt objects of the cluster survived destroy"
    assert not any((tmp_path / "pools").glob(f"{CLUSTER}-*")), "pool directories left behind"
    assert not cluster_dir.exists()
