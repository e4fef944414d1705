"""Tile selection: ISG's "Shannon selection" (compressed size) and Otsu on colour saturation."""

from __future__ import annotations

import io

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image
from skimage.filters import threshold_otsu
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel
from spatialdata.transformations import get_transformation

from .. import _constants as C
from .. import _docs
from .._core._image import check_he, full_resolution
from .._core._store import ElementWriter
from .._core._validate import check_name, check_number
from .._logging import logger
from .._types import TileMethod, check_choice

__all__ = ["select_tiles", "shannon_bits"]


def shannon_bits(tile: np.ndarray) -> int:
    """Information content of an RGB tile, approximated by its losslessly (PNG) compressed size in bits.

    ISG (Sec. 3.1) approximates the Shannon information content of a patch by its Kolmogorov
    complexity, which a lossless compressor bounds from above: blank glass compresses to almost
    nothing, textured tissue does not.

    Parameters
    ----------
    tile
        An RGB ``(y, x, 3)`` uint8 tile.

    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buf, format="PNG", optimize=False, compress_level=6)
    return 8 * buf.tell()


@_docs.doc_params(sdata=_docs.sdata, image_key=_docs.image_key, overwrite=_docs.overwrite)
def select_tiles(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    tile_um: float = 112.0,
    method: TileMethod = "shannon",
    threshold: float | None = None,
    key_added: str = "tiles",
    overwrite: bool = False,
) -> list[str]:
    """Score square tiles of an H&E image by information content and keep the informative ones.

    Parameters
    ----------
    {sdata}
    {image_key}
    tile_um
        Tile side in µm; tiles are read at the image's full resolution.
    method
        ``"shannon"``: score = PNG-compressed size of the tile in bits (:func:`shannon_bits`);
        default threshold = mean + one standard deviation of the scores (ISG's rule), or
        ``threshold`` bits. ``"otsu"``: score = mean colour saturation of the tile; default
        threshold = Otsu's threshold over the scores, or ``threshold`` in [0, 1].
    threshold
        Fixed threshold instead of the data-driven one.
    key_added
        Name of the shapes element of the selected tiles; the table ``f"{{key_added}}_scores"``
        holds their scores.
    {overwrite}

    Returns
    -------
    Names written: ``shapes[key_added]`` (the selected tiles as squares in the image's pixel
    coordinates and every coordinate system of the image) and ``tables[f"{{key_added}}_scores"]``
    (linked to them; ``obs["score"]``, ``obs["tile_row"]``, ``obs["tile_col"]``; ``uns["stpredict"]``
    holds the method, threshold, tile size and the score distribution of *all* tiles).

    """
    check_choice("method", method, TileMethod)
    image_key, mpp = check_he(sdata, image_key)
    tile_um = check_number("tile_um", tile_um)
    if threshold is not None:
        threshold = check_number("threshold", threshold, minimum=None)
    key_added = check_name("key_added", key_added)
    names = [key_added, f"{key_added}_scores"]
    writer = ElementWriter(sdata, names, overwrite=overwrite, by="pp.select_tiles")
    img = full_resolution(sdata.images[image_key]).transpose("c", "y", "x").data
    t = max(1, round(tile_um / mpp))
    n_rows, n_cols = img.shape[1] // t, img.shape[2] // t
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"The image is smaller than one {tile_um} µm tile ({t} px).")
    scores = np.zeros((n_rows, n_cols))
    for r in range(n_rows):  # one strip of tiles in memory at a time
        strip = np.moveaxis(np.asarray(img[:, r * t : (r + 1) * t, : n_cols * t]), 0, -1)
        for c in range(n_cols):
            tile = strip[:, c * t : (c + 1) * t]
            if method == "shannon":
                scores[r, c] = shannon_bits(tile)
            else:
                rgb = tile.astype(np.float32)
                mx = rgb.max(-1)
                scores[r, c] = float(((mx - rgb.min(-1)) / np.maximum(mx, 1.0)).mean())
    flat = scores.ravel()
    if threshold is None:
        if method == "shannon":
            threshold = float(flat.mean() + flat.std())
        else:
            threshold = float(threshold_otsu(flat)) if np.ptp(flat) > 0 else float(flat.max())
    keep = scores > threshold
    rows, cols = np.nonzero(keep)
    if rows.size == 0:
        raise ValueError(
            f"No {tile_um:g} µm tile scores above the threshold {threshold:.4g} (scores {flat.min():.4g}–{flat.max():.4g}); "
            "lower `threshold` or use the default."
        )
    logger.info(
        f"Selected {rows.size} of {flat.size} tiles of {tile_um:g} µm ({method}, threshold {threshold:.4g})."
    )
    x0, y0 = cols * t, rows * t
    ts = get_transformation(sdata.images[image_key], get_all=True)
    tiles = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + t, y0 + t)), transformations=ts
    )
    obs = pd.DataFrame(
        {
            "score": scores[rows, cols],
            "tile_row": rows,
            "tile_col": cols,
            C.REGION_KEY: pd.Categorical([key_added] * rows.size),
            C.INSTANCE_KEY: np.arange(rows.size),
        },
        index=pd.Index([f"{r}_{c}" for r, c in zip(rows, cols, strict=True)]),
    )
    table = ad.AnnData(obs=obs)
    table.obsm[C.SPATIAL_KEY] = np.c_[x0 + t / 2, y0 + t / 2]
    table.uns[C.UNS_KEY] = {
        "method": method,
        "threshold": float(threshold),
        "tile_um": float(tile_um),
        "tile_px": int(t),
        "image_key": image_key,
        "n_tiles": int(flat.size),
        "score_mean": float(flat.mean()),
        "score_std": float(flat.std()),
        "units": "bits (PNG-compressed size)" if method == "shannon" else "mean saturation",
    }
    with writer:
        writer.add(key_added, tiles)
        writer.add(
            names[1],
            TableModel.parse(table, region=key_added, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY),
        )
    return names
