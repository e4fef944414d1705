"""Footprints (spots, bins, cells, tiles) and the aggregation operator: dense map → one value per footprint.

A footprint is a disk (spots), a square that may be rotated (Visium HD bins) or any polygon
(cells), given in the pixel coordinates of the map (pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``,
its centre is ``(j + 0.5, i + 0.5)``). The operator is a sparse *footprint × pixel* matrix ``A``;
``A @ G`` aggregates every footprint at once and is differentiable in ``G``.

Membership is exact: a pixel belongs to a footprint when its centre lies inside
(``coverage="center"``), or with weight equal to the covered fraction of the pixel, estimated on an
``s × s`` sub-pixel lattice (``coverage="fraction"``). A footprint that contains no pixel centre
(smaller than a pixel) gets the pixel under its centroid; one with no pixel on the map has an empty
row. Footprints not entirely inside the map can be excluded (:func:`footprint_matrix` returns which
were kept), so training never fits a spot to a truncated footprint.

Footprints come from SpatialData shapes (:func:`shapes_footprints`, :func:`table_footprints`) or from a bin-id
raster (a Labels element with one pixel per bin, :func:`labels_footprints`: the bins are then *grid cells*, a
centre and the two edge vectors every bin shares, never one polygon per bin) through a coordinate system the
element shares with the image (a micron system first). :func:`covered` is the one
"is this point inside these shapes" check (footprint centres in selected tiles, map pixels in tiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree
from spatialdata import SpatialData
from spatialdata.transformations import get_transformation

from .._types import Aggregation, Coverage, check_choice
from ._image import full_resolution
from ._mpp import is_micron_cs

__all__ = [
    "Cover",
    "Footprints",
    "covered",
    "footprint_diameters",
    "footprint_matrix",
    "labels_footprints",
    "shapes_footprints",
    "table_footprints",
    "tiles_cover",
]


@dataclass
class Footprints:
    """Footprints in map pixel coordinates: disks, polygons or the cells of a grid.

    Disks are ``centres`` + ``radii``; polygons are shapely ``geometries``; grid cells are ``centres`` + ``edges``,
    the 2 × 2 matrix whose columns are the two edge vectors every cell shares (parallelograms, e.g. slightly
    rotated square bins, at 16 bytes per cell).
    """

    centres: np.ndarray  # (n, 2) x, y
    radii: np.ndarray | None = None  # (n,) for disks
    geometries: np.ndarray | None = None  # shapely polygons
    edges: np.ndarray | None = None  # (2, 2) columns: edge vectors of every grid cell

    def __post_init__(self) -> None:
        self.centres = np.asarray(self.centres, dtype=float).reshape(-1, 2)
        if sum(v is not None for v in (self.radii, self.geometries, self.edges)) != 1:
            raise ValueError("Give either radii (disks), geometries (polygons) or edges (grid cells).")
        if self.radii is not None:
            self.radii = np.broadcast_to(np.asarray(self.radii, dtype=float), (len(self.centres),)).copy()
        if self.edges is not None:
            self.edges = np.asarray(self.edges, dtype=float).reshape(2, 2)
            if abs(np.linalg.det(self.edges)) < 1e-12:
                raise ValueError(f"Grid cells need two independent edge vectors, got {self.edges.tolist()}.")

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def is_disk(self) -> bool:
        return self.radii is not None

    @property
    def is_grid(self) -> bool:
        return self.edges is not None

    @property
    def kind(self) -> str:
        """``"disk"``, ``"grid"`` or ``"polygon"``."""
        return "disk" if self.is_disk else "grid" if self.is_grid else "polygon"

    def bounds(self) -> np.ndarray:
        """``(n, 4)`` xmin, ymin, xmax, ymax."""
        if self.is_disk:
            r = self.radii[:, None]
            return np.hstack([self.centres - r, self.centres + r])
        if self.is_grid:
            half = 0.5 * np.abs(self.edges).sum(1)  # x and y half-extent of one cell
            return np.hstack([self.centres - half, self.centres + half])
        return shapely.bounds(self.geometries)

    def subset(self, idx: np.ndarray) -> Footprints:
        if self.is_disk:
            return Footprints(self.centres[idx], radii=self.radii[idx])
        if self.is_grid:
            return Footprints(self.centres[idx], edges=self.edges)
        return Footprints(self.centres[idx], geometries=self.geometries[idx])

    def affine(self, matrix: np.ndarray) -> Footprints:
        """Apply a 3×3 affine matrix on ``(x, y, 1)``; disk radii scale by ``sqrt(|det|)``."""
        m = np.asarray(matrix, dtype=float)
        c = self.centres @ m[:2, :2].T + m[:2, 2]
        if self.is_disk:
            return Footprints(c, radii=self.radii * np.sqrt(abs(np.linalg.det(m[:2, :2]))))
        if self.is_grid:
            return Footprints(c, edges=m[:2, :2] @ self.edges)
        geoms = shapely.transform(self.geometries, lambda p: p @ m[:2, :2].T + m[:2, 2])
        return Footprints(c, geometries=geoms)

    def shifted(self, dx: float, dy: float) -> Footprints:
        """Translate by ``(dx, dy)`` pixels."""
        return self.affine(np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1]]))


def _candidates(fp: Footprints, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (footprint, row, col) pairs whose pixel lies in the footprint's bounding box, vectorised."""
    h, w = shape
    b = fp.bounds()
    x0 = np.clip(np.floor(b[:, 0]).astype(int), 0, w)
    y0 = np.clip(np.floor(b[:, 1]).astype(int), 0, h)
    x1 = np.clip(np.ceil(b[:, 2]).astype(int), 0, w)
    y1 = np.clip(np.ceil(b[:, 3]).astype(int), 0, h)
    nx, ny = np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)
    sizes = nx * ny
    fid = np.repeat(np.arange(len(fp)), sizes)
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    local = np.arange(sizes.sum()) - start
    nxr = np.repeat(nx, sizes)
    rows = np.repeat(y0, sizes) + local // np.maximum(nxr, 1)
    cols = np.repeat(x0, sizes) + local % np.maximum(nxr, 1)
    return fid, rows, cols


