"""The cloud-init NoCloud seed of a node: rendered files and the `cidata` ISO, in pure Python.

The ISO is built with pycdlib (ISO9660 level 3 + Joliet + Rock Ridge), so no genisoimage or
xorriso is needed on the machine running kubitect, and the same bytes are uploaded to local and
remote hosts through the libvirt stream API.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from kubitect_core.sdk import lazy_import

from .node_keys import NodeHostKey
from .render import render

pycdlib = lazy_import("pycdlib")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

VOLUME_LABEL = "cidata"
# updateOnBoot: the package index gets at most this long (a hard `timeout`), so a node whose
# mirror cannot be reached comes up with a warning instead of hanging or failing.
UPDATE_INDEX_TIMEOUT_S = 60
UPDATE_STATUS_FILE = "/var/lib/kubitect/update-on-boot"  # ok | unreachable: ... | failed: ...
# (ISO9660 name, Rock Ridge / Joliet name): cloud-init looks the long names up.
_FILES = (("USER_DATA.;1", "user-data"), ("META_DATA.;1", "meta-data"),
          ("NETWORK_CONFIG.;1", "network-config"))


@dataclass(frozen=True)
class SeedFiles:
    user_data: str
    meta_data: str
    network_config: str

    def as_dict(self) -> dict[str, str]:
        return {"user-data": self.user_data, "meta-data": self.meta_data,
                "network-config": self.network_config}

    @property
    def digest(self) -> str:
        """A digest of the rendered files: the seed changes exactly when this does."""
        h = hashlib.sha256()
        for name, text in sorted(self.as_dict().items()):
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        return h.hexdigest()[:16]


def render_seed(*, hostname: str, user: str, public_key: str, update_on_boot: bool,
                instance_id: str, nic: str, static: bool, ip: str | None, prefix: int,
                gateway: str, nameservers: tuple[str, ...] | list[str], mac: str | None = None,
                host_key: NodeHostKey | None = None) -> SeedFiles:
    """Renders user-data, meta-data and network-config v2 for one node.

    `static` is True in route and bridge modes with an IP (the guest configures the address);
    in nat mode the guest uses DHCP and gets its address from the libvirt reservation. With
    `mac`, the NIC is matched by MAC and named `nic`, so the config applies whatever name the
    guest kernel gave the device (PCI slot order differs between machine types).

    `host_key` becomes the node's only SSH host key (cloud-init deletes the image's keys and
    generates none), so the key kubitect pinned is the key the node presents. The user-data then
    holds a secret: it is written only into the seed ISO, never logged.
    """
    user_data = render("user-data.j2", hostname=hostname, user=user, public_key=public_key,
                       update_on_boot=bool(update_on_boot), update_index_timeout=UPDATE_INDEX_TIMEOUT_S,
                       update_status_file=UPDATE_STATUS_FILE, host_key=host_key)
    meta_data = render("meta-data.j2", instance_id=instance_id, hostname=hostname)
    network_config = render("network-config.j2", nic=nic, static=bool(static and ip), ip=ip,
                            prefix=prefix, gateway=gateway, nameservers=list(nameservers), mac=mac)
    return SeedFiles(user_data, meta_data, network_config)


def build_iso(files: SeedFiles) -> bytes:
    """The NoCloud seed ISO (label `cidata`) holding the three files, as bytes."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    content = files.as_dict()
    for iso_name, long_name in _FILES:
        data = content[long_name].encode()
        iso.add_fp(io.BytesIO(data), len(data), "/" + iso_name, rr_name=long_name,
                   joliet_path="/" + long_name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """Reads a seed ISO back: (volume label, {file name: text}) via Rock Ridge names.

    Why: tests and `kubitect` diagnostics check what a VM was really given.
    """
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        out: dict[str, str] = {}
        for _iso_name, long_name in _FILES:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + long_name)
            out[long_name] = buf.getvalue().decode()
        return label, out
    finally:
        iso.close()
