"""The libvirt provider against libvirt's test driver: the seed topology on five hosts, a nat
variant, plan/apply/re-apply/scale-down/destroy, and golden XML.

Everything here goes through the real libvirt API (test driver); nothing boots. What the test
driver cannot do (volume upload, DHCP leases, running guests) is covered by the e2e tier.
"""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.libvirt import vms_layer
from kubitect_plugins.libvirt.network_layer import network_xml, reservations
from kubitect_plugins.libvirt.node_keys import NodeKeyStore
from kubitect_plugins.libvirt.ownership import metadata_of
from kubitect_plugins.libvirt.spec import net_spec, stable_mac
from libvirt_helpers import HOST_BARE, HOST_BR0, make_image, write_config

pytestmark = pytest.mark.libvirt

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden" / "libvirt"
GIB = 1 << 30
CLUSTER = "kubitect-ha"


def golden(name: str, text: str) -> None:
    """Compares with a golden file; KUBITECT_UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("KUBITECT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing; run with KUBITECT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


def expected_objects(cluster) -> set[tuple[str, str, str]]:
    """(kind, name, host) of everything the seed config needs, derived from the config itself."""
    out = set()
    cfg = cluster.loaded.config
    for host in cfg.hosts:
        out.add(("pool", f"{CLUSTER}-main-resource-pool", host.name))
        for pool in host.data_resource_pools:
            out.add(("pool", f"{CLUSTER}-{pool.name}-data-resource-pool", host.name))
    for node in cluster.loaded.topology.nodes:
        out.add(("volume", f"{CLUSTER}-base-volume", node.host))
        out.add(("volume", f"{node.name}-main-disk", node.host))
        out.add(("volume", f"{node.name}-cloudinit.iso", node.host))
        for disk in node.data_disks:
            out.add(("volume", f"{node.name}-{disk.name}-data-disk", node.host))
        out.add(("domain", node.name, node.host))
    if cfg.cluster.network.mode != "bridge":
        out |= {("network", f"{CLUSTER}-network", h.name) for h in cfg.hosts}
    return out


def live_objects(cluster) -> set[tuple[str, str, str]]:
    """(kind, name, host) of every network, pool, volume and domain on the test hosts."""
    out = set()
    for host in cluster.hosts:
        conn = cluster.conn(host)
        out |= {("network", n.name(), host) for n in conn.listAllNetworks(0)}
        out |= {("domain", d.name(), host) for d in conn.listAllDomains(0)}
        for pool in conn.listAllStoragePools(0):
            out.add(("pool", pool.name(), host))
            if pool.isActive():
                out |= {("volume", v.name(), host) for v in pool.listAllVolumes(0)}
    return out


@pytest.fixture
def seed(make_cluster, tmp_path):
    """The seed example (bridge mode, five remote hosts) with a local image as os.source."""
    cfg = write_config(tmp_path / "ha.yaml", "ha.yaml", make_image(tmp_path / "img"))
    return make_cluster(cfg)


@pytest.fixture
def nat(make_cluster, tmp_path):
    """The seed topology in nat mode; worker 3 has no IP (DHCP without reservation)."""
    image = make_image(tmp_path / "img", kernel=True)
    cfg = write_config(tmp_path / "nat.yaml", "ha.yaml", image,
                       cluster__network={"mode": "nat", "cidr": "10.10.0.0/20"})
    data = yaml.safe_load(cfg.read_text())
    del data["cluster"]["nodes"]["worker"]["instances"][2]["ip"]
    data["cluster"]["nodeTemplate"]["updateOnBoot"] = False
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_cluster(cfg)


def test_plan_on_fresh_cluster_lists_exactly_the_creations_and_touches_nothing(seed):
    changes = seed.plan_all()
    assert {c.action for c in changes} == {"create"}
    assert {(c.kind, c.name, c.host) for c in changes} == expected_objects(seed)
    assert len(changes) == len(expected_objects(seed))  # nothing listed twice
    assert live_objects(seed) == set()
    assert seed.records == {layer: {} for layer in ("network", "storage", "vms")}  # nothing recorded


def test_seed_apply_creates_the_expected_objects_on_each_host(seed):
    planned = seed.plan_all()
    applied = seed.apply_all()
    assert sorted(map(str, applied)) == sorted(map(str, planned))
    assert live_objects(seed) == expected_objects(seed)  # bridge mode: no network anywhere

    topo = seed.loaded.topology
    nodes = seed.records["vms"]["nodes"]
    assert set(nodes) == {n.name for n in topo.nodes}
    for node in topo.nodes:
        conn = seed.conn(node.host)
        dom = conn.lookupByName(node.name)
        assert dom.isActive() and dom.autostart()
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.get("type") == "qemu"  # the test driver cannot run KVM guests
        assert root.find("./features/tcg/tb-cache").text == str(256 * 1024)  # KiB after normalising
        assert metadata_of(dom.XMLDesc(0))["name"] == CLUSTER
        assert int(root.findtext("vcpu")) == node.cpu
        assert int(root.findtext("memory")) == node.ram_gib * 1024 * 1024
        iface = root.find("./devices/interface")
        assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "br0"
        mac = iface.find("mac").get("address")
        assert mac == stable_mac(CLUSTER, node.name) == nodes[node.name]["mac"]
        disks = [(d.get("device"), d.get("type"), d.find("source").get("file"))
                 for d in root.findall("./devices/disk")]
        assert all(t == "file" for _d, t, _f in disks)
        assert [f for d, _t, f in disks if d == "disk"] == nodes[node.name]["volumes"][:-1]
        assert [f for d, _t, f in disks if d == "cdrom"] == [nodes[node.name]["volumes"][-1]]
        assert nodes[node.name]["ip"] == node.ip and nodes[node.name]["host"] == node.host

        main = conn.storagePoolLookupByName(f"{CLUSTER}-main-resource-pool")
        disk = ET.fromstring(main.storageVolLookupByName(f"{node.name}-main-disk").XMLDesc(0))
        assert int(disk.findtext("capacity")) == node.main_disk_gib * GIB
        assert disk.find("./target/format").get("type") == "qcow2"
        assert disk.findtext("./backingStore/path").endswith(f"/{CLUSTER}-base-volume")
        for dd in node.data_disks:
            pool = conn.storagePoolLookupByName(f"{CLUSTER}-{dd.pool}-data-resource-pool")
            vol = ET.fromstring(pool.storageVolLookupByName(f"{node.name}-{dd.name}-data-disk").XMLDesc(0))
            assert int(vol.findtext("capacity")) == dd.size_gib * GIB == 512 * GIB
            assert vol.find("./target/format").get("type") == "raw"
    # The data pool sits under its configured path, per cluster.
    pool = seed.conn("host3").storagePoolLookupByName(f"{CLUSTER}-data-pool-data-resource-pool")
    assert ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") == \
        f"/mnt/libvirt/pools/{CLUSTER}-data-pool-data-resource-pool"
    # The test driver cannot upload: recorded, not hidden.
    assert seed.records["storage"]["base_uploaded"] == {h: False for h in seed.hosts}


def test_reapply_and_replan_are_noops(seed):
    seed.apply_all()
    before = live_objects(seed)
    again = seed.apply_all()
    assert again and {c.action for c in again} == {"keep"}
    assert {c.action for c in seed.plan_all()} == {"keep"}
    assert live_objects(seed) == before


def test_destroy_without_record_removes_the_cluster_and_nothing_else(seed):
    conn3 = seed.conn("host3")
    # Someone else's objects with confusingly similar names, defined before the cluster.
    other = "kubitect-ha-ext"
    for name in (f"{other}-main-resource-pool", f"{other}-data-pool-data-resource-pool"):
        p = conn3.storagePoolDefineXML(f"<pool type='dir'><name>{name}</name><target>"
                                       f"<path>/srv/{name}</path></target></pool>", 0)
        p.create(0)
        p.createXML(f"<volume><name>{other}-x-main-disk</name><capacity>1</capacity></volume>", 0)
    conn3.defineXML("<domain type='qemu'><name>kubitect-ha-hand-made</name><memory>65536</memory>"
                    "<os><type arch='x86_64'>hvm</type></os></domain>")
    conn3.defineXML("<domain type='qemu'><name>other-master-1</name><memory>65536</memory>"
                    "<metadata><k:cluster xmlns:k='https://kubitect.dev/xmlns/1' name='other'/></metadata>"
                    "<os><type arch='x86_64'>hvm</type></os></domain>")
    untouched = live_objects(seed)
    seed.apply_all()
    changes = seed.destroy_all(fresh_records=True)  # the state file is lost
    assert {c.action for c in changes} == {"delete"}
    assert live_objects(seed) == untouched
    assert seed.destroy_all(fresh_records=True) == []  # idempotent


def test_destroy_with_record_empties_it(seed):
    seed.apply_all()
    assert seed.records["vms"]["nodes"] and seed.records["storage"]["pools"]
    seed.destroy_all()
    for layer, record in seed.records.items():
        assert not any(record.get(k) for k in ("nodes", "pools", "volumes", "networks", "hosts")), (layer, record)
    assert live_objects(seed) == set()


def test_destroy_finishes_when_a_pool_vanishes_under_it(seed):
    """A pool removed by someone else between destroy's listing and its removal (here: a transient
    pool, which libvirt forgets on stop, so the later undefine meets "no storage pool with matching
    uuid") is gone already, not an error."""
    from kubitect_plugins.libvirt.storage_layer import remove_pool

    conn = seed.conn("host3")
    pool = conn.storagePoolCreateXML("<pool type='dir'><name>kubitect-ha-vanishing</name><target>"
                                     "<path>/srv/vanishing</path></target></pool>", 0)
    remove_pool(pool)
    assert "kubitect-ha-vanishing" not in conn.listStoragePools() + conn.listDefinedStoragePools()
    remove_pool(pool)  # the handle of a pool that no longer exists at all


