#!/usr/bin/env bash
# The README's first command: from a fresh Debian 12 machine (as root), set everything up and
# apply the embedded default — a local HA lab of systemd-nspawn nodes (2 load balancers with a
# VIP, 3 masters, 1 worker) — through the real pipeline, inside an isolated network namespace.
#
#   ./scripts/demo.sh          set up, (re)create the lab, apply, verify; nodes stay up
#   ./scripts/demo.sh down     destroy the lab cluster and remove its namespace
#
# Everything networked lives in the namespace `kblab-demo`; the machine's own network is never
# touched. Reach the nodes with: kubitect lab exec demo -- ssh -i <cluster key> k8s@172.30.0.21
set -euo pipefail
cd "$(dirname "$0")/.."
lab=demo
cluster=lab
k=.venv/bin/kubitect

down() {
  if [ -x "$k" ] && "$k" lab status 2>/dev/null | grep -q "kblab-$lab"; then
    "$k" lab exec "$lab" -- "$k" destroy --cluster "$cluster" --auto-approve || true
  elif [ -x "$k" ]; then
    "$k" destroy --cluster "$cluster" --auto-approve >/dev/null 2>&1 || true
  fi
  [ -x "$k" ] && "$k" lab down "$lab"
  return 0
}

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh needs root (network namespaces, systemd-nspawn)" >&2
  exit 2
fi
if [ "${1:-up}" = down ]; then
  down
  exit 0
fi

t0=$(date +%s)
./scripts/setup.sh
"$k" image build --kind rootfs
down                               # a re-run starts from a clean lab
"$k" lab up "$lab"
home=$("$k" lab exec "$lab" -- .venv/bin/python -c 'from kubitect_core.paths import kubitect_home; print(kubitect_home())')
mkdir -p "$home"
"$k" export preset --name lab > "$home/lab.yaml"
"$k" lab exec "$lab" -- "$k" apply --config "$home/lab.yaml" --auto-approve
echo
"$k" export report --cluster "$cluster"
echo
echo "Lab '$cluster' is up in namespace kblab-$lab ($(( $(date +%s) - t0 )) s in all)."
echo "  nodes:    $k lab exec $lab -- ssh -i $home/clusters/$cluster/ssh/id_ed25519 \\"
echo "              -o UserKnownHostsFile=$home/clusters/$cluster/ssh/known_hosts k8s@172.30.0.21"
echo "  verify:   $k lab exec $lab -- $k verify --cluster $cluster"
echo "  teardown: ./scripts/demo.sh down"
