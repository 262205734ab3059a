"""Render an executed notebook to HTML (nbconvert) and screenshot it in headless Chromium, as a reader sees it.

    .venv/bin/python scripts/screenshot_notebook.py executed.ipynb --out shots/
    # -> shots/<name>.html, shots/<name>-00.png, <name>-01.png, ... (pages of --page-height pixels)

The browser is Debian's ``chromium`` (``apt-get install chromium``) or ``--browser PATH``; it runs with
a fresh profile, no network services, no sandbox (containers), no GPU. Nothing is fetched: the page's
CDN scripts (MathJax, widget manager) fail offline, so what shows is what a saved notebook shows without
a live kernel: widgets' static renderings, figures, tables, audio players. Exit status 2 when no browser
is found.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--mute-audio")


def find_browser(explicit: str | None = None) -> str | None:
    """The browser to use: ``explicit`` when given, else the first of BROWSERS on PATH (None: none)."""
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def to_html(notebook: Path, out: Path) -> Path:
    """The notebook as nbconvert's lab-template HTML (outputs as saved), written to ``out``."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def screenshot(html: Path, png: Path, *, browser: str, width: int = 1280, height: int = 12000,
               timeout_s: float = 120.0) -> Path:
    """One ``width`` x ``height`` screenshot of ``html`` (a fresh Chromium profile, deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
               "--virtual-time-budget=5000", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if not png.is_file():
        raise RuntimeError(f"{browser} made no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png


def pages(png: Path, *, page_height: int = 1600) -> list[Path]:
    """Cut a tall screenshot into pages (``<stem>-00.png``, ...), dropping the blank space after the page's end."""
    import numpy as np
    from PIL import Image

    image = Image.open(png).convert("RGB")
    pixels = np.asarray(image)
    ink = np.flatnonzero((pixels < 250).any(axis=(1, 2)))
    bottom = int(ink[-1]) + 20 if len(ink) else image.height
    out = []
    for k, top in enumerate(range(0, min(bottom, image.height), page_height)):
        path = png.with_name(f"{png.stem}-{k:02d}.png")
        image.crop((0, top, image.width, min(top + page_height, bottom))).save(path)
        out.append(path)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path, help="an executed .ipynb (papermill output)")
    p.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for the HTML and the PNG pages")
    p.add_argument("--browser", default=None, help=f"browser executable (default: the first of {BROWSERS})")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=12000, help="height of the whole page screenshot, pixels")
    p.add_argument("--page-height", type=int, default=1600, help="height of each PNG page, pixels")
    args = p.parse_args(argv)
    browser = find_browser(args.browser)
    if browser is None:
        print(f"no browser found ({', '.join(BROWSERS)}); install one: apt-get install chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    html = to_html(args.notebook, args.out / f"{args.notebook.stem}.html")
    full = screenshot(html, args.out / f"{args.notebook.stem}.png", browser=browser, width=args.width,
                      height=args.height)
    for page in pages(full, page_height=args.page_height):
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
