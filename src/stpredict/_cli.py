"""The ``stpredict`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData


def summary(sdata: SpatialData) -> str:
    """A short human-readable summary: images with pixel sizes, tables with sizes and counts."""
    import numpy as np

    from ._utils import full_resolution
    from .pp import get_mpp

    lines = []
    for key, el in sdata.images.items():
        arr = full_resolution(el)
        dims = dict(zip(arr.dims, arr.shape, strict=True))
        try:
            mpp = f"{get_mpp(sdata, key):.4f} µm/px"
            extent = f", {dims['x'] * get_mpp(sdata, key) / 1000:.2f} x {dims['y'] * get_mpp(sdata, key) / 1000:.2f} mm"
        except ValueError:
            mpp, extent = "pixel size unknown", ""
        lines.append(
            f"image  {key}: {dims['c']} x {dims['y']} x {dims['x']} (c, y, x) {arr.dtype}, {mpp}{extent}"
        )
    for key, gdf in sdata.shapes.items():
        lines.append(f"shapes {key}: {len(gdf)} footprints")
    for key, t in sdata.tables.items():
        total = t.X.sum() if t.n_obs else 0
        region = t.uns.get("spatialdata_attrs", {}).get("region", "-")
        lines.append(
            f"table  {key}: {t.n_obs} obs x {t.n_vars} genes, {int(np.asarray(total))} counts, linked to {region}"
        )
    return "\n".join(lines)


def _write(sdata: SpatialData, out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it.")
    sdata.write(out, overwrite=overwrite)


def _demo(args: argparse.Namespace) -> int:
    from . import datasets

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sdata = datasets.synthetic(seed=args.seed, width_um=args.width_um, height_um=args.height_um)
    zarr_path = out / "synthetic.zarr"
    _write(sdata, zarr_path, args.overwrite)
    print(summary(sdata))
    print(f"\nwrote {zarr_path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import spatialdata as sd

    print(summary(sd.read_zarr(args.path)))
    return 0


def _read_st(args: argparse.Namespace) -> int:
    from . import datasets, io

    if args.section:
        sdata = datasets.her2st(
            args.section, data_dir=args.data_dir, downsample=args.downsample, mpp=args.mpp
        )
    elif args.counts and args.spots and args.image:
        sdata = io.read_st(
            args.counts,
            args.spots,
            args.image,
            dataset_id=args.dataset_id,
            downsample=args.downsample,
            mpp=args.mpp,
        )
    else:
        raise SystemExit(
            "error: give either --section (with --data-dir) or all of --counts, --spots, --image."
        )
    print(summary(sdata))
    if args.out:
        _write(sdata, Path(args.out), args.overwrite)
        print(f"\nwrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stpredict`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="stpredict", description="Dense spatial gene expression from H&E.")
    parser.add_argument("--version", action="version", version=f"stpredict {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the synthetic slide, write it as zarr and print a summary")
    p.add_argument("--out", default="stpredict_demo", help="output folder (default: ./stpredict_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width-um", type=float, default=1200.0)
    p.add_argument("--height-um", type=float, default=1008.0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser("info", help="summarise a SpatialData zarr store (images with pixel sizes, tables)")
    p.add_argument("path")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "read-st", help="read a legacy ST / HER2ST section, print a summary, optionally write zarr"
    )
    p.add_argument("--section", help="HER2ST section name, e.g. C2 (files looked up in --data-dir)")
    p.add_argument("--data-dir", help="folder with the HER2ST files (default: $STPREDICT_HER2ST_DIR)")
    p.add_argument("--counts")
    p.add_argument("--spots")
    p.add_argument("--image")
    p.add_argument("--dataset-id", default="st")
    p.add_argument("--mpp", type=float, help="microns per pixel (default: inferred from the spot grid)")
    p.add_argument("--downsample", type=int, default=1)
    p.add_argument("--out", help="write the SpatialData to this zarr path")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_read_st)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stpredict`` command."""
    args = build_parser().parse_args(argv)
    from ._settings import settings

    if args.quiet:
        settings.verbosity = 1
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
