"""Commands of the image_cmds group (filled in by its owner)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds this group's commands to the root app."""
