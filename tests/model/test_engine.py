"""The one dense engine is exact: tiled blocks equal one pass of the network over the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stpredict._core import Pyramid
from stpredict.model import DenseEngine
from stpredict.module import Encoder, LinearProbeModule, PixNetModule

# The margin must cover the network's receptive field. resnet18 up to layer2 (stride 8, the small networks
# of most cases here, to keep the test fast) sees 99 px (radius ~50) plus the decoder's 3x3 convolutions and
# the final resize: 80 px is ample. The full resnet18 (stride 32) sees 435 px (radius ~218): 288 px.
MARGIN = {"pixnet": 80, "probe": 80, "pixnet_full": 288}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    shallow = (0, 1, 2)  # strides 2, 4, 8
    pixnet = PixNetModule(3, encoder=Encoder("resnet18", out_indices=shallow), decoder_channels=8).eval()
    probe = LinearProbeModule(3, encoder=Encoder("resnet18", out_indices=shallow)).eval()
    with torch.no_grad():
        probe.weight.normal_(0, 0.05)
        probe.bias.normal_()
    full = PixNetModule(3, encoder="resnet18", decoder_channels=8).eval()
    assert (pixnet.stride, probe.stride, full.stride) == (8, 8, 32)
    return {"pixnet": pixnet, "probe": probe, "pixnet_full": full}


def _image(shape, seed=0) -> np.ndarray:
    """Smooth colour waves plus noise: structure at several scales, odd sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = np.stack([128 + 90 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c) + c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@torch.no_grad()
def _whole(net, img: np.ndarray) -> np.ndarray:
    """The network run once over the whole image: ``(genes, H, W)``."""
    return net(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())[0].numpy()


def _engine(net, img, **kw) -> DenseEngine:
    kw = {"image_mpp": 2.0, "train_mpp": 2.0, "out_mpp": 2.0, **kw}
    return DenseEngine(net, Pyramid.from_array(img), **kw)


def _check(tiled: np.ndarray, ref: np.ndarray) -> None:
    assert tiled.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(tiled, ref, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    ("name", "shape", "chunk"),
    [
        ("pixnet", (261, 229), 40),  # interior windows: blocks see only the margin's context
        ("pixnet", (261, 229), 50),  # not a stride multiple: rounded to 48
        ("pixnet", (75, 101), 24),  # windows clipped at every side
        ("probe", (261, 229), 64),
        ("probe", (75, 101), 16),
        ("pixnet_full", (150, 171), 64),
    ],
)
def test_tiled_map_equals_one_pass_over_the_whole_image(nets, name, shape, chunk):
    net, m = nets[name], MARGIN[name]
    img = _image(shape)
    eng = _engine(net, img, chunk_size=chunk, margin=m - 5)
    # blocks and margins are rounded to whole network strides (the margin up)
    assert eng.chunk_size == round(chunk / net.stride) * net.stride and eng.margin == m
    assert eng.shape == (3, *shape)
    with eng.running("cpu"):
        tiled = eng.compute()
        lazy = eng.to_dask().compute(scheduler="sync")
    _check(tiled, _whole(net, img))
    np.testing.assert_array_equal(lazy, tiled)  # the dask path runs the same blocks


def test_without_margin_blocks_see_less_context(nets):
    """The check above is not vacuous: with no margin the blocks' borders differ from the whole pass."""
    img = _image((261, 229))
    eng = _engine(nets["pixnet"], img, chunk_size=40, margin=0)
    with eng.running("cpu"):
        tiled = eng.compute()
    ref = _whole(nets["pixnet"], img)
    assert np.abs(tiled - ref).max() > 1e-2 * np.abs(ref).max()


def test_coarser_and_finer_output_grids_and_a_finer_image(nets):
    """out_mpp a multiple or divisor of train_mpp, and an image read at a coarser training pixel size."""
    net, m = nets["pixnet"], MARGIN["pixnet"]
    img = _image((181, 203), seed=1)
    # out_mpp = 2 x train_mpp: 2 x 2 means of the map; the last output row/column covers one row/column of glass
    eng = _engine(net, img, out_mpp=4.0, chunk_size=16, margin=m // 2)
    with eng.running("cpu"):
        tiled = eng.compute()
    padded = np.pad(img, ((0, 1), (0, 1), (0, 0)), constant_values=255)
    _check(tiled, F.avg_pool2d(torch.from_numpy(_whole(net, padded))[None], 2)[0].numpy())
    # out_mpp = train_mpp / 2: bilinear upsampling of the map (the margin is in output pixels)
    eng = _engine(net, img, out_mpp=1.0, chunk_size=48, margin=2 * m)
    with eng.running("cpu"):
        tiled = eng.compute()
    ref = torch.from_numpy(_whole(net, img))[None]
    _check(tiled, F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=False)[0].numpy())
    # an image at 1 µm/px seen at 2 µm/px: windows are read (box-averaged) from the full resolution
    fine = np.repeat(np.repeat(_image((181, 203), seed=2), 2, 0), 2, 1)[:361, :405]
    eng = DenseEngine(
        net, Pyramid.from_array(fine), image_mpp=1.0, train_mpp=2.0, out_mpp=2.0, chunk_size=32, margin=m
    )
    with eng.running("cpu"):
        tiled = eng.compute()
    seen = Pyramid.from_array(fine).read(
        (0, 0, 406, 362), (181, 203)
    )  # at 2 µm/px; the last half pixel is glass
    _check(tiled, _whole(net, seen))


def test_mask_skips_blocks_and_bad_grids_are_refused(nets):
    net = nets["pixnet_full"]
    img = _image((75, 101))
    eng = _engine(net, img, chunk_size=32, margin=32)
    mask = np.zeros((75, 101), bool)
    mask[40, 70] = True  # only the block (32:64, 64:96) runs
    calls = []
    orig = eng.block
    eng.block = lambda *a: calls.append(a) or orig(*a)
    with eng.running("cpu"):
        out = eng.compute(mask)
        lazy = eng.to_dask(mask).compute(scheduler="sync")
    assert calls == [(32, 64, 64, 96)] * 2
    assert np.abs(out[:, 32:64, 64:96]).sum() > 0 and (out[:, :32] == 0).all()
    np.testing.assert_array_equal(lazy, out)
    with pytest.raises(ValueError, match="mask has shape"):
        eng.to_dask(np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="integer multiple or divisor"):
        _engine(net, img, out_mpp=3.0)
    eng = _engine(net, img, chunk_size=50, margin=5)
    assert (eng.chunk_size, eng.margin) == (64, 32)  # whole strides


@pytest.mark.parametrize(
    ("map_space", "n_genes", "upsample"),
    # 12 genes > 8 decoder channels: the head after the resize
    [
        ("log", 4, "deconv"),
        ("log", 12, "deconv"),
        ("rate", 12, "deconv"),
        ("log", 4, "resize"),
        ("rate", 12, "resize"),
    ],
)
def test_decoding_only_the_block_equals_the_whole_window_cropped(map_space, n_genes, upsample):
    """The engine decodes only a window's block (``forward_region``): the same numbers as the forward, cropped."""
    torch.manual_seed(1)
    net = PixNetModule(
        n_genes,
        encoder=Encoder("resnet18", out_indices=(0, 1, 2)),
        decoder_channels=8,
        map_space=map_space,
        upsample=upsample,
    )
    net = net.eval()
    rng = np.random.default_rng(0)
    for shape in [(96, 128), (75, 101)]:  # a stride multiple, and reflect padding at the far sides
        x = torch.from_numpy(_image(shape, seed=3)).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            ref = net(x)
            for _ in range(6):
                y0, x0 = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
                y1, x1 = rng.integers(y0 + 1, shape[0] + 1), rng.integers(x0 + 1, shape[1] + 1)
                _check(net.forward_region(x, (y0, y1, x0, x1))[0].numpy(), ref[0, :, y0:y1, x0:x1].numpy())
    with pytest.raises(ValueError, match="not inside"):
        net.forward_region(x, (0, 200, 0, 10))
