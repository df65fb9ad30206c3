"""The one redaction function, against what kubeadm, k3s, kubectl and kubitect's own node steps print."""

from __future__ import annotations

import json

import pytest

from kubitect_core.redact import MARK, redact, redact_data

CA_HASH = "sha256:6e2b4f6f4b8a3f1c5a6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345"
CERT_KEY = "e6a2eb8581237ab72a4f494f30285ec12a9694d750b9785706a83bfcbbbd2204"
BOOTSTRAP = "9a08jv.c0izixklcxtmnze7"
K3S_FULL = "K10b6e4c2f1a0d9e8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3::server:7c2a9f4e1b8d3c6a"

KUBEADM_INIT_OUTPUT = f"""\
[init] Using Kubernetes version: v1.34.2
[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace
[upload-certs] Using certificate key:
{CERT_KEY}
[bootstrap-token] Using token: {BOOTSTRAP}
[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles

You can now join any number of control-plane nodes running the following command on each as root:

  kubeadm join 10.10.13.200:6443 --token {BOOTSTRAP} \\
\t--discovery-token-ca-cert-hash {CA_HASH} \\
\t--control-plane --certificate-key {CERT_KEY}

Then you can join any number of worker nodes by running the following on each as root:

kubeadm join 10.10.13.200:6443 --token {BOOTSTRAP} \\
\t--discovery-token-ca-cert-hash {CA_HASH}
"""

JOIN_CONFIG = f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 10.10.13.200:6443
    token: {BOOTSTRAP}
    caCertHashes:
    - {CA_HASH}
controlPlane:
  certificateKey: "{CERT_KEY}"
"""

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IkRFRiJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0."
       "c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA")

KUBECONFIG = f"""\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://10.10.13.200:6443
  name: kubitect-ha
users:
- name: kubernetes-admin
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURJVE=
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB
- name: sa
  user:
    token: {JWT}
