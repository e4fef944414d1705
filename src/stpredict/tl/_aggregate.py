"""``tl.aggregate``: exact image-by-shapes aggregation (what spatialdata's ``aggregate`` does not do)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _constants as C
from .._geometry import shapes_footprints
from .._utils import full_resolution

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = [
    "aggregate",
    "aggregate_table",
    "check_new_names",
    "shapes_footprints",
    "shapes_table",
    "store_table",
]


def check_new_names(sdata: SpatialData, names: Sequence[str], overwrite: bool) -> None:
    """Refuse to replace existing elements unless ``overwrite``; with it, remove them (memory and disk)."""
    existing = [n for n in names if n in sdata]
    if existing and not overwrite:
        raise ValueError(
            f"Element(s) {existing} already exist; pass `overwrite=True` to replace them, or choose another `key_added`."
        )
    for n in existing:
        del sdata[n]
        if sdata.is_backed() and n in [p.split("/")[-1] for p in sdata.elements_paths_on_disk()]:
            sdata.delete_element_from_disk(n)


def accumulate_blocks(values, A) -> np.ndarray:
    """``A @ values.reshape(c, -1).T`` for a (possibly dask) ``(c, y, x)`` array, one chunk at a time."""
    import dask.array as da

    arr = (
        values if isinstance(values, da.Array) else da.from_array(np.asarray(values), chunks=(-1, 1024, 1024))
    )
    c, _h, w = arr.shape
    A = A.tocsc()
    out = np.zeros((A.shape[0], c), np.float64)
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
            out += sub @ block.T
    return out


def aggregate(
    sdata: SpatialData,
    *,
    values: str,
    by: str,
    how: str = "mean",
    coverage: str = "center",
    channels: Sequence[str] | None = None,
    key_added: str | None = None,
    overwrite: bool = False,
) -> str:
    """Aggregate an image over shapes: one row per shape, one column per image channel.

    Exact and vectorised: a sparse shape × pixel matrix (pixel centres inside each disk, square,
    rotated square or polygon; or fractional coverage) applied to the image chunk by chunk, so
    memory depends on the chunk size. spatialdata's own ``aggregate`` does not aggregate images by
    shapes.

    Parameters
    ----------
    sdata
        The SpatialData object; the new table is added to it (and written when it is backed).
    values
        Name of an image element (e.g. a dense prediction ``"pixnet_dense"`` or the synthetic truth).
    by
        Name of a shapes element (circles or polygons) sharing a coordinate system with ``values``.
    how
        ``"mean"`` or ``"sum"`` of the pixels of each footprint.
    coverage
        ``"center"`` (a pixel counts when its centre is inside) or ``"fraction"`` (covered fraction).
    channels
        Subset of channels (default: all).
    key_added
        Name of the new table. Default ``f"{values}_by_{by}"``.
    overwrite
        Replace an existing table of that name.

    Returns
    -------
    The table name: ``sdata.tables[key_added]`` with ``X`` (shapes × channels, float32; NaN for a
    shape with no pixel on the image), ``var_names`` = channel names, ``obs`` linked to ``by``
    (``region``, ``instance_id`` = the shapes index) and ``obsm["spatial"]`` = shape centroids in
    the shapes' own coordinates.

    """
    key_added = key_added or f"{values}_by_{by}"
    check_new_names(sdata, [key_added], overwrite)
    store_table(
        sdata,
        key_added,
        aggregate_table(sdata, values=values, by=by, how=how, coverage=coverage, channels=channels),
    )
    return key_added


def store_table(sdata: SpatialData, name: str, table) -> None:
    """Add a table linked by its ``uns['spatialdata_attrs']`` and write it when ``sdata`` is backed."""
    sdata.tables[name] = table
    if sdata.is_backed():
        sdata.write_element(name)


def aggregate_table(
    sdata: SpatialData,
    *,
    values: str,
    by: str,
    how: str = "mean",
    coverage: str = "center",
    channels: Sequence[str] | None = None,
):
    """The AnnData of :func:`aggregate`, not yet added to ``sdata``."""
    from ..model._aggregate import footprint_matrix

    img = full_resolution(sdata.images[values]) if values in sdata.images else None
    if img is None:
        raise KeyError(f"Image {values!r} not found; available images: {list(sdata.images)}.")
    names = (
        [str(c) for c in img.coords["c"].values]
        if "c" in img.coords
        else [str(i) for i in range(img.sizes["c"])]
    )
    data = img.transpose("c", "y", "x").data
    if channels is not None:
        missing = [c for c in channels if c not in names]
        if missing:
            raise KeyError(f"Channels {missing} not in image {values!r}.")
        idx = [names.index(c) for c in channels]
        data, names = data[idx], list(channels)
    fp = shapes_footprints(sdata, by, values)
    h, w = img.sizes["y"], img.sizes["x"]
    A, _ = footprint_matrix(fp, (h, w), how="sum", coverage=coverage, require_inside=False)
    sums = accumulate_blocks(data, A)
    totals = np.asarray(A.sum(1)).ravel()
    if how == "mean":
        sums /= np.maximum(totals, 1e-12)[:, None]
    elif how != "sum":
        raise ValueError(f"how must be 'mean' or 'sum', got {how!r}.")
    sums[totals == 0] = np.nan
    return shapes_table(
        sdata, by, sums, names, {"values": values, "by": by, "how": how, "coverage": coverage}
    )


def shapes_table(sdata: SpatialData, by: str, X: np.ndarray, var_names: Sequence[str], uns: dict):
    """A table with one row per shape of ``by`` (in its order), linked to it.

    ``X`` as float32, ``obs`` = ``region`` / ``instance_id`` (the shapes index), ``obsm["spatial"]`` =
    shape centroids in the shapes' own coordinates, ``uns["stpredict"]`` = ``uns``.
    """
    import anndata as ad
    from spatialdata.models import TableModel

    shp = sdata.shapes[by]
    obs = pd.DataFrame(
        {C.REGION_KEY: pd.Categorical([by] * len(shp)), C.INSTANCE_KEY: shp.index.to_numpy()},
        index=pd.Index(shp.index.astype(str), name=None),
    )
    table = ad.AnnData(
        X=np.asarray(X, np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(list(var_names)))
    )
    cen = shp.geometry.centroid
    table.obsm[C.SPATIAL_KEY] = np.c_[cen.x, cen.y]
    table.uns[C.UNS_KEY] = dict(uns)
    return TableModel.parse(table, region=by, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY)
