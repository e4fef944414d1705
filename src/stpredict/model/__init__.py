"""The user-facing models (imported lazily by ``stpredict.model``: it imports torch).

- :class:`PixNet`: the dense model (train, predict, save, load);
- :class:`SpotRegressor` and :class:`LinearProbe`: spot-level and linear-probe baselines with the
  same interface, data layer and encoders;
- :func:`load`: load any checkpoint; :class:`BaseModel` / :class:`TrainedModel` / :class:`DenseModel`:
  what they share; :class:`Preset`: a named architecture + training recipe;
- :class:`DenseEngine`: the one dense inference engine.

It also exports the torch-free footprint operator and gene recipe, for models built outside stpredict. The
networks (:mod:`stpredict.module`) and the loss functions (:mod:`stpredict.train`) it re-exported are still found
here for existing code, with a ``FutureWarning`` naming their home.
"""

import importlib
import warnings
from typing import Any

from .._core import Footprints, Recipe, footprint_matrix, normalize_counts, select_genes
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
    "Footprints",
    "LinearProbe",
    "PixNet",
    "PixNetTrainOptions",
    "Preset",
    "Recipe",
    "SpotRegressor",
    "TrainedModel",
    "TrainingRun",
    "footprint_matrix",
    "load",
    "model_class",
    "normalize_counts",
    "select_genes",
]

#: Names this namespace re-exported from the layers below it: where they live.
_MOVED = {
    **dict.fromkeys(
        (
            "Encoder",
            "LinearProbeModule",
            "PixNetModule",
            "SpotRegressorModule",
            "aggregate_map",
            "to_torch_sparse",
        ),
        "stpredict.module",
    ),
    "batch_pcc": "stpredict.train",
    "pixnet_loss": "stpredict.train",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"stpredict.model.{name} is deprecated: `stpredict.model` exports the models; use {_MOVED[name]}.{name}.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'stpredict.model' has no attribute {name!r}")
