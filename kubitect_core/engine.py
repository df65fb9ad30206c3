"""The engine: runs the ordered stages for one cluster, with change rules, state and a lock.

It owns the bookkeeping every stage shares (what ran, what it recorded, when it finished) so that
stages stay thin and plugins never deal with files, locks or prompts.

Three promises live here:
- the config applied is the config validated: a command reads its file once
  (`read_config_file`), and exactly those bytes are validated, applied and stored;
- destroy is always possible: it works from the record, with the stored config loaded without
  today's version policy, and with neither config nor record readable it sweeps by tag or, with
  `--force`, removes what it can and lists the rest;
- an interrupted run (Ctrl-C, SIGTERM) records the stage it stopped in as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core import runlog
from kubitect_core.changes import ChangeEvent, evaluate
from kubitect_core.confirmation import DELETE_DATA_DISKS, Confirmation, data_loss, destroy_loss
from kubitect_core.contracts import Change, SshAccess, StageContext
from kubitect_core.keys import ensure_cluster_key, planned_access
from kubitect_core.legacy import LegacyClusterError, detect
from kubitect_core.plugins import Registry
from kubitect_core.stage import Stage, StageError, StageSkipped
from kubitect_core.state import ClusterState, StateFileError
from kubitect_core.topology import Topology

# Exceptions that mean a bug in kubitect or a plugin, not a problem to explain: their class name
# is part of what the user needs to report. Every other error is shown by its message alone.
PROGRAMMING_ERRORS = (KeyError, IndexError, AttributeError, TypeError, NameError, AssertionError,
                      ZeroDivisionError, NotImplementedError, RecursionError, UnboundLocalError)


class EngineError(Exception):
    """A failure to report to the user in one message (exit code 1), never a traceback."""


class Aborted(EngineError):
    """The user declined a confirmation (or there was no terminal to ask on)."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; handled like Ctrl-C (the stage is marked interrupted)."""


class StageFailed(StageError):
    """A stage failed; `detail` is the cause in words, one line per host or problem."""

    def __init__(self, stage: str, action: str, detail: str):
        super().__init__(f"stage '{stage}' failed during {action}:\n{detail}")
        self.stage, self.action, self.detail = stage, action, detail


