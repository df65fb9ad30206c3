"""The topology picture as SVG, drawn from `layout.compute_layout`.

Built with xml.etree, which escapes `&`, `<`, `>` and quotes in every text node and attribute;
characters XML 1.0 cannot carry at all (control characters such as a NUL or an ESC, which a
quoted YAML string can hold) are replaced first by `xml_safe`. No string from the config is
ever pasted into markup by hand.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from kubitect_core.topology_view import layout as L
from kubitect_core.topology_view.model import TopologyView, gib, resources_line

SVG_NS = "http://www.w3.org/2000/svg"
FONT = "'DejaVu Sans', Verdana, 'Segoe UI', Arial, sans-serif"

ROLE_COLOURS = {  # (stroke/tag, fill)
    "lb": ("#d97706", "#fef3c7"),
    "master": ("#2563eb", "#dbeafe"),
    "worker": ("#059669", "#d1fae5"),
}
ROLE_TAGS = {"lb": "LB", "master": "MASTER", "worker": "WORKER"}
VIP_COLOUR = "#7c3aed"
NET_COLOUR = "#475569"

STYLE = f"""
text {{ font-family: {FONT}; fill: #1e293b; }}
.title {{ font-size: 22px; font-weight: bold; fill: #0f172a; }}
.subtitle {{ font-size: 13px; fill: #475569; }}
.host-name {{ font-size: 15px; font-weight: bold; fill: #0f172a; }}
.name {{ font-size: 13px; font-weight: bold; fill: #0f172a; }}
.small {{ font-size: 12px; }}
.bold {{ font-weight: bold; }}
.muted {{ fill: #64748b; }}
.dhcp {{ font-style: italic; fill: #9333ea; }}
.tag {{ font-size: 10px; font-weight: bold; fill: #ffffff; }}
.on-dark {{ font-size: 12px; font-weight: bold; fill: #ffffff; }}
.halo {{ paint-order: stroke; stroke: #f8fafc; stroke-width: 4px; stroke-linejoin: round; }}
.host {{ fill: #f8fafc; stroke: #94a3b8; stroke-width: 1.5; }}
.bus {{ stroke: {NET_COLOUR}; stroke-width: 4; stroke-linecap: round; fill: none; }}
.uplink {{ stroke: {NET_COLOUR}; stroke-width: 2; fill: none; }}
.vip-line {{ stroke: {VIP_COLOUR}; stroke-width: 2; stroke-dasharray: 6 4; fill: none; }}
.disk {{ fill: #e2e8f0; stroke: #64748b; stroke-width: 1; }}
"""

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: object) -> str:
    """`value` as text XML 1.0 can hold: characters it forbids become U+FFFD (ET escapes the rest)."""
    return _NOT_XML.sub("\ufffd", str(value))


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else xml_safe(value)


class _Canvas:
    """A thin helper over ElementTree: attribute names with `_` become `-`, values are made XML-safe."""

    def __init__(self, width: float, height: float, label: str):
        self.root = ET.Element("svg", {
            "xmlns": SVG_NS, "width": _fmt(width), "height": _fmt(height), "viewBox": f"0 0 {width:g} {height:g}",
            "role": "img", "aria-label": xml_safe(label)})
        ET.SubElement(self.root, "title").text = xml_safe(label)
        ET.SubElement(self.root, "style").text = STYLE

    def el(self, parent: ET.Element | None, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
        element = ET.SubElement(self.root if parent is None else parent, tag,
                                {k.rstrip("_").replace("_", "-"): _fmt(v) for k, v in attrs.items() if v is not None})
        if text is not None:
            element.text = xml_safe(text)
        return element

    def text(self, parent: ET.Element | None, x: float, y: float, content: str, cls: str, *,
             max_width: float | None = None, size: float = 12, bold: bool = False, **attrs: object) -> ET.Element:
        """A text line; shortened to `max_width` with the full text kept as its tooltip."""
        shown = L.fit(content, size, max_width, bold) if max_width is not None else content
        element = self.el(parent, "text", shown, x=x, y=y, class_=cls, **attrs)
        if shown != content:
            self.el(element, "title", content)
        return element

    def to_string(self) -> str:
        ET.indent(self.root, space=" ")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(self.root, encoding="unicode") + "\n"


def render_svg(view: TopologyView, lay: L.Layout | None = None) -> str:
    """The whole picture: title and legend, network and endpoint, hosts with node cards, totals.

    Pass the `lay` already computed (its width and height size the PNG) to avoid a second layout.
    """
    lay = lay or L.compute_layout(view)
    title, subtitle = L.title_lines(view)
    c = _Canvas(lay.width, lay.height, f"{title}: {subtitle}")
    c.el(None, "rect", x=0, y=0, width=lay.width, height=lay.height, fill="#ffffff")
    c.text(None, L.MARGIN, L.MARGIN + 22, title, "title")
    c.text(None, L.MARGIN, L.MARGIN + 44, subtitle, "subtitle")
    _legend(c, view, *lay.legend_at)
    _network_band(c, view, lay)
    for place in lay.hosts:
        c.el(None, "rect", x=place.box.x, y=place.box.y, width=place.box.w, height=place.box.h, rx=10,
             class_="host", data_host=place.host.name)
    _network_wiring(c, lay)
    for place in lay.hosts:
        _host(c, place)
    if lay.vip_lines:  # over the cards, so the lane visibly reaches each VIP chip
        d = " ".join(f"M{x1:g} {y1:g} L{x2:g} {y2:g}" for (x1, y1), (x2, y2) in lay.vip_lines)
        c.el(None, "path", d=d, class_="vip-line", data_role="vip")
        for x, y in lay.vip_anchors.values():
            c.el(None, "circle", cx=x, cy=y, r=2.5, fill=VIP_COLOUR)
    c.text(None, L.MARGIN, lay.footer_y, L.totals_label(view), "small bold", data_role="totals")
    c.text(None, L.MARGIN, lay.footer_y + L.FOOTER_LINE, "Drawn from the config alone: no host was contacted.",
           "small muted")
    return c.to_string()


def _legend(c: _Canvas, view: TopologyView, x: float, y: float) -> None:
    g = c.el(None, "g", class_="legend")
    for key, label in L.legend_items(view):
        if key in ROLE_COLOURS:
            stroke, fill = ROLE_COLOURS[key]
            c.el(g, "rect", x=x, y=y, width=16, height=14, rx=3, fill=fill, stroke=stroke, stroke_width=1.5)
        elif key == "vip":
            c.el(g, "path", d=f"M{x:g} {y + 7:g} h16", class_="vip-line")
        else:
            _disk_icon(c, g, x + 3, y + 1)
        c.text(g, x + L.LEGEND_SWATCH, y + 12, label, "small")
        x += L.LEGEND_SWATCH + L.text_width(label, 12) + L.LEGEND_SPACING


def _network_band(c: _Canvas, view: TopologyView, lay: L.Layout) -> None:
    net, ep = lay.network_box, lay.endpoint_box
    g = c.el(None, "g", class_="network")
    c.el(g, "rect", x=net.x, y=net.y, width=net.w, height=net.h, rx=net.h / 2, fill=NET_COLOUR)
    c.text(g, net.x + 14, net.y + 17, L.network_label(view), "on-dark")
    g = c.el(None, "g", class_="endpoint")
    vip = view.vip is not None
    c.el(g, "rect", x=ep.x, y=ep.y, width=ep.w, height=ep.h, rx=ep.h / 2, fill=VIP_COLOUR if vip else "#e2e8f0")
    c.text(g, ep.x + 14, ep.y + 17, L.vip_label(view), "on-dark" if vip else "small bold")
    forwards = L.forwards_label(view)
    if forwards:
        c.text(g, *lay.forwards_at, forwards, "small muted", max_width=lay.forwards_room)


def _network_wiring(c: _Canvas, lay: L.Layout) -> None:
    """The network: a trunk down the left from the network badge, a bus per row, an uplink per host."""
    g = c.el(None, "g", class_="wiring")
    trunk_x = L.MARGIN + L.NET_TRUNK_DX
    c.el(g, "path", d=f"M{trunk_x:g} {lay.network_box.bottom:g} V{lay.rows[-1].bus_y:g}", class_="bus")
    for row in lay.rows:
        c.el(g, "path", d=f"M{trunk_x:g} {row.bus_y:g} H{row.right - 8:g}", class_="bus")
    for place in lay.hosts:
        bus_y = lay.rows[place.row].bus_y
        c.el(g, "path", d=f"M{place.uplink_x:g} {bus_y:g} V{place.box.y:g}", class_="uplink")
        c.el(g, "circle", cx=place.uplink_x, cy=bus_y, r=4, fill=NET_COLOUR)


def _host(c: _Canvas, place: L.HostPlace) -> None:
    host, box = place.host, place.box
    g = c.el(None, "g", class_="host-info", data_host=host.name)
    x = box.x + L.HOST_PAD + L.HOST_TEXT_DX
    room = box.right - L.HOST_PAD - x
    name = c.text(g, x, box.y + 24, host.name, "host-name halo", max_width=room, size=15, bold=True)
    if host.default:
        c.el(name, "tspan", "  (default)", class_="muted", style="font-weight: normal; font-size: 12px")
    c.text(g, x, box.y + 42, f"{host.reach} · {host.provider}", "small muted halo", max_width=room)
    if not host.nodes:
        c.text(g, box.x + L.HOST_PAD, box.y + L.HOST_HEADER_H + 14, "no nodes", "small muted")
    for card in place.cards:
        _card(c, card)
    inner = box.w - 2 * L.HOST_PAD
    top = box.bottom - L.HOST_FOOTER_H + 8
    c.el(g, "path", d=f"M{box.x + L.HOST_PAD:g} {top:g} H{box.right - L.HOST_PAD:g}", stroke="#cbd5e1")
    (totals, _, _), (disks, _, _) = L.host_footer_lines(host)
    c.text(g, box.x + L.HOST_PAD, top + 18, totals, "small bold", max_width=inner, bold=True, data_role="host-totals")
    pools = "; ".join(f"{p.name}: {p.path}" for p in host.pools)
    line = c.text(g, box.x + L.HOST_PAD, top + 35, disks, "small", max_width=inner, data_role="host-disks")
    c.el(line, "title", f"pools on {host.name}: {pools}")


def _card(c: _Canvas, card: L.CardPlace) -> None:
    node, box = card.node, card.box
    stroke, fill = ROLE_COLOURS[node.role]
    g = c.el(None, "g", class_=f"node {node.role}", data_node=node.name, data_role=node.role)
    c.el(g, "rect", x=box.x, y=box.y, width=box.w, height=box.h, rx=6, fill=fill, stroke=stroke, stroke_width=1.5)
    c.el(g, "rect", x=box.x + 4, y=box.y + 6, width=4, height=box.h - 12, rx=2, fill=stroke)
    x = box.x + L.CARD_PAD + 2
    inner = box.w - L.CARD_PAD * 2 - 4
    base = box.y + L.CARD_PAD + 9
    name_room = inner - (L.VIP_CHIP_W if node.role == "lb" else 0)
    c.text(g, x, base, node.name, "name", max_width=name_room, size=13, bold=True)
    if node.role == "lb":
        _chip(c, g, box.right - 6 - L.VIP_CHIP_W, box.y + 6, L.VIP_CHIP_W, "VIP", VIP_COLOUR)
    tag_w = L.ROLE_TAG_W[node.role] - 6
    _chip(c, g, x, base + L.CARD_LINE - 11, tag_w, ROLE_TAGS[node.role], stroke)
    address = c.text(g, x + tag_w + 6, base + L.CARD_LINE, node.ip or "DHCP", "small" if node.ip else "small dhcp")
    if node.role == "lb":
        c.el(address, "tspan", f" · priority {node.priority}", class_="muted")
    c.text(g, x, base + 2 * L.CARD_LINE, f"{resources_line(node.cpu, node.ram_gib)} · {gib(node.main_disk_gib)} disk",
           "small", max_width=inner)
    for i, d in enumerate(node.data_disks):
        y = base + (3 + i) * L.CARD_LINE
        dg = c.el(g, "g", class_="data-disk", data_disk=d.name, data_pool=d.pool)
        _disk_icon(c, dg, x, y - 11)
        c.text(dg, x + L.DISK_ICON_W, y, L.disk_text(d.name, d.size_gib, d.pool), "small",
               max_width=inner - L.DISK_ICON_W)


def _chip(c: _Canvas, g: ET.Element, x: float, y: float, w: float, label: str, colour: str) -> None:
    c.el(g, "rect", x=x, y=y, width=w, height=14, rx=7, fill=colour)
    c.el(g, "text", label, x=x + w / 2, y=y + 10.5, class_="tag", text_anchor="middle")


def _disk_icon(c: _Canvas, g: ET.Element, x: float, y: float) -> None:
    """A small cylinder, the usual sign for a disk."""
    c.el(g, "path", d=f"M{x:g} {y + 2.5:g} v8 a5 2.5 0 0 0 10 0 v-8", class_="disk")
    c.el(g, "ellipse", cx=x + 5, cy=y + 2.5, rx=5, ry=2.5, class_="disk")
