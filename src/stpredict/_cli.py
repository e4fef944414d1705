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

from ._cli_checks import _FLAG_ALIASES, UsageError, _is_slide, _precheck
from ._constants import DEMO_TIME, MAX_PIXEL_BINS
from ._logging import quiet_ome_zarr
from ._paths import (
    StoreRefused,
    check_zarr_store,
)
from ._settings import settings
from ._types import BinsAs, MapAs, MapDtype, ModelName, PresetName
from ._version import __version__

if TYPE_CHECKING:
    from spatialdata import SpatialData


def _read_zarr(path: str | Path) -> SpatialData:
    """A SpatialData zarr store, with one-line errors for what is not one."""
    import spatialdata as sd

    p = check_zarr_store(path)
    with quiet_ome_zarr():
        return sd.read_zarr(p)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(
        Path(args.out),
        seed=args.seed,
        width_um=args.width_um,
        height_um=args.height_um,
        genes=args.genes,
        epochs=args.epochs,
        steps=args.steps,
        progress=not args.quiet,
    )


def _train(args: argparse.Namespace) -> int:

    from . import tl
    from .train._distributed import is_main_process, quiet_other_ranks

    quiet_other_ranks()  # under torchrun, rank 0 alone reports

    sdatas = [_read_zarr(p) for p in args.zarr]
    kwargs = {
        k: v
        for k, v in (
            ("max_epochs", args.epochs),
            ("steps_per_epoch", args.steps),
            ("batch_size", args.batch_size),
            ("seed", args.seed),
            ("pretrained", args.pretrained),
            ("encoder_weights", args.encoder_weights),
        )
        if v is not None
    }
    if args.method is not None:
        warnings.warn("`--method` is deprecated; use `--model`.", FutureWarning, stacklevel=1)
        args.model = args.method
    if args.model == "linear_probe" and ("max_epochs" in kwargs or "steps_per_epoch" in kwargs):
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
    if is_main_process():  # under torchrun every process holds the same weights: rank 0 writes them
        path = model.save(args.out, overwrite=args.overwrite)
        print(f"trained {model!r}\nsaved to {path}")
    return 0


def _predict_slide(args: argparse.Namespace, model) -> int:
    """Predict a slide file into the store ``--out``: the H&E copy, footprint files and predictions in one write.

    The rule for an existing ``--out`` (docs/safety.md): it must be a store ``stpredict predict`` wrote for a slide
    (anything else is refused untouched); with ``--overwrite`` everything the earlier slide run wrote is replaced by
    this run's output in one transaction, and every other element (ones the user added, ones other stpredict calls
    added) stays. A name this run writes that the user's element has, or the user's elements on another slide, are
    refused before anything is computed or written.
    """
    from . import io
    from .io._cli_stores import check_slide_out, read_shapes_file, slide_run

    existing = check_slide_out(args.out, args.overwrite)  # given: checked by _precheck
    sdata = io.read_wsi(args.zarr, mpp=args.mpp, dataset_id=args.dataset_id)
    pixel_cs = sdata.attrs["stpredict"]["slide"]["pixel_cs"]
    # files of footprints (GeoJSON, GeoParquet) in the slide's pixels: read before anything is written
    args.shapes = [read_shapes_file(sdata, item, pixel_cs) for item in args.shapes]
    own = [*([] if args.no_image else list(sdata.images)), *args.shapes]
    with slide_run(sdata, args.out, existing, own):
        return _predict_into(sdata, model, args, args.out)


def _predict(args: argparse.Namespace) -> int:

    from .model import load

    if args.key is not None:
        warnings.warn("`--key` is deprecated; use `--key-added`.", FutureWarning, stacklevel=1)
        args.key_added = args.key_added or args.key
    slide = _is_slide(args.zarr)  # the flags that go with it were checked first (_precheck)
    model = load(args.model)
    if not slide:
        return _predict_into(_read_zarr(args.zarr), model, args, args.zarr)
    return _predict_slide(args, model)


def _predict_into(sdata: SpatialData, model, args: argparse.Namespace, target: str) -> int:
    from . import tl

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
        print(f"wrote to {target}: {', '.join(names)}")
        return 0
    names = tl.predict_dense(
        sdata,
        model,
        image_key=args.image_key,
        key_added=args.key_added,
        out_mpp=args.out_mpp,
        bins_um=args.bins,
        bins_as=args.bins_as,
        shapes=args.shapes,
        dtype=args.dtype,
        map_as=args.map_as,
        max_pixel_bins=args.max_pixel_bins,
        overwrite=args.overwrite,
    )
    print(f"wrote to {target}: {', '.join(names)}")
    return 0


def _info(args: argparse.Namespace) -> int:

    if _is_slide(args.path):
        from .io import slide_info

        print(slide_info(args.path).describe())
        return 0
    from .io._summary import summary

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
    from .io._summary import summary

    print(summary(sdata))
    if args.out:
        from .io._cli_stores import write_new

        write_new(sdata, args.out, args.overwrite, by="stpredict read-st")
        print(f"\nwrote {args.out}")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text that shows each option's default (when it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or not action.option_strings
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {shown})"


