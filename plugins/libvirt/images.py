"""Base images: resolve `os.source` to a verified local file, read its format and virtual size,
and stream it into a host's pool.

A URL (a distro preset or `os.source: https://...`) is served by kubitect's base image cache
(`kubitect_core.images.base_cache`): downloaded once per URL and checksum, or imported for an
offline site with `kubitect image import`, verified against the published checksum (fail
closed) and hashed again before every use. A local path is the user's own file and used as is.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.sdk import lazy_import
from kubitect_core.sdk.images import ImageError, base_cache

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

CHUNK = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"
Progress = Callable[[str], None]

__all__ = ["ImageError", "LocalImage", "cache_dir", "inspect", "local_image", "resolve", "cached",
           "upload", "upload_bytes"]


@dataclass(frozen=True)
class LocalImage:
    path: Path
    format: str  # "qcow2" or "raw"
    virtual_size: int  # bytes the guest sees
    kernel: Path | None = None  # direct kernel boot, when the image ships them alongside
    initrd: Path | None = None
    # What the image really is, for every output that names it: the source itself, or the cache
    # entry serving a URL ("'Debian 12 ...' (local import of ..., sha256 ..., verified by ...)").
    description: str = ""
    sha256: str | None = None  # recorded digest of a cached image (None: a local path, not hashed)

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size


def cache_dir(home: Path) -> Path:
    """Where downloaded and imported images live: shared by all clusters of one kubitect home."""
    return base_cache.cache_dir(home)


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


def local_image(path: Path, description: str = "", sha256: str | None = None) -> LocalImage:
    """Describes a local image file; raises ImageError if it is missing."""
    if not path.is_file():
        raise ImageError(f"os.source: image file {path} does not exist")
    fmt, size = inspect(path)
    kernel, initrd = _boot_files(path)
    return LocalImage(path=path, format=fmt, virtual_size=size, kernel=kernel, initrd=initrd,
                      description=description or str(path), sha256=sha256)


def _from_entry(entry: base_cache.Entry) -> LocalImage:
    return local_image(entry.path, entry.describe(), entry.digest if entry.algo == "sha256" else None)


def resolve(source: str, home: Path, progress: Progress | None = None, *,
            allow_unverified: bool = False) -> LocalImage:
    """The local file behind `os.source`: the path itself, or the verified cache entry of a URL."""
    if "://" not in source:
        return local_image(Path(source).expanduser())
    return _from_entry(base_cache.resolve(source, home, allow_unverified=allow_unverified, progress=progress))


def cached(source: str, home: Path) -> LocalImage | None:
    """What would serve `source` now without any network access (plans; the node template):
    the path itself if it exists, or the cache entry that last served the URL."""
    if "://" not in source:
        path = Path(source).expanduser()
        return local_image(path) if path.is_file() else None
    entry = base_cache.local_entry(home, source)
    return _from_entry(entry) if entry is not None and entry.path.is_file() else None


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

