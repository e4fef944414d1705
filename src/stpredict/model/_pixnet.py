"""The user-facing PixNet class: what differs from the other models (architecture, presets, training plan)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from .._logging import logger
from .._types import Coverage, MapSpace, OutActivation, TableWeighting, Upsample, check_choice
from ..module import PixNetModule
from ..module._pixnet import check_output
from ..train import TilePlan, section_data
from ._base import Preset, architecture
from ._dense import DenseModel
from ._trained import TrainedModel, TrainingRun

__all__ = ["PixNet", "PixNetTrainOptions"]

#: Below this median count per footprint, log-normalised targets are mostly noise (a 2 µm bin holds ~1.5).
SPARSE_COUNTS = 20


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
    table_weighting
        With several ``tables`` (footprint sizes): ``"pooled"`` fits one loss over all footprints of a
        step (the paper's; the table with the most footprints per tile dominates), ``"equal"`` one loss
        per table, averaged, so each footprint size weighs the same.

    """

    max_footprints_per_tile: int = 512
    coverage: Coverage = "center"
    feature_cache_size: int = 2048
    context: int = 0
    table_weighting: TableWeighting = "pooled"

    def __post_init__(self) -> None:
        check_choice("coverage", self.coverage, Coverage)
        check_choice("table_weighting", self.table_weighting, TableWeighting)


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
        Start from the pretrained weights timm has for ``encoder`` (for ``"resnet18"``: ImageNet,
        ``timm/resnet18.a1_in1k`` on the Hugging Face Hub). ``"auto"`` (default): those weights wherever
        they can be had — the Hugging Face cache, or downloaded once into it when there is network — else a
        random initialisation **with a warning** that says how to get them. ``True``: those weights or an
        error (the ``"paper"`` preset); ``False``: a random initialisation, silently. Offline, pass
        ``encoder_weights`` (a local file), which takes their place. The checkpoint records which it was.
    encoder_weights
        Local encoder weights file (state dict or timm checkpoint) for offline machines; takes the
        place of ``pretrained``.
    encoder_kwargs
        Further :func:`timm.create_model` arguments of the encoder, e.g. ``{"init_values": 1e-5}`` for
        UNI (see :doc:`/encoders`); layer classes (``timm.layers.SwiGLUPacked``, ``torch.nn.SiLU``) may
        be given as such or by name, and are stored by name in checkpoints.
    decoder_channels
        Decoder width, one int (paper: 512) or one per decoder stage, coarsest first.
    expansion
        DFFN expansion factor.
    out_activation
        ``"identity"`` for log-normalised targets (default), ``"softplus"``/``"relu"`` for non-negative ones.
    map_space
        ``"log"`` (default): the map is the log-normalised expression, trained by MSE + PCC on the
        footprints' log-normalised counts (the paper). ``"rate"``: the network predicts a non-negative
        rate map (expected counts per ``target_sum`` counts) whose footprint means are fitted to the
        raw counts with a Poisson likelihood (the footprint's total count as offset) + the PCC term on
        their log1p; the map and every prediction are ``log1p`` of the rate, the same normalised units.
        Footprints of different sizes then ask the same map for consistent things (a 16 µm bin's rate
        is the mean of its 2 µm bins' rates), and a bin with one count weighs one count's worth.
    loss
        The name of a registered loss (:func:`stpredict.module.register_loss`) to train and validate with; its
        ``output`` must match ``map_space``. Default: ``"mse_pcc"`` (MSE + λ·(1 − PCC), the paper) for ``"log"``,
        ``"poisson"`` for ``"rate"``. Adding one: the docs' page "Add a model or a loss".
    upsample
        How each decoder stage doubles its grid: ``"resize"`` (default), a 1×1 convolution and a bilinear
        ×2 resize, which prints no texture on the map (test: ``test_resize_upsampling_leaves_no_grid_in_the_map``);
        ``"deconv"``, the paper's 2×2 transposed convolution, which can print a regular texture with the
        decoder's strides on the map (8 µm at 2 µm/px). Checkpoints saved before this option existed load
        as ``"deconv"``.
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
    ImageNet-pretrained encoder (``pretrained=True``, unless ``pretrained=False`` or
    ``encoder_weights`` is given) with a 512-wide decoder at 1 µm/px on 384 px tiles, 8 tiles per
    step; ``"cpu"`` the encoder's pretrained weights where they can be had (``pretrained="auto"``) with a 64-wide
    decoder at 2 µm/px on 192 px tiles, 4 tiles per step, that trains in minutes on a laptop; ``"cpu_spots"`` the
    same decoder at 4 µm/px on 128 px tiles (512 µm), 8 tiles per step, with a moving average of the weights
    (``ema=0.99``), which ``"auto"`` picks on a CPU for spot-sized training footprints (≥ 50 µm).

    """

    key: ClassVar[str] = "pixnet"
    _FORMAT: ClassVar[str] = "stpredict-pixnet"
    module_class = PixNetModule
    module_args = (
        "encoder",
        "decoder_channels",
        "expansion",
        "out_activation",
        "map_space",
        "loss",
        "upsample",
    )
    #: Checkpoints written before ``upsample`` existed used the paper's transposed convolution.
    legacy_architecture: ClassVar[Mapping[str, Any]] = {"upsample": "deconv"}
    train_options = PixNetTrainOptions
    default_batch_size = 4
    supports_distributed = True
    presets: ClassVar[dict[str, Preset]] = {
        "paper": Preset(
            {"pretrained": True, "decoder_channels": 512, "train_mpp": 1.0, "tile_size": 384},
            {"batch_size": 8},
        ),
        "cpu": Preset({"decoder_channels": 64, "train_mpp": 2.0, "tile_size": 192}, {"batch_size": 4}),
        # chosen on HER2ST spots without the test folds (benchmarks/README.md, "Why PixNet trailed"): 4 µm/px sees
        # twice the tissue per receptive field, 8 tiles of 512 µm hold ~3.6x the spots of the cpu preset's step,
        # and the weights' moving average is a steadier pick than the last step's
        "cpu_spots": Preset(
            {"decoder_channels": 64, "train_mpp": 4.0, "tile_size": 128}, {"batch_size": 8, "ema": 0.99}
        ),
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool | Literal["auto"] = "auto",
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        decoder_channels: int | Sequence[int] = 512,
        expansion: int = 2,
        out_activation: OutActivation = "identity",
        map_space: MapSpace = "log",
        loss: str | None = None,
        upsample: Upsample = "resize",
        freeze_encoder: bool = False,
        train_mpp: float = 1.0,
        tile_size: int = 384,
        target_sum: float = 1e4,
    ) -> None:
        check_output(out_activation, map_space, loss)
        check_choice("upsample", upsample, Upsample)
        self.feature_cache_stats: dict[str, int] = {}
        super().__init__(genes, target_sum=target_sum, **architecture(locals()))

    @property
    def map_space(self) -> str:
        """What the network's head predicts: ``"log"`` (log-normalised values) or ``"rate"`` (log-rates)."""
        return str(self.config.get("map_space", "log"))

    @property
    def freeze_encoder(self) -> bool:
        """Whether the encoder's weights stay fixed during training."""
        return bool(self.config["freeze_encoder"])

    def _build(self, *, load_weights: bool = True) -> None:
        super()._build(load_weights=load_weights)
        if self.freeze_encoder:
            for p in self.module.encoder.parameters():
                p.requires_grad_(False)

    def _warn_sparse_log_targets(self, run: TrainingRun) -> None:
        """Warn when log-normalised targets are fitted on footprints with a handful of counts each."""
        if self.map_space != "log" or len(run.tables) < 2:
            return
        sparse_tables = {}
        for t in run.tables:
            X = run.sdatas[run.train_idx[0]].tables[t].X
            median = float(np.median(np.asarray(X.sum(1)).ravel()))
            if median < SPARSE_COUNTS:
                sparse_tables[t] = median
        if sparse_tables:
            logger.warning(
                f"Training on {len(run.tables)} tables with log-normalised targets, and "
                + ", ".join(
                    f"{t!r} has a median of {m:g} counts per footprint" for t, m in sparse_tables.items()
                )
                + ": log-normalised targets of so few counts are mostly noise (a single count becomes the log of "
                "target_sum / total), and fitting them by squared error beside larger footprints pulls the map "
                "towards that noise. PixNet(map_space='rate') "
                "fits the counts themselves (Poisson) with footprint sizes that agree; with "
                "table_weighting='equal' it is what helped on several bin sizes in benchmarks/README.md."
            )

    def _training_plan(self, run: TrainingRun) -> TilePlan:
        opts: PixNetTrainOptions = run.options
        self._warn_sparse_log_targets(run)
        parts = run.targets(
            self.recipe, counts=self.module.loss().needs_counts
        )  # a count likelihood: raw counts
        sections = {  # a training section without footprints is left out (check_supervision warned)
            i: section_data(
                sdata, parts[i], image_key=run.image_keys[i], train_mpp=self.train_mpp, name=run.names[i]
            )
            for i, sdata in enumerate(run.sdatas)
            if any(len(p) for p in parts[i])
        }
        train = [sections[i] for i in run.train_idx if i in sections]
        plan = TilePlan(
            self.module,
            train,
            [sections[i] for i in run.val_idx],  # each has footprints (check_supervision)
            tile_size=self.config["tile_size"],
            batch_size=run.batch_size,
            augment=run.augment,
            frozen=self.freeze_encoder,
            max_footprints=opts.max_footprints_per_tile,
            coverage=opts.coverage,
            context=opts.context,
            weighting=opts.table_weighting,
            target_sum=self.recipe.target_sum,
            feature_cache_size=opts.feature_cache_size,
            lam=run.lam,
            seed=run.seed,
            device=run.device,
            progress=run.progress,
            dist=run.dist,
        )
        if not self.history:
            y = np.vstack([y for sec in train for y in sec.targets])
            self.module.init_output(np.expm1(y).mean(0) if self.map_space == "rate" else y.mean(0))
        logger.info(
            f"Training PixNet on {len(train)} section(s), {sum(sec.n_footprints for sec in train)} footprints, "
            f"{len(self.genes)} genes, {self.config['tile_size']} px tiles at {self.train_mpp} µm/px, device {run.device}."
        )
        return plan

    def _after_fit(self, plan: Any) -> None:
        if plan.cache is not None:
            self.feature_cache_stats = plan.cache.stats
