"""The admin kubeconfig: renamed after the cluster, stored 0600, merged into and removed from a
user's kubeconfig that already holds other clusters, whose entries must not change."""

from __future__ import annotations

import copy
import stat

import pytest
import yaml

from kubitect_core import kubeconfig

KUBEADM_ADMIN = """\
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://10.10.13.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
preferences: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""

K3S_ADMIN = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: SzNTLUNB
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
users:
- name: default
  user:
    client-certificate-data: SzNTLUNFUlQ=
    client-key-data: SzNTLUtFWQ==
"""

OTHERS = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "prod", "cluster": {"server": "https://prod.example:6443", "certificate-authority-data": "UFJPRA=="}},
        {"name": "kind-dev", "cluster": {"server": "https://127.0.0.1:40000", "insecure-skip-tls-verify": True}},
    ],
    "users": [
        {"name": "prod-admin", "user": {"token": "prod-token"}},
        {"name": "kind-dev", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                               "command": "kubelogin", "args": ["get-token"]}}},
    ],
    "contexts": [
        {"name": "prod", "context": {"cluster": "prod", "user": "prod-admin", "namespace": "apps"}},
        {"name": "kind-dev", "context": {"cluster": "kind-dev", "user": "kind-dev"}},
    ],
    "current-context": "prod",
    "preferences": {"colors": True},
}


def _others_of(data: dict, cluster: str) -> dict:
    """Everything in `data` that does not belong to `cluster`."""
    return {s: [e for e in data[s] if e["name"] != cluster] for s in ("clusters", "users", "contexts")}


@pytest.mark.parametrize(("text", "ca"), [(KUBEADM_ADMIN, "Q0EtREFUQQ=="), (K3S_ADMIN, "SzNTLUNB")])
def test_rename_names_everything_after_the_cluster_and_points_at_the_endpoint(text, ca):
    out = yaml.safe_load(kubeconfig.rename(text, "kubitect-ha", "10.10.13.200"))
    assert [c["name"] for c in out["clusters"]] == ["kubitect-ha"]
    assert [u["name"] for u in out["users"]] == ["kubitect-ha"]
    assert out["contexts"] == [{"name": "kubitect-ha", "context": {"cluster": "kubitect-ha", "user": "kubitect-ha"}}]
    assert out["current-context"] == "kubitect-ha"
    assert out["clusters"][0]["cluster"]["server"] == "https://10.10.13.200:6443"
    assert out["clusters"][0]["cluster"]["certificate-authority-data"] == ca
    assert "client-key-data" in out["users"][0]["user"]
    assert "kubernetes" not in kubeconfig.rename(text, "kubitect-ha", "10.10.13.200").replace(
        "client.authentication.k8s.io", "")
    assert "default" not in yaml.safe_dump(out)


def test_rename_rejects_what_is_not_a_kubeconfig():
    with pytest.raises(kubeconfig.KubeconfigError, match="no cluster"):
        kubeconfig.rename("apiVersion: v1\nkind: Config\n", "c")
    with pytest.raises(kubeconfig.KubeconfigError, match="not valid YAML"):
        kubeconfig.rename("a: [", "c")


def test_ipv6_endpoint_is_bracketed():
    assert kubeconfig.endpoint_url("fd00::10") == "https://[fd00::10]:6443"


