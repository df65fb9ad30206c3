"""Cross-field rules of the config (§1 of the reference plus the §10 fixes), on the raw mapping.

They read the raw YAML data defensively rather than the pydantic model, so they still run when
another part of the file is invalid: the user gets every error in one go. A value of the wrong
type is skipped here (pydantic already reports it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubitect_core.config import versions
from kubitect_core.config.context import InstallerInfo, ValidationContext
from kubitect_core.config.errors import short_value
from kubitect_core.config.fieldtypes import VERSION_RE

ROLES = (("lb", "loadBalancer"), ("master", "master"), ("worker", "worker"))
RESERVED_LB_PORTS = {6443: "the API servers listen on it (and the load balancers serve it)",
                     22: "it is the SSH port of the load balancer VMs"}
HOSTNAME_MAX = 63


@dataclass
class Finding:
    loc: tuple
    message: str
    severity: str = "error"


@dataclass
class Findings:
    items: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def error(self, loc: tuple, message: str) -> None:
        self.items.append(Finding(tuple(loc), message, "error"))

    def warn(self, loc: tuple, message: str) -> None:
        self.items.append(Finding(tuple(loc), message, "warning"))


def _m(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _truthy(value: Any) -> bool:
    """True as the model reads a boolean (true, or text such as "yes"/"on", as Kubitect does)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "y", "t", "1")
    return value is True or (type(value) is int and value == 1)


def _s(value: Any) -> str | None:
    """A string or an int as text (ids may be ints in YAML); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _ipv4(value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _net(value: Any) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(value, strict=False) if isinstance(value, str) and "/" in value else None
    except ValueError:
        return None


def _where(loc: tuple) -> str:
    from kubitect_core.config.errors import format_path

    return format_path(loc)


def _choices(items: list[str]) -> str:
    return "[" + "|".join(items) + "]" if items else "[] (none configured)"


@dataclass
class Inst:
    role: str
    loc: tuple  # ("cluster", "nodes", "master", "instances", i)
    data: dict


class RawView:
    """Convenient, type-safe reads of the raw mapping."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.hosts = _l(raw.get("hosts"))
        self.cluster = _m(raw.get("cluster"))
        self.network = _m(self.cluster.get("network"))
        self.nodes = _m(self.cluster.get("nodes"))
        self.net = _net(self.network.get("cidr"))
        gw = self.network.get("gateway")
        self.gateway = _ipv4(gw) if gw is not None else (
            next(self.net.hosts(), None) if self.net is not None and self.net.prefixlen <= 30 else None)

    def host_names(self) -> list[str]:
        return [n for h in self.hosts if (n := _s(_m(h).get("name"))) is not None]

    def default_host(self) -> str | None:
        for h in self.hosts:
            if _m(h).get("default") is True and _s(_m(h).get("name")):
                return _s(_m(h).get("name"))
        return _s(_m(self.hosts[0]).get("name")) if self.hosts else None

    def pools_of(self, host: str) -> list[str] | None:
        """Data pool names of `host`, or None when no such host."""
        for h in self.hosts:
            if _s(_m(h).get("name")) == host:
                return [n for p in _l(_m(h).get("dataResourcePools")) if (n := _s(_m(p).get("name")))]
        return None

    def section(self, key: str) -> dict:
        return _m(self.nodes.get(key))

    def instances(self, role_key: str | None = None) -> Iterator[Inst]:
        for role, key in ROLES:
            if role_key not in (None, key):
                continue
            for i, item in enumerate(_l(self.section(key).get("instances"))):
                if isinstance(item, dict):
                    yield Inst(role, ("cluster", "nodes", key, "instances", i), item)

    def count(self, key: str) -> int:
        return len(_l(self.section(key).get("instances")))


def _duplicates(entries: list[tuple[tuple, Any]], what: str, scope: str, out: Findings,
                key: Callable[[Any], Any] = lambda v: v) -> None:
    """Reports every entry whose value was already seen, naming the first holder."""
    seen: dict[Any, tuple] = {}
    for loc, value in entries:
        if value is None:
            continue
        k = key(value)
        if k in seen:
            out.error(loc, f"{what} '{short_value(value)}' is already used by {_where(seen[k])}; "
                           f"each {what} must be unique {scope}.")
        else:
            seen[k] = loc[:-1]


