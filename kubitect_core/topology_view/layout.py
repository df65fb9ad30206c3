"""Where everything goes in the topology picture: pure geometry, no SVG.

Kept apart from drawing so the wrapping rules can be tested on numbers (no overlap, bounded
width) and so the drawing code only places what this module measured.

Text has no measured width before a browser renders it, so boxes are sized from DejaVu Sans's
advance widths (`fontmetrics`); text that would still not fit (a very long name) is shortened
with an ellipsis, the full text kept as its tooltip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kubitect_core.topology import Node
from kubitect_core.topology_view.fontmetrics import text_width
from kubitect_core.topology_view.model import HostView, TopologyView, disks_line, gib, plural, resources_line

MAX_WIDTH = 1680  # hosts wrap onto a new row beyond this width (fits a 1920-px screen)
MARGIN = 24
GUTTER = 40  # left of the hosts: the network trunk and the VIP trunk run here
NET_TRUNK_DX = 8
VIP_TRUNK_DX = 22
HOST_GAP = 32  # a VIP lane may run down the middle of the gap to reach a load balancer
ROW_GAP = 64  # between the bottom of a row of hosts and the top of the next one
BUS_ABOVE_ROW = 22  # the network bus of a row runs this far above its hosts
LANE_ABOVE_BUS = 14  # the VIP lane runs this far above the bus

CARD_MIN_W, CARD_MAX_W = 220, 700  # 700 fits a 63-character node name (the hostname limit)
CARD_PAD = 12
CARD_LINE = 17
CARD_GAP = 10
CARDS_PER_COLUMN = (6, 8, 10, 12, 16, 24)  # tried in turn; the picture closest to TARGET_ASPECT wins
MAX_NODE_COLUMNS = 4  # a host lays its nodes out in at most this many columns
TARGET_ASPECT = 1.6  # width / height of a screen

HOST_PAD = 12
HOST_HEADER_H = 54
HOST_FOOTER_H = 50
HOST_TEXT_DX = 18  # header text starts right of the uplink

TITLE_H = 64
BADGE_H = 26
BADGE_GAP = 24
FOOTER_LINE = 18

FONT_SIZES = {"title": 22, "subtitle": 13, "host": 15, "name": 13, "small": 12, "tag": 10}


def fit(text: str, size: float, max_width: float, bold: bool = False) -> str:
    """`text`, or its head with an ellipsis when it would be wider than `max_width` (linear time,
    so a name thousands of characters long costs nothing)."""
    if text_width(text, size, bold) <= max_width:
        return text
    room = max_width - text_width("…", size, bold)
    used, keep = 0.0, 0
    for ch in text:
        used += text_width(ch, size, bold)
        if used > room:
            break
        keep += 1
    return text[:max(1, keep)] + "…"


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def overlaps(self, other: Box) -> bool:
        return not (self.right <= other.x or other.right <= self.x or self.bottom <= other.y
                    or other.bottom <= self.y)


@dataclass
class CardPlace:
    node: Node
    box: Box


@dataclass
class HostPlace:
    host: HostView
    box: Box
    row: int
    cards: list[CardPlace] = field(default_factory=list)

    @property
    def uplink_x(self) -> float:
        return self.box.x + 20


@dataclass
class Row:
    top: float
    bottom: float
    right: float

    @property
    def bus_y(self) -> float:
        return self.top - BUS_ABOVE_ROW

    @property
    def lane_y(self) -> float:
        return self.bus_y - LANE_ABOVE_BUS


Point = tuple[float, float]


@dataclass
class Layout:
    width: float
    height: float
    hosts: list[HostPlace]
    rows: list[Row]
    network_box: Box
    endpoint_box: Box  # the VIP badge, or the plain endpoint when there is no VIP
    forwards_at: Point  # where the forwarded-ports note starts (right of the endpoint badge)
    forwards_room: float  # its width; a longer list is shortened, in full in its tooltip
    legend_at: Point
    footer_y: float
    vip_lines: list[tuple[Point, Point]] = field(default_factory=list)  # straight segments of the VIP lane
    vip_anchors: dict[str, Point] = field(default_factory=dict)  # load balancer name -> where the lane ends

    @property
    def cards(self) -> list[CardPlace]:
        return [c for h in self.hosts for c in h.cards]


def node_lines(node: Node) -> list[tuple[str, float, bool]]:
    """The card's text lines as (text, font size, bold), to size the card."""
    second = node.ip or "DHCP"
    if node.role == "lb":
        second += f" · priority {node.priority}"
    lines = [(node.name, FONT_SIZES["name"], True), (second, FONT_SIZES["small"], False),
             (f"{resources_line(node.cpu, node.ram_gib)} · {gib(node.main_disk_gib)} disk", FONT_SIZES["small"], False)]
    lines += [(disk_text(d.name, d.size_gib, d.pool), FONT_SIZES["small"], False) for d in node.data_disks]
    return lines


