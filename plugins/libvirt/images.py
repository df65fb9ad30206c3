"""Base images: resolve `os.source` to a local file (downloading URLs once into a shared cache),
read its format and virtual size, and stream it into a host's pool.

Downloads are shared by every cluster of one kubitect home (`<home>/cache/images/`), resumable
(a `.part` file continued with an HTTP Range request) and checked against the SHA256SUMS or
SHA512SUMS file the distro publishes next to the image, when there is one.
"""

from __future__ import annotations

import hashlib
import os
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

CHUNK = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"
SUM_FILES = (("SHA256SUMS", "sha256"), ("SHA512SUMS", "sha512"))
Progress = Callable[[str], None]


class ImageError(Exception):
    """The base image cannot be found, downloaded or verified; the message says which and why."""


@dataclass(frozen=True)
class LocalImage:
    path: Path
    format: str  # "qcow2" or "raw"
    virtual_size: int  # bytes the guest sees
    kernel: Path | None = None  # direct kernel boot, when the image ships them alongside
    initrd: Path | None = None

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size


def cache_dir(home: Path) -> Path:
    """Where downloaded images live: shared by all clusters of one kubitect home."""
    return home / "cache" / "images"


def inspect(path: Path) -> tuple[str, int]:
    """(format, virtual size) of an image file, read from the qcow2 header or the file size."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if head[:4] == QCOW2_MAGIC and len(head) >= 32:
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", path.stat().st_size


def _boot_files(path: Path) -> tuple[Path | None, Path | None]:
    """Kernel and initrd shipped next to the image (`vmlinuz` + `initrd.img`, or `<stem>.vmlinuz`)."""
    for kernel, initrd in ((path.parent / "vmlinuz", path.parent / "initrd.img"),
                           (path.with_suffix(".vmlinuz"), path.with_suffix(".initrd.img"))):
        if kernel.is_file() and initrd.is_file():
            return kernel, initrd
    return None, None


def local_image(path: Path) -> LocalImage:
    """Describes a local image file; raises ImageError if it is missing."""
    if not path.is_file():
        raise ImageError(f"os.source: image file {path} does not exist")
    fmt, size = inspect(path)
    kernel, initrd = _boot_files(path)
    return LocalImage(path=path, format=fmt, virtual_size=size, kernel=kernel, initrd=initrd)


def resolve(source: str, home: Path, progress: Progress | None = None) -> LocalImage:
    """The local file behind `os.source`: the path itself, or the cached download of a URL."""
    if "://" not in source:
        return local_image(Path(source).expanduser())
    return local_image(download(source, cache_dir(home), progress))


def _expected_sum(url: str, name: str) -> tuple[str, str] | None:
    """(algorithm, hex digest) for `name` from the checksum file next to `url`, if published."""
    base = url.rsplit("/", 1)[0]
    for sums, algo in SUM_FILES:
        try:
            with urllib.request.urlopen(f"{base}/{sums}", timeout=30) as resp:
                text = resp.read().decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError):
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == name:
                return algo, parts[0].lower()
    return None


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, cache: Path, progress: Progress | None = None) -> Path:
    """Downloads `url` into `cache` once (resuming a partial download) and verifies it.

    Why a cache: the original re-downloads the image per host and per cluster; here every
    cluster reuses one file, and a verified file is never fetched again.
    """
    say = progress or (lambda _m: None)
    name = os.path.basename(urllib.parse.urlparse(url).path) or "image"
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / name
    if final.is_file():
        return final
    part = cache / (name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url)
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status = getattr(resp, "status", None)
            if have and status != 206:  # server (or file://) ignored the range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) + have if length else None
            done = have
            last_pct = -1
            with open(part, "ab" if have else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if total:
                        pct = done * 100 // total
                        if pct != last_pct and pct % 5 == 0:
                            say(f"downloading {name}: {pct}% of {total // (1 << 20)} MiB")
                            last_pct = pct
    except (urllib.error.URLError, OSError) as exc:
        raise ImageError(f"os.source: cannot download {url}: {exc} (partial file kept for resume)") from exc
    expected = _expected_sum(url, name)
    if expected:
        algo, digest = expected
        actual = _file_digest(part, algo)
        if actual != digest:
            part.unlink()
            raise ImageError(f"os.source: {name} failed its {algo} check "
                             f"(expected {digest[:16]}..., got {actual[:16]}...); deleted, retry")
        say(f"{name}: {algo} verified")
    os.replace(part, final)
    return final


def _stream_into(conn: libvirt.virConnect, vol: libvirt.virStorageVol, size: int,
                 send: Callable[[libvirt.virStream], None]) -> bool:
    """Opens an upload stream of `size` bytes into `vol`, lets `send` fill it, and finishes it.

    False (nothing sent) when the driver cannot upload; on any failure the stream is aborted,
    so libvirt does not keep a half-written upload open, and the error is raised.
    """
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False
        raise
    try:
        send(stream)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    return True


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: Path,
           progress: Progress | None = None) -> bool:
    """Streams a local file into a volume (`virStorageVolUpload`); works over qemu+ssh.

    Returns False when the driver cannot upload (libvirt's test driver): the volume then stays
    as created, empty, and the caller records that.
    """
    say = progress or (lambda _m: None)
    size = path.stat().st_size
    sent = [0, -1]

    def feed(_stream: libvirt.virStream, nbytes: int, fh) -> bytes:
        data = fh.read(min(nbytes, CHUNK))
        sent[0] += len(data)
        pct = sent[0] * 100 // max(size, 1)
        if pct // 10 != sent[1] // 10:
            say(f"uploading {path.name}: {pct}%")
            sent[1] = pct
        return data

    def send(stream: libvirt.virStream) -> None:
        with open(path, "rb") as fh:
            stream.sendAll(feed, fh)

    return _stream_into(conn, vol, size, send)


def upload_bytes(conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> bool:
    """Streams bytes (a seed ISO) into a volume; False when the driver cannot upload."""
    view = memoryview(data)

    def send(stream: libvirt.virStream) -> None:
        offset = 0
        while offset < len(data):
            offset += stream.send(bytes(view[offset:offset + CHUNK]))

    return _stream_into(conn, vol, len(data), send)

