from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd

import stpredict as stp


def test_shannon_bits_orders_blank_noise_and_texture():
    rng = np.random.default_rng(0)
    blank = np.full((64, 64, 3), 242, np.uint8)
    texture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert stp.pp.shannon_bits(blank) < 0.05 * stp.pp.shannon_bits(texture)


def _tissue_fraction(sdata, names, image_key, truth_mask):
    shapes = sdata[names[0]]
    b = shapes.geometry.bounds.to_numpy() / 4  # image px -> 2 µm truth px (0.5 µm/px image)
    return np.array([truth_mask[int(y0) : int(y1), int(x0) : int(x1)].mean() for x0, y0, x1, y1 in b])


@pytest.mark.parametrize("method", ["shannon", "otsu"])
def test_selects_textured_tissue_on_the_synthetic_slide(synthetic_small, method):
    s = sd.SpatialData(images={"he": synthetic_small["synthetic_full_image"]})
    names = stp.pp.select_tiles(s, tile_um=32, method=method, key_added=f"t_{method}")
    table = s.tables[names[1]]
    rec = table.uns["stpredict"]
    assert table.uns["spatialdata_attrs"]["region"] == names[0]
    assert 0 < table.n_obs < rec["n_tiles"]
    truth = synthetic_small["synthetic_domains"].values > 0
    frac = _tissue_fraction(s, names, "he", truth)
    assert np.mean(frac > 0.5) > 0.9  # selected tiles are tissue
    if method == "shannon":
        # the default threshold is ISG's mean + 1 SD of all tiles' scores
        assert rec["threshold"] == pytest.approx(rec["score_mean"] + rec["score_std"])
        assert table.obs["score"].min() > rec["threshold"]
    with pytest.raises(ValueError, match="overwrite=True"):
        stp.pp.select_tiles(s, tile_um=32, method=method, key_added=f"t_{method}")


def test_fixed_threshold_and_bad_method(synthetic_small):
    s = sd.SpatialData(images={"he": synthetic_small["synthetic_full_image"]})
    n_low = len(s[stp.pp.select_tiles(s, tile_um=32, threshold=0, key_added="all")[0]])
    assert n_low == s.tables["all_scores"].uns["stpredict"]["n_tiles"]
    with pytest.raises(ValueError, match="lower `threshold`"):
        stp.pp.select_tiles(s, tile_um=32, threshold=1e12, key_added="none")
    assert "none" not in s.shapes
    with pytest.raises(ValueError, match="method"):
        stp.pp.select_tiles(s, method="canny", key_added="x")


@pytest.mark.her2st
def test_her2st_tiles_over_spots_score_higher_than_glass(her2st_dir):
    s = stp.datasets.her2st("C2", data_dir=her2st_dir, downsample=4)
    names = stp.pp.select_tiles(s, tile_um=200, threshold=0, key_added="all")  # keep all to see every score
    t = s.tables[names[1]]
    tile_px = t.uns["stpredict"]["tile_px"] * 4  # full-resolution px per tile (image read at downsample 4)
    spot_tiles = {(int(y // tile_px), int(x // tile_px)) for x, y in s.tables["spots"].obsm["spatial"]}
    on = np.array([(r, c) in spot_tiles for r, c in zip(t.obs["tile_row"], t.obs["tile_col"], strict=True)])
    assert np.median(t.obs["score"][on]) > 2 * np.median(t.obs["score"][~on])
    # the ISG default keeps mostly tissue tiles
    s2 = stp.datasets.her2st("C2", data_dir=her2st_dir, downsample=4)
    sel = s2.tables[stp.pp.select_tiles(s2, tile_um=200)[1]]
    keys = set(zip(sel.obs["tile_row"], sel.obs["tile_col"], strict=True))
    assert len(keys & spot_tiles) / len(keys) > 0.8