# ---------------------------------------------------------------------------------------- hosts
def check_hosts(v: RawView, ctx: ValidationContext, out: Findings) -> None:
    if "hosts" in v.raw and isinstance(v.raw["hosts"], list) and not v.hosts:
        out.error(("hosts",), "at least one host must be configured (e.g. a `local` host).")
    names = [(("hosts", i, "name"), _s(_m(h).get("name"))) for i, h in enumerate(v.hosts)]
    _duplicates(names, "host name", "across hosts", out)
    defaults = [i for i, h in enumerate(v.hosts) if _m(h).get("default") is True]
    for i in defaults[1:]:
        out.error(("hosts", i, "default"),
                  f"only one host can be the default; hosts[{defaults[0]}] already is.")
    for i, h in enumerate(v.hosts):
        h = _m(h)
        conn = _m(h.get("connection"))
        if conn.get("type") == "remote":
            for key, what in (("ip", "the host's IPv4 address"), ("user", "the SSH user on the host")):
                if conn.get(key) is None:
                    out.error(("hosts", i, "connection", key),
                              f"is required when connection.type is 'remote' ({what}).")
            # ssh.keyfile may be left out: the key ~/.ssh/config names for the host, else
            # ~/.ssh/id_rsa, is used (Kubitect's documented default; see plugins/libvirt/host_ssh).
        pools = [(("hosts", i, "dataResourcePools", j, "name"), _s(_m(p).get("name")))
                 for j, p in enumerate(_l(h.get("dataResourcePools")))]
        _duplicates(pools, "pool name", f"on host hosts[{i}]", out)
        for loc, name in pools:
            if name == "main":
                out.error(loc, "the name 'main' is reserved for the host's main resource pool; "
                               "choose another pool name.")
        paths = [(("hosts", i, "mainResourcePoolPath"), h.get("mainResourcePoolPath"))]
        paths += [(("hosts", i, "dataResourcePools", j, "path"), _m(p).get("path"))
                  for j, p in enumerate(_l(h.get("dataResourcePools")))]
        for loc, path in paths:
            if isinstance(path, str) and path.strip() and not path.startswith("/"):
                out.error(loc, "must be an absolute directory on the host, starting with '/' (libvirt would "
                               "resolve a relative path against its own working directory, and '~' is not "
                               f"expanded there) (actual: {short_value(path)}).")
        provider = h.get("provider")
        if provider is None:
            _needs_default(ctx, "provider", ("hosts", i, "provider"), ctx.providers, out)
        elif isinstance(provider, str) and provider not in ctx.providers:
            out.error(("hosts", i, "provider"),
                      f"unknown VM provider '{short_value(provider)}'; installed providers: {_choices(ctx.providers)}.")


def _needs_default(ctx: ValidationContext, kind: str, loc: tuple, installed: list[str], out: Findings) -> None:
    """An omitted implementation needs exactly one installed plugin that claims to be the default."""
    problem = ctx.default(kind).problem
    if problem:
        out.error(loc, f"is not set, and {problem}; name one of the installed choices: {_choices(installed)}.")


