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
  because a container can neither load kernel modules nor set bridge sysctls.
"""

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

STATE = "/var/lib/kubitect-doubles"
LOG = "/var/log/kubitect-doubles/calls.jsonl"
VERSION_FILE = "/etc/kubitect-doubles/version"
FAIL_ONCE = "/etc/kubitect-doubles/fail-join-once"
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


def make_ca(pki):
    os.makedirs(pki, exist_ok=True)
    crt, key = os.path.join(pki, "ca.crt"), os.path.join(pki, "ca.key")
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", *EC_KEY, "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=kubernetes-double-ca"], check=True, capture_output=True)
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

    class Handler(BaseHTTPRequestHandler):
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
                return self.reply(200, "ok" if path != "/version" else json.dumps({"gitVersion": version()}))
            if path == "/kubitect-double/nodes":
                if primary_url:
                    return self.reply(*http("GET", primary_url + path))
                return self.reply(200, json.dumps(load("nodes.json", {})), "application/json")
            self.reply(404, "not found")

        def do_POST(self):
            path = self.path.split("?")[0]
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if path != "/kubitect-double/join":
                return self.reply(404, "not found")
            if primary_url:
                return self.reply(*http("POST", primary_url + path, body))
            cluster = load("cluster.json", {})
            problems = []
            if body.get("token") != cluster.get("token"):
                problems.append("bootstrap token does not match")
            if cluster.get("kind") == "kubeadm":
                if body.get("ca_hash") != cluster.get("ca_hash"):
                    problems.append("discovery CA certificate hash does not match")
                if body.get("control_plane") and body.get("certificate_key") != cluster.get("certificate_key"):
                    problems.append("certificate key does not match")
            if problems:
                return self.reply(403, "; ".join(problems))
            nodes = load("nodes.json", {})
            nodes[body["name"]] = {"control_plane": bool(body.get("control_plane")), "t": time.time(),
                                   "via": body.get("endpoint")}
            save("nodes.json", nodes)
            self.reply(200, json.dumps({"primary": cluster["primary"], "sans": cluster.get("sans", [])}),
                       "application/json")

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
    if argv[:1] == ["init"] and len(argv) > 1 and argv[1] == "phase":
        return 0
    if argv[:1] == ["init"]:
        text = cfg["config"]
        crt, key = make_ca("/etc/kubernetes/pki")
        ip = field(text, "advertiseAddress")
        sans = sans_of(text) + [ip]
        save("cluster.json", {"kind": "kubeadm", "token": field(text, "token"),
                              "certificate_key": field(text, "certificateKey"), "ca_hash": ca_hash(crt),
                              "primary": f"https://{ip}:{PORT}", "sans": sans})
        endpoint = field(text, "controlPlaneEndpoint")
        write_kubeconfig("/etc/kubernetes/admin.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "kubernetes-admin", "context": "kubernetes-admin@kubernetes"})
        write_kubeconfig("/etc/kubernetes/kubelet.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "system:node", "context": "default"})
        start_api_unit(None, *make_server_cert("/etc/kubernetes/pki", sans))
        register(f"https://127.0.0.1:{PORT}", {"name": field(text, "name"), "token": field(text, "token"),
                                               "control_plane": True, "ca_hash": ca_hash(crt),
                                               "certificate_key": field(text, "certificateKey"), "endpoint": "self"})
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
                "endpoint": endpoint}
        m = re.search(r"caCertHashes:\s*\n\s*-\s*\"?([^\"\n]+)", text)
        body["ca_hash"] = m.group(1) if m else None
        answer = register(f"https://{endpoint}", body)
        crt, key = make_ca("/etc/kubernetes/pki")  # a stand-in: real joins fetch the cluster CA
        write_kubeconfig("/etc/kubernetes/kubelet.conf", crt, {"server": f"https://{endpoint}", "cluster": "kubernetes",
                         "user": "system:node", "context": "default"})
        if control_plane:
            write_kubeconfig("/etc/kubernetes/admin.conf", crt, {"server": f"https://{endpoint}",
                             "cluster": "kubernetes", "user": "kubernetes-admin",
                             "context": "kubernetes-admin@kubernetes"})
            own = field(text, "advertiseAddress")
            start_api_unit(answer["primary"], *make_server_cert("/etc/kubernetes/pki", answer["sans"] + [own]))
        return 0
    if argv[:1] == ["reset"]:
        subprocess.run(["systemctl", "stop", "kubitect-double-apiserver"], capture_output=True)
        subprocess.run(["rm", "-rf", "/etc/kubernetes", STATE + "/nodes.json", STATE + "/cluster.json"])
        return 0
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
    if args[:2] == ["get", "nodes"]:
        code, text = http("GET", f"https://127.0.0.1:{PORT}/kubitect-double/nodes")
        if code != 200:
            print(text, file=sys.stderr)
            return 1
        kubelet = version().split("+")[0]
        items = [{"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                                       "nodeInfo": {"kubeletVersion": kubelet}}}
                 for n in json.loads(text)]
        print(json.dumps({"kind": "NodeList", "items": items}))
        return 0
    if args[:2] == ["get", "--raw"]:
        try:
            code, text = http("GET", f"https://127.0.0.1:{PORT}{args[2]}", timeout=2)
        except OSError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(text)
        return 0 if code == 200 else 1
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
    if argv[:1] not in (["server"], ["agent"]):
        return 0
    opts = {}
    for a in argv[1:]:
        k, _, v = a.partition("=")
        opts.setdefault(k, []).append(v)
    name = opts["--node-name"][0]
    token = os.environ.get("K3S_TOKEN", "")
    pki = "/var/lib/rancher/k3s/server/tls" if argv[0] == "server" else "/var/lib/rancher/k3s/agent"
    crt, key = make_ca(pki)
    server = opts.get("--server", [None])[0]
    if argv[0] == "server" and "--cluster-init" in opts:
        ip = opts.get("--node-ip", ["127.0.0.1"])[0]
        save("cluster.json", {"kind": "k3s", "token": token, "primary": f"https://{ip}:{PORT}"})
        primary = None
    else:
        primary = register(server, {"name": name, "token": token, "control_plane": argv[0] == "server",
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
    if tool == "kubeadm":
        return kubeadm(argv)
    if tool == "kubectl":
        return kubectl(argv)
    if tool == "k3s":
        return k3s(argv)
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
