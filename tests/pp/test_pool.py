"""pp.pool_footprints: coarse measurements made exactly from fine ones (summed counts over unions of shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from scipy import sparse

import stpredict as stp


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(width_um=1200, height_um=1008, n_genes=6, seed=0, bins_um=(16,))


def _copy(s):
    return sd.SpatialData(
        images=dict(s.images), shapes=dict(s.shapes), tables={k: t.copy() for k, t in s.tables.items()}
    )


def _dense(X):
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def test_square_blocks_sum_counts_and_unite_shapes_exactly(slide):
    s = _copy(slide)
    names = stp.pp.pool_footprints(s, "square_016um", size=4)
    assert names == ["square_016um_pooled4_shapes", "square_016um_pooled4"]
    src, pooled = s.tables["square_016um"], s.tables["square_016um_pooled4"]
    M = pooled.obsm["members"]
    assert M.shape == (pooled.n_obs, src.n_obs) and set(np.unique(M.sum(0).A1)) <= {
        0,
        1,
    }  # no bin in two blocks
    np.testing.assert_array_equal(_dense(pooled.X), _dense(M @ src.X))  # exact sums of the measured counts
    assert (pooled.obs["n_members"] == 16).all()
    # every block's members share its block index, and the union of 16 bins is one square of 4 x 4 bins
    rows, cols = src.obs["array_row"].to_numpy(), src.obs["array_col"].to_numpy()
    for k in range(0, pooled.n_obs, 17):
        members = M[k].indices
        assert (
            len(set((rows[members] - rows.min()) // 4)) == 1
            and len(set((cols[members] - cols.min()) // 4)) == 1
        )
    shapes = s.shapes["square_016um_pooled4_shapes"]
    bins = s.shapes[src.uns["spatialdata_attrs"]["region"]]
    assert set(shapes.geom_type) == {"Polygon"}
    np.testing.assert_allclose(shapes.area, 16 * bins.area.iloc[0])
    np.testing.assert_allclose(shapes.envelope.area, shapes.area)  # a square, not 16 pieces
    # the table is linked to its shapes, and the dense truth aggregates over them (any footprint works downstream)
    assert pooled.uns["spatialdata_attrs"]["region"] == "square_016um_pooled4_shapes"
    assert pooled.uns["stpredict"]["pooled_from"]["table"] == "square_016um"


def test_visium_rosettes_are_a_spot_and_its_six_neighbours(slide):
    s = _copy(slide)
    stp.pp.pool_footprints(s, "visium_spots", size=7)
    src, pooled = s.tables["visium_spots"], s.tables["visium_spots_pooled7"]
    assert pooled.uns["stpredict"]["pooled_from"]["grid"] == "hex"
    M = pooled.obsm["members"]
    np.testing.assert_array_equal(_dense(pooled.X), _dense(M @ src.X))
    xy = src.obsm["spatial"]
    pitch = 100 / stp.pp.get_mpp(s, "synthetic_full_image")  # Visium's centre-to-centre distance in pixels
    for k in range(pooled.n_obs):
        members = M[k].indices
        assert members.size == 7
        d = np.linalg.norm(xy[members][:, None] - xy[members][None], axis=-1)
        centre = np.argmin(d.sum(1))  # the middle spot: every other member is its neighbour
        np.testing.assert_allclose(np.sort(d[centre])[1:], pitch, rtol=1e-3)
    disks = s.shapes["visium_spots_pooled7_shapes"]
    r = s.shapes["synthetic_visium_spots"]["radius"].iloc[0]
    np.testing.assert_allclose(disks.area, 7 * np.pi * r**2, rtol=1e-3)  # 7 disjoint disks, as 128-gons


def test_every_spot_lies_in_one_rosette_when_incomplete_ones_are_kept(slide):
    s = _copy(slide)
    stp.pp.pool_footprints(s, "visium_spots", size=7, complete=False, key_added="all")
    M = s.tables["all"].obsm["members"]
    np.testing.assert_array_equal(M.sum(0).A1, 1)
    assert s.tables["all"].obs["n_members"].max() == 7


def test_rosettes_form_a_hexagonal_grid_again(slide):
    """The pooled table's indices are doubled-width hexagonal ones: neighbouring rosettes are sqrt(7) pitches apart."""
    s = _copy(slide)
    stp.pp.pool_footprints(s, "visium_spots", size=7, complete=False, key_added="all")
    t = s.tables["all"]
    rows, cols = t.obs["array_row"].to_numpy(), t.obs["array_col"].to_numpy()
    assert not ((rows + cols) % 2).any()
    full = t.obs["n_members"].to_numpy() == 7
    centres = np.asarray(s.shapes["all_shapes"].centroid.apply(lambda g: (g.x, g.y)).tolist())
    pitch = 100 / stp.pp.get_mpp(s, "synthetic_full_image")
    pairs = 0
    for a in np.nonzero(full)[0]:
        for b in np.nonzero(full)[0]:
            dr, dc = rows[b] - rows[a], cols[b] - cols[a]
            if (dr, dc) in {(0, 2), (1, 1), (1, -1)}:  # neighbours on a doubled-width grid
                np.testing.assert_allclose(
                    np.linalg.norm(centres[b] - centres[a]), np.sqrt(7) * pitch, rtol=1e-3
                )
                pairs += 1
    assert pairs >= 2
    assert stp.pp.pool_footprints(
        s, "all", size=7, complete=False, key_added="again"
    )  # read as hexagonal again


