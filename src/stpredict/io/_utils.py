"""Helpers shared by the readers: file checks (from :mod:`stpredict._core._files`) and RGB image loading."""

from __future__ import annotations

import os

import numpy as np
import tifffile
from PIL import Image

from .._core._files import check_file, check_files, check_image, corrupt_file_error
from .._logging import logger

__all__ = ["PathLike", "check_file", "check_files", "load_rgb"]

PathLike = str | os.PathLike


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
        path = check_file(image, "Image file", expected="an H&E image (JPEG, PNG or TIFF)")
        what = f"Image {str(path)!r}"
        check_image(path, "The image file")
        if path.suffix.lower() in (".tif", ".tiff", ".btf"):
            try:
                arr = tifffile.imread(path)
            except (tifffile.TiffFileError, ValueError, OSError) as exc:
                raise corrupt_file_error(path, "The image file", exc) from exc
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            return (
                load_rgb(arr, downsample=downsample)
                if arr.ndim == 3
                else _not_rgb(what, f"shape {arr.shape}")
            )
        Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E images are legitimately large
        pil = Image.open(path)
        try:
            pil.load()  # decode here, where a truncated file can be named
        except (OSError, SyntaxError, ValueError) as exc:
            raise corrupt_file_error(path, "The image file", exc) from exc
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
