"""`kubitect topology`: the picture, tree and JSON a user gets from a config, with no host contacted.

The seed (examples/ha.yaml: 5 hosts, 8 nodes), the presets and larger generated configs go
through the real loader; hostile names go straight into the view, since the config's own
validation would (rightly) stop most of them before the picture is drawn.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import list_presets, load_config, load_config_text, preset_text
from kubitect_core.topology_view import build_tree, build_view, compute_layout, render_svg
from kubitect_core.topology_view.layout import MAX_WIDTH

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "examples" / "ha.yaml"
SVG = "{http://www.w3.org/2000/svg}"
BUILTIN = {"cpu": 2, "ram": 4, "mainDiskSize": 32}


# ---------------------------------------------------------------- helpers
def visible_text(root: ET.Element) -> list[str]:
    """The text a viewer sees: every <text> with its <tspan>s, without the <title> tooltips."""
    lines = []
    for el in root.iter(f"{SVG}text"):
        parts = [el.text or ""]
        for child in el:
            if child.tag == f"{SVG}tspan":
                parts.append(child.text or "")
        lines.append("".join(parts))
    return lines


def nodes_in(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("data-node")}


def generated_config(hosts: int, workers: int, *, name: str = "big", vip: bool = True, dhcp_every: int = 4) -> str:
    """A valid config with `hosts` remote hosts, one LB and one master per host (up to three), and
    `workers` workers spread round-robin, every `dhcp_every`-th without an address."""
    host_yaml = "".join(f"""
  - name: rack-{i}
    connection: {{type: remote, user: ops, ip: 10.0.0.{10 + i}, ssh: {{keyfile: ~/.ssh/id}}}}
    dataResourcePools: [{{name: ssd, path: /mnt/ssd/}}]""" for i in range(1, hosts + 1))
    per_role = min(3, hosts)
    lbs = "".join(f"\n        - {{id: {i}, host: rack-{i}, ip: 192.168.200.{10 + i}}}" for i in range(1, per_role + 1))
    masters = "".join(f"\n        - {{id: {i}, host: rack-{i}, ip: 192.168.200.{20 + i}}}"
                      for i in range(1, per_role + 1))
    worker_list = "".join(
        f"\n        - {{id: w{i}, host: rack-{(i - 1) % hosts + 1}"
        + ("}" if i % dhcp_every == 0 else f", ip: 192.168.200.{100 + i}}}") for i in range(1, workers + 1))
    vip_line = "\n      vip: 192.168.200.5" if vip else ""
    return f"""hosts:{host_yaml}
cluster:
  name: {name}
  network: {{mode: nat, cidr: 192.168.200.0/24}}
  nodes:
    loadBalancer:{vip_line}
      instances:{lbs}
    master:
      instances:{masters}
    worker:
      default: {{cpu: 8, ram: 16, dataDisks: [{{name: osd, pool: ssd, size: 200}}]}}
      instances:{worker_list}
