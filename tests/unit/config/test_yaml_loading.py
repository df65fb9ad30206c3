"""How config YAML is read: YAML 1.2 like Kubitect's Go parser, bounded, with errors on the right line."""

from __future__ import annotations

import re
import time

import pytest
from cfgedit import SEED
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import ConfigError, load_config, load_config_text, parse_yaml, yamlmarks
from kubitect_core.config.limits import MAX_DEPTH, MAX_VALUES
from kubitect_core.config.yamlmarks import YamlProblem, parse

SEED_TEXT = SEED.read_text()
SEED_LINES = SEED_TEXT.splitlines()

# A file as a Kubitect user writes it: YAML 1.1 would read `on` as true, `010` as 8 and the
# label without a value as null; Kubitect (yaml.v3 into typed fields) reads "on", "010" and "".
KUBITECT_STYLE = """\
hosts:
  - name: on
    connection:
      type: local
cluster:
  name: k8s-cluster
  network:
    mode: nat
    cidr: 192.168.113.0/24
  nodeTemplate:
    updateOnBoot: yes
  nodes:
    master:
      instances:
        - id: 010
          host: on
    worker:
      default:
        labels:
          node-role.kubernetes.io/node:
          zone: no
      instances:
        - id: 1e3
          labels:
            rack: 0x1F
kubernetes:
  version: v1.34.2
"""


def _cli(*args):
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, [str(a) for a in args])


def test_kubitect_scalars_are_read_as_kubitect_reads_them():
    loaded = load_config_text(KUBITECT_STYLE, "k.yaml")
    cfg, topo = loaded.config, loaded.topology
    assert cfg.hosts[0].name == "on" and topo.masters[0].host == "on"
    assert [n.name for n in topo.nodes] == ["k8s-cluster-master-010", "k8s-cluster-worker-1e3"]
    assert topo.workers[0].labels == {"node-role.kubernetes.io/node": "", "zone": "no", "rack": "0x1F"}
    assert cfg.cluster.node_template.update_on_boot is True  # Go: "yes" into a bool field is true
    assert loaded.raw["hosts"][0]["name"] == "on"  # the raw data is YAML 1.2, not 1.1


def test_validate_of_a_kubitect_style_file_behaves_as_kubitect(tmp_path):
    path = tmp_path / "kubitect.yaml"
    path.write_text(KUBITECT_STYLE)
    result = _cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "1 master, 1 worker over 1 host" in result.stdout
    assert re.search(r"^on \(default\)\s+local", result.stdout, re.M)
    # the same file with a YAML 1.1 boolean where Kubitect needs an id stays an id
    result = _cli("validate", path.write_text(KUBITECT_STYLE.replace("id: 010", "id: off")) and path)
    assert result.exit_code == 0, result.output


def test_values_keep_their_text_only_where_a_text_is_wanted():
    text = SEED_TEXT.replace("  version: v1.28.6", "  version: 1.30")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "v.yaml")
    assert "(actual: 1.30)" in str(info.value)  # "1.30", as written; not the float 1.3
    data = parse_yaml("a: 010\nb: 0o10\nc: 0x10\nd: 1_000\ne: .inf\nf: ~\ng: 2024-13-45\nh: on\n", "x")
    assert data == {"a": 10, "b": 8, "c": 16, "d": "1_000", "e": float("inf"), "f": None, "g": "2024-13-45",
                    "h": "on"}


def test_a_number_with_a_leading_zero_is_refused_where_a_number_is_wanted():
    """`cpu: 010` is 8 to Kubitect (Go reads it as octal) and 10 to YAML 1.2: refused, not guessed."""
    text = SEED_TEXT.replace("          host: host3\n", "          host: host3\n          cpu: 010\n", 1)
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "z.yaml")
    [issue] = info.value.issues
    assert issue.path == "cluster.nodes.master.instances[0].cpu" and "ambiguous" in issue.message
    assert text.splitlines()[issue.line - 1].strip() == "cpu: 010"
    assert load_config_text(text.replace("cpu: 010", "cpu: 10"), "z.yaml").topology.masters[0].cpu == 10


