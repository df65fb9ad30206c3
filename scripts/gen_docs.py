"""The docs site's reference pages, generated from the code so they cannot drift from it.

- `reference/config.md`: every config field from the pydantic models (`kubitect_core.config.models`)
  and the config extensions of the installed plugins (e.g. `cluster.nodes.loadBalancer.vrrp`), each
  with its type, default, description and an example placed at its full YAML path.
- `reference/cli.md`: every visible command of the typer/click tree with its usage, help, example(s),
  arguments and options.

Why generated at build time rather than committed: the pages then always describe the code the
site is built from (no stale copy to forget), and branches that add a field or an option never
conflict on a generated file. Used three ways:

- as a MkDocs hook (`hooks:` in mkdocs.yml): `on_files` adds both pages to the build;
- as a script, `python scripts/gen_docs.py [--out DIR]`, which writes them as files (default
  `docs/reference/`, ignored by git) to read or diff;
- by tests (tests/unit/test_docs_reference.py), which check that every field and every command
  appears.

Examples come from the shipped configs (examples/*.yaml, the presets), which the test suite
validates; a field none of them sets takes its example from `EXTRA_EXAMPLES` below, and a test
checks each of those against the field's own type.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"
# Example configs, in the order their values are preferred: the fullest first.
EXAMPLE_FILES = ("examples/full.yaml", "examples/ha.yaml", "examples/lab-nspawn.yaml")

# Values for fields no shipped config sets, by YAML path ("[]" marks a list item).
EXTRA_EXAMPLES: dict[str, Any] = {
    "hosts[].connection.ssh": {"keyfile": "~/.ssh/id_rsa_server1", "port": 22, "verify": False},
    "hosts[].dataResourcePools[]": {"name": "data-pool", "path": "/mnt/data/pool"},
    "cluster.network.mode": "nat",
    "cluster.nodeTemplate.os.source": "https://cloud-images.ubuntu.com/releases/jammy/release/"
                                      "ubuntu-22.04-server-cloudimg-amd64.img",
    "cluster.nodes.loadBalancer.implementation": "keepalived-haproxy",
    "cluster.nodes.loadBalancer.instances[].mainDiskSize": 16,
    "cluster.nodes.master.instances[].cpu": 4,
    "cluster.nodes.master.instances[].ram": 8,
    "cluster.nodes.master.instances[].mainDiskSize": 64,
    "cluster.nodes.master.instances[].labels": {"topology.kubernetes.io/zone": "rack-1"},
    "cluster.nodes.master.instances[].taints": ["dedicated=control-plane:NoSchedule"],
    "cluster.nodes.master.instances[].dataDisks[]": {"name": "etcd-backup", "pool": "main", "size": 20},
    "cluster.nodes.master.default.dataDisks[]": {"name": "scratch", "pool": "main", "size": 10},
    "cluster.nodes.worker.default.mainDiskSize": 64,
    "cluster.nodes.worker.default.taints": ["workload=batch:PreferNoSchedule"],
    "cluster.nodes.worker.default.dataDisks[]": {"name": "scratch", "pool": "main", "size": 10},
    "cluster.nodes.worker.instances[].mac": "52:54:00:00:00:60",
    "cluster.nodes.worker.instances[].mainDiskSize": 64,
    "kubernetes.manager": "kubeadm",
    "kubernetes.dnsMode": "coredns",
    "addons.kubespray": {"ingress_nginx_enabled": True},
    "addons.rook.version": "v1.20.6",
    "cluster.nodes.loadBalancer.vrrp": {"profile": "standard", "advertInt": 0.3},
    "cluster.nodes.loadBalancer.vrrp.profile": "standard",
    "cluster.nodes.loadBalancer.vrrp.advertInt": 0.2,
    "cluster.nodes.loadBalancer.vrrp.unicast": False,
    "cluster.nodes.loadBalancer.vrrp.preempt": True,
    "cluster.nodes.loadBalancer.vrrp.checkInterval": 2,
    "cluster.nodes.loadBalancer.vrrp.checkFall": 5,
    "cluster.nodes.loadBalancer.vrrp.checkRise": 3,
    "cluster.nodes.loadBalancer.vrrp.trackHaproxyExit": False,
    "cluster.nodes.loadBalancer.vrrp.realtime": False,
    "cluster.nodes.loadBalancer.vrrp.rankPriorities": False,
}


# ------------------------------------------------------------------------------------ config
@dataclass
class ConfigField:
    """One field of the config at one YAML path (a shared model appears once per path)."""

    path: str  # YAML path, "[]" after a list: cluster.nodes.master.instances[].ip
    info: FieldInfo
    owner: type[BaseModel]
    name: str  # attribute name on `owner`
    plugin: str = ""  # the plugin whose extension adds it ("" for the core models)
    default: Any = PydanticUndefined  # a default the model only fills when validating (profiles)
    children: list[ConfigField] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.info.alias or self.name

    @property
    def item_path(self) -> str:
        """The path of this field's value: with "[]" when the value is a list of objects."""
        return self.path + "[]" if _is_list(self.info.annotation) and _sub_model(self.info.annotation) else self.path


