"""Mutated seed configs never raise anything but ConfigError (no traceback for bad input)."""

from __future__ import annotations

import copy

import yaml
from cfgedit import SEED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubitect_core.config import ConfigError, parse_yaml, validate_raw

SEED_DATA = yaml.safe_load(SEED.read_text())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**40, max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "main", "host1", "10.10.13.200", "10.10.0.0/20", "br0", "v1.2", "1.99.0", "latest",
                     "remote", "local", "bridge", "nat", "kubespray", "k3s", "data-pool", "rook", "v1.34.2",
                     "52:54:00:aa:bb:cc", "~/.ssh/x.pub", "eth0.1", "0.0.0.0/0", "10.10.13.10"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(
                                ["id", "ip", "host", "name", "pool", "size", "instances", "vip"])), inner,
                                max_size=4)),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


ALL_PATHS = [p for p in _paths(SEED_DATA) if p]


def _mutate(data, path, op, value):
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = value
    elif op == "add" and isinstance(parent[key], dict):
        parent[key][str(value)[:12] or "x"] = value
    elif op == "append" and isinstance(parent[key], list):
        parent[key].append(value if not isinstance(parent[key][0], dict) or not isinstance(value, dict)
                           else {**copy.deepcopy(parent[key][0]), **value})
    else:
        parent[key] = value


mutation = st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["delete", "replace", "add", "append"]), values)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_seed_only_raises_config_error(mutations):
    data = copy.deepcopy(SEED_DATA)
    for path, op, value in mutations:
        try:
            _mutate(data, path, op, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    try:
        raw = parse_yaml(text, "fuzz.yaml")  # read back by the config reader itself (YAML 1.2)
        loaded = validate_raw(raw, source="fuzz.yaml", text=text)
    except ConfigError as exc:
        assert exc.issues and all(i.message and i.severity == "error" for i in exc.issues)
        str(exc)
        return
    # a mutation that kept the config valid: the resolved model must round-trip
    assert validate_raw(loaded.config.model_dump(by_alias=True)).topology == loaded.topology


SEED_TEXT = SEED.read_text()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(SEED_TEXT) - 1),
                          st.sampled_from([":", "-", " ", "\n", "[", "{", "'", '"', "&a", "*a", "!!binary ", "\t",
                                           "? ", "<<: ", "#", "x"])), min_size=1, max_size=5))
def test_corrupted_yaml_text_only_raises_config_error(edits):
    import tempfile
    from pathlib import Path

    from kubitect_core.config import load_config

    text = SEED_TEXT
    for pos, insert in sorted(edits, reverse=True):
        text = text[:pos] + insert + text[pos:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.issues and str(exc)
