"""The one sparse aggregation loop: an image (NumPy or dask) aggregated over footprints, chunk by chunk."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from scipy import sparse

from .._types import Aggregation, Coverage, check_choice
from ._footprints import Footprints, footprint_matrix

__all__ = ["accumulate_blocks", "aggregate_footprints", "map_pixel_values"]


def accumulate_blocks(values: Any, A: sparse.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """``A @ values.reshape(c, -1).T`` for a ``(c, y, x)`` NumPy or dask array, one chunk at a time, skipping NaN.

    Only chunks that some row of ``A`` touches are computed, so a lazily computed map (the dense
    engine's) is only evaluated where there are footprints; memory depends on the chunk size. NaN pixels
    (no data, e.g. a dense map off the tissue) count as absent: returns ``(sums, weights)``, both
    ``(A.shape[0], c)`` float64, where ``weights`` is ``A``'s total weight on the finite pixels of each channel.
    """
    arr = (
        values if isinstance(values, da.Array) else da.from_array(np.asarray(values), chunks=(-1, 1024, 1024))
    )
    c, _h, w = arr.shape
    A = sparse.csc_matrix(A)
    out = np.zeros((A.shape[0], c), np.float64)
    weights = np.zeros((A.shape[0], c), np.float64)
    ystarts = np.cumsum((0, *arr.chunks[1]))
    xstarts = np.cumsum((0, *arr.chunks[2]))
    for bi in range(len(arr.chunks[1])):
        for bj in range(len(arr.chunks[2])):
            y0, y1, x0, x1 = ystarts[bi], ystarts[bi + 1], xstarts[bj], xstarts[bj + 1]
            cols = (np.arange(y0, y1)[:, None] * w + np.arange(x0, x1)[None, :]).ravel()
            sub = A[:, cols]
            if sub.nnz == 0:
                continue
            block = np.asarray(arr[:, y0:y1, x0:x1].compute(), dtype=np.float64).reshape(c, -1)
            finite = np.isfinite(block)
            if finite.all():
                weights += np.asarray(sub.sum(1))
            else:
                block = np.where(finite, block, 0.0)
                weights += sub @ finite.T.astype(np.float64)
            out += sub @ block.T
    return out, weights


def aggregate_footprints(
    values: Any, fp: Footprints, *, how: Aggregation = "mean", coverage: Coverage = "center"
) -> np.ndarray:
    """Aggregate a ``(c, y, x)`` image over footprints given in its pixel grid: ``(len(fp), c)`` float64.

    Footprints are clipped to the image, and NaN pixels (no data) are left out; a footprint with no
    finite pixel on it is NaN.
    """
    check_choice("how", how, Aggregation)
    h, w = values.shape[1:]
    A, _ = footprint_matrix(fp, (h, w), how="sum", coverage=coverage, require_inside=False)
    sums, weights = accumulate_blocks(values, A)
    if how == "mean":
        sums /= np.maximum(weights, 1e-12)
    sums[weights == 0] = np.nan
    return sums


def _take_pixels(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(block)[:, rows, cols].T, dtype=np.float32)


def map_pixel_values(dense: da.Array, rows: np.ndarray, cols: np.ndarray) -> da.Array:
    """The values of a ``(c, y, x)`` map at the pixels ``(rows, cols)``: a lazy ``(n, c)`` float32 array.

    The X of a table whose rows are the map's own pixels (the 2 µm bins of a 2 µm map): each part reads one chunk
    of the map, so nothing larger than a chunk is ever in memory. Rows that come chunk by chunk (as
    :func:`stpredict.tl.predict_dense` orders them) are read in order; any other order is read chunk by chunk and
    put back in its order.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    c = dense.shape[0]
    ey, ex = np.cumsum((0, *dense.chunks[1])), np.cumsum((0, *dense.chunks[2]))
    bi = np.searchsorted(ey, rows, side="right") - 1
    bj = np.searchsorted(ex, cols, side="right") - 1
    block = bi * len(ex) + bj
    order = np.argsort(block, kind="stable")
    in_order = bool(np.all(order == np.arange(len(order))))
    sb = block[order]
    starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]]) if len(sb) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(sb)].astype(np.int64)
    parts = []
    for s0, s1 in zip(starts, ends, strict=True):
        idx = order[s0:s1]
        i, j = int(bi[idx[0]]), int(bj[idx[0]])
        part = dask.delayed(_take_pixels, pure=True)(
            dense[:, ey[i] : ey[i + 1], ex[j] : ex[j + 1]], rows[idx] - ey[i], cols[idx] - ex[j]
        )
        parts.append(da.from_delayed(part, shape=(s1 - s0, c), dtype=np.float32))
    if not parts:
        return da.zeros((0, c), dtype=np.float32)
    X = da.concatenate(parts)
    if not in_order:
        X = X[np.argsort(order)]
    return X.rechunk((min(100_000, X.shape[0]), c))