def _strip_optional(ann: Any) -> Any:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _unannotated(ann: Any) -> tuple[Any, list[Any]]:
    """(base type, Annotated metadata) with Optional and nested Annotated layers removed."""
    meta: list[Any] = []
    ann = _strip_optional(ann)
    while typing.get_origin(ann) is typing.Annotated:
        base, *extra = typing.get_args(ann)
        for m in extra:  # Field(ge=1) inside Annotated keeps its bounds in its own metadata
            meta += [m, *m.metadata] if isinstance(m, FieldInfo) else [m]
        ann = _strip_optional(base)
    return ann, meta


def _sub_model(ann: Any) -> type[BaseModel] | None:
    """The model a field holds directly or as list items, if any."""
    base, _ = _unannotated(ann)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base
    if typing.get_origin(base) is list:
        return _sub_model(typing.get_args(base)[0])
    return None


def _is_list(ann: Any) -> bool:
    return typing.get_origin(_unannotated(ann)[0]) is list


def _fields_of(model: type[BaseModel], prefix: str, plugin: str = "",
               profile_defaults: BaseModel | None = None) -> list[ConfigField]:
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        cf = ConfigField(path=f"{prefix}{key}", info=info, owner=model, name=name, plugin=plugin)
        if info.default is PydanticUndefined and info.default_factory is None and profile_defaults is not None:
            cf.default = getattr(profile_defaults, name, PydanticUndefined)
        sub = _sub_model(info.annotation)
        if sub is not None:
            cf.children = _fields_of(sub, cf.item_path + ".", plugin)
        out.append(cf)
    return out


def config_fields(extensions: list | None = None) -> list[ConfigField]:
    """The config's fields as a tree, extensions inserted at their paths, in the models' order."""
    from kubitect_core.config.models import Config

    if extensions is None:
        extensions = _installed_extensions()
    tree = _fields_of(Config, "")
    for ext in extensions:
        parent = _find(tree, ext.path.split("."))
        if parent is None:
            continue
        try:
            filled = ext.model.model_validate({})  # models that fill defaults when validating (profiles)
        except Exception:  # noqa: BLE001 - a model with required keys has no all-defaults instance
            filled = None
        ext_field = ConfigField(path=f"{parent.item_path}.{ext.key}", info=FieldInfo(
            annotation=ext.model, description=(ext.model.__doc__ or "").strip().split("\n\n")[0]),
            owner=ext.model, name=ext.key, plugin=ext.plugin or "a plugin")
        ext_field.children = _fields_of(ext.model, ext_field.path + ".", ext_field.plugin, filled)
        parent.children.append(ext_field)
    return tree


def _installed_extensions() -> list:
    from kubitect_core.config.context import default_context

    return list(default_context().extensions)


def _find(tree: list[ConfigField], keys: list[str]) -> ConfigField | None:
    node = None
    for key in keys:
        node = next((f for f in tree if f.key == key), None)
        if node is None:
            return None
        tree = node.children
    return node


def walk(tree: list[ConfigField]) -> Iterator[ConfigField]:
    """Every field, parents before their children."""
    for f in tree:
        yield f
        yield from walk(f.children)


