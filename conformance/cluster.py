"""The cluster as conformance modules see it: the inventory, SSH access and one host object per node.

Every node is reached with the system `ssh` client (testinfra's `ssh` backend) through an
OpenSSH config exported from the cluster's own key and pinned known_hosts
(`kubitect_core.remote.export_ssh_config`), plus one shared ControlMaster per node so a check
costs one round trip instead of one handshake. testinfra's paramiko backend is not used: it
ignores known_hosts (test-labs.md 1).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.remote import export_ssh_config

INVENTORY_NAME = "inventory.json"
SSH_CONFIG_NAME = "ssh_config"
API_PORT = 6443  # the API servers' own port; the endpoint's is `api_port(inventory)`
DISK_DIR_NSPAWN = "/var/lib/kubitect/disks"
GIB = 1024**3


def load_inventory(cluster_dir: Path) -> dict[str, Any]:
    """The inventory the verify stage wrote; a clear error when verify/apply never ran."""
    path = Path(cluster_dir) / "conformance" / INVENTORY_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `kubitect verify --cluster NAME` "
                                "(or `kubitect apply`) first")
    return json.loads(path.read_text())


def nodes_of(inventory: dict[str, Any], role: str | None = None) -> list[dict[str, Any]]:
    """Inventory nodes (all, or one role: lb, master, worker) in config order."""
    return [n for n in inventory.get("nodes", []) if role is None or n.get("role") == role]


def lb_facts(inventory: dict[str, Any]) -> dict[str, Any]:
    """What the load balancer implementation recorded (endpoint, port, nodes, declared budgets)."""
    return (inventory.get("facts") or {}).get("loadbalancers") or {}


def api_port(inventory: dict[str, Any]) -> int:
    """The port the endpoint serves the API on, as the load balancer recorded it (else 6443)."""
    return int(inventory.get("api_port") or lb_facts(inventory).get("port") or API_PORT)


def endpoint_node_names(inventory: dict[str, Any]) -> list[str]:
    """The nodes that serve the endpoint (hold or may hold the VIP), in config order: those the
    load balancer recorded (`nodes`), else the load balancer instances."""
    recorded = lb_facts(inventory).get("nodes") or {}
    if recorded:
        return [n["name"] for n in nodes_of(inventory) if n["name"] in recorded]
    return [n["name"] for n in nodes_of(inventory, "lb")]


def whoami_port(inventory: dict[str, Any]) -> int | None:
    """The port on the VIP whose answer names the node serving it, when the implementation has one."""
    port = lb_facts(inventory).get("whoami_port")
    return int(port) if port else None


def declared_failover(inventory: dict[str, Any]) -> dict[str, Any]:
    """The failover the implementation declares: {"budgets": {case: {"ms", "formula"}}, "settle_s",
    "split_brain_watch_s", ...}; {} when it declares none."""
    return dict(lb_facts(inventory).get("failover") or {})


def kubernetes_facts(inventory: dict[str, Any]) -> dict[str, Any] | None:
    """What the kubernetes stage recorded, or None when Kubernetes was never installed."""
    facts = (inventory.get("facts") or {}).get("kubernetes") or None
    if facts and (facts.get("installer") or facts.get("kubeconfig")):
        return facts
    return None


class SshControl:
    """The exported ssh config plus a private ControlMaster directory, closed at session end."""

    def __init__(self, inventory: dict[str, Any], cluster_dir: Path) -> None:
        self.inventory = inventory
        ssh = inventory["ssh"]
        self.user = ssh["user"]
        self.control_dir = Path(tempfile.mkdtemp(prefix="kbcm-", dir="/tmp"))  # short: sun_path is 108 bytes
        self.config = Path(cluster_dir) / "conformance" / SSH_CONFIG_NAME
        nodes = [(n["name"], n["ip"]) for n in nodes_of(inventory) if n.get("ip")]
        export_ssh_config(self.config, nodes, self.user, Path(ssh["private_key"]), Path(ssh["known_hosts"]))
        with self.config.open("a") as fh:
            fh.write("\n# One shared connection per node for the conformance run.\n"
                     "Host *\n  ControlMaster auto\n"
                     f"  ControlPath {self.control_dir}/%C\n  ControlPersist 60s\n"
                     "  ServerAliveInterval 2\n  ServerAliveCountMax 3\n")

    def argv(self, name: str, command: str, *, timeout: float = 10) -> list[str]:
        """ssh argv running `command` on node `name` through the exported config."""
        return ["ssh", "-F", str(self.config), "-o", f"ConnectTimeout={int(timeout)}", name, command]

    def run(self, name: str, command: str, *, input: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs a command on a node (stdin from `input`), for what testinfra cannot do (uploads)."""
        return subprocess.run(self.argv(name, command), input=input, capture_output=True, timeout=timeout)

    def close(self) -> None:
        """Ends every ControlMaster we started (`ssh -O exit`) and removes the socket directory."""
        for sock in list(self.control_dir.glob("*")):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "kubitect-node"],
                               capture_output=True, timeout=5)
        shutil.rmtree(self.control_dir, ignore_errors=True)


@dataclass
class ClusterHost:
    """One node: its inventory entry plus a testinfra host (attributes delegate to it).

    `h.service("haproxy").is_running`, `h.run("id -un")` are testinfra's; `h.root(cmd)` runs
    a shell command as root (sudo -n unless the SSH user is root); `h.name`, `h.ip`, `h.role`
    and `h.info` come from the inventory.
    """

    info: dict[str, Any]
    control: SshControl = field(repr=False)
    _host: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def ip(self) -> str | None:
        return self.info.get("ip")

    @property
    def role(self) -> str:
        return self.info["role"]

    @property
    def testinfra(self) -> Any:
        """The testinfra Host (ssh backend, our config), created on first use."""
        if self._host is None:
            import testinfra

            self._host = testinfra.get_host(f"ssh://{self.name}", ssh_config=str(self.control.config),
                                            timeout=10)
        return self._host

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        return getattr(self.testinfra, item)

    def root(self, command: str) -> Any:
        """Runs a shell command as root and returns testinfra's CommandResult (never raises on rc)."""
        if self.control.user == "root":
            return self.testinfra.run("sh -c %s", command)
        return self.testinfra.run("sudo -n sh -c %s", command)

    def nic(self) -> str | None:
        """The interface carrying this node's IP (where keepalived puts the VIP)."""
        out = self.root("ip -o -4 addr show").stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[3].split("/")[0] == self.ip:
                return parts[1]
        return None

    def label(self) -> str:
        return f"{self.name} ({self.ip})"


def quote(value: str) -> str:
    return shlex.quote(value)