def test_pooled_elements_round_trip_and_are_never_overwritten_unasked(slide, tmp_path):
    s = _copy(slide)
    s.write(tmp_path / "s.zarr")
    s = sd.read_zarr(tmp_path / "s.zarr")
    stp.pp.pool_footprints(s, "st_spots", size=2)
    back = sd.read_zarr(tmp_path / "s.zarr")
    t = back.tables["st_spots_pooled2"]
    np.testing.assert_array_equal(_dense(t.X), _dense(t.obsm["members"] @ back.tables["st_spots"].X))
    assert "st_spots_pooled2_shapes" in back.shapes
    with pytest.raises(ValueError, match="overwrite=True"):
        stp.pp.pool_footprints(s, "st_spots", size=2)
    stp.pp.pool_footprints(s, "st_spots", size=2, overwrite=True)
    with pytest.raises(ValueError, match="not written by stpredict"):  # the user's own table of that name
        stp.pp.pool_footprints(s, "st_spots", size=2, key_added="square_016um", overwrite=True)


def test_bad_input_gets_a_clear_error(slide):
    s = _copy(slide)
    with pytest.raises(ValueError, match="No complete block"):
        stp.pp.pool_footprints(s, "st_spots", size=20)
    with pytest.raises(ValueError, match="size=7"):
        stp.pp.pool_footprints(s, "visium_spots", size=3)
    t = s.tables["st_spots"]
    s.tables["lognorm"] = t.copy()
    s.tables["lognorm"].X = np.log1p(_dense(t.X).astype(float) / 3)
    with pytest.raises(ValueError, match="non-integer"):
        stp.pp.pool_footprints(s, "lognorm")
    del s.tables["st_spots"].obs["array_row"]
    with pytest.raises(ValueError, match="grid"):
        stp.pp.pool_footprints(s, "st_spots")
    with pytest.raises(KeyError, match="not found"):
        stp.pp.pool_footprints(s, "nope")


