"""Scalar types of the config, each with a message that says what is allowed.

The messages are pydantic custom errors, so they reach the user through the same path as every
other validation error (dot path, file, line, column).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, WithJsonSchema
from pydantic_core import PydanticCustomError

from kubitect_core.config.errors import short_value

# Every pattern is applied with fullmatch: `^...$` with match() would accept a trailing newline
# ("gold\n"), which then reaches a unit file or a command line.
_ALNUM_HYP = re.compile(r"[a-zA-Z0-9-]+")
_ALNUM_HYP_US = re.compile(r"[a-zA-Z0-9_-]+")
_MAC = re.compile(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}")
VERSION_RE = re.compile(r"v?(\d{1,9})\.(\d{1,9})\.(\d{1,9})")
STRICT_VERSION_RE = re.compile(r"v(\d{1,9})\.(\d{1,9})\.(\d{1,9})")
_TAINT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?(=[A-Za-z0-9._-]*)?:"
                    r"(NoSchedule|PreferNoSchedule|NoExecute)")
IFNAMSIZ = 16  # Linux: names are at most 15 characters plus the terminating NUL


def _fail(kind: str, message: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message + " (actual: {value})", {"value": short_value(value)})


def _alnum_hyp(value: str) -> str:
    if not _ALNUM_HYP.fullmatch(value):
        raise _fail("alnum_hyphen", "must be non-empty and contain only letters, digits and '-'", value)
    return value


def _alnum_hyp_us(value: str) -> str:
    if not _ALNUM_HYP_US.fullmatch(value):
        raise _fail("alnum_hyphen_underscore",
                    "must be non-empty and contain only letters, digits, '-' and '_'", value)
    return value


def _ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail("ipv4", "must be a valid IPv4 address such as 10.10.0.5", value) from None
    return value


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _fail("ip", "must be a valid IPv4 or IPv6 address", value) from None
    return value


def _cidr4(value: str) -> str:
    if "/" not in value:
        raise _fail("cidr", "must be an IPv4 network in CIDR notation such as 10.10.0.0/20", value)
    try:
        ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise _fail("cidr", "must be an IPv4 network in CIDR notation such as 10.10.0.0/20", value) from None
    return value


def _mac(value: str) -> str:
    if not _MAC.fullmatch(value):
        raise _fail("mac", "must be a MAC address such as 52:54:00:6b:3c:58", value)
    return value


def _ifname(value: str) -> str:
    """Linux's own rule (dev_valid_name): 1-15 chars, not '.'/'..', no '/', ':' or whitespace."""
    bad = (not value or len(value) >= IFNAMSIZ or value in (".", "..")
           or any(c in "/:" or c.isspace() for c in value))
    if bad:
        raise _fail("interface_name",
                    "must be a Linux interface name: 1-15 characters, not '.' or '..', without '/', "
                    "':' or whitespace ('-', '_' and '.' are fine)", value)
    return value


def _version(value: str) -> str:
    if not VERSION_RE.fullmatch(value):
        raise _fail("version", "must be a Kubernetes version such as v1.34.2 (vMAJOR.MINOR.PATCH)", value)
    return value


def _strict_version(value: str) -> str:
    if not STRICT_VERSION_RE.fullmatch(value):
        raise _fail("version", "must be a version such as v1.16.4 (vMAJOR.MINOR.PATCH)", value)
    return value


def _taint(value: str) -> str:
    if not _TAINT.fullmatch(value):
        raise _fail("taint", "must be a taint KEY[=VALUE]:EFFECT with EFFECT one of "
                             "[NoSchedule|PreferNoSchedule|NoExecute], e.g. dedicated=gpu:NoSchedule", value)
    return value


def _non_empty(value: str) -> str:
    """Paths and URLs: not blank, and on one line (they reach XML, URIs and command lines)."""
    if not value.strip():
        raise _fail("non_empty", "must not be empty", value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _fail("one_line", "must be one line without tabs or control characters", value)
    return value


def _scalar_to_str(value: Any) -> Any:
    """YAML `id: 1` or `rook: false` are strings to Kubitect (yaml.v3 decodes scalars into strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _int_to_str(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


AlnumHyp = Annotated[str, AfterValidator(_alnum_hyp)]
AlnumHypUs = Annotated[str, AfterValidator(_alnum_hyp_us)]
IPv4 = Annotated[str, AfterValidator(_ipv4), WithJsonSchema({"type": "string", "format": "ipv4"})]
IP = Annotated[str, AfterValidator(_ip)]
CIDRv4 = Annotated[str, AfterValidator(_cidr4)]
Mac = Annotated[str, AfterValidator(_mac)]
IfName = Annotated[str, AfterValidator(_ifname)]
KubeVersion = Annotated[str, AfterValidator(_version)]
StrictVersion = Annotated[str, AfterValidator(_strict_version)]
NonEmpty = Annotated[str, AfterValidator(_non_empty)]
Taint = Annotated[str, AfterValidator(_taint)]
InstanceId = Annotated[
    str,
    BeforeValidator(_int_to_str),
    AfterValidator(_alnum_hyp_us),
    WithJsonSchema({"type": ["string", "integer"], "pattern": "^[a-zA-Z0-9_-]+$"}),
]
LabelValue = Annotated[
    str, BeforeValidator(_scalar_to_str), WithJsonSchema({"type": ["string", "number", "boolean"]})
]
# Numbers must be YAML numbers, as in Kubitect (yaml.v3 refuses `port: "22"` for an int field):
# strict, so "22\n" or " 22" is not quietly turned into 22.
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Uint8 = Annotated[StrictInt, Field(ge=0, le=255)]
Positive = Annotated[StrictInt, Field(ge=1)]