def test_preflight_checks_the_bridge_on_every_host(make_cluster, tmp_path):
    cfg = write_config(tmp_path / "ha.yaml", "ha.yaml", make_image(tmp_path / "img"))
    bare = make_cluster(cfg, host_uri=HOST_BARE)
    problems = asyncio.run(bare.provider.preflight(bare.ctx("network"), bare.hosts))
    assert sorted(problems) == sorted(
        f"host {h}: bridge 'br0' (cluster.network.bridge) does not exist there; create it first or "
        "use network mode nat/route" for h in bare.hosts)
    ok = make_cluster(cfg, host_uri=HOST_BR0)
    assert asyncio.run(ok.provider.preflight(ok.ctx("network"), ok.hosts)) == []


def test_preflight_reports_a_missing_image_and_an_unreachable_host(make_cluster, tmp_path):
    cfg = write_config(tmp_path / "ha.yaml", "ha.yaml", tmp_path / "nope.qcow2")
    cluster = make_cluster(cfg)
    cluster.uris["host2"] = "test:///nonexistent/node.xml"
    problems = asyncio.run(cluster.provider.preflight(cluster.ctx("network"), cluster.hosts))
    assert any("os.source" in p and "nope.qcow2" in p for p in problems)
    assert any(p.startswith("host host2: cannot open libvirt at test:///nonexistent/node.xml") for p in problems)
    assert len(problems) == 2


