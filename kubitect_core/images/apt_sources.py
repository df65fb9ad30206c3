"""The machine's own apt sources, so image builds never hard-code a mirror."""

from __future__ import annotations

import re
from pathlib import Path

APT_DIR = Path("/etc/apt")


def machine_sources(suite: str = "bookworm", apt_dir: Path = APT_DIR) -> list[str]:
    """One-line `deb URI SUITE COMPONENTS` entries for `suite`, read from /etc/apt.

    Both deb822 (`*.sources`) and one-line (`*.list`) files are read; entries for other suites
    of the same release (`bookworm-updates`, `bookworm-security`) are kept. mmdebstrap reads
    these lines from stdin.
    """
    lines: list[str] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            lines += _from_deb822(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            lines += [
                ln.strip() for ln in text.splitlines() if re.match(r"^\s*deb\s", ln)
            ]
    wanted = [ln for ln in lines if re.search(rf"\s{re.escape(suite)}(-[a-z]+)?(/[a-z-]+)?\s", ln + " ")]
    if not wanted:
        raise RuntimeError(f"no apt source for '{suite}' in {apt_dir}; add one or pass --mirror")
    return list(dict.fromkeys(wanted))


def _from_deb822(text: str) -> list[str]:
    out: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line.startswith(" "):
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        opts = f"[signed-by={fields['signed-by']}] " if fields.get("signed-by", "").startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(f"deb {opts}{uri} {suite} {fields.get('components', 'main')}")
    return out
