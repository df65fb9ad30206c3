"""Image recipes and the build cache: hashing, reuse, invalidation, crash safety; tree finishing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.images import cache
from kubitect_core.images.cache import cached_build, list_entries, recipe_hash
from kubitect_core.images.rootfs import (
    KEYGEN_UNIT,
    ROOTFS_PACKAGES,
    finish_node_tree,
    rootfs_recipe,
)
from kubitect_core.images.vm_image import (
    LB_PACKAGES,
    MANIFEST,
    finish_vm_tree,
    vm_image_for_source,
    vm_recipe,
)
from kubitect_core.paths import cluster_dir, images_dir, kubitect_home


def test_recipe_hash_ignores_package_order_and_duplicates():
    a = {"suite": "bookworm", "packages": ["b", "a", "a"], "build_version": 1}
    b = {"build_version": 1, "packages": ["a", "b"], "suite": "bookworm"}
    assert recipe_hash(a) == recipe_hash(b)


@pytest.mark.parametrize("change", [
    {"packages": ["a", "b", "c"]}, {"suite": "trixie"}, {"build_version": 2},
])
def test_recipe_hash_changes_with_every_input(change):
    base = {"suite": "bookworm", "packages": ["a", "b"], "build_version": 1}
    assert recipe_hash(base) != recipe_hash({**base, **change})


def test_extra_packages_change_the_rootfs_and_vm_recipes():
    assert recipe_hash(rootfs_recipe()) != recipe_hash(rootfs_recipe(["vim"]))
    assert recipe_hash(rootfs_recipe()) == recipe_hash(rootfs_recipe(["haproxy"]))  # already in
    assert recipe_hash(vm_recipe()) != recipe_hash(vm_recipe(LB_PACKAGES))
    assert set(ROOTFS_PACKAGES) <= set(rootfs_recipe()["packages"])
    assert {"python3", "openssh-server", "keepalived"} <= set(ROOTFS_PACKAGES)


class Builder:
    """Counts builds; writes a file so the entry has content."""

    def __init__(self, fail: bool = False, delay: float = 0.0):
        self.calls = 0
        self.fail = fail
        self.delay = delay

    def __call__(self, tmp: Path) -> dict:
        self.calls += 1
        assert tmp.is_dir() and not any(tmp.iterdir()), "a build starts in an empty directory"
        (tmp / "content").write_text("x" * 5000)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("mirror unreachable")
        return {"note": "extra"}


def test_cached_build_builds_once_per_recipe(tmp_path):
    build = Builder()
    recipe = {"packages": ["a"], "build_version": 1}
    path1, info1 = cached_build(tmp_path, "rootfs", recipe, build)
    path2, info2 = cached_build(tmp_path, "rootfs", {"packages": ["a"], "build_version": 1}, build)
    assert build.calls == 1 and path1 == path2
    assert path1.name == f"rootfs-{recipe_hash(recipe)}"
    assert (path1 / "content").is_file()
    assert info2["recipe"] == recipe and info2["note"] == "extra" and info2["size_bytes"] >= 5000
    assert info1["build_seconds"] >= 0


def test_cached_build_rebuilds_when_the_recipe_changes(tmp_path):
    build = Builder()
    p1, _ = cached_build(tmp_path, "rootfs", {"packages": ["a"]}, build)
    p2, _ = cached_build(tmp_path, "rootfs", {"packages": ["a", "b"]}, build)
    assert build.calls == 2 and p1 != p2 and p1.is_dir() and p2.is_dir()
    assert sorted(e.hash for e in list_entries(tmp_path)) == sorted([p1.name[7:], p2.name[7:]])


def test_a_failed_build_leaves_no_cache_entry(tmp_path):
    with pytest.raises(RuntimeError, match="mirror unreachable"):
        cached_build(tmp_path, "vm", {"packages": ["a"]}, Builder(fail=True))
    assert list_entries(tmp_path) == []
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    path, _ = cached_build(tmp_path, "vm", {"packages": ["a"]}, Builder())
    assert path.is_dir()


def test_an_interrupted_build_is_discarded_and_redone(tmp_path):
    recipe = {"packages": ["a"]}
    leftover = tmp_path / f".tmp-rootfs-{recipe_hash(recipe)}"
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_text("?")
    messages: list[str] = []
    build = Builder()
    path, _ = cached_build(tmp_path, "rootfs", recipe, build, messages.append)
    assert build.calls == 1 and not leftover.exists() and not (path / "half-written").exists()
    assert any("interrupted" in m for m in messages)
    assert list_entries(tmp_path)[0].path == path  # the leftover was never listed as an image


def test_concurrent_callers_share_one_build(tmp_path):
    build = Builder(delay=0.3)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        cached_build(tmp_path, "rootfs", {"packages": ["a"]}, build)[0])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1 and len(set(results)) == 1


def _fake_tree(root: Path) -> Path:
    for d in ("etc/ssh", "etc/systemd/system/multi-user.target.wants", "var/lib/dbus"):
        (root / d).mkdir(parents=True)
    (root / "etc/hostname").write_text("buildhost\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123\n")
    for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        (root / "etc/ssh" / key).write_text("secret")
    (root / "etc/ssh/sshd_config").write_text("# keep me\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("keepalived.service", "haproxy.service", "ssh.service"):
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")
    return root


def test_node_tree_has_no_identity_and_lb_daemons_disabled(tmp_path):
    root = _fake_tree(tmp_path)
    finish_node_tree(root)
    assert not (root / "etc/hostname").exists()
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["sshd_config"]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == sorted([KEYGEN_UNIT, "ssh.service"])
    unit = (root / "etc/systemd/system" / KEYGEN_UNIT).read_text()
    assert "ssh-keygen -A" in unit and "Before=ssh.service" in unit
    dropin = (root / "etc/systemd/system/ssh.service.d/kubitect-keygen.conf").read_text()
    assert f"Wants={KEYGEN_UNIT}" in dropin


def test_vm_tree_is_a_nocloud_image_without_identity(tmp_path):
    root = _fake_tree(tmp_path)
    finish_vm_tree(root)
    cfg = (root / "etc/cloud/cloud.cfg.d/99-kubitect.cfg").read_text()
    assert "datasource_list: [ NoCloud, None ]" in cfg and "locale: C.UTF-8" in cfg
    assert (root / "etc/fstab").read_text().startswith("LABEL=rootfs / ext4")
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "etc/systemd/system/multi-user.target.wants/haproxy.service").exists()


def test_vm_tree_keeps_no_resolver_of_the_build_machine(tmp_path):
    """A node resolves through the nameservers of its own network (resolvconf), never through the
    build machine's resolver, which it cannot reach (every apt look-up would wait for a timeout)."""
    root = _fake_tree(tmp_path)
    (root / "etc/resolv.conf").write_text("nameserver 10.255.255.53\n")  # what the build copied in
    finish_vm_tree(root)
    assert (root / "etc/resolv.conf").read_text() == ""
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/resolvconf").write_text("")
    finish_vm_tree(root)
    assert str((root / "etc/resolv.conf").readlink()) == "../run/resolvconf/resolv.conf"
    assert "resolvconf" in vm_recipe()["packages"]


