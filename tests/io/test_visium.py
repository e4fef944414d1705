from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.transformations import get_transformation

import stpredict as stp
import stpredict.io._visium as visium_mod

MPP = 0.5  # synthetic_small's pixel size


@pytest.fixture(scope="module")
def outs(tmp_path_factory, synthetic_small):
    return stp.datasets.write_visium_outs(synthetic_small, tmp_path_factory.mktemp("visium") / "outs")


@pytest.fixture(scope="module")
def sdata(outs):
    return stp.io.read_visium(outs, dataset_id="v1", fullres_image_file="tissue_image.tif")


@pytest.fixture
def outs_copy(tmp_path, outs):
    """A copy without the full-resolution TIFF, to edit."""
    return shutil.copytree(outs, tmp_path / "outs", ignore=shutil.ignore_patterns("*.tif"))


def _by_position(table) -> pd.DataFrame:
    xy = np.asarray(table.obsm["spatial"], dtype=float)
    return pd.DataFrame(
        {"x": xy[:, 0], "y": xy[:, 1], "row": np.arange(table.n_obs)},
        index=pd.MultiIndex.from_arrays(
            [table.obs["array_row"].astype(int), table.obs["array_col"].astype(int)]
        ),
    )


def test_outs_folder_has_space_ranger_layout(outs, synthetic_small):
    assert (outs / "filtered_feature_bc_matrix.h5").is_file()
    for name in ("tissue_hires_image.png", "tissue_lowres_image.png"):
        assert (outs / "spatial" / name).is_file()
    sf = json.loads((outs / "spatial" / "scalefactors_json.json").read_text())
    assert sf["spot_diameter_fullres"] == pytest.approx(65 / MPP)  # 10x: a theoretical 65 µm spot
    pos = pd.read_csv(outs / "spatial" / "tissue_positions.csv")
    assert list(pos.columns) == [
        "barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"
    ]  # fmt: skip
    assert pos["barcode"].is_unique and pos["barcode"].str.fullmatch(r"[ACGT]{16}-1").all()
    assert (pos["in_tissue"] == 1).sum() == synthetic_small.tables["visium_spots"].n_obs
    assert (pos["in_tissue"] == 0).any()  # the whole array is listed, as Space Ranger does
    assert ((pos["array_row"] + pos["array_col"]) % 2 == 0).all()  # the hexagonal Visium array


