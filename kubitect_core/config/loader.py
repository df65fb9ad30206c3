"""Reading a config file: parse with positions, split off plugin extensions, validate, resolve."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kubitect_core.config.context import LOCAL_PREFIX, ValidationContext, default_context
from kubitect_core.config.errors import ConfigError, ConfigIssue, format_path
from kubitect_core.config.messages import translate
from kubitect_core.config.models import Config
from kubitect_core.config.resolve import fill_defaults, resolve_topology
from kubitect_core.config.rules import run_rules
from kubitect_core.config.source import read_config_file
from kubitect_core.config.typed import as_typed
from kubitect_core.config.yamlmarks import MarkedYaml, YamlProblem, parse
from kubitect_core.topology import Topology

MAX_MESSAGE = 2000


@dataclass
class LoadedConfig:
    """A valid config: as written (`raw`), resolved (`config`), flattened (`topology`)."""

    raw: dict
    config: Config
    topology: Topology
    warnings: list[ConfigIssue] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    extensions: dict[str, BaseModel] = field(default_factory=dict)  # "<path>.<key>" -> model
    source: Path | None = None
    marked: MarkedYaml | None = field(default=None, repr=False, compare=False)  # lines of the text validated


def parse_yaml(text: str, source: str) -> Any:
    """Parses config text (e.g. a stored applied config) into plain data; raises ConfigError."""
    return _parse(text, source).data


def load_config_text(text: str, source: str, *, context: ValidationContext | None = None,
                     path: Path | None = None) -> LoadedConfig:
    """Validates config text already read (see `read_config_file`); raises ConfigError."""
    loaded = _validate_text(text, source, context)
    loaded.source = path
    return loaded


def load_config(path: str | Path, *, context: ValidationContext | None = None) -> LoadedConfig:
    """Reads and validates a config file; raises ConfigError listing every problem found."""
    path = Path(path)
    return load_config_text(read_config_file(path), str(path), context=context, path=path)


def _validate_text(text: str, source: str, context: ValidationContext | None) -> LoadedConfig:
    if not text.strip():
        raise ConfigError([ConfigIssue("", f"config file '{source}' is empty.", file=source)])
    return _validate(_parse(text, source), source, context)


def _parse(text: str, source: str) -> MarkedYaml:
    try:
        return parse(text)
    except YamlProblem as exc:
        raise ConfigError([ConfigIssue(format_path(exc.path), f"not valid YAML: {exc.message}", source, exc.line,
                                       exc.column)]) from None


def validate_raw(raw: dict, *, source: str = "<config>", text: str | None = None,
                 context: ValidationContext | None = None) -> LoadedConfig:
    """Validates an already-parsed mapping (e.g. a stored raw config, re-resolved with today's defaults).

    With `text` (the YAML it came from) the issues carry line and column numbers.
    """
    marked = MarkedYaml(data=raw)
    if text is not None:
        try:
            parsed = parse(text)
        except YamlProblem:
            pass
        else:
            marked.marks, marked.texts = parsed.marks, parsed.texts
    return _validate(marked, source, context)


def _validate(marked: MarkedYaml, source: str, context: ValidationContext | None) -> LoadedConfig:
    context = context or default_context()
    raw = marked.data

    def issue(loc: tuple, message: str, severity: str = "error") -> ConfigIssue:
        line, col = marked.position(loc)
        if len(message) > MAX_MESSAGE:  # a safety net: messages quote values through short_value
            message = message[:MAX_MESSAGE - 3] + "..."
        return ConfigIssue(format_path(loc), message, source, line, col, severity)  # type: ignore[arg-type]

    if raw is None:
        raise ConfigError([issue((), f"config file '{source}' is empty.")])
    if not isinstance(raw, dict):
        raise ConfigError([issue((), f"the top level must be a mapping with the keys hosts, cluster, "
                                     f"kubernetes and addons (actual: {type(raw).__name__}).")])
    errors: list[ConfigIssue] = [issue(loc, f"duplicate key `{loc[-1]}`; each key may appear only once "
                                            "in a mapping.") for loc in marked.duplicates]
    problems: list[tuple[tuple, str]] = []
    typed = as_typed(raw, Config, marked.texts, problems=problems)  # as Kubitect's typed decoder reads it
    errors += [issue(loc, msg) for loc, msg in problems]
    data = copy.deepcopy(typed)
    extensions, ext_errors, ext_keys = _split_extensions(data, context, marked.texts)
    errors += [issue(loc, msg) for loc, msg in ext_errors]
    config = None
    try:
        config = Config.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors += [issue(tuple(e["loc"]), translate(e, ext_keys)) for e in exc.errors()]
    except RecursionError:
        errors.append(issue((), "the config is nested too deeply."))
    findings = run_rules(typed, context, tolerant=config is None or bool(errors))
    errors += [issue(f.loc, f.message) for f in findings.items if f.severity == "error"]
    warnings = [issue(f.loc, f.message, "warning") for f in findings.items if f.severity == "warning"]
    if errors or config is None:
        raise ConfigError(_dedupe(errors))
    if context.local and not config.cluster.name.startswith(LOCAL_PREFIX):
        config.cluster.name = LOCAL_PREFIX + config.cluster.name  # as Kubitect's --local does
    fill_defaults(config, context)
    topology = resolve_topology(config)
    warnings += [issue(loc, message, "warning") for loc, message in _extension_warnings(context, extensions, topology)]
    return LoadedConfig(raw=raw, config=config, topology=topology, warnings=warnings,
                        notices=findings.notices, extensions=extensions, marked=marked)


def _extension_warnings(context: ValidationContext, extensions: dict[str, BaseModel],
                        topology: Topology) -> list[tuple[tuple, str]]:
    """What plugins warn about their extension's value in this config (ConfigExtension.check)."""
    out: list[tuple[tuple, str]] = []
    for ext in context.extensions:
        name = f"{ext.path}.{ext.key}" if ext.path else ext.key
        if ext.check is not None and name in extensions:
            out += list(ext.check(extensions[name], topology))
    return out


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen, out = set(), []
    for i in issues:
        key = (i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def _split_extensions(data: dict, context: ValidationContext, texts: dict) -> tuple[dict, list, dict]:
    """Pops each plugin extension key from `data` and validates it with the plugin's model.

    A missing key validates `{}` (the model's defaults), so an original config still loads.
    """
    models: dict[str, BaseModel] = {}
    errors: list[tuple[tuple, str]] = []
    keys_at: dict[tuple, list[str]] = {}
    for ext in context.extensions:
        base = tuple(p for p in ext.path.split(".") if p)
        keys_at.setdefault(base, []).append(ext.key)
        container: Any = data
        for part in base:
            container = container.get(part) if isinstance(container, dict) else None
        value = container.pop(ext.key, None) if isinstance(container, dict) else None
        try:
            name = f"{ext.path}.{ext.key}" if ext.path else ext.key
            value = {} if value is None else as_typed(value, ext.model, texts, (*base, ext.key))
            models[name] = ext.model.model_validate(value, by_alias=True, by_name=False)
        except ValidationError as exc:
            for e in exc.errors():
                loc = (*base, ext.key, *e["loc"])
                errors.append((loc, translate(e, root=ext.model)))
    return models, errors, keys_at

