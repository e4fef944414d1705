"""One HER2ST section as a slide file, predicted as a new user would: wall time, peak RSS and the store's size.

The C5 section's H&E (full resolution, 0.69 µm/px, about 9.3k × 9.9k px) is written as a pyramidal OME-TIFF by
``datasets.write_slide``; a default-preset PixNet with 250 genes (``PixNet.from_preset("auto")``, random weights: the
weights do not change the cost) is saved as a checkpoint; then, in a fresh process under ``/usr/bin/time``::

    stpredict predict C5.ome.tif --model model --out C5.zarr [extra options]

with the defaults (map at 2 µm, 2/8/16 µm bins). Reported: wall seconds, peak RSS, the store's size on disk and the
size of each element in it. Rows append to ``--out`` (CSV and markdown beside it), one per run, with the command,
commit and machine; the slide file and the model are made once and reused from ``--workdir``.

    python benchmarks/her2st_slide.py --data-dir ../shared/data/her2st --workdir /tmp/bench/her2st_slide
    python benchmarks/her2st_slide.py --data-dir ../shared/data/her2st --extra "--dtype float16"
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _results import commit

_commit = commit


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def prepare(data_dir: str, work: Path, section: str, genes: int) -> tuple[Path, Path]:
    """The slide file and the model checkpoint (made once, reused)."""
    slide, model_dir = work / f"{section}.ome.tif", work / f"model_{genes}"
    if not slide.exists():
        import stpredict as stp

        sdata = stp.datasets.her2st(section, data_dir=data_dir)
        stp.datasets.write_slide(sdata, slide, overwrite=True)
    if not model_dir.exists():
        import torch

        from stpredict.model import PixNet

        torch.manual_seed(0)
        model, _ = PixNet.from_preset("auto", [f"G{i:03d}" for i in range(genes)], pretrained=False)
        model.save(model_dir)
    return slide, model_dir


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), CPU only"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="../shared/data/her2st")
    ap.add_argument("--section", default="C5")
    ap.add_argument("--genes", type=int, default=250)
    ap.add_argument("--extra", default="", help="extra options for `stpredict predict`, as one string")
    ap.add_argument("--workdir", default="/tmp/bench/her2st_slide")
    ap.add_argument("--out", default="benchmarks/results/her2st_slide.md")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    slide, model_dir = prepare(args.data_dir, work, args.section, args.genes)
    store = work / f"{args.section}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    exe = Path(sys.executable).with_name("stpredict")
    argv = [str(exe), "-q", "predict", str(slide), "--model", str(model_dir), "--out", str(store)]
    argv += shlex.split(args.extra)
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M %U %S", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"stpredict predict failed:\n{res.stdout}\n{res.stderr}")
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("TIME ")][-1].split()
    sizes = {
        f"{kind}/{p.name}": _du_mib(p)
        for kind in ("images", "labels", "shapes", "tables")
        for p in sorted((store / kind).glob("*"))
        if p.is_dir()
    }
    row = {
        "section": args.section,
        "genes": args.genes,
        "extra": args.extra,
        "wall_s": float(line[1]),
        "cpu_s": float(line[3]) + float(line[4]),
        "peak_rss_gib": int(line[2]) / 2**20,
        "store_mib": _du_mib(store),
        "elements_mib": "; ".join(f"{k} {v:.0f}" for k, v in sizes.items()),
        "command": " ".join(["stpredict", *argv[1:]]).replace(str(work) + "/", ""),
        "commit": _commit(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{wall:.0f} s; {row}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv = out.with_suffix(".csv")
    df = (
        pd.concat([pd.read_csv(csv, keep_default_na=False), pd.DataFrame([row])])
        if csv.exists()
        else pd.DataFrame([row])
    )
    df.to_csv(csv, index=False)
    md = (
        "One HER2ST section as a slide file, `stpredict predict` with 250 genes (`benchmarks/her2st_slide.py`).\n\n"
        "| commit | options | wall (s) | CPU (s) | peak RSS (GiB) | store (MiB) | elements (MiB) |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r.commit} | {r.extra or 'defaults'} | {r.wall_s:.0f} | {r.cpu_s:.0f} | {r.peak_rss_gib:.2f} | "
            f"{r.store_mib:.0f} | {r.elements_mib} |"
            for r in df.itertuples()
        )
        + f"\n\nMachine: {df['machine'].iloc[-1]}. Command: `python benchmarks/her2st_slide.py {' '.join(sys.argv[1:])}`.\n"
    )
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
