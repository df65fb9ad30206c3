"""Base images by URL: published checksums (fail closed), the cache keyed by URL and checksum,
verification before every use, offline imports (`kubitect image import`). Served from file://
mirrors and a loopback HTTP server only."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import DISTRO_PRESETS
from kubitect_core.images import base_cache as bc


def _publish(directory: Path, name: str, data: bytes, digest: str | None = None, sums: str = "SHA256SUMS") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    if sums:
        (directory / sums).write_text(f"{digest or hashlib.sha256(data).hexdigest()} *{name}\n")
    return (directory / name).as_uri()


def _closed_port_url(name: str = "cloud.img") -> str:
    """An http URL nothing listens on: connection refused at once, i.e. an unreachable mirror."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/images/{name}"


def test_download_is_verified_against_the_published_checksum_and_cached(tmp_path):
    data = b"image bytes " * 5000
    url = _publish(tmp_path / "mirror", "cloud.qcow2", data)
    seen: list[str] = []
    entry = bc.resolve(url, tmp_path, progress=seen.append)
    assert entry.path.read_bytes() == data
    assert (entry.origin, entry.verified_by, entry.digest) == ("download", "published checksum",
                                                               hashlib.sha256(data).hexdigest())
    assert entry.path.parent.name == f"{bc.url_key(url)}-{entry.digest[:16]}"
    (tmp_path / "mirror" / "cloud.qcow2").unlink()  # a second call must not fetch again
    again = bc.resolve(url, tmp_path, progress=seen.append)
    assert again.path == entry.path
    assert any("cached, verifying again" in m for m in seen)


def test_a_wrong_checksum_fails_and_keeps_nothing(tmp_path):
    url = _publish(tmp_path / "mirror", "cloud.qcow2", b"tampered", digest="0" * 64)
    with pytest.raises(bc.ImageError, match="does not match its sha256 checksum"):
        bc.resolve(url, tmp_path)
    assert bc.entries(tmp_path) == []
    assert not [p for p in bc.cache_dir(tmp_path).iterdir() if not p.name.startswith(".tmp")]


def test_an_image_without_a_published_checksum_is_refused_unless_allowed(tmp_path):
    url = _publish(tmp_path / "mirror", "cloud.qcow2", b"no sums here", sums="")
    with pytest.raises(bc.ImageError, match="no checksum is published.*--allow-unverified-image"):
        bc.resolve(url, tmp_path)
    assert bc.entries(tmp_path) == []
    seen: list[str] = []
    entry = bc.resolve(url, tmp_path, allow_unverified=True, progress=seen.append)
    assert entry.verified_by == "UNVERIFIED" and entry.path.read_bytes() == b"no sums here"
    assert any(m.startswith("WARNING") and "UNVERIFIED" in m for m in seen)
    # an unverified copy is never used silently: without the flag it is refused again
    with pytest.raises(bc.ImageError, match="no checksum is published"):
        bc.resolve(url, tmp_path)


@pytest.mark.parametrize("layout", ["centos", "rocky-file", "rocky-dir", "debian512"])
def test_every_published_layout_verifies(tmp_path, layout):
    """The two presets the old code never verified publish `<image>.SHA256SUM` (CentOS) and
    `CHECKSUM` (Rocky) in BSD format; Debian publishes SHA512SUMS."""
    data = b"distro image" * 1000
    name = "Image-9-latest.x86_64.qcow2"
    mirror = tmp_path / "mirror"
    url = _publish(mirror, name, data, sums="")
    sha256, sha512 = hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
    if layout == "centos":
        (mirror / f"{name}.SHA256SUM").write_text(f"SHA256 ({name}) = {sha256}\n")
    elif layout == "rocky-file":
        (mirror / f"{name}.CHECKSUM").write_text(f"# {name}: 12345 bytes\nSHA256 ({name}) = {sha256}\n")
    elif layout == "rocky-dir":
        (mirror / "CHECKSUM").write_text(f"# other: 1 bytes\nSHA256 (other.qcow2) = {'1' * 64}\n"
                                         f"SHA256 ({name}) = {sha256}\n")
    else:
        (mirror / "SHA512SUMS").write_text(f"{'2' * 128}  other.qcow2\n{sha512}  {name}\n")
    entry = bc.resolve(url, tmp_path)
    assert entry.verified_by == "published checksum"
    assert entry.algo == ("sha512" if layout == "debian512" else "sha256")


def test_every_distro_preset_is_looked_up_in_a_published_checksum_file():
    for distro, (url, _nic) in DISTRO_PRESETS.items():
        candidates = bc.checksum_candidates(url)
        base = url.rsplit("/", 1)[0]
        assert f"{base}/SHA256SUMS" in candidates and f"{url}.SHA256SUM" in candidates, distro
        assert f"{url}.CHECKSUM" in candidates, distro


def test_the_cache_is_keyed_by_url_and_checksum(tmp_path):
    url = _publish(tmp_path / "mirror", "cloud.qcow2", b"release 1")
    first = bc.resolve(url, tmp_path)
    _publish(tmp_path / "mirror", "cloud.qcow2", b"release 2")  # upstream published a new image
    second = bc.resolve(url, tmp_path)
    assert second.path != first.path and second.path.read_bytes() == b"release 2"
    assert first.path.read_bytes() == b"release 1"  # the old entry stays as it was
    other = _publish(tmp_path / "other", "cloud.qcow2", b"release 1")  # same name and bytes, other URL
    third = bc.resolve(other, tmp_path)
    assert third.directory not in (first.directory, second.directory)
    assert {e.url for e in bc.entries(tmp_path)} == {url, other}


