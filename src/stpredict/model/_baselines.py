"""Baselines on the same data layer and encoders as PixNet: a spot-level crop regressor and a linear probe."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._logging import logger
from .._utils import coarsest_level, pyramid_levels
from ..pp._mpp import get_mpp
from ._aggregate import Footprints, aggregate_map, to_torch_sparse
from ._base import BaseModel, footprint_diameters
from ._data import default_image_key, in_tiles, load_section, normalize_counts, table_footprints
from ._model import DenseModel
from ._module import Encoder
from ._train import TileSampler, batch_pcc, colour_jitter, fit_epochs, pixnet_loss, resolve_device

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["LinearProbe", "LinearProbeModule", "SpotRegressor", "SpotRegressorModule"]


def _normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return (x - mean) / std


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (n, y, x, 3) uint8 RGB, got {images.shape} {images.dtype}.")


# ---------------------------------------------------------------------------------------------------------------
# SpotRegressor
# ---------------------------------------------------------------------------------------------------------------
class SpotRegressorModule(nn.Module):
    """Crop → timm encoder → global average pool of the coarsest features → MLP → genes."""

    def __init__(
        self,
        n_genes: int,
        *,
        encoder: str = "resnet18",
        hidden: int = 256,
        dropout: float = 0.1,
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(encoder, pretrained=pretrained, weights=encoder_weights)
        c = self.encoder.channels[-1]
        self.head = nn.Sequential(
            nn.Linear(c, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_genes)
        )
        self.n_genes = n_genes
        self.register_buffer("pixel_mean", torch.tensor(self.encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.encoder.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """``(B, n_genes)`` for RGB crops ``(B, 3, S, S)`` (uint8 or [0, 1] float)."""
        f = self.encoder(_normalize(crops, self.pixel_mean, self.pixel_std))[-1]
        return self.head(f.mean(dim=(-2, -1)))


class Cropper:
    """Square windows of an H&E around points, resampled to ``size × size`` pixels.

    Reads the coarsest pyramid level that is at least as fine as the output; outside the image is
    white (slide background). Keeps the levels it used in memory.
    """

    def __init__(self, sdata: SpatialData, image_key: str) -> None:
        self.levels = pyramid_levels(sdata.images[image_key])
        self._arrays: dict[float, np.ndarray] = {}

    def _level(self, factor: float) -> tuple[np.ndarray, float]:
        arr, f = coarsest_level(self.levels, factor)
        if f not in self._arrays:
            self._arrays[f] = np.ascontiguousarray(np.moveaxis(np.asarray(arr), 0, -1))
        return self._arrays[f], f

    def crop(self, cx: float, cy: float, window: float, size: int) -> np.ndarray:
        """The ``window × window`` full-resolution pixels centred on ``(cx, cy)`` as ``(size, size, 3)`` uint8."""
        from PIL import Image

        arr, f = self._level(window / size)
        x0, y0 = (cx - window / 2) / f, (cy - window / 2) / f
        x1, y1 = x0 + window / f, y0 + window / f
        ix0, iy0, ix1, iy1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
        ix1, iy1 = max(ix1, ix0 + 1), max(iy1, iy0 + 1)
        H, W = arr.shape[:2]
        win = np.full((iy1 - iy0, ix1 - ix0, 3), 255, np.uint8)
        sy0, sy1, sx0, sx1 = max(iy0, 0), min(iy1, H), max(ix0, 0), min(ix1, W)
        if sy1 > sy0 and sx1 > sx0:
            win[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = arr[sy0:sy1, sx0:sx1]
        box = (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)
        return np.asarray(Image.fromarray(win).resize((size, size), Image.Resampling.BILINEAR, box=box))


class SpotRegressor(BaseModel):
    """ST-Net-style spot-level baseline: one crop per footprint, one expression vector per crop.

    Each footprint is cropped as a square window of ``crop_factor`` × its diameter (µm) centred on
    it, resampled to ``input_size`` pixels, encoded by the same timm encoder as PixNet, pooled and
    mapped to genes by an MLP, and trained with PixNet's loss (MSE + λ·(1 − PCC)). Predicting other
    footprint sizes crops at *that* size (e.g. 12 µm windows for 8 µm bins, resampled to
    ``input_size``), as spot-level methods do; so the model sees a magnification it was not trained on.

    Parameters
    ----------
    genes
        Output genes (default: top ``n_top_genes`` by mean on the training tables).
    encoder, pretrained, encoder_weights
        As :class:`PixNet`: a timm model name, hub weights, or a local weights file.
    crop_factor
        Window side as a multiple of the footprint diameter (side of square bins).
    train_mpp
        Pixel size (µm) of the crops of the training footprints: ``input_size`` is set at the first
        training to ``crop_factor`` × median training diameter / ``train_mpp``.
    input_size
        Crop side in pixels (default: from ``train_mpp`` as above).
    hidden, dropout
        MLP hidden width and dropout.
    target_sum
        Normalisation target (counts / total × ``target_sum``, then log1p).

    """

    _FORMAT = "stpredict-spot-regressor"
    key = "spot_regressor"
    dense = False
    #: Presets used by :func:`stpredict.tl.train` (``model="spot_regressor"``).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"train_mpp": 1.0, "batch_size": 32},
        "cpu": {"train_mpp": 2.0, "batch_size": 32},
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        crop_factor: float = 1.5,
        train_mpp: float = 1.0,
        input_size: int | None = None,
        hidden: int = 256,
        dropout: float = 0.1,
        target_sum: float = 1e4,
    ) -> None:
        if train_mpp <= 0:
            raise ValueError(f"train_mpp must be positive (µm per pixel), got {train_mpp}.")
        if crop_factor <= 0:
            raise ValueError(f"crop_factor must be positive, got {crop_factor}.")
        self.config: dict[str, Any] = {
            "encoder": encoder,
            "pretrained": bool(pretrained),
            "encoder_weights": os.fspath(encoder_weights) if encoder_weights is not None else None,
            "crop_factor": float(crop_factor),
            "train_mpp": float(train_mpp),
            "input_size": None if input_size is None else int(input_size),
            "hidden": int(hidden),
            "dropout": float(dropout),
        }
        self._init_common(genes, target_sum)
        if self.recipe is not None:
            self._build()

    def __repr__(self) -> str:
        state = f"{len(self.history)} epochs trained" if self.history else "untrained"
        return (
            f"SpotRegressor(encoder={self.config['encoder']!r}, genes={len(self.genes)}, "
            f"crop_factor={self.config['crop_factor']}, input_size={self.config['input_size']}, {state})"
        )

    def _build(self, *, load_weights: bool = True) -> None:
        c = self.config
        self.module = SpotRegressorModule(
            len(self.recipe.genes),
            encoder=c["encoder"],
            hidden=c["hidden"],
            dropout=c["dropout"],
            pretrained=c["pretrained"] and load_weights,
            encoder_weights=c["encoder_weights"] if load_weights else None,
        )

    @classmethod
    def _from_config(cls, genes: list[str], arch: dict, target_sum: float) -> SpotRegressor:
        return cls(
            genes,
            encoder=arch["encoder"],
            crop_factor=arch["crop_factor"],
            train_mpp=arch["train_mpp"],
            input_size=arch["input_size"],
            hidden=arch["hidden"],
            dropout=arch["dropout"],
            target_sum=target_sum,
        )

    # ------------------------------------------------------------------ data
    def _footprint_set(
        self, sdata: SpatialData, image_key: str, tables: Sequence[str], tiles: str | None = None
    ) -> dict:
        cen, win, ys = [], [], []
        for t in tables:
            fp, rows = table_footprints(sdata, t, image_key)
            if tiles is not None:
                keep = np.nonzero(in_tiles(sdata, tiles, image_key, fp))[0]
                fp, rows = fp.subset(keep), rows[keep]
            cen.append(fp.centres)
            win.append(self.config["crop_factor"] * footprint_diameters(fp))
            ys.append(normalize_counts(sdata.tables[t], self.recipe)[rows])
        return {
            "cropper": Cropper(sdata, image_key),
            "centres": np.vstack(cen),
            "windows": np.concatenate(win),
            "targets": np.vstack(ys),
            "mpp": get_mpp(sdata, image_key),
        }

    def _crops(
        self, s: dict, idx: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.1
    ) -> np.ndarray:
        S = self.config["input_size"]
        out = np.empty((len(idx), S, S, 3), np.uint8)
        for k, i in enumerate(idx):
            (cx, cy), w = s["centres"][i], s["windows"][i]
            if rng is not None:
                cx, cy = cx + rng.uniform(-jitter, jitter) * w, cy + rng.uniform(-jitter, jitter) * w
            c = s["cropper"].crop(cx, cy, w, S)
            if rng is not None:
                if rng.integers(2):
                    c = c[:, ::-1]
                c = np.rot90(c, int(rng.integers(4)))
            out[k] = c
        return out

    # ------------------------------------------------------------------ training
    def train(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        *,
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None = None,
        validation: int | Sequence[int] | None = None,
        n_top_genes: int = 250,
        max_epochs: int = 10,
        steps_per_epoch: int = 50,
        batch_size: int = 32,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        lam: float = 0.5,
        patience: int | None = 3,
        augment: bool = True,
        tiles: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> SpotRegressor:
        """Train on the footprints of one or several sections (same loss and optimiser as PixNet).

        Parameters
        ----------
        sdata, tables, image_key, validation, n_top_genes
            As :meth:`PixNet.train`.
        max_epochs, steps_per_epoch, batch_size
            ``max_epochs × steps_per_epoch`` optimiser steps of ``batch_size`` crops.
        lr, weight_decay, lam
            Adam learning rate and weight decay, PCC-loss weight λ.
        patience
            Early stopping patience in epochs on the validation loss (needs ``validation``).
        augment
            Random shifts (±10% of the window), 90° rotations, flips and colour jitter of crops.
        tiles
            Use only footprints centred in these selected tiles (as :meth:`PixNet.train`).
        seed, device, progress
            As :meth:`PixNet.train`.

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
        sets = {
            i: self._footprint_set(sdatas[i], keys[i], tables, tiles if i in train_idx else None)
            for i in range(len(sdatas))
        }
        empty = [i for i in train_idx if len(sets[i]["targets"]) == 0]
        if empty:
            raise ValueError(
                f"Training section(s) {empty} have no footprint{' in the tiles' if tiles else ''}."
            )
        if self.config["input_size"] is None:
            um = np.concatenate([sets[i]["windows"] * sets[i]["mpp"] for i in train_idx])
            self.config["input_size"] = max(32, round(float(np.median(um)) / self.train_mpp))
            logger.info(
                f"SpotRegressor crops: {np.median(um):.0f} µm windows at {self.train_mpp} µm/px → "
                f"{self.config['input_size']} px."
            )
        dev = resolve_device(device or settings.device)
        progress = settings.progress_bar if progress is None else progress
        pool = np.concatenate(
            [
                np.c_[np.full(len(sets[i]["targets"]), i), np.arange(len(sets[i]["targets"]))]
                for i in train_idx
            ]
        )
        if not self.history:
            mean = np.vstack([sets[i]["targets"] for i in train_idx]).mean(0)
            with torch.no_grad():
                self.module.head[-1].bias.copy_(torch.from_numpy(mean.astype(np.float32)))
        logger.info(
            f"Training SpotRegressor on {len(train_idx)} section(s), {len(pool)} footprints, {len(self.genes)} genes, "
            f"{self.config['input_size']} px crops, device {dev}."
        )
        self.training_params = {
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
            "tiles": tiles,
            "seed": seed,
        }
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        net = self.module.to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        if self.optimizer_state is not None:
            opt.load_state_dict(self.optimizer_state)

        def step() -> tuple[float, float]:
            pick = pool[rng.integers(len(pool), size=batch_size)]
            crops, ys = [], []
            for i in np.unique(pick[:, 0]):
                idx = pick[pick[:, 0] == i, 1]
                crops.append(self._crops(sets[i], idx, rng if augment else None))
                ys.append(sets[i]["targets"][idx])
            x = torch.from_numpy(np.concatenate(crops)).permute(0, 3, 1, 2).contiguous()
            if augment:
                x = colour_jitter(x, gen)
            loss, parts = pixnet_loss(net(x.to(dev)), torch.from_numpy(np.vstack(ys)).to(dev), lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach()), parts["pcc"]

        def validate() -> dict:
            P = np.vstack([self._predict_set(sets[i], dev) for i in val_idx])
            Y = np.vstack([sets[i]["targets"] for i in val_idx])
            vl, vp = pixnet_loss(torch.from_numpy(P), torch.from_numpy(Y), lam)
            return {"val_loss": float(vl), "val_mse": vp["mse"], "val_pcc": vp["pcc"]}

        fit_epochs(
            self,
            net,
            opt,
            step,
            validate if val_idx else None,
            max_epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            patience=patience,
            progress=progress,
        )
        self.module.cpu()
        return self

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def _predict_set(self, s: dict, dev, batch_size: int = 64) -> np.ndarray:
        net = self.module.to(dev).eval()
        out = np.empty((len(s["centres"]), len(self.genes)), np.float32)
        for i in range(0, len(out), batch_size):
            idx = np.arange(i, min(i + batch_size, len(out)))
            x = torch.from_numpy(self._crops(s, idx)).permute(0, 3, 1, 2).contiguous()
            out[idx] = net(x.to(dev)).float().cpu().numpy()
        return out

    @torch.no_grad()
    def predict(self, images: np.ndarray, *, batch_size: int = 64, device: str | None = None) -> np.ndarray:
        """Expression ``(n, n_genes)`` of RGB crops ``(n, y, x, 3)`` uint8 (resampled to ``input_size``)."""
        from PIL import Image

        from .._settings import settings

        self._check_trained()
        _check_images(images)
        S = self.config["input_size"]
        if images.shape[1:3] != (S, S):
            images = np.stack(
                [np.asarray(Image.fromarray(im).resize((S, S), Image.Resampling.BILINEAR)) for im in images]
            )
        dev = resolve_device(device or settings.device)
        net = self.module.to(dev).eval()
        out = [
            net(torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2).contiguous().to(dev))
            .float()
            .cpu()
            for i in range(0, len(images), batch_size)
        ]
        self.module.cpu()
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.genes)), np.float32)

    def _predict_fp(
        self, sdata: SpatialData, fp: Footprints, image_key: str, batch_size: int, device
    ) -> np.ndarray:
        from .._settings import settings

        s = {
            "cropper": Cropper(sdata, image_key),
            "centres": fp.centres,
            "windows": self.config["crop_factor"] * footprint_diameters(fp),
        }
        out = self._predict_set(s, resolve_device(device or settings.device), batch_size)
        self.module.cpu()
        return out

    def predict_footprints(
        self,
        sdata: SpatialData,
        *,
        table: str,
        image_key: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_obs, n_genes)`` for the footprints of a table, in table row order."""
        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        fp, rows = table_footprints(sdata, table, image_key)
        out = np.full((sdata.tables[table].n_obs, len(self.genes)), np.nan, np.float32)
        out[rows] = self._predict_fp(sdata, fp, image_key, batch_size, device)
        return out

    def predict_shapes(
        self,
        sdata: SpatialData,
        shapes: str,
        *,
        image_key: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_shapes, n_genes)`` for every shape of a shapes element, in its order.

        One crop per shape: a window of ``crop_factor`` × the shape's diameter, resampled to ``input_size``.
        """
        from .._geometry import shapes_footprints

        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        return self._predict_fp(
            sdata, shapes_footprints(sdata, shapes, image_key), image_key, batch_size, device
        )


