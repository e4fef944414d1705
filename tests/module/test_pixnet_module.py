from __future__ import annotations

import pytest
import torch

from stpredict.module import Encoder, PixNetModule


@pytest.mark.parametrize(
    ("encoder", "widths", "n_levels"),
    [("resnet18", (32, 16, 16, 16), 5), ("vit_tiny_patch16_224", 24, 4)],
)
def test_dense_output_shape_cnn_and_vit(encoder, widths, n_levels):
    torch.manual_seed(0)
    net = PixNetModule(7, encoder=encoder, decoder_channels=widths)
    assert len(net.encoder.channels) == n_levels and len(net.stages) == n_levels - 1
    x = torch.randint(0, 255, (2, 3, 70, 90), dtype=torch.uint8)  # not a multiple of the stride
    y = net(x)
    assert y.shape == (2, 7, 70, 90)
    assert net(x, out_size=(35, 45)).shape == (2, 7, 35, 45)
    # learnable δ per decoder stage
    assert all(isinstance(s.delta, torch.nn.Parameter) for s in net.stages)


def test_uint8_and_float_inputs_agree_for_any_size():
    """Padding to the stride must not change how uint8 pixels are scaled (regression test)."""
    torch.manual_seed(0)
    net = PixNetModule(3, encoder="resnet18", decoder_channels=8).eval()
    x = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        full = net(x)
        as_float = net(x.float() / 255)
        odd = net(x[..., :50, :50])  # needs padding to 64
    torch.testing.assert_close(full, as_float)
    # the padded input sees the same pixel scale: values stay in the same range as the unpadded map
    assert abs(float(odd.mean()) - float(full[..., :50, :50].mean())) < 0.5 * float(full.std()) + 1e-3


def test_decoder_options():
    with pytest.raises(ValueError, match="needs 4 widths"):
        PixNetModule(3, encoder="resnet18", decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="out_activation"):
        PixNetModule(3, encoder="resnet18", out_activation="tanh")
    net = PixNetModule(3, encoder="resnet18", decoder_channels=8, out_activation="softplus")
    y = net(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
    assert (y > 0).all()


def test_local_weights_file_loads(tmp_path):
    import timm

    torch.manual_seed(123)
    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18_local.pth"
    torch.save({"state_dict": ref.state_dict()}, path)  # timm checkpoint layout
    enc = Encoder("resnet18", weights=path)
    w_ref = ref.state_dict()["conv1.weight"]
    torch.testing.assert_close(enc.body.conv1.weight, w_ref)
    torch.testing.assert_close(enc.body.layer4[1].conv2.weight, ref.state_dict()["layer4.1.conv2.weight"])
    # a plain state dict file works too, and the model differs from a fresh random init
    torch.save(ref.state_dict(), tmp_path / "plain.pth")
    enc2 = Encoder("resnet18", weights=tmp_path / "plain.pth")
    torch.testing.assert_close(enc2.body.conv1.weight, w_ref)
    assert not torch.equal(Encoder("resnet18").body.conv1.weight, w_ref)


def test_offline_hub_weights_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache
    with pytest.raises(RuntimeError, match=r"(?s)Could not load pretrained weights.*encoder_weights="):
        Encoder("resnet18", pretrained=True)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        Encoder("resnet18", weights=tmp_path / "missing.pth")
