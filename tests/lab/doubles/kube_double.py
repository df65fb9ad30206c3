#!/usr/bin/python3
"""TEST DOUBLE of kubeadm, kubelet, kubectl, k3s, containerd, modprobe and sysctl (lab nodes only).

NOT the real tools. The real Kubernetes binaries need the internet, which the lab does not
have, so this one stdlib-only script is installed on lab nodes under those names (symlinks in
/usr/local/bin and /usr/local/sbin, which come first in PATH and in sudo's secure_path). It
behaves as the installers expect from the outside and records every call, so a test can assert
what an installer ran, in which order and with which parameters:

- every call appends {"t", "host", "tool", "argv", and for `--config FILE` the file's text and
  mode} to /var/log/kubitect-doubles/calls.jsonl (0600);
- `kubeadm init` makes a real CA (openssl), writes admin.conf/kubelet.conf and starts the
  stand-in API server: HTTPS on :6443 answering /readyz, /healthz, /livez with "ok";
- `kubeadm join` / `k3s server --server` / `k3s agent` REGISTER with the API server behind the
  endpoint they were given; the first server checks the bootstrap token, the CA-certificate hash
  and (for control planes) the certificate key, and refuses a wrong one (403), so a join with
  wrong parameters fails as it would for real. Control planes then serve :6443 themselves and
  forward registrations to the first one;
- `kubectl get nodes -o json` lists the registered nodes (Ready, kubeletVersion); `apply`,
  `label` are recorded only; `modprobe` and `sysctl` record and keep values in a JSON file,
  because a container can neither load kernel modules nor set bridge sysctls;
- node lifecycle as kubectl documents it (state kept by the first server, so every kubectl on
  every control plane sees one cluster): `cordon`/`uncordon` set spec.unschedulable and `get
  nodes` shows SchedulingDisabled; `drain` cordons, refuses DaemonSet pods, pods with emptyDir
  and pods without a controller unless the matching flag is given, evicts the rest through an
  eviction check that honours PodDisruptionBudgets (refused: "would violate the pod's disruption
  budget", retried every 5 s until --timeout, then fails naming the pods); an evicted pod with a
  controller is re-created on another schedulable node (Pending when there is none); `delete
  node X` of an unknown node fails like kubectl ('Error from server (NotFound): nodes "X" not
  found', exit 1). Tests plant pods, PodDisruptionBudgets and node conditions with
  `kube_double.py plant JSON` and read everything back with `kube_double.py state`;
- etcd is REAL (Debian's etcd-server in the node image), driven as kubeadm drives it: `init`
  writes the etcd static-pod manifest of a new one-member cluster (TLS from an etcd CA at
  kubeadm's paths), a control-plane `join` downloads that CA with the certificate key, runs
  `etcdctl member add` and starts its member with state `existing`, `reset` removes the node's
  member and wipes /var/lib/etcd; `init phase upload-certs` makes the config's certificate key
  the one joins must present. A kubelet stand-in (`kube_double.py static-pods`) runs etcd from
  /etc/kubernetes/manifests/etcd.yaml and stops it when the manifest is moved away.

- upgrades as kubeadm and k3s document them: every node carries the version of the binaries
  installed on it (/etc/kubitect-doubles/version, what `kubeadm version` and `kubelet --version`
  print) apart from the versions RUNNING: a node's kubelet reports its version to the API when it
  (re)starts (the `kubelet` systemd unit, `install_doubles(kubelet_service=True)`; k3s: the server
  or agent process), and each API server serves the version it was started at (/version).
  `kubeadm upgrade plan` prints the plan; `kubeadm upgrade apply [-y] vX` enforces kubeadm's
  version policy with its messages (a skipped minor, a downgrade of more than one minor, a target
  above the kubeadm binary are refused), stores vX as the cluster's version (the kubeadm-config
  ConfigMap) and restarts this node's API server at vX; `kubeadm upgrade node` brings this node's
  control plane to the cluster's version (a worker: nothing to do). `k3s etcd-snapshot save
  --name N` writes a snapshot under /var/lib/rancher/k3s/server/db/snapshots. A test plants one
  failure of the next `kubeadm upgrade` or k3s start with /etc/kubitect-doubles/fail-upgrade-once.

KUBE_DOUBLE_STATE=DIR (unit tests on the developer's machine): state and call log live in DIR
and kubectl works on them directly, without the stand-in API server.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCAL = os.environ.get("KUBE_DOUBLE_STATE")  # unit tests: no API server, state in this directory
STATE = LOCAL or "/var/lib/kubitect-doubles"
LOG = os.path.join(LOCAL, "calls.jsonl") if LOCAL else "/var/log/kubitect-doubles/calls.jsonl"
VERSION_FILE = os.path.join(LOCAL, "version") if LOCAL else "/etc/kubitect-doubles/version"
FAIL_ONCE = "/etc/kubitect-doubles/fail-join-once"
FAIL_UPGRADE_ONCE = "/etc/kubitect-doubles/fail-upgrade-once"
APISERVER_VERSION = os.path.join(STATE, "apiserver-version")  # the version this node's API server runs
PORT = 6443
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]  # fast to generate
SCRIPT = os.path.realpath(__file__)  # the script itself, not the symlink it was called by


def version():
    with open(VERSION_FILE) as fh:
        return fh.read().strip()


def record(tool, argv, **extra):
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    entry = {"t": time.time(), "host": socket.gethostname(), "tool": tool, "argv": argv, **extra}
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def config_of(argv):
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            continue
        with open(path) as fh:
            return {"config_path": path, "config": fh.read(), "config_mode": oct(os.stat(path).st_mode & 0o777)}
    return {}


def field(text, name):
    m = re.search(rf'^\s*-?\s*{name}:\s*"?([^"\n]*)"?\s*$', text, re.M)
    return m.group(1) if m else None


def load(name, default):
    try:
        with open(os.path.join(STATE, name)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def save(name, data):
    os.makedirs(STATE, exist_ok=True)
    tmp = os.path.join(STATE, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, os.path.join(STATE, name))


# ---------------------------------------------------------------------------- certificates


def make_ca(pki, cn="kubernetes-double-ca"):
    os.makedirs(pki, exist_ok=True)
    crt, key = os.path.join(pki, "ca.crt"), os.path.join(pki, "ca.key")
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", *EC_KEY, "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", f"/CN={cn}"], check=True, capture_output=True)
        os.chmod(key, 0o600)
    return crt, key


def make_server_cert(pki, sans):
    """The API server's certificate: self-signed, with the IP SANs kubitect asked for."""
    crt, key = os.path.join(pki, "apiserver.crt"), os.path.join(pki, "apiserver.key")
    alt = ",".join(f"IP:{ip}" for ip in dict.fromkeys(sans) if ip)
    cmd = ["openssl", "req", "-x509", *EC_KEY, "-nodes", "-keyout", key, "-out", crt, "-days", "2",
           "-subj", "/CN=kube-apiserver-double"] + (["-addext", f"subjectAltName={alt}"] if alt else [])
    subprocess.run(cmd, check=True, capture_output=True)
    os.chmod(key, 0o600)
    return crt, key


