"""Preparing one node for kubeadm: kernel modules, sysctls, swap off, containerd, kube packages.

Each step is a shell script that looks before it acts and prints `changed: <what>` for every
thing it changed, so a second run prints nothing and the plugin reports "keep". The scripts run
with sudo over the SDK's `Remote`; none of them carries a secret.
"""

from __future__ import annotations

import shlex

from kubitect_core.sdk import Remote, StageError
from kubitect_core.sdk.kube import SOURCE_PREINSTALLED, plain

from . import sources

MODULES = ("overlay", "br_netfilter")
MODULES_FILE = "/etc/modules-load.d/kubitect-kubernetes.conf"
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}
SYSCTL_FILE = "/etc/sysctl.d/99-kubitect-kubernetes.conf"
BINARIES = ("kubeadm", "kubelet", "kubectl", "containerd")
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
APT_LIST = "/etc/apt/sources.list.d/kubernetes.list"
DNF_REPO = "/etc/yum.repos.d/kubernetes.repo"


def kernel_script() -> str:
    """Modules loaded now and at boot, bridge/forwarding sysctls, swap off now and in fstab."""
    modules_text = "\\n".join(MODULES) + "\\n"
    sysctl_text = "".join(f"{k} = {v}\\n" for k, v in SYSCTLS.items())
    sysctl_ok = " && ".join(f'[ "$(sysctl -n {k} 2>/dev/null)" = "{v}" ]' for k, v in SYSCTLS.items())
    return f"""set -eu
want=$(printf '{modules_text}')
if [ "$(cat {MODULES_FILE} 2>/dev/null)" != "$want" ]; then
  mkdir -p /etc/modules-load.d; printf '{modules_text}' > {MODULES_FILE}; echo "changed: {MODULES_FILE}"
fi
for m in {' '.join(MODULES)}; do
  if [ ! -d /sys/module/$m ]; then modprobe $m; echo "changed: module $m loaded"; fi
done
want=$(printf '{sysctl_text}')
if [ "$(cat {SYSCTL_FILE} 2>/dev/null)" != "$want" ]; then
  mkdir -p /etc/sysctl.d; printf '{sysctl_text}' > {SYSCTL_FILE}; echo "changed: {SYSCTL_FILE}"
fi
if ! {{ {sysctl_ok}; }}; then sysctl -q -p {SYSCTL_FILE}; echo "changed: sysctls applied"; fi
if [ -n "$(swapon --noheadings 2>/dev/null || true)" ]; then swapoff -a; echo "changed: swap off"; fi
if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab 2>/dev/null; then
  sed -i -E 's/^([^#].*[[:space:]]swap[[:space:]].*)$/# \\1  # disabled by kubitect/' /etc/fstab
  echo "changed: swap removed from /etc/fstab"
fi
"""


def _apt_script(version: str) -> str:
    repo = sources.apt_repo(version)
    v = plain(version)
    line = f"deb [signed-by={APT_KEYRING}] {repo} /"
    return f"""set -eu
export DEBIAN_FRONTEND=noninteractive
if ! command -v containerd >/dev/null || ! command -v curl >/dev/null || ! command -v gpg >/dev/null; then
  apt-get update -q; apt-get install -y -q ca-certificates curl gpg containerd; echo "changed: containerd installed"
fi
if [ "$(cat {APT_LIST} 2>/dev/null)" != {shlex.quote(line)} ] || [ ! -s {APT_KEYRING} ]; then
  mkdir -p -m 755 /etc/apt/keyrings
  curl -fsSL --retry 3 {repo}Release.key | gpg --dearmor --batch --yes -o {APT_KEYRING}
  echo {shlex.quote(line)} > {APT_LIST}; apt-get update -q; echo "changed: {APT_LIST} ({repo})"
fi
if [ "$(kubeadm version -o short 2>/dev/null)" != "v{v}" ] \\
   || ! kubelet --version 2>/dev/null | grep -qx "Kubernetes v{v}"; then
  apt-get install -y -q --allow-change-held-packages --allow-downgrades \\
    "kubelet={v}-*" "kubeadm={v}-*" "kubectl={v}-*"
  apt-mark hold kubelet kubeadm kubectl >/dev/null; echo "changed: kubelet kubeadm kubectl {v}"
fi
"""


