"""`kubitect adopt --cluster N`: take over a cluster Kubitect (Go) made, from its Terraform state.

What is taken over, and how (README, "Moving a cluster from Kubitect (Go)"):

- the machines: each VM provider that serves the config's hosts checks Kubitect's Terraform state
  against the applied config and the hosts, and refuses, listing every difference, before it
  changes anything; then it tags the objects as this cluster's and fills the network, storage and
  vms records, keeping Kubitect's names where they differ from kubitect's
  (`VmProvider.adopt_kubitect`);
- the cluster's SSH key (`config/.ssh/id_rsa`) and kubeconfig (`config/admin.conf`), copied into
  kubitect's layout, 0600;
- the config: Kubitect's `kubitect-applied.yaml` (its last successful apply) becomes the applied
  config, so a plan of the same config shows no change.

What is NOT taken over: the layers Kubitect installed on the machines with Ansible (HAProxy and
keepalived, Kubernetes by Kubespray or k3s-ansible, Rook by Helm). kubitect's own plugins would
configure them differently (another CNI version, another HAProxy config), so their stages are
recorded as installed by Kubitect and held: plan and apply leave them as they are and say so
(`kubitect_core.stage.held_reason`). Nodes added after adoption get their VMs, not a Kubernetes
join.

Kubitect's own files stay where they are, byte for byte: they describe the same VMs, and the
user may still want to read them. The marker `adopted.json` (written last: a run cut short is
re-run from the start) makes the directory kubitect's; adopting again is a no-op, and Kubitect
(Go) must no longer be run on the cluster. `kubitect destroy` then removes the VMs and the whole
directory, Kubitect's files included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubitect_core.contracts import Change, SshAccess, StageContext
from kubitect_core.legacy import ADOPTED_MARKER, APPLIED, KUBECONFIG, MAX_TFSTATE, ORIGINAL, detect, is_adopted
from kubitect_core.state import (
    ClusterState,
    StateError,
    StateFileError,
    read_state_bytes,
    read_state_json,
    read_state_text,
    write_atomic,
    write_private,
)

MARKER = ADOPTED_MARKER
KEY = Path("config/.ssh/id_rsa")
MACHINE_STAGES = ("network", "storage", "vms")
HELD_STAGES = ("loadbalancers", "kubernetes", "rook")


class AdoptError(StateError):
    """The cluster cannot be adopted; the message says why and what to do."""


@dataclass
class AdoptOutcome:
    cluster: str
    changes: list[Change] = field(default_factory=list)
    already: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)


def adopted_marker(cluster_dir: Path) -> Path:
    return Path(cluster_dir) / MARKER


def _sha256(path: Path) -> str:
    return hashlib.sha256(read_state_bytes(path, limit=MAX_TFSTATE) or b"").hexdigest()


def _inputs(state: ClusterState):
    """Kubitect's directory, its Terraform state and applied config text; AdoptError when unusable."""
    legacy = detect(state.dir)
    if legacy is None:
        raise AdoptError(f"cluster '{state.name}' ({state.dir}) was not made by {ORIGINAL}: there is nothing to adopt")
    if not legacy.active:
        raise AdoptError(f"cluster '{state.name}' has no Terraform state ({legacy.tfstate}): {ORIGINAL} made no VMs "
                         "for it, or destroyed them; there is nothing to adopt")
    applied = read_state_text(state.dir / APPLIED)
    if applied is None:
        raise AdoptError(f"cluster '{state.name}' has no {APPLIED}: {ORIGINAL}'s last apply did not finish. Finish "
                         f"it (or destroy the cluster) with {ORIGINAL} first; adopting a half-made cluster would "
                         "take over VMs nobody configured")
    try:
        tfstate = read_state_json(legacy.tfstate, limit=MAX_TFSTATE)
    except StateFileError as exc:
        raise AdoptError(f"{exc}; kubitect adopts only what a readable Terraform state lists") from None
    if not isinstance(tfstate, dict) or tfstate.get("version") != 4 or not isinstance(tfstate.get("resources"), list):
        raise AdoptError(f"{legacy.tfstate}: not a Terraform state of format version 4 (Terraform ≥ 0.12), which "
                         f"is what {ORIGINAL} writes")
    for need in (state.dir / KEY, state.dir / f"{KEY}.pub"):
        if not need.is_file():
            raise AdoptError(f"{need} is missing: without the cluster's SSH key kubitect could not reach the "
                             "adopted nodes. Restore it from a backup first")
    return legacy, tfstate, applied


