"""What every benchmark script does with its results: print the markdown table, write it and a CSV beside it."""

from __future__ import annotations

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