def test_reads_spots_counts_and_pixel_size(sdata, synthetic_small):
    ref = synthetic_small.tables["visium_spots"]
    table = sdata.tables["spots"]
    rec = table.uns["stpredict"]
    assert rec["mpp"] == pytest.approx(MPP, rel=1e-6) and rec["mpp_source"] == "spot grid"
    assert rec["mpp_estimates"]["spot_diameter_fullres"] == pytest.approx(MPP, rel=1e-6)
    assert (rec["pixel_cs"], rec["micron_cs"], rec["spot_diameter_um"]) == ("v1", "v1_um", 55.0)
    assert stp.pp.get_mpp(sdata, "v1_full_image") == pytest.approx(MPP, rel=1e-6)
    assert stp.pp.get_mpp(sdata, "v1_hires_image") == pytest.approx(MPP / 0.25, rel=1e-6)
    # only the spots under tissue, each at its synthetic position with its counts
    assert table.n_obs == ref.n_obs and (table.obs["in_tissue"] == 1).all()
    got, want = _by_position(table), _by_position(ref)
    want = want.loc[got.index]
    np.testing.assert_allclose(got[["x", "y"]], want[["x", "y"]], atol=1e-6)
    assert table.X.dtype == np.int32 and list(table.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(table.X[got["row"]].toarray(), ref.X[want["row"]].toarray())
    # circles: centres on the spot pixels, the true 55 µm diameter (not spot_diameter_fullres)
    circles = sdata.shapes["v1_spots"]
    linked = circles.loc[table.obs["spot_id"].to_numpy()]
    np.testing.assert_allclose(np.c_[linked.geometry.x, linked.geometry.y], table.obsm["spatial"], atol=1e-6)
    np.testing.assert_allclose(circles["radius"], 27.5 / MPP)
    assert "v1_um" in get_transformation(circles, get_all=True)
    img = sdata["v1_full_image"]["scale0"].image.values
    np.testing.assert_array_equal(img, synthetic_small["synthetic_full_image"]["scale0"].image.values)


def test_mpp_override(outs_copy):
    s = stp.io.read_visium(outs_copy, dataset_id="v1", mpp=0.25)
    assert s.tables["spots"].uns["stpredict"]["mpp"] == 0.25
    assert s.tables["spots"].uns["stpredict"]["mpp_source"] == "given"
    np.testing.assert_allclose(s.shapes["v1_spots"]["radius"], 27.5 / 0.25)
    assert stp.pp.get_mpp(s, "v1_hires_image") == pytest.approx(0.25 / 0.25)


def test_warns_when_spot_diameter_fullres_disagrees_with_the_pitch(outs_copy, caplog):
    sf_path = outs_copy / "spatial" / "scalefactors_json.json"
    sf = json.loads(sf_path.read_text())
    sf["spot_diameter_fullres"] = 55 / MPP  # the common mistake: sized for the 55 µm spot
    sf_path.write_text(json.dumps(sf))
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        s = stp.io.read_visium(outs_copy, dataset_id="v1")
    assert "spot_diameter_fullres" in caplog.text and "+18.2%" in caplog.text
    assert "No full-resolution image" in caplog.text
    rec = s.tables["spots"].uns["stpredict"]
    assert rec["mpp"] == pytest.approx(MPP, rel=1e-6) and rec["mpp_source"] == "spot grid"


def test_falls_back_to_spot_diameter_fullres(outs_copy, monkeypatch, caplog):
    # a distorted grid (rows stretched 20%) is not trusted
    pos_path = outs_copy / "spatial" / "tissue_positions.csv"
    pos = pd.read_csv(pos_path)
    pos["pxl_row_in_fullres"] *= 1.2
    pos.to_csv(pos_path, index=False)
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        s = stp.io.read_visium(outs_copy, dataset_id="v1")
    assert "regular Visium array" in caplog.text
    rec = s.tables["spots"].uns["stpredict"]
    assert rec["mpp"] == pytest.approx(MPP, rel=1e-6) and rec["mpp_source"] == "spot_diameter_fullres"
    # too few spots to measure the pitch
    monkeypatch.setattr(visium_mod, "_MIN_GRID_SPOTS", 10_000)
    pos["pxl_row_in_fullres"] /= 1.2
    pos.to_csv(pos_path, index=False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stpredict"):
        s = stp.io.read_visium(outs_copy, dataset_id="v1")
    assert "no usable spot pitch" in caplog.text
    rec = s.tables["spots"].uns["stpredict"]
    assert rec["mpp"] == pytest.approx(MPP, rel=1e-6) and rec["mpp_source"] == "spot_diameter_fullres"
    assert list(rec["mpp_estimates"]) == ["spot_diameter_fullres"]


def test_errors(tmp_path, outs_copy, synthetic_small):
    with pytest.raises(FileNotFoundError, match="not found"):
        stp.io.read_visium(tmp_path / "none", dataset_id="x")
    with pytest.raises(TypeError):
        stp.io.read_visium(outs_copy)  # dataset_id is required
    with pytest.raises(ValueError, match="dataset_id"):
        stp.io.read_visium(outs_copy, dataset_id="")
    with pytest.raises(FileNotFoundError, match=r"MISSING full-resolution image"):
        stp.io.read_visium(outs_copy, dataset_id="x", fullres_image_file="scan.tif")
    sf_path = outs_copy / "spatial" / "scalefactors_json.json"
    sf = json.loads(sf_path.read_text())
    sf_path.write_text(json.dumps({k: v for k, v in sf.items() if k != "spot_diameter_fullres"}))
    with pytest.raises(ValueError, match=r"lacks positive value\(s\) for \['spot_diameter_fullres'\]"):
        stp.io.read_visium(outs_copy, dataset_id="x")
    (outs_copy / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)1 of 3 expected file\(s\) missing.*MISSING tissue positions"
    ):
        stp.io.read_visium(outs_copy, dataset_id="x")
    with pytest.raises(FileNotFoundError, match=r"MISSING counts"):
        stp.io.read_visium(outs_copy, dataset_id="x", counts_file="raw_feature_bc_matrix.h5")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stp.datasets.write_visium_outs(synthetic_small, outs_copy)


def test_train_predict_and_zarr_round_trip(tmp_path, outs):
    pytest.importorskip("torch")
    from stpredict.model import PixNet

    s = stp.io.read_visium(outs, dataset_id="v1", fullres_image_file=outs / "tissue_image.tif")
    model = PixNet(encoder="resnet18", decoder_channels=16, train_mpp=2.0, tile_size=128).train(
        s,
        tables="spots",
        n_top_genes=6,
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        progress=False,
        seed=0,
    )
    assert model.genes and len(model.history) == 1
    names = stp.tl.predict_dense(s, model, bins_um=(16,), shapes=["v1_spots"], progress=False)
    assert "pixnet_v1_spots" in names
    pred = s.tables["pixnet_v1_spots"]
    assert pred.n_obs == s.tables["spots"].n_obs and np.isfinite(pred.X).all()
    s.write(tmp_path / "v1.zarr")
    back = sd.read_zarr(tmp_path / "v1.zarr")
    assert back.tables["spots"].uns["stpredict"]["mpp_source"] == "spot grid"
    assert stp.pp.get_mpp(back, "v1_full_image") == pytest.approx(MPP, rel=1e-6)
    np.testing.assert_allclose(back.shapes["v1_spots"]["radius"], 27.5 / MPP)
