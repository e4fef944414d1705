"""``tl.predict_dense``: whole-slide dense maps and binned tables written back to SpatialData."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import anndata as ad
import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import spatialdata as sd
from spatialdata.models import Image2DModel, Labels2DModel, ShapesModel, TableModel
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
from .._core._footprints import footprint_matrix, shapes_footprints
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

#: The dense map's value where nothing was predicted (off the tissue, outside ``tiles``): 0, so spatialdata-plot,
#: which refuses NaN, draws it. Bins and named shapes never average over it.
NO_DATA = 0.0


def _scratch_codec():
    """The scratch map's codec: LZ4 with byte shuffle (fast; the map is read once more)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _store_levels(el, scratch, chunk: int) -> None:
    """Compute the coarser levels of a multiscale map one at a time, each from the stored level before it.

    spatialdata writes a multiscale image by computing all its levels in one dask call, each level a chain of
    resamplings from the full resolution; on a whole slide that held several GB of blocks at once (9.5 GB peak
    for a 40 960² px slide). Here each level is spatialdata's own 2× resampling of the previous *stored* level,
    streamed to a scratch zarr, so writing the element copies stored arrays, block by block.
    """
    prev = el["scale0"]["image"].data
    for i in range(1, len(el.children)):
        node = el[f"scale{i}"]
        img = node["image"]
        nxt = Image2DModel.parse(prev, dims=("c", "y", "x"), scale_factors=[2])["scale1"]["image"].data
        if nxt.shape != img.shape:  # spatialdata changed how it builds levels: keep its own chain
            return
        path = scratch / f"dense_scale{i}.zarr"
        nxt = nxt.rechunk((img.shape[0], chunk, chunk))
        with dask.config.set({"array.slicing.split_large_chunks": False}):
            da.to_zarr(nxt, str(path), overwrite=True, compressors=[_scratch_codec()])
        prev = da.from_zarr(str(path))
        node.dataset = node.to_dataset().assign(image=img.copy(data=prev))


def _bins_shapes(rows: np.ndarray, cols: np.ndarray, side_px: float, transformations: dict):
    x0, y0 = cols * side_px, rows * side_px
    gdf = gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + side_px, y0 + side_px))
    return ShapesModel.parse(gdf, transformations=transformations)


def _no_data(dense: da.Array, mask: np.ndarray) -> da.Array:
    """The map with :data:`NO_DATA` wherever ``mask`` is False: glass and unselected tiles are not predicted."""
    if mask.all():
        return dense
    on = da.from_array(mask, chunks=dense.chunks[1:], name=f"stpredict-mask-{uuid.uuid4().hex}")
    return da.where(on[None], dense, np.float32(NO_DATA))


def _shapes_mask(
    sdata: sd.SpatialData, shapes: str, image_key: str, shape: tuple[int, int], f_out: float
) -> np.ndarray:
    """Map pixels (``shape``, ``f_out`` H&E px each) whose centres lie in a shape of ``shapes``."""
    fp = shapes_footprints(sdata, shapes, image_key).affine(np.diag([1 / f_out, 1 / f_out, 1.0]))
    A, _ = footprint_matrix(fp, shape, how="sum", coverage="center", require_inside=False)
    out = np.zeros(shape[0] * shape[1], bool)
    out[A.indices] = True
    return out.reshape(shape)


def _bin_grid(mask: np.ndarray, k: int) -> np.ndarray | None:
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


