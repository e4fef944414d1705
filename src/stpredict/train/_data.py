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
    table_footprints,
    tiles_cover,
)
from .._logging import logger

__all__ = [
    "SectionData",
    "TableTargets",
    "check_supervision",
    "load_section",
    "section_data",
    "section_footprints",
    "section_targets",
    "training_targets",
]


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


@dataclass
class TableTargets:
    """What one table of one section gives training: its footprints (full-resolution px) and their targets.

    ``library`` is each footprint's total count (all genes); ``counts`` the raw counts of the recipe's
    genes, kept only for a count likelihood. ``n_linked`` is how many footprints the table links to
    shapes before the image bounds and ``tiles`` (the selected tiles that restricted them, if any).
    """

    section: str
    table: str
    footprints: Footprints
    targets: np.ndarray
    library: np.ndarray
    counts: np.ndarray | None = None
    n_linked: int = 0
    tiles: str | None = None

    def __len__(self) -> int:
        return len(self.footprints)

    def why_empty(self, *, capital: bool = False) -> str:
        """Why this table gives no footprint, in words (``capital``: as the start of a sentence)."""
        where = f"table {self.table!r} of section {self.section!r}"
        if self.n_linked == 0:
            why = f"{where} links no footprint (none of its rows has a shape)"
        elif self.tiles is not None:
            why = f"none of the {self.n_linked} footprints of {where} lies in the tiles {self.tiles!r}"
        else:
            why = f"{where} has no footprint"
        return why[0].upper() + why[1:] if capital else why


def section_targets(
    sdata: SpatialData,
    table: str,
    image_key: str,
    *,
    recipe: Recipe | None,
    tiles: str | None = None,
    name: str = "section",
    counts: bool = False,
) -> TableTargets:
    """A table's footprints on the image (and in ``tiles``), in full-resolution image pixels, with their targets.

    Footprints centred off the image are dropped with a warning; when none lies on it the shapes and the
    image are not aligned, which is an error. With ``tiles`` (a shapes element of selected tiles), only
    footprints centred in a tile are kept. With ``counts=True`` the raw counts of the recipe's genes are
    kept too.
    """
    fp, rows = table_footprints(sdata, table, image_key)
    n_linked = len(fp)
    if n_linked:
        H0, W0 = Pyramid.from_sdata(sdata, image_key).shape
        cx, cy = fp.centres[:, 0], fp.centres[:, 1]
        inside = (cx >= 0) & (cx < W0) & (cy >= 0) & (cy < H0)
        if not inside.any():
            raise ValueError(
                f"None of the {n_linked} footprints of table {table!r} of section {name!r} lies on image {image_key!r}: "
                f"the image spans x 0–{W0} and y 0–{H0} px, the footprint centres x {cx.min():.0f}–{cx.max():.0f} and y "
                f"{cy.min():.0f}–{cy.max():.0f} px. The shapes and the image are not aligned: check the shapes' "
                "transformations (coordinate systems) and that they belong to this image."
            )
        if not inside.all():
            logger.warning(
                f"{int((~inside).sum())} of {n_linked} footprints of {table!r} ({name}) lie off image {image_key!r}; "
                "skipped."
            )
            keep = np.nonzero(inside)[0]
            fp, rows = fp.subset(keep), rows[keep]
    if tiles is not None:
        keep = np.nonzero(tiles_cover(sdata, tiles, image_key)(fp.centres[:, 0], fp.centres[:, 1]))[0]
        logger.info(f"{name}: {keep.size} of {n_linked} footprints of {table!r} lie in the tiles {tiles!r}.")
        fp, rows = fp.subset(keep), rows[keep]
    if recipe is None:
        y, lib, c = np.zeros((len(fp), 0), np.float32), np.zeros(len(fp), np.float32), None
    else:
        c, lib, y = gene_counts(sdata.tables[table], recipe)
        y, lib, c = y[rows], lib[rows], (c[rows] if counts else None)
    return TableTargets(name, table, fp, y, lib, c, n_linked=n_linked, tiles=tiles)


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
    """Footprints of a table in full-resolution image pixels and their targets (:func:`section_targets`).

    With ``counts=True`` the raw counts of the recipe's genes and the footprints' totals are returned too.
    """
    p = section_targets(sdata, table, image_key, recipe=recipe, tiles=tiles, name=name, counts=counts)
    return (p.footprints, p.targets, p.counts, p.library) if counts else (p.footprints, p.targets)


def training_targets(
    sdatas: Sequence[SpatialData],
    *,
    image_keys: Sequence[str],
    tables: Sequence[str],
    recipe: Recipe,
    names: Sequence[str],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    tiles: str | None = None,
    counts: bool = False,
) -> list[list[TableTargets]]:
    """Every section's tables as training sees them (:func:`section_targets`), checked by :func:`check_supervision`.

    The one place every model's training data are assembled: ``tiles`` restricts only the training
    sections; the result has one list per section (validation sections included), one entry per table.
    """
    parts = [
        [
            section_targets(
                sdata,
                t,
                image_keys[i],
                recipe=recipe,
                tiles=tiles if i in train_idx else None,
                name=names[i],
                counts=counts,
            )
            for t in tables
        ]
        for i, sdata in enumerate(sdatas)
    ]
    check_supervision([parts[i] for i in train_idx], [parts[i] for i in val_idx], genes=recipe.genes)
    return parts


