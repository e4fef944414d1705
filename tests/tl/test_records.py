"""Prediction tables say what they hold: ``uns["stpredict"]`` names the values, model, genes, image and footprint.

The record is written by ``tl.predict_dense`` (bins and shapes tables) and ``tl.predict_shapes`` and survives a
zarr write/read (no ``None``, only strings, numbers, booleans, lists and dicts).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import spatialdata as sd

import stpredict as stp
from stpredict._core import normalize_counts
from stpredict.model import PixNet

SMALL = {"encoder": "resnet18", "decoder_channels": 8, "train_mpp": 2.0, "tile_size": 128}
KEYS = {
    "values",
    "model",
    "model_info",
    "model_genes",
    "n_genes",
    "recipe",
    "image_key",
    "mpp",
    "train_mpp",
    "footprint",
    "stpredict_version",
}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=480, height_um=416, n_genes=6, seed=4, bins_um=(16,), st_spots=False
    )


@pytest.fixture(scope="module")
def saved(slide, tmp_path_factory):
    """A PixNet saved and loaded again (so its checkpoint is known)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    path = PixNet(list(slide.tables["square_016um"].var_names[:4]), **SMALL).save(
        tmp_path_factory.mktemp("m") / "ckpt"
    )
    return stp.model.load(path), path


def _no_none(v, where="uns"):
    assert v is not None, f"None at {where}"
    if isinstance(v, dict):
        for k, x in v.items():
            _no_none(x, f"{where}[{k!r}]")
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            _no_none(x, f"{where}[{i}]")


def _plain(v):
    """Values as read back from zarr (numpy arrays and scalars) as plain Python, to compare with what was written."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray | list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def test_prediction_tables_record_what_they_hold_through_zarr(tmp_path, slide, saved):
    model, ckpt = saved
    s = sd.SpatialData(
        images={"he": slide["synthetic_full_image"]}, shapes={"visium": slide["synthetic_visium_spots"]}
    )
    stp.tl.predict_dense(s, model, bins_um=(8, 16), shapes=["visium"], progress=False)
    stp.tl.predict_shapes(s, model, shapes="visium", key_added="ps")
    sha = json.loads((ckpt / "config.json").read_text())["weights_sha256"]
    mpp = stp.pp.get_mpp(s, "he")
    names = ["pixnet_square_008um", "pixnet_square_016um", "pixnet_visium", "ps_visium"]
    for name in names:
        t = s.tables[name]
        rec = t.uns["stpredict"]
        assert KEYS <= set(rec), f"{name} lacks {KEYS - set(rec)}"
        _no_none(rec, name)
        # X: the model's recipe units, in words a reader can act on
        assert rec["values"].startswith(
            "predicted log1p(counts / total counts of the footprint (all genes) × 10000)"
        )
        assert "sc.pp.normalize_total(target_sum=10000) then sc.pp.log1p" in rec["values"]
        assert rec["recipe"] == {"genes": model.genes, "target_sum": 1e4, "log1p": True}
        # the model: class, key, encoder and its initial weights, checkpoint and its weights' checksum
        info = rec["model_info"]
        assert rec["model"] == info["class"] == "PixNet" and info["key"] == "pixnet"
        assert info["encoder"] == "resnet18" and info["encoder_init"] == "random initialisation"
        assert info["checkpoint"] == str(ckpt.resolve()) and info["weights_sha256"] == sha
        assert info["architecture"]["decoder_channels"] == 8 and "encoder_weights" not in info["architecture"]
        # genes are the var names; the image's pixel size
        assert rec["model_genes"] == list(t.var_names) == model.genes and rec["n_genes"] == 4
        assert rec["image_key"] == "he" and rec["mpp"] == pytest.approx(mpp) and rec["train_mpp"] == 2.0
        assert rec["stpredict_version"] == stp.__version__
    for b in (8, 16):
        rec = s.tables[f"pixnet_square_{b:03d}um"].uns["stpredict"]
        assert rec["footprint"] == {
            "kind": "square bins",
            "bin_um": b,
            "shapes": f"pixnet_square_{b:03d}um_shapes",
            "n_bins": s.tables[f"pixnet_square_{b:03d}um"].n_obs,
        }
        assert f"over one {b} µm square bin" in rec["values"] and rec["map"] == "pixnet_dense"
        assert rec["out_mpp"] == 2.0 and "tiles" not in rec["tiling"]  # no None for "no tiles"
    for name in ("pixnet_visium", "ps_visium"):
        fp = s.tables[name].uns["stpredict"]["footprint"]
        assert fp["kind"] == "shapes" and fp["shapes"] == "visium" and fp["geometry"] == "circle"
        assert fp["median_diameter_um"] == pytest.approx(55.0) and fp["n_shapes"] == len(s["visium"])
    assert "dense map 'pixnet_dense' (2 µm/px)" in s.tables["pixnet_visium"].uns["stpredict"]["values"]
    assert "dense map at 2 µm/px" in s.tables["ps_visium"].uns["stpredict"]["values"]

    s.write(tmp_path / "s.zarr")
    back = sd.read_zarr(tmp_path / "s.zarr")
    for name in names:
        assert _plain(back.tables[name].uns["stpredict"]) == _plain(s.tables[name].uns["stpredict"]), name


def test_a_model_trained_on_after_its_checkpoint_does_not_claim_it(slide, saved):
    _, ckpt = saved
    again = stp.model.load(ckpt)
    assert again.provenance()["checkpoint"] == str(ckpt.resolve())
    again.train(slide, tables="visium_spots", max_epochs=1, steps_per_epoch=1, batch_size=2, progress=False)
    info = again.provenance()
    assert "checkpoint" not in info and "weights_sha256" not in info
    assert info["trained_on_from_checkpoint"] == str(ckpt.resolve()) and info["trained_epochs"] == 1


def test_measured_counts_normalised_with_scanpy_are_on_the_prediction_scale(slide, saved):
    """What docs/method.md tells users: normalize_total(target_sum) + log1p on *all* genes = the model's targets."""
    sc = pytest.importorskip("scanpy")
    model, _ = saved
    measured = slide.tables["visium_spots"].copy()
    measured.X = measured.X.astype(np.float64)
    sc.pp.normalize_total(measured, target_sum=model.recipe.target_sum)
    sc.pp.log1p(measured)
    X = measured[:, model.genes].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    np.testing.assert_allclose(
        X, normalize_counts(slide.tables["visium_spots"], model.recipe), rtol=1e-5, atol=1e-6
    )
