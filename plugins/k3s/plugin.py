"""The k3s installer: the release binary, one systemd unit per node, servers then agents.

Order: the first master starts the cluster (`--cluster-init`, embedded etcd); the other masters
join through the endpoint one at a time (etcd quorum); agents join concurrently (bounded).
The cluster token is random (secrets module), kept 0600 in `<cluster_dir>/secrets/k3s.json`,
and reaches each node only in a 0600 EnvironmentFile; it is never an argument, never logged,
never a default and never derived from the cluster name (the original used sha256(name)).

A cluster running another version is upgraded first (`--action upgrade`): the SDK's rolling
upgrade with k3s's own steps from `upgrade.py` (binary swap, unit restart, `k3s etcd-snapshot`).
"""

from __future__ import annotations

import shlex
from typing import Any

from kubitect_core.sdk import Change, Node, Remote, StageContext, StageError, kube

from . import args as k3s_args
from .upgrade import K3sUpgrade

BINARY = "/usr/local/bin/k3s"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
KUBECTL = f"{BINARY} kubectl"
TOKEN_FILE = "k3s.json"


def internet_reason(ctx: StageContext) -> str | None:
    """None when the k3s release binary is reachable from this machine, else why not (bounded)."""
    return kube.download_reason(ctx, lambda: [k3s_args.binary_url(k3s_args.k3s_version(ctx))])


def _token(ctx: StageContext) -> str:
    data = kube.load_or_create_secrets(kube.secrets_dir(ctx) / TOKEN_FILE, {"token": kube.random_token})
    return data["token"]