def _describe(parts: Sequence[TableTargets], most: int = 4) -> str:
    """How many footprints each table gives, e.g. ``"572 of table 'spots' in section 'C2', …"``."""
    out = ", ".join(f"{len(p)} of table {p.table!r} in section {p.section!r}" for p in parts[:most])
    return out + (f" and {len(parts) - most} more tables" if len(parts) > most else "")


def check_supervision(
    train: Sequence[Sequence[TableTargets]],
    val: Sequence[Sequence[TableTargets]] = (),
    *,
    genes: Sequence[str],
) -> None:
    """Refuse training data that teach nothing, before the first step; warn about parts that add nothing.

    Errors: no training footprint at all (every table of every training section is empty, e.g. none lies
    in ``tiles``); a single footprint; training footprints without counts, without counts of the selected
    genes, or on which no selected gene varies; a validation section without footprints. Warnings: a
    training or validation table without footprints while others have some (it is skipped), and genes
    that are constant on the training footprints (the model can learn only their mean).

    Parameters
    ----------
    train, val
        Per section, its tables (:func:`section_targets`).
    genes
        The model's genes (the targets' columns).

    """
    parts = [p for sec in train for p in sec]
    empty = [p for p in parts if len(p) == 0]
    full = [p for p in parts if len(p)]
    if not full:
        fix = (
            "Select tiles that cover the measured footprints (`stpredict.pp.select_tiles`), or train without `tiles=`."
            if any(p.tiles is not None for p in empty)
            else "Link each table to the shapes of its footprints (`spatialdata.models.TableModel`)."
        )
        raise ValueError(f"Nothing to train on: {'; '.join(p.why_empty() for p in empty)}. {fix}")
    for p in empty:
        logger.warning(f"{p.why_empty(capital=True)}: it adds nothing to training; skipped.")
    for sec in val:
        if sec and not any(len(p) for p in sec):
            raise ValueError(
                f"Validation section {sec[0].section!r} has no footprint to score: "
                f"{'; '.join(p.why_empty() for p in sec)}. Hold out another section with `validation=`, or none."
            )
        for p in sec:
            if not len(p):
                logger.warning(f"{p.why_empty(capital=True)}: not scored in validation.")
    n = sum(len(p) for p in full)
    where = f"{n} training footprint{'s' if n > 1 else ''} ({_describe(full)})"
    if n < 2:
        raise ValueError(
            f"There is only one footprint to train on ({_describe(full)}): a model cannot learn how expression "
            "varies from one measurement. Train on more footprints (more sections or tables, or wider `tiles`)."
        )
    if not any(p.library.any() for p in full):
        raise ValueError(
            f"None of the {where} has a count (all 0): there is nothing to learn. The counts lie elsewhere (off "
            "the image or outside `tiles`), or the tables hold no counts; check `X` and the footprints' placement."
        )
    lo = np.min([p.targets.min(0) for p in full], axis=0)
    hi = np.max([p.targets.max(0) for p in full], axis=0)
    flat = hi <= lo
    genes = list(genes)
    if not hi.any():
        raise ValueError(
            f"The selected genes ({len(genes)}, e.g. {genes[:5]}) have no counts in any of the {where}: there is "
            "nothing to learn. Choose genes expressed there (`genes=`, or leave it out to pick the top "
            "`n_top_genes` by mean)."
        )
    if flat.all():
        raise ValueError(
            f"The selected genes have no variance across the {where}: each of the {len(genes)} gene(s) (e.g. "
            f"{genes[:5]}) has one value in every footprint, so there is nothing to learn. Check that the tables' "
            "`X` holds the measured raw counts (not a placeholder or a copy of one row), or choose genes that vary."
        )
    if flat.any():
        const = [g for g, f in zip(genes, flat, strict=True) if f]
        logger.warning(
            f"{len(const)} of {len(genes)} genes have one value across all {where}, e.g. {const[:10]}: the model "
            "can learn only that value for them. Choose genes that vary there (`genes=`)."
        )


def section_data(
    sdata: SpatialData,
    parts: Sequence[TableTargets],
    *,
    image_key: str,
    train_mpp: float,
    name: str = "section",
) -> SectionData:
    """Resample the image to ``train_mpp`` and put the footprints and targets of ``parts`` on that grid.

    Tables without footprints are left out (:func:`check_supervision` said so).
    """
    pyramid = Pyramid.from_sdata(sdata, image_key)
    image, (sx, sy) = pyramid.resampled(train_mpp / get_mpp(sdata, image_key))
    sec = SectionData(name=name, image=image, mpp=train_mpp)
    to_train = np.diag([1.0 / sx, 1.0 / sy, 1.0])
    for p in parts:
        if len(p) == 0:
            continue
        fp = p.footprints.affine(to_train)
        sec.footprints.append(fp)
        sec.targets.append(p.targets)
        sec.table_names.append(p.table)
        sec.bounds.append(fp.bounds())
        if p.counts is not None:
            sec.counts.append(p.counts)
            sec.library.append(p.library)
    return sec


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
    ``counts=True`` the raw counts and totals are kept as well (:attr:`SectionData.counts`). Tables
    without footprints are skipped with a warning.
    """
    parts = [
        section_targets(sdata, t, image_key, recipe=recipe, tiles=tiles, name=name, counts=counts)
        for t in tables
    ]
    for p in parts:
        if len(p) == 0:
            logger.warning(f"{p.why_empty(capital=True)}; skipped.")
    return section_data(sdata, parts, image_key=image_key, train_mpp=train_mpp, name=name)
