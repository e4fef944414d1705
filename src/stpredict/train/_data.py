"""Data layer of the tile-based models: a section's image at the training pixel size, footprints and targets.

Owns the pixel-size and coordinate decisions of training: the image is resampled to the training pixel
size through the one window reader (:class:`stpredict._core.Pyramid`), and footprints are moved into that
pixel grid through the micron coordinate system the image and the shapes share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from spatialdata import SpatialData

from .._core import (
    Footprints,
    Pyramid,
    Recipe,
    gene_counts,
    get_mpp,
    normalize_counts,
    table_footprints,
    tiles_cover,
)
from .._logging import logger

__all__ = ["SectionData", "load_section", "section_footprints"]


@dataclass
class SectionData:
    """One section at the training pixel size: the image and, per table, footprints and targets.

    ``counts`` and ``library`` (per table: raw counts of the model's genes and each footprint's total)
    are filled only for a count likelihood (``load_section(..., counts=True)``).
    """

    name: str
    image: np.ndarray
    mpp: float
    footprints: list[Footprints] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    table_names: list[str] = field(default_factory=list)
    bounds: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)
    library: list[np.ndarray] = field(default_factory=list)

    @property
    def n_footprints(self) -> int:
        return int(sum(len(f) for f in self.footprints))


def section_footprints(
    sdata: SpatialData,
    table: str,
    image_key: str,
    *,
    recipe: Recipe | None,
    tiles: str | None = None,
    name: str = "section",
    counts: bool = False,
) -> tuple[Footprints, np.ndarray] | tuple[Footprints, np.ndarray, np.ndarray, np.ndarray]:
    """Footprints of a table in full-resolution image pixels and their targets (recipe applied).

    With ``tiles`` (a shapes element of selected tiles), only footprints centred in a tile are kept.
    With ``counts=True`` the raw counts of the recipe's genes and the footprints' totals are returned too.
    """
    fp, rows = table_footprints(sdata, table, image_key)
    if tiles is not None:
        keep = np.nonzero(tiles_cover(sdata, tiles, image_key)(fp.centres[:, 0], fp.centres[:, 1]))[0]
        logger.info(f"{name}: {keep.size} of {len(fp)} footprints of {table!r} lie in the tiles {tiles!r}.")
        fp, rows = fp.subset(keep), rows[keep]
    if recipe is None:
        return fp, np.zeros((len(fp), 0), np.float32)
    if not counts:
        return fp, normalize_counts(sdata.tables[table], recipe)[rows]
    c, lib, y = gene_counts(sdata.tables[table], recipe)
    return fp, y[rows], c[rows], lib[rows]


def load_section(
    sdata: SpatialData,
    *,
    image_key: str,
    tables: Sequence[str],
    recipe: Recipe | None,
    train_mpp: float,
    name: str = "section",
    tiles: str | None = None,
    counts: bool = False,
) -> SectionData:
    """Resample the image to ``train_mpp`` and put every table's footprints and targets on that grid.

    With ``tiles`` (a shapes element of selected tiles), only footprints centred in a tile are kept; with
    ``counts=True`` the raw counts and totals are kept as well (:attr:`SectionData.counts`).
    """
    pyramid = Pyramid.from_sdata(sdata, image_key)
    H0, W0 = pyramid.shape
    image, (sx, sy) = pyramid.resampled(train_mpp / get_mpp(sdata, image_key))
    sec = SectionData(name=name, image=image, mpp=train_mpp)
    to_train = np.diag([1.0 / sx, 1.0 / sy, 1.0])
    for t in tables:
        out = section_footprints(sdata, t, image_key, recipe=recipe, tiles=tiles, name=name, counts=counts)
        fp, y = out[:2]
        c, lib = out[2:] if counts else (None, None)
        if len(fp) == 0:
            logger.warning(f"Table {t!r} of {name!r} has no footprint; skipped.")
            continue
        cx, cy = fp.centres[:, 0], fp.centres[:, 1]
        inside = (cx >= 0) & (cx < W0) & (cy >= 0) & (cy < H0)
        if not inside.any():
            raise ValueError(
                f"No footprint of table {t!r} ({name}) lies on image {image_key!r}: the image spans x 0–{W0} and "
                f"y 0–{H0} px, the footprint centres x {cx.min():.0f}–{cx.max():.0f} and y {cy.min():.0f}–{cy.max():.0f} "
                "px. The shapes and the image are not aligned: check the shapes' transformations (coordinate systems) "
                "and that they belong to this image."
            )
        if not inside.all():
            logger.warning(
                f"{int((~inside).sum())} of {len(fp)} footprints of {t!r} ({name}) lie off image {image_key!r}; skipped."
            )
            keep = np.nonzero(inside)[0]
            fp, y = fp.subset(keep), y[keep]
            if counts:
                c, lib = c[keep], lib[keep]
        fp = fp.affine(to_train)
        sec.footprints.append(fp)
        sec.targets.append(y)
        sec.table_names.append(t)
        sec.bounds.append(fp.bounds())
        if counts:
            sec.counts.append(c)
            sec.library.append(lib)
    return sec
