"""``pp.pool_footprints``: coarser measurements made exactly from finer ones (sums of counts, unions of shapes)."""

from __future__ import annotations

from typing import Literal

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel
from spatialdata.transformations import get_transformation

from .. import _constants as C
from .._core import ElementWriter
from .._core._validate import check_counts, check_int, check_name
from .._logging import logger

__all__ = ["pool_footprints"]

Grid = Literal["auto", "square", "hex"]

#: A hexagonal rosette (a spot and its six neighbours) in axial coordinates: the index-7 sublattice's basis.
_ROSETTE = np.array([[2, -1], [1, 3]])  # columns: (q, r) of the two basis vectors (2, 1) and (-1, 3)


def _hex_distance(dq: np.ndarray, dr: np.ndarray) -> np.ndarray:
    return (np.abs(dq) + np.abs(dr) + np.abs(dq + dr)) // 2


def _grid_kind(rows: np.ndarray, cols: np.ndarray) -> str:
    """``"hex"`` for Visium's doubled-width hexagonal indices (row + col always even), else ``"square"``."""
    both = (rows + cols) % 2
    return "hex" if rows.size > 1 and not both.any() and (rows % 2).any() else "square"


def _square_blocks(
    rows: np.ndarray, cols: np.ndarray, size: int, complete: bool
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The block (row, col) of each footprint: non-overlapping ``size`` × ``size`` blocks of the grid.

    The blocks' phase (their first row and column, within ``size`` of the grid's corner) is the one with the most
    complete blocks (``complete``) or the fewest blocks (else): tissue edges leave holes, and where the block
    boundaries fall decides how many blocks are whole. Returned with the phase.
    """
    best = None
    for dr in range(size):
        for dc in range(size):
            br, bc = (rows - rows.min() + dr) // size, (cols - cols.min() + dc) // size
            _, counts = np.unique(br * (int(bc.max()) + 1) + bc, return_counts=True)
            score = int((counts == size * size).sum()) if complete else -counts.size
            if best is None or score > best[0]:
                best = (score, br, bc, (dr, dc))
    return best[1], best[2], best[3]


def _hex_rosettes(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rosette of each spot: the hexagonal grid tiled by 7-spot flowers (a spot and its six neighbours).

    Visium indices (``array_row``, ``array_col``, doubled width) become axial coordinates ``q = (col - row) / 2``,
    ``r = row``; the flowers' centres are the sublattice spanned by (2, 1) and (-1, 3), and every spot lies within
    one step of exactly one centre. Returned: the centre's sublattice coordinates (i, j).
    """
    q = (cols - rows) // 2
    r = rows
    frac = np.linalg.solve(_ROSETTE, np.vstack([q, r]).astype(float))  # (2, n)
    base = np.floor(frac).astype(np.int64)
    best_i = np.full(q.size, np.iinfo(np.int64).min)
    best_j = best_i.copy()
    for di in (-1, 0, 1, 2):
        for dj in (-1, 0, 1, 2):
            i, j = base[0] + di, base[1] + dj
            cq = _ROSETTE[0, 0] * i + _ROSETTE[0, 1] * j
            cr = _ROSETTE[1, 0] * i + _ROSETTE[1, 1] * j
            near = _hex_distance(q - cq, r - cr) <= 1
            best_i = np.where(near, i, best_i)
            best_j = np.where(near, j, best_j)
    assert (best_i != np.iinfo(np.int64).min).all()  # the 7-flowers tile the plane
    return best_i, best_j


def _member_geometries(sdata: SpatialData, region: str, ids: np.ndarray) -> tuple[gpd.GeoSeries, dict]:
    """Each member's footprint as a polygon in the coordinates of its element, and the element's transformations."""
    if region in sdata.shapes:
        shp = sdata.shapes[region].loc[ids]
        kinds = set(shp.geometry.geom_type)
        if kinds == {"Point"}:
            if "radius" not in shp:
                raise ValueError(f"Point shapes {region!r} need a 'radius' column (circles) to be pooled.")
            # a 128-gon per disk: its area is within 0.04% of the circle's
            geoms = shp.geometry.buffer(shp["radius"].to_numpy(float), quad_segs=32)
        elif kinds <= {"Polygon", "MultiPolygon"}:
            geoms = shp.geometry
        else:
            raise ValueError(
                f"Shapes {region!r} have geometry types {sorted(kinds)}; only circles and polygons pool."
            )
        return gpd.GeoSeries(geoms.to_numpy()), get_transformation(sdata.shapes[region], get_all=True)
    # a bin-id raster: each id is one pixel, the unit square [x, x+1] x [y, y+1] in the raster's coordinates
    lab = sdata.labels[region]
    arr = (lab["scale0"].image if hasattr(lab, "children") and "scale0" in lab.children else lab).data
    img = np.asarray(arr.compute() if hasattr(arr, "compute") else arr)
    yy, xx = np.nonzero(img)
    pos = pd.Series(np.arange(yy.size), index=img[yy, xx])
    if not pos.index.is_unique:
        raise ValueError(
            f"The labels {region!r} are not a bin-id raster: some ids cover several pixels (a segmentation, or an "
            "upsampled raster). Pooling needs one pixel per bin (as `io.read_visium_hd(bins_as='labels')` writes)."
        )
    missing = ~np.isin(ids, pos.index.to_numpy())
    if missing.any():
        raise ValueError(f"{int(missing.sum())} bin id(s) of the table are not in the raster {region!r}.")
    k = pos.loc[ids].to_numpy()
    boxes = shapely.box(xx[k], yy[k], xx[k] + 1, yy[k] + 1)
    return gpd.GeoSeries(boxes), get_transformation(lab, get_all=True)


