"""``tl.predict_dense`` on the local threaded scheduler and on a ``dask.distributed`` LocalCluster of 1 and 2 workers.

A synthetic slide of about ``--size`` px square at 0.5 µm/px (the synthetic H&E tiled, ~60% tissue, as in
``benchmarks/predict_dense.py``) is written to zarr and predicted, read back lazily, into a fresh copy of the
store per run with an untrained ``cpu``-preset-sized PixNet (50 genes; the weights do not change the cost).
Each cluster has worker processes with one thread each (``processes=True, threads_per_worker=1``; dask's nanny
starts them with one torch thread); the cluster's start is timed apart from ``predict_dense``. Every map is
compared with the local scheduler's.

    python benchmarks/predict_dense_distributed.py                    # 4096² px: local, 1 worker, 2 workers
    python benchmarks/predict_dense_distributed.py --size 1024 --workers 1 2 --out /tmp/d.md   # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results


def _slide(size_px: int, path: Path) -> None:
    import dask.array as da
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    import stpredict as stp

    base = stp.datasets.synthetic(
        width_um=512, height_um=512, n_genes=2, seed=0, bins_um=(16,), st_spots=False, visium_spots=False
    )
    tile = base["synthetic_full_image"]["scale0"].image.data  # (3, 1024, 1024)
    reps = max(1, round(size_px / tile.shape[1]))
    img = da.tile(tile, (1, reps, reps)).rechunk((3, 2048, 2048))
    el = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2, 2, 2])
    s = sd.SpatialData(images={"he": el})
    stp.pp.set_mpp(s, "he", 0.5)
    s.write(path)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size", type=int, default=4096, help="slide side in px at 0.5 µm/px (a multiple of 1024)"
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="LocalCluster sizes to time")
    ap.add_argument("--bins", type=int, nargs="*", default=[8, 16], help="bin sizes in µm")
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--out", default="benchmarks/results/predict_dense_distributed.md")
    args = ap.parse_args()

    import dask
    import spatialdata as sd
    import torch
    from distributed import Client, LocalCluster

    import stpredict as stp
    from stpredict.model import PixNet

    stp.settings.verbosity = 1
    warnings.filterwarnings("ignore", message="Sending large graph")
    threads = torch.get_num_threads()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {threads} torch threads in the client, CPU only, "
        f"torch {torch.__version__}, dask {dask.__version__}, commit {_commit()}"
    )
    torch.manual_seed(0)
    model = PixNet([f"G{i:03d}" for i in range(50)], decoder_channels=64, train_mpp=2.0, tile_size=192)
    kw = {"bins_um": args.bins, "chunk_size": args.chunk_size, "progress": False}
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as wd:
        src = Path(wd) / "slide.zarr"
        _slide(args.size, src)
        size = sd.read_zarr(src)["he"]["scale0"].image.shape[1]

        def run(label: str, workers: int | None, start_s: float | None) -> np.ndarray:
            path = Path(wd) / f"{label.replace(' ', '_')}.zarr"
            shutil.copytree(src, path)
            sdata = sd.read_zarr(path)
            t0 = time.perf_counter()
            if workers is None:
                with dask.config.set(scheduler="threads"):
                    stp.tl.predict_dense(sdata, model, **kw)
            else:
                stp.tl.predict_dense(sdata, model, **kw)
            wall = time.perf_counter() - t0
            dense = sd.read_zarr(path)["pixnet_dense"]["scale0"].image.values
            nonlocal ref
            if ref is None:
                ref = dense
            rows.append(
                {
                    "scheduler": label,
                    "workers": workers or 0,
                    "threads_per_worker": 1 if workers else threads,
                    "cluster_start_s": start_s,
                    "predict_dense_s": wall,
                    "map_equal": bool(np.array_equal(dense, ref)),
                    "max_abs_diff": float(np.abs(dense - ref).max()),
                }
            )
            shutil.rmtree(path)
            return dense

        run("local threads", None, None)
        for n in args.workers:
            # dask's defaults: a nanny starts each worker with OMP_NUM_THREADS=1, so torch runs one thread per
            # worker thread; float32 sums then run in another order than in the client's torch (max abs diff)
            t0 = time.perf_counter()
            with (
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
                Client(cl),
            ):
                start = time.perf_counter() - t0
                run(f"LocalCluster {n}", n, start)

    df = pd.DataFrame(rows)
    md = (
        f"\n`predict_dense` of a {size}² px slide (0.5 µm/px, map at 2 µm, bins {args.bins} µm, blocks of "
        f"{args.chunk_size} px), PixNet 50 genes, untrained.\n\n"
        "| scheduler | workers × threads | cluster start (s) | predict_dense (s) | map equal to local | max abs diff |\n"
        "|---|---|---|---|---|---|\n"
    )
    for r in rows:
        start = "" if r["cluster_start_s"] is None else f"{r['cluster_start_s']:.1f}"
        wt = (
            f"{r['workers']} × {r['threads_per_worker']}"
            if r["workers"]
            else f"{r['threads_per_worker']} threads"
        )
        md += (
            f"| {r['scheduler']} | {wt} | {start} | {r['predict_dense_s']:.1f} | {r['map_equal']} | "
            f"{r['max_abs_diff']:.1e} |\n"
        )
    write_results(df, md, args.out)


if __name__ == "__main__":
    main()
