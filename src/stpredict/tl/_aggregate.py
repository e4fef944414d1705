"""``tl.aggregate``: exact image-by-shapes aggregation (what spatialdata's ``aggregate`` does not do)."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
from anndata import AnnData
from spatialdata import SpatialData

from .. import _docs
from .._core import (
    ElementWriter,
    aggregate_footprints,
    full_resolution,
    shapes_footprints,
    shapes_table,
)
from .._core._latent import map_head
from .._core._validate import check_name, check_names
from .._types import Aggregation, Coverage, check_choice

__all__ = ["aggregate", "aggregate_table"]


@_docs.doc_params(how=_docs.how, coverage=_docs.coverage, overwrite=_docs.overwrite)
def aggregate(
    sdata: SpatialData,
    *,
    values: str,
    by: str,
    how: Aggregation = "mean",
    coverage: Coverage = "center",
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
        Name of an image element (e.g. a dense prediction ``"pixnet_dense"`` or the synthetic truth). Of a latent
        map (``tl.predict_dense(map_as="latent")``), the genes: its linear head applied to the latent aggregates and
        the share of pixels with data, which gives what a map of genes gives (0 where nothing was predicted).
    by
        Name of a shapes element (circles or polygons) sharing a coordinate system with ``values``.
    {how}
    {coverage}
    channels
        Subset of channels (default: all).
    key_added
        Name of the new table. Default ``f"{{values}}_by_{{by}}"``.
    {overwrite}

    Returns
    -------
    The table name: ``sdata.tables[key_added]`` with ``X`` (shapes × channels, float32; NaN for a
    shape with no pixel on the image), ``var_names`` = channel names, ``obs`` linked to ``by``
    (``region``, ``instance_id`` = the shapes index) and ``obsm["spatial"]`` = shape centroids in
    the shapes' own coordinates.

    """
    key_added = check_name("key_added", f"{values}_by_{by}" if key_added is None else key_added)
    with ElementWriter(sdata, [key_added], overwrite=overwrite, by="tl.aggregate") as w:
        w.add(
            key_added,
            aggregate_table(sdata, values=values, by=by, how=how, coverage=coverage, channels=channels),
        )
    return key_added


def aggregate_table(
    sdata: SpatialData,
    *,
    values: str,
    by: str,
    how: Aggregation = "mean",
    coverage: Coverage = "center",
    channels: Sequence[str] | None = None,
) -> AnnData:
    """The AnnData of :func:`aggregate`, not yet added to ``sdata``."""
    check_choice("how", how, Aggregation)
    check_choice("coverage", coverage, Coverage)
    check_names("values", check_name("values", values), available=list(sdata.images), kind="image")
    check_names("by", by, available=list(sdata.shapes), kind="shapes")
    img = full_resolution(sdata.images[values])
    head = map_head(sdata, values)
    if head is not None:  # a latent map: the genes are its head, applied to the latent channels' aggregates
        weight, bias, genes = head
        if channels is not None:
            idx = _channel_index(channels, genes, f"the latent map {values!r}'s head")
            weight, bias, genes = weight[idx], bias[idx], [genes[i] for i in idx]
        data = img.transpose("c", "y", "x").data
        # with the share of the footprint's pixels that hold data (latent 0 in every channel: not predicted, where
        # the genes are 0 too), a gene's mean or sum is exact: weight @ latent + share * bias
        has_data = (data != 0).any(axis=0, keepdims=True).astype(np.float32)
        both = da.concatenate([data.astype(np.float32), has_data], axis=0).rechunk({0: -1})
        agg = aggregate_footprints(both, shapes_footprints(sdata, by, values), how=how, coverage=coverage)
        X = agg[:, :-1] @ weight.T.astype(np.float64) + agg[:, -1:] * bias.astype(np.float64)
        return shapes_table(
            sdata, by, X, genes, {"values": values, "by": by, "how": how, "coverage": coverage}
        )
    names = (
        [str(c) for c in img.coords["c"].values]
        if "c" in img.coords
        else [str(i) for i in range(img.sizes["c"])]
    )
    data = img.transpose("c", "y", "x").data
    if channels is not None:
        idx = _channel_index(channels, names, f"image {values!r}")
        data, names = data[idx], [names[i] for i in idx]
    X = aggregate_footprints(data, shapes_footprints(sdata, by, values), how=how, coverage=coverage)
    return shapes_table(sdata, by, X, names, {"values": values, "by": by, "how": how, "coverage": coverage})


def _channel_index(channels: Sequence[str], names: Sequence[str], where: str) -> list[int]:
    """Positions of ``channels`` in ``names``; a KeyError naming the missing ones and ``where`` they were looked for."""
    channels = check_names("channels", channels)
    missing = [c for c in channels if c not in names]
    if missing:
        raise KeyError(f"Channels {missing} not in {where}.")
    return [list(names).index(c) for c in channels]
