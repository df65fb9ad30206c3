"""Guard rails of the VRRP profiles: where short timers would flap, the user is told.

From the config (validation warnings with the YAML line): load balancers that share a host. From
the node (what node_probe.sh reports): real-time scheduling refused, an overcommitted VM, a node
that swaps and cannot lock keepalived in memory; and how HAProxy's exit is tracked there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubitect_plugins.keepalived_haproxy.guard import (
    NodeProbe,
    config_warnings,
    node_notes,
    node_warnings,
    parse_probe,
)
from kubitect_plugins.keepalived_haproxy.render import NodeFeatures
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings

from kubitect_core.topology import Node, Topology

SEED = Path(__file__).parents[2] / "examples" / "ha.yaml"
PROBE = Path(__file__).parents[2] / "plugins" / "keepalived_haproxy" / "node_probe.sh"


def _topology(hosts: list[str | None]) -> Topology:
    nodes = tuple(Node(role="lb", id=str(i + 1), name=f"lb-{i + 1}", host=h, ip=f"10.0.0.{i + 11}", mac=None,
                       cpu=1, ram_gib=1, main_disk_gib=8) for i, h in enumerate(hosts))
    return Topology(cluster="c", nodes=nodes, vip="10.0.0.100", endpoint="10.0.0.100", virtual_router_id=5)


def test_short_timers_warn_when_load_balancers_share_a_host():
    (warning,) = config_warnings(VrrpSettings(), _topology(["h1", "h1"]))
    loc, message = warning
    assert loc == ("cluster", "nodes", "loadBalancer", "vrrp")
    assert "lb-1, lb-2 on h1" in message and "0.3 s" in message and "profile: standard" in message
    assert config_warnings(VrrpSettings(), _topology(["h1", "h2"])) == []
    assert config_warnings(VrrpSettings(profile="standard"), _topology(["h1", "h1"])) == [], \
        "1.5 s of missed adverts is the tolerant profile: no warning"
    assert config_warnings(VrrpSettings(), _topology(["h1"])) == [], "one load balancer cannot flap"


def test_masters_holding_the_vip_that_share_a_host_are_warned_about_too():
    """control-plane-vip (no load balancer instances): the masters hold the VIP, so the same rail."""
    masters = tuple(Node(role="master", id=str(i + 1), name=f"master-{i + 1}", host=h, ip=f"10.0.0.{i + 21}",
                         mac=None, cpu=2, ram_gib=2, main_disk_gib=8) for i, h in enumerate(["h1", "h1", "h2"]))
    topo = Topology(cluster="c", nodes=masters, vip="10.0.0.100", endpoint="10.0.0.100", virtual_router_id=5)
    (warning,) = config_warnings(VrrpSettings(), topo)
    assert "masters (they hold the VIP" in warning[1] and "master-1, master-2 on h1" in warning[1]
    assert "cluster.nodes.master.instances[].host" in warning[1]
    no_vip = Topology(cluster="c", nodes=masters, vip=None, endpoint="10.0.0.21", virtual_router_id=None)
    assert config_warnings(VrrpSettings(), no_vip) == []


def _load(text: str, tmp_path: Path):
    from kubitect_core.config import load_config
    from kubitect_core.engine import validation_context
    from kubitect_core.plugins import load_registry

    path = tmp_path / "ha.yaml"
    path.write_text(text)
    return load_config(path, context=validation_context(load_registry()))


def test_the_seed_validates_without_a_placement_warning(tmp_path):
    loaded = _load(SEED.read_text(), tmp_path)
    assert loaded.extensions["cluster.nodes.loadBalancer.vrrp"].profile == "fast"
    assert not [w for w in loaded.warnings if "vrrp" in w.path], loaded.warnings


def test_both_load_balancers_on_one_host_is_a_warning_with_the_yaml_line(tmp_path):
    text = SEED.read_text().replace("          ip: 10.10.13.202\n          host: host2\n",
                                    "          ip: 10.10.13.202\n          host: host1\n")
    assert "host: host1\n" in text.split("loadBalancer:")[1].split("master:")[0]
    (warning,) = [w for w in _load(text, tmp_path).warnings if "vrrp" in w.path]
    assert warning.severity == "warning" and warning.line is not None
    assert "share a host" in warning.message and "on host1" in warning.message
    with_standard = text.replace("      vip: 10.10.13.200\n", "      vip: 10.10.13.200\n      vrrp:\n"
                                                              "        profile: standard\n")
    assert not [w for w in _load(with_standard, tmp_path).warnings if "vrrp" in w.path]


def _probe(**kw) -> NodeProbe:
    features = {k: kw.pop(k) for k in ("process_events", "realtime", "memlock") if k in kw}
    return NodeProbe(NodeFeatures(**features), **kw)


def test_node_warnings_name_what_the_node_lacks():
    fast = VrrpSettings()
    assert node_warnings(fast, _probe(process_events=True, realtime=True, memlock=True)) == []
    (rt,) = node_warnings(fast, _probe(realtime=False))
    assert "cannot run keepalived with real-time scheduling" in rt and "0.3 s" in rt
    assert node_warnings(VrrpSettings(profile="standard"), _probe(realtime=False)) == [], "standard asks no RT"
    (swap,) = node_warnings(fast, _probe(realtime=True, memlock=False, swap_devices=1))
    assert "swaps" in swap
    (steal,) = node_warnings(fast, _probe(realtime=True, memlock=True, steal_permille=85))
    assert "8.5 %" in steal and "overcommitted" in steal
    assert node_warnings(VrrpSettings(profile="standard"), _probe(realtime=True, steal_permille=85)) == []


def test_an_emulated_vm_is_warned_about_short_timers_since_it_reports_no_steal():
    fast = VrrpSettings()
    (tcg,) = node_warnings(fast, _probe(realtime=True, memlock=True, virt="qemu"))
    assert "emulated" in tcg and "0.3 s" in tcg and "profile: standard" in tcg
    assert node_warnings(fast, _probe(realtime=True, memlock=True, virt="kvm")) == [], "KVM guests are not emulated"
    assert node_warnings(VrrpSettings(profile="standard"), _probe(realtime=True, virt="qemu")) == []


def test_node_notes_say_how_haproxy_exit_is_tracked():
    assert "kernel process events" in node_notes(VrrpSettings(), _probe(process_events=True))[0]
    (note,) = node_notes(VrrpSettings(), _probe(process_events=False, process_events_error="Connection refused"))
    assert "systemd" in note and "Connection refused" in note
    assert node_notes(VrrpSettings(track_haproxy_exit=False), _probe()) == []


def test_probe_output_is_parsed_and_garbage_ignored():
    p = parse_probe("virt=kvm\ncontainer=none\nprocess_events=1\nrealtime=0\nmemlock=1\nsteal_permille=12\n"
                    "swap_devices=2\ncpus=4\nnoise\nprocess_events_error=Connection_refused\n")
    assert p.features == NodeFeatures(process_events=True, realtime=False, memlock=True)
    assert (p.virt, p.steal_permille, p.swap_devices, p.cpus) == ("kvm", 12, 2, 4)
    assert p.process_events_error == "Connection refused"
    assert parse_probe("steal_permille=x\n").steal_permille == 0


@pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
                    reason="the probe reads root's capabilities and asks the kernel as root")
def test_the_probe_script_runs_here_and_reports_every_key():
    out = subprocess.run(["sh", str(PROBE)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    keys = {line.split("=", 1)[0] for line in out.stdout.splitlines() if "=" in line}
    assert {"virt", "container", "process_events", "realtime", "memlock", "steal_permille", "swap_devices",
            "cpus"} <= keys
    parsed = parse_probe(out.stdout)
    assert parsed.cpus >= 1
