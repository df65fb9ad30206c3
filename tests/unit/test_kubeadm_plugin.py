"""The installers' logic that needs no node: registration, plan, secrets, probes, helpers, scripts."""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kubitect_plugins import k3s as k3s_plugin
from kubitect_plugins import kubeadm as kubeadm_plugin
from kubitect_plugins.kubeadm import nodeprep
from kubitect_plugins.kubeadm.plugin import _load_secrets
from test_kubeadm_render import make_ctx, seed_raw, single_node_raw, with_version

from kubitect_core.config import validate_raw
from kubitect_core.engine import validation_context
from kubitect_core.kube import sources as kube_sources
from kubitect_core.plugins import load_registry
from kubitect_core.sdk import kube as shared
from kubitect_core.stage import StageError


def test_both_installers_register_through_entry_points_and_drive_validation():
    registry = load_registry()
    assert {"kubeadm", "k3s"} <= set(registry.installers)
    for name in ("kubeadm", "k3s"):
        inst = registry.installers[name]
        assert inst.name == name
        assert inst.supported_versions == ("1.28.0", "1.35.99") and inst.maintained_from == "1.33.0"
    context = validation_context(registry)
    loaded = validate_raw(seed_raw(), context=context)  # the seed pins v1.28.6: EOL, accepted with a warning
    assert any("end of life" in w.message and "kubeadm" in w.message for w in loaded.warnings)
    raw = seed_raw()
    raw["kubernetes"]["version"] = "v1.36.0"
    with pytest.raises(Exception, match="1.36.0"):
        validate_raw(raw, context=context)


def test_plan_from_an_empty_record_creates_everything_in_order():
    ctx = make_ctx(seed_raw())
    changes = asyncio.run(kubeadm_plugin.KubeadmInstaller().plan(ctx))
    nodes = [c for c in changes if c.kind == "node"]
    assert [c.name for c in nodes] == [n.name for n in (*ctx.topology.masters, *ctx.topology.workers)]
    assert nodes[0].detail.startswith("kubeadm init") and nodes[1].detail.startswith("join control plane")
    assert nodes[-1].detail.startswith("join worker")
    assert {c.action for c in changes} == {"create"}
    assert any(c.kind == "cni" and c.name == "calico" for c in changes)


def test_plan_keeps_recorded_nodes_and_flags_a_version_change():
    ctx = make_ctx(seed_raw())
    ctx.record.update(nodes={n.name: {"state": "joined", "version": "v1.28.6"}
                             for n in (*ctx.topology.masters, *ctx.topology.workers)},
                      cni={"name": "calico", "version": "v3.29.1"}, kubeconfig="/x")
    assert {c.action for c in asyncio.run(kubeadm_plugin.KubeadmInstaller().plan(ctx))} == {"keep"}
    newer = make_ctx(with_version(seed_raw(), "v1.34.2"))
    newer.record.update(ctx.record)
    assert {c.action for c in asyncio.run(kubeadm_plugin.KubeadmInstaller().plan(newer)) if c.kind == "node"} == {
        "change"}
    k3s_plan = asyncio.run(k3s_plugin.K3sInstaller().plan(make_ctx(single_node_raw())))
    assert [(c.kind, c.action) for c in k3s_plan] == [("node", "create"), ("file", "create")]


def test_kubeadm_secrets_generated_once_0600_and_well_formed(tmp_path):
    ctx = make_ctx(seed_raw())
    ctx.cluster_dir = tmp_path
    first = _load_secrets(ctx)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", first.token)
    assert re.fullmatch(r"[0-9a-f]{64}", first.certificate_key)
    path = tmp_path / "secrets" / "kubeadm.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _load_secrets(ctx) == first  # a re-run joins with the same token
    path.chmod(0o644)
    _load_secrets(ctx)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a loosened mode is repaired
    other = make_ctx(seed_raw())
    other.cluster_dir = tmp_path / "other"
    assert _load_secrets(other).token != first.token


def _self_signed() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_ca_cert_hash_matches_the_openssl_recipe_of_the_kubeadm_docs():
    pem = _self_signed()
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    digest = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
    assert kubeadm_plugin.ca_cert_hash(pem) == f"sha256:{digest}"
    with pytest.raises(StageError, match="CA certificate"):
        kubeadm_plugin.ca_cert_hash(b"not a certificate")


def test_internet_reason_names_the_source_and_is_bounded(monkeypatch):
    ctx = make_ctx(with_version(seed_raw(), "v1.34.2"))
    ctx.options["installer_source"] = "preinstalled"
    assert kubeadm_plugin.internet_reason(ctx) is None and k3s_plugin.internet_reason(ctx) is None
    ctx.options["installer_source"] = "upstream"
    monkeypatch.setattr(kube_sources, "probe_url", lambda url, timeout: "Name or service not known")
    assert "https://pkgs.k8s.io/core:/stable:/v1.34/deb/Release.key" in kubeadm_plugin.internet_reason(ctx)
    k3s_reason = k3s_plugin.internet_reason(ctx)
    assert "https://github.com/k3s-io/k3s/releases/download/v1.34.2%2Bk3s1/k3s" in k3s_reason
    monkeypatch.setattr(kube_sources, "probe_url", lambda url, timeout: time.sleep(5) or None)
    started = time.monotonic()
    assert "no answer within 1s" in shared.unreachable_reason(["https://example.invalid/"], timeout=1)
    assert time.monotonic() - started < 2.5
    monkeypatch.setattr(kube_sources, "probe_url", lambda url, timeout: None)
    assert kubeadm_plugin.internet_reason(ctx) is None


