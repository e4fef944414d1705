"""PixNet as a plain ``nn.Module``: image tensor in, dense gene-expression map out.

Notation of the paper (Zhang, Yang & Pan, 2025, Sec. 2): an encoder gives the feature pyramid
``F_1 … F_L`` (finest to coarsest); the decoder starts from ``D_0 = F_L`` and computes, for each
finer level, ``D_l = DFFN(Dconv(D_{l-1}) + δ_l · P_l(F_l))``; a 1×1 head maps the last decoder
feature to ``M`` genes and the result is resized to the output grid (Eq. 3–4).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DFFN", "DecoderStage", "Encoder", "PixNetModule", "ViTPyramid"]


class ViTPyramid(nn.Module):
    """A simple feature pyramid from intermediate ViT blocks (ViTDet-style).

    Four blocks at stride ``p`` (the patch size) become maps at strides ``p/4, p/2, p, 2p`` by two
    transposed convolutions, one transposed convolution, identity and max-pooling.
    """

    def __init__(self, vit: nn.Module, indices: Sequence[int] | int = 4) -> None:
        super().__init__()
        self.vit = vit
        self.indices = indices
        dim = vit.embed_dim
        patch = vit.patch_embed.patch_size[0]
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, 2), nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(dim, dim // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2)
        self.channels = [dim // 4, dim // 2, dim, dim]
        self.reductions = [patch // 4, patch // 2, patch, patch * 2]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.vit.forward_intermediates(
            x, indices=self.indices, output_fmt="NCHW", intermediates_only=True
        )
        f1, f2, f3, f4 = feats[-4:]
        return [self.up4(f1), self.up2(f2), f3, self.down2(f4)]


def _weights_error(name: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"Could not load pretrained weights for encoder {name!r}: {type(exc).__name__}: {exc}\n"
        "Hub weights need network access (and no HF_HUB_OFFLINE=1). On an offline machine download the "
        "weights elsewhere and pass `encoder_weights='path/to/weights.safetensors'` (a state dict or timm "
        "checkpoint, .pth/.bin/.safetensors), or use `pretrained=False`."
    )


class Encoder(nn.Module):
    """A timm backbone that returns a feature pyramid (finest first).

    Parameters
    ----------
    name
        Any timm model name. CNNs use ``features_only=True``; Vision Transformers (models with
        ``forward_intermediates`` and a patch embedding) get a :class:`ViTPyramid`.
    pretrained
        Load the hub's pretrained weights (needs network access).
    weights
        Path to a local weights file (state dict or timm checkpoint) to load instead of the hub's.
    out_indices
        Which CNN stages to return (default: all).

    """

    def __init__(
        self,
        name: str = "resnet18",
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        out_indices: Sequence[int] | None = None,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        import timm

        self.name = name
        kwargs: dict = dict(timm_kwargs)
        if weights is not None:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"Encoder weights file not found: {weights}.")
            kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(weights)}
            pretrained = True
        is_vit = "vit" in name.split("_")[0] or name.startswith(("vit", "deit", "eva", "uni"))
        try:
            if is_vit:
                kwargs.setdefault("dynamic_img_size", True)
                vit = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
                self.body: nn.Module = ViTPyramid(vit)
                self.channels = list(self.body.channels)
                self.reductions = list(self.body.reductions)
                self.is_vit = True
            else:
                if out_indices is not None:
                    kwargs["out_indices"] = tuple(out_indices)
                self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
                self.channels = list(self.body.feature_info.channels())
                self.reductions = list(self.body.feature_info.reduction())
                self.is_vit = False
        except Exception as exc:  # timm / huggingface_hub raise many error types for unreachable weights
            if pretrained:
                raise _weights_error(name, exc) from exc
            raise
        cfg = getattr(self.body, "pretrained_cfg", None) or getattr(
            getattr(self.body, "vit", None), "pretrained_cfg", {}
        )
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


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


class DecoderStage(nn.Module):
    """``D_l = DFFN(Dconv(D_{l-1}) + δ_l · P_l(F_l))``."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, expansion: int = 2) -> None:
        super().__init__()
        self.dconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
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


class PixNetModule(nn.Module):
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
    pretrained, encoder_weights
        Passed to :class:`Encoder`.

    """

    def __init__(
        self,
        n_genes: int,
        *,
        encoder: str | Encoder = "resnet18",
        decoder_channels: int | Sequence[int] = 512,
        expansion: int = 2,
        out_activation: str = "identity",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if n_genes < 1:
            raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
        if out_activation not in _ACTIVATIONS:
            raise ValueError(f"out_activation must be one of {sorted(_ACTIVATIONS)}, got {out_activation!r}.")
        self.encoder = (
            encoder
            if isinstance(encoder, Encoder)
            else Encoder(encoder, pretrained=pretrained, weights=encoder_weights)
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
            stages.append(DecoderStage(in_ch, chans[level], width, expansion))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(in_ch, n_genes, 1)
        self.activation = _ACTIVATIONS[out_activation]()
        self.n_genes = n_genes
        self.register_buffer("pixel_mean", torch.tensor(self.encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.encoder.std).view(1, 3, 1, 1), persistent=False)

    @property
    def stride(self) -> int:
        """Coarsest encoder reduction; inputs are padded to a multiple of it."""
        return int(max(self.encoder.reductions))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float RGB ``(B, 3, H, W)`` → the encoder's normalised input."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid ``F_1 … F_L`` of RGB images (finest first)."""
        return self.encoder(self.normalize(images))

    def decode(self, feats: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """Decode a feature pyramid into ``(B, n_genes, *out_size)``."""
        d = self.bottom(feats[-1])
        for stage, skip in zip(self.stages, reversed(feats[:-1]), strict=True):
            d = stage(d, skip)
        g = self.head(d)
        g = F.interpolate(g, size=out_size, mode="bilinear", align_corners=False)
        return self.activation(g)

    def forward(self, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense map ``(B, n_genes, H, W)`` for RGB images ``(B, 3, H, W)`` (default: the input grid)."""
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        x = self.normalize(images)  # before padding: normalize() needs to see the uint8 dtype
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        feats = self.encoder(x)
        g = self.decode(feats, (h + ph, w + pw))[..., :h, :w]
        if out_size is not None and tuple(out_size) != (h, w):
            g = F.interpolate(g, size=out_size, mode="bilinear", align_corners=False)
        return g
