"""What changed between the last applied config and the new one, and whether that is allowed.

Both configs are resolved with *today's* defaults before they are compared (the stored configs
are raw), so a default introduced by a newer kubitect never shows up as a change.

Lists of objects are matched by identity rather than position: hosts, pools, data disks and
forward ports by `name`, node instances by `id`. Other lists (taints, dns) are compared as sets.
Every changed leaf becomes a `ChangeEvent`; a rule table per action (create, upgrade, scale)
classifies it as allowed, a warning (asks for confirmation) or an error (nothing is touched).
The tables follow the original's (reference/kubitect.md §3.2), with its holes fixed: masters are
added and removed only by a scale (a removal warns: the apply takes the etcd member out first and
stops, naming the numbers, if quorum would be lost; validation keeps the count odd),
`addons.kubespray` is not ignored, and an upgrade may not go down or skip a minor version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["create", "delete", "modify"]
Severity = Literal["allow", "warn", "error"]
SEVERITY_RANK = {"allow": 0, "warn": 100, "error": 200}
ID_KEYS = ("name", "id")


@dataclass(frozen=True)
class ChangeEvent:
    path: str  # dot path, list items by their identity: cluster.nodes.worker.instances[2].ip
    kind: Kind
    old: Any
    new: Any
    severity: Severity = "allow"
    message: str = ""

    def describe(self) -> str:
        if self.kind == "create":
            return f"{self.path}: added"
        if self.kind == "delete":
            return f"{self.path}: removed"
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def _identity(item: Any) -> str | None:
    if isinstance(item, dict):
        for key in ID_KEYS:
            if key in item and isinstance(item[key], str | int):
                return str(item[key])
    return None


def diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Kind, Any, Any]]:
    """Changed leaves between two plain (JSON-like) values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append((sub, "create", None, new[key]))
            elif key not in new:
                out.append((sub, "delete", old[key], None))
            else:
                out += diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        old_ids = [_identity(i) for i in old]
        new_ids = [_identity(i) for i in new]
        if (old or new) and None not in old_ids + new_ids:
            o = dict(zip(old_ids, old, strict=True))
            n = dict(zip(new_ids, new, strict=True))
            out = []
            for ident in list(dict.fromkeys(old_ids + new_ids)):
                sub = f"{path}[{ident}]"
                if ident not in o:
                    out.append((sub, "create", None, n[ident]))
                elif ident not in n:
                    out.append((sub, "delete", o[ident], None))
                else:
                    out += diff(o[ident], n[ident], sub)
            return out
        as_set = lambda xs: sorted(map(repr, xs))  # noqa: E731 - order-insensitive scalar lists
        return [] if as_set(old) == as_set(new) else [(path, "modify", old, new)]
    return [] if old == new else [(path, "modify", old, new)]


