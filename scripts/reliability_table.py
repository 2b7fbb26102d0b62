"""Writes docs/reliability.md: every bad input tried and what it gets.

The cases live in `tests/reliability.py` (the suite runs them on each
backend and checks this page against them). Run from the repository root:

    python scripts/reliability_table.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    sys.path.insert(0, str(ROOT))
    from tests import reliability

    page = ROOT / "docs" / "reliability.md"
    page.write_text(reliability.render())
    print(f"wrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
