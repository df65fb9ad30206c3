"""The generated reference pages cover the code: every config field and every command and option.

The pages are generated at build time (scripts/gen_docs.py, a MkDocs hook), so there is no
committed copy to go stale; these tests check that what is generated is complete and correct.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import TypeAdapter

from kubitect_core.config import load_config

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tree(gen_docs):
    return gen_docs.config_fields()


@pytest.fixture(scope="module")
def config_page(gen_docs, tree):
    return gen_docs.config_reference(tree)


@pytest.fixture(scope="module")
def commands(gen_docs):
    return gen_docs.cli_commands()


@pytest.fixture(scope="module")
def cli_page(gen_docs, commands):
    return gen_docs.cli_reference(commands)


def _sections(page: str, level: str) -> dict[str, str]:
    """Heading text (inside backticks) -> the Markdown up to the next heading of any level <= 4."""
    parts = re.split(r"^(#{2,4} `[^`]+`.*)$", page, flags=re.M)
    out = {}
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        if head.startswith(level + " ") or level == "*":
            out[re.search(r"`([^`]+)`", head).group(1)] = body
    return out


def test_every_config_field_has_its_own_section(gen_docs, tree, config_page):
    sections = _sections(config_page, "###")
    for f in gen_docs.walk(tree):
        assert f.path in sections, f"{f.path} is missing from the config reference"
        body = sections[f.path]
        assert (f.info.description or "").split()[0] in body
        assert re.search(r"^\| .+ \| .+ \|$", body, flags=re.M), f"{f.path}: no type/default row"


def test_extension_fields_are_marked_with_their_plugin(config_page):
    sections = _sections(config_page, "###")
    body = sections["cluster.nodes.loadBalancer.vrrp.advertInt"]
    assert "Added by the `keepalived-haproxy` plugin" in body
    assert "`0.1` (from the profile)" in body  # the fast profile's default, not "required"
    assert "number, 0.01-255" in body
    assert "Added by" not in sections["cluster.nodes.loadBalancer.vip"]


def test_types_and_defaults_read_as_the_models_say(config_page):
    sections = _sections(config_page, "###")
    expect = {
        "hosts[].connection.ssh.port": ("integer, 1-65535", "`22`"),
        "cluster.network.mode": ("one of `nat`, `route`, `bridge`", "`nat`"),
        "cluster.network.cidr": ("IPv4 network (CIDR)", "required"),
        "cluster.nodes.master.instances[].id": ("string or integer", "required"),
        "cluster.nodes.worker.default.taints": ("list of taint", "`[]`"),
        "cluster.nodes.loadBalancer.instances[].priority": ("integer, 0-255", "`10`"),
        "cluster.nodes.master.instances[].cpu": ("integer, at least 1", "unset"),
        "addons.kubespray": ("map of string to any value", "unset"),
    }
    for path, (type_text, default) in expect.items():
        row = next(line for line in sections[path].splitlines() if line.startswith("| ") and "Type" not in line)
        assert type_text in row and default in row, (path, row)


def test_every_field_has_an_example_at_its_full_path(gen_docs, tree, config_page):
    sections = _sections(config_page, "###")
    docs = gen_docs._load_examples()
    for f in gen_docs.walk(tree):
        assert gen_docs.example_value(f, docs) is not None, f"{f.path}: no example (add one to EXTRA_EXAMPLES)"
        body = sections[f.path]
        assert "```yaml" in body
        yaml_text = body.split("```yaml\n", 1)[1].split("```", 1)[0]
        top = f.path.split(".")[0].removesuffix("[]")
        assert yaml_text.startswith(f"{top}:"), f"{f.path}: the example is not placed at its full path"


def test_hand_written_examples_are_valid_values_of_their_fields(gen_docs, tree):
    """EXTRA_EXAMPLES (for fields no shipped config sets) must pass the field's own validation."""
    fields, items = {}, {}
    for f in gen_docs.walk(tree):
        fields[f.path] = f
        if f.item_path != f.path:
            items[f.item_path] = f
    for path, value in gen_docs.EXTRA_EXAMPLES.items():
        if path in items:  # one item of a list of objects: the item's model
            adapter = TypeAdapter(gen_docs._sub_model(items[path].info.annotation))
        else:
            assert path in fields, f"EXTRA_EXAMPLES names {path}, which is no config field"
            info = fields[path].info
            adapter = TypeAdapter(Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation)
        adapter.validate_python(value)


def test_the_examples_come_from_configs_that_validate():
    for name in ("full.yaml", "ha.yaml", "lab-nspawn.yaml"):
        assert load_config(REPO / "examples" / name).topology.nodes


def test_every_visible_command_and_option_is_in_the_cli_reference(commands, cli_page):
    sections = _sections(cli_page, "*")
    names = [c.name for c in commands]
    for must in ("kubitect apply", "kubitect export logs", "kubitect lab up", "kubitect image import",
                 "kubitect status", "kubitect schema"):
        assert must in names
    for entry in commands:
        assert entry.name in sections, f"{entry.name} is missing from the CLI reference"
        body = sections[entry.name]
        for param in entry.command.params:
            if getattr(param, "hidden", False):
                continue
            if type(param).__name__.endswith("Argument"):
                assert f"`{param.metavar or param.name.upper()}`" in body, (entry.name, param.name)
            else:
                for opt in param.opts:
                    assert f"`{opt}`" in body, f"{entry.name}: option {opt} is not documented"
        if not entry.children:
            assert "```sh" in body, f"{entry.name}: no example (add 'Example: ...' to its help or epilog)"


def test_hidden_aliases_are_named_not_repeated(commands, cli_page):
    sections = _sections(cli_page, "*")
    assert "kubitect ls" not in sections
    assert "Also: `kubitect ls`" in sections["kubitect list"]
    assert "Also: `kubitect list preset`" in sections["kubitect list presets"]  # Kubitect's singular
    assert "kubitect list preset" not in sections


def test_the_cli_walk_sees_a_new_command(gen_docs):
    """A command added anywhere in the tree shows up in the reference, with its options."""
    import typer

    demo = typer.Typer()

    @demo.command("first", epilog="Example: demo first --flag")
    def first(flag: bool = typer.Option(False, "--flag", help="A flag.")) -> None:
        """Do the first thing."""

    @demo.command("second")
    def second() -> None:
        """Do the second thing."""

    page = gen_docs.cli_reference(gen_docs.cli_commands(demo))
    assert "`--flag`" in page and "Do the first thing." in page
    assert "demo first --flag" in page


def test_optional_links_list_existing_pages_or_fall_back(gen_docs, tmp_path):
    (tmp_path / "day2").mkdir()
    (tmp_path / "day2" / "scale.md").write_text("# Scaling a cluster\n")
    page = ("<!-- kubitect:pages day2/ -->\n"
            "<!-- kubitect:pages day2/upgrade.md | Upgrades are not done yet. -->\n"
            "<!-- kubitect:pages failover.md -->\n")
    out = gen_docs.optional_links(page, tmp_path, "day2.md")
    assert out.splitlines() == ["- [Scaling a cluster](day2/scale.md)", "Upgrades are not done yet.", ""]
    nested = gen_docs.optional_links("<!-- kubitect:pages day2/scale.md -->", tmp_path, "guides/x.md")
    assert nested == "- [Scaling a cluster](../day2/scale.md)"
