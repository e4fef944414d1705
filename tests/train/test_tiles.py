"""PixNet's training step: footprint means before the linear head equal those of the full-resolution map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stpredict as stp
from stpredict._core import Recipe
from stpredict.module import PixNetModule, aggregate_map, bilinear_matrix, to_torch_sparse
from stpredict.train import FeatureCache, TileSampler, load_section, run_batch


@pytest.mark.parametrize(
    ("size_in", "size_out", "crop"), [((6, 5), (12, 10), None), ((48, 48), (96, 96), (90, 93))]
)
def test_bilinear_matrix_is_interpolate(size_in, size_out, crop):
    x = torch.randn(1, 1, *size_in, dtype=torch.float64)
    ref = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)[0, 0]
    if crop is not None:
        ref = ref[: crop[0], : crop[1]]
    K = bilinear_matrix(size_in, size_out, crop=crop)
    np.testing.assert_allclose(K @ x.numpy().ravel(), ref.numpy().ravel(), atol=1e-12)


@pytest.mark.parametrize("frozen", [False, True])
def test_means_before_the_head_equal_the_map_path(frozen, monkeypatch):
    slide = stp.datasets.synthetic(
        width_um=480, height_um=416, n_genes=6, seed=2, bins_um=(16,), visium_spots=False
    )
    sec = load_section(
        slide,
        image_key="synthetic_full_image",
        tables=["square_016um", "st_spots"],
        recipe=Recipe(["G000", "G001"]),
        train_mpp=2.0,
    )
    torch.manual_seed(0)
    net = PixNetModule(3, decoder_channels=16).eval()
    assert (
        net.linear_output and not PixNetModule(1, decoder_channels=8, out_activation="softplus").linear_output
    )
    batch = TileSampler([sec], tile_size=96, seed=0).sample(3)
    assert any(k or f for k, f in batch.augment)  # rotated/flipped tiles are covered
    kw = {"cache": FeatureCache(8) if frozen else None, "frozen": frozen}
    with torch.no_grad():
        fast = run_batch(net, batch, "cpu", **kw)
        if not frozen:  # the dense forward, aggregated
            torch.testing.assert_close(
                fast, aggregate_map(net(batch.images), to_torch_sparse(batch.A)), atol=1e-5, rtol=1e-4
            )
        monkeypatch.setattr(PixNetModule, "linear_output", False)  # the full-resolution map path
        ref = run_batch(net, batch, "cpu", **{**kw, "cache": FeatureCache(8) if frozen else None})
    assert fast.shape == ref.shape == (batch.A.shape[0], 3)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
