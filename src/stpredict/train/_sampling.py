"""Tiles sampled around supervised footprints: the batches of PixNet's training and validation.

Also the cache of a frozen encoder's features per tile (:class:`FeatureCache`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from .._core import footprint_matrix
from .._logging import logger
from .._types import Coverage
from ._augment import augment_array, augment_index
from ._data import SectionData

__all__ = ["Batch", "FeatureCache", "TileSampler", "footprint_extents", "tile_holding"]


@dataclass
class Batch:
    """Tiles ``(B, 3, T, T)`` uint8, their aggregation matrix ``(n, B*T*T)``, targets ``(n, M)`` and cache keys.

    ``groups`` ``(n,)`` is each footprint's table index and ``index`` its row in that table of its section;
    ``counts`` ``(n, M)`` and ``library`` ``(n,)`` (raw counts and totals) are present when the sections
    carry them (a count likelihood). ``tile_rows`` ``(B,)``: how many of the ``n`` footprints (rows, in
    tile order) each tile has.
    """

    images: torch.Tensor
    A: sparse.csr_matrix
    targets: np.ndarray
    keys: list[tuple]
    augment: list[tuple[int, bool]]
    groups: np.ndarray | None = None
    index: np.ndarray | None = None
    counts: np.ndarray | None = None
    library: np.ndarray | None = None
    tile_rows: np.ndarray | None = None

    def tiles(self, part: slice) -> Batch:
        """The batch of the tiles ``part`` (a contiguous slice) and their footprints (what one rank runs)."""
        if self.tile_rows is None:
            raise ValueError("This batch does not record its tiles' rows (`tile_rows`).")
        lo, hi, _ = part.indices(len(self.keys))
        ends = np.concatenate([[0], np.cumsum(self.tile_rows)])
        rows = slice(int(ends[lo]), int(ends[hi]))
        px = self.images.shape[-2] * self.images.shape[-1]

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Batch(
            self.images[lo:hi],
            self.A[rows][:, lo * px : hi * px],
            self.targets[rows],
            self.keys[lo:hi],
            self.augment[lo:hi],
            cut(self.groups),
            cut(self.index),
            cut(self.counts),
            cut(self.library),
            self.tile_rows[lo:hi],
        )


@dataclass
class _Rows:
    """The supervised footprints of one tile: aggregation matrix and per-footprint data.

    ``groups`` and ``index``: each footprint's table and its row in that table of the section.
    """

    A: sparse.csr_matrix
    targets: np.ndarray
    groups: np.ndarray
    index: np.ndarray
    counts: np.ndarray | None
    library: np.ndarray | None


def footprint_extents(bounds: np.ndarray) -> np.ndarray:
    """Whole pixels each footprint spans (the larger side), from bounds ``(n, 4)`` = x0, y0, x1, y1 in tile pixels."""
    return np.maximum(
        np.ceil(bounds[:, 2]) - np.floor(bounds[:, 0]), np.ceil(bounds[:, 3]) - np.floor(bounds[:, 1])
    )


def tile_holding(extent: float, *, scale: float = 1.0, margin: float = 0.0) -> int:
    """The smallest tile side (a multiple of 32 px) of at least ``scale`` × ``extent`` + ``margin`` pixels.

    ``scale`` 1: a tile that can hold a footprint of that extent; 2: one that holds it wherever it lies on a
    half-tile grid (a frozen encoder's tiles, the LinearProbe's feature tiles); 1.25: room to move it around.
    """
    return int(np.ceil((scale * extent + margin) / 32) * 32)


def _stack_rows(rows: list[_Rows], mats: list[sparse.csr_matrix]) -> dict:
    """Batch fields of several tiles' rows (``mats``: their possibly augmented aggregation matrices)."""
    has_counts = rows[0].counts is not None
    return {
        "A": sparse.block_diag(mats, format="csr"),
        "targets": np.vstack([r.targets for r in rows]),
        "groups": np.concatenate([r.groups for r in rows]),
        "index": np.concatenate([r.index for r in rows]),
        "counts": np.vstack([r.counts for r in rows]) if has_counts else None,
        "library": np.concatenate([r.library for r in rows]) if has_counts else None,
        "tile_rows": np.array([m.shape[0] for m in mats], np.int64),
    }


