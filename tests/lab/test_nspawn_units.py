"""nspawn provider pieces that need neither root nor a container: names, command line, config."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubitect_plugins.nspawn import nodes, storage
from kubitect_plugins.nspawn.host import bridge_name, cluster_id
from kubitect_plugins.nspawn.settings import cluster_net
from test_nspawn import _context  # a sibling module (pytest puts tests/lab on sys.path)


def test_bridge_name_fits_linux_and_differs_per_cluster_dir(tmp_path):
    a, b = bridge_name(tmp_path / "a" / "clusters" / "x"), bridge_name(tmp_path / "b" / "clusters" / "x")
    assert len(a) <= 15 and a.startswith("kb-") and a != b
    assert a == bridge_name(tmp_path / "a" / "clusters" / "x")


def test_nspawn_command_line_of_a_node_with_a_disk(tmp_path):
    ctx = _context(tmp_path, "kbt3-unit", Path("/srv/rootfs"))
    master = ctx.topology.nodes[2]
    spec = nodes.node_spec(ctx, master, Path("/srv/rootfs"))
    argv = nodes.nspawn_argv(ctx, master, spec)
    for flag in ("--boot", "--register=no", "--keep-unit", "--volatile=overlay", "--capability=CAP_NET_ADMIN",
                 f"--machine={master.name}", f"--hostname={master.name}", "--directory=/srv/rootfs",
                 f"--network-bridge={bridge_name(ctx.cluster_dir)}"):
        assert flag in argv
    disk = storage.disk_paths(ctx, master)["data"]
    assert f"--bind={disk}:/var/lib/kubitect/disks/data.img" in argv
    assert f"--setenv=KUBITECT_NSPAWN_NODE={cluster_id(ctx.cluster_dir)}/{master.name}" in argv
    assert spec["ip"] == "10.88.0.10/24" and spec["gateway"] == "10.88.0.1" and spec["user"] == "k8s"
    assert f"10.88.0.5\t{ctx.topology.nodes[0].name}" in spec["hosts"]


def test_spec_hash_changes_with_what_shapes_the_container(tmp_path):
    ctx = _context(tmp_path, "kbt3-unit", Path("/srv/rootfs"))
    node = ctx.topology.nodes[0]
    base = nodes.spec_hash(nodes.node_spec(ctx, node, Path("/srv/rootfs")))
    assert base == nodes.spec_hash(nodes.node_spec(ctx, node, Path("/srv/rootfs")))
    assert base != nodes.spec_hash(nodes.node_spec(ctx, node, Path("/srv/other")))


def test_gateway_defaults_to_the_first_address_and_must_be_inside(tmp_path):
    ctx = _context(tmp_path, "kbt3-unit")
    ctx.config.cluster.network.gateway = None
    assert str(cluster_net(ctx).gateway) == "10.88.0.1"
    ctx.config.cluster.network.gateway = "10.99.0.1"
    try:
        cluster_net(ctx)
    except Exception as exc:  # noqa: BLE001
        assert "outside cluster.network.cidr" in str(exc)
    else:
        raise AssertionError("a gateway outside the CIDR was accepted")


def test_plan_of_a_fresh_cluster_creates_and_touches_nothing(tmp_path):
    ctx = _context(tmp_path, "kbt3-unit", Path("/srv/rootfs"))
    changes = asyncio.run(storage.plan(ctx, ["localhost"]))
    assert {(c.kind, c.action) for c in changes} == {("node-dir", "create"), ("volume", "create")}
    assert not (ctx.cluster_dir / "nspawn").exists()