@dataclass(frozen=True)
class Rule:
    pattern: str  # glob over the dot path; "[*]" matches one list item; a rule also covers deeper paths
    kinds: tuple[Kind, ...]
    severity: Severity
    message: str
    exact: bool = False  # only the path itself, not what lies below it

    def matches(self, path: str, kind: Kind) -> bool:
        if kind not in self.kinds:
            return False
        if self.pattern == "":
            return True
        return re.fullmatch(self._regex(), path) is not None

    def _regex(self) -> str:
        """`*` is one path segment, `[*]` one list item; deeper paths match unless `exact`."""
        out = []
        for token in re.split(r"(\[\*\]|\*)", self.pattern):
            if token == "[*]":
                out.append(r"\[[^\]]+\]")
            elif token == "*":
                out.append(r"[^.\[\]]+")
            else:
                out.append(re.escape(token))
        return "".join(out) + ("" if self.exact else r"(?:[.\[].*)?")

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Longest path (in segments) first, then most literal text, fewest wildcards, most severe."""
        segments = len(re.findall(r"[^.\[\]]+", self.pattern))
        literal = len(self.pattern.replace("*", "").replace("[", "").replace("]", ""))
        return (segments, literal, -self.pattern.count("*"), SEVERITY_RANK[self.severity])


ANY: tuple[Kind, ...] = ("create", "delete", "modify")
NODES = "cluster.nodes"
SCALE_HINT = "run apply with '--action scale'"
RECREATE = "Such a change would recreate the node, which kubitect does not do in place."

MODIFY_RULES = [
    Rule("hosts[*].mainResourcePoolPath", ("modify",), "warn",
         "Changing the main resource pool path recreates every resource in that pool."),
    Rule("hosts[*].dataResourcePools[*]", ("delete",), "warn",
         "Removing a data resource pool destroys all the data in it.", exact=True),
    Rule("hosts[*].dataResourcePools[*].path", ("modify",), "warn",
         "Changing a data resource pool's path recreates the disks in it; their data is lost."),
    Rule("hosts[*].dataResourcePools", ANY, "allow", ""),
    Rule("cluster.network", ANY, "error",
         "The network of an existing cluster cannot be changed; destroy and re-create the cluster."),
    Rule("cluster.nodeTemplate", ANY, "error",
         "The node template of an existing cluster cannot be changed; destroy and re-create the cluster."),
    Rule(f"{NODES}.*.instances[*]", ("create",), "error", f"To add nodes, {SCALE_HINT}.", exact=True),
    Rule(f"{NODES}.*.instances[*]", ("delete",), "error", f"To remove nodes, {SCALE_HINT}.", exact=True),
    Rule(f"{NODES}.*.default.cpu", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.default.ram", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.default.mainDiskSize", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.instances[*].cpu", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.instances[*].ram", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.instances[*].mainDiskSize", ANY, "error", RECREATE),
    Rule(f"{NODES}.*.instances[*].ip", ANY, "error", "A node's IP address cannot be changed."),
    Rule(f"{NODES}.*.instances[*].mac", ANY, "error", "A node's MAC address cannot be changed."),
    Rule(f"{NODES}.*.instances[*].host", ANY, "error",
         "Moving a node to another host recreates it; remove and add it with '--action scale'."),
    Rule(f"{NODES}.*.instances[*].dataDisks[*]", ("modify",), "warn",
         "A changed data disk is recreated; the data on it is lost."),
    Rule(f"{NODES}.*.instances[*].dataDisks[*]", ("delete",), "warn",
         "One or more data disks will be removed, with their data.", exact=True),
    Rule(f"{NODES}.loadBalancer.forwardPorts", ANY, "allow", ""),
    Rule(f"{NODES}.loadBalancer.vip", ANY, "error", "The VIP of an existing cluster cannot be changed."),
    Rule(f"{NODES}.loadBalancer.implementation", ANY, "error",
         "The load balancer implementation of an existing cluster cannot be changed: the endpoint (and its "
         "port) is built into every node's and kubeconfig's configuration."),
    Rule(f"{NODES}.*.instances[*]", ANY, "allow", ""),
    Rule("kubernetes.version", ANY, "error",
         "Changing the Kubernetes version is allowed only with '--action upgrade'."),
    Rule("addons", ANY, "allow", ""),
    Rule("", ANY, "error", "This change is not allowed on an existing cluster."),
]

UPGRADE_RULES = [
    Rule("kubernetes.version", ("modify",), "allow", ""),
    Rule("", ANY, "error", "An upgrade may change only 'kubernetes.version'."),
]

SCALE_RULES = [
    Rule(f"{NODES}.worker.instances[*]", ("create",), "allow",
         "The worker joins with a fresh bootstrap token.", exact=True),
    Rule(f"{NODES}.worker.instances[*]", ("delete",), "allow",
         "The worker is cordoned and drained (PodDisruptionBudgets respected), deleted from Kubernetes, then "
         "its machine is deleted; its data disks only with --delete-data-disks.", exact=True),
    Rule(f"{NODES}.loadBalancer.instances[*]", ("create",), "allow",
         "The load balancer starts last; HAProxy and keepalived on the others reload (the VIP stays).", exact=True),
    Rule(f"{NODES}.loadBalancer.instances[*]", ("delete",), "allow",
         "The load balancer stops keepalived first (a VIP it holds moves at once), then its machine is deleted "
         "and keepalived on the others reloads.", exact=True),
    Rule(f"{NODES}.master.instances[*]", ("create",), "allow",
         "The control plane joins one at a time with a fresh certificate key, etcd's quorum checked before "
         "and after.", exact=True),
    Rule(f"{NODES}.master.instances[*]", ("delete",), "warn",
         "Removing a control plane removes its etcd member first (quorum checked before and after; the "
         "apply stops if it would be lost), then drains and deletes the node.", exact=True),
    Rule("hosts[*]", ("create", "delete"), "allow", "", exact=True),
    Rule("", ANY, "error", "A scale may only add or remove masters, workers, load balancers and hosts."),
]

RULES = {"create": MODIFY_RULES, "upgrade": UPGRADE_RULES, "scale": SCALE_RULES}


def classify(path: str, kind: Kind, rules: list[Rule]) -> Rule:
    """The best matching rule (see `Rule.specificity`)."""
    candidates = [r for r in rules if r.matches(path, kind)]
    return max(candidates, key=lambda r: r.specificity)


def _version_tuple(v: Any) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(v).lstrip("v").split("."))
    except ValueError:
        return ()


def _version_event(before: Any, after: Any, walk: bool) -> tuple[Severity, str] | None:
    """The upgrade rule for `kubernetes.version`, or None when the plain allow stands.

    Up (a patch, or one minor) is allowed; down is refused; more than one minor is refused with
    the path to take, unless the user asked to walk it (`--walk-minors`): then it is a warning
    naming every minor the upgrade will go through (and asks for confirmation).
    """
    o, n = _version_tuple(before), _version_tuple(after)
    if len(o) < 2 or len(n) < 2:
        return None
    if n < o:
        return "error", (f"Downgrading Kubernetes ({before} -> {after}) is not supported; restore a backup "
                         "instead.")
    if n[:2] > (o[0], o[1] + 1):
        path = " → ".join(f"{o[0]}.{m}" for m in range(o[1], n[1] + 1))
        if walk:
            return "warn", f"The upgrade walks one minor version at a time: {path}."
        return "error", (f"Kubernetes upgrades go one minor version at a time ({before} -> {after}): {path}; "
                         f"upgrade to v{o[0]}.{o[1] + 1}.x first, or pass --walk-minors to go through each minor.")
    return None


def evaluate(old: dict[str, Any], new: dict[str, Any], action: str, *, walk: bool = False) -> list[ChangeEvent]:
    """Classifies every change between two resolved configs (dumped with YAML key names).

    `walk`: the user asked to walk a multi-minor upgrade one minor at a time (`--walk-minors`).
    """
    rules = RULES[action]
    events = []
    for path, kind, before, after in diff(old, new):
        rule = classify(path, kind, rules)
        severity, message = rule.severity, rule.message
        if action == "upgrade" and path == "kubernetes.version" and severity == "allow":
            severity, message = _version_event(before, after, walk) or (severity, message)
        events.append(ChangeEvent(path, kind, before, after, severity, message))
    return events
