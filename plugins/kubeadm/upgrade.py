"""kubeadm's half of a rolling upgrade: its packages, `kubeadm upgrade apply/node`, the kubelet.

The order, the checks, the drain and the waits are the SDK's (`kubitect_core.sdk.kube.upgrade`);
this module only knows what kubeadm's documentation says to run on one node:

1. kubeadm itself at the new version (upstream: the per-minor package repository switched to
   the new minor, then the package; preinstalled: the staged binary is checked);
2. `kubeadm upgrade apply -y vX` on the first control plane (after `kubeadm upgrade plan vX`,
   whose preflight refuses an unhealthy cluster before anything changes), `kubeadm upgrade node`
   on every other node;
3. kubelet and kubectl at the new version, `systemctl daemon-reload`, kubelet restarted.
"""

from __future__ import annotations

import shlex

from kubitect_core.sdk import Node, Remote, StageContext, StageError, kube

from . import nodeprep, sources

DL_STABLE = "https://dl.k8s.io/release/stable-{major}.{minor}.txt"
SNAPSHOT_DIR = "/var/lib/kubitect"


def _apt_pin(version: str, packages: tuple[str, ...]) -> str:
    """Switches the apt source to `version`'s minor repository and installs `packages` at it."""
    repo = sources.apt_repo(version)
    v = kube.plain(version)
    line = f"deb [signed-by={nodeprep.APT_KEYRING}] {repo} /"
    pins = " ".join(shlex.quote(f"{p}={v}-*") for p in packages)
    return (f"set -eu; export DEBIAN_FRONTEND=noninteractive; "
            f"if [ \"$(cat {nodeprep.APT_LIST} 2>/dev/null)\" != {shlex.quote(line)} ]; then "
            f"curl -fsSL --retry 3 {repo}Release.key | gpg --dearmor --batch --yes -o {nodeprep.APT_KEYRING}; "
            f"echo {shlex.quote(line)} > {nodeprep.APT_LIST}; fi; apt-get update -q; "
            f"apt-mark unhold {' '.join(packages)} >/dev/null; "
            f"apt-get install -y -q --allow-change-held-packages {pins}; "
            f"apt-mark hold {' '.join(packages)} >/dev/null")


def _dnf_pin(version: str, packages: tuple[str, ...]) -> str:
    repo = sources.rpm_repo(version)
    v = kube.plain(version)
    pins = " ".join(shlex.quote(f"{p}-{v}") for p in packages)
    return (f"set -eu; sed -i -E 's#^baseurl=.*#baseurl={repo}#; s#^gpgkey=.*#gpgkey={repo}repodata/repomd.xml.key#' "
            f"{nodeprep.DNF_REPO}; dnf -y -q install --disableexcludes=kubernetes {pins}")


async def _packages(r: Remote, node: Node, version: str, src: str, packages: tuple[str, ...]) -> str:
    """The packages at `version` (upstream), or a check that they were staged (preinstalled)."""
    want = "v" + kube.plain(version)
    if src == kube.SOURCE_PREINSTALLED:
        tool = packages[0]
        probe = "kubeadm version -o short" if tool == "kubeadm" else f"{tool} --version"
        res = await r.run(f"{probe} 2>/dev/null", sudo=True, check=False, timeout=30)
        if want not in res.stdout.split():
            raise StageError(f"{node.name}: installer_source=preinstalled, but {tool} reports "
                             f"'{res.stdout.strip() or 'nothing'}' and the upgrade needs {want}; stage "
                             f"kubeadm, kubelet and kubectl {want} on every node first (the re-run continues here)")
        return f"{tool} {want} staged"
    os_release = (await r.run("cat /etc/os-release", check=False)).stdout
    manager = nodeprep.pkg_manager(os_release)
    if manager is None:
        raise StageError(f"{node.name}: unsupported distribution (no apt or dnf family in /etc/os-release)")
    script = _apt_pin(version, packages) if manager == "apt" else _dnf_pin(version, packages)
    await r.run(script, sudo=True, timeout=900)
    return f"{' '.join(packages)} {want} installed"


class KubeadmUpgrade:
    """The `UpgradeDriver` of the kubeadm installer."""

    def __init__(self, kubectl: str, src: str):
        self.kubectl = kubectl
        self.src = src

    async def upgrade_node(self, ctx: StageContext, node: Node, r: Remote, version: str, first: bool) -> list[str]:
        want = "v" + kube.plain(version)
        did = [await _packages(r, node, version, self.src, ("kubeadm",))]
        if first:
            ctx.progress(node.name, f"kubeadm upgrade plan {want}")
            await r.run(f"kubeadm upgrade plan {want}", sudo=True, timeout=300)
            ctx.progress(node.name, f"kubeadm upgrade apply {want}")
            await r.run(f"kubeadm upgrade apply -y {want}", sudo=True, timeout=900)
            did.append(f"kubeadm upgrade apply {want}")
        else:
            ctx.progress(node.name, "kubeadm upgrade node")
            await r.run("kubeadm upgrade node", sudo=True, timeout=900)
            did.append("kubeadm upgrade node")
        if self.src == kube.SOURCE_PREINSTALLED:
            did.append(await _packages(r, node, version, self.src, ("kubelet",)))
        else:
            did.append(await _packages(r, node, version, self.src, ("kubelet", "kubectl")))
        ctx.progress(node.name, "restarting kubelet")
        await r.run("systemctl daemon-reload && systemctl restart kubelet", sudo=True, timeout=120)
        did.append("kubelet restarted")
        return did

    async def snapshot(self, ctx: StageContext, r: Remote, name: str) -> tuple[str | None, str]:
        return await kube.stacked_etcd_snapshot(r, f"{SNAPSHOT_DIR}/{name}.db")

    async def hop_version(self, ctx: StageContext, minor: tuple[int, int]) -> str:
        if self.src == kube.SOURCE_PREINSTALLED:
            raise StageError(f"installer_source=preinstalled cannot walk through v{minor[0]}.{minor[1]}: "
                             "kubitect cannot stage binaries it does not download; upgrade one minor at a time")
        url = DL_STABLE.format(major=minor[0], minor=minor[1])
        return await kube.latest_release(url, f"v{minor[0]}.{minor[1]}")