def test_vm_image_for_source_recognises_only_kubitect_images(tmp_path):
    entry = tmp_path / "vm-abc"
    entry.mkdir()
    for f in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (entry / f).write_text("x")
    assert vm_image_for_source(entry / "disk.qcow2") is None  # no manifest: a foreign image
    (entry / MANIFEST).write_text(json.dumps({
        "hash": "abc", "qcow2": "disk.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
        "cmdline": "root=LABEL=rootfs rw console=ttyS0"}))
    img = vm_image_for_source(entry / "disk.qcow2")
    assert img and img.kernel == entry / "vmlinuz" and img.recipe_hash == "abc"
    assert "root=LABEL=rootfs" in img.cmdline
    other = entry / "other.qcow2"
    other.write_text("x")
    assert vm_image_for_source(other) is None
    assert vm_image_for_source(tmp_path / "missing.qcow2") is None


def test_home_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBITECT_HOME", str(tmp_path / "env"))
    assert kubitect_home(str(tmp_path / "opt")) == tmp_path / "opt"
    assert kubitect_home(None) == tmp_path / "env"
    monkeypatch.delenv("KUBITECT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert kubitect_home(None) == tmp_path / "user" / ".kubitect"
    assert cluster_dir(tmp_path, "c1") == tmp_path / "clusters" / "c1"
    assert images_dir(tmp_path) == tmp_path / "images"


def test_image_list_shows_cached_images(kubitect_home):
    empty = CliRunner().invoke(app, ["image", "list"])
    assert empty.exit_code == 0 and "no images built yet" in empty.output
    cached_build(images_dir(kubitect_home), "rootfs", {"packages": ["a"]}, Builder())
    out = CliRunner().invoke(app, ["image", "list"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "rootfs" in out.output and recipe_hash({"packages": ["a"]}) in out.output


def test_tree_size_counts_hard_links_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    (tmp_path / "b").hardlink_to(tmp_path / "a")
    one = cache.tree_size(tmp_path)
    assert 100_000 <= one < 200_000


def test_image_build_reuses_a_cached_image_and_prints_paths(kubitect_home):
    """Both images already cached for the current recipes: the command builds nothing."""
    images = images_dir(kubitect_home)
    rootfs_path, _ = cached_build(images, "rootfs", rootfs_recipe(), Builder())

    def fake_vm(tmp: Path) -> dict:
        for f in ("disk.qcow2", "vmlinuz", "initrd.img"):
            (tmp / f).write_text("x")
        (tmp / MANIFEST).write_text(json.dumps({"hash": "h", "qcow2": "disk.qcow2",
                                                "kernel": "vmlinuz", "initrd": "initrd.img"}))
        return {}

    vm_path, _ = cached_build(images, "vm", vm_recipe(LB_PACKAGES), fake_vm)
    out = CliRunner().invoke(app, ["image", "build"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "rootfs cached" in out.output and "vm cached" in out.output
    assert str(rootfs_path) in out.output and str(vm_path / "disk.qcow2") in out.output
    assert "nodeTemplate.os.source" in out.output


def test_keep_disabled_removes_enablement_links_that_dangle_outside_the_tree(tmp_path):
    """A unit the build machine lacks (etcd) has a link that dangles here: it must still go."""
    from kubitect_core.images.rootfs import keep_disabled

    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "etcd.service").symlink_to("/lib/systemd/system/no-such-unit-kubitect-test.service")
    (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    keep_disabled(tmp_path, ("etcd.service", "haproxy.service"))
    assert not (wants / "etcd.service").is_symlink()
    assert (wants / "ssh.service").is_symlink()
