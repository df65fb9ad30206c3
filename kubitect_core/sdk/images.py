"""SDK: node images kubitect builds offline (rootfs trees for containers, qcow2 for VMs).

A provider either boots a user's image (`nodeTemplate.os.source`) or one kubitect built from the
machine's apt sources: `vm_image_for_source` tells which (and a built image's kernel cmdline),
`ensure_rootfs` builds or reuses a container root filesystem, `cached_rootfs` finds one without
building (what a plan may do). `base_cache` keeps the base images a provider downloads or the
user imports, keyed by URL and checksum and verified before use (`ImageError` when one cannot be
trusted).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kubitect_core.images import base_cache
from kubitect_core.images.base_cache import ImageError
from kubitect_core.images.cache import entry_path, recipe_hash
from kubitect_core.images.rootfs import ensure_rootfs, rootfs_recipe
from kubitect_core.images.vm_image import VmImage, vm_image_for_source
from kubitect_core.paths import images_dir

__all__ = ["ImageError", "VmImage", "base_cache", "cached_rootfs", "ensure_rootfs", "vm_image_for_source"]


def cached_rootfs(home: Path, extra_packages: Sequence[str] = ()) -> Path | None:
    """The rootfs `ensure_rootfs(home, extra_packages=...)` would return, when it is already built."""
    path = entry_path(images_dir(Path(home)), "rootfs", recipe_hash(rootfs_recipe(extra_packages)))
    return path if path.is_dir() else None
