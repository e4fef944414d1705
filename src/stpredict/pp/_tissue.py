"""Where the tissue is: a saturation-based tissue mask, or the pixels inside selected tiles."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_closing, binary_fill_holes, gaussian_filter
from skimage.filters import threshold_otsu
from skimage.transform import resize
from spatialdata import SpatialData

from .. import _docs
from .._core._footprints import tiles_cover
from .._core._image import Pyramid
from .._core._mpp import get_mpp

__all__ = ["tiles_mask", "tissue_mask"]


@_docs.doc_params(sdata=_docs.sdata)
def tissue_mask(
    sdata: SpatialData, image_key: str, shape: tuple[int, int], *, threshold: float | None = None
) -> np.ndarray:
    """Boolean tissue mask of an H&E image on a grid of ``shape`` covering the image.

    Computed on a coarse pyramid level (≤ 4 µm/px) from the colour saturation smoothed over ~10 µm
    (H&E tissue is coloured, glass is grey/white) with Otsu's threshold (or ``threshold`` in
    [0, 1]); gaps of up to ~20 µm are closed and enclosed holes filled; then resized to ``shape``.

    Parameters
    ----------
    {sdata}
    image_key
        The H&E image.
    shape
        ``(rows, cols)`` of the grid; it covers the whole image (e.g. the map of
        :func:`stpredict.tl.predict_dense`).
    threshold
        Fixed saturation threshold in [0, 1] instead of Otsu's.

    Returns
    -------
    A boolean array of ``shape``, True on tissue.

    """
    return pyramid_tissue_mask(
        Pyramid.from_sdata(sdata, image_key), get_mpp(sdata, image_key), shape, threshold=threshold
    )


def pyramid_tissue_mask(
    pyramid: Pyramid, mpp: float, shape: tuple[int, int], *, threshold: float | None = None
) -> np.ndarray:
    """:func:`tissue_mask` of an image's :class:`~stpredict._core.Pyramid` (``mpp``: its full resolution's µm/px)."""
    levels = pyramid.levels
    # the coarsest level with pixels of at most ~4 µm (and at most ~4k px), smoothed over ~10 µm so that
    # nuclei and stroma average into "tissue" and only glass stays unsaturated
    arr, lf, _ = levels[0]
    for a, f, _ in levels:
        if f * mpp <= 4.0 or max(arr.shape[1:]) > 4096:
            arr, lf = a, f
    rgb = np.moveaxis(np.asarray(arr), 0, -1).astype(np.float32)
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = gaussian_filter((mx - mn) / np.maximum(mx, 1.0), sigma=max(1.0, 10.0 / (lf * mpp)))
    if threshold is None:
        threshold = max(0.05, float(threshold_otsu(sat))) if np.ptp(sat) > 1e-6 else 0.05
    mask = sat > threshold
    # tissue with white gaps (fat, tears) is still tissue: close ~20 µm gaps and fill enclosed holes
    it = max(1, round(20.0 / (lf * mpp)))
    mask = binary_fill_holes(binary_closing(np.pad(mask, it), iterations=it)[it:-it, it:-it])
    return resize(mask.astype(np.float32), shape, order=1, anti_aliasing=False) > 0.01


@_docs.doc_params(sdata=_docs.sdata)
def tiles_mask(sdata: SpatialData, tiles: str, image_key: str, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask on a ``shape`` grid covering the image: pixels whose centre lies in a shape of ``tiles``.

    Parameters
    ----------
    {sdata}
    tiles
        A shapes element, e.g. the selection of :func:`stpredict.pp.select_tiles`.
    image_key
        The H&E image the grid covers.
    shape
        ``(rows, cols)`` of the grid.

    Returns
    -------
    A boolean array of ``shape``, True inside the tiles.

    """
    return pyramid_tiles_mask(sdata, tiles, image_key, Pyramid.from_sdata(sdata, image_key).shape, shape)


def pyramid_tiles_mask(
    sdata: SpatialData, tiles: str, image_key: str, image_shape: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """:func:`tiles_mask` for an image of ``image_shape`` (full-resolution rows, cols) whose pyramid is built."""
    H0, W0 = image_shape
    cover = tiles_cover(sdata, tiles, image_key)
    sy, sx = H0 / shape[0], W0 / shape[1]
    xs = (np.arange(shape[1]) + 0.5) * sx
    mask = np.zeros(shape, bool)
    rows_per_strip = max(1, 1_000_000 // max(1, shape[1]))
    for r0 in range(0, shape[0], rows_per_strip):
        r1 = min(shape[0], r0 + rows_per_strip)
        ys = (np.arange(r0, r1) + 0.5) * sy
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        mask[r0:r1] = cover(xx.ravel(), yy.ravel()).reshape(r1 - r0, -1)
    if not mask.any():
        raise ValueError(f"No selected tile of {tiles!r} lies on image {image_key!r}.")
    return mask
