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

    assert kubeconfig.merge_into(user, mine, "kubitect-ha") is True
    merged = yaml.safe_load(user.read_text())
    assert _others_of(merged, "kubitect-ha") == _others_of(before, "kubitect-ha")
    assert merged["preferences"] == {"colors": True}
    assert merged["current-context"] == "kubitect-ha"
    assert [c["name"] for c in merged["clusters"]] == ["prod", "kind-dev", "kubitect-ha"]
    ours = next(c for c in merged["clusters"] if c["name"] == "kubitect-ha")
    assert ours["cluster"]["server"] == "https://10.10.13.200:6443"
    assert stat.S_IMODE(user.stat().st_mode) == 0o600

    # merging again (a re-apply) changes nothing and does not duplicate entries
    assert kubeconfig.merge_into(user, mine, "kubitect-ha") is False
    assert len(yaml.safe_load(user.read_text())["users"]) == 3

    # the user switched back to prod: removal must not steal their current context
    data = yaml.safe_load(user.read_text())
    data["current-context"] = "prod"
    user.write_text(yaml.safe_dump(data))
    assert kubeconfig.remove_from(user, "kubitect-ha") is True
    after = yaml.safe_load(user.read_text())
    assert after == before
    assert kubeconfig.remove_from(user, "kubitect-ha") is False


def test_merge_replaces_a_stale_entry_of_the_same_cluster_and_removal_clears_its_current_context(tmp_path):
    user = tmp_path / "config"
    stale = copy.deepcopy(OTHERS)
    stale["clusters"].append({"name": "lab", "cluster": {"server": "https://old:6443"}})
    user.write_text(yaml.safe_dump(stale))
    kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    merged = yaml.safe_load(user.read_text())
    labs = [c for c in merged["clusters"] if c["name"] == "lab"]
    assert labs == [{"name": "lab", "cluster": {"certificate-authority-data": "SzNTLUNB",
                                                "server": "https://172.30.0.100:6443"}}]
    assert kubeconfig.remove_from(user, "lab")
    after = yaml.safe_load(user.read_text())
    assert after["current-context"] == ""  # it pointed at the removed cluster
    assert _others_of(after, "lab") == _others_of(OTHERS, "lab")


def test_removal_restores_the_context_that_was_current_before_the_merge(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump(OTHERS))
    previous = kubeconfig.current_context(user)
    kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    assert kubeconfig.current_context(user) == "lab"
    kubeconfig.remove_from(user, "lab", restore=previous)
    assert yaml.safe_load(user.read_text()) == OTHERS
    # a context that no longer exists is not restored
    kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "lab", "172.30.0.100"), "lab")
    kubeconfig.remove_from(user, "lab", restore="gone")
    assert kubeconfig.current_context(user) is None


def test_merge_into_a_missing_file_creates_it(tmp_path):
    user = tmp_path / "nested" / ".kube" / "config"
    assert kubeconfig.merge_into(user, kubeconfig.rename(K3S_ADMIN, "x", "1.1.1.1"), "x")
    assert yaml.safe_load(user.read_text())["contexts"][0]["name"] == "x"
    assert stat.S_IMODE(user.stat().st_mode) == 0o600


def test_merge_refuses_an_unrenamed_kubeconfig(tmp_path):
    with pytest.raises(kubeconfig.KubeconfigError, match="rename it first"):
        kubeconfig.merge_into(tmp_path / "config", K3S_ADMIN, "lab")


def test_default_user_kubeconfig_follows_KUBECONFIG(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert kubeconfig.default_user_kubeconfig() == tmp_path / "a"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig.default_user_kubeconfig() == tmp_path / ".kube" / "config"