def disk_text(name: str, size_gib: int, pool: str) -> str:
    return f"{name} · {gib(size_gib)} · pool {pool}"


ROLE_TAG_W = {"lb": 30, "master": 62, "worker": 62}  # the coloured tag before the IP on line 2
VIP_CHIP_W = 34
DISK_ICON_W = 16


def card_width(nodes: tuple[Node, ...] | list[Node]) -> float:
    """One width for every card in the picture: the widest content, within bounds."""
    need = CARD_MIN_W
    for node in nodes:
        for i, (text, size, bold) in enumerate(node_lines(node)):
            extra = {0: VIP_CHIP_W if node.role == "lb" else 0, 1: ROLE_TAG_W[node.role], 2: 0}.get(i, DISK_ICON_W)
            need = max(need, text_width(text, size, bold) + extra + 2 * CARD_PAD + 6)
    return min(CARD_MAX_W, math.ceil(need))


def card_height(node: Node) -> float:
    return CARD_PAD + CARD_LINE * (3 + len(node.data_disks)) + 8


def node_columns(count: int, per_column: int) -> int:
    return max(1, min(MAX_NODE_COLUMNS, math.ceil(count / per_column)))


def host_header_lines(host: HostView) -> list[tuple[str, float, bool]]:
    return [(host.name + ("  (default)" if host.default else ""), FONT_SIZES["host"], True),
            (f"{host.reach} · {host.provider}", FONT_SIZES["small"], False)]


def host_footer_lines(host: HostView) -> list[tuple[str, float, bool]]:
    t = host.totals
    return [(f"Σ {plural(t.nodes, 'node')} · {resources_line(t.cpu, t.ram_gib)}", FONT_SIZES["small"], True),
            (f"disk {disks_line(t.disk_gib)}", FONT_SIZES["small"], False)]


def _host_size(host: HostView, card_w: float, per_column: int) -> tuple[float, float, int]:
    cols = node_columns(len(host.nodes), per_column)
    grid_w = cols * card_w + (cols - 1) * CARD_GAP
    text_w = max(text_width(t, s, b) for t, s, b in host_header_lines(host) + host_footer_lines(host))
    w = max(grid_w + 2 * HOST_PAD, text_w + 2 * HOST_PAD + HOST_TEXT_DX + 8)
    rows = _grid_rows(host.nodes, cols)
    grid_h = sum(rows) + CARD_GAP * max(0, len(rows) - 1) if rows else CARD_LINE
    return math.ceil(w), HOST_HEADER_H + grid_h + HOST_FOOTER_H, cols


def _grid_rows(nodes: tuple[Node, ...], cols: int) -> list[float]:
    """Height of each row of the node grid (the tallest card in the row)."""
    return [max(card_height(n) for n in nodes[i:i + cols]) for i in range(0, len(nodes), cols)]


def compute_layout(view: TopologyView) -> Layout:
    """The layout whose shape is closest to a screen's among a few node-grid heights: three hosts of
    ten nodes read best side by side in single columns, one host of thirty in a four-column grid."""
    candidates = [_layout(view, per_column) for per_column in CARDS_PER_COLUMN]
    return min(candidates, key=lambda lay: abs(math.log(lay.width / lay.height / TARGET_ASPECT)))


