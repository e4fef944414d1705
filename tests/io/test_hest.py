from __future__ import annotations

import json
import logging
import shutil

import anndata as ad
import numpy as np
import pytest
import shapely
import spatialdata as sd
import tifffile

import stpredict as stp

MPP = 0.5  # synthetic_small's pixel size
SAMPLES = {"SYNV1": "visium_spots", "SYNST1": "st_spots", "SYNHD1": "square_016um"}


@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic_small):
    root = tmp_path_factory.mktemp("hest")
    for sample_id, table in SAMPLES.items():
        stp.datasets.write_hest_sample(synthetic_small, root, sample_id, table=table)
    return root


@pytest.fixture(scope="module")
def visium(root):
    return stp.io.read_hest(root, "SYNV1")


@pytest.fixture
def copy(tmp_path, root):
    """A HEST folder holding a copy of the Visium sample only, to edit."""
    for sub in ("wsis", "st", "metadata"):
        (tmp_path / sub).mkdir()
        for f in (root / sub).glob("SYNV1.*"):
            shutil.copy(f, tmp_path / sub / f.name)
    return tmp_path


def _edit_metadata(root, sample_id="SYNV1", **changes):
    path = root / "metadata" / f"{sample_id}.json"
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


def _centres(sdata, key):
    geom = sdata.shapes[key].geometry
    return np.c_[geom.centroid.x, geom.centroid.y]