def test_nat_mode_networks_with_reservations_and_dhcp_seed(nat):
    nat.apply_all()
    topo = nat.loaded.topology
    for host in nat.hosts:
        net = nat.conn(host).networkLookupByName(f"{CLUSTER}-network")
        assert net.isActive() and net.autostart()
        root = ET.fromstring(net.XMLDesc(0))
        assert root.find("forward").get("mode") == "nat"
        assert root.find("ip").get("address") == "10.10.0.1" and root.find("ip").get("prefix") == "20"
        hosts = {(h.get("mac"), h.get("name"), h.get("ip")) for h in root.findall("./ip/dhcp/host")}
        # every node with an IP by MAC, and the VIP by name, so dnsmasq never leases them to a DHCP node
        assert hosts == {(stable_mac(CLUSTER, n.name), n.name, n.ip) for n in topo.on_host(host) if n.ip} | \
            {(None, f"{CLUSTER}-vip", topo.vip)}
        for node in topo.on_host(host):
            iface = ET.fromstring(nat.conn(host).lookupByName(node.name).XMLDesc(0)).find("./devices/interface")
            assert iface.get("type") == "network"
            assert iface.find("source").get("network") == f"{CLUSTER}-network"
    assert not any(h.get("name") == f"{CLUSTER}-worker-3" for h in
                   ET.fromstring(nat.conn("host5").networkLookupByName(f"{CLUSTER}-network").XMLDesc(0))
                   .findall("./ip/dhcp/host"))
    # Direct kernel boot: the image ships vmlinuz + initrd.img, uploaded as volumes of the pool.
    dom = ET.fromstring(nat.conn("host3").lookupByName(f"{CLUSTER}-master-1").XMLDesc(0))
    assert dom.findtext("./os/kernel").endswith(f"/{CLUSTER}-base-kernel")
    assert dom.findtext("./os/cmdline") == "root=LABEL=rootfs rw console=ttyS0"
    assert {c.action for c in nat.apply_all()} == {"keep"}


