"""keepalived-haproxy rendering: golden files per topology, plus the rules behind them.

Golden files live in tests/unit/golden/lb/<case>/<node>/. After an intended template change,
regenerate them with `KUBITECT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_lb_templates.py`
and review the diff. Rendered configs are also fed to the real `haproxy -c` and `keepalived -t`
when those binaries are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydantic
import pytest
from kubitect_plugins.keepalived_haproxy import kubitect_config_extensions, kubitect_load_balancers
from kubitect_plugins.keepalived_haproxy.node_ops import NodeState, pkg_manager, planned_changes
from kubitect_plugins.keepalived_haproxy.render import (
    ForwardPort,
    Layout,
    endpoint,
    forward_backends,
    lb_mode,
    render_all,
    render_keepalived,
)
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings

from kubitect_core.failover import Probe, expected_budget, outages
from kubitect_core.topology import Node, Topology

GOLDEN = Path(__file__).parent / "golden" / "lb"
UPDATE = os.environ.get("KUBITECT_UPDATE_GOLDEN") == "1"
NET = "10.10.13"


def _node(role: str, i: int, ip: str, priority: int | None = None) -> Node:
    return Node(role=role, id=str(i), name=f"k8s-{role}-{i}", host="host1", ip=ip, mac=None, cpu=2,
                ram_gib=4, main_disk_gib=32, priority=priority)


def topo(lbs: int, masters: int = 3, workers: int = 2, vip: str | None = f"{NET}.200",
         vrid: int | None = 51) -> Topology:
    nodes = [_node("lb", i + 1, f"{NET}.{201 + i}", 10 + 10 * (lbs - i)) for i in range(lbs)]
    nodes += [_node("master", i + 1, f"{NET}.{10 + i}") for i in range(masters)]
    nodes += [_node("worker", i + 1, f"{NET}.{20 + i}") for i in range(workers)]
    t = Topology(cluster="k8s", nodes=tuple(nodes), vip=vip, endpoint="", virtual_router_id=vrid if vip else None)
    return Topology(cluster=t.cluster, nodes=t.nodes, vip=vip, endpoint=endpoint(t),
                    virtual_router_id=t.virtual_router_id)


PORTS = (ForwardPort("http", 80), ForwardPort("https", 443, 8443, "all"), ForwardPort("etcd-metrics", 2381,
                                                                                     target="masters"))
CASES = {
    "one-lb-no-vip": (topo(1, masters=1, workers=1, vip=None), (), VrrpSettings()),
    "one-lb-vip": (topo(1), PORTS[:1], VrrpSettings()),
    "three-lbs": (topo(3), PORTS, VrrpSettings()),
    "three-lbs-multicast-nopreempt-advert1": (topo(3), (), VrrpSettings(unicast=False, preempt=False,
                                                                          advert_int=1, check_fall=2)),
    "two-lbs-no-workers": (topo(2, masters=1, workers=0), PORTS[:1], VrrpSettings(advert_int=0.2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_files_match_the_golden_files(case):
    topology, ports, vrrp = CASES[case]
    rendered = render_all(topology, "eth0", ports, vrrp)
    assert [r.node for r in rendered] == [n.name for n in topology.load_balancers]
    for r in rendered:
        for path, text in r.files.items():
            golden = GOLDEN / case / r.node / Path(path).name
            if UPDATE:
                golden.parent.mkdir(parents=True, exist_ok=True)
                golden.write_text(text)
            assert golden.exists(), f"missing golden file {golden}; run with KUBITECT_UPDATE_GOLDEN=1"
            assert text == golden.read_text(), f"{case}/{r.node}/{Path(path).name} differs from its golden file"
        expected = {"haproxy.cfg"} | ({"keepalived.conf", "check_haproxy.sh"} if topology.vip else set())
        assert {Path(p).name for p in r.files} == expected


def test_behaviour_by_load_balancer_count_follows_the_original():
    none = topo(0, masters=1, workers=0, vip=None)
    assert lb_mode(none) == "none" and render_all(none, "eth0") == []
    assert endpoint(none) == f"{NET}.10", "0 LBs: the endpoint is the first master"
    single = topo(1, vip=None)
    assert lb_mode(single) == "haproxy" and endpoint(single) == f"{NET}.201"
    assert lb_mode(topo(1)) == "vrrp" and endpoint(topo(1)) == f"{NET}.200"
    assert lb_mode(topo(1, vip=f"{NET}.201")) == "haproxy", "the LB's own IP as VIP needs no keepalived"
    assert lb_mode(topo(3)) == "vrrp" and endpoint(topo(3)) == f"{NET}.200"
    with pytest.raises(ValueError, match="vip is required"):
        lb_mode(topo(2, vip=None))


def test_haproxy_checks_the_api_for_real_and_keeps_watches_open():
    cfg = render_all(topo(2), "eth0")[0].files[Layout().haproxy_cfg]
    for line in ("option httpchk", "http-check connect ssl", "http-check send meth GET uri /readyz",
                 "http-check expect status 200", "timeout client 15m", "timeout server 15m",
                 "monitor-uri /healthz", "bind 127.0.0.1:8404", "stats socket /run/haproxy/admin.sock"):
        assert line in cfg
    servers = [ln.split()[1] for ln in cfg.splitlines() if ln.strip().startswith("server k8s-master")]
    assert servers == ["k8s-master-1", "k8s-master-2", "k8s-master-3"]
    assert "check verify none" in cfg


def test_forward_ports_go_to_their_targets_and_to_masters_when_there_are_no_workers():
    t = topo(1)
    names = lambda fp, tt=t: [n.name for n in forward_backends(tt, fp)]  # noqa: E731
    assert names(ForwardPort("a", 80)) == ["k8s-worker-1", "k8s-worker-2"]
    assert names(ForwardPort("a", 80, target="masters")) == ["k8s-master-1", "k8s-master-2", "k8s-master-3"]
    assert len(names(ForwardPort("a", 80, target="all"))) == 5
    assert names(ForwardPort("a", 80), topo(1, workers=0)) == ["k8s-master-1", "k8s-master-2", "k8s-master-3"]
    cfg = render_all(t, "eth0", [ForwardPort("https", 443, 8443, "workers")])[0].files[Layout().haproxy_cfg]
    assert "bind *:443" in cfg and "server k8s-worker-2 10.10.13.21:8443 check" in cfg


def test_keepalived_unicast_peers_are_the_other_load_balancers():
    t = topo(3)
    conf = render_keepalived(t, t.load_balancers[1], "ens3")
    assert f"unicast_src_ip {NET}.202" in conf
    peers = conf.split("unicast_peer {")[1].split("}")[0].split()
    assert peers == [f"{NET}.201", f"{NET}.203"]
    assert f"{NET}.200/32 dev ens3" in conf and "interface ens3" in conf
    assert "state BACKUP" in conf and "virtual_router_id 51" in conf and "priority 30" in conf
    multicast = render_keepalived(t, t.load_balancers[1], "ens3", VrrpSettings(unicast=False))
    assert "unicast" not in multicast
    single = render_keepalived(topo(1), topo(1).load_balancers[0], "eth0")
    assert "unicast_peer" not in single, "a lone LB has no peers to send to"


def test_timers_preempt_and_vrrp_version_come_from_the_settings():
    t = topo(2)
    default = render_keepalived(t, t.load_balancers[0], "eth0")
    assert "advert_int 0.5" in default and "vrrp_version 3" in default and "nopreempt" not in default
    assert "interval 1" in default and "fall 1" in default and "rise 2" in default
    weights = [ln for ln in default.splitlines() if ln.strip().startswith("weight")]
    assert not weights, "a failing check must mean FAULT (immediate handover), not a lower priority"
    v2 = render_keepalived(t, t.load_balancers[0], "eth0", VrrpSettings(advert_int=2, preempt=False))
    assert "advert_int 2\n" in v2 and "vrrp_version" not in v2 and "nopreempt" in v2
    assert "enable_script_security" in v2 and "script_user root" in v2


def test_vrrp_settings_use_camel_case_keys_and_reject_what_keepalived_cannot_do():
    s = VrrpSettings.model_validate({"advertInt": 0.25, "unicast": False, "checkFall": 3}, by_alias=True)
    assert (s.advert_int, s.unicast, s.check_fall, s.vrrp_version) == (0.25, False, 3, 3)
    assert VrrpSettings().vrrp_version == 3 and VrrpSettings(advert_int=1).vrrp_version == 2
    for bad in ({"advertInt": 0.333}, {"advertInt": 0}, {"checkInterval": 0.5}, {"preemt": True}):
        with pytest.raises(pydantic.ValidationError):
            VrrpSettings.model_validate(bad)


def test_the_plugin_registers_its_load_balancer_and_config_extension():
    assert list(kubitect_load_balancers()) == ["keepalived-haproxy"]
    (ext,) = kubitect_config_extensions()
    assert (ext.path, ext.key, ext.model) == ("cluster.nodes.loadBalancer", "vrrp", VrrpSettings)


def test_an_original_config_validates_and_gets_the_default_vrrp_settings(tmp_path):
    from kubitect_core.config import load_config
    from kubitect_core.engine import validation_context
    from kubitect_core.plugins import load_registry

    context = validation_context(load_registry())
    seed = Path(__file__).parents[2] / "examples" / "ha.yaml"
    loaded = load_config(seed, context=context)
    assert loaded.extensions["cluster.nodes.loadBalancer.vrrp"] == VrrpSettings()
    text = seed.read_text().replace("      vip: 10.10.13.200\n",
                                    "      vip: 10.10.13.200\n      vrrp:\n        advertInt: 0.2\n")
    assert "advertInt" in text
    edited = tmp_path / "ha.yaml"
    edited.write_text(text)
    assert load_config(edited, context=context).extensions["cluster.nodes.loadBalancer.vrrp"].advert_int == 0.2


def test_plan_of_a_node_with_identical_files_keeps_everything():
    t = topo(2)
    (r, _) = render_all(t, "eth0")
    from kubitect_plugins.keepalived_haproxy.node_ops import SYSCTL_TEXT
    same = NodeState({"haproxy": True, "keepalived": True}, "apt", SYSCTL_TEXT, "1", dict(r.files),
                     {"haproxy": True, "keepalived": True}, {"haproxy": True, "keepalived": True})
    assert {c.action for c in planned_changes(r.node, same, r, ["haproxy", "keepalived"])} == {"keep"}
    edited = dict(r.files, **{Layout().haproxy_cfg: "old"})
    drift = NodeState(same.packages, "apt", SYSCTL_TEXT, "1", edited, same.active, same.enabled)
    changed = {(c.kind, c.name, c.action) for c in planned_changes(r.node, drift, r, ["haproxy", "keepalived"])
               if c.action != "keep"}
    assert changed == {("file", Layout().haproxy_cfg, "change"), ("service", "haproxy", "change")}


def test_package_manager_follows_os_release():
    assert pkg_manager('ID=debian\nVERSION_ID="12"\n') == "apt"
    assert pkg_manager('ID=ubuntu\nID_LIKE=debian\n') == "apt"
    assert pkg_manager('ID="rocky"\nID_LIKE="rhel centos fedora"\n') == "dnf"
    assert pkg_manager("ID=alpine\n") is None


def test_outage_windows_run_from_first_failure_to_first_later_success():
    p = [Probe(0.00, 0.01, True), Probe(0.02, 0.27, False), Probe(0.04, 0.29, False),
         Probe(0.06, 0.07, True), Probe(0.08, 0.09, True), Probe(0.10, 0.11, False), Probe(0.12, 0.13, True)]
    assert outages(p) == [(0.02, 0.07), (0.10, 0.13)]
    assert outages(p[:3]) == [(0.02, None)], "no success after the failure: not recovered"
    assert outages(p[:1]) == []


def test_budgets_follow_the_vrrp_timers():
    b = expected_budget(VrrpSettings(advert_int=1, check_interval=2, check_fall=3), backup_priority=100,
                        margin_s=0)
    skew = 156 / 256  # VRRPv2: (256 - priority) / 256 s
    assert b["link_cut"] == pytest.approx((3 + skew) * 1000, abs=0.1)
    assert b["keepalived_crashed"] == b["link_cut"]
    assert b["haproxy_killed"] == pytest.approx((6 + skew) * 1000, abs=0.1)
    assert b["keepalived_stopped"] == pytest.approx(skew * 1000, abs=0.1)
    v3 = expected_budget(VrrpSettings(advert_int=0.5), backup_priority=100, margin_s=0.5)
    assert v3["link_cut"] == pytest.approx((1.5 + 156 / 256 * 0.5 + 0.5) * 1000, abs=0.1)


@pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("keepalived") is None,
                    reason="haproxy and keepalived binaries are not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_real_validators_accept_the_rendered_configs(case, tmp_path):
    topology, ports, vrrp = CASES[case]
    layout = Layout(check_script=str(tmp_path / "check_haproxy.sh"), stats_socket=str(tmp_path / "admin.sock"))
    for r in render_all(topology, "eth0", ports, vrrp, layout):
        for path, text in r.files.items():
            local = tmp_path / Path(path).name
            local.write_text(text)
            local.chmod(0o755 if path == layout.check_script else 0o644)
        res = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        if topology.vip:
            res = subprocess.run(["keepalived", "-t", "-f", str(tmp_path / "keepalived.conf")], capture_output=True,
                                 text=True)
            assert res.returncode == 0, res.stdout + res.stderr
