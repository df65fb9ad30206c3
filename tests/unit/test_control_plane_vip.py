"""The `control-plane-vip` load balancer: the seed switched to it with one word, what it renders on
the masters, the endpoint port it records and the installers use, and how validation adapts.

The lab proof (real keepalived, HAProxy and the failover matrix on nspawn masters) is
tests/lab/test_control_plane_vip.py.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.keepalived_haproxy import kubitect_load_balancers
from kubitect_plugins.keepalived_haproxy.control_plane import ControlPlaneVip, masters_as_frontends
from kubitect_plugins.keepalived_haproxy.plugin import KeepalivedHaproxy
from kubitect_plugins.keepalived_haproxy.render import NodeFeatures, render_all
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings
from kubitect_plugins.kubeadm import render as kubeadm_render
from kubitect_plugins.kubeadm.render import KubeadmSecrets

from kubitect_core.config import ConfigError, validate_raw
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.sdk import kube

SEED = Path(__file__).resolve().parents[2] / "examples" / "ha.yaml"  # the seed, verbatim


def seed_on_masters(instances: bool = False, vip: bool = True) -> dict:
    """The seed example with the one word changed (and its two load balancer instances removed)."""
    raw = yaml.safe_load(SEED.read_text())
    lb = raw["cluster"]["nodes"]["loadBalancer"]
    lb["implementation"] = "control-plane-vip"
    if not instances:
        lb.pop("instances", None)
    if not vip:
        lb.pop("vip", None)
    return raw


def _errors(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_raw(copy.deepcopy(raw))
    return [str(issue) for issue in err.value.issues]


def test_both_load_balancers_are_offered_and_one_word_selects():
    offered = kubitect_load_balancers()
    assert set(offered) == {"keepalived-haproxy", "control-plane-vip"}
    assert offered["control-plane-vip"].runs_on == "masters" and offered["control-plane-vip"].api_port == 8443
    assert offered["keepalived-haproxy"].runs_on == "load_balancers" and offered["keepalived-haproxy"].api_port == 6443
    loaded = validate_raw(seed_on_masters())
    assert loaded.config.cluster.nodes.load_balancer.implementation == "control-plane-vip"
    assert not loaded.topology.load_balancers and loaded.topology.vip == "10.10.13.200"


def test_vip_on_masters_needs_a_vip_and_refuses_load_balancer_machines():
    text = "\n".join(_errors(seed_on_masters(instances=True)))
    assert "cluster.nodes.loadBalancer.instances" in text and "machines that serve nothing" in text
    assert "keepalived-haproxy" in text  # the implementation that would use them
    text = "\n".join(_errors(seed_on_masters(vip=False)))
    assert "cluster.nodes.loadBalancer.vip" in text and "puts a virtual IP on the masters" in text


def test_three_masters_without_load_balancers_name_the_alternative():
    raw = seed_on_masters()
    del raw["cluster"]["nodes"]["loadBalancer"]["implementation"]  # back to the default, keepalived-haproxy
    text = "\n".join(_errors(raw))
    assert "at least one load balancer instance is required" in text and "control-plane-vip" in text


def test_forwarding_the_frontend_port_is_refused_on_masters():
    raw = seed_on_masters()
    raw["cluster"]["nodes"]["loadBalancer"]["forwardPorts"] = [{"name": "web", "port": 8443}]
    assert "port 8443 cannot be forwarded" in "\n".join(_errors(raw))
    raw["cluster"]["nodes"]["loadBalancer"]["forwardPorts"] = [{"name": "api", "port": 6443}]
    assert "port 6443 cannot be forwarded" in "\n".join(_errors(raw))


def test_rendered_on_every_master_haproxy_on_8443_in_front_of_the_api_servers(tmp_path: Path):
    topo = validate_raw(seed_on_masters()).topology
    plugin = ControlPlaneVip()
    view = plugin.frontends(topo)
    rendered = render_all(view, "eth0", (), VrrpSettings(), plugin.layout, NodeFeatures())
    masters = [m.name for m in topo.masters]
    assert [r.node for r in rendered] == masters
    for r, master in zip(rendered, topo.masters, strict=True):
        haproxy = r.files[plugin.layout.haproxy_cfg]
        assert "bind *:8443" in haproxy and "bind *:6443" not in haproxy
        for m in topo.masters:  # the local and the peer API servers, each on its own port
            assert f"server {m.name} {m.ip}:6443 check" in haproxy
        keepalived = r.files[plugin.layout.keepalived_conf]
        assert "10.10.13.200/32" in keepalived and f"unicast_src_ip {master.ip}" in keepalived
        peers = keepalived.split("unicast_peer {")[1].split("}")[0].split()
        assert sorted(peers) == sorted(m.ip for m in topo.masters if m.name != master.name)
    if shutil.which("haproxy"):
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(rendered[0].files[plugin.layout.haproxy_cfg].replace("chroot /var/lib/haproxy\n", "")
                       .replace("user haproxy\n", "").replace("group haproxy\n", "")
                       .replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
        res = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    # the view changes nothing else: masters stay masters, the real topology is untouched
    assert masters_as_frontends(view) is view and view.masters == topo.masters and not topo.load_balancers


def _ctx(raw: dict, facts: dict | None = None, record: dict | None = None) -> StageContext:
    loaded = validate_raw(raw)
    ssh = SshAccess("k8s", Path("/nonexistent/key"), Path("/nonexistent/key.pub"), Path("/nonexistent/kh"))
    return StageContext(cluster=loaded.config.cluster.name, config=loaded.config, topology=loaded.topology,
                        cluster_dir=Path("/nonexistent/cluster"), home=Path("/nonexistent"), ssh=ssh,
                        record={} if record is None else record, facts=facts or {})


@pytest.mark.parametrize("plugin, port", [(ControlPlaneVip(), 8443), (KeepalivedHaproxy(), 6443)])
def test_the_recorded_port_reaches_kubeadm_k3s_and_the_kubeconfig(plugin, port):
    raw = seed_on_masters() if plugin.runs_on == "masters" else yaml.safe_load(SEED.read_text())
    lb_ctx = _ctx(raw)
    plugin._record_endpoint(lb_ctx, plugin.frontends(lb_ctx.topology))
    record = lb_ctx.record
    assert (record["endpoint"], record["port"], record["implementation"]) == ("10.10.13.200", port, plugin.name)
    assert record["whoami_port"] == 8405 and set(record["vrrp"]["priorities"]) == {
        n.name for n in plugin.frontends(lb_ctx.topology).load_balancers}
    ctx = _ctx(raw, facts={"loadbalancers": record})
    assert kube.api_url(ctx) == f"https://10.10.13.200:{port}"
    secrets = KubeadmSecrets("abcdef.0123456789abcdef", "0" * 64)
    docs = {d["kind"]: d for d in yaml.safe_load_all(kubeadm_render.render_init(ctx, ctx.topology.masters[0], secrets))
            if d}
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == f"10.10.13.200:{port}"
    assert docs["InitConfiguration"]["localAPIEndpoint"]["bindPort"] == 6443  # the API server's own port
    join = next(d for d in yaml.safe_load_all(kubeadm_render.render_join(ctx, ctx.topology.workers[0], secrets,
                                                                         "sha256:" + "a" * 64)) if d)
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == f"10.10.13.200:{port}"
    from kubitect_plugins.k3s.args import agent_args
    assert f"--server=https://10.10.13.200:{port}" in agent_args(ctx, ctx.topology.workers[0])


def test_without_load_balancers_the_endpoint_is_the_first_masters_api_server():
    raw = yaml.safe_load(SEED.read_text())
    lb = raw["cluster"]["nodes"]["loadBalancer"]
    lb.pop("instances"), lb.pop("vip")
    raw["cluster"]["nodes"]["master"]["instances"] = raw["cluster"]["nodes"]["master"]["instances"][:1]
    ctx = _ctx(raw)
    plugin = KeepalivedHaproxy()
    plugin._record_endpoint(ctx, plugin.frontends(ctx.topology))
    assert (ctx.record["endpoint"], ctx.record["port"]) == (ctx.topology.masters[0].ip, 6443)
    assert "whoami_port" not in ctx.record


def test_switching_the_implementation_of_an_existing_cluster_is_refused_with_why():
    from kubitect_core.changes import evaluate

    old = {"cluster": {"nodes": {"loadBalancer": {"implementation": "keepalived-haproxy"}}}}
    new = {"cluster": {"nodes": {"loadBalancer": {"implementation": "control-plane-vip"}}}}
    [event] = evaluate(old, new, "create")
    assert event.severity == "error" and "endpoint (and its port)" in event.message
