"""Where binaries come from (upstream or preinstalled), and whether this machine or a node reaches it.

Every probe is bounded: a missing internet connection must never hang a run.
"""

from __future__ import annotations

import shlex
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from kubitect_core.contracts import StageContext
from kubitect_core.remote import Remote
from kubitect_core.stage import StageError

SOURCE_UPSTREAM = "upstream"  # download packages/binaries from the upstream repositories (default)
SOURCE_PREINSTALLED = "preinstalled"  # no download: the binaries must already be on the nodes
SOURCES = (SOURCE_UPSTREAM, SOURCE_PREINSTALLED)
PROBE_TIMEOUT = 5.0  # seconds: the internet probe must never hang a run


def source(ctx: StageContext) -> str:
    """Where binaries come from: `upstream` (default) or `preinstalled` (option installer_source).

    `preinstalled` exists for air-gapped nodes and for the lab, where test doubles stand in for
    kubeadm/k3s: nothing is downloaded and apply checks that the binaries are present.
    """
    value = str(ctx.options.get("installer_source") or SOURCE_UPSTREAM)
    if value not in SOURCES:
        raise StageError(f"installer_source '{value}' is unknown (choose one of: {', '.join(SOURCES)})")
    return value


def probe_timeout(ctx: StageContext) -> float:
    """Seconds the internet probe may take (option probe_timeout, default PROBE_TIMEOUT)."""
    return float(ctx.options.get("probe_timeout") or PROBE_TIMEOUT)


def ready_timeout(ctx: StageContext) -> float:
    """Seconds to wait for nodes to become Ready (option ready_timeout, default 600)."""
    return float(ctx.options.get("ready_timeout") or 600)


def probe_url(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when `url` answers (any HTTP status), else a short reason; bounded by `timeout`."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "kubitect-probe"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):  # noqa: S310 - fixed https URLs
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: reachable
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def unreachable_reason(urls: list[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """A message naming the first source that cannot be reached from this machine, else None.

    Hard-bounded: name resolution is not covered by urllib's timeout, so each probe runs in a
    daemon thread that is abandoned when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    for url in urls:
        left = max(0.5, deadline - time.monotonic())
        box: list[str | None] = []
        worker = threading.Thread(target=lambda u=url, t=left, b=box: b.append(probe_url(u, t)), daemon=True)
        worker.start()
        worker.join(left + 0.5)
        problem = box[0] if box else f"no answer within {timeout:g}s"
        if problem is not None:
            return f"cannot reach {url} from this machine ({problem}); the internet is needed to download it"
    return None


def download_reason(ctx: StageContext, urls: Callable[[], list[str]]) -> str | None:
    """None when nothing is downloaded (installer_source=preinstalled) or every URL answers here.

    `urls` is called only when downloading, so a preinstalled run never computes (or probes) them.
    """
    if source(ctx) == SOURCE_PREINSTALLED:
        return None
    return unreachable_reason(urls(), probe_timeout(ctx))


async def node_unreachable_reason(node: Remote, urls: list[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """Same probe, run on a node with curl (the node downloads, so the node must reach it)."""
    for url in urls:
        cmd = f"curl -sS -o /dev/null -I --max-time {int(timeout)} {shlex.quote(url)}"
        res = await node.run(cmd, check=False, timeout=timeout + 5)
        if not res.ok:
            detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.exit_status}"
            return f"cannot reach {url} from {node.label} ({detail}); the internet is needed to download it"
    return None