def _inside(fp: Footprints, fid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if fp.is_disk:
        c = fp.centres[fid]
        return (x - c[:, 0]) ** 2 + (y - c[:, 1]) ** 2 <= fp.radii[fid] ** 2
    if fp.is_grid:
        return _in_cell(fp.edges, x - fp.centres[fid, 0], y - fp.centres[fid, 1])
    return shapely.contains_xy(fp.geometries[fid], x, y)


def _in_cell(edges: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Whether offsets ``(dx, dy)`` from a cell's centre lie in it.

    Cell coordinates in ``[-1/2, 1/2)``: half-open, so neighbouring cells of a grid never share a point.
    """
    inv = np.linalg.inv(edges)
    u = inv[0, 0] * dx + inv[0, 1] * dy
    v = inv[1, 0] * dx + inv[1, 1] * dy
    return (u >= -0.5) & (u < 0.5) & (v >= -0.5) & (v < 0.5)


def footprint_matrix(
    fp: Footprints,
    shape: tuple[int, int],
    *,
    how: Aggregation = "mean",
    coverage: Coverage = "center",
    supersample: int = 4,
    require_inside: bool = True,
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The sparse footprint × pixel aggregation matrix for a map of ``shape`` (rows, cols).

    Parameters
    ----------
    fp
        Footprints in map pixel coordinates.
    shape
        ``(H, W)`` of the map; columns of the matrix index pixels in row-major order.
    how
        ``"mean"`` (rows sum to 1: the map is an expression level) or ``"sum"``.
    coverage
        ``"center"`` (a pixel belongs when its centre is inside) or ``"fraction"`` (weight = covered
        fraction of the pixel, on a ``supersample × supersample`` lattice).
    supersample
        Sub-pixel lattice size for ``coverage="fraction"``.
    require_inside
        Keep only footprints entirely inside the map (the training rule).

    Returns
    -------
    ``(A, kept)``: the ``(len(kept), H*W)`` CSR matrix and the indices of the footprints it covers.

    """
    check_choice("how", how, Aggregation)
    check_choice("coverage", coverage, Coverage)
    h, w = shape
    kept = np.arange(len(fp))
    if require_inside and len(fp):
        b = fp.bounds()
        kept = np.nonzero((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h))[0]
    sub = fp.subset(kept)
    fid, rows, cols = _candidates(sub, shape)
    if coverage == "center":
        weight = _inside(sub, fid, cols + 0.5, rows + 0.5).astype(float)
    else:
        s = int(supersample)
        offs = (np.arange(s) + 0.5) / s
        weight = np.zeros(fid.size)
        for dy in offs:
            for dx in offs:
                weight += _inside(sub, fid, cols + dx, rows + dy)
        weight /= s * s
    nz = weight > 0
    A = sparse.csr_matrix((weight[nz], (fid[nz], rows[nz] * w + cols[nz])), shape=(len(sub), h * w))
    empty = np.nonzero(np.diff(A.indptr) == 0)[0]
    c = sub.centres[empty]
    on_map = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
    empty, c = empty[on_map], c[on_map]
    if empty.size:  # smaller than a pixel: take the pixel under the centroid
        r, q = np.floor(c[:, 1]).astype(int), np.floor(c[:, 0]).astype(int)
        A = A + sparse.csr_matrix((np.ones(empty.size), (empty, r * w + q)), shape=A.shape)
    if how == "mean":
        totals = np.asarray(A.sum(1)).ravel()
        A = sparse.diags(1.0 / np.maximum(totals, 1e-12)) @ A
    return A.tocsr(), kept


def footprint_diameters(fp: Footprints) -> np.ndarray:
    """Diameter of disks, or the larger side of the bounding box of polygons, in the footprints' pixels."""
    if fp.is_disk:
        return 2 * fp.radii
    b = fp.bounds()
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


class Cover:
    """Which points lie inside at least one footprint (the membership rule of :func:`footprint_matrix`).

    Prepared once (a k-d tree of disk or grid-cell centres, or the prepared union of polygons) for many queries.
    Disks include their boundary; polygons do not (``shapely.contains_xy``); grid cells are half-open.
    """

    def __init__(self, fp: Footprints) -> None:
        self.fp = fp
        self._tree = None
        self._union = None
        if len(fp) and (fp.is_disk or fp.is_grid):
            self._tree = cKDTree(fp.centres)
        elif len(fp):
            self._union = shapely.union_all(fp.geometries)
            shapely.prepare(self._union)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
        if self._union is not None:
            return shapely.contains_xy(self._union, x, y)
        out = np.zeros(x.size, bool)
        if self._tree is None or x.size == 0:
            return out
        fp = self.fp
        pts = np.c_[x, y]
        if fp.is_grid:  # half the longer diagonal reaches every point of a cell
            reach = 0.5 * max(
                np.linalg.norm(fp.edges.sum(1)), np.linalg.norm(fp.edges[:, 0] - fp.edges[:, 1])
            )
        else:
            reach = float(fp.radii.max())
        cand = self._tree.query_ball_point(pts, reach * (1 + 1e-9), return_sorted=False)
        lens = np.fromiter((len(c) for c in cand), int, len(cand))
        if lens.sum():
            pid = np.repeat(np.arange(len(cand)), lens)
            fid = np.concatenate([np.asarray(c, int) for c in cand if len(c)])
            out[pid[_inside(fp, fid, pts[pid, 0], pts[pid, 1])]] = True
        return out


def covered(fp: Footprints, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each point ``(x, y)`` lies inside at least one footprint (see :class:`Cover`)."""
    return Cover(fp)(x, y)


def _affine(t) -> np.ndarray:
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def shapes_footprints(
    sdata: SpatialData, shapes_key: str, image_key: str, instances: np.ndarray | None = None
) -> Footprints:
    """Footprints of a shapes element in the full-resolution pixel grid of an image.

    The two are related through a coordinate system they share (a micron system first).
    ``instances`` selects and orders shapes by index (default: all, in shapes order).
    """
    if shapes_key not in sdata.shapes:
        raise KeyError(f"Shapes {shapes_key!r} not found; available shapes: {list(sdata.shapes)}.")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; available images: {list(sdata.images)}.")
    shp = sdata.shapes[shapes_key]
    M = _to_image(sdata, shp, shapes_key, image_key, "Shapes")
    if instances is not None:
        missing = ~np.isin(np.asarray(instances), shp.index.to_numpy())
        if missing.any():
            raise ValueError(
                f"{int(missing.sum())} instance(s) have no shape in {shapes_key!r} (e.g. {list(np.asarray(instances)[missing][:5])})."
            )
        shp = shp.loc[np.asarray(instances)]
    kinds = set(shp.geometry.geom_type)
    if kinds == {"Point"}:
        if "radius" not in shp:
            raise ValueError(f"Point shapes {shapes_key!r} need a 'radius' column (circles).")
        fp = Footprints(np.c_[shp.geometry.x, shp.geometry.y], radii=shp["radius"].to_numpy(float))
    elif kinds <= {"Polygon", "MultiPolygon"}:
        c = shp.geometry.centroid
        fp = Footprints(np.c_[c.x, c.y], geometries=shp.geometry.to_numpy())
    else:
        raise ValueError(f"Shapes {shapes_key!r} have unsupported geometry types {sorted(kinds)}.")
    return fp.affine(M)


def _to_image(sdata: SpatialData, element: Any, key: str, image_key: str, what: str) -> np.ndarray:
    """The 3×3 affine from an element's intrinsic coordinates to the image's full-resolution pixels."""
    img_ts = get_transformation(sdata.images[image_key], get_all=True)
    el_ts = get_transformation(element, get_all=True)
    common = sorted((cs for cs in el_ts if cs in img_ts), key=lambda cs: not is_micron_cs(cs))
    if not common:
        raise ValueError(
            f"{what} {key!r} and image {image_key!r} share no coordinate system ({what.lower()}: {sorted(el_ts)}, "
            f"image: {sorted(img_ts)}); they cannot be aligned."
        )
    return np.linalg.inv(_affine(img_ts[common[0]])) @ _affine(el_ts[common[0]])


def labels_footprints(
    sdata: SpatialData, labels_key: str, image_key: str, instances: np.ndarray | None = None
) -> Footprints:
    """Bins of a bin-id raster as grid cells in the full-resolution pixel grid of an image.

    The raster has one pixel per bin, as :func:`spatialdata.rasterize_bins` and
    ``tl.predict_dense(bins_as="labels")`` make it.

    ``instances`` selects and orders bins by id (default: every non-zero id, in raster order). A raster whose ids
    cover more than one pixel (cell segmentations) is refused: its footprints are not bins.
    """
    if labels_key not in sdata.labels:
        raise KeyError(f"Labels {labels_key!r} not found; available labels: {list(sdata.labels)}.")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; available images: {list(sdata.images)}.")
    el = sdata.labels[labels_key]
    M = _to_image(sdata, el, labels_key, image_key, "Labels")
    raster = np.asarray(full_resolution(el).data)
    r, c = np.nonzero(raster)
    ids = raster[r, c]
    del raster
    index = pd.Index(ids)
    if not index.is_unique:
        raise ValueError(
            f"Labels {labels_key!r} have ids covering several pixels (e.g. {ids[index.duplicated()][:3].tolist()}): "
            "only bin-id rasters with one pixel per bin (spatialdata.rasterize_bins, "
            "tl.predict_dense(bins_as='labels')) can be footprints."
        )
    if instances is not None:
        pos = index.get_indexer(np.asarray(instances))
        if (pos < 0).any():
            missing = np.asarray(instances)[pos < 0]
            raise ValueError(
                f"{int(missing.size)} instance(s) have no pixel in {labels_key!r} (e.g. {missing[:5].tolist()})."
            )
        r, c = r[pos], c[pos]
    return Footprints(np.c_[c + 0.5, r + 0.5], edges=np.eye(2)).affine(M)


def describe_shapes(sdata: SpatialData, shapes_key: str, image_key: str, mpp: float) -> dict[str, Any]:
    """The footprints of a shapes element in words and numbers (for the records of prediction tables).

    ``{"kind": "shapes", "shapes": ..., "geometry": "circle" | "polygon", "n_shapes": ...,
    "median_diameter_um": ...}``: the diameter of circles, the larger side of the bounding box of polygons,
    measured on up to 1000 shapes spread over the element, in µm of the image (``mpp`` µm per pixel).
    """
    shp = sdata.shapes[shapes_key]
    rec: dict[str, Any] = {"kind": "shapes", "shapes": shapes_key, "n_shapes": len(shp)}
    if len(shp):
        pick = shp.index.to_numpy()[np.unique(np.linspace(0, len(shp) - 1, min(len(shp), 1000)).astype(int))]
        fp = shapes_footprints(sdata, shapes_key, image_key, instances=pick)
        rec["geometry"] = "circle" if fp.is_disk else "polygon"
        rec["median_diameter_um"] = float(np.median(footprint_diameters(fp)) * mpp)
    return rec


def tiles_cover(sdata: SpatialData, tiles: str, image_key: str) -> Cover:
    """A :class:`Cover` of the shapes ``tiles`` in the full-resolution pixels of ``image_key``.

    ``tiles`` is typically a selection of tiles (:func:`stpredict.pp.select_tiles`).
    """
    if tiles not in sdata.shapes:
        raise KeyError(
            f"Tiles {tiles!r} not found among the shapes {list(sdata.shapes)}; create them with "
            "`stpredict.pp.select_tiles(sdata, key_added=...)`."
        )
    return Cover(shapes_footprints(sdata, tiles, image_key))


def table_footprints(sdata: SpatialData, table_name: str, image_key: str) -> tuple[Footprints, np.ndarray]:
    """Footprints of a table's linked shapes in the image's full-resolution pixel coordinates.

    Returns
    -------
    ``(footprints, rows)``: footprints in the order of ``rows`` (table row indices that have a shape).

    """
    if table_name not in sdata.tables:
        raise KeyError(f"Table {table_name!r} not found; available tables: {list(sdata.tables)}.")
    table: AnnData = sdata.tables[table_name]
    attrs = table.uns.get("spatialdata_attrs", {})
    region, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    regions = [region] if isinstance(region, str) else list(region or [])
    if not regions:
        raise ValueError(
            f"Table {table_name!r} is not linked to shapes (no spatialdata region); parse it with TableModel."
        )
    parts, rows = [], []
    for reg in regions:
        if reg not in sdata.shapes and reg not in sdata.labels:
            raise ValueError(
                f"Table {table_name!r} annotates {reg!r}, which is neither a shapes element nor a labels element "
                "(bin-id raster) of this SpatialData."
            )
        mask = (
            (table.obs[region_key] == reg).to_numpy()
            if region_key in table.obs
            else np.ones(table.n_obs, bool)
        )
        ids = table.obs.loc[mask, instance_key].to_numpy()
        try:
            if reg in sdata.labels:
                parts.append(labels_footprints(sdata, reg, image_key, instances=ids))
            else:
                parts.append(shapes_footprints(sdata, reg, image_key, instances=ids))
        except ValueError as exc:
            raise ValueError(f"Table {table_name!r}: {exc}") from exc
        rows.append(np.nonzero(mask)[0])
    if len(parts) == 1:
        return parts[0], rows[0]
    if len({f.kind for f in parts}) > 1 or (
        parts[0].is_grid and any(not np.allclose(f.edges, parts[0].edges) for f in parts)
    ):
        raise ValueError(
            f"Table {table_name!r} mixes footprint kinds (circles, polygons, bins of different grids) across "
            "regions; split it."
        )
    centres = np.vstack([f.centres for f in parts])
    if parts[0].is_grid:
        fp = Footprints(centres, edges=parts[0].edges)
    elif parts[0].is_disk:
        fp = Footprints(centres, radii=np.concatenate([f.radii for f in parts]))
    else:
        fp = Footprints(centres, geometries=np.concatenate([f.geometries for f in parts]))
    return fp, np.concatenate(rows)