def sans_of(text):
    """The certSANs list of a rendered ClusterConfiguration (one `- "ip"` per line)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == "certSANs:":
            inside = True
            continue
        m = re.match(r'^\s+-\s+"?([0-9a-fA-F.:]+)"?\s*$', line)
        if inside and m:
            out.append(m.group(1))
        elif inside:
            break
    return out


def ca_hash(crt):
    pub = subprocess.run(["openssl", "x509", "-in", crt, "-pubkey", "-noout"], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True,
                         capture_output=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def b64(path):
    import base64
    with open(path, "rb") as fh:
        return base64.b64encode(fh.read()).decode()


def write_kubeconfig(path, crt, names):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = (f"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {b64(crt)}\n"
            f"    server: {names['server']}\n  name: {names['cluster']}\ncontexts:\n- context:\n"
            f"    cluster: {names['cluster']}\n    user: {names['user']}\n  name: {names['context']}\n"
            f"current-context: {names['context']}\npreferences: {{}}\nusers:\n- name: {names['user']}\n  user:\n"
            f"    client-certificate-data: RE9VQkxFLUNFUlQ=\n    client-key-data: RE9VQkxFLUtFWQ==\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


# ---------------------------------------------------------------------------- API server


def http(method, url, body=None, timeout=5):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def serve(primary_url, crt, key, ready=None):
    """The stand-in API server (foreground). primary_url None: this node is the first server."""
    served = apiserver_version()  # what a running API server reports until it is restarted

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as kube-apiserver (kubectl and kubelets keep connections)

        def log_message(self, *a):
            pass

        def reply(self, code, text, ctype="text/plain"):
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path in ("/readyz", "/healthz", "/livez", "/version"):
                return self.reply(200, "ok" if path != "/version" else json.dumps({"gitVersion": served}))
            if path == "/kubitect-double/nodes":
                if primary_url:
                    return self.reply(*http("GET", primary_url + path))
                return self.reply(200, json.dumps(load("nodes.json", {})), "application/json")
            self.reply(404, "not found")

        def do_POST(self):
            path = self.path.split("?")[0]
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if path.startswith("/kubitect-double/op/"):
                if primary_url:
                    return self.reply(*http("POST", primary_url + path, body))
                code, payload = state_op(path.rsplit("/", 1)[1], body)
                return self.reply(code, json.dumps(payload), "application/json")
            if path == "/kubitect-double/certificate-key":
                if primary_url:
                    return self.reply(*http("POST", primary_url + path, body))
                with locked():
                    cluster = load("cluster.json", {})
                    cluster["certificate_key"] = body.get("certificate_key")
                    save("cluster.json", cluster)
                return self.reply(200, "{}", "application/json")
            if path != "/kubitect-double/join":
                return self.reply(404, "not found")
            if primary_url:
                return self.reply(*http("POST", primary_url + path, body))
            cluster = load("cluster.json", {})
            problems = []
            if body.get("token") not in (cluster.get("tokens") or [cluster.get("token")]):
                problems.append("bootstrap token does not match")
            if cluster.get("kind") == "kubeadm":
                if body.get("ca_hash") != cluster.get("ca_hash"):
                    problems.append("discovery CA certificate hash does not match")
                if body.get("control_plane") and body.get("certificate_key") != cluster.get("certificate_key"):
                    problems.append("certificate key does not match")
            if problems:
                return self.reply(403, "; ".join(problems))
            with locked():
                nodes = load("nodes.json", {})
                nodes[body["name"]] = {**nodes.get(body["name"], {}), "control_plane": bool(body.get("control_plane")),
                                       "t": time.time(), "via": body.get("endpoint"),
                                       "kubelet": body.get("kubelet") or version()}
                save("nodes.json", nodes)
                schedule_pending(load("pods.json", {}), nodes)
            answer = {"primary": cluster["primary"], "sans": cluster.get("sans", [])}
            if body.get("control_plane") and cluster.get("kind") == "kubeadm" and os.path.exists(ETCD_MANIFEST):
                answer.update(etcd_ca_bundle(), etcd_endpoints=cluster["primary"].replace(f":{PORT}", ":2379"))
            self.reply(200, json.dumps(answer), "application/json")

    srv = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(crt, key)
    srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    if ready:
        ready()
    srv.serve_forever()


def wait_api(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http("GET", url + "/readyz", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def start_api_unit(primary_url, crt, key):
    subprocess.run(["systemctl", "stop", "kubitect-double-apiserver"], capture_output=True)
    subprocess.run(["systemctl", "reset-failed", "kubitect-double-apiserver"], capture_output=True)
    cmd = ["systemd-run", "--unit=kubitect-double-apiserver", "--quiet", sys.executable, SCRIPT,
           "apiserver", crt, key] + ([primary_url] if primary_url else [])
    subprocess.run(cmd, check=True)
    if not wait_api(f"https://127.0.0.1:{PORT}"):
        journal = subprocess.run(["journalctl", "-u", "kubitect-double-apiserver", "-n", "20", "--no-pager"],
                                 capture_output=True, text=True).stdout
        sys.exit("kube double: the stand-in API server did not start\n" + journal)


def register(endpoint_url, body, timeout=60):
    """Joins through the endpoint; like kubeadm's discovery, retries while it cannot connect.

    (Behind a load balancer the first API server becomes reachable only once HAProxy's health
    check has seen it rise; real kubeadm keeps retrying then, so the double does too.)
    """
    deadline = time.time() + timeout
    while True:
        try:
            code, text = http("POST", endpoint_url + "/kubitect-double/join", body)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    if code != 200:
        sys.exit(f"kube double: join refused by {endpoint_url}: {code} {text}")
    return json.loads(text)


# ---------------------------------------------------------------------------- etcd (REAL)
# Not a double: Debian's etcd-server and etcd-client are in the lab node image. What is a double is
# who runs it: real kubeadm writes /etc/kubernetes/manifests/etcd.yaml and the kubelet runs it as a
# static pod; here the same manifest is written, and a stand-in for the kubelet's static-pod loop
# (`kube_double.py static-pods`, a systemd unit) starts etcd from it as a systemd unit, and stops it
# when the manifest goes away (how a restore or reset stops etcd for real). Certificates are made
# with openssl from an etcd CA at kubeadm's paths (/etc/kubernetes/pki/etcd/{ca,server,peer,
# healthcheck-client}), which control-plane joins download with the certificate key, as kubeadm does.

ETCD_PKI = "/etc/kubernetes/pki/etcd"
MANIFESTS = "/etc/kubernetes/manifests"
ETCD_MANIFEST = f"{MANIFESTS}/etcd.yaml"
ETCD_UNIT = "kubitect-double-etcd"
KUBELET_UNIT = "kubitect-double-kubelet"
ETCD_DATA = "/var/lib/etcd"


def sign_cert(pki, name, cn, sans, usage):
    """A certificate signed by the etcd CA (kubeadm makes the same three, with these usages)."""
    ca_crt, ca_key = make_ca(pki, "etcd-ca")
    crt, key, csr = (os.path.join(pki, f"{name}.{ext}") for ext in ("crt", "key", "csr"))
    subprocess.run(["openssl", "req", "-new", *EC_KEY, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"],
                   check=True, capture_output=True)
    ext = os.path.join(pki, f"{name}.ext")
    with open(ext, "w") as fh:
        alt = ",".join(["DNS:localhost", *(f"IP:{ip}" for ip in dict.fromkeys(sans) if ip)])
        fh.write(f"subjectAltName={alt}\nextendedKeyUsage={usage}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
                    str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-out", crt, "-extfile", ext],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    for f in (csr, ext):
        os.remove(f)


def etcd_certs(name, ip):
    sign_cert(ETCD_PKI, "server", name, ["127.0.0.1", ip], "serverAuth,clientAuth")
    sign_cert(ETCD_PKI, "peer", name, ["127.0.0.1", ip], "serverAuth,clientAuth")
    sign_cert(ETCD_PKI, "healthcheck-client", "kube-etcd-healthcheck-client", [], "clientAuth")


def etcd_manifest(name, ip, initial_cluster, state):
    """kubeadm's etcd static pod (the flags kubeadm sets), as the stand-in kubelet reads it."""
    flags = [
        f"--name={name}", f"--data-dir={ETCD_DATA}", f"--advertise-client-urls=https://{ip}:2379",
        f"--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379", f"--listen-peer-urls=https://{ip}:2380",
        f"--initial-advertise-peer-urls=https://{ip}:2380", f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-state={state}", "--client-cert-auth=true", "--peer-client-cert-auth=true",
        f"--cert-file={ETCD_PKI}/server.crt", f"--key-file={ETCD_PKI}/server.key",
        f"--trusted-ca-file={ETCD_PKI}/ca.crt", f"--peer-cert-file={ETCD_PKI}/peer.crt",
        f"--peer-key-file={ETCD_PKI}/peer.key", f"--peer-trusted-ca-file={ETCD_PKI}/ca.crt",
        "--snapshot-count=10000", "--heartbeat-interval=100", "--election-timeout=1000",
    ]
    lines = ["apiVersion: v1", "kind: Pod", "metadata:", "  name: etcd", "  namespace: kube-system", "spec:",
             "  containers:", "  - command:", "    - etcd", *(f"    - {f}" for f in flags), "    name: etcd", ""]
    os.makedirs(MANIFESTS, exist_ok=True)
    tmp = ETCD_MANIFEST + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, ETCD_MANIFEST)


