"""PNG of the topology picture: the SVG screenshotted by headless Chromium.

Why Chromium and not a Python SVG renderer: the picture's judge is a browser (that is where an
SVG is looked at), Chromium renders the CSS, fonts and `paint-order` halos exactly as a user
will see them, and Debian packages it; cairosvg would need libcairo plus a second rendering
engine with its own gaps, for a result that may differ from what the browser shows.

Chromium runs in a private profile directory and its own session (process group), with every
background feature (network, sync, component updates) off; it only ever loads the local file.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ENV = "KUBITECT_CHROMIUM"  # path to a Chromium/Chrome binary, when not on PATH
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_PIXELS_SIDE = 16384  # Chromium's own limit for one screenshot surface
TIMEOUT_S = 90.0


class PngError(RuntimeError):
    """The PNG could not be made; the message says why and what to do."""


def find_chromium() -> str | None:
    """The browser to render with: $KUBITECT_CHROMIUM, else the first Chromium/Chrome on PATH."""
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def chromium_command(binary: str, svg: Path, out: Path, profile: Path, width: int, height: int,
                     scale: float) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}", f"--force-device-scale-factor={scale:g}",
            f"--window-size={width},{height}", f"--screenshot={out}", svg.as_uri()]


def svg_to_png(svg_text: str, width: float, height: float, out: Path, *, scale: float = 1.0) -> None:
    """Writes `out` (PNG) from the SVG text at `width`×`height` CSS px times `scale`."""
    binary = find_chromium()
    if binary is None:
        hint = (f"${CHROMIUM_ENV} ({os.environ[CHROMIUM_ENV]}) is not an executable file"
                if os.environ.get(CHROMIUM_ENV) else "no chromium on PATH")
        raise PngError(f"PNG output needs a headless Chromium: {hint}. Install Debian's `chromium` package "
                       f"(apt-get install chromium), or set ${CHROMIUM_ENV}, or use --svg instead.")
    w, h = math.ceil(width), math.ceil(height)
    if max(w, h) * scale > MAX_PIXELS_SIDE:
        raise PngError(f"the picture is {w}×{h} px (×{scale:g}), larger than a PNG screenshot allows "
                       f"({MAX_PIXELS_SIDE} px a side); use --svg, or a smaller --scale.")
    with tempfile.TemporaryDirectory(prefix="kubitect-topology-") as tmp:
        svg = Path(tmp) / "topology.svg"
        svg.write_text(svg_text, encoding="utf-8")
        produced = Path(tmp) / "topology.png"
        _run(chromium_command(binary, svg, produced, Path(tmp) / "profile", w, h, scale))
        if not produced.is_file() or produced.stat().st_size == 0:
            raise PngError(f"{binary} exited without writing a screenshot.")
        shutil.copyfile(produced, out)  # an OSError here names `out` (e.g. its folder does not exist)


def _run(command: list[str]) -> None:
    """Runs Chromium in a session of its own, so a timeout stops it and every helper it forked."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True, errors="replace")
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PngError(f"{command[0]} did not finish the screenshot within {TIMEOUT_S:g} s.") from None
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): leave no browser behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(line for line in err.splitlines()[-8:] if "dbus" not in line)
        raise PngError(f"{command[0]} failed with exit code {proc.returncode}:\n{tail}")
