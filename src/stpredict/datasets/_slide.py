"""Write an H&E image as a pyramidal (OME-)TIFF, as a scanner would: stand-ins for H&E-only slides."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from spatialdata import SpatialData

from .._core._image import default_image_key, full_resolution
from .._core._mpp import get_mpp
from .._core._validate import check_int, check_mpp_value
from ..io._utils import load_rgb

__all__ = ["write_slide"]


def _tiles(level: Any, tile: int) -> Iterator[np.ndarray]:
    """Tiles of a ``(y, x, 3)`` (dask or NumPy) array row by row, one row of tiles in memory at a time."""
    h, w = level.shape[:2]
    for y0 in range(0, h, tile):
        strip = np.asarray(level[y0 : y0 + tile])
        for x0 in range(0, w, tile):
            block = strip[:, x0 : x0 + tile]
            if block.shape[:2] != (tile, tile):  # edge tiles are padded with white glass
                pad = np.full((tile, tile, 3), 255, np.uint8)
                pad[: block.shape[0], : block.shape[1]] = block
                block = pad
            yield block


def write_slide(
    image: SpatialData | np.ndarray | str | os.PathLike | Any,
    path: str | Path,
    *,
    mpp: float | None = None,
    image_key: str | None = None,
    ome: bool = True,
    tile: int = 256,
    smallest: int = 512,
    compression: str | None = "zlib",
    overwrite: bool = False,
) -> Path:
    """Write an RGB image as a tiled pyramidal TIFF that records its pixel size, like a scanner's file.

    Level ``k`` halves level ``k - 1`` (a 2 x 2 mean) until the longest side is at most ``smallest``;
    the reduced levels are SubIFDs of the full-resolution page, the layout of OME-TIFF and of most
    converted slides. The pixel size is written twice: as TIFF resolution tags (pixels per
    centimetre) and, with ``ome=True``, as OME ``PhysicalSizeX/Y`` in µm.

    Parameters
    ----------
    image
        A SpatialData (its H&E, ``image_key`` or the largest RGB image; ``mpp`` from it), an image file (JPEG,
        PNG or TIFF of any size: Pillow's decompression-bomb limit does not apply to H&E exports), a
        ``(y, x, 3)`` uint8 array, or a dask array of that shape (written a row of tiles at a time, so slides
        larger than memory can be generated).
    path
        The file to write (``.ome.tif`` by convention for OME-TIFF).
    mpp
        Microns per pixel; required for image files and arrays. A JPEG records none: read it from the scanner's
        report (about 0.25 µm at 40x, 0.5 µm at 20x), or from a paired spatial section (the spot pitch in pixels:
        :func:`stpredict.io.read_st` infers it from the 200 µm legacy-ST grid, Visium's 100 µm pitch likewise).
    image_key
        Which image of a SpatialData.
    ome
        Write OME-XML metadata (an OME-TIFF); otherwise a plain pyramidal TIFF with resolution tags.
    tile
        Tile side in pixels (a multiple of 16).
    smallest
        Stop adding levels once the longest side is at most this many pixels.
    compression
        TIFF compression (``"zlib"``, ``"jpeg"`` with imagecodecs, or ``None``).
    overwrite
        Replace an existing file.

    Returns
    -------
    The path written.

    """
    import dask.array as da
    import tifffile

    path = Path(path)
    tile = check_int("tile", tile)
    if tile % 16:
        raise ValueError(f"`tile` must be a multiple of 16 (a TIFF rule), got {tile}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    if isinstance(image, SpatialData):
        key = default_image_key(image) if image_key is None else image_key
        mpp = get_mpp(image, key) if mpp is None else mpp
        arr = full_resolution(image.images[key]).transpose("y", "x", "c").data
    elif isinstance(image, str | os.PathLike):
        if mpp is None:
            raise ValueError(
                f"Pass `mpp=` (microns per pixel) to write {str(image)!r} as a slide: an image file like this records "
                "no pixel size. Use the scanner's value (about 0.25 at 40x, 0.5 at 20x) or the spot pitch of a "
                "paired spatial section (`stpredict.io.read_st` logs the value it infers)."
            )
        arr, _ = load_rgb(image)
    else:
        arr = image
    if mpp is None:
        raise ValueError("Pass `mpp=` (microns per pixel) to write an array as a slide.")
    mpp = check_mpp_value(mpp)
    if arr.ndim != 3 or arr.shape[-1] != 3 or np.dtype(arr.dtype) != np.uint8:
        raise ValueError(f"The image must be (y, x, 3) uint8 RGB, got {arr.shape} {arr.dtype}.")
    levels = [da.asarray(arr)]
    if levels[0].numblocks[:2] == (1, 1) and max(arr.shape[:2]) > 8 * tile:  # a NumPy image: reduce in blocks
        levels[0] = levels[0].rechunk((8 * tile, 8 * tile, 3))
    while max(levels[-1].shape[:2]) > smallest and min(levels[-1].shape[:2]) >= 2:
        prev = levels[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(da.coarsen(np.mean, prev[:h, :w], {0: 2, 1: 2}).round().astype(np.uint8))
    px_per_cm = 1e4 / mpp
    common = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "resolution": (px_per_cm, px_per_cm),
        "resolutionunit": "CENTIMETER",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        _write_levels(tifffile, tmp, levels, common, mpp=mpp, ome=ome, tile=tile, px_per_cm=px_per_cm)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def _write_levels(
    tifffile, tmp: Path, levels: list, common: dict, *, mpp: float, ome: bool, tile: int, px_per_cm: float
):
    """Write the levels to ``tmp``: the first as the page, the others as its SubIFDs."""
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as tw:
        for i, level in enumerate(levels):
            h, w = level.shape[:2]
            kwargs: dict[str, Any] = dict(common, shape=(h, w, 3), dtype=np.uint8)
            if i == 0:
                kwargs["subifds"] = len(levels) - 1
                if ome:
                    kwargs["metadata"] = {
                        "axes": "YXS",
                        "PhysicalSizeX": mpp,
                        "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": mpp,
                        "PhysicalSizeYUnit": "µm",
                    }
            else:
                kwargs["subfiletype"] = 1  # a reduced-resolution version of the image
                kwargs["resolution"] = (
                    px_per_cm * w / levels[0].shape[1],
                    px_per_cm * h / levels[0].shape[0],
                )
            tw.write(_tiles(level, tile), **kwargs)
