"""Node host keys on libvirt's test driver: generated per node before the domain exists, given to
cloud-init, pinned before first contact, kept across re-applies, forgotten with the node."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.libvirt import vms_layer
from kubitect_plugins.libvirt.node_keys import NodeKeyStore
from kubitect_plugins.libvirt.spec import net_spec, node_mac
from libvirt_helpers import make_image, write_config

from kubitect_core import known_hosts as kh

pytestmark = pytest.mark.libvirt


@pytest.fixture
def seed(make_cluster, tmp_path):
    return make_cluster(write_config(tmp_path / "ha.yaml", "ha.yaml", make_image(tmp_path / "img")))


def _store(cluster) -> NodeKeyStore:
    return NodeKeyStore(cluster.home / "clusters" / cluster.name / "libvirt" / "host-keys")


def _pinned(cluster, ip: str) -> list[bytes]:
    return [k.public_data for k in kh.keys_for(cluster.ssh.known_hosts, ip)]


def test_every_node_gets_its_own_key_in_its_seed_and_pinned_for_its_address(seed):
    seed.apply_all()
    store = _store(seed)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    publics = set()
    for node in seed.loaded.topology.nodes:
        key = store.load(node.name)
        assert key is not None, node.name
        assert stat.S_IMODE(store.path(node.name).stat().st_mode) == 0o600
        assert key.public_openssh.startswith("ssh-ed25519 ")
        publics.add(key.public.public_data)
        assert _pinned(seed, node.ip) == [key.public.public_data]  # pinned before any contact
        seed_text = vms_layer.node_seed(seed.name, node, net_spec(seed.loaded.config), _tpl(seed),
                                        node_mac(seed.loaded.topology, node), key).user_data
        user_data = yaml.safe_load(seed_text)
        assert user_data["ssh_keys"] == {"ed25519_private": key.private_openssh,
                                         "ed25519_public": key.public_openssh}
        assert user_data["ssh_genkeytypes"] == [] and user_data["ssh_deletekeys"] is True
    assert len(publics) == len(seed.loaded.topology.nodes)  # no two nodes share a key
    before = {n.name: store.path(n.name).read_bytes() for n in seed.loaded.topology.nodes}
    assert {c.action for c in seed.apply_all()} == {"keep"}  # the stored keys keep the seeds stable
    assert before == {n.name: store.path(n.name).read_bytes() for n in seed.loaded.topology.nodes}


def _tpl(cluster) -> vms_layer.NodeTemplate:
    return cluster.provider.vms.template(cluster.ctx("vms"))


def test_a_removed_node_loses_its_key_and_pin_and_comes_back_with_a_new_key(seed, tmp_path):
    seed.apply_all()
    store = _store(seed)
    w3 = next(n for n in seed.loaded.topology.nodes if n.name.endswith("worker-3"))
    w2 = next(n for n in seed.loaded.topology.nodes if n.name.endswith("worker-2"))
    old_key, w2_key = store.load(w3.name), store.load(w2.name)
    original = seed.loaded
    data = yaml.safe_load(Path(seed.loaded.source).read_text())
    data["cluster"]["nodes"]["worker"]["instances"].pop()
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(data, sort_keys=False))
    from kubitect_core.config import load_config
    seed.loaded = load_config(smaller)
    seed.run("apply", "vms")
    assert not store.path(w3.name).exists() and _pinned(seed, w3.ip) == []
    assert store.load(w2.name) == w2_key and _pinned(seed, w2.ip) == [w2_key.public.public_data]
    seed.loaded = original
    seed.run("apply", "vms")
    new_key = store.load(w3.name)
    assert new_key is not None and new_key.public_openssh != old_key.public_openssh
    assert _pinned(seed, w3.ip) == [new_key.public.public_data]


def test_destroy_forgets_every_nodes_key_and_pin(seed):
    seed.apply_all()
    seed.destroy_all()
    assert list(_store(seed).directory.iterdir()) == []
    for node in seed.loaded.topology.nodes:
        assert _pinned(seed, node.ip) == []


def test_a_node_made_before_keys_were_generated_keeps_its_first_contact_key(seed):
    """An existing domain whose seed had no host key is left alone: no key is made for it, so its
    seed, spec and pinned key stay what they were (no spurious change, no refused connection)."""
    for layer in ("network", "storage"):
        seed.run("apply", layer)
    host = "host1"
    nodes = [(n, node_mac(seed.loaded.topology, n)) for n in seed.loaded.topology.nodes if n.host == host]
    pool_dirs = {p.name(): f"/var/lib/libvirt/images/{p.name()}" for p in seed.conn(host).listAllStoragePools(0)}
    args = dict(cluster=seed.name, host=host, net=net_spec(seed.loaded.config), tpl=_tpl(seed), nodes=nodes,
                domain_type="qemu", pool_dirs=pool_dirs, dry_run=False)
    vms_layer.converge(seed.conn(host), **args)  # as an older kubitect did: no host keys
    again = vms_layer.converge(seed.conn(host), **args, host_keys=_store(seed))
    assert [c for c in again.changes if c.action != "keep" and c.detail != "started"] == []  # never started here
    assert not _store(seed).directory.exists() or not list(_store(seed).directory.iterdir())