def describe_error(exc: BaseException) -> str:
    """An exception in words: its message, with the class name only for programming errors."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, PROGRAMMING_ERRORS) or not text:
        return f"internal error ({type(exc).__name__}: {text or 'no message'}); please report it"
    return text


@dataclass
class Options:
    action: str = "create"
    auto_approve: bool = False
    reconcile: bool = False
    wait_lock: float = 0.0
    force: bool = False  # destroy: finish even when a host is gone for good, listing what is left
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
    notes: list[str] = field(default_factory=list)  # what the user should know (destroy fallbacks)
    leftovers: list[str] = field(default_factory=list)  # destroy --force: what could not be removed


@dataclass
class ConfigInput:
    """A config file read once: its path, its exact text and that text validated."""

    path: Path
    text: str
    loaded: Any  # kubitect_core.config.LoadedConfig

    @property
    def cluster(self) -> str:
        return self.loaded.config.cluster.name


@dataclass
class _RecordOnly:
    """Stands in for a loaded config when destroy has none it can use: no config, no nodes."""

    config: None
    topology: Topology
    extensions: dict = field(default_factory=dict)


def validation_context(registry: Registry, *, local: bool = False):
    """The config validation context: the choices, defaults and config keys the plugins declare.

    `local` (`--local`): the cluster lives in ./.kubitect and its name gets the `local-` prefix.
    """
    from kubitect_core.config import from_registry

    ctx = from_registry(registry)
    ctx.local = local
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
    def __init__(self, home: Path, registry: Registry, *,
                 confirm: Callable[[Confirmation], bool] | None = None,
                 say: Callable[[str], None] | None = None,
                 live_log: Callable[[str], None] | None = None, local: bool = False):
        self.home = home
        self.registry = registry
        self.confirm = confirm or (lambda confirmation: True)
        self.say = say or (lambda message: None)
        self.hook = registry.pm.hook
        self.live_log = live_log  # `--debug`: shows the run log as it is written
        self.log_path: Path | None = None  # the run log of the last command (for its failure message)
        self.local = local  # `--local`: configs are read with the `local-` name prefix
        self._applied_cache: tuple[str, Topology | None] | None = None  # (applied text, its topology)

    # config ------------------------------------------------------------------------------
    def read(self, path: Path) -> ConfigInput:
        """Reads the config file once and validates exactly that text."""
        from kubitect_core.config import load_config_text, read_config_file

        path = Path(path)
        text = read_config_file(path)
        context = validation_context(self.registry, local=self.local)
        loaded = load_config_text(text, str(path), context=context, path=path)
        return ConfigInput(path, text, loaded)

    def load(self, path: Path):
        return self.read(path).loaded

    def load_raw(self, text: str, source: str, context=None):
        from kubitect_core.config import load_config_text

        return load_config_text(text, source, context=context or validation_context(self.registry, local=self.local))

    def _input(self, source: Path | ConfigInput) -> ConfigInput:
        return source if isinstance(source, ConfigInput) else self.read(source)

    def _state(self, cluster: str, command: str) -> ClusterState:
        """The cluster's state, refusing a directory that Kubitect (Go) made."""
        state = ClusterState(self.home, cluster)
        legacy = detect(state.dir)
        if legacy is not None:
            raise LegacyClusterError(legacy.refusal(command))
        return state

    # commands ----------------------------------------------------------------------------
    async def apply(self, source: Path | ConfigInput, opts: Options) -> Outcome:
        """Converges the whole cluster: change rules first, then every stage in order."""
        cfg = self._input(source)
        state = self._state(cfg.cluster, "apply")
        outcome = Outcome(state.name)
        with state.lock(opts.wait_lock) as stale:
            if stale:
                self.say(f"Broke a stale lock left by PID {stale}, which is no longer running.")
            _record(state)  # a damaged record is reported now, not hidden by "No changes detected."
            applied = state.applied_text()  # read under the lock: another apply may just have finished
            if opts.action in ("upgrade", "scale") and applied is None:
                if not self.confirm(Confirmation(
                        f"Cannot {opts.action} cluster '{state.name}': it has not been created yet. "
                        "Would you like to create it instead?")):
                    raise Aborted("User aborted.")
                opts.action = "create"
            if applied is not None:
                outcome.events = self._check_changes(state, applied, cfg.loaded, opts.action,
                                                     walk=bool(opts.flags.get("upgrade_walk")))
                if not outcome.events and not opts.reconcile:
                    outcome.nothing_to_do = True
                    outcome.message = "No changes detected."
                    return outcome
                self._confirm_changes(state, outcome.events, cfg.loaded, opts)
            await self._run(state, cfg.loaded, cfg.text, self.registry.stages, "apply", opts, outcome,
                            command=opts.action if opts.action != "create" else "apply")
            if not outcome.skipped:  # a skipped stage must run on the next apply: not applied yet
                state.save_applied(cfg.text)
        return outcome

    async def run_stages(self, source: Path | ConfigInput, names: Sequence[str], opts: Options) -> Outcome:
        """Runs validate plus the named stages, refusing when a required stage never completed."""
        known = [s.name for s in self.registry.stages]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise EngineError(f"unknown stage(s) {', '.join(unknown)}; the stages are: {', '.join(known)}")
        cfg = self._input(source)
        state = self._state(cfg.cluster, "run")
        outcome = Outcome(state.name)
        selected = [s for s in self.registry.stages if s.name == "validate" or s.name in names]
        with state.lock(opts.wait_lock):
            record = _record(state)
            earlier: set[str] = set()
            for stage in selected:
                missing = [r for r in stage.requires if r not in earlier and not state.ever_completed(record, r)]
                if missing:
                    raise EngineError(
                        f"stage '{stage.name}' needs stage(s) {', '.join(missing)} to have completed first; "
                        f"run `kubitect run --stage {' --stage '.join(missing)} {cfg.path}` or "
                        "`kubitect apply` first")
                earlier.add(stage.name)
            applied = state.applied_text()
            if applied is not None:
                outcome.events = self._check_changes(state, applied, cfg.loaded, opts.action,
                                                     walk=bool(opts.flags.get("upgrade_walk")))
                if outcome.events:
                    self._confirm_changes(state, outcome.events, cfg.loaded, opts)
            await self._run(state, cfg.loaded, cfg.text, selected, "apply", opts, outcome, command="run")
        return outcome

    async def plan(self, source: Path | ConfigInput, opts: Options) -> Outcome:
        """Every stage's planned changes; touches nothing (no state written, no lock taken).

        Works before the first apply: what apply would create first (the key pair) is listed,
        and plugins render with a throw-away key instead of the one apply will generate.
        """
        cfg = self._input(source)
        loaded = cfg.loaded
        state = self._state(cfg.cluster, "plan")
        outcome = Outcome(state.name)
        applied = state.applied_text()
        if applied is not None:
            outcome.events = self._check_changes(state, applied, loaded, opts.action,
                                                 walk=bool(opts.flags.get("upgrade_walk")))
        record = _record(state)
        tmpl = loaded.config.cluster.node_template
        with planned_access(state, tmpl.user, tmpl.ssh.private_key_path) as (ssh, own):
            leaving_checked = False
            for i, stage in enumerate(self.registry.stages):
                if stage.config_topology and not leaving_checked:  # nodes leave before machines go
                    leaving_checked = True
                    await self._nodes_leaving(state, loaded, record, ssh, opts, outcome, "plan", save=lambda: None)
                ctx = self._context(state, loaded, record, stage, ssh, opts, save=lambda: None)
                changes = await self._call(state.name, stage, "plan", ctx, extra=own if i == 0 else ())
                outcome.stages.append((stage.name, 0.0, changes))
        return outcome

    async def destroy(self, cluster: str, opts: Options) -> Outcome:
        """Destroys every stage's layer in reverse order, then removes the cluster directory.

        Never blocked by the config: the stored config is loaded without today's version policy
        and, if unusable, the machine layers work from the record (the hosts each provider
        recorded). A damaged or lost record makes them sweep their hosts by ownership tag.
        """
        state = self._state(cluster, "destroy")
        if not state.exists():
            raise EngineError(f"cluster '{cluster}' does not exist (in {state.dir.parent})")
        outcome = Outcome(cluster)
        if not self.confirm(Confirmation(f"Cluster '{cluster}' will be destroyed. Continue?",
                                         data_loss=destroy_loss(cluster, self._recorded_nodes(state)))):
            raise Aborted("User aborted.")
        # Layers that live on the machines (services, Kubernetes) need no teardown of their own
        # when the machines themselves are deleted next; plugins read this flag.
        opts.flags.setdefault("machines_deleted", True)
        with state.lock(opts.wait_lock), contextlib.ExitStack() as run_log:
            if not state.exists():
                outcome.message = f"Cluster '{cluster}' was destroyed meanwhile by another kubitect process."
                return outcome
            record, damaged = self._record_for_destroy(state, outcome)
            loaded = self._config_for_destroy(state, outcome)
            record_lost = damaged or not state.record_path.exists()
            if loaded.config is None and record_lost and not opts.force:
                raise EngineError(
                    f"cannot tell which hosts hold cluster '{cluster}': neither its config nor its record "
                    f"can be read (see above). Restore {state.config_path.name} or {state.record_path.name}, "
                    f"or pass --force to remove {state.dir} without removing anything on the hosts.")
            ssh = self._ssh(state, loaded, create=False)
            run_log.enter_context(self._run_log(state, "destroy"))
            for stage in reversed(self.registry.stages):
                entry = record.get("stages", {}).get(stage.name, {})
                never_made = not entry.get("data") and \
                    entry.get("status", "never") in ("never", "destroyed", "skipped")
                if never_made and not (stage.destroy_without_record and record_lost):
                    # Nothing of it was ever made. Only a lost record makes the machine layers
                    # sweep their hosts by tag anyway.
                    continue
                entry = state.stage_entry(record, stage.name)
                if loaded.config is None and not stage.destroy_without_record:
                    outcome.notes.append(f"stage '{stage.name}': skipped without a config; what it made lives "
                                         "on the machines deleted next")
                else:
                    ctx = self._context(state, loaded, record, stage, ssh, opts, lenient=True,
                                        save=lambda r=record: None if damaged else state.save_record(r))
                    t0 = time.monotonic()
                    try:
                        changes = await self._call(state.name, stage, "destroy", ctx)
                    except StageError as exc:
                        if not opts.force:
                            if not damaged:
                                state.save_record(record)
                            raise EngineError(
                                f"{exc}\nNothing was deleted from {state.dir}; re-run destroy once the cause is "
                                f"fixed. If a host is gone for good, `kubitect destroy --cluster {cluster} --force` "
                                "finishes and lists what it could not remove.") from None
                        detail = exc.detail if isinstance(exc, StageFailed) else str(exc)
                        outcome.leftovers += [f"{stage.name}: {line}" for line in detail.splitlines()]
                        changes = []
                    outcome.stages.append((stage.name, time.monotonic() - t0, changes))
                outcome.notes += self._undo_receipts(entry)
                entry.update(status="destroyed", data={})
                if not damaged:
                    state.save_record(record)
            state.remove()
        return outcome

    async def verify(self, cluster: str, opts: Options) -> Outcome:
        """Runs the verify stage alone against an existing cluster, with its stored config."""
        state = self._state(cluster, "verify")
        text = state.config_text()
        if text is None:
            raise EngineError(f"cluster '{cluster}' does not exist (in {state.dir.parent})")
        loaded = self.load_raw(text, str(state.config_path))
        outcome = Outcome(cluster)
        stage = self.registry.stage("verify")
        with state.lock(opts.wait_lock):
            record = _record(state)
            missing = [r for r in stage.requires if not state.ever_completed(record, r)]
            if missing:
                raise EngineError(f"cluster '{cluster}' has no {', '.join(missing)} yet: apply it first")
            await self._run(state, loaded, text, [stage], "apply", opts, outcome, command="verify")
        return outcome

    # internals ---------------------------------------------------------------------------
    def _applied_topology(self, state: ClusterState) -> Topology | None:
        """The last applied config's topology (what the leaving nodes were), None if unreadable.

        Loaded only when nodes leave, and once per text (a 2,000-node config costs a validation)."""
        from kubitect_core.config import ConfigError

        text = state.applied_text()
        if text is None:
            return None
        if self._applied_cache and self._applied_cache[0] == text:
            return self._applied_cache[1]
        try:
            topology = self.load_raw(text, str(state.applied_path)).topology
        except ConfigError:
            topology = None
        self._applied_cache = (text, topology)
        return topology

    def _removed_data_disks(self, state: ClusterState, loaded) -> list[str]:
        """`node/disk` for every data disk of a node the new config removes."""
        old = self._applied_topology(state)
        if old is None:
            return []
        keep = {n.name for n in loaded.topology.nodes}
        return [f"{n.name}/{d.name}" for n in old.nodes if n.name not in keep for d in n.data_disks]

    async def _nodes_leaving(self, state: ClusterState, loaded, record, ssh, opts: Options, outcome: Outcome,
                             action: str, save) -> None:
        """The removal phase (`kubitect_core.leaving`): before the machine stages delete the machines
        of nodes gone from the config, plugins make way and the installer drains and deletes them."""
        from kubitect_core.leaving import NodesLeaving, gone_names, leaving_nodes

        entries = record.get("stages", {})
        vms = (entries.get("vms") or {}).get("data") or {}
        kube_stage = next((s for s in self.registry.stages if s.name == "kubernetes"), None)
        if not vms or kube_stage is None or loaded.config is None or not gone_names(loaded.topology, vms):
            return
        nodes = leaving_nodes(loaded.topology, self._applied_topology(state), vms)
        if not nodes:
            return
        kube_ran = bool(((entries.get("kubernetes") or {}).get("data") or {}).get("nodes"))
        step = NodesLeaving(nodes, kube_ran)
        ctx = self._context(state, loaded, record, kube_stage, ssh, opts, save=save)
        t0 = time.monotonic()
        changes = await self._call(state.name, step, action, ctx)
        if action == "apply":
            save()
        outcome.stages.append((step.name, time.monotonic() - t0, changes))

    def _confirm_changes(self, state: ClusterState, events: list[ChangeEvent], loaded=None,
                         opts: Options | None = None) -> None:
        """One question for all changes. Data disks of removed nodes go only with explicit consent:
        `--delete-data-disks` or a yes at the prompt (`-y` alone is not enough: a data disk is the
        one thing a re-run cannot bring back)."""
        removes_nodes = any(e.kind == "delete" and e.path.startswith("cluster.nodes.") and e.path.endswith("]")
                            and ".instances[" in e.path for e in events)
        disks = self._removed_data_disks(state, loaded) if loaded is not None and removes_nodes else []
        flagged = bool(opts and opts.flags.get("delete_data_disks"))
        explicit = DELETE_DATA_DISKS if disks and not flagged else None
        if not self.confirm(Confirmation("Apply these changes?", events, data_loss(events, state.name),
                                         explicit=explicit)):
            if explicit:
                raise Aborted(f"Not confirmed: removed nodes have data disks ({', '.join(disks)}). Pass {explicit} "
                              "to delete them with their nodes (or answer yes at the prompt), or keep the nodes in "
                              "the config.")
            raise Aborted("User aborted.")
        if disks and opts is not None:
            opts.flags["delete_data_disks"] = True  # confirmed: the machine layers may delete them

    def _check_changes(self, state: ClusterState, applied_text: str, loaded, action: str,
                       walk: bool = False) -> list[ChangeEvent]:
        from kubitect_core.config import ConfigError, parse_yaml

        try:
            applied = self.load_raw(applied_text, str(state.applied_path))
            self._applied_cache = (applied_text, applied.topology)  # the removal phase reads it again
            old = resolved_dump(applied)
        except ConfigError:
            # The applied config no longer validates (e.g. a version range moved): compare raw.
            advice = "move it aside to apply without comparing to the last applied config"
            try:
                old = parse_yaml(applied_text, str(state.applied_path))
            except ConfigError as exc:
                reason = exc.issues[0].message if exc.issues else str(exc)
                raise StateFileError(state.applied_path, f"is not a readable config ({reason}); {advice}") from None
            if not isinstance(old, dict):
                raise StateFileError(state.applied_path, f"is not a kubitect config (its top level is not a "
                                                         f"mapping); {advice}") from None
            events = evaluate(old, loaded.raw, action, walk=walk)
        else:
            events = evaluate(old, resolved_dump(loaded), action, walk=walk)
        errors = [e for e in events if e.severity == "error"]
        if errors:
            raise ChangesRefused(events)
        return events

    def _recorded_nodes(self, state: ClusterState) -> list[str]:
        """Node names the vms stage recorded (for the destroy prompt); none if unreadable."""
        try:
            data = state.load_record().get("stages", {}).get("vms", {}).get("data", {})
        except StateFileError:
            return []
        names: list[str] = []
        for slice_ in data.values():
            nodes = slice_.get("nodes") if isinstance(slice_, dict) else None
            if isinstance(nodes, dict):
                names += [n for n in nodes if isinstance(n, str)]
        return sorted(set(names))

    def _record_for_destroy(self, state: ClusterState, outcome: Outcome) -> tuple[dict[str, Any], bool]:
        try:
            return state.load_record(), False
        except StateFileError as exc:
            note = f"{exc}: finding this cluster's objects by their ownership tags instead"
            outcome.notes.append(note)
            self.say(f"warning: {note}")
            return {"stages": {}}, True

    def _config_for_destroy(self, state: ClusterState, outcome: Outcome):
        """The stored config, validated without the version policy (destroy needs no version);
        a stand-in without config when neither stored copy can be used."""
        from kubitect_core.config import ConfigError, parse_yaml, validate_raw
        from kubitect_core.config.context import InstallerInfo

        context = validation_context(self.registry, local=self.local)
        context.installers = {name: InstallerInfo(("0.0.0", "99999.0.0"), "0.0.0") for name in context.installers}
        problems = []
        for path in (state.config_path, state.applied_path):
            try:
                text = _read_or_none(path)
                if text is None:
                    continue
                try:
                    return self.load_raw(text, str(path), context)
                except ConfigError as exc:
                    if not exc.issues or any(not i.path.startswith("kubernetes.version") for i in exc.issues):
                        raise
                    raw = parse_yaml(text, str(path))  # only the version is refused: destroy needs none
                    raw.get("kubernetes", {}).pop("version", None)
                    return validate_raw(raw, source=str(path), context=context)
            except StateFileError as exc:
                problems.append(str(exc))
            except ConfigError as exc:
                first = exc.issues[0] if exc.issues else None
                problems.append(f"{path}: {first.path + ': ' if first and first.path else ''}"
                                f"{first.message if first else exc}")
        for p in problems:
            note = f"{p}: destroying from the record"
            outcome.notes.append(note)
            self.say(f"warning: {note}")
        return _RecordOnly(None, Topology(state.name, (), None, "", None))

    def _undo_receipts(self, entry: dict[str, Any]) -> list[str]:
        """Removes kubeconfig entries a stage merged and did not remove itself (e.g. a stage that
        could not run without its config): destroy leaves no kubeconfig entry behind."""
        from kubitect_core import kubeconfig

        receipt = (entry.get("data") or {}).get(kubeconfig.RECEIPT_KEY)
        if not isinstance(receipt, dict) or "file" not in receipt:
            return []
        try:
            removal = kubeconfig.remove_from(receipt)
        except (kubeconfig.KubeconfigError, OSError) as exc:
            return [f"could not remove the cluster's entries from {receipt['file']}: {exc}"]
        return [f"removed {e} from {receipt['file']}" for e in removal.removed] + \
            [f"left {e} in {receipt['file']}" for e in removal.kept]

    def _ssh(self, state: ClusterState, loaded, *, create: bool):
        if loaded.config is None:
            d = state.ssh_dir
            return SshAccess("", d / "id_ed25519", d / "id_ed25519.pub", d / "known_hosts")
        tmpl = loaded.config.cluster.node_template
        if create:
            return ensure_cluster_key(state, tmpl.user, tmpl.ssh.private_key_path)
        d = state.ssh_dir
        return SshAccess(tmpl.user, d / "id_ed25519", d / "id_ed25519.pub", d / "known_hosts")

    @contextlib.contextmanager
    def _run_log(self, state: ClusterState, command: str):
        """Opens the command's run log in the cluster directory and installs it for remote.py and
        as an observer of stage events (kubitect_core.runlog). A log that cannot be opened costs a
        warning, never the run."""
        try:
            log = runlog.open_log(state.dir / "logs", command, cluster=state.name, live=self.live_log, warn=self.say)
        except OSError as exc:
            self.say(f"warning: no run log for this run: {exc.strerror or exc}: {state.dir / 'logs'}")
            yield None
            return
        self.log_path = log.path
        self.registry.pm.register(log, name=f"run-log-{id(log)}")
        try:
            with runlog.installed(log):
                yield log
        finally:
            self.registry.pm.unregister(log)
            log.close()

    def _context(self, state, loaded, record, stage: Stage, ssh, opts: Options, save,
                 lenient: bool = False) -> StageContext:
        """The stage's view: its own record slice, earlier stages' facts, and the topology.

        The topology is the as-built one (the config's nodes with what the vms stage recorded:
        leased addresses, MACs, hosts, domains) for every stage except the machine layers, which
        converge to the config (`Stage.config_topology`). See `StageContext`. A vms record that
        holds no valid address is an error, except when `lenient` (destroy must always work):
        then the config's topology stands in.
        """
        from kubitect_core.topology import RecordError, as_built, recorded_nodes

        entry = state.stage_entry(record, stage.name)
        facts = {name: e.get("data", {}) for name, e in record.get("stages", {}).items()}
        topology = loaded.topology
        if not stage.config_topology:
            try:
                topology = as_built(topology, recorded_nodes(facts.get("vms") or {}))
            except RecordError as exc:
                if not lenient:
                    raise EngineError(f"{state.record_path}: {exc}") from None
        return StageContext(
            cluster=state.name, config=loaded.config, topology=topology, cluster_dir=state.dir,
            home=self.home, ssh=ssh, record=entry.setdefault("data", {}), facts=facts,
            progress=lambda subject, message, s=stage.name: self.hook.kubitect_stage_progress(
                cluster=state.name, stage=s, subject=subject, message=message),
            extensions=dict(loaded.extensions), options=dict(opts.flags), checkpoint=save,
        )

    async def _call(self, cluster: str, stage: Stage, action: str, ctx: StageContext,
                    extra: Sequence[Change] = ()) -> list[Change]:
        where = {"cluster": cluster, "stage": stage.name, "action": action, "cluster_dir": ctx.cluster_dir}
        self.hook.kubitect_stage_started(**where)
        t0 = time.monotonic()
        try:
            changes = list(extra) + list(await getattr(stage, action)(ctx, self.registry) or [])
        except StageSkipped as skip:
            self.hook.kubitect_stage_finished(**where, ok=True, seconds=time.monotonic() - t0, changes=[],
                                              error=f"skipped: {skip}")
            raise
        except Exception as exc:
            detail = describe_error(exc)
            runlog.log_exception(exc)
            self.hook.kubitect_stage_finished(**where, ok=False, seconds=time.monotonic() - t0, changes=[],
                                              error=detail)
            if isinstance(exc, EngineError):
                raise
            raise StageFailed(stage.name, action, detail) from exc
        self.hook.kubitect_stage_finished(**where, ok=True,
                                          seconds=time.monotonic() - t0, changes=changes, error=None)
        return changes

    async def _run(self, state: ClusterState, loaded, raw_text: str, stages: Sequence[Stage], action: str,
                   opts: Options, outcome: Outcome, command: str = "apply") -> None:
        record = _record(state)  # before anything is written: a damaged record stops here
        state.create()
        state.save_config(raw_text)
        ssh = self._ssh(state, loaded, create=True)
        with self._run_log(state, command):
            await self._run_stages(state, loaded, record, ssh, stages, action, opts, outcome)

    async def _run_stages(self, state: ClusterState, loaded, record, ssh, stages: Sequence[Stage], action: str,
                          opts: Options, outcome: Outcome) -> None:
        leaving_checked = action != "apply"
        for stage in stages:
            if stage.config_topology and not leaving_checked:  # nodes leave before machines go
                leaving_checked = True
                await self._nodes_leaving(state, loaded, record, ssh, opts, outcome, "apply",
                                          save=lambda: state.save_record(record))
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
            except (KeyboardInterrupt, asyncio.CancelledError):
                state.mark(record, stage.name, "interrupted")
                state.save_record(record)
                raise
            except BaseException:
                state.mark(record, stage.name, "failed")
                state.save_record(record)
                raise
            state.mark(record, stage.name, "completed")
            state.save_record(record)
            outcome.stages.append((stage.name, time.monotonic() - t0, changes))


