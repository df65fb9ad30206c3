"""With Kubernetes installed: every node Ready, system pods Ready, cluster DNS resolves, and the API
server certificate (seen through the endpoint) carries the VIP. Skipped with the reason otherwise."""

from __future__ import annotations

import shlex

import pytest
from kubitect_conformance import k8s
from kubitect_conformance.cluster import kubernetes_facts


@pytest.fixture(scope="module")
def kube(kubitect_inventory, masters):
    facts = kubernetes_facts(kubitect_inventory)
    if facts is None:
        pytest.skip("Kubernetes is not installed on this cluster (the kubernetes stage recorded nothing)")
    if not masters:
        pytest.skip("no master to run kubectl on")
    master, kubectl = masters[0], k8s.kubectl_command(facts)

    def run(args: str) -> str:
        res = master.root(f"{kubectl} {args}")
        assert res.rc == 0, f"`kubectl {args}` on {master.name} failed: {(res.stderr or res.stdout).strip()[-600:]}"
        return res.stdout

    return run


def test_every_node_is_ready(kube, kubitect_inventory):
    out = kube("get nodes -o json")
    expected = [n["name"] for n in kubitect_inventory["nodes"] if n["role"] in ("master", "worker")]
    missing = k8s.missing_nodes(out, expected)
    assert not missing, f"nodes not registered in Kubernetes: {', '.join(missing)}"
    bad = k8s.not_ready_nodes(out)
    assert not bad, f"nodes not Ready: {', '.join(bad)}"


def test_system_pods_are_ready(kube):
    bad = k8s.not_ready_pods(kube("get pods -n kube-system -o json"))
    assert not bad, f"kube-system pods not Ready: {', '.join(bad)}"


def test_cluster_dns_resolves(kube, masters):
    server = kube("get svc -n kube-system kube-dns -o jsonpath={.spec.clusterIP}").strip()
    assert server, "the kube-dns service has no cluster IP"
    res = masters[0].run(f"python3 -c {shlex.quote(k8s.DNS_QUERY_PY)} {server} kubernetes.default.svc.cluster.local")
    assert k8s.dns_answer_ok(res.stdout), (f"cluster DNS at {server} did not resolve "
                                           f"kubernetes.default.svc.cluster.local: {(res.stdout + res.stderr)[-400:]}")


def test_server_certificate_carries_the_vip(request, kube, kubitect_inventory, masters, api_port):
    endpoint = kubitect_inventory.get("vip") or kubitect_inventory.get("endpoint")
    vantage = request.getfixturevalue("vantage")  # after `kube`: no connection when Kubernetes is absent
    node = vantage.node or masters[0]
    res = node.run(f"openssl s_client -connect {endpoint}:{api_port} </dev/null 2>/dev/null "
                   "| openssl x509 -noout -ext subjectAltName")
    if res.rc != 0 and "not found" in res.stderr:
        pytest.skip(f"openssl is not installed on {node.name}")
    ips = k8s.certificate_ips(res.stdout)
    assert endpoint in ips, (f"the API server certificate served at {endpoint}:{api_port} does not carry "
                             f"{endpoint} (its IP SANs: {', '.join(ips) or 'none'}); clients verifying TLS will fail")
