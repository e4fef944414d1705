"""The spot-level baseline network: one crop in, one expression vector out."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._encoder import Encoder, as_encoder
from ._loss import OwnsLoss

__all__ = ["SpotRegressorModule"]


class SpotRegressorModule(OwnsLoss, nn.Module):
    """Crop → timm encoder → global average pool of the coarsest features → MLP → genes.

    Parameters
    ----------
    n_genes
        Number of outputs.
    encoder
        timm model name or an :class:`Encoder`.
    hidden, dropout
        MLP hidden width and dropout.
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
        hidden: int = 256,
        dropout: float = 0.1,
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = as_encoder(
            encoder, pretrained=pretrained, weights=encoder_weights, encoder_kwargs=encoder_kwargs
        )
        c = self.encoder.channels[-1]
        self.head = nn.Sequential(
            nn.Linear(c, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_genes)
        )
        self.n_genes = n_genes

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """``(B, n_genes)`` for RGB crops ``(B, 3, S, S)`` (uint8 or [0, 1] float)."""
        f = self.encoder(self.encoder.normalize(crops))[-1]
        return self.head(f.mean(dim=(-2, -1)))

    @torch.no_grad()
    def init_output(self, mean: np.ndarray) -> None:
        """Start the output layer at ``mean`` (per gene), so training begins at the mean predictor."""
        self.head[-1].bias.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
