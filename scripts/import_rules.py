"""Write (or, with --check, compare) every package's ruff.toml from layerprobe._layers.ALLOWED: the
layerprobe packages a package may not import, as ruff TID251 banned modules.

    python scripts/import_rules.py          # write src/layerprobe/*/ruff.toml
    python scripts/import_rules.py --check  # exit 1 when one differs (the tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerprobe._layers import ALLOWED

ROOT = Path(__file__).resolve().parent.parent / "src" / "layerprobe"
HEAD = """# Written by scripts/import_rules.py from layerprobe/_layers.py (the one table of allowed imports);
# edit that table, not this file. This package may not import the modules below (ruff TID251).
extend = "../../../pyproject.toml"

[lint.flake8-tidy-imports.banned-api]
"""


def rules(package: str) -> str:
    banned = sorted(p for p in ALLOWED if p != package and p not in ALLOWED[package])
    lines = [
        f'"layerprobe.{b}".msg = "{package} must not import layerprobe.{b} (data flows one way; see docs/architecture.md)"'
        for b in banned
    ]
    return HEAD + "\n".join(lines) + "\n"


def main(check: bool) -> int:
    stale = []
    for package in ALLOWED:
        path = ROOT / package / "ruff.toml"
        want = rules(package)
        if not path.is_file() or path.read_text() != want:
            stale.append(path)
            if not check:
                path.write_text(want)
    if check and stale:
        print("out of date (run python scripts/import_rules.py):", ", ".join(str(p) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