def manifest_command(text):
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == "- command:":
            inside = True
        elif inside and line.startswith("    - "):
            out.append(line[6:].strip())
        elif inside:
            break
    return out


def static_pods():
    """The stand-in kubelet's static-pod loop, for etcd.yaml only: runs what the manifest says."""
    running = None
    while True:
        try:
            with open(ETCD_MANIFEST) as fh:
                text = fh.read()
        except OSError:
            text = None
        if text != running:
            subprocess.run(["systemctl", "stop", ETCD_UNIT], capture_output=True)
            subprocess.run(["systemctl", "reset-failed", ETCD_UNIT], capture_output=True)
            if text:
                cmd = manifest_command(text)
                subprocess.run(["systemd-run", f"--unit={ETCD_UNIT}", "--quiet", "--property=Restart=always",
                                "--property=RestartSec=1", "/usr/bin/etcd", *cmd[1:]], capture_output=True)
            running = text
        time.sleep(0.3)


def start_static_pods():
    if subprocess.run(["systemctl", "is-active", "--quiet", KUBELET_UNIT]).returncode == 0:
        return
    subprocess.run(["systemctl", "reset-failed", KUBELET_UNIT], capture_output=True)
    subprocess.run(["systemd-run", f"--unit={KUBELET_UNIT}", "--quiet", sys.executable, SCRIPT, "static-pods"],
                   check=True)


def etcdctl(endpoints, *args, timeout=20):
    return subprocess.run(["etcdctl", f"--endpoints={endpoints}", f"--cacert={ETCD_PKI}/ca.crt",
                           f"--cert={ETCD_PKI}/healthcheck-client.crt", f"--key={ETCD_PKI}/healthcheck-client.key",
                           "--dial-timeout=3s", "--command-timeout=10s", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})


def wait_etcd(timeout=60):
    """Until the local member answers a quorum read (`endpoint health`), as kubeadm waits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if etcdctl("https://127.0.0.1:2379", "endpoint", "health", timeout=10).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)
    journal = subprocess.run(["journalctl", "-u", ETCD_UNIT, "-n", "20", "--no-pager"], capture_output=True,
                             text=True).stdout
    sys.exit("kube double: the local etcd member did not become healthy\n" + journal)


def etcd_init(name, ip):
    """kubeadm init's etcd phase: a new one-member cluster."""
    os.makedirs(ETCD_PKI, exist_ok=True)
    etcd_certs(name, ip)
    subprocess.run(["rm", "-rf", ETCD_DATA])
    etcd_manifest(name, ip, f"{name}=https://{ip}:2380", "new")
    start_static_pods()
    wait_etcd()


def etcd_ca_bundle():
    """What the first server hands a control-plane join that proved the certificate key."""
    return {"etcd_ca_crt": b64(f"{ETCD_PKI}/ca.crt"), "etcd_ca_key": b64(f"{ETCD_PKI}/ca.key")}


def etcd_join(name, ip, answer):
    """kubeadm join's etcd phase for a control plane: `member add` on the cluster, then start."""
    import base64
    os.makedirs(ETCD_PKI, exist_ok=True)
    for field_name, file_name, mode in (("etcd_ca_crt", "ca.crt", 0o644), ("etcd_ca_key", "ca.key", 0o600)):
        path = os.path.join(ETCD_PKI, file_name)
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(answer[field_name]))
        os.chmod(path, mode)
    etcd_certs(name, ip)
    endpoints = answer["etcd_endpoints"]
    deadline = time.time() + 60
    while True:  # etcd refuses a reconfiguration until its members have been connected for 5 s
        res = etcdctl(endpoints, "member", "add", name, f"--peer-urls=https://{ip}:2380", "-w", "json")
        if res.returncode == 0:
            break
        if "unhealthy cluster" not in res.stderr or time.time() > deadline:
            sys.exit(f"kube double: etcd member add failed: {res.stderr.strip()[-400:]}")
        time.sleep(0.25)
    added = json.loads(res.stdout)
    new_id = added["member"]["ID"]
    pairs = [f"{name if m['ID'] == new_id else m.get('name', '')}={u}"
             for m in added["members"] for u in m.get("peerURLs", [])]
    subprocess.run(["rm", "-rf", ETCD_DATA])
    etcd_manifest(name, ip, ",".join(pairs), "existing")
    start_static_pods()
    wait_etcd()


