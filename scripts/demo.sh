#!/usr/bin/env bash
# The README's first command: from a fresh Debian 12 machine (as root), set everything up and
# apply the embedded default — a local HA lab of systemd-nspawn nodes (2 load balancers with a
# VIP, 3 masters, 1 worker) — through the real pipeline, inside an isolated network namespace.
#
#   ./scripts/demo.sh          set up, (re)create the lab, apply, verify; nodes stay up
#   ./scripts/demo.sh down     destroy the lab cluster and remove its namespace
#
#   ./scripts/demo.sh --seed        the seed (examples/ha.yaml, unchanged) on five simulated hosts:
#                                   8 real VMs (QEMU), then a whole host lost; ends with the
#                                   failover table including host loss
#   ./scripts/demo.sh --seed down   destroy it and remove the five hosts
#
# Everything networked lives in lab namespaces (`kblab-demo`, `kblab-seed` and its hosts); the
# machine's own network is never touched. Reach the nodes with: kubitect lab exec demo -- ssh -i
# <cluster key> k8s@172.30.0.21
set -euo pipefail
cd "$(dirname "$0")/.."
k=.venv/bin/kubitect

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh needs root (network namespaces, systemd-nspawn, libvirtd)" >&2
  exit 2
fi

seed=false
if [ "${1:-}" = --seed ]; then
  seed=true
  shift
fi

if $seed; then
  lab=seed
  cluster=kubitect-ha
  config=examples/ha.yaml
else
  lab=demo
  cluster=lab
fi

down() {
  if [ -x "$k" ] && "$k" lab status 2>/dev/null | grep -q "kblab-$lab"; then
    "$k" lab exec "$lab" -- "$k" destroy --cluster "$cluster" --auto-approve || true
  elif [ -x "$k" ] && ! $seed; then
    "$k" destroy --cluster "$cluster" --auto-approve >/dev/null 2>&1 || true
  fi
  [ -x "$k" ] && "$k" lab down "$lab"
  return 0
}

if [ "${1:-up}" = down ]; then
  down
  exit 0
fi

t0=$(date +%s)
./scripts/setup.sh
if $seed; then
  # Five hosts, each with its own sshd and libvirtd, on the seed's 10.10.0.0/20; kubitect runs
  # in the lab's workstation namespace and reaches them with qemu+ssh, as on a real site. The
  # seed's `distro: ubuntu22` is served offline by kubitect's own Debian image (said so wherever
  # it is named). The kubernetes stage is skipped: its packages need the internet.
  "$k" image build --kind vm
  down
  "$k" lab up "$lab" --config "$config"
  "$k" lab exec "$lab" -- "$k" apply --config "$config" --auto-approve
  # Lose the VIP holder's whole host: its cable pulled at the lab's switch, then plugged back.
  # (`--host-fault power` destroys its VMs instead; `apply --reconcile` then brings them back.)
  "$k" lab exec "$lab" -- "$k" verify --cluster "$cluster" --chaos host --host-fault uplink --yes
  echo
  "$k" lab exec "$lab" -- "$k" export report --cluster "$cluster"
  echo
  echo "The seed is up on five simulated hosts in lab kblab-$lab ($(( $(date +%s) - t0 )) s in all)."
  echo "  hosts:    $k lab status ; $k lab exec $lab --host host3 -- virsh -c qemu:///system list"
  echo "  lose one: $k lab exec $lab -- $k verify --cluster $cluster --chaos host --yes   (power cut)"
  echo "  restore:  $k lab exec $lab -- $k apply --config $config --reconcile --auto-approve"
  echo "  teardown: ./scripts/demo.sh --seed down"
  exit 0
fi

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
