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


def test_training_and_predict_dense_use_the_selected_tiles():
    from stpredict._core import table_footprints, tiles_cover
    from stpredict.model import LinearProbe, PixNet

    s = stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=8, seed=3, bins_um=(16,), visium_spots=False
    )
    stp.pp.select_tiles(s, tile_um=64, key_added="tiles")  # Shannon, ISG's mean + 1 SD
    key = "synthetic_full_image"
    fp, _ = table_footprints(s, "square_016um", key)
    inside = tiles_cover(s, "tiles", key)(fp.centres[:, 0], fp.centres[:, 1])
    boxes = s["tiles"].geometry.bounds.to_numpy()
    x, y = fp.centres[:, 0, None], fp.centres[:, 1, None]
    brute = ((x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])).any(1)
    np.testing.assert_array_equal(inside, brute)
    assert 0 < inside.sum() < 0.5 * len(fp)

    # training uses only footprints centred in selected tiles
    fit = {"n_top_genes": 5, "progress": False, "seed": 0, "tiles": "tiles"}
    probe = LinearProbe(train_mpp=4.0, tile_size=64).train(s, tables="square_016um", **fit)
    assert probe.training_params["n_footprints"] == inside.sum()
    model = PixNet(decoder_channels=8, train_mpp=4.0, tile_size=64).train(
        s, tables="square_016um", max_epochs=1, steps_per_epoch=2, batch_size=2, **fit
    )
    assert model.training_params["tiles"] == "tiles"
    with pytest.raises(KeyError, match="select_tiles"):
        PixNet(decoder_channels=8, train_mpp=4.0, tile_size=64).train(s, tables="square_016um", tiles="nope")

    # prediction skips blocks without a selected tile; bins only inside tiles
    stp.tl.predict_dense(s, model, out_mpp=4.0, bins_um=(16,), tiles="tiles", chunk_size=32, progress=False)
    dense = s["pixnet_dense"]["scale0"].image.values
    mask = stp.pp.tiles_mask(s, "tiles", key, dense.shape[1:])
    blocks_off = blocks_on = 0
    for by in range(0, dense.shape[1], 32):
        for bx in range(0, dense.shape[2], 32):
            block = dense[:, by : by + 32, bx : bx + 32]
            if mask[by : by + 32, bx : bx + 32].any():
                blocks_on += bool(np.abs(block).sum() > 0)
            else:
                blocks_off += 1
                assert (block == 0).all()
    assert blocks_off > 0 and blocks_on > 0
    bins = s.tables["pixnet_square_016um"]
    assert s.tables["pixnet_square_016um"].uns["stpredict"]["tiling"]["tiles"] == "tiles"
    on = mask.reshape(mask.shape[0] // 4, 4, mask.shape[1] // 4, 4).any(axis=(1, 3))
    assert on[bins.obs["array_row"], bins.obs["array_col"]].all() and bins.n_obs == on.sum()