def _bins(
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
    if k == 1:
        binned = blocks[:, :, 0, :, 0]
    elif mask.all():
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


def _label_dtype(n_cells: int) -> type[np.integer]:
    return np.int32 if n_cells < np.iinfo(np.int32).max else np.int64


def _bin_ids(rows: np.ndarray, cols: np.ndarray, Wk: int, n_cells: int) -> np.ndarray:
    """Bin ids on the grid: ``row * Wk + col + 1`` (0 is the background of a labels raster)."""
    dt = _label_dtype(n_cells)
    return rows.astype(dt) * dt(Wk) + cols.astype(dt) + dt(1)


def _bins_labels(on: np.ndarray, side_px: float, transformations: dict, chunk: int = 4096):
    """A bin-id raster with one pixel per bin (``row * Wk + col + 1``, 0 where there is no bin), built block by block.

    As :func:`spatialdata.rasterize_bins` makes for Visium HD: spatialdata-plot draws it with ``render_labels``
    and a table annotating it colours it; placed on the H&E by a scale of ``side_px`` (H&E px per bin).
    """
    Hk, Wk = on.shape
    dt = _label_dtype(Hk * Wk)
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


def _bin_index(rows: np.ndarray, cols: np.ndarray) -> pd.Index:
    """``"row_col"`` names for many bins without a Python loop (10 million bins: a few seconds)."""
    if len(rows) == 0:
        return pd.Index([], dtype=object)
    names = pd.Series(rows).astype(str).str.cat(pd.Series(cols).astype(str), sep="_")
    return pd.Index(names.to_numpy(dtype=object))


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
    bins_as: Literal["auto", "shapes", "labels"] = "auto",
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
    bins_as
        What the bin tables annotate: ``"shapes"``, one square polygon per bin; ``"labels"``, a bin-id raster
        with one pixel per bin (as :func:`spatialdata.rasterize_bins` makes for Visium HD), which takes 4 bytes
        per bin on disk and nothing in memory until read; ``"auto"`` (default), shapes up to
        1 000 000 bins and labels above (a whole Visium HD capture area has ~10.6 million 2 µm bins).
    {chunk_size}
    {margin}
    tissue
        Predict the tissue only (Otsu on colour saturation, :func:`stpredict.pp.tissue_mask`): map pixels off
        the tissue are not predicted and hold **0**, the no-data value (:func:`stpredict.pl.expression_map`
        leaves them transparent), blocks without tissue never run the network, and bins are written only where
        they touch tissue; a bin at the tissue's edge is the mean of its tissue pixels. The shapes named in
        ``shapes`` are predicted whole, also where they lie on glass. ``False`` predicts every pixel.
    tissue_threshold
        Fixed saturation threshold in [0, 1] instead of Otsu's.
    tiles
        A shapes element of selected tiles, e.g. from :func:`stpredict.pp.select_tiles` (Shannon or
        Otsu selection): only blocks that overlap a selected tile are predicted and only the map
        pixels inside selected tiles are predicted and get bins (the rest is 0); this replaces the
        ``tissue`` mask.
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
      placed on the H&E in every coordinate system the H&E has; 0 (not predicted) off the tissue;
    - for each bin size ``b``: ``tables[f"{{key_added}}_square_00bum"]`` (``X`` = predicted expression,
      ``obs["array_row"/"array_col"]``, ``obsm["spatial"]`` = bin centres in H&E pixels) linked to
      ``shapes[f"{{key_added}}_square_00bum_shapes"]`` (squares in H&E pixels), or with ``bins_as="labels"`` to
      ``labels[f"{{key_added}}_square_00bum_labels"]`` (bin ids ``array_row * n_cols + array_col + 1`` in
      ``obs["instance_id"]``);
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
    if bins_as not in ("auto", "shapes", "labels"):
        raise ValueError(f"`bins_as` must be 'auto', 'shapes' or 'labels', got {bins_as!r}.")
    dense_name = f"{key_added}_dense"
    names = [dense_name]
    for b in bins_um:
        # both: a re-run with overwrite=True that switches representation removes the other one
        names += [f"{key_added}_{C.square_key(b)}_{kind}" for kind in ("shapes", "labels")]
        names += [f"{key_added}_{C.square_key(b)}"]
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
    for s in shapes if not mask.all() else ():  # the shapes a user names are predicted whole, on glass too
        mask |= _shapes_mask(sdata, s, image_key, (Hd, Wd), f_out)
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
        f"map pixels outside the tiles {tiles!r} are 0 (not predicted)"
        if tiles is not None
        else "map pixels off the tissue are 0 (not predicted)"
        if tissue
        else "every pixel is predicted"
    )
    img_ts = get_transformation(el, get_all=True)
    lazy_tables: dict[
        str, tuple[np.ndarray, int]
    ] = {}  # table name -> (bins on the grid, bin size in map px)
    # everything is computed first; the writer adds it to sdata (and its store) only when all of it succeeded
    with writer:
        dense = _no_data(engine.to_dask(mask), mask)
        store = writer.scratch / "dense.zarr"
        logger.info(
            f"Predicting a {n_genes} x {Hd} x {Wd} map at {out_mpp} µm/px ({dense.numblocks[1] * dense.numblocks[2]} "
            f"blocks, {int(mask.mean() * 100)}% tissue)."
        )
        ctx = dask_progress(f"predicting {section_name(sdata, image_key)}", progress=progress)
        with engine.running(device), ctx, dask.config.set({"array.slicing.split_large_chunks": False}):
            # scratch, read once for the bins and the image element: LZ4 with byte shuffle writes 262 MB of a 250-gene
            # block 4x faster than zarr's default Zstd, and smaller (benchmarks/README.md, "predict_dense vs the encoder")
            da.to_zarr(dense, str(store), overwrite=True, compressors=[_scratch_codec()])
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
        _store_levels(dense_el, writer.scratch, chunk=engine.chunk_size)
        writer.add(dense_name, dense_el)
        for b in bins_um:
            k = ks[b]
            table_name = f"{key_added}_{C.square_key(b)}"
            on = _bin_grid(mask, k)
            if on is None:
                logger.warning(f"The image is smaller than one {b} µm bin; no {b} µm bins.")
                continue
            X, rows, cols = _bins(dense, on, k, mask)
            as_labels = bins_as == "labels" or (bins_as == "auto" and len(rows) > C.MAX_BIN_SHAPES)
            region = f"{table_name}_{'labels' if as_labels else 'shapes'}"
            if X.size <= max_in_memory:
                X = np.asarray(X.compute(), dtype=np.float32)
            else:
                lazy_tables[table_name] = (on, k)
            side = k * f_out
            if as_labels:
                instance = _bin_ids(rows, cols, on.shape[1], on.size)
            else:
                instance = np.arange(len(rows))
            obs = pd.DataFrame(
                {
                    "array_row": rows,
                    "array_col": cols,
                    C.REGION_KEY: pd.Categorical.from_codes(
                        np.zeros(len(rows), np.int8), categories=[region]
                    ),
                    C.INSTANCE_KEY: instance,
                },
                index=_bin_index(rows, cols),
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
                "footprint": {
                    "kind": "square bins",
                    "bin_um": b,
                    ("labels" if as_labels else "shapes"): region,
                    "n_bins": len(rows),
                },
            }
            if as_labels:
                writer.add(region, _bins_labels(on, side, img_ts))
            else:
                writer.add(region, _bins_shapes(rows, cols, side, img_ts))
            writer.add(
                table_name,
                TableModel.parse(table, region=region, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY),
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
        for name, (on, k) in lazy_tables.items():
            sdata.tables[name].X = _bins(dense, on, k, mask)[0]
    logger.info(f"Added {added}.")
    return added
