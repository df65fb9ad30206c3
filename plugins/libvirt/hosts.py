"""The libvirt hosts of a run: what to reach (config or record), one connection each, a call on each.

Each host is driven through its own `HostConnection` (one connection, one worker thread); the
hosts of one call are converged concurrently, and a failure names every host that failed and
why. The three layers (network, storage, vms) share one `Hosts`, so a run opens one connection
per host however many layers it converges.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubitect_core.sdk import Change, Node, StageContext

from .connection import ConnectionCache, HostConnection
from .host_ssh import HostSsh
from .spec import HostSpec, host_specs


class LibvirtError(RuntimeError):
    """A libvirt layer failed on one or more hosts; the message names each host and cause."""


def _host_line(host: str, exc: BaseException) -> str:
    """`host: cause`, once: causes that already name the host ("host h1: ...") are not prefixed again."""
    text = str(exc).strip() or type(exc).__name__
    for prefix in (f"host {host}: ", f"{host}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return f"{host}: {text}"


def nodes_on(ctx: StageContext, host: str) -> list[Node]:
    """The nodes the config places on `host`."""
    return [n for n in ctx.topology.nodes if n.host == host]


def threadsafe(ctx: StageContext, subject: str) -> Callable[[str], None]:
    """A progress callback usable from a worker thread: it hops back onto the event loop."""
    loop = asyncio.get_running_loop()

    def say(message: str) -> None:
        loop.call_soon_threadsafe(ctx.progress, subject, message)

    return say


HostCall = Callable[[HostSpec, HostConnection], Awaitable[list[Change]]]


class Hosts:
    """The run's connections to libvirt hosts, and how a layer works on several hosts at once."""

    def __init__(self) -> None:
        self.connections = ConnectionCache()
        self._scratch: tempfile.TemporaryDirectory | None = None

    def ssh_dir(self, ctx: StageContext) -> Path:
        """Where hosts' pinned keys and ssh wrappers live: the cluster's ssh dir. A plan of a
        cluster never applied creates no cluster directory: it uses a scratch one for the run."""
        if ctx.cluster_dir.is_dir():
            return ctx.cluster_dir / "ssh"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="kubitect-plan-")
        return Path(self._scratch.name) / "ssh"

    def specs(self, ctx: StageContext, hosts: list[str]) -> dict[str, HostSpec]:
        """The hosts to work on; a host gone from the config is reached through its recorded
        access (or URI), so scaling a host away can still clean it up."""
        specs = host_specs(ctx.config, ctx.options.get("libvirt_uris"), self.ssh_dir(ctx))
        recorded = ctx.record.get("hosts", {})
        out = {}
        for h in hosts:
            if h in specs:
                out[h] = specs[h]
            elif h in recorded:
                ssh = HostSsh.from_record(recorded[h].get("ssh"))
                out[h] = HostSpec(name=h, uri=ssh.uri() if ssh else recorded[h]["uri"], remote=ssh is not None,
                                  main_pool_path="", ssh=ssh)
            else:
                raise LibvirtError(f"host '{h}' is neither configured nor recorded")
        return out

    def connection(self, host: str, uri: str | None = None) -> HostConnection:
        """The run's connection to `host` (tests inspect libvirt state through it)."""
        if uri is None:
            found = self.connections.find(host)
            if found is None:
                raise KeyError(f"no libvirt connection to host {host} has been opened")
            return found
        return self.connections.get(host, uri)

    def close(self) -> None:
        """Closes every connection (the end of a process run)."""
        self.connections.close_all()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    async def each(self, ctx: StageContext, hosts: list[str], fn: HostCall, record: bool = True) -> list[Change]:
        """Runs `fn` on every host concurrently; raises one LibvirtError naming each failed host.

        With `record`, remembers in the layer's record how each host was reached, so a host
        later removed from the config can still be cleaned up.
        """
        specs = self.specs(ctx, hosts)
        if record:
            ctx.record.setdefault("hosts", {})
            for h, spec in specs.items():
                ctx.record["hosts"].setdefault(h, {})["uri"] = spec.uri
                if spec.ssh is not None:
                    ctx.record["hosts"][h]["ssh"] = spec.ssh.as_record()
        results = await asyncio.gather(*(fn(spec, self.connections.get(h, spec.uri, spec.ssh))
                                         for h, spec in specs.items()), return_exceptions=True)
        changes: list[Change] = []
        errors = []
        for h, res in zip(specs, results, strict=True):
            if isinstance(res, BaseException):
                errors.append(_host_line(h, res))
            else:
                changes += res
        if errors:
            raise LibvirtError("\n".join(errors))
        return changes


class ConvergingLayer:
    """Base of the provider's three layers: plan and apply run one code path, `_converge` with
    `dry_run`, so a plan lists exactly what apply would do."""

    def __init__(self, hosts: Hosts):
        self.hosts = hosts

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """What apply would do on these hosts; touches nothing."""
        return await self._converge(ctx, hosts, dry_run=True)

    async def apply(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Converges this layer on these hosts; a second call returns only "keep"."""
        return await self._converge(ctx, hosts, dry_run=False)

    async def _converge(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        raise NotImplementedError