def test_nat_reservation_changes_in_place(nat, tmp_path, make_cluster):
    nat.apply_all()
    net_before = nat.conn("host3").networkLookupByName(f"{CLUSTER}-network").UUIDString()
    data = yaml.safe_load(Path(nat.loaded.source).read_text())
    data["cluster"]["nodes"]["worker"]["instances"][0]["ip"] = "10.10.13.99"
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(data, sort_keys=False))
    from kubitect_core.config import load_config
    nat.loaded = load_config(moved)
    changes = [c for c in nat.run("apply", "network") if c.action != "keep"]
    assert [str(c) for c in changes] == [
        f"change network {CLUSTER}-network on host3 (+1 reservations, -1 reservations)"]
    net = nat.conn("host3").networkLookupByName(f"{CLUSTER}-network")
    assert net.UUIDString() == net_before  # updated in place, not recreated
    ips = {h.get("ip") for h in ET.fromstring(net.XMLDesc(0)).findall("./ip/dhcp/host")}
    assert ips == {"10.10.13.10", "10.10.13.99", "10.10.13.200"}  # the VIP stays held


def test_scale_down_removes_the_node_with_its_volumes(seed, tmp_path):
    seed.apply_all()
    data = yaml.safe_load(Path(seed.loaded.source).read_text())
    data["cluster"]["nodes"]["worker"]["instances"].pop()  # worker 3 on host5
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(data, sort_keys=False))
    from kubitect_core.config import load_config
    seed.loaded = load_config(smaller)
    w3 = f"{CLUSTER}-worker-3"
    assert [str(c) for c in seed.run("plan", "storage") if c.action != "keep"] == []  # domain still there
    planned = [str(c) for c in seed.run("plan", "vms") if c.action != "keep"]
    assert sorted(planned) == sorted([f"delete domain {w3} on host5",
                                      f"delete volume {w3}-cloudinit.iso on host5",
                                      f"delete volume {w3}-main-disk on host5",
                                      f"delete volume {w3}-rook-data-disk on host5"])
    applied = [str(c) for c in seed.run("apply", "vms") if c.action != "keep"]
    assert sorted(applied) == sorted(planned)
    assert w3 not in seed.records["vms"]["nodes"]
    assert not {o for o in live_objects(seed) if w3 in o[1]}
    assert {c.action for c in seed.apply_all()} == {"keep"}


