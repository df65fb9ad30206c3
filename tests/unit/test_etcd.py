"""The etcd wrapper (kubitect_core.kube.etcd): quorum arithmetic and what it runs and parses.

The etcdctl here is a scripted stand-in (a fake Remote answering with etcd 3.4's JSON); real
etcd runs in the lab tier (tests/lab/test_control_planes.py), where member add/remove, quorum,
snapshot and restore go through Debian's etcd-server on the nspawn masters.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from kubitect_core.remote import RemoteError, Result
from kubitect_core.sdk import etcd
from kubitect_core.stage import StageError

M1 = {"ID": 11400000000000000001, "name": "cp-1", "peerURLs": ["https://10.0.0.11:2380"],
      "clientURLs": ["https://10.0.0.11:2379"]}
M2 = {"ID": 2, "name": "cp-2", "peerURLs": ["https://10.0.0.12:2380"], "clientURLs": ["https://10.0.0.12:2379"]}
M3 = {"ID": 3, "name": "cp-3", "peerURLs": ["https://10.0.0.13:2380"], "clientURLs": ["https://10.0.0.13:2379"]}


class FakeRemote:
    """Answers etcdctl subcommands from a table; records every command."""

    label = "node cp-1 (10.0.0.11)"

    def __init__(self, members, healthy, fail=None):
        self.members, self.healthy, self.fail, self.commands = list(members), set(healthy), fail or {}, []

    async def run(self, command, *, check=True, sudo=False, timeout=None, input=None):
        self.commands.append(command)
        for word, (rc, err) in self.fail.items():
            if word in command:
                if check and rc:
                    raise RemoteError(f"{self.label}: {err}")
                return Result(rc, "", err)
        out = ""
        if "member list" in command:
            out = json.dumps({"header": {}, "members": self.members})
        elif "endpoint health" in command:
            eps = [m["clientURLs"][0] for m in self.members if m.get("clientURLs")]
            out = json.dumps([{"endpoint": e, "health": e in self.healthy} for e in eps])
        elif "member add" in command:
            new = {"ID": 4, "peerURLs": ["https://10.0.0.14:2380"]}
            out = json.dumps({"member": new, "members": [*self.members, new]})
        elif "snapshot status" in command:
            out = json.dumps({"hash": 1, "revision": 5, "totalKey": 9, "totalSize": 20480})
        return Result(0, out, "")


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(("members", "healthy", "leaving_healthy", "refused"), [
    (3, 3, True, None),
    (3, 2, False, None),           # removing the dead one: 2 of 2 left
    (3, 2, True, "lose etcd quorum: before members 3, healthy 2, needed 2; after members 2, healthy 1, needed 2"),
    (2, 1, False, "no quorum now (members 2, healthy 1, needed 2)"),
    (1, 1, True, "without members"),
    (5, 3, True, "after members 4, healthy 2, needed 3"),
    (5, 4, True, None),
])
def test_removal_verdict_names_the_numbers(members, healthy, leaving_healthy, refused):
    verdict = etcd.removal_verdict(etcd.Quorum(members, healthy), leaving_healthy=leaving_healthy)
    if refused is None:
        assert verdict is None
    else:
        assert verdict is not None and refused in verdict


@pytest.mark.parametrize(("members", "healthy", "ok"), [
    (1, 1, True), (2, 2, True), (3, 2, False), (3, 3, True), (2, 1, False), (3, 1, False), (4, 3, True)])
def test_addition_verdict_follows_etcds_strict_reconfig_check(members, healthy, ok):
    assert (etcd.addition_verdict(etcd.Quorum(members, healthy)) is None) is ok


def test_member_list_keeps_64_bit_ids_and_gives_hex_for_commands():
    r = FakeRemote([M1, {"ID": 5, "peerURLs": ["https://10.0.0.14:2380"]}], [])
    members = run(etcd.member_list(r))
    assert members[0].id == 11400000000000000001 and members[0].hex_id == format(11400000000000000001, "x")
    assert members[0].started and not members[1].started
    assert "--cacert=/etc/kubernetes/pki/etcd/ca.crt" in r.commands[0]
    assert "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt" in r.commands[0]


def test_endpoint_health_counts_an_unstarted_member_as_unhealthy():
    unstarted = {"ID": 5, "peerURLs": ["https://10.0.0.14:2380"]}
    r = FakeRemote([M1, M2, M3, unstarted], {"https://10.0.0.11:2379", "https://10.0.0.12:2379"})
    q = run(etcd.endpoint_health(r))
    assert (q.members, q.healthy, q.needed, q.ok) == (4, 2, 3, False)
    assert q.unhealthy == ("cp-3", "5")
    assert "--endpoints=https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379" in r.commands[-1]


def test_member_add_refuses_without_quorum_and_returns_initial_cluster():
    r = FakeRemote([M1, M2, M3], {"https://10.0.0.11:2379"})
    with pytest.raises(StageError, match="members 3, healthy 1, needed 2"):
        run(etcd.member_add(r, "cp-4", "https://10.0.0.14:2380"))
    assert not any("member add" in c for c in r.commands)
    r = FakeRemote([M1, M2, M3], {m["clientURLs"][0] for m in (M1, M2, M3)})
    added = run(etcd.member_add(r, "cp-4", "https://10.0.0.14:2380"))
    assert added.initial_cluster == ("cp-1=https://10.0.0.11:2380,cp-2=https://10.0.0.12:2380,"
                                     "cp-3=https://10.0.0.13:2380,cp-4=https://10.0.0.14:2380")


def test_member_remove_by_name_uses_the_hex_id_and_ignores_a_gone_name():
    r = FakeRemote([M1, M2, M3], [])
    run(etcd.member_remove(r, "cp-1"))
    assert r.commands[-1].endswith(f"member remove {format(M1['ID'], 'x')}")
    n = len(r.commands)
    run(etcd.member_remove(r, "cp-9"))
    assert len(r.commands) == n + 1  # only the member list


def test_snapshot_save_checks_status_before_moving_into_place():
    r = FakeRemote([M1], [])
    run(etcd.snapshot_save(r, "/root/backup dir/s.db"))
    saves = [i for i, c in enumerate(r.commands) if "snapshot save" in c]
    status = [i for i, c in enumerate(r.commands) if "snapshot status" in c]
    moves = [i for i, c in enumerate(r.commands) if "mv -f" in c]
    assert saves < status < moves
    assert "'/root/backup dir/s.db'" in r.commands[moves[0]] and "chmod 600" in r.commands[moves[0]]


def test_snapshot_save_fails_when_etcdctl_fails():
    r = FakeRemote([M1], [], fail={"snapshot save": (1, "context deadline exceeded")})
    with pytest.raises(RemoteError, match="deadline"):
        run(etcd.snapshot_save(r, "/root/s.db"))
    assert not any("mv -f" in c for c in r.commands)


def test_restore_command_makes_a_new_cluster_of_one_and_quotes():
    cmd = etcd.restore_command("/tmp/a b.db", name="cp-1", peer="https://10.0.0.11:2380")
    assert "'/tmp/a b.db'" in cmd
    assert "--initial-cluster=cp-1=https://10.0.0.11:2380" in cmd and "--data-dir=/var/lib/etcd" in cmd