# -------------------------------------------------------------------------------------- cluster
def check_cluster(v: RawView, ctx: ValidationContext, out: Findings) -> None:
    name = v.cluster.get("name")
    if isinstance(name, str) and name.startswith("local-") and not ctx.local:
        out.error(("cluster", "name"), "the prefix 'local-' is reserved for clusters created with "
                                       "--local; choose another name.")
    mode = v.network.get("mode", "nat")
    if mode == "bridge" and v.network.get("bridge") is None:
        out.error(("cluster", "network", "bridge"),
                  "is required when cluster.network.mode is 'bridge': the name of the existing "
                  "bridge on every host (e.g. br0).")
    if v.net is not None and v.net.prefixlen > 30:
        out.error(("cluster", "network", "cidr"),
                  f"/{v.net.prefixlen} leaves no room for a gateway and nodes; use a prefix of /30 or "
                  f"shorter (e.g. /24) (actual: {v.network.get('cidr')}).")
    gw = _ipv4(v.network.get("gateway"))
    if gw is not None and v.net is not None and v.net.prefixlen <= 30:
        _check_address(v, ("cluster", "network", "gateway"), gw, out, gateway=False)
    keypath = _m(_m(v.cluster.get("nodeTemplate")).get("ssh")).get("privateKeyPath")
    if isinstance(keypath, str) and keypath.strip():
        if keypath.endswith(".pub"):
            out.error(("cluster", "nodeTemplate", "ssh", "privateKeyPath"),
                      "must name the private key, not the public one: <path>.pub is read next to it "
                      f"(actual: {short_value(keypath)}).")
        elif keypath.endswith("/"):
            out.error(("cluster", "nodeTemplate", "ssh", "privateKeyPath"),
                      f"must be the path of a key file, not a directory (actual: {short_value(keypath)}).")


def _check_address(v: RawView, loc: tuple, ip: ipaddress.IPv4Address, out: Findings,
                   gateway: bool = True) -> None:
    """Inside the CIDR, not its network/broadcast address, and (optionally) not the gateway."""
    net = v.net
    if net is None or net.prefixlen > 30:
        return
    if ip not in net:
        out.error(loc, f"must be an IP address inside cluster.network.cidr {net} (actual: {ip}).")
    elif ip == net.network_address:
        out.error(loc, f"must not be the network address of {net} (actual: {ip}).")
    elif ip == net.broadcast_address:
        out.error(loc, f"must not be the broadcast address of {net} (actual: {ip}).")
    elif gateway and v.gateway is not None and ip == v.gateway:
        out.error(loc, f"must not be the gateway address {v.gateway} of cluster.network (actual: {ip}).")


# ---------------------------------------------------------------------------------------- nodes
def check_nodes(v: RawView, ctx: ValidationContext, out: Findings) -> None:
    masters, lbs = v.count("master"), v.count("loadBalancer")
    master_loc = ("cluster", "nodes", "master", "instances")
    if masters == 0:
        out.error(master_loc, "at least one master instance must be configured.")
    elif masters % 2 == 0:
        out.error(master_loc, f"the number of master instances must be odd (1, 3, 5, ...) so etcd keeps "
                              f"a quorum (actual: {masters}).")
    lb = v.section("loadBalancer")
    impl = lb.get("implementation")
    if impl is None:
        _needs_default(ctx, "load_balancer", ("cluster", "nodes", "loadBalancer", "implementation"),
                       ctx.load_balancers, out)
    elif isinstance(impl, str) and impl not in ctx.load_balancers:
        out.error(("cluster", "nodes", "loadBalancer", "implementation"),
                  f"unknown load balancer implementation '{short_value(impl)}'; "
                  f"installed: {_choices(ctx.load_balancers)}.")
    chosen = impl if isinstance(impl, str) else ctx.default("load_balancer").name
    if ctx.lb_runs_on.get(chosen or "", "load_balancers") == "masters":
        _check_no_instances(chosen, lbs, ctx, out)
    elif masters > 1 and lbs == 0:
        out.error(("cluster", "nodes", "loadBalancer", "instances"),
                  f"at least one load balancer instance is required when several master instances are "
                  f"configured (masters: {masters}), or an implementation that puts the VIP on the masters"
                  f"{_on_masters_hint(ctx)}.")
    _check_vip_use(chosen, lb, ctx, out)
    if lbs > 1 and lb.get("vip") is None:
        out.error(("cluster", "nodes", "loadBalancer", "vip"),
                  f"a virtual IP (VIP) is required when several load balancer instances are configured "
                  f"(load balancers: {lbs}).")
    hosts = v.host_names()
    cluster_name = _s(v.cluster.get("name"))
    for _role, key in ROLES:
        ids = [(inst.loc + ("id",), _s(inst.data.get("id"))) for inst in v.instances(key)]
        _duplicates(ids, "id", f"within cluster.nodes.{key}.instances", out)
    for inst in v.instances():
        host = inst.data.get("host")
        if isinstance(host, str) and host not in hosts:
            out.error(inst.loc + ("host",), f"must name one of the configured hosts: {_choices(hosts)} "
                                            f"(actual: {short_value(host)}).")
        ip = _ipv4(inst.data.get("ip"))
        if ip is not None:
            _check_address(v, inst.loc + ("ip",), ip, out)
        node_id = _s(inst.data.get("id"))
        if cluster_name and node_id:
            node_name = f"{cluster_name}-{inst.role}-{node_id}"
            if len(node_name) > HOSTNAME_MAX:
                out.error(inst.loc + ("id",), f"the node name '{short_value(node_name)}' is longer than {HOSTNAME_MAX} "
                                              "characters (the hostname limit); shorten cluster.name or the id.")
    ips = [(inst.loc + ("ip",), str(ip)) for inst in v.instances() if (ip := _ipv4(inst.data.get("ip")))]
    _duplicates(ips, "IP address", "across all node instances", out)
    macs = [(inst.loc + ("mac",), mac) for inst in v.instances() if (mac := _s(inst.data.get("mac")))]
    _duplicates(macs, "MAC address", "across all node instances", out,
                key=lambda m: m.lower().replace("-", ":"))
    vip = _ipv4(lb.get("vip"))
    if vip is not None:
        vip_loc = ("cluster", "nodes", "loadBalancer", "vip")
        _check_address(v, vip_loc, vip, out)
        for loc, ip in ips:
            if ip == str(vip):
                out.error(vip_loc, f"the VIP {vip} is also the IP of {_where(loc[:-1])}; the VIP must be an "
                                   "address no node uses.")
    _check_endpoint(v, lb, out)
    _check_forward_ports(lb, out, ctx.lb_ports.get(chosen or "", 6443))
    _check_data_disks(v, out)
    _check_nat_spread(v, out)
    _check_labels(v, out)


