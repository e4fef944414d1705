"""A timm backbone as a feature pyramid, with its input normalisation and stride padding."""

from __future__ import annotations

import os
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Encoder", "ViTPyramid", "as_encoder"]


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
    **timm_kwargs
        Passed to :func:`timm.create_model`.

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
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    @property
    def stride(self) -> int:
        """Coarsest reduction of the pyramid; :meth:`pyramid` pads inputs to a multiple of it."""
        return int(max(self.reductions))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float RGB ``(B, 3, H, W)`` → the encoder's normalised input."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid of *normalised* images (see :meth:`normalize`), finest first."""
        return list(self.body(x))

    def pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Features of RGB images of any size: normalised, reflect-padded to the stride, encoded.

        Returns
        -------
        ``(features, (H, W))``: the pyramid (finest first) and the padded input size.

        """
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        x = self.normalize(images)  # before padding: normalize() needs to see the uint8 dtype
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        return self(x), (h + ph, w + pw)


def as_encoder(
    encoder: str | Encoder, *, pretrained: bool = False, weights: str | os.PathLike | None = None
) -> Encoder:
    """``encoder`` itself when it is an :class:`Encoder`, else the timm model of that name."""
    return (
        encoder if isinstance(encoder, Encoder) else Encoder(encoder, pretrained=pretrained, weights=weights)
    )