def test_scale_down_of_worker_1_keeps_worker_10s_volumes(seed, tmp_path):
    """Volumes belong to the node whose whole name they start with: removing worker 1 never takes
    worker 10's disks (both on host3), and its pinned host key goes while worker 10's stays."""
    from kubitect_core.config import load_config

    data = yaml.safe_load(Path(seed.loaded.source).read_text())
    workers = data["cluster"]["nodes"]["worker"]["instances"]
    workers.append({**workers[0], "id": 10, "ip": "10.10.13.30"})
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(data, sort_keys=False))
    seed.loaded = load_config(both)
    seed.apply_all()
    pins = seed.ssh.known_hosts
    w1, w10 = f"{CLUSTER}-worker-1", f"{CLUSTER}-worker-10"
    kept_before = {o for o in live_objects(seed) if w10 in o[1]}
    assert {("domain", w10, "host3"), ("volume", f"{w10}-rook-data-disk", "host3")} <= kept_before
    workers.pop(0)
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(data, sort_keys=False))
    seed.loaded = load_config(smaller)
    applied = sorted(str(c) for c in seed.run("apply", "vms") if c.action != "keep")
    assert applied == sorted([f"delete domain {w1} on host3", f"delete volume {w1}-cloudinit.iso on host3",
                              f"delete volume {w1}-main-disk on host3",
                              f"delete volume {w1}-rook-data-disk on host3"])
    assert {o for o in live_objects(seed) if w10 in o[1]} == kept_before
    pinned = pins.read_text()
    assert "10.10.13.30 " in pinned and "10.10.13.20 " not in pinned


def _domain_xml(node, net, tpl, disks, host_key, kernel_dir=None):
    """(XML, spec digest) of a node's domain as the provider makes it, for a given host key."""
    main = disks[0][0].rsplit("/", 1)[0]
    seed_files = vms_layer.node_seed(CLUSTER, node, net, tpl, stable_mac(CLUSTER, node.name), host_key)
    return vms_layer.domain_xml(
        cluster=CLUSTER, node=node, mac=stable_mac(CLUSTER, node.name), net=net, tpl=tpl, domain_type="qemu",
        disks=disks, seed_path=f"{main}/{node.name}-cloudinit.iso", seed_digest=seed_files.digest,
        kernel=f"{kernel_dir}/{CLUSTER}-base-kernel" if kernel_dir else None,
        initrd=f"{kernel_dir}/{CLUSTER}-base-initrd" if kernel_dir else None)


def test_domain_and_network_xml_golden(nat):
    """The XML the provider defines, pinned; libvirt holds the same spec digest (same inputs)."""
    nat.apply_all()
    topo = nat.loaded.topology
    net = net_spec(nat.loaded.config)
    nodes = [(n, stable_mac(CLUSTER, n.name)) for n in topo.on_host("host3")]
    xml, digest = network_xml(CLUSTER, net, reservations(net, nodes))
    golden("network-nat-host3.xml", xml)
    held = nat.conn("host3").networkLookupByName(f"{CLUSTER}-network").XMLDesc(0)
    assert metadata_of(held)["spec"] == digest

    node = next(n for n in topo.nodes if n.name == f"{CLUSTER}-worker-1")
    tpl = vms_layer.NodeTemplate(user="k8s", public_key=nat.ssh.public_key_text(), update_on_boot=False,
                                 cpu_mode="custom", kernel_boot=True)
    main = f"/var/lib/libvirt/images/{CLUSTER}-main-resource-pool"
    data = f"/mnt/libvirt/pools/{CLUSTER}-data-pool-data-resource-pool"
    host_key = NodeKeyStore(nat.home / "clusters" / CLUSTER / "libvirt" / "host-keys").load(node.name)
    assert host_key is not None  # generated by the provider when it created the domain

    disks = [(f"{main}/{node.name}-main-disk", "qcow2"), (f"{data}/{node.name}-rook-data-disk", "raw")]

    def xml_of(key):
        return _domain_xml(node, net, tpl, disks, key, kernel_dir=main)

    golden("domain-nat-worker-1.xml", xml_of(None)[0])  # the generated host key is random
    held = nat.conn("host3").lookupByName(node.name).XMLDesc(0)
    assert metadata_of(held)["spec"] == xml_of(host_key)[1]


