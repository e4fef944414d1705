"""Footprint aggregation in torch: a SciPy footprint × pixel matrix applied to dense maps (differentiable)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

__all__ = ["aggregate_map", "bilinear_matrix", "to_torch_sparse"]


def to_torch_sparse(A: sparse.spmatrix, device=None, dtype=None) -> torch.Tensor:
    """A SciPy sparse matrix as a torch sparse COO tensor."""
    coo = sparse.coo_matrix(A)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    vals = torch.from_numpy(coo.data.astype(np.float32))
    t = torch.sparse_coo_tensor(idx, vals, coo.shape, device=device, check_invariants=False).coalesce()
    return t.to(dtype) if dtype is not None else t


def aggregate_map(G: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Aggregate dense maps ``G`` ``(B, M, H, W)`` with ``A`` ``(n, B*H*W)`` → ``(n, M)`` (differentiable)."""
    b, m, h, w = G.shape
    flat = G.permute(0, 2, 3, 1).reshape(b * h * w, m)
    return torch.sparse.mm(A, flat)


def _bilinear_1d(n_in: int, n_out: int) -> sparse.csr_matrix:
    """``(n_out, n_in)`` weights of 1-D linear interpolation as ``F.interpolate(align_corners=False)``."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    rows = np.r_[np.arange(n_out), np.arange(n_out)]
    return sparse.csr_matrix((np.r_[1 - w1, w1], (rows, np.r_[i0, i1])), shape=(n_out, n_in))


def bilinear_matrix(
    size_in: tuple[int, int], size_out: tuple[int, int], crop: tuple[int, int] | None = None
) -> sparse.csr_matrix:
    """The ``(H·W, h·w)`` operator of bilinear resizing from ``size_in`` ``(h, w)`` to ``size_out`` ``(H, W)``.

    As ``F.interpolate(mode="bilinear", align_corners=False)`` on row-major flattened images, so a
    footprint matrix ``A`` on the output grid becomes ``A @ K`` on the input grid (aggregation and
    resizing are both linear). With ``crop = (h', w')`` only the first ``h'`` rows and ``w'`` columns
    of the output are kept (``K`` is ``(h'·w', h·w)``).
    """
    uy = _bilinear_1d(size_in[0], size_out[0])
    ux = _bilinear_1d(size_in[1], size_out[1])
    if crop is not None:
        uy, ux = uy[: crop[0]], ux[: crop[1]]
    return sparse.kron(uy, ux, format="csr")