def test_her2st_section_pools_3x3(her2st_dir):
    s = stp.datasets.her2st("C2", data_dir=her2st_dir, downsample=4)
    stp.pp.pool_footprints(s, "spots", size=3, complete=False)
    src, pooled = s.tables["spots"], s.tables["spots_pooled3"]
    assert pooled.uns["stpredict"]["pooled_from"]["grid"] == "square"
    np.testing.assert_array_equal(_dense(pooled.X), _dense(pooled.obsm["members"] @ src.X))
    assert int(pooled.X.sum()) == int(src.X.sum())  # every spot in exactly one block
    stp.pp.pool_footprints(s, "spots", size=3, key_added="complete3")
    assert 5 <= s.tables["complete3"].n_obs < pooled.n_obs
    assert (s.tables["complete3"].obs["n_members"] == 9).all()


def test_pixnet_trains_on_pooled_spots_when_a_tile_holds_them(tmp_path):
    """3 x 3 pooled ST spots (~500 µm) do not fit a 384 µm tile: said before the first step, with the tile to use."""
    pytest.importorskip("torch")
    from stpredict.model import PixNet

    s = stp.datasets.synthetic(
        width_um=1600, height_um=1600, n_genes=6, seed=0, bins_um=(16,), visium_spots=False
    )
    stp.pp.pool_footprints(s, "st_spots", size=3)
    small = PixNet(decoder_channels=8, train_mpp=2.0, tile_size=192)
    with pytest.raises(ValueError, match=r"No footprint fits in a tile.*at least 2\d\d px"):
        small.train(
            s, tables="st_spots_pooled3", n_top_genes=4, max_epochs=1, steps_per_epoch=1, progress=False
        )
    # tl.train's presets take a tile that holds them (1.25 x the largest union) unless told otherwise
    auto = stp.tl.train(
        s,
        tables="st_spots_pooled3",
        n_top_genes=4,
        max_epochs=1,
        steps_per_epoch=1,
        decoder_channels=8,
        progress=False,
    )
    largest = 2 * 200 + 100  # µm: 3 x 3 disks of 100 µm on a 200 µm grid
    assert auto.config["train_mpp"] == 4.0 and auto.config["tile_size"] * 4.0 >= 1.25 * largest
    model = PixNet(decoder_channels=8, train_mpp=2.0, tile_size=288)
    model.train(s, tables="st_spots_pooled3", n_top_genes=4, max_epochs=1, steps_per_epoch=2, progress=False)
    stp.tl.predict_dense(s, model, bins_um=(), shapes=["synthetic_st_spots"], progress=False)
    assert (
        s.tables["pixnet_synthetic_st_spots"].n_obs == s.tables["st_spots"].n_obs
    )  # predicted at single spots


def test_baselines_train_on_pooled_spots_and_predict_single_spots():
    """The probe pools features over each union (its tiles grow to hold them); the SpotRegressor crops its box."""
    pytest.importorskip("torch")
    from stpredict.model import LinearProbe, SpotRegressor

    s = stp.datasets.synthetic(
        width_um=1600, height_um=1600, n_genes=6, seed=0, bins_um=(16,), visium_spots=False
    )
    stp.pp.pool_footprints(s, "st_spots", size=3)
    n = s.tables["st_spots_pooled3"].n_obs
    probe = LinearProbe(encoder="resnet10t", train_mpp=4.0, tile_size=64)  # 256 µm tiles; unions span ~500 µm
    probe.train(s, tables="st_spots_pooled3", n_top_genes=4, progress=False)
    assert probe.training_params["n_footprints"] == n  # every union, none left out
    spot = SpotRegressor(encoder="resnet10t", train_mpp=8.0)
    spot.train(s, tables="st_spots_pooled3", n_top_genes=4, max_epochs=1, steps_per_epoch=1, progress=False)
    # the crop is 1.5 x the union's bounding box (~500 µm), at 8 µm/px
    assert spot.config["input_size"] == pytest.approx(1.5 * 500 / 8, rel=0.1)
    for model in (probe, spot):
        stp.tl.predict_shapes(s, model, shapes="synthetic_st_spots", key_added=model.key)
        pred = s.tables[f"{model.key}_synthetic_st_spots"]
        assert pred.n_obs == s.tables["st_spots"].n_obs and np.isfinite(pred.X).all()
