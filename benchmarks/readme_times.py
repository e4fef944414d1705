"""The times the README and ``--help`` state, measured: each as a user runs it, in a fresh process.

python benchmarks/readme_times.py [--items demo,quick_start,...] [--repeats 2] [--data-dir ../shared/data/her2st]

Items (each one process, timed by ``/usr/bin/time``: wall seconds and peak RSS):

- ``import``: ``python -c "import stpredict"``;
- ``demo``: ``stpredict -q demo --out <tmp>`` (the README's main command, once installed);
- ``quick_start``: the README's first Python block (the synthetic quick start), as written;
- ``her2st``: the README's HER2ST block as written (``tl.train`` on C2 + C3 with its defaults, early-stopped on C4;
  ``tl.predict_dense`` on C5 with its default 2/8/16 µm bins and the spots; evaluation and the two plots), with
  ``"path/to/her2st"`` replaced by ``--data-dir``; it also reports the seconds of ``tl.train`` and
  ``tl.predict_dense`` alone;
- ``tests`` / ``tests_slow``: the README's test command without the install (``pytest -n auto``), and the slow
  tests' (``pytest -n auto -m slow``), in this checkout.

Rows append to ``--out`` (a CSV; the ``.md`` beside it is rewritten from all rows): an item already measured
``--repeats`` times at this commit is skipped, so a stopped run resumes. Run it on a quiet machine; every row
records the commit, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ITEMS = ("import", "demo", "quick_start", "her2st", "tests", "tests_slow")


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _timed_python(code: str) -> str:
    """``code`` with the seconds of ``tl.train`` and ``tl.predict_dense`` printed as JSON at the end."""
    head = (
        "import json as _json, time as _time, matplotlib as _mpl\n"
        "_mpl.use('Agg')\n"
        "import stpredict as _stp\n"
        "_spent = {}\n"
        "def _timing(name, f):\n"
        "    def g(*a, **k):\n"
        "        t = _time.perf_counter()\n"
        "        try:\n"
        "            return f(*a, **k)\n"
        "        finally:\n"
        "            _spent[name] = _spent.get(name, 0.0) + _time.perf_counter() - t\n"
        "    return g\n"
        "_stp.tl.train = _timing('tl.train', _stp.tl.train)\n"
        "_stp.tl.predict_dense = _timing('tl.predict_dense', _stp.tl.predict_dense)\n"
    )
    return head + code + "\nprint('SPENT ' + _json.dumps(_spent))\n"


def commands(item: str, data_dir: str, work: Path) -> tuple[list[str], str]:
    """``(argv, what is shown as the command)`` for one item."""
    py = sys.executable
    if item == "import":
        return [py, "-c", "import stpredict"], 'python -c "import stpredict"'
    if item == "demo":
        out = work / "demo"
        return ["stpredict", "-q", "demo", "--out", str(out)], "stpredict -q demo --out DIR"
    blocks = _blocks()
    if item == "quick_start":
        code = next(b for b in blocks if "stp.datasets.synthetic(seed=0)" in b)
        return [py, "-c", _timed_python(code)], "README quick start (python block 1)"
    if item == "her2st":
        code = next(b for b in blocks if '"path/to/her2st"' in b)
        code = "import stpredict as stp\n" + code.replace(
            '"path/to/her2st"', repr(str(Path(data_dir).resolve()))
        )
        return [py, "-c", _timed_python(code)], "README HER2ST block (python block 2)"
    if item == "tests":
        return [py, "-m", "pytest", "-n", "auto", "-q", "-p", "no:cacheprovider"], "pytest -n auto"
    if item == "tests_slow":
        return [py, "-m", "pytest", "-n", "auto", "-q", "-p", "no:cacheprovider", "-m", "slow"], (
            "pytest -n auto -m slow"
        )
    raise ValueError(f"unknown item {item!r}; choose from {ITEMS}")


def run_item(item: str, data_dir: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"readme_{item}_") as tmp:
        work = Path(tmp)
        argv, shown = commands(item, data_dir, work)
        env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
        cwd = REPO if item.startswith("tests") else work
        t0 = time.perf_counter()
        p = subprocess.run(
            ["/usr/bin/time", "-f", "TIME %e %M", *argv], cwd=cwd, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    m = re.findall(r"^TIME ([\d.]+) (\d+)$", out, flags=re.M)
    spent = re.findall(r"^SPENT (\{.*\})$", out, flags=re.M)
    tail = out.strip().splitlines()[-3:]
    if p.returncode != 0:
        print("\n".join(out.strip().splitlines()[-30:]), file=sys.stderr)
    row = {
        "item": item,
        "ok": p.returncode == 0,
        "wall_s": float(m[-1][0]) if m else wall,
        "peak_rss_mib": int(m[-1][1]) / 1024 if m else float("nan"),
        "detail": spent[-1] if spent else (" / ".join(t for t in tail if "passed" in t) or ""),
        "command": shown,
    }
    print(f"{item}: {row['wall_s']:.1f} s wall, {row['peak_rss_mib']:.0f} MiB, {row['detail']}", flush=True)
    return row


def machine() -> str:
    import torch

    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def to_markdown(df: pd.DataFrame) -> str:
    lines = [
        "| item | command | commit | runs | wall (s) | peak RSS (MiB) | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for (item, commit), g in df.groupby(["item", "commit"], sort=False):
        walls = " / ".join(f"{w:.0f}" if w >= 10 else f"{w:.1f}" for w in g["wall_s"])
        rss = f"{g['peak_rss_mib'].max():.0f}"
        detail = g["detail"].dropna().astype(str)
        detail = detail.iloc[-1] if len(detail) else ""
        if detail.startswith("{"):
            detail = ", ".join(f"{k} {v:.0f} s" for k, v in json.loads(detail).items())
        ok = "" if g["ok"].all() else " (failed)"
        lines.append(
            f"| {item}{ok} | `{g['command'].iloc[0]}` | {commit} | {len(g)} | {walls} | {rss} | {detail} |"
        )
    machines = "; ".join(sorted(set(df["machine"])))
    return f"Machine: {machines}.\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="import,demo,quick_start,her2st", help=f"comma-separated, of {ITEMS}")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "her2st"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "readme_times.csv"))
    args = ap.parse_args()
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    for i in items:
        if i not in ITEMS:
            ap.error(f"unknown item {i!r}; choose from {', '.join(ITEMS)}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    out = Path(args.out)
    df = pd.read_csv(out) if out.exists() else pd.DataFrame()
    where = machine()
    for item in items:
        done = 0 if df.empty else int(((df["item"] == item) & (df["commit"] == commit) & df["ok"]).sum())
        for _ in range(done, args.repeats):
            row = {**run_item(item, args.data_dir), "commit": commit, "machine": where}
            df = pd.concat([df, pd.DataFrame([row])], ignore_index=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(out, index=False)
            out.with_suffix(".md").write_text(to_markdown(df))
            if not row["ok"]:
                break
    print(to_markdown(df) if not df.empty else "nothing run")
    print(" ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