def _record(state: ClusterState) -> dict[str, Any]:
    """The record for a command that builds on it; a damaged one stops the command with advice."""
    try:
        return state.load_record()
    except StateFileError as exc:
        raise StateFileError(exc.path, f"{exc.problem}. kubitect will not guess what exists: restore the file, "
                             f"or destroy the cluster (`kubitect destroy --cluster {state.name}` works without "
                             "it, by ownership tags)") from None


def _read_or_none(path: Path) -> str | None:
    from kubitect_core.state import read_state_text

    return read_state_text(path)


class ChangesRefused(EngineError):
    """The new config changes something the chosen action may not change."""

    def __init__(self, events: list[ChangeEvent]):
        super().__init__("The configuration contains changes that are not allowed.")
        self.events = events


def run_sync(coro) -> Any:
    """Runs an engine coroutine from the synchronous CLI; SIGTERM is handled like Ctrl-C.

    Both cancel the running command, so the stage in progress is recorded as interrupted (not
    left "running"), and the process exits through the usual interrupt path.
    """
    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_term)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
        try:
            return await coro
        except asyncio.CancelledError:
            if terminated:
                raise Terminated() from None
            raise
        finally:
            try:
                loop.remove_signal_handler(signal.SIGTERM)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    return asyncio.run(main())
