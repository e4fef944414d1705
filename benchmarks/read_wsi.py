"""H&E-only slide files: reader throughput (tifffile, OpenSlide, tiffslide) and ``read_wsi`` + ``predict_dense``.

A pyramidal OME-TIFF of about 20 000² px at 0.5 µm/px is made by tiling the synthetic H&E (~60% tissue, as in
``predict_dense.py``), written tile by tile like a scanner's file (256 px tiles, JPEG when imagecodecs is
installed, else zlib; SubIFD levels down to 512 px). Then:

1. reader throughput: random 512 px windows of the full-resolution level and the whole 1/4 level, read with
   tifffile through ``read_wsi``'s zarr store (what stpredict uses), with OpenSlide and with tiffslide;
2. in a fresh process, what a user runs: ``stpredict predict slide.ome.tif --model m --out slide.zarr --bins 8 16
   --no-image`` (``io.read_wsi`` + ``tl.predict_dense`` of the map and 8/16 µm bins into a new store), with an
   untrained ``cpu``-preset PixNet (50 genes): wall time, tissue mm²/min and peak RSS.

    python benchmarks/read_wsi.py                  # 20480² px
    python benchmarks/read_wsi.py --size 4096      # a quick run
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


def make_slide(size_px: int, path: Path) -> dict:
    import dask.array as da

    import stpredict as stp

    base = stp.datasets.synthetic(
        width_um=1024, height_um=1024, n_genes=2, seed=0, bins_um=(16,), st_spots=False, visium_spots=False
    )
    tile = base["synthetic_full_image"]["scale0"].image.transpose("y", "x", "c").data  # (2048, 2048, 3)
    reps = max(1, round(size_px / tile.shape[0]))
    img = da.tile(tile, (reps, reps, 1)).rechunk((2048, 2048, 3))
    try:
        import imagecodecs  # noqa: F401

        compression = "jpeg"
    except ImportError:
        compression = "zlib"
    t0 = time.perf_counter()
    stp.datasets.write_slide(img, path, mpp=0.5, compression=compression, overwrite=True)
    return {
        "size_px": int(img.shape[0]),
        "compression": compression,
        "write_s": time.perf_counter() - t0,
        "file_mib": path.stat().st_size / 2**20,
    }


def reader_throughput(path: Path, n_windows: int = 64) -> list[dict]:
    """MB/s of decoded RGB for random 512² windows at level 0 and for the whole 1/4 level, per reader."""
    import stpredict as stp

    info = stp.io.slide_info(path)
    h, w = info.shape
    rng = np.random.default_rng(0)
    xy = rng.integers(0, [w - 512, h - 512], size=(n_windows, 2))
    rows = []

    def timed(name: str, window, level2) -> None:
        t0 = time.perf_counter()
        n = sum(window(int(x), int(y)).size for x, y in xy)
        t_win = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = level2().size
        t_lvl = time.perf_counter() - t0
        rows.append({"reader": name, "windows_mb_s": n / t_win / 1e6, "level2_mb_s": m / t_lvl / 1e6})

    for chunks in (256, 512, 1024):  # what read_wsi builds: dask over one tifffile zarr store per level
        sdata = stp.io.read_wsi(path, chunks=chunks)
        el = sdata.images[next(iter(sdata.images))]
        full, quarter = el["scale0"].image.data, el["scale2"].image.data
        timed(
            f"tifffile, read_wsi(chunks={chunks})" + (" (default)" if chunks == 1024 else ""),
            lambda x, y, full=full: np.asarray(full[:, y : y + 512, x : x + 512]),
            lambda quarter=quarter: np.asarray(quarter),
        )
    arrays = info.arrays  # the zarr stores without read_wsi's rechunking
    timed(
        "tifffile, dask over the zarr store at tile chunks",
        lambda x, y: np.asarray(arrays[0][:, y : y + 512, x : x + 512]),
        lambda: np.asarray(arrays[2]),
    )
    try:
        import openslide

        slide = openslide.OpenSlide(str(path))
        lw, lh = w // 4, h // 4
        timed(
            "openslide",
            lambda x, y: np.asarray(slide.read_region((x, y), 0, (512, 512)))[..., :3],
            lambda: (
                np.asarray(slide.read_region((0, 0), 0, (w, h)).reduce(4))[..., :3][:lh, :lw]
                if slide.level_count == 1
                else np.asarray(slide.read_region((0, 0), 2, slide.level_dimensions[2]))[..., :3]
            ),
        )
        rows[-1]["note"] = f"{slide.level_count} level(s) visible to OpenSlide"
    except ImportError:
        pass
    try:
        import tiffslide

        ts = tiffslide.TiffSlide(str(path))
        timed(
            "tiffslide",
            lambda x, y: ts.read_region((x, y), 0, (512, 512), as_array=True),
            lambda: ts.read_region(
                (0, 0),
                min(2, ts.level_count - 1),
                ts.level_dimensions[min(2, ts.level_count - 1)],
                as_array=True,
            ),
        )
        rows[-1]["note"] = f"{ts.level_count} level(s) visible to tiffslide"
    except ImportError:
        pass
    return rows


def _n_obs(table: Path) -> int:
    """Rows of a stored table, from its obs index's shape (not reading the table)."""
    import zarr

    obs = zarr.open_group(str(table / "obs"), mode="r")
    return int(next(a.shape[0] for _, a in obs.arrays()))  # any column (the index may be a group of arrays)