def etcd_reset():
    """kubeadm reset's etcd part: remove this node's member (a warning if that fails), stop, wipe."""
    if not os.path.exists(ETCD_MANIFEST):
        return
    with open(ETCD_MANIFEST) as fh:
        name = next((f.split("=", 1)[1] for f in manifest_command(fh.read()) if f.startswith("--name=")), None)
    try:
        listed = etcdctl("https://127.0.0.1:2379", "member", "list", "-w", "json")
        members = json.loads(listed.stdout).get("members", []) if listed.returncode == 0 else []
        mine = [m for m in members if m.get("name") == name]
        if mine:
            res = etcdctl("https://127.0.0.1:2379", "member", "remove", format(mine[0]["ID"], "x"))
            if res.returncode != 0:
                print(f"[reset] Failed to remove etcd member: {res.stderr.strip()[-200:]}", file=sys.stderr)
    except (subprocess.TimeoutExpired, ValueError):
        print("[reset] Failed to remove etcd member: etcd did not answer", file=sys.stderr)
    os.remove(ETCD_MANIFEST)
    for unit in (KUBELET_UNIT, ETCD_UNIT):
        subprocess.run(["systemctl", "stop", unit], capture_output=True)
        subprocess.run(["systemctl", "reset-failed", unit], capture_output=True)
    subprocess.run(["rm", "-rf", ETCD_DATA])


# ---------------------------------------------------------------------------- tools


def kubeadm(argv):
    """Records the call (with its --config file) and, separately, its end: the order is assertable."""
    cfg = config_of(argv)
    if argv[:1] == ["version"]:
        print(version())
        return 0
    record("kubeadm", argv, **cfg)
    rc = 1
    try:
        rc = _kubeadm(argv, cfg)
    finally:
        record("kubeadm", argv, phase="end", rc=rc)
    return rc


