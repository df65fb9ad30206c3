"""Kubitect's keepalived configuration, rendered for the failover benchmark's baseline.

Kubitect (the Go original) renders keepalived.cfg from a fixed Ansible template; the facts are in
the reference notes on Kubitect (kubitect.md) section 4. The template here (templates/kubitect-keepalived.conf.j2)
is our own rendering of those settings, used only to measure them next to our profiles on the
same lab. HAProxy's configuration stays the plugin's in every configuration of the benchmark (the
API backends and the whoami frontend the holder is read from are the same), so the comparison is
the VRRP behaviour alone.

Kubitect runs `killall -0 haproxy` (psmisc). Where a node has no killall (our VM image), the same
test is run with `pgrep -x haproxy` (procps: exit 0 while a process named haproxy exists), and
the benchmark says so.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

KILLALL = "/usr/bin/killall -0 haproxy"
PGREP = "/usr/bin/pgrep -x haproxy"
DEFAULT_PRIORITY = 10  # Kubitect's default.priority
DEFAULT_ROUTER_ID = 51


def render(*, nic: str, vip: str, priority: int | None, virtual_router_id: int | None,
           has_killall: bool = True) -> str:
    """keepalived.conf with Kubitect's settings for one load balancer."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("kubitect-keepalived.conf.j2").render(
        nic=nic, vip=vip, priority=DEFAULT_PRIORITY if priority is None else priority,
        virtual_router_id=virtual_router_id or DEFAULT_ROUTER_ID,
        check_command=KILLALL if has_killall else PGREP)
