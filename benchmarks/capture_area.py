"""A whole Visium HD capture area of 2 µm bins: build time, peak RSS and on-disk size, and reading it back.

A 6.5 × 6.5 mm capture area at 0.5 µm/px (13 000² px, the synthetic H&E tiled as in ``predict_dense.py``) is written
to zarr and predicted into the same store with ``tl.predict_dense(bins_um=(2, 8, 16), tissue=False)`` and an
untrained ``cpu``-preset PixNet (50 genes), so every one of the 3250² = 10 562 500 2 µm bins gets a row, as a
Visium HD capture area has. With ``bins_as="auto"`` the 2 µm table annotates a bin-id raster (Labels), not 10.6
million polygons, and its ``X`` stays on disk. Each step runs in its own process so that peak RSS is per step:

1. ``predict``: the map and the 2/8/16 µm tables, written into the store;
2. ``read``: ``spatialdata.read_zarr`` of the labels and tables (spatialdata loads a table's ``X`` into memory);
3. ``lazy``: the 2 µm table through ``stpredict.io.read_table`` (``X`` stays on disk) and one gene's
   mean over all bins computed from it;
4. ``scanpy``: the 16 and 8 µm tables (``io.read_table``), PCA, neighbours and Leiden on each.

    python benchmarks/capture_area.py                      # 6.5 mm, 50 genes
    python benchmarks/capture_area.py --mm 1 --genes 10    # a quick run
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


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def make_store(mm: float, path: Path) -> None:
    import dask.array as da
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    import stpredict as stp

    base = stp.datasets.synthetic(
        width_um=1024, height_um=1024, n_genes=2, seed=0, bins_um=(16,), st_spots=False, visium_spots=False
    )
    tile = base["synthetic_full_image"]["scale0"].image.data  # (3, 2048, 2048) at 0.5 µm/px
    side = round(mm * 2000)
    reps = -(-side // tile.shape[1])
    img = da.tile(tile, (1, reps, reps))[:, :side, :side].rechunk((3, 2048, 2048))
    el = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2, 2, 2, 2])
    s = sd.SpatialData(images={"he": el})
    stp.pp.set_mpp(s, "he", 0.5)
    s.write(path)


def step_predict(path: Path, n_genes: int, bins_as: str) -> dict:
    import spatialdata as sd
    import torch

    import stpredict as stp
    from stpredict.model import PixNet

    stp.settings.verbosity = 1
    torch.manual_seed(0)
    sdata = sd.read_zarr(path)
    model = PixNet([f"G{i:03d}" for i in range(n_genes)], decoder_channels=64, train_mpp=2.0, tile_size=192)
    t0 = time.perf_counter()
    stp.tl.predict_dense(sdata, model, bins_um=(2, 8, 16), tissue=False, bins_as=bins_as, progress=False)
    wall = time.perf_counter() - t0
    t2 = sdata.tables["pixnet_square_002um"]
    return {
        "wall_s": wall,
        "peak_rss_mib": _rss_mib(),
        "n_bins_2um": int(t2.n_obs),
        "region_2um": t2.uns["spatialdata_attrs"]["region"],
        "x_lazy": type(t2.X).__module__.startswith("dask"),
        "disk_table_2um_mib": _du_mib(path / "tables" / "pixnet_square_002um"),
        "disk_region_2um_mib": _du_mib(
            path
            / ("labels" if "labels" in str(t2.uns["spatialdata_attrs"]["region"]) else "shapes")
            / t2.uns["spatialdata_attrs"]["region"]
        ),
        "disk_map_mib": _du_mib(path / "images" / "pixnet_dense"),
    }


def step_read(path: Path) -> dict:
    import spatialdata as sd

    t0 = time.perf_counter()
    back = sd.read_zarr(path, selection=("labels", "shapes", "tables"))
    t2 = back.tables["pixnet_square_002um"]
    region = back[t2.uns["spatialdata_attrs"]["region"]]
    return {
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": _rss_mib(),
        "n_bins": int(t2.n_obs),
        "region": len(region),
    }


def step_lazy(path: Path) -> dict:
    import numpy as np

    import stpredict as stp

    t0 = time.perf_counter()
    t2 = stp.io.read_table(path, "pixnet_square_002um")
    t_open = time.perf_counter() - t0
    mean0 = float(np.asarray(t2.X[:, 0].mean().compute()))
    return {
        "open_s": t_open,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": _rss_mib(),
        "n_bins": int(t2.n_obs),
        "gene0_mean": mean0,
    }


def step_scanpy(path: Path) -> dict:
    import scanpy as sc

    import stpredict as stp

    t0 = time.perf_counter()
    out = {}
    for b in (16, 8):
        t = stp.io.read_table(path, f"pixnet_square_{b:03d}um", lazy=False)
        sc.pp.pca(t, n_comps=min(20, t.n_vars - 1))
        sc.pp.neighbors(t)
        sc.tl.leiden(t, flavor="igraph", n_iterations=2)
        out[f"clusters_{b}um"] = int(t.obs["leiden"].nunique())
        out[f"n_bins_{b}um"] = int(t.n_obs)
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mib": _rss_mib(), **out}


def _child(step: str, path: Path, n_genes: int, bins_as: str) -> dict:
    cmd = [sys.executable, __file__, "--step", step, str(path), "--genes", str(n_genes), "--bins-as", bins_as]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"step {step} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mm", type=float, default=6.5, help="side of the capture area in mm (default 6.5)")
    ap.add_argument("--genes", type=int, default=50)
    ap.add_argument(
        "--bins-as", default="auto", choices=["auto", "shapes", "labels"], help="tl.predict_dense's bins_as"
    )
    ap.add_argument("--workdir", help="keep the store here (default: a temporary folder)")
    ap.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        step, path = args.step[0], Path(args.step[1])
        fn = {
            "predict": lambda: step_predict(path, args.genes, args.bins_as),
            "read": lambda: step_read(path),
        }
        fn["lazy"] = lambda: step_lazy(path)
        fn["scanpy"] = lambda: step_scanpy(path)
        print(json.dumps(fn[step]()))
        return
    import torch

    print(
        f"machine: {platform.machine()} {platform.processor()}, {torch.get_num_threads()} torch threads, CPU only, "
        f"torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        path = wd / "capture_area.zarr"
        subprocess.run(["rm", "-rf", str(path)], check=True)
        t0 = time.perf_counter()
        make_store(args.mm, path)
        print(f"capture area {args.mm:g} x {args.mm:g} mm written in {time.perf_counter() - t0:.0f} s")
        p, r, lz, sp = (
            _child(step, path, args.genes, args.bins_as) for step in ("predict", "read", "lazy", "scanpy")
        )
    print(
        f"\n2 µm bins: {p['n_bins_2um']:,} ({args.genes} genes), table annotates {p['region_2um']!r}, "
        f"X lazy: {p['x_lazy']}"
    )
    print("\n| step | wall (s) | peak RSS (MiB) | on disk (MiB) |")
    print("|---|---|---|---|")
    print(
        f"| predict_dense: map + 2/8/16 µm bins | {p['wall_s']:.0f} | {p['peak_rss_mib']:.0f} | map "
        f"{p['disk_map_mib']:.0f}; 2 µm table {p['disk_table_2um_mib']:.0f}; its {p['region_2um']} "
        f"{p['disk_region_2um_mib']:.0f} |"
    )
    print(
        f"| sd.read_zarr labels, shapes and tables (X in memory) | {r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} | |"
    )
    print(
        f"| stp.io.read_table of the 2 µm table (X on disk) + one gene's mean | {lz['wall_s']:.0f} | "
        f"{lz['peak_rss_mib']:.0f} | |"
    )
    print(
        f"| scanpy PCA, neighbours and Leiden on the 16 µm ({sp['n_bins_16um']:,}; {sp['clusters_16um']} clusters) "
        f"and 8 µm ({sp['n_bins_8um']:,}; {sp['clusters_8um']} clusters) tables | {sp['wall_s']:.0f} | "
        f"{sp['peak_rss_mib']:.0f} | |"
    )


if __name__ == "__main__":
    main()