def test_store_is_0600(tmp_path):
    path = kubeconfig.store(tmp_path / "c" / "kubeconfig", kubeconfig.rename(KUBEADM_ADMIN, "c", "1.2.3.4"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["current-context"] == "c"


def test_merge_then_remove_leaves_other_clusters_untouched(tmp_path):
    user = tmp_path / ".kube" / "config"
    user.parent.mkdir()
    user.write_text(yaml.safe_dump(OTHERS))
    user.chmod(0o644)
    before = copy.deepcopy(OTHERS)
    mine = kubeconfig.rename(KUBEADM_ADMIN, "kubitect-ha", "10.10.13.200")

    merged_once = kubeconfig.merge_into(user, mine, "kubitect-ha")
    assert merged_once.changed
    merged = yaml.safe_load(user.read_text())
    assert _others_of(merged, "kubitect-ha") == _others_of(before, "kubitect-ha")
    assert merged["preferences"] == {"colors": True}
    assert merged["current-context"] == "kubitect-ha"
    assert [c["name"] for c in merged["clusters"]] == ["prod", "kind-dev", "kubitect-ha"]
    ours = next(c for c in merged["clusters"] if c["name"] == "kubitect-ha")
    assert ours["cluster"]["server"] == "https://10.10.13.200:6443"
    assert stat.S_IMODE(user.stat().st_mode) == 0o600

    # merging again (a re-apply) changes nothing and does not duplicate entries
    again = kubeconfig.merge_into(user, mine, "kubitect-ha", receipt=merged_once.receipt)
    assert not again.changed
    assert len(yaml.safe_load(user.read_text())["users"]) == 3

    # the user switched back to prod: removal must not steal their current context
    data = yaml.safe_load(user.read_text())
    data["current-context"] = "prod"
    user.write_text(yaml.safe_dump(data))
    removal = kubeconfig.remove_from(again.receipt)
    assert sorted(removal.removed) == ["cluster kubitect-ha", "context kubitect-ha", "user kubitect-ha"]
    after = yaml.safe_load(user.read_text())
    assert after == before
    assert not kubeconfig.remove_from(again.receipt).changed


def test_a_reapply_with_new_credentials_replaces_what_kubitect_merged(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    first = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    rotated = kubeconfig.rename(K3S_ADMIN.replace("SzNTLUNB", "TkVXLUNB"), "lab", "172.30.0.100")
    second = kubeconfig.merge_into(user, rotated, "lab", receipt=first.receipt)
    assert second.changed
    labs = [c for c in yaml.safe_load(user.read_text())["clusters"] if c["name"] == "lab"]
    assert labs == [{"name": "lab", "cluster": {"certificate-authority-data": "TkVXLUNB",
                                                "server": "https://172.30.0.100:6443"}}]
    assert second.receipt["previous_context"] == "prod"  # not "lab": the context before kubitect's
    kubeconfig.remove_from(second.receipt)
    assert yaml.safe_load(user.read_text()) == OTHERS


@pytest.mark.parametrize("section", ["clusters", "users", "contexts"])
def test_merge_refuses_to_replace_an_entry_another_tool_wrote(tmp_path, section):
    user = tmp_path / "config"
    theirs = copy.deepcopy(OTHERS)
    entry = {"clusters": {"name": "lab", "cluster": {"server": "https://someone-elses:6443"}},
             "users": {"name": "lab", "user": {"token": "their-token"}},
             "contexts": {"name": "lab", "context": {"cluster": "prod", "user": "prod-admin"}}}[section]
    theirs[section].append(entry)
    user.write_text(yaml.safe_dump(theirs))
    before = user.read_text()
    with pytest.raises(kubeconfig.KubeconfigConflict, match=f"already has a {section[:-1]} named 'lab'") as err:
        kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    assert "--kubeconfig-name" in str(err.value)
    assert user.read_text() == before

    # the user picks a distinct name: merged beside theirs, theirs untouched, and destroy's
    # removal takes exactly kubitect's entries
    merged = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab",
                                   name="lab-kubitect")
    data = yaml.safe_load(user.read_text())
    assert entry in data[section]
    assert data["current-context"] == "lab-kubitect"
    assert {"name": "lab-kubitect", "context": {"cluster": "lab-kubitect", "user": "lab-kubitect"}} \
        in data["contexts"]
    kubeconfig.remove_from(merged.receipt)
    assert yaml.safe_load(user.read_text()) == theirs


def test_an_identical_entry_is_not_a_conflict(tmp_path):
    """The record was lost but the file holds exactly what kubitect would write: nothing is overwritten."""
    user = tmp_path / "config"
    text = kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100")
    kubeconfig.merge_into(user, text, "lab")
    assert not kubeconfig.merge_into(user, text, "lab").changed


def test_removal_leaves_an_entry_changed_since_the_merge(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    merged = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    data = yaml.safe_load(user.read_text())
    ctx = next(c for c in data["contexts"] if c["name"] == "lab")
    ctx["context"]["namespace"] = "team-a"  # the user (or another tool) changed kubitect's context
    user.write_text(yaml.safe_dump(data))
    removal = kubeconfig.remove_from(merged.receipt)
    assert sorted(removal.removed) == ["cluster lab", "user lab"]
    assert removal.kept == ["context lab (changed since kubitect merged it)"]
    after = yaml.safe_load(user.read_text())
    assert [c["name"] for c in after["contexts"]] == ["prod", "kind-dev", "lab"]
    assert after["current-context"] == "lab"  # still exists: not switched away


def test_merge_replaces_a_stale_entry_it_wrote_and_removal_clears_its_current_context(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump({**OTHERS, "current-context": ""}))
    old = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.1"), "lab")
    new = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab",
                                receipt=old.receipt)
    merged = yaml.safe_load(user.read_text())
    labs = [c for c in merged["clusters"] if c["name"] == "lab"]
    assert labs == [{"name": "lab", "cluster": {"certificate-authority-data": "SzNTLUNB",
                                                "server": "https://172.30.0.100:6443"}}]
    assert kubeconfig.remove_from(new.receipt).changed
    after = yaml.safe_load(user.read_text())
    assert after["current-context"] == ""  # it pointed at the removed cluster; nothing was current before
    assert _others_of(after, "lab") == _others_of(OTHERS, "lab")


def test_removal_restores_the_context_that_was_current_before_the_merge(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    merged = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    assert kubeconfig.current_context(user) == "lab"
    kubeconfig.remove_from(merged.receipt)
    assert yaml.safe_load(user.read_text()) == OTHERS
    # a context that no longer exists is not restored
    merged = kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    data = yaml.safe_load(user.read_text())
    data["contexts"] = [c for c in data["contexts"] if c["name"] != "prod"]
    user.write_text(yaml.safe_dump(data))
    kubeconfig.remove_from(merged.receipt)
    assert kubeconfig.current_context(user) is None


def test_merge_into_a_missing_file_creates_it(tmp_path):
    user = tmp_path / "nested" / ".kube" / "config"
    assert kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "x", "1.1.1.1"), "x").changed
    assert yaml.safe_load(user.read_text())["contexts"][0]["name"] == "x"
    assert stat.S_IMODE(user.stat().st_mode) == 0o600
    assert not (user.parent / "config.lock").exists()


def test_a_symlinked_kubeconfig_is_edited_where_it_points(tmp_path):
    real = tmp_path / "dotfiles" / "kubeconfig"
    real.parent.mkdir()
    real.write_text(yaml.safe_dump(OTHERS))
    link = tmp_path / ".kube" / "config"
    link.parent.mkdir()
    link.symlink_to(real)
    merged = kubeconfig.merge_into(link, kubeconfig.rename(K3S_ADMIN, "lab", "1.1.1.1"), "lab")
    assert link.is_symlink() and merged.receipt["file"] == str(real)
    assert "lab" in [c["name"] for c in yaml.safe_load(real.read_text())["clusters"]]


def test_merge_refuses_an_unrenamed_kubeconfig(tmp_path):
    with pytest.raises(kubeconfig.KubeconfigError, match="rename it first"):
        kubeconfig.merge_into(tmp_path / "config", K3S_ADMIN, "lab")


def test_a_parse_error_in_the_users_kubeconfig_does_not_echo_its_secrets(tmp_path):
    user = tmp_path / "config"
    secret = "eyJhbGciOiJSUzI1NiIsImtpZCI6IlNFQ1JFVC1UT0tFTi0xMjM0NTY3ODkwIn0"
    user.write_text(f"apiVersion: v1\nusers:\n- name: prod\n  user:\n    token: {secret}\n"
                    f"    password: \"{secret}\n  broken: [\n")
    with pytest.raises(kubeconfig.KubeconfigError) as err:
        kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "1.1.1.1"), "lab")
    message = str(err.value)
    assert "is not valid YAML at line" in message
    for piece in (secret, secret[:12], secret[-12:]):
        assert piece not in message
    for text in (f"a: *{secret}\n", f"a: !{secret} x\n", f"a: \"\\q{secret}\"\n", f"{secret}: [\n"):
        user.write_text(text)
        with pytest.raises(kubeconfig.KubeconfigError) as err:
            kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "1.1.1.1"), "lab")
        assert secret[:12] not in str(err.value), str(err.value)


