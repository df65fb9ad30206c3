"""`kubitect topology`: a picture of hosts, nodes, network, VIP and data disks from the config alone.

`build_view` computes what is shown (hosts with their nodes and totals); `render_svg`,
`build_tree` and `TopologyView.to_dict` draw it as SVG, as a terminal tree and as JSON;
`svg_to_png` screenshots the SVG with headless Chromium.
"""

from kubitect_core.topology_view.layout import compute_layout
from kubitect_core.topology_view.model import HostView, TopologyView, Totals, build_view, totals_of
from kubitect_core.topology_view.png import PngError, find_chromium, svg_to_png
from kubitect_core.topology_view.svg import render_svg
from kubitect_core.topology_view.tree import build_tree

__all__ = ["HostView", "PngError", "Totals", "TopologyView", "build_tree", "build_view", "compute_layout",
           "find_chromium", "render_svg", "svg_to_png", "totals_of"]
