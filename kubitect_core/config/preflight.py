"""Machine checks that belong to the config: the key files it names exist on this machine.

Static validation needs only the file (so the seed validates anywhere); these run on apply and
on `kubitect validate --preflight`. The engine adds provider checks (hosts reachable, bridges).
"""

from __future__ import annotations

import os
from pathlib import Path

from kubitect_core.config.errors import ConfigError, ConfigIssue, format_path
from kubitect_core.config.loader import LoadedConfig
from kubitect_core.config.source import read_config_file
from kubitect_core.config.yamlmarks import YamlProblem, parse


def _key_issue(source: Path | None, loc: tuple, path: str, what: str, marks) -> ConfigIssue | None:
    expanded = Path(os.path.expanduser(path))
    if expanded.is_file():
        return None
    line, col = marks.position(loc) if marks else (None, None)
    reason = "is a directory" if expanded.is_dir() else "does not exist"
    source = str(source) if source else "<config>"
    return ConfigIssue(format_path(loc), f"{what} '{expanded}' {reason}; it must be an existing file.",
                       source, line, col)


def preflight(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Key files named by a loaded config exist; issues carry the lines of the text validated."""
    return preflight_config(loaded.config, loaded.source, marks=loaded.marked)


def preflight_config(config, source: Path | None = None, *, marks=None) -> list[ConfigIssue]:
    """Key files named by the config exist (`~` expanded): host keyfiles, privateKeyPath and .pub.

    Takes the resolved config alone (plus the file, for line numbers), so the validate stage,
    which holds no LoadedConfig, checks exactly what `kubitect validate --preflight` checks.
    """
    if marks is None and source is not None:
        try:  # through the one guarded reader: the file may since have become a FIFO or huge
            marks = parse(read_config_file(source))
        except (ConfigError, YamlProblem):  # the file changed since it was validated: no lines
            marks = None
    issues: list[ConfigIssue] = []
    for i, host in enumerate(config.hosts):
        keyfile = host.connection.ssh.keyfile
        if keyfile and not host.connection.is_local:
            issue = _key_issue(source, ("hosts", i, "connection", "ssh", "keyfile"), keyfile,
                               f"the SSH key of host '{host.name}'", marks)
            if issue:
                issues.append(issue)
    private = config.cluster.node_template.ssh.private_key_path
    if private:
        loc = ("cluster", "nodeTemplate", "ssh", "privateKeyPath")
        for path, what in ((private, "the node private key"), (private + ".pub", "its public key")):
            issue = _key_issue(source, loc, path, what, marks)
            if issue:
                issues.append(issue)
    return issues
