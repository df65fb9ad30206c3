"""The seed's topology picture as a browser shows it: `kubitect topology --png` renders the SVG in
headless Chromium, and the screenshot must be the picture, not a blank or broken page.

Runs in a few seconds (one browser start per test). Skips only when no Chromium is installed;
scripts/setup.sh installs Debian's `chromium`, so CI never skips it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import load_config
from kubitect_core.topology_view import build_view, compute_layout, find_chromium
from kubitect_core.topology_view.svg import NET_COLOUR, ROLE_COLOURS, VIP_COLOUR

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "examples" / "ha.yaml"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not installed (Debian package `chromium`; scripts/setup.sh installs it)")


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def screenshot(tmp_path: Path, *extra: str) -> Image.Image:
    out = tmp_path / "ha.png"
    result = CliRunner().invoke(app, ["topology", str(HA), "--png", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    return Image.open(out).convert("RGB")


def test_seed_png_is_the_picture(tmp_path):
    image = screenshot(tmp_path)
    lay = compute_layout(build_view(load_config(HA)))
    assert image.size == (lay.width, lay.height)
    total = image.width * image.height
    pixels = Counter({colour: count for count, colour in image.getcolors(total)})
    white = pixels[(255, 255, 255)]
    assert 0.2 < 1 - white / total < 0.8  # drawn, but not a solid block
    assert len(pixels) > 200  # anti-aliased text and shapes, not a few flat colours
    # every role's card fill, the VIP badge and the network badge were painted in quantity
    for name, colour in [*((f"{role} fill", fill) for role, (_, fill) in ROLE_COLOURS.items()),
                         ("VIP", VIP_COLOUR), ("network", NET_COLOUR)]:
        assert pixels[rgb(colour)] > 1500, f"{name} ({colour}) hardly appears in the screenshot"
    # text was rendered: many dark pixels (glyphs), spread over the width of the picture
    dark = [(x, y) for y in range(0, image.height, 2) for x in range(0, image.width, 2)
            if sum(image.getpixel((x, y))) < 200]
    assert len(dark) > 1000
    xs = [x for x, _ in dark]
    assert max(xs) - min(xs) > 0.8 * image.width


def test_seed_png_at_double_density(tmp_path):
    image = screenshot(tmp_path, "--scale", "2")
    lay = compute_layout(build_view(load_config(HA)))
    assert image.size == (2 * lay.width, 2 * lay.height)
    assert len(image.getcolors(image.width * image.height)) > 200