def _kubeadm(argv, cfg):
    if argv[:1] == ["version"]:
        print(version())
        return 0
    if argv[:3] == ["init", "phase", "upload-certs"] and cfg:
        # the certificates are uploaded again, encrypted with the key in the config: from now on a
        # control-plane join must present that key (as kubeadm's kubeadm-certs Secret demands)
        code, text = http("POST", f"https://127.0.0.1:{PORT}/kubitect-double/certificate-key",
                          {"certificate_key": field(cfg["config"], "certificateKey")})
        if code != 200:
            sys.exit(f"kube double: upload-certs failed: {code} {text}")
        return 0
    if argv[:3] == ["init", "phase", "bootstrap-token"] and cfg:
        # a bootstrap token created from the config: valid for joins from now on (with the others)
        with locked():
            cluster = load("cluster.json", {})
            tokens = cluster.get("tokens") or [cluster.get("token")]
            cluster["tokens"] = [t for t in tokens if t] + [field(cfg["config"], "token")]
            save("cluster.json", cluster)
        return 0
    if argv[:2] == ["token", "delete"]:
        with locked():
            cluster = load("cluster.json", {})
            tokens = cluster.get("tokens") or [cluster.get("token")]
            cluster["tokens"] = [t for t in tokens if t and not any(t.split(".")[0] == i.split(".")[0]
                                                                     for i in argv[2:])]
            cluster["token"] = None
            save("cluster.json", cluster)
            print("\n".join(f'bootstrap token "{i}" deleted' for i in argv[2:]))
        return 0
    if argv[:1] == ["init"] and len(argv) > 1 and argv[1] == "phase":
        return 0
    if argv[:1] == ["init"]:
        text = cfg["config"]
        crt, key = make_ca("/etc/kubernetes/pki")
        ip = field(text, "advertiseAddress")
        sans = sans_of(text) + [ip]
        set_apiserver_version(field(text, "kubernetesVersion") or version())
        save("cluster.json", {"kind": "kubeadm", "token": field(text, "token"),
                              "version": field(text, "kubernetesVersion") or version(),
                              "certificate_key": field(text, "certificateKey"), "ca_hash": ca_hash(crt),
                              "primary": f"https://{ip}:{PORT}", "sans": sans})
        endpoint = field(text, "controlPlaneEndpoint")
        write_kubeconfig("/etc/kubernetes/admin.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "kubernetes-admin", "context": "kubernetes-admin@kubernetes"})
        write_kubeconfig("/etc/kubernetes/kubelet.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "system:node", "context": "default"})
        etcd_init(field(text, "name"), ip)
        start_api_unit(None, *make_server_cert("/etc/kubernetes/pki", sans))
        register(f"https://127.0.0.1:{PORT}", {"name": field(text, "name"), "token": field(text, "token"),
                                               "control_plane": True, "ca_hash": ca_hash(crt),
                                               "certificate_key": field(text, "certificateKey"), "endpoint": "self",
                                               "kubelet": version()})
        return 0
    if argv[:1] == ["join"]:
        if os.path.exists(FAIL_ONCE):  # the test asks for one failed join (resume after failure)
            os.remove(FAIL_ONCE)
            sys.exit("kube double: join failed once, as the test asked")
        text = cfg["config"]
        endpoint = field(text, "apiServerEndpoint")
        control_plane = "controlPlane:" in text
        body = {"name": field(text, "name"), "token": field(text, "token"), "ca_hash": field(text, "caCertHashes"),
                "control_plane": control_plane, "certificate_key": field(text, "certificateKey"),
                "endpoint": endpoint, "kubelet": version()}
        m = re.search(r"caCertHashes:\s*\n\s*-\s*\"?([^\"\n]+)", text)
        body["ca_hash"] = m.group(1) if m else None
        answer = register(f"https://{endpoint}", body)
        crt, key = make_ca("/etc/kubernetes/pki")  # a stand-in: real joins fetch the cluster CA
        write_kubeconfig("/etc/kubernetes/kubelet.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "system:node", "context": "default"})
        if control_plane:
            set_apiserver_version(version())
            write_kubeconfig("/etc/kubernetes/admin.conf", crt, {"server": f"https://{endpoint}",
                             "cluster": "kubernetes", "user": "kubernetes-admin",
                             "context": "kubernetes-admin@kubernetes"})
            own = field(text, "advertiseAddress")
            etcd_join(field(text, "name"), own, answer)
            start_api_unit(answer["primary"], *make_server_cert("/etc/kubernetes/pki", answer["sans"] + [own]))
        return 0
    if argv[:1] == ["upgrade"]:
        return kubeadm_upgrade(argv[1:])
    if argv[:1] == ["reset"]:
        etcd_reset()
        subprocess.run(["systemctl", "stop", "kubitect-double-apiserver"], capture_output=True)
        subprocess.run(["rm", "-rf", "/etc/kubernetes", STATE + "/nodes.json", STATE + "/cluster.json",
                        APISERVER_VERSION])
        return 0
    return 0


# ---------------------------------------------------------------------------- cluster objects
# Kept by the first server (or in KUBE_DOUBLE_STATE): nodes.json {name: {control_plane, unschedulable,
# ready}}, pods.json {"ns/name": pod}, pdbs.json {"ns/name": budget}. One flock serialises changes.

CONTROLLERS = ("ReplicaSet", "StatefulSet", "ReplicationController", "Job", "DaemonSet")


@contextlib.contextmanager
def locked():
    os.makedirs(STATE, exist_ok=True)
    with open(os.path.join(STATE, ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def schedulable(nodes):
    return sorted(n for n, v in nodes.items() if not v.get("unschedulable") and v.get("ready", True))


def schedule_pending(pods, nodes):
    """The scheduler, reduced: a Pending pod goes to the schedulable node running fewest pods."""
    targets, changed = schedulable(nodes), False
    for pod in pods.values():
        if pod.get("phase") == "Pending" and targets:
            load_of = {n: sum(1 for p in pods.values() if p.get("node") == n) for n in targets}
            pod.update(node=min(targets, key=lambda n: (load_of[n], n)), phase="Running")
            changed = True
    if changed:
        save("pods.json", pods)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def disruptions_allowed(pdb, pods):
    """The PodDisruptionBudget's status.disruptionsAllowed over the pods it selects."""
    chosen = [p for p in pods.values() if p["namespace"] == pdb["namespace"]
              and matches(pdb.get("selector"), p.get("labels", {}))]
    healthy = sum(1 for p in chosen if p.get("phase") == "Running")
    if "minAvailable" in pdb:
        return healthy - int(pdb["minAvailable"])
    return int(pdb.get("maxUnavailable", 0)) - (len(chosen) - healthy)


def state_op(op, body):
    """One atomic change or read of the cluster objects -> (HTTP-like code, payload)."""
    with locked():
        nodes, pods, pdbs = load("nodes.json", {}), load("pods.json", {}), load("pdbs.json", {})
        name = body.get("name")
        if op == "state":
            return 200, {"nodes": nodes, "pods": pods, "pdbs": pdbs}
        if op == "config":  # the kubeadm-config ConfigMap: read, or update with the body
            cluster = load("cluster.json", {})
            if body:
                cluster.update(body)
                save("cluster.json", cluster)
            return 200, {"version": cluster.get("version"), "kind": cluster.get("kind")}
        if op == "plant":
            for n, patch in (body.get("nodes") or {}).items():
                nodes[n] = {**nodes.get(n, {"control_plane": False, "t": time.time(), "via": "planted"}), **patch}
            for pod in body.get("pods") or []:
                pod = {"namespace": "default", "labels": {}, "phase": "Running", "owner": "ReplicaSet",
                       "emptydir": False, **pod}
                pods[f"{pod['namespace']}/{pod['name']}"] = pod
            for pdb in body.get("pdbs") or []:
                pdb = {"namespace": "default", **pdb}
                pdbs[f"{pdb['namespace']}/{pdb['name']}"] = pdb
            for key in body.get("delete_pdbs") or []:
                pdbs.pop(key, None)
            save("nodes.json", nodes), save("pods.json", pods), save("pdbs.json", pdbs)
            schedule_pending(pods, nodes)
            return 200, {}
        if op in ("node-get", "cordon", "uncordon", "delete-node", "pods") and name not in nodes:
            return 404, {"message": f'nodes "{name}" not found'}
        if op == "node-get":
            return 200, nodes[name]
        if op in ("cordon", "uncordon"):
            want = op == "cordon"
            changed = bool(nodes[name].get("unschedulable")) != want
            nodes[name]["unschedulable"] = want
            save("nodes.json", nodes)
            if not want:
                schedule_pending(pods, nodes)
            return 200, {"changed": changed}
        if op == "delete-node":
            del nodes[name]
            save("nodes.json", nodes)
            # the pod garbage collector deletes pods bound to a node that no longer exists
            save("pods.json", {k: p for k, p in pods.items() if p.get("node") != name})
            return 200, {}
        if op == "pods":
            return 200, [p for p in pods.values() if p.get("node") == name]
        if op == "evict":
            key = f"{body['namespace']}/{body['pod']}"
            pod = pods.get(key)
            if pod is None:
                return 404, {"message": f'pods "{body["pod"]}" not found'}
            for pdb in pdbs.values():
                if pdb["namespace"] == pod["namespace"] and matches(pdb.get("selector"), pod.get("labels", {})) \
                        and pod.get("phase") == "Running" and disruptions_allowed(pdb, pods) <= 0:
                    return 429, {"message": "Cannot evict pod as it would violate the pod's disruption budget."}
            del pods[key]
            if pod.get("owner") in CONTROLLERS and pod.get("owner") not in ("DaemonSet", "Job"):
                # its controller makes a replacement, which the scheduler places off the cordoned node
                base = pod["name"] if pod["owner"] == "StatefulSet" else pod["name"].rsplit("-", 1)[0]
                fresh = base if pod["owner"] == "StatefulSet" else f"{base}-{os.urandom(3).hex()}"
                pods[f"{pod['namespace']}/{fresh}"] = {**pod, "name": fresh, "node": None, "phase": "Pending"}
            save("pods.json", pods)
            schedule_pending(pods, nodes)
            return 201, {}
        return 400, {"message": f"unknown operation {op}"}


def api(op, body=None):
    """A cluster-object operation: in-process with KUBE_DOUBLE_STATE, else through the API server."""
    if LOCAL:
        return state_op(op, body or {})
    code, text = http("POST", f"https://127.0.0.1:{PORT}/kubitect-double/op/{op}", body or {}, timeout=10)
    try:
        return code, json.loads(text)
    except ValueError:
        return code, {"message": text}


# ---------------------------------------------------------------------------- kubectl


def parse_args(args):
    """kubectl's command line -> (positional words, {flag: value}); `--a=b`, `--a b`, `-o x`, `-A`."""
    takes_value = {"-o", "--output", "--timeout", "--field-selector", "-n", "--namespace", "--grace-period",
                   "-l", "--selector", "--pod-selector"}
    words, flags, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            k, eq, v = a.partition("=")
            if not eq and k in takes_value and i + 1 < len(args):
                v, i = args[i + 1], i + 1
            flags[k] = v if (eq or k in takes_value) else True
        else:
            words.append(a)
        i += 1
    return words, flags


def duration(text):
    """kubectl's duration flag (`90s`, `5m`, `1h`, `0s`) in seconds; 0 means no limit."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text or "0"))
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def not_found(kind, name):
    print(f'Error from server (NotFound): {kind} "{name}" not found', file=sys.stderr)
    return 1


def node_object(name, info, kubelet):
    ready = "True" if info.get("ready", True) else "False"
    obj = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
           "spec": {}, "status": {"conditions": [{"type": "Ready", "status": ready}],
                                  "nodeInfo": {"kubeletVersion": kubelet}}}
    if info.get("unschedulable"):
        obj["spec"] = {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable",
                                                          "effect": "NoSchedule"}]}
    return obj


def get_nodes(words, flags):
    code, nodes = api("state")
    if code != 200:
        print(nodes.get("message", nodes), file=sys.stderr)
        return 1
    nodes = nodes["nodes"]
    kubelet = version().split("+")[0]
    names = words[2:] or sorted(nodes)
    for n in names:
        if n not in nodes:
            return not_found("nodes", n)
    items = [node_object(n, nodes[n], nodes[n].get("kubelet") or kubelet) for n in names]
    out = flags.get("-o") or flags.get("--output")
    if out == "json":
        print(json.dumps(items[0] if words[2:] and len(names) == 1 else {"kind": "List", "items": items}))
        return 0
    if out == "name":
        print("\n".join(f"node/{n}" for n in names))
        return 0
    print(f"{'NAME':<24}{'STATUS':<28}{'ROLES':<16}{'AGE':<6}VERSION")
    for n in names:
        status = ("Ready" if nodes[n].get("ready", True) else "NotReady") + \
            (",SchedulingDisabled" if nodes[n].get("unschedulable") else "")
        role = "control-plane" if nodes[n].get("control_plane") else "<none>"
        print(f"{n:<24}{status:<28}{role:<16}{'1m':<6}{nodes[n].get('kubelet') or kubelet}")
    return 0


def get_pods(words, flags):
    selector = flags.get("--field-selector", "")
    node = selector.split("=", 1)[1] if selector.startswith("spec.nodeName=") else None
    code, state = api("state")
    if code != 200:
        return 1
    pods = [p for p in state["pods"].values() if node is None or p.get("node") == node]
    if not (flags.get("-A") or flags.get("--all-namespaces")):
        ns = flags.get("-n") or flags.get("--namespace") or "default"
        pods = [p for p in pods if p["namespace"] == ns]
    items = [{"metadata": {"name": p["name"], "namespace": p["namespace"], "labels": p.get("labels", {})},
              "spec": {"nodeName": p.get("node")}, "status": {"phase": p.get("phase")}} for p in pods]
    print(json.dumps({"kind": "List", "items": items}))
    return 0


def cordon_cmd(verb, name):
    code, body = api(verb, {"name": name})
    if code == 404:
        return not_found("nodes", name)
    print(f"node/{name} {'' if body.get('changed') else 'already '}{verb}ed")
    return 0


def drain_cmd(name, flags):
    """kubectl drain, as documented: cordon, filter the pods, evict them (PDBs honoured), retry every 5 s."""
    timeout = duration(flags.get("--timeout", "0s"))
    started = time.monotonic()
    code, _ = api("node-get", {"name": name})
    if code == 404:
        return not_found("nodes", name)
    cordon_cmd("cordon", name)
    _, pods = api("pods", {"name": name})
    fatal, warn, evict = {}, {}, []
    for p in sorted(pods, key=lambda p: (p["namespace"], p["name"])):
        ref = f"{p['namespace']}/{p['name']}"
        if p.get("mirror"):
            continue
        if p.get("owner") == "DaemonSet":
            (warn if flags.get("--ignore-daemonsets") else fatal).setdefault(
                "ignoring DaemonSet-managed Pods" if flags.get("--ignore-daemonsets")
                else "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)", []).append(ref)
            continue
        if p.get("owner") not in CONTROLLERS:
            if not flags.get("--force"):
                fatal.setdefault("Pods declare no controller (use --force to override)", []).append(ref)
                continue
            warn.setdefault("deleting Pods that declare no controller", []).append(ref)
        if p.get("emptydir"):
            if not (flags.get("--delete-emptydir-data") or flags.get("--delete-local-data")):
                fatal.setdefault("Pods with local storage (use --delete-emptydir-data to override)", []).append(ref)
                continue
            warn.setdefault("deleting Pods with local storage", []).append(ref)
        evict.append(p)
    if fatal:
        msg = ", ".join(f"cannot delete {k}: {', '.join(v)}" for k, v in fatal.items())
        print(f'error: unable to drain node "{name}" due to error: {msg}, continuing command...', file=sys.stderr)
        print(f"There are pending nodes to be drained:\n {name}", file=sys.stderr)
        for k, v in fatal.items():
            print(f"cannot delete {k}: {', '.join(v)}", file=sys.stderr)
        return 1
    for k, v in warn.items():
        print(f"Warning: {k}: {', '.join(v)}", file=sys.stderr)
    for p in evict:
        print(f"evicting pod {p['namespace']}/{p['name']}")
    pending = list(evict)
    while pending:
        waiting = []
        for p in pending:
            code, body = api("evict", {"namespace": p["namespace"], "pod": p["name"]})
            if code in (201, 404):
                print(f"pod/{p['name']} evicted")
            elif code == 429:
                print(f'error when evicting pods/"{p["name"]}" -n "{p["namespace"]}" (will retry after 5s): '
                      f'{body.get("message")}', file=sys.stderr)
                waiting.append(p)
            else:
                print(f'error when evicting pods/"{p["name"]}" -n "{p["namespace"]}": {body}', file=sys.stderr)
                return 1
        pending = waiting
        if not pending:
            break
        left = timeout - (time.monotonic() - started) if timeout else 5
        if left <= 0:
            why = ", ".join(f'error when evicting pods/"{p["name"]}" -n "{p["namespace"]}": global timeout '
                            f'reached: {flags.get("--timeout")}' for p in pending)
            print(f'There are pending pods in node "{name}" when an error occurred: [{why}]', file=sys.stderr)
            print(f'error: unable to drain node "{name}" due to error: {why}, continuing command...', file=sys.stderr)
            print(f"There are pending nodes to be drained:\n {name}\n{why}", file=sys.stderr)
            return 1
        time.sleep(min(5, left))
    print(f"node/{name} drained")
    return 0


def delete_cmd(words, flags):
    if words[1:2] not in (["node"], ["nodes"], ["no"]) or len(words) < 3:
        print(f"kubectl TEST DOUBLE: `delete {' '.join(words[1:2])}` is not simulated", file=sys.stderr)
        return 1
    rc = 0
    for name in words[2:]:
        code, _ = api("delete-node", {"name": name})
        if code == 404:
            if not (flags.get("--ignore-not-found") and flags["--ignore-not-found"] != "false"):
                rc = not_found("nodes", name)
            continue
        print(f'node "{name}" deleted')
    return rc


# ---------------------------------------------------------------------------- upgrades


def apiserver_version():
    try:
        with open(APISERVER_VERSION) as fh:
            return fh.read().strip() or version()
    except OSError:
        return version()


def set_apiserver_version(v):
    os.makedirs(STATE, exist_ok=True)
    with open(APISERVER_VERSION, "w") as fh:
        fh.write(v + "\n")


def vparts(v):
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", v or "")
    return tuple(int(x) for x in m.groups()) if m else None


def cluster_config(update=None):
    """The kubeadm-config ConfigMap (its kubernetesVersion), kept by the first server."""
    code, body = api("config", update or {})
    if code != 200:
        sys.exit(f"kube double: cannot read the kubeadm-config ConfigMap: {body}")
    return body


def version_policy(current, target, kubeadm_v, force):
    """kubeadm's EnforceVersionPolicies: (mandatory errors, skippable errors), its own wording."""
    new, cur, kv = vparts(target), vparts(current), vparts(kubeadm_v)
    mandatory, skippable = [], []
    if new[1] > cur[1] + 1:
        mandatory.append(f'Specified version to upgrade to "{target}" is too high; kubeadm can upgrade only 1 '
                         "minor version at a time")
    if new[1] < cur[1] - 1:
        mandatory.append(f'Specified version to downgrade to "{target}" is too low; kubeadm can downgrade only 1 '
                         "minor version at a time")
    if kv < new:
        if new[1] > kv[1]:
            mandatory.append(f'Specified version to upgrade to "{target}" is at least one minor release higher than '
                             f"the kubeadm minor release ({new[1]} > {kv[1]}). Such an upgrade is not supported")
        else:
            skippable.append(f'Specified version to upgrade to "{target}" is higher than the kubeadm version '
                             f'"{kubeadm_v}". Upgrade kubeadm first using the tool you used to install kubeadm')
    return mandatory, ([] if force else skippable)


def restart_apiserver(v):
    set_apiserver_version(v)
    # the first server keeps cluster.json and serves the cluster's objects; the others forward to it
    primary = None if load("cluster.json", {}).get("primary") else read_primary()
    start_api_unit(primary, "/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/apiserver.key")


def read_primary():
    """A joined control plane's first server, from its running API server unit's command line."""
    cmd = subprocess.run(["systemctl", "show", "-p", "ExecStart", "kubitect-double-apiserver"], capture_output=True,
                         text=True).stdout
    m = re.search(r"(https://[0-9.]+:\d+)\s*;", cmd)
    return m.group(1) if m else None


def kubeadm_upgrade(argv):
    words = [a for a in argv if not a.startswith("-")]
    force = "--force" in argv or "-f" in argv
    if words[:1] == ["node"]:
        if os.path.exists(FAIL_UPGRADE_ONCE):
            os.remove(FAIL_UPGRADE_ONCE)
            sys.exit("kube double: kubeadm upgrade node failed once, as the test asked")
        if os.path.exists("/etc/kubernetes/admin.conf") and os.path.exists(APISERVER_VERSION):
            want = cluster_config()["version"]
            print(f"[upgrade] Upgrading your Static Pod-hosted control plane instance to version \"{want}\"...")
            restart_apiserver(want)
        print("[upgrade] The configuration for this node was successfully updated!")
        return 0
    if words[:1] not in (["plan"], ["apply"]):
        print(f"kube double: `kubeadm upgrade {' '.join(words[:1])}` is not simulated", file=sys.stderr)
        return 1
    if not os.path.exists("/etc/kubernetes/admin.conf"):
        sys.exit("[upgrade/config] FATAL: failed to get config map: the cluster has no admin.conf on this node")
    current = cluster_config()["version"]
    if words[:1] == ["plan"]:
        target = words[1] if len(words) > 1 else version()
        print(f"[upgrade/versions] Cluster version: {current}\n[upgrade/versions] kubeadm version: {version()}")
        print(f"Upgrade to the latest version in the v{vparts(target)[0]}.{vparts(target)[1]} series:\n\n"
              f"COMPONENT                 CURRENT   TARGET\nkube-apiserver            {current}   {target}\n\n"
              f"You can now apply the upgrade by executing the following command:\n\n"
              f"\tkubeadm upgrade apply {target}")
        return 0
    if len(words) < 2 or not vparts(words[1]):
        sys.exit("[upgrade/version] FATAL: missing one or more required arguments: the version to upgrade to")
    target = words[1]
    if os.path.exists(FAIL_UPGRADE_ONCE):
        os.remove(FAIL_UPGRADE_ONCE)
        sys.exit("kube double: kubeadm upgrade apply failed once, as the test asked")
    mandatory, skippable = version_policy(current, target, version(), force)
    if mandatory or skippable:
        kind = "fatal errors" if mandatory else "errors"
        print(f"[upgrade/version] FATAL: the --version argument is invalid due to these {kind}:\n\n"
              + "".join(f"\t- {e}\n" for e in mandatory + skippable)
              + ("\nCan be bypassed if you pass the --force flag" if not mandatory else
                 "\nPlease fix the misalignments highlighted above and try upgrading again"), file=sys.stderr)
        return 1
    if "-y" not in argv and "--yes" not in argv:
        sys.exit("[upgrade] Are you sure you want to proceed? [y/N]: no terminal: aborted")
    cluster_config({"version": target})
    restart_apiserver(target)
    print(f'[upgrade/successful] SUCCESS! Your cluster was upgraded to "{target}". Enjoy!')
    return 0


def kubelet_run():
    """The kubelet unit: reports this binary's version for this node to the API, then keeps running."""
    record("kubelet", ["--kubitect-double-run"])
    try:
        with open("/etc/kubernetes/kubelet.conf") as fh:
            server = re.search(r"server:\s*(\S+)", fh.read()).group(1)
    except (OSError, AttributeError):
        sys.exit("kubelet double: /etc/kubernetes/kubelet.conf is missing (not joined yet)")
    body = {"nodes": {socket.gethostname(): {"kubelet": version()}}}
    deadline = time.time() + 120
    while True:
        try:
            if http("POST", f"{server}/kubitect-double/op/plant", body)[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit(f"kubelet double: could not report to {server}")
        time.sleep(0.5)
    notify()
    while True:
        time.sleep(3600)


K3S_DB = "/var/lib/rancher/k3s/server/db"


def k3s_snapshot(argv):
    opts = dict(a.split("=", 1) if "=" in a else (a, None) for a in argv)
    name = opts.get("--name") or (argv[argv.index("--name") + 1] if "--name" in argv else "on-demand")
    if not os.path.isdir(K3S_DB + "/etcd"):
        sys.exit("etcd datastore is not enabled")  # k3s on SQLite has no etcd snapshots
    os.makedirs(K3S_DB + "/snapshots", exist_ok=True)
    path = f"{K3S_DB}/snapshots/{name}-{socket.gethostname()}-{int(time.time())}"
    with open(path, "w") as fh:
        json.dump({"double": "k3s etcd snapshot", "nodes": load("nodes.json", {})}, fh)
    print(f"Snapshot {os.path.basename(path)} saved.")
    return 0


def kubectl(argv, tool="kubectl"):
    record(tool, argv)
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--kubeconfig":
            skip = True
        elif not a.startswith("--kubeconfig="):
            args.append(a)
    words, flags = parse_args(args)
    if words[:2] in (["get", "nodes"], ["get", "node"], ["get", "no"]):
        return get_nodes(words, flags)
    if words[:2] in (["get", "pods"], ["get", "pod"], ["get", "po"]):
        return get_pods(words, flags)
    if args[:2] == ["get", "--raw"] and LOCAL and args[2:3] == ["/version"]:
        print(json.dumps({"gitVersion": apiserver_version()}))
        return 0
    if args[:2] == ["get", "--raw"]:
        try:
            code, text = http("GET", f"https://127.0.0.1:{PORT}{args[2]}", timeout=2)
        except OSError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(text)
        return 0 if code == 200 else 1
    if words[:1] in (["cordon"], ["uncordon"]) and len(words) == 2:
        return cordon_cmd(words[0], words[1])
    if words[:1] == ["drain"] and len(words) == 2:
        return drain_cmd(words[1], flags)
    if words[:1] == ["delete"]:
        return delete_cmd(words, flags)
    if args[:1] in (["apply"], ["label"], ["taint"], ["version"]):
        return 0
    print(f"kubectl TEST DOUBLE: `{' '.join(args[:3])}` is not simulated", file=sys.stderr)
    return 1


def k3s(argv):
    if argv[:1] == ["kubectl"]:
        return kubectl(argv[1:], tool="k3s-kubectl")
    record("k3s", argv, env_token_set=bool(os.environ.get("K3S_TOKEN")))
    if argv[:1] in (["--version"], ["-v"]):
        print(f"k3s version {version()} (kubitect double)")
        return 0
    if argv[:2] == ["etcd-snapshot", "save"]:
        return k3s_snapshot(argv[2:])
    if argv[:1] not in (["server"], ["agent"]):
        return 0
    if os.path.exists(FAIL_UPGRADE_ONCE):  # the test asks this start to fail once (resume)
        os.remove(FAIL_UPGRADE_ONCE)
        sys.exit("kube double: k3s failed to start once, as the test asked")
    opts = {}
    for a in argv[1:]:
        k, _, v = a.partition("=")
        opts.setdefault(k, []).append(v)
    name = opts["--node-name"][0]
    token = os.environ.get("K3S_TOKEN", "")
    pki = "/var/lib/rancher/k3s/server/tls" if argv[0] == "server" else "/var/lib/rancher/k3s/agent"
    crt, key = make_ca(pki)
    server = opts.get("--server", [None])[0]
    if argv[0] == "server":
        os.makedirs(K3S_DB + "/etcd", exist_ok=True)  # embedded etcd's data directory
        set_apiserver_version(version())
    if argv[0] == "server" and "--cluster-init" in opts:
        ip = opts.get("--node-ip", ["127.0.0.1"])[0]
        save("cluster.json", {"kind": "k3s", "token": token, "primary": f"https://{ip}:{PORT}"})
        primary = None
    else:
        primary = register(server, {"name": name, "token": token, "control_plane": argv[0] == "server",
                                    "kubelet": version(),
                                    "endpoint": server})["primary"]

    def ready():
        if argv[0] == "server" and primary is None:
            threading.Thread(target=lambda: (wait_api(f"https://127.0.0.1:{PORT}"), register(
                f"https://127.0.0.1:{PORT}", {"name": name, "token": token, "control_plane": True,
                                             "endpoint": "self"}), notify()), daemon=True).start()
        else:
            notify()

    if argv[0] == "server":
        write_kubeconfig("/etc/rancher/k3s/k3s.yaml", crt, {"server": f"https://127.0.0.1:{PORT}", "cluster": "default",
                         "user": "default", "context": "default"})
        serve(primary, *make_server_cert(pki, opts.get("--tls-san", []) + opts.get("--node-ip", [])), ready)
    else:
        ready()
        while True:
            time.sleep(3600)
    return 0


def notify():
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", addr)


def sysctl(argv):
    record("sysctl", argv)
    values = load("sysctl.json", {})
    if "-p" in argv:
        path = argv[argv.index("-p") + 1]
        with open(path) as fh:
            for line in fh:
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = (p.strip() for p in line.split("=", 1))
                    values[k] = v
        save("sysctl.json", values)
        return 0
    if "-n" in argv:
        key = argv[argv.index("-n") + 1]
        if key not in values:
            return 255
        print(values[key])
    return 0


def main():
    tool = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    if tool.endswith(".py") and argv and argv[0] == "apiserver":  # started by start_api_unit
        serve(argv[3] if len(argv) > 3 else None, argv[1], argv[2])
        return 0
    if tool.endswith(".py") and argv[:1] == ["static-pods"]:  # started by start_static_pods
        static_pods()
        return 0
    if tool.endswith(".py") and argv[:1] in (["plant"], ["state"]):  # tests: plant pods/PDBs, read state
        code, payload = api(argv[0], json.loads(argv[1]) if len(argv) > 1 else {})
        print(json.dumps(payload))
        return 0 if code == 200 else 1
    if tool == "kubeadm":
        return kubeadm(argv)
    if tool == "kubectl":
        return kubectl(argv)
    if tool == "k3s":
        return k3s(argv)
    if tool == "kubelet" and argv[:1] == ["--kubitect-double-run"]:
        return kubelet_run()
    if tool == "kubelet":
        record("kubelet", argv)
        if "--version" in argv:
            print(f"Kubernetes {version()}")
        return 0
    if tool == "containerd":
        record("containerd", argv)
        return 0
    if tool == "modprobe":
        record("modprobe", argv)
        return 0
    if tool == "sysctl":
        return sysctl(argv)
    print(f"kube double: unknown personality {tool}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