# ---------------------------------------------------------------------------------------------------------------
# LinearProbe
# ---------------------------------------------------------------------------------------------------------------
class LinearProbeModule(nn.Module):
    """Frozen encoder pyramid → every level bilinearly upsampled to the pixel grid → one linear map.

    ``forward`` gives the dense map ``Σ_l up(W_l F_l) + b``; because upsampling and the linear map are
    both linear, its mean over a footprint equals the linear map of the footprint's mean-pooled
    features, which is what the ridge regression is fitted on (:meth:`pooled`).
    """

    def __init__(
        self,
        n_genes: int,
        *,
        encoder: str = "resnet18",
        levels: Sequence[int] | None = None,
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(encoder, pretrained=pretrained, weights=encoder_weights)
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
        self.register_buffer("pixel_mean", torch.tensor(self.encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.encoder.std).view(1, 3, 1, 1), persistent=False)

    @property
    def stride(self) -> int:
        """Coarsest encoder reduction; inputs are padded to a multiple of it."""
        return int(max(self.encoder.reductions))

    def _levels(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int], tuple[int, int]]:
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        x = _normalize(images, self.pixel_mean, self.pixel_std)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        feats = self.encoder(x)
        return [feats[i] for i in self.levels], (h, w), (h + ph, w + pw)

    @torch.no_grad()
    def pooled(self, images: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """Mean-pooled pixel features ``(n, n_features)`` of footprints ``A`` ``(n, B*H*W)`` (mean rows)."""
        feats, (h, w), size = self._levels(images)
        out = []
        for f in feats:
            up = F.interpolate(f, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
            out.append(aggregate_map(up.contiguous(), A))
        return torch.cat(out, dim=1)

    def forward(self, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense map ``(B, n_genes, H, W)`` for RGB images ``(B, 3, H, W)``."""
        feats, (h, w), size = self._levels(images)
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


def _ridge_path(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge solutions ``(W (p, m), b (m,))`` for each alpha (X is centred internally; b is the intercept)."""
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    evals, evecs = np.linalg.eigh(Xc.T @ Xc)
    proj = evecs.T @ (Xc.T @ Yc)
    out = []
    for a in alphas:
        W = evecs @ (proj / (np.maximum(evals, 0) + a)[:, None])
        out.append((W, ym - xm @ W))
    return out


class LinearProbe(DenseModel):
    """Foundation-model linear probe: frozen encoder features mean-pooled in each footprint + ridge regression.

    Features are the encoder's pyramid levels upsampled to the pixel grid at ``train_mpp`` and
    averaged over each footprint; a ridge regression (standardised features, ``alpha`` chosen by
    cross-validation across training sections) maps them to genes. Features whose SD over the
    training footprints is below 10% of the median feature SD are scaled by that floor instead, so
    near-constant (dead) features cannot get large weights. Since both steps are linear the
    probe is also a dense model: :meth:`predict` and :func:`stpredict.tl.predict_dense` give the map
    whose footprint means are the probe's predictions.

    Parameters
    ----------
    genes
        Output genes (default: top ``n_top_genes`` by mean on the training tables).
    encoder, pretrained, encoder_weights
        As :class:`PixNet`.
    levels
        Encoder levels used as features (default: all).
    train_mpp
        Pixel size (µm) the encoder sees.
    tile_size
        Tile side (pixels at ``train_mpp``) used to extract footprint features.
    alpha
        Ridge penalty on standardised features; default chosen from ``alphas`` by cross-validation
        (leave one training section out; 5 random folds with a single section).
    alphas
        Candidate penalties.
    target_sum
        Normalisation target (counts / total × ``target_sum``, then log1p).

    """

    _FORMAT = "stpredict-linear-probe"
    key = "linear_probe"
    dense = True
    #: Presets used by :func:`stpredict.tl.train` (``model="linear_probe"``).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"train_mpp": 1.0, "tile_size": 384},
        "cpu": {"train_mpp": 2.0, "tile_size": 192},
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        levels: Sequence[int] | None = None,
        train_mpp: float = 1.0,
        tile_size: int = 384,
        alpha: float | None = None,
        alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 6.5, 0.5)),
        target_sum: float = 1e4,
    ) -> None:
        if train_mpp <= 0:
            raise ValueError(f"train_mpp must be positive (µm per pixel), got {train_mpp}.")
        if alpha is not None and alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}.")
        self.config: dict[str, Any] = {
            "encoder": encoder,
            "pretrained": bool(pretrained),
            "encoder_weights": os.fspath(encoder_weights) if encoder_weights is not None else None,
            "levels": None if levels is None else [int(i) for i in levels],
            "train_mpp": float(train_mpp),
            "tile_size": int(tile_size),
            "alpha": None if alpha is None else float(alpha),
            "alphas": [float(a) for a in alphas],
        }
        self._init_common(genes, target_sum)
        if self.recipe is not None:
            self._build()

    def __repr__(self) -> str:
        state = (
            f"alpha={self.training_params['alpha']:.3g}" if "alpha" in self.training_params else "untrained"
        )
        return f"LinearProbe(encoder={self.config['encoder']!r}, genes={len(self.genes)}, train_mpp={self.train_mpp}, {state})"

    def _build(self, *, load_weights: bool = True) -> None:
        c = self.config
        self.module = LinearProbeModule(
            len(self.recipe.genes),
            encoder=c["encoder"],
            levels=c["levels"],
            pretrained=c["pretrained"] and load_weights,
            encoder_weights=c["encoder_weights"] if load_weights else None,
        )

    @classmethod
    def _from_config(cls, genes: list[str], arch: dict, target_sum: float) -> LinearProbe:
        return cls(
            genes,
            encoder=arch["encoder"],
            levels=arch["levels"],
            train_mpp=arch["train_mpp"],
            tile_size=arch["tile_size"],
            alpha=arch["alpha"],
            alphas=arch["alphas"],
            target_sum=target_sum,
        )

    @torch.no_grad()
    def _features(
        self, section, *, batch_size: int, coverage: str, dev, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        from tqdm.auto import tqdm

        batches = TileSampler(
            [section], tile_size=self.config["tile_size"], augment=False, coverage=coverage
        ).fixed_batches(batch_size)
        net = self.module.to(dev).eval()
        X, Y = [], []
        for b in tqdm(batches, desc=f"features {section.name}", disable=not progress, leave=False):
            X.append(net.pooled(b.images.to(dev), to_torch_sparse(b.A, device=dev)).float().cpu().numpy())
            Y.append(b.targets)
        return np.vstack(X).astype(np.float64), np.vstack(Y).astype(np.float64)

    def train(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        *,
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None = None,
        validation: int | Sequence[int] | None = None,
        n_top_genes: int = 250,
        lam: float = 0.5,
        batch_size: int = 4,
        coverage: str = "center",
        tiles: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> LinearProbe:
        """Extract footprint features once and fit the ridge regression.

        Parameters
        ----------
        sdata, tables, image_key, n_top_genes, coverage, seed, device, progress
            As :meth:`PixNet.train`.
        validation
            Section(s) left out of the fit; their loss, MSE and PCC are recorded in :attr:`history`.
        lam
            Weight of the PCC term in the cross-validation score (MSE + λ·(1 − PCC), PixNet's loss).
        batch_size
            Tiles per encoder forward pass.
        tiles
            Fit only on footprints centred in these selected tiles (as :meth:`PixNet.train`).

        Returns
        -------
        ``self``, fitted.

        """
        from .._settings import settings

        seed = settings.seed if seed is None else int(seed)
        torch.manual_seed(seed)  # the (random-init) encoder is built from this seed, as PixNet's
        sdatas, tables, keys, train_idx, val_idx = self._prepare(
            sdata, tables, image_key, validation, n_top_genes
        )
        dev = resolve_device(device or settings.device)
        progress = settings.progress_bar if progress is None else progress
        t0 = time.perf_counter()
        data = {}
        for i in range(len(sdatas)):
            sec = load_section(
                sdatas[i],
                image_key=keys[i],
                tables=tables,
                recipe=self.recipe,
                train_mpp=self.train_mpp,
                name=f"section{i}",
                tiles=tiles if i in train_idx else None,
            )
            data[i] = self._features(
                sec, batch_size=batch_size, coverage=coverage, dev=dev, progress=progress
            )
        self.module.cpu()
        X = np.vstack([data[i][0] for i in train_idx])
        Y = np.vstack([data[i][1] for i in train_idx])
        mu, sd = X.mean(0), X.std(0)
        # Near-constant features of the training footprints (dead ReLU channels, common with a random-init
        # encoder) would get weights of 1/sd after standardisation and explode on any new input: scale
        # them as if their SD were 10% of the median feature SD.
        pos = sd[sd > 0]
        sd = np.maximum(sd, 0.1 * float(np.median(pos)) if pos.size else 1.0)
        Z = (X - mu) / sd
        groups = np.concatenate([np.full(len(data[i][0]), i) for i in train_idx])
        alphas = np.asarray(self.config["alphas"], float)
        cv = None
        if self.config["alpha"] is not None:
            alpha = self.config["alpha"]
        else:
            if len(train_idx) < 2:
                groups = np.random.default_rng(seed).integers(5, size=len(Z))
            scores = np.zeros(len(alphas))
            for g in np.unique(groups):
                tr, te = groups != g, groups == g
                for k, (W, b) in enumerate(_ridge_path(Z[tr], Y[tr], alphas)):
                    P = torch.from_numpy(Z[te] @ W + b)
                    scores[k] += float(pixnet_loss(P, torch.from_numpy(Y[te]), lam)[0]) / len(
                        np.unique(groups)
                    )
            alpha = float(alphas[int(np.argmin(scores))])
            cv = dict(zip([f"{a:g}" for a in alphas], scores.tolist(), strict=True))
            if alpha in (alphas.min(), alphas.max()):
                logger.warning(
                    f"Ridge alpha {alpha:g} is at the edge of `alphas`; consider widening the grid."
                )
        ((W, b),) = _ridge_path(Z, Y, [alpha])
        with torch.no_grad():
            self.module.weight.copy_(torch.from_numpy((W / sd[:, None]).T.astype(np.float32)))
            self.module.bias.copy_(torch.from_numpy((b - (mu / sd) @ W).astype(np.float32)))
        P = torch.from_numpy(Z @ W + b)
        loss, parts = pixnet_loss(P, torch.from_numpy(Y), lam)
        rec = {
            "epoch": len(self.history) + 1,
            "train_loss": float(loss),
            "train_pcc": parts["pcc"],
            "alpha": alpha,
            "seconds": time.perf_counter() - t0,
        }
        if val_idx:
            Xv = np.vstack([data[i][0] for i in val_idx])
            Yv = torch.from_numpy(np.vstack([data[i][1] for i in val_idx]))
            Pv = torch.from_numpy(((Xv - mu) / sd) @ W + b)
            vl, vp = pixnet_loss(Pv, Yv, lam)
            rec.update(
                {"val_loss": float(vl), "val_mse": vp["mse"], "val_pcc": float(batch_pcc(Pv, Yv).mean())}
            )
        self.history.append(rec)
        self.training_params = {
            "tables": tables,
            "n_sections": len(sdatas),
            "validation": val_idx,
            "n_footprints": len(Z),
            "n_features": int(Z.shape[1]),
            "alpha": alpha,
            "cv_scores": cv,
            "lam": lam,
            "coverage": coverage,
            "tiles": tiles,
            "seed": seed,
        }
        logger.info(
            f"LinearProbe: ridge on {Z.shape[1]} features of {len(Z)} footprints, alpha {alpha:g} "
            f"({'cross-validated' if cv else 'given'})."
        )
        return self
