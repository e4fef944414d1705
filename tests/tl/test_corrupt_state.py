"""Damaged state and checkpoint files give an error that names the file and the way out, not a raw torch one."""

from __future__ import annotations

import json

import pytest
import torch

import stpredict as stp
from stpredict.model import PixNet

SMALL = {
    "tile_size": 32,
    "n_tiles": 16,
    "max_epochs": 1,
    "steps_per_epoch": 1,
    "batch_size": 4,
    "seed": 0,
    "progress": False,
}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(width_um=480, height_um=416, n_genes=12, seed=1, bins_um=(16,))


def _truncated_torch_file(path) -> None:
    torch.save({"net": {"w": torch.zeros(256)}, "history": []}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------- tl.pretrain_encoder's resume state
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(b"not a torch file"), "it is truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "it is truncated or corrupt"),
        (_truncated_torch_file, "it is truncated or corrupt"),
        (lambda p: torch.save([1, 2, 3], p), r"it is not a pretraining state \(it lacks \['net'"),
    ],
    ids=["garbage", "empty", "truncated", "not-a-state"],
)
def test_a_damaged_pretraining_state_names_the_file_and_overwrite(slide, tmp_path, damage, why):
    state = tmp_path / "w.pth.state.pt"
    damage(state)
    with pytest.raises(
        ValueError,
        match=rf"w\.pth\.state\.pt, the saved state of an interrupted pretraining, cannot be resumed: {why}.*`overwrite=True` to delete it and start the pretraining afresh",
    ):
        stp.tl.pretrain_encoder(slide, tmp_path / "w.pth", **SMALL)
    assert state.is_file() and not (tmp_path / "w.pth").exists()  # nothing was deleted or written


@pytest.fixture(scope="module")
def afresh(slide, tmp_path_factory):
    """A pretraining run with ``overwrite=True`` over a damaged state: its folder."""
    out = tmp_path_factory.mktemp("afresh")
    (out / "w.pth.state.pt").write_bytes(b"\x00" * 100)
    stp.tl.pretrain_encoder(slide, out / "w.pth", overwrite=True, **SMALL)
    return out


def test_overwrite_starts_afresh_from_a_damaged_state(afresh):
    assert (afresh / "w.pth").is_file() and not (afresh / "w.pth.state.pt").exists()
    assert [h["epoch"] for h in json.loads((afresh / "w.pth.json").read_text())["history"]] == [1]


def test_damaged_pretrained_weights_or_record_are_named(slide, afresh, tmp_path):
    for name in ("w.pth", "w.pth.json"):
        (tmp_path / name).write_bytes((afresh / name).read_bytes())
    w = tmp_path / "w.pth"
    assert stp.tl.pretrain_encoder(slide, w, **SMALL) == w  # intact: returned as is
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])  # truncated after pretraining, the same settings asked again
    with pytest.raises(
        FileExistsError,
        match=r"w\.pth exists but does not match the checksum in w\.pth\.json.*`overwrite=True`",
    ):
        stp.tl.pretrain_encoder(slide, w, **SMALL)
    w.write_bytes(good)
    meta = tmp_path / "w.pth.json"
    meta.write_text(meta.read_text()[:20])  # the record is truncated
    with pytest.raises(
        FileExistsError,
        match=r"its record w\.pth\.json cannot be read \(truncated or corrupt.*`overwrite=True`",
    ):
        stp.tl.pretrain_encoder(slide, w, **SMALL)


# ---------------------------------------------------------------- model checkpoints (what tl.train resumes from)
@pytest.fixture(scope="module")
def checkpoint(slide, tmp_path_factory):
    model = PixNet(decoder_channels=8, train_mpp=4.0, tile_size=64).train(
        slide,
        tables="square_016um",
        n_top_genes=4,
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        progress=False,
    )
    return model.save(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def ckpt(checkpoint, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    for f in checkpoint.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.mark.parametrize("damage", [b"junk", "half"], ids=["garbage", "truncated"])
def test_a_damaged_optimizer_state_names_the_file_and_the_way_out(ckpt, damage):
    opt = ckpt / "optimizer.pt"
    opt.write_bytes(damage if isinstance(damage, bytes) else opt.read_bytes()[: opt.stat().st_size // 2])
    with pytest.raises(
        ValueError,
        match=r"optimizer\.pt cannot be read: it is truncated or corrupt.*delete it to load the model without it",
    ):
        stp.model.load(ckpt)
    opt.unlink()  # as the message says: the weights load, and training starts the optimiser afresh
    model = stp.model.load(ckpt)
    assert model.optimizer_state is None and len(model.history) == 1


def test_a_config_that_is_not_an_object_is_named(ckpt):
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json holds a JSON list, not the object stpredict writes"):
        stp.model.load(ckpt)


def test_overwrite_never_replaces_weights_stpredict_did_not_write(slide, tmp_path):
    """pretrain_encoder(overwrite=True) replaced any file at `weights`, e.g. the user's own encoder weights."""
    mine = tmp_path / "uni.pth"
    mine.write_bytes(b"the user's own weights")
    with pytest.raises(FileExistsError, match="stpredict did not write it"):
        stp.tl.pretrain_encoder(slide, mine, overwrite=True, **SMALL)
    assert mine.read_bytes() == b"the user's own weights"
