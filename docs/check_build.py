"""Check a built documentation: every generated API page shows rendered content, not raw directives.

    python docs/check_build.py docs/_build/html

Run by ``.ci/run`` after ``sphinx-build -W`` (which does not catch a stub parsed as the wrong markup: it builds,
but the page shows ``.. autofunction::`` as text and no docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

RAW = (".. autofunction::", ".. autoclass::", ".. currentmodule::", ".. automodule::", ".. autosummary::")


def problems(html_dir: str | Path) -> list[str]:
    """What is wrong with the generated API pages under ``html_dir`` (empty when nothing is)."""
    pages = sorted(Path(html_dir, "generated").glob("*.html"))
    if not pages:
        return [f"no generated API pages in {Path(html_dir, 'generated')}"]
    out = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        raw = [d for d in RAW if d in text]
        if raw:
            out.append(f"{page.name}: raw directives {raw} (autosummary stubs parsed as Markdown?)")
        elif '<dl class="py' not in text:
            out.append(f"{page.name}: no rendered signature")
    return out


if __name__ == "__main__":
    found = problems(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    for p in found:
        print(f"docs: {p}", file=sys.stderr)
    sys.exit(1 if found else 0)
