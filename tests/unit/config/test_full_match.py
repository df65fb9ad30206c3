"""Every checked value must match as a whole: a trailing newline is never accepted.

`re.match(r"^...$", value)` accepts "gold\\n" (`$` also matches before a final newline); such a
value then reaches a unit file or a command line. These tests try it on every value a config
holds, on the plugins' own patterns, and scan the sources so the mistake cannot come back.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.kubeadm import api as kubeadm_api
from pydantic import BaseModel, ValidationError

from kubitect_core.config import ConfigError, validate_raw

REPO = Path(__file__).resolve().parents[3]
FULL = REPO / "examples" / "full.yaml"


def _string_leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _string_leaves(value, (*path, i))
    elif isinstance(node, str | int) and not isinstance(node, bool):
        yield path


def _set(data, path, value):
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


FULL_RAW = yaml.safe_load(FULL.read_text())
LEAVES = [p for p in _string_leaves(FULL_RAW) if p[:2] != ("addons", "kubespray")]  # kept verbatim, not applied


def test_the_full_example_covers_the_checked_fields():
    validate_raw(FULL_RAW)  # the starting point is valid
    assert len(LEAVES) >= 60


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(map(str, p)) for p in LEAVES])
def test_a_trailing_newline_is_refused_at_every_config_value(path):
    data = copy.deepcopy(FULL_RAW)
    value = data
    for part in path:
        value = value[part]
    _set(data, path, f"{value}\n")
    with pytest.raises(ConfigError) as info:
        validate_raw(data)
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    assert any(dotted.startswith(i.path) or i.path.startswith(dotted) for i in info.value.issues), \
        f"{dotted}: {info.value}"


def test_label_keys_with_a_trailing_newline_are_refused():
    data = copy.deepcopy(FULL_RAW)
    data["cluster"]["nodes"]["worker"]["instances"][0]["labels"] = {"tier\n": "gold"}
    with pytest.raises(ConfigError, match="not a valid Kubernetes label key"):
        validate_raw(data)


class _Token(BaseModel):
    token: kubeadm_api.BootstrapToken


@pytest.mark.parametrize("model,field,good", [
    (kubeadm_api.BootstrapToken, "token", "abcdef.0123456789abcdef"),
    (kubeadm_api.JoinControlPlane, "certificateKey", "a" * 64),
])
def test_plugin_patterns_refuse_a_trailing_newline(model, field, good):
    fields = {name: f for name, f in model.model_fields.items()}
    base = {name: "x" for name, f in fields.items() if f.is_required() and name != field}
    model.model_validate({**base, field: good})
    with pytest.raises(ValidationError):
        model.model_validate({**base, field: good + "\n"})


def test_k3s_arguments_refuse_a_trailing_newline():
    from kubitect_plugins.k3s import args as k3s_args

    assert k3s_args._checked(["--node-label=tier=gold"])
    with pytest.raises(Exception, match="systemd unit"):
        k3s_args._checked(["--node-label=tier=gold\n"])


def test_libvirt_ownership_pattern_is_a_full_match():
    from kubitect_plugins.libvirt import ownership

    source = Path(ownership.__file__).read_text()
    assert "data_re.fullmatch(" in source


# `^` or `$` anchors in a Python pattern that is then used with match()/search(): the bug above.
_ANCHORED_MATCH = re.compile(r"""re\.(match|search)\(\s*r?["'][^"']*\$["']""")
_ANCHORED_COMPILE = re.compile(r"""(\w+)\s*=\s*re\.compile\(\s*r?f?["']\^[^"']*\$["']""")


@pytest.mark.parametrize("tree", ["kubitect_core", "plugins", "stages", "conformance"])
def test_no_anchored_pattern_is_used_with_match(tree):
    offenders = []
    for path in sorted((REPO / tree).rglob("*.py")):
        source = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in _ANCHORED_MATCH.finditer(source)]
        for m in _ANCHORED_COMPILE.finditer(source):
            if re.search(rf"\b{m.group(1)}\.(match|search)\(", source):
                offenders.append(f"{path.relative_to(REPO)}: {m.group(1)} (anchored, used with match/search)")
    assert not offenders, "use fullmatch() without ^/$ instead:\n" + "\n".join(offenders)
