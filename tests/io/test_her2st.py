from __future__ import annotations

import numpy as np
import pytest
from spatialdata.transformations import get_transformation

import stpredict as stp

EXPECTED_SPOTS = {"C2": 187, "C3": 180, "C4": 184, "C5": 181}


@pytest.mark.her2st
@pytest.mark.parametrize("section", stp.datasets.HER2ST_SECTIONS)
def test_her2st_sections_load_with_spot_counts_and_mpp(her2st_dir, section):
    sdata = stp.datasets.her2st(section, data_dir=her2st_dir, downsample=8)
    table = sdata.tables["spots"]
    assert table.n_obs == EXPECTED_SPOTS[section]
    assert table.n_vars > 15000
    mpp_full = table.uns["stpredict"]["mpp"]
    assert mpp_full == pytest.approx(0.69, abs=0.01)
    assert stp.pp.get_mpp(sdata, f"{section}_full_image") == pytest.approx(8 * mpp_full)
    # 100 µm spots = radius ~72 px at full resolution
    assert sdata[f"{section}_spots"].radius.iloc[0] == pytest.approx(50 / mpp_full)

    # spots sit on tissue: the H&E under spot centres is darker than the slide's brightest background
    img = sdata[f"{section}_full_image"]["scale0"].image.values.mean(0)
    t = get_transformation(sdata[f"{section}_full_image"], section).to_affine_matrix(("x", "y"), ("x", "y"))
    xy = table.obsm["spatial"] / t[0, 0]
    under = img[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    assert np.median(under) < np.percentile(img, 95) - 20


@pytest.mark.her2st
def test_her2st_env_var(her2st_dir, monkeypatch):
    monkeypatch.setenv("STPREDICT_HER2ST_DIR", str(her2st_dir))
    assert stp.datasets.her2st_dir() == her2st_dir
