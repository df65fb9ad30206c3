"""Secrets out of text before it is written anywhere a person or a bug report may read it.

One function, `redact`, used by every sink kubitect writes free text to: the per-run node logs
(commands and their output), the event log and event stream, and the bundle `export logs` makes.
It knows what kubitect's own node steps can print: kubeadm bootstrap tokens and certificate keys
(in `kubeadm join` lines, in `kubeadm init` output and in kubeadm configs), k3s tokens (the full
`K10<ca-hash>::server:<secret>` form, `--token`, `K3S_TOKEN=`, `token:` in config.yaml), PEM and
OpenSSH private keys, kubeconfig credentials (`client-key-data`, `client-certificate-data`,
`token`), bearer tokens and JWTs, keepalived `auth_pass`, and passwords in URLs. What it keeps on
purpose: public keys, certificates' CA hashes (`sha256:...`, needed to debug a join, not secret),
file paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MARK = "<redacted>"

# A key whose value is a secret ends with one of these (case-insensitive): `token`, `agent-token`,
# `client-key-data`, `certificateKey`, `MYSQL_PASSWORD`, ... Keys are matched as whole words and
# tested in Python (`_secret_key`), which keeps every pattern linear in the input's length.
_SECRET_KEY_END = re.compile(r"(?:token|password|passwd|secret|auth_pass|key-data|key_data|certificate[-_]?key"
                             r"|private[-_]?key)$", re.I)
_SECRET_ENV = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET")
_VALUE = r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s,}\]\"'\\]+)"
_KEY_CHARS = r"A-Za-z0-9_.-"


def _when_key(test: Callable[[str], bool], keep: int) -> Callable[[re.Match[str]], str]:
    """A replacement that redacts the value (the last group) only when the key (group 2) passes `test`."""
    def replace(m: re.Match[str]) -> str:
        if not test(m.group(2)):
            return m.group(0)
        return "".join(m.group(i) or "" for i in range(1, keep + 1)) + MARK
    return replace


def _secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_END.search(key))


_RULES: list[tuple[re.Pattern[str], Any]] = [
    # PEM / OpenSSH private keys, also cut off by a truncated output
    (re.compile(r"(-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----).*?(-----END ([A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S),
     rf"\1{MARK}\3"),
    # k3s full token: K10<sha256 of the CA>::<user>:<password>
    (re.compile(r"\bK10[0-9a-fA-F]{16,}::[^\s:\"']+:[^\s\"']+"), MARK),
    # JSON Web Tokens (service-account and OIDC tokens)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MARK),
    # kubeadm bootstrap tokens anywhere ("Using token: abcdef.0123456789abcdef")
    (re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"), MARK),
    # kubeadm certificate key: "--certificate-key <hex>", "Using certificate key:\n<hex>"
    (re.compile(r"(?i)(certificate[ _-]?key[\"']?\s*[:=]?\s*[\"']?)[0-9a-f]{64}\b"), rf"\1{MARK}"),
    # HTTP credentials
    (re.compile(r"(?i)\b(authorization\s*:\s*(?:bearer|basic)\s+)\S+"), rf"\1{MARK}"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*"), rf"\1{MARK}"),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+(@)"), rf"\1{MARK}\2"),
    # keepalived's VRRP password, HAProxy's stats credentials
    (re.compile(r"(\bauth_pass\s+)\S+"), rf"\1{MARK}"),
    (re.compile(r"(\bstats\s+auth\s+)\S+"), rf"\1{MARK}"),
    # key: value (YAML), "key": "value" (JSON)
    (re.compile(rf"(?<![{_KEY_CHARS}])([\"']?)([{_KEY_CHARS}]++)([\"']?[ \t]*:[ \t]*){_VALUE}"),
     _when_key(_secret_key, 3)),
    # --key value, --key=value
    (re.compile(rf"(?<![{_KEY_CHARS}])(--)([{_KEY_CHARS}]++)([ \t]+(?!-)|=)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+)"),
     _when_key(_secret_key, 3)),
    # KEY=value (environment)
    (re.compile(r"(?<![A-Za-z0-9_])()([A-Z0-9_]++)(=)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"';&|]+)"),
     _when_key(lambda key: bool(_SECRET_ENV.search(key)), 3)),
]


def redact_data(value: Any) -> Any:
    """Every string inside a JSON-like value redacted (so a JSON line stays valid JSON)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def redact(text: str) -> str:
    """`text` with every secret kubitect knows how to recognise replaced by `<redacted>`."""
    if not text:
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
