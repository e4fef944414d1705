"""``tl.predict_dense``: whole-slide dense maps and binned tables written back to SpatialData."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import anndata as ad
import dask
import dask.threaded
import numpy as np
import pandas as pd
import spatialdata as sd
from dask.base import get_scheduler
from spatialdata.models import TableModel
from spatialdata.transformations import Scale, get_transformation
from spatialdata.transformations import Sequence as TSequence

from .. import _constants as C
from .. import _docs
from .._core import (
    ElementWriter,
    check_he,
    describe_shapes,
    drop_none,
    full_resolution,
    section_name,
)
from .._core._aggregate import map_pixel_values
from .._core._bins import bin_grid, bin_ids, bin_means, bin_names, bins_labels, bins_shapes
from .._core._footprints import footprint_matrix, shapes_footprints
from .._core._image import level_paths
from .._core._latent import LATENT_PREFIX, apply_head, head_name, head_table, map_head
from .._core._table_write import release_memory
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
from .._types import BinsAs, MapAs, MapDtype, check_choice
from ..pp._tissue import pyramid_tiles_mask, pyramid_tissue_mask
from ._aggregate import aggregate_table
from ._records import prediction_record, values_text

__all__ = ["predict_dense"]

from ._dense_blocks import (
    MAP_COMPRESSOR,
    _block_order,
    _fill_levels,
    _map_skeleton,
    _parts_X,
    _predict_block,
)


def _shapes_mask(
    sdata: sd.SpatialData, shapes: str, image_key: str, shape: tuple[int, int], f_out: float
) -> np.ndarray:
    """Map pixels (``shape``, ``f_out`` H&E px each) whose centres lie in a shape of ``shapes``."""
    fp = shapes_footprints(sdata, shapes, image_key).affine(np.diag([1 / f_out, 1 / f_out, 1.0]))
    A, _ = footprint_matrix(fp, shape, how="sum", coverage="center", require_inside=False)
    out = np.zeros(shape[0] * shape[1], bool)
    out[A.indices] = True
    return out.reshape(shape)


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
    bins_as: BinsAs = "auto",
    chunk_size: int = 512,
    margin: int | None = None,
    tissue: bool = True,
    tissue_threshold: float | None = None,
    tiles: str | None = None,
    max_in_memory: float = 2e8,
    max_pixel_bins: int | None = C.MAX_PIXEL_BINS,
    dtype: MapDtype = "float32",
    map_as: MapAs = "genes",
    overwrite: bool = False,
    device: str | None = None,
    progress: bool | None = None,
) -> list[str]:
    """Run a trained dense model over a whole H&E image and write the results back to ``sdata``.

    The map is computed block by block by the model's dense engine, one dask task per block that touches the
    tissue (so it also runs on a ``dask.distributed`` cluster): each task runs the network, writes its block into
    the map's stored full-resolution level (the map is written once, Blosc-LZ4) and reduces it to the block's
    square bins while it is in memory; the coarser levels of the map are then computed from the stored level, and
    the shapes the user names aggregated from it. Nothing is added to ``sdata`` until all of it is computed; on a SpatialData
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
        per bin on disk and nothing in memory until read; ``"auto"`` (default), labels for bins of one map
        pixel (the 2 µm bins of a 2 µm map, as :func:`stpredict.io.read_visium_hd` reads measured 2 µm bins) and
        for tables of more than 1 000 000 bins (a whole Visium HD capture area has ~10.6 million 2 µm bins), shapes
        otherwise.
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
        Bin tables with more values than this (bins × genes, all bin sizes together) keep ``X`` as a dask array
        read from disk instead of loading it into memory (a whole Visium HD area at 8 µm is ~6.6e5 × 250).
    max_pixel_bins
        The most bins a table of bins of one map pixel (the 2 µm bins of a 2 µm map) is built for: default
        15 000 000, a whole Visium HD capture area (~10.6 million 2 µm bins) and a half. Above it the map holds
        every value and that table is not written, with a warning: such a table's ``X`` is the map, but its
        ``obs`` (names, rows, columns, bin ids) and centres take ~200 bytes a bin in memory wherever it is built
        or read (:func:`spatialdata.read_zarr`), 13.6 GB for the 63.6 million 2 µm bins of a 20 × 20 mm slide
        (``benchmarks/README.md``). ``None``: no limit. Bins of several map pixels (8, 16 µm) are always built.
    dtype
        The stored map's precision: ``"float32"`` (default) or ``"float16"``, half the size on disk and in
        memory when read (log1p values to about 3 significant digits: 0.004 at 8, the top of the log scale of
        a gene at 3000 counts in 10 000). Bins and shape tables are always computed from the float32 map.
        :func:`stpredict.pl.expression_map` draws a float16 map; spatialdata-plot's ``render_images`` cannot
        (scipy's affine transform has no float16), so keep the default for it.
    map_as
        What the stored map holds. ``"genes"`` (default): one channel per gene, which spatialdata-plot, napari and
        any reader of the store draw directly. ``"latent"``: the network's last features before its linear 1×1
        head (64 channels for the default PixNet instead of 250 genes: a quarter of the bytes to compress and
        write, and the head is never applied to every pixel), with the head in ``tables[f"{{key_added}}_dense_head"]``;
        a gene is ``weight @ latent + bias`` at every pixel and, the head being linear, the head of the latent mean
        over every bin and shape, so the tables are the same as with ``"genes"`` (up to float rounding; at a coarser
        pyramid level a pixel that also covers glass, where the genes' map averages in 0, is not), and
        :func:`stpredict.pl.expression_map`, :func:`stpredict.tl.aggregate`, :func:`stpredict.tl.decode_map`
        (a map of chosen genes as an image element) and :func:`stpredict.io.read_table` read genes from it. Only
        for models whose output is that head (PixNet with ``map_space="log"`` and the identity activation).
        The fastest choice for many slides (``benchmarks/README.md``, "predict_dense against the network's forward
        pass"). With ``dtype="float16"`` each latent channel is rounded and a gene sums 64 of them through the
        head, so its error is larger than a float16 map of genes'.
    {overwrite}
    {device}
    progress
        Show a progress bar (local dask schedulers); default :attr:`stpredict.settings.progress_bar`.

    Returns
    -------
    Names of the elements added, in the order they were written:

    - ``images[f"{{key_added}}_dense"]``: ``(c=genes, y, x)`` float32 at ``out_mpp``, multiscale,
      placed on the H&E in every coordinate system the H&E has; 0 (not predicted) off the tissue; with
      ``map_as="latent"`` ``(c=latent_00…, y, x)``, and ``tables[f"{{key_added}}_dense_head"]`` its head;
    - for each bin size ``b``: ``tables[f"{{key_added}}_square_00bum"]`` (``X`` = predicted expression; for
      bins of one map pixel, e.g. 2 µm bins of a 2 µm map, ``X`` is the map itself and is not stored a second
      time: in ``sdata`` it is a dask array read from the map, and :func:`stpredict.io.read_table` reads it so
      from a store, where :func:`spatialdata.read_zarr` gives ``X=None``; ``uns["stpredict"]["X"]`` names the map;
      ``obs["array_row"/"array_col"]``, ``obsm["spatial"]`` = bin centres in H&E pixels) linked to
      ``shapes[f"{{key_added}}_square_00bum_shapes"]`` (squares in H&E pixels), or with ``bins_as="labels"`` to
      ``labels[f"{{key_added}}_square_00bum_labels"]`` (bin ids ``array_row * n_cols + array_col + 1`` in
      ``obs["instance_id"]``); a table of bins of one map pixel is written only up to ``max_pixel_bins`` bins;
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
    check_choice("map_as", map_as, MapAs)
    engine = model.engine(
        sdata,
        image_key=image_key,
        out_mpp=out_mpp,
        chunk_size=chunk_size,
        margin=margin,
        latent=map_as == "latent",
    )
    head = engine.head() if map_as == "latent" else None

    def to_genes(X: Any) -> Any:  # rows of the stored map's channels -> genes
        return X if head is None else apply_head(X, *head)

    channels = list(genes) if head is None else [f"{LATENT_PREFIX}{i:02d}" for i in range(engine.n_genes)]
    max_in_memory = check_number("max_in_memory", max_in_memory, minimum=0, inclusive=True)
    if max_pixel_bins is not None:
        max_pixel_bins = check_int("max_pixel_bins", max_pixel_bins, minimum=0)
    check_choice("dtype", dtype, MapDtype)
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
    check_choice("bins_as", bins_as, BinsAs)
    dense_name = f"{key_added}_dense"
    names = [dense_name]
    if head is not None or map_head(sdata, dense_name) is not None:  # a re-run as genes removes the old head
        names.append(head_name(dense_name))
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
        mask = pyramid_tiles_mask(sdata, tiles, image_key, engine.pyramid.shape, (Hd, Wd))
    elif tissue:
        mask = pyramid_tissue_mask(engine.pyramid, mpp, (Hd, Wd), threshold=tissue_threshold)
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
        "map_as": map_as,
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
    lazy_tables: dict[str, tuple[str, Any]] = {}  # table name -> where its X is read from after the commit
    img_ts = get_transformation(el, get_all=True)
    map_ts = {cs: TSequence([Scale([f_out, f_out], axes=("x", "y")), t]) for cs, t in img_ts.items()}
    chunk = engine.chunk_size
    ey, ex = np.r_[0:Hd:chunk, Hd], np.r_[0:Wd:chunk, Wd]
    blocks = [  # the blocks that touch the mask, row-major: the only ones the network runs on
        (int(y0), int(y1), int(x0), int(x1))
        for y0, y1 in itertools.pairwise(ey)
        for x0, x1 in itertools.pairwise(ex)
        if mask[y0:y1, x0:x1].any()
    ]
    grids = {b: bin_grid(mask, ks[b]) for b in bins_um}
    for b, on in grids.items():
        if on is None:
            logger.warning(f"The image is smaller than one {b} µm bin; no {b} µm bins.")
        elif ks[b] == 1 and max_pixel_bins is not None and (n := int(on.sum())) > max_pixel_bins:
            logger.warning(
                f"No {b} µm bin table: its {n / 1e6:.1f} million bins are the map's pixels, more than "
                f"`max_pixel_bins`={max_pixel_bins:_}. The map {dense_name!r} holds every {b} µm value "
                "(`tl.aggregate`, `pl.expression_map` and `tl.decode_map` read it); the table would take about "
                f"{n * 200 / 2**30:.0f} GiB of memory here and whenever the store is read. Pass "
                "`max_pixel_bins=None` to build it anyway."
            )
            grids[b] = None
    n_bins = {b: int(on.sum()) for b, on in grids.items() if on is not None}
    if sum(n_bins.values()) > C.WARN_BINS:  # said before the network runs, not after
        logger.warning(
            "The bin tables will have "
            + ", ".join(f"{n / 1e6:.1f} million {b} µm bins" for b, n in n_bins.items())
            + f"; their metadata (names, rows, columns, centres) is built in memory, about "
            f"{sum(n_bins.values()) * 200 / 2**30:.0f} GiB (benchmarks/README.md). On a whole slide leave "
            "`max_pixel_bins` at its default or pass `bins_um=(8, 16)`: the map holds every 2 µm value."
        )
    # bins reduced from the blocks while they are in memory (sizes that tile a block); 1-pixel bins are the map
    in_pass = sorted(
        {ks[b] for b, on in grids.items() if on is not None and ks[b] > 1 and chunk % ks[b] == 0}
    )
    on_k = {ks[b]: on for b, on in grids.items() if on is not None}
    order = {k: _block_order(on_k[k], k, blocks) for k in in_pass}
    in_memory = sum(len(order[k][0]) for k in in_pass) * n_genes <= max_in_memory
    # everything is computed first; the writer adds it to sdata (and its store) only when all of it succeeded
    with writer:
        skeleton = _map_skeleton(
            channels, (Hd, Wd), dtype, chunk, map_ts, per_chunk=None if head is None else len(channels)
        )
        element_dir = writer.stage(dense_name, skeleton, raster_compressor=MAP_COMPRESSOR)
        if head is not None:
            head_tbl = TableModel.parse(
                head_table(
                    *head,
                    genes,
                    channels,
                    {
                        **params,
                        "head_of": dense_name,
                        "values": "the linear head of the latent map: a gene's predicted value at a map pixel "
                        "is X[gene] @ latent + obs['bias'][gene] (0 where the latent map is 0: not predicted)",
                    },
                )
            )
        levels = level_paths(element_dir)
        level1 = levels[1] if len(levels) > 1 and chunk % 2 == 0 else None
        parts = None if in_memory else writer.scratch / f"bins-{uuid.uuid4().hex[:8]}"
        if parts is not None:
            parts.mkdir()
        logger.info(
            f"Predicting a {n_genes} x {Hd} x {Wd} map at {out_mpp} µm/px"
            + ("" if head is None else f", stored as {len(channels)} latent channels")
            + f" ({len(blocks)} of "
            f"{(len(ey) - 1) * (len(ex) - 1)} blocks touch the tissue, {int(mask.mean() * 100)}% of the map)."
        )
        token = uuid.uuid4().hex
        # the engine is one key that every task depends on: shipped once per distributed worker
        eng = dask.delayed(engine, name=f"stpredict-engine-{token}", traverse=False)
        tasks = [
            dask.delayed(_predict_block, pure=False)(
                eng,
                y0,
                y1,
                x0,
                x1,
                mask[y0:y1, x0:x1],
                levels[0],
                level1,
                in_pass,
                None if parts is None else str(parts),
                head,
            )
            for y0, y1, x0, x1 in blocks
        ]
        ctx = dask_progress(f"predicting {section_name(sdata, image_key)}", progress=progress)
        # on the local threaded scheduler one block at a time, with all of torch's threads: as fast as two at once
        # on the 2-core machine and half the memory (a 250-gene block of 512² px peaks at ~0.6 GB in the network);
        # a dask.distributed cluster runs as many as its workers have threads
        local = get_scheduler(collections=tasks) is dask.threaded.get
        with engine.running(device), ctx:
            results = dask.compute(*tasks, **({"num_workers": 1} if local else {}))
        release_memory()
        _fill_levels(levels, start=1 if level1 is None else 2)
        release_memory()
        dense_el = writer.read_staged(dense_name)
        writer.add(dense_name, dense_el)
        if head is not None:
            writer.add(head_name(dense_name), head_tbl)
        stored = full_resolution(dense_el).transpose("c", "y", "x").data
        for b in bins_um:
            k, on = ks[b], grids[b]
            if on is None:
                continue
            table_name = f"{key_added}_{C.square_key(b)}"
            X: Any
            if k in in_pass:
                rows, cols, counts = order[k]
                i = in_pass.index(k)
                if parts is None:
                    X = np.empty((int(counts.sum()), n_genes), np.float32)
                    at = 0
                    for r in results:  # into one array, each block's part dropped once copied
                        X[at : at + len(r[i])] = r[i]
                        at += len(r[i])
                        r[i] = None
                else:
                    X = _parts_X(parts, k, blocks, counts, n_genes)
                    lazy_tables[table_name] = ("parts", None)
            elif k == 1:  # the bins are the map's pixels: X is the map, not a second copy of it
                rows, cols, _ = _block_order(on, 1, blocks)
                X = None
                lazy_tables[table_name] = ("map", (rows, cols))
            else:  # a bin size that does not tile the blocks: from the stored map
                X, rows, cols = bin_means(stored, on, k, mask)
                X = to_genes(X)
                if X.size <= max_in_memory:
                    X = np.asarray(X.compute(), dtype=np.float32)
                else:
                    lazy_tables[table_name] = ("bins", (on, k))
            as_labels = bins_as == "labels" or (
                bins_as == "auto" and (k == 1 or len(rows) > C.MAX_BIN_SHAPES)
            )
            region = f"{table_name}_{'labels' if as_labels else 'shapes'}"
            side = k * f_out
            if as_labels:
                instance = bin_ids(rows, cols, on.shape[1], on.size)
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
                index=bin_names(rows, cols),
            )
            table = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
            table.obsm[C.SPATIAL_KEY] = np.c_[(cols + 0.5) * side, (rows + 0.5) * side]
            what = f"the mean of the dense map {dense_name!r} ({out_mpp:g} µm/px) over one {b} µm square bin"
            if X is None:
                what = (
                    f"the dense map {dense_name!r} ({out_mpp:g} µm/px) at one {b} µm bin, i.e. one map pixel. X is "
                    "not stored a second time: read this table with stpredict.io.read_table (X lazily from the map)"
                )
            table.uns[C.UNS_KEY] = {
                **params,
                "values": values_text(model, what),
                "bin_um": b,
                "footprint": {
                    "kind": "square bins",
                    "bin_um": b,
                    ("labels" if as_labels else "shapes"): region,
                    "n_bins": len(rows),
                },
                **({"X": {"map": dense_name}} if X is None else {}),
            }
            if as_labels:
                writer.add(region, bins_labels(on, side, img_ts))
            else:
                writer.add(region, bins_shapes(rows, cols, side, img_ts))
            writer.add(
                table_name,
                TableModel.parse(table, region=region, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY),
            )
        release_memory()
        view = sd.SpatialData(
            images={dense_name: dense_el},
            shapes={s: sdata.shapes[s] for s in shapes},
            tables={} if head is None else {head_name(dense_name): head_tbl},
        )
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
    if (
        lazy_tables
    ):  # X that was read from scratch or is the map: point it at what is now in sdata (and its store)
        dense = full_resolution(sdata.images[dense_name]).transpose("c", "y", "x").data
        store = writer.store
        for name, (kind, info) in lazy_tables.items():
            if kind == "map":
                sdata.tables[name].X = to_genes(map_pixel_values(dense, *info))
            elif kind == "bins":
                sdata.tables[name].X = to_genes(bin_means(dense, *info, mask)[0])
            elif (
                store is not None
            ):  # the parts were in the transaction folder, now gone: the stored table's X
                import zarr

                sdata.tables[name].X = ad.experimental.read_elem_lazy(
                    zarr.open_group(str(store / "tables" / name), mode="r")["X"]
                )
    logger.info(f"Added {added}.")
    return added
