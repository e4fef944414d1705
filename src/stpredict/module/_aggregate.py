"""Footprint aggregation in torch: a SciPy footprint × pixel matrix applied to dense maps (differentiable)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

__all__ = ["aggregate_map", "to_torch_sparse"]


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
