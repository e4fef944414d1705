"""``tl.predict_dense``: whole-slide dense maps and binned tables written back to SpatialData."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import spatialdata as sd
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Scale, get_transformation
from spatialdata.transformations import Sequence as TSequence

from .. import _constants as C
from .. import _docs
from .._core import (
    ElementWriter,
    check_he,
    default_scale_factors,
    describe_shapes,
    drop_none,
    full_resolution,
    section_name,
)
from .._core._validate import (
    check_int,
    check_model,
    check_name,
    check_names,
    check_number,
    check_sequence,
    check_unique,
)
from .._logging import logger
from .._progress import dask_progress
from ..pp._tissue import tiles_mask, tissue_mask
from ._aggregate import aggregate_table
from ._records import prediction_record, values_text

__all__ = ["predict_dense"]


def _bins_shapes(rows: np.ndarray, cols: np.ndarray, side_px: float, transformations: dict):
    x0, y0 = cols * side_px, rows * side_px
    gdf = gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + side_px, y0 + side_px))
    return ShapesModel.parse(gdf, transformations=transformations)


def _bins(dense: da.Array, mask: np.ndarray, k: int) -> tuple[da.Array, np.ndarray, np.ndarray] | None:
    """Lazy mean of ``dense`` over k × k bins that touch the mask: ``(X bins × genes, rows, cols)``."""
    n_genes, Hd, Wd = dense.shape
    Hk, Wk = Hd // k, Wd // k
    if Hk == 0 or Wk == 0:
        return None
    binned = dense[:, : Hk * k, : Wk * k].reshape(n_genes, Hk, k, Wk, k).mean(axis=(2, 4))
    on = mask[: Hk * k, : Wk * k].reshape(Hk, k, Wk, k).any(axis=(1, 3))
    rows, cols = np.nonzero(on)
    X = binned.reshape(n_genes, Hk * Wk)[:, rows * Wk + cols].T
    return X.rechunk((min(100_000, max(len(rows), 1)), n_genes)).astype(np.float32), rows, cols


@_docs.doc_params(
    sdata=_docs.sdata,
    image_key=_docs.image_key,
    key_added=_docs.key_added_prefix,
    chunk_size=_docs.chunk_size,
    margin=_docs.margin,
    overwrite=_docs.overwrite,
    device=_docs.device,
)
def predict_dense(
    sdata: sd.SpatialData,
    model: Any,
    *,
    image_key: str | None = None,
    key_added: str | None = None,
    out_mpp: float = 2.0,
    bins_um: Sequence[int] = C.VISIUM_HD_BINS_UM,
    shapes: Sequence[str] | None = None,
    chunk_size: int = 512,
    margin: int | None = None,
    tissue: bool = True,
    tissue_threshold: float | None = None,
    tiles: str | None = None,
    max_in_memory: float = 2e8,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool | None = None,
) -> list[str]:
    """Run a trained dense model over a whole H&E image and write the results back to ``sdata``.

    The map is computed block by block by the model's dense engine as a dask array (so it also runs on a
    ``dask.distributed`` cluster), streamed to a scratch zarr, and aggregated into square bins and any
    shapes the user names. Nothing is added to ``sdata`` until all of it is computed; on a SpatialData
    backed by zarr the elements are staged inside the store (in its hidden ``.stpredict`` folder) and swapped
    in together, so a failure or a killed run leaves ``sdata`` and the store as they were, and a re-run
    cleans up what a killed run left (:func:`stpredict.io.recover_store`).

    Parameters
    ----------
    {sdata}
    model
        A trained dense model: :class:`~stpredict.model.PixNet` or :class:`~stpredict.model.LinearProbe`.
    {image_key}
    {key_added}
    out_mpp
        Pixel size of the dense map in µm (default 2, the finest Visium HD bin). Must be an integer
        multiple or divisor of the model's ``train_mpp``.
    bins_um
        Square bin sizes in µm (multiples of ``out_mpp``); bins tile the tissue on the map grid, and
        a bin's value is the mean of the map pixels it covers (so 8 µm = mean of its 2 µm bins).
    shapes
        Names of shapes elements (spots, Visium HD bins, cell polygons) to predict for.
    {chunk_size}
    {margin}
    tissue
        Skip blocks without tissue (Otsu on colour saturation, :func:`stpredict.pp.tissue_mask`); their
        map is **0** (no tissue, no expression) and they get no bins.
    tissue_threshold
        Fixed saturation threshold in [0, 1] instead of Otsu's.
    tiles
        A shapes element of selected tiles, e.g. from :func:`stpredict.pp.select_tiles` (Shannon or
        Otsu selection): only blocks that overlap a selected tile are predicted and only the map
        pixels inside selected tiles get bins; this replaces the ``tissue`` mask.
    max_in_memory
        Bin tables with more values than this (bins × genes) keep ``X`` as a dask array read from the
        dense map instead of loading it into memory (a whole Visium HD area at 2 µm is ~1e7 × 250).
    {overwrite}
    {device}
    progress
        Show a progress bar (local dask schedulers); default :attr:`stpredict.settings.progress_bar`.

    Returns
    -------
    Names of the elements added, in the order they were written:

    - ``images[f"{{key_added}}_dense"]``: ``(c=genes, y, x)`` float32 at ``out_mpp``, multiscale,
      placed on the H&E in every coordinate system the H&E has;
    - for each bin size ``b``: ``shapes[f"{{key_added}}_square_00bum_shapes"]`` (squares in H&E pixels)
      and ``tables[f"{{key_added}}_square_00bum"]`` linked to them (``X`` = predicted expression,
      ``obs["array_row"/"array_col"]``, ``obsm["spatial"]`` = bin centres in H&E pixels);
    - for each name in ``shapes``: ``tables[f"{{key_added}}_{{name}}"]`` linked to that shapes element.

    Every table's ``uns["stpredict"]`` says what its ``X`` holds (``values``, in words: the recipe's
    log-normalised units and the footprint a row averages over), which model made it (``model``,
    ``model_info``: key, encoder and its initial weights, architecture, checkpoint folder and weights
    checksum when saved or loaded), the genes (``model_genes``, ``n_genes``), the normalisation
    ``recipe``, the image (``image_key``, ``mpp``), ``train_mpp``, ``out_mpp``, the ``map`` element, the
    ``footprint`` (bin size in µm, or the shapes' geometry and median diameter), the tiling and the
    version; only strings, numbers, lists and dicts, so it survives writing to zarr. (spatialdata does
    not write an image's ``attrs``, so the map's record is its tables'.)

    Examples
    --------
    Predict a held-out section and use its 8 µm bins like measured ones::

        stp.tl.predict_dense(sdata, model, shapes=["C5_spots"])
        bins = sdata.tables["pixnet_square_008um"]
        sc.pp.neighbors(bins)
        sc.tl.leiden(bins)
        stp.pl.expression_map(sdata, "ERBB2")

    See :func:`stpredict.tl.evaluate` to score the ``pixnet_C5_spots`` table against the measured spots.

    """
    check_model(model, dense=True)
    key_added = check_name("key_added", model.key if key_added is None else key_added)
    image_key, mpp = check_he(sdata, image_key)
    genes = model.genes
    n_genes = len(genes)
    out_mpp = check_number("out_mpp", out_mpp)
    chunk_size = check_int("chunk_size", chunk_size, minimum=16)
    margin = None if margin is None else check_int("margin", margin, minimum=0)
    engine = model.engine(sdata, image_key=image_key, out_mpp=out_mpp, chunk_size=chunk_size, margin=margin)
    max_in_memory = check_number("max_in_memory", max_in_memory, minimum=0, inclusive=True)
    if tissue_threshold is not None:
        tissue_threshold = check_number(
            "tissue_threshold", tissue_threshold, minimum=0, maximum=1, inclusive=True
        )
    if tiles is not None:
        check_names("tiles", tiles, available=list(sdata.shapes), kind="shapes")
    bins_um = [
        check_int("bins_um", b) for b in check_sequence("bins_um", bins_um)
    ]  # whole µm, as Space Ranger
    check_unique("bins_um", bins_um)
    ks = {}
    for b in bins_um:
        k = b / out_mpp
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError(
                f"Bin size {b} µm is not a multiple of out_mpp={out_mpp:g} µm; choose bins that are multiples of "
                "`out_mpp`, or change `out_mpp`."
            )
        ks[b] = round(k)
    shapes = check_names("shapes", shapes or [], available=list(sdata.shapes), kind="shapes")
    dense_name = f"{key_added}_dense"
    names = [dense_name]
    for b in bins_um:
        names += [f"{key_added}_{C.square_key(b)}_shapes", f"{key_added}_{C.square_key(b)}"]
    names += [f"{key_added}_{s}" for s in shapes]
    writer = ElementWriter(sdata, names, overwrite=overwrite, by="tl.predict_dense")

    el = sdata.images[image_key]
    _, Hd, Wd = engine.shape
    f_out = engine.f_out  # full-resolution px per output px
    if tiles is not None:
        mask = tiles_mask(sdata, tiles, image_key, (Hd, Wd))
    elif tissue:
        mask = tissue_mask(sdata, image_key, (Hd, Wd), threshold=tissue_threshold)
    else:
        mask = np.ones((Hd, Wd), bool)
    if not mask.any():
        raise ValueError(
            f"No tissue found in image {image_key!r}: "
            + (
                f"no map pixel lies in a tile of {tiles!r}."
                if tiles is not None
                else "the tissue mask (Otsu on colour saturation"
                + (f", threshold {tissue_threshold:g}" if tissue_threshold is not None else "")
                + ") is empty. Pass `tissue=False` to predict everywhere, or a lower `tissue_threshold`."
            )
        )
    params = {
        **prediction_record(model, image_key=image_key, mpp=mpp),
        "out_mpp": float(out_mpp),
        "map": dense_name,
        "tiling": drop_none(
            {
                "chunk_size": int(engine.chunk_size),
                "margin": int(engine.margin),
                "tissue": bool(tissue),
                "tiles": tiles,
            }
        ),
    }
    outside = (
        f"map pixels outside the tiles {tiles!r} are 0"
        if tiles is not None
        else "map pixels in blocks without tissue are 0"
        if tissue
        else "every block is predicted"
    )
    img_ts = get_transformation(el, get_all=True)
    lazy_tables: dict[str, int] = {}  # table name -> bin size in map pixels
    # everything is computed first; the writer adds it to sdata (and its store) only when all of it succeeded
    with writer:
        dense = engine.to_dask(mask)
        store = writer.scratch / "dense.zarr"
        logger.info(
            f"Predicting a {n_genes} x {Hd} x {Wd} map at {out_mpp} µm/px ({dense.numblocks[1] * dense.numblocks[2]} "
            f"blocks, {int(mask.mean() * 100)}% tissue)."
        )
        ctx = dask_progress(f"predicting {section_name(sdata, image_key)}", progress=progress)
        with engine.running(device), ctx, dask.config.set({"array.slicing.split_large_chunks": False}):
            da.to_zarr(dense, str(store), overwrite=True)
        dense = da.from_zarr(str(store))
        dense_el = Image2DModel.parse(
            dense,
            dims=("c", "y", "x"),
            c_coords=list(genes),
            scale_factors=default_scale_factors((Hd, Wd), smallest=256) or None,
            transformations={
                cs: TSequence([Scale([f_out, f_out], axes=("x", "y")), t]) for cs, t in img_ts.items()
            },
        )
        writer.add(dense_name, dense_el)
        for b in bins_um:
            k = ks[b]
            shapes_name, table_name = (
                f"{key_added}_{C.square_key(b)}_shapes",
                f"{key_added}_{C.square_key(b)}",
            )
            binned = _bins(dense, mask, k)
            if binned is None:
                logger.warning(f"The image is smaller than one {b} µm bin; no {b} µm bins.")
                continue
            X, rows, cols = binned
            if X.size <= max_in_memory:
                X = np.asarray(X.compute(), dtype=np.float32)
            else:
                lazy_tables[table_name] = k
            side = k * f_out
            obs = pd.DataFrame(
                {
                    "array_row": rows,
                    "array_col": cols,
                    C.REGION_KEY: pd.Categorical([shapes_name] * len(rows)),
                    C.INSTANCE_KEY: np.arange(len(rows)),
                },
                index=pd.Index([f"{r}_{c}" for r, c in zip(rows, cols, strict=True)]),
            )
            table = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
            table.obsm[C.SPATIAL_KEY] = np.c_[(cols + 0.5) * side, (rows + 0.5) * side]
            table.uns[C.UNS_KEY] = {
                **params,
                "values": values_text(
                    model,
                    f"the mean of the dense map {dense_name!r} ({out_mpp:g} µm/px) over one {b} µm square bin",
                ),
                "bin_um": b,
                "footprint": {"kind": "square bins", "bin_um": b, "shapes": shapes_name},
            }
            writer.add(shapes_name, _bins_shapes(rows, cols, side, img_ts))
            writer.add(
                table_name,
                TableModel.parse(
                    table, region=shapes_name, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY
                ),
            )
        view = sd.SpatialData(images={dense_name: dense_el}, shapes={s: sdata.shapes[s] for s in shapes})
        for s in shapes:
            table = aggregate_table(view, values=dense_name, by=s)
            table.uns[C.UNS_KEY] = {
                **params,
                "values": values_text(
                    model,
                    f"the mean of the dense map {dense_name!r} ({out_mpp:g} µm/px) over the map pixels whose centres "
                    f"lie in one shape of {s!r} ({outside})",
                ),
                "shapes": s,
                "footprint": describe_shapes(sdata, s, image_key, mpp),
            }
            writer.add(f"{key_added}_{s}", table)
    added = list(writer.elements)
    if lazy_tables:  # their X read the scratch copy of the map: point them at the map that is now in sdata
        dense = full_resolution(sdata.images[dense_name]).transpose("c", "y", "x").data
        for name, k in lazy_tables.items():
            sdata.tables[name].X = _bins(dense, mask, k)[0]
    logger.info(f"Added {added}.")
    return added