def test_null_means_not_set_as_in_kubitect():
    text = SEED_TEXT.replace("      vip: 10.10.13.200", "      vip: 10.10.13.200\n      virtualRouterId:")
    text = text.replace("    updateOnBoot: true", "    updateOnBoot:")
    cfg = load_config_text(text, "n.yaml").config
    assert cfg.cluster.node_template.update_on_boot is True  # the default, not an error about None
    assert cfg.cluster.nodes.load_balancer.virtual_router_id is not None


def test_merge_keys_and_aliases_expand_with_the_alias_line():
    text = """\
a: &defaults {cpu: 2, ram: 4}
b:
  <<: *defaults
  ram: 8
c: [*defaults, *defaults]
"""
    marked = parse(text)
    assert marked.data == {"a": {"cpu": 2, "ram": 4}, "b": {"cpu": 2, "ram": 8},
                           "c": [{"cpu": 2, "ram": 4}, {"cpu": 2, "ram": 4}]}
    assert marked.data["c"][0] is not marked.data["c"][1]  # plain trees: nothing shared downstream
    assert marked.position(("c", 1, "cpu")) == (5, 16)  # where the alias is used
    assert marked.texts[("b", "ram")] == "8"


@pytest.mark.parametrize("text,fragment,line", [
    ("a: &a [*a]\n", "(a cycle)", 1),
    ("a: &a\n  b: *a\n", "(a cycle)", 2),
    ("a: *nope\n", "refers to no anchor", 1),
    ("x: 1\n---\ny: 2\n", "more than one YAML document", 2),
    ("? [a]\n: b\n", "mapping key must be a plain value", 1),
    ("a: !!binary aGk=\n", "unsupported tag !!binary", 1),
    ("a: !!python/object:os.system x\n", "unsupported tag", 1),
    ("a: !!set {x}\n", "unsupported tag !!set", 1),
    ("a: !!int ten\n", "!!int value must be a whole number", 1),
    ("a: b\nc: \"\\ud800\"\n", "invalid Unicode", 2),
    ("a: \"x\\0y\"\n", "control character (U+0000)", 1),
    ("a: ok\nb: \x07\n", "control character (U+0007)", 2),
    ("a:\n  <<: 5\n", "merge key", 2),
])
def test_unusable_yaml_is_refused_with_its_line(text, fragment, line):
    with pytest.raises(YamlProblem) as info:
        parse(text)
    assert fragment in info.value.message and info.value.line == line


def test_alias_bomb_is_refused_fast_and_small():
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    bomb = "\n".join(levels) + "\n"  # 9**9 values once expanded
    assert len(bomb) < 400
    started = time.monotonic()
    with pytest.raises(YamlProblem) as info:
        parse(bomb)
    assert time.monotonic() - started < 0.5
    assert f"larger than {MAX_VALUES} values" in info.value.message and info.value.line == 6  # f: 597,871


def test_expanded_aliases_within_the_limits_are_fine():
    text = "base: &b [" + ",".join(["x"] * 900) + "]\nrefs: [" + ",".join(["*b"] * 100) + "]\n"
    assert len(parse(text).data["refs"]) == 100  # 90,901 values: under the limit


@pytest.mark.parametrize("text", [
    "[" * 100000 + "]" * 100000,
    "{a: " * 5000 + "}" * 5000,
    "- " * 200000 + "x\n",
    "".join(" " * i + "a:\n" for i in range(200)),
    "a: &a " + "[" * 32 + "x" + "]" * 32 + "\nb: " + "[" * 32 + "*a" + "]" * 32 + "\n",  # 64+ once expanded
])
def test_deep_nesting_is_refused_without_crashing(text):
    started = time.monotonic()
    with pytest.raises(YamlProblem, match=f"nested more than {MAX_DEPTH} levels"):
        parse(text)
    assert time.monotonic() - started < 1.0


