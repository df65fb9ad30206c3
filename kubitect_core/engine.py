"""The engine: runs the ordered stages for one cluster, with change rules, state and a lock.

It owns the bookkeeping every stage shares (what ran, what it recorded, when it finished) so that
stages stay thin and plugins never deal with files, locks or prompts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.changes import ChangeEvent, evaluate
from kubitect_core.contracts import Change, StageContext
from kubitect_core.keys import ensure_cluster_key
from kubitect_core.plugins import Registry
from kubitect_core.stage import Stage, StageError, StageSkipped
from kubitect_core.state import ClusterState


class EngineError(Exception):
    """A failure to report to the user in one message (exit code 1), never a traceback."""


class Aborted(EngineError):
    """The user declined a confirmation."""


@dataclass
class Options:
    action: str = "create"
    auto_approve: bool = False
    reconcile: bool = False
    wait_lock: float = 0.0
    flags: dict[str, Any] = field(default_factory=dict)  # passed to plugins as ctx.options


@dataclass
class Outcome:
    """What a command did, for the summary table and the exit code."""

    cluster: str
    stages: list[tuple[str, float, list[Change]]] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    nothing_to_do: bool = False
    message: str = ""
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> reason


def validation_context(registry: Registry):
    """The config validation context: built-in defaults plus what installed plugins declare."""
    from kubitect_core.config import default_context
    from kubitect_core.config.context import InstallerInfo

    ctx = default_context()
    for name, inst in registry.installers.items():
        ctx.installers[name] = InstallerInfo(
            supported=tuple(inst.supported_versions), maintained_from=inst.maintained_from
        )
    ctx.providers = sorted(set(ctx.providers) | set(registry.providers))
    ctx.load_balancers = sorted(set(ctx.load_balancers) | set(registry.load_balancers))
    ctx.extensions = list(ctx.extensions) + list(registry.extensions)
    return ctx


def resolved_dump(loaded) -> dict[str, Any]:
    """A resolved config as plain data with YAML key names, extensions placed at their paths."""
    data = loaded.config.model_dump(by_alias=True, mode="json")
    for dotted, model in loaded.extensions.items():
        *parents, key = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[key] = model.model_dump(by_alias=True, mode="json")
    return data


class Engine:
    def __init__(self, home: Path, registry: Registry, *, confirm: Callable[[str], bool] | None = None,
                 say: Callable[[str], None] | None = None):
        self.home = home
        self.registry = registry
        self.confirm = confirm or (lambda question: True)
        self.say = say or (lambda message: None)
        self.hook = registry.pm.hook

    # config ------------------------------------------------------------------------------
    def load(self, path: Path):
        from kubitect_core.config import load_config

        return load_config(path, context=validation_context(self.registry))

    def load_raw(self, text: str, source: str):
        from kubitect_core.config import parse_yaml, validate_raw

        return validate_raw(parse_yaml(text, source) or {}, source=source, text=text,
                            context=validation_context(self.registry))

    # commands ----------------------------------------------------------------------------
    async def apply(self, config_path: Path, opts: Options) -> Outcome:
        """Converges the whole cluster: change rules first, then every stage in order."""
        loaded = self.load(config_path)
        state = ClusterState(self.home, loaded.config.cluster.name)
        outcome = Outcome(state.name)
        with state.lock(opts.wait_lock) as stale:
            if stale:
                self.say(f"Broke a stale lock left by PID {stale}, which is no longer running.")
            applied = state.applied_text()  # read under the lock: another apply may just have finished
            if opts.action in ("upgrade", "scale") and applied is None:
                if not self.confirm(f"Cannot {opts.action} cluster '{state.name}': it has not been created "
                                    "yet. Would you like to create it instead?"):
                    raise Aborted("User aborted.")
                opts.action = "create"
            if applied is not None:
                outcome.events = self._check_changes(state, applied, loaded, opts.action)
                if not outcome.events and not opts.reconcile:
                    outcome.nothing_to_do = True
                    outcome.message = "No changes detected."
                    return outcome
                if outcome.events and not self.confirm("Apply these changes?"):
                    raise Aborted("User aborted.")
            stages = self.registry.stages
            await self._run(state, loaded, config_path.read_text(), stages, "apply", opts, outcome)
            if not outcome.skipped:  # a skipped stage must run on the next apply: not applied yet
                state.save_applied(config_path.read_text())
        return outcome

    async def run_stages(self, config_path: Path, names: Sequence[str], opts: Options) -> Outcome:
        """Runs validate plus the named stages, refusing when a required stage never completed."""
        known = [s.name for s in self.registry.stages]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise EngineError(f"unknown stage(s) {', '.join(unknown)}; the stages are: {', '.join(known)}")
        loaded = self.load(config_path)
        state = ClusterState(self.home, loaded.config.cluster.name)
        outcome = Outcome(state.name)
        selected = [s for s in self.registry.stages if s.name == "validate" or s.name in names]
        with state.lock(opts.wait_lock):
            record = state.load_record()
            earlier: set[str] = set()
            for stage in selected:
                missing = [r for r in stage.requires if r not in earlier and not state.ever_completed(record, r)]
                if missing:
                    raise EngineError(
                        f"stage '{stage.name}' needs stage(s) {', '.join(missing)} to have completed first; "
                        f"run `kubitect run --stage {' --stage '.join(missing)} {config_path}` or "
                        "`kubitect apply` first")
                earlier.add(stage.name)
            applied = state.applied_text()
            if applied is not None:
                outcome.events = self._check_changes(state, applied, loaded, opts.action)
                if outcome.events and not self.confirm("Apply these changes?"):
                    raise Aborted("User aborted.")
            await self._run(state, loaded, config_path.read_text(), selected, "apply", opts, outcome)
        return outcome

    async def plan(self, config_path: Path, opts: Options) -> Outcome:
        """Every stage's planned changes; touches nothing (no state written, no lock taken)."""
        loaded = self.load(config_path)
        state = ClusterState(self.home, loaded.config.cluster.name)
        outcome = Outcome(state.name)
        applied = state.applied_text()
        if applied is not None:
            outcome.events = self._check_changes(state, applied, loaded, opts.action)
        record = state.load_record()
        ssh = self._ssh(state, loaded, create=False)
        for stage in self.registry.stages:
            ctx = self._context(state, loaded, record, stage, ssh, opts, save=lambda: None)
            changes = await self._call(state.name, stage, "plan", ctx)
            outcome.stages.append((stage.name, 0.0, changes))
        return outcome

    async def destroy(self, cluster: str, opts: Options) -> Outcome:
        """Destroys every stage's layer in reverse order, then removes the cluster directory."""
        state = ClusterState(self.home, cluster)
        if not state.exists():
            raise EngineError(f"cluster '{cluster}' does not exist (in {self.home / 'clusters'})")
        outcome = Outcome(cluster)
        if not self.confirm(f"Cluster '{cluster}' will be destroyed. Continue?"):
            raise Aborted("User aborted.")
        text = state.config_text() or state.applied_text()
        # Layers that live on the machines (services, Kubernetes) need no teardown of their own
        # when the machines themselves are deleted next; plugins read this flag.
        opts.flags.setdefault("machines_deleted", True)
        with state.lock(opts.wait_lock):
            if text is not None:
                loaded = self.load_raw(text, str(state.config_path))
                record_lost = not state.record_path.exists()
                record = state.load_record()
                ssh = self._ssh(state, loaded, create=False)
                for stage in reversed(self.registry.stages):
                    entry = record.get("stages", {}).get(stage.name, {})
                    never_made = not entry.get("data") and \
                        entry.get("status", "never") in ("never", "destroyed", "skipped")
                    if never_made and not (stage.destroy_without_record and record_lost):
                        # Nothing of it was ever made. Only a lost record makes the machine layers
                        # sweep their hosts by tag anyway.
                        continue
                    ctx = self._context(state, loaded, record, stage, ssh, opts,
                                        save=lambda r=record: state.save_record(r))
                    t0 = time.monotonic()
                    changes = await self._call(state.name, stage, "destroy", ctx)
                    entry = state.stage_entry(record, stage.name)
                    entry.update(status="destroyed", data={})
                    state.save_record(record)
                    outcome.stages.append((stage.name, time.monotonic() - t0, changes))
            state.remove()
        return outcome

    async def verify(self, cluster: str, opts: Options) -> Outcome:
        """Runs the verify stage alone against an existing cluster, with its stored config."""
        state = ClusterState(self.home, cluster)
        text = state.config_text()
        if text is None:
            raise EngineError(f"cluster '{cluster}' does not exist (in {self.home / 'clusters'})")
        loaded = self.load_raw(text, str(state.config_path))
        outcome = Outcome(cluster)
        stage = self.registry.stage("verify")
        with state.lock(opts.wait_lock):
            record = state.load_record()
            missing = [r for r in stage.requires if not state.ever_completed(record, r)]
            if missing:
                raise EngineError(f"cluster '{cluster}' has no {', '.join(missing)} yet: apply it first")
            await self._run(state, loaded, text, [stage], "apply", opts, outcome)
        return outcome

    # internals ---------------------------------------------------------------------------
    def _check_changes(self, state: ClusterState, applied_text: str, loaded, action: str) -> list[ChangeEvent]:
        from kubitect_core.config import ConfigError, parse_yaml

        try:
            old = resolved_dump(self.load_raw(applied_text, str(state.applied_path)))
        except ConfigError:
            # The applied config no longer validates (e.g. a version range moved): compare raw.
            old = parse_yaml(applied_text, str(state.applied_path)) or {}
            events = evaluate(old, loaded.raw, action)
        else:
            events = evaluate(old, resolved_dump(loaded), action)
        errors = [e for e in events if e.severity == "error"]
        if errors:
            raise ChangesRefused(events)
        return events

    def _ssh(self, state: ClusterState, loaded, *, create: bool):
        tmpl = loaded.config.cluster.node_template
        if create:
            return ensure_cluster_key(state, tmpl.user, tmpl.ssh.private_key_path)
        from kubitect_core.contracts import SshAccess

        d = state.ssh_dir
        return SshAccess(tmpl.user, d / "id_ed25519", d / "id_ed25519.pub", d / "known_hosts")

    def _context(self, state, loaded, record, stage: Stage, ssh, opts: Options, save) -> StageContext:
        """The stage's view: its own record slice, earlier stages' facts, and the topology.

        The topology is the as-built one (the config's nodes with what the vms stage recorded:
        leased addresses, MACs, hosts, domains) for every stage except the machine layers, which
        converge to the config (`Stage.config_topology`). See `StageContext`.
        """
        from kubitect_core.topology import RecordError, as_built, recorded_nodes

        entry = state.stage_entry(record, stage.name)
        facts = {name: e.get("data", {}) for name, e in record.get("stages", {}).items()}
        topology = loaded.topology
        if not stage.config_topology:
            try:
                topology = as_built(topology, recorded_nodes(facts.get("vms") or {}))
            except RecordError as exc:
                raise EngineError(f"{state.record_path}: {exc}") from None
        return StageContext(
            cluster=state.name, config=loaded.config, topology=topology, cluster_dir=state.dir,
            home=self.home, ssh=ssh, record=entry.setdefault("data", {}), facts=facts,
            progress=lambda subject, message, s=stage.name: self.hook.kubitect_stage_progress(
                cluster=state.name, stage=s, subject=subject, message=message),
            extensions=dict(loaded.extensions), options=dict(opts.flags), checkpoint=save,
        )

    async def _call(self, cluster: str, stage: Stage, action: str, ctx: StageContext) -> list[Change]:
        self.hook.kubitect_stage_started(cluster=cluster, stage=stage.name, action=action)
        t0 = time.monotonic()
        try:
            changes = list(await getattr(stage, action)(ctx, self.registry) or [])
        except StageSkipped as skip:
            self.hook.kubitect_stage_finished(cluster=cluster, stage=stage.name, action=action, ok=True,
                                              seconds=time.monotonic() - t0, changes=[],
                                              error=f"skipped: {skip}")
            raise
        except Exception as exc:
            self.hook.kubitect_stage_finished(cluster=cluster, stage=stage.name, action=action, ok=False,
                                              seconds=time.monotonic() - t0, changes=[], error=str(exc))
            if isinstance(exc, StageError | EngineError):
                raise
            raise StageError(f"stage '{stage.name}' failed during {action}: {type(exc).__name__}: {exc}") from exc
        self.hook.kubitect_stage_finished(cluster=cluster, stage=stage.name, action=action, ok=True,
                                          seconds=time.monotonic() - t0, changes=changes, error=None)
        return changes

    async def _run(self, state: ClusterState, loaded, raw_text: str, stages: Sequence[Stage], action: str,
                   opts: Options, outcome: Outcome) -> None:
        state.create()
        state.save_config(raw_text)
        record = state.load_record()
        ssh = self._ssh(state, loaded, create=True)
        for stage in stages:
            ctx = self._context(state, loaded, record, stage, ssh, opts, save=lambda: state.save_record(record))
            state.mark(record, stage.name, "running")
            state.save_record(record)
            t0 = time.monotonic()
            try:
                changes = await self._call(state.name, stage, action, ctx)
            except StageSkipped as skip:
                state.mark(record, stage.name, "skipped")
                state.stage_entry(record, stage.name)["reason"] = str(skip)
                state.save_record(record)
                outcome.skipped[stage.name] = str(skip)
                outcome.stages.append((stage.name, time.monotonic() - t0, []))
                continue
            except BaseException:
                state.mark(record, stage.name, "failed")
                state.save_record(record)
                raise
            state.mark(record, stage.name, "completed")
            state.save_record(record)
            outcome.stages.append((stage.name, time.monotonic() - t0, changes))


class ChangesRefused(EngineError):
    """The new config changes something the chosen action may not change."""

    def __init__(self, events: list[ChangeEvent]):
        super().__init__("The configuration contains changes that are not allowed.")
        self.events = events


def run_sync(coro) -> Any:
    """Runs an engine coroutine from the synchronous CLI."""
    return asyncio.run(coro)
