"""`--cluster` is a name, never a path: a typo or an empty shell variable deletes nothing.

Before the fix, `destroy --cluster ""` or `.` removed the whole clusters directory (every
cluster's key, kubeconfig and record), and `..`, `../x` or `/tmp/x` removed that directory.
"""

from __future__ import annotations

import json

import pytest

BAD_NAMES = ["", ".", "..", "../x", "/tmp/x"]


@pytest.fixture
def planted(fake_env, tmp_path_factory):
    """Files where each bad name would have pointed: the home, clusters/, a sibling and /tmp/x-like."""
    home = fake_env / "home"
    outside = tmp_path_factory.mktemp("outside")
    files = [
        home / "clusters" / "prod" / "record.json",  # another cluster ("", ".")
        home / "clusters" / "prod" / "ssh" / "id_ed25519",
        home / "keep-me",  # the home itself ("..")
        home / "x" / "keep-me",  # ../x
        outside / "x" / "keep-me",  # an absolute path
    ]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("planted\n")
    return files, outside


def _as_given(name: str, outside) -> str:
    return str(outside / "x") if name == "/tmp/x" else name


@pytest.mark.parametrize("name", BAD_NAMES, ids=["empty", "dot", "dotdot", "dotdot-x", "absolute"])
@pytest.mark.parametrize("command", [["destroy", "-y"], ["destroy", "-y", "--force"], ["export", "config"],
                                     ["export", "kubeconfig"], ["export", "report"], ["verify"]],
                         ids=lambda c: "-".join(c))
def test_a_cluster_option_that_is_not_a_name_exits_2_and_deletes_nothing(cli, planted, name, command):
    files, outside = planted
    result = cli(*command, "--cluster", _as_given(name, outside))
    assert result.exit_code == 2, result.output
    assert "is not a cluster name" in " ".join(result.output.replace("│", " ").split())
    for f in files:
        assert f.read_text() == "planted\n", f"{f} was touched"


def test_a_symlinked_cluster_directory_is_not_followed(cli, fake_env, tmp_path_factory):
    target = tmp_path_factory.mktemp("elsewhere")
    (target / "precious").write_text("planted\n")
    clusters = fake_env / "home" / "clusters"
    clusters.mkdir(parents=True)
    (clusters / "link").symlink_to(target, target_is_directory=True)
    result = cli("destroy", "--cluster", "link", "-y")
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.output
    assert (target / "precious").read_text() == "planted\n"


def test_a_valid_name_is_still_a_normal_cluster(cli, fake_env):
    cfg = str(fake_env / "ha.yaml")
    assert cli("apply", cfg).exit_code == 0
    assert cli("export", "config", "--cluster", "kubitect-ha").exit_code == 0
    assert cli("destroy", "--cluster", "kubitect-ha", "-y").exit_code == 0


def test_list_shows_a_directory_that_is_not_a_cluster_name_and_never_touches_it(cli, fake_env):
    stray = fake_env / "home" / "clusters" / "my.backup"
    stray.mkdir(parents=True)
    (stray / "keep-me").write_text("planted\n")
    rows = json.loads(cli("list", "clusters", "-o", "json").output)["items"]
    assert rows == [{"name": "my.backup", "made_by": "?", "status": "ignored: not a valid cluster name",
                     "dir": str(stray), "damaged": False, "local": False}]
    assert cli("destroy", "--cluster", "my.backup", "-y").exit_code == 2
    assert (stray / "keep-me").read_text() == "planted\n"