# Human names of the config's scalar types (kubitect_core.config.fieldtypes), by alias name.
_SCALAR_NAMES = {
    "AlnumHyp": "string: letters, digits and `-`",
    "AlnumHypUs": "string: letters, digits, `-` and `_`",
    "IPv4": "IPv4 address",
    "IP": "IP address (v4 or v6)",
    "CIDRv4": "IPv4 network (CIDR)",
    "Mac": "MAC address",
    "IfName": "interface name (1-15 characters)",
    "KubeVersion": "version `vMAJOR.MINOR.PATCH` (the `v` is optional)",
    "StrictVersion": "version `vMAJOR.MINOR.PATCH`",
    "NonEmpty": "string (one line, not empty)",
    "Taint": "taint `KEY[=VALUE]:EFFECT`",
    "InstanceId": "string or integer: letters, digits, `-` and `_`",
    "LabelValue": "string (numbers and booleans are written as text)",
}


def _validator_key(meta: list[Any]) -> tuple[int, ...]:
    return tuple(id(m.func) for m in meta if hasattr(m, "func"))


def _scalar_name_by_validator() -> dict[tuple[int, ...], str]:
    """Validator functions of each public alias of the fieldtypes module -> its human name."""
    from kubitect_core.config import fieldtypes

    out = {}
    for alias, text in _SCALAR_NAMES.items():
        key = _validator_key(_unannotated(getattr(fieldtypes, alias))[1])
        if key:
            out[key] = text
    return out


def type_text(ann: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for a field's type, with its bounds: "integer, 1-65535", "list of taint ..."."""
    base, meta = _unannotated(ann)
    meta = list(metadata or []) + meta
    known = _scalar_name_by_validator().get(_validator_key(meta))
    if known:
        return known
    origin = typing.get_origin(base)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(base))
    if origin is list:
        return "list of " + _plural(type_text(typing.get_args(base)[0]))
    if origin is dict:
        value = typing.get_args(base)[1]
        return "map of string to " + ("any value" if value is Any else type_text(value))
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "object"
    if base is bool:
        return "boolean"
    lo = next((m.ge for m in meta if getattr(m, "ge", None) is not None), None)
    hi = next((m.le for m in meta if getattr(m, "le", None) is not None), None)
    if base is int:
        word = "integer"
    elif base is float:
        word = "number"
    elif base is str:
        word = "string"
    else:
        word = getattr(base, "__name__", str(base))
    if lo is not None and hi is not None:
        return f"{word}, {lo}-{hi}"
    if lo is not None:
        return f"{word}, at least {lo}"
    return word


def _plural(text: str) -> str:
    return {"object": "objects"}.get(text, text)


def _default_text(cf: ConfigField) -> str:
    info = cf.info
    if _sub_model(info.annotation) is not None and not _is_list(info.annotation):
        return "see its keys"
    if info.default_factory is not None:
        value = info.default_factory()
        return f"`{_inline(value)}`"
    if cf.default is not PydanticUndefined:
        return f"`{_inline(cf.default)}` (from the profile)"
    value = info.default
    if value is PydanticUndefined:
        return "required" if info.is_required() and not cf.plugin else "—"
    if value is None:
        return "unset"
    return f"`{_inline(value)}`"


def _inline(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, mode="json")
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value) if not isinstance(value, str) else value


def _load_examples() -> list[Any]:
    from kubitect_core.config.presets import list_presets, preset_text

    docs = [yaml.safe_load((ROOT / name).read_text()) for name in EXAMPLE_FILES]
    docs += [yaml.safe_load(preset_text(name)) for name in list_presets()]
    return docs + [_nest(_split(path), value) for path, value in EXTRA_EXAMPLES.items()]


def _nest(keys: list[str], value: Any) -> Any:
    """`value` placed at a path: ["a[]", "b"], 1 -> {"a": [{"b": 1}]}."""
    for key in reversed(keys):
        value = {key[:-2]: [value]} if key.endswith("[]") else {key: value}
    return value


def _values_at(doc: Any, keys: list[str]) -> Iterator[Any]:
    """Values at a path such as ["hosts[]", "connection", "ip"] (every list item is tried)."""
    if not keys:
        yield doc
        return
    key, rest = keys[0], keys[1:]
    name = key.removesuffix("[]")
    if not isinstance(doc, dict) or name not in doc:
        return
    value = doc[name]
    if key.endswith("[]"):
        for item in value if isinstance(value, list) else []:
            yield from _values_at(item, rest)
    else:
        yield from _values_at(value, rest)


