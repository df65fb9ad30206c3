"""Every config field says what it is for: in the models, and so in `kubitect schema` and the docs.

The walk covers the core models and every installed plugin's config extension
(`cluster.nodes.loadBalancer.vrrp` among them), at every path a field is reachable by.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kubitect_core.cli import app


@pytest.fixture(scope="module")
def fields(gen_docs):
    return list(gen_docs.walk(gen_docs.config_fields()))


def test_the_walk_covers_the_core_models_and_the_extensions(fields):
    paths = {f.path for f in fields}
    # Spot checks at each depth, a shared model at two paths, and a plugin's extension.
    for path in ("hosts", "hosts[].connection.ssh.keyfile", "cluster.nodes.master.instances[].dataDisks[].pool",
                 "cluster.nodes.worker.default.labels", "addons.rook.nodeSelector",
                 "cluster.nodes.loadBalancer.vrrp", "cluster.nodes.loadBalancer.vrrp.advertInt"):
        assert path in paths
    assert len(paths) == len(fields) > 120


def test_every_config_field_has_a_description(fields):
    missing = [f.path for f in fields if not (f.info.description or "").strip()]
    assert not missing, f"config fields without a description (pydantic Field(description=...)): {missing}"


def test_a_field_without_a_description_is_caught(gen_docs):
    """The walk sees an extension's fields: a plugin model without descriptions would fail the test above."""
    from pydantic import BaseModel

    from kubitect_core.contracts import ConfigExtension

    class Bare(BaseModel):
        """A plugin setting."""

        knob: int = 1

    tree = gen_docs.config_fields([ConfigExtension(path="cluster.nodes.loadBalancer", key="bare", model=Bare,
                                                   plugin="test")])
    bare = [f for f in gen_docs.walk(tree) if f.path.startswith("cluster.nodes.loadBalancer.bare.")]
    assert [f.path for f in bare if not f.info.description] == ["cluster.nodes.loadBalancer.bare.knob"]


def _properties(node, defs, seen=()):
    """(name, property schema) of every property reachable in a JSON Schema, through $ref/anyOf/items."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if ref and ref not in seen:
        yield from _properties(defs[ref.split("/")[-1]], defs, (*seen, ref))
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in node.get(key, []):
            yield from _properties(sub, defs, seen)
    for key in ("items", "additionalProperties"):
        yield from _properties(node.get(key), defs, seen)
    for name, prop in (node.get("properties") or {}).items():
        yield name, prop
        yield from _properties(prop, defs, seen)


def test_kubitect_schema_carries_every_description():
    """What an editor shows on hover: every property of `kubitect schema` has its description."""
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    props = list(_properties(schema, schema["$defs"]))
    assert len(props) > 90
    missing = sorted({name for name, prop in props if not prop.get("description")})
    assert not missing, f"schema properties without a description: {missing}"
    vrrp = schema["$defs"]["LoadBalancerNodes"]["properties"]["vrrp"]
    assert "keepalived" in vrrp["description"]
