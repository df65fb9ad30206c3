"""The cluster's admin kubeconfig: stored 0600 in the cluster directory, merged and unmerged on request."""

from __future__ import annotations

from pathlib import Path

from kubitect_core import kubeconfig
from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube.cluster import api_port, endpoint


def finish_kubeconfig(ctx: StageContext, fetched: str) -> list[str]:
    """Renames the fetched admin kubeconfig, stores it 0600, merges it when the config asks.

    Records `kubeconfig` (the stored path) and `merged_into` (the user kubeconfig it was merged
    into, or None), so destroy removes exactly what apply added. Returns notes for the changes.
    """
    text = kubeconfig.rename(fetched, ctx.cluster, endpoint(ctx), api_port(ctx))
    path = Path(ctx.cluster_dir) / "kubeconfig"
    old = path.read_text() if path.exists() else None
    kubeconfig.store(path, text)
    ctx.record["kubeconfig"] = str(path)
    notes = [] if old == text else [f"kubeconfig written to {path}"]
    other = getattr(ctx.config.kubernetes, "other", None)
    if getattr(other, "merge_kubeconfig", False):
        target = Path(ctx.options.get("user_kubeconfig") or kubeconfig.default_user_kubeconfig())
        try:
            merged = kubeconfig.merge_into(target, text, ctx.cluster, name=ctx.options.get("kubeconfig_name"),
                                           receipt=ctx.record.get(kubeconfig.RECEIPT_KEY))
            ctx.record[kubeconfig.RECEIPT_KEY] = merged.receipt  # destroy removes exactly these entries
            ctx.record["merged_into"] = merged.receipt["file"]
            if merged.changed:
                notes.append(f"merged into {target} as '{merged.receipt['name']}'")
        except (kubeconfig.KubeconfigError, OSError) as exc:
            # like the original: a merge failure is only a warning, the cluster is fine
            ctx.progress(ctx.cluster, f"warning: kubeconfig not merged into {target}: {exc}")
    ctx.checkpoint()
    return notes


def drop_kubeconfig(ctx: StageContext) -> list[str]:
    """Undoes finish_kubeconfig: removes the merged entries (only if apply merged) and the file."""
    notes = []
    receipt = ctx.record.get(kubeconfig.RECEIPT_KEY)
    if receipt:
        try:
            removal = kubeconfig.remove_from(receipt)
            notes += [f"removed {e} from {receipt['file']}" for e in removal.removed]
            notes += [f"left {e} in {receipt['file']}" for e in removal.kept]
        except (kubeconfig.KubeconfigError, OSError) as exc:
            ctx.progress(ctx.cluster, f"warning: could not remove the cluster from {receipt['file']}: {exc}")
    path = Path(ctx.cluster_dir) / "kubeconfig"
    if path.exists():
        path.unlink()
        notes.append(f"deleted {path}")
    ctx.record.pop("merged_into", None)
    ctx.record.pop(kubeconfig.RECEIPT_KEY, None)
    ctx.record.pop("kubeconfig", None)
    return notes


def kubeconfig_plan(ctx: StageContext) -> Change:
    """The plan's kubeconfig line: kept when apply already recorded it, else created."""
    return Change("keep" if ctx.record.get("kubeconfig") else "create", "file", "kubeconfig", None,
                  str(Path(ctx.cluster_dir) / "kubeconfig"))


def kubeconfig_change(ctx: StageContext, fetched: str) -> Change:
    """Stores (and merges) the fetched kubeconfig (`finish_kubeconfig`) as apply's last Change."""
    notes = finish_kubeconfig(ctx, fetched)
    return Change("change" if notes else "keep", "file", "kubeconfig", None,
                  "; ".join(notes) or str(Path(ctx.cluster_dir) / "kubeconfig"))