"""

PRIVATE_KEY = """\
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBh3nCz1bWdkyFq0VbW8CjF4vIJ6cK0qbsb3vNz7ZzZpAAAAJg=
-----END OPENSSH PRIVATE KEY-----
"""


def _secrets_gone(text: str, *secrets: str) -> None:
    out = redact(text)
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived in:\n{out}"
    assert MARK in out


def test_kubeadm_init_output_loses_token_and_certificate_key_but_keeps_the_ca_hash():
    out = redact(KUBEADM_INIT_OUTPUT)
    _secrets_gone(KUBEADM_INIT_OUTPUT, BOOTSTRAP, CERT_KEY)
    assert out.count(CA_HASH) == 2, "the CA hash is public and needed to debug a join"
    assert "kubeadm join 10.10.13.200:6443 --token <redacted>" in out
    assert "--control-plane --certificate-key <redacted>" in out
    assert "[upload-certs] Using certificate key:\n<redacted>" in out


def test_one_line_kubeadm_join_commands():
    worker = f"kubeadm join 10.0.0.5:6443 --token {BOOTSTRAP} --discovery-token-ca-cert-hash {CA_HASH}"
    master = f"{worker} --control-plane --certificate-key={CERT_KEY} --apiserver-advertise-address 10.0.0.6"
    assert redact(worker) == f"kubeadm join 10.0.0.5:6443 --token <redacted> --discovery-token-ca-cert-hash {CA_HASH}"
    out = redact(master)
    assert CERT_KEY not in out and BOOTSTRAP not in out and "--apiserver-advertise-address 10.0.0.6" in out


def test_kubeadm_join_configuration():
    out = redact(JOIN_CONFIG)
    _secrets_gone(JOIN_CONFIG, BOOTSTRAP, CERT_KEY)
    assert "apiServerEndpoint: 10.10.13.200:6443" in out and CA_HASH in out


@pytest.mark.parametrize("text, secret", [
    (f"K3S_TOKEN={K3S_FULL}", K3S_FULL.split("::")[1]),
    ("curl -sfL https://get.k3s.io | K3S_TOKEN=s3cr3t-tok3n INSTALL_K3S_VERSION=v1.34.2+k3s1 sh -", "s3cr3t-tok3n"),
    ("k3s agent --server https://10.0.0.5:6443 --token s3cr3t-tok3n --node-ip 10.0.0.7", "s3cr3t-tok3n"),
    ("k3s server --cluster-init --token=s3cr3t-tok3n", "s3cr3t-tok3n"),
    ('token: "s3cr3t-tok3n"\nserver: https://10.0.0.5:6443\n', "s3cr3t-tok3n"),
    ("agent-token: s3cr3t-tok3n\n", "s3cr3t-tok3n"),
    (f"/var/lib/rancher/k3s/server/node-token: {K3S_FULL}", K3S_FULL[3:40]),
    (f"level=info msg=\"Using token {K3S_FULL}\"", K3S_FULL.split("::")[1]),
])
def test_k3s_tokens(text, secret):
    _secrets_gone(text, secret)


def test_k3s_full_token_alone():
    assert redact(K3S_FULL) == MARK


def test_kubeconfig_credentials_but_not_the_server_or_cluster_name():
    out = redact(KUBECONFIG)
    assert "client-key-data: <redacted>" in out and "token: <redacted>" in out
    assert "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB" not in out
    assert "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRFRiJ9" not in out
    assert "server: https://10.10.13.200:6443" in out and "name: kubitect-ha" in out


def test_private_keys_whole_and_cut_off():
    out = redact(f"before\n{PRIVATE_KEY}after\n")
    assert "b3BlbnNzaC1rZXktdjEA" not in out and "before" in out and "after" in out
    cut = redact("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx9f (output truncated")
    assert "MIIEpAIBAAKCAQEA" not in cut


def test_public_material_stays():
    text = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh3nCz1bWdkyFq0VbW8CjF4vIJ6cK0qbsb3vNz7ZzZp k8s@kubitect\n"
            "privateKeyPath: /home/me/.ssh/id_rsa_ha\n--token-ttl 0\nbootstrapTokens:\n"
            "-----BEGIN CERTIFICATE-----\nMIIDBTCCAe2gAwIBAgIIYX\n-----END CERTIFICATE-----\n")
    assert redact(text) == text


@pytest.mark.parametrize("text, secret", [
    ("authentication {\n    auth_type PASS\n    auth_pass kb1t3ct!\n}", "kb1t3ct!"),
    ("stats auth admin:hunter22", "hunter22"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"),
    ("git clone https://oauth2:glpat-AbCdEf123456@git.example/x.git", "glpat-AbCdEf123456"),
    ("MYSQL_ROOT_PASSWORD=hunter22 docker run", "hunter22"),
    ('{"kind": "Secret", "data": {"password": "aHVudGVyMjI="}}', "aHVudGVyMjI="),
])
def test_other_credentials(text, secret):
    _secrets_gone(text, secret)


def test_data_keeps_json_valid():
    event = {"event": "stage_finished", "error": f"node m1: `kubeadm join` exited 1: token {BOOTSTRAP} expired",
             "changes": [{"detail": f'"token": "{BOOTSTRAP}"'}], "seconds": 1.5, "ok": False}
    out = redact_data(event)
    text = json.dumps(out)
    assert BOOTSTRAP not in text and json.loads(text)["seconds"] == 1.5 and out["ok"] is False


def test_bounded_time_on_hostile_input():
    """The patterns are linear: a megabyte of near-misses is redacted quickly (no catastrophic backtracking)."""
    import time

    text = ("token" * 20000 + "-" * 50000 + "K10" + "a" * 100000 + ":" * 1000 + "x " * 100000)
    t0 = time.monotonic()
    redact(text)
    assert time.monotonic() - t0 < 5
