#!/usr/bin/env bash
# Runs the whole test suite, tier by tier, on a Debian 12 machine as root:
#   unit     models, rules, templates, engine with test doubles         (seconds)
#   libvirt  libvirt's test:///default driver                            (seconds)
#   lab      network namespaces, nspawn nodes, real sshd/keepalived/HAProxy (tens of seconds)
#   e2e      libvirtd + QEMU in a lab namespace, real VMs                (minutes)
#   online   real Kubernetes installs; skip with the reason where the internet is unreachable
# Installs what it needs first (scripts/setup.sh, idempotent), tears labs down on exit, prints
# each tier's time and fails if any tier fails. Extra arguments go to every pytest call.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

./scripts/setup.sh || { echo "setup failed" >&2; exit 1; }
py=.venv/bin/python
export PYTHONDONTWRITEBYTECODE=1

cleanup() {
  # Labs left behind by a crashed test: every namespace and process carrying a kubitect test prefix.
  for prefix in kblab- kbt; do
    "$py" -m kubitect_core.cli lab down --all --prefix "$prefix" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT INT TERM

tiers=(${KUBITECT_TEST_TIERS:-unit libvirt lab e2e online})
declare -A took result
failed=0
for tier in "${tiers[@]}"; do
  dir=tests/$tier
  [ -d "$dir" ] || { result[$tier]="absent"; continue; }
  echo "=== tier $tier ==="
  t0=$(date +%s)
  "$py" -m pytest "$dir" -p no:cacheprovider "$@"
  rc=$?
  took[$tier]=$(( $(date +%s) - t0 ))
  case $rc in
    0) result[$tier]="passed" ;;
    5) result[$tier]="no tests" ;;   # an optional tier with nothing collected is not a failure
    *) result[$tier]="FAILED (exit $rc)"; failed=1 ;;
  esac
done

echo
echo "=== summary ==="
for tier in "${tiers[@]}"; do
  printf '%-8s %-18s %ss\n' "$tier" "${result[$tier]}" "${took[$tier]:-0}"
done
"$py" -m ruff check -q . || { echo "ruff found problems"; failed=1; }
exit $failed
