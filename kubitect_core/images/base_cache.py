"""Base images by URL: downloaded or imported once, kept by URL *and* checksum, verified before use.

A node image named by a URL (a distro preset such as `ubuntu22`, or `os.source: https://...`)
is only used when its bytes are known to be the right ones:

- online, the checksum the distro publishes next to the image (SHA256SUMS, SHA512SUMS,
  `<image>.SHA256SUM`, CHECKSUM; GNU or BSD format) decides which cache entry is wanted; a
  missing entry is downloaded (resumable) and checked against it;
- offline (an air-gapped site), an entry imported with `kubitect image import DISTRO FILE` (or
  downloaded earlier) serves the URL; its recorded checksum is what it is checked against;
- a URL with no published checksum is refused (fail closed) unless the caller allows unverified
  images explicitly; the image is then used with a loud warning and recorded as unverified.

Every cached file is hashed again before each use, so a file changed on disk since it was
verified is refused. Entries live in `<home>/cache/images/<url-key>-<checksum-key>/` with the
image file, `entry.json` (URL, algorithm, digest, origin, label, times) and, for kubitect's own
direct-boot images, the kernel and initrd next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
ENTRY_FILE = "entry.json"
BOOT_FILES = ("vmlinuz", "initrd.img")
LOOKUP_TIMEOUT_S = 10.0  # the whole checksum look-up, all candidate files together
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation of a download
Progress = Callable[[str], None]

_GNU = re.compile(r"([0-9a-fA-F]{64}|[0-9a-fA-F]{128})\s+\*?(\S+)")
_BSD = re.compile(r"(SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)")


class ImageError(Exception):
    """The base image cannot be found, fetched or verified; the message says which and what to do."""


class Offline(Exception):
    """The image's server cannot be reached from here (no route, no DNS, timeout)."""


@dataclass(frozen=True)
class Entry:
    """One cached base image: the file, what it was checked against, and where it came from."""

    path: Path
    url: str
    algo: str  # "sha256" | "sha512"
    digest: str
    origin: str  # "download" | "import"
    verified_by: str  # "published checksum" | "given checksum" | "import" | "UNVERIFIED"
    label: str = ""  # what the image really is, when it stands in for the URL (imports)
    imported_from: str = ""
    created: float = 0.0
    last_used: float = 0.0

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def kernel(self) -> Path | None:
        k = self.directory / BOOT_FILES[0]
        return k if k.is_file() and (self.directory / BOOT_FILES[1]).is_file() else None

    def describe(self) -> str:
        """One line naming what serves the URL, for every output that mentions the image."""
        what = f"'{self.label}'" if self.label else self.path.name
        how = {"import": f"local import of {self.imported_from or 'a file'}", "download": "download"}[self.origin]
        return f"{what} ({how}, {self.algo} {self.digest[:16]}…, verified by {self.verified_by})"


def cache_dir(home: Path) -> Path:
    """Where base images live: shared by all clusters of one kubitect home."""
    return Path(home) / "cache" / "images"


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def file_digest(path: Path, algo: str = "sha256") -> str:
    """The hex digest of a file, read in chunks (a 600 MB image takes about a second)."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- published checksums


def checksum_candidates(url: str) -> list[str]:
    """Where distros publish the checksum of `url`: a sums file in the same directory (Ubuntu,
    Debian), or a file named after the image (CentOS `.SHA256SUM`, Rocky `.CHECKSUM`)."""
    base = url.rsplit("/", 1)[0]
    return [f"{base}/SHA256SUMS", f"{base}/SHA512SUMS", f"{url}.SHA256SUM", f"{url}.CHECKSUM",
            f"{base}/CHECKSUM"]


def parse_checksums(text: str, name: str) -> tuple[str, str] | None:
    """(algorithm, hex digest) of file `name` in a checksum file, GNU (`HEX  name`) or BSD
    (`SHA256 (name) = HEX`) format; None when the file does not list it."""
    for line in text.splitlines():
        line = line.strip()
        m = _BSD.fullmatch(line)
        if m and m.group(2) == name:
            algo = m.group(1).lower()
            digest = m.group(3).lower()
            if len(digest) == {"sha256": 64, "sha512": 128}[algo]:
                return algo, digest
            continue
        m = _GNU.fullmatch(line)
        if m and m.group(2) == name:
            digest = m.group(1).lower()
            return ("sha256" if len(digest) == 64 else "sha512"), digest
    return None


def _fetch_text(url: str, timeout: float) -> str | None:
    """The text at `url`; None when the server says it does not exist; Offline when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read(4 << 20).decode(errors="replace")
    except urllib.error.HTTPError:
        return None  # the server answered: this candidate does not exist
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if url.startswith("file:"):
            return None
        raise Offline(str(getattr(exc, "reason", exc))) from exc


