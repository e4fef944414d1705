"""The linear probe as a dense network: frozen encoder pyramid, upsampled, one linear map."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._aggregate import aggregate_map
from ._encoder import Encoder, as_encoder
from ._loss import OwnsLoss

__all__ = ["LinearProbeModule"]


class LinearProbeModule(OwnsLoss, nn.Module):
    """Frozen encoder pyramid → every level bilinearly upsampled to the pixel grid → one linear map.

    ``forward`` gives the dense map ``Σ_l up(W_l F_l) + b``; because upsampling and the linear map are
    both linear, its mean over a footprint equals the linear map of the footprint's mean-pooled
    features, which is what the ridge regression is fitted on (:meth:`pooled`).

    Parameters
    ----------
    n_genes
        Number of outputs.
    encoder
        timm model name or an :class:`Encoder`.
    levels
        Encoder levels used as features (default: all).
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
        levels: Sequence[int] | None = None,
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = as_encoder(
            encoder, pretrained=pretrained, weights=encoder_weights, encoder_kwargs=encoder_kwargs
        )
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        n_levels = len(self.encoder.channels)
        self.levels = list(range(n_levels)) if levels is None else [int(i) for i in levels]
        if not self.levels or any(i < 0 or i >= n_levels for i in self.levels):
            raise ValueError(f"levels must index the encoder's {n_levels} feature levels, got {self.levels}.")
        self.n_features = int(sum(self.encoder.channels[i] for i in self.levels))
        self.n_genes = n_genes
        self.register_buffer("weight", torch.zeros(n_genes, self.n_features))
        self.register_buffer("bias", torch.zeros(n_genes))

    @property
    def stride(self) -> int:
        """Coarsest encoder reduction; inputs are padded to a multiple of it."""
        return self.encoder.stride

    def _levels(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        feats, size = self.encoder.pyramid(images)
        return [feats[i] for i in self.levels], size

    @torch.no_grad()
    def pooled(self, images: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """Mean-pooled pixel features ``(n, n_features)`` of footprints ``A`` ``(n, B*H*W)`` (mean rows)."""
        h, w = images.shape[-2:]
        feats, size = self._levels(images)
        out = []
        for f in feats:
            up = F.interpolate(f, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
            out.append(aggregate_map(up.contiguous(), A))
        return torch.cat(out, dim=1)

    def forward(self, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense map ``(B, n_genes, H, W)`` for RGB images ``(B, 3, H, W)``."""
        h, w = images.shape[-2:]
        feats, size = self._levels(images)
        g, c0 = None, 0
        for f in feats:
            wl = self.weight[:, c0 : c0 + f.shape[1]]
            c0 += f.shape[1]
            part = F.interpolate(
                torch.einsum("bchw,mc->bmhw", f, wl), size=size, mode="bilinear", align_corners=False
            )
            g = part if g is None else g + part
        g = (g + self.bias.view(1, -1, 1, 1))[..., :h, :w]
        if out_size is not None and tuple(out_size) != (h, w):
            g = F.interpolate(g, size=out_size, mode="bilinear", align_corners=False)
        return g
