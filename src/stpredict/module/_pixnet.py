"""PixNet as a plain ``nn.Module``: image tensor in, dense gene-expression map out.

Notation of the paper (Zhang, Yang & Pan, 2025, Sec. 2): an encoder gives the feature pyramid
``F_1 … F_L`` (finest to coarsest); the decoder starts from ``D_0 = F_L`` and computes, for each
finer level, ``D_l = DFFN(Dconv(D_{l-1}) + δ_l · P_l(F_l))``; a 1×1 head maps the last decoder
feature to ``M`` genes and the result is resized to the output grid (Eq. 3–4).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._types import MapSpace, OutActivation, Upsample, check_choice
from ._encoder import Encoder, as_encoder
from ._loss import OwnsLoss, default_loss, get_loss

__all__ = ["DFFN", "DecoderStage", "LayerNorm2d", "PixNetModule", "ResizeUp"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels at each pixel of ``(B, C, H, W)``: local, so tiled inference stays seamless."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DFFN(nn.Module):
    """Convolutional two-layer feed-forward block with a residual connection."""

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.norm = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.norm(x))))


class ResizeUp(nn.Module):
    """Double the grid without a checkerboard: a 1×1 convolution, then a bilinear ×2 resize.

    The paper's 2×2 transposed convolution (stride 2) applies four different kernels to the four pixels each
    input pixel becomes, so every decoder stage can print a period-2 pattern on its grid; stacked, they show as a
    regular texture in the map (8 µm at 2 µm/px). A resize treats every output pixel alike.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.proj(x), scale_factor=2, mode="bilinear", align_corners=False)


class DecoderStage(nn.Module):
    """``D_l = DFFN(Up(D_{l-1}) + δ_l · P_l(F_l))``; ``Up`` is the paper's Dconv or a resize (``upsample``)."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        expansion: int = 2,
        upsample: Upsample = "resize",
    ) -> None:
        super().__init__()
        check_choice("upsample", upsample, Upsample)
        self.dconv = (
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
            if upsample == "deconv"
            else ResizeUp(in_channels, out_channels)
        )
        self.proj = (
            nn.Identity() if skip_channels == out_channels else nn.Conv2d(skip_channels, out_channels, 1)
        )
        self.delta = nn.Parameter(torch.ones(()))
        self.dffn = DFFN(out_channels, expansion)

    def forward(self, d: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.dconv(d)
        if up.shape[-2:] != skip.shape[-2:]:
            up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.dffn(up + self.delta * self.proj(skip))


_ACTIVATIONS = {"identity": nn.Identity, "softplus": nn.Softplus, "relu": nn.ReLU}


def check_output(out_activation: str, map_space: str, loss: str | None) -> str:
    """Check a PixNet's output arguments together; return the name of the loss it trains with."""
    check_choice("out_activation", out_activation, OutActivation)
    check_choice("map_space", map_space, MapSpace)
    if map_space == "rate" and out_activation != "identity":
        raise ValueError(
            f"map_space='rate' predicts log-rates and takes no output activation; got out_activation={out_activation!r}. "
            "Use out_activation='identity' (the default)."
        )
    if loss is None:
        return default_loss(map_space)
    cls = get_loss(loss)
    if cls.output != map_space:
        raise ValueError(
            f"The {loss!r} loss scores {'rates' if cls.output == 'rate' else 'log-normalised values'}, so the map must "
            f"be map_space={cls.output!r}; got map_space={map_space!r}. Pass map_space={cls.output!r}."
        )
    return cls.name


