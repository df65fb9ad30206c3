"""Helpers of the libvirt tier: the provider against libvirt's built-in test driver.

Every configured host is mapped to its own test-driver host. Measured here (libvirt 9.0): every
connection to `test:///default` in one process shares ONE state, so five hosts on it would
collide; a custom node file (`test:///<abs path>.xml`) is a fresh private state per open. So each
host gets `test:///.../host-br0.xml` (an empty host with a `br0` bridge) or `host-bare.xml`. The
provider keeps one connection per host for the test, and the test inspects exactly the state the
provider made through `provider.connection(host).conn`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import yaml
from kubitect_plugins.libvirt.provider import LibvirtProvider

from kubitect_core.contracts import SshAccess, StageContext

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
HOST_BR0 = f"test://{HERE / 'host-br0.xml'}"
HOST_BARE = f"test://{HERE / 'host-bare.xml'}"
# A fixed public key, only so golden files are stable; it matches no private key anywhere.
TEST_PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKubitectGoldenFileTestKeyNotARealKey000000 "
                   "kubitect-test")
LAYERS = ("network", "storage", "vms")


def make_image(directory: Path, kernel: bool = False) -> Path:
    """A small base image: a real qcow2 (qemu-img) of 2 GiB virtual size, else a raw file."""
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.which("qemu-img"):
        path = directory / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "2G"], check=True)
    else:
        path = directory / "base.img"
        path.write_bytes(b"\0" * (1 << 20))
    if kernel:
        (directory / "vmlinuz").write_bytes(b"kernel")
        (directory / "initrd.img").write_bytes(b"initrd")
    return path


class Cluster:
    """One cluster under test: config, per-layer records, and a provider with test connections."""

    def __init__(self, loaded, tmp: Path, provider: LibvirtProvider, uris: dict[str, str]):
        self.loaded = loaded
        self.provider = provider
        self.uris = uris
        self.records: dict[str, dict] = {layer: {} for layer in LAYERS}
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        keys = tmp / "keys"
        keys.mkdir(exist_ok=True)
        (keys / "id").write_text("not a key\n")
        (keys / "id").chmod(0o600)
        (keys / "id.pub").write_text(TEST_PUBLIC_KEY + "\n")
        self.ssh = SshAccess(user=loaded.config.cluster.node_template.user, private_key=keys / "id",
                             public_key=keys / "id.pub", known_hosts=keys / "known_hosts")
        self.events: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self.loaded.topology.cluster

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.loaded.config.hosts]

    def ctx(self, layer: str, record: dict | None = None) -> StageContext:
        return StageContext(
            cluster=self.name, config=self.loaded.config, topology=self.loaded.topology,
            cluster_dir=self.home / "clusters" / self.name, home=self.home, ssh=self.ssh,
            record=self.records[layer] if record is None else record,
            progress=lambda s, m: self.events.append((s, m)),
            options={"libvirt_uris": self.uris})

    def run(self, action: str, layer: str, record: dict | None = None):
        ctx = self.ctx(layer, record)
        return asyncio.run(getattr(getattr(self.provider, layer), action)(ctx, self.hosts))

    def apply_all(self):
        return [c for layer in LAYERS for c in self.run("apply", layer)]

    def plan_all(self):
        return [c for layer in LAYERS for c in self.run("plan", layer)]

    def destroy_all(self, fresh_records: bool = False):
        out = []
        for layer in reversed(LAYERS):
            out += self.run("destroy", layer, {} if fresh_records else None)
        return out

    def conn(self, host: str):
        return self.provider.connection(host, self.uris[host]).conn


def write_config(path: Path, base: str, image: Path, **changes) -> Path:
    """Copies an example config with os.source pointing at a local image (no internet here)."""
    data = yaml.safe_load((EXAMPLES / base).read_text())
    data["cluster"].setdefault("nodeTemplate", {}).setdefault("os", {})["source"] = str(image)
    for dotted, value in changes.items():
        cur = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
