#!/bin/sh
# Run as root on a load balancer node by kubitect: what keepalived may use there, as key=value.
# Nothing is changed on the node.
virt=$(systemd-detect-virt 2>/dev/null) || virt=none
echo "virt=$virt"
container=$(systemd-detect-virt --container 2>/dev/null) || container=none
echo "container=$container"
# Process events: the kernel's proc connector exists only in the initial network namespace, so
# ask it (subscribe, then unsubscribe). Without python3 a container is taken as "no".
if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import os, socket, struct
def ask(op):
    msg = struct.pack("=IIIIHHI", 1, 1, 0, 0, 4, 0, op)
    s.send(struct.pack("=IHHII", 16 + len(msg), 3, 0, 0, os.getpid()) + msg)
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)
    s.bind((0, 1))
    ask(1)
    ask(2)
    print("process_events=1")
except OSError as exc:
    print("process_events=0")
    print("process_events_error=" + (exc.strerror or str(exc)).replace(" ", "_"))
'
elif [ "$container" = none ]; then
    echo "process_events=1"
else
    echo "process_events=0"
fi
# Real time as keepalived would get it: from systemd, in a service of its own (the session this
# runs in may sit in another cgroup); without systemd-run, as this shell gets it.
if command -v systemd-run >/dev/null 2>&1; then
    if systemd-run --quiet --wait --collect -p CPUSchedulingPolicy=rr -p CPUSchedulingPriority=1 \
        /bin/true >/dev/null 2>&1; then echo "realtime=1"; else echo "realtime=0"; fi
elif chrt -r 1 true 2>/dev/null; then echo "realtime=1"; else echo "realtime=0"; fi
caps=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
echo "memlock=$(( (0x${caps:-0} >> 14) & 1 ))"
awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; printf "steal_permille=%d\n", (t > 0 ? $9 * 1000 / t : 0)}' /proc/stat
echo "swap_devices=$(awk 'NR > 1' /proc/swaps | wc -l)"
echo "cpus=$(nproc 2>/dev/null || echo 1)"