def _check_endpoint(v: RawView, lb: dict, out: Findings) -> None:
    """The control-plane endpoint (§4 table) should be a fixed address, known before the VMs exist."""
    if lb.get("vip") is not None or v.network.get("mode", "nat") == "nat":
        return  # in nat mode the provider reads the DHCP lease; elsewhere nobody can
    lbs = list(v.instances("loadBalancer"))
    masters = list(v.instances("master"))
    holder = lbs[0] if len(lbs) == 1 else (masters[0] if not lbs and masters else None)
    if holder is not None and holder.data.get("ip") is None:
        out.warn(holder.loc + ("ip",),
                 "this node is the control-plane endpoint but has no static ip; its address is only "
                 "known after it boots (DHCP outside kubitect). Set an ip or a VIP.")


def _on_masters_hint(ctx: ValidationContext) -> str:
    names = sorted(n for n, where in ctx.lb_runs_on.items() if where == "masters")
    return f" (installed: {_choices(names)}, with a VIP)" if names else ""


def _check_vip_use(chosen: str | None, lb: dict, ctx: ValidationContext, out: Findings) -> None:
    """The VIP as the chosen implementation uses it: required by some, meaningless to others."""
    use = ctx.lb_vip_use.get(chosen or "", "optional")
    where = "on the masters" if ctx.lb_runs_on.get(chosen or "") == "masters" else "on its load balancers"
    if use == "required" and lb.get("vip") is None:
        out.error(("cluster", "nodes", "loadBalancer", "vip"),
                  f"the load balancer implementation '{short_value(chosen)}' puts a virtual IP {where}: "
                  "set cluster.nodes.loadBalancer.vip to a free address in cluster.network.cidr.")
    elif use == "unused" and lb.get("vip") is not None:
        others = sorted(n for n, u in ctx.lb_vip_use.items() if u != "unused")
        out.error(("cluster", "nodes", "loadBalancer", "vip"),
                  f"the load balancer implementation '{short_value(chosen)}' uses no virtual IP, so nothing would "
                  f"hold this one: remove it, or choose an implementation that does (installed: {_choices(others)}).")


