"""A Vision Transformer encoder from a local weights file, as pathology foundation models are used (docs/encoders.md).

The tiny ``test_vit`` of timm is built with the keyword arguments of UNI2-h / Virchow2-style models (LayerScale,
SwiGLU MLP, SiLU, register tokens, no class-token position embedding): its weights are written to a local
``.safetensors`` file, PixNet is built on it through ``encoder_weights=`` + ``encoder_kwargs=``, trained a few
steps, saved, loaded and run by ``tl.predict_dense``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import spatialdata as sd

import stpredict as stp
from stpredict.model import PixNet

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

#: UNI2-h / Virchow2-style arguments (on timm's tiny test ViT: 6 blocks of width 64)
FM_KWARGS = {
    "init_values": 1e-5,
    "mlp_ratio": 4.0,  # UNI2-h: 2.66667 * 2 on width 1536 (an even hidden width; 64 needs another ratio)
    "mlp_layer": timm.layers.SwiGLUPacked,
    "act_layer": torch.nn.SiLU,
    "reg_tokens": 4,
    "no_embed_class": True,
}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=8, seed=3, bins_um=(16,), visium_spots=False
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 'foundation model' checkpoint: the full timm model (with its classifier head) as .safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(7)
    ref = timm.create_model("test_vit", **FM_KWARGS)
    path = tmp_path_factory.mktemp("fm") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return path


def _file_state(path) -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("head.")}


def test_vit_from_a_local_weights_file_trains_saves_loads_and_predicts(tmp_path, slide, weights):
    model = PixNet(
        encoder="test_vit",
        encoder_weights=weights,
        encoder_kwargs=FM_KWARGS,
        freeze_encoder=True,  # so the trained encoder is still exactly the file's
        decoder_channels=16,
        train_mpp=2.0,
        tile_size=128,
    )
    model.train(
        slide, tables="st_spots", n_top_genes=4, max_epochs=1, steps_per_epoch=2, batch_size=2, progress=False
    )
    enc = model.module.encoder
    assert enc.is_vit and enc.body.vit.num_prefix_tokens == 5  # class token + 4 registers
    assert type(enc.body.vit.blocks[0].mlp).__name__ == "GluMlp"
    assert model.encoder_weights_info["source"] == "file"
    assert np.isfinite(model.history[-1]["train_loss"])

    path = model.save(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    # layer classes are stored by name, so the checkpoint is plain JSON and rebuilds the same architecture
    assert cfg["architecture"]["encoder_kwargs"]["mlp_layer"] == "timm.layers.SwiGLUPacked"
    assert cfg["architecture"]["encoder_kwargs"]["act_layer"] == "torch.nn.SiLU"
    assert cfg["encoder_weights"]["sha256"] == stp._core.file_sha256(weights)

    loaded = stp.model.load(path)
    state = loaded.module.encoder.body.vit.state_dict()
    ref = _file_state(weights)
    assert set(ref) == set(state)  # every weight of the file, and nothing else, went into the encoder
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)
    fresh = PixNet(loaded.genes, encoder="test_vit", encoder_kwargs=FM_KWARGS).module.encoder.body.vit
    assert not torch.equal(fresh.state_dict()["blocks.0.attn.qkv.weight"], ref["blocks.0.attn.qkv.weight"])

    img = slide["synthetic_full_image"]["scale0"].image.values[:, :256, :256].transpose(1, 2, 0).copy()
    np.testing.assert_array_equal(loaded.predict(img), model.predict(img))
    s = sd.SpatialData(images={"he": slide["synthetic_full_image"]})
    names = stp.tl.predict_dense(s, loaded, bins_um=(16,), progress=False)
    dense = s[names[0]]["scale0"].image.values
    assert dense.shape[0] == 4 and np.isfinite(dense).all() and dense.std() > 0
    rec = s.tables["pixnet_square_016um"].uns["stpredict"]
    assert rec["model_info"]["encoder"] == "test_vit"
    assert rec["model_info"]["encoder_weights"]["sha256"] == cfg["encoder_weights"]["sha256"]


def test_vit_from_a_downloaded_repository_folder(tmp_path):
    """``local-dir:`` + ``pretrained=True``: the folder's config.json and weights, no network; recorded as such."""
    torch.manual_seed(3)
    ref = timm.create_model("test_vit", init_values=1e-5)
    timm.models.save_for_hf(ref, tmp_path / "repo")
    model = PixNet(
        ["A", "B"],
        encoder=f"local-dir:{tmp_path / 'repo'}",
        pretrained=True,
        encoder_kwargs={"init_values": 1e-5},
        decoder_channels=8,
    )
    vit = model.module.encoder.body.vit
    assert model.module.encoder.is_vit
    assert torch.equal(
        vit.state_dict()["blocks.0.attn.qkv.weight"], ref.state_dict()["blocks.0.attn.qkv.weight"]
    )
    assert model.encoder_weights_info == {"source": "local-dir", "path": str((tmp_path / "repo").resolve())}
    assert "pretrained weights from the folder" in model.provenance()["encoder_init"]


def test_encoder_kwargs_are_checked():
    with pytest.raises(ValueError, match="may not set 'num_classes'"):
        PixNet(["A"], encoder="test_vit", encoder_kwargs={"num_classes": 3})
    with pytest.raises(TypeError, match="cannot be stored in a checkpoint"):
        PixNet(["A"], encoder="test_vit", encoder_kwargs={"mlp_layer": lambda *a, **k: None})
    with pytest.raises(ValueError, match=r"only layers from timm or torch\.nn"):
        PixNet(["A"], encoder="test_vit", encoder_kwargs={"act_layer": "os.system"})


def test_weights_that_do_not_fit_the_architecture_are_an_error(weights):
    """timm only logs what a non-strict load could not place; a foundation model without its kwargs must not
    silently keep random LayerScale or MLP weights."""
    with pytest.raises(RuntimeError, match=r"(?s)does not fit encoder 'test_vit'.*ls1\.gamma.*init_values"):
        PixNet(
            ["A"],
            encoder="test_vit",
            encoder_weights=weights,
            encoder_kwargs={**FM_KWARGS, "init_values": None},
        )
    with pytest.raises(RuntimeError, match=r"(?s)weights file .*(does not fit|must fit the architecture)"):
        PixNet(["A"], encoder="test_vit", encoder_weights=weights)  # no registers, plain MLP: shapes differ
