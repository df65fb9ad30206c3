"""The Kubitect config: models, validation with located errors, defaults, topology, schema, presets.

Everything other parts need is exported here:
`read_config_file`, `load_config_text`, `load_config`, `parse_yaml`, `validate_raw`,
`LoadedConfig`, `Config`, `ConfigIssue`, `ConfigError`,
`ValidationContext`, `InstallerInfo`, `default_context`, `from_registry`, `resolve_topology`, `json_schema`,
`list_presets`, `preset_text`, `preflight`.
"""

from kubitect_core.config.context import InstallerInfo, ValidationContext, default_context, from_registry
from kubitect_core.config.errors import ConfigError, ConfigIssue, format_path
from kubitect_core.config.loader import (
    LoadedConfig,
    load_config,
    load_config_text,
    parse_yaml,
    read_config_file,
    validate_raw,
)
from kubitect_core.config.models import Config
from kubitect_core.config.preflight import preflight
from kubitect_core.config.presets import list_presets, preset_text
from kubitect_core.config.resolve import DISTRO_PRESETS, default_virtual_router_id, resolve_topology
from kubitect_core.config.schema import json_schema
from kubitect_core.config.versions import (
    DEFAULT_KUBERNETES_VERSION,
    DEFAULT_MAINTAINED_FROM,
    DEFAULT_SUPPORTED_VERSIONS,
    classify,
    parse_version,
)

__all__ = [
    "DEFAULT_KUBERNETES_VERSION", "DEFAULT_MAINTAINED_FROM",
    "DEFAULT_SUPPORTED_VERSIONS", "DISTRO_PRESETS", "Config",
    "ConfigError", "ConfigIssue", "InstallerInfo", "LoadedConfig", "ValidationContext", "classify",
    "default_context", "default_virtual_router_id", "format_path", "from_registry", "json_schema", "list_presets",
    "load_config", "load_config_text", "parse_version", "parse_yaml", "read_config_file",
    "preflight", "preset_text", "resolve_topology", "validate_raw",
]