def published_checksum(url: str, timeout: float = LOOKUP_TIMEOUT_S) -> tuple[str, str] | None:
    """The checksum the distro publishes for `url`: (algo, digest), or None when it publishes none.

    Raises Offline when the server cannot be reached within `timeout` seconds in all (the look-up
    runs in a thread, so a resolver that hangs cannot stall the caller past the bound).
    """
    name = os.path.basename(urllib.parse.urlparse(url).path)
    box: list = []

    def look() -> None:
        try:
            for candidate in checksum_candidates(url):
                text = _fetch_text(candidate, timeout)
                found = parse_checksums(text, name) if text else None
                if found:
                    box.append(found)
                    return
            box.append(None)
        except Offline as exc:
            box.append(exc)

    worker = threading.Thread(target=look, daemon=True, name="checksum-lookup")
    worker.start()
    worker.join(timeout)
    if not box:
        raise Offline(f"no answer within {timeout:g} s")
    if isinstance(box[0], Offline):
        raise box[0]
    return box[0]


# --------------------------------------------------------------------------- entries


def _entry_dir(home: Path, url: str, digest: str) -> Path:
    return cache_dir(home) / f"{url_key(url)}-{digest[:16]}"


def _read_entry(directory: Path) -> Entry | None:
    try:
        data = json.loads((directory / ENTRY_FILE).read_text())
        return Entry(path=directory / data["file"], url=data["url"], algo=data["algo"], digest=data["digest"],
                     origin=data["origin"], verified_by=data["verified_by"], label=data.get("label", ""),
                     imported_from=data.get("imported_from", ""), created=data.get("created", 0.0),
                     last_used=data.get("last_used", 0.0))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_entry(entry: Entry) -> None:
    data = {"file": entry.path.name, "url": entry.url, "algo": entry.algo, "digest": entry.digest,
            "origin": entry.origin, "verified_by": entry.verified_by, "label": entry.label,
            "imported_from": entry.imported_from, "created": entry.created, "last_used": entry.last_used}
    tmp = entry.directory / (ENTRY_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, entry.directory / ENTRY_FILE)


def entries(home: Path, url: str | None = None) -> list[Entry]:
    """Cached base images (of one URL, if given), most recently used first."""
    root = cache_dir(home)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                e = _read_entry(d)
                if e is not None and (url is None or e.url == url):
                    found.append(e)
    return sorted(found, key=lambda e: (e.last_used, e.created), reverse=True)


def verify_entry(entry: Entry) -> Entry:
    """Hashes the cached file again; ImageError when it changed since it was verified."""
    if not entry.path.is_file():
        raise ImageError(f"cached image {entry.path} is missing; import or download it again")
    actual = file_digest(entry.path, entry.algo)
    if actual != entry.digest:
        raise ImageError(f"cached image {entry.path} changed on disk since it was verified ({entry.algo} "
                         f"{actual[:16]}… instead of {entry.digest[:16]}…); refusing it. Remove "
                         f"{entry.directory} and import or download it again")
    return entry


