"""Self-supervised encoder pretraining: weights that ``encoder_weights=`` loads, resume, determinism, records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stpredict as stp
from stpredict.module import Encoder
from stpredict.train import _ssl

SMALL = {
    "tile_size": 32,
    "n_tiles": 48,
    "max_epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 4,
    "progress": False,
}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(width_um=480, height_um=416, n_genes=12, seed=1)


def _state(path) -> dict:
    return Encoder("resnet18", weights=path).body.state_dict()


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_writes_loadable_weights_and_record(slide, tmp_path):
    w = stp.tl.pretrain_encoder(slide, tmp_path / "ssl.pth", seed=3, **SMALL)
    assert w == tmp_path / "ssl.pth" and w.is_file()
    assert not (tmp_path / "ssl.pth.state.pt").exists()  # the resume state goes once training is done
    meta = json.loads((tmp_path / "ssl.pth.json").read_text())
    assert meta["config"]["method"] == "simsiam" and meta["config"]["train_mpp"] == 2.0
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["z_std"] > 0 for h in meta["history"])
    trained = _state(w)
    torch.manual_seed(3)
    init = Encoder("resnet18").body.state_dict()
    assert _equal(init, {k: v for k, v in init.items()})
    assert not _equal(trained, init)  # training moved the weights
    # the saved file is exactly what the encoder learned, and the same seed gives the same weights
    w2 = stp.tl.pretrain_encoder(slide, tmp_path / "again.safetensors", seed=3, **SMALL)
    assert _equal(_state(w2), trained)


def test_pretrain_resumes_an_interrupted_run_to_the_same_weights(slide, tmp_path, monkeypatch):
    ref = _state(stp.tl.pretrain_encoder(slide, tmp_path / "ref.pth", seed=0, **SMALL))
    calls = {"n": 0}
    real = _ssl.he_augment

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # two views per step, three steps per epoch: the run dies in epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_ssl, "he_augment", dying)
    with pytest.raises(KeyboardInterrupt):
        stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", seed=0, **SMALL)
    assert not (tmp_path / "w.pth").exists() and (tmp_path / "w.pth.state.pt").is_file()
    monkeypatch.setattr(_ssl, "he_augment", real)
    # other settings do not silently mix with the interrupted run
    with pytest.raises(FileExistsError, match=r"interrupted.*seed: 0 → 1"):
        stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", seed=1, **SMALL)
    w = stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", seed=0, **SMALL)
    assert _equal(_state(w), ref)
    assert [h["epoch"] for h in json.loads((tmp_path / "w.pth.json").read_text())["history"]] == [1, 2]


def test_pretrain_keeps_existing_weights_unless_overwrite(slide, tmp_path):
    w = stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", seed=0, **SMALL)
    stamp = w.stat().st_mtime_ns
    assert stp.tl.pretrain_encoder(slide, w, seed=0, **SMALL) == w  # done already: returned as is
    assert w.stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=r"trained otherwise.*max_epochs: 2 → 1"):
        stp.tl.pretrain_encoder(slide, w, seed=0, **{**SMALL, "max_epochs": 1})
    other = tmp_path / "user.pth"
    other.write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stp.tl.pretrain_encoder(slide, other, seed=0, **SMALL)
    assert other.read_bytes() == b"not ours"
    stp.tl.pretrain_encoder(slide, w, seed=0, overwrite=True, **{**SMALL, "max_epochs": 1})
    assert len(json.loads((tmp_path / "w.pth.json").read_text())["history"]) == 1


def test_models_record_the_pretrained_encoder(slide, tmp_path):
    w = stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", seed=0, **SMALL)
    model = stp.tl.train(
        slide,
        tables="st_spots",
        n_top_genes=5,
        preset="cpu",
        encoder_weights=w,
        max_epochs=1,
        steps_per_epoch=1,
        tile_size=64,
        progress=False,
    )
    assert _equal(model.module.encoder.body.state_dict(), _state(w)) is False  # fine-tuned from it
    info = model.encoder_weights_info
    assert info["sha256"] == json.loads((tmp_path / "w.pth.json").read_text())["sha256"]
    assert info["pretraining"]["method"] == "simsiam" and info["pretraining"]["seed"] == 0
    model.save(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["encoder_weights"] == info
    assert stp.model.load(tmp_path / "ckpt").encoder_weights_info == info


def test_pretrain_draws_from_selected_tiles(slide, tmp_path):
    sd = stp.datasets.synthetic(width_um=480, height_um=416, n_genes=12, seed=1)
    stp.pp.select_tiles(sd, tile_um=64, method="otsu", key_added="tiles")
    w = stp.tl.pretrain_encoder(sd, tmp_path / "w.pth", tiles="tiles", seed=0, **{**SMALL, "max_epochs": 1})
    assert json.loads((tmp_path / "w.pth.json").read_text())["config"]["tiles"] == "tiles"
    with pytest.raises(KeyError, match="select_tiles"):
        stp.tl.pretrain_encoder(slide, tmp_path / "x.pth", tiles="nope", **SMALL)
    assert w.is_file()


def test_pretrain_vit(slide, tmp_path):
    w = stp.tl.pretrain_encoder(
        slide, tmp_path / "vit.pth", encoder="vit_tiny_patch16_224", seed=0, **{**SMALL, "max_epochs": 1}
    )
    enc = Encoder("vit_tiny_patch16_224", weights=w)
    saved = torch.load(w, weights_only=True)
    assert all(torch.equal(enc.body.vit.state_dict()[k], v) for k, v in saved.items())


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"weights": "w.txt"}, ValueError, "must end in"),
        ({"method": "mae"}, ValueError, "simsiam"),
        ({"tile_size": 8}, ValueError, "tile_size"),
        ({"image_key": ["a", "b"]}, ValueError, "one per slide"),
    ],
)
def test_pretrain_bad_input(slide, tmp_path, kwargs, err, match):
    kwargs = {"weights": tmp_path / "w.pth", **kwargs}
    with pytest.raises(err, match=match):
        stp.tl.pretrain_encoder(slide, **kwargs)


def test_he_augment_views():
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=gen)
    a = _ssl.he_augment(tiles, torch.Generator().manual_seed(1), 32)
    b = _ssl.he_augment(tiles, torch.Generator().manual_seed(1), 32)
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    x = tiles.float() / 255
    same = _ssl.hed_jitter(x.clamp_min(1 / 255), gen, sigma=0.0)
    assert torch.allclose(same, x.clamp_min(1 / 255), atol=1e-4)  # σ = 0: the stain round trip is exact
    assert not torch.allclose(_ssl.hed_jitter(x, gen, sigma=0.2), x, atol=1e-2)
    with pytest.raises(ValueError, match="smaller than the view"):
        _ssl.he_augment(tiles, gen, 64)
