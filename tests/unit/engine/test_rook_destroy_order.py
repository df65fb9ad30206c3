"""destroy removes the Rook addon before the machines (issue 18): run through the engine with the
fake machine/installer backends (tests/fixtures/kubitect_fakes.py) and the real rook stage
talking to the stateful kubectl DOUBLE. The double's Ceph finalizer needs the operator, and the
machines' deletion is logged by the fake hypervisor, so the order is observable: every kubectl
delete of the addon comes before the vms layer is destroyed, and the addon is gone from the API."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_rook import TEST_RELEASE, Fetcher, _guest_disks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from rook_kubectl_double import KubectlDouble  # noqa: E402


def test_destroy_removes_rook_before_the_vms(fake_env, monkeypatch):
    import kubitect_fakes

    from kubitect_core.config import load_config
    from kubitect_core.engine import Engine, Options, run_sync
    from kubitect_core.plugins import load_registry

    monkeypatch.setenv("KUBITECT_DISABLE_PLUGINS", "libvirt,nspawn,keepalived-haproxy,kubeadm,k3s,conformance")
    cfg = fake_env / "ha.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["addons"] = {"rook": {"enabled": True}}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))

    class LoggedDouble(KubectlDouble):
        async def __call__(self, args, *, stdin=None, timeout=None):
            res = await super().__call__(args, stdin=stdin, timeout=timeout)
            if "delete" in args:
                kubitect_fakes._log(op="rook", verb="delete", ok=res.ok)
            return res

    double = LoggedDouble(disks=_guest_disks(load_config(cfg)))
    registry = load_registry()
    rook = registry.stage("rook")

    async def connect(ctx):
        return double
    rook._kubectl, rook._fetch, rook._releases, rook.poll_s = connect, Fetcher(), {"v1.20.6": TEST_RELEASE}, 0

    real_apply = kubitect_fakes.FakeInstaller.apply

    async def installs(self, ctx):  # the fake installer records what a real one does
        changes = await real_apply(self, ctx)
        ctx.record["installer"] = self.name
        return changes
    monkeypatch.setattr(kubitect_fakes.FakeInstaller, "apply", installs)

    engine = Engine(fake_env / "home", registry)
    # every stage but verify (whose conformance would reach for the seed's addresses)
    stages = ["network", "storage", "vms", "loadbalancers", "kubernetes", "rook"]
    outcome = run_sync(engine.run_stages(cfg, stages, Options(auto_approve=True)))
    assert "rook" not in outcome.skipped and double.objects, outcome.skipped  # Rook is installed
    run_sync(engine.destroy("kubitect-ha", Options(auto_approve=True)))

    calls = kubitect_fakes.calls()
    deletes = [i for i, c in enumerate(calls) if c.get("op") == "rook"]
    vms_gone = next(i for i, c in enumerate(calls) if c.get("stage") == "destroy-vms")
    assert deletes and max(deletes) < vms_gone, calls
    assert all(calls[i]["ok"] for i in deletes)  # each removal succeeded: the operator still ran
    assert double.objects == {}
