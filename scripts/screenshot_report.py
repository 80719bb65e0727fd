#!/usr/bin/env python3
"""Render a report.html in headless Chromium and save full-page screenshots (PNG).

    python scripts/screenshot_report.py RUN_DIR/report.html [--out screenshots/] [--width 1400]
                                        [--chunk 2400] [--name NAME] [--open-details]

Chromium (Debian package `chromium`) runs headless with no network features and a throw-away
profile. The page is rendered into one tall window (--max-height), the blank bottom is trimmed
and the picture is cut into --chunk-pixel-high PNGs that are easy to look at:
NAME-00.png, NAME-01.png, ... (default folder: screenshots/ at the repository root, git-ignored).
--open-details screenshots a copy with every collapsible section (case studies, layers) open.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-extensions",
    "--mute-audio",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: install the Debian package `chromium` (apt-get install -y chromium)")


def screenshot(html: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            find_chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots")
    ap.add_argument("--name", default=None, help="file name prefix (default: the run folder's name)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--max-height", type=int, default=16000)
    ap.add_argument("--chunk", type=int, default=2400, help="height of each saved PNG")
    ap.add_argument("--open-details", action="store_true", help="open every <details> section first")
    args = ap.parse_args()
    if not args.html.is_file():
        sys.exit(f"{args.html} is not a file")
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or args.html.resolve().parent.name
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.png"
        html = args.html
        if args.open_details:
            html = Path(tmp) / "open.html"
            html.write_text(
                args.html.read_text(encoding="utf-8")
                .replace("<details>", "<details open>")
                .replace("<details id=", "<details open id="),
                encoding="utf-8",
            )
        screenshot(html, full, args.width, args.max_height)
        img = Image.open(full).convert("RGB")
    # trim the blank bottom: the last row that is not pure background
    px = img.load()
    w, h = img.size
    bottom = h
    while bottom > 1 and all(px[x, bottom - 1] == (255, 255, 255) for x in range(0, w, 7)):
        bottom -= 1
    img = img.crop((0, 0, w, min(h, bottom + 20)))
    for old in args.out.glob(f"{name}-*.png"):
        old.unlink()
    paths = []
    for i, top in enumerate(range(0, img.size[1], args.chunk)):
        part = img.crop((0, top, w, min(img.size[1], top + args.chunk)))
        p = args.out / f"{name}-{i:02d}.png"
        part.save(p)
        paths.append(p)
    if bottom >= h - 1:
        print(f"note: the page is taller than --max-height {args.max_height}; raise it to see the rest", file=sys.stderr)
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
