"""Data layer: SpatialData (image + shapes + table) → tiles, footprints and targets.

Owns every pixel-size and coordinate decision: the image is resampled to the training pixel
size with :func:`stpredict.pp.get_mpp`, and footprints are moved into that pixel grid through the
micron coordinate system the image and the shapes share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._geometry import shapes_footprints
from .._logging import logger
from .._utils import coarsest_level, full_resolution, pyramid_levels
from ..pp._mpp import get_mpp
from ._aggregate import Footprints

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = [
    "Recipe",
    "SectionData",
    "default_image_key",
    "in_tiles",
    "load_section",
    "normalize_counts",
    "resample_image",
    "select_genes",
    "table_footprints",
]


@dataclass
class Recipe:
    """How raw counts become targets: per-footprint total → ``target_sum``, then log1p, on ``genes``."""

    genes: list[str]
    target_sum: float = 1e4
    log1p: bool = True

    def to_dict(self) -> dict:
        return {"genes": list(self.genes), "target_sum": float(self.target_sum), "log1p": bool(self.log1p)}


def _counts(table: AnnData, layer: str | None = None):
    X = table.layers[layer] if layer else table.X
    return X.tocsr() if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X))


def normalize_counts(table: AnnData, recipe: Recipe, *, layer: str | None = None) -> np.ndarray:
    """Apply the recipe to a table's counts: ``log1p(x / total * target_sum)`` for ``recipe.genes``.

    The total is over *all* genes of the table (as ``sc.pp.normalize_total``); footprints with no
    counts get zeros.
    """
    missing = [g for g in recipe.genes if g not in table.var_names]
    if missing:
        raise ValueError(f"{len(missing)} model gene(s) are missing from the table, e.g. {missing[:5]}.")
    X = _counts(table, layer)
    total = np.asarray(X.sum(1)).ravel().astype(np.float64)
    cols = table.var_names.get_indexer(recipe.genes)
    sel = X[:, cols].toarray().astype(np.float64)
    scale = np.divide(recipe.target_sum, total, out=np.zeros_like(total), where=total > 0)
    out = sel * scale[:, None]
    return (np.log1p(out) if recipe.log1p else out).astype(np.float32)


def select_genes(tables: Sequence[AnnData], n_top: int = 250) -> list[str]:
    """The ``n_top`` genes with the highest mean expression share, over genes present in every table.

    Each table contributes the mean of its per-footprint expression fractions, so tables of different
    footprint sizes weigh the same; computed on the tables passed (training data only).
    """
    if not tables:
        raise ValueError("No table to select genes from.")
    common = pd.Index(tables[0].var_names)
    for t in tables[1:]:
        common = common[common.isin(t.var_names)]
    if len(common) == 0:
        raise ValueError("The training tables share no gene name.")
    score = np.zeros(len(common))
    for t in tables:
        X = _counts(t)
        total = np.asarray(X.sum(1)).ravel()
        frac = sparse.diags(np.divide(1.0, total, out=np.zeros(len(total)), where=total > 0)) @ X
        score += np.asarray(frac.mean(0)).ravel()[t.var_names.get_indexer(common)]
    order = np.argsort(-score, kind="stable")[: min(n_top, len(common))]
    return list(common[order])


def table_footprints(sdata: SpatialData, table_name: str, image_key: str) -> tuple[Footprints, np.ndarray]:
    """Footprints of a table's linked shapes in the image's full-resolution pixel coordinates.

    Returns
    -------
    ``(footprints, rows)``: footprints in the order of ``rows`` (table row indices that have a shape).

    """
    if table_name not in sdata.tables:
        raise KeyError(f"Table {table_name!r} not found; available tables: {list(sdata.tables)}.")
    table = sdata.tables[table_name]
    attrs = table.uns.get("spatialdata_attrs", {})
    region, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    regions = [region] if isinstance(region, str) else list(region or [])
    if not regions:
        raise ValueError(
            f"Table {table_name!r} is not linked to shapes (no spatialdata region); parse it with TableModel."
        )
    parts, rows = [], []
    for reg in regions:
        if reg not in sdata.shapes:
            raise ValueError(f"Table {table_name!r} annotates {reg!r}, which is not a shapes element.")
        mask = (
            (table.obs[region_key] == reg).to_numpy()
            if region_key in table.obs
            else np.ones(table.n_obs, bool)
        )
        ids = table.obs.loc[mask, instance_key].to_numpy()
        try:
            parts.append(shapes_footprints(sdata, reg, image_key, instances=ids))
        except ValueError as exc:
            raise ValueError(f"Table {table_name!r}: {exc}") from exc
        rows.append(np.nonzero(mask)[0])
    if len(parts) == 1:
        return parts[0], rows[0]
    if len({f.is_disk for f in parts}) > 1:
        raise ValueError(f"Table {table_name!r} mixes circles and polygons across regions; split it.")
    centres = np.vstack([f.centres for f in parts])
    if parts[0].is_disk:
        fp = Footprints(centres, radii=np.concatenate([f.radii for f in parts]))
    else:
        fp = Footprints(centres, geometries=np.concatenate([f.geometries for f in parts]))
    return fp, np.concatenate(rows)


def resample_image(
    sdata: SpatialData, image_key: str, target_mpp: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """The RGB image at ``target_mpp`` as ``(H, W, 3)`` uint8, read from the best pyramid level.

    Returns
    -------
    ``(array, (sx, sy))`` where ``sx, sy`` are full-resolution pixels per output pixel.

    """
    from PIL import Image

    mpp = get_mpp(sdata, image_key)
    el = sdata.images[image_key]
    full = full_resolution(el)
    if full.sizes.get("c") != 3 or full.dtype != np.uint8:
        raise ValueError(
            f"Image {image_key!r} must be RGB uint8 (c=3); it has c={full.sizes.get('c')} and dtype {full.dtype}."
        )
    H0, W0 = full.sizes["y"], full.sizes["x"]
    f = target_mpp / mpp
    best, _ = coarsest_level(pyramid_levels(el), f)
    arr = np.ascontiguousarray(np.moveaxis(np.asarray(best), 0, -1))
    Wt, Ht = max(1, round(W0 / f)), max(1, round(H0 / f))
    if (arr.shape[1], arr.shape[0]) != (Wt, Ht):
        arr = np.asarray(
            Image.fromarray(arr).resize(
                (Wt, Ht), Image.Resampling.BOX if f >= 1 else Image.Resampling.BILINEAR
            )
        )
    return arr, (W0 / Wt, H0 / Ht)


def in_tiles(sdata: SpatialData, tiles: str, image_key: str, fp: Footprints) -> np.ndarray:
    """Whether each footprint's centre (full-resolution image pixels) lies in a shape of ``tiles``.

    ``tiles`` is a shapes element such as the selection of :func:`stpredict.pp.select_tiles`.
    """
    import shapely

    if tiles not in sdata.shapes:
        raise KeyError(
            f"Tiles {tiles!r} not found among the shapes {list(sdata.shapes)}; create them with "
            "`stpredict.pp.select_tiles(sdata, key_added=...)`."
        )
    t = shapes_footprints(sdata, tiles, image_key)
    x, y = fp.centres[:, 0], fp.centres[:, 1]
    if t.is_disk:
        d2 = (x[:, None] - t.centres[None, :, 0]) ** 2 + (y[:, None] - t.centres[None, :, 1]) ** 2
        return (d2 <= t.radii[None] ** 2).any(1)
    return shapely.contains_xy(shapely.union_all(t.geometries), x, y)


@dataclass
class SectionData:
    """One section at the training pixel size: the image and, per table, footprints and targets."""

    name: str
    image: np.ndarray
    mpp: float
    footprints: list[Footprints] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    table_names: list[str] = field(default_factory=list)
    bounds: list[np.ndarray] = field(default_factory=list)

    @property
    def n_footprints(self) -> int:
        return int(sum(len(f) for f in self.footprints))


def load_section(
    sdata: SpatialData,
    *,
    image_key: str,
    tables: Sequence[str],
    recipe: Recipe | None,
    train_mpp: float,
    name: str = "section",
    tiles: str | None = None,
) -> SectionData:
    """Resample the image to ``train_mpp`` and put every table's footprints and targets on that grid.

    With ``tiles`` (a shapes element of selected tiles), only footprints centred in a tile are kept.
    """
    image, (sx, sy) = resample_image(sdata, image_key, train_mpp)
    sec = SectionData(name=name, image=image, mpp=train_mpp)
    to_train = np.diag([1.0 / sx, 1.0 / sy, 1.0])
    for t in tables:
        fp, rows = table_footprints(sdata, t, image_key)
        if tiles is not None:
            keep = np.nonzero(in_tiles(sdata, tiles, image_key, fp))[0]
            logger.info(f"{name}: {keep.size} of {len(fp)} footprints of {t!r} lie in the tiles {tiles!r}.")
            fp, rows = fp.subset(keep), rows[keep]
        fp = fp.affine(to_train)
        if recipe is not None:
            y = normalize_counts(sdata.tables[t], recipe)[rows]
        else:
            y = np.zeros((len(fp), 0), np.float32)
        if len(fp) == 0:
            logger.warning(f"Table {t!r} of {name!r} has no footprint; skipped.")
            continue
        sec.footprints.append(fp)
        sec.targets.append(y)
        sec.table_names.append(t)
        sec.bounds.append(fp.bounds())
    return sec


def default_image_key(sdata: SpatialData) -> str:
    """The H&E to use when ``image_key`` is not given: the largest RGB uint8 image (full resolution).

    Visium HD data also carries downscaled ``hires``/``lowres`` copies; the largest one is the scan.
    """
    sizes = {}
    for k, el in sdata.images.items():
        full = full_resolution(el)
        if full.sizes.get("c") == 3 and full.dtype == np.uint8:
            sizes[k] = full.sizes["y"] * full.sizes["x"]
    if not sizes:
        raise ValueError(
            f"No RGB uint8 image in the SpatialData object (images: {list(sdata.images)}); pass `image_key=`."
        )
    best = max(sizes, key=sizes.get)
    if sum(v == sizes[best] for v in sizes.values()) > 1:
        raise ValueError(f"Several RGB images of the same size {sorted(sizes)}; pass `image_key=`.")
    if len(sizes) > 1:
        logger.info(f"Using image {best!r}, the largest RGB image; pass `image_key=` to choose another.")
    return best
