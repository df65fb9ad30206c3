"""Base images: format detection, the download cache (checksum, resume), the stream upload, and
the libvirt URIs of configured hosts. Downloads use file:// and a loopback HTTP server only."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubitect_plugins.libvirt import images
from kubitect_plugins.libvirt.connection import quiet_libvirt
from kubitect_plugins.libvirt.spec import host_uri, stable_mac

pytestmark = pytest.mark.libvirt


def test_qcow2_virtual_size_is_read_from_the_header(tmp_path):
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img is not installed")
    path = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "3G"], check=True)
    assert images.inspect(path) == ("qcow2", 3 << 30)
    raw = tmp_path / "a.img"
    raw.write_bytes(b"x" * 4096)
    assert images.inspect(raw) == ("raw", 4096)


def test_kernel_and_initrd_next_to_the_image_enable_direct_boot(tmp_path):
    img = tmp_path / "disk.qcow2"
    img.write_bytes(b"x" * 512)
    assert images.local_image(img).kernel is None
    (tmp_path / "vmlinuz").write_bytes(b"k")
    (tmp_path / "initrd.img").write_bytes(b"i")
    local = images.local_image(img)
    assert (local.kernel, local.initrd) == (tmp_path / "vmlinuz", tmp_path / "initrd.img")


def _publish(directory: Path, name: str, data: bytes, digest: str | None = None) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    (directory / "SHA256SUMS").write_text(f"{digest or hashlib.sha256(data).hexdigest()} *{name}\n")
    return (directory / name).as_uri()


def test_download_verifies_sha256sums_and_is_cached(tmp_path):
    data = b"image bytes " * 5000
    url = _publish(tmp_path / "mirror", "cloud.qcow2", data)
    seen = []
    path = images.download(url, tmp_path / "cache", seen.append)
    assert path.read_bytes() == data and path.parent == tmp_path / "cache"
    assert any("sha256 verified" in m for m in seen)
    (tmp_path / "mirror" / "cloud.qcow2").unlink()  # a second call must not fetch again
    assert images.download(url, tmp_path / "cache") == path


def test_download_with_a_wrong_checksum_fails_and_keeps_nothing(tmp_path):
    url = _publish(tmp_path / "mirror", "cloud.qcow2", b"tampered", digest="0" * 64)
    with pytest.raises(images.ImageError, match="sha256 check"):
        images.download(url, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with single `Range: bytes=N-` support, and counts the bytes it sent."""

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
        type(self).sent += len(data) - start


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    _publish(tmp_path / "mirror", "cloud.qcow2", data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cloud.qcow2.part").write_bytes(data[:300_000])  # what a killed download left

    handler = type("H", (_RangeHandler,), {"sent": 0})

    def factory(*a, **kw):
        return handler(*a, directory=str(tmp_path / "mirror"), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cloud.qcow2"
        path = images.download(url, cache)
    finally:
        server.shutdown()
        server.server_close()
    assert path.read_bytes() == data
    image_bytes = handler.sent - len((tmp_path / "mirror" / "SHA256SUMS").read_bytes())
    assert image_bytes == len(data) - 300_000  # only the missing tail was fetched


def test_missing_local_source_names_the_config_key(tmp_path):
    with pytest.raises(images.ImageError, match="os.source.*does not exist"):
        images.resolve(str(tmp_path / "nope.qcow2"), tmp_path)


def test_upload_reports_a_driver_without_stream_support(tmp_path):
    import libvirt
    quiet_libvirt()
    conn = libvirt.open(f"test://{Path(__file__).parent / 'host-bare.xml'}")
    try:
        pool = conn.storagePoolDefineXML("<pool type='dir'><name>p</name><target><path>/p</path></target></pool>")
        pool.create(0)
        vol = pool.createXML("<volume><name>v</name><capacity>4</capacity></volume>", 0)
        src = tmp_path / "f"
        src.write_bytes(b"data")
        assert images.upload(conn, vol, src) is False
        assert images.upload_bytes(conn, vol, b"data") is False
    finally:
        conn.close()


def _host(ctype, verify=False):
    return SimpleNamespace(name="host-1", connection=SimpleNamespace(
        type=ctype, ip="10.10.0.5", user="kubitect",
        ssh=SimpleNamespace(keyfile="~/.ssh/id_rsa_ha", port=2222, verify=verify)))


def test_libvirt_uris_of_local_and_remote_hosts(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.delenv("KUBITECT_LIBVIRT_URI_HOST_1", raising=False)
    assert host_uri(_host("local")) == ("qemu:///system", False)
    wrapper = f"{tmp_path}/ssh/libvirt-ssh-host-1"
    expected = f"qemu+ssh://kubitect@10.10.0.5:2222/system?keyfile=/home/u/.ssh/id_rsa_ha&command={wrapper}&no_tty=1"
    assert host_uri(_host("remote"), ssh_dir=tmp_path / "ssh") == (expected, True)
    assert host_uri(_host("remote", verify=True), ssh_dir=tmp_path / "ssh")[0] == expected  # never no_verify
    monkeypatch.setenv("KUBITECT_LIBVIRT_URI_HOST_1", "test:///default")
    assert host_uri(_host("remote"))[0] == "test:///default"
    assert host_uri(_host("remote"), {"host-1": "qemu:///session"})[0] == "qemu:///session"


def test_stable_mac_is_deterministic_local_and_distinct():
    mac = stable_mac("c", "c-master-1")
    assert mac == stable_mac("c", "c-master-1") and mac.startswith("52:54:00:")
    assert len({stable_mac("c", f"c-worker-{i}") for i in range(200)}) == 200


def test_domain_type_probe_on_the_test_driver_and_override(monkeypatch):
    import libvirt
    from kubitect_plugins.libvirt import hosttype
    quiet_libvirt()
    conn = libvirt.open(f"test://{Path(__file__).parent / 'host-bare.xml'}")
    try:
        monkeypatch.delenv(hosttype.ENV, raising=False)
        assert hosttype.probe(conn) == "qemu"  # the test driver runs no guest
        monkeypatch.setenv(hosttype.ENV, "kvm")
        assert hosttype.probe(conn) == "kvm"
    finally:
        conn.close()