def _layout(view: TopologyView, per_column: int) -> Layout:
    """Places hosts left to right, wrapping into balanced rows at MAX_WIDTH, nodes in a grid inside
    each host; the header, network band and legend take one line each when the hosts leave room,
    and stack when they do not (so a one-host picture stays narrow)."""
    card_w = card_width(view.nodes)
    left = MARGIN + GUTTER
    sizes = [_host_size(h, card_w, per_column) for h in view.hosts]
    rows_idx = wrap([w for w, _, _ in sizes], MAX_WIDTH - MARGIN - left - HOST_GAP / 2)
    row_widths = [sum(sizes[i][0] for i in r) + HOST_GAP * (len(r) - 1) for r in rows_idx]
    content_w = left + max(row_widths) + HOST_GAP / 2 + MARGIN

    title, subtitle = title_lines(view)
    title_w = max(text_width(title, FONT_SIZES["title"], True), text_width(subtitle, FONT_SIZES["subtitle"]))
    legend_w = legend_width(view)
    legend_top = MARGIN + title_w + 32 + legend_w + MARGIN <= content_w
    net_w = text_width(network_label(view), FONT_SIZES["small"], True) + 28
    ep_w = text_width(vip_label(view), FONT_SIZES["small"], True) + 28
    forwards = forwards_label(view)
    forwards_w = text_width(forwards, FONT_SIZES["small"]) + 12 if forwards else 0
    band_one_line = MARGIN + net_w + BADGE_GAP + ep_w + forwards_w + MARGIN <= content_w
    band_y = MARGIN + TITLE_H
    network_box = Box(MARGIN, band_y, net_w, BADGE_H)
    if band_one_line:
        endpoint_box = Box(network_box.right + BADGE_GAP, band_y, ep_w, BADGE_H)
    else:
        endpoint_box = Box(left, network_box.bottom + 10, ep_w, BADGE_H)

    top = endpoint_box.bottom + 24 + LANE_ABOVE_BUS + BUS_ABOVE_ROW
    places: list[HostPlace] = []
    rows: list[Row] = []
    for r, members in enumerate(rows_idx):
        row_h = max(sizes[i][1] for i in members)
        x = left
        for i in members:
            w, _, cols = sizes[i]
            place = HostPlace(view.hosts[i], Box(x, top, w, row_h), r)
            _place_cards(place, cols)
            places.append(place)
            x += w + HOST_GAP
        rows.append(Row(top=top, bottom=top + row_h, right=x - HOST_GAP))
        top += row_h + ROW_GAP

    footer_y = rows[-1].bottom + 34
    forwards_w = min(forwards_w, max(content_w, MAX_WIDTH / 2, endpoint_box.right + 200) - endpoint_box.right - MARGIN)
    width = max(content_w, network_box.right + MARGIN, endpoint_box.right + forwards_w + MARGIN,
                2 * MARGIN + text_width(totals_label(view), FONT_SIZES["small"], True),
                2 * MARGIN + title_w + (32 + legend_w if legend_top else 0), 2 * MARGIN + legend_w)
    legend_at = (width - MARGIN - legend_w, MARGIN + 6) if legend_top else (MARGIN, footer_y + 2 * FOOTER_LINE)
    height = footer_y + (3 if not legend_top else 2) * FOOTER_LINE
    lay = Layout(width=math.ceil(width), height=math.ceil(height), hosts=places, rows=rows,
                 network_box=network_box, endpoint_box=endpoint_box,
                 forwards_at=(endpoint_box.right + 12, endpoint_box.y + 17), forwards_room=forwards_w - 12,
                 legend_at=legend_at, footer_y=footer_y)
    if view.vip:
        _route_vip(lay)
    return lay


def _route_vip(lay: Layout) -> None:
    """The VIP lane: from the VIP badge down to a lane above each row's bus, along it, and to each
    load balancer's VIP chip. A card in its host's last column is reached from the gap right of the
    host, so the lane never crosses the host's header text; any other from above."""
    lanes: dict[int, list[float]] = {}  # row -> x positions the lane must reach
    for place in lay.hosts:
        grid_right = max((c.box.right for c in place.cards), default=0)
        lane = lay.rows[place.row].lane_y
        for card in place.cards:
            if card.node.role != "lb":
                continue
            chip_y = card.box.y + 13
            if card.box.right >= grid_right - 0.5:
                gx = place.box.right + HOST_GAP / 2
                end = (card.box.right - 6, chip_y)
                lay.vip_lines += [((gx, lane), (gx, chip_y)), ((gx, chip_y), end)]
            else:
                gx = card.box.right - 6 - VIP_CHIP_W / 2
                end = (gx, card.box.y + 6)
                lay.vip_lines.append(((gx, lane), end))
            lay.vip_anchors[card.node.name] = end
            lanes.setdefault(place.row, []).append(gx)
    if not lanes:
        return
    ep = lay.endpoint_box
    bx, lane0 = ep.x + ep.w / 2, lay.rows[0].lane_y
    lay.vip_lines.append(((bx, ep.bottom), (bx, lane0)))
    trunk_x = MARGIN + VIP_TRUNK_DX
    lower = sorted(r for r in lanes if r > 0)
    xs0 = [bx, *lanes.get(0, []), *([trunk_x] if lower else [])]
    lay.vip_lines.append(((min(xs0), lane0), (max(xs0), lane0)))
    if lower:
        lay.vip_lines.append(((trunk_x, lane0), (trunk_x, lay.rows[lower[-1]].lane_y)))
        for r in lower:
            lay.vip_lines.append(((trunk_x, lay.rows[r].lane_y), (max(lanes[r]), lay.rows[r].lane_y)))