def test_bridge_domain_golden(seed):
    seed.apply_all()
    node = next(n for n in seed.loaded.topology.nodes if n.name == f"{CLUSTER}-lb-1")
    net = net_spec(seed.loaded.config)
    tpl = vms_layer.NodeTemplate(user="k8s", public_key=seed.ssh.public_key_text(), update_on_boot=True,
                                 cpu_mode="custom")
    main = f"/var/lib/libvirt/images/{CLUSTER}-main-resource-pool"
    host_key = NodeKeyStore(seed.home / "clusters" / CLUSTER / "libvirt" / "host-keys").load(node.name)

    def xml_of(key):
        return _domain_xml(node, net, tpl, [(f"{main}/{node.name}-main-disk", "qcow2")], key)

    golden("domain-bridge-lb-1.xml", xml_of(None)[0])
    assert metadata_of(seed.conn("host1").lookupByName(node.name).XMLDesc(0))["spec"] == xml_of(host_key)[1]


def test_domain_type_override(seed, monkeypatch):
    monkeypatch.setenv("KUBITECT_DOMAIN_TYPE", "kvm")
    seed.apply_all()
    root = ET.fromstring(seed.conn("host1").lookupByName(f"{CLUSTER}-lb-1").XMLDesc(0))
    assert root.get("type") == "kvm"
    assert root.find("./features/tcg") is None
    assert seed.records["vms"]["hosts"]["host1"]["domain_type"] == "kvm"