def test_merge_waits_for_kubectls_lock_file_and_never_removes_it(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    lock = tmp_path / "config.lock"
    lock.write_text("")  # what kubectl (client-go) creates while it writes the file
    with pytest.raises(kubeconfig.KubeconfigError, match="config.lock exists"):
        with kubeconfig.locked(user, timeout=0.3):
            pass
    assert lock.exists() and yaml.safe_load(user.read_text()) == OTHERS
    # one left by a kubitect process that died is stale and is taken over
    lock.write_text("kubitect 999999999\n")
    kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "1.1.1.1"), "lab")
    assert not lock.exists()


MERGER = """
import sys, time
from pathlib import Path
from kubitect_core import kubeconfig
path, source, start, first, count = sys.argv[1:]
K3S = Path(source).read_text()
while not Path(start).exists():  # every process merges at the same time
    time.sleep(0.01)
for i in range(int(first), int(first) + int(count)):
    kubeconfig.merge_into(path, kubeconfig.rename(K3S, f"c{i}", "10.0.0.1"), f"c{i}")
"""


def test_concurrent_merges_from_separate_processes_lose_no_entry(tmp_path):
    """Two (here four) clusters applied at once: every merged entry survives (was 196 of 400 lost)."""
    import subprocess
    import sys
    import time

    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    (tmp_path / "k3s.yaml").write_text(K3S_ADMIN)
    start = tmp_path / "start"
    procs, per = 4, 20
    running = [subprocess.Popen([sys.executable, "-c", MERGER, str(user), str(tmp_path / "k3s.yaml"), str(start),
                                 str(p * per), str(per)]) for p in range(procs)]
    time.sleep(1.0)  # let every process import and wait at the start line
    start.touch()
    for proc in running:
        assert proc.wait(timeout=120) == 0
    data = yaml.safe_load(user.read_text())
    expected = {f"c{i}" for i in range(procs * per)}
    for section in ("clusters", "users", "contexts"):
        names = [e["name"] for e in data[section]]
        assert expected <= set(names), f"{section}: lost {sorted(expected - set(names))}"
        assert len(names) == len(set(names))
    assert _others_of(data, "none") == {s: [*OTHERS[s], *[e for e in data[s] if e["name"] in expected]]
                                        for s in ("clusters", "users", "contexts")}


def test_default_user_kubeconfig_follows_KUBECONFIG(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert kubeconfig.default_user_kubeconfig() == tmp_path / "a"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig.default_user_kubeconfig() == tmp_path / ".kube" / "config"
