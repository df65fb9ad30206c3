"""Writing and reading state files: secrets are never exposed on the way, a planted symlink or a
stale temp file is never written through, and reading what kubitect never writes is refused."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from kubitect_core.paths import ClusterNameError, check_cluster_name, cluster_dir
from kubitect_core.state import (
    ClusterState,
    StateFileError,
    read_state_json,
    read_state_text,
    write_atomic,
    write_private,
)


def test_write_private_never_follows_a_symlink_planted_at_the_old_temp_name(tmp_path):
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_text("untouched\n")
    (tmp_path / ".kubeconfig.tmp").symlink_to(victim)  # the fixed name the old code wrote through
    write_private(tmp_path / "kubeconfig", "SECRET")
    assert victim.read_text() == "untouched\n"
    assert (tmp_path / "kubeconfig").read_text() == "SECRET"
    assert stat.S_IMODE((tmp_path / "kubeconfig").stat().st_mode) == 0o600


def test_write_private_never_writes_into_a_stale_world_readable_temp_file(tmp_path):
    stale = tmp_path / ".kubeconfig.tmp"
    stale.write_text("")
    stale.chmod(0o644)  # the old code wrote the secret into it, then chmod-ed
    write_private(tmp_path / "kubeconfig", "SECRET")
    assert stale.read_text() == ""
    assert stat.S_IMODE((tmp_path / "kubeconfig").stat().st_mode) == 0o600


def test_the_secret_is_0600_from_its_first_byte(tmp_path, monkeypatch):
    """Every file that ever holds the bytes is 0600 while they are written."""
    seen: list[int] = []
    real_fdopen = os.fdopen

    def spy(fd, *a, **kw):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *a, **kw)

    monkeypatch.setattr(os, "fdopen", spy)
    write_private(tmp_path / "id_ed25519", b"KEY")
    assert seen == [0o600]


def test_writes_leave_no_temp_file_behind_even_when_they_fail(tmp_path, monkeypatch):
    write_atomic(tmp_path / "record.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]

    def broken(*_a, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "record.json", '{"stages": {}}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    assert (tmp_path / "record.json").read_text() == "{}"


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "record.json"
    texts = [f'{{"writer": {i}, "pad": "{"x" * 20000}"}}' for i in range(8)]
    threads = [threading.Thread(target=lambda t=t: [write_atomic(path, t) for _ in range(20)]) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_text() in texts


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe"), "not UTF-8"),
])
def test_reading_what_kubitect_never_writes_is_refused_by_name(tmp_path, make, problem):
    path = tmp_path / "record.json"
    make(path)
    with pytest.raises(StateFileError, match=problem) as err:
        read_state_text(path)
    assert str(err.value).startswith(str(path))


def test_a_state_file_larger_than_any_kubitect_writes_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "record.json"
    with path.open("wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB that costs nothing
    with pytest.raises(StateFileError, match="more than kubitect ever writes"):
        read_state_json(path)


def test_a_missing_file_is_none_and_null_is_damage(tmp_path):
    assert read_state_json(tmp_path / "nope.json") is None
    (tmp_path / "null.json").write_text("null")
    with pytest.raises(StateFileError, match="null"):
        read_state_json(tmp_path / "null.json")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/tmp/x", "a/b", "a b", "x" * 300])
def test_cluster_names_follow_the_config_rule(tmp_path, name):
    with pytest.raises(ClusterNameError):
        check_cluster_name(name)
    with pytest.raises(ClusterNameError):
        ClusterState(tmp_path, name)


def test_a_valid_name_is_a_directory_directly_inside_clusters(tmp_path):
    assert cluster_dir(tmp_path, "kubitect-ha") == tmp_path / "clusters" / "kubitect-ha"
    state = ClusterState(tmp_path, "kubitect-ha")
    assert state.lock_path == tmp_path / "locks" / "kubitect-ha.lock"
    assert not state.lock_path.is_relative_to(state.dir)
