"""Golden files of the rendered kubeadm configurations, checked by the strict upstream API models.

The seed topology (examples/ha.yaml: VIP, two LBs, three masters, three workers) at its pinned
v1.28.6 (kubeadm v1beta3) and at v1.34.2 (v1beta4), a single-node cluster (the preset), and a
variant with labels and taints. Regenerate the files after an intended change with
`KUBITECT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_kubeadm_render.py`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.kubeadm import api, render, sources
from kubitect_plugins.kubeadm.render import KubeadmSecrets

from kubitect_core.config import preset_text, validate_raw
from kubitect_core.contracts import SshAccess, StageContext

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "kubeadm"
UPDATE = os.environ.get("KUBITECT_UPDATE_GOLDEN") == "1"
# Fixed stand-ins so golden files are stable; real runs generate them with the secrets module.
SECRETS = KubeadmSecrets("abcdef.0123456789abcdef", "f" * 64)
CA_HASH = "sha256:" + "0123456789abcdef" * 4


def seed_raw() -> dict:
    return yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())


def make_ctx(raw: dict, facts: dict | None = None) -> StageContext:
    loaded = validate_raw(raw)
    ssh = SshAccess("k8s", Path("/nonexistent/key"), Path("/nonexistent/key.pub"), Path("/nonexistent/kh"))
    return StageContext(cluster=loaded.config.cluster.name, config=loaded.config, topology=loaded.topology,
                        cluster_dir=Path("/nonexistent/cluster"), home=Path("/nonexistent"), ssh=ssh, record={},
                        facts=facts or {})


def with_version(raw: dict, version: str) -> dict:
    raw = copy.deepcopy(raw)
    raw["kubernetes"]["version"] = version
    return raw


def with_labels(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    workers = raw["cluster"]["nodes"]["worker"]
    workers["default"] = {"labels": {"disk": "ssd", "node-role.kubernetes.io/worker": ""},
                          "taints": ["dedicated=storage:NoSchedule"]}
    workers["instances"][0]["labels"] = {"disk": "nvme", "rack": "r1"}
    workers["instances"][0]["taints"] = ["gpu:NoExecute"]
    return raw


def single_node_raw() -> dict:
    return yaml.safe_load(preset_text("example-single-node"))


CASES = {
    "ha-v1.28.6": lambda: seed_raw(),
    "ha-v1.34.2": lambda: with_version(seed_raw(), "v1.34.2"),
    "single-node": single_node_raw,
    "labels-taints": lambda: with_labels(with_version(seed_raw(), "v1.34.2")),
}


def rendered(case: str) -> dict[str, str]:
    ctx = make_ctx(CASES[case]())
    topo = ctx.topology
    out = {"init-" + topo.masters[0].name: render.render_init(ctx, topo.masters[0], SECRETS)}
    if len(topo.masters) > 1:
        out["join-" + topo.masters[1].name] = render.render_join(ctx, topo.masters[1], SECRETS, CA_HASH)
    if topo.workers:
        out["join-" + topo.workers[0].name] = render.render_join(ctx, topo.workers[0], SECRETS, CA_HASH)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    for name, text in rendered(case).items():
        golden = GOLDEN / case / f"{name}.yaml"
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.exists(), f"missing golden file {golden} (run with KUBITECT_UPDATE_GOLDEN=1)"
        assert text == golden.read_text(), f"{golden} differs from the rendered configuration"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_files_match_the_upstream_api(case):
    """The stored files themselves (what a reviewer reads) validate against the strict models."""
    files = sorted((GOLDEN / case).glob("*.yaml"))
    assert files
    for path in files:
        docs = api.validate_documents(path.read_text())
        kinds = [d.kind for d in docs]
        if path.name.startswith("init-"):
            assert kinds == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
        else:
            assert kinds == ["JoinConfiguration"]


def _docs(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def test_seed_init_endpoint_sans_and_api_version():
    ctx = make_ctx(seed_raw())
    docs = _docs(render.render_init(ctx, ctx.topology.masters[0], SECRETS))
    cluster = docs["ClusterConfiguration"]
    assert cluster["apiVersion"] == "kubeadm.k8s.io/v1beta3"  # 1.28: v1beta4 does not exist yet
    assert cluster["controlPlaneEndpoint"] == "10.10.13.200:6443"
    assert {"10.10.13.200", "10.10.13.201", "10.10.13.202"} <= set(cluster["apiServer"]["certSANs"])
    assert cluster["kubernetesVersion"] == "v1.28.6"
    init = docs["InitConfiguration"]
    assert init["bootstrapTokens"][0]["token"] == SECRETS.token
    assert init["certificateKey"] == SECRETS.certificate_key
    assert init["localAPIEndpoint"]["advertiseAddress"] == "10.10.13.10"
    # workers exist, so the masters keep the control-plane taint
    assert init["nodeRegistration"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane",
                                                   "effect": "NoSchedule"}]


def test_endpoint_recorded_by_the_loadbalancers_stage_wins():
    ctx = make_ctx(seed_raw(), facts={"loadbalancers": {"endpoint": "10.10.13.250"}})
    docs = _docs(render.render_init(ctx, ctx.topology.masters[0], SECRETS))
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "10.10.13.250:6443"
    join = _docs(render.render_join(ctx, ctx.topology.workers[0], SECRETS, CA_HASH))["JoinConfiguration"]
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.10.13.250:6443"


def test_join_parameters_control_plane_versus_worker():
    ctx = make_ctx(with_version(seed_raw(), "v1.34.2"))
    cp = _docs(render.render_join(ctx, ctx.topology.masters[2], SECRETS, CA_HASH))["JoinConfiguration"]
    assert cp["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cp["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "10.10.13.200:6443", "token": SECRETS.token,
                                                 "caCertHashes": [CA_HASH]}
    assert cp["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "10.10.13.12", "bindPort": 6443},
                                  "certificateKey": SECRETS.certificate_key}
    worker_text = render.render_join(ctx, ctx.topology.workers[1], SECRETS, CA_HASH)
    worker = _docs(worker_text)["JoinConfiguration"]
    assert "controlPlane" not in worker
    assert SECRETS.certificate_key not in worker_text  # a worker never receives the certificate key
    assert worker["nodeRegistration"]["taints"] == []
    assert {"name": "node-ip", "value": "10.10.13.21"} in worker["nodeRegistration"]["kubeletExtraArgs"]


def test_single_node_master_is_schedulable_and_its_own_endpoint():
    ctx = make_ctx(single_node_raw())
    docs = _docs(render.render_init(ctx, ctx.topology.masters[0], SECRETS))
    assert docs["InitConfiguration"]["nodeRegistration"]["taints"] == []
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "192.168.113.10:6443"
    assert docs["ClusterConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"


def test_labels_and_taints_from_the_merged_config():
    ctx = make_ctx(with_labels(with_version(seed_raw(), "v1.34.2")))
    w1 = _docs(render.render_join(ctx, ctx.topology.workers[0], SECRETS, CA_HASH))["JoinConfiguration"]
    args = {a["name"]: a["value"] for a in w1["nodeRegistration"]["kubeletExtraArgs"]}
    # instance labels win over defaults; the restricted node-role label is applied later with kubectl
    assert args["node-labels"] == "disk=nvme,rack=r1"
    assert w1["nodeRegistration"]["taints"] == [
        {"key": "dedicated", "value": "storage", "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoExecute"}]
    w2 = _docs(render.render_join(ctx, ctx.topology.workers[1], SECRETS, CA_HASH))["JoinConfiguration"]
    assert {a["name"]: a["value"] for a in w2["nodeRegistration"]["kubeletExtraArgs"]}["node-labels"] == "disk=ssd"


@pytest.mark.parametrize(("version", "expected"), [
    ("v1.28.6", api.V1BETA3), ("1.30.9", api.V1BETA3), ("v1.31.0", api.V1BETA4), ("v1.35.1", api.V1BETA4)])
def test_api_version_per_minor(version, expected):
    assert sources.kubeadm_api_version(version) == expected


def test_strict_models_reject_unknown_and_wrong_version_fields():
    ctx = make_ctx(with_version(seed_raw(), "v1.34.2"))
    text = render.render_join(ctx, ctx.topology.workers[0], SECRETS, CA_HASH)
    with pytest.raises(api.InvalidKubeadmConfig):
        api.validate_documents(text.replace("caCertHashes:", "caCertHash:"))
    # a v1beta3-style map of kubelet args is not valid v1beta4
    doc = yaml.safe_load(text)
    doc["nodeRegistration"]["kubeletExtraArgs"] = {"node-ip": "10.10.13.20"}
    with pytest.raises(api.InvalidKubeadmConfig):
        api.validate_documents(yaml.safe_dump(doc))
    doc["apiVersion"] = api.V1BETA3
    api.validate_documents(yaml.safe_dump(doc))


def test_pod_cidr_avoids_the_node_network():
    raw = seed_raw()
    raw["cluster"]["network"]["cidr"] = "10.244.0.0/16"
    for inst in raw["cluster"]["nodes"]["loadBalancer"]["instances"] + raw["cluster"]["nodes"]["master"][
            "instances"] + raw["cluster"]["nodes"]["worker"]["instances"]:
        inst["ip"] = inst["ip"].replace("10.10.13.", "10.244.1.")
    raw["cluster"]["nodes"]["loadBalancer"]["vip"] = "10.244.1.200"
    ctx = make_ctx(raw)
    net = _docs(render.render_init(ctx, ctx.topology.masters[0], SECRETS))["ClusterConfiguration"]["networking"]
    assert net["podSubnet"] != "10.244.0.0/16" and net["serviceSubnet"] == "10.96.0.0/12"


def test_secrets_are_not_in_the_repr():
    assert SECRETS.token not in repr(SECRETS) and SECRETS.certificate_key not in repr(SECRETS)
