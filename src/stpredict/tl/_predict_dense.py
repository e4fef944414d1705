"""``tl.predict_dense``: whole-slide dense maps and binned tables written back to SpatialData."""

from __future__ import annotations

import atexit
import contextlib
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _constants as C
from .._logging import logger
from .._utils import coarsest_level, full_resolution, pyramid_levels
from ..pp._mpp import get_mpp
from ._aggregate import aggregate_table, check_new_names, store_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..model import PixNet

__all__ = ["predict_dense", "tiles_mask", "tissue_mask"]


def _read_window(levels, box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """RGB window ``(y, x, 3)`` uint8 of full-resolution box ``(x0, y0, x1, y1)`` resampled to ``shape``.

    Read from the coarsest pyramid level that is still at least as fine as the output; outside
    the image is white (slide background).
    """
    from PIL import Image

    x0, y0, x1, y1 = box
    th, tw = shape
    arr, f = coarsest_level(levels, (x1 - x0) / tw)
    lx0, ly0 = math.floor(x0 / f), math.floor(y0 / f)
    lx1, ly1 = math.ceil(x1 / f), math.ceil(y1 / f)
    _, H, W = arr.shape
    win = np.full((ly1 - ly0, lx1 - lx0, 3), 255, np.uint8)
    sy0, sy1, sx0, sx1 = max(ly0, 0), min(ly1, H), max(lx0, 0), min(lx1, W)
    if sy1 > sy0 and sx1 > sx0:
        win[sy0 - ly0 : sy1 - ly0, sx0 - lx0 : sx1 - lx0] = np.moveaxis(
            np.asarray(arr[:, sy0:sy1, sx0:sx1]), 0, -1
        )
    if win.shape[:2] != (th, tw):
        win = np.array(Image.fromarray(win).resize((tw, th), Image.Resampling.BOX))
    return win


def tissue_mask(
    sdata: SpatialData, image_key: str, shape: tuple[int, int], *, threshold: float | None = None
) -> np.ndarray:
    """Boolean tissue mask of an H&E image on a grid of ``shape`` covering the image.

    Computed on a coarse pyramid level (≤ 4 µm/px) from the colour saturation smoothed over ~10 µm
    (H&E tissue is coloured, glass is grey/white) with Otsu's threshold (or ``threshold`` in
    [0, 1]), then resized.
    """
    from scipy.ndimage import binary_closing, binary_fill_holes, gaussian_filter
    from skimage.filters import threshold_otsu
    from skimage.transform import resize

    mpp = get_mpp(sdata, image_key)
    levels = pyramid_levels(sdata.images[image_key])
    # the coarsest level with pixels of at most ~4 µm (and at most ~4k px), smoothed over ~10 µm so that
    # nuclei and stroma average into "tissue" and only glass stays unsaturated
    arr, lf = levels[0]
    for a, f in levels:
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


def tiles_mask(sdata: SpatialData, tiles: str, image_key: str, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask on a ``shape`` grid covering the image: pixels whose centre lies in a shape of ``tiles``."""
    from .._geometry import shapes_footprints
    from ..model._aggregate import footprint_matrix

    if tiles not in sdata.shapes:
        raise KeyError(
            f"Tiles {tiles!r} not found among the shapes {list(sdata.shapes)}; create them with "
            "`stpredict.pp.select_tiles(sdata, key_added=...)`."
        )
    H0, W0 = (full_resolution(sdata.images[image_key]).sizes[d] for d in ("y", "x"))
    fp = shapes_footprints(sdata, tiles, image_key).affine(np.diag([shape[1] / W0, shape[0] / H0, 1.0]))
    A, _ = footprint_matrix(fp, shape, how="sum", require_inside=False)
    mask = np.asarray(A.sum(0)).ravel().reshape(shape) > 0
    if not mask.any():
        raise ValueError(f"No selected tile of {tiles!r} lies on image {image_key!r}.")
    return mask


def _ratio(out_mpp: float, train_mpp: float) -> tuple[int, int]:
    """``(up, down)`` with out_mpp / train_mpp = down / up, one of them 1 (integer ratios only)."""
    r = out_mpp / train_mpp
    for up, down in ((1, round(r)), (round(1 / r), 1)):
        if up >= 1 and down >= 1 and abs(down / up - r) < 1e-6:
            return up, down
    raise ValueError(
        f"out_mpp ({out_mpp}) must be an integer multiple or divisor of the model's train_mpp ({train_mpp}), "
        "so that output pixels tile model pixels exactly."
    )


def _tmpdir(sdata: SpatialData) -> Path:
    base = Path(sdata.path).parent if sdata.is_backed() else None
    path = Path(tempfile.mkdtemp(prefix="stpredict_dense_", dir=base))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _bins_shapes(rows: np.ndarray, cols: np.ndarray, side_px: float, transformations: dict):
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel

    x0, y0 = cols * side_px, rows * side_px
    gdf = gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + side_px, y0 + side_px))
    return ShapesModel.parse(gdf, transformations=transformations)


def predict_dense(
    sdata: SpatialData,
    model: PixNet,
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
    """Run a trained PixNet over a whole H&E image and write the results back to ``sdata``.

    The map is computed block by block as a dask array (so it also runs on a
    ``dask.distributed`` cluster), streamed to zarr, and aggregated into square bins and any
    shapes the user names. On a SpatialData backed by zarr every result is written to disk as soon
    as it is complete (``write_element``), so an interrupted run keeps the earlier elements.

    Parameters
    ----------
    sdata
        SpatialData with an RGB H&E image of known pixel size (:func:`stpredict.pp.get_mpp`).
    model
        A trained :class:`~stpredict.model.PixNet` or :class:`~stpredict.model.LinearProbe` (dense models).
    image_key
        The H&E image. Default: the largest RGB uint8 image (the full-resolution scan).
    key_added
        Prefix of every element written (default ``model.key``: ``"pixnet"``, ``"linear_probe"``).
    out_mpp
        Pixel size of the dense map in µm (default 2, the finest Visium HD bin). Must be an integer
        multiple or divisor of the model's ``train_mpp``.
    bins_um
        Square bin sizes in µm (multiples of ``out_mpp``); bins tile the tissue on the map grid, and
        a bin's value is the mean of the map pixels it covers (so 8 µm = mean of its 2 µm bins).
    shapes
        Names of shapes elements (spots, Visium HD bins, cell polygons) to predict for.
    chunk_size
        Side of a dask block of the dense map, in output pixels (rounded to whole network strides).
    margin
        Context added around each block before running the network and cropped afterwards, in output
        pixels (default ``chunk_size // 4``, rounded up to whole network strides). Blocks do not see
        each other; the margin and stride-aligned windows are what make the map seamless.
    tissue
        Skip blocks without tissue (Otsu on colour saturation, :func:`tissue_mask`); their map is
        **0** (no tissue, no expression) and they get no bins.
    tissue_threshold
        Fixed saturation threshold in [0, 1] instead of Otsu's.
    tiles
        A shapes element of selected tiles, e.g. from :func:`stpredict.pp.select_tiles` (Shannon or
        Otsu selection): only blocks that overlap a selected tile are predicted and only the map
        pixels inside selected tiles get bins; this replaces the ``tissue`` mask.
    max_in_memory
        Bin tables with more values than this (bins × genes) keep ``X`` as a dask array read from the
        dense map instead of loading it into memory (a whole Visium HD area at 2 µm is ~1e7 × 250).
    overwrite
        Replace existing elements with the same names; otherwise an existing name is an error and
        nothing is written.
    device
        Inference device; default :attr:`stpredict.settings.device`.
    progress
        Show a progress bar (local dask schedulers); default :attr:`stpredict.settings.progress_bar`.

    Returns
    -------
    Names of the elements added, in the order they were written:

    - ``images[f"{key_added}_dense"]``: ``(c=genes, y, x)`` float32 at ``out_mpp``, multiscale,
      placed on the H&E in every coordinate system the H&E has;
    - for each bin size ``b``: ``shapes[f"{key_added}_square_00bum_shapes"]`` (squares in H&E pixels)
      and ``tables[f"{key_added}_square_00bum"]`` linked to them (``X`` = predicted expression,
      ``obs["array_row"/"array_col"]``, ``obsm["spatial"]`` = bin centres in H&E pixels);
    - for each name in ``shapes``: ``tables[f"{key_added}_{name}"]`` linked to that shapes element.

    Every table's ``uns["stpredict"]`` records the run (genes, normalisation recipe, mpp, out_mpp, tiling,
    version).

    """
    import anndata as ad
    import dask
    import dask.array as da
    import spatialdata as sd
    import torch
    from spatialdata.models import Image2DModel, TableModel
    from spatialdata.transformations import Scale, get_transformation
    from spatialdata.transformations import Sequence as TSequence

    from .. import __version__
    from .._settings import settings
    from ..io._utils import default_scale_factors
    from ..model._data import default_image_key
    from ..model._train import resolve_device

    if not getattr(model, "dense", False):
        raise TypeError(
            f"{type(model).__name__} predicts one value per footprint, not a dense map; use "
            "`stpredict.tl.predict_shapes(sdata, model, shapes=[...])` for it."
        )
    model._check_trained()
    key_added = key_added or model.key
    image_key = image_key or default_image_key(sdata)
    mpp = get_mpp(sdata, image_key)
    genes = model.genes
    n_genes = len(genes)
    up, down = _ratio(out_mpp, model.train_mpp)
    bins_um = [int(b) for b in bins_um]
    ks = {}
    for b in bins_um:
        k = b / out_mpp
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError(f"Bin size {b} µm is not a multiple of out_mpp={out_mpp} µm.")
        ks[b] = round(k)
    shapes = list(shapes or [])
    for s in shapes:
        if s not in sdata.shapes:
            raise KeyError(f"Shapes {s!r} not found; available shapes: {list(sdata.shapes)}.")
    dense_name = f"{key_added}_dense"
    names = [dense_name]
    for b in bins_um:
        names += [f"{key_added}_{C.square_key(b)}_shapes", f"{key_added}_{C.square_key(b)}"]
    names += [f"{key_added}_{s}" for s in shapes]
    check_new_names(sdata, names, overwrite)

    el = sdata.images[image_key]
    full = full_resolution(el)
    H0, W0 = full.sizes["y"], full.sizes["x"]
    f_out = out_mpp / mpp  # full-res px per output px
    Hd, Wd = math.ceil(H0 / f_out - 1e-9), math.ceil(W0 / f_out - 1e-9)
    # Block windows start on the network's stride grid: a strided CNN is not shift-equivariant, so
    # windows at other phases would give (slightly) different maps and visible seams.
    stride = model.module.stride
    unit = max(1, stride * up // math.gcd(stride * up, down))  # output px spanning whole strides
    while (unit * down) % (stride * up):
        unit += 1
    margin = chunk_size // 4 if margin is None else int(margin)
    chunk_size = max(unit, round(chunk_size / unit) * unit)
    margin = int(math.ceil(margin / unit) * unit)
    if tiles is not None:
        mask = tiles_mask(sdata, tiles, image_key, (Hd, Wd))
    elif tissue:
        mask = tissue_mask(sdata, image_key, (Hd, Wd), threshold=tissue_threshold)
    else:
        mask = np.ones((Hd, Wd), bool)
    levels = pyramid_levels(el)
    dev = resolve_device(device or settings.device)
    net = model.module.to(dev).eval()

    def block(block_info=None):
        (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        if not mask[y0:y1, x0:x1].any():
            return np.zeros((n_genes, y1 - y0, x1 - x0), np.float32)
        wy0, wy1, wx0, wx1 = y0 - margin, y1 + margin, x0 - margin, x1 + margin
        shape_in = ((wy1 - wy0) * down // up, (wx1 - wx0) * down // up)
        img = _read_window(levels, (wx0 * f_out, wy0 * f_out, wx1 * f_out, wy1 * f_out), shape_in)
        with torch.no_grad():
            x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous().to(dev)
            g = net(x)
            if down > 1:
                g = torch.nn.functional.avg_pool2d(g, down)
            elif up > 1:
                g = torch.nn.functional.interpolate(
                    g, size=(wy1 - wy0, wx1 - wx0), mode="bilinear", align_corners=False
                )
            g = g[0, :, margin : margin + (y1 - y0), margin : margin + (x1 - x0)]
        return g.float().cpu().numpy()

    dense = da.map_blocks(
        block,
        dtype=np.float32,
        chunks=((n_genes,), _chunks(Hd, chunk_size), _chunks(Wd, chunk_size)),
        meta=np.empty((0, 0, 0), np.float32),
    )
    tmp = _tmpdir(sdata)
    store = tmp / "dense.zarr"
    logger.info(
        f"Predicting a {n_genes} x {Hd} x {Wd} map at {out_mpp} µm/px ({dense.numblocks[1] * dense.numblocks[2]} blocks, "
        f"{int(mask.mean() * 100)}% tissue)."
    )
    show = settings.progress_bar if progress is None else progress
    from dask.diagnostics import ProgressBar

    try:
        from distributed import default_client

        default_client()
        has_client = True
    except (ImportError, ValueError):
        has_client = False
    ctx = ProgressBar() if (show and not has_client) else contextlib.nullcontext()
    with ctx, dask.config.set({"array.slicing.split_large_chunks": False}):
        da.to_zarr(dense, str(store), overwrite=True)
    model.module.cpu()
    dense = da.from_zarr(str(store))

    params = {
        "model_genes": list(genes),
        "recipe": model.recipe.to_dict(),
        "image_key": image_key,
        "mpp": float(mpp),
        "out_mpp": float(out_mpp),
        "train_mpp": float(model.train_mpp),
        "tiling": {
            "chunk_size": int(chunk_size),
            "margin": int(margin),
            "tissue": bool(tissue),
            "tiles": tiles,
        },
        "stpredict_version": __version__,
    }
    img_ts = get_transformation(el, get_all=True)
    to_img = Scale([f_out, f_out], axes=("x", "y"))
    dense_el = Image2DModel.parse(
        dense,
        dims=("c", "y", "x"),
        c_coords=list(genes),
        scale_factors=default_scale_factors((Hd, Wd), smallest=256) or None,
        transformations={cs: TSequence([to_img, t]) for cs, t in img_ts.items()},
    )
    sdata.images[dense_name] = dense_el
    added = [dense_name]
    if sdata.is_backed():
        sdata.write_element(dense_name)
        sdata.images[dense_name] = sd.read_zarr(sdata.path, selection=("images",)).images[dense_name]
        dense = full_resolution(sdata.images[dense_name]).transpose("c", "y", "x").data
        shutil.rmtree(tmp, ignore_errors=True)  # the map now reads from the store

    for b in bins_um:
        k = ks[b]
        Hk, Wk = Hd // k, Wd // k
        if Hk == 0 or Wk == 0:
            logger.warning(f"The image is smaller than one {b} µm bin; no {b} µm bins.")
            continue
        binned = dense[:, : Hk * k, : Wk * k].reshape(n_genes, Hk, k, Wk, k).mean(axis=(2, 4))
        on = mask[: Hk * k, : Wk * k].reshape(Hk, k, Wk, k).any(axis=(1, 3))
        rows, cols = np.nonzero(on)
        lin = rows * Wk + cols
        X = binned.reshape(n_genes, Hk * Wk)[:, lin].T
        if X.size <= max_in_memory:
            X = np.asarray(X.compute(), dtype=np.float32)
        else:
            X = X.rechunk((min(100_000, len(lin)), n_genes)).astype(np.float32)
        shapes_name, table_name = f"{key_added}_{C.square_key(b)}_shapes", f"{key_added}_{C.square_key(b)}"
        side = k * f_out
        sdata.shapes[shapes_name] = _bins_shapes(rows, cols, side, img_ts)
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
        table.uns[C.UNS_KEY] = {**params, "bin_um": b}
        sdata.tables[table_name] = TableModel.parse(
            table, region=shapes_name, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY
        )
        if sdata.is_backed():
            sdata.write_element(shapes_name)
            sdata.write_element(table_name)
        added += [shapes_name, table_name]

    for s in shapes:
        table = aggregate_table(sdata, values=dense_name, by=s)
        table.uns[C.UNS_KEY] = {**params, "shapes": s}
        store_table(sdata, f"{key_added}_{s}", table)
        added.append(f"{key_added}_{s}")
    logger.info(f"Added {added}.")
    return added


def _chunks(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())
