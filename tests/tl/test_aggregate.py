from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd

import stpredict as stp


@pytest.fixture
def syn(synthetic_small):
    return sd.SpatialData(
        images={"truth": synthetic_small["synthetic_truth"]},
        shapes={
            k: synthetic_small[k]
            for k in ("synthetic_st_spots", "synthetic_square_016um", "synthetic_visium_spots")
        },
        tables={k: synthetic_small.tables[k] for k in ("st_spots", "square_016um", "visium_spots")},
    )


@pytest.mark.parametrize(
    ("shapes", "table"), [("synthetic_st_spots", "st_spots"), ("synthetic_square_016um", "square_016um")]
)
def test_sum_of_truth_equals_known_expected_counts(syn, shapes, table):
    """Disks and squares: integrating the true map over each footprint gives the simulated expected counts."""
    name = stp.tl.aggregate(syn, values="truth", by=shapes, how="sum")
    assert name == f"truth_by_{shapes}"
    got = syn.tables[name]
    ref = syn.tables[table]
    assert got.uns["spatialdata_attrs"]["region"] == shapes
    order = got.obs["instance_id"].to_numpy()
    expected = ref.layers["expected"][np.argsort(ref.obs["instance_id"].to_numpy())][order]
    np.testing.assert_allclose(got.X, expected, rtol=1e-4, atol=1e-4)
    assert list(got.var_names) == list(ref.var_names)


def test_mean_and_channels(syn):
    s = stp.tl.aggregate(
        syn, values="truth", by="synthetic_visium_spots", how="sum", key_added="s", channels=["G000", "G003"]
    )
    m = stp.tl.aggregate(
        syn, values="truth", by="synthetic_visium_spots", how="mean", key_added="m", channels=["G000", "G003"]
    )
    assert list(syn.tables["m"].var_names) == ["G000", "G003"]
    # a 55 µm spot covers ~594 pixels of 2 µm (pixel centres inside the disk)
    n_px = syn.tables[s].X[:, 0] / syn.tables[m].X[:, 0]
    assert np.nanmedian(n_px) == pytest.approx(np.pi * 13.75**2, rel=0.03)


def test_errors_and_overwrite(syn):
    stp.tl.aggregate(syn, values="truth", by="synthetic_st_spots", key_added="agg")
    with pytest.raises(ValueError, match="overwrite=True"):
        stp.tl.aggregate(syn, values="truth", by="synthetic_st_spots", key_added="agg")
    stp.tl.aggregate(syn, values="truth", by="synthetic_st_spots", key_added="agg", overwrite=True, how="sum")
    assert syn.tables["agg"].uns["stpredict"]["how"] == "sum"
    with pytest.raises(KeyError, match="Image 'nope'"):
        stp.tl.aggregate(syn, values="nope", by="synthetic_st_spots")
    with pytest.raises(KeyError, match="Shapes 'nope'"):
        stp.tl.aggregate(syn, values="truth", by="nope")
    with pytest.raises(ValueError, match="how"):
        stp.tl.aggregate(syn, values="truth", by="synthetic_st_spots", how="median", key_added="x")


def test_nan_pixels_are_left_out():
    """NaN is no data: a footprint is the mean (or sum) of its finite pixels, and NaN only when none is left."""
    import dask.array as da

    from stpredict._core import Footprints, aggregate_footprints

    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 64, 64)).astype(np.float32)
    holed = img.copy()
    holed[:, :, :32] = np.nan  # the left half: no data
    holed[1, 40:, :] = np.nan  # one channel also in the bottom rows
    centres = np.array([[48.0, 16.0], [16.0, 16.0], [32.0, 16.0]])  # right, left, straddling
    fp = Footprints(centres, radii=np.full(3, 6.0))
    yy, xx = np.mgrid[:64, :64]
    for values in (holed, da.from_array(holed, chunks=(2, 16, 16))):
        for how in ("mean", "sum"):
            got = aggregate_footprints(values, fp, how=how)
            ref = aggregate_footprints(img, fp, how=how)
            np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)  # all finite: unchanged
            assert np.isnan(got[1]).all()  # nothing finite left
            inside = np.hypot(xx + 0.5 - 32, yy + 0.5 - 16) <= 6
            px = holed[:, inside & (xx >= 32)]
            expect = px.mean(1) if how == "mean" else px.sum(1)
            np.testing.assert_allclose(got[2], expect, rtol=1e-5)
