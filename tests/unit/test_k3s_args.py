"""Golden files of the k3s command lines and systemd units for the seed topology and a single node.

Regenerate after an intended change with
`KUBITECT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_k3s_args.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from kubitect_plugins.k3s import args as k3s_args
from kubitect_plugins.k3s.plugin import K3sInstaller, _token
from test_kubeadm_render import make_ctx, seed_raw, single_node_raw, with_labels, with_version

from kubitect_core.config import classify, validate_raw
from kubitect_core.config.context import InstallerInfo, default_context
from kubitect_core.sdk import kube as shared

GOLDEN = Path(__file__).parent / "golden" / "k3s"
UPDATE = os.environ.get("KUBITECT_UPDATE_GOLDEN") == "1"


def _cilium(raw: dict) -> dict:
    raw["kubernetes"]["networkPlugin"] = "cilium"
    return raw


CASES = {
    "ha": lambda: seed_raw(),
    "single-node": single_node_raw,
    "ha-cilium-labels": lambda: _cilium(with_labels(with_version(seed_raw(), "v1.34.2"))),
}


def rendered(case: str) -> dict[str, str]:
    ctx = make_ctx(CASES[case]())
    out = {"args.json": json.dumps({n.name: k3s_args.args_for(ctx, n) for n in shared.cluster_nodes(ctx)},
                                   indent=2) + "\n"}
    out[f"{ctx.topology.masters[0].name}.service"] = k3s_args.render_unit(ctx, ctx.topology.masters[0],
                                                                          "/usr/local/bin/k3s")
    if ctx.topology.workers:
        out[f"{ctx.topology.workers[0].name}.service"] = k3s_args.render_unit(ctx, ctx.topology.workers[0],
                                                                              "/usr/local/bin/k3s")
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    for name, text in rendered(case).items():
        golden = GOLDEN / case / name
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.exists(), f"missing golden file {golden} (run with KUBITECT_UPDATE_GOLDEN=1)"
        assert text == golden.read_text(), f"{golden} differs from the rendered k3s arguments"


def test_seed_servers_and_agents():
    ctx = make_ctx(seed_raw())
    m1, m2, m3 = ctx.topology.masters
    first = k3s_args.args_for(ctx, m1)
    assert first[:2] == ["server", "--cluster-init"]
    assert not any(a.startswith("--server=") for a in first)
    for other in (m2, m3):
        a = k3s_args.args_for(ctx, other)
        assert a[0] == "server" and "--server=https://10.10.13.200:6443" in a and "--cluster-init" not in a
    sans = {a.split("=", 1)[1] for a in first if a.startswith("--tls-san=")}
    assert {"10.10.13.200", "10.10.13.201", "10.10.13.202"} <= sans
    agent = k3s_args.args_for(ctx, ctx.topology.workers[0])
    assert agent[:2] == ["agent", "--server=https://10.10.13.200:6443"]
    assert "--node-ip=10.10.13.20" in agent
    # workers exist: servers carry the control-plane taint; seed names no CNI: k3s keeps flannel
    assert "--node-taint=node-role.kubernetes.io/control-plane:NoSchedule" in first
    assert "--flannel-backend=none" not in first
    assert not any("token" in a.lower() for n in shared.cluster_nodes(ctx) for a in k3s_args.args_for(ctx, n))


def test_single_node_server_is_schedulable():
    ctx = make_ctx(single_node_raw())
    a = k3s_args.args_for(ctx, ctx.topology.masters[0])
    assert a[:2] == ["server", "--cluster-init"]
    assert not any(x.startswith("--node-taint") for x in a)
    assert "--tls-san=192.168.113.10" in a


def test_chosen_cni_disables_flannel_and_labels_taints_are_flags():
    ctx = make_ctx(CASES["ha-cilium-labels"]())
    first = k3s_args.args_for(ctx, ctx.topology.masters[0])
    assert "--flannel-backend=none" in first and "--disable-network-policy" in first
    w1 = k3s_args.args_for(ctx, ctx.topology.workers[0])
    assert "--node-label=disk=nvme" in w1 and "--node-label=rack=r1" in w1
    assert "--node-taint=dedicated=storage:NoSchedule" in w1 and "--node-taint=gpu:NoExecute" in w1
    assert not any("node-role.kubernetes.io/worker" in x for x in w1)  # set with kubectl afterwards


def test_explicit_flannel_keeps_flannel():
    raw = seed_raw()
    raw["kubernetes"]["networkPlugin"] = "flannel"
    assert k3s_args.uses_flannel(make_ctx(raw))


@pytest.mark.parametrize(("version", "expected"), [("v1.28.6", "v1.28.6+k3s1"), ("1.34.2", "v1.34.2+k3s1")])
def test_version_string_always_has_the_v(version, expected):
    assert k3s_args.k3s_version(version) == expected
    assert k3s_args.binary_url(expected).endswith(f"/{expected.replace('+', '%2B')}/k3s")


def test_default_version_gets_the_v_too():
    raw = seed_raw()
    del raw["kubernetes"]["version"]
    ctx = make_ctx(raw)
    assert k3s_args.k3s_version(ctx).startswith("v1.") and k3s_args.k3s_version(ctx).endswith("+k3s1")


def test_token_is_random_0600_and_stable(tmp_path):
    ctx = make_ctx(seed_raw())
    ctx.cluster_dir = tmp_path / "c1"
    t1 = _token(ctx)
    path = tmp_path / "c1" / "secrets" / "k3s.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _token(ctx) == t1 and len(t1) == 64
    other = make_ctx(seed_raw())
    other.cluster_dir = tmp_path / "c2"
    assert _token(other) != t1  # never derived from the cluster name


@pytest.mark.parametrize("value", ["a b", "gold\n"])
def test_unsafe_characters_never_reach_the_unit(value):
    """Defence in depth behind validate (which refuses such labels): a value with a space or a
    trailing newline (which `^...$` with match() let through) never reaches the systemd unit."""
    ctx = make_ctx(seed_raw())
    node = dataclasses.replace(ctx.topology.workers[0], labels={"team": value})
    with pytest.raises(Exception, match="systemd unit"):
        k3s_args.args_for(ctx, node)


def test_installer_declares_its_versions_and_validation_uses_them():
    inst = K3sInstaller()
    info = InstallerInfo.of(inst)
    assert classify("v1.28.6", info.supported, info.maintained_from) == "eol"
    assert classify("v1.34.2", info.supported, info.maintained_from) == "ok"
    assert classify("v1.27.3", info.supported, info.maintained_from) == "unsupported"
    context = default_context()
    context.installers["k3s"] = info
    raw = seed_raw()
    raw["kubernetes"]["manager"] = "k3s"
    loaded = validate_raw(raw, context=context)
    assert any("end of life" in w.message for w in loaded.warnings)
    raw["kubernetes"]["version"] = "v1.27.3"
    with pytest.raises(Exception, match="1.27.3"):
        validate_raw(raw, context=context)