def pool_footprints(
    sdata: SpatialData,
    table: str,
    *,
    size: int = 3,
    grid: Grid = "auto",
    complete: bool = True,
    key_added: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Pool measured footprints into coarser ones: exact sums of their counts over exact unions of their shapes.

    The counts of a block of neighbouring spots (or bins) *are* the measurement of the union of their footprints, so
    a coarser table made this way is a real measurement, not a simulation — e.g. to train on coarse labels and score
    against the single spots (issue "finer than its labels"). Blocks do not overlap: each footprint belongs to one
    block at most (overlapping windows would share counts between pooled rows, so their errors would be correlated
    and they would not be independent measurements).

    Parameters
    ----------
    sdata
        The SpatialData holding ``table`` and the shapes (or bin-id raster) it annotates.
    table
        A table of raw counts in ``X`` with ``obs["array_row"]``, ``obs["array_col"]`` (the spot or bin grid), linked
        to one shapes element (circles or polygons) or one bin-id raster (labels).
    size
        Square grids (legacy ST spots, Visium HD bins): blocks of ``size`` × ``size`` grid positions. Their phase
        (where block boundaries fall, within ``size`` positions of the grid's corner) is the one with the most complete
        blocks, or the fewest blocks with ``complete=False``; it is recorded. Hexagonal grids (Visium): must be 7, a
        spot and its six neighbours (the tiling of the plane by such rosettes is unique up to translation; the one
        through the index origin is used).
    grid
        ``"auto"`` (default) reads it from the indices: Visium's doubled-width hexagonal indices have ``array_row +
        array_col`` even everywhere; ``"square"`` or ``"hex"`` say it.
    complete
        Keep only blocks whose every grid position was measured (``size``² or 7 members); with ``False`` a block
        pools whatever members it has.
    key_added
        Name of the new table (default ``f"{table}_pooled{size}"``); its shapes are ``f"{key_added}_shapes"``.
    overwrite
        Replace elements of these names that stpredict wrote earlier.

    Returns
    -------
    The names written, ``[f"{key_added}_shapes", key_added]``: ``tables[key_added]`` (``X`` = summed counts, sparse;
    ``obs["array_row"/"array_col"]`` = the block's index (doubled-width hexagonal indices for rosettes),
    ``obs["n_members"]``; ``obsm["members"]`` = the sparse ``(pooled × table rows)`` membership matrix, so that
    ``X == obsm["members"] @ table.X``; ``obsm["spatial"]`` = the union's centroid in the source element's
    coordinates; ``uns["stpredict"]`` keeps the source's ``reader``/``mpp``/coordinate systems, and ``["pooled_from"]``
    records the source table, its region, grid, block size, phase, grid origin and the source's own record) linked to
    ``shapes[f"{key_added}_shapes"]`` (one polygon or multipolygon per pooled footprint, the exact union of its
    members' shapes, disks as 128-gons, with the source element's transformations).

    Examples
    --------
    Train on 3 × 3 pooled legacy ST spots, score on the single spots::

        stp.pp.pool_footprints(sdata, "spots", size=3)
        model = stp.tl.train(sdata, tables="spots_pooled3")

    """
    if table not in sdata.tables:
        raise KeyError(f"Table {table!r} not found; available tables: {list(sdata.tables)}.")
    size = check_int("size", size, minimum=1)
    if grid not in ("auto", "square", "hex"):
        raise ValueError(f"`grid` must be 'auto', 'square' or 'hex', got {grid!r}.")
    adata = sdata.tables[table]
    missing = [c for c in ("array_row", "array_col") if c not in adata.obs]
    if missing:
        raise ValueError(
            f"Table {table!r} has no {missing}: pooling needs the footprints' grid (spot or bin array indices, as "
            "the readers write). Footprints without a grid (cells, free shapes) cannot be pooled into blocks."
        )
    check_counts(adata.X, f"Table {table!r} (pooling sums raw counts)")
    attrs = adata.uns.get("spatialdata_attrs", {})
    region, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    regions = [region] if isinstance(region, str) else list(region or [])
    if len(regions) != 1:
        raise ValueError(
            f"Table {table!r} annotates {len(regions)} elements ({regions}); pool a table linked to one shapes element "
            "or bin-id raster (one section)."
        )
    region = regions[0]
    if region not in sdata.shapes and region not in sdata.labels:
        raise ValueError(
            f"Table {table!r} annotates {region!r}, which is not a shapes or labels element here."
        )
    rows = adata.obs["array_row"].to_numpy(np.int64)
    cols = adata.obs["array_col"].to_numpy(np.int64)
    kind = _grid_kind(rows, cols) if grid == "auto" else grid
    if kind == "hex":
        if size != 7:
            raise ValueError(
                f"Table {table!r} is on a hexagonal grid (Visium): its blocks are a spot and its six neighbours, "
                f"`size=7` (got {size})."
            )
        if ((rows + cols) % 2).any():
            raise ValueError(
                f"Table {table!r}: hexagonal (doubled-width) indices need array_row + array_col even."
            )
        i, j = _hex_rosettes(rows, cols)
        # (i, j) are axial coordinates of the rosettes' lattice (its basis is closed under 60° rotations):
        # written as doubled-width indices like Visium's, so the pooled table is a hexagonal grid again
        bi, bj = j, 2 * i + j
        full, phase = 7, (0, 0)
    else:
        bi, bj, phase = _square_blocks(rows, cols, size, complete)
        full = size * size
    block = pd.MultiIndex.from_arrays([bi, bj])
    codes, uniques = pd.factorize(block)
    n_members = np.bincount(codes, minlength=len(uniques))
    if len(pd.MultiIndex.from_arrays([rows, cols]).unique()) != len(rows):
        raise ValueError(
            f"Table {table!r} has several rows at one grid position; pooling needs one per position."
        )
    keep = n_members == full if complete else n_members > 0
    if not keep.any():
        raise ValueError(
            f"No complete block: no {'rosette of 7 spots' if kind == 'hex' else f'{size} x {size} block'} of table "
            f"{table!r} has all its members measured (largest: {n_members.max()} of {full}). Choose a smaller `size`, "
            "or pass `complete=False` to pool incomplete blocks."
        )
    new_id = np.full(len(uniques), -1)
    new_id[keep] = np.arange(int(keep.sum()))
    member_of = new_id[codes]
    inside = np.nonzero(member_of >= 0)[0]
    M = sparse.csr_matrix(
        (np.ones(inside.size, np.int32), (member_of[inside], inside)), shape=(int(keep.sum()), adata.n_obs)
    )
    X = M @ sparse.csr_matrix(adata.X)
    X = X.astype(np.int64) if np.issubdtype(X.dtype, np.integer) else X

    key_added = check_name("key_added", key_added if key_added is not None else f"{table}_pooled{size}")
    shapes_name = f"{key_added}_shapes"
    mask = (
        adata.obs[region_key].to_numpy() == region if region_key in adata.obs else np.ones(adata.n_obs, bool)
    )
    if not mask.all():
        raise ValueError(f"Table {table!r} has rows that annotate no element; drop them first.")
    geoms, transformations = _member_geometries(sdata, region, adata.obs[instance_key].to_numpy()[inside])
    groups = pd.Series(np.arange(inside.size)).groupby(member_of[inside])
    unions = [shapely.union_all(geoms.iloc[idx.to_numpy()].to_numpy()) for _, idx in groups]
    pooled_shapes = gpd.GeoDataFrame(geometry=unions)
    centroids = np.c_[pooled_shapes.centroid.x, pooled_shapes.centroid.y]
    b = np.asarray(uniques.tolist()).reshape(-1, 2)[keep]
    index = pd.Index([f"{table}:{r}x{c}" for r, c in b], name="pooled_id")
    obs = pd.DataFrame(
        {
            "array_row": b[:, 0],
            "array_col": b[:, 1],
            "n_members": n_members[keep],
            C.REGION_KEY: pd.Categorical.from_codes(np.zeros(len(b), np.int8), categories=[shapes_name]),
            C.INSTANCE_KEY: np.arange(len(b)),
        },
        index=index,
    )
    out = ad.AnnData(X=X, obs=obs, var=adata.var[[]].copy())
    out.obsm["members"] = M
    out.obsm[C.SPATIAL_KEY] = centroids
    source = dict(adata.uns.get(C.UNS_KEY, {})) if isinstance(adata.uns.get(C.UNS_KEY), dict) else {}
    record = {k: source[k] for k in ("reader", "mpp", "mpp_source", "pixel_cs", "micron_cs") if k in source}
    record["pooled_from"] = {
        "record": source,
        "table": table,
        "region": region,
        "grid": kind,
        "size": int(size),
        "complete": bool(complete),
        "phase": [int(v) for v in phase],
        "grid_origin": [int(rows.min()), int(cols.min())],
        "n_source": int(adata.n_obs),
        "members": "obsm['members']: rows of the source table, in its order",
    }
    out.uns[C.UNS_KEY] = record
    with ElementWriter(sdata, [shapes_name, key_added], overwrite=overwrite, by="pp.pool_footprints") as w:
        w.add(shapes_name, ShapesModel.parse(pooled_shapes, transformations=transformations))
        w.add(
            key_added,
            TableModel.parse(out, region=shapes_name, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY),
        )
    logger.info(
        f"Pooled {inside.size} of {adata.n_obs} footprints of {table!r} into {len(b)} "
        f"{'7-spot rosettes' if kind == 'hex' else f'{size} x {size} blocks'} ({key_added!r}, {shapes_name!r})."
    )
    return [shapes_name, key_added]
