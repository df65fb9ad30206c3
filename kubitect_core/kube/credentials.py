"""Installer secrets (join tokens, certificate keys): generated once, kept 0600, never logged."""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

from kubitect_core.contracts import StageContext
from kubitect_core.stage import StageError
from kubitect_core.state import write_private

SECRETS_DIR = "secrets"


def secrets_dir(ctx: StageContext) -> Path:
    return Path(ctx.cluster_dir) / SECRETS_DIR


def load_or_create_secrets(path: Path, make: dict[str, Any]) -> dict[str, str]:
    """The installer's secrets, generated once (secrets module) and kept 0600 in the cluster dir.

    `make` maps a key to a zero-argument generator. An existing file is reused, so a re-run joins
    with the same token; missing keys are added. The values never appear in logs or changes.
    """
    data: dict[str, str] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StageError(f"cannot read the installer secrets {path}: {type(exc).__name__}") from None
    changed = False
    for key, gen in make.items():
        if not data.get(key):
            data[key] = gen()
            changed = True
    if changed or (path.stat().st_mode & 0o777) != 0o600:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        write_private(path, json.dumps(data, indent=2) + "\n")
    return data


_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def bootstrap_token() -> str:
    """A kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`, from the secrets module."""
    pick = lambda n: "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def certificate_key() -> str:
    """A kubeadm certificate key: 32 random bytes, hex (what `kubeadm certs certificate-key` prints)."""
    return secrets.token_hex(32)


def random_token() -> str:
    """A k3s cluster token: 32 random bytes, hex (never a default, never derived from the name)."""
    return secrets.token_hex(32)
