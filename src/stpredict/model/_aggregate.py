"""Footprint aggregation: dense map → one value per spot, bin or cell (PixNet Eq. 5).

A footprint is a disk (spots), a square that may be rotated (Visium HD bins) or any polygon
(cells), given in the pixel coordinates of the map (pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``,
its centre is ``(j + 0.5, i + 0.5)``). The operator is a sparse *footprint × pixel* matrix ``A``;
``A @ G`` aggregates every footprint at once and is differentiable in ``G``.

Membership is exact: a pixel belongs to a footprint when its centre lies inside
(``coverage="center"``), or with weight equal to the covered fraction of the pixel, estimated on an
``s × s`` sub-pixel lattice (``coverage="fraction"``). A footprint that contains no pixel centre
(smaller than a pixel) gets the pixel under its centroid; one with no pixel on the map has an empty
row. Footprints not entirely inside the map
are excluded (:func:`footprint_matrix` returns which were kept), so training never fits a spot to a
truncated footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    import torch

__all__ = ["Footprints", "aggregate_map", "footprint_matrix", "to_torch_sparse"]


@dataclass
class Footprints:
    """Footprints in map pixel coordinates: disks (``centres`` + ``radii``) or polygons (``geometries``)."""

    centres: np.ndarray  # (n, 2) x, y
    radii: np.ndarray | None = None  # (n,) for disks
    geometries: np.ndarray | None = None  # shapely polygons, for non-disks

    def __post_init__(self) -> None:
        self.centres = np.asarray(self.centres, dtype=float).reshape(-1, 2)
        if (self.radii is None) == (self.geometries is None):
            raise ValueError("Give either radii (disks) or geometries (polygons).")
        if self.radii is not None:
            self.radii = np.broadcast_to(np.asarray(self.radii, dtype=float), (len(self.centres),)).copy()

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def is_disk(self) -> bool:
        return self.radii is not None

    def bounds(self) -> np.ndarray:
        """``(n, 4)`` xmin, ymin, xmax, ymax."""
        if self.is_disk:
            r = self.radii[:, None]
            return np.hstack([self.centres - r, self.centres + r])
        import shapely

        return shapely.bounds(self.geometries)

    def subset(self, idx: np.ndarray) -> Footprints:
        if self.is_disk:
            return Footprints(self.centres[idx], radii=self.radii[idx])
        return Footprints(self.centres[idx], geometries=self.geometries[idx])

    def affine(self, matrix: np.ndarray) -> Footprints:
        """Apply a 3×3 affine matrix on ``(x, y, 1)``; disk radii scale by ``sqrt(|det|)``."""
        m = np.asarray(matrix, dtype=float)
        c = self.centres @ m[:2, :2].T + m[:2, 2]
        if self.is_disk:
            return Footprints(c, radii=self.radii * np.sqrt(abs(np.linalg.det(m[:2, :2]))))
        import shapely

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
    import shapely

    return shapely.contains_xy(fp.geometries[fid], x, y)


def footprint_matrix(
    fp: Footprints,
    shape: tuple[int, int],
    *,
    how: str = "mean",
    coverage: str = "center",
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
    if how not in ("mean", "sum"):
        raise ValueError(f"how must be 'mean' or 'sum', got {how!r}.")
    if coverage not in ("center", "fraction"):
        raise ValueError(f"coverage must be 'center' or 'fraction', got {coverage!r}.")
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


def to_torch_sparse(A: sparse.spmatrix, device=None, dtype=None) -> torch.Tensor:
    """A SciPy sparse matrix as a torch sparse COO tensor."""
    import torch

    coo = sparse.coo_matrix(A)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    vals = torch.from_numpy(coo.data.astype(np.float32))
    t = torch.sparse_coo_tensor(idx, vals, coo.shape, device=device, check_invariants=False).coalesce()
    return t.to(dtype) if dtype is not None else t


def aggregate_map(G: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Aggregate dense maps ``G`` ``(B, M, H, W)`` with ``A`` ``(n, B*H*W)`` → ``(n, M)`` (differentiable)."""
    import torch

    b, m, h, w = G.shape
    flat = G.permute(0, 2, 3, 1).reshape(b * h * w, m)
    return torch.sparse.mm(A, flat)