class TileSampler:
    """Samples training tiles around supervised footprints (so background is not wasted).

    Parameters
    ----------
    sections
        Sections at the training pixel size.
    tile_size
        Tile side in training pixels.
    augment
        Random 90° rotations and flips (image and footprints together).
    snap
        Snap tile origins to a ``tile_size // 2`` grid (used with a frozen encoder, so tiles repeat
        and their features can be cached).
    max_footprints
        At most this many footprints per table and tile (random subset) to bound the step cost.
    coverage
        Footprint membership rule of the aggregation matrices.
    context
        Supervise only footprints at least this many pixels inside the tile, so that each is seen
        with image context on every side, as in prediction (where blocks carry a context margin).
    seed
        Seed of the sampler's random generator.
    require_fit
        Refuse, before any step, footprints that no tile can hold whole (none: an error naming the tile size that
        would; some: a warning). Footprints that cannot be held are never drawn either way.

    """

    def __init__(
        self,
        sections: Sequence[SectionData],
        *,
        tile_size: int,
        augment: bool = True,
        snap: bool = False,
        max_footprints: int = 512,
        coverage: Coverage = "center",
        context: int = 0,
        seed: int = 0,
        require_fit: bool = False,
    ) -> None:
        self.sections = list(sections)
        self.tile = int(tile_size)
        self.context = int(context)
        if not 0 <= 2 * self.context < self.tile:
            raise ValueError(
                f"context ({context} px) must be >= 0 and less than half the tile ({tile_size} px)."
            )
        self.augment = augment
        self.snap = snap
        self.max_footprints = max_footprints
        self.coverage = coverage
        self.rng = np.random.default_rng(seed)
        # a footprint is supervised only whole inside a tile (``context`` px from its edges): those that cannot be
        # are never drawn, and a tile's jitter leaves room for the footprint it is drawn for
        room = self.tile - 2 * self.context
        # in whole pixels, as tile origins are: a footprint spans ceil(right) - floor(left) of them
        self.extent = [[footprint_extents(b) for b in sec.bounds] for sec in self.sections]
        self.fit = {
            (s, t): np.nonzero(self._fits(sec.bounds[t], ext, room))[0]
            for s, (sec, exts) in enumerate(zip(self.sections, self.extent, strict=True))
            for t, ext in enumerate(exts)
        }
        self.pairs = [key for key, idx in self.fit.items() if idx.size]
        n_all = sum(ext.size for exts in self.extent for ext in exts)
        n_fit = sum(idx.size for idx in self.fit.values())
        if n_all == 0:
            raise ValueError("No supervised footprint to train on.")
        if n_fit < n_all and require_fit:
            largest = max(float(ext.max()) for exts in self.extent for ext in exts if ext.size)
            # a frozen encoder's tiles lie on a half-tile grid, which holds footprints up to half a tile
            need = tile_holding(largest, scale=2 if self.snap else 1, margin=2 * self.context)
            what = (
                f"{n_all - n_fit} of the {n_all} footprints fit in no {self.tile} px tile"
                + (f" less {self.context} px of context on each side" if self.context else "")
                + (" on the half-tile grid of a frozen encoder" if self.snap else "")
                + f" (the largest spans {largest:.0f} px)"
            )
            if not n_fit:
                raise ValueError(
                    f"No footprint fits in a tile: {what}, so none can be supervised whole. Raise `tile_size` to "
                    f"at least {need} px (or train at a coarser `train_mpp`)."
                )
            logger.warning(f"{what}: they are left out of training (`tile_size={need}` would take them all).")

    def _fits(self, b: np.ndarray, ext: np.ndarray, room: int) -> np.ndarray:
        """Which footprints (bounds ``b``) a tile can hold whole; with ``snap``, a tile on the ``T // 2`` grid."""
        ok = ext <= room
        if self.snap:
            step, m, T = max(1, self.tile // 2), self.context, self.tile
            for lo, hi in ((0, 2), (1, 3)):  # some snapped origin k * step has lo - m >= origin >= hi - T + m
                ok &= np.floor((np.floor(b[:, lo]) - m) / step) >= np.ceil((np.ceil(b[:, hi]) - T + m) / step)
        return ok

    def _origin(
        self, sec: SectionData, cx: float, cy: float, jitter: bool, reach: float = 0.0
    ) -> tuple[int, int]:
        T = self.tile
        h, w = sec.image.shape[:2]
        # footprints up to a quarter tile from their centre: the jitter as ever; larger ones: only as far as keeps
        # them whole
        a = T / 4 if reach <= T / 4 else min(T / 4, max(0.0, T / 2 - self.context - reach))
        j = self.rng.uniform(-a, a, 2) if jitter else np.zeros(2)
        x0, y0 = cx - T / 2 + j[0], cy - T / 2 + j[1]
        if self.snap:
            step = max(1, T // 2)
            x0, y0 = round(x0 / step) * step, round(y0 / step) * step
        x0 = int(np.clip(round(x0), 0, max(0, w - T)))
        y0 = int(np.clip(round(y0), 0, max(0, h - T)))
        return x0, y0

    def tile_image(self, sec: SectionData, x0: int, y0: int) -> np.ndarray:
        """Crop ``T × T`` (padded with white where the image is smaller)."""
        T = self.tile
        crop = sec.image[y0 : y0 + T, x0 : x0 + T]
        if crop.shape[:2] != (T, T):
            out = np.full((T, T, 3), 255, np.uint8)
            out[: crop.shape[0], : crop.shape[1]] = crop
            crop = out
        return crop

    def tile_targets(self, sec: SectionData, x0: int, y0: int, limit: bool = True) -> _Rows | None:
        """Aggregation matrix and per-footprint data of every footprint inside the tile (``context`` px from its edges)."""
        return self._rows(sec, x0, y0, margin=self.context, limit=limit)

    def _rows(
        self, sec: SectionData, x0: int, y0: int, *, margin: int, limit: bool, done=None
    ) -> _Rows | None:
        T, m = self.tile, margin
        mats, ys, groups, index, cs, libs = [], [], [], [], [], []
        for t, (fp, b) in enumerate(zip(sec.footprints, sec.bounds, strict=True)):
            ok = (b[:, 0] >= x0 + m) & (b[:, 1] >= y0 + m) & (b[:, 2] <= x0 + T - m) & (b[:, 3] <= y0 + T - m)
            if done is not None:
                ok &= ~done[t]
            inside = np.nonzero(ok)[0]
            if limit and inside.size > self.max_footprints:
                inside = self.rng.choice(inside, self.max_footprints, replace=False)
            if inside.size == 0:
                continue
            A, kept = footprint_matrix(fp.subset(inside).shifted(-x0, -y0), (T, T), coverage=self.coverage)
            rows = inside[kept]
            if done is not None:
                done[t][rows] = True
            mats.append(A)
            ys.append(sec.targets[t][rows])
            groups.append(np.full(rows.size, t, np.int64))
            index.append(rows)
            if sec.counts:
                cs.append(sec.counts[t][rows])
                libs.append(sec.library[t][rows])
        if not mats:
            return None
        return _Rows(
            sparse.vstack(mats).tocsr(),
            np.vstack(ys),
            np.concatenate(groups),
            np.concatenate(index),
            np.vstack(cs) if cs else None,
            np.concatenate(libs) if libs else None,
        )

    def sample(self, batch_size: int) -> Batch:
        """A random batch of tiles with at least one footprint each."""
        images, mats, rows, keys, augs = [], [], [], [], []
        tries = 0
        while len(images) < batch_size:
            tries += 1
            if tries > 50 * batch_size:
                raise RuntimeError(
                    "Could not sample tiles that contain a whole footprint; increase tile_size so that footprints "
                    "fit inside a tile"
                    + (f" with {self.context} px of context on every side." if self.context else ".")
                )
            if not self.pairs:
                raise ValueError(f"No footprint fits in a {self.tile} px tile: raise `tile_size`.")
            s, t = self.pairs[self.rng.integers(len(self.pairs))]
            sec = self.sections[s]
            fit = self.fit[(s, t)]
            i = (
                fit[self.rng.integers(fit.size)]
                if fit.size < len(sec.footprints[t])
                else self.rng.integers(fit.size)
            )
            cx, cy = sec.footprints[t].centres[i]
            b = sec.bounds[t][i]
            reach = float(max(cx - b[0], b[2] - cx, cy - b[1], b[3] - cy))  # centre to the farthest edge
            if (
                reach > self.tile / 4
            ):  # a large footprint: centred on its box (a union's centroid may be off it)
                cx, cy = (np.floor(b[0]) + np.ceil(b[2])) / 2, (np.floor(b[1]) + np.ceil(b[3])) / 2
                reach = float(self.extent[s][t][i]) / 2
            x0, y0 = self._origin(sec, cx, cy, jitter=True, reach=reach)
            r = self.tile_targets(sec, x0, y0)
            if r is None:
                continue
            img, A = self.tile_image(sec, x0, y0), r.A
            k, flip = (int(self.rng.integers(4)), bool(self.rng.integers(2))) if self.augment else (0, False)
            if k or flip:
                img = augment_array(img, k, flip)
                A = A[:, augment_index(self.tile, k, flip)]
            images.append(img)
            mats.append(A)
            rows.append(r)
            keys.append((s, x0, y0))
            augs.append((k, flip))
        imgs = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return Batch(imgs, keys=keys, augment=augs, **_stack_rows(rows, mats))

    def fixed_batches(self, batch_size: int) -> list[Batch]:
        """Deterministic tiles covering every footprint once (for validation and feature extraction)."""
        T = self.tile
        step = max(1, T // 2)
        batches, cur = [], []
        for s, sec in enumerate(self.sections):
            h, w = sec.image.shape[:2]
            done = [np.zeros(len(fp), bool) for fp in sec.footprints]
            for y0 in range(0, max(1, h - T + step), step):
                for x0 in range(0, max(1, w - T + step), step):
                    x0c, y0c = min(x0, max(0, w - T)), min(y0, max(0, h - T))
                    r = self._rows(sec, x0c, y0c, margin=0, limit=False, done=done)
                    if r is not None:
                        cur.append((self.tile_image(sec, x0c, y0c), r, (s, x0c, y0c)))
                    if len(cur) == batch_size:
                        batches.append(cur)
                        cur = []
        if cur:
            batches.append(cur)
        out = []
        for b in batches:
            imgs = torch.from_numpy(np.stack([c[0] for c in b])).permute(0, 3, 1, 2).contiguous()
            rows = [c[1] for c in b]
            out.append(
                Batch(
                    imgs,
                    keys=[c[2] for c in b],
                    augment=[(0, False)] * len(b),
                    **_stack_rows(rows, [r.A for r in rows]),
                )
            )
        return out


class FeatureCache:
    """LRU cache of frozen-encoder feature pyramids keyed by tile."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            self.hits += 1
            return self.data[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    @property
    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self.data)}
