"""Augmentations shared by the training plans: 90° rotations and flips, light H&E colour jitter."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["augment_array", "augment_features", "augment_index", "colour_jitter"]


def augment_index(t: int, k: int, flip: bool) -> np.ndarray:
    """Where each pixel of a ``t × t`` tile goes under :func:`augment_array` (row-major indices)."""
    idx = np.arange(t * t).reshape(t, t)
    if flip:
        idx = idx[:, ::-1]
    return np.rot90(idx, k).ravel()


def augment_array(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Flip left-right (optionally), then rotate by ``k`` × 90° (``np.rot90``)."""
    if flip:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, k))


def augment_features(feats: list[torch.Tensor], k: int, flip: bool) -> list[torch.Tensor]:
    """Apply the tile's flip / rotation to cached feature maps (same convention as the image)."""
    out = []
    for f in feats:
        if flip:
            f = torch.flip(f, dims=(-1,))
        out.append(torch.rot90(f, k, dims=(-2, -1)))
    return out


def colour_jitter(images: torch.Tensor, gen: torch.Generator, strength: float = 0.05) -> torch.Tensor:
    """Light H&E colour augmentation: per-tile, per-channel gain and a brightness shift (uint8 in, uint8 out)."""
    b = images.shape[0]
    gain = 1 + strength * torch.randn(b, 3, 1, 1, generator=gen)
    shift = 255 * strength * 0.5 * torch.randn(b, 1, 1, 1, generator=gen)
    return (images.float() * gain + shift).clamp(0, 255).round().to(torch.uint8)