def _split(path: str) -> list[str]:
    return path.split(".")


def example_value(cf: ConfigField, docs: list[Any]) -> Any:
    """An example value of the field: from the shipped configs, else `EXTRA_EXAMPLES`; None if none."""
    for path in (cf.item_path, cf.path):
        if path in EXTRA_EXAMPLES:
            return EXTRA_EXAMPLES[path]
    for doc in docs:
        for value in _values_at(doc, _split(cf.item_path)):
            if value not in (None, [], {}):
                return value
    return None


def _trim(value: Any, depth: int) -> Any:
    """An excerpt of a nested example: the first list item, and at most `depth` levels of mappings."""
    if isinstance(value, list):
        return [_trim(value[0], depth)] if value else []
    if isinstance(value, dict):
        if depth <= 0:
            return {k: v for k, v in value.items() if not isinstance(v, dict | list)} or None
        return {k: _trim(v, depth - 1) for k, v in value.items()
                if _trim(v, depth - 1) is not None}
    return value


def example_yaml(cf: ConfigField, value: Any) -> str:
    """The example placed at the field's full path, as YAML a reader can paste into a config."""
    nested = _nest(_split(cf.item_path), _trim(value, 2))
    return yaml.safe_dump(nested, sort_keys=False, default_flow_style=False, width=100).rstrip()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(path: str) -> str:
    return path.replace("[]", "").replace(".", "-").lower()


def config_reference(tree: list[ConfigField] | None = None) -> str:
    """The config reference page (Markdown)."""
    tree = config_fields() if tree is None else tree
    docs = _load_examples()
    lines = [
        "# Config reference",
        "",
        "Every key of the config file, generated from the config models (`kubitect_core/config/models.py`) "
        "and the config extensions of the installed plugins. `kubitect schema` prints the same as a JSON "
        "Schema for your editor ([Getting started](../getting-started.md#editor-support)).",
        "",
        "A path like `cluster.nodes.master.instances[].ip` means the key `ip` of each item of the "
        "`instances` list. *Default* `unset` means the key has no value unless the description says what "
        "fills it in; `required` keys must be written. Keys added by a plugin say so; they are optional, "
        "so a Kubitect config without them works unchanged.",
        "",
    ]
    for top in tree:
        lines += [f"## `{top.key}`", ""]
        for cf in walk([top]):
            lines += _field_block(cf, docs)
    return "\n".join(lines).rstrip() + "\n"


def _field_block(cf: ConfigField, docs: list[Any]) -> list[str]:
    info = cf.info
    desc = (info.description or "").strip()
    out = [f"### `{cf.path}` {{#{_anchor(cf.path)}}}", ""]
    if cf.plugin:
        out += [f"*Added by the `{cf.plugin}` plugin.*", ""]
    out += [_escape_text(desc) or "*(no description)*", ""]
    out += ["| Type | Default |", "|---|---|",
            f"| {_md_cell(type_text(info.annotation, list(info.metadata)))} | {_md_cell(_default_text(cf))} |", ""]
    if cf.children:
        keys = ", ".join(f"[`{c.key}`](#{_anchor(c.path)})" for c in cf.children)
        out += [f"Keys: {keys}.", ""]
    value = example_value(cf, docs)
    if value is not None:
        out += ["```yaml", example_yaml(cf, value), "```", ""]
    return out


# --------------------------------------------------------------------------------------- CLI
@dataclass
class CliCommand:
    path: tuple[str, ...]  # ("kubitect", "export", "logs")
    command: Any  # click command
    ctx: Any  # click context for help rendering
    aliases: list[str] = field(default_factory=list)
    children: list[CliCommand] = field(default_factory=list)  # visible subcommands

    @property
    def name(self) -> str:
        return " ".join(self.path)