class PixNetModule(OwnsLoss, nn.Module):
    """Encoder pyramid → U-Net-style decoder → 1×1 head → resize: a dense map of ``n_genes`` channels.

    Parameters
    ----------
    n_genes
        Number of output channels ``M``.
    encoder
        timm model name (default ``"resnet18"``, the paper's choice) or an :class:`Encoder`.
    decoder_channels
        Hidden width of the decoder: one int for every level (paper: 512) or one per decoder stage,
        coarsest first (e.g. ``(128, 64, 32, 32)`` for a light CPU model).
    expansion
        Expansion factor of the DFFN hidden layer.
    out_activation
        ``"identity"`` (log-normalised targets), ``"softplus"`` or ``"relu"`` (non-negative targets).
    map_space
        ``"log"``: the head's output is the log-normalised expression itself. ``"rate"``: the head
        predicts the log of a non-negative *rate* ``ρ`` (expected counts per ``target_sum`` counts of the
        footprint), resized bilinearly as a rate, and the map is ``log1p(ρ)``; a footprint's rate is
        the mean of ``ρ`` over it, so the rates of nested footprints agree (trained with a count
        likelihood, see :mod:`stpredict.train`). Needs ``out_activation="identity"``.
    loss
        The registered loss (:func:`~stpredict.module.register_loss`) it trains and validates with, returned by
        :meth:`loss`; its ``output`` must be ``map_space``. Default: ``"mse_pcc"`` for ``"log"``, ``"poisson"`` for
        ``"rate"``.
    upsample
        How each decoder stage doubles its grid: ``"resize"`` (default), a 1×1 convolution and a bilinear
        ×2 resize (:class:`ResizeUp`), which prints no grid texture on the map, or ``"deconv"``, the paper's
        2×2 transposed convolution.
    pretrained, encoder_weights
        Passed to :class:`Encoder`.
    encoder_kwargs
        Further :func:`timm.create_model` arguments of the encoder (see :class:`Encoder`).

    """

    def __init__(
        self,
        n_genes: int,
        *,
        encoder: str | Encoder = "resnet18",
        decoder_channels: int | Sequence[int] = 512,
        expansion: int = 2,
        out_activation: OutActivation = "identity",
        map_space: MapSpace = "log",
        loss: str | None = None,
        upsample: Upsample = "resize",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_genes < 1:
            raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
        self.loss_name = check_output(out_activation, map_space, loss)
        self.encoder = as_encoder(
            encoder, pretrained=pretrained, weights=encoder_weights, encoder_kwargs=encoder_kwargs
        )
        chans = self.encoder.channels
        n_stages = len(chans) - 1
        if isinstance(decoder_channels, int):
            widths = [decoder_channels] * n_stages
        else:
            widths = list(decoder_channels)
            if len(widths) != n_stages:
                raise ValueError(
                    f"decoder_channels needs {n_stages} widths (one per decoder stage, coarsest first) for encoder "
                    f"{self.encoder.name!r} with {len(chans)} levels; got {len(widths)}."
                )
        self.bottom = nn.Identity()  # D_0 = F_L
        stages = []
        in_ch = chans[-1]
        for level, width in zip(range(n_stages - 1, -1, -1), widths, strict=True):
            stages.append(DecoderStage(in_ch, chans[level], width, expansion, upsample))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(in_ch, n_genes, 1)
        self.out_activation = out_activation
        self.activation = _ACTIVATIONS[out_activation]()
        self.map_space = map_space
        self.upsample = upsample
        self.n_genes = n_genes

    @property
    def stride(self) -> int:
        """Coarsest encoder reduction; inputs are padded to a multiple of it."""
        return self.encoder.stride

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid ``F_1 … F_L`` of RGB images whose sides are stride multiples (finest first)."""
        return self.encoder(self.encoder.normalize(images))

    def decode_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The last decoder features ``D_L`` (before the 1×1 head), at the finest encoder stride."""
        d = self.bottom(feats[-1])
        for stage, skip in zip(self.stages, reversed(feats[:-1]), strict=True):
            d = stage(d, skip)
        return d

    @property
    def linear_output(self) -> bool:
        """Whether the head and the resize are linear (the identity activation).

        Footprint means can then be taken of ``D_L`` before the head, with the same result
        (:func:`stpredict.train.run_batch` does so in training).
        """
        return self.out_activation == "identity" and self.map_space == "log"

    #: Largest log-rate (``exp(15)`` ≈ 3·10⁶ per ``target_sum``): keeps ``exp`` finite early in training.
    MAX_LOG_RATE = 15.0

    def rates(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The rate map ``ρ`` ``(B, n_genes, h, w)`` on the last decoder grid (``map_space="rate"``)."""
        return torch.exp(self.head(self.decode_features(feats)).clamp(max=self.MAX_LOG_RATE))

    def decode(self, feats: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """Decode a feature pyramid into ``(B, n_genes, *out_size)``."""
        if self.map_space == "rate":
            rho = F.interpolate(self.rates(feats), size=out_size, mode="bilinear", align_corners=False)
            return torch.log1p(rho)
        g = self.head(self.decode_features(feats))
        g = F.interpolate(g, size=out_size, mode="bilinear", align_corners=False)
        return self.activation(g)

    def forward(self, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense map ``(B, n_genes, H, W)`` for RGB images ``(B, 3, H, W)`` (default: the input grid)."""
        h, w = images.shape[-2:]
        feats, padded = self.encoder.pyramid(images)
        g = self.decode(feats, padded)[..., :h, :w]
        if out_size is not None and tuple(out_size) != (h, w):
            g = F.interpolate(g, size=out_size, mode="bilinear", align_corners=False)
        return g

    @property
    def latent_channels(self) -> int:
        """Channels of the latent map (``forward_region(..., latent=True)``): the last decoder stage's width."""
        return int(self.head.in_channels)

    def latent_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The 1×1 head as ``(weight (n_genes, latent_channels), bias (n_genes,))`` float32 arrays.

        With :attr:`linear_output`, the map is ``weight @ latent + bias`` pixel by pixel, and so is any mean of it.
        """
        return (
            self.head.weight.detach().flatten(1).float().cpu().numpy().copy(),
            self.head.bias.detach().float().cpu().numpy().copy(),
        )

    def forward_region(
        self, images: torch.Tensor, region: tuple[int, int, int, int], *, latent: bool = False
    ) -> torch.Tensor:
        """``self(images)[..., y0:y1, x0:x1]`` for ``region = (y0, y1, x0, x1)``, decoded only where it is needed.

        The encoder sees the whole input (the context); the decoder stages, the head and the final resize run
        only over the region plus the pixels their 3×3 convolutions and the bilinear resize reach (one pixel of
        each stage's grid), so a window's context margin costs encoder time only. The same numbers as
        :meth:`forward` cropped (up to float rounding): every decoder operation is local, and at a crop's edge
        only pixels that are cropped away see the convolutions' zero padding. Used by the dense engine
        (:class:`stpredict.model.DenseEngine`), which keeps the block of a window without its margin.

        ``latent=True`` returns the region of the *latent map* instead: the last decoder features resized like the
        map, ``(B, latent_channels, y1 - y0, x1 - x0)``, of which the map is the 1×1 head (:meth:`latent_head`);
        only for a linear output (:attr:`linear_output`).
        """
        if latent and not self.linear_output:
            raise ValueError(
                "A latent map needs a linear output (map_space='log', out_activation='identity'); this network has "
                f"map_space={self.map_space!r}, out_activation={self.out_activation!r}."
            )
        h, w = images.shape[-2:]
        y0, y1, x0, x1 = (int(v) for v in region)
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"region {region} is not inside the {h} x {w} input.")
        feats, (H, W) = self.encoder.pyramid(images)
        sizes = [tuple(f.shape[-2:]) for f in feats]
        h0, w0 = sizes[0]
        r = H // h0
        # the shortcut needs the grids the full forward has: each level twice the next, the input r times the finest
        if (
            len(sizes) != len(self.stages) + 1
            or (h0 * r, w0 * r) != (H, W)
            or any((2 * a, 2 * b) != fine for fine, (a, b) in pairwise(sizes))
        ):
            if latent:
                d = F.interpolate(
                    self.decode_features(feats), size=(H, W), mode="bilinear", align_corners=False
                )
                return d[..., y0:y1, x0:x1]
            return self.decode(feats, (H, W))[..., y0:y1, x0:x1]

        def grow(span: tuple[int, int], by: int, n: int) -> tuple[int, int]:
            return max(0, span[0] - by), min(n, span[1] + by)

        # regions (rows, cols) of each decoder level, finest first: what the resize, then each stage, needs
        out = [(grow((y0 // r, -(-y1 // r)), 1, h0), grow((x0 // r, -(-x1 // r)), 1, w0))]
        inner = []  # the region a stage computes its 3x3 convolution over (its output region, one pixel more)
        for level in range(len(self.stages)):
            (ry, rx), (n_y, n_x) = out[level], sizes[level]
            ey, ex = grow(ry, 1, n_y), grow(rx, 1, n_x)
            inner.append((ey, ex))
            cy, cx = (ey[0] // 2, -(-ey[1] // 2)), (ex[0] // 2, -(-ex[1] // 2))
            if self.upsample == "resize":  # the bilinear resize reads one coarse pixel beyond what it covers
                cy, cx = grow(cy, 1, sizes[level + 1][0]), grow(cx, 1, sizes[level + 1][1])
            out.append((cy, cx))

        def crop(
            t: torch.Tensor, ys: tuple[int, int], xs: tuple[int, int], oy: int = 0, ox: int = 0
        ) -> torch.Tensor:
            return t[..., ys[0] - oy : ys[1] - oy, xs[0] - ox : xs[1] - ox]

        top = len(self.stages)
        d = crop(self.bottom(feats[top]), *out[top])
        for stage, level in zip(self.stages, range(top - 1, -1, -1), strict=True):
            (ey, ex), (py, px) = (
                inner[level],
                out[level + 1],
            )  # py, px: the region d covers, one level coarser
            up = crop(stage.dconv(d), ey, ex, 2 * py[0], 2 * px[0])
            d = stage.dffn(up + stage.delta * stage.proj(crop(feats[level], ey, ex)))
            d = crop(d, *out[level], ey[0], ex[0])
        (ry, rx) = out[0]
        size = ((ry[1] - ry[0]) * r, (rx[1] - rx[0]) * r)
        oy, ox = y0 - ry[0] * r, x0 - rx[0] * r
        if self.map_space == "rate":
            g = torch.exp(self.head(d).clamp(max=self.MAX_LOG_RATE))
            g = torch.log1p(F.interpolate(g, size=size, mode="bilinear", align_corners=False))
            return g[..., oy : oy + y1 - y0, ox : ox + x1 - x0]
        if not latent and d.shape[1] >= self.n_genes:
            g = F.interpolate(self.head(d), size=size, mode="bilinear", align_corners=False)
            return self.activation(g[..., oy : oy + y1 - y0, ox : ox + x1 - x0])
        # The head is linear and bilinear weights sum to one, so head and resize commute: resizing the decoder's
        # fewer channels, cropping them and applying the head as one matrix product gives the block contiguous,
        # with no resized margin and no copy of the genes' channels. The latent map is that resize, before the head.
        u = F.interpolate(d, size=size, mode="bilinear", align_corners=False)[
            ..., oy : oy + y1 - y0, ox : ox + x1 - x0
        ]
        if latent:
            return u
        weight, bias = self.head.weight.flatten(1), self.head.bias[:, None]
        g = torch.empty((u.shape[0], self.n_genes, (y1 - y0) * (x1 - x0)), dtype=u.dtype, device=u.device)
        for i, ui in enumerate(u):  # into the output (a stack of the products would copy the genes' channels)
            torch.addmm(bias, weight, ui.reshape(ui.shape[0], -1), out=g[i])
        return self.activation(g.view(u.shape[0], self.n_genes, y1 - y0, x1 - x0))

    @torch.no_grad()
    def init_output(self, mean: np.ndarray) -> None:
        """Start the 1×1 head at ``mean`` (per gene, log-normalised), so training begins at the mean predictor.

        With ``map_space="rate"``, ``mean`` is the mean *rate* per gene and the head starts at its log.
        """
        m = torch.from_numpy(np.asarray(mean, np.float32))
        if self.map_space == "rate":
            m = torch.log(m.clamp_min(1e-6))
        elif self.out_activation == "softplus":
            m = torch.where(m > 20, m, torch.log(torch.expm1(m.clamp_min(1e-4))))
        self.head.bias.copy_(m)