def _count_or_none(value: str) -> int | None:
    """An argparse type: a whole number >= 0, or ``none``."""
    if value.strip().lower() == "none":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'none', got {value!r}")
    return n


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="where torch runs: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stpredict`` command."""
    parser = argparse.ArgumentParser(
        prog="stpredict",
        description="Dense spatial gene expression from H&E (PixNet on SpatialData).",
        epilog="Run `stpredict <command> --help` for a command's options. Documentation: the README and docs/.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stpredict {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=description or help, formatter_class=_HelpFormatter
        )

    p = add(
        "demo",
        f"synthetic slide -> train briefly -> predict densely -> zarr + PNG ({DEMO_TIME})",
        f"Generate a synthetic H&E slide with known dense expression, train PixNet on its 100 µm and 55 µm spots, "
        f"predict the dense map and 2/8/16 µm bins, write a zarr store, the model and a PNG of one gene (true vs "
        f"predicted), and print how well the 8 µm bins match the truth. {DEMO_TIME}.",
    )
    p.add_argument("--out", default="stpredict_demo", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed of the slide and the training")
    p.add_argument("--width-um", type=float, default=1200.0, help="slide width in µm")
    p.add_argument("--height-um", type=float, default=1008.0, help="slide height in µm")
    p.add_argument("--genes", type=int, default=50, help="genes to predict (the top genes by mean)")
    p.add_argument("--epochs", type=int, default=4, help="training epochs")
    p.add_argument("--steps", type=int, default=25, help="training steps per epoch")
    _add_device(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo output folder's files")
    p.set_defaults(func=_demo)

    p = add("train", "train PixNet (or a baseline) on SpatialData zarr stores and save the model")
    p.add_argument("zarr", nargs="+", help="one SpatialData zarr store per section")
    p.add_argument(
        "--tables",
        nargs="+",
        required=True,
        help="supervision tables (counts linked to shapes), e.g. spots or square_008um square_016um",
    )
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--image-key", help="the H&E image of every store (default: the largest RGB image)")
    p.add_argument(
        "--preset",
        default="auto",
        choices=get_args(PresetName),
        help="recipe of architecture and training budget: cpu (minutes on a laptop), cpu_spots (PixNet's CPU recipe "
        "for spot-sized footprints), paper (a GPU run); auto: paper when CUDA is available, else cpu_spots for "
        "footprints of 50 µm or more and cpu for bins",
    )
    p.add_argument(
        "--model",
        default="pixnet",
        metavar="MODEL",
        help=f"which model to train (as tl.train's model=): {', '.join(get_args(ModelName))}, or the key of a model "
        "class a package registers (entry point group 'stpredict.models'; docs: Add a model or a loss)",
    )
    p.add_argument("--method", help=argparse.SUPPRESS)  # deprecated: --model
    p.add_argument("--n-top-genes", type=int, default=250, help="genes to predict: the top genes by mean")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the encoder from its hub weights (ImageNet for resnet18; downloaded once); default: paper: "
        "yes (an error if they cannot be had), cpu: where they can be had (cached or downloadable), else random "
        "init with a warning; --no-pretrained for a randomly initialised encoder, silently",
    )
    p.add_argument(
        "--encoder-weights",
        help="a local weights file (.safetensors/.pth/.bin) for the encoder, e.g. timm/resnet18.a1_in1k's "
        "model.safetensors or a pathology model's checkpoint (no download)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: 10; the paper trains 500)")
    p.add_argument("--steps", type=int, help="steps per epoch (default: 50)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="tiles (or crops) per step (default: the preset's; PixNet: 4 on cpu, 8 on paper; baselines: 32)",
    )
    p.add_argument(
        "--seed", type=int, help="random seed of initialisation and sampling (default: settings.seed, 0)"
    )
    p.add_argument(
        "--validation",
        type=int,
        nargs="*",
        help="positions (0-based, in the order given) of the stores held out for early stopping",
    )
    _add_device(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=_train)

    p = add(
        "predict",
        "predict dense maps and bins for a slide file or into a SpatialData zarr store",
        "Predict the dense map, square bins and any shapes. For a zarr store, the new elements are staged in the "
        "store and swapped in together at the end; nothing that is there is replaced without --overwrite. For a "
        "slide file (.svs, .ndpi, .tif, OME-TIFF, .mrxs, ...), the slide is read lazily with its pixel size and "
        "everything (the H&E unless --no-image, the map, the bins) is written to the zarr store --out in one step; "
        "with --overwrite that replaces what an earlier run wrote there and keeps what you added.",
    )
    p.add_argument("zarr", help="the slide file, or the SpatialData zarr store to predict on and write into")
    p.add_argument("--model", required=True, help="model folder written by `stpredict train` (or model.save)")
    p.add_argument("--image-key", help="the H&E image (default: the largest RGB image)")
    p.add_argument(
        "--key-added",
        help="stem of the names of the written elements (default: the model's key, e.g. pixnet)",
    )
    p.add_argument("--key", help=argparse.SUPPRESS)  # deprecated spelling of --key-added
    p.add_argument("--out-mpp", type=float, default=2.0, help="pixel size of the dense map in µm/px")
    p.add_argument(
        "--bins", type=int, nargs="*", default=[2, 8, 16], help="square bin sizes in µm; none: no bins"
    )
    p.add_argument(
        "--max-pixel-bins",
        type=_count_or_none,
        default=MAX_PIXEL_BINS,
        metavar="N",
        help="build a table of bins of one map pixel (2 µm bins of a 2 µm map) only up to N bins; above it the "
        "map holds the values (a whole slide's 2 µm table takes ~200 bytes a bin in memory); 'none': no limit",
    )
    p.add_argument(
        "--bins-as",
        choices=get_args(BinsAs),
        default="auto",
        help="what bin tables annotate: a polygon per bin, or a bin-id raster (labels); auto: labels for bins of "
        "one map pixel and above a million bins",
    )
    p.add_argument(
        "--dtype",
        choices=get_args(MapDtype),
        default="float32",
        help="precision of the stored map (float16: half the size, drawn by stpredict's plots but not by "
        "spatialdata-plot; bins are computed in float32 either way)",
    )
    p.add_argument(
        "--map-as",
        choices=get_args(MapAs),
        default="genes",
        help="what the stored map holds: one channel per gene, or the network's last features and its linear "
        "head (a quarter of the bytes for the default PixNet, the same tables; stpredict's readers decode genes, "
        "`stpredict.tl.decode_map` writes chosen genes for spatialdata-plot)",
    )
    p.add_argument(
        "--shapes",
        nargs="*",
        default=[],
        help="shapes elements to predict (spots, bins, cells), e.g. C5_spots; for a slide file, GeoJSON or "
        "GeoParquet files of footprints in the slide's pixels (points with a 'radius' column are circles)",
    )
    _add_device(p)
    p.add_argument("--out", help="for a slide file: the zarr store to write (required)")
    p.add_argument("--mpp", type=float, help="for a slide file: µm per pixel (default: from the file)")
    p.add_argument("--dataset-id", help="for a slide file: section name (default: the file name)")
    p.add_argument("--no-image", action="store_true", help="for a slide file: do not copy the H&E into --out")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace elements an earlier stpredict run wrote; for a slide file, everything the earlier run into "
        "--out wrote (elements you added to --out stay; see docs/safety.md)",
    )
    p.set_defaults(func=_predict)

    p = add(
        "info",
        "summarise a SpatialData zarr store (images with pixel sizes, shapes, tables) or a slide file "
        "(format, pyramid levels, pixel size, size in mm)",
    )
    p.add_argument("path", help="the zarr store or slide file")
    p.set_defaults(func=_info)

    p = add("read-st", "read a legacy ST / HER2ST section, print a summary, optionally write zarr")
    p.add_argument("--section", help="HER2ST section name, e.g. C2 (files looked up in --data-dir)")
    p.add_argument("--data-dir", help="folder with the HER2ST files (default: $STPREDICT_HER2ST_DIR)")
    p.add_argument("--counts", help="counts TSV (spots x genes), instead of --section")
    p.add_argument("--spots", help="spot table (pixel coordinates of each spot), instead of --section")
    p.add_argument("--image", help="the H&E image file, instead of --section")
    p.add_argument("--dataset-id", default="st", help="section name: element prefix and coordinate system")
    p.add_argument("--mpp", type=float, help="microns per pixel (default: inferred from the spot grid)")
    p.add_argument("--downsample", type=int, default=1, help="keep every n-th pixel of the image")
    p.add_argument("--out", help="write the SpatialData to this zarr path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zarr store at --out")
    p.set_defaults(func=_read_st)
    return parser


def _message(exc: BaseException, sub: argparse.ArgumentParser | None = None) -> str:
    """The error as one line, Python argument names (`` `overwrite=True` ``) spelt as the command's flags."""
    import re

    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(str(msg).split()) or type(exc).__name__
    if sub is None:
        return msg
    flags = set(sub._option_string_actions)

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(3)
        opt = _FLAG_ALIASES.get(name, "--" + name.replace("_", "-"))
        if opt not in flags:
            return m.group(0)
        if value in (None, "", "True"):
            return f"`{opt}`"
        if value == "False" and f"--no-{opt[2:]}" in flags:
            return f"`--no-{opt[2:]}`"
        return f"`{opt} {value.strip(chr(39) + chr(34))}`"

    return re.sub(r"`([a-z_]+)(=([^`]*))?`", flag, msg)


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
    sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    try:
        _precheck(args)
        if getattr(args, "device", None) is not None:
            settings.device = args.device
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, StoreRefused) as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_message(exc, sub)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_message(exc, sub)}", file=sys.stderr)
        print(f"{prog}: (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
