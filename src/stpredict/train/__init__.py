"""Training: data layer, training plans, the one epoch loop and the ridge fit. Imports torch.

- :func:`training_targets` / :func:`check_supervision`: every model's training footprints and targets,
  refused before the first step when they teach nothing;
- :func:`load_section` / :class:`SectionData`: a section at the training pixel size;
- :class:`TilePlan` (PixNet) and :class:`CropPlan` (SpotRegressor): what one training step does;
- :func:`fit`: the epoch loop every trained model shares (optimiser, validation, early stopping,
  progress, history, resume);
- :class:`Distributed` / :func:`is_main_process`: data-parallel training under ``torchrun``;
- :func:`fit_ridge`: the linear probe's cross-validated ridge (scikit-learn);
- :func:`net_loss` / :func:`score_batch`: the loss a network owns (``net.loss()``, :class:`stpredict.module.Loss`)
  and its value on batches, what training steps and validation both call; :func:`pixnet_loss`, :func:`batch_pcc`,
  :func:`grouped_loss`, :func:`poisson_deviance`: the functions behind it (kept for compatibility);
- :class:`SimSiam` / :func:`pretrain_simsiam`: self-supervised encoder pretraining (``tl.pretrain_encoder``).
"""

from ._crops import Cropper, CropPlan, CropSet, predict_crops
from ._data import (
    SectionData,
    TableTargets,
    check_supervision,
    load_section,
    section_data,
    section_footprints,
    section_targets,
    training_targets,
)
from ._distributed import Distributed, is_main_process
from ._loop import TrainingPlan, fit
from ._loss import batch_pcc, grouped_loss, pixnet_loss, poisson_deviance
from ._ridge import RidgeFit, fit_ridge, mean_pcc, pixnet_score
from ._ssl import SimSiam, he_augment, hed_jitter, pretrain_simsiam
from ._tiles import (
    Batch,
    FeatureCache,
    TilePlan,
    TileSampler,
    batch_loss,
    evaluate_batches,
    footprint_extents,
    net_loss,
    run_batch,
    score_batch,
    tile_holding,
)

__all__ = [
    "Batch",
    "CropPlan",
    "CropSet",
    "Cropper",
    "Distributed",
    "FeatureCache",
    "RidgeFit",
    "SectionData",
    "SimSiam",
    "TableTargets",
    "TilePlan",
    "TileSampler",
    "TrainingPlan",
    "batch_loss",
    "batch_pcc",
    "check_supervision",
    "evaluate_batches",
    "fit",
    "fit_ridge",
    "footprint_extents",
    "grouped_loss",
    "he_augment",
    "hed_jitter",
    "is_main_process",
    "load_section",
    "mean_pcc",
    "net_loss",
    "pixnet_loss",
    "pixnet_score",
    "poisson_deviance",
    "predict_crops",
    "pretrain_simsiam",
    "run_batch",
    "score_batch",
    "section_data",
    "section_footprints",
    "section_targets",
    "tile_holding",
    "training_targets",
]
