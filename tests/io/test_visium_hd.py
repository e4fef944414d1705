from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from spatialdata.transformations import get_transformation

import stpredict as stp


@pytest.fixture(scope="module")
def outs(tmp_path_factory, synthetic_small):
    path = tmp_path_factory.mktemp("hd") / "outs"
    return stp.datasets.write_visium_hd_outs(synthetic_small, path, tables=["square_008um", "square_016um"])


def test_visium_hd_round_trip_through_spatialdata_io(outs, synthetic_small):
    sdata = stp.io.read_visium_hd(outs, dataset_id="hd")
    assert {"square_008um", "square_016um"} <= set(sdata.tables)
    assert stp.pp.get_mpp(sdata, "hd_full_image") == pytest.approx(0.5)
    for name in ("square_008um", "square_016um"):
        ref, got = synthetic_small.tables[name], sdata.tables[name]
        assert list(got.obs_names) == list(ref.obs_names)
        assert list(got.var_names) == list(ref.var_names)
        np.testing.assert_array_equal(got.X.toarray(), ref.X.toarray())
        np.testing.assert_allclose(got.obsm["spatial"], ref.obsm["spatial"])
        assert got.uns["stpredict"]["mpp"] == pytest.approx(0.5)
        shapes = sdata[f"hd_{name}"]
        assert "hd_um" in get_transformation(shapes, get_all=True)
        # the reader's squares cover the same footprints as the synthetic bins
        np.testing.assert_allclose(
            shapes.total_bounds, synthetic_small[f"synthetic_{name}"].total_bounds, atol=1e-6
        )
    img = sdata["hd_full_image"]["scale0"].image.values
    np.testing.assert_array_equal(img, synthetic_small["synthetic_full_image"]["scale0"].image.values)