def _touch(entry: Entry) -> Entry:
    used = Entry(**{**entry.__dict__, "last_used": time.time()})
    _write_entry(used)
    return used


def local_entry(home: Path, url: str) -> Entry | None:
    """The entry that last served `url`, without any network access or hashing (plans, templates)."""
    found = entries(home, url)
    return found[0] if found else None


# --------------------------------------------------------------------------- resolve


def resolve(url: str, home: Path, *, allow_unverified: bool = False, progress: Progress | None = None,
            lookup_timeout: float = LOOKUP_TIMEOUT_S) -> Entry:
    """The verified local copy of the image at `url` (see the module docstring for the rules)."""
    say = progress or (lambda _m: None)
    try:
        published = published_checksum(url, lookup_timeout)
    except Offline as exc:
        return _offline(url, home, str(exc), allow_unverified, say)
    if published is None:
        if not allow_unverified:
            raise ImageError(
                f"no checksum is published for {url} (looked for {', '.join(checksum_candidates(url))}); "
                "kubitect does not use an image it cannot verify. Import it with a known checksum "
                "(kubitect image import URL FILE --sha256 HEX), or accept it unverified with "
                "--allow-unverified-image")
        return _unverified_download(url, home, say)
    algo, digest = published
    wanted = _read_entry(_entry_dir(home, url, digest))
    if wanted is not None and wanted.digest == digest:
        say(f"cached, verifying again: {wanted.describe()}")
        return _touch(verify_entry(wanted))
    for other in entries(home, url):  # an import with the published checksum serves as well
        if other.algo == algo and other.digest == digest:
            say(f"cached, verifying again: {other.describe()}")
            return _touch(verify_entry(other))
    path = _download(url, home, say)
    return _store(path, url, algo, digest, home, origin="download", verified_by="published checksum", say=say)


def _offline(url: str, home: Path, why: str, allow_unverified: bool, say: Progress) -> Entry:
    usable = [e for e in entries(home, url) if e.verified_by != "UNVERIFIED" or allow_unverified]
    if not usable:
        raise ImageError(
            f"cannot reach {url} ({why}) and no local copy of it is known. On an offline site, import "
            f"the image once: kubitect image import DISTRO FILE (or URL FILE)")
    entry = usable[0]
    say(f"{url} is not reachable from here ({why}); serving {entry.describe()}")
    return _touch(verify_entry(entry))


def _unverified_download(url: str, home: Path, say: Progress) -> Entry:
    for e in entries(home, url):
        if e.verified_by == "UNVERIFIED":
            say(f"WARNING: using UNVERIFIED image {e.path} (no checksum is published for {url}; "
                "--allow-unverified-image)")
            return _touch(verify_entry(e))
    path = _download(url, home, say)
    digest = file_digest(path)
    say(f"WARNING: {url} has no published checksum; using it UNVERIFIED (--allow-unverified-image), "
        f"sha256 {digest[:16]}… recorded")
    return _store(path, url, "sha256", digest, home, origin="download", verified_by="UNVERIFIED", say=say)