def test_unknown_installer_source_is_refused():
    ctx = make_ctx(seed_raw())
    ctx.options["installer_source"] = "usb-stick"
    with pytest.raises(StageError, match="upstream, preinstalled"):
        shared.source(ctx)


@pytest.mark.parametrize(("text", "parts"), [
    ("dedicated=storage:NoSchedule", ("dedicated", "storage", "NoSchedule")),
    ("gpu:NoExecute", ("gpu", "", "NoExecute")),
    ("example.com/k=v:PreferNoSchedule", ("example.com/k", "v", "PreferNoSchedule")),
])
def test_taint_parsing_round_trips(text, parts):
    taint = shared.Taint.parse(text)
    assert (taint.key, taint.value, taint.effect) == parts and str(taint) == text


@pytest.mark.parametrize(("label", "allowed"), [
    ("disk", True), ("example.com/rack", True), ("node-role.kubernetes.io/worker", False),
    ("kubernetes.io/hostname", True), ("node.kubernetes.io/instance-type", True), ("foo.k8s.io/x", False),
    ("kubelet.kubernetes.io/x", True), ("topology.kubernetes.io/zone", True),
])
def test_kubelet_self_labelling_rules(label, allowed):
    assert shared.kubelet_may_set(label) is allowed


def test_ready_nodes_reads_kubectl_json():
    text = ('{"items": [{"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}],'
            ' "nodeInfo": {"kubeletVersion": "v1.34.2"}}}, {"metadata": {"name": "b"}, "status": {}}]}')
    assert shared.ready_nodes(text) == {"a": {"ready": "True", "version": "v1.34.2"},
                                        "b": {"ready": "Unknown", "version": ""}}
    assert shared.ready_nodes("not json") == {}


def test_cert_sans_list_endpoint_vip_lbs_and_masters_once():
    ctx = make_ctx(seed_raw())
    assert shared.cert_sans(ctx) == ["10.10.13.200", "10.10.13.201", "10.10.13.202", "10.10.13.10",
                                     "10.10.13.11", "10.10.13.12"]
    single = make_ctx(single_node_raw())
    assert shared.cert_sans(single) == ["192.168.113.10"]


@pytest.mark.parametrize("script", [
    nodeprep.kernel_script(), nodeprep._apt_script("v1.34.2"), nodeprep._dnf_script("v1.28.6"),
    nodeprep.CONTAINERD_SCRIPT, nodeprep.SERVICES_SCRIPT, nodeprep.preinstalled_script("v1.34.2")])
def test_node_scripts_are_valid_shell(script, tmp_path):
    path = tmp_path / "s.sh"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0


def test_apt_script_uses_the_per_minor_repository():
    script = nodeprep._apt_script("v1.34.2")
    assert "https://pkgs.k8s.io/core:/stable:/v1.34/deb/" in script and '"kubeadm=1.34.2-*"' in script
    assert "https://pkgs.k8s.io/core:/stable:/v1.28/rpm/" in nodeprep._dnf_script("v1.28.6")


@pytest.mark.parametrize(("os_release", "manager"), [
    ('ID=ubuntu\nID_LIKE=debian\n', "apt"), ("ID=debian\n", "apt"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "dnf"), ("ID=centos\n", "dnf"), ("ID=alpine\n", None)])
def test_package_manager_by_os_release(os_release, manager):
    assert nodeprep.pkg_manager(os_release) == manager


def test_kernel_prep_is_idempotent_in_a_sandbox(tmp_path):
    """Runs the kernel script against a fake root twice: the second run reports no change."""
    root = tmp_path
    script = nodeprep.kernel_script().replace("/etc/", f"{root}/etc/").replace("/sys/module/", f"{root}/sys/")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    state = root / "sysctl.state"
    (bin_dir / "sysctl").write_text(f"""#!/bin/sh
if [ "$1" = "-n" ]; then grep "^$2 = " {state} 2>/dev/null | cut -d' ' -f3; exit 0; fi
cp "$3" {state}
""")
    (bin_dir / "modprobe").write_text(f"#!/bin/sh\nmkdir -p {root}/sys/$1\n")
    (bin_dir / "swapon").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    second = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "changed: module br_netfilter loaded" in first.stdout and "changed: sysctls applied" in first.stdout
    assert second.returncode == 0 and second.stdout == ""
    assert (root / "etc" / "modules-load.d" / "kubitect-kubernetes.conf").read_text() == "overlay\nbr_netfilter\n"
    assert Path(state).read_text().count(" = 1") == 3