def _greedy_rows(widths: list[float], limit: float) -> list[list[int]]:
    rows: list[list[int]] = [[]]
    used = 0.0
    for i, w in enumerate(widths):
        if rows[-1] and used + HOST_GAP + w > limit:
            rows.append([])
            used = 0.0
        used += (HOST_GAP if rows[-1] else 0) + w
        rows[-1].append(i)
    return rows


def wrap(widths: list[float], limit: float) -> list[list[int]]:
    """Hosts (by index, in config order) per row: as few rows as fit in `limit`, then balanced, so
    five hosts that need two rows go three and two, not four and one."""
    rows = _greedy_rows(widths, limit)
    if len(rows) < 2:
        return rows
    low, high = int(max(widths)), int(math.ceil(limit))
    while low < high:  # the narrowest limit that still needs no more rows
        mid = (low + high) // 2
        if len(_greedy_rows(widths, mid)) <= len(rows):
            high = mid
        else:
            low = mid + 1
    return _greedy_rows(widths, high)


def _place_cards(place: HostPlace, cols: int) -> None:
    """Fills the host's width: cards stretch when the host's header is wider than the grid."""
    nodes = place.host.nodes
    card_w = (place.box.w - 2 * HOST_PAD - (cols - 1) * CARD_GAP) / cols
    y = place.box.y + HOST_HEADER_H
    for r, row_h in enumerate(_grid_rows(nodes, cols)):
        for c, node in enumerate(nodes[r * cols:(r + 1) * cols]):
            x = place.box.x + HOST_PAD + c * (card_w + CARD_GAP)
            place.cards.append(CardPlace(node, Box(x, y, card_w, card_height(node))))
        y += row_h + CARD_GAP


def title_lines(view: TopologyView) -> tuple[str, str]:
    counts = ", ".join(plural(count, label) for role, label in (("lb", "load balancer"), ("master", "master"),
                                                                ("worker", "worker"))
                       if (count := sum(1 for n in view.nodes if n.role == role)))
    return (f"cluster {view.cluster}",
            f"Kubernetes {view.kubernetes.summary} · {counts} on {plural(len(view.hosts), 'host')}")


LEGEND = (("lb", "load balancer"), ("master", "master (control plane)"), ("worker", "worker"),
          ("vip", "VIP (VRRP)"), ("disk", "data disk"))
LEGEND_SWATCH, LEGEND_SPACING = 22, 14


def legend_items(view: TopologyView) -> list[tuple[str, str]]:
    """The legend keys for what this picture shows (no "VIP" entry in a picture without one)."""
    present = {n.role for n in view.nodes}
    if view.vip:
        present.add("vip")
    if any(n.data_disks for n in view.nodes):
        present.add("disk")
    return [(key, label) for key, label in LEGEND if key in present]


def legend_width(view: TopologyView) -> float:
    return sum(LEGEND_SWATCH + text_width(label, FONT_SIZES["small"]) + LEGEND_SPACING
               for _, label in legend_items(view))


def totals_label(view: TopologyView) -> str:
    t = view.totals
    return f"Total: {plural(t.nodes, 'node')} · {resources_line(t.cpu, t.ram_gib)} · disk {disks_line(t.disk_gib)}"


def network_label(view: TopologyView) -> str:
    return f"network {view.network.summary}"


def vip_label(view: TopologyView) -> str:
    """The endpoint badge: the VIP when there is one, else the single address clients use."""
    if view.vip:
        return f"VIP {view.vip} · VRRP id {view.virtual_router_id} · API :{view.api_port}"
    return f"API endpoint {view.endpoint or 'from DHCP'}:{view.api_port} (no VIP)"


def forwards_label(view: TopologyView) -> str:
    if not view.forward_ports:
        return ""
    return "forwards " + ", ".join(f"{p.name} :{p.port} → {p.target} :{p.target_port}" for p in view.forward_ports)
