"""The kubeadm installer: prepare nodes, init the first master, join the rest, CNI, Ready, kubeconfig.

Order (what Kubernetes requires, nothing more): every node prepared concurrently (bounded), then
`kubeadm init` on the first master, then the other masters joined as control planes ONE AT A
TIME (each new etcd member must be healthy before the next one joins, or quorum is at risk),
then all workers joined concurrently (bounded). Per-node progress is recorded and checkpointed
after every step, so a re-run after a failure continues where it stopped, and a node already
joined at the configured version is left alone.

A cluster running another version is upgraded first (`--action upgrade`): the SDK's rolling
upgrade (preflight, lock, etcd snapshot, control planes one at a time, workers in batches) with
kubeadm's own steps from `upgrade.py`. Adding nodes and upgrading in one run is refused.

Secrets: the bootstrap token and certificate key are generated once with the `secrets` module,
kept in `<cluster_dir>/secrets/kubeadm.json` (0600), written to nodes only inside 0600 config
files that are deleted after use, and never put on a command line or into a Change or log line.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubitect_core.sdk import Change, Node, Remote, StageContext, StageError, etcd, kube, lazy_import, write_private

from . import nodeprep, render, sources
from .render import KubeadmSecrets
from .upgrade import KubeadmUpgrade

x509 = lazy_import("cryptography.x509")  # loaded on first use (fast start: kubitect_core.sdk.lazy)
serialization = lazy_import("cryptography.hazmat.primitives.serialization")

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
CA_CERT = "/etc/kubernetes/pki/ca.crt"
CONFIG_DIR = "/etc/kubernetes/kubitect"
INIT_CONFIG = f"{CONFIG_DIR}/kubeadm-init.yaml"
JOIN_CONFIG = f"{CONFIG_DIR}/kubeadm-join.yaml"
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
SECRETS_FILE = "kubeadm.json"
RENEW_UNIT = "kubitect-certs-renew"


def ca_cert_hash(pem: bytes) -> str:
    """`sha256:<hex>` of the CA's DER SubjectPublicKeyInfo: kubeadm's discovery-token-ca-cert-hash."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise StageError(f"the cluster CA certificate ({CA_CERT}) cannot be read: {exc}") from None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def internet_reason(ctx: StageContext) -> str | None:
    """None when the kubeadm package repository is reachable from this machine, else why not.

    Bounded (a few seconds). With installer_source=preinstalled nothing is downloaded: None.
    """
    return kube.download_reason(ctx, lambda: sources.probe_urls(render.version(ctx)))


def _load_secrets(ctx: StageContext) -> KubeadmSecrets:
    data = kube.load_or_create_secrets(kube.secrets_dir(ctx) / SECRETS_FILE, {
        "token": kube.bootstrap_token, "certificate_key": kube.certificate_key,
    })
    return KubeadmSecrets(data["token"], data["certificate_key"])


def _rotate(ctx: StageContext, key: str) -> KubeadmSecrets:
    """Replaces one stored secret ("token" or "certificate_key") by a new one, kept 0600.

    Why: a later join must not depend on material from the cluster's creation. kubeadm deletes
    uploaded certificates two hours after an upload and a token after a day, and a new value each
    time means one that leaked from an earlier join opens nothing now.
    """
    path = kube.secrets_dir(ctx) / SECRETS_FILE
    data = json.loads(path.read_text())
    data[key] = {"token": kube.bootstrap_token, "certificate_key": kube.certificate_key}[key]()
    write_private(path, json.dumps(data, indent=2) + "\n")
    return KubeadmSecrets(data["token"], data["certificate_key"])


