"""Control-plane removal's order and refusals, backup files read back, replace's node lookup.

The etcdctl here is the scripted stand-in of tests/unit/test_etcd.py; real etcd runs in
tests/lab/test_control_planes.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import stat
import tarfile

import pytest
from test_etcd import M1, M2, M3, FakeRemote

from kubitect_core.backup import read_backup, restore_state_files
from kubitect_core.config import validate_raw
from kubitect_core.engine import EngineError
from kubitect_core.kube import control_plane
from kubitect_core.replace import find_node
from kubitect_core.stage import StageError
from kubitect_core.topology import Node

HEALTHY = {m["clientURLs"][0] for m in (M1, M2, M3)}


def _node(name, ip):
    return Node(role="master", id=name[-1], name=name, host="h", ip=ip, mac=None, cpu=1, ram_gib=1, main_disk_gib=1)


def test_a_member_is_removed_between_two_health_reads():
    r = FakeRemote([M1, M2, M3], HEALTHY)
    change = asyncio.run(control_plane.remove_member(r, _node("cp-3", "10.0.0.13")))
    kinds = [("health" if "endpoint health" in c else "remove" if "member remove" in c else "list")
             for c in r.commands]
    assert kinds.index("remove") > kinds.index("health")
    assert kinds[-1] == "health" and kinds.count("remove") == 1
    assert change.kind == "etcd-member" and change.action == "delete"
    assert "before: members 3, healthy 3, needed 2" in change.detail


def test_removing_a_healthy_member_while_another_is_down_is_refused_with_the_numbers():
    r = FakeRemote([M1, M2, M3], {"https://10.0.0.11:2379", "https://10.0.0.12:2379"})
    with pytest.raises(StageError) as refused:
        asyncio.run(control_plane.remove_member(r, _node("cp-2", "10.0.0.12")))
    assert "cp-2: the control plane cannot be removed" in str(refused.value)
    assert "before members 3, healthy 2, needed 2 (unhealthy: cp-3); after members 2, healthy 1, needed 2" in str(
        refused.value)
    assert not any("member remove" in c for c in r.commands)


def test_the_down_member_itself_may_go():
    r = FakeRemote([M1, M2, M3], {"https://10.0.0.11:2379", "https://10.0.0.12:2379"})
    change = asyncio.run(control_plane.remove_member(r, _node("cp-3", "10.0.0.13")))
    assert change.action == "delete"


def test_a_member_already_gone_is_reported_not_failed():
    r = FakeRemote([M1, M2], {"https://10.0.0.11:2379", "https://10.0.0.12:2379"})
    change = asyncio.run(control_plane.remove_member(r, _node("cp-3", "10.0.0.13")))
    assert change.action == "keep" and "not an etcd member" in change.detail


def test_plan_says_what_without_touching_anything():
    changes = control_plane.plan_removal([_node("cp-3", "10.0.0.13")])
    assert [(c.action, c.kind, c.name) for c in changes] == [("delete", "etcd-member", "cp-3")]


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_backup_file_is_read_back_and_hostile_members_are_refused(tmp_path):
    good = tmp_path / "b.tar.gz"
    good.write_bytes(_tar({"manifest.json": json.dumps({"cluster": "c"}).encode(), "etcd/snapshot.db": b"s",
                           "pki.tar.gz": b"p", "state/record.json": b"{}", "state/ssh/id_ed25519": b"k"}))
    manifest, snap, pki, state = read_backup(good)
    assert manifest == {"cluster": "c"} and snap == b"s" and pki == b"p"
    assert state == {"record.json": b"{}", "ssh/id_ed25519": b"k"}
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_tar({"manifest.json": b"{}", "../escape": b"x"}))
    with pytest.raises(EngineError, match="unexpected member"):
        read_backup(bad)
    other = tmp_path / "other.tar.gz"
    other.write_bytes(_tar({"manifest.json": b"{}"}))
    with pytest.raises(EngineError, match="not a kubitect backup"):
        read_backup(other)
    junk = tmp_path / "junk"
    junk.write_text("not a tar")
    with pytest.raises(EngineError, match="cannot read the backup"):
        read_backup(junk)


def test_state_files_are_put_back_only_where_missing_and_0600(tmp_path):
    (tmp_path / "record.json").write_text("current")
    put = restore_state_files(tmp_path, {"record.json": b"old", "ssh/id_ed25519": b"key"})
    assert put == ["ssh/id_ed25519"]
    assert (tmp_path / "record.json").read_text() == "current"
    assert stat.S_IMODE((tmp_path / "ssh" / "id_ed25519").stat().st_mode) == 0o600


def test_replace_finds_a_node_by_full_or_short_name_and_lists_the_choices():
    raw = {"hosts": [{"name": "h", "connection": {"type": "local"}}],
           "cluster": {"name": "c", "network": {"mode": "nat", "cidr": "10.1.0.0/24"},
                       "nodeTemplate": {"os": {"distro": "debian12"}},
                       "nodes": {"master": {"instances": [{"id": 1}, {"id": 2}, {"id": 3}]},
                                 "loadBalancer": {"vip": "10.1.0.200", "instances": [{"id": 1}]}}},
           "kubernetes": {"version": "v1.34.2"}}
    topo = validate_raw(raw).topology
    assert find_node(topo, "master-2").name == "c-master-2"
    assert find_node(topo, "c-master-3").name == "c-master-3"
    with pytest.raises(EngineError, match="its nodes are: master-1, master-2, master-3"):
        find_node(topo, "master-9")


def test_cli_backup_restore_replace_refuse_a_cluster_that_was_never_applied(tmp_path):
    from typer.testing import CliRunner

    from kubitect_core.cli import app

    runner = CliRunner()
    home = str(tmp_path / "home")
    out = runner.invoke(app, ["backup", "--cluster", "nope", "--home", home, "--file", str(tmp_path / "b.tgz")])
    assert out.exit_code == 1 and "has never been applied" in out.output
    assert not (tmp_path / "b.tgz").exists()
    junk = tmp_path / "junk.tgz"
    junk.write_text("x")
    out = runner.invoke(app, ["restore", str(junk), "--cluster", "nope", "--home", home, "-y"])
    assert out.exit_code == 1 and "cannot read the backup" in out.output
    out = runner.invoke(app, ["replace", "--cluster", "nope", "--node", "master-1", "--home", home, "-y"])
    assert out.exit_code == 1 and "has never been applied" in out.output