def _download(url: str, home: Path, say: Progress) -> Path:
    """Downloads `url` into a resumable `.part` file in the cache; returns it (not yet verified)."""
    root = cache_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    name = os.path.basename(urllib.parse.urlparse(url).path) or "image"
    part = root / f".{url_key(url)}-{name}.part"
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url)
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            if have and getattr(resp, "status", None) != 206:  # range ignored: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) + have if length else None
            done, last = have, -1
            with open(part, "ab" if have else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if total:
                        pct = done * 100 // total
                        if pct != last and pct % 5 == 0:
                            say(f"downloading {name}: {pct}% of {total // (1 << 20)} MiB")
                            last = pct
    except (urllib.error.URLError, OSError) as exc:
        raise ImageError(f"cannot download {url}: {exc} (partial file kept for resume)") from exc
    return part


def _store(path: Path, url: str, algo: str, digest: str, home: Path, *, origin: str, verified_by: str,
           say: Progress, label: str = "", imported_from: str = "", boot: tuple[Path, Path] | None = None,
           link: bool = False, name: str | None = None) -> Entry:
    """Checks `path` against (algo, digest) and moves (or links) it into its entry directory."""
    actual = file_digest(path, algo)
    if actual != digest:
        if path.name.endswith(".part"):
            path.unlink()
        raise ImageError(f"{url}: the file does not match its {algo} checksum (expected {digest[:16]}…, got "
                         f"{actual[:16]}…){'; deleted, retry' if origin == 'download' else ''}")
    final_dir = _entry_dir(home, url, digest)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir(home)))
    try:
        # A download keeps the URL's file name; an import keeps its own, so a stand-in image is
        # never named like the one it stands in for.
        name = name or os.path.basename(urllib.parse.urlparse(url).path) or "image"
        target = tmp / name
        if link:
            _link_or_copy(path, target)
        else:
            os.replace(path, target)
        if boot:
            for src, dst in zip(boot, BOOT_FILES, strict=True):
                _link_or_copy(src, tmp / dst)
        now = time.time()
        entry = Entry(path=target, url=url, algo=algo, digest=digest, origin=origin, verified_by=verified_by,
                      label=label, imported_from=imported_from, created=now, last_used=now)
        _write_entry(entry)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stored = _read_entry(final_dir)
    assert stored is not None
    say(f"{stored.path.name}: stored, {algo} {digest[:16]}… ({verified_by})")
    return stored


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when both sit on one filesystem (instant, no extra space), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# --------------------------------------------------------------------------- import


def import_image(url: str, source: str, home: Path, *, sha256: str | None = None, label: str = "",
                 progress: Progress | None = None) -> Entry:
    """Makes `source` (a local file, or a URL of a local mirror) serve `url` from now on.

    For offline sites: the file's sha256 is computed and recorded; with `sha256` given it must
    match (else nothing is stored). kubitect's own images bring their kernel and initrd
    (`vmlinuz` and `initrd.img` next to the file) along, for direct kernel boot.
    """
    say = progress or (lambda _m: None)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ImageError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    cache_dir(home).mkdir(parents=True, exist_ok=True)
    if "://" in source and not source.startswith("file://"):
        path = _download(source, home, say)
        link = False
        given = sha256
        if given is None:
            try:
                published = published_checksum(source)
            except Offline:
                published = None
            if published and published[0] == "sha256":
                given = published[1]
        origin_path = source
    else:
        path = Path(urllib.parse.urlparse(source).path if source.startswith("file://") else source).expanduser()
        if not path.is_file():
            raise ImageError(f"{source}: no such file to import")
        path = path.resolve()
        link, given, origin_path = True, sha256, str(path)
    digest = file_digest(path)
    if given is not None and digest != given.lower():
        if not link:
            path.unlink(missing_ok=True)
        raise ImageError(f"{source} does not match the expected sha256 (expected {given.lower()[:16]}…, got "
                         f"{digest[:16]}…); nothing imported")
    boot = None
    kernel, initrd = path.parent / BOOT_FILES[0], path.parent / BOOT_FILES[1]
    if link and kernel.is_file() and initrd.is_file():
        boot = (kernel, initrd)
    return _store(path, url, "sha256", digest, home, origin="import",
                  verified_by="given checksum" if given else "import", say=say, label=label,
                  imported_from=origin_path, boot=boot, link=link,
                  name=os.path.basename(urllib.parse.urlparse(origin_path).path) or None)


def remove(home: Path, url: str) -> list[Path]:
    """Removes every cached entry of `url`; returns their directories."""
    gone = []
    for e in entries(home, url):
        shutil.rmtree(e.directory, ignore_errors=True)
        gone.append(e.directory)
    return gone
