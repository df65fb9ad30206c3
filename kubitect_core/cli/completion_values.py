"""What the shell completes after an option: cluster names, preset names, stage and action names.

Each function is a typer autocompletion callback `(ctx, incomplete) -> [(value, help), ...]`. They
read what exists right now (the home's clusters/, the installed plugins' stages), never fail (a
completion that raises prints a traceback into the user's prompt), and stay cheap: no config is
validated and no host is contacted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ACTIONS = {"create": "create the cluster or converge it to the config",
           "upgrade": "upgrade Kubernetes to the config's version",
           "scale": "add or remove workers as the config says"}


def _param(ctx: Any, name: str) -> Any:
    try:
        return (ctx.params or {}).get(name)
    except AttributeError:
        return None


def _homes(ctx: Any) -> list[tuple[Path, bool]]:
    """The homes a --cluster value may name: --home if given, else the kubitect home and
    ./.kubitect (local clusters)."""
    from kubitect_core.paths import kubitect_home

    home = _param(ctx, "home")
    if home:
        return [(kubitect_home(home), False)]
    return [(kubitect_home(None), False), (Path.cwd() / ".kubitect", True)]


def cluster_names(ctx: Any = None) -> list[tuple[str, str]]:
    """Every cluster directory name with a word on where it is."""
    found: dict[str, str] = {}
    for home, local in _homes(ctx):
        root = home / "clusters"
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    # short: typer renders help through rich, which wraps (and so splits) long lines
                    found.setdefault(entry.name, "local cluster (./.kubitect)" if local else "cluster")
            except OSError:
                continue
    return sorted(found.items())


def clusters(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    return [(n, h) for n, h in cluster_names(ctx) if n.startswith(incomplete)]


def presets(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    try:
        from kubitect_core.config import list_presets

        names = list_presets()
    except Exception:  # noqa: BLE001 - completion must never fail
        return []
    return [(n, "preset") for n in names if n.startswith(incomplete)]


def stage_names() -> list[tuple[str, str]]:
    """The pipeline's stages in order, from the installed plugins (built-in names if they fail)."""
    try:
        from kubitect_core.plugins import load_registry

        return [(s.name, s.description) for s in load_registry().stages]
    except Exception:  # noqa: BLE001 - completion must never fail
        return [(n, "stage") for n in ("validate", "network", "storage", "vms", "loadbalancers", "kubernetes",
                                       "verify")]


def stages(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    chosen = set(_param(ctx, "stage") or ())
    return [(n, h) for n, h in stage_names() if n.startswith(incomplete) and n not in chosen]


def actions(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    return [(n, h) for n, h in ACTIONS.items() if n.startswith(incomplete)]


def commands(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """For `kubitect help WORDS`: the visible subcommands of the group the words typed so far reach."""
    try:
        group = ctx.find_root().command
        for word in _param(ctx, "command") or ():
            group = group.commands[word]
        return [(name, cmd.get_short_help_str()) for name, cmd in sorted(group.commands.items())
                if not cmd.hidden and name.startswith(incomplete)]
    except (AttributeError, KeyError):
        return []
