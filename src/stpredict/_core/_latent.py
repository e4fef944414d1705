"""Latent maps: a map element of a model's last features, and the linear head that turns them into genes.

``tl.predict_dense(map_as="latent")`` stores the dense map as the network's last decoder features (64 channels for
the default PixNet) instead of its genes (250 by default), with the model's 1×1 head as a table
``tables[f"{map}_head"]`` (``X`` = weight, genes × channels; ``obs["bias"]``). The head is linear, so a gene's value
at a pixel is the head of the latent values, and its mean over pixels that all hold data (bins, named shapes) the head
of their latent mean; over pixels of which some hold none (latent 0 in every channel, where a gene is 0 too) it is
``weight @ mean + share * bias`` with the share of pixels with data (``tl.aggregate`` does so). This module is what the readers (``pl.expression_map``, ``tl.aggregate``, ``io.read_table``) use to
see the genes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd

from .. import _constants as C

__all__ = [
    "LATENT_PREFIX",
    "apply_head",
    "decode",
    "decode_lazy",
    "head_name",
    "head_table",
    "map_head",
    "read_head",
]

#: Channel names of a latent map: ``latent_00``, ``latent_01``, ...
LATENT_PREFIX = "latent_"


def head_name(map_name: str) -> str:
    """The table that holds the head of the latent map ``map_name``."""
    return f"{map_name}_head"


def head_table(
    weight: np.ndarray, bias: np.ndarray, genes: Sequence[str], channels: Sequence[str], record: dict
) -> ad.AnnData:
    """The head of a latent map as an AnnData: genes × channels weights in ``X``, ``obs["bias"]``."""
    table = ad.AnnData(
        X=np.asarray(weight, np.float32),
        obs=pd.DataFrame({"bias": np.asarray(bias, np.float32)}, index=pd.Index(list(genes))),
        var=pd.DataFrame(index=pd.Index(list(channels))),
    )
    table.uns[C.UNS_KEY] = record
    return table


def _from_table(table: ad.AnnData, map_name: str, channels: Sequence[str] | None) -> tuple | None:
    """The head in ``table`` if it is the head of ``map_name`` (with ``channels``, the map's); else ``None``."""
    record = table.uns.get(C.UNS_KEY, {})
    weight = np.asarray(table.X, np.float32) if table.X is not None else None
    ok = (
        isinstance(record, dict)
        and record.get("head_of") == map_name
        and "bias" in table.obs
        and weight is not None
        and weight.ndim == 2
        and (
            channels is None
            or (len(channels) == weight.shape[1] and all(str(c).startswith(LATENT_PREFIX) for c in channels))
        )
    )
    if not ok:
        from .._logging import logger

        logger.warning(
            f"The table {head_name(map_name)!r} is not the head of the latent map {map_name!r} (no matching "
            f"uns[{C.UNS_KEY!r}]['head_of'], obs['bias'] or latent channels): {map_name!r} is read as it is."
        )
        return None
    return weight, table.obs["bias"].to_numpy(np.float32), [str(g) for g in table.obs_names]


def _channels(sdata: Any, map_name: str) -> list[str] | None:
    images = getattr(sdata, "images", {})
    if map_name not in images:
        return None
    el = images[map_name]
    arr = el["scale0"]["image"] if hasattr(el, "children") and "scale0" in el.children else el
    return [str(c) for c in arr.coords["c"].values] if "c" in arr.coords else None


def map_head(sdata: Any, map_name: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(weight, bias, genes)`` of the latent map ``map_name`` of ``sdata``; ``None`` for a map of genes.

    A table named like a head that is not this map's head (or a map whose channels are not latent) reads as no head,
    with a warning.
    """
    table = sdata.tables.get(head_name(map_name)) if hasattr(sdata, "tables") else None
    if table is None:
        return None
    return _from_table(table, map_name, _channels(sdata, map_name))


def read_head(store: Any, map_name: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """:func:`map_head` from a SpatialData zarr store (a folder) without reading its other tables."""
    import zarr

    folder = store / "tables" / head_name(map_name)
    if not folder.is_dir():
        return None
    return _from_table(ad.io.read_elem(zarr.open_group(str(folder), mode="r")), map_name, None)


def apply_head(X: Any, weight: np.ndarray, bias: np.ndarray) -> Any:
    """Rows of latent values ``(n, channels)`` (numpy or dask) to genes ``(n, n_genes)`` float32."""
    if isinstance(X, da.Array):
        X = X.rechunk({1: -1})
        return X.map_blocks(
            apply_head, weight, bias, chunks=(X.chunks[0], (weight.shape[0],)), dtype=np.float32
        )
    out = np.asarray(X, np.float32) @ weight.T
    out += bias
    return out


def decode(latent: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A block of a latent map ``(channels, ...)`` to genes ``(n_genes, ...)``; 0 where nothing was predicted.

    A pixel whose every channel is 0 is the map's no-data value (off the tissue) and decodes to 0, as a map of genes
    holds there; ``weight``/``bias`` may hold a subset of the genes.
    """
    latent = np.asarray(latent, np.float32)
    out = np.tensordot(weight, latent, axes=(1, 0))
    out += bias.reshape(-1, *([1] * (latent.ndim - 1)))
    nodata = ~np.any(latent != 0, axis=0)
    if nodata.any():
        out[:, nodata] = 0.0
    return out.astype(np.float32, copy=False)


def decode_lazy(latent: da.Array, weight: np.ndarray, bias: np.ndarray) -> da.Array:
    """A latent map ``(channels, y, x)`` (dask) to the genes of ``weight``/``bias``, lazily, chunk by chunk."""
    latent = latent.rechunk({0: -1})
    return latent.map_blocks(
        decode,
        weight,
        bias,
        chunks=((weight.shape[0],), *latent.chunks[1:]),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
