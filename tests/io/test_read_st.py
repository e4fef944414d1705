from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from scipy import sparse
from spatialdata.transformations import get_transformation

import stpredict as stp


@pytest.fixture
def st_files(tmp_path, make_st_folder):
    return make_st_folder(tmp_path / "st")


def test_read_st_structure_and_inferred_mpp(st_files, caplog):
    with caplog.at_level(logging.INFO, logger="stpredict"):
        sdata = stp.io.read_st(st_files["counts"], st_files["spots"], st_files["image"], dataset_id="S")
    # 50 px pitch = 200 µm -> 4 µm/px, and the log says it was inferred
    assert stp.pp.get_mpp(sdata, "S_full_image") == pytest.approx(4.0, rel=1e-2)
    assert "Inferred pixel size" in caplog.text
    table = sdata.tables["spots"]
    assert table.n_obs == 30 and table.n_vars == 7
    assert sparse.issparse(table.X) and np.issubdtype(table.X.dtype, np.integer)
    counts = pd.read_csv(st_files["counts"], sep="\t", index_col=0)
    np.testing.assert_array_equal(table.X.toarray(), counts.loc[table.obs_names].to_numpy())
    assert {"array_row", "array_col", "in_tissue"} <= set(table.obs.columns)
    spots = pd.read_csv(st_files["spots"], sep="\t")
    first = spots.iloc[0]
    x, y = int(first.x), int(first.y)
    row = table.obs.loc[f"{x}x{y}"]
    assert (row.array_col, row.array_row) == (x, y)
    # table links to the circles; circles have the true 100 µm diameter in pixels
    attrs = table.uns["spatialdata_attrs"]
    assert attrs["region"] == "S_spots"
    circles = sdata["S_spots"]
    assert circles.radius.iloc[0] == pytest.approx(50 / stp.pp.get_mpp(sdata, "S_full_image"))
    np.testing.assert_allclose(
        np.c_[circles.geometry.x, circles.geometry.y][table.obs["instance_id"]], table.obsm["spatial"]
    )
    # pixel + micron coordinate systems on every element
    for el in (sdata["S_full_image"], circles):
        assert {"S", "S_um"} <= set(get_transformation(el, get_all=True))
    assert table.uns["stpredict"]["mpp_source"] == "spot grid"


def test_read_st_given_mpp_and_downsample_align(st_files, tmp_path):
    sdata = stp.io.read_st(st_files["counts"], st_files["spots"], st_files["image"], mpp=1.0, downsample=4)
    assert stp.pp.get_mpp(sdata, "st_full_image") == pytest.approx(4.0)
    img = sdata["st_full_image"]["scale0"].image
    assert img.shape == (3, 75, 80) and img.dtype == np.uint8
    # the spot circles and the downsampled image meet in the shared pixel system
    t_img = get_transformation(sdata["st_full_image"], "st").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(t_img[:2, :2], 4 * np.eye(2))
    assert sdata.tables["spots"].uns["stpredict"]["mpp_source"] == "given"
    # real zarr round trip keeps everything
    sdata.write(tmp_path / "s.zarr")
    back = sd.read_zarr(tmp_path / "s.zarr")
    assert stp.pp.get_mpp(back, "st_full_image") == pytest.approx(4.0)
    np.testing.assert_array_equal(back.tables["spots"].X.toarray(), sdata.tables["spots"].X.toarray())


def test_ids_that_do_not_join(st_files):
    counts = pd.read_csv(st_files["counts"], sep="\t", index_col=0)
    counts.index = [f"{i}x99" for i in range(len(counts))]
    with pytest.raises(ValueError, match=r"30 of 30 spot ids .* no row in the spot table .*'0x99'"):
        stp.io.read_st(counts, st_files["spots"], st_files["image"])


def test_spots_outside_image(st_files):
    spots = pd.read_csv(st_files["spots"], sep="\t")
    spots.loc[:2, "pixel_x"] = 5000
    with pytest.raises(ValueError, match=r"3 of 30 spot centre\(s\) lie outside the 320 x 300 px image"):
        stp.io.read_st(st_files["counts"], spots, st_files["image"])


def test_image_not_rgb(tmp_path, make_st_folder):
    files = make_st_folder(tmp_path / "grey", image_mode="L")
    with pytest.raises(ValueError, match=r"not an RGB image \(mode 'L'\).*convert\('RGB'\)"):
        stp.io.read_st(files["counts"], files["spots"], files["image"])
    with pytest.raises(ValueError, match="shape"):
        stp.io.read_st(files["counts"], files["spots"], np.zeros((300, 320), np.uint8))


def test_empty_tables(st_files):
    empty = pd.DataFrame(index=pd.Index([], dtype=str), columns=["A"])
    with pytest.raises(ValueError, match="counts table is empty"):
        stp.io.read_st(empty, st_files["spots"], st_files["image"])
    spots = pd.read_csv(st_files["spots"], sep="\t").iloc[:0]
    with pytest.raises(ValueError, match="spot table is empty"):
        stp.io.read_st(st_files["counts"], spots, st_files["image"])
    spots = pd.read_csv(st_files["spots"], sep="\t")
    spots["selected"] = 0
    with pytest.raises(ValueError, match="selected_only=False"):
        stp.io.read_st(st_files["counts"], spots, st_files["image"])


def test_duplicated_genes(st_files):
    counts = pd.read_csv(st_files["counts"], sep="\t", index_col=0)
    counts.columns = ["A", "A", "B", "C", "D", "D", "D"]
    with pytest.raises(
        ValueError, match=r"2 duplicated gene name\(s\): 'A', 'D'.*var_names_make_unique=True"
    ):
        stp.io.read_st(counts, st_files["spots"], st_files["image"])
    sdata = stp.io.read_st(counts, st_files["spots"], st_files["image"], var_names_make_unique=True)
    assert sdata.tables["spots"].var_names.is_unique


def test_bad_counts_and_columns(st_files):
    counts = pd.read_csv(st_files["counts"], sep="\t", index_col=0) / 3.0
    with pytest.raises(ValueError, match="raw UMI counts"):
        stp.io.read_st(counts, st_files["spots"], st_files["image"])
    spots = pd.read_csv(st_files["spots"], sep="\t").drop(columns=["pixel_y"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['pixel_y'\]"):
        stp.io.read_st(st_files["counts"], spots, st_files["image"])


def test_missing_files(tmp_path, st_files):
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 3 expected file\(s\) missing.*MISSING image"):
        stp.io.read_st(st_files["counts"], st_files["spots"], tmp_path / "nope.jpg")
    with pytest.raises(
        FileNotFoundError, match=r"(?s)C7.*3 of 3 expected.*C7_counts\.tsv\.gz.*STPREDICT_HER2ST_DIR"
    ):
        stp.datasets.her2st("C7", data_dir=tmp_path)
