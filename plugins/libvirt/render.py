"""Renders the provider's jinja2 templates (libvirt XML and cloud-init files) that sit next to it."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **values: Any) -> str:
    """Renders one template; XML templates escape their values, YAML ones quote via `tojson`."""
    return _env().get_template(template).render(**values)


def spec_hash(values: dict[str, Any]) -> str:
    """A short digest of a template's inputs, stored in the object's metadata.

    Why: comparing a stored digest is how apply decides "keep" versus "change" without parsing
    back the XML libvirt normalises (it adds UUIDs, addresses, controllers, units).
    """
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
