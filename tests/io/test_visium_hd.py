from __future__ import annotations

import numpy as np
import pytest
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
