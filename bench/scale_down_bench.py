"""Scale-down benchmark: 1,000 of 2,000 workers removed by the libvirt provider's vms stage.

Runs against libvirt's test driver (no VMs, no root), so it measures kubitect's own work: how it
finds the removed domains and their volumes. Prints the plan and apply times of the vms stage and
the target (under 2 s for the apply, issue "Day-2 operations"); with `--nodes` and `--remove` the
sizes can be changed. Before, every domain's XML was re-read per removed node (O(n²): the issue measured 47 s
here for these sizes); the figure printed beside it is the per-removed-node cost.

    .venv/bin/python bench/scale_down_bench.py [--nodes 2000] [--remove 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "libvirt"))

from libvirt_helpers import HOST_BR0, Cluster, make_image  # noqa: E402

from kubitect_core.config import load_config  # noqa: E402

TARGET_APPLY_S = 2.0


def _config(path: Path, image: Path, workers: int) -> Path:
    """One host, nat network wide enough for every worker's static address."""
    ips = (f"10.20.{i // 200}.{10 + i % 200}" for i in range(workers))
    data = {
        "hosts": [{"name": "localhost", "connection": {"type": "local"}}],
        "cluster": {
            "name": "kbtbench",
            "network": {"mode": "nat", "cidr": "10.20.0.0/16"},
            "nodeTemplate": {"user": "k8s", "updateOnBoot": False, "os": {"distro": "debian12", "source": str(image)}},
            "nodes": {
                "master": {"instances": [{"id": 1, "ip": "10.20.200.10"}]},
                "worker": {"default": {"cpu": 1, "ram": 1},
                           "instances": [{"id": i + 1, "ip": ip} for i, ip in enumerate(ips)]},
            },
        },
        "kubernetes": {"version": "v1.33.6"},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=2000, help="workers before the scale-down")
    ap.add_argument("--remove", type=int, default=1000, help="workers removed")
    args = ap.parse_args()
    from kubitect_plugins.libvirt.provider import LibvirtProvider

    with tempfile.TemporaryDirectory(prefix="kbtbench-") as tmp_s:
        tmp = Path(tmp_s)
        image = make_image(tmp / "img")
        full = load_config(_config(tmp / "full.yaml", image, args.nodes))
        provider = LibvirtProvider()
        try:
            cluster = Cluster(full, tmp, provider, {"localhost": HOST_BR0})
            t0 = time.perf_counter()
            cluster.apply_all()
            create_s = time.perf_counter() - t0
            # A real scale-down comes long after the keys and records were written; unlinking a
            # file fsynced a moment ago costs ext4 ~2 ms (journal), which would be measured here.
            os.sync()
            cluster.loaded = load_config(_config(tmp / "smaller.yaml", image, args.nodes - args.remove))
            t0 = time.perf_counter()
            planned = [c for c in cluster.run("plan", "vms") if c.action == "delete" and c.kind == "domain"]
            plan_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            applied = [c for c in cluster.run("apply", "vms") if c.action == "delete" and c.kind == "domain"]
            apply_s = time.perf_counter() - t0
        finally:
            provider.close()
    assert len(planned) == len(applied) == args.remove, (len(planned), len(applied))
    print(f"{'create (all layers)':<28}{create_s:>9.2f} s   {args.nodes + 1} domains")
    print(f"{'plan vms (scale-down)':<28}{plan_s:>9.2f} s   {len(planned)} deletions")
    print(f"{'apply vms (scale-down)':<28}{apply_s:>9.2f} s   target < {TARGET_APPLY_S:g} s   "
          f"{1000 * apply_s / args.remove:.2f} ms per removed node")
    return 0 if apply_s < TARGET_APPLY_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
