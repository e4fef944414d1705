"""What every benchmark script does with its results: print the markdown table, write it and a CSV beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd


def write_results(df: pd.DataFrame, md: str, out: str | Path) -> None:
    """Print ``md``, write it to ``out`` and ``df`` to ``out`` with a ``.csv`` suffix (folders created)."""
    print(md)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    df.to_csv(out.with_suffix(".csv"), index=False)
    print(f"Wrote {out} and {out.with_suffix('.csv')}.")


def commit() -> str:
    """The checkout's commit, ``"working tree on <commit>"`` when tracked files have changes, or ``"unknown"``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        return f"working tree on {head}" if dirty.stdout.strip() else head
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