def test_visium_hd_errors(tmp_path, outs, synthetic_small):
    with pytest.raises(FileNotFoundError, match="not found"):
        stp.io.read_visium_hd(tmp_path / "none", dataset_id="x")
    with pytest.raises(TypeError):
        stp.io.read_visium_hd(outs)  # dataset_id is required
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"scalefactors_json\.json"):
        stp.io.read_visium_hd(empty, dataset_id="x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stp.datasets.write_visium_hd_outs(synthetic_small, outs)


@pytest.fixture(scope="module")
def outs_2um(tmp_path_factory, synthetic_small):
    path = tmp_path_factory.mktemp("hd2") / "outs"
    return stp.datasets.write_visium_hd_outs(synthetic_small, path, tables=["square_002um", "square_016um"])


@pytest.fixture(scope="module")
def hd_labels(outs_2um):
    return stp.io.read_visium_hd(outs_2um, dataset_id="hd", bins_as="labels")


def test_visium_hd_bins_as_labels_match_the_shapes(outs_2um, hd_labels, synthetic_small):
    """Bins read as a bin-id raster: same tables as spatialdata-io's, same footprints as its squares."""
    from stpredict._core import footprint_matrix, table_footprints

    shp = stp.io.read_visium_hd(outs_2um, dataset_id="hd", bins_as="shapes")
    lab = hd_labels
    assert set(lab.shapes) == set() and set(shp.labels) == set()
    for name in ("square_002um", "square_016um"):
        a, b = lab.tables[name], shp.tables[name]
        labels_name = f"hd_{name}_labels"
        assert labels_name in lab.labels
        assert a.uns["spatialdata_attrs"]["region"] == labels_name
        assert a.uns["spatialdata_attrs"]["instance_key"] == "bin_id"
        assert list(a.obs_names) == list(b.obs_names) == list(synthetic_small.tables[name].obs_names)
        assert list(a.var_names) == list(b.var_names)
        np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
        np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
        for col in ("in_tissue", "array_row", "array_col", "location_id"):
            np.testing.assert_array_equal(a.obs[col].to_numpy(), b.obs[col].to_numpy(), err_msg=col)
        n_cols = lab.labels[labels_name].shape[1]
        np.testing.assert_array_equal(a.obs["bin_id"], a.obs["array_row"] * n_cols + a.obs["array_col"] + 1)
        assert {k: v for k, v in a.uns["stpredict"].items() if k not in ("bins_as", "labels")} == {
            **{k: v for k, v in b.uns["stpredict"].items() if k != "bins_as"},
            "grid_max_residual_px": pytest.approx(0.0, abs=1e-9),
        }
        assert (a.uns["stpredict"]["bins_as"], b.uns["stpredict"]["bins_as"]) == ("labels", "shapes")
        assert set(get_transformation(lab.labels[labels_name], get_all=True)) == set(
            get_transformation(shp.shapes[f"hd_{name}"], get_all=True)
        )
        fa, ra = table_footprints(lab, name, "hd_full_image")
        fb, rb = table_footprints(shp, name, "hd_full_image")
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_allclose(fa.centres, fb.centres, atol=1e-6)
        np.testing.assert_allclose(fa.centres, a.obsm["spatial"][ra], atol=1e-6)
        assert fa.is_grid
        # the same pixels on a coarser map grid, with partial coverage
        half = np.diag([0.5, 0.5, 1.0])
        Aa, ka = footprint_matrix(fa.affine(half), (416, 480), coverage="fraction")
        Ab, kb = footprint_matrix(fb.affine(half), (416, 480), coverage="fraction")
        assert fb.geometries is not None
        np.testing.assert_array_equal(ka, kb)
        assert Aa.shape == Ab.shape and Aa.nnz == Ab.nnz
        assert abs(Aa - Ab).max() < 1e-9
    # "auto": 2 µm bins as labels, larger ones as shapes
    auto = stp.io.read_visium_hd(outs_2um, dataset_id="hd")
    assert set(auto.labels) == {"hd_square_002um_labels"} and set(auto.shapes) == {"hd_square_016um"}
    only = stp.io.read_visium_hd(outs_2um, dataset_id="hd", bin_size=2)
    assert set(only.tables) == {"square_002um"} and "hd_full_image" in only.images
    assert "hd_um" in get_transformation(only.labels["hd_square_002um_labels"], get_all=True)
    with pytest.raises(ValueError, match="bins_as"):
        stp.io.read_visium_hd(outs_2um, dataset_id="hd", bins_as="polygons")
    with pytest.raises(ValueError, match="No bins of size"):
        stp.io.read_visium_hd(outs_2um, dataset_id="hd", bin_size=8)


def test_visium_hd_grid_fit_follows_a_rotated_grid():
    from stpredict.io._visium_hd import _fit_grid

    rows, cols = np.divmod(np.arange(40 * 50), 50)
    th, side = np.deg2rad(0.3), 7.3
    L = side * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xy = np.c_[cols + 0.5, rows + 0.5] @ L.T + [120.0, -35.0]
    M, res = _fit_grid(rows, cols, xy[:, 0], xy[:, 1], chunk=333)
    np.testing.assert_allclose(M[:2, :2], L, atol=1e-9)
    np.testing.assert_allclose(M[:2, 2], [120.0, -35.0], atol=1e-7)
    assert res < 1e-6
    with pytest.raises(ValueError, match="one line"):
        _fit_grid(np.zeros(5, int), np.arange(5), np.arange(5.0), np.zeros(5))


def test_pixnet_trains_on_visium_hd_bins_read_as_labels(hd_labels):
    model = stp.model.PixNet(encoder="resnet18", decoder_channels=16, train_mpp=2.0, tile_size=128).train(
        hd_labels,
        tables="square_002um",
        n_top_genes=3,
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        progress=False,
        seed=0,
    )
    assert model.history and np.isfinite(model.history[-1]["train_loss"])


def test_pooling_raster_linked_bins_matches_pooling_their_squares(outs_2um, hd_labels):
    """pp.pool_footprints on 2 µm bins read as a bin-id raster gives the same table and footprints as on squares."""
    shp = stp.io.read_visium_hd(outs_2um, dataset_id="hd", bins_as="shapes")
    lab = sd.SpatialData(
        labels=dict(hd_labels.labels), tables={"bins": hd_labels.tables["square_002um"].copy()}
    )
    stp.pp.pool_footprints(lab, "bins", size=4, key_added="p")
    stp.pp.pool_footprints(shp, "square_002um", size=4, key_added="p")
    a, b = lab.tables["p"], shp.tables["p"]
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    np.testing.assert_array_equal(a.obs[["array_row", "array_col"]], b.obs[["array_row", "array_col"]])
    cs = "hd"
    ga = sd.transform(lab.shapes["p_shapes"], to_coordinate_system=cs)
    gb = sd.transform(shp.shapes["p_shapes"], to_coordinate_system=cs)
    assert cs in get_transformation(lab.shapes["p_shapes"], get_all=True)
    np.testing.assert_allclose(ga.area.to_numpy(), gb.area.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ga.centroid.x.to_numpy(), gb.centroid.x.to_numpy(), atol=1e-3)
    np.testing.assert_allclose(ga.centroid.y.to_numpy(), gb.centroid.y.to_numpy(), atol=1e-3)
