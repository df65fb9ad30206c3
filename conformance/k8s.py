"""Reading Kubernetes state for the conformance checks: kubectl on the first master, judged here.

kubectl runs on a control-plane node over SSH with the admin kubeconfig the installer left
there, so the checks need nothing installed on the machine running kubitect. The judging
functions are pure (JSON in, problems out) and unit-tested without a cluster.
"""

from __future__ import annotations

import json
import re
from typing import Any

DNS_QUERY_PY = r"""
import random, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
qid = random.randint(0, 65535)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, (server, 53)); data = s.recv(4096)
rid, flags, _qd, an = struct.unpack(">HHHH", data[:8])
print("rcode=%d answers=%d" % (flags & 0xF, an))
"""


def kubectl_command(facts: dict[str, Any]) -> str:
    """The kubectl invocation on a master for the installer that built the cluster."""
    if facts.get("installer") == "k3s":
        return "k3s kubectl"
    return "kubectl --kubeconfig /etc/kubernetes/admin.conf"


def not_ready_nodes(nodes_json: str) -> list[str]:
    """Names of nodes whose Ready condition is not True (with the reason when given)."""
    bad = []
    for item in json.loads(nodes_json).get("items", []):
        conds = {c["type"]: c for c in item.get("status", {}).get("conditions", [])}
        ready = conds.get("Ready", {})
        if ready.get("status") != "True":
            bad.append(f"{item['metadata']['name']} ({ready.get('reason') or 'no Ready condition'})")
    return bad


def missing_nodes(nodes_json: str, expected: list[str]) -> list[str]:
    """Configured node names that Kubernetes does not know."""
    known = {i["metadata"]["name"] for i in json.loads(nodes_json).get("items", [])}
    return [n for n in expected if n not in known]


def not_ready_pods(pods_json: str) -> list[str]:
    """kube-system pods that are neither Succeeded nor Running with every container ready."""
    bad = []
    for item in json.loads(pods_json).get("items", []):
        phase = item.get("status", {}).get("phase")
        if phase == "Succeeded":
            continue
        statuses = item.get("status", {}).get("containerStatuses") or []
        ready = phase == "Running" and statuses and all(s.get("ready") for s in statuses)
        if not ready:
            bad.append(f"{item['metadata']['name']} ({phase})")
    return bad


def dns_answer_ok(output: str) -> bool:
    """True when the DNS probe printed rcode 0 with at least one answer."""
    m = re.search(r"rcode=(\d+) answers=(\d+)", output)
    return bool(m) and m.group(1) == "0" and int(m.group(2)) > 0


def certificate_ips(x509_text: str) -> list[str]:
    """IP addresses in a certificate's subjectAltName (from `openssl x509 -noout -ext subjectAltName`)."""
    return re.findall(r"IP Address:([0-9a-fA-F.:]+)", x509_text)
