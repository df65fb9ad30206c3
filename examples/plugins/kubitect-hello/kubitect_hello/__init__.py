"""An example third-party kubitect plugin.

It shows the two most common extensions:
- a stage of its own (`hello`, after `vms`) that writes a motd-like file per node into the
  cluster directory and records it, idempotently (a second apply changes nothing);
- an observer of the stage hooks that appends one line per finished stage to `hello-timings.log`.

Everything it uses of kubitect comes from `kubitect_core.sdk`, the plugin SDK: a plugin that
imports anything else of kubitect (or another plugin) fails kubitect's lint rule.

Install it next to kubitect (`pip install ./examples/plugins/kubitect-hello`); `kubitect list plugins`
then shows it, and `kubitect apply` runs its stage.
"""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import Change, Stage, StageContext, hookimpl


class HelloStage(Stage):
    name = "hello"
    description = "example third-party stage: greets every node"
    after = "vms"
    requires = ("vms",)

    def _path(self, ctx: StageContext) -> Path:
        return ctx.cluster_dir / "hello"

    async def plan(self, ctx, registry) -> list[Change]:
        return [Change("keep" if (self._path(ctx) / n.name).exists() else "create", "greeting", n.name)
                for n in ctx.topology.nodes]

    async def apply(self, ctx, registry) -> list[Change]:
        out = []
        self._path(ctx).mkdir(exist_ok=True)
        for node in ctx.topology.nodes:
            path = self._path(ctx) / node.name
            text = f"hello {node.name} ({node.role}) at {node.ip}\n"
            if path.exists() and path.read_text() == text:
                out.append(Change("keep", "greeting", node.name))
                continue
            path.write_text(text)
            ctx.record.setdefault("greeted", []).append(node.name)
            out.append(Change("create", "greeting", node.name))
        return out

    async def destroy(self, ctx, registry) -> list[Change]:
        return []


@hookimpl
def kubitect_register_stages() -> list[Stage]:
    return [HelloStage()]


@hookimpl
def kubitect_stage_finished(stage: str, action: str, ok: bool, seconds: float, cluster_dir: Path) -> None:
    """Observer: one line per finished stage in <cluster dir>/hello-timings.log (once the directory exists)."""
    path = Path(cluster_dir) / "hello-timings.log"
    if path.parent.exists():
        with path.open("a") as fh:
            fh.write(f"{stage} {action} {'ok' if ok else 'failed'} {seconds:.3f}s\n")