class KubeadmInstaller:
    """The `kubeadm` installer plugin (the default `kubernetes.manager`)."""

    name = "kubeadm"
    supported_versions = sources.SUPPORTED_VERSIONS
    maintained_from = sources.MAINTAINED_FROM
    default = True  # serves configs without kubernetes.manager
    # Kubitect's own default manager: Kubespray drives kubeadm underneath, so kubeadm serves it.
    aliases = {"kubespray": "what Kubespray runs underneath"}

    def internet_reason(self, ctx: StageContext) -> str | None:
        """See the module-level `internet_reason`: lets a stage ask the installer it selected."""
        return internet_reason(ctx)

    # ------------------------------------------------------------------ plan
    async def plan(self, ctx: StageContext) -> list[Change]:
        """From the record only (no SSH): which nodes would be initialised/joined, CNI, kubeconfig."""
        want = render.version(ctx)
        nodes = ctx.record.get("nodes", {})
        changes = []
        for i, node in enumerate(kube.cluster_nodes(ctx)):
            rec = nodes.get(node.name, {})
            if rec.get("state") == "joined" and rec.get("version") == want:
                changes.append(Change("keep", "node", node.name, node.host, f"joined at {want}"))
            elif rec.get("state") == "joined":
                changes.append(Change("change", "node", node.name, node.host,
                                      f"upgrade {rec.get('version')} -> {want} (drain, kubeadm upgrade, kubelet)"))
            else:
                what = "kubeadm init" if i == 0 else ("join control plane" if node.role == "master" else "join worker")
                changes.append(Change("create", "node", node.name, node.host, f"{what} {want}"))
        cni = kube.CNIS[ctx.config.kubernetes.network_plugin]
        done = ctx.record.get("cni") == {"name": cni.name, "version": cni.version}
        changes.append(Change("keep" if done else "create", "cni", cni.name, None, cni.version))
        changes.append(kube.kubeconfig_plan(ctx))
        return changes

    # ------------------------------------------------------------------ apply
    async def apply(self, ctx: StageContext) -> list[Change]:
        """Converge: see the module docstring for the order; returns one Change per node and step."""
        want = render.version(ctx)
        src = kube.source(ctx)
        masters, workers = list(ctx.topology.masters), list(ctx.topology.workers)
        if not masters:
            raise StageError("kubeadm needs at least one master node")
        changes: list[Change] = []
        async with kube.node_pool(ctx) as pool:
            first = await kube.first_master(ctx, pool, "the package repository", sources.probe_urls(want))
            ctx.record["installer"] = self.name
            nodes_rec: dict[str, dict[str, Any]] = ctx.record.setdefault("nodes", {})
            secrets = _load_secrets(ctx)

            async def remote(node: Node) -> Remote:
                return await pool.get(node.ip, name=node.name, wait=60)

            # 1. which nodes are already members at the right version (checked on the node)
            status = dict(zip([n.name for n in masters + workers],
                              await pool.each(masters + workers, lambda n: self._node_status(n, remote, want)),
                              strict=True))
            if kube.upgrade_pending(ctx, want) or "other-version" in status.values():
                fresh = [n for n in status if status[n] == "fresh"]
                if fresh:
                    raise StageError(f"{', '.join(fresh)}: not members yet, while the cluster needs an upgrade to "
                                     f"{want}; add nodes and upgrade in separate runs")
                changes += await kube.upgrade(ctx, pool, first, KubeadmUpgrade(KUBECTL, src), want, remote)
                status = dict.fromkeys(status, "joined")
            for node in masters + workers:
                if status[node.name] == "joined":
                    nodes_rec.setdefault(node.name, {}).update(role=node.role, state="joined", version=want)
                    changes.append(Change("keep", "node", node.name, node.host, f"joined at {want}"))
            pending = [n for n in masters + workers if status[n.name] != "joined"]
            ctx.checkpoint()

            # 2. prepare every pending node (bounded concurrency)
            async def prep(node: Node) -> None:
                ctx.progress(node.name, "preparing (kernel modules, sysctls, swap, runtime, packages)")
                done = await nodeprep.prepare(await remote(node), want, src)
                nodes_rec.setdefault(node.name, {}).update(role=node.role, state="prepared", version=want)
                ctx.checkpoint()
                if done:
                    changes.append(Change("change", "host", node.name, node.host, "; ".join(done)))
            await pool.each(pending, prep)

            # 3. init on the first master; when it is a rebuilt one (`kubitect replace`) while other
            # control planes are members, it joins them instead: a second `kubeadm init` would split the cluster
            joined_masters = [m for m in masters if status[m.name] == "joined"]
            if status[masters[0].name] == "fresh" and joined_masters:
                masters = [joined_masters[0], *[m for m in masters if m is not joined_masters[0]]]
                first = await remote(masters[0])
            just_initialised = False
            if status[masters[0].name] == "fresh":
                await self._init(ctx, masters[0], first, secrets)
                just_initialised = True
                nodes_rec[masters[0].name].update(state="joined")
                ctx.checkpoint()
                changes.append(Change("create", "node", masters[0].name, masters[0].host, f"kubeadm init {want}"))
            ca_hash = ca_cert_hash(await first.get(CA_CERT, sudo=True))
            ctx.record["ca_cert_hash"] = ca_hash
            joins = [n for n in pending if n is not masters[0]]
            if joins and not just_initialised:
                if any(n.role == "master" for n in joins):  # control-plane joins download certificates
                    secrets = _rotate(ctx, "certificate_key")
                secrets = await self._refresh_join_material(ctx, masters[0], first, secrets)

            # 4. other masters, one at a time (etcd quorum, checked before and after each)
            for node in [n for n in joins if n.role == "master"]:
                if not just_initialised:
                    await etcd.check_control_plane_addition(first, node)
                await self._join(ctx, node, await remote(node), secrets, ca_hash)
                await self._wait_local_api(node, await remote(node), kube.ready_timeout(ctx))
                if not just_initialised:
                    ctx.progress(node.name, f"etcd: {await etcd.check_control_plane_joined(first, node)}")
                nodes_rec[node.name].update(state="joined")
                ctx.checkpoint()
                changes.append(Change("create", "node", node.name, node.host, f"joined as control plane {want}"))

            # 5. workers, concurrently (bounded)
            async def join_worker(node: Node) -> None:
                await self._join(ctx, node, await remote(node), secrets, ca_hash)
                nodes_rec[node.name].update(state="joined")
                ctx.checkpoint()
                changes.append(Change("create", "node", node.name, node.host, f"joined as worker {want}"))
            await pool.each([n for n in joins if n.role == "worker"], join_worker)

            # 6. labels a kubelet may not set itself, CNI, certificate renewal, Ready, kubeconfig
            changes += await kube.apply_restricted_labels(ctx, first, KUBECTL)
            changes += await kube.install_cni(ctx, first, KUBECTL, ADMIN_CONF,
                                                (render.POD_CIDR_DEFAULT, render.SERVICE_CIDR_DEFAULT))
            if ctx.config.kubernetes.other.auto_renew_certificates:
                renewed = await pool.each(masters, lambda n: self._renew_timer(n, remote))
                changes += [c for c in renewed if c]
            fetched = await kube.ready_then_fetch(ctx, first, KUBECTL, ADMIN_CONF)
        changes.append(kube.kubeconfig_change(ctx, fetched))
        return changes

    async def _node_status(self, node: Node, remote, want: str) -> str:
        """'joined' (kubelet.conf present, kubelet at `want`), 'other-version', or 'fresh'."""
        r = await remote(node)
        res = await r.run(f"test -f {KUBELET_CONF} && kubelet --version", sudo=True, check=False, timeout=30)
        if not res.ok:
            return "fresh"
        return "joined" if res.stdout.strip().endswith(want) else "other-version"

    async def _init(self, ctx: StageContext, node: Node, r: Remote, secrets: KubeadmSecrets) -> None:
        ctx.progress(node.name, "kubeadm init")
        res = await r.run(f"test -f {ADMIN_CONF}", sudo=True, check=False)
        if not res.ok:
            await r.put(render.render_init(ctx, node, secrets), INIT_CONFIG, mode=0o600, sudo=True)
            try:
                await r.run(f"kubeadm init --config {INIT_CONFIG} --upload-certs", sudo=True, timeout=900)
            finally:
                await r.run(f"rm -f {INIT_CONFIG}", sudo=True, check=False)
        await self._wait_local_api(node, r, kube.ready_timeout(ctx))

    async def _refresh_join_material(self, ctx: StageContext, node: Node, r: Remote,
                                     secrets: KubeadmSecrets) -> KubeadmSecrets:
        """A later run (a scale-out, a resumed run): a NEW bootstrap token, the control-plane
        certificates uploaded again; the old token is deleted. Returns the secrets to join with.

        Why: kubeadm deletes the uploaded certificates after two hours and a token after 24; a
        scale-out days later must still be able to join, and a token that once leaked (it was
        valid for a day after create) must not let a machine join the cluster later.
        """
        ctx.progress(node.name, "creating a fresh bootstrap token, uploading the certificates again")
        fresh = _rotate(ctx, "token")
        await r.put(render.render_init(ctx, node, fresh), INIT_CONFIG, mode=0o600, sudo=True)
        try:
            await r.run(f"kubeadm init phase bootstrap-token --config {INIT_CONFIG}", sudo=True, timeout=120)
            await r.run(f"kubeadm init phase upload-certs --upload-certs --config {INIT_CONFIG}", sudo=True,
                        timeout=120)
        finally:
            await r.run(f"rm -f {INIT_CONFIG}", sudo=True, check=False)
        old_id = secrets.token.split(".")[0]  # the token's public id; the secret half never leaves here
        await r.run(f"kubeadm token delete {old_id}", sudo=True, check=False, timeout=60)
        return fresh

    async def _join(self, ctx: StageContext, node: Node, r: Remote, secrets: KubeadmSecrets, ca_hash: str) -> None:
        ctx.progress(node.name, "kubeadm join" + (" (control plane)" if node.role == "master" else ""))
        await r.put(render.render_join(ctx, node, secrets, ca_hash), JOIN_CONFIG, mode=0o600, sudo=True)
        try:
            await r.run(f"kubeadm join --config {JOIN_CONFIG}", sudo=True, timeout=900)
        finally:
            await r.run(f"rm -f {JOIN_CONFIG}", sudo=True, check=False)

    async def _wait_local_api(self, node: Node, r: Remote, timeout: float) -> None:
        """Waits until this control plane's API server answers /readyz (before the next one joins)."""
        script = (f"t=0; until curl -ksf --max-time 3 https://127.0.0.1:{kube.API_SERVER_PORT}/readyz >/dev/null; do "
                  f"t=$((t+1)); [ $t -ge {int(timeout * 5)} ] && exit 1; sleep 0.2; done")
        res = await r.run(script, check=False, timeout=timeout + 30)
        if not res.ok:
            raise StageError(f"{node.name}: the API server did not become ready within {timeout:g}s")

    async def _renew_timer(self, node: Node, remote) -> Change | None:
        """A systemd timer renewing control-plane certificates monthly (other.autoRenewCertificates)."""
        r = await remote(node)
        service = ("[Unit]\nDescription=Renew Kubernetes control-plane certificates (kubitect)\n\n"
                   "[Service]\nType=oneshot\nExecStart=/usr/bin/env kubeadm certs renew all\n"
                   "ExecStartPost=/bin/sh -c 'crictl pods --namespace kube-system --name kube- -q | "
                   "xargs -r crictl stopp'\n")
        timer = ("[Unit]\nDescription=Monthly Kubernetes certificate renewal (kubitect)\n\n"
                 "[Timer]\nOnCalendar=Mon *-*-1..7 03:00:00\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n")
        current = await r.run(f"cat /etc/systemd/system/{RENEW_UNIT}.timer", sudo=True, check=False)
        if current.ok and current.stdout == timer:
            return None
        await r.put(service, f"/etc/systemd/system/{RENEW_UNIT}.service", sudo=True)
        await r.put(timer, f"/etc/systemd/system/{RENEW_UNIT}.timer", sudo=True)
        await r.run(f"systemctl daemon-reload && systemctl enable --now {RENEW_UNIT}.timer", sudo=True, timeout=60)
        return Change("create", "timer", RENEW_UNIT, node.name, "monthly kubeadm certs renew all")

    # ------------------------------------------------------------------ scale-in
    async def remove_nodes(self, ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
        """Leaving members: cordon, drain, `kubeadm reset` (stops the kubelet), `kubectl delete node`."""
        if dry_run:
            return kube.removal_plan(ctx, nodes)
        return await kube.remove_members(ctx, nodes, kubectl_prefix=KUBECTL,
                                         stop_agent=lambda node: "kubeadm reset -f")

    # ------------------------------------------------------------------ destroy
    async def destroy(self, ctx: StageContext) -> list[Change]:
        """`kubeadm reset` on every reachable node (workers first), then kubeconfig and secrets.

        Works without a record (it asks each node); unreachable nodes are reported, not fatal:
        their VMs are about to be deleted by the vms stage anyway.
        """
        async def reset(node: Node, r: Remote) -> Change:
            res = await r.run(f"test -f {KUBELET_CONF} -o -f {ADMIN_CONF} && command -v kubeadm",
                              sudo=True, check=False, timeout=30)
            if not res.ok:
                return Change("keep", "node", node.name, node.host, "not a member")
            ctx.progress(node.name, "kubeadm reset")
            await r.run("kubeadm reset -f", sudo=True, timeout=300)
            await r.run(f"rm -rf {CONFIG_DIR}", sudo=True, check=False)
            return Change("delete", "node", node.name, node.host, "kubeadm reset")

        changes = await kube.remove_from_nodes(ctx, reset)
        return changes + kube.forget_installation(ctx, kube.secrets_dir(ctx) / SECRETS_FILE, "kubeadm secrets",
                                                    ("nodes", "ca_cert_hash", "cni", "labels"))

