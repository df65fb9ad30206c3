"""Renders the manifests kubitect writes itself (CephCluster, block pool + default StorageClass)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from kubitect_core.sdk import lazy_import

from .layout import CLUSTER_NAME, NAMESPACE, Layout
from .release import Release

jinja2 = lazy_import("jinja2")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

POOL = "ceph-blockpool"
STORAGE_CLASS = "ceph-block"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


def cluster_manifests(release: Release, layout: Layout) -> dict[str, str]:
    """{file name: YAML} of the rendered manifests, in apply order (node names and paths quoted
    as JSON strings, which YAML reads verbatim)."""
    values = dict(release=release, layout=layout, namespace=NAMESPACE, cluster_name=CLUSTER_NAME,
                  pool=POOL, storage_class=STORAGE_CLASS)
    return {name: _env().get_template(f"{name}.j2").render(**values)
            for name in ("cephcluster.yaml", "blockpool.yaml")}