def test_a_cached_image_changed_on_disk_is_refused(tmp_path):
    url = _publish(tmp_path / "mirror", "cloud.qcow2", b"good bytes")
    entry = bc.resolve(url, tmp_path)
    entry.path.write_bytes(b"evil bytes")
    with pytest.raises(bc.ImageError, match="changed on disk since it was verified"):
        bc.resolve(url, tmp_path)


def test_offline_an_import_serves_the_url_and_is_verified_again(tmp_path):
    url = _closed_port_url("ubuntu-22.04-server-cloudimg-amd64.img")
    image = tmp_path / "build" / "disk.qcow2"
    image.parent.mkdir()
    image.write_bytes(b"debian lab image")
    (image.parent / "vmlinuz").write_bytes(b"k")
    (image.parent / "initrd.img").write_bytes(b"i")
    entry = bc.import_image(url, str(image), tmp_path, label="Debian 12 stand-in, not Ubuntu")
    assert entry.path.name == "disk.qcow2"  # never named like the image it stands in for
    assert entry.kernel is not None and (entry.directory / "initrd.img").read_bytes() == b"i"
    seen: list[str] = []
    served = bc.resolve(url, tmp_path, progress=seen.append, lookup_timeout=5)
    assert served.path == entry.path and served.origin == "import"
    assert any("not reachable from here" in m and "Debian 12 stand-in" in m for m in seen)
    served.path.unlink()
    served.path.write_bytes(b"something else")
    with pytest.raises(bc.ImageError, match="changed on disk"):
        bc.resolve(url, tmp_path, lookup_timeout=5)


def test_offline_without_an_import_says_how_to_import(tmp_path):
    with pytest.raises(bc.ImageError, match="kubitect image import"):
        bc.resolve(_closed_port_url(), tmp_path, lookup_timeout=5)


def test_a_hanging_server_is_treated_as_offline_within_the_bound(tmp_path):
    """A server that accepts and never answers must not stall the apply: the look-up is bounded."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/img/cloud.img"
    try:
        started = time.monotonic()
        with pytest.raises(bc.Offline):
            bc.published_checksum(url, timeout=1.0)
        assert time.monotonic() - started < 3.0
    finally:
        server.close()


def test_import_with_a_wrong_sha256_stores_nothing(tmp_path):
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"abc")
    with pytest.raises(bc.ImageError, match="does not match the expected sha256"):
        bc.import_image("https://example.invalid/x.img", str(image), tmp_path, sha256="0" * 64)
    assert bc.entries(tmp_path) == []
    good = bc.import_image("https://example.invalid/x.img", str(image), tmp_path,
                           sha256=hashlib.sha256(b"abc").hexdigest())
    assert good.verified_by == "given checksum"


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with single `Range: bytes=N-` support, and counts the image bytes it sent."""

    sent = 0

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        if path.suffix == ".qcow2":
            type(self).sent += len(data) - start


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    _publish(tmp_path / "mirror", "cloud.qcow2", data)
    handler = type("H", (_RangeHandler,), {"sent": 0})

    def factory(*a, **kw):
        return handler(*a, directory=str(tmp_path / "mirror"), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cloud.qcow2"
        cache = bc.cache_dir(tmp_path)
        cache.mkdir(parents=True)
        (cache / f".{bc.url_key(url)}-cloud.qcow2.part").write_bytes(data[:300_000])  # a killed download
        entry = bc.resolve(url, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert entry.path.read_bytes() == data
    assert handler.sent == len(data) - 300_000  # only the missing tail was fetched


def test_cli_image_import_then_list_names_what_serves_the_distro(kubitect_home, tmp_path):
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"lab image")
    out = CliRunner().invoke(app, ["image", "import", "ubuntu22", str(image), "--label",
                                   "Debian 12 (kubitect lab build), standing in for ubuntu22"],
                             env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "ubuntu22" in out.output and "Debian 12 (kubitect lab build)" in out.output
    assert "sha256 " + hashlib.sha256(b"lab image").hexdigest()[:16] in out.output
    listing = CliRunner().invoke(app, ["image", "list"], env={"COLUMNS": "250"})
    assert listing.exit_code == 0 and "ubuntu22" in listing.output
    assert "Debian 12 (kubitect" in listing.output
    record = json.loads(next(bc.cache_dir(kubitect_home).glob("*/entry.json")).read_text())
    assert record["origin"] == "import" and record["imported_from"] == str(image.resolve())
    gone = CliRunner().invoke(app, ["image", "forget", "ubuntu22"])
    assert gone.exit_code == 0 and "1 cached image(s)" in gone.output and bc.entries(kubitect_home) == []


def test_cli_image_import_refuses_an_unknown_distro_and_a_missing_file(kubitect_home, tmp_path):
    bad = CliRunner().invoke(app, ["image", "import", "ubuntu99", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown distro" in bad.output and "ubuntu22" in bad.output
    missing = CliRunner().invoke(app, ["image", "import", "ubuntu22", str(tmp_path / "nope.img")])
    assert missing.exit_code == 1 and "no such file" in missing.output