def cli_commands(app: Any = None) -> list[CliCommand]:
    """Every visible command of the CLI, depth first in the order `--help` lists them."""
    import typer

    if app is None:
        from kubitect_core.cli import app
    root = typer.main.get_command(app)
    out: list[CliCommand] = []

    def subcommands(cmd: Any, ctx: Any) -> dict[str, Any]:
        """A group's commands through click's API (not `.commands`), so lazily loaded ones count."""
        if not hasattr(cmd, "list_commands"):
            return {}
        return {name: cmd.get_command(ctx, name) for name in cmd.list_commands(ctx)}

    def same(a: CliCommand, b: Any) -> bool:
        """`b` serves as `a` under another name: the same function, or a group of the same commands."""
        if hasattr(a.command, "list_commands"):
            return hasattr(b, "list_commands") and set(a.command.list_commands(a.ctx)) == set(b.list_commands(a.ctx))
        def unwrapped(command: Any) -> Any:  # typer wraps each command's function anew
            return getattr(command.callback, "__wrapped__", command.callback)

        return a.command.callback is not None and unwrapped(a.command) is unwrapped(b)

    def visit(cmd: Any, path: tuple[str, ...], parent_ctx: Any) -> CliCommand:
        entry = CliCommand(path, cmd, cmd.context_class(cmd, info_name=path[-1], parent=parent_ctx))
        out.append(entry)
        subs = subcommands(cmd, entry.ctx)
        entry.children = [visit(sub, (*path, name), entry.ctx) for name, sub in subs.items() if not sub.hidden]
        for name, sub in subs.items():  # hidden aliases (`ls` for `list`) are named, not repeated
            twin = next((e for e in entry.children if sub.hidden and same(e, sub)), None)
            if twin is not None:
                twin.aliases.append(name)
        return entry

    visit(root, ("kubitect",), None)
    return out


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in (text or "").split("\n\n") if p.strip()]


def _examples_and_prose(cmd: Any) -> tuple[list[str], list[str]]:
    prose, examples = [], []
    for para in _paragraphs(cmd.help) + _paragraphs(cmd.epilog):
        if para.startswith("Example:"):
            examples.append(para.removeprefix("Example:").strip())
        else:
            prose.append(para)
    return prose, examples


def _example_code(example: str) -> str:
    """'cmd   (comment)' as 'cmd  # comment'."""
    head, sep, tail = example.partition("   (")
    if sep and tail.endswith(")"):
        return f"{head.rstrip()}  # {tail[:-1]}"
    return example


def _escape_text(text: str) -> str:
    """Prose from help text as Markdown: joined lines, `<`/`>` outside code spans escaped."""
    parts = " ".join(line.strip() for line in text.splitlines()).split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _param_rows(entry: CliCommand) -> tuple[list[str], list[str]]:
    args, opts = [], []
    for p in entry.command.params:
        if getattr(p, "hidden", False):
            continue
        help_text = _md_cell(_escape_text(getattr(p, "help", None) or ""))
        if type(p).__name__.endswith("Argument"):
            meta = p.metavar or p.name.upper()
            need = "required" if p.required else "optional"
            args.append(f"| `{_md_cell(meta)}` | {need} | {help_text} |")
            continue
        names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        shown = str(p.display_type_rich(entry.ctx) or "").strip("<>")
        kind = "flag" if getattr(p, "is_flag", False) else (f"`{_md_cell(shown)}`" if shown else "")
        default = p.default
        if callable(default) or default in (None, (), []) or getattr(p, "is_flag", False) and default is False:
            default_text = "required" if p.required else ""
        else:
            default_text = f"`{_md_cell(str(default.value if isinstance(default, enum.Enum) else default))}`"
        opts.append(f"| {names} | {kind} | {default_text} | {help_text} |")
    return args, opts


