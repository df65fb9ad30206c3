"""Templates next to the plugin that renders them (ARCHITECTURE.md: jinja2 files, golden-tested).

Every plugin wants the same strictness: an undefined variable is an error (never an empty
string in a config file), and a file keeps its final newline. This is that environment, once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # jinja2 itself loads when a plugin first renders (fast start)
    import jinja2


def templates(anchor: str | Path, *, trim: bool = False, escape_xml: bool = False) -> jinja2.Environment:
    """The jinja2 environment over the folder of `anchor` (a plugin module's `__file__`, or a folder).

    `trim` drops the newline after a block tag and the indentation before it (for templates
    with many `{% if %}` lines); `escape_xml` autoescapes templates named `*.xml.j2`, so values
    reach XML escaped. One environment per folder and options, shared for the process; a plugin
    may add its own filters to it.
    """
    folder = Path(anchor)
    if folder.suffix == ".py" or folder.is_file():
        folder = folder.parent
    return _environment(str(folder.resolve()), trim, escape_xml)


@cache
def _environment(folder: str, trim: bool, escape_xml: bool) -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml.j2",), default=False) if escape_xml else False,
        trim_blocks=trim,
        lstrip_blocks=trim,
        keep_trailing_newline=True,
    )
