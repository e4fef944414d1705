"""Square bins on a map's grid: which bins touch the data, their ids, names, means, polygons and bin-id rasters.

A bin is ``k × k`` map pixels at grid position ``(array_row, array_col)``; its id is ``array_row * n_cols +
array_col + 1`` (0 is a raster's background), as :func:`spatialdata.rasterize_bins` and Space Ranger's Visium HD
grid number them. :func:`stpredict.tl.predict_dense` builds its bin tables with these, and
:func:`stpredict.io.read_visium_hd` its bin-id rasters.
"""

from __future__ import annotations

import math
import uuid

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from spatialdata.models import Labels2DModel, ShapesModel
from spatialdata.transformations import Scale
from spatialdata.transformations import Sequence as TSequence

__all__ = [
    "bin_grid",
    "bin_id_dtype",
    "bin_id_raster",
    "bin_ids",
    "bin_means",
    "bin_names",
    "bins_labels",
    "bins_shapes",
]


def bin_grid(mask: np.ndarray, k: int) -> np.ndarray | None:
    """Which k × k bins of the map grid touch the mask: a ``(Hd // k, Wd // k)`` boolean array (``None``: no bin)."""
    Hk, Wk = mask.shape[0] // k, mask.shape[1] // k
    if Hk == 0 or Wk == 0:
        return None
    return mask[: Hk * k, : Wk * k].reshape(Hk, k, Wk, k).any(axis=(1, 3))


def _bin_block(n_genes: int) -> int:
    """Side in bins of the blocks bin tables are cut in: about 64 MB of float32 values per block."""
    return max(16, int(math.sqrt(2**24 / max(n_genes, 1))))


def _take_bins(block: np.ndarray, on: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block[:, on].T, dtype=np.float32)