def cli_reference(commands: list[CliCommand] | None = None) -> str:
    """The CLI reference page (Markdown)."""
    commands = cli_commands() if commands is None else commands
    lines = [
        "# CLI reference",
        "",
        "Every command of `kubitect`, generated from the command tree (`kubitect_core/cli/`). "
        "`kubitect help COMMAND` and `kubitect COMMAND --help` print the same in the terminal.",
        "",
        "Options of `kubitect` itself (`--debug`, `--no-color`) go before the command: "
        "`kubitect --debug apply --config ha.yaml`.",
        "",
    ]
    for entry in commands:
        cmd = entry.command
        level = "#" * min(len(entry.path) + 1, 4)
        lines += [f"{level} `{entry.name}` {{#{'-'.join(entry.path)}}}", ""]
        prose, examples = _examples_and_prose(cmd)
        lines += [_escape_text(p) + "\n" for p in prose]
        if entry.aliases:
            lines += ["Also: " + ", ".join(f"`{' '.join((*entry.path[:-1], a))}`" for a in entry.aliases) + ".", ""]
        pieces = " ".join(cmd.collect_usage_pieces(entry.ctx))
        lines += ["```text", f"{entry.name} {pieces}".rstrip(), "```", ""]
        if entry.children:
            lines += ["| Command | What it does |", "|---|---|"]
            lines += [f"| [`{c.path[-1]}`](#{'-'.join(c.path)}) | "
                      f"{_md_cell(_escape_text((_paragraphs(c.command.help) or [''])[0]))} |" for c in entry.children]
            lines.append("")
        args, opts = _param_rows(entry)
        if args:
            lines += ["| Argument | | Description |", "|---|---|---|", *args, ""]
        if opts:
            lines += ["| Option | Type | Default | Description |", "|---|---|---|---|", *opts, ""]
        if examples:
            lines += ["Example" + ("s" if len(examples) > 1 else "") + ":", "", "```sh"]
            lines += [_example_code(e) for e in examples]
            lines += ["```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------- outputs
def pages() -> dict[str, str]:
    """The generated pages by their path under docs/."""
    return {CONFIG_PAGE: config_reference(), CLI_PAGE: cli_reference()}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages (replacing any copy written to docs/ by the script)."""
    from mkdocs.structure.files import File

    for uri, content in pages().items():
        old = files.get_file_from_path(uri)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, uri, content=content))
    return files


# `<!-- kubitect:pages PREFIX [| fallback text] -->` in a page becomes a list of links to the pages
# under docs/ whose path starts with PREFIX (e.g. `day2/`), by their titles; or the fallback text
# when there is none yet. Pages written on other branches are linked once they exist, and
# `--strict` never fails on a link to a page that is not there.
_PAGES_MARKER = re.compile(r"<!--\s*kubitect:pages\s+(\S+)\s*(?:\|\s*(.*?))?\s*-->")


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def optional_links(markdown: str, docs_dir: Path, page_uri: str) -> str:
    """The page with each pages marker replaced (see `_PAGES_MARKER`); links relative to the page."""
    here = Path(page_uri).parent

    def links(match: re.Match) -> str:
        prefix, fallback = match.group(1), match.group(2) or ""
        found = sorted(p for p in docs_dir.rglob("*.md")
                       if p.relative_to(docs_dir).as_posix().startswith(prefix))
        if not found:
            return fallback
        rel = [os.path.relpath(p.relative_to(docs_dir), here).replace(os.sep, "/") for p in found]
        return "\n".join(f"- [{_title(p)}]({r})" for p, r in zip(found, rel, strict=True))

    return _PAGES_MARKER.sub(links, markdown)


def hooks_reference() -> str:
    """Every hook of `kubitect_core.hookspecs`, in source order: its signature and its docstring."""
    import inspect

    from kubitect_core import hookspecs

    out = []
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("kubitect_") or not hasattr(fn, "kubitect_spec"):
            continue
        sig = inspect.signature(fn)
        params = ", ".join(f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
                           for p in sig.parameters.values())
        ret = f" -> {sig.return_annotation}" if sig.return_annotation is not sig.empty else ""
        doc = inspect.getdoc(fn) or ""
        body = [_escape_text(p).replace(":returns:", "**Returns:**") for p in _paragraphs(doc)]
        out.append((fn.__code__.co_firstlineno,
                    "\n".join([f"### `{name}` {{#{name}}}", "", "```python", f"def {name}({params}){ret}", "```", "",
                               *[b + "\n" for b in body]])))
    return "\n".join(text for _, text in sorted(out))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the pages markers (`optional_links`) and the hooks marker."""
    if "<!-- kubitect:hooks -->" in markdown:
        markdown = markdown.replace("<!-- kubitect:hooks -->", hooks_reference())
    return optional_links(markdown, Path(config["docs_dir"]), page.file.src_uri)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the generated reference pages.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="directory the docs tree starts at (default: docs/ of this checkout)")
    args = parser.parse_args(argv)
    for uri, content in pages().items():
        target = args.out / uri
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
