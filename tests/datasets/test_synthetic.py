from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from scipy import sparse

import stpredict as stp


def test_structure(synthetic_small):
    s = synthetic_small
    img = s["synthetic_full_image"]["scale0"].image
    assert img.dtype == np.uint8 and img.dims == ("c", "y", "x") and img.shape[0] == 3
    assert img.shape[1:] == (832, 960)  # 416 x 480 µm at 0.5 µm/px
    truth = s["synthetic_truth"]
    assert truth.shape == (12, 208, 240) and list(truth.c.values) == list(s.tables["square_002um"].var_names)
    assert stp.pp.get_mpp(s, "synthetic_full_image") == 0.5
    assert stp.pp.get_mpp(s, "synthetic_truth") == 2.0
    for name in ("square_002um", "square_008um", "square_016um", "st_spots", "visium_spots"):
        t = s.tables[name]
        region = t.uns["spatialdata_attrs"]["region"]
        assert region == f"synthetic_{name}"
        assert len(s[region]) == t.n_obs
        assert sparse.issparse(t.X) and t.X.dtype == np.int32
        assert t.obs["domain"].notna().all()
        # obsm["spatial"] = the footprint centre, in image pixels
        c = s[region].geometry.centroid
        np.testing.assert_allclose(np.c_[c.x, c.y][t.obs["instance_id"]], t.obsm["spatial"], atol=1e-6)
    assert s["synthetic_st_spots"].radius.iloc[0] == pytest.approx(100.0)  # 50 µm at 0.5 µm/px
    assert s["synthetic_visium_spots"].radius.iloc[0] == pytest.approx(55.0)
    # background carries no expression, tissue does
    tv = truth.values
    dom = s["synthetic_domains"].values
    assert tv[:, dom == 0].max() == 0 and tv[:, dom > 0].sum(0).min() > 0


def test_deterministic_for_a_seed():
    a = stp.datasets.synthetic(
        width_um=256, height_um=256, n_genes=5, seed=3, bins_um=(8,), visium_spots=False, st_spots=False
    )
    b = stp.datasets.synthetic(
        width_um=256, height_um=256, n_genes=5, seed=3, bins_um=(8,), visium_spots=False, st_spots=False
    )
    c = stp.datasets.synthetic(
        width_um=256, height_um=256, n_genes=5, seed=4, bins_um=(8,), visium_spots=False, st_spots=False
    )
    ia, ib, ic = (x["synthetic_full_image"]["scale0"].image.values for x in (a, b, c))
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, ic)
    np.testing.assert_array_equal(a.tables["square_008um"].X.toarray(), b.tables["square_008um"].X.toarray())


def test_bins_are_exact_sums_of_2um_bins(synthetic_small):
    s = synthetic_small
    t2, t8, t16 = (s.tables[k] for k in ("square_002um", "square_008um", "square_016um"))
    for coarse, k in ((t8, 4), (t16, 8)):
        # independent aggregation: group 2 µm bins by (row // k, col // k)
        key2 = list(zip(t2.obs["array_row"] // k, t2.obs["array_col"] // k, strict=True))
        idx = {
            rc: i for i, rc in enumerate(zip(coarse.obs["array_row"], coarse.obs["array_col"], strict=True))
        }
        rows = np.array([idx[rc] for rc in key2])
        agg = (
            sparse.csr_matrix(
                (np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(coarse.n_obs, t2.n_obs)
            )
            @ t2.X
        )
        np.testing.assert_array_equal(agg.toarray(), coarse.X.toarray())
        np.testing.assert_allclose(
            coarse.layers["expected"],
            agg.shape
            and (
                sparse.csr_matrix(
                    (np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(coarse.n_obs, t2.n_obs)
                )
                @ t2.layers["expected"]
            ),
            rtol=1e-4,
            atol=1e-4,
        )


def test_spot_counts_are_sums_over_bins_inside_the_disk(synthetic_small):
    s = synthetic_small
    t2 = s.tables["square_002um"]
    c2 = t2.obsm["spatial"]  # 2 µm bin centres in pixels
    for name in ("st_spots", "visium_spots"):
        t = s.tables[name]
        r = s[f"synthetic_{name}"].radius.to_numpy()[t.obs["instance_id"]]
        for i in range(min(t.n_obs, 5)):
            inside = np.hypot(*(c2 - t.obsm["spatial"][i]).T) <= r[i]
            np.testing.assert_array_equal(np.asarray(t2.X[inside].sum(0)).ravel(), t.X[i].toarray().ravel())
    # truth image integrated over an ST spot equals its expected counts
    t = s.tables["st_spots"]
    truth = s["synthetic_truth"].values
    yy, xx = np.mgrid[0 : truth.shape[1], 0 : truth.shape[2]]
    cx, cy = t.obsm["spatial"][0] / 4  # truth pixels are 2 µm = 4 image pixels
    inside = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) <= 25  # 50 µm radius
    np.testing.assert_allclose(truth[:, inside].sum(1), t.layers["expected"][0], rtol=1e-4)


def test_expression_follows_cell_types(synthetic_small):
    s = synthetic_small
    t = s.tables["square_016um"]
    markers = t.var["marker_of"]
    assert (markers != "none").sum() >= 3
    # marker genes vary much more across bins than their Poisson noise would explain
    g = markers[markers != "none"].index[0]
    e = t[:, g].layers["expected"].ravel()
    assert e.std() / e.mean() > 0.3


def test_zarr_round_trip(tmp_path, synthetic_small):
    path = tmp_path / "syn.zarr"
    synthetic_small.write(path)
    back = sd.read_zarr(path)
    assert set(back.tables) == set(synthetic_small.tables)
    np.testing.assert_array_equal(
        back.tables["square_008um"].X.toarray(), synthetic_small.tables["square_008um"].X.toarray()
    )
    assert stp.pp.get_mpp(back, "synthetic_full_image") == 0.5
    assert back.attrs["stpredict"]["synthetic"]["cell_types"][0] == "tumour"


def test_bad_parameters():
    with pytest.raises(ValueError, match="divide 2"):
        stp.datasets.synthetic(mpp=0.3)
    with pytest.raises(ValueError, match="even"):
        stp.datasets.synthetic(bins_um=(3,))
