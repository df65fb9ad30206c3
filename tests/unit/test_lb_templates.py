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
from kubitect_plugins.keepalived_haproxy.budgets import EXIT_NOTICE_S, expected_budget
from kubitect_plugins.keepalived_haproxy.node_ops import NodeState, needs_restart, pkg_manager, planned_changes
from kubitect_plugins.keepalived_haproxy.render import (
    ForwardPort,
    Layout,
    NodeFeatures,
    endpoint,
    forward_backends,
    lb_mode,
    render_all,
    render_keepalived,
)
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings, ranked_priorities

from kubitect_core.failover import Probe, outages
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
VM = NodeFeatures(process_events=True, realtime=True, memlock=True)  # what a VM node offers
CONTAINER = NodeFeatures(process_events=False, realtime=True, memlock=False)  # an nspawn node
CASES = {
    "one-lb-no-vip": (topo(1, masters=1, workers=1, vip=None), (), VrrpSettings(), NodeFeatures()),
    "one-lb-vip": (topo(1), PORTS[:1], VrrpSettings(), NodeFeatures()),
    "three-lbs": (topo(3), PORTS, VrrpSettings(), VM),
    "three-lbs-multicast-nopreempt-advert1": (topo(3), (), VrrpSettings(profile="standard", unicast=False,
                                                                          preempt=False, advert_int=1,
                                                                          check_fall=2), VM),
    "two-lbs-no-workers": (topo(2, masters=1, workers=0), PORTS[:1],
                           VrrpSettings(profile="standard", advert_int=0.2), CONTAINER),
    "two-lbs-fast-in-containers": (topo(2, masters=1, workers=0), (), VrrpSettings(profile="fast"), CONTAINER),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_files_match_the_golden_files(case):
    topology, ports, vrrp, features = CASES[case]
    rendered = render_all(topology, "eth0", ports, vrrp, features=features)
    assert [r.node for r in rendered] == [n.name for n in topology.load_balancers]
    for r in rendered:
        for path, text in r.files.items():
            golden = GOLDEN / case / r.node / Path(path).name
            if UPDATE:
                golden.parent.mkdir(parents=True, exist_ok=True)
                golden.write_text(text)
            assert golden.exists(), f"missing golden file {golden}; run with KUBITECT_UPDATE_GOLDEN=1"
            assert text == golden.read_text(), f"{case}/{r.node}/{Path(path).name} differs from its golden file"
        expected = {"haproxy.cfg"} | ({"keepalived.conf", "check_haproxy.sh", "50-kubitect-exit.conf"}
                                      if topology.vip else set())
        if topology.vip and vrrp.realtime and features.realtime:
            expected.add("50-kubitect-realtime.conf")
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
    assert "state BACKUP" in conf and "virtual_router_id 51" in conf
    multicast = render_keepalived(t, t.load_balancers[1], "ens3", VrrpSettings(unicast=False))
    assert "unicast_peer" not in multicast and "unicast_src_ip" not in multicast
    single = render_keepalived(topo(1), topo(1).load_balancers[0], "eth0")
    assert "unicast_peer" not in single, "a lone LB has no peers to send to"


def test_timers_preempt_and_vrrp_version_come_from_the_settings():
    t = topo(2)
    standard = render_keepalived(t, t.load_balancers[0], "eth0", VrrpSettings(profile="standard"))
    assert "advert_int 0.5" in standard and "vrrp_version 3" in standard and "nopreempt" not in standard
    assert "interval 1" in standard and "fall 3" in standard and "rise 2" in standard
    weights = [ln.strip() for ln in standard.splitlines() if ln.strip().startswith("weight")]
    assert weights == ["weight 0"], "a failing check or a dead HAProxy must mean FAULT, not a lower priority"
    v2 = render_keepalived(t, t.load_balancers[0], "eth0", VrrpSettings(advert_int=2, preempt=False))
    assert "advert_int 2\n" in v2 and "vrrp_version" not in v2 and "nopreempt" in v2
    assert "enable_script_security" in v2 and "script_user root" in v2


def test_the_default_is_the_fast_profile_and_keys_set_in_the_config_win():
    fast = VrrpSettings()
    assert (fast.profile, fast.advert_int, fast.preempt, fast.realtime, fast.rank_priorities) == \
        ("fast", 0.1, False, True, True)
    assert fast.track_haproxy_exit and fast.explicit() == {}
    standard = VrrpSettings.model_validate({"profile": "standard"}, by_alias=True, by_name=False)
    assert (standard.advert_int, standard.preempt, standard.realtime, standard.rank_priorities) == \
        (0.5, True, False, False)
    mixed = VrrpSettings.model_validate({"profile": "fast", "advertInt": 0.2, "preempt": True}, by_alias=True,
                                        by_name=False)
    assert (mixed.advert_int, mixed.preempt, mixed.realtime) == (0.2, True, True)
    assert mixed.explicit() == {"advert_int": 0.2, "preempt": True}
    conf = render_keepalived(topo(2), topo(2).load_balancers[0], "eth0", mixed)
    assert "# VRRP profile fast (set explicitly: advert_int=0.2, preempt=True)." in conf


def test_an_unknown_profile_is_one_clear_error():
    with pytest.raises(pydantic.ValidationError) as err:
        VrrpSettings.model_validate({"profile": "turbo"}, by_alias=True, by_name=False)
    assert [e["loc"] for e in err.value.errors()] == [("profile",)]
    assert "'standard' or 'fast'" in str(err.value)


def test_ranked_priorities_keep_the_configured_order_and_ties():
    fast, standard = VrrpSettings(), VrrpSettings(profile="standard")
    assert ranked_priorities({"a": None, "b": None}, fast) == {"a": 254, "b": 254}
    assert ranked_priorities({"a": 200, "b": 100, "c": 100}, fast) == {"a": 254, "b": 234, "c": 234}
    assert ranked_priorities({"a": 5, "b": None}, fast) == {"a": 234, "b": 254}, "unset is 10, above 5"
    assert ranked_priorities({"a": 200, "b": None}, standard) == {"a": 200, "b": 10}
    many = ranked_priorities({str(p): p for p in range(1, 40)}, fast)
    assert min(many.values()) >= 1 and many["39"] == 254 and many["38"] == 234
    t = topo(3)  # priorities 40, 30, 20
    conf = render_keepalived(t, t.load_balancers[1], "eth0", fast)
    assert "    priority 234\n" in conf and "# priority 30 in the config, ranked" in conf
    assert "    priority 30\n" in render_keepalived(t, t.load_balancers[1], "eth0", standard)


def test_what_the_node_cannot_do_is_not_rendered():
    t = topo(2)
    node = t.load_balancers[0]
    vm = render_keepalived(t, node, "eth0", VrrpSettings(), features=VM)
    assert "vrrp_track_process haproxy" in vm and "track_process {" in vm and "vrrp_no_swap" in vm
    assert "vrrp_rt_priority" not in vm, "keepalived's own RT handling kills its VRRP process on a reload"
    box = render_keepalived(t, node, "eth0", VrrpSettings(), features=CONTAINER)
    assert "track_process" not in box, "process events do not reach a container: FAULT forever"
    assert "vrrp_no_swap" not in box
    assert "track_file {" in box and 'file "/run/kubitect-haproxy.down"' in box
    realtime = render_all(t, "eth0", vrrp=VrrpSettings(), features=CONTAINER)[0].files[Layout().keepalived_dropin]
    assert "CPUSchedulingPolicy=rr" in realtime and "CPUSchedulingPriority=50" in realtime
    for features in (NodeFeatures(), NodeFeatures(process_events=True, memlock=True)):
        assert Layout().keepalived_dropin not in render_all(t, "eth0", features=features)[0].files, \
            "systemd would refuse to start keepalived with a scheduling the node does not allow"
    off = render_keepalived(t, node, "eth0", VrrpSettings(track_haproxy_exit=False, realtime=False), features=VM)
    assert "track_file" not in off and "track_process" not in off and "vrrp_no_swap" not in off
    files = render_all(t, "eth0", vrrp=VrrpSettings(track_haproxy_exit=False, realtime=False), features=VM)[0].files
    assert Layout().haproxy_dropin not in files and Layout().keepalived_dropin not in files
    hook = render_all(t, "eth0")[0].files[Layout().haproxy_dropin]
    assert "ExecStopPost=/bin/sh -c 'echo 1 > /run/kubitect-haproxy.down'" in hook
    assert "ExecStartPost=/bin/sh -c 'echo 0 > /run/kubitect-haproxy.down'" in hook


def test_a_changed_global_section_restarts_keepalived_anything_else_reloads():
    t = topo(2)
    node = t.load_balancers[0]
    fast = render_keepalived(t, node, "eth0", VrrpSettings(), features=VM)
    standard = render_keepalived(t, node, "eth0", VrrpSettings(profile="standard"), features=VM)
    peers_changed = render_keepalived(topo(3), topo(3).load_balancers[0], "eth0", VrrpSettings(), features=VM)
    assert needs_restart(fast, standard), "locking in memory is set when the VRRP process starts"
    assert not needs_restart(fast, peers_changed), "a scale (new unicast peer) reloads in place"
    assert not needs_restart(None, fast)


def test_the_plugin_registers_its_load_balancer_and_config_extension():
    assert list(kubitect_load_balancers()) == ["keepalived-haproxy", "control-plane-vip"]
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


def test_plan_restarts_keepalived_for_a_new_profile_and_removes_a_hook_no_longer_wanted():
    from kubitect_plugins.keepalived_haproxy.node_ops import SYSCTL_TEXT

    t = topo(2)
    running = {"haproxy": True, "keepalived": True}
    (fast, _) = render_all(t, "eth0", vrrp=VrrpSettings(), features=VM)
    (standard, _) = render_all(t, "eth0", vrrp=VrrpSettings(profile="standard"), features=VM)
    on_node = NodeState(running, "apt", SYSCTL_TEXT, "1", dict(fast.files), running, running)
    plan = {(c.kind, c.name): c for c in planned_changes(fast.node, on_node, standard, ["haproxy", "keepalived"])}
    assert plan[("service", "keepalived")].detail == "restart"
    assert plan[("service", "haproxy")].action == "keep", "HAProxy's config did not change"
    assert plan[("file", Layout().keepalived_dropin)].action == "delete", "standard: no real-time keepalived"
    (container, _) = render_all(t, "eth0", vrrp=VrrpSettings(), features=CONTAINER)
    no_rt = {p: text for p, text in container.files.items() if p != Layout().keepalived_dropin}
    extra = {Layout().keepalived_dropin: None}
    before = NodeState(running, "apt", SYSCTL_TEXT, "1", {**no_rt, **extra}, running, running)
    (svc,) = [c for c in planned_changes(fast.node, before, container, ["haproxy", "keepalived"])
              if c.kind == "service" and c.name == "keepalived"]
    assert (svc.action, svc.detail) == ("change", "restart"), "systemd sets the scheduling when it starts it"
    (untracked, _) = render_all(t, "eth0", vrrp=VrrpSettings(track_haproxy_exit=False), features=VM)
    files = {**dict(fast.files), Layout().haproxy_dropin: fast.files[Layout().haproxy_dropin]}
    had_hook = NodeState(running, "apt", SYSCTL_TEXT, "1", files, running, running)
    gone = [c for c in planned_changes(fast.node, had_hook, untracked, ["haproxy", "keepalived"])
            if c.action == "delete"]
    assert [(c.kind, c.name) for c in gone] == [("file", Layout().haproxy_dropin)]


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
    polled = VrrpSettings(profile="standard", advert_int=1, check_interval=2, check_fall=3, track_haproxy_exit=False)
    b = expected_budget(polled, backup_priority=100, margin_s=0)
    skew = 156 / 256  # VRRPv2: (256 - priority) / 256 s
    assert b["link_cut"] == pytest.approx((3 + skew) * 1000, abs=0.1)
    assert b["keepalived_crashed"] == b["link_cut"]
    assert b["haproxy_killed"] == pytest.approx((6 + skew) * 1000, abs=0.1)
    assert b["keepalived_stopped"] == pytest.approx(skew * 1000, abs=0.1)
    v3 = expected_budget(VrrpSettings(profile="standard"), backup_priority=100, margin_s=0.5)
    assert v3["link_cut"] == pytest.approx((1.5 + 156 / 256 * 0.5 + 0.5) * 1000, abs=0.1)


def test_budgets_of_the_fast_profile_follow_its_timers_and_exit_events():
    fast = VrrpSettings()
    b = expected_budget(fast, backup_priority=254, margin_s=0)
    skew = 2 / 256 * 0.1
    assert b["link_cut"] == pytest.approx((0.3 + skew) * 1000, abs=0.1)
    assert b["keepalived_stopped"] == pytest.approx(skew * 1000, abs=0.1)
    assert b["haproxy_killed"] == pytest.approx((EXIT_NOTICE_S + skew) * 1000, abs=0.1)
    polled = expected_budget(fast, backup_priority=254, margin_s=0, exit_events=False)
    assert polled["haproxy_killed"] == pytest.approx((1 * 3 + skew) * 1000, abs=0.1), "interval 1 x fall 3"


@pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("keepalived") is None,
                    reason="haproxy and keepalived binaries are not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_real_validators_accept_the_rendered_configs(case, tmp_path):
    topology, ports, vrrp, features = CASES[case]
    layout = Layout(check_script=str(tmp_path / "check_haproxy.sh"), stats_socket=str(tmp_path / "admin.sock"))
    for r in render_all(topology, "eth0", ports, vrrp, layout, features):
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
