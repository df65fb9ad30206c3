"""Renders the provider's jinja2 templates (libvirt XML and cloud-init files) that sit next to it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubitect_core.sdk import templates


def render(template: str, **values: Any) -> str:
    """Renders one template; XML templates escape their values, YAML ones quote via `tojson`."""
    return templates(__file__, trim=True, escape_xml=True).get_template(template).render(**values)


def spec_hash(values: dict[str, Any]) -> str:
    """A short digest of a template's inputs, stored in the object's metadata.

    Why: comparing a stored digest is how apply decides "keep" versus "change" without parsing
    back the XML libvirt normalises (it adds UUIDs, addresses, controllers, units).
    """
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