async def adopt(engine, cluster: str, *, dry_run: bool = False, options: Mapping[str, Any] | None = None
                ) -> AdoptOutcome:
    """Adopts cluster `cluster` of the engine's home (see the module docstring)."""
    state = ClusterState(engine.home, cluster)
    outcome = AdoptOutcome(cluster, dry_run=dry_run)
    if is_adopted(state.dir):
        outcome.already = True
        outcome.notes.append(f"cluster '{cluster}' was adopted from {ORIGINAL} already "
                             f"({adopted_marker(state.dir)}); nothing to do")
        return outcome
    legacy, tfstate, applied = _inputs(state)
    loaded = engine.load_raw(applied, str(state.dir / APPLIED))
    if loaded.config.cluster.name != cluster:
        raise AdoptError(f"{state.dir / APPLIED} names cluster '{loaded.config.cluster.name}', but its directory is "
                         f"'{cluster}'; kubitect adopts a cluster under its own name only")
    registry = engine.registry
    groups: dict[str, list[str]] = {}
    for host in loaded.config.hosts:
        groups.setdefault(host.provider, []).append(host.name)
    with state.lock():
        if is_adopted(state.dir):  # another kubitect adopted it while this one waited
            outcome.already = True
            return outcome
        record = state.load_record()
        ssh = SshAccess(loaded.config.cluster.node_template.user, state.dir / KEY, state.dir / f"{KEY}.pub",
                        state.ssh_dir / "known_hosts")
        for name, hosts in groups.items():
            provider = registry.providers.get(name)
            method = getattr(provider, "adopt_kubitect", None)
            if method is None:
                raise AdoptError(f"hosts {', '.join(hosts)} select VM provider '{name}', which "
                                 + ("is not installed" if provider is None else "cannot adopt machines made by "
                                    f"{ORIGINAL}") + "; nothing was changed")
            layers = {}
            for stage in MACHINE_STAGES:
                data = state.stage_entry(record, stage).setdefault("data", {})
                layers[stage] = StageContext(
                    cluster=cluster, config=loaded.config, topology=loaded.topology, cluster_dir=state.dir,
                    home=engine.home, ssh=ssh, record={} if dry_run else data.setdefault(name, {}),
                    progress=lambda s, m, st=stage: engine.hook.kubitect_stage_progress(
                        cluster=cluster, stage=st, subject=s, message=m),
                    extensions=dict(loaded.extensions), options=dict(options or {}))
            outcome.changes += await method(layers, hosts, tfstate, dry_run)
        if dry_run:
            return outcome
        _take_files(state, outcome)
        _hold_installed_layers(state, record, loaded, outcome)
        for stage in MACHINE_STAGES:
            state.mark(record, stage, "completed")
        state.save_record(record)
        state.save_config(applied)
        state.save_applied(applied)
        marker = {"from": ORIGINAL, "adopted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "tfstate": str(legacy.tfstate), "tfstate_sha256": _sha256(legacy.tfstate),
                  "tfstate_serial": tfstate.get("serial"), "applied_config": str(state.dir / APPLIED),
                  "held_stages": [s for s in HELD_STAGES if s in {st.name for st in registry.stages}]}
        write_atomic(adopted_marker(state.dir), json.dumps(marker, indent=2) + "\n")
    return outcome


def _take_files(state: ClusterState, outcome: AdoptOutcome) -> None:
    """The SSH key pair and the kubeconfig, copied into kubitect's layout (0600; Kubitect's stay)."""
    state.ssh_dir.mkdir(parents=True, exist_ok=True)
    state.ssh_dir.chmod(0o700)
    from kubitect_core.keys import KEY_NAME

    write_private(state.ssh_dir / KEY_NAME, read_state_bytes(state.dir / KEY, limit=1 << 20) or b"")
    write_atomic(state.ssh_dir / f"{KEY_NAME}.pub", read_state_text(state.dir / f"{KEY}.pub") or "", mode=0o644)
    if not (state.ssh_dir / "known_hosts").exists():
        write_private(state.ssh_dir / "known_hosts", "")
    outcome.notes.append(f"SSH key {state.dir / KEY} copied to {state.ssh_dir / KEY_NAME}; the nodes' host keys are "
                         f"pinned at first contact ({ORIGINAL} did not record them)")
    kubeconfig = read_state_text(state.dir / KUBECONFIG)
    if kubeconfig is None:
        outcome.notes.append(f"no {KUBECONFIG} to import: `kubitect export kubeconfig` has nothing until one exists")
    else:
        write_private(state.kubeconfig_path, kubeconfig)
        outcome.notes.append(f"kubeconfig {state.dir / KUBECONFIG} copied to {state.kubeconfig_path}")


def _hold_installed_layers(state: ClusterState, record: dict, loaded, outcome: AdoptOutcome) -> None:
    """Records the layers Kubitect installed over Ansible as installed by it, and held (see module doc)."""
    cfg = loaded.config
    topo = loaded.topology
    first = topo.masters[0] if topo.masters else None
    endpoint = topo.vip or (first.ip if first else None)
    rook = getattr(getattr(cfg, "addons", None), "rook", None)
    raw_kube = (loaded.raw or {}).get("kubernetes") if isinstance(loaded.raw, dict) else None
    manager = (raw_kube or {}).get("manager") or "kubespray"  # Kubitect's default manager
    installed = {
        "loadbalancers": ("HAProxy and keepalived (its Ansible playbook)" if topo.load_balancers else None,
                          {"endpoint": endpoint, "vip": topo.vip}),
        "kubernetes": (f"Kubernetes {cfg.kubernetes.version} by {manager}",
                       {"installer": cfg.kubernetes.manager,
                        **({"kubeconfig": str(state.kubeconfig_path)} if state.kubeconfig_path.exists() else {})}),
        "rook": ("Rook by Helm" if rook is not None and getattr(rook, "enabled", False) else None, {}),
    }
    for stage, (what, data) in installed.items():
        if stage == "loadbalancers" and what is None:  # no load balancers: the first master is the endpoint
            state.stage_entry(record, stage)["data"] = data
            state.mark(record, stage, "completed")
            continue
        if what is None:
            continue
        state.stage_entry(record, stage)["data"] = {**data, "adopted": {"from": ORIGINAL, "installed": what}}
        state.mark(record, stage, "completed")
        outcome.notes.append(f"{stage}: {what}, installed by {ORIGINAL}, is held: kubitect leaves it as it is")
