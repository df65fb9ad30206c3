"""Editing known_hosts files shared with OpenSSH: pinned files and the user's ~/.ssh/known_hosts.

Checked against OpenSSH itself (`ssh-keygen -F`) where it matters that ssh(1) reads what we write.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

from kubitect_core import known_hosts as kh
from kubitect_core import user_known_hosts as ukh

KEYS = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(4)]
A, B, C, D = KEYS

# A user's file as it may really look: comments, a hashed line, a wildcard, a CA line, a revoked
# line, an entry for the same address from before, blank lines, and no newline at the end.
FOREIGN = (
    "# my hosts\n"
    "\n"
    f"{kh.key_line('10.0.0.5', D)} old-entry\n"
    f"{kh.key_line('10.0.0.5', D, hashed=True)}\n"
    f"10.0.0.* {D.export_public_key().decode().split()[0]} {D.export_public_key().decode().split()[1]}\n"
    f"@cert-authority *.lan {D.export_public_key().decode().strip()}\n"
    f"@revoked 10.0.0.5 {C.export_public_key().decode().strip()}\n"
    "gitlab.example,192.0.2.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJunkJunkJunkJunkJunkJunkJunkJunkJunkJunk0 x"
)


def _ssh_keygen_finds(path: Path, name: str) -> bool:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client) is not installed")
    proc = subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True)
    return proc.returncode == 0 and name in proc.stdout


def test_pin_and_forget_touch_only_exact_lines(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(FOREIGN)
    assert kh.pin(path, "[10.0.0.5]:2222", A) is True
    assert kh.pin(path, "[10.0.0.5]:2222", A) is False  # never twice
    assert path.read_text().startswith(FOREIGN + "\n")  # appended; the missing newline supplied
    assert [k.public_data for k in kh.keys_for(path, "[10.0.0.5]:2222")] == [A.public_data]
    assert kh.forget(path, "[10.0.0.5]:2222") is True
    assert path.read_text() == FOREIGN + "\n"
    assert kh.forget(path, "[10.0.0.5]:2222") is False
    # forgetting 10.0.0.5 removes its plain and hashed key lines, nothing else (no wildcard, CA, revoked)
    assert kh.forget(path, "10.0.0.5") is True
    left = path.read_text()
    assert "old-entry" not in left and "|1|" not in left
    for kept in ("# my hosts", "10.0.0.* ", "@cert-authority", "@revoked 10.0.0.5", "gitlab.example"):
        assert kept in left


def test_pin_replace_keeps_only_the_generated_key(tmp_path):
    path = tmp_path / "kh"
    kh.pin(path, "10.1.0.5", A)
    kh.pin(path, "10.1.0.50", B)
    kh.pin(path, "10.1.0.5", C, replace=True)
    assert [k.public_data for k in kh.keys_for(path, "10.1.0.5")] == [C.public_data]
    assert [k.public_data for k in kh.keys_for(path, "10.1.0.50")] == [B.public_data]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_many_names_pinned_and_forgotten_in_one_rewrite_as_one_at_a_time_would(tmp_path, monkeypatch):
    """pin_many/forget_many (a large cluster's nodes in one edit) leave exactly what pinning or
    forgetting each name on its own leaves, in one rewrite of the file."""
    one_by_one, batched = tmp_path / "one", tmp_path / "many"
    for path in (one_by_one, batched):
        path.write_text(FOREIGN)
    wanted = {"10.0.0.5": A, "[10.0.0.5]:2222": B, "10.0.0.6": C}
    for name, key in wanted.items():
        kh.pin(one_by_one, name, key, replace=True)
    edits = []
    real_edit = kh.edit_lines
    monkeypatch.setattr(kh, "edit_lines", lambda *a, **k: edits.append(1) or real_edit(*a, **k))
    assert kh.pin_many(batched, wanted, replace=True) is True
    assert len(edits) == 1
    assert batched.read_text() == one_by_one.read_text()
    assert kh.pin_many(batched, wanted, replace=True) is False  # nothing twice
    # replace=True dropped the older plain and hashed 10.0.0.5 lines, kept the wildcard, CA, revoked
    assert "old-entry" not in batched.read_text() and "@revoked 10.0.0.5" in batched.read_text()
    edits.clear()
    assert kh.forget_many(batched, ["10.0.0.5", "10.0.0.6", "192.0.2.99"]) == 2
    assert len(edits) == 1
    assert [k.public_data for k in kh.keys_for(batched, "[10.0.0.5]:2222")] == [B.public_data]
    assert kh.keys_for(batched, "10.0.0.5") == [] and kh.keys_for(batched, "10.0.0.6") == []
    assert "gitlab.example" in batched.read_text()


def test_hashed_lines_are_what_openssh_reads(tmp_path):
    path = tmp_path / "kh"
    path.write_text(kh.key_line("[10.2.0.9]:2222", A, hashed=True, comment=ukh.marker("c", "c-master-1")) + "\n")
    assert path.read_text().startswith("|1|")
    assert _ssh_keygen_finds(path, "[10.2.0.9]:2222")
    assert not _ssh_keygen_finds(path, "10.2.0.9")
    assert kh.keys_for(path, "[10.2.0.9]:2222")[0].public_data == A.public_data


def _want(**nodes) -> dict:
    return {node: [(name, key)] for node, (name, key) in nodes.items()}


def test_sync_adds_once_replaces_changed_and_removes_exactly_its_own_lines(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(FOREIGN)
    path.chmod(0o644)
    plain = lambda _name: False  # noqa: E731
    wanted = _want(**{"c1-master-1": ("10.0.0.5", A), "c1-worker-1": ("10.0.0.6", B)})
    assert ukh.sync(path, "c1", wanted, hashed=plain) == ({"c1-master-1", "c1-worker-1"}, set())
    other = _want(**{"c2-master-1": ("10.0.0.5", C)})
    ukh.sync(path, "c2", other, hashed=lambda _n: True)
    once = path.read_bytes()
    assert ukh.sync(path, "c1", wanted, hashed=plain) == (set(), set())
    assert path.read_bytes() == once  # a second run writes nothing
    assert "10.0.0.5 ssh-ed25519" in path.read_text() and f"{ukh.marker('c1', 'c1-master-1')}\n" in path.read_text()

    # the worker's key changed and the master left: exactly those lines change
    changed = _want(**{"c1-worker-1": ("10.0.0.6", C)})
    assert ukh.sync(path, "c1", changed, hashed=plain) == ({"c1-worker-1"}, {"c1-master-1", "c1-worker-1"})
    text = path.read_text()
    assert text.startswith(FOREIGN + "\n")  # the user's lines, byte for byte, still first
    assert ukh.marker("c1", "c1-master-1") not in text
    assert [k.public_data for k in kh.keys_for(path, "10.0.0.6")] == [C.public_data]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the user's mode is kept on rewrite

    ukh.sync(path, "c1", {}, hashed=plain)  # destroy of c1
    text = path.read_text()
    assert "kubitect:c1/" not in text and ukh.marker("c2", "c2-master-1") in text
    ukh.sync(path, "c2", {}, hashed=plain)
    assert path.read_text() == FOREIGN + "\n"


def test_dry_run_reports_without_writing(tmp_path):
    path = tmp_path / "known_hosts"
    wanted = _want(**{"c1-master-1": ("10.0.0.5", A)})
    assert ukh.sync(path, "c1", wanted, hashed=lambda _n: False, dry_run=True) == ({"c1-master-1"}, set())
    assert not path.exists()
    assert ukh.sync(path, "c1", {}, hashed=lambda _n: False) == (set(), set()) and not path.exists()


def test_a_symlinked_known_hosts_is_edited_through_the_link(tmp_path):
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text(FOREIGN + "\n")
    link = tmp_path / "ssh" / "known_hosts"
    link.parent.mkdir()
    link.symlink_to(real)
    ukh.sync(link, "c1", _want(**{"c1-master-1": ("10.0.0.5", A)}), hashed=lambda _n: True)
    ukh.sync(link, "c1", {}, hashed=lambda _n: True)
    assert link.is_symlink() and real.read_text() == FOREIGN + "\n"


def _cluster_worker(args) -> None:
    path, cluster, rounds = args
    nodes = {f"{cluster}-n{i}": [(f"10.9.{len(cluster)}.{i}", KEYS[i % len(KEYS)])] for i in range(5)}
    for r in range(rounds):
        ukh.sync(Path(path), cluster, nodes if r % 2 == 0 else dict(list(nodes.items())[:2]),
                 hashed=lambda _n, r=r: r % 3 == 0)
    ukh.sync(Path(path), cluster, nodes, hashed=lambda _n: False)


def test_concurrent_processes_never_lose_or_duplicate_lines(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(FOREIGN + "\n")
    clusters = [f"c{i}" * (i + 1) for i in range(4)]  # distinct names, distinct address ranges
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(5) as pool:
        pool.map(_cluster_worker, [(str(path), c, 6) for c in clusters])
    text = path.read_text()
    assert text.startswith(FOREIGN + "\n")
    for cluster in clusters:
        for i in range(5):
            assert text.count(f"{ukh.marker(cluster, f'{cluster}-n{i}')}\n") == 1, (cluster, i)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".known_hosts.kubitect-")]


def _ssh_line(i: int) -> str:
    return f"{kh.key_line(f'198.51.100.{i}', A)}\n"


def test_a_line_ssh_appends_while_we_rewrite_is_read_again_not_lost(tmp_path, monkeypatch):
    """ssh(1) appends without a lock. A line appended between our read and our rename makes the
    rewrite start over from the file as it is now."""
    path = tmp_path / "known_hosts"
    ukh.sync(path, "c1", _want(**{"c1-m": ("10.0.0.5", A)}), hashed=lambda _n: False)
    real_read = kh._read_lines
    calls = []

    def read_then_ssh_appends(target):
        lines = real_read(target)
        if not calls:
            with open(target, "a") as fh:
                fh.write(_ssh_line(1))
        calls.append(1)
        return lines

    monkeypatch.setattr(kh, "_read_lines", read_then_ssh_appends)
    ukh.sync(path, "c1", {}, hashed=lambda _n: False)  # a removal: a rewrite
    assert len(calls) == 2
    assert path.read_text() == _ssh_line(1)


def test_a_line_ssh_writes_through_a_descriptor_opened_before_the_rename_is_carried_over(tmp_path,
                                                                                          monkeypatch):
    path = tmp_path / "known_hosts"
    ukh.sync(path, "c1", _want(**{"c1-m": ("10.0.0.5", A)}), hashed=lambda _n: False)
    real_replace = os.replace

    def replace_while_ssh_writes(src, dst):
        with open(dst, "a") as fh:  # ssh opened the file just before our rename...
            real_replace(src, dst)
            fh.write(_ssh_line(2))  # ...and writes just after it, into the replaced inode

    monkeypatch.setattr(kh.os, "replace", replace_while_ssh_writes)
    ukh.sync(path, "c1", {}, hashed=lambda _n: False)
    assert path.read_text() == _ssh_line(2)


def test_user_ssh_dir_override_and_openssh_config_args(tmp_path, monkeypatch):
    monkeypatch.setenv(kh.SSH_DIR_ENV, str(tmp_path / "s"))
    assert kh.user_ssh_dir() == tmp_path / "s"
    assert kh.openssh_config_args() == ["-F", "/dev/null"]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config").write_text("Host *\n  HashKnownHosts yes\n")
    assert kh.openssh_config_args() == ["-F", str(tmp_path / "s" / "config")]
    assert kh.client_config_files() == [tmp_path / "s" / "config"]
    if shutil.which("ssh"):
        assert kh.openssh_option("hashknownhosts", "10.0.0.5") == "yes"
        (tmp_path / "s" / "config").write_text("Host 10.0.0.5\n  HashKnownHosts no\nHost *\n  HashKnownHosts yes\n")
        assert kh.openssh_option("hashknownhosts", "10.0.0.5") == "no"
    monkeypatch.delenv(kh.SSH_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kh.user_ssh_dir() == tmp_path / "home" / ".ssh"
    assert os.environ["HOME"] == str(tmp_path / "home")
