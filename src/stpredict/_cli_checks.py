"""What the command line checks before its heavy imports: paths, model folders, numbers and flag combinations.

Only the standard library (and stpredict's own light modules): a misspelt path or a zero where a size belongs fails
at once, not after the ~10 s and ~1 GB of importing SpatialData and torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from ._constants import WSI_SUFFIXES
from ._paths import (
    CHECKPOINT_CONFIG,
    check_checkpoint_dir,
    check_dir,
    check_file,
    check_files,
    check_zarr_store,
)
from ._types import ModelName

__all__ = ["UsageError"]

#: Python argument names whose command-line flag is not the name with dashes.
_FLAG_ALIASES = {"max_epochs": "--epochs", "steps_per_epoch": "--steps", "bins_um": "--bins"}


class UsageError(Exception):
    """A wrong combination of command-line arguments (exit status 2, like argparse's own errors)."""


def _at_least(args: argparse.Namespace, flags: Sequence[str], low: float, *, strict: bool = False) -> None:
    """Each of ``flags`` (argparse dests) that was given is ``>= low`` (``> low`` when ``strict``)."""
    for dest in flags:
        value = getattr(args, dest, None)
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v is not None and (v <= low if strict else v < low)]
        if bad:
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise UsageError(
                f"`{_FLAG_ALIASES.get(dest, '--' + dest.replace('_', '-'))}` must be {bound}; got {bad[0]:g}."
            )


def _out_free(out: Path, overwrite: bool, what: str) -> None:
    """Refuse an existing, non-empty ``out`` unless ``--overwrite`` (what replaces it checks what it holds)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace {what}.")


def _is_slide(path: str | Path) -> bool:
    """Whether a path is a slide file (read with ``io.read_wsi``) rather than a zarr store."""
    p = Path(path)
    return p.is_file() or (not p.exists() and p.name.lower().endswith(WSI_SUFFIXES))


def _precheck(args: argparse.Namespace) -> None:
    """What can be checked before the heavy imports: paths, model folders, numbers and flag combinations.

    It needs only the standard library, so a misspelt path or a zero where a size belongs fails at once (not after
    the ~10 s and ~1 GB of importing SpatialData and torch); the commands check everything else themselves.
    """
    _at_least(args, ("epochs", "steps", "batch_size", "n_top_genes", "genes", "downsample"), 1)
    _at_least(args, ("width_um", "height_um", "out_mpp", "mpp", "bins"), 0, strict=True)
    command = args.command
    if command == "demo":
        _out_free(Path(args.out) / "synthetic.zarr", args.overwrite, "the demo's store")
    elif command == "train":
        for path in args.zarr:
            check_zarr_store(path)
        if args.encoder_weights:
            check_file(
                args.encoder_weights, "Encoder weights file", expected="a .safetensors, .pth or .bin file"
            )
        name = args.method or args.model
        if name not in get_args(
            ModelName
        ):  # a model a package registers: known only once stpredict.model loads
            from .model import model_class

            try:
                model_class(name)
            except ValueError as e:
                raise UsageError(str(e)) from None
        out = Path(args.out)
        _out_free(out, args.overwrite, "the model folder")
        if args.overwrite and out.is_dir() and any(out.iterdir()) and not (out / CHECKPOINT_CONFIG).is_file():
            raise UsageError(
                f"{out} is a folder that holds no stpredict checkpoint, so even --overwrite does not write into it: "
                "it may hold your files. Choose another --out."
            )
    elif command == "predict":
        if _is_slide(args.zarr):
            check_file(
                args.zarr, "Slide file", expected=f"a slide ({', '.join(WSI_SUFFIXES)}) or a zarr store"
            )
            if not args.out:
                raise UsageError(
                    f"{args.zarr} is a slide file: pass --out slide.zarr, the zarr store to write the predictions to."
                )
            for item in args.shapes:
                if not Path(item).is_file():
                    raise FileNotFoundError(
                        f"--shapes {item}: a slide file has no shapes elements, so --shapes takes files of footprints "
                        "(GeoJSON or GeoParquet, in the slide's full-resolution pixels); this file does not exist."
                    )
        else:
            check_zarr_store(args.zarr)
            for flag, value in (("--out", args.out), ("--mpp", args.mpp), ("--dataset-id", args.dataset_id)):
                if value is not None:
                    raise UsageError(
                        f"{flag} is for slide files; {args.zarr} is a zarr store, predicted in place."
                    )
            if args.no_image:
                raise UsageError(
                    f"--no-image is for slide files; {args.zarr} is a zarr store, predicted in place."
                )
        check_checkpoint_dir(args.model)
    elif command == "info":
        if _is_slide(args.path):
            check_file(args.path, "Slide file")
        else:
            check_zarr_store(args.path)
    elif command == "read-st":
        if args.section:
            if args.data_dir:
                check_dir(args.data_dir, "HER2ST folder", expected="the folder with the section's files")
        elif args.counts and args.spots and args.image:
            check_files(
                {"counts": args.counts, "spots": args.spots, "image": args.image}, "--counts/--spots/--image"
            )
        else:
            raise UsageError("give either --section (with --data-dir) or all of --counts, --spots, --image.")
        if args.out:
            _out_free(Path(args.out), args.overwrite, "the store")