"""


def expected_totals(raw: dict) -> dict[str, dict]:
    """Per-host totals computed straight from the YAML, independently of the loader's resolution:
    instance value, else the role default, else the built-in default."""
    nodes = raw["cluster"]["nodes"]
    default_host = next((h["name"] for h in raw["hosts"] if h.get("default")), raw["hosts"][0]["name"])
    out = {h["name"]: {"cpu": 0, "ram_gib": 0, "disk_gib": {}} for h in raw["hosts"]}
    for role in ("loadBalancer", "master", "worker"):
        section = nodes.get(role) or {}
        default = section.get("default") or {}
        for inst in section.get("instances") or []:
            t = out[inst.get("host", default_host)]
            value = {k: inst.get(k, default.get(k, BUILTIN[k])) for k in BUILTIN}
            t["cpu"] += value["cpu"]
            t["ram_gib"] += value["ram"]
            t["disk_gib"]["main"] = t["disk_gib"].get("main", 0) + value["mainDiskSize"]
            for d in [*(default.get("dataDisks") or []), *(inst.get("dataDisks") or [])]:
                pool = d.get("pool", "main")
                t["disk_gib"][pool] = t["disk_gib"].get(pool, 0) + d["size"]
    return out


@pytest.fixture(scope="module")
def seed_view():
    return build_view(load_config(HA))


@pytest.fixture(scope="module")
def seed_svg(seed_view):
    return ET.fromstring(render_svg(seed_view).encode())


@pytest.fixture
def run():
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return lambda *args: runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- the seed's picture
def test_seed_svg_is_well_formed_and_sized_as_laid_out(seed_view):
    text = render_svg(seed_view)
    root = ET.fromstring(text.encode())  # raises on anything not well-formed
    assert root.tag == f"{SVG}svg"
    lay = compute_layout(seed_view)
    assert (root.get("width"), root.get("height")) == (str(lay.width), str(lay.height))
    assert root.get("viewBox") == f"0 0 {lay.width} {lay.height}"
    assert render_svg(seed_view) == text  # deterministic: the same config draws the same bytes


def test_seed_svg_shows_every_host_node_address_vip_and_disk(seed_svg):
    seen = "\n".join(visible_text(seed_svg))
    raw = yaml.safe_load(HA.read_text())
    for host in raw["hosts"]:
        assert host["name"] in seen
        assert f"remote kubitect@{host['connection']['ip']} · libvirt" in seen
    cards = nodes_in(seed_svg)
    for role, key in (("lb", "loadBalancer"), ("master", "master"), ("worker", "worker")):
        for inst in raw["cluster"]["nodes"][key]["instances"]:
            name = f"kubitect-ha-{role}-{inst['id']}"
            card = "\n".join(visible_text(cards[name]))
            assert name in card and inst["ip"] in card
            assert cards[name].get("data-role") == role
            for disk in inst.get("dataDisks", []):
                assert f"{disk['name']} · {disk['size']} GiB · pool {disk['pool']}" in card
    assert "VIP 10.10.13.200" in seen
    assert "network bridge br0 · 10.10.0.0/20 · gateway 10.10.0.1" in seen
    assert "…" not in seen  # nothing of the seed had to be shortened to fit


def test_seed_roles_are_visually_distinct_and_the_vip_reaches_each_lb(seed_view, seed_svg):
    fills = {}
    for g in nodes_in(seed_svg).values():
        rect = g.find(f"{SVG}rect")
        fills.setdefault(g.get("data-role"), set()).add((rect.get("fill"), rect.get("stroke")))
    assert all(len(colours) == 1 for colours in fills.values())  # one look per role...
    assert len({next(iter(c)) for c in fills.values()}) == 3  # ...and three different looks
    lay = compute_layout(seed_view)
    lbs = {n.name for n in seed_view.load_balancers}
    assert set(lay.vip_anchors) == lbs
    for card in lay.cards:
        if card.node.name in lbs:
            x, y = lay.vip_anchors[card.node.name]
            assert card.box.x <= x <= card.box.right and card.box.y <= y <= card.box.bottom
    assert seed_svg.find(f".//{SVG}path[@data-role='vip']") is not None


def test_seed_totals_per_host_and_for_the_cluster(seed_view, seed_svg):
    hosts = {h.name: h.totals for h in seed_view.hosts}
    assert hosts["host1"].to_dict() == {"nodes": 1, "cpu": 2, "ram_gib": 4, "disk_gib": {"main": 32},
                                        "disk_gib_total": 32}
    assert hosts["host3"].to_dict() == {"nodes": 2, "cpu": 4, "ram_gib": 8,
                                        "disk_gib": {"main": 64, "data-pool": 512}, "disk_gib_total": 576}
    assert seed_view.totals.to_dict() == {"nodes": 8, "cpu": 16, "ram_gib": 32,
                                          "disk_gib": {"main": 256, "data-pool": 1536}, "disk_gib_total": 1792}
    host3 = next(g for g in seed_svg.iter(f"{SVG}g") if g.get("class") == "host-info" and g.get("data-host") == "host3")
    text = visible_text(host3)
    assert "Σ 2 nodes · 4 vCPU · 8 GiB RAM" in text
    assert "disk main 64 GiB · data-pool 512 GiB" in text
    assert "Total: 8 nodes · 16 vCPU · 32 GiB RAM · disk main 256 GiB · data-pool 1536 GiB" in visible_text(seed_svg)


@pytest.mark.parametrize("source", ["examples/ha.yaml", "examples/full.yaml", *[f"preset:{p}" for p in list_presets()],
                                    "generated"])
def test_totals_match_the_yaml_summed_by_hand(source):
    if source.startswith("preset:"):
        text = preset_text(source.split(":", 1)[1])
    elif source == "generated":
        text = generated_config(3, 27)
    else:
        text = (REPO / source).read_text()
    view = build_view(load_config_text(text, source))
    expected = expected_totals(yaml.safe_load(text))
    for host in view.hosts:
        got = host.totals.to_dict()
        assert {k: got[k] for k in ("cpu", "ram_gib", "disk_gib")} == expected[host.name], host.name
    assert view.totals.cpu == sum(t["cpu"] for t in expected.values())
    assert sorted(n.name for n in view.nodes) == sorted(n.name for n in load_config_text(text, source).topology.nodes)


# ---------------------------------------------------------------- other sizes: readable and wrapped
def _assert_tidy(view):
    lay = compute_layout(view)
    boxes = [h.box for h in lay.hosts]
    for i, a in enumerate(boxes):
        assert all(not a.overlaps(b) for b in boxes[i + 1:])
    for place in lay.hosts:
        for card in place.cards:
            b = card.box
            assert place.box.x < b.x and b.right < place.box.right and place.box.y < b.y and b.bottom < place.box.bottom
        cards = [c.box for c in place.cards]
        for i, a in enumerate(cards):
            assert all(not a.overlaps(b) for b in cards[i + 1:])
    assert sum(len(h.cards) for h in lay.hosts) == len(view.nodes)
    assert all(MAX_WIDTH >= h.box.right for h in lay.hosts)
    return lay


def test_seed_fits_one_row(seed_view):
    lay = _assert_tidy(seed_view)
    assert len(lay.rows) == 1 and lay.width <= MAX_WIDTH


def test_thirty_nodes_on_three_hosts_stay_side_by_side_and_legible():
    view = build_view(load_config_text(generated_config(3, 24), "thirty"))
    assert len(view.nodes) == 30
    lay = _assert_tidy(view)
    assert len(lay.rows) == 1
    root = ET.fromstring(render_svg(view, lay).encode())
    seen = visible_text(root)
    assert "…" not in "".join(seen)
    assert sum(1 for t in seen if t == "DHCP") == 6  # w4, w8, ... w24 have no address
    assert set(nodes_in(root)) == {n.name for n in view.nodes}


def test_many_hosts_wrap_into_balanced_rows_and_the_vip_reaches_lower_rows():
    view = build_view(load_config_text(generated_config(12, 10), "wide"))
    lay = _assert_tidy(view)
    assert len(lay.rows) >= 2
    counts = [sum(1 for h in lay.hosts if h.row == r) for r in range(len(lay.rows))]
    assert max(counts) - min(counts) <= 1
    assert set(lay.vip_anchors) == {n.name for n in view.load_balancers}


def test_one_host_with_thirty_nodes_uses_a_grid_not_a_tower():
    view = build_view(load_config_text(generated_config(1, 29, vip=False), "solo"))
    lay = _assert_tidy(view)
    assert 0.6 < lay.width / lay.height < 3


def test_one_host_preset_is_narrow_and_shows_the_endpoint_without_vip():
    view = build_view(load_config_text(preset_text("getting-started"), "getting-started"))
    lay = _assert_tidy(view)
    assert lay.width < 800  # the legend and badges stack instead of stretching the picture
    seen = "\n".join(visible_text(ET.fromstring(render_svg(view).encode())))
    assert "API endpoint 192.168.113.10:6443 (no VIP)" in seen and "VIP (VRRP)" not in seen
    assert not lay.vip_lines


def test_dhcp_nodes_show_dhcp():
    view = build_view(load_config_text(preset_text("example-multi-worker"), "multi-worker"))
    card = nodes_in(ET.fromstring(render_svg(view).encode()))["k8s-cluster-worker-99"]
    assert "DHCP" in visible_text(card)


# ---------------------------------------------------------------- hostile strings
HOSTILE = "<script>alert(1)</script>&amp;\"quoted\" 'single' ]]> \x00\x1b[31m \u202eevil"


def test_hostile_names_are_escaped_in_the_svg(seed_view):
    node = seed_view.nodes[0]
    evil_node = dataclasses.replace(node, name=f"lb-{HOSTILE}", data_disks=(
        dataclasses.replace(seed_view.nodes[-1].data_disks[0], name=f"d{HOSTILE}", pool=f"p{HOSTILE}"),))
    evil_host = dataclasses.replace(seed_view.hosts[0], name=f"h{HOSTILE}", nodes=(evil_node,),
                                    user=HOSTILE, pools=(dataclasses.replace(seed_view.hosts[0].pools[0],
                                                                             path=f"/x/{HOSTILE}"),))
    view = dataclasses.replace(seed_view, cluster=f"c{HOSTILE}", hosts=(evil_host, *seed_view.hosts[1:]),
                               nodes=(evil_node, *seed_view.nodes[1:]),
                               network=dataclasses.replace(seed_view.network, bridge=HOSTILE))
    text = render_svg(view)
    root = ET.fromstring(text.encode())  # well-formed despite NUL, ESC and markup in names
    assert not any(el.tag.endswith("script") for el in root.iter())
    assert "<script>" not in text and "\x00" not in text and "\x1b" not in text
    everything = "".join(root.itertext())
    safe = HOSTILE.replace("\x00", "\ufffd").replace("\x1b", "\ufffd")
    assert f"c{safe}" in everything  # the name survives, made safe, in the title and the tooltips
    seen = "\n".join(visible_text(root))
    assert f"h{safe[:8]}" in seen and "lb-<script>" in seen
    cards = nodes_in(root)
    assert f"lb-{safe}" in cards  # the data attribute round-trips exactly


def test_hostile_pool_path_from_a_valid_config(tmp_path):
    """The one free-text field that reaches the picture through validation: a pool path.

    (Control characters are refused by validation itself; the view's own replacement of them is
    tested on hand-built views.)"""
    raw = yaml.safe_load(HA.read_text())
    raw["hosts"][2]["dataResourcePools"][0]["path"] = '/mnt/<p>&"x"/'
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    text = render_svg(build_view(load_config(path)))
    root = ET.fromstring(text.encode())
    tooltips = [t.text for t in root.iter(f"{SVG}title") if t.text and t.text.startswith("pools on host3")]
    assert tooltips == ['pools on host3: main: /var/lib/libvirt/images/; data-pool: /mnt/<p>&"x"/']


def test_tree_prints_markup_in_names_literally(seed_view):
    evil = dataclasses.replace(seed_view.nodes[0], name="lb-[bold red]x[/]")
    host = dataclasses.replace(seed_view.hosts[0], nodes=(evil,))
    view = dataclasses.replace(seed_view, hosts=(host, *seed_view.hosts[1:]))
    console = Console(record=True, width=200, color_system=None)
    console.print(build_tree(view))
    assert "lb-[bold red]x[/]" in console.export_text()


# ---------------------------------------------------------------- the terminal tree
def test_tree_of_the_seed(seed_view):
    console = Console(record=True, width=200, color_system=None)
    console.print(build_tree(seed_view))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    text = "\n".join(lines)
    assert lines[0] == "cluster kubitect-ha  kubernetes v1.28.6 · kubeadm · calico"
    assert "network bridge br0 · 10.10.0.0/20 · gateway 10.10.0.1" in text
    assert "VIP 10.10.13.200" in text and "kubitect-ha-lb-1, kubitect-ha-lb-2" in text
    host3 = lines.index(next(line for line in lines if "host host3" in line))
    assert "2 nodes · 4 vCPU · 8 GiB RAM · disk main 64 GiB · data-pool 512 GiB" in lines[host3 + 1]
    assert "master kubitect-ha-master-1  10.10.13.10" in lines[host3 + 2]
    assert "worker kubitect-ha-worker-1  10.10.13.20" in lines[host3 + 3]
    assert "disk rook  512 GiB in pool data-pool" in lines[host3 + 4]
    assert lines[-1].endswith("total 8 nodes (2 load balancers, 3 masters, 3 workers) on 5 hosts · 16 vCPU · "
                              "32 GiB RAM · disk main 256 GiB · data-pool 1536 GiB")


# ---------------------------------------------------------------- the command
def test_cli_prints_the_tree_by_default_from_a_positional_or_option_config(run):
    for args in (["topology", HA], ["topology", "--config", HA]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("cluster kubitect-ha")
        assert "kubitect-ha-worker-3  10.10.13.22" in result.stdout


def test_cli_json_and_yaml_carry_the_same_data(run, seed_view):
    as_json = run("topology", HA, "-o", "json")
    as_yaml = run("topology", HA, "--output", "yaml")
    assert as_json.exit_code == as_yaml.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data == yaml.safe_load(as_yaml.stdout) == json.loads(json.dumps(seed_view.to_dict()))
    assert [h["name"] for h in data["hosts"]] == ["host1", "host2", "host3", "host4", "host5"]
    assert data["hosts"][2]["nodes"] == ["kubitect-ha-master-1", "kubitect-ha-worker-1"]
    assert data["hosts"][2]["totals"]["disk_gib"] == {"main": 64, "data-pool": 512}
    worker = next(n for n in data["nodes"] if n["name"] == "kubitect-ha-worker-1")
    assert worker["data_disks"] == [{"name": "rook", "pool": "data-pool", "size_gib": 512}]
    assert data["vip"] == "10.10.13.200" and data["totals"]["cpu"] == 16


def test_cli_writes_svg_and_keeps_stdout_for_data(run, tmp_path):
    out = tmp_path / "ha.svg"
    result = run("topology", HA, "--svg", out, "-o", "json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # nothing but JSON on stdout
    assert f"wrote {out}" in result.stderr
    assert ET.parse(out).getroot().tag == f"{SVG}svg"
    quiet = run("topology", HA, "--svg", out)
    assert quiet.exit_code == 0 and quiet.stdout == ""  # the tree is not printed when a file is asked for


def test_cli_errors(run, tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: []\ncluster: {name: x}\n")
    result = run("topology", bad)
    assert result.exit_code == 1 and "invalid configuration file" in result.stderr and result.stdout == ""
    assert run("topology").exit_code == 2
    assert run("topology", HA, "-o", "xml").exit_code == 2
    unwritable = run("topology", HA, "--svg", tmp_path / "missing-dir" / "x.svg")
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.stderr
    monkeypatch.setenv("KUBITECT_CHROMIUM", str(tmp_path / "no-such-browser"))
    no_browser = run("topology", HA, "--png", tmp_path / "x.png")
    assert no_browser.exit_code == 1
    assert "chromium" in no_browser.stderr and "Traceback" not in no_browser.output
    assert not (tmp_path / "x.png").exists()


def test_cli_help_has_an_example(run):
    result = run("topology", "--help")
    assert result.exit_code == 0 and "Example: kubitect topology" in result.output
