"""The JSON Schema of the config, generated from the models (and the installed extensions).

Editors use it through yaml-language-server (`# yaml-language-server: $schema=...`).
"""

from __future__ import annotations

import copy
from typing import Any

from kubitect_core.config.context import ValidationContext, default_context
from kubitect_core.config.models import Config, Host, Kubernetes, LoadBalancerNodes

SCHEMA_ID = "https://kubitect.local/schema/config.json"


def json_schema(context: ValidationContext | None = None) -> dict:
    """JSON Schema (draft 2020-12) with YAML keys as property names, extensions at their paths."""
    context = context or default_context()
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Kubitect cluster configuration"
    defs = schema.setdefault("$defs", {})
    _installed_choices(defs, context)
    for ext in context.extensions:
        target = _object_at(schema, defs, [p for p in ext.path.split(".") if p])
        if target is None:
            continue
        sub = copy.deepcopy(ext.model.model_json_schema(by_alias=True, mode="validation",
                                                        ref_template="#/$defs/{model}"))
        defs.update(sub.pop("$defs", {}))
        if ext.plugin:
            sub.setdefault("description", f"Added by the {ext.plugin} plugin.")
        target.setdefault("properties", {})[ext.key] = sub
    return schema


def _installed_choices(defs: dict, context: ValidationContext) -> None:
    """The plugin choices as the installed plugins offer them: an enum of names, and the default.

    An editor then completes `provider:`, `implementation:` and `manager:` with what is
    installed, and flags a name that validation would refuse.
    """
    manager_names = sorted(context.installers) + sorted(set(context.manager_aliases) - set(context.installers))
    for model, prop, names, kind in ((Host, "provider", context.providers, "provider"),
                                     (LoadBalancerNodes, "implementation", context.load_balancers, "load_balancer"),
                                     (Kubernetes, "manager", manager_names, "installer")):
        node = defs.get(model.__name__, {}).get("properties", {}).get(prop)
        if node is None:
            continue
        for branch in node.get("anyOf", [node]):
            if branch.get("type") == "string":
                branch["enum"] = list(names)
        default = context.default(kind).name
        if default is not None:
            node["default"] = default


def _object_at(schema: dict, defs: dict, path: list[str]) -> dict | None:
    node: Any = schema
    for part in path:
        node = _deref(node, defs)
        if node is None:
            return None
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return _deref(node, defs)


def _deref(node: dict, defs: dict) -> dict | None:
    for _ in range(10):
        if "$ref" in node:
            node = defs.get(node["$ref"].split("/")[-1], {})
        elif "anyOf" in node:
            objs = [n for n in node["anyOf"] if n.get("type") != "null"]
            if len(objs) != 1:
                return None
            node = objs[0]
        else:
            return node
    return None
