"""Helpers shared by the readers: file checks and RGB image loading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .._logging import logger

__all__ = ["PathLike", "check_files", "load_rgb"]

PathLike = str | os.PathLike


def check_files(files: dict[str, Path], what: str, hint: str = "") -> None:
    """Raise one :class:`FileNotFoundError` that lists every expected file and which are missing."""
    missing = {k: p for k, p in files.items() if not Path(p).is_file()}
    if missing:
        listing = "\n".join(
            f"  {'MISSING ' if k in missing else 'found   '}{k}: {p}" for k, p in files.items()
        )
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(files)} expected file(s) missing.\n{listing}{hint}"
        )


def load_rgb(image: PathLike | np.ndarray, *, downsample: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """Load an RGB image as a ``(y, x, 3)`` uint8 array, optionally box-downsampled.

    Parameters
    ----------
    image
        Path to a JPEG/PNG/TIFF file, or an array ``(y, x, 3)``.
    downsample
        Integer factor; output pixel ``i`` averages full-resolution pixels ``[i*f, (i+1)*f)``, so the
        image maps onto full resolution by an exact ``Scale(f)``.

    Returns
    -------
    The array and the full-resolution shape ``(height, width)``.

    """
    if not isinstance(downsample, int | np.integer) or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}.")
    if isinstance(image, np.ndarray):
        arr = image
        what = "The image array"
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise ValueError(
                f"{what} has shape {arr.shape}; stpredict expects an RGB H&E image of shape (y, x, 3). "
                "Convert it to RGB first."
            )
        if arr.dtype != np.uint8:
            raise ValueError(
                f"{what} has dtype {arr.dtype}; stpredict expects uint8 RGB (0-255). Convert it first."
            )
        pil = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}.")
        what = f"Image {str(path)!r}"
        if path.suffix.lower() in (".tif", ".tiff", ".btf"):
            arr = tifffile.imread(path)
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            return (
                load_rgb(arr, downsample=downsample)
                if arr.ndim == 3
                else _not_rgb(what, f"shape {arr.shape}")
            )
        Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E images are legitimately large
        pil = Image.open(path)
        if pil.mode == "RGBA":
            logger.info(f"{what} is RGBA; the alpha channel is dropped.")
            pil = pil.convert("RGB")
        elif pil.mode != "RGB":
            _not_rgb(what, f"mode {pil.mode!r}")
    full_shape = (pil.height, pil.width)
    if downsample > 1:
        pil = pil.reduce(int(downsample))
    return np.asarray(pil, dtype=np.uint8), full_shape


def _not_rgb(what: str, detail: str):
    raise ValueError(
        f"{what} is not an RGB image ({detail}); stpredict expects an RGB H&E image. Convert it first, "
        "e.g. `PIL.Image.open(path).convert('RGB').save(new_path)`."
    )