def bin_means(
    dense: da.Array, on: np.ndarray, k: int, mask: np.ndarray
) -> tuple[da.Array, np.ndarray, np.ndarray]:
    """Lazy mean of ``dense`` over the k × k bins where ``on``: ``(X bins × genes, rows, cols)``.

    ``mask`` is the map pixels that hold data (the map is 0 elsewhere): a bin is the mean of its pixels in the
    mask, so a bin at the tissue's edge is the mean of its tissue pixels.

    Bins are ordered block by block of the binned map (blocks of ``_bin_block(n_genes)`` bins a side, row-major
    inside a block and between blocks), so each part of ``X`` comes from one block of about 64 MB: nothing larger
    is ever in memory, whatever the number of bins. The order depends only on ``on`` and the number of genes.
    """
    n_genes = dense.shape[0]
    Hk, Wk = on.shape
    side = _bin_block(n_genes)
    blocks = dense[:, : Hk * k, : Wk * k].reshape(n_genes, Hk, k, Wk, k)
    if mask.all():
        binned = blocks.mean(axis=(2, 4))
    else:  # the mean over the pixels with data: the others are 0, so it is the sum over the bin / their number
        n = mask[: Hk * k, : Wk * k].reshape(Hk, k, Wk, k).sum(axis=(1, 3), dtype=np.float32)
        binned = blocks.sum(axis=(2, 4), dtype=np.float32) / np.maximum(n, 1)[None]
    binned = binned.rechunk((n_genes, side, side))
    parts, rows, cols = [], [], []
    ys = np.cumsum((0, *binned.chunks[1]))
    xs = np.cumsum((0, *binned.chunks[2]))
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            onb = on[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            r, c = np.nonzero(onb)
            if len(r) == 0:
                continue
            rows.append(r + ys[i])
            cols.append(c + xs[j])
            part = dask.delayed(_take_bins, pure=True)(binned.blocks[0, i, j], onb)
            parts.append(da.from_delayed(part, shape=(len(r), n_genes), dtype=np.float32))
    if not parts:
        return da.zeros((0, n_genes), dtype=np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    X = da.concatenate(parts)
    return X.rechunk((min(100_000, X.shape[0]), n_genes)), np.concatenate(rows), np.concatenate(cols)


def bin_id_dtype(n_cells: int) -> type[np.integer]:
    return np.int32 if n_cells < np.iinfo(np.int32).max else np.int64


def bin_ids(rows: np.ndarray, cols: np.ndarray, Wk: int, n_cells: int) -> np.ndarray:
    """Bin ids on the grid: ``row * Wk + col + 1`` (0 is the background of a labels raster)."""
    dt = bin_id_dtype(n_cells)
    return rows.astype(dt) * dt(Wk) + cols.astype(dt) + dt(1)


def bins_labels(on: np.ndarray, side_px: float, transformations: dict, chunk: int = 4096):
    """A bin-id raster with one pixel per bin (``row * Wk + col + 1``, 0 where there is no bin), built block by block.

    As :func:`spatialdata.rasterize_bins` makes for Visium HD: spatialdata-plot draws it with ``render_labels``
    and a table annotating it colours it; placed on the H&E by a scale of ``side_px`` (H&E px per bin).
    """
    Hk, Wk = on.shape
    dt = bin_id_dtype(Hk * Wk)
    on_da = da.from_array(on, chunks=(min(chunk, Hk), min(chunk, Wk)))

    def ids(block: np.ndarray, block_info=None) -> np.ndarray:
        (y0, _), (x0, _) = block_info[0]["array-location"]
        r = np.arange(y0, y0 + block.shape[0], dtype=dt)[:, None]
        c = np.arange(x0, x0 + block.shape[1], dtype=dt)[None, :]
        return np.where(block, r * dt(Wk) + c + dt(1), dt(0))

    raster = on_da.map_blocks(ids, dtype=dt, name=f"stpredict-bin-ids-{uuid.uuid4().hex}")
    return Labels2DModel.parse(
        raster,
        dims=("y", "x"),
        transformations={
            cs: TSequence([Scale([side_px, side_px], axes=("x", "y")), t])
            for cs, t in transformations.items()
        },
    )


def bins_shapes(rows: np.ndarray, cols: np.ndarray, side_px: float, transformations: dict):
    x0, y0 = cols * side_px, rows * side_px
    gdf = gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + side_px, y0 + side_px))
    return ShapesModel.parse(gdf, transformations=transformations)


def bin_names(rows: np.ndarray, cols: np.ndarray) -> pd.Index:
    """``"row_col"`` names for many bins, in pandas' string dtype (as names read back from a store).

    Joined in Arrow where pandas stores its strings in Arrow (2.5 million names: ~0.2 s, no Python string per bin);
    otherwise a million Python strings at a time.
    """
    dtype = pd.Index(["0_0"]).dtype  # what pandas infers for names: its "str" dtype, or object
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc

        r, c = (pc.cast(pa.array(np.asarray(x)), pa.string()) for x in (rows, cols))
        return pd.Index(pd.array(pc.binary_join_element_wise(r, c, "_"), dtype=dtype))
    names: list[str] = []
    step = 1_000_000  # python ints of a million rows at a time, not of all of them
    for i in range(0, len(rows), step):
        r, c = rows[i : i + step].tolist(), cols[i : i + step].tolist()
        names += [f"{a}_{b}" for a, b in zip(r, c, strict=True)]
    return pd.Index(names, dtype=dtype)


def bin_id_raster(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The bin ids of bins at ``(rows, cols)`` and an in-memory raster of ``shape`` holding them (0 elsewhere).

    Raises a ``ValueError`` when two bins share a grid position.
    """
    n_rows, n_cols = shape
    ids = bin_ids(rows, cols, n_cols, n_rows * n_cols)
    raster = np.zeros(shape, dtype=ids.dtype)
    raster[rows, cols] = ids
    if np.count_nonzero(raster) != len(ids):
        raise ValueError("Several bins share a grid position (array_row, array_col).")
    return ids, raster
