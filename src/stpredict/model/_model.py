"""The user-facing PixNet class: train, predict, save, load."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._logging import logger
from ._aggregate import Footprints, footprint_matrix
from ._base import BaseModel
from ._data import default_image_key, load_section, resample_image, table_footprints
from ._module import PixNetModule
from ._train import TileSampler, resolve_device, train_loop

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["PRESETS", "DenseModel", "PixNet"]

#: Architecture/training presets. ``"paper"``: PixNet's published settings (512-wide decoder);
#: ``"cpu"``: a light decoder, coarser pixels and smaller tiles that train in minutes on a laptop.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"decoder_channels": 512, "train_mpp": 1.0, "tile_size": 384, "batch_size": 8},
    "cpu": {"decoder_channels": 64, "train_mpp": 2.0, "tile_size": 192, "batch_size": 4},
}


def _window(n: int, ramp: float) -> np.ndarray:
    i = np.arange(n) + 0.5
    return np.clip(np.minimum(i, n - i) / max(ramp, 1e-6), 1e-3, 1.0)


class DenseModel(BaseModel):
    """Tiled inference shared by the dense models (:class:`PixNet`, :class:`LinearProbe`).

    Needs ``module(images) → (B, n_genes, H, W)`` and ``config["tile_size"]``.
    """

    dense = True

    def _tiles(self, h: int, w: int, tile: int, overlap: float):
        step = max(1, round(tile * (1 - overlap)))

        def starts(n):
            if n <= tile:
                return [0]
            s = list(range(0, n - tile, step))
            return [*s, n - tile]

        return [(y, x) for y in starts(h) for x in starts(w)], min(tile, h), min(tile, w)

    @torch.no_grad()
    def _tile_maps(
        self, image: np.ndarray, *, tile: int | None, overlap: float, batch_size: int, device: str | None
    ):
        """Yield ``(y0, x0, weighted map (M, th, tw))`` with blending weights already normalised."""
        from .._settings import settings

        self._check_trained()
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (y, x, 3) uint8 RGB, got {image.shape} {image.dtype}.")
        dev = resolve_device(device or settings.device)
        net = self.module.to(dev).eval()
        h, w = image.shape[:2]
        tile = int(tile or max(self.config["tile_size"], 256))
        origins, th, tw = self._tiles(h, w, tile, overlap)
        ramp = tile * overlap / 2 if len(origins) > 1 else 0
        win = np.outer(_window(th, ramp), _window(tw, ramp)).astype(np.float32)
        total = np.zeros((h, w), np.float32)
        for y0, x0 in origins:
            total[y0 : y0 + th, x0 : x0 + tw] += win
        for i in range(0, len(origins), batch_size):
            chunk = origins[i : i + batch_size]
            x = torch.from_numpy(np.stack([image[y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk]))
            G = net(x.permute(0, 3, 1, 2).contiguous().to(dev)).float().cpu().numpy()
            for (y0, x0), g in zip(chunk, G, strict=True):
                yield y0, x0, g * (win / total[y0 : y0 + th, x0 : x0 + tw])[None]
        self.module.cpu()

    def predict(
        self,
        image: np.ndarray,
        *,
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        device: str | None = None,
    ) -> np.ndarray:
        """Dense map ``(n_genes, y, x)`` float32 of an RGB ``(y, x, 3)`` uint8 image at ``train_mpp``.

        Sliding-window inference with ``overlap`` and linear blending of overlapping tiles.
        """
        h, w = image.shape[:2]
        out = np.zeros((len(self.genes), h, w), np.float32)
        for y0, x0, g in self._tile_maps(
            image, tile=tile, overlap=overlap, batch_size=batch_size, device=device
        ):
            out[:, y0 : y0 + g.shape[1], x0 : x0 + g.shape[2]] += g
        return out

    def _predict_fp(
        self,
        sdata: SpatialData,
        fp: Footprints,
        *,
        image_key: str,
        how: str,
        coverage: str,
        tile: int | None,
        overlap: float,
        batch_size: int,
        device: str | None,
    ) -> np.ndarray:
        """Predictions ``(len(fp), n_genes)`` for full-resolution footprints; NaN where off the image."""
        if how not in ("mean", "sum"):
            raise ValueError(f"how must be 'mean' or 'sum', got {how!r}.")
        image, (sx, sy) = resample_image(sdata, image_key, self.train_mpp)
        fp = fp.affine(np.diag([1 / sx, 1 / sy, 1.0]))
        h, w = image.shape[:2]
        A, kept = footprint_matrix(fp, (h, w), how="sum", coverage=coverage, require_inside=False)
        A = A.tocsc()
        acc = np.zeros((A.shape[0], len(self.genes)), np.float64)
        for y0, x0, g in self._tile_maps(
            image, tile=tile, overlap=overlap, batch_size=batch_size, device=device
        ):
            th, tw = g.shape[1:]
            cols = ((np.arange(y0, y0 + th)[:, None] * w) + np.arange(x0, x0 + tw)[None, :]).ravel()
            sub = A[:, cols]
            if sub.nnz:
                acc += sub @ g.reshape(len(self.genes), -1).T
        totals = np.asarray(A.sum(1)).ravel()
        if how == "mean":
            acc /= np.maximum(totals, 1e-12)[:, None]
        acc[totals == 0] = np.nan  # footprint entirely off the image
        out = np.full((len(fp), len(self.genes)), np.nan, np.float32)
        out[kept] = acc
        return out

    def predict_footprints(
        self,
        sdata: SpatialData,
        *,
        table: str,
        image_key: str | None = None,
        how: str = "mean",
        coverage: str = "center",
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        device: str | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_obs, n_genes)`` for the footprints of a table, in table row order.

        The dense map is computed tile by tile at ``train_mpp`` and aggregated on the fly, so memory
        depends on the tile size, not the slide size. Rows without a shape are NaN.
        """
        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        fp, rows = table_footprints(sdata, table, image_key)
        pred = self._predict_fp(
            sdata,
            fp,
            image_key=image_key,
            how=how,
            coverage=coverage,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
        )
        out = np.full((sdata.tables[table].n_obs, len(self.genes)), np.nan, np.float32)
        out[rows] = pred
        return out

    def predict_shapes(
        self,
        sdata: SpatialData,
        shapes: str,
        *,
        image_key: str | None = None,
        how: str = "mean",
        coverage: str = "center",
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        device: str | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_shapes, n_genes)`` for every shape of a shapes element, in its order.

        The dense map aggregated over each footprint (as :meth:`predict_footprints`); NaN for shapes
        off the image.
        """
        from .._geometry import shapes_footprints

        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        return self._predict_fp(
            sdata,
            shapes_footprints(sdata, shapes, image_key),
            image_key=image_key,
            how=how,
            coverage=coverage,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
        )


class PixNet(DenseModel):
    """PixNet (Zhang, Yang & Pan, 2025): dense gene-expression maps from H&E.

    Parameters
    ----------
    genes
        Output genes. Default: chosen at training time (top ``n_top_genes`` by mean on the training
        tables only).
    encoder
        timm model name (``"resnet18"``, the paper's choice; ViTs such as ``"vit_base_patch16_224"``
        get a simple feature pyramid).
    pretrained
        Load the hub's pretrained encoder weights (needs network access).
    encoder_weights
        Local encoder weights file (state dict or timm checkpoint) for offline machines.
    decoder_channels
        Decoder width, one int (paper: 512) or one per decoder stage, coarsest first.
    expansion
        DFFN expansion factor.
    out_activation
        ``"identity"`` for log-normalised targets (default), ``"softplus"``/``"relu"`` for non-negative ones.
    freeze_encoder
        Keep encoder weights fixed and cache encoder features of tiles during training.
    train_mpp
        Pixel size (µm) the model sees: images are resampled to it for training and prediction.
    tile_size
        Training tile side in pixels at ``train_mpp`` (``tile_size * train_mpp`` µm); footprints must
        fit inside a tile to be used.
    target_sum
        Normalisation target: counts / footprint total × ``target_sum``, then log1p.

    """

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        decoder_channels: int | Sequence[int] = 512,
        expansion: int = 2,
        out_activation: str = "identity",
        freeze_encoder: bool = False,
        train_mpp: float = 1.0,
        tile_size: int = 384,
        target_sum: float = 1e4,
    ) -> None:
        if train_mpp <= 0:
            raise ValueError(f"train_mpp must be positive (µm per pixel), got {train_mpp}.")
        self.config: dict[str, Any] = {
            "encoder": encoder,
            "pretrained": bool(pretrained),
            "encoder_weights": os.fspath(encoder_weights) if encoder_weights is not None else None,
            "decoder_channels": decoder_channels
            if isinstance(decoder_channels, int)
            else list(decoder_channels),
            "expansion": int(expansion),
            "out_activation": out_activation,
            "freeze_encoder": bool(freeze_encoder),
            "train_mpp": float(train_mpp),
            "tile_size": int(tile_size),
        }
        self._init_common(genes, target_sum)
        self.feature_cache_stats: dict[str, int] = {}
        if self.recipe is not None:
            self._build()

    _FORMAT = "stpredict-pixnet"
    key = "pixnet"
    dense = True

    @property
    def freeze_encoder(self) -> bool:
        return bool(self.config["freeze_encoder"])

    def _build(self, *, load_weights: bool = True) -> None:
        c = self.config
        self.module = PixNetModule(
            len(self.recipe.genes),
            encoder=c["encoder"],
            decoder_channels=c["decoder_channels"],
            expansion=c["expansion"],
            out_activation=c["out_activation"],
            pretrained=c["pretrained"] and load_weights,
            encoder_weights=c["encoder_weights"] if load_weights else None,
        )
        if self.freeze_encoder:
            for p in self.module.encoder.parameters():
                p.requires_grad_(False)

    def __repr__(self) -> str:
        state = f"{len(self.history)} epochs trained" if self.history else "untrained"
        return (
            f"PixNet(encoder={self.config['encoder']!r}, genes={len(self.genes)}, "
            f"train_mpp={self.train_mpp}, {state})"
        )

    # ------------------------------------------------------------------ training
    def train(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        *,
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None = None,
        validation: int | str | Sequence[int] | None = None,
        n_top_genes: int = 250,
        max_epochs: int = 10,
        steps_per_epoch: int = 50,
        batch_size: int = 4,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        lam: float = 0.5,
        patience: int | None = 3,
        augment: bool = True,
        max_footprints_per_tile: int = 512,
        coverage: str = "center",
        feature_cache_size: int = 2048,
        tiles: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> PixNet:
        """Train on one or several sections with sparse supervision at measured footprints.

        Parameters
        ----------
        sdata
            One SpatialData object per section.
        tables
            Supervision tables (counts linked to shapes) of any footprint size, e.g.
            ``"spots"`` or ``["square_002um", "square_008um", "square_016um"]``; all are used at once.
        image_key
            The H&E image per section (one name for all, or one per section). Default: the largest RGB image (the full-resolution scan).
        validation
            Section(s) held out for validation and early stopping (index or ``dataset`` position).
        n_top_genes
            Genes to predict when the model has none yet: top by mean expression share on the training
            tables only.
        max_epochs, steps_per_epoch, batch_size
            Training length: ``max_epochs × steps_per_epoch`` optimiser steps of ``batch_size`` tiles.
        lr, weight_decay, lam
            Adam learning rate and weight decay, PCC-loss weight λ (paper: 5e-4, 1e-4, 0.5).
        patience
            Early stopping patience in epochs on the validation loss (needs ``validation``).
        augment
            Random 90° rotations/flips of tiles and footprints, plus light colour jitter when the
            encoder is trained.
        max_footprints_per_tile
            Random subset cap per table and tile (bounds the step cost with 2 µm bins).
        coverage
            Footprint membership: ``"center"`` (pixel centre inside) or ``"fraction"``.
        feature_cache_size
            Tiles whose encoder features are cached when ``freeze_encoder=True``.
        tiles
            A shapes element (the same name in every section) of selected tiles, e.g. from
            :func:`stpredict.pp.select_tiles`: only footprints centred in a selected tile are used,
            so training skips background and uninformative tiles (ISG's Shannon selection).
        seed
            Random seed (tile sampling, augmentation, initialisation); deterministic on CPU.
        device
            ``"auto"``/``"cpu"``/``"cuda"``/``"mps"``; default :attr:`stpredict.settings.device`.
        progress
            Show a progress bar; default :attr:`stpredict.settings.progress_bar`.

        Returns
        -------
        ``self``, trained; per-epoch metrics are appended to :attr:`history`.

        """
        from .._settings import settings

        seed = settings.seed if seed is None else int(seed)
        torch.manual_seed(seed)
        sdatas, tables, keys, train_idx, val_idx = self._prepare(
            sdata, tables, image_key, validation, n_top_genes
        )
        dev = resolve_device(device or settings.device)
        progress = settings.progress_bar if progress is None else progress
        T, mpp = self.config["tile_size"], self.train_mpp
        sections = [
            load_section(
                sdatas[i],
                image_key=keys[i],
                tables=tables,
                recipe=self.recipe,
                train_mpp=mpp,
                name=f"section{i}",
                tiles=tiles,
            )
            for i in range(len(sdatas))
        ]
        sampler = TileSampler(
            [sections[i] for i in train_idx],
            tile_size=T,
            augment=augment,
            snap=self.freeze_encoder,
            max_footprints=max_footprints_per_tile,
            coverage=coverage,
            seed=seed,
        )
        val_batches = None
        if val_idx:
            vs = TileSampler(
                [sections[i] for i in val_idx], tile_size=T, augment=False, coverage=coverage, seed=seed
            )
            val_batches = vs.fixed_batches(batch_size)
        n_fp = sum(sections[i].n_footprints for i in train_idx)
        if not self.history:
            self._init_head_bias(np.vstack([y for i in train_idx for y in sections[i].targets]))
        logger.info(
            f"Training PixNet on {len(train_idx)} section(s), {n_fp} footprints, {len(self.genes)} genes, "
            f"{T} px tiles at {mpp} µm/px, device {dev}."
        )
        params = {
            "tables": tables,
            "n_sections": len(sdatas),
            "validation": val_idx,
            "max_epochs": max_epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "lam": lam,
            "patience": patience,
            "augment": augment,
            "coverage": coverage,
            "tiles": tiles,
            "seed": seed,
        }
        self.training_params = params
        train_loop(
            self,
            sampler,
            val_batches,
            device=dev,
            max_epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            lam=lam,
            patience=patience if val_batches else None,
            colour_augment=augment and not self.freeze_encoder,
            progress=progress,
            feature_cache_size=feature_cache_size,
            seed=seed,
            optimizer_state=self.optimizer_state,
        )
        self.module.cpu()
        return self

    @torch.no_grad()
    def _init_head_bias(self, targets: np.ndarray) -> None:
        """Start the 1×1 head at the mean training target, so training begins at the mean predictor."""
        mean = torch.from_numpy(targets.mean(0).astype(np.float32))
        act = self.config["out_activation"]
        if act == "softplus":
            mean = torch.where(mean > 20, mean, torch.log(torch.expm1(mean.clamp_min(1e-4))))
        self.module.head.bias.copy_(mean)

    @classmethod
    def _from_config(cls, genes: list[str], arch: dict, target_sum: float) -> PixNet:
        return cls(
            genes,
            encoder=arch["encoder"],
            pretrained=False,
            encoder_weights=None,
            decoder_channels=arch["decoder_channels"],
            expansion=arch["expansion"],
            out_activation=arch["out_activation"],
            freeze_encoder=arch["freeze_encoder"],
            train_mpp=arch["train_mpp"],
            tile_size=arch["tile_size"],
            target_sum=target_sum,
        )