def test_sample_has_hests_layout(root, synthetic_small):
    src = synthetic_small.tables["visium_spots"]
    adata = ad.read_h5ad(root / "st" / "SYNV1.h5ad")
    # obsm["spatial"]: (x, y) in full-resolution pixels; obs columns of HEST's Visium reader
    np.testing.assert_array_equal(adata.obsm["spatial"], src.obsm["spatial"])
    np.testing.assert_array_equal(adata.obs["pxl_col_in_fullres"], src.obsm["spatial"][:, 0])
    assert {"in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "total_counts"} <= set(adata.obs)
    assert adata.obs_names.str.fullmatch(r"[ACGT]{16}-1").all()
    assert adata.X.dtype == np.float32  # as scanpy.read_10x_h5 leaves it
    sf = adata.uns["spatial"]["ST"]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(55 / MPP)
    assert max(adata.uns["spatial"]["ST"]["images"]["downscaled_fullres"].shape[:2]) <= 1000
    meta = json.loads((root / "metadata" / "SYNV1.json").read_text())
    assert meta["st_technology"] == "Visium" and meta["pixel_size_um_estimated"] == MPP
    assert (meta["spot_diameter"], meta["inter_spot_dist"]) == (55.0, 100.0)
    assert (meta["fullres_px_width"], meta["fullres_px_height"]) == (960, 832)
    hd = json.loads((root / "metadata" / "SYNHD1.json").read_text())
    assert (hd["spot_diameter"], hd["inter_spot_dist"]) == (2, 2)  # HEST's release: the raw Visium HD bin
    with tifffile.TiffFile(root / "wsis" / "SYNV1.tif") as tf:
        assert not tf.is_ome and tf.pages[0].tags["ResolutionUnit"].value == 3  # generic TIFF, pixels per cm
    info = stp.io.slide_info(root / "wsis" / "SYNV1.tif")
    assert info.mpp == pytest.approx(MPP) and info.levels == [(832, 960), (416, 480)]  # pyramidal


def test_reads_visium_sample_exactly(visium, synthetic_small):
    src = synthetic_small.tables["visium_spots"]
    assert stp.pp.get_mpp(visium, "SYNV1_full_image") == MPP  # exactly, from pixel_size_um_estimated
    table = visium.tables["spots"]
    rec = table.uns["stpredict"]
    assert rec["reader"] == "read_hest" and rec["technology"] == "Visium" and rec["sample_id"] == "SYNV1"
    assert rec["mpp_source"] == "metadata pixel_size_um_estimated"
    assert rec["mpp_estimates"]["slide file"] == pytest.approx(MPP)
    assert rec["mpp_estimates"]["spot grid"] == pytest.approx(MPP)
    assert (rec["spot_diameter_um"], rec["pitch_um"], rec["spot_shape"]) == (55.0, 100.0, "circle")
    # spot centres on the synthetic's own spot centres, at the true radius
    np.testing.assert_allclose(
        _centres(visium, "SYNV1_spots"), _centres(synthetic_small, "synthetic_visium_spots")
    )
    np.testing.assert_allclose(visium.shapes["SYNV1_spots"]["radius"], 27.5 / MPP)
    np.testing.assert_array_equal(table.obsm["spatial"], src.obsm["spatial"])
    # the counts, as integers, linked to the shapes
    assert table.X.dtype == np.int32
    np.testing.assert_array_equal(table.X.toarray(), src.X.toarray())
    np.testing.assert_array_equal(table.var_names, src.var_names)
    np.testing.assert_array_equal(table.obs["array_row"], src.obs["array_row"])
    assert (table.obs["region"] == "SYNV1_spots").all()
    np.testing.assert_array_equal(table.obs["instance_id"], np.arange(table.n_obs))
    assert visium.attrs["stpredict"]["hest"]["st_technology"] == "Visium"


def test_reads_legacy_st_and_visium_hd_samples(root, synthetic_small):
    st = stp.io.read_hest(root, "SYNST1", dataset_id="st")
    src = synthetic_small.tables["st_spots"]
    rec = st.tables["spots"].uns["stpredict"]
    assert (rec["technology"], rec["spot_diameter_um"], rec["pitch_um"]) == (
        "Spatial Transcriptomics",
        100.0,
        200.0,
    )
    np.testing.assert_allclose(st.shapes["st_spots"]["radius"], 50 / MPP)
    np.testing.assert_allclose(_centres(st, "st_spots"), _centres(synthetic_small, "synthetic_st_spots"))
    np.testing.assert_array_equal(st.tables["spots"].X.toarray(), src.X.toarray())
    # HEST's ST quirk, kept as HEST wrote it: array_row is the first number of "{x}x{y}", the array x
    np.testing.assert_array_equal(st.tables["spots"].obs["array_row"], src.obs["array_col"])

    hd = stp.io.read_hest(root, "SYNHD1")
    src = synthetic_small.tables["square_016um"]
    rec = hd.tables["spots"].uns["stpredict"]
    assert rec["technology"] == "Visium HD" and rec["spot_shape"] == "square"
    assert rec["spot_diameter_um"] == pytest.approx(16.0)  # from the pitch, not the metadata's 2 µm
    geom = hd.shapes["SYNHD1_spots"].geometry
    ref = synthetic_small.shapes["synthetic_square_016um"].geometry
    assert shapely.equals_exact(geom.to_numpy(), ref.to_numpy(), tolerance=1e-6).all()
    np.testing.assert_array_equal(hd.tables["spots"].X.toarray(), src.X.toarray())


def test_mpp_and_spot_diameter_overrides(root):
    s = stp.io.read_hest(root, "SYNV1", mpp=0.4, spot_diameter_um=65)
    rec = s.tables["spots"].uns["stpredict"]
    assert stp.pp.get_mpp(s, "SYNV1_full_image") == 0.4
    assert rec["mpp"] == 0.4 and rec["mpp_source"] == "given" and rec["spot_diameter_source"] == "given"
    np.testing.assert_allclose(s.shapes["SYNV1_spots"]["radius"], 32.5 / 0.4)


def test_warns_when_pixel_sizes_disagree_and_falls_back(copy, caplog):
    _edit_metadata(copy, pixel_size_um_estimated=0.55, pixel_size_um_embedded=1.0)
    with caplog.at_level(logging.INFO, logger="stpredict"):
        s = stp.io.read_hest(copy, "SYNV1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("WSI file" in w and "-9.1%" in w for w in warnings)
    assert any("spot pitch" in w for w in warnings)
    assert "pixel_size_um_embedded is 1.0000" in caplog.text  # logged, not warned: often a placeholder
    assert s.tables["spots"].uns["stpredict"]["mpp"] == 0.55

    # no pixel_size_um_estimated: the TIFF's resolution tags; no spot_diameter: the Visium default
    _edit_metadata(copy, pixel_size_um_estimated=None, spot_diameter=None)
    rec = stp.io.read_hest(copy, "SYNV1").tables["spots"].uns["stpredict"]
    assert rec["mpp"] == pytest.approx(MPP) and rec["mpp_source"].startswith(
        "slide file (TIFF resolution tags"
    )
    assert (rec["spot_diameter_um"], rec["spot_diameter_source"]) == (55.0, "Visium default")


def test_datasets_hest_finds_samples_and_names_what_is_missing(root, copy, monkeypatch):
    s = stp.datasets.hest("SYNV1", data_dir=root)
    assert "SYNV1_full_image" in s.images and s.tables["spots"].n_obs > 0
    monkeypatch.setenv("STPREDICT_HEST_DIR", str(root))
    assert stp.datasets.hest_dir() == root
    assert (
        stp.datasets.hest("SYNST1").tables["spots"].uns["stpredict"]["technology"]
        == "Spatial Transcriptomics"
    )
    with pytest.raises(FileNotFoundError, match=r"3 of 3 expected file\(s\) missing") as err:
        stp.datasets.hest("TENX95")
    msg = str(err.value)
    assert "MISSING wsi" in msg and "Samples in" in msg and "SYNHD1, SYNST1, SYNV1" in msg
    assert "STPREDICT_HEST_DIR" in msg
    (copy / "metadata" / "SYNV1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3") as err:
        stp.datasets.hest("SYNV1", data_dir=copy)
    assert "found   wsi" in str(err.value) and "MISSING metadata" in str(err.value)
    with pytest.raises(FileNotFoundError, match="MISSING metadata"):
        stp.io.read_hest(copy, "SYNV1")


def test_errors(copy, synthetic_small):
    st_path = copy / "st" / "SYNV1.h5ad"
    adata = ad.read_h5ad(st_path)
    good = adata.copy()
    adata.X = np.log1p(adata.X.toarray())
    adata.write_h5ad(st_path)
    with pytest.raises(ValueError, match="raw counts"):
        stp.io.read_hest(copy, "SYNV1")
    good.obsm["spatial"] = good.obsm["spatial"] * 10 + 5000  # coordinates of another image
    good.write_h5ad(st_path)
    with pytest.raises(ValueError, match=r"No spot centre .* lies on SYNV1\.tif"):
        stp.io.read_hest(copy, "SYNV1")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stp.datasets.write_hest_sample(synthetic_small, copy, "SYNV1")
    with pytest.raises(ValueError, match="sample_id"):
        stp.io.read_hest(copy, "bad id/")


def test_train_and_predict_dense_on_a_hest_sample(root, tmp_path):
    pytest.importorskip("torch")
    from stpredict.model import PixNet

    visium = stp.io.read_hest(root, "SYNV1")
    model = PixNet(encoder="resnet18", decoder_channels=16, train_mpp=2.0, tile_size=128).train(
        visium,
        tables="spots",
        n_top_genes=6,
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        progress=False,
        seed=0,
    )
    assert len(model.genes) == 6 and len(model.history) == 1
    names = stp.tl.predict_dense(visium, model, bins_um=[16], progress=False)
    assert "pixnet_square_016um" in names
    pred = visium.tables["pixnet_square_016um"]
    assert pred.n_obs > 0 and np.isfinite(pred.X).all()
    visium.write(tmp_path / "hest.zarr")
    back = sd.read_zarr(tmp_path / "hest.zarr")
    assert stp.pp.get_mpp(back, "SYNV1_full_image") == MPP
    assert back.tables["spots"].uns["stpredict"]["mpp_source"] == "metadata pixel_size_um_estimated"
    assert back.attrs["stpredict"]["hest"]["id"] == "SYNV1"