def test_kubitect_run_drives_the_provider_through_the_cli(tmp_path):
    """`kubitect run --stage network --stage storage --stage vms` on the seed config, with each
    host mapped to a test-driver host by KUBITECT_LIBVIRT_URI_<HOST> (one process: one state)."""
    import json
    import subprocess
    import sys

    from libvirt_helpers import HOST_BR0

    key = tmp_path / "host-key"
    key.write_text("unused\n")
    key.chmod(0o600)
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "ha.yaml").read_text())
    for host in data["hosts"]:
        host["connection"]["ssh"]["keyfile"] = str(key)
    data["cluster"]["nodeTemplate"]["os"]["source"] = str(make_image(tmp_path / "img"))
    cfg = tmp_path / "ha.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, **{f"KUBITECT_LIBVIRT_URI_HOST{i}": HOST_BR0 for i in range(1, 6)}}
    env.pop("KUBITECT_DOMAIN_TYPE", None)
    kubitect = [sys.executable, "-m", "kubitect_core.cli"]
    home = tmp_path / "home"
    run = subprocess.run([*kubitect, "run", "--stage", "network", "--stage", "storage", "--stage", "vms",
                          "--auto-approve", "--home", str(home), str(cfg)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((home / "clusters" / CLUSTER / "record.json").read_text())
    nodes = record["stages"]["vms"]["data"]["libvirt"]["nodes"]
    assert sorted(nodes) == sorted(n.name for n in load_topology(cfg).nodes)
    assert {n["domain_type"] for n in nodes.values()} == {"qemu"}
    assert record["stages"]["storage"]["data"]["libvirt"]["base_uploaded"] == {f"host{i}": False
                                                                               for i in range(1, 6)}


def load_topology(path: Path):
    from kubitect_core.config import load_config
    return load_config(path).topology


def test_a_node_that_never_answers_is_reported_with_its_state_and_console(seed, tmp_path, monkeypatch):
    """The error for a node that never answered SSH names its domain state and console log and, on a
    local host, shows the console's last lines (what a user reads to tell a hung boot from a
    network problem)."""
    from kubitect_plugins.libvirt import readiness

    conn = seed.conn("host3")
    conn.defineXML("<domain type='qemu'><name>kubitect-ha-stuck</name><memory>65536</memory>"
                   "<os><type arch='x86_64'>hvm</type></os></domain>")
    console = tmp_path / "stuck-serial.log"
    console.write_text("".join(f"boot line {i}\n" for i in range(40)) + "Kernel panic - not syncing\n")
    monkeypatch.setattr(readiness, "serial_log", lambda name: str(tmp_path / f"{name.split('-')[-1]}-serial.log"))
    local = readiness.boot_diagnosis(conn, "kubitect-ha-stuck", local=True)
    assert "domain kubitect-ha-stuck is shut off" in local and str(console) in local
    assert local.rstrip().endswith("Kernel panic - not syncing") and "boot line 25" not in local
    remote_host = readiness.boot_diagnosis(conn, "kubitect-ha-stuck", local=False)
    assert str(console) in remote_host and "Kernel panic" not in remote_host
    assert "not found" in readiness.boot_diagnosis(conn, "kubitect-ha-gone", local=True)


def test_data_disks_carry_stable_distinct_serials(seed):
    """Every data disk of the seed is defined with its serial (<= 20 bytes, distinct, stable)."""
    from kubitect_core.topology import data_disk_serial

    seed.apply_all()
    seen = {}
    for node in seed.loaded.topology.nodes:
        root = ET.fromstring(seed.conn(node.host).lookupByName(node.name).XMLDesc(0))
        held = {d.find("source").get("file").rsplit("/", 1)[1]: d.findtext("serial")
                for d in root.findall("./devices/disk[@device='disk']")}
        assert held.pop(f"{node.name}-main-disk") is None  # the main disk needs no identity
        for disk in node.data_disks:
            serial = held[f"{node.name}-{disk.name}-data-disk"]
            assert serial == data_disk_serial(CLUSTER, node.name, disk.name)
            assert len(serial.encode()) <= 20 and serial.startswith(disk.name[:11] + "-")
            assert serial not in seen, f"{serial} used by {seen.get(serial)} and {node.name}"
            seen[serial] = node.name
    assert len(seen) == sum(len(n.data_disks) for n in seed.loaded.topology.nodes) == 3


def test_existing_domain_without_serials_is_redefined_in_place_and_keeps_its_disks(seed):
    """A cluster made before serials existed: plan shows the change, apply redefines, disks stay."""
    seed.apply_all()
    name = f"{CLUSTER}-worker-1"
    conn = seed.conn("host3")
    dom = conn.lookupByName(name)
    old = dom.XMLDesc(0)
    stripped = ET.fromstring(old)
    for disk in stripped.findall("./devices/disk"):
        for serial in disk.findall("serial"):
            disk.remove(serial)
    old_xml = ET.tostring(stripped, encoding="unicode").replace(metadata_of(old)["spec"], "0000000000000000")
    conn.defineXML(old_xml)
    volumes = {v.name() for p in conn.listAllStoragePools(0) if p.isActive() for v in p.listAllVolumes(0)}

    planned = [c for c in seed.plan_all() if c.action != "keep"]
    assert [(c.action, c.kind, c.name) for c in planned] == [("change", "domain", name)]
    assert "1 data disk(s) get a stable serial" in planned[0].detail and "data are kept" in planned[0].detail
    assert "next boot" in planned[0].detail  # the running VM keeps its definition until it restarts

    seed.apply_all()
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    assert [d.findtext("serial") for d in root.findall("./devices/disk[@device='disk']")][1].startswith("rook-")
    assert {v.name() for p in conn.listAllStoragePools(0) if p.isActive() for v in p.listAllVolumes(0)} == volumes
    assert {c.action for c in seed.plan_all()} == {"keep"}