def _check_no_instances(chosen: str, lbs: int, ctx: ValidationContext, out: Findings) -> None:
    """An implementation that runs on the masters (or on nothing of its own) has no use for load
    balancer machines.

    Instances are an error, not a warning: each would be a VM kubitect creates, boots and keeps
    without anything running on it, and a config with both most likely meant the other kind.
    """
    if lbs:
        others = sorted(n for n, where in ctx.lb_runs_on.items() if where != "masters")
        out.error(("cluster", "nodes", "loadBalancer", "instances"),
                  f"the load balancer implementation '{short_value(chosen)}' runs on the masters, so these {lbs} "
                  "load balancer instance(s) would be machines that serve nothing: remove them, or choose an "
                  f"implementation that runs on them (installed: {_choices(others)}).")


def _check_forward_ports(lb: dict, out: Findings, api_port: int = 6443) -> None:
    base = ("cluster", "nodes", "loadBalancer", "forwardPorts")
    ports = _l(lb.get("forwardPorts"))
    _duplicates([((*base, i, "name"), _s(_m(p).get("name"))) for i, p in enumerate(ports)],
                "forward port name", "within forwardPorts", out)
    nums = [((*base, i, "port"), n) for i, p in enumerate(ports)
            if isinstance(n := _m(p).get("port"), int) and not isinstance(n, bool)]
    _duplicates(nums, "port", "within forwardPorts", out)
    reserved = {**RESERVED_LB_PORTS, api_port: "the load balancers serve the Kubernetes API on it"}
    for loc, n in nums:
        if n in reserved:
            out.error(loc, f"port {n} cannot be forwarded: {reserved[n]} (actual: {n}).")


def _check_data_disks(v: RawView, out: Findings) -> None:
    default_host = v.default_host()
    for _role, key in (("master", "master"), ("worker", "worker")):
        dloc = ("cluster", "nodes", key, "default", "dataDisks")
        defaults = [((*dloc, j), _m(d)) for j, d in enumerate(_l(_m(v.section(key).get("default"))
                                                               .get("dataDisks")))]
        _duplicates([(loc + ("name",), _s(d.get("name"))) for loc, d in defaults],
                    "data disk name", f"within cluster.nodes.{key}.default.dataDisks", out)
        default_names = {_s(d.get("name")) for _, d in defaults} - {None}
        reported: set[tuple] = set()
        for inst in v.instances(key):
            own = [((*inst.loc, "dataDisks", j), _m(d)) for j, d in enumerate(_l(inst.data.get("dataDisks")))]
            _duplicates([(loc + ("name",), _s(d.get("name"))) for loc, d in own],
                        "data disk name", f"within {_where(inst.loc)}.dataDisks", out)
            for loc, d in own:
                if _s(d.get("name")) in default_names:
                    out.error(loc + ("name",), f"data disk name '{d.get('name')}' is already defined in "
                                               f"cluster.nodes.{key}.default.dataDisks, which every "
                                               "instance gets; use another name.")
            host = _host_of(inst, default_host)
            if not isinstance(host, str):
                continue
            pools = v.pools_of(host)
            if pools is None:
                continue  # an unknown host is reported by the host rule
            for loc, d in defaults + own:
                pool = d.get("pool", "main")
                if not isinstance(pool, str) or pool == "main" or pool in pools:
                    continue
                if (loc, host) in reported:
                    continue
                reported.add((loc, host))
                whom = f" (for {_where(inst.loc)})" if loc[:len(dloc)] == dloc else ""
                if not pools:
                    out.error(loc + ("pool",), f"points to data resource pool '{short_value(pool)}', but host "
                                               f"'{short_value(host)}' "
                                               f"has no dataResourcePools; use 'main' or add the pool to the "
                                               f"host{whom}.")
                else:
                    out.error(loc + ("pool",), f"must be 'main' or one of the pools of host '{short_value(host)}': "
                                               f"{_choices(['main', *pools])} (actual: {short_value(pool)}){whom}.")


