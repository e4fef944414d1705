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


def test_rate_map_footprint_rates_are_exact_and_nested_footprints_agree():
    """A rate map's footprint rates are the means of ``expm1`` of its dense map, and a 16 µm bin's rate is the mean
    of its four 8 µm bins' rates (what the log-normalised map cannot give: the mean of logs is not the log of means).
    """
    slide = stp.datasets.synthetic(
        width_um=480, height_um=416, n_genes=6, seed=2, bins_um=(8, 16), st_spots=False
    )
    sec = load_section(
        slide,
        image_key="synthetic_full_image",
        tables=["square_008um", "square_016um"],
        recipe=Recipe(["G000", "G001"]),
        train_mpp=2.0,
        counts=True,
    )
    assert len(sec.counts) == 2 and sec.counts[0].shape == (len(sec.footprints[0]), 2)
    np.testing.assert_allclose(  # the targets are the counts normalised by the totals
        np.expm1(sec.targets[0]), sec.counts[0] / np.maximum(sec.library[0], 1e-9)[:, None] * 1e4, rtol=1e-4
    )
    torch.manual_seed(0)
    net = PixNetModule(2, decoder_channels=16, map_space="rate").eval()
    assert not net.linear_output
    with pytest.raises(ValueError, match="no output activation"):
        PixNetModule(2, decoder_channels=8, map_space="rate", out_activation="softplus")
    batch = TileSampler([sec], tile_size=96, augment=False, seed=0).sample(2)
    assert batch.counts is not None and set(np.unique(batch.groups)) <= {0, 1}
    with torch.no_grad():
        rates = run_batch(net, batch, "cpu", cache=None, frozen=False)
        dense = torch.expm1(net(batch.images))  # the dense map is log1p of the resized rate
    assert (rates > 0).all()
    torch.testing.assert_close(rates, aggregate_map(dense, to_torch_sparse(batch.A)), atol=1e-3, rtol=1e-4)
    # nested footprints: each 16 µm bin against the 8 µm bins inside it (same tile)
    fp8, fp16 = sec.footprints
    rows16 = np.nonzero(batch.groups == 1)[0]
    rows8 = np.nonzero(batch.groups == 0)[0]
    tiles = np.asarray(batch.A.indices // (96 * 96))
    first_tile = lambda r: tiles[batch.A.indptr[r]]  # noqa: E731
    checked = 0
    for r in rows16:
        c16 = fp16.centres[batch.index[r]]
        inside = [
            q
            for q in rows8
            if first_tile(q) == first_tile(r) and np.all(np.abs(fp8.centres[batch.index[q]] - c16) < 4)
        ]
        if len(inside) == 4:
            torch.testing.assert_close(rates[r], rates[inside].mean(0), atol=1e-3, rtol=1e-4)
            checked += 1
    assert checked > 0