class K3sInstaller:
    """The `k3s` installer plugin (`kubernetes.manager: k3s`)."""

    name = "k3s"
    supported_versions = k3s_args.SUPPORTED_VERSIONS
    maintained_from = k3s_args.MAINTAINED_FROM

    def internet_reason(self, ctx: StageContext) -> str | None:
        """See the module-level `internet_reason`: lets a stage ask the installer it selected."""
        return internet_reason(ctx)

    async def plan(self, ctx: StageContext) -> list[Change]:
        """From the record only: which nodes would be started/joined, and the kubeconfig."""
        want = k3s_args.k3s_version(ctx)
        nodes = ctx.record.get("nodes", {})
        changes = []
        for node in kube.cluster_nodes(ctx):
            rec = nodes.get(node.name, {})
            same = rec.get("state") == "joined" and rec.get("version") == want
            changes.append(Change("keep" if same else ("change" if rec else "create"), "node", node.name, node.host,
                                  f"k3s {'server' if node.role == 'master' else 'agent'} {want}"))
        changes.append(kube.kubeconfig_plan(ctx))
        return changes

    async def apply(self, ctx: StageContext) -> list[Change]:
        """Converge every node to its unit + binary + token; see the module docstring for the order."""
        want = k3s_args.k3s_version(ctx)
        src = kube.source(ctx)
        masters, workers = list(ctx.topology.masters), list(ctx.topology.workers)
        if not masters:
            raise StageError("k3s needs at least one master node (the first server)")
        changes: list[Change] = []
        async with kube.node_pool(ctx) as pool:
            async def remote(node: Node) -> Remote:
                return await pool.get(node.ip, name=node.name, wait=60)

            first = await kube.first_master(ctx, pool, "the k3s release", [k3s_args.binary_url(want)])
            ctx.record["installer"] = self.name
            nodes_rec: dict[str, dict[str, Any]] = ctx.record.setdefault("nodes", {})
            token = _token(ctx)
            if kube.upgrade_pending(ctx, want):  # a running cluster at another version: roll it first
                changes += await kube.upgrade(ctx, pool, first, K3sUpgrade(self, KUBECTL, src), want, remote)

            async def converge(node: Node) -> None:
                r = await remote(node)
                done = await self._converge_node(ctx, node, r, token, want, src)
                await self._wait_local(ctx, node, r)
                nodes_rec[node.name] = {"role": node.role, "state": "joined", "version": want}
                ctx.checkpoint()
                role = "server" if node.role == "master" else "agent"
                changes.append(Change("change" if done else "keep", "node", node.name, node.host,
                                      "; ".join(done) if done else f"k3s {role} {want}"))

            for node in masters:  # the first server, then each other server alone
                await converge(node)
            await pool.each(workers, converge)

            changes += await kube.apply_restricted_labels(ctx, first, KUBECTL)
            if not k3s_args.uses_flannel(ctx):  # k3s's own flannel needs no CNI install
                changes += await kube.install_cni(ctx, first, KUBECTL, KUBECONFIG,
                                                    (k3s_args.POD_CIDR_DEFAULT, k3s_args.SERVICE_CIDR_DEFAULT),
                                                    announce=False)
            fetched = await kube.ready_then_fetch(ctx, first, KUBECTL, KUBECONFIG)
        changes.append(kube.kubeconfig_change(ctx, fetched))
        return changes

    async def _install_binary(self, node: Node, r: Remote, want: str, src: str) -> list[str]:
        have = await r.run(f"{BINARY} --version 2>/dev/null | head -n1", sudo=True, check=False)
        if src == kube.SOURCE_PREINSTALLED:
            if not have.stdout.strip():
                raise StageError(f"{node.name}: installer_source=preinstalled, but {BINARY} is missing")
            if want not in have.stdout.split():
                raise StageError(f"{node.name}: {BINARY} reports '{have.stdout.strip()}', the config asks for {want}")
            return []
        if want in have.stdout.split():
            return []
        url, sums = k3s_args.binary_url(want), k3s_args.checksum_url(want)
        script = (f"set -eu; t=$(mktemp -d); curl -fsSL --retry 3 -o $t/k3s {shlex.quote(url)}; "
                  f"curl -fsSL --retry 3 -o $t/sums {shlex.quote(sums)}; "
                  f"want=$(awk '$2==\"k3s\"{{print $1}}' $t/sums); got=$(sha256sum $t/k3s | cut -d' ' -f1); "
                  f"[ -n \"$want\" ] && [ \"$want\" = \"$got\" ] || {{ echo 'checksum mismatch' >&2; exit 1; }}; "
                  f"install -m 0755 $t/k3s {BINARY}; rm -rf $t")
        await r.run(script, sudo=True, timeout=600)
        return [f"k3s {want} installed"]

    async def _converge_node(self, ctx: StageContext, node: Node, r: Remote, token: str, want: str,
                             src: str) -> list[str]:
        ctx.progress(node.name, f"k3s {'server' if node.role == 'master' else 'agent'}")
        done = await self._install_binary(node, r, want, src)
        unit = k3s_args.unit_name(node)
        unit_path = f"/etc/systemd/system/{unit}.service"
        unit_text = k3s_args.render_unit(ctx, node, BINARY)
        env_text = f"K3S_TOKEN={token}\n"
        cur_unit = await r.run(f"cat {unit_path}", sudo=True, check=False)
        cur_env = await r.run(f"cat {k3s_args.env_file(node)}", sudo=True, check=False)
        active = (await r.run(f"systemctl is-active --quiet {unit}", sudo=True, check=False)).ok
        if cur_env.stdout != env_text:
            await r.put(env_text, k3s_args.env_file(node), mode=0o600, sudo=True)
            done.append(f"{k3s_args.env_file(node)} written")
        if cur_unit.stdout != unit_text:
            await r.put(unit_text, unit_path, mode=0o644, sudo=True)
            done.append(f"{unit_path} written")
        if done or not active:
            await r.run(f"systemctl daemon-reload && systemctl enable {unit} >/dev/null 2>&1 && "
                        f"systemctl restart {unit}", sudo=True, timeout=900)
            done.append(f"{unit} (re)started")
        return done

    async def _wait_local(self, ctx: StageContext, node: Node, r: Remote) -> None:
        """A server's own API answers /readyz (before the next server joins); agents: the unit runs."""
        timeout = int(kube.ready_timeout(ctx))
        probe = (f"{KUBECTL} get --raw /readyz >/dev/null 2>&1" if node.role == "master"
                 else "systemctl is-active --quiet k3s-agent")
        res = await r.run(f"t=0; until {probe}; do t=$((t+1)); [ $t -ge {timeout} ] && exit 1; sleep 1; done",
                          sudo=True, check=False, timeout=timeout + 30)
        if not res.ok:
            raise StageError(f"{node.name}: k3s did not become ready within {timeout}s "
                             f"(see `journalctl -u {k3s_args.unit_name(node)}` on the node)")

    async def remove_nodes(self, ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
        """Leaving members: cordon, drain, stop the node's k3s unit, `kubectl delete node`."""
        if dry_run:
            return kube.removal_plan(ctx, nodes)
        return await kube.remove_members(
            ctx, nodes, kubectl_prefix=KUBECTL,
            stop_agent=lambda node: f"systemctl disable --now {k3s_args.unit_name(node)} >/dev/null 2>&1 || true")

    async def destroy(self, ctx: StageContext) -> list[Change]:
        """Stops and removes k3s on every reachable node (agents first), then kubeconfig and token."""
        src = kube.source(ctx)

        async def remove(node: Node, r: Remote) -> Change:
            unit = k3s_args.unit_name(node)
            res = await r.run(f"test -f /etc/systemd/system/{unit}.service", sudo=True, check=False)
            if not res.ok:
                return Change("keep", "node", node.name, node.host, "no k3s unit")
            ctx.progress(node.name, f"removing {unit}")
            binary = "" if src == kube.SOURCE_PREINSTALLED else f" {BINARY}"
            await r.run(f"systemctl disable --now {unit} >/dev/null 2>&1; "
                        f"rm -f /etc/systemd/system/{unit}.service {k3s_args.env_file(node)}{binary}; "
                        "systemctl daemon-reload; rm -rf /etc/rancher/k3s /var/lib/rancher/k3s",
                        sudo=True, timeout=300)
            return Change("delete", "node", node.name, node.host, f"{unit} removed")

        changes = await kube.remove_from_nodes(ctx, remove)
        return changes + kube.forget_installation(ctx, kube.secrets_dir(ctx) / TOKEN_FILE, "k3s token",
                                                    ("nodes", "cni", "labels"))
