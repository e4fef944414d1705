"""The user-facing models (imported lazily by ``stpredict.model``: it imports torch).

- :class:`PixNet`: the dense model (train, predict, save, load);
- :class:`SpotRegressor` and :class:`LinearProbe`: spot-level and linear-probe baselines with the
  same interface, data layer and encoders;
- :func:`load`: load any checkpoint; :class:`BaseModel` / :class:`TrainedModel` / :class:`DenseModel`:
  what they share; :class:`Preset`: a named architecture + training recipe;
- :class:`DenseEngine`: the one dense inference engine.

For compatibility this namespace also re-exports the networks (:mod:`stpredict.module`), the loss
(:mod:`stpredict.train`) and the torch-free footprint operator and gene recipe.
"""

from .._core import Footprints, Recipe, footprint_matrix, normalize_counts, select_genes
from ..module import (
    Encoder,
    LinearProbeModule,
    PixNetModule,
    SpotRegressorModule,
    aggregate_map,
    to_torch_sparse,
)
from ..train import batch_pcc, pixnet_loss
from ._base import BaseModel, Preset, load, model_class
from ._dense import DenseEngine, DenseModel
from ._linear_probe import LinearProbe
from ._pixnet import PixNet, PixNetTrainOptions
from ._spot_regressor import SpotRegressor
from ._trained import TrainedModel, TrainingRun

#: PixNet's presets as flat dicts (kept for compatibility; see :attr:`PixNet.presets`).
PRESETS = {name: p.as_kwargs() for name, p in PixNet.presets.items()}

__all__ = [
    "PRESETS",
    "BaseModel",
    "DenseEngine",
    "DenseModel",
    "Encoder",
    "Footprints",
    "LinearProbe",
    "LinearProbeModule",
    "PixNet",
    "PixNetModule",
    "PixNetTrainOptions",
    "Preset",
    "Recipe",
    "SpotRegressor",
    "SpotRegressorModule",
    "TrainedModel",
    "TrainingRun",
    "aggregate_map",
    "batch_pcc",
    "footprint_matrix",
    "load",
    "model_class",
    "normalize_counts",
    "pixnet_loss",
    "select_genes",
    "to_torch_sparse",
]
