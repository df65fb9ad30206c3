"""`kubitect completion bash|zsh|fish`: the shell script that completes kubitect's command line.

The script calls kubitect back on every TAB (typer's protocol: `_KUBITECT_COMPLETE=complete_<shell>`),
so what it offers is always current: command and option names, and the values in
`completion_values` (cluster names from the home, presets, stages, actions). Where a file name
is wanted (a config), bash falls back to its own file name completion.
"""

from __future__ import annotations

from enum import StrEnum

import typer

PROG = "kubitect"
COMPLETE_VAR = "_KUBITECT_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def install_shell_classes() -> None:
    """Replaces typer's bash completer with one that leaves file names to bash.

    typer answers a file-name position with the typed prefix itself, which bash then inserts as
    the only candidate; answering nothing lets `complete -o default` list the files instead.
    """
    from typer._click.shell_completion import add_completion_class
    from typer._completion_classes import BashComplete, completion_init

    completion_init()  # typer's zsh and fish completers (the root app adds no --install-completion)

    class FileAwareBash(BashComplete):
        def complete(self) -> str:
            args, incomplete = self.get_completion_args()
            items = self.get_completions(args, incomplete)
            if any(item.type in ("file", "dir", "path") for item in items):
                return ""
            return "\n".join(self.format_completion(item) for item in items)

    add_completion_class(FileAwareBash, Shell.bash.value)


def script(shell: Shell | str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=Shell(shell).value) + "\n"


def completion(shell: Shell = typer.Argument(..., help="bash, zsh or fish.", case_sensitive=False)) -> None:
    """Print the shell completion script: commands, options, cluster names, presets, stages.

    bash:  source <(kubitect completion bash)      (add to ~/.bashrc to keep it)

    zsh:   kubitect completion zsh > "${fpath[1]}/_kubitect"

    fish:  kubitect completion fish > ~/.config/fish/completions/kubitect.fish

    Example: kubitect completion bash > ~/.local/share/bash-completion/completions/kubitect
    """
    typer.echo(script(shell), nl=False)


def register(app: typer.Typer) -> None:
    """Adds `completion` to the root app."""
    app.command("completion")(completion)
