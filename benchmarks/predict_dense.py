"""Wall time, throughput and peak memory of ``tl.predict_dense``, and the speed of ``tl.aggregate``.

Slides of about 2k², 8k² and 16k² px at 0.5 µm/px are made by tiling the synthetic H&E (so every
size has the same ~60% tissue), written to zarr, read back lazily and predicted into the same store
with an untrained ``cpu``-preset PixNet (50 genes; the weights do not change the cost). Each size
runs in its own process so that peak RSS is per size.

    python benchmarks/predict_dense.py                 # all sizes + aggregate
    python benchmarks/predict_dense.py --sizes 2048    # one size
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _slide(size_px: int, path: Path) -> None:
    import dask.array as da
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    import stpredict as stp

    base = stp.datasets.synthetic(
        width_um=1024, height_um=1024, n_genes=2, seed=0, bins_um=(16,), st_spots=False, visium_spots=False
    )
    tile = base["synthetic_full_image"]["scale0"].image.data  # (3, 2048, 2048)
    reps = max(1, round(size_px / tile.shape[1]))
    img = da.tile(tile, (1, reps, reps)).rechunk((3, 2048, 2048))
    el = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2, 2, 2, 2])
    s = sd.SpatialData(images={"he": el})
    stp.pp.set_mpp(s, "he", 0.5)
    s.write(path)


def run_one(size_px: int, bins: list[int], workdir: Path) -> dict:
    import spatialdata as sd
    import torch

    import stpredict as stp
    from stpredict.model import PixNet

    stp.settings.verbosity = 1
    torch.manual_seed(0)
    path = workdir / f"slide_{size_px}.zarr"
    t0 = time.perf_counter()
    _slide(size_px, path)
    t_write = time.perf_counter() - t0
    sdata = sd.read_zarr(path)
    full = sdata["he"]["scale0"].image
    model = PixNet([f"G{i:03d}" for i in range(50)], decoder_channels=64, train_mpp=2.0, tile_size=192)
    t0 = time.perf_counter()
    stp.tl.predict_dense(sdata, model, bins_um=bins, progress=False)
    wall = time.perf_counter() - t0
    dense = sdata["pixnet_dense"]["scale0"].image
    mask = stp.tl.tissue_mask(sdata, "he", dense.shape[1:])
    tissue_mm2 = float(mask.sum()) * (2.0 / 1000) ** 2
    return {
        "size_px": int(full.shape[1]),
        "area_mm2": float(full.shape[1] * full.shape[2] * 0.25e-6),
        "tissue_mm2": tissue_mm2,
        "bins": bins,
        "write_s": t_write,
        "wall_s": wall,
        "mm2_per_min": tissue_mm2 / wall * 60,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_aggregate(n_shapes: int) -> dict:
    import dask.array as da
    import geopandas as gpd
    import shapely
    import spatialdata as sd
    from spatialdata.models import Image2DModel, ShapesModel

    import stpredict as stp

    stp.settings.verbosity = 1
    side_bins = int(np.ceil(np.sqrt(n_shapes)))  # 8 µm squares on a 2 µm map: 4 x 4 px each
    hw = side_bins * 4
    img = da.random.default_rng(0).random((50, hw, hw), chunks=(50, 1024, 1024)).astype(np.float32)
    el = Image2DModel.parse(img, dims=("c", "y", "x"))
    rr, cc = np.divmod(np.arange(n_shapes), side_bins)
    gdf = gpd.GeoDataFrame(geometry=shapely.box(cc * 4.0, rr * 4.0, cc * 4.0 + 4, rr * 4.0 + 4))
    s = sd.SpatialData(images={"map": el}, shapes={"bins": ShapesModel.parse(gdf)})
    t0 = time.perf_counter()
    stp.tl.aggregate(s, values="map", by="bins")
    return {
        "n_shapes": n_shapes,
        "map": f"50 x {hw} x {hw}",
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--bins", type=int, nargs="*", default=[8, 16])
    ap.add_argument("--shapes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--agg", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.bins, Path(args.workdir))))
        return
    if args.agg:
        print(json.dumps(run_aggregate(args.agg)))
        return
    import torch

    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, CPU only, torch {torch.__version__}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as wd:
        for size in args.sizes:
            for bins in ([], args.bins):
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    str(size),
                    "--workdir",
                    wd,
                    "--bins",
                    *map(str, bins),
                ]
                out = (
                    subprocess.run(cmd, capture_output=True, text=True, check=True)
                    .stdout.strip()
                    .splitlines()[-1]
                )
                rows.append(json.loads(out))
                subprocess.run(["rm", "-rf", f"{wd}/slide_{size}.zarr"], check=True)
    print(
        "\n| slide (px) | area (mm²) | tissue (mm²) | bins (µm) | predict_dense (s) | tissue mm² / min | peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        bins = ", ".join(map(str, r["bins"])) or "none (map only)"
        print(
            f"| {r['size_px']}² | {r['area_mm2']:.1f} | {r['tissue_mm2']:.1f} | {bins} | {r['wall_s']:.1f} | "
            f"{r['mm2_per_min']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    print("\n| shapes | map | tl.aggregate (s) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for n in args.shapes:
        out = subprocess.run(
            [sys.executable, __file__, "--agg", str(n)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['n_shapes']:.0e} | {r['map']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
