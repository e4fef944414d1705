from __future__ import annotations

import numpy as np
import torch

from stpredict._core import Footprints, footprint_matrix
from stpredict.module import aggregate_map, to_torch_sparse


def _disks(rng, shape, n=10):
    h, w = shape
    return Footprints(
        np.c_[rng.uniform(-3, w + 3, n), rng.uniform(-3, h + 3, n)], radii=rng.uniform(0.3, 6, n)
    )


def test_torch_aggregation_is_differentiable_and_exact():
    rng = np.random.default_rng(1)
    disks = _disks(rng, (12, 12))
    A, _kept = footprint_matrix(disks, (12, 12))
    G = torch.randn(1, 3, 12, 12, requires_grad=True)
    pred = aggregate_map(G, to_torch_sparse(A))
    ref = A @ G.detach().numpy()[0].reshape(3, -1).T
    np.testing.assert_allclose(pred.detach().numpy(), ref, rtol=1e-5, atol=1e-6)
    pred.sum().backward()
    assert G.grad is not None and G.grad.abs().sum() > 0
