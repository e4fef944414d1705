from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import spatialdata as sd
from spatialdata.models import Image2DModel, ShapesModel
from spatialdata.transformations import Identity, get_transformation

import stpredict as stp
from stpredict.model import PixNet

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=2, bins_um=(8, 16), st_spots=False
    )


@pytest.fixture(scope="module")
def model(slide):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return PixNet(list(slide.tables["square_016um"].var_names[:4]), **SMALL)


@pytest.fixture
def fresh(slide):
    return sd.SpatialData(
        images={"he": slide["synthetic_full_image"]},
        shapes={"visium": slide["synthetic_visium_spots"], "hd16": slide["synthetic_square_016um"]},
    )


def _check_bin_means(t, d: np.ndarray, k: int, tol: float) -> None:
    """The table's X is the mean of the map ``d`` over each k × k bin's predicted pixels (the rest is 0)."""
    blocks = d[:, : d.shape[1] // k * k, : d.shape[2] // k * k]
    n = (blocks != 0).any(0).reshape(d.shape[1] // k, k, d.shape[2] // k, k).sum((1, 3))
    blocks = blocks.reshape(d.shape[0], d.shape[1] // k, k, d.shape[2] // k, k).astype(np.float64).sum((2, 4))
    blocks = blocks / np.maximum(n, 1)
    np.testing.assert_allclose(
        np.asarray(t.X), blocks[:, t.obs["array_row"], t.obs["array_col"]].T, rtol=tol, atol=tol
    )


def test_writes_dense_map_bins_and_shape_tables(fresh, model):
    names = stp.tl.predict_dense(fresh, model, shapes=["visium", "hd16"], chunk_size=96, progress=False)
    assert names == [
        "pixnet_dense",
        "pixnet_square_002um_labels", "pixnet_square_002um",
        "pixnet_square_008um_shapes", "pixnet_square_008um",
        "pixnet_square_016um_shapes", "pixnet_square_016um",
        "pixnet_visium", "pixnet_hd16",
    ]  # fmt: skip
    el = fresh["pixnet_dense"]
    dense = el["scale0"].image
    assert dense.dims == ("c", "y", "x") and dense.dtype == np.float32
    assert list(dense.c.values) == model.genes and len(el.children) >= 2  # multiscale
    assert dense.shape[1:] == (256, 320)  # 512 x 640 µm at 2 µm/px
    # placed on the H&E in every coordinate system: dense pixel -> 4 H&E pixels, 2 µm
    for cs, scale in (("synthetic", 4.0), ("synthetic_um", 2.0)):
        m = get_transformation(el, cs).to_affine_matrix(("x", "y"), ("x", "y"))
        np.testing.assert_allclose(m[:2, :2], scale * np.eye(2))
    assert stp.pp.get_mpp(fresh, "pixnet_dense") == pytest.approx(2.0)

    d = dense.values
    # level 1: the 2 × 2 means of the map, written by each block's task
    lvl1 = el["scale1"].image.values
    h, w = lvl1.shape[1:]
    np.testing.assert_allclose(
        lvl1, d[:, : 2 * h, : 2 * w].reshape(-1, h, 2, w, 2).mean((2, 4)), rtol=1e-5, atol=1e-6
    )
    t2, t8, t16 = (fresh.tables[f"pixnet_square_{b:03d}um"] for b in (2, 8, 16))
    # 2 µm bins are the map's pixels (X read from the map, not a copy); 8 and 16 µm bins are exact means of them
    np.testing.assert_array_equal(np.asarray(t2.X), d[:, t2.obs["array_row"], t2.obs["array_col"]].T)
    for t, k in ((t8, 4), (t16, 8)):
        _check_bin_means(t, d, k, tol=1e-6)
        assert t.uns["spatialdata_attrs"]["region"] == f"pixnet_square_{2 * k:03d}um_shapes"
        assert t.uns["stpredict"]["out_mpp"] == 2.0 and t.uns["stpredict"]["model_genes"] == model.genes
        c = fresh[f"pixnet_square_{2 * k:03d}um_shapes"].geometry.centroid
        np.testing.assert_allclose(np.c_[c.x, c.y], t.obsm["spatial"])
    # spots: the mean of the map pixels whose centres lie inside each 55 µm disk (in map pixels)
    tv = fresh.tables["pixnet_visium"]
    spots = fresh["visium"]
    yy, xx = np.mgrid[0 : d.shape[1], 0 : d.shape[2]]
    for i in range(3):
        cx, cy = spots.geometry.x.iloc[i] / 4, spots.geometry.y.iloc[i] / 4
        inside = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) <= spots.radius.iloc[i] / 4
        np.testing.assert_allclose(tv.X[i], d[:, inside].mean(1), rtol=1e-5)
    assert tv.uns["spatialdata_attrs"]["region"] == "visium"


def test_bins_from_every_path_and_a_float16_map(tmp_path, slide, model):
    """Bins reduced in the pass (in memory or as parts on disk) or from the stored map agree; float16 maps are close.

    With blocks of 128 map px the 8 µm bins (4 px) tile a block and are reduced in the pass, 40 µm bins (20 px) do
    not and are read from the stored map; ``max_in_memory=0`` sends the in-pass bins to parts on disk.
    """
    s = sd.SpatialData(images={"he": slide["synthetic_full_image"]})
    s.write(tmp_path / "s.zarr")
    s = sd.read_zarr(tmp_path / "s.zarr")
    kw = {"chunk_size": 128, "progress": False, "bins_um": (2, 8, 40)}
    stp.tl.predict_dense(s, model, **kw)
    stp.tl.predict_dense(s, model, key_added="half", dtype="float16", max_in_memory=0, **kw)
    d32 = s["pixnet_dense"]["scale0"].image.values
    d16 = s["half_dense"]["scale0"].image.values
    assert d32.dtype == np.float32 and d16.dtype == np.float16
    # float16 keeps 11 significant bits: within 2^-11 of each value (0.004 at 8), 0 stays 0
    np.testing.assert_allclose(d16.astype(np.float32), d32, rtol=2**-11, atol=1e-7)
    back = sd.read_zarr(tmp_path / "s.zarr")
    for key in ("pixnet", "half"):
        t8, t40 = (back.tables[f"{key}_square_{b:03d}um"] for b in (8, 40))
        _check_bin_means(t8, d32, 4, tol=1e-5)  # from the float32 blocks, whatever the stored precision
        _check_bin_means(t40, s[f"{key}_dense"]["scale0"].image.values.astype(np.float64), 20, tol=1e-5)
        np.testing.assert_array_equal(np.asarray(s.tables[f"{key}_square_008um"].X), np.asarray(t8.X))
        # the 2 µm table stores no X: its values are the map's pixels, read from the map by io.read_table
        assert back.tables[f"{key}_square_002um"].X is None
        t2 = stp.io.read_table(tmp_path / "s.zarr", f"{key}_square_002um")
        d = s[f"{key}_dense"]["scale0"].image.values
        np.testing.assert_array_equal(t2.X.compute(), d[:, t2.obs["array_row"], t2.obs["array_col"]].T)
        assert t2.uns["stpredict"]["X"] == {"map": f"{key}_dense"}
    with pytest.raises(ValueError, match="float16"):
        stp.tl.predict_dense(s, model, key_added="x", dtype="int8", **kw)


def test_agrees_with_model_predict_footprints(slide, model):
    """The whole-slide map and the per-footprint path run the same engine: the same spot values."""
    s = sd.SpatialData(
        images={"he": slide["synthetic_full_image"]}, shapes={"visium": slide["synthetic_visium_spots"]}
    )
    s.tables["visium_spots"] = slide.tables["visium_spots"].copy()
    s.tables["visium_spots"].obs["region"] = "visium"
    s.tables["visium_spots"].uns["spatialdata_attrs"]["region"] = "visium"
    stp.tl.predict_dense(s, model, bins_um=(), shapes=["visium"], chunk_size=64, progress=False)
    dense = s.tables["pixnet_visium"].X
    direct = model.predict_footprints(s, table="visium_spots", image_key="he", chunk_size=64)
    np.testing.assert_allclose(dense, direct, rtol=1e-5, atol=1e-5)
    # other blocks (and the tissue mask) change only what the margin (here 16 and 40 map px) does not see: still
    # close (measured 0.035 of the spread with the resize upsampling, 0.02 with the transposed convolution)
    other = model.predict_footprints(s, table="visium_spots", image_key="he", chunk_size=160)
    assert np.abs(other - direct).max() < 0.05 * direct.std()


def test_glass_is_not_predicted_and_gets_no_bins(fresh, model):
    """Off the tissue the map is 0 (not predicted), bins only touch tissue, and named shapes are predicted whole."""
    stp.tl.predict_dense(fresh, model, bins_um=(2, 16), chunk_size=32, progress=False)
    d = fresh["pixnet_dense"]["scale0"].image.values
    mask = stp.tl.tissue_mask(fresh, "he", d.shape[1:])
    assert 0.2 < mask.mean() < 0.95
    assert np.all(d[:, ~mask] == 0) and np.all(d[:, mask] != 0)
    assert not mask[:32, :32].any()  # the corner is glass
    # glass inside blocks that touch tissue is not predicted either (it was)
    blocks = mask.reshape(8, 32, 10, 32).any((1, 3))
    partial = np.kron(blocks, np.ones((32, 32), bool)) & ~mask
    assert partial.sum() > 100
    t2, t16 = fresh.tables["pixnet_square_002um"], fresh.tables["pixnet_square_016um"]
    assert t2.n_obs == mask.sum()
    assert t16.n_obs < (d.shape[1] // 8) * (d.shape[2] // 8)
    assert mask.reshape(32, 8, 40, 8).any((1, 3))[t16.obs["array_row"], t16.obs["array_col"]].all()
    # an edge bin is the mean of its tissue pixels, not of its glass
    r, c = t16.obs["array_row"].to_numpy(), t16.obs["array_col"].to_numpy()
    cover = mask.reshape(32, 8, 40, 8).mean((1, 3))[r, c]
    assert ((cover > 0) & (cover < 1)).sum() > 10
    for i in np.nonzero((cover > 0) & (cover < 1))[0][:10]:
        px = d[:, r[i] * 8 : r[i] * 8 + 8, c[i] * 8 : c[i] * 8 + 8]
        np.testing.assert_allclose(
            t16.X[i], px[:, mask[r[i] * 8 : r[i] * 8 + 8, c[i] * 8 : c[i] * 8 + 8]].mean(1), rtol=1e-5
        )
    # named shapes on glass are predicted: none of their pixels is 0
    stp.tl.predict_dense(
        fresh, model, bins_um=(), shapes=["hd16"], chunk_size=32, key_added="s", progress=False
    )
    ds = fresh["s_dense"]["scale0"].image.values
    assert np.all(ds[:, mask] == d[:, mask])  # the tissue is the same map
    hd16 = stp.tl.aggregate(fresh, values="pixnet_dense", by="hd16", how="sum", key_added="zeros")
    on_glass = (fresh.tables[hd16].X == 0).all(1)  # hd16 tiles the whole slide, glass too
    assert on_glass.sum() > 10
    X = fresh.tables["s_hd16"].X
    assert np.all(X != 0) and np.isfinite(X).all() and fresh.tables["s_hd16"].n_obs == len(fresh["hd16"])


def test_refuses_to_overwrite_and_writes_nothing(fresh, model):
    stp.tl.predict_dense(fresh, model, bins_um=(16,), progress=False)
    before = set(fresh.tables)
    with pytest.raises(ValueError, match=r"already exist.*overwrite=True"):
        stp.tl.predict_dense(fresh, model, bins_um=(8, 16), progress=False)
    assert set(fresh.tables) == before and "pixnet_square_008um" not in fresh.tables
    stp.tl.predict_dense(fresh, model, bins_um=(8, 16), overwrite=True, progress=False)
    assert "pixnet_square_008um" in fresh.tables
    with pytest.raises(ValueError, match="multiple of out_mpp"):
        stp.tl.predict_dense(fresh, model, bins_um=(3,), key_added="x", progress=False)
    with pytest.raises(ValueError, match="integer multiple or divisor"):
        stp.tl.predict_dense(fresh, model, out_mpp=3.0, key_added="x", progress=False)


def test_backed_zarr_all_or_nothing(tmp_path, fresh, model, monkeypatch):
    """An interrupted overwrite leaves the earlier results in memory and on disk; a re-run replaces them."""
    path = tmp_path / "s.zarr"
    fresh.write(path)
    sdata = sd.read_zarr(path)
    stp.tl.predict_dense(sdata, model, bins_um=(16,), progress=False)
    before = np.asarray(sd.read_zarr(path).tables["pixnet_square_016um"].X).copy()
    import stpredict.tl._predict_dense as pdmod

    calls = {"n": 0}
    real = pdmod.bins_shapes

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(pdmod, "bins_shapes", flaky)
    with pytest.raises(KeyboardInterrupt):
        stp.tl.predict_dense(sdata, model, bins_um=(8, 16), overwrite=True, progress=False)
    for s in (sdata, sd.read_zarr(path)):
        assert "pixnet_dense" in s.images and "pixnet_square_008um" not in s.tables
        np.testing.assert_array_equal(np.asarray(s.tables["pixnet_square_016um"].X), before)
    assert not any((path / ".stpredict").glob("tx-*")), "the failed run's staging folder was not removed"
    monkeypatch.setattr(pdmod, "bins_shapes", real)

    stp.tl.predict_dense(sdata, model, bins_um=(8, 16), shapes=["visium"], overwrite=True, progress=False)
    back = sd.read_zarr(path)
    assert {"pixnet_square_008um", "pixnet_square_016um", "pixnet_visium"} <= set(back.tables)
    np.testing.assert_allclose(back.tables["pixnet_visium"].X, sdata.tables["pixnet_visium"].X)
    assert set(stp.io.written_elements(back)) >= {
        "pixnet_dense",
        "pixnet_visium",
        "pixnet_square_008um_shapes",
    }
    # the in-memory dense map now reads from the store, not from a temporary folder
    src = sdata["pixnet_dense"]["scale0"].image.data
    assert str(path) in str(src.dask.keys()) or any(str(path) in str(v) for v in src.dask.values())


def _texture_sdata(period_px: int = 128, size_px: int = 1024, seed: int = 0) -> sd.SpatialData:
    rng = np.random.default_rng(seed)
    patch = rng.integers(60, 230, (period_px, period_px, 3), dtype=np.uint8)
    reps = size_px // period_px
    img = np.tile(patch, (reps, reps, 1))
    el = Image2DModel.parse(np.moveaxis(img, -1, 0), dims=("c", "y", "x"), scale_factors=[2])
    s = sd.SpatialData(images={"he": el})
    stp.pp.set_mpp(s, "he", 0.5)
    return s


def test_no_seams_and_tiling_independence(model):
    # texture period 128 H&E px = 64 µm = 32 map px = one network stride at 2 µm/px
    s = _texture_sdata()
    stp.tl.predict_dense(
        s, model, bins_um=(), tissue=False, chunk_size=64, margin=64, key_added="a", progress=False
    )
    stp.tl.predict_dense(
        s, model, bins_um=(), tissue=False, chunk_size=96, margin=64, key_added="b", progress=False
    )
    a = s["a_dense"]["scale0"].image.values
    b = s["b_dense"]["scale0"].image.values
    inner = (slice(None), slice(64, -64), slice(64, -64))
    scale = a[inner].std()
    # a periodic image gives a periodic map: no discontinuity where blocks (every 64 px) meet
    shift = np.abs(a[:, 64:-96, 64:-64] - a[:, 96:-64, 64:-64]).max()
    assert shift < 0.02 * scale, (shift, scale)
    # and the map does not depend on the block size
    assert np.abs(a[inner] - b[inner]).max() < 0.02 * scale


def test_same_result_on_a_distributed_cluster(fresh, model):
    distributed = pytest.importorskip("distributed")
    ref = sd.SpatialData(images={"he": fresh["he"]})
    stp.tl.predict_dense(ref, model, bins_um=(16,), progress=False)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        out = sd.SpatialData(images={"he": fresh["he"]})
        stp.tl.predict_dense(out, model, bins_um=(16,), progress=False)
    np.testing.assert_allclose(
        out["pixnet_dense"]["scale0"].image.values, ref["pixnet_dense"]["scale0"].image.values, atol=1e-5
    )


def test_visium_hd_bins_from_the_reader_and_dask_backed_tables(tmp_path, slide, model):
    """Bins read by io.read_visium_hd are valid `shapes=`; huge bin tables keep a lazy X that writes to zarr."""
    outs = stp.datasets.write_visium_hd_outs(slide, tmp_path / "outs", tables=["square_016um"])
    hd = stp.io.read_visium_hd(outs, dataset_id="hd")
    hd.write(tmp_path / "hd.zarr")
    hd = sd.read_zarr(tmp_path / "hd.zarr")
    stp.tl.predict_dense(
        hd, model, bins_um=(16,), shapes=["hd_square_016um"], max_in_memory=0, progress=False
    )
    import dask.array as da

    assert isinstance(hd.tables["pixnet_square_016um"].X, da.Array)
    back = sd.read_zarr(tmp_path / "hd.zarr")
    np.testing.assert_allclose(
        np.asarray(back.tables["pixnet_square_016um"].X),
        np.asarray(hd.tables["pixnet_square_016um"].X.compute()),
    )
    # the reader's 16 µm bins coincide with the map's own 16 µm bins: same values, bin for bin
    pred_bins = back.tables["pixnet_square_016um"]
    read_bins = back.tables["pixnet_hd_square_016um"]
    ref = hd.tables["square_016um"]
    pos = {
        rc: i for i, rc in enumerate(zip(pred_bins.obs["array_row"], pred_bins.obs["array_col"], strict=True))
    }
    both = [
        (i, pos[rc])
        for i, rc in enumerate(zip(ref.obs["array_row"], ref.obs["array_col"], strict=True))
        if rc in pos
    ]
    assert len(both) > 0.9 * ref.n_obs
    a = np.asarray(read_bins.X)[[b[0] for b in both]]
    b = np.asarray(pred_bins.X)[[b[1] for b in both]]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bins_as_labels_bin_id_raster(tmp_path, fresh, model, monkeypatch):
    """Big bin tables annotate a bin-id raster: same values as polygons, placed on the H&E, usable downstream."""
    import scanpy as sc
    import squidpy as sq

    import stpredict._constants as C

    path = tmp_path / "s.zarr"
    fresh.write(path)
    sdata = sd.read_zarr(path)
    stp.tl.predict_dense(sdata, model, bins_um=(8, 16), progress=False)  # small tables: polygons
    assert {"pixnet_square_008um_shapes", "pixnet_square_016um_shapes"} <= set(sdata.shapes)
    ref = sdata.tables["pixnet_square_008um"].copy()
    monkeypatch.setattr(C, "MAX_BIN_SHAPES", 1000)  # 8 µm: ~3300 bins -> labels; 16 µm: ~850 -> shapes
    with pytest.raises(ValueError, match="already exist"):
        stp.tl.predict_dense(sdata, model, bins_um=(8, 16), progress=False)
    import stpredict.tl._predict_dense as P

    said = []
    monkeypatch.setattr(C, "WARN_BINS", 4000)  # above it, a warning before the network runs says the memory
    monkeypatch.setattr(P.logger, "warning", said.append)
    stp.tl.predict_dense(sdata, model, bins_um=(8, 16), max_in_memory=0, overwrite=True, progress=False)
    assert any("million 8 µm bins" in m and "bins_um=(8, 16)" in m for m in said), said
    # the representation switched; the polygons it replaces are gone from memory and from the store
    back = sd.read_zarr(path)
    for s in (sdata, back):
        assert "pixnet_square_008um_labels" in s.labels and "pixnet_square_008um_shapes" not in s.shapes
        assert "pixnet_square_016um_shapes" in s.shapes and "pixnet_square_016um_labels" not in s.labels
    t8 = back.tables["pixnet_square_008um"]
    assert t8.uns["spatialdata_attrs"]["region"] == "pixnet_square_008um_labels"
    import dask.array as da

    lazy = stp.io.read_table(path, "pixnet_square_008um")  # X stays on disk
    assert isinstance(lazy.X, da.Array) and list(lazy.obs_names) == list(t8.obs_names)
    np.testing.assert_array_equal(lazy.X.compute(), np.asarray(t8.X))
    assert lazy.uns["spatialdata_attrs"] == t8.uns["spatialdata_attrs"]
    with pytest.raises(KeyError, match="its tables"):
        stp.io.read_table(path, "nope")
    assert t8.uns["stpredict"]["footprint"] == {
        "kind": "square bins", "bin_um": 8, "labels": "pixnet_square_008um_labels", "n_bins": t8.n_obs
    }  # fmt: skip
    # the same values, bin for bin (row/col), as the polygons' table
    key = lambda t: [f"{r}_{c}" for r, c in zip(t.obs["array_row"], t.obs["array_col"], strict=True)]  # noqa: E731
    assert list(t8.obs_names) == key(t8)
    np.testing.assert_allclose(
        np.asarray(t8.X), pd.DataFrame(ref.X, index=key(ref)).loc[key(t8)].to_numpy(), rtol=1e-6, atol=1e-6
    )
    # the raster: one pixel per bin, its id = instance_id, placed so each bin's centre lands on obsm["spatial"]
    lab = back.labels["pixnet_square_008um_labels"]
    v = lab.values
    Wk = v.shape[1]
    ids = t8.obs["instance_id"].to_numpy()
    np.testing.assert_array_equal(ids, t8.obs["array_row"] * Wk + t8.obs["array_col"] + 1)
    np.testing.assert_array_equal(v[t8.obs["array_row"], t8.obs["array_col"]], ids)
    assert (v > 0).sum() == t8.n_obs
    m = get_transformation(lab, "synthetic").to_affine_matrix(("x", "y"), ("x", "y"))
    centres = (m @ np.c_[t8.obs["array_col"] + 0.5, t8.obs["array_row"] + 0.5, np.ones(t8.n_obs)].T)[:2].T
    np.testing.assert_allclose(centres, t8.obsm["spatial"])
    # downstream: spatialdata's rasterize_bins, scanpy, squidpy grid neighbours, spatialdata-plot render_labels
    img = sd.rasterize_bins(back, "pixnet_square_008um_labels", "pixnet_square_008um", "array_col", "array_row",
                            value_key=[model.genes[0]])  # fmt: skip
    assert img.shape[0] == 1 and np.isfinite(np.asarray(img)).all()
    sc.pp.neighbors(t8, n_neighbors=8, use_rep="X")
    sq.gr.spatial_neighbors(t8, coord_type="grid", n_neighs=4)
    assert np.median(np.asarray(t8.obsp["spatial_connectivities"].sum(1)).ravel()) == 4
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401

    fig, ax = plt.subplots()
    back.pl.render_labels(
        "pixnet_square_008um_labels", color=model.genes[0], table_name="pixnet_square_008um"
    ).pl.show(ax=ax, coordinate_systems="synthetic")
    assert len(ax.get_images()) >= 1
    plt.close(fig)


def test_pixel_bin_tables_stop_at_max_pixel_bins(tmp_path, fresh, model, monkeypatch):
    """Above ``max_pixel_bins`` no table of the map's own pixels is built; a re-run removes an earlier one."""
    import stpredict.tl._predict_dense as P

    path = tmp_path / "s.zarr"
    fresh.write(path)
    sdata = sd.read_zarr(path)
    stp.tl.predict_dense(sdata, model, bins_um=(2, 16), progress=False)
    n2 = sdata.tables["pixnet_square_002um"].n_obs
    assert n2 > 1000 and "pixnet_square_002um_labels" in sdata.labels
    said = []
    monkeypatch.setattr(P.logger, "warning", said.append)
    with pytest.raises(ValueError, match="max_pixel_bins"):
        stp.tl.predict_dense(sdata, model, bins_um=(2, 16), max_pixel_bins=-1, overwrite=True, progress=False)
    names = stp.tl.predict_dense(
        sdata, model, bins_um=(2, 16), max_pixel_bins=n2 - 1, overwrite=True, progress=False
    )
    assert names == ["pixnet_dense", "pixnet_square_016um_shapes", "pixnet_square_016um"]
    assert any("No 2 µm bin table" in m and "max_pixel_bins=None" in m for m in said), said
    back = sd.read_zarr(path)
    for s in (sdata, back):  # the earlier run's 2 µm table and its raster are gone, in memory and on disk
        assert "pixnet_square_002um" not in s.tables and "pixnet_square_002um_labels" not in s.labels
        assert "pixnet_square_016um" in s.tables
    # at the limit it is built (the 8 µm-style bins of several pixels never stop)
    stp.tl.predict_dense(sdata, model, bins_um=(2, 16), max_pixel_bins=n2, overwrite=True, progress=False)
    assert sdata.tables["pixnet_square_002um"].n_obs == n2


def test_one_image_pyramid_per_call(fresh, model, monkeypatch):
    """The engine's pyramid of the H&E also gives the tissue mask: predict_dense builds it once."""
    from stpredict._core._image import Pyramid

    built = []
    real = Pyramid.from_element.__func__
    monkeypatch.setattr(
        Pyramid, "from_element", classmethod(lambda cls, *a, **k: built.append(1) or real(cls, *a, **k))
    )
    stp.tl.predict_dense(fresh, model, bins_um=(16,), progress=False)
    assert len(built) == 1


def test_map_levels_are_stored_one_at_a_time_as_2x2_means(tmp_path):
    """The map's coarser levels: each the 2 × 2 means of the stored level before it, in spatialdata's level shapes.

    For even sizes that is what spatialdata's own 2x resampling (bilinear, no anti-aliasing) gives.
    """
    import dask.array as da
    import zarr

    from stpredict._core._image import level_paths
    from stpredict.tl._dense_blocks import _fill_levels, _map_skeleton

    x = da.random.default_rng(0).random((3, 1037, 777), chunks=(3, 256, 256)).astype(np.float32)
    ref = Image2DModel.parse(x, dims=("c", "y", "x"), scale_factors=[2, 2, 2])  # down to <= 256 px
    skeleton = _map_skeleton(["a", "b", "c"], (1037, 777), np.float32, 256, {"global": Identity()})
    assert list(skeleton.children) == list(ref.children)
    sd.SpatialData(images={"m": skeleton}).write(tmp_path / "s.zarr")
    paths = level_paths(tmp_path / "s.zarr" / "images" / "m")
    assert not any((Path(p) / "c").exists() for p in paths)  # staging the skeleton wrote no chunk
    da.store(x, zarr.open_array(paths[0], mode="r+"), lock=False)
    _fill_levels(paths)
    back = sd.read_zarr(tmp_path / "s.zarr")["m"]
    Image2DModel().validate(back)
    prev = np.asarray(x)
    for i, k in enumerate(ref.children):
        a, b = ref[k]["image"], back[k]["image"]
        assert a.shape == b.shape
        if i:
            h, w = b.shape[1:]
            prev = prev[:, : 2 * h, : 2 * w].reshape(3, h, 2, w, 2).mean(axis=(2, 4))
        np.testing.assert_allclose(np.asarray(b.data), prev, rtol=1e-5)
        side = 128 if k == "scale1" else 256  # level 1 in half blocks: each block's task writes its own chunk
        assert b.data.chunksize == (3, min(side, b.shape[1]), min(side, b.shape[2]))
    # where the sizes are even, the same as spatialdata's own resampling
    even = Image2DModel.parse(x[:, :1024, :768], dims=("c", "y", "x"), scale_factors=[2])
    np.testing.assert_allclose(
        np.asarray(even["scale1"]["image"].data),
        np.asarray(back["scale1"]["image"].data)[:, :512, :384],
        rtol=1e-5,
    )


def test_latent_map_gives_the_same_tables_and_reads_as_genes(tmp_path, slide, model):
    """``map_as="latent"`` stores the decoder's last features and the head; every table and reader gives the genes.

    The head is linear, so the head of a latent mean is the mean of the genes: bins in the pass (8 µm), from the
    stored map (40 µm), the map's own pixels (2 µm, read through the head by io.read_table), shapes, and
    tl.aggregate agree with a map of genes up to float rounding; a re-run as genes removes the head.
    """
    s = sd.SpatialData(
        images={"he": slide["synthetic_full_image"]}, shapes={"visium": slide["synthetic_visium_spots"]}
    )
    s.write(tmp_path / "s.zarr")
    s = sd.read_zarr(tmp_path / "s.zarr")
    kw = {"chunk_size": 128, "progress": False, "bins_um": (2, 8, 40), "shapes": ["visium"]}
    stp.tl.predict_dense(s, model, **kw)
    names = stp.tl.predict_dense(s, model, key_added="lat", map_as="latent", **kw)
    assert names[:2] == ["lat_dense", "lat_dense_head"]
    lat = s["lat_dense"]["scale0"].image
    width = model.module.latent_channels
    assert list(lat.c.values) == [f"latent_{i:02d}" for i in range(width)] and width != len(model.genes)
    head = s.tables["lat_dense_head"]
    assert list(head.obs_names) == model.genes and head.X.shape == (len(model.genes), width)
    d = s["pixnet_dense"]["scale0"].image.values
    genes = np.tensordot(head.X, lat.values, axes=(1, 0)) + head.obs["bias"].to_numpy()[:, None, None]
    on = (d != 0).any(0)
    np.testing.assert_allclose(genes[:, on], d[:, on], rtol=1e-5, atol=1e-5)
    assert not (lat.values[:, ~on] != 0).any()  # no data: 0 in every latent channel, as in the genes' map
    back = sd.read_zarr(tmp_path / "s.zarr")
    for t in ("square_008um", "square_040um", "visium"):
        for obj in (s, back):
            np.testing.assert_allclose(
                np.asarray(obj.tables[f"lat_{t}"].X),
                np.asarray(obj.tables[f"pixnet_{t}"].X),
                rtol=1e-5,
                atol=1e-5,
            )
    assert s.tables["lat_square_008um"].uns["stpredict"]["map_as"] == "latent"
    from stpredict.io._summary import summary

    assert f"a latent map: {len(model.genes)} genes through its head, table 'lat_dense_head'" in summary(back)
    t2 = stp.io.read_table(tmp_path / "s.zarr", "lat_square_002um")
    np.testing.assert_allclose(
        t2.X.compute(), np.asarray(s.tables["pixnet_square_002um"].X), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(s.tables["lat_square_002um"].X), np.asarray(s.tables["pixnet_square_002um"].X), atol=1e-5
    )
    stp.tl.aggregate(s, values="lat_dense", by="visium", channels=model.genes[1:3], key_added="agg")
    np.testing.assert_allclose(
        np.asarray(s.tables["agg"].X), np.asarray(s.tables["pixnet_visium"].X)[:, 1:3], rtol=1e-5, atol=1e-5
    )
    assert list(s.tables["agg"].var_names) == model.genes[1:3]
    # squares partly and wholly on glass (not predicted: the genes are 0 there, the latent channels too)
    boxes = [shapely.box(x, y, x + 160, y + 160) for x in (0, 480, 1100) for y in (0, 400, 860)]
    s["squares"] = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=boxes), transformations={"synthetic": Identity()}
    )
    off = ~on  # map pixels without data
    assert off.any() and on.any()
    for how in ("mean", "sum"):
        for v in ("lat_dense", "pixnet_dense"):
            stp.tl.aggregate(s, values=v, by="squares", how=how, key_added=f"sq_{v}_{how}")
        np.testing.assert_allclose(
            np.asarray(s.tables[f"sq_lat_dense_{how}"].X),
            np.asarray(s.tables[f"sq_pixnet_dense_{how}"].X),
            rtol=1e-5,
            atol=1e-4,
        )
    # the plot decodes the gene it draws
    import matplotlib.pyplot as plt

    drawn = []
    for key in ("pixnet", "lat"):
        ax = stp.pl.expression_map(s, model.genes[0], key=key, show=False)
        drawn.append(np.ma.filled(ax.images[1].get_array().astype(np.float64), np.nan))
        plt.close(ax.figure)
    np.testing.assert_allclose(drawn[1], drawn[0], rtol=1e-5, atol=1e-5, equal_nan=True)
    # chosen genes as an image element (for spatialdata-plot), every level decoded from the latent level
    assert stp.tl.decode_map(s, "lat_dense", model.genes[2:4]) == "lat_dense_genes"
    dec = sd.read_zarr(tmp_path / "s.zarr")["lat_dense_genes"]
    on0 = (s["pixnet_dense"]["scale0"].image.values != 0).any(0)
    for level, f in (("scale0", 1), ("scale1", 2)):
        want = s["pixnet_dense"][level].image.values[2:4]
        got = dec[level].image
        assert list(got.c.values) == model.genes[2:4] and got.dtype == np.float32
        # a coarser pixel that covers glass is the head of a mean that counts glass as latent 0: compare the others
        h, w = want.shape[1:]
        full = on0[: h * f, : w * f].reshape(h, f, w, f).all((1, 3))
        np.testing.assert_allclose(got.values[:, full], want[:, full], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not a latent map"):
        stp.tl.decode_map(s, "pixnet_dense", model.genes[:1])
    with pytest.raises(ValueError, match="would replace the latent map"):
        stp.tl.decode_map(s, "lat_dense", model.genes[:1], key_added="lat_dense", overwrite=True)
    # a re-run as genes replaces the latent map and removes its head, in memory and in the store
    stp.tl.predict_dense(s, model, key_added="lat", overwrite=True, **kw)
    assert (
        "lat_dense_head" not in s.tables and "lat_dense_head" not in sd.read_zarr(tmp_path / "s.zarr").tables
    )
    with pytest.raises(ValueError, match="map_as"):
        stp.tl.predict_dense(s, model, key_added="x", map_as="pixels", **kw)
    # a table of the user's that happens to be called like a head is not read as one (a warning), nor written over
    stp.tl.aggregate(s, values="pixnet_dense", by="visium", key_added="pixnet_dense_head")
    ax = stp.pl.expression_map(s, model.genes[0], show=False)
    plt.close(ax.figure)
    stp.tl.predict_dense(s, model, overwrite=True, **kw)
    assert "pixnet_dense_head" in s.tables and "pixnet_dense_head" in sd.read_zarr(tmp_path / "s.zarr").tables


def test_latent_map_needs_a_linear_head(slide):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rate = PixNet(list(slide.tables["square_016um"].var_names[:4]), map_space="rate", **SMALL)
    s = sd.SpatialData(images={"he": slide["synthetic_full_image"]})
    with pytest.raises(ValueError, match="linear 1×1 head"):
        stp.tl.predict_dense(s, rate, map_as="latent", progress=False)
    assert list(s.images) == ["he"]
