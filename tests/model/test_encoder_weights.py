"""Pretrained encoders the way users expect: the ``paper`` preset starts from ImageNet weights, offline it says how.

No test downloads anything: the Hugging Face cache is an empty (or hand-filled) folder and HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import json
import warnings

import pytest

import stpredict as stp
from stpredict.model import LinearProbe, PixNet, SpotRegressor

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

HUB_ID = "timm/resnet18.a1_in1k"  # what timm fetches for pretrained "resnet18"


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """An offline Hugging Face hub with an empty cache of its own."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    from stpredict.module import pretrained_available

    pretrained_available.cache_clear()  # asked once per process: not across these caches
    yield cache
    pretrained_available.cache_clear()


def test_paper_presets_ask_for_pretrained_encoders_and_the_rest_for_them_where_they_can_be_had(hf_cache):
    """``paper``: the hub's weights or an error; everything else ("auto"): them if cached, else random with a warning."""
    for cls in (PixNet, SpotRegressor, LinearProbe):
        assert cls.presets["paper"].architecture["pretrained"] is True
        assert "pretrained" not in cls.presets["cpu"].architecture  # the constructor's default, "auto"
        with pytest.warns(
            UserWarning, match=r"(?s)random initialisation.*timm/resnet18\.a1_in1k.*encoder_weights="
        ):
            model, _ = cls.from_preset("cpu", ["A", "B"])
        assert model.config["pretrained"] is False and model.encoder_weights_info is None  # what happened
        assert model.provenance()["encoder_init"] == "random initialisation"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: silent
        model = PixNet(["A", "B"], pretrained=False, decoder_channels=8)
        PixNet(["A", "B"], encoder_weights=_weights_file(hf_cache.parent), decoder_channels=8)
    with pytest.raises(ValueError, match="pretrained must be True, False or 'auto'"):
        PixNet(["A"], pretrained="yes")


def test_auto_uses_the_hub_weights_once_they_are_cached(hf_cache):
    torch.manual_seed(11)
    imagenet = timm.create_model("resnet18").state_dict()
    _fill_cache(hf_cache, imagenet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _ = PixNet.from_preset("cpu", ["A", "B"])
    assert model.config["pretrained"] is True
    assert torch.equal(model.module.encoder.body.conv1.weight, imagenet["conv1.weight"])
    assert model.encoder_weights_info["hf_hub_id"] == HUB_ID


def _weights_file(folder):
    w = folder / "r18.pth"
    if not w.exists():
        torch.save(timm.create_model("resnet18").state_dict(), w)
    return w


def test_paper_preset_offline_names_both_fixes(hf_cache, synthetic_small):
    with pytest.raises(RuntimeError) as info:
        PixNet.from_preset("paper", ["A", "B"], decoder_channels=8)
    msg = str(info.value)
    assert HUB_ID in msg and f"https://huggingface.co/{HUB_ID}" in msg  # where to get the file
    assert "encoder_weights='path/to/model.safetensors'" in msg  # fix 1: a local file
    assert "pretrained=False" in msg  # fix 2: no pretrained weights
    # the user's path: tl.train with the preset fails the same way, before any training step
    with pytest.raises(RuntimeError, match=r"(?s)resnet18\.a1_in1k.*encoder_weights=.*pretrained=False"):
        stp.tl.train(synthetic_small, tables="st_spots", preset="paper", n_top_genes=3, progress=False)
    # either fix builds the paper's model offline
    model, fit = PixNet.from_preset("paper", ["A", "B"], pretrained=False, decoder_channels=8)
    assert model.config["pretrained"] is False and fit == {"batch_size": 8}


def test_auto_preset_on_a_cuda_machine_is_the_paper_one_and_fails_as_clearly(hf_cache, monkeypatch):
    monkeypatch.setattr(type(stp.settings), "resolve_device", lambda self, device=None: torch.device("cuda"))
    with pytest.raises(RuntimeError, match=r"(?s)timm/resnet18\.a1_in1k.*encoder_weights=.*pretrained=False"):
        PixNet.from_preset("auto", ["A", "B"], decoder_channels=8)
    model, _ = PixNet.from_preset("auto", ["A", "B"], decoder_channels=8, pretrained=False)
    assert model.config["train_mpp"] == 1.0  # the paper's recipe, without its download


def test_paper_preset_with_a_local_weights_file_does_not_ask_the_hub(hf_cache, tmp_path):
    w = tmp_path / "resnet18.pth"
    torch.manual_seed(5)
    torch.save(timm.create_model("resnet18").state_dict(), w)
    model, _ = PixNet.from_preset("paper", ["A", "B"], encoder_weights=w, decoder_channels=8)
    assert model.config["pretrained"] is False and model.config["encoder_weights"] == str(w)
    assert model.encoder_weights_info["source"] == "file"
    assert torch.equal(model.module.encoder.body.conv1.weight, torch.load(w)["conv1.weight"])


def _fill_cache(cache, state: dict) -> None:
    """Put ``state`` where huggingface_hub keeps a downloaded ``timm/resnet18.a1_in1k``."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))


def test_paper_preset_loads_the_hub_weights_and_records_where_from(hf_cache, tmp_path):
    """With the weights in the hub cache (as after a download), the preset uses them and the checkpoint says so."""
    torch.manual_seed(11)
    imagenet = timm.create_model("resnet18").state_dict()
    _fill_cache(hf_cache, imagenet)
    model, _ = PixNet.from_preset("paper", ["A", "B"], decoder_channels=8)
    assert torch.equal(model.module.encoder.body.conv1.weight, imagenet["conv1.weight"])
    info = {"source": "hf-hub", "hf_hub_id": HUB_ID, "url": f"https://huggingface.co/{HUB_ID}"}
    assert model.encoder_weights_info == info
    path = model.save(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architecture"]["pretrained"] is True and cfg["encoder_weights"] == info
    for p in hf_cache.rglob("*"):  # the checkpoint has the weights: loading needs neither hub nor cache
        if p.is_file() or p.is_symlink():
            p.unlink()
    loaded = stp.model.load(path)
    assert loaded.encoder_weights_info == info
    assert torch.equal(loaded.module.encoder.body.conv1.weight, imagenet["conv1.weight"])
    assert (
        loaded.provenance()["encoder_init"]
        == f"pretrained weights {HUB_ID} (https://huggingface.co/{HUB_ID})"
    )
