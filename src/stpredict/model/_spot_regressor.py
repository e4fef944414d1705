"""The ST-Net-style spot-level baseline: one crop per footprint, one expression vector per crop."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from spatialdata import SpatialData

from .. import _docs
from .._core import (
    Footprints,
    default_image_key,
    footprint_diameters,
    get_mpp,
    shapes_footprints,
    table_footprints,
)
from .._logging import logger
from .._settings import settings
from ..module import SpotRegressorModule
from ..train import Cropper, CropPlan, CropSet, predict_crops
from ._base import Preset, architecture
from ._trained import TrainedModel, TrainingRun

__all__ = ["SpotRegressor"]


class SpotRegressor(TrainedModel):
    """ST-Net-style spot-level baseline: one crop per footprint, one expression vector per crop.

    Each footprint is cropped as a square window of ``crop_factor`` × its diameter (µm) centred on
    it, resampled to ``input_size`` pixels, encoded by the same timm encoder as PixNet, pooled and
    mapped to genes by an MLP, and trained with PixNet's loss (MSE + λ·(1 − PCC)) by the same loop.
    Predicting other footprint sizes crops at *that* size (e.g. 12 µm windows for 8 µm bins, resampled
    to ``input_size``), as spot-level methods do; so the model sees a magnification it was not trained on.

    Parameters
    ----------
    genes
        Output genes (default: top ``n_top_genes`` by mean on the training tables).
    encoder, pretrained, encoder_weights, encoder_kwargs
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

    key: ClassVar[str] = "spot_regressor"
    _FORMAT: ClassVar[str] = "stpredict-spot-regressor"
    module_class = SpotRegressorModule
    module_args = ("encoder", "hidden", "dropout")
    default_batch_size = 32
    presets: ClassVar[dict[str, Preset]] = {
        "paper": Preset({"pretrained": True, "train_mpp": 1.0}, {"batch_size": 32}),
        "cpu": Preset({"train_mpp": 2.0}, {"batch_size": 32}),
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool | Literal["auto"] = "auto",
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        crop_factor: float = 1.5,
        train_mpp: float = 1.0,
        input_size: int | None = None,
        hidden: int = 256,
        dropout: float = 0.1,
        target_sum: float = 1e4,
    ) -> None:
        if crop_factor <= 0:
            raise ValueError(f"crop_factor must be positive, got {crop_factor}.")
        input_size = None if input_size is None else int(input_size)
        super().__init__(genes, target_sum=target_sum, **architecture(locals()))

    def __repr__(self) -> str:
        state = f"{len(self.history)} epochs trained" if self.history else "untrained"
        return (
            f"SpotRegressor(encoder={self.config['encoder']!r}, genes={len(self.genes)}, "
            f"crop_factor={self.config['crop_factor']}, input_size={self.config['input_size']}, {state})"
        )

    def _training_plan(self, run: TrainingRun) -> CropPlan:
        parts = run.targets(self.recipe)
        sets: dict[int, CropSet] = {}
        for i, sdata in enumerate(run.sdatas):
            full = [p for p in parts[i] if len(p)]
            if not full:  # a training section without footprints (check_supervision warned)
                continue
            key = run.image_keys[i]
            sets[i] = CropSet(
                Cropper(sdata, key),
                np.vstack([p.footprints.centres for p in full]),
                np.concatenate(
                    [self.config["crop_factor"] * footprint_diameters(p.footprints) for p in full]
                ),
                np.vstack([p.targets for p in full]),
                get_mpp(sdata, key),
            )
        train = [sets[i] for i in run.train_idx if i in sets]
        if self.config["input_size"] is None:
            um = np.concatenate([s.windows * s.mpp for s in train])
            self.config["input_size"] = max(32, round(float(np.median(um)) / self.train_mpp))
            logger.info(
                f"SpotRegressor crops: {np.median(um):.0f} µm windows at {self.train_mpp} µm/px → "
                f"{self.config['input_size']} px."
            )
        if not self.history:
            self.module.init_output(np.vstack([s.targets for s in train]).mean(0))
        logger.info(
            f"Training SpotRegressor on {len(train)} section(s), {sum(len(s) for s in train)} footprints, "
            f"{len(self.genes)} genes, {self.config['input_size']} px crops, device {run.device}."
        )
        return CropPlan(
            self.module,
            train,
            [sets[i] for i in run.val_idx],  # each has footprints (check_supervision)
            size=self.config["input_size"],
            batch_size=run.batch_size,
            augment=run.augment,
            lam=run.lam,
            seed=run.seed,
            device=run.device,
            progress=run.progress,
        )

    # ------------------------------------------------------------------ prediction
    @_docs.doc_params(device=_docs.device)
    def predict(self, images: np.ndarray, *, batch_size: int = 64, device: str | None = None) -> np.ndarray:
        """Expression ``(n, n_genes)`` of RGB crops ``(n, y, x, 3)`` uint8 (resampled to ``input_size``).

        Parameters
        ----------
        images
            Crops, one per footprint.
        batch_size
            Crops per forward pass.
        {device}

        """
        self._check_trained()
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (n, y, x, 3) uint8 RGB, got {images.shape} {images.dtype}.")
        S = self.config["input_size"]
        if images.shape[1:3] != (S, S):
            images = np.stack(
                [np.asarray(Image.fromarray(im).resize((S, S), Image.Resampling.BILINEAR)) for im in images]
            )
        dev = settings.resolve_device(device)
        net = self.module.to(dev).eval()
        with torch.no_grad():
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
        dev = settings.resolve_device(device)
        try:
            crops = CropSet.from_footprints(sdata, image_key, fp, crop_factor=self.config["crop_factor"])
            return predict_crops(
                self.module.to(dev), crops, self.config["input_size"], dev, batch_size=batch_size
            )
        finally:
            self.module.cpu()

    @_docs.doc_params(image_key=_docs.image_key, device=_docs.device)
    def predict_footprints(
        self,
        sdata: SpatialData,
        *,
        table: str,
        image_key: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_obs, n_genes)`` for the footprints of a table, in table row order.

        Parameters
        ----------
        sdata
            SpatialData with the H&E and the table's shapes.
        table
            A table linked to shapes.
        {image_key}
        batch_size
            Crops per forward pass.
        {device}

        Returns
        -------
        Predictions in the table's row order (NaN for rows without a shape).

        """
        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        fp, rows = table_footprints(sdata, table, image_key)
        out = np.full((sdata.tables[table].n_obs, len(self.genes)), np.nan, np.float32)
        out[rows] = self._predict_fp(sdata, fp, image_key, batch_size, device)
        return out

    @_docs.doc_params(image_key=_docs.image_key, device=_docs.device)
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

        Parameters
        ----------
        sdata
            SpatialData with the H&E and the shapes.
        shapes
            A shapes element (circles or polygons).
        {image_key}
        batch_size
            Crops per forward pass.
        {device}

        """
        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        return self._predict_fp(
            sdata, shapes_footprints(sdata, shapes, image_key), image_key, batch_size, device
        )