def _host_of(inst: Inst, default_host: str | None) -> Any:
    """The host an instance runs on: its own `host`, or the default host when absent or null."""
    host = inst.data.get("host")
    return default_host if host is None else host


_LABEL_KEY = re.compile(r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")


def _check_labels(v: RawView, out: Findings) -> None:
    """Kubernetes refuses a malformed label when the node registers, late in apply: refuse it here.

    A label written without a value (`node-role.kubernetes.io/node:`) is "" (valid), as in Kubitect.
    """
    places = [(("cluster", "nodes", k, "default", "labels"), _m(_m(v.section(k).get("default")).get("labels")))
              for k in ("master", "worker")]
    places += [(inst.loc + ("labels",), _m(inst.data.get("labels"))) for inst in v.instances()
               if inst.role != "lb"]
    for loc, labels in places:
        for key, value in labels.items():
            if isinstance(key, str) and not _LABEL_KEY.fullmatch(key):
                out.error((*loc, key), f"'{short_value(key)}' is not a valid Kubernetes label key ([prefix/]name: "
                                       "the name up to 63 letters, digits, '-', '_' or '.', starting and ending "
                                       "with a letter or digit; the prefix a DNS name); Kubernetes would refuse "
                                       "the node's labels.")
            elif isinstance(value, str) and not _LABEL_VALUE.fullmatch(value):
                out.error((*loc, key), f"'{short_value(value)}' is not a valid Kubernetes label value (up to 63 "
                                       "letters, digits, '-', '_' or '.', starting and ending with a letter or "
                                       "digit, or empty); Kubernetes would refuse the node's labels.")


def _check_nat_spread(v: RawView, out: Findings) -> None:
    mode = v.network.get("mode", "nat")
    if mode not in ("nat", "route"):
        return
    default_host = v.default_host()
    used = {h for inst in v.instances() if isinstance(h := _host_of(inst, default_host), str)}
    if len(used) > 1:
        out.warn(("cluster", "network", "mode"),
                 f"in '{mode}' mode every host builds its own isolated network, so nodes on different "
                 f"hosts ({', '.join(sorted(used))}) cannot reach each other; use 'bridge' for several hosts.")


# ----------------------------------------------------------------------------------- kubernetes
def check_kubernetes(v: RawView, ctx: ValidationContext, out: Findings) -> None:
    k8s = _m(v.raw.get("kubernetes"))
    manager = ctx.effective_manager(k8s.get("manager"))
    raw_manager = k8s.get("manager")
    installed = sorted(ctx.installers)
    if isinstance(raw_manager, str) and raw_manager in ctx.manager_aliases:
        why = ctx.manager_aliases[raw_manager][1]
        out.notices.append(f"kubernetes.manager '{short_value(raw_manager)}' is served by the "
                           f"'{short_value(manager)}' installer" + (f" ({why})." if why else "."))
    if raw_manager is None:
        _needs_default(ctx, "installer", ("kubernetes", "manager"), installed, out)
    if manager is not None and manager not in ctx.installers:
        what = "the default installer" if raw_manager is None else "unknown installer"
        out.error(("kubernetes", "manager"),
                  f"{what} '{short_value(manager)}' is not installed; installed installers: {_choices(installed)}.")
    info = ctx.installers.get(manager or "", InstallerInfo())
    raw_version = k8s.get("version")
    version = raw_version if raw_version is not None else versions.DEFAULT_KUBERNETES_VERSION
    if not isinstance(version, str) or versions.parse_version(version) is None \
            or not VERSION_RE.fullmatch(version):
        return  # the format error comes from the model
    verdict = versions.classify(version, info.supported, info.maintained_from)
    by = f"installer '{short_value(manager)}'" if manager in ctx.installers else "the default range"
    if verdict == "unsupported":
        prefix = "" if raw_version is not None else "the default version "
        out.error(("kubernetes", "version"),
                  f"{prefix}{versions.normalize(version)} is not supported by {by}; supported: "
                  f"{versions.describe_range(info.supported)} (actual: {short_value(version)}).")
        return
    status, newest = versions.release_status(version)
    as_of = versions.release_history().as_of
    if status == "unreleased":
        out.error(("kubernetes", "version"),
                  f"{versions.normalize(version)} is not a released Kubernetes version: the newest patch of its "
                  f"minor is {newest} (kubitect's list of Kubernetes releases, as of {as_of}) "
                  f"(actual: {short_value(version)}).")
        return
    if status == "unknown":
        out.warn(("kubernetes", "version"),
                 f"{versions.normalize(version)} is newer than kubitect's list of Kubernetes releases (which "
                 f"ends at {newest}, as of {as_of}); make sure this release exists.")
    if verdict == "eol":
        out.warn(("kubernetes", "version"),
                 f"{versions.normalize(version)} is past its upstream end of life (maintained from "
                 f"{versions.normalize(info.maintained_from)}); {by} can still install it, but consider "
                 "upgrading.")


def check_addons(v: RawView, ctx: ValidationContext, out: Findings) -> None:
    addons = _m(v.raw.get("addons"))
    if addons.get("kubespray") is not None:
        manager = ctx.effective_manager(_m(v.raw.get("kubernetes")).get("manager"))
        by = f"the '{short_value(manager)}' installer does" if manager else "kubitect's installers do"
        out.notices.append(f"addons.kubespray is kept for compatibility but not applied: {by} not run Kubespray.")
    rook = _m(addons.get("rook"))
    if _truthy(rook.get("enabled")):
        reason = _rook_without_disks(v, _m(rook.get("nodeSelector")))
        if reason:
            out.error(("addons", "rook", "enabled"),
                      f"Rook needs at least one node with dataDisks for its OSDs, but {reason}; add dataDisks "
                      "to those nodes (or to their role's default), change addons.rook.nodeSelector, or set "
                      "enabled: false.")


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _rook_without_disks(v: RawView, selector: dict) -> str | None:
    """Why no node could hold an OSD, or None when one can (the rook plugin applies the same rule).

    Candidates are the workers, or the masters when there are none (as in Kubitect); the
    nodeSelector keeps nodes whose merged labels (role default, then instance) carry every key,
    with the same value unless the selector's value is empty; OSD nodes are those with dataDisks.
    """
    key = "worker" if v.count("worker") else "master"
    default = _m(v.section(key).get("default"))
    candidates = []
    for inst in v.instances(key):
        labels = {k: _label_text(x) for k, x in {**_m(default.get("labels")), **_m(inst.data.get("labels"))}.items()}
        disks = _l(default.get("dataDisks")) + _l(inst.data.get("dataDisks"))
        candidates.append((_s(inst.data.get("id")) or "?", labels, bool(disks)))
    want = {k: _label_text(x) for k, x in selector.items()}
    matching = [c for c in candidates
                if all(k in c[1] and (w == "" or c[1][k] == w) for k, w in want.items())]
    if any(has_disks for _id, _l_, has_disks in matching):
        return None
    role = f"{key}s" + (" (there are no workers)" if key == "master" else "")
    shown = ", ".join(f"{k}: {short_value(x)}" for k, x in want.items())
    if not candidates:
        return f"there are no {role}"
    if not matching:
        return f"no {key} matches nodeSelector {{{shown}}}"
    ids = ", ".join(short_value(i) for i, *_ in matching)
    where = f" matching nodeSelector {{{shown}}}" if want else ""
    return f"none of the {role}{where} has dataDisks ({key} ids: {ids})"


RULES = (check_hosts, check_cluster, check_nodes, check_kubernetes, check_addons)


def run_rules(raw: dict, ctx: ValidationContext, *, tolerant: bool) -> Findings:
    """Runs every rule; `tolerant` (the model already failed) skips a rule that trips on bad data."""
    out = Findings()
    view = RawView(raw)
    for rule in RULES:
        if not tolerant:
            rule(view, ctx, out)
            continue
        try:
            rule(view, ctx, out)
        except (TypeError, ValueError, AttributeError, KeyError):
            continue  # malformed input already reported by the model
    return out