def run_predict(path: Path, model_dir: Path, out: Path, bins: list[str] | None = None) -> dict:
    import spatialdata as sd

    import stpredict as stp
    from stpredict._cli import main as cli

    t0 = time.perf_counter()
    rc = cli(
        [
            "-q",
            "predict",
            str(path),
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--bins",
            *(bins if bins is not None else ["8", "16"]),
            "--no-image",
            "--overwrite",
        ]
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading the result back
    if rc:
        raise SystemExit(f"stpredict predict failed with {rc}")
    # not the tables: a 40k² px slide has tens of millions of 2 µm bins
    back = sd.read_zarr(out, selection=("images",))
    dense = back["pixnet_dense"]["scale0"].image
    slide = stp.io.read_wsi(path)
    mask = stp.tl.tissue_mask(slide, next(iter(slide.images)), dense.shape[1:])
    tissue_mm2 = float(mask.sum()) * (2.0 / 1000) ** 2
    return {
        "wall_s": wall,
        "tissue_mm2": tissue_mm2,
        "mm2_per_min": tissue_mm2 / wall * 60,
        "peak_rss_mib": peak,
        "tables": {t.name: _n_obs(t) for t in sorted((out / "tables").iterdir()) if t.is_dir()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20480, help="slide side in pixels (0.5 µm/px)")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse the slide of an earlier run in --workdir")
    ap.add_argument("--skip-readers", action="store_true", help="only the read_wsi + predict_dense run")
    ap.add_argument(
        "--bins",
        nargs="*",
        default=["8", "16"],
        help="bin sizes in µm (`stpredict predict`'s default: 2 8 16)",
    )
    ap.add_argument("--predict", nargs=3, help=argparse.SUPPRESS)  # slide, model, out: the child process
    args = ap.parse_args()
    if args.predict:
        print(json.dumps(run_predict(*map(Path, args.predict), bins=args.bins)))
        return
    import torch

    import stpredict as stp
    from stpredict.model import PixNet

    stp.settings.verbosity = 1
    print(
        f"machine: {platform.machine()} {platform.processor()}, {torch.get_num_threads()} torch threads, CPU only"
    )
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        slide = wd / "slide.ome.tif"
        if args.reuse and slide.is_file():
            info = stp.io.slide_info(slide)
            made = {"size_px": info.shape[0], "compression": "reused", "write_s": 0.0}
            made["file_mib"] = slide.stat().st_size / 2**20
        else:
            made = make_slide(args.size, slide)
        print(
            f"slide {made['size_px']}² px ({made['size_px'] * 0.5e-3:.1f} mm square), {made['compression']}, "
            f"{made['file_mib']:.0f} MiB, written in {made['write_s']:.0f} s"
        )
        print("\n| reader | random 512² windows, level 0 (MB/s) | whole 1/4 level (MB/s) | note |")
        print("|---|---|---|---|")
        for r in [] if args.skip_readers else reader_throughput(slide):
            print(
                f"| {r['reader']} | {r['windows_mb_s']:.0f} | {r['level2_mb_s']:.0f} | {r.get('note', '')} |"
            )
        torch.manual_seed(0)
        model = PixNet([f"G{i:03d}" for i in range(50)], decoder_channels=64, train_mpp=2.0, tile_size=192)
        model.save(wd / "model", overwrite=True)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--predict",
                str(slide),
                str(wd / "model"),
                str(wd / "slide.zarr"),
                "--bins",
                *args.bins,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:  # show why: the child's own error (e.g. a full disk), not only its exit status
            raise SystemExit(f"the prediction process failed ({out.returncode}):\n{out.stderr[-4000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            "\n| slide (px) | tissue (mm²) | bins (µm) | read_wsi + predict_dense (s) | tissue mm² / min | peak RSS (MiB) |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {made['size_px']}² | {r['tissue_mm2']:.1f} | {', '.join(args.bins)} | {r['wall_s']:.1f} | {r['mm2_per_min']:.2f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
        print(f"tables: {r['tables']}")


if __name__ == "__main__":
    main()
