"""The ``stpredict`` command line.

The command handlers import SpatialData (and torch, for ``train``/``predict``/``demo``) when they run,
so ``stpredict --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from ._settings import settings
from ._types import ModelName, PresetName
from ._version import __version__

if TYPE_CHECKING:
    from spatialdata import SpatialData


class UsageError(Exception):
    """A wrong combination of command-line arguments (exit status 2, like argparse's own errors)."""


def _read_zarr(path: str | Path) -> SpatialData:
    """A SpatialData zarr store, with one-line errors for what is not one."""
    import spatialdata as sd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no SpatialData zarr store at {str(p)!r}: the path does not exist.")
    if not p.is_dir() or not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()):
        raise ValueError(
            f"{str(p)!r} is not a SpatialData zarr store (a folder with zarr.json); write one with "
            "`stpredict read-st ... --out x.zarr` or `sdata.write('x.zarr')`."
        )
    return sd.read_zarr(p)


def summary(sdata: SpatialData) -> str:
    """A short human-readable summary: images with pixel sizes, tables with sizes and counts."""
    import numpy as np

    from ._core import full_resolution, get_mpp

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
        raise UsageError(f"{out} exists; pass --overwrite to replace it.")
    sdata.write(out, overwrite=overwrite)


def _overlay_png(sdata: SpatialData, image_key: str, gene: str, path: Path) -> None:
    """One gene's dense map over the H&E (``pl.expression_map``) saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .pl import expression_map

    fig = expression_map(sdata, gene, image_key=image_key, return_fig=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    import spatialdata as sd

    from . import datasets, tl
    from ._core import normalize_counts
    from .model import PixNet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zarr_path = out / "synthetic.zarr"
    if zarr_path.exists() and not args.overwrite:
        raise UsageError(f"{zarr_path} exists; pass --overwrite to replace it.")
    print("1/4 generating the synthetic slide (H&E + known dense expression) ...", flush=True)
    sdata = datasets.synthetic(seed=args.seed, width_um=args.width_um, height_um=args.height_um)
    sdata.write(zarr_path, overwrite=True)
    sdata = sd.read_zarr(zarr_path)
    print(summary(sdata))
    print(
        f"\n2/4 training PixNet on the legacy ST + Visium spots only ({args.epochs} epochs) ...", flush=True
    )
    model = PixNet(decoder_channels=32, train_mpp=2.0, tile_size=192)
    model.train(
        sdata,
        tables=["st_spots", "visium_spots"],
        n_top_genes=args.genes,
        max_epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=4,
        seed=args.seed,
        progress=not args.quiet,
    )
    model_dir = model.save(out / "pixnet_model", overwrite=True)
    print("3/4 predicting the dense map and 2/8/16 µm bins ...", flush=True)
    names = tl.predict_dense(sdata, model, progress=not args.quiet)
    # honest numbers: compare predicted 8 µm bins with the true expression of the same bins
    pred, truth_t = sdata.tables["pixnet_square_008um"], sdata.tables["square_008um"]
    key = lambda t: list(zip(t.obs["array_row"], t.obs["array_col"], strict=True))  # noqa: E731
    index = {rc: i for i, rc in enumerate(key(truth_t))}
    rows = [(i, index[rc]) for i, rc in enumerate(key(pred)) if rc in index]
    p = np.asarray(pred.X)[[r[0] for r in rows]]
    t = normalize_counts(truth_t, model.recipe, layer="expected")[[r[1] for r in rows]]
    pcc = np.array([np.corrcoef(p[:, g], t[:, g])[0, 1] for g in range(p.shape[1])])
    markers = truth_t.var["marker_of"]
    gene = next((g for g in model.genes if markers.get(g, "none") != "none"), model.genes[0])
    png = out / f"pixnet_{gene}.png"
    print("4/4 drawing one gene's map over the H&E ...", flush=True)
    _overlay_png(sdata, "synthetic_full_image", gene, png)
    print(
        f"\nper-gene PCC of predicted vs true 8 µm bins (trained on spots only): median {np.nanmedian(pcc):.3f}, "
        f"mean {np.nanmean(pcc):.3f} over {len(pcc)} genes"
    )
    print(f"added to the zarr: {', '.join(names)}")
    print(f"zarr:  {zarr_path}\nmodel: {model_dir}\nplot:  {png}")
    return 0


def _train(args: argparse.Namespace) -> int:

    from . import tl

    sdatas = [_read_zarr(p) for p in args.zarr]
    kwargs = {
        k: v for k, v in (("max_epochs", args.epochs), ("steps_per_epoch", args.steps)) if v is not None
    }
    if args.method is not None:
        warnings.warn("`--method` is deprecated; use `--model`.", FutureWarning, stacklevel=1)
        args.model = args.method
    if args.model == "linear_probe" and kwargs:
        raise UsageError("--epochs/--steps do not apply to the linear probe (one ridge fit).")
    model = tl.train(
        sdatas,
        tables=args.tables,
        image_key=args.image_key,
        n_top_genes=args.n_top_genes,
        preset=args.preset,
        validation=args.validation,
        model=args.model,
        **kwargs,
    )
    path = model.save(args.out, overwrite=args.overwrite)
    print(f"trained {model!r}\nsaved to {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:

    from . import tl
    from .model import load

    if args.key is not None:
        warnings.warn("`--key` is deprecated; use `--key-added`.", FutureWarning, stacklevel=1)
        args.key_added = args.key_added or args.key
    sdata = _read_zarr(args.zarr)
    model = load(args.model)
    if not model.dense:
        if not args.shapes:
            raise UsageError(
                f"a {type(model).__name__} predicts per footprint: name the footprints with --shapes."
            )
        names = tl.predict_shapes(
            sdata,
            model,
            shapes=args.shapes,
            image_key=args.image_key,
            key_added=args.key_added,
            overwrite=args.overwrite,
        )
        print(f"wrote to {args.zarr}: {', '.join(names)}")
        return 0
    names = tl.predict_dense(
        sdata,
        model,
        image_key=args.image_key,
        key_added=args.key_added,
        out_mpp=args.out_mpp,
        bins_um=args.bins,
        shapes=args.shapes,
        overwrite=args.overwrite,
    )
    print(f"wrote to {args.zarr}: {', '.join(names)}")
    return 0


def _info(args: argparse.Namespace) -> int:

    print(summary(_read_zarr(args.path)))
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
        raise UsageError("give either --section (with --data-dir) or all of --counts, --spots, --image.")
    print(summary(sdata))
    if args.out:
        _write(sdata, Path(args.out), args.overwrite)
        print(f"\nwrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stpredict`` command."""
    parser = argparse.ArgumentParser(prog="stpredict", description="Dense spatial gene expression from H&E.")
    parser.add_argument("--version", action="version", version=f"stpredict {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="synthetic slide -> train briefly -> predict densely -> zarr + PNG (a few minutes on a CPU)",
    )
    p.add_argument("--out", default="stpredict_demo", help="output folder (default: ./stpredict_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width-um", type=float, default=1200.0)
    p.add_argument("--height-um", type=float, default=1008.0)
    p.add_argument("--genes", type=int, default=50, help="genes to predict")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=25, help="steps per epoch")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "train", help="train PixNet (or a baseline) on SpatialData zarr stores and save the model"
    )
    p.add_argument("zarr", nargs="+", help="one zarr store per section")
    p.add_argument(
        "--tables", nargs="+", required=True, help="supervision tables, e.g. spots or square_008um"
    )
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--image-key")
    p.add_argument("--preset", default="auto", choices=get_args(PresetName))
    p.add_argument(
        "--model",
        default="pixnet",
        choices=get_args(ModelName),
        help="which model to train: PixNet (default) or a baseline (as tl.train's model=)",
    )
    p.add_argument("--method", choices=get_args(ModelName), help=argparse.SUPPRESS)  # deprecated: --model
    p.add_argument("--n-top-genes", type=int, default=250)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="steps per epoch")
    p.add_argument(
        "--validation", type=int, nargs="*", help="indices of sections held out for early stopping"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="predict dense maps and bins into a SpatialData zarr store (in place)")
    p.add_argument("zarr")
    p.add_argument("--model", required=True, help="model folder written by `stpredict train`")
    p.add_argument("--image-key")
    p.add_argument(
        "--key-added",
        help="stem of the names of the written elements (default: the model's key, e.g. pixnet)",
    )
    p.add_argument("--key", help=argparse.SUPPRESS)  # deprecated spelling of --key-added
    p.add_argument("--out-mpp", type=float, default=2.0)
    p.add_argument("--bins", type=int, nargs="*", default=[2, 8, 16])
    p.add_argument("--shapes", nargs="*", default=[])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_predict)

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


def _message(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stpredict`` command.

    A user error prints one line ``stpredict <command>: error: ...`` and returns 2 for a wrong use of the
    command (argparse's convention) or 1 for a problem with the data or files; ``--debug`` shows the traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's message on bad arguments
    if args.quiet:
        settings.verbosity = 1
        settings.progress_bar = False
    prog = f"stpredict {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        print(f"{prog}: (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