def _dnf_script(version: str) -> str:
    repo = sources.rpm_repo(version)
    v = plain(version)
    repo_text = (f"[kubernetes]\\nname=Kubernetes\\nbaseurl={repo}\\nenabled=1\\ngpgcheck=1\\n"
                 f"gpgkey={repo}repodata/repomd.xml.key\\nexclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\\n")
    return f"""set -eu
if command -v getenforce >/dev/null && [ "$(getenforce)" = Enforcing ]; then
  setenforce 0; sed -i 's/^SELINUX=enforcing$/SELINUX=permissive/' /etc/selinux/config
  echo "changed: SELinux permissive"
fi
if ! command -v containerd >/dev/null; then
  dnf -y -q install dnf-plugins-core
  dnf config-manager --add-repo https://download.docker.com/linux/centos/docker-ce.repo
  dnf -y -q install containerd.io; echo "changed: containerd installed"
fi
if [ "$(cat {DNF_REPO} 2>/dev/null)" != "$(printf '{repo_text}')" ]; then
  printf '{repo_text}' > {DNF_REPO}; echo "changed: {DNF_REPO} ({repo})"
fi
if [ "$(kubeadm version -o short 2>/dev/null)" != "v{v}" ]; then
  dnf -y -q install --disableexcludes=kubernetes "kubelet-{v}" "kubeadm-{v}" "kubectl-{v}"
  echo "changed: kubelet kubeadm kubectl {v}"
fi
"""


CONTAINERD_SCRIPT = """set -eu
if ! grep -q 'SystemdCgroup = true' /etc/containerd/config.toml 2>/dev/null; then
  mkdir -p /etc/containerd
  containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
  systemctl restart containerd; echo "changed: containerd uses the systemd cgroup driver"
fi
"""

SERVICES_SCRIPT = """set -eu
for unit in containerd kubelet; do
  if systemctl cat $unit >/dev/null 2>&1 && ! systemctl is-enabled --quiet $unit; then
    systemctl enable $unit >/dev/null 2>&1; echo "changed: $unit enabled"
  fi
done
if systemctl cat containerd >/dev/null 2>&1 && ! systemctl is-active --quiet containerd; then
  systemctl start containerd; echo "changed: containerd started"
fi
"""


def preinstalled_script(version: str) -> str:
    """Checks only: the binaries exist and kubeadm reports the configured version."""
    v = "v" + plain(version)
    return f"""set -u
missing=""
for b in {' '.join(BINARIES)}; do command -v $b >/dev/null || missing="$missing $b"; done
if [ -n "$missing" ]; then echo "missing:$missing"; exit 3; fi
got=$(kubeadm version -o short 2>/dev/null || true)
if [ "$got" != "{v}" ]; then echo "version: kubeadm reports '$got', the config asks for {v}"; exit 4; fi
"""


def pkg_manager(os_release: str) -> str | None:
    """apt for the Debian family, dnf for the RHEL family (from /etc/os-release), else None."""
    fields = {}
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"').lower()
    family = set(" ".join([fields.get("ID", ""), fields.get("ID_LIKE", "")]).split())
    if family & {"debian", "ubuntu"}:
        return "apt"
    if family & {"rhel", "fedora", "centos", "rocky", "almalinux"}:
        return "dnf"
    return None


def _changed(stdout: str) -> list[str]:
    return [line.removeprefix("changed: ").strip() for line in stdout.splitlines() if line.startswith("changed: ")]


async def prepare(node: Remote, version: str, source: str, timeout: float = 900) -> list[str]:
    """Runs every preparation step on one node; returns what changed (empty on a prepared node)."""
    changed = _changed((await node.run(kernel_script(), sudo=True, timeout=120)).stdout)
    if source == SOURCE_PREINSTALLED:
        res = await node.run(preinstalled_script(version), sudo=True, check=False, timeout=60)
        if not res.ok:
            raise StageError(f"{node.label}: installer_source=preinstalled, but {res.stdout.strip() or res.stderr}")
    else:
        os_release = (await node.run("cat /etc/os-release", check=False)).stdout
        manager = pkg_manager(os_release)
        if manager is None:
            raise StageError(f"{node.label}: unsupported distribution (no apt or dnf family in /etc/os-release)")
        script = _apt_script(version) if manager == "apt" else _dnf_script(version)
        changed += _changed((await node.run(script, sudo=True, timeout=timeout)).stdout)
        changed += _changed((await node.run(CONTAINERD_SCRIPT, sudo=True, timeout=120)).stdout)
    changed += _changed((await node.run(SERVICES_SCRIPT, sudo=True, timeout=120)).stdout)
    return changed