def test_huge_numbers_stay_text():
    marked = parse("cpu: " + "9" * 5000 + "\nram: 18446744073709551616\nmem: 18446744073709551615\n")
    assert marked.data["cpu"] == "9" * 5000 and marked.data["ram"] == "18446744073709551616"
    assert marked.data["mem"] == 2**64 - 1


def _seed_with(line_text: str, new: str) -> tuple[str, int]:
    """The seed with one line replaced, and that line's number."""
    number = SEED_LINES.index(line_text) + 1
    lines = list(SEED_LINES)
    lines[number - 1] = new
    return "\n".join(lines) + "\n", number


BROKEN = [
    ("unclosed-double-quote", '        keyfile: "~/.ssh/id_rsa_ha"', '        keyfile: "~/.ssh/id_rsa_ha', "closing"),
    ("unclosed-single-quote", "    cidr: 10.10.0.0/20", "    cidr: '10.10.0.0/20", "never closed"),
    ("key-indented-too-deep", "    updateOnBoot: true", "     updateOnBoot: true", "indented deeper"),
    ("key-indented-too-little", "    os:", "   os:", "indentation"),
    ("list-item-too-deep", "        - id: 2", "         - id: 2", "indentation"),
    ("list-item-too-shallow", "        - id: 3", "       - id: 3", "indentation"),
    ("value-dedented", "      ip: 10.10.0.6", "     ip: 10.10.0.6", "indentation"),
    ("tab-indent", "    bridge: br0", "\tbridge: br0", "tab"),
    ("missing-colon", "  name: kubitect-ha", "  name kubitect-ha", "no ':'"),
    ("unclosed-bracket", "    bridge: br0", "    bridge: [br0", "'['"),
    ("unclosed-brace", "    bridge: br0", "    bridge: {a: br0", "'{'"),
    ("dash-in-mapping", "    mode: bridge", "    - mode: bridge", "list item"),
]


@pytest.mark.parametrize("pure", [False, True], ids=["c-parser", "pure-parser"])
@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_syntax_errors_point_at_the_line_that_causes_them(case, pure):
    _name, line_text, new, fragment = case
    text, number = _seed_with(line_text, new)
    with pytest.raises(YamlProblem) as info:
        parse(text, pure=pure)
    assert info.value.line == number, info.value.message
    assert fragment in info.value.message


def test_syntax_error_through_the_cli_names_file_line_and_fix(tmp_path):
    text, number = _seed_with('        keyfile: "~/.ssh/id_rsa_ha"', '        keyfile: "~/.ssh/id_rsa_ha')
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = _cli("validate", path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{path}:{number}:" in result.output and "closing" in result.output


def test_c_and_pure_parsers_agree_on_every_example():
    assert yamlmarks.parser_kind() == "c"  # ruamel.yaml[libyaml] is a dependency: the fast path is used
    from kubitect_core.config import list_presets, preset_text

    texts = [preset_text(n) for n in list_presets()] + [SEED_TEXT, KUBITECT_STYLE]
    for text in texts:
        fast, pure = parse(text), parse(text, pure=True)
        assert (fast.data, fast.marks, fast.texts) == (pure.data, pure.marks, pure.texts)


YAML_ALPHABET = st.sampled_from(list("ab01 :-[]{},&*!|>'\"#?%@`~\n\t.\\") + ["\x00", "\ud800", "é", "<<", "on"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=120), st.lists(YAML_ALPHABET, max_size=60).map("".join)))
def test_any_text_parses_or_fails_as_yaml_problem(text):
    for pure in (False, True):
        try:
            parse(text, pure=pure)
        except YamlProblem as exc:
            assert exc.message and (exc.line is None or exc.line >= 1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_load_or_fail_as_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "c.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.issues and str(exc)
