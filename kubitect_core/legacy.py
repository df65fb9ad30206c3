"""Cluster directories made by Kubitect (the Go original), which shares the home ~/.kubitect.

Kubitect keeps, per cluster, `clusters/<name>/config/` (kubitect.yaml, kubitect-applied.yaml,
admin.conf, .ssh/, terraform/terraform.tfstate) next to `terraform/` and `ansible/` trees
(reference/kubitect.md §3.1). Its VMs are known only to that Terraform state. kubitect must
therefore recognise such a directory and never treat it as one of its own: `list` shows it as
Kubitect's, `export` reads Kubitect's files, and `destroy`/`apply` refuse to touch it (deleting
the directory would orphan the VMs, and applying would create clashing ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubitect_core.state import StateFileError, read_state_json, read_state_text

TFSTATE = Path("config/terraform/terraform.tfstate")
APPLIED = Path("config/kubitect-applied.yaml")
CONFIG = Path("config/kubitect.yaml")
KUBECONFIG = Path("config/admin.conf")
MARKERS = (TFSTATE, APPLIED, CONFIG, KUBECONFIG, Path("config/infrastructure.yaml"),
           Path("config/nodes.yaml"), Path("terraform/main.tf"), Path("terraform/variables.yaml"),
           Path("ansible/kubitect"))
MAX_TFSTATE = 256 << 20
ORIGINAL = "Kubitect (Go)"
ADOPTED_MARKER = "adopted.json"  # written by `kubitect adopt` (kubitect_core.adopt): the directory is ours now


class LegacyClusterError(Exception):
    """kubitect refuses to change a cluster directory made by Kubitect (Go)."""


@dataclass(frozen=True)
class LegacyCluster:
    """A cluster directory as Kubitect (Go) leaves it."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def tfstate(self) -> Path:
        return self.dir / TFSTATE

    @property
    def active(self) -> bool:
        """Kubitect's own meaning of "active": a Terraform state exists."""
        return self.tfstate.is_file()

    def config_text(self) -> tuple[Path, str] | None:
        """The last applied config (what `kubitect export config` of the original prints), else the
        config of the last attempted apply."""
        for rel in (APPLIED, CONFIG):
            text = read_state_text(self.dir / rel)
            if text is not None:
                return self.dir / rel, text
        return None

    def kubeconfig_text(self) -> tuple[Path, str] | None:
        text = read_state_text(self.dir / KUBECONFIG)
        return None if text is None else (self.dir / KUBECONFIG, text)

    def vm_count(self) -> int | None:
        """How many libvirt domains the Terraform state lists (None when it cannot be read)."""
        try:
            data = read_state_json(self.tfstate, limit=MAX_TFSTATE)
        except StateFileError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
            return None
        count = 0
        for res in data["resources"]:
            managed = isinstance(res, dict) and res.get("mode", "managed") == "managed"
            if managed and res.get("type") == "libvirt_domain":
                instances = res.get("instances")
                count += len(instances) if isinstance(instances, list) else 1
        return count

    def status(self) -> str:
        """One line for `list clusters`."""
        if not self.active:
            return "not active (no Terraform state); kubitect leaves it alone"
        vms = self.vm_count()
        counted = f", {vms} VM(s) in its Terraform state" if vms is not None else ""
        return f"active{counted}; kubitect leaves it alone"

    def refusal(self, command: str) -> str:
        """Why `command` is refused, and what to do instead."""
        state = f" Its VMs are recorded in {self.tfstate}." if self.active else ""
        return (f"cluster '{self.name}' ({self.dir}) was made by {ORIGINAL}, not by this kubitect.{state} "
                f"kubitect {command} would {_harm(command)}, so it refuses. Manage it with {ORIGINAL} "
                f"(its `kubitect destroy --cluster {self.name}`), take it over with `kubitect adopt --cluster "
                f"{self.name}`, or see \"Moving a cluster from Kubitect (Go)\" in kubitect's README.")


def _harm(command: str) -> str:
    if command == "destroy":
        return "delete its directory with the Terraform state and admin.conf and orphan its VMs"
    return "create VMs that clash with the existing ones and mix two tools' files in one directory"


def is_adopted(cluster_dir: Path) -> bool:
    """Whether `kubitect adopt` took this directory over from Kubitect (Go): it is kubitect's now."""
    return (Path(cluster_dir) / ADOPTED_MARKER).is_file()


def detect(cluster_dir: Path) -> LegacyCluster | None:
    """The Kubitect (Go) cluster at `cluster_dir`, or None when the directory is not one (or no
    longer one: adopted by kubitect, whose files then live beside Kubitect's, untouched)."""
    if not cluster_dir.is_dir() or cluster_dir.is_symlink() or is_adopted(cluster_dir):
        return None
    if any((cluster_dir / m).exists() for m in MARKERS):
        return LegacyCluster(cluster_dir)
    return None
