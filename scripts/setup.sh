#!/usr/bin/env bash
# Sets up everything kubitect and its tests need on a Debian 12 machine, idempotently:
# apt packages (never starting their services in the root namespace), the venv, the project.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
t0=$(date +%s)

# Debian's postinst scripts would start sshd, libvirtd, keepalived... in the root namespace.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${#missing[@]} apt packages: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends "${missing[@]}"
else
  log "apt packages present"
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.kubitect-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  log "installing kubitect into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[libvirt,test,docs]'
  touch "$stamp"
else
  log "venv up to date"
fi
log "done in $(( $(date +%s) - t0 )) s"
