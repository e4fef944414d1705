"""The user-facing PixNet class: what differs from the other models (architecture, presets, training plan)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._logging import logger
from .._types import Coverage, OutActivation, check_choice
from ..module import PixNetModule
from ..train import TilePlan, load_section
from ._base import Preset, architecture
from ._dense import DenseModel
from ._trained import TrainedModel, TrainingRun

__all__ = ["PixNet", "PixNetTrainOptions"]


@dataclass
class PixNetTrainOptions:
    """PixNet's own training arguments (``PixNet.train(**options)``).

    Attributes
    ----------
    max_footprints_per_tile
        At most this many footprints per table and tile (a random subset) to bound the step cost with
        2 µm bins.
    coverage
        Footprint membership in the loss: ``"center"`` (pixel centre inside) or ``"fraction"``.
    feature_cache_size
        Tiles whose encoder features are cached when ``freeze_encoder=True``.
    context
        Supervise only footprints at least this many pixels (at ``train_mpp``) inside the training
        tile, so that each is seen with image context on every side, as in prediction.

    """

    max_footprints_per_tile: int = 512
    coverage: Coverage = "center"
    feature_cache_size: int = 2048
    context: int = 0

    def __post_init__(self) -> None:
        check_choice("coverage", self.coverage, Coverage)


class PixNet(DenseModel, TrainedModel):
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

    Notes
    -----
    Training options beyond the shared ones of :meth:`train` are the fields of
    :class:`PixNetTrainOptions` (``max_footprints_per_tile``, ``coverage``, ``feature_cache_size``,
    ``context``).
    Presets (:attr:`presets`, used by :func:`stpredict.tl.train`): ``"paper"`` is the published
    512-wide decoder at 1 µm/px on 384 px tiles, 8 tiles per step; ``"cpu"`` a 64-wide decoder at
    2 µm/px on 192 px tiles, 4 tiles per step, that trains in minutes on a laptop.

    """

    key: ClassVar[str] = "pixnet"
    _FORMAT: ClassVar[str] = "stpredict-pixnet"
    module_class = PixNetModule
    module_args = ("encoder", "decoder_channels", "expansion", "out_activation")
    train_options = PixNetTrainOptions
    default_batch_size = 4
    presets: ClassVar[dict[str, Preset]] = {
        "paper": Preset({"decoder_channels": 512, "train_mpp": 1.0, "tile_size": 384}, {"batch_size": 8}),
        "cpu": Preset({"decoder_channels": 64, "train_mpp": 2.0, "tile_size": 192}, {"batch_size": 4}),
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        decoder_channels: int | Sequence[int] = 512,
        expansion: int = 2,
        out_activation: OutActivation = "identity",
        freeze_encoder: bool = False,
        train_mpp: float = 1.0,
        tile_size: int = 384,
        target_sum: float = 1e4,
    ) -> None:
        check_choice("out_activation", out_activation, OutActivation)
        self.feature_cache_stats: dict[str, int] = {}
        super().__init__(genes, target_sum=target_sum, **architecture(locals()))

    @property
    def freeze_encoder(self) -> bool:
        """Whether the encoder's weights stay fixed during training."""
        return bool(self.config["freeze_encoder"])

    def _build(self, *, load_weights: bool = True) -> None:
        super()._build(load_weights=load_weights)
        if self.freeze_encoder:
            for p in self.module.encoder.parameters():
                p.requires_grad_(False)

    def _training_plan(self, run: TrainingRun) -> TilePlan:
        opts: PixNetTrainOptions = run.options
        sections = [
            load_section(
                sdata,
                image_key=run.image_keys[i],
                tables=run.tables,
                recipe=self.recipe,
                train_mpp=self.train_mpp,
                name=run.names[i],
                tiles=run.tiles_for(i),
            )
            for i, sdata in enumerate(run.sdatas)
        ]
        train = [sections[i] for i in run.train_idx]
        plan = TilePlan(
            self.module,
            train,
            [sections[i] for i in run.val_idx],
            tile_size=self.config["tile_size"],
            batch_size=run.batch_size,
            augment=run.augment,
            frozen=self.freeze_encoder,
            max_footprints=opts.max_footprints_per_tile,
            coverage=opts.coverage,
            context=opts.context,
            feature_cache_size=opts.feature_cache_size,
            lam=run.lam,
            seed=run.seed,
            device=run.device,
            progress=run.progress,
        )
        if not self.history:
            self.module.init_output(np.vstack([y for sec in train for y in sec.targets]).mean(0))
        logger.info(
            f"Training PixNet on {len(train)} section(s), {sum(sec.n_footprints for sec in train)} footprints, "
            f"{len(self.genes)} genes, {self.config['tile_size']} px tiles at {self.train_mpp} µm/px, device {run.device}."
        )
        return plan

    def _after_fit(self, plan: Any) -> None:
        if plan.cache is not None:
            self.feature_cache_stats = plan.cache.stats
